"""pgvar verify: every claim of the lesson as a numerical check."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import random_mdp
from test_cli import run, strict_json

from pgvar import claims as claims_module
from pgvar import envs
from pgvar.claims import Claim, check_entropy_gradient, check_transitions_cancel, verify_groups, verify_lesson
from pgvar.errors import SpecError
from pgvar.mdp import TabularMDP


def test_every_claim_holds_on_the_lesson_at_the_uniform_policy(capsys):
    code, out, _ = run(["verify"], capsys)
    assert code == 0
    assert out.count("PASS") == 13 and "FAIL" not in out  # the lesson's 10 and the group baselines' 3


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


def test_verify_json_is_strict_json_with_every_claim(capsys):
    code, out, _ = run(["verify", "--json", "--seed", "3"], capsys)
    assert code == 0
    payload = strict_json(out)
    assert {"mdp", "seed", "theta", "claims", "variance_optimal", "group_claims"} <= payload.keys()
    assert payload["seed"] == 3 and len(payload["claims"]) == 10 and len(payload["group_claims"]) == 3
    assert all(claim["passed"] for claim in payload["group_claims"])
    for claim in payload["claims"]:
        assert claim["passed"] is True
        assert claim["numbers"] and all(isinstance(v, (int, float)) for v in claim["numbers"].values())
    one_over_n = next(c for c in payload["claims"] if c["claim"] == "the variance falls as 1/N")
    assert one_over_n["numbers"]["slope"] == pytest.approx(-1, abs=0.2)


def test_a_claim_holds_plain_python_values():
    claim = Claim(
        "c",
        np.bool_(True),
        "d",
        {"z": np.float64(1.5), "k": np.int64(3), "ok": np.bool_(False), "ratio": float("inf"), "s": np.nan},
    )
    assert claim.passed is True
    assert claim.numbers == {"z": 1.5, "k": 3, "ok": False, "ratio": None, "s": None}
    assert [type(v) for v in claim.numbers.values()] == [float, int, bool, type(None), type(None)]
    json.dumps(claim.numbers, allow_nan=False)  # raises on NaN, Infinity and NumPy types


def test_a_policy_with_no_variance_at_all_is_verified_without_a_crash():
    """Zero rewards: every variance is 0, so no ratio to vanilla and no 1/N slope exist."""
    mdp = TabularMDP(
        initial_s=np.array([1.0, 0.0]),
        transitions=np.array([[[0.0, 1.0], [0.0, 1.0]], [[0.0, 1.0], [0.0, 1.0]]]),
        rewards=np.zeros((2, 2)),
        gamma=1.0,
        horizon=2,
        terminal_s=np.array([False, True]),
        name="silent",
    )
    claims, summary = verify_lesson(mdp, np.zeros(mdp.theta_shape()))
    by_name = {c.claim: c for c in claims}
    lowers = by_name["reward-to-go lowers the variance"]
    assert not lowers.passed and lowers.numbers == {"with": 0.0, "without": 0.0, "ratio": None}
    assert "leaves the variance as it is" in lowers.detail
    assert by_name["the variance falls as 1/N"].numbers["slope"] is None
    assert "x vanilla" not in summary and "exact variance 0" in summary
    assert all(c.passed for c in claims if "unbiased" in c.claim)


def test_verify_refuses_a_negative_seed():
    mdp = envs.lesson()
    with pytest.raises(SpecError, match="seed: must be a whole number >= 0, got -1"):
        verify_lesson(mdp, np.zeros(mdp.theta_shape()), seed=-1)


# -- the group baselines (docs/groups.md) ----------------------------------------------------------


def test_the_group_claims_hold_on_the_prompts_mdp_exactly():
    mdp = envs.make("prompts")
    loo, shrink, turn = verify_groups(mdp, np.zeros(mdp.theta_shape()))
    assert loo.passed and loo.numbers["exact_bias"] < 1e-15
    assert shrink.passed and shrink.numbers["exact_max_difference"] < 1e-15
    assert "K=4: 0.7500" in shrink.detail
    assert turn.passed and turn.numbers["statistic"] is None  # decided exactly (every K-tuple of paths)
    assert 1 - 1e-3 < turn.numbers["cosine"] < 1 - 1e-9


def test_where_the_std_only_rescales_the_claim_fails_with_the_reason():
    repayment = envs.repayment()
    turn = verify_groups(repayment, np.zeros(repayment.theta_shape()))[2]
    assert not turn.passed and "the std only rescales the gradient" in turn.detail
    assert turn.numbers["cosine"] == pytest.approx(1.0, abs=1e-12)
    corridor = envs.make("short-corridor")  # one logit pair: every estimate lies along grad J
    turn = verify_groups(corridor, np.zeros(corridor.theta_shape()))[2]
    assert not turn.passed and "every estimate lies along grad J" in turn.detail


def test_on_the_lesson_the_turn_is_shown_by_sampling_with_a_derived_bound():
    mdp = envs.lesson()
    turn = verify_groups(mdp, np.zeros(mdp.theta_shape()))[2]
    assert "reward noise is continuous" in turn.detail  # so the check samples
    assert turn.passed and turn.numbers["statistic"] > claims_module.S_LIMIT


def test_the_sampled_checks_catch_a_baseline_that_is_not_what_it_claims(monkeypatch):
    """Swap the group mean for RLOO in the sampled check: E g is then grad J, not (K-1)/K grad J, and
    the claim must fail; swap RLOO for the group mean and the unbiasedness claim must fail."""
    mdp = envs.make("prompts")
    theta = np.zeros(mdp.theta_shape())
    real = claims_module._group_sample

    def swapped(mdp, theta, spec, seed):
        other = {"group": "loo", "loo": "group"}.get(spec.baseline, spec.baseline)
        return real(mdp, theta, replace(spec, baseline=other, name=""), seed)

    monkeypatch.setattr(claims_module, "_group_sample", swapped)
    loo, shrink, _ = verify_groups(mdp, theta)
    assert not loo.passed and loo.numbers["monte_carlo_max_z"] > claims_module.Z_LIMIT
    assert not shrink.passed and shrink.numbers["monte_carlo_max_z"] > claims_module.Z_LIMIT
