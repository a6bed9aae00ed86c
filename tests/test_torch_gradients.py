"""Per-episode gradients of neural policies (pgvar.torch.gradients, pgvar.torch.critic): the same
estimator as pgvar's tabular reference, the same numbers as a backward loop, chunked or not."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gym = pytest.importorskip("gymnasium")

from gymnasium import spaces  # noqa: E402
from torch import nn  # noqa: E402

from pgvar import budget  # noqa: E402
from pgvar.errors import SpecError  # noqa: E402
from pgvar.estimators import ResolvedEstimator, parse_estimator, score_scale_t  # noqa: E402
from pgvar.estimators import episode_gradients as tabular_episode_gradients  # noqa: E402
from pgvar.gym.envspec import make_env  # noqa: E402
from pgvar.mdp import TabularMDP  # noqa: E402
from pgvar.returns import reward_to_go  # noqa: E402
from pgvar.torch.critic import fit_critic  # noqa: E402
from pgvar.torch.episodes import collect  # noqa: E402
from pgvar.torch.gradients import (  # noqa: E402
    THIN_UNITS,
    RunningBaseline,
    batched_gradient,
    episode_gradients,
    episode_weights_bt,
    flat_parameters,
    length_groups,
    linear_layers,
    loop_gradients,
    parameter_layout,
)
from pgvar.torch.policies import Policy, make_policy  # noqa: E402

GAMMA = 0.95
RTOL = 1e-6


def relative_error(a, b) -> float:
    return float((a - b).norm() / max(float(b.norm()), 1e-300))


def policy_for(env_text: str, spec: str, seed: int = 0):
    env = make_env(env_text)
    return make_policy(spec, env.observation_space, env.action_space, seed=seed)


@pytest.fixture(scope="module")
def cartpole():
    text = f"CartPole-v1,gamma={GAMMA},horizon=60"
    policy = policy_for(text, "mlp:16,16", seed=3)
    return policy, collect(text, policy, 24, seed=5, envs=4)


@pytest.fixture(scope="module")
def pendulum():
    text = f"Pendulum-v1,gamma={GAMMA},horizon=25"
    policy = policy_for(text, "mlp:16", seed=1)
    with torch.no_grad():
        policy.log_std.fill_(-0.3)  # away from the initial 0, so its gradient is checked in general
    return policy, collect(text, policy, 10, seed=2, envs=3)


# -- the key test: the tabular reference on FrozenLake ---------------------------------------------


def frozen_lake_mdp(gamma: float) -> TabularMDP:
    """FrozenLake-v1 4x4 (slippery) as pgvar's MDP, read by hand from ``env.unwrapped.P``: holes
    and the goal are terminal, the time limit of 100 steps the horizon."""
    unwrapped = gym.make("FrozenLake-v1").unwrapped
    n_states, n_actions = unwrapped.observation_space.n, unwrapped.action_space.n
    transitions, rewards = (
        np.zeros((n_states, n_actions, n_states)),
        np.zeros((n_states, n_actions, n_states)),
    )
    for s in range(n_states):
        for a in range(n_actions):
            for probability, following, reward, _ in unwrapped.P[s][a]:
                transitions[s, a, following] += probability
                rewards[s, a, following] = reward
    terminal_s = np.isin(np.asarray(unwrapped.desc).reshape(-1), [b"H", b"G"])
    return TabularMDP(unwrapped.initial_state_distrib, transitions, rewards, gamma=gamma, horizon=100,
                      terminal_s=terminal_s)  # fmt: skip


@pytest.fixture(scope="module")
def frozen_lake():
    text = f"FrozenLake-v1,gamma={GAMMA}"
    policy = policy_for(text, "tabular")
    episodes = collect(text, policy, 300, seed=0)
    values_ts = np.random.default_rng(1).normal(size=(episodes.n_steps + 1, 16))
    return frozen_lake_mdp(GAMMA), policy, episodes, values_ts


@pytest.mark.parametrize(
    ("text", "entropy"),
    [("rtg", 0.0), ("vanilla", 0.0), ("gae0.9+value", 0.0), ("rtg", 0.1), ("gae0.9+value", 0.1),
     ("rtg+value:common", 0.0), ("return+value", 0.05)],
)  # fmt: skip
def test_tabular_policy_on_frozen_lake_is_pgvars_estimator(frozen_lake, text, entropy):
    """The zero-initialised tabular network is pgvar's uniform logit table: on the same episodes its
    per-episode gradients equal ``pgvar.estimators.episode_gradients`` (the network's weight is
    theta transposed), for the full return, the reward-to-go and GAE with a fixed value table, with
    and without the entropy bonus."""
    mdp, policy, episodes, values_ts = frozen_lake
    assert episodes.n_episodes == 300 and episodes.rewards_bt.sum() > 0  # some reach the goal
    spec = parse_estimator(text, entropy=entropy)
    states_tb = episodes.observations_bt.numpy().T
    steps_t1 = np.arange(episodes.n_steps)[:, None]
    values_bt = np.where(episodes.alive_bt, values_ts[steps_t1, states_tb].T, 0.0)
    offsets_tsa = np.zeros((episodes.n_steps, 16, 4))
    if spec.baseline == "value" and spec.weight != "gae":
        scale_t = score_scale_t(spec, GAMMA, episodes.n_steps)
        offsets_tsa[:] = (scale_t[:, None] * values_ts[: episodes.n_steps])[..., None]
    resolved = ResolvedEstimator(spec, offsets_tsa, values_ts)
    expected_bD = tabular_episode_gradients(
        mdp, np.zeros((16, 4)), resolved, states_tb, episodes.actions_bt.numpy().T, episodes.rewards_bt.T,
        episodes.alive_bt.T,
    )  # fmt: skip
    kwargs = {"values_bt": values_bt} if spec.baseline == "value" else {}
    got_bD = episode_gradients(policy, episodes, spec, **kwargs)
    assert parameter_layout(policy) == [("body.weight", 64)]
    as_theta_bD = got_bD.reshape(-1, 4, 16).transpose(1, 2).reshape(-1, 64).numpy()  # (A, S) -> (S, A)
    np.testing.assert_allclose(as_theta_bD, expected_bD, rtol=1e-10, atol=1e-12)
    assert np.abs(expected_bD).sum() > 0


# -- against the backward loop, the batched pass, and chunks ---------------------------------------


@pytest.mark.parametrize("method", ["packed", "vmap"])
@pytest.mark.parametrize(
    ("text", "entropy"), [("rtg", 0.0), ("vanilla", 0.0), ("rtg:common", 0.02), ("gae0.95+value", 0.05)]
)
def test_per_episode_gradients_match_the_backward_loop_on_cartpole(cartpole, text, entropy, method):
    policy, episodes = cartpole
    spec = parse_estimator(text, entropy=entropy)
    kwargs = {}
    if spec.baseline == "value":
        kwargs["values_bt"] = np.where(episodes.alive_bt, np.linspace(0, 5, episodes.n_steps)[None, :], 0.0)
    got_bD = episode_gradients(policy, episodes, spec, method=method, **kwargs)
    reference_bD = loop_gradients(policy, episodes, spec, **kwargs)
    n_parameters = sum(size for _, size in parameter_layout(policy))
    assert got_bD.shape == (24, n_parameters) == (24, 4 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2)
    assert got_bD.dtype == torch.float64
    assert relative_error(got_bD, reference_bD) < RTOL
    assert relative_error(got_bD.mean(0), batched_gradient(policy, episodes, spec, **kwargs)) < RTOL
    chunked_bD = episode_gradients(policy, episodes, spec, chunk_size=5, method=method, **kwargs)
    assert relative_error(chunked_bD, got_bD) < 1e-12


@pytest.mark.parametrize("method", ["packed", "vmap"])
@pytest.mark.parametrize(("text", "entropy"), [("rtg", 0.0), ("vanilla", 0.1), ("gae0.9+value", 0.01)])
def test_per_episode_gradients_match_the_backward_loop_with_a_gaussian_head(pendulum, text, entropy, method):
    policy, episodes = pendulum
    assert not policy.discrete and parameter_layout(policy)[0] == ("log_std", 1)  # own parameters first
    spec = parse_estimator(text, entropy=entropy)
    kwargs = {}
    if spec.baseline == "value":
        kwargs["values_bt"] = np.where(episodes.alive_bt, -3.0, 0.0)
    got_bD = episode_gradients(policy, episodes, spec, method=method, **kwargs)
    assert relative_error(got_bD, loop_gradients(policy, episodes, spec, **kwargs)) < RTOL
    assert relative_error(got_bD.mean(0), batched_gradient(policy, episodes, spec, **kwargs)) < RTOL
    chunked_bD = episode_gradients(policy, episodes, spec, chunk_size=3, method=method, **kwargs)
    assert relative_error(chunked_bD, got_bD) < 1e-12
    assert got_bD[:, 0].abs().sum() > 0  # the log-std gets its per-episode gradient


def test_packed_and_vmap_agree_to_rounding(cartpole):
    """The two methods compute the same sums in another order: they agree far below RTOL."""
    policy, episodes = cartpole
    spec = parse_estimator("rtg")
    packed_bD = episode_gradients(policy, episodes, spec, method="packed")
    assert relative_error(packed_bD, episode_gradients(policy, episodes, spec, method="vmap")) < 1e-12
    assert torch.equal(episode_gradients(policy, episodes, spec), packed_bD)  # auto takes packed here
    assert not packed_bD.requires_grad


class _Scaled(nn.Module):
    """A parameter outside any linear layer: a learned scale on the hidden units."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, width, dtype=torch.float64))

    def forward(self, x):
        return x * self.scale


def test_other_bodies_take_vmap_and_match_the_loop(cartpole):
    """A body with a parameter outside linear layers cannot be packed: ``auto`` takes vmap, which
    matches the backward loop, and ``packed`` is refused in one line. A layer used twice is packed,
    its per-episode terms summed over both uses."""
    trained, episodes = cartpole
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(4, 8, dtype=torch.float64), nn.Tanh(), _Scaled(8),
                         nn.Linear(8, 2, dtype=torch.float64))  # fmt: skip
    policy = Policy("custom", trained.observation_space, trained.action_space, body)
    assert linear_layers(policy) is None and linear_layers(trained) is not None
    spec = parse_estimator("rtg")
    got_bD = episode_gradients(policy, episodes, spec)
    assert relative_error(got_bD, loop_gradients(policy, episodes, spec)) < RTOL
    with pytest.raises(SpecError) as err:
        episode_gradients(policy, episodes, spec, method="packed")
    assert "vmap" in str(err.value) and "\n" not in str(err.value)
    shared = nn.Linear(4, 4, dtype=torch.float64)
    body = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(4, 2, dtype=torch.float64))
    twice = Policy("twice", trained.observation_space, trained.action_space, body)
    assert linear_layers(twice) is not None
    got_bD = episode_gradients(twice, episodes, spec)
    assert got_bD.shape == (episodes.n_episodes, 4 * 4 + 4 + 4 * 2 + 2)
    assert relative_error(got_bD, loop_gradients(twice, episodes, spec)) < RTOL
    wide = nn.Linear(16, 16, dtype=torch.float64)  # wider than THIN_UNITS: its products by bmm per group
    body = nn.Sequential(nn.Linear(4, 16, dtype=torch.float64), nn.Tanh(), wide, nn.Tanh(), wide,
                         nn.Linear(16, 2, dtype=torch.float64))  # fmt: skip
    wide_twice = Policy("wide twice", trained.observation_space, trained.action_space, body)
    assert min(wide.in_features, wide.out_features) > THIN_UNITS
    assert (
        relative_error(
            episode_gradients(wide_twice, episodes, spec), loop_gradients(wide_twice, episodes, spec)
        )
        < RTOL
    )
    for method in ("packed", "vmap"):  # vmap through functional_call must leave the shared layer intact
        before = list(twice.parameters())
        got_bD = episode_gradients(twice, episodes, spec, method=method)
        assert all(a is b for a, b in zip(twice.parameters(), before, strict=True))
        assert all(isinstance(parameter, nn.Parameter) for parameter in twice.parameters())
        assert relative_error(got_bD, loop_gradients(twice, episodes, spec)) < RTOL
    with pytest.raises(SpecError) as err:
        episode_gradients(trained, episodes, spec, method="fast")
    assert "packed" in str(err.value) and "\n" not in str(err.value)


def test_gaussian_gradient_is_the_score_function_by_hand():
    """One step: grad of log N(a; mu, sigma) with respect to log sigma is z^2 - 1, z = (a - mu) / sigma."""
    text = "Pendulum-v1,horizon=1,gamma=1"
    policy = policy_for(text, "linear", seed=0)
    episodes = collect(text, policy, 4, seed=0, envs=2)
    grads_bD = episode_gradients(policy, episodes, parse_estimator("vanilla"))
    with torch.no_grad():
        z_b = (episodes.actions_bt[:, 0, 0] - policy(episodes.observations_bt[:, 0])[:, 0]) / torch.exp(
            policy.log_std
        )
    expected_b = torch.from_numpy(episodes.rewards_bt[:, 0]) * (z_b**2 - 1)
    assert torch.allclose(grads_bD[:, 0], expected_b, rtol=1e-10)


# -- ends and bootstrapping ------------------------------------------------------------------------


def test_truncated_episodes_bootstrap_only_when_given_values(pendulum):
    """Every Pendulum episode is truncated: with truncation values V_b the reward-to-go of step t gains
    gamma^(L - t) V_b (times c_t = gamma^t); without them every end is final."""
    policy, episodes = pendulum
    spec = parse_estimator("rtg")
    values_b = np.linspace(-5, 5, episodes.n_episodes)
    plain_bt = episode_weights_bt(policy, episodes, spec)
    boot_bt = episode_weights_bt(policy, episodes, spec, truncation_values_b=values_b)
    steps_t = np.arange(episodes.n_steps)
    lengths_b1 = episodes.lengths_b[:, None]
    expected_bt = np.where(
        episodes.alive_bt, GAMMA**steps_t * GAMMA ** (lengths_b1 - steps_t) * values_b[:, None], 0
    )
    np.testing.assert_allclose(boot_bt - plain_bt, expected_bt, atol=1e-12)
    returns_tb = reward_to_go(episodes.rewards_bt.T, GAMMA)
    np.testing.assert_allclose(plain_bt, (GAMMA ** steps_t[:, None] * returns_tb).T * episodes.alive_bt)
    g_bD = episode_gradients(policy, episodes, spec, truncation_values_b=values_b)
    assert relative_error(g_bD, loop_gradients(policy, episodes, spec, truncation_values_b=values_b)) < RTOL


def test_terminated_episodes_never_bootstrap():
    """CartPole episodes that fall over are terminated; one that ends exactly at the horizon has both
    flags and counts as terminated: no truncation value changes their weights."""
    text = "CartPole-v1,horizon=12"
    policy = policy_for(text, "linear", seed=2)
    episodes = collect(text, policy, 40, seed=0)
    truncated_only = episodes.truncated_b & ~episodes.terminated_b
    assert truncated_only.any() and episodes.terminated_b.any()
    spec = parse_estimator("gae0.9+value")
    values_bt = np.where(episodes.alive_bt, 1.0, 0.0)
    plain = episode_weights_bt(policy, episodes, spec, values_bt=values_bt)
    boot = episode_weights_bt(
        policy, episodes, spec, values_bt=values_bt, truncation_values_b=np.full(40, 1e6)
    )
    changed_b = np.abs(boot - plain).max(axis=1) > 0
    assert np.array_equal(changed_b, truncated_only)


# -- baselines -------------------------------------------------------------------------------------


def test_running_baseline_uses_earlier_batches_only(cartpole):
    policy, episodes = cartpole
    text = f"CartPole-v1,gamma={GAMMA},horizon=60"
    for name in ("rtg+running", "return+running"):
        spec = parse_estimator(name)
        running = RunningBaseline(spec)
        assert np.all(running.baseline_bt(episodes) == 0)  # nothing seen yet
        running.add(policy, episodes)
        later = collect(text, policy, 6, seed=99, envs=2)
        baseline_bt = running.baseline_bt(later)
        weights_bt = episode_weights_bt(policy, episodes, spec)  # the weight of the earlier batch
        alive_bt = episodes.alive_bt
        mean_t = weights_bt.sum(0) / np.maximum(alive_bt.sum(0), 1)
        steps = min(later.n_steps, episodes.n_steps)
        np.testing.assert_allclose(
            baseline_bt[:, :steps], np.where(later.alive_bt[:, :steps], mean_t[None, :steps], 0)
        )
        g_bD = episode_gradients(policy, later, spec, baseline_bt=baseline_bt)
        plain_bD = episode_gradients(policy, later, parse_estimator(name.replace("running", "none")))
        assert not torch.allclose(g_bD, plain_bD)
        assert relative_error(g_bD, loop_gradients(policy, later, spec, baseline_bt=baseline_bt)) < RTOL
    gae = RunningBaseline(parse_estimator("gae0.9+running"))
    gae.add(policy, episodes)
    assert np.all(gae.baseline_bt(episodes) == 0) and np.any(gae.values_bt(episodes) != 0)


@pytest.mark.parametrize(
    ("text", "kwargs", "needle"),
    [
        ("rtg+optimal", {}, "not supported for neural policies; use none, lesson, running, value"),
        ("rtg+lesson", {}, "pass baseline_bt"),
        ("rtg+running", {}, "pass baseline_bt"),
        ("rtg+value", {}, "pass values_bt"),
        ("gae0.9+value", {}, "pass values_bt"),
        ("rtg", {"values_bt": np.zeros((1, 1))}, "shape"),
        ("rtg", {"baseline_bt": "ones"}, "baseline_bt"),
    ],
)
def test_unsupported_baselines_and_missing_arrays_are_one_line_errors(cartpole, text, kwargs, needle):
    policy, episodes = cartpole
    if kwargs.get("baseline_bt") == "ones":
        kwargs = {"baseline_bt": np.ones(episodes.alive_bt.shape)}
    with pytest.raises(SpecError) as err:
        episode_gradients(policy, episodes, parse_estimator(text), **kwargs)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_critic_is_deterministic_and_fits_the_returns():
    text = f"CartPole-v1,gamma={GAMMA},horizon=40"
    policy = policy_for(text, "linear", seed=0)
    fitting, used = collect(text, policy, 40, seed=1), collect(text, policy, 8, seed=2)
    a = fit_critic(fitting, policy.observation_space, hidden=(16,), epochs=150, seed=3)
    b = fit_critic(fitting, policy.observation_space, hidden=(16,), epochs=150, seed=3)
    values_bt = a.values_bt(used)
    np.testing.assert_array_equal(values_bt, b.values_bt(used))
    assert values_bt.shape == used.alive_bt.shape and np.all(values_bt[~used.alive_bt] == 0)
    assert a.final_values_b(used).shape == (8,)
    targets = reward_to_go(fitting.rewards_bt.T, GAMMA).T[fitting.alive_bt]
    residual = targets - a.values_bt(fitting)[fitting.alive_bt]
    assert residual.var() < 0.5 * targets.var()  # it learnt something beyond the mean
    spec = parse_estimator("gae0.95+value")
    g_bD = episode_gradients(policy, used, spec, values_bt=values_bt)
    assert relative_error(g_bD, loop_gradients(policy, used, spec, values_bt=values_bt)) < RTOL


def test_discrete_policy_on_box_actions_is_refused_for_tabular():
    with pytest.raises(SpecError) as err:
        make_policy("tabular", spaces.Box(-1, 1, (4,)), spaces.Discrete(2))
    assert "tabular" in str(err.value) and "\n" not in str(err.value)


def test_length_groups_cover_every_episode_once_within_the_chunk():
    lengths_b = np.random.default_rng(0).integers(1, 200, size=101)
    for chunk in (1, 7, 50, 101):
        groups = length_groups(lengths_b, chunk)
        assert all(len(group) <= chunk for group in groups)
        assert sorted(np.concatenate(groups).tolist()) == list(range(101))
        assert all(np.all(np.diff(lengths_b[group]) >= 0) for group in groups)  # the last is the longest
    assert len(length_groups(np.full(64, 200), 64)) == 1  # equal lengths: nothing to gain from splitting


def test_layout_and_budget(cartpole):
    policy, episodes = cartpole
    layout = parameter_layout(policy)
    expected = [f"body.{i}.{kind}" for i in (0, 2, 4) for kind in ("weight", "bias")]
    assert [name for name, _ in layout] == expected
    assert flat_parameters(policy).shape == (sum(size for _, size in layout),)
    assert torch.equal(flat_parameters(policy)[:64], policy.body[0].weight.detach().reshape(-1))
    with budget.limits(memory_gb=1e-6), pytest.raises(budget.BudgetError) as err:
        episode_gradients(policy, episodes, parse_estimator("rtg"))
    assert "episode_gradients" in str(err.value) and "\n" not in str(err.value)
