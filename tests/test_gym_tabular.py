"""``--mdp gym:ID``: a tabular Gymnasium environment's model read into a TabularMDP (pgvar.gym.tabular)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import run

import pgvar

gymnasium = pytest.importorskip("gymnasium")

from pgvar import budget, envs  # noqa: E402
from pgvar.errors import MDPError, PgvarError, SpecError  # noqa: E402
from pgvar.exact import objective  # noqa: E402
from pgvar.gym import tabular  # noqa: E402
from pgvar.gym.envspec import parse_value  # noqa: E402
from pgvar.gym.tabular import from_gym  # noqa: E402
from pgvar.mdpfile import resolve_mdp  # noqa: E402
from pgvar.policy import uniform_theta  # noqa: E402


def monte_carlo_return(env_id: str, episodes: int, seed: int, **make_kwargs) -> tuple[float, float]:
    """(mean, standard error) of the undiscounted return of uniformly random actions in the real env."""
    env = gymnasium.make(env_id, **make_kwargs)
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    returns_b = np.zeros(episodes)
    for b in range(episodes):
        env.reset()
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(env.action_space.n)))
            returns_b[b] += reward
            done = terminated or truncated
    env.close()
    return float(returns_b.mean()), float(returns_b.std(ddof=1) / np.sqrt(episodes))


def assert_rows_are_distributions(mdp):
    """Every (s, a) row sums to 1; terminal states stay put."""
    np.testing.assert_allclose(mdp.transitions.sum(axis=-1), 1.0, atol=1e-12)
    for state in np.flatnonzero(mdp.terminal_s):
        assert (mdp.transitions[state, :, state] == 1.0).all()


# -- the model --------------------------------------------------------------------------------------
def test_frozen_lake_4x4_slippery_is_read_with_its_holes_goal_and_time_limit():
    mdp = envs.make("gym:FrozenLake-v1")
    desc = gymnasium.make("FrozenLake-v1").unwrapped.desc.ravel()
    assert (mdp.n_states, mdp.n_actions, mdp.horizon, mdp.gamma) == (16, 4, 100, 1.0)
    assert mdp.name == "gym:FrozenLake-v1"
    np.testing.assert_array_equal(mdp.terminal_s, np.isin(desc, [b"H", b"G"]))
    np.testing.assert_array_equal(mdp.initial_s, desc == b"S")
    assert mdp.action_names == ("left", "down", "right", "up")
    assert mdp.state_names[0] == "(0,0) S" and mdp.state_names[15] == "(3,3) G"
    assert mdp.reward_noise == "none"
    assert_rows_are_distributions(mdp)
    # slippery: the intended move with probability 1/3, each side move 1/3; moves into a wall stay
    np.testing.assert_allclose(mdp.transitions[0, 0, [0, 4]], [2 / 3, 1 / 3])
    # reward 1 only on entering the goal
    into_goal_sas = (np.arange(16) == 15) & (mdp.transitions > 0) & ~mdp.terminal_s[:, None, None]
    np.testing.assert_array_equal(mdp.reward_sas, into_goal_sas.astype(float))


def test_the_non_slippery_8x8_map_is_deterministic():
    mdp = envs.make("gym:FrozenLake-v1,map_name=8x8,is_slippery=false")
    assert (mdp.n_states, mdp.n_actions) == (64, 4)
    assert set(np.unique(mdp.transitions)) == {0.0, 1.0}
    assert_rows_are_distributions(mdp)
    assert mdp.name == "gym:FrozenLake-v1,map_name=8x8,is_slippery=false"


def test_pgvar_takes_horizon_and_gamma_and_the_time_limit_follows_max_episode_steps():
    mdp = envs.make("gym:FrozenLake-v1, gamma=0.9, horizon=20")
    assert (mdp.gamma, mdp.horizon) == (0.9, 20)
    with pytest.raises(SpecError, match="horizon=7"):  # one spelling of the time limit
        envs.make("gym:FrozenLake-v1,max_episode_steps=7")


def test_option_values_are_booleans_numbers_or_text():
    assert [parse_value(v) for v in ("false", "True", "3", "-2", "0.5", "1e-3", "8x8")] == [
        False,
        True,
        3,
        -2,
        0.5,
        1e-3,
        "8x8",
    ]
    assert isinstance(parse_value("3"), int)


def test_taxi_has_500_states_its_action_names_and_four_drop_off_ends():
    mdp = envs.make("gym:Taxi-v4")
    assert (mdp.n_states, mdp.n_actions, mdp.horizon) == (500, 6, 200)
    assert mdp.action_names == ("south", "north", "east", "west", "pickup", "dropoff")
    assert mdp.terminal_s.sum() == 4  # the passenger delivered at each of the four places
    assert_rows_are_distributions(mdp)
    np.testing.assert_allclose(mdp.initial_s.sum(), 1.0)
    assert (mdp.initial_s[mdp.terminal_s] == 0).all()


def test_cliff_walking_needs_a_horizon():
    with pytest.raises(SpecError) as info:
        envs.make("gym:CliffWalking-v1")
    message = str(info.value)
    assert "no time limit" in message and "horizon=" in message and "\n" not in message
    mdp = envs.make("gym:CliffWalking-v1,horizon=50")
    assert (mdp.n_states, mdp.horizon) == (48, 50)
    assert np.flatnonzero(mdp.terminal_s).tolist() == [47]  # the goal; the cliff sends you back to 36
    assert mdp.initial_s[36] == 1.0
    assert mdp.action_names == ("up", "right", "down", "left")


def test_mdp_names_route_to_gymnasium_through_resolve_mdp():
    assert resolve_mdp("gym:FrozenLake-v1,gamma=0.95").gamma == 0.95  # ".95" is not a file suffix


# -- the exact objective against the real environment ----------------------------------------------
@pytest.mark.parametrize(
    "text,env_id,make_kwargs,episodes",
    [
        ("FrozenLake-v1", "FrozenLake-v1", {}, 4000),
        ("CliffWalking-v1,horizon=50", "CliffWalking-v1", {"max_episode_steps": 50}, 1000),
    ],
)
def test_exact_objective_matches_episodes_of_the_real_environment(text, env_id, make_kwargs, episodes):
    mdp = from_gym(text)
    exact = objective(mdp, uniform_theta(mdp))
    mean, stderr = monte_carlo_return(env_id, episodes, seed=7, **make_kwargs)
    assert stderr > 0
    # the sample mean is within 4 of its own standard errors of the exact value (fails ~1 in 16,000)
    assert abs(mean - exact) < 4 * stderr, (mean, stderr, exact)


# -- how P becomes pgvar's model: merged outcomes, noise, terminal states ---------------------------
TOY_MODELS = {
    # state 0 -> 1 or 2 with two rewards each (spread 1 around means 2 and 5); 1 -> 2; 2 ends
    "noise": {
        0: {0: [(0.25, 1, 1.0, False), (0.25, 1, 3.0, False), (0.25, 2, 4.0, True), (0.25, 2, 6.0, True)]},
        1: {0: [(1.0, 2, 0.0, True)]},
        2: {0: [(1.0, 2, 0.0, True)]},
    },
    # the same next state listed twice with the same reward: one outcome, no noise
    "same": {
        0: {0: [(0.5, 1, 1.0, False), (0.25, 1, 1.0, False), (0.25, 2, 2.0, True)]},
        1: {0: [(1.0, 2, 0.0, True)]},
        2: {0: [(1.0, 0, 0.0, False)]},  # what P says after the end is never played
    },
    # a spread of rewards for next state 1 but none for 2: not one variance per (state, action)
    "uneven": {
        0: {0: [(0.25, 1, 1.0, False), (0.25, 1, 3.0, False), (0.5, 2, 5.0, True)]},
        1: {0: [(1.0, 2, 0.0, True)]},
        2: {0: [(1.0, 2, 0.0, True)]},
    },
    # state 2 ends the episode when entered from 0, not when entered from 1
    "mixed": {
        0: {0: [(0.5, 1, 0.0, False), (0.5, 2, 1.0, True)]},
        1: {0: [(1.0, 2, 0.0, False)]},
        2: {0: [(1.0, 2, 0.0, True)]},
    },
}
TOY_ID = "pgvar-test/Toy-v0"


class ToyEnv(gymnasium.Env):
    """Three states, one action, P from TOY_MODELS[case]; ``start=no`` leaves out the start."""

    def __init__(self, case: str = "noise", start: str = "yes", box: bool = False):
        self.P = TOY_MODELS[case]
        self.observation_space = gymnasium.spaces.Box(0.0, 1.0, (2,)) if box else gymnasium.spaces.Discrete(3)
        self.action_space = gymnasium.spaces.Discrete(1)
        if start == "yes":
            self.initial_state_distrib = np.array([1.0, 0.0, 0.0])


if TOY_ID not in gymnasium.registry:
    gymnasium.register(id=TOY_ID, entry_point=ToyEnv, max_episode_steps=3, disable_env_checker=True)


def test_outcomes_with_one_next_state_merge_and_their_spread_becomes_noise():
    mdp = from_gym(f"{TOY_ID},case=noise")
    np.testing.assert_allclose(mdp.transitions[0, 0], [0.0, 0.5, 0.5])
    np.testing.assert_allclose(mdp.reward_sas[0, 0, 1:], [2.0, 5.0])
    assert mdp.reward_noise == "gaussian"
    np.testing.assert_allclose(mdp.noise_variance_sa[:, 0], [1.0, 0.0, 0.0])
    assert mdp.terminal_s.tolist() == [False, False, True]
    assert objective(mdp, uniform_theta(mdp)) == pytest.approx(0.5 * 2.0 + 0.5 * 5.0)


def test_equal_rewards_merge_without_noise_and_terminal_states_become_absorbing():
    mdp = from_gym(f"{TOY_ID},case=same")
    np.testing.assert_allclose(mdp.transitions[0, 0], [0.0, 0.75, 0.25])
    assert mdp.reward_noise == "none"
    np.testing.assert_array_equal(mdp.transitions[2, 0], [0.0, 0.0, 1.0])
    assert mdp.reward_sas[2].max() == 0.0


@pytest.mark.parametrize(
    "text,error,fragment",
    [
        (f"{TOY_ID},case=uneven", MDPError, "state 0, action 0: outcomes with the same next state"),
        (f"{TOY_ID},case=mixed", MDPError, "state 2 is entered with terminated=True (from state 0, actio"),
        (f"{TOY_ID},start=no", MDPError, "no start distribution found"),
        (f"{TOY_ID},box=true", MDPError, "pgvar needs Discrete spaces"),
    ],
)
def test_models_pgvar_cannot_represent_are_refused_in_one_line(text, error, fragment):
    with pytest.raises(error) as info:
        from_gym(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(f"gym:{text}")


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,fragment",
    [
        ("gym:CartPole-v1", "gym:CartPole-v1 exposes no tabular model (env.unwrapped.P); use --env"),
        ("gym:MountainCar-v0", "gym:MountainCar-v0 exposes no tabular model"),
        ("gym:NoSuchEnv-v0", "env 'NoSuchEnv-v0': Environment `NoSuchEnv` doesn't exist"),
        ("gym:Taxi-v3", "Please use `Taxi-v4` instead"),
        ("gym:FrozenLake-v1,foo=1", "options refused: FrozenLakeEnv.__init__() got an"),
        ("gym:FrozenLake-v1,map_name=9x9", "options refused: KeyError: '9x9'"),
        ("gym:FrozenLake-v1,horizon=0", "horizon must be a whole number >= 1"),
        ("gym:FrozenLake-v1,gamma=1.5", "gamma must be a number from 0 to 1"),
        ("gym:FrozenLake-v1,is_slippery", "must look like key=value"),
        ("gym:FrozenLake-v1,horizon=5,horizon=6", "'horizon' given twice"),
        ("gym:", "give a Gymnasium id"),
    ],
)
def test_each_error_is_one_line(name, fragment):
    with pytest.raises(PgvarError) as info:
        envs.make(name)
    assert isinstance(info.value, (SpecError, MDPError))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_an_oversized_table_is_refused_before_the_dense_tables_are_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("dense tables built before the budget check")

    monkeypatch.setattr(tabular, "dense_tables", refuse)
    with budget.limits(memory_gb=0.01), pytest.raises(budget.BudgetError) as info:
        envs.make("gym:Taxi-v4")  # 500 x 6 x 500 entries
    assert str(info.value).startswith("gym:Taxi-v4: ") and "\n" not in str(info.value)


def test_without_gymnasium_the_error_says_how_to_install_it(monkeypatch):
    for module in ("pgvar.gym", "pgvar.gym.tabular"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.delattr(pgvar, "gym", raising=False)  # restored afterwards, as sys.modules is
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium now fails
    with pytest.raises(SpecError) as info:
        envs.make("gym:FrozenLake-v1")
    assert "pip install 'pgvar[gym]'" in str(info.value) and "\n" not in str(info.value)


def test_importing_the_core_does_not_load_gymnasium():
    code = "import sys, pgvar, pgvar.envs, pgvar.mdpfile; print('gymnasium' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# -- the command line --------------------------------------------------------------------------------
def test_the_command_line_takes_gym_mdps(capsys):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    code, out, err = run(["exact", "--mdp", "gym:FrozenLake-v1", "--json"], capsys)
    assert code == 0, err
    payload = json.loads(out, parse_constant=refuse)
    assert payload["mdp"] == "gym:FrozenLake-v1"
    assert payload["J"] == pytest.approx(objective(envs.make("gym:FrozenLake-v1"), np.zeros((16, 4))))

    code, out, err = run(["exact", "--mdp", "gym:CartPole-v1"], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "exposes no tabular model" in err
    assert "Traceback" not in err
