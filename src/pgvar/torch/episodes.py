"""Episodes of a neural policy on a Gymnasium vector environment, padded into batch-first arrays.

Sampling is i.i.d. from the episode distribution: each sub-environment runs a fixed quota of episodes,
its first k in order. Keeping "the first B episodes to finish" instead would over-represent short
episodes (a short episode finishes before a long one started at the same time), biasing every
estimate built on them.

Reproducibility: sub-environment i is reset with :func:`environment_seeds` (seed)[i], mixed from
(seed, i) by NumPy's SeedSequence, so seeds s and s + 1 share no stream (Gymnasium's own rule,
seed + i, would give them 7 of 8 in common); the policy's random numbers come from one
``torch.Generator`` per sub-environment, seeded from (seed, i) too, and are consumed only by
recorded steps. So sub-environment i's episodes depend on
(seed, i) alone: not on the autoreset mode, nor on when the other sub-environments end.

Autoreset modes of Gymnasium 1.x (``envs.metadata["autoreset_mode"]``):
``NEXT_STEP`` (the default) the step after an episode ends ignores its action and returns the reset
observation: that step is not recorded; ``SAME_STEP`` the reset happens inside the final step and the
final observation is in ``info["final_obs"]``; ``DISABLED`` finished sub-environments are reset here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from pgvar import budget
from pgvar.errors import SpecError
from pgvar.gym.envspec import EnvSpec, env_horizon, make_vector_env, parse_env
from pgvar.torch.policies import DTYPE, Policy
from pgvar.validation import check_int, check_seed

#: Rough cost of collection, for the budget: sub-environment steps per second (a classic-control
#: environment inside a SyncVectorEnv) and the fixed cost of one vector step (policy call, bookkeeping).
ENV_STEPS_PER_SECOND = 5e4
VECTOR_STEP_SECONDS = 1e-4
#: Random numbers drawn at a time per sub-environment.
_NOISE_BLOCK = 256


@dataclass(frozen=True, eq=False)
class Episodes:
    """B episodes, padded to T steps (the longest one), batch-first.

    Attributes:
      observations_bt: (B, T, *obs_shape) observation at each step: long for Discrete spaces, float64
        for Box; zero after each episode's end.
      actions_bt: (B, T) long action indices (the environment's action minus its space's ``start``), or
        (B, T, A) float64 for Box actions (as sampled, before clipping to the bounds); zero after the end.
      rewards_bt: (B, T) float64 rewards, zero after the end.
      alive_bt: (B, T) bool, True while the episode runs.
      terminated_b: (B,) bool, ended in a terminal state (no bootstrap).
      truncated_b: (B,) bool, cut by the time limit. Both may hold; terminated wins for bootstrapping.
      final_observations_b: (B, *obs_shape) the observation after the last step (the state a truncated
        episode was cut in, for bootstrapping).
      gamma: the discount of the objective.
    """

    observations_bt: Tensor
    actions_bt: Tensor
    rewards_bt: np.ndarray
    alive_bt: np.ndarray
    terminated_b: np.ndarray
    truncated_b: np.ndarray
    final_observations_b: Tensor
    gamma: float

    @property
    def n_episodes(self) -> int:
        return int(self.alive_bt.shape[0])

    @property
    def n_steps(self) -> int:
        """T, the padded length."""
        return int(self.alive_bt.shape[1])

    @property
    def lengths_b(self) -> np.ndarray:
        """(B,) number of steps of each episode."""
        return self.alive_bt.sum(axis=1)

    def episode_ends_tb(self) -> tuple[np.ndarray, np.ndarray]:
        """(terminated_tb, truncated_tb): (T, B) flags on each episode's last step, in the form
        ``pgvar.returns`` takes; an episode with both flags counts as terminated."""
        terminated_tb = np.zeros((self.n_steps, self.n_episodes), dtype=bool)
        truncated_tb = np.zeros_like(terminated_tb)
        last_b = np.maximum(self.lengths_b - 1, 0)
        columns_b = np.arange(self.n_episodes)
        terminated_tb[last_b, columns_b] = self.terminated_b
        truncated_tb[last_b, columns_b] = self.truncated_b & ~self.terminated_b
        return terminated_tb, truncated_tb


def _stream_seed(seed: int, index: int) -> int:
    """A 64-bit seed for sub-environment ``index``'s policy generator, mixed from (seed, index)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, dtype=np.uint64)[0])


def environment_seeds(seed: int, n_envs: int) -> list[int]:
    """The seed each of ``n_envs`` sub-environments is reset with: mixed from (seed, i), a stream
    apart from the policy's (:func:`collect`, Reproducibility in the module's docs)."""
    return [int(np.random.SeedSequence([seed, e, 1]).generate_state(1, dtype=np.uint64)[0])
            for e in range(n_envs)]  # fmt: skip


class _Noise:
    """Per-sub-environment streams of the policy's random numbers: uniforms for a categorical head,
    standard normals for a Gaussian, ``width`` per step, drawn in blocks by each stream's generator."""

    def __init__(self, seed: int, n_envs: int, width: int, gaussian: bool) -> None:
        self.generators = [torch.Generator().manual_seed(_stream_seed(seed, e)) for e in range(n_envs)]
        self.draw = torch.randn if gaussian else torch.rand
        self.width = width
        self.buffer_ekw = np.empty((n_envs, _NOISE_BLOCK, width))
        self.position_e = np.full(n_envs, _NOISE_BLOCK)

    def take(self, envs_i: np.ndarray) -> np.ndarray:
        """(len(envs_i), width): the next numbers of each listed sub-environment's stream."""
        positions_i = self.position_e[envs_i]
        if positions_i.max(initial=0) >= _NOISE_BLOCK:
            for e in envs_i[positions_i >= _NOISE_BLOCK]:
                block = self.draw((_NOISE_BLOCK, self.width), generator=self.generators[e], dtype=DTYPE)
                self.buffer_ekw[e] = block.numpy()
                self.position_e[e] = 0
            positions_i = self.position_e[envs_i]
        self.position_e[envs_i] += 1
        return self.buffer_ekw[envs_i, positions_i]


def _numpy_layers(policy: Policy) -> list[tuple[np.ndarray, np.ndarray | None]] | None:
    """The body as (weight transposed, bias) pairs with tanh between them, or None if it is anything
    other than Linear and Tanh layers alternating (then the sampler calls the torch module)."""
    modules = list(policy.body) if isinstance(policy.body, torch.nn.Sequential) else [policy.body]
    linear, tanh = modules[0::2], modules[1::2]
    if not all(isinstance(m, torch.nn.Linear) for m in linear) or not all(
        isinstance(m, torch.nn.Tanh) for m in tanh
    ):
        return None
    if len(linear) != len(tanh) + 1:
        return None
    return [
        (m.weight.detach().numpy().T.copy(), None if m.bias is None else m.bias.detach().numpy().copy())
        for m in linear
    ]


class _Sampler:
    """Draws the policy's actions during collection from given noise: inverse-CDF for a categorical
    head (the first a with u < F(a)), mean + sigma * z for a Gaussian.

    For bodies of Linear and Tanh layers (every :func:`make_policy` architecture) the forward pass runs
    in NumPy on a copy of the weights taken at the start: at a few observations per step, a torch
    module call costs more than the environments' own steps. Anything else calls the module."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.layers = _numpy_layers(policy)
        self.one_hot = policy.obs_kind == "discrete"
        self.start = policy.encode.start
        self.std = None if policy.discrete else torch.exp(policy.log_std.detach()).numpy().copy()

    def outputs(self, observations: np.ndarray) -> np.ndarray:
        """(k, A) logits or means (a new array, free to be overwritten)."""
        if self.layers is None:
            return self.policy(torch.from_numpy(observations)).detach().numpy().copy()
        (weight, bias), *rest = self.layers
        # a one-hot input times W^T is a row of W^T
        x = weight[observations - self.start] if self.one_hot else np.dot(observations, weight)
        if bias is not None:
            x += bias
        for weight, bias in rest:
            x = np.dot(np.tanh(x, out=x), weight)
            if bias is not None:
                x += bias
        return x

    def actions(self, observations: np.ndarray, noise_iw: np.ndarray) -> np.ndarray:
        out = self.outputs(observations)
        if self.std is None:
            out -= out.max(axis=-1, keepdims=True)
            cdf = np.cumsum(np.exp(out, out=out), axis=-1, out=out)  # unnormalised: u is scaled instead
            chosen = (cdf < noise_iw * cdf[:, -1:]).sum(axis=-1)
            return np.minimum(chosen, out.shape[-1] - 1, out=chosen)
        return out + self.std * noise_iw


def _check_spaces(policy: Policy, vec) -> None:
    """The policy was made for the environment's spaces (kinds and sizes)."""
    probe = (vec.single_observation_space, vec.single_action_space)
    mine = (policy.observation_space, policy.action_space)
    for what, theirs, ours in zip(("observation", "action"), probe, mine, strict=True):
        same = type(theirs) is type(ours) and all(
            getattr(theirs, key, None) == getattr(ours, key, None) for key in ("shape", "n")
        )
        if not same:
            raise SpecError(f"policy: made for {what} space {ours}, but the environment has {theirs}")


def _quotas(episodes: int, n_envs: int) -> np.ndarray:
    """(E,) episodes each sub-environment runs: as equal as possible, the first ones take the remainder."""
    return episodes // n_envs + (np.arange(n_envs) < episodes % n_envs)


def collection_cost(policy: Policy, episodes: int, horizon: int, n_envs: int = 8) -> tuple[float, float]:
    """(bytes of the padded arrays, seconds of worst-case stepping) to collect ``episodes`` episodes
    of up to ``horizon`` steps on ``n_envs`` sub-environments: what the limits are checked against."""
    obs_size = 1 if policy.obs_kind == "discrete" else policy.n_inputs
    action_size = 1 if policy.discrete else policy.n_outputs
    memory = 8.0 * episodes * (horizon * (obs_size + action_size + 1.2) + obs_size)
    vector_steps = -(-episodes // n_envs) * (horizon + 1)  # +1: NEXT_STEP's reset step
    return memory, vector_steps * (VECTOR_STEP_SECONDS + n_envs / ENV_STEPS_PER_SECOND)


def collect(
    env: EnvSpec | str,
    policy: Policy,
    episodes: int,
    seed: int,
    *,
    envs: int = 8,
    autoreset_mode: str | None = None,
) -> Episodes:
    """Run ``episodes`` episodes of ``policy`` on ``envs`` synchronous copies of ``env``.

    Args:
      env: an :class:`EnvSpec` or its string (``CartPole-v1,horizon=200``).
      policy: made for the environment's spaces.
      episodes: B; sub-environment i runs a fixed quota of them (its first k_i, as equal as possible).
      seed: seeds the environments (:func:`environment_seeds`) and the policy's sampling.
      envs: number of sub-environments (at most ``episodes``).
      autoreset_mode: ``next-step`` (default), ``same-step`` or ``disabled``: the same episodes either way.
    Returns:
      :class:`Episodes`, sub-environment 0's episodes first, each sub-environment's in order.
    """
    spec = env if isinstance(env, EnvSpec) else parse_env(env)
    episodes = check_int(episodes, "episodes", low=1)
    seed = check_seed(seed)
    n_envs = min(check_int(envs, "envs", low=1), episodes)
    horizon = env_horizon(spec)
    obs_shape = () if policy.obs_kind == "discrete" else (policy.n_inputs,)
    memory, seconds = collection_cost(policy, episodes, horizon, n_envs)
    budget.check(f"collect ({episodes} episodes of up to {horizon} steps)", memory=memory, seconds=seconds,
                 hint="fewer episodes or a shorter horizon=")  # fmt: skip
    vec = make_vector_env(spec, n_envs, autoreset_mode=autoreset_mode)
    try:
        _check_spaces(policy, vec)
        with torch.no_grad():
            arrays = _run(vec, policy, _quotas(episodes, n_envs), seed, horizon, obs_shape)
    finally:
        vec.close()
    return _trimmed(*arrays, gamma=spec.gamma)


class _Buffers:
    """The padded (B, horizon) arrays being filled, with flat (B * horizon) views: step t of episode b
    is entry b * horizon + t, so each vector step writes through one 1-D index per array."""

    def __init__(self, policy: Policy, n_episodes: int, horizon: int, obs_shape: tuple) -> None:
        obs_dtype = np.int64 if not obs_shape else np.float64
        action_shape = () if policy.discrete else (policy.n_outputs,)
        self.observations = np.zeros((n_episodes, horizon, *obs_shape), dtype=obs_dtype)
        action_dtype = np.int64 if policy.discrete else np.float64
        self.actions = np.zeros((n_episodes, horizon, *action_shape), dtype=action_dtype)
        self.rewards = np.zeros((n_episodes, horizon))
        self.lengths = np.zeros(n_episodes, dtype=np.int64)
        self.terminated = np.zeros(n_episodes, dtype=bool)
        self.truncated = np.zeros(n_episodes, dtype=bool)
        self.final_observations = np.zeros((n_episodes, *obs_shape), dtype=obs_dtype)
        flat = n_episodes * horizon
        self.flat_observations = self.observations.reshape(flat, *obs_shape)
        self.flat_actions = self.actions.reshape(flat, *action_shape)
        self.flat_rewards = self.rewards.reshape(flat)

    def arrays(self) -> tuple:
        alive = np.arange(self.rewards.shape[1])[None, :] < self.lengths[:, None]
        return (self.observations, self.actions, self.rewards, alive, self.terminated, self.truncated,
                self.final_observations)  # fmt: skip


def _env_actions(policy: Policy, n_envs: int):
    """f(envs_i, chosen_i) -> the vector env's action array: the chosen actions of the recorded
    sub-environments (Discrete: index + start; Box: clipped to the bounds), a fixed valid action for
    the others (ignored: they are resetting or done)."""
    if policy.discrete:
        start = int(getattr(policy.action_space, "start", 0))
        idle = np.full(n_envs, start)

        def discrete(envs_i, chosen_i):
            if len(envs_i) == n_envs:
                return chosen_i + start
            action = idle.copy()
            action[envs_i] += chosen_i
            return action

        return discrete
    low, high = policy.action_space.low.astype(float), policy.action_space.high.astype(float)
    idle = np.broadcast_to(np.clip(0.0, low, high), (n_envs, policy.n_outputs))

    def box(envs_i, chosen_i):
        action = idle.copy()
        action[envs_i] = np.clip(chosen_i, low, high)
        return action

    return box


def _run(vec, policy: Policy, quota_e: np.ndarray, seed: int, horizon: int, obs_shape: tuple) -> tuple:
    """The stepping loop: records each sub-environment's first ``quota_e[e]`` episodes into padded
    (B, horizon) arrays; episode b = first_e[e] + j is sub-environment e's j-th."""
    n_envs = len(quota_e)
    mode = str(getattr(vec.metadata.get("autoreset_mode"), "value", "NextStep"))
    buffers = _Buffers(policy, int(quota_e.sum()), horizon, obs_shape)
    noise = _Noise(seed, n_envs, 1 if policy.discrete else policy.n_outputs, not policy.discrete)
    sampler, env_actions = _Sampler(policy), _env_actions(policy, n_envs)
    first_e, done_e = np.concatenate([[0], np.cumsum(quota_e)[:-1]]), np.zeros(n_envs, dtype=np.int64)
    position_e = first_e * horizon  # flat index of each sub-environment's next step to record
    resetting_e = np.zeros(n_envs, dtype=bool)
    obs, _ = vec.reset(seed=environment_seeds(seed, n_envs))
    recording_e = np.ones(n_envs, dtype=bool)
    envs_i = np.arange(n_envs)
    flat_i = position_e.copy()
    while True:
        every = len(envs_i) == n_envs  # the common case: no fancy indexing by sub-environment
        obs_i = obs if every else obs[envs_i]
        buffers.flat_observations[flat_i] = obs_i
        chosen_i = sampler.actions(obs_i, noise.take(envs_i))
        buffers.flat_actions[flat_i] = chosen_i
        obs, reward_e, term_e, trunc_e, info = vec.step(env_actions(envs_i, chosen_i))
        buffers.flat_rewards[flat_i] = reward_e if every else reward_e[envs_i]
        flat_i += 1
        any_end_e = term_e | trunc_e
        if not (any_end_e.any() or resetting_e.any()):
            continue
        ended_e = any_end_e if every else any_end_e & recording_e
        position_e[envs_i] = flat_i
        for e in np.flatnonzero(ended_e):
            slot = first_e[e] + done_e[e]
            buffers.terminated[slot], buffers.truncated[slot] = term_e[e], trunc_e[e]
            buffers.lengths[slot] = position_e[e] - slot * horizon
            buffers.final_observations[slot] = info["final_obs"][e] if mode == "SameStep" else obs[e]
            done_e[e] += 1
            position_e[e] = (slot + 1) * horizon
        if mode == "NextStep":
            resetting_e = ended_e  # the next step of these is the reset step: nothing to record
        elif mode == "Disabled" and any_end_e.any():  # every finished one, recorded or not
            obs, _ = vec.reset(options={"reset_mask": np.asarray(any_end_e, dtype=bool)})
        if not (done_e < quota_e).any():
            break
        recording_e = (done_e < quota_e) & ~resetting_e
        envs_i = np.flatnonzero(recording_e)
        flat_i = position_e[envs_i]
    return buffers.arrays()


def _trimmed(observations, actions, rewards, alive, terminated, truncated, final_observations, *, gamma):
    """:class:`Episodes` cut to the longest episode's length (less padding for the gradient passes)."""
    steps = max(int(alive.sum(axis=1).max()), 1)
    as_tensor = torch.from_numpy
    return Episodes(
        observations_bt=as_tensor(np.ascontiguousarray(observations[:, :steps])),
        actions_bt=as_tensor(np.ascontiguousarray(actions[:, :steps])),
        rewards_bt=np.ascontiguousarray(rewards[:, :steps]),
        alive_bt=np.ascontiguousarray(alive[:, :steps]),
        terminated_b=terminated,
        truncated_b=truncated,
        final_observations_b=as_tensor(final_observations),
        gamma=float(gamma),
    )
