"""pgvar verify: every claim of the lesson as a numerical check."""

from __future__ import annotations

import numpy as np
from helpers import random_mdp
from test_cli import run

from pgvar import envs
from pgvar.claims import check_entropy_gradient, check_transitions_cancel, verify_lesson


def test_every_claim_holds_on_the_lesson_at_the_uniform_policy(capsys):
    code, out, _ = run(["verify"], capsys)
    assert code == 0
    assert out.count("PASS") == 10 and "FAIL" not in out


def test_repayment_breaks_two_claims_and_says_why():
    mdp = envs.repayment()
    claims, summary = verify_lesson(mdp, np.zeros(mdp.theta_shape()))
    failed = {c.claim: c for c in claims if not c.passed}
    assert set(failed) == {"reward-to-go lowers the variance", "a baseline lowers the variance (full return)"}
    assert failed["reward-to-go lowers the variance"].numbers["ratio"] > 2  # exact: 0.2344 / 0.1094
    assert "between 0 and 2 b*_t" in failed["a baseline lowers the variance (full return)"].detail
    assert "rtg+value" in summary
    # every unbiasedness claim still holds: the lesson is right about bias everywhere
    assert all(c.passed for c in claims if "unbiased" in c.claim)


def test_verify_exits_one_when_a_claim_fails(capsys):
    code, out, _ = run(["verify", "--mdp", "repayment"], capsys)
    assert code == 1 and "does NOT hold here" in out


def test_transitions_cancel_on_a_stochastic_mdp():
    mdp = random_mdp(2, states=4, actions=3, horizon=5, time_dependent=True)
    theta = np.random.default_rng(0).normal(size=mdp.theta_shape(True))
    claim = check_transitions_cancel(mdp, theta, episodes=5)
    assert claim.passed and claim.numbers["max_abs_difference"] < 1e-5


def test_entropy_gradient_moves_a_skewed_policy_toward_uniform():
    mdp = envs.lesson()
    theta = np.random.default_rng(1).normal(scale=2.0, size=mdp.theta_shape())
    claim = check_entropy_gradient(mdp, theta)
    assert claim.passed and claim.numbers["max_kl_change"] < 0
