"""Exact J, grad J and estimator moments, each checked against an independent computation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers import random_mdp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pgvar import envs
from pgvar.claims import finite_difference
from pgvar.errors import PgvarError
from pgvar.estimators import BASELINES, parse_estimator
from pgvar.exact import (
    _recursion_moments,
    chain_gradient,
    count_paths,
    exact_gradient,
    exact_moments,
    expected_visits,
    objective,
    resolve,
    state_distribution,
    unroll,
    values,
)
from pgvar.montecarlo import sample_batch_means
from pgvar.vocabulary import GROUP_BASELINES

SINGLE_EPISODE_BASELINES = [b for b in BASELINES if b not in ("learned", *GROUP_BASELINES)]
UNBIASED = [f"{w}+{b}" for w in ("return", "rtg") for b in SINGLE_EPISODE_BASELINES] + [
    "gae0+value",
    "gae0.5+value",
    "gae0.95+value",
    "gae1+none",
    "gae1+lesson",
]

mdp_settings = settings(max_examples=25, deadline=None)


@st.composite
def mdp_and_theta(draw, **fixed):
    seed = draw(st.integers(0, 10_000))
    options = dict(
        states=draw(st.integers(2, 4)),
        actions=draw(st.integers(2, 3)),
        horizon=draw(st.integers(1, 4)),
        gamma=draw(st.sampled_from([1.0, 0.9, 0.5])),
        time_dependent=draw(st.booleans()),
        sas_rewards=draw(st.booleans()),
        terminal=draw(st.booleans()),
    )
    options.update(fixed)
    mdp = random_mdp(seed, **options)
    per_step = draw(st.booleans())
    theta = np.random.default_rng(seed + 1).normal(scale=1.5, size=mdp.theta_shape(per_step))
    return mdp, theta


@mdp_settings
@given(mdp_and_theta(), st.sampled_from([0.0, 0.3]))
def test_grad_j_matches_finite_differences(case, beta):
    mdp, theta = case
    grad = exact_gradient(mdp, theta, beta)
    numeric = finite_difference(lambda th: objective(mdp, th, beta), theta)
    np.testing.assert_allclose(grad, numeric, atol=1e-7 * max(1.0, np.abs(numeric).max()))


@mdp_settings
@given(mdp_and_theta(), st.sampled_from(UNBIASED), st.sampled_from([0.0, 0.2]))
def test_every_unbiased_estimator_has_mean_grad_j(case, spec_text, beta):
    mdp, theta = case
    spec = parse_estimator(spec_text, entropy=beta)
    grad = exact_gradient(mdp, theta, beta).ravel()
    moments = exact_moments(mdp, theta, spec, method="recursion")
    np.testing.assert_allclose(moments.mean, grad, atol=1e-9 * max(1.0, np.abs(grad).max()))


@mdp_settings
@given(
    mdp_and_theta(),
    st.sampled_from([*UNBIASED, "rtg+value:common", "gae0.5+lesson", "gae0.7+none"]),
    st.sampled_from([0.0, 0.2]),
)
def test_enumeration_and_recursion_agree(case, spec_text, beta):
    mdp, theta = case
    spec = parse_estimator(spec_text, entropy=beta)
    chain = unroll(mdp, theta, beta)
    assume(count_paths(chain) < 20_000)
    enumerated = exact_moments(mdp, theta, spec, method="enumeration", chain=chain)
    recursive = exact_moments(mdp, theta, spec, method="recursion", chain=chain)
    scale = max(1.0, enumerated.variance_trace)
    np.testing.assert_allclose(recursive.mean, enumerated.mean, atol=1e-9 * scale)
    np.testing.assert_allclose(recursive.variance, enumerated.variance, atol=1e-9 * scale)
    assert recursive.reward_noise == pytest.approx(enumerated.reward_noise, abs=1e-9 * scale)
    assert recursive.sampling == pytest.approx(enumerated.sampling, abs=1e-9 * scale)


def test_full_covariance_from_enumeration_matches_monte_carlo():
    mdp = envs.lesson()
    theta = np.random.default_rng(4).normal(size=mdp.theta_shape())
    exact = exact_moments(mdp, theta, parse_estimator("rtg+value"), method="enumeration")
    covariance = exact.covariance
    np.testing.assert_allclose(np.diag(covariance), exact.variance, atol=1e-12)
    assert np.allclose(covariance, covariance.T) and np.linalg.eigvalsh(covariance).min() > -1e-12
    n, batches = 16, 4000  # batch means are close to Gaussian; SE of a covariance entry from the exact one
    means_md = sample_batch_means(
        mdp, theta, [parse_estimator("rtg+value")], n, batches, seed=8
    ).batch_means_emd[0]
    measured = np.cov(means_md, rowvar=False)
    expected = covariance / n
    standard_error = np.sqrt((np.outer(np.diag(expected), np.diag(expected)) + expected**2) / (batches - 1))
    assert np.abs((measured - expected) / standard_error).max() < 5.0


def test_dropping_gamma_t_is_biased_and_keeping_it_is_not():
    mdp = random_mdp(7, horizon=4, gamma=0.8)
    theta = np.random.default_rng(0).normal(size=mdp.theta_shape())
    grad = exact_gradient(mdp, theta).ravel()
    unbiased = exact_moments(mdp, theta, parse_estimator("rtg+value")).mean
    common = exact_moments(mdp, theta, parse_estimator("rtg+value:common")).mean
    assert np.abs(unbiased - grad).max() < 1e-10
    assert np.abs(common - grad).max() > 1e-3


def test_gae_with_an_inexact_value_is_biased_unless_lambda_is_one():
    mdp = random_mdp(3, horizon=4, gamma=0.9)
    theta = np.random.default_rng(1).normal(size=mdp.theta_shape())
    grad = exact_gradient(mdp, theta).ravel()
    for lam in (0.0, 0.5):
        assert np.abs(exact_moments(mdp, theta, parse_estimator(f"gae{lam}+none")).mean - grad).max() > 1e-3
    assert np.abs(exact_moments(mdp, theta, parse_estimator("gae1+none")).mean - grad).max() < 1e-10


def test_a_learned_baseline_is_unbiased_except_inside_gae_with_lambda_below_one():
    mdp = random_mdp(8, horizon=4, gamma=0.9)
    theta = np.random.default_rng(2).normal(size=mdp.theta_shape())
    grad = exact_gradient(mdp, theta).ravel()
    table = np.random.default_rng(3).normal(size=(4, mdp.n_states))  # any table at all
    for text in ("return+learned", "rtg+learned", "gae1+learned"):
        assert (
            np.abs(exact_moments(mdp, theta, parse_estimator(text), learned_ts=table).mean - grad).max()
            < 1e-10
        )
    biased = exact_moments(mdp, theta, parse_estimator("gae0.5+learned"), learned_ts=table).mean
    assert np.abs(biased - grad).max() > 1e-3
    with pytest.raises(PgvarError, match="learned"):
        exact_moments(mdp, theta, parse_estimator("rtg+learned"))


def test_reward_noise_part_of_a_bandit_has_its_closed_form():
    mdp = envs.bandit(k=4, seed=2)
    theta = np.array([[0.3, -1.0, 0.5, 0.0]])
    probs = np.exp(theta[0]) / np.exp(theta[0]).sum()
    score_sq = np.array([np.sum((np.eye(4)[a] - probs) ** 2) for a in range(4)])
    moments = exact_moments(mdp, theta, parse_estimator("vanilla"))
    assert moments.reward_noise == pytest.approx(1.0 * probs @ score_sq, rel=1e-12)  # sigma = 1
    means = mdp.rewards[0]
    second = probs @ (score_sq * means**2) + probs @ score_sq
    assert moments.variance_trace == pytest.approx(second - np.sum(moments.mean**2), rel=1e-12)


@pytest.mark.parametrize("weight", ["return", "rtg"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_optimal_constant_baseline_beats_every_other_constant(weight, seed):
    mdp = random_mdp(seed, states=3, actions=3, horizon=3, gamma=0.9)
    theta = np.random.default_rng(seed).normal(size=mdp.theta_shape())
    chain = unroll(mdp, theta)
    optimal = resolve(chain, parse_estimator(f"{weight}+optimal"))
    best = _recursion_moments(chain, optimal, noise=True)
    best_trace = float(np.sum(best[1] - best[0] ** 2))
    rng = np.random.default_rng(seed)
    for _ in range(5):  # move the per-step constants anywhere: never better
        shift = rng.normal(scale=0.3, size=(chain.steps, 1, 1))
        moved = replace(optimal, offsets_tsa=optimal.offsets_tsa + shift)
        mean, second = _recursion_moments(chain, moved, noise=True)
        assert float(np.sum(second - mean**2)) >= best_trace - 1e-12
    per_parameter = exact_moments(mdp, theta, parse_estimator(f"{weight}+optimal-per-parameter"), chain=chain)
    assert per_parameter.variance_trace <= best_trace + 1e-12
    for other in ("none", "lesson", "running"):  # constants per step (V(s_t) is not one)
        assert exact_moments(
            mdp, theta, parse_estimator(f"{weight}+{other}"), chain=chain
        ).variance_trace >= (best_trace - 1e-12)


def test_short_corridor_matches_a_linear_solve_and_sutton_barto():
    mdp = envs.short_corridor()
    p_right = 2 - np.sqrt(2)  # the best stochastic policy
    theta = np.array([[0.0, np.log(p_right / (1 - p_right))]])
    # independent: solve (I - P_pi) v = r on the three non-terminal states
    policy = np.array([1 - p_right, p_right])
    flow = np.einsum("a,sap->sp", policy, mdp.transitions)[:3, :3]
    v = np.linalg.solve(np.eye(3) - flow, np.full(3, -1.0))
    assert objective(mdp, theta) == pytest.approx(v[0], rel=1e-10)
    # Sutton & Barto, Example 13.1: v*(S) is about -11.6; by hand, the 3 equations give -(6 + 4 sqrt 2)
    assert objective(mdp, theta) == pytest.approx(-(6 + 4 * np.sqrt(2)), rel=1e-10)
    assert objective(mdp, np.zeros((1, 2))) == pytest.approx(-12.0, rel=1e-10)
    chain = unroll(mdp, theta)
    assert chain.tail_mass < 1e-13
    np.testing.assert_allclose(values(chain)[0][0][:3], v, rtol=1e-10)
    grad = exact_gradient(mdp, theta)
    numeric = finite_difference(lambda th: objective(mdp, th), theta)
    np.testing.assert_allclose(grad, numeric, atol=1e-6)
    for text in ("vanilla", "rtg+value", "rtg+optimal", "base"):
        assert np.abs(exact_moments(mdp, theta, parse_estimator(text)).mean - grad.ravel()).max() < 1e-9


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beta", [0.0, 0.4])
def test_linear_solves_for_unbounded_episodes_match_the_unrolled_chain(seed, beta):
    mdp = random_mdp(seed, states=4, actions=3, horizon=None, gamma=0.8, terminal=True, sas_rewards=True)
    theta = np.random.default_rng(seed).normal(size=mdp.theta_shape())
    chain = unroll(mdp, theta, beta)  # backward induction, truncated where P(still running) < 1e-14
    assert objective(mdp, theta, beta) == pytest.approx(float(mdp.initial_s @ values(chain)[0][0]), rel=1e-10)
    np.testing.assert_allclose(exact_gradient(mdp, theta, beta).ravel(), chain_gradient(chain), atol=1e-10)
    visits = state_distribution(chain)[:-1].sum(axis=0) * ~mdp.terminal_s
    np.testing.assert_allclose(expected_visits(mdp, theta), visits, rtol=1e-10)


def test_lesson_at_uniform_policy_knobs_lower_the_variance():
    mdp = envs.lesson()
    theta = np.zeros(mdp.theta_shape())
    trace = {
        name: exact_moments(mdp, theta, parse_estimator(name)).variance_trace
        for name in ("vanilla", "rtg", "base", "rtg+base")
    }
    assert trace["vanilla"] > trace["rtg"] > trace["rtg+base"]
    assert trace["vanilla"] > trace["base"] > trace["rtg+base"]


def test_repayment_is_a_counterexample_to_the_lesson():
    mdp = envs.repayment()
    theta = np.zeros(mdp.theta_shape())
    trace = {
        name: exact_moments(mdp, theta, parse_estimator(name)).variance_trace
        for name in ("vanilla", "rtg", "base", "rtg+value")
    }
    assert trace["rtg"] > trace["vanilla"]
    assert trace["base"] > trace["vanilla"]
    assert trace["rtg+value"] < trace["vanilla"]


def test_random_mdp_with_fifty_steps_is_exact_by_recursion():
    mdp = envs.make("random:seed=1,states=10,actions=4,horizon=50")
    theta = np.random.default_rng(0).normal(size=mdp.theta_shape())
    moments = exact_moments(mdp, theta, parse_estimator("rtg+optimal"))
    assert moments.method == "recursion"
    assert np.abs(moments.mean - exact_gradient(mdp, theta).ravel()).max() < 1e-9
