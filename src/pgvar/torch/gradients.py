"""Per-episode policy-gradient estimates of a neural policy: g_b = grad_theta of
sum_t (Psi_t - b_t) log pi(a_t|s_t) + beta gamma^t H[pi(.|s_t)], one row per episode.

The estimator is pgvar's (``pgvar.estimators.episode_gradients``, the tabular reference): the weight
Psi_t is the full return R (REINFORCE, Williams 1992), the reward-to-go c_t G_t, or c_t A_t^GAE
(Schulman et al. 2016), c_t = gamma^t unless ``:common``; with an entropy bonus beta > 0 every reward
gets + beta H[pi(.|s_t)] before Psi is computed, and each step adds the direct term
beta gamma^t grad H (Williams & Peng 1991). Weights and baselines are computed in NumPy on (T, B)
arrays by ``pgvar.estimators`` and ``pgvar.returns`` and enter the surrogate as constants.

Per-episode gradients (:func:`episode_gradients`) come one of two ways, in chunks of episodes so that
memory stays bounded, each chunk split into groups of episodes of similar lengths, padded only to
their group's longest (weight zero after each end):

- ``packed``, for the policies pgvar builds (every parameter in a linear layer, or the Gaussian's
  log-std): one forward and one backward pass over the chunk's steps give each layer's inputs a_t and
  output gradients delta_t, and an episode's weight gradient is sum_t delta_t a_t^T (Goodfellow
  2015): one batched matrix product per group for a wide layer, one compiled pass over the steps for
  a thin one (a side of at most ``THIN_UNITS`` units, where a matrix product is slow). The backward
  pass is the batched one, less its weight products; the per-episode products replace them.
- ``vmap``, for any body: ``torch.func``'s ``vmap(grad(surrogate of one episode))`` through
  ``functional_call`` on the policy's parameters, one call per group.

The limit is one batched backward pass over the steps that run (:func:`batched_gradient`, which gives
the mean); :func:`loop_gradients` (one backward per episode) is the reference the tests compare with.

Baselines for neural policies: ``none``; ``lesson`` and ``running`` (per-step running means over
EARLIER batches, of G_t and of the weight: :class:`RunningBaseline` keeps them, the caller passes its
``baseline_bt``); ``value``
(V(s_t) from a critic fitted on other episodes, ``pgvar.torch.critic``, passed as ``values_bt``).
Inside GAE the baseline is the value function: ``values_bt`` (a critic's, or the running mean of G_t).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from pgvar import budget
from pgvar.baselines import RunningBaselines, add_episodes, running_offsets_tsa
from pgvar.errors import SpecError
from pgvar.estimators import EstimatorSpec, score_scale_t
from pgvar.returns import gae, reward_to_go
from pgvar.torch.episodes import Episodes
from pgvar.torch.policies import DTYPE, Policy
from pgvar.validation import check_int

SUPPORTED_BASELINES = ("none", "lesson", "running", "value")
#: Memory one chunk of episodes may take inside vmap(grad), at most (and a quarter of the limit).
CHUNK_MEMORY = 256e6
#: What one vmap call costs besides its steps, in padded episode-steps (measured on CartPole, 64-64 MLP).
CALL_STEPS = 384
#: What one group's outer products cost besides its steps, in padded episode-steps (the same case).
GROUP_STEPS = 16
#: A linear layer with a side this narrow or narrower gets its per-episode products from one compiled
#: pass over the steps; on CartPole's 4-wide input and 2-wide output a ``bmm`` per group is 2-3x slower.
THIN_UNITS = 8
GRADIENT_METHODS = ("auto", "packed", "vmap")
#: Floating-point operations per second assumed for the budget's work estimate (one core, float64).
FLOPS = 2e9


def parameter_layout(policy: nn.Module) -> list[tuple[str, int]]:
    """(name, size) of each parameter tensor, in the order of the flat gradient's D entries.

    For ``tabular`` the one tensor is ``body.weight``, (A, S): entry a * S + s, where pgvar's theta
    (S, A) has s * A + a."""
    return [(name, parameter.numel()) for name, parameter in policy.named_parameters()]


def flat_parameters(policy: nn.Module) -> Tensor:
    """(D,) the parameters, concatenated in :func:`parameter_layout` order (a detached copy)."""
    return torch.cat([parameter.detach().reshape(-1) for parameter in policy.parameters()])


def flatten_gradients(grads_n: dict[str, Tensor] | list[Tensor], batch: tuple[int, ...] = ()) -> Tensor:
    """(*batch, D) from per-tensor gradients (a dict in layout order, or a list), each (*batch, *shape)."""
    tensors = list(grads_n.values()) if isinstance(grads_n, dict) else list(grads_n)
    return torch.cat([tensor.reshape(*batch, -1) for tensor in tensors], dim=-1)


# -- the weights, in NumPy ------------------------------------------------------------------------


def check_supported(spec: EstimatorSpec) -> None:
    """Refuse (one line) a baseline that neural policies do not support."""
    if spec.baseline not in SUPPORTED_BASELINES:
        raise SpecError(
            f"estimator {spec.name!r}: baseline {spec.baseline!r} is not supported for neural policies; "
            f"use {', '.join(SUPPORTED_BASELINES)}"
        )


def _check_bt(array: np.ndarray | None, episodes: Episodes, name: str) -> np.ndarray | None:
    if array is None:
        return None
    array = np.asarray(array, dtype=float)
    if array.shape != episodes.alive_bt.shape:
        raise SpecError(f"{name}: shape {array.shape} does not match the episodes' {episodes.alive_bt.shape}")
    return array


def entropies_bt(policy: Policy, episodes: Episodes) -> np.ndarray:
    """(B, T) H[pi(.|s_t)] at each visited state, zero after each episode's end."""
    with torch.no_grad():
        entropy_bt = policy.entropy(episodes.observations_bt).numpy()
    return np.where(episodes.alive_bt, entropy_bt, 0.0)


def bonus_rewards_tb(policy: Policy, episodes: Episodes, entropy: float) -> np.ndarray:
    """(T, B) rewards with the entropy bonus, r_t + beta H[pi(.|s_t)], zero after each end."""
    rewards_bt = episodes.rewards_bt
    if entropy > 0:
        rewards_bt = rewards_bt + entropy * entropies_bt(policy, episodes)
    return np.where(episodes.alive_bt, rewards_bt, 0.0).T


def _end_flags(episodes: Episodes, truncation_values_b: np.ndarray | None) -> dict:
    """Keyword arguments of ``pgvar.returns`` for the episodes' ends. Without truncation values every
    end is final (as in pgvar's tabular estimator: the horizon is part of the problem); with them a
    truncated (and not terminated) episode bootstraps from the value of the state it was cut in."""
    if truncation_values_b is None:
        return {}
    values_b = np.asarray(truncation_values_b, dtype=float)
    if values_b.shape != (episodes.n_episodes,):
        raise SpecError(f"truncation_values_b: shape {values_b.shape}, needs ({episodes.n_episodes},)")
    terminated_tb, truncated_tb = episodes.episode_ends_tb()
    truncation_values_tb = np.zeros(terminated_tb.shape)
    truncation_values_tb[truncated_tb] = np.broadcast_to(values_b, terminated_tb.shape)[truncated_tb]
    return {
        "terminated_t": terminated_tb,
        "truncated_t": truncated_tb,
        "truncation_values_t": truncation_values_tb,
    }


def episode_returns_bt(
    policy: Policy,
    episodes: Episodes,
    entropy: float = 0.0,
    *,
    truncation_values_b: np.ndarray | None = None,
) -> np.ndarray:
    """(B, T) discounted reward-to-go G_t (entropy bonus ``entropy`` included), zero after each end:
    the regression target of a critic and the sums of the running baselines."""
    rewards_tb = bonus_rewards_tb(policy, episodes, entropy)
    returns_tb = reward_to_go(rewards_tb, episodes.gamma, **_end_flags(episodes, truncation_values_b))
    return np.where(episodes.alive_bt, returns_tb.T, 0.0)


def episode_weights_bt(
    policy: Policy,
    episodes: Episodes,
    spec: EstimatorSpec,
    *,
    values_bt: np.ndarray | None = None,
    truncation_values_b: np.ndarray | None = None,
) -> np.ndarray:
    """(B, T) Psi_t before its baseline, zero after each end: R(tau) on every step (Williams 1992),
    c_t G_t, or c_t A_t^GAE(lambda) with V = ``values_bt`` (Schulman et al. 2016); the same formula as
    ``pgvar.estimators.weights``, plus the bootstrap of truncated episodes given truncation values."""
    values_bt = _check_bt(values_bt, episodes, "values_bt")
    alive_bt, gamma = episodes.alive_bt, episodes.gamma
    rewards_tb = bonus_rewards_tb(policy, episodes, spec.entropy)
    flags = _end_flags(episodes, truncation_values_b)
    scale_t1 = score_scale_t(spec, gamma, episodes.n_steps)[:, None]
    if spec.weight == "gae":
        values_tb = np.zeros(rewards_tb.shape) if values_bt is None else np.where(alive_bt, values_bt, 0.0).T
        weights_tb = scale_t1 * gae(rewards_tb, values_tb, gamma, spec.lam, **flags)
    else:
        returns_tb = reward_to_go(rewards_tb, gamma, **flags)
        weights_tb = returns_tb[:1] if spec.weight == "return" else scale_t1 * returns_tb
    return np.where(alive_bt, weights_tb.T, 0.0)


def score_weights_bt(
    policy: Policy,
    episodes: Episodes,
    spec: EstimatorSpec,
    *,
    baseline_bt: np.ndarray | None = None,
    values_bt: np.ndarray | None = None,
    truncation_values_b: np.ndarray | None = None,
) -> np.ndarray:
    """(B, T) Psi_t - b_t, the constant each log pi(a_t|s_t) is multiplied by, zero after each end.

    ``lesson`` and ``running`` subtract ``baseline_bt`` (the caller's running mean, over earlier
    batches, of G_t or of the weight: :class:`RunningBaseline`); ``value`` subtracts c_t V(s_t) with
    V = ``values_bt``. With a GAE weight the baseline is its value function: ``values_bt`` (required
    unless the baseline is ``none``).
    """
    check_supported(spec)
    baseline_bt = _check_bt(baseline_bt, episodes, "baseline_bt")
    values_bt = _check_bt(values_bt, episodes, "values_bt")
    name = f"estimator {spec.name!r}"
    wants_baseline = spec.baseline in ("lesson", "running") and spec.weight != "gae"
    if wants_baseline != (baseline_bt is not None):
        raise SpecError(
            f"{name}: pass baseline_bt (the running mean of the weight from earlier batches)"
            if wants_baseline
            else f"{name}: baseline_bt is only for the running baselines of return or rtg weights"
        )
    wants_values = spec.baseline != "none" and (spec.weight == "gae" or spec.baseline == "value")
    if wants_values and values_bt is None:
        raise SpecError(f"{name}: pass values_bt, V(s_t) from a critic fitted on other episodes")
    if values_bt is not None and not wants_values:
        raise SpecError(f"{name}: values_bt is only for the value baseline and GAE's value function")
    weights_bt = episode_weights_bt(
        policy, episodes, spec, values_bt=values_bt if spec.weight == "gae" else None,
        truncation_values_b=truncation_values_b,
    )  # fmt: skip
    if wants_baseline:
        weights_bt = weights_bt - baseline_bt
    elif spec.baseline == "value" and spec.weight != "gae":
        weights_bt = weights_bt - score_scale_t(spec, episodes.gamma, episodes.n_steps)[None, :] * values_bt
    return np.where(episodes.alive_bt, weights_bt, 0.0)


def _entropy_weights_bt(episodes: Episodes, entropy: float) -> np.ndarray | None:
    """(B, T) beta gamma^t on each step's entropy (its direct term), or None without a bonus."""
    if entropy <= 0:
        return None
    discount_t = episodes.gamma ** np.arange(episodes.n_steps, dtype=float)
    return np.where(episodes.alive_bt, entropy * discount_t[None, :], 0.0)


# -- the surrogate and its gradients ----------------------------------------------------------------


class _Surrogate(nn.Module):
    """sum_t w_t log pi(a_t|s_t) + e_t H[pi(.|s_t)] over the trailing (T,) axis: its gradient is the
    estimate (the weights are constants)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observations: Tensor, actions: Tensor, weights: Tensor, entropy_weights: Tensor | None):
        if entropy_weights is None:
            return (weights * self.policy.log_prob(observations, actions)).sum()
        log_prob, entropy = self.policy.log_prob_and_entropy(observations, actions)
        return (weights * log_prob).sum() + (entropy_weights * entropy).sum()


def _inputs(policy, episodes, spec, baseline_bt, values_bt, truncation_values_b) -> tuple:
    """(weights_bt, entropy_weights_bt or None) as float64 tensors."""
    weights_bt = score_weights_bt(
        policy, episodes, spec, baseline_bt=baseline_bt, values_bt=values_bt,
        truncation_values_b=truncation_values_b,
    )  # fmt: skip
    entropy_bt = _entropy_weights_bt(episodes, spec.entropy)
    as_tensor = torch.from_numpy
    return as_tensor(np.ascontiguousarray(weights_bt)), None if entropy_bt is None else as_tensor(entropy_bt)


def _per_episode_bytes(policy: Policy, steps: int) -> float:
    """Memory one episode takes inside vmap(grad): the saved activations of its T steps (forward,
    backward and vmap's temporaries: three copies) and its own gradient twice (the result and the
    per-tensor pieces before they are concatenated)."""
    n_parameters = sum(size for _, size in parameter_layout(policy))
    return 8.0 * (3 * steps * policy.activations_per_step() + 2 * n_parameters)


def gradient_chunk_size(policy: Policy, n_episodes: int, steps: int) -> int:
    """Episodes per vmap call: as many as fit in ``CHUNK_MEMORY`` (and a quarter of the memory limit)."""
    room = min(CHUNK_MEMORY, budget.current().memory / 4)
    return int(max(1, min(n_episodes, room // _per_episode_bytes(policy, steps))))


def length_groups(lengths_b: np.ndarray, chunk: int, call_steps: int = CALL_STEPS) -> list[np.ndarray]:
    """The episodes of each vmap call (or batched outer product): sorted by length and split into k
    groups of at most ``chunk`` episodes, each padded only to its own longest episode. k minimises
    the padded steps plus ``call_steps`` per group; on episodes of very unequal lengths (CartPole's) a
    few groups halve the work of one padded batch.

    Returns:
      k arrays of episode indices, each sorted by length (its last episode the longest)."""
    order_b = np.argsort(lengths_b, kind="stable")
    fewest = -(-len(order_b) // chunk)  # array_split into k >= fewest groups keeps each <= chunk

    def cost(groups: list[np.ndarray]) -> float:
        padded = sum(len(group) * max(int(lengths_b[group[-1]]), 1) for group in groups)
        return padded + len(groups) * call_steps

    counts = [fewest * 2**i for i in range(6) if fewest * 2**i <= len(order_b)]
    return min((np.array_split(order_b, k) for k in counts), key=cost)


def _check_gradient_budget(what: str, policy: Policy, episodes: Episodes, chunk: int) -> None:
    n_parameters = sum(size for _, size in parameter_layout(policy))
    B, T = episodes.alive_bt.shape
    memory = chunk * _per_episode_bytes(policy, T) + 8.0 * B * (n_parameters + 4 * T)
    seconds = 6.0 * B * T * (n_parameters + policy.activations_per_step()) / FLOPS
    budget.check(what, memory=memory, seconds=seconds, hint="fewer episodes, or a smaller chunk_size")


def linear_layers(policy: Policy) -> list[nn.Module] | None:
    """The body's modules in call order when the body is a chain of ``nn.Linear`` layers (shared
    ones too) and modules without parameters or buffers (activations, which act on each step alone), and
    the policy has no other parameter than the Gaussian's log-std: every policy :func:`make_policy`
    builds. Else None. Such a policy's per-episode gradients need only one packed backward pass."""
    body = policy.body
    modules = list(body) if isinstance(body, nn.Sequential) else [body]
    linears = [module for module in modules if isinstance(module, nn.Linear)]
    if any(next(module.buffers(), None) is not None for module in modules):
        return None  # a normalisation's statistics may mix steps; its parameters fail the check below
    in_linears = {id(parameter) for module in linears for parameter in module.parameters()}
    for name, parameter in policy.named_parameters():
        if id(parameter) not in in_linears and name != "log_std":
            return None
    return modules


def _packed_order(episodes: Episodes, groups: list[np.ndarray]) -> tuple[Tensor, list[int]]:
    """Flat indices into the (B, T) arrays that lay the groups out one after another, each episode
    padded to its group's longest, and each group's padded length."""
    steps_g = [max(int(episodes.lengths_b[group[-1]]), 1) for group in groups]
    order_b = np.concatenate(groups)
    steps_b = np.repeat(steps_g, [len(group) for group in groups])
    firsts_b = np.cumsum(steps_b) - steps_b  # where each episode's steps start in the layout
    step_i = np.arange(int(steps_b.sum())) - np.repeat(firsts_b, steps_b)
    return torch.from_numpy(np.repeat(order_b, steps_b) * episodes.n_steps + step_i), steps_g


@njit(cache=True, nogil=True)
def _write_step_sums(values_iv, starts_b, lengths_b, rows_b, out_bD, column, accumulate):
    """out_bD[rows_b[k], column + v] = the sum of values_iv[i, v] over episode k's steps, the layout
    rows starts_b[k] .. starts_b[k] + lengths_b[k] - 1 (+= when ``accumulate``): a bias's or the
    log-std's per-episode gradient from its per-step ones."""
    n_v = values_iv.shape[1]
    acc_v = np.empty(n_v)
    for k in range(starts_b.shape[0]):
        acc_v[:] = 0.0
        for i in range(starts_b[k], starts_b[k] + lengths_b[k]):
            for v in range(n_v):
                acc_v[v] += values_iv[i, v]
        for v in range(n_v):
            if accumulate:
                out_bD[rows_b[k], column + v] += acc_v[v]
            else:
                out_bD[rows_b[k], column + v] = acc_v[v]


@njit(cache=True, nogil=True)
def _write_outer_sums(deltas_iv, inputs_iv, starts_b, lengths_b, rows_b, out_bD, column, accumulate):
    """out_bD[rows_b[k], column + v * n_in + u] = the sum of deltas_iv[i, v] inputs_iv[i, u] over
    episode k's steps (as :func:`_write_step_sums`): a thin linear layer's per-episode weight
    gradient, flattened as its (out, in) weight. The inner loop runs over the wider side, contiguous
    in both the step's row and the accumulator."""
    n_out, n_in = deltas_iv.shape[1], inputs_iv.shape[1]
    wide_out = n_out >= n_in
    acc_vv = np.empty((n_in, n_out) if wide_out else (n_out, n_in))
    for k in range(starts_b.shape[0]):
        acc_vv[:] = 0.0
        for i in range(starts_b[k], starts_b[k] + lengths_b[k]):
            if wide_out:
                for u in range(n_in):
                    a = inputs_iv[i, u]
                    for v in range(n_out):
                        acc_vv[u, v] += a * deltas_iv[i, v]
            else:
                for v in range(n_out):
                    delta = deltas_iv[i, v]
                    for u in range(n_in):
                        acc_vv[v, u] += delta * inputs_iv[i, u]
        for v in range(n_out):
            for u in range(n_in):
                total = acc_vv[u, v] if wide_out else acc_vv[v, u]
                if accumulate:
                    out_bD[rows_b[k], column + v * n_in + u] += total
                else:
                    out_bD[rows_b[k], column + v * n_in + u] = total


def _packed_gradients(policy, modules, episodes, groups, weights_bt, entropy_bt, grads_bD) -> None:
    """Fill the rows of ``grads_bD`` of the episodes in ``groups`` (a pass that fits in memory).

    One forward and one backward pass over the groups' steps (each episode padded only to its
    group's longest, weight zero on padding) give every linear layer's input a_t and output gradient
    delta_t; the episode's weight gradient is sum_t delta_t a_t^T and its bias gradient sum_t delta_t
    (Goodfellow 2015, "Efficient per-example gradient computations"), as one backward pass computes
    their sum over all steps. A wide layer's products are one batched matrix product per group; a
    thin layer's, every bias's and the log-std's sums one compiled pass over the episodes' steps."""
    flat_i, steps_g = _packed_order(episodes, groups)

    def steps_of(array_bt: Tensor) -> Tensor:  # (B, T, ...) -> (steps of the layout, ...)
        return array_bt.flatten(0, 1).index_select(0, flat_i)

    x = policy.encode(steps_of(episodes.observations_bt))
    inputs, outputs, linears = [], [], []
    for module in modules:
        if isinstance(module, nn.Linear):
            inputs.append(x)
            linears.append(module)
            x = module(x)
            outputs.append(x)
        else:
            x = module(x)
    log_std = None if policy.discrete else policy.log_std.expand(x.shape)
    total = (steps_of(weights_bt) * policy.head_log_prob(x, steps_of(episodes.actions_bt), log_std)).sum()
    if entropy_bt is not None:
        total = total + (steps_of(entropy_bt) * policy.head_entropy(x, log_std)).sum()
    deltas = torch.autograd.grad(total, outputs + ([] if log_std is None else [log_std]))
    # The layout's episodes in order: where each one's steps start, how many run, and its row.
    rows_b = np.concatenate(groups)
    slots_b = np.repeat(steps_g, [len(group) for group in groups])
    steps_layout = (np.cumsum(slots_b) - slots_b, episodes.lengths_b[rows_b].astype(np.int64), rows_b)
    grads_np = grads_bD.numpy()
    layout_sizes = [size for _, size in parameter_layout(policy)]
    ids = list(map(id, policy.parameters()))
    columns = dict(zip(ids, np.cumsum([0, *layout_sizes[:-1]]).tolist(), strict=True))
    blocks = dict(zip(ids, grads_bD.split(layout_sizes, dim=1), strict=True))
    written: set[int] = set()

    def accumulate(parameter: Tensor) -> bool:  # a shared layer's parameter: the sum over its uses
        seen = id(parameter) in written
        written.add(id(parameter))
        return seen

    sizes = [len(group) * steps for group, steps in zip(groups, steps_g, strict=True)]
    for module, a, delta in zip(linears, inputs, deltas[: len(linears)], strict=True):
        a = a.detach()
        a_iv, delta_iv = a.numpy(), delta.numpy()
        if module.bias is not None:
            column = columns[id(module.bias)]
            _write_step_sums(delta_iv, *steps_layout, grads_np, column, accumulate(module.bias))
        column, add = columns[id(module.weight)], accumulate(module.weight)
        if min(module.in_features, module.out_features) <= THIN_UNITS:
            _write_outer_sums(delta_iv, a_iv, *steps_layout, grads_np, column, add)
            continue
        write = blocks[id(module.weight)].index_add_ if add else blocks[id(module.weight)].index_copy_
        # One (n, out, in) buffer for every group's products: a fresh one per group is a new mapping
        # of memory each time, and its page faults cost about as much as the products.
        products = torch.empty((max(map(len, groups)), module.out_features, module.in_features), dtype=DTYPE)
        pieces = zip(groups, steps_g, delta.split(sizes), a.split(sizes), strict=True)
        for group, steps, delta_g, a_g in pieces:
            n = len(group)
            deltas_btv, inputs_btv = delta_g.view(n, steps, -1), a_g.view(n, steps, -1)
            weight_b = torch.bmm(deltas_btv.transpose(1, 2), inputs_btv, out=products[:n]).flatten(1)
            write(0, torch.from_numpy(group), weight_b)
    if log_std is not None:
        column = columns[id(policy.log_std)]
        _write_step_sums(deltas[-1].numpy(), *steps_layout, grads_np, column, accumulate(policy.log_std))


def episode_gradients(
    policy: Policy,
    episodes: Episodes,
    spec: EstimatorSpec,
    *,
    baseline_bt: np.ndarray | None = None,
    values_bt: np.ndarray | None = None,
    truncation_values_b: np.ndarray | None = None,
    chunk_size: int | None = None,
    method: str = "auto",
) -> Tensor:
    """(B, D) float64 per-episode estimates of grad J (the ascent direction), D in
    :func:`parameter_layout` order: the estimator of ``pgvar.estimators.episode_gradients``.

    Args:
      policy, episodes: the policy the episodes were sampled from, and the episodes.
      spec: weight, baseline (none, running, value), lambda, gamma^t convention, entropy bonus.
      baseline_bt: (B, T) for ``running``: the running mean of the weight over EARLIER batches.
      values_bt: (B, T) V(s_t) for ``value`` and inside GAE (a critic fitted on other episodes).
      truncation_values_b: (B,) V of each final observation: truncated episodes bootstrap from it
        (terminated ones never do); None treats every end as final, as the tabular estimator does.
      chunk_size: episodes per pass; default :func:`gradient_chunk_size`.
      method: ``packed`` (one backward pass per chunk, then each linear layer's per-episode outer
        products), ``vmap`` (``vmap(grad)`` of one episode's surrogate, for any body), or ``auto``:
        ``packed`` where :func:`linear_layers` allows it.
    """
    if method not in GRADIENT_METHODS:
        raise SpecError(f"method {method!r}: use one of {', '.join(GRADIENT_METHODS)}")
    modules = linear_layers(policy)
    if method == "packed" and modules is None:
        raise SpecError("method 'packed': the policy has parameters outside linear layers; use vmap")
    packed = modules is not None and method != "vmap"
    weights_bt, entropy_bt = _inputs(policy, episodes, spec, baseline_bt, values_bt, truncation_values_b)
    B = episodes.n_episodes
    if chunk_size is None:
        chunk = gradient_chunk_size(policy, B, episodes.n_steps)
    else:
        chunk = min(check_int(chunk_size, "chunk_size", low=1), B)
    _check_gradient_budget("episode_gradients", policy, episodes, chunk)
    grads_bD = torch.empty((B, sum(size for _, size in parameter_layout(policy))), dtype=DTYPE)
    groups = length_groups(episodes.lengths_b, chunk, GROUP_STEPS if packed else CALL_STEPS)
    if packed:
        for chunk_groups in _passes(groups, chunk):
            _packed_gradients(policy, modules, episodes, chunk_groups, weights_bt, entropy_bt, grads_bD)
        return grads_bD
    surrogate = _Surrogate(policy)
    params = {name: parameter.detach() for name, parameter in surrogate.named_parameters()}

    def one_episode(params, observations_t, actions_t, weights_t, entropy_t):
        return functional_call(surrogate, params, (observations_t, actions_t, weights_t, entropy_t))

    per_episode = vmap(grad(one_episode), in_dims=(None, 0, 0, 0, None if entropy_bt is None else 0))
    # functional_call restores a module used twice in the body with the swapped-in tensor, not its
    # Parameter (torch 2.13): put every original back, or the caller's optimiser loses them.
    originals = [(module, name, parameter) for module in policy.modules()
                 for name, parameter in module.named_parameters(recurse=False)]  # fmt: skip
    try:
        for group_i in groups:
            steps = max(int(episodes.lengths_b[group_i[-1]]), 1)  # the group's longest: the rest is padding
            rows = torch.from_numpy(group_i)
            grads_n = per_episode(
                params,
                episodes.observations_bt[rows, :steps],
                episodes.actions_bt[rows, :steps],
                weights_bt[rows, :steps],
                None if entropy_bt is None else entropy_bt[rows, :steps],
            )
            grads_bD[rows] = flatten_gradients(grads_n, (len(group_i),))
    finally:
        for module, name, parameter in originals:
            if getattr(module, name) is not parameter:
                setattr(module, name, parameter)
    return grads_bD


def _passes(groups: list[np.ndarray], chunk: int) -> list[list[np.ndarray]]:
    """Consecutive length groups, together at most ``chunk`` episodes (one pass each)."""
    passes: list[list[np.ndarray]] = [[]]
    for group in groups:
        if passes[-1] and sum(map(len, passes[-1])) + len(group) > chunk:
            passes.append([])
        passes[-1].append(group)
    return passes


def batched_gradient(
    policy: Policy,
    episodes: Episodes,
    spec: EstimatorSpec,
    *,
    baseline_bt: np.ndarray | None = None,
    values_bt: np.ndarray | None = None,
    truncation_values_b: np.ndarray | None = None,
) -> Tensor:
    """(D,) the mean of :func:`episode_gradients` over the episodes, by ONE backward pass of the
    surrogate summed over every step that runs (packed, without padding): the speed limit for
    per-episode gradients, and an oracle for their mean."""
    weights_bt, entropy_bt = _inputs(policy, episodes, spec, baseline_bt, values_bt, truncation_values_b)
    _check_gradient_budget("batched_gradient", policy, episodes, episodes.n_episodes)
    alive = torch.from_numpy(episodes.alive_bt)  # the steps that run, packed: no padding to pass over
    total = _Surrogate(policy)(
        episodes.observations_bt[alive],
        episodes.actions_bt[alive],
        weights_bt[alive],
        None if entropy_bt is None else entropy_bt[alive],
    )
    grads_n = torch.autograd.grad(total, list(policy.parameters()))
    return flatten_gradients(grads_n) / episodes.n_episodes


def loop_gradients(
    policy: Policy,
    episodes: Episodes,
    spec: EstimatorSpec,
    *,
    baseline_bt: np.ndarray | None = None,
    values_bt: np.ndarray | None = None,
    truncation_values_b: np.ndarray | None = None,
) -> Tensor:
    """(B, D) the same as :func:`episode_gradients` by one ``backward`` per episode: the reference
    for tests and benchmarks (slow; not what the library uses)."""
    weights_bt, entropy_bt = _inputs(policy, episodes, spec, baseline_bt, values_bt, truncation_values_b)
    surrogate = _Surrogate(policy)
    rows = []
    for b, length in enumerate(episodes.lengths_b):
        steps = slice(0, max(int(length), 1))
        total = surrogate(
            episodes.observations_bt[b, steps],
            episodes.actions_bt[b, steps],
            weights_bt[b, steps],
            None if entropy_bt is None else entropy_bt[b, steps],
        )
        rows.append(flatten_gradients(torch.autograd.grad(total, list(policy.parameters()))))
    return torch.stack(rows)


# -- running baselines -------------------------------------------------------------------------------


class RunningBaseline:
    """The ``running`` baseline for neural policies: per-step running means over the episodes of
    EARLIER batches (never the batch they are used on, so the estimate stays unbiased), kept in
    ``pgvar.baselines.RunningBaselines`` with one "state".

        running = RunningBaseline(spec)
        for batch in batches:
            g_bD = episode_gradients(policy, batch, spec, baseline_bt=running.baseline_bt(batch))
            running.add(policy, batch)
    """

    def __init__(self, spec: EstimatorSpec) -> None:
        check_supported(spec)
        self.spec = spec
        self.sums = RunningBaselines.empty(1, 1)

    def _fit(self, steps: int) -> None:
        self.sums.fit(max(steps, self.sums.count_t.size), 1)  # grow only: longer episodes add rows

    def baseline_bt(self, episodes: Episodes) -> np.ndarray:
        """(B, T) what ``running`` subtracts: the running mean of the weight at each step (c_t Gbar_t
        for reward-to-go, the mean return of the episodes still running at t for the full return); 0
        before any episode was added."""
        self._fit(episodes.n_steps)
        scale_t = score_scale_t(self.spec, episodes.gamma, self.sums.count_t.size)
        offsets_t = running_offsets_tsa(self.spec, self.sums, scale_t, 1)[: episodes.n_steps, 0, 0]
        return np.where(episodes.alive_bt, offsets_t[None, :], 0.0)

    def values_bt(self, episodes: Episodes) -> np.ndarray:
        """(B, T) the running mean of G_t at each step, a per-step value function for GAE's V."""
        self._fit(episodes.n_steps)
        count_t = self.sums.count_t[: episodes.n_steps]
        mean_t = np.divide(self.sums.sum_g_t[: episodes.n_steps], count_t, out=np.zeros(count_t.shape),
                           where=count_t > 0)  # fmt: skip
        return np.where(episodes.alive_bt, mean_t[None, :], 0.0)

    def add(self, policy: Policy, episodes: Episodes) -> None:
        """Add a batch's episodes (after it was used) into the sums."""
        self._fit(episodes.n_steps)
        returns_tb = episode_returns_bt(policy, episodes, self.spec.entropy).T
        states_tb = np.zeros(returns_tb.shape, dtype=np.int64)
        add_episodes(self.sums, states_tb, returns_tb, episodes.alive_bt.T)
