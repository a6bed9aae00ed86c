"""Costs are estimated before work starts: requests over the limits are refused with one line."""

from __future__ import annotations

import numpy as np
import pytest

from pgvar import budget, envs
from pgvar.errors import PgvarError, SpecError
from pgvar.estimators import parse_estimator, parse_estimators
from pgvar.exact import exact_gradient, exact_moments, unroll
from pgvar.mdp import TabularMDP
from pgvar.montecarlo import Sampler
from pgvar.studies import variance_study


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("random:states=1000000", "table entries"),
        ("bandit:k=1000000000", "bandit: k=1000000000"),
        ("deceptive:depth=100000", "table entries"),
    ],
)
def test_huge_built_ins_are_refused_before_they_are_built(name, words):
    with pytest.raises(budget.BudgetError) as error:
        envs.make(name)
    assert words in _one_line(error)


@pytest.mark.parametrize("name", ["random:seed=-1", "bandit:seed=-3"])
def test_negative_seeds_in_built_ins_are_refused(name):
    with pytest.raises(SpecError, match="seed: must be a whole number >= 0"):
        envs.make(name)


def _wide_mdp(states: int, actions: int, horizon: int | None) -> TabularMDP:
    """Deterministic random transitions: ``states`` x ``actions``, as a user's file might have."""
    rng = np.random.default_rng(0)
    transitions = np.zeros((states, actions, states))
    transitions[
        np.arange(states)[:, None], np.arange(actions), rng.integers(0, states, (states, actions))
    ] = 1
    rewards = rng.normal(size=(states, actions))
    return TabularMDP(
        initial_s=np.full(states, 1 / states), transitions=transitions, rewards=rewards, gamma=1.0,
        horizon=horizon, name="wide",
    )  # fmt: skip


def _corridor(states: int) -> TabularMDP:
    """Left or right along a corridor, ending at the right end: episodes of about states^2 steps."""
    transitions = np.zeros((states, 2, states))
    for s in range(states - 1):
        transitions[s, 0, max(s - 1, 0)] = transitions[s, 1, s + 1] = 1.0
    transitions[-1, :, -1] = 1.0
    return TabularMDP(
        initial_s=np.eye(states)[0], transitions=transitions, rewards=-np.ones((states, 2)), gamma=1.0,
        horizon=None, terminal_s=np.arange(states) == states - 1, name="corridor",
    )  # fmt: skip


def test_exact_moments_of_a_wide_mdp_are_refused_and_its_gradient_still_computed():
    """1,000 states, 4 actions, horizon 20: the recursion would take hours; the tables of one step are
    all the unrolled chain holds, so J and its gradient stay cheap."""
    mdp = _wide_mdp(1000, 4, 20)
    theta = np.zeros(mdp.theta_shape())
    with pytest.raises(budget.BudgetError) as error:
        exact_moments(mdp, theta, parse_estimator("vanilla"))
    assert "exact moments by recursion" in _one_line(error) and "sampling" in str(error.value)
    assert exact_gradient(mdp, theta).shape == theta.shape
    chain = unroll(mdp, theta)
    assert chain.score_tsaD.base is not None and chain.score_tsaD.strides[0] == 0  # one table, seen T times


def test_long_episodes_are_followed_only_as_far_as_the_work_limit():
    mdp = _corridor(300)
    with budget.limits(seconds=2), pytest.raises(budget.BudgetError) as error:
        unroll(mdp, np.zeros(mdp.theta_shape()))
    assert "still running after" in _one_line(error) and "--max-seconds" in str(error.value)


def test_an_astronomical_horizon_is_refused_by_exact_engine_and_sampler():
    mdp = _wide_mdp(4, 2, 10**12)
    theta = np.zeros(mdp.theta_shape())
    with pytest.raises(budget.BudgetError, match="over 1000000000000 steps"):
        unroll(mdp, theta)
    with pytest.raises(budget.BudgetError, match="the sampler's tables"):
        Sampler(mdp, theta, parse_estimators("vanilla"))


@pytest.mark.parametrize(
    ("n", "batches", "count", "words"),
    [(10**12, 60, 1, "agent steps"), (1, 60, 10**10, "of memory"), (1, 10**12, 1, "agent steps")],
)
def test_huge_sampling_requests_are_refused_before_any_episode(n, batches, count, words):
    mdp = envs.lesson()
    sampler = Sampler(mdp, np.zeros(mdp.theta_shape()), parse_estimators("vanilla"))
    with pytest.raises(budget.BudgetError) as error:
        sampler.readings(n, batches, count) if count > 1 else sampler.sample(n, batches)
    assert words in _one_line(error) and f"N={n}" in str(error.value)


def test_a_forced_enumeration_that_cannot_apply_is_refused():
    corridor = envs.short_corridor()
    with pytest.raises(PgvarError, match="enumeration lists at most"):
        exact_moments(
            corridor, np.zeros(corridor.theta_shape()), parse_estimator("vanilla"), method="enumeration"
        )


def test_a_study_measures_where_exact_values_would_exceed_the_limits():
    mdp = envs.make("random:states=400,actions=4,horizon=30")
    theta = np.zeros(mdp.theta_shape())
    with budget.limits(seconds=5):
        study = variance_study(mdp, theta, parse_estimators("vanilla,rtg"), [1], 10, 0)
    assert study.exact_note is not None and "exact moments need" in study.exact_note
    assert all(r.exact_variance_trace is None and r.variance_trace > 0 for r in study.readings)


def test_limits_apply_inside_the_block_only():
    before = budget.current()
    with budget.limits(memory_gb=0.001) as inside:
        assert budget.current() == inside and inside.memory == 1e6
        with pytest.raises(budget.BudgetError, match="of memory, over the limit of 1 MB"):
            budget.check("a request", memory=2e6)
    assert budget.current() == before
