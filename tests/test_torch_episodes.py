"""Environment specs, neural policies and episode collection (pgvar.gym.envspec, pgvar.torch.policies,
pgvar.torch.episodes): one-line errors, autoreset modes, quotas against selection bias, ends."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gym = pytest.importorskip("gymnasium")

from gymnasium import spaces  # noqa: E402

from pgvar import budget  # noqa: E402
from pgvar.errors import SpecError  # noqa: E402
from pgvar.gym.envspec import EnvSpec, env_horizon, make_env, make_vector_env, parse_env  # noqa: E402
from pgvar.torch.episodes import collect, environment_seeds  # noqa: E402
from pgvar.torch.policies import make_policy  # noqa: E402

FIRST_ACTION = "PgvarTest/FirstAction-v0"
ENDS_AT_LIMIT = "PgvarTest/EndsAtLimit-v0"
LONG = 20  # length of FirstActionEnv's episode after action 1 (action 0 ends it at once)


class FirstActionEnv(gym.Env):
    """One state; the first action decides the episode's length: 1 step (action 0) or LONG steps."""

    observation_space = spaces.Discrete(1)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.length = 0, None
        return 0, {}

    def step(self, action):
        if self.length is None:
            self.length = 1 if int(action) == 0 else LONG
        self.t += 1
        return 0, 1.0, self.t >= self.length, False, {}


class EndsAtLimitEnv(gym.Env):
    """Terminates at its 5th step: with a time limit of 5 both flags are set on that step."""

    observation_space = spaces.Box(-1.0, 10.0, shape=(1,), dtype=np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t, dtype=np.float32), 1.0, self.t >= 5, False, {}


for env_id, entry in ((FIRST_ACTION, FirstActionEnv), (ENDS_AT_LIMIT, EndsAtLimitEnv)):
    if env_id not in gym.registry:
        gym.register(id=env_id, entry_point=entry, max_episode_steps=100)


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


def policy_for(env_text: str, spec: str = "mlp:16,16", seed: int = 0):
    env = make_env(env_text)
    return make_policy(spec, env.observation_space, env.action_space, seed=seed)


# -- env specs -------------------------------------------------------------------------------------


def test_parse_env_reads_pgvar_options_and_typed_kwargs():
    spec = parse_env("FrozenLake-v1,gamma=0.9,horizon=50,is_slippery=false,map_name=8x8,x=2,y=0.5")
    assert (spec.id, spec.gamma, spec.horizon) == ("FrozenLake-v1", 0.9, 50)
    assert spec.kwargs == {"is_slippery": False, "map_name": "8x8", "x": 2, "y": 0.5}
    assert spec.text == "FrozenLake-v1,gamma=0.9,horizon=50,is_slippery=false,map_name=8x8,x=2,y=0.5"
    assert parse_env("CartPole-v1") == EnvSpec("CartPole-v1", text="CartPole-v1")
    assert env_horizon("CartPole-v1") == 500 and env_horizon("CartPole-v1,horizon=7") == 7


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "give a Gymnasium id"),
        ("gamma=0.9", "must start with a Gymnasium id"),
        ("CartPole-v1,horizon=0", "horizon must be a whole number"),
        ("CartPole-v1,horizon=2.5", "horizon must be a whole number"),
        ("CartPole-v1,gamma=1.5", "gamma must be a number from 0 to 1"),
        ("CartPole-v1,gamma", "must look like key=value"),
        ("CartPole-v1,a=1,a=2", "given twice"),
        ("CartPole-v1,max_episode_steps=9", "horizon=9"),
    ],
)
def test_parse_env_errors_are_one_line(text, needle):
    with pytest.raises(SpecError) as err:
        parse_env(text)
    assert needle in one_line(err)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("NoSuchEnv-v0", "NoSuchEnv"),
        ("CartPole-v1,bogus=3", "options refused"),
        ("CliffWalking-v1", "horizon="),
        ("Taxi-v3", "deprecated"),
    ],
)
def test_make_env_errors_are_one_line(text, needle):
    with pytest.raises(SpecError) as err:
        make_env(text)
    assert needle in one_line(err)


def test_make_env_without_gymnasium_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # import gymnasium now raises ImportError
    with pytest.raises(SpecError) as err:
        make_env("CliffWalking-v1,horizon=10")
    assert "pip install 'pgvar[gym]'" in one_line(err)


def test_make_env_applies_the_horizon():
    env = make_env("CliffWalking-v1,horizon=3")
    env.reset(seed=0)
    flags = [env.step(0)[3] for _ in range(3)]
    assert flags == [False, False, True]
    with pytest.raises(SpecError) as err:
        make_vector_env("CartPole-v1", 2, autoreset_mode="sometimes")
    assert "next-step" in one_line(err)


# -- policies --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "observation_space", "action_space", "needle"),
    [
        ("tabular", spaces.Box(-1, 1, (4,)), spaces.Discrete(2), "needs Discrete observations"),
        ("tabular", spaces.Discrete(4), spaces.Box(-1, 1, (1,)), "needs Discrete observations"),
        ("mlp:8", spaces.Dict({"a": spaces.Discrete(2)}), spaces.Discrete(2), "unsupported observation"),
        ("mlp:8", spaces.Tuple((spaces.Discrete(2),)), spaces.Discrete(2), "unsupported observation"),
        ("mlp:8", spaces.Box(0, 255, (8, 8, 3), dtype=np.uint8), spaces.Discrete(2), "unsupported obs"),
        ("mlp:8", spaces.Discrete(3), spaces.MultiDiscrete([2, 2]), "unsupported action"),
        ("mlp:", spaces.Discrete(3), spaces.Discrete(2), "hidden widths"),
        ("mlp:8,x", spaces.Discrete(3), spaces.Discrete(2), "hidden widths"),
        ("cnn", spaces.Discrete(3), spaces.Discrete(2), "unknown"),
    ],
)
def test_make_policy_errors_are_one_line(spec, observation_space, action_space, needle):
    with pytest.raises(SpecError) as err:
        make_policy(spec, observation_space, action_space)
    assert needle in one_line(err)


def test_tabular_policy_is_the_uniform_logit_table():
    policy = make_policy("tabular", spaces.Discrete(16), spaces.Discrete(4), seed=5)
    assert [name for name, _ in policy.named_parameters()] == ["body.weight"]
    assert policy.body.weight.shape == (4, 16) and policy.body.weight.dtype == torch.float64
    assert torch.all(policy.body.weight == 0)
    logits = policy(torch.tensor([0, 7, 15]))
    assert logits.shape == (3, 4) and torch.all(logits == 0)
    assert torch.allclose(policy.entropy(torch.tensor([3])), torch.tensor([math.log(4)], dtype=torch.float64))


def test_policies_are_seeded_float64_and_leave_the_global_rng_alone():
    box, actions = spaces.Box(-1, 1, (3,)), spaces.Box(-2, 2, (2,))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = make_policy("mlp:8,8", box, actions, seed=4)
    assert torch.rand(1) == before
    b = make_policy("mlp:8,8", box, actions, seed=4)
    c = make_policy("mlp:8,8", box, actions, seed=5)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert p.dtype == torch.float64 and torch.equal(p, q), name
    assert not torch.equal(a.body[0].weight, c.body[0].weight)
    assert torch.all(a.log_std == 0) and not a.discrete
    obs = torch.randn(5, 3, dtype=torch.float64)
    acts = torch.randn(5, 2, dtype=torch.float64)
    normal = torch.distributions.Normal(a(obs), torch.exp(a.log_std))
    assert torch.allclose(a.log_prob(obs, acts), normal.log_prob(acts).sum(-1))
    assert torch.allclose(a.entropy(obs), normal.entropy().sum(-1))


def test_weights_round_trip_and_one_line_errors(tmp_path):
    obs_space, act_space = spaces.Box(-1, 1, (4,)), spaces.Discrete(2)
    policy = make_policy("mlp:8", obs_space, act_space, seed=1)
    path = tmp_path / "policy.pt"
    torch.save(policy.state_dict(), path)
    loaded = make_policy("mlp:8", obs_space, act_space, seed=2, weights=path)
    assert all(torch.equal(p, q) for p, q in zip(policy.parameters(), loaded.parameters(), strict=True))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    cases = [
        (garbage, "cannot read"),
        (tmp_path / "missing.pt", "cannot read"),
    ]
    wrong_shape = tmp_path / "wrong.pt"
    torch.save(make_policy("mlp:9", obs_space, act_space).state_dict(), wrong_shape)
    cases.append((wrong_shape, "body.0.weight has shape (9, 4)"))
    wrong_keys = tmp_path / "keys.pt"
    torch.save(make_policy("mlp:8,8", obs_space, act_space).state_dict(), wrong_keys)
    cases.append((wrong_keys, "unexpected"))
    for path, needle in cases:
        with pytest.raises(SpecError) as err:
            make_policy("mlp:8", obs_space, act_space, weights=path)
        assert needle in one_line(err), path


# -- collection ------------------------------------------------------------------------------------


def test_autoreset_modes_give_identical_episodes():
    policy = policy_for("CartPole-v1")
    runs = [
        collect("CartPole-v1,horizon=30", policy, 23, seed=3, envs=4, autoreset_mode=mode)
        for mode in ("next-step", "same-step", "disabled")
    ]
    first = runs[0]
    assert first.truncated_b.any() and (first.terminated_b & ~first.truncated_b).any()
    for other in runs[1:]:
        assert torch.equal(first.observations_bt, other.observations_bt)
        assert torch.equal(first.actions_bt, other.actions_bt)
        assert torch.equal(first.final_observations_b, other.final_observations_b)
        for name in ("rewards_bt", "alive_bt", "terminated_b", "truncated_b"):
            assert np.array_equal(getattr(first, name), getattr(other, name)), name


def test_episodes_replay_in_a_fresh_environment_with_their_final_observations():
    """Sub-environment e runs its quota in order from environment_seeds(seed, envs)[e]: replaying its
    recorded actions gives the recorded observations, rewards, flags and final observations."""
    text = "CartPole-v1,horizon=25"
    episodes = collect(text, policy_for(text), 11, seed=7, envs=3)  # quotas 4, 4, 3
    assert episodes.observations_bt.dtype == torch.float64 and episodes.actions_bt.dtype == torch.long
    assert episodes.rewards_bt.dtype == np.float64 and episodes.alive_bt.dtype == bool
    assert episodes.n_steps == episodes.lengths_b.max() <= 25
    env = make_env(text)
    for e, slots in enumerate(([0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10])):
        obs, _ = env.reset(seed=environment_seeds(7, 3)[e])
        for j, b in enumerate(slots):
            if j:
                obs, _ = env.reset()
            length = episodes.lengths_b[b]
            assert episodes.alive_bt[b, :length].all() and not episodes.alive_bt[b, length:].any()
            assert np.all(episodes.rewards_bt[b, length:] == 0)
            for t in range(length):
                np.testing.assert_array_equal(obs, episodes.observations_bt[b, t].numpy())
                obs, reward, terminated, truncated, _ = env.step(int(episodes.actions_bt[b, t]))
                assert reward == episodes.rewards_bt[b, t]
            np.testing.assert_array_equal(obs, episodes.final_observations_b[b].numpy())
            assert (terminated, truncated) == (episodes.terminated_b[b], episodes.truncated_b[b])
            assert truncated == (length == 25)


def test_truncated_episodes_keep_their_final_observation():
    """Pendulum never terminates: every episode is cut by the horizon, and its final observation is
    the state after the last step (Gaussian head, Box actions)."""
    text = "Pendulum-v1,horizon=12"
    policy = policy_for(text, "mlp:8")
    episodes = collect(text, policy, 5, seed=1, envs=2)
    assert episodes.truncated_b.all() and not episodes.terminated_b.any()
    assert episodes.actions_bt.shape == (5, 12, 1) and episodes.actions_bt.dtype == torch.float64
    assert (episodes.lengths_b == 12).all()
    env = make_env(text)
    obs, _ = env.reset(seed=environment_seeds(1, 2)[0])
    for t in range(12):
        obs, *_ = env.step(np.clip(episodes.actions_bt[0, t].numpy(), -2.0, 2.0))
    np.testing.assert_allclose(obs, episodes.final_observations_b[0].numpy())
    assert not torch.equal(episodes.final_observations_b[0], episodes.observations_bt[0, -1])


def test_an_episode_ending_at_the_limit_has_both_flags_and_counts_as_terminated():
    text = f"{ENDS_AT_LIMIT},horizon=5"
    episodes = collect(text, policy_for(text, "linear"), 4, seed=0, envs=2)
    assert episodes.terminated_b.all() and episodes.truncated_b.all()
    terminated_tb, truncated_tb = episodes.episode_ends_tb()
    assert terminated_tb[4].all() and not truncated_tb.any() and terminated_tb.sum() == 4
    assert episodes.final_observations_b.squeeze(-1).tolist() == [5.0] * 4


def test_quotas_keep_the_sample_free_of_selection_bias():
    """The first action decides the length (1 or LONG steps) with probability 1/2 each under the
    uniform policy: E[length] = (1 + LONG) / 2, sd (LONG - 1) / 2. With batches of 16 episodes on 8
    sub-environments, keeping "the first 16 to finish" would return mostly 1-step episodes (a long one
    holds its sub-environment for LONG steps while the others finish short ones); each
    sub-environment's first 2 episodes are an i.i.d. sample, and the mean length over 80 batches is
    within 4 standard errors of the expectation."""
    batches, per_batch, n_envs = 80, 16, 8
    policy = make_policy("tabular", spaces.Discrete(1), spaces.Discrete(2))
    lengths = np.concatenate([
        collect(FIRST_ACTION, policy, per_batch, seed=1000 * k, envs=n_envs).lengths_b for k in range(batches)
    ])  # fmt: skip
    n = lengths.size
    assert set(np.unique(lengths)) == {1, LONG}
    expected, sd = (1 + LONG) / 2, (LONG - 1) / 2
    assert abs(lengths.mean() - expected) < 4 * sd / math.sqrt(n)
    # the check has power: "the first 16 to finish" of each batch fails it by far
    rng = np.random.default_rng(0)
    draws_rek = np.where(rng.random((batches, n_envs, per_batch)) < 0.5, 1, LONG)
    ends_rek = np.cumsum(draws_rek, axis=2)
    order_rx = np.argsort(ends_rek.reshape(batches, -1), axis=1, kind="stable")[:, :per_batch]
    first_finished = np.take_along_axis(draws_rek.reshape(batches, -1), order_rx, axis=1)
    assert abs(first_finished.mean() - expected) > 6 * sd / math.sqrt(n)


def test_collect_refuses_mismatched_policies_and_budgets():
    policy = make_policy("mlp:8", spaces.Box(-1, 1, (3,)), spaces.Discrete(2))
    with pytest.raises(SpecError) as err:
        collect("CartPole-v1", policy, 4, seed=0)
    assert "observation space" in one_line(err)
    with budget.limits(seconds=0.001), pytest.raises(budget.BudgetError) as err:
        collect("CartPole-v1", policy_for("CartPole-v1"), 10_000, seed=0)
    assert "horizon=" in one_line(err)
    with pytest.raises(SpecError) as err:
        collect("CartPole-v1", policy_for("CartPole-v1"), 0, seed=0)
    assert "episodes" in one_line(err)


def test_same_seed_same_episodes_other_seed_other_episodes():
    text = "FrozenLake-v1"
    policy = policy_for(text, "tabular")
    a, b, c = (collect(text, policy, 12, seed=s, envs=4) for s in (5, 5, 6))
    assert torch.equal(a.observations_bt, b.observations_bt) and torch.equal(a.actions_bt, b.actions_bt)
    assert a.observations_bt.dtype == torch.long
    assert not (a.n_steps == c.n_steps and torch.equal(a.actions_bt, c.actions_bt))
