"""TabularMDP validation (each error names its field) and the documented built-in MDPs."""

from __future__ import annotations

import numpy as np
import pytest

from pgvar import envs
from pgvar.errors import MDPError, PgvarError, SpecError
from pgvar.mdp import TabularMDP


def chain(**changes) -> dict:
    """Keyword arguments of a valid 3-state MDP (0 -> 1 -> 2, state 2 terminal), with changes."""
    transitions = np.zeros((3, 2, 3))
    transitions[0, :, 1] = 1.0
    transitions[1, :, 2] = 1.0
    transitions[2, :, 2] = 1.0
    kwargs = {
        "initial_s": [1.0, 0.0, 0.0],
        "transitions": transitions,
        "rewards": np.ones((3, 2)),
        "gamma": 0.9,
        "horizon": None,
        "terminal_s": [False, False, True],
    }
    kwargs.update(changes)
    return kwargs


def test_valid_chain_builds():
    mdp = TabularMDP(**chain())
    assert (mdp.n_states, mdp.n_actions, mdp.n_observations) == (3, 2, 3)
    assert mdp.observation_s.tolist() == [0, 1, 2]
    assert mdp.reward_sas.shape == (3, 2, 3) and mdp.reward_sas[0, 1, 2] == 1.0
    assert mdp.noise_variance_sa.tolist() == [[0, 0]] * 3
    assert mdp.theta_shape() == (3, 2)


def _bad_transitions(kind: str) -> np.ndarray:
    t = chain()["transitions"].copy()
    if kind == "nan":
        t[0, 0, 1] = np.nan
    elif kind == "negative":
        t[0, 0] = [0.5, 1.0, -0.5]
    elif kind == "sum":
        t[1, 1] = [0.0, 0.3, 0.3]
    return t


@pytest.mark.parametrize(
    "changes,field,problem",
    [
        ({"initial_s": [[1.0, 0.0, 0.0]]}, "initial", "non-empty list of S probabilities"),
        ({"initial_s": ["a", 0, 0]}, "initial", "must be numbers"),
        ({"initial_s": [0.5, 0.0, 0.0]}, "initial", "sum to 0.5"),
        ({"transitions": np.ones((3, 2))}, "transitions", "shape must be (S, A, S)"),
        ({"transitions": np.zeros((3, 0, 3))}, "transitions", "at least one action"),
        ({"transitions": _bad_transitions("nan")}, "transitions", "entry [0, 0, 1] is nan"),
        ({"transitions": _bad_transitions("negative")}, "transitions", "is -0.5, must be >= 0"),
        ({"transitions": _bad_transitions("sum")}, "transitions", "(s, a) [1, 1] sum to 0.6"),
        ({"rewards": np.ones((3, 3))}, "rewards", "shape must be (S, A)=(3, 2)"),
        ({"rewards": [[np.inf, 0]] * 3}, "rewards", "must be a finite number"),
        ({"gamma": 1.5}, "gamma", "[0, 1]"),
        ({"gamma": float("nan")}, "gamma", "[0, 1]"),
        ({"horizon": 0}, "horizon", "positive integer"),
        ({"horizon": 2.0}, "horizon", "positive integer"),
        ({"horizon": True}, "horizon", "positive integer"),
        ({"transitions": np.stack([chain()["transitions"]] * 2)}, "transitions", "need a finite horizon"),
        (
            {"transitions": np.stack([chain()["transitions"]] * 2), "horizon": 3},
            "transitions",
            "cover 2 steps",
        ),
        ({"terminal_s": [False, True]}, "terminal", "S=3 booleans"),
        ({"terminal_s": [True, True, True]}, "terminal", "at least one state must be non-terminal"),
        ({"terminal_s": [False, False, False]}, "terminal", "can never reach a terminal state"),
        ({"observation_s": [0.0, 1.0, 2.0]}, "observations", "must be integers"),
        ({"observation_s": [0, 1]}, "observations", "one observation per state"),
        ({"observation_s": [0, -1, -1]}, "observations", "state 1 has observation < 0"),
        ({"reward_noise": "cauchy"}, "noise.kind", "unknown noise kind 'cauchy'"),
        ({"reward_noise": "gaussian", "noise_scale": -1.0}, "noise.scale", "must be >= 0"),
        ({"reward_noise": "gaussian", "noise_scale": np.ones(3)}, "noise.scale", "(S, A) table"),
        ({"reward_noise": "gaussian", "noise_scale": np.nan}, "noise.scale", "finite"),
        (
            {"rewards": [[1e308, 0]] * 3},
            "rewards",
            "entry [0, 0] is 1e+308, must be a finite number within ±1e+50",
        ),
        ({"rewards": np.full((3, 2, 3), -2e50)}, "rewards", "entry [0, 0, 0] is -2e+50"),
        (
            {"reward_noise": "uniform", "noise_scale": 1e51},
            "noise.scale",
            "is 1e+51, must be a finite number within",
        ),
        ({"per_step_logits": True}, "per_step_logits", "finite horizon"),
    ],
)
def test_validation_errors_name_the_field(changes, field, problem):
    with pytest.raises(MDPError) as info:
        TabularMDP(**chain(**changes))
    message = str(info.value)
    assert message.startswith(f"{field}: "), message
    assert problem in message
    assert "\n" not in message


def test_finite_horizon_needs_no_reachable_terminal():
    mdp = TabularMDP(**chain(terminal_s=[False, False, False], horizon=4))
    assert mdp.horizon == 4


def test_theta_shape_per_step_needs_horizon():
    mdp = TabularMDP(**chain())
    with pytest.raises(MDPError, match=r"^per_step_logits: needs a finite horizon"):
        mdp.theta_shape(per_step=True)
    assert TabularMDP(**chain(horizon=4)).theta_shape(per_step=True) == (4, 3, 2)


# -- built-ins -----------------------------------------------------------------------------------
def test_lesson_properties():
    mdp = envs.lesson()
    assert mdp.horizon == 3 and mdp.gamma == 1.0
    assert (mdp.n_states, mdp.n_actions, mdp.n_observations) == (4, 3, 3)
    best = [int(np.argmax(mdp.rewards[t])) for t in range(3)]
    assert best == [0, 1, 2]
    assert sorted(mdp.rewards[:3].ravel().tolist()) == [0.0] * 6 + [1.0] * 3
    assert mdp.reward_noise == "uniform" and mdp.noise_scale == 0.6
    np.testing.assert_allclose(mdp.noise_variance_sa, 0.03, rtol=1e-12)  # width^2 / 12
    assert mdp.terminal_s.tolist() == [False, False, False, True]
    assert mdp.observation_s.tolist() == [0, 1, 2, -1]
    for t in range(3):  # step t always leads to step t + 1
        assert (mdp.transitions[t, :, t + 1] == 1.0).all()
    assert mdp.theta_shape() == (3, 3)


def test_lesson_noise_width_option():
    np.testing.assert_allclose(envs.make("lesson:noise_width=1.2").noise_variance_sa, 0.12, rtol=1e-12)


def test_short_corridor_properties():
    mdp = envs.short_corridor()
    left, right = 0, 1
    step = {(s, a): int(np.argmax(mdp.transitions[s, a])) for s in range(3) for a in (left, right)}
    assert step[0, left] == 0 and step[0, right] == 1  # normal
    assert step[1, left] == 2 and step[1, right] == 0  # reversed in state 1
    assert step[2, left] == 1 and step[2, right] == 3  # normal, right reaches the goal
    assert len(set(mdp.observation_s[:3].tolist())) == 1 and mdp.n_observations == 1
    assert mdp.horizon is None and mdp.terminal_s.tolist() == [False, False, False, True]
    assert (mdp.rewards == -1).all() and mdp.gamma == 1.0
    assert mdp.action_names == ("left", "right")


def test_short_corridor_optimum_matches_sutton_barto():
    mdp = envs.short_corridor()
    p = np.linspace(0.01, 0.99, 9801)
    values = []
    for prob_right in p:
        pi = np.array([1 - prob_right, prob_right])
        flow = np.einsum("a,sap->sp", pi, mdp.transitions)[:3, :3]
        values.append(np.linalg.solve(np.eye(3) - flow, np.full(3, -1.0))[0])
    best = int(np.argmax(values))
    assert p[best] == pytest.approx(0.59, abs=0.01)
    assert values[best] == pytest.approx(-11.6, abs=0.1)


def test_bandit_properties():
    mdp = envs.make("bandit:k=4,seed=2")
    assert (mdp.n_actions, mdp.horizon, mdp.n_observations) == (4, 1, 1)
    assert mdp.reward_noise == "gaussian" and (mdp.noise_variance_sa == 1.0).all()
    assert np.array_equal(mdp.rewards, envs.bandit(k=4, seed=2).rewards)
    assert not np.array_equal(mdp.rewards, envs.bandit(k=4, seed=3).rewards)
    assert abs(mdp.rewards[0].mean() - 4.0) < 3


def test_random_mdp_properties():
    mdp = envs.make("random:seed=3,states=4,actions=2,horizon=5")
    assert (mdp.n_states, mdp.n_actions, mdp.horizon) == (4, 2, 5)
    np.testing.assert_allclose(mdp.transitions.sum(-1), 1.0)
    assert np.array_equal(
        mdp.transitions, envs.random_mdp(seed=3, states=4, actions=2, horizon=5).transitions
    )
    assert envs.make("random:gamma=0.5").gamma == 0.5
    assert isinstance(envs.make("random:gamma=1").gamma, float)


@pytest.mark.parametrize(
    "name,problem",
    [
        ("maze", "unknown built-in 'maze'"),
        ("bandit:arms=3", "'bandit' takes options k, seed, mean"),
        ("bandit:k", "must look like key=value"),
        ("bandit:k=many", "must be a number"),
        ("bandit:k=0", "k: must be a whole number >= 1"),
        ("random:states=0", "states: must be a whole number >= 1"),
    ],
)
def test_make_rejects_bad_names(name, problem):
    with pytest.raises(SpecError) as info:
        envs.make(name)
    assert problem in str(info.value) and "\n" not in str(info.value)


def test_make_says_why_a_fractional_count_is_wrong():
    with pytest.raises(SpecError) as info:
        envs.make("bandit:k=2.5")
    assert "k=2.5" in str(info.value) and "must be an integer" in str(info.value)


def test_rewards_and_noise_at_the_limit_keep_every_engine_finite():
    from pgvar.estimators import parse_estimator
    from pgvar.exact import exact_gradient, exact_moments
    from pgvar.mdp import REWARD_LIMIT
    from pgvar.montecarlo import sample_batch_means
    from pgvar.policy import uniform_theta
    from pgvar.studies import variance_study

    mdp = TabularMDP(
        **chain(rewards=np.full((3, 2), REWARD_LIMIT), reward_noise="gaussian", noise_scale=REWARD_LIMIT)
    )
    theta = uniform_theta(mdp)
    assert np.isfinite(exact_gradient(mdp, theta)).all()
    assert np.isfinite(exact_moments(mdp, theta, parse_estimator("vanilla")).variance_trace)
    sample = sample_batch_means(mdp, theta, [parse_estimator("rtg")], 4, 8, np.random.SeedSequence(0))
    assert np.isfinite(sample.batch_means_emd).all()
    # the corridor's long episodes and the readings' intervals (fourth powers of returns) at the limit
    corridor = envs.short_corridor()
    scaled = TabularMDP(
        initial_s=corridor.initial_s,
        transitions=corridor.transitions,
        rewards=corridor.rewards * REWARD_LIMIT,
        gamma=corridor.gamma,
        terminal_s=corridor.terminal_s,
        observation_s=corridor.observation_s,
    )
    study = variance_study(scaled, uniform_theta(scaled), [parse_estimator("vanilla")], [1, 4], 10, 0)
    for reading in study.readings:
        assert np.isfinite([reading.variance_trace, *reading.ci95, reading.exact_variance_trace]).all()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bandit:mean=1e70", r"bandit: mean: must be a finite number from -1e\+50 to 1e\+50"),
        ("lesson:noise_width=1e300", r"noise\.scale: .*within ±1e\+50"),
        ("deceptive:treasure=-1e51", r"rewards: .*within ±1e\+50"),
    ],
)
def test_builtins_are_held_to_the_same_limits(name, message):
    with pytest.raises(PgvarError, match=message):
        envs.make(name)
