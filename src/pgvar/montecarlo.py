"""Move 4 of the lesson, measured: the variance of the batch-mean gradient across independent batches.

This is the lesson widget's KPI. M batches (60 by default) of N episodes each; every estimator is
evaluated on the same episodes (common random numbers, so ratios between estimators are sharp).
KPI = trace of the covariance of the batch-mean gradient across the M batches, i.e. the sum over
parameters of each parameter's variance, with a 95% confidence interval.

Episodes are drawn a whole path at a time from the exact path probabilities where the horizon is
finite and the paths few (the lesson's MDP has 27), else walked step by step; see :class:`Sampler`.
Random numbers come from NumPy's PCG64 seeded with ``seed``: the same seed gives the same numbers,
however the work is chunked. Memory stays bounded: only per-batch sums are kept.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import ClassVar

import numpy as np

from pgvar import _kernels, _lanes
from pgvar.errors import SpecError
from pgvar.estimators import EstimatorSpec, ResolvedEstimator, score_scale_t
from pgvar.exact import (
    Chain,
    _gradient,
    count_flow_paths,
    enumerate_flow_paths,
    exact_moments,
    learned_table,
    resolve,
    unroll,
    value_baseline,
)
from pgvar.mdp import TabularMDP
from pgvar.policy import entropy_table, parameter_index, policy_table
from pgvar.returns import reward_to_go

DEFAULT_BATCHES = 60
DEFAULT_WARMUP = 1000
UNBOUNDED_CAP = 100_000  # steps after which an episode without a horizon is cut (and counted)
UNBOUNDED_STEPS = 512  # per-step statistics of unbounded episodes; later steps share the last row
MAX_SAMPLED_PATHS = 4096  # finite-horizon MDPs with at most this many paths are sampled a path at a time
EPISODE_READOUT_MAX_N = 4  # batches of at most this many episodes are read out episode by episode
STREAM_EPISODES = 1 << 16  # episodes per random stream block (fixed, so chunking never changes results)
BLOCK_CELLS = 1 << 16  # bound on batches x steps x states x actions per block (stays in cache)
MAX_MOMENT_STEPS = 8  # horizons up to this read one-episode batches out through path moments
MAX_RUNNING_MOMENT_STEPS = _lanes.QUAD  # with running baselines (their running sums fill a register)
MAX_MOMENT_READOUT = 1 << 18  # and paths x sums per path x estimators x parameters up to this
MOMENT_READOUT_PER_EPISODE = 256  # multiply-adds of that read-out per episode, at most, for it to pay
RUNNING_MOMENT_READOUT_PER_EPISODE = 1024  # with running baselines (the per-cell kernel costs more)
_MOMENT_CHUNK = 1 << 17  # path moments held at once (1 MB)
_WARMUP_STREAM = 1 << 30


@dataclass
class RunningBaselines:
    """Per-step running sums behind the ``lesson`` and ``running`` baselines; pass it on to keep
    them warm across calls (the explorer does, as the lesson's widget does)."""

    sum_g_t: np.ndarray
    sum_r_t: np.ndarray
    count_t: np.ndarray

    @classmethod
    def empty(cls, steps: int) -> RunningBaselines:
        return cls(np.zeros(steps), np.zeros(steps), np.zeros(steps))

    def fit(self, steps: int) -> None:
        """Resize in place to ``steps`` rows (extra rows are folded into the last one)."""
        if self.count_t.size == steps:
            return
        for name in ("sum_g_t", "sum_r_t", "count_t"):
            old = getattr(self, name)
            new = np.zeros(steps)
            keep = min(steps, old.size)
            new[:keep] = old[:keep]
            new[steps - 1] += old[keep:].sum()
            setattr(self, name, new)


@dataclass
class Sample:
    """Batch means of every estimator: ``batch_means_emd`` has shape (E, M, D)."""

    specs: list[EstimatorSpec]
    n: int
    batch_means_emd: np.ndarray
    truncated_episodes: int
    running: RunningBaselines = field(repr=False)
    count_ts: np.ndarray | None = field(default=None, repr=False)
    sum_g_ts: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Readings:
    """Many readings of the KPI from one call: ``variance_trace_re`` (R, E) is reading r's trace of
    the covariance of its ``batches`` batch means, per estimator (see :meth:`Sampler.readings`)."""

    specs: list[EstimatorSpec]
    n: int
    batches: int
    variance_trace_re: np.ndarray
    truncated_episodes: int
    running: RunningBaselines = field(repr=False)


@dataclass(frozen=True)
class _Sums:
    """Per reading of ``per_reading`` batches: the sum of the batch means ``sum_red`` (R, E, D) and of
    their squared norms ``sumsq_re`` (R, E). With one batch a reading, ``sum_red`` holds the batch
    means and ``sumsq_re`` stays zero (there is no variance to read)."""

    per_reading: int
    sum_red: np.ndarray
    sumsq_re: np.ndarray

    @classmethod
    def zeros(cls, readings: int, estimators: int, params: int, per_reading: int) -> _Sums:
        return cls(per_reading, np.zeros((readings, estimators, params)), np.zeros((readings, estimators)))

    def add(self, first_batch: int, means_bed: np.ndarray) -> None:
        """Fold in the (B, E, D) means of batches ``first_batch`` .. ``first_batch + B - 1``."""
        if self.per_reading == 1:
            self.sum_red[first_batch : first_batch + means_bed.shape[0]] += means_bed
            return
        squares_be = np.einsum("bed,bed->be", means_bed, means_bed)
        reading_b = (first_batch + np.arange(means_bed.shape[0])) // self.per_reading
        firsts = np.flatnonzero(np.diff(reading_b, prepend=-1))  # each reading's first row in the block
        self.sum_red[reading_b[firsts]] += np.add.reduceat(means_bed, firsts)
        self.sumsq_re[reading_b[firsts]] += np.add.reduceat(squares_be, firsts)

    def variance_trace_re(self) -> np.ndarray:
        """(R, E) trace of the sample covariance of each reading's batch means: the one-pass form of
        :func:`variance_trace` (its rounding error is about 1e-16 times |mean|^2 / variance)."""
        m = self.per_reading
        return (self.sumsq_re - np.einsum("red,red->re", self.sum_red, self.sum_red) / m) / (m - 1)


@dataclass
class BatchStats:
    """Sufficient statistics of B batches over T steps, ``stats_btsak`` of shape (B, T, S, A, K): per
    (batch, step, state, action) the visit count, the sums of G_t and of R, then of each GAE advantage
    (channels ``_kernels.COUNT``, ``SUM_G``, ``SUM_R``, ``SUM_ADV + g``)."""

    stats_btsak: np.ndarray
    truncated: int = 0

    @classmethod
    def zeros(cls, batches: int, steps: int, states: int, actions: int, n_gae: int) -> BatchStats:
        return cls(np.zeros((batches, steps, states, actions, _kernels.SUM_ADV + n_gae)))

    @property
    def batches(self) -> int:
        return self.stats_btsak.shape[0]

    def per_step(self, channel: int) -> np.ndarray:
        """(T,) a channel summed over batches, states and actions."""
        return self.stats_btsak[..., channel].sum(axis=(0, 2, 3))


def _check_counts(n: int, batches: int, least_batches: int = 2, count: int = 1) -> None:
    def whole(value: object, least: int) -> bool:
        return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= least

    if not whole(n, 1):
        raise SpecError(f"N: batch size must be an integer >= 1, got {n!r}")
    if not whole(batches, least_batches):
        raise SpecError(f"batches: need an integer >= {least_batches} to measure a variance, got {batches!r}")
    if not whole(count, 1):
        raise SpecError(f"count: the number of readings must be an integer >= 1, got {count!r}")


@dataclass(frozen=True)
class _Tables:
    """Everything the kernel and the read-out need, computed once per (MDP, theta, estimators)."""

    mdp: TabularMDP
    specs: list[EstimatorSpec]
    steps: int  # T of the accumulators
    max_steps: int  # episode cap
    probs_tsa: np.ndarray
    probs_cdf_psa: np.ndarray
    entropy_bonus_ps: np.ndarray
    entropy_grad_tsa: np.ndarray
    index_tsa: np.ndarray
    trans: np.ndarray
    trans_cdf: np.ndarray
    trans_fixed: np.ndarray
    reward_sas: np.ndarray
    noise_scale_sa: np.ndarray
    initial_cdf: np.ndarray
    initial_fixed: int
    offsets_etsa: np.ndarray
    gae_e: np.ndarray
    weight_kind_e: np.ndarray
    running_e: np.ndarray
    scale_et: np.ndarray
    direct_tsa: np.ndarray
    gae_rho_g: np.ndarray
    gae_values_gts: np.ndarray
    beta: float
    n_params: int
    step_words: int  # raw words a step may use: 2 when a stochastic transition and uniform noise share one


def _pad_steps(array: np.ndarray, steps: int) -> np.ndarray:
    """Cut or extend a per-step table to ``steps`` rows, repeating the last row."""
    if array.shape[0] >= steps:
        return array[:steps]
    return np.concatenate([array, np.repeat(array[-1:], steps - array.shape[0], axis=0)])


def _needs_chain(spec: EstimatorSpec) -> bool:
    """V, the optimal baselines and the running means inside GAE (at their limits) need the exact
    engine; the running means of other weights, a learned table and no baseline do not."""
    if spec.weight == "gae":
        return spec.baseline not in ("none", "learned")
    return spec.baseline in ("value", "optimal", "optimal-per-parameter")


def _tables(
    mdp: TabularMDP,
    theta: np.ndarray,
    specs: list[EstimatorSpec],
    beta: float,
    chain: Chain | None = None,
    learned_ts: np.ndarray | None = None,
) -> _Tables:
    steps = mdp.horizon if mdp.horizon is not None else UNBOUNDED_STEPS
    max_steps = mdp.horizon if mdp.horizon is not None else UNBOUNDED_CAP
    if chain is None and any(_needs_chain(spec) for spec in specs):
        chain = unroll(mdp, theta, beta)
    policy_steps = theta.shape[0] if theta.ndim == 3 else 1
    probs_psa = np.array([policy_table(theta, mdp, t) for t in range(policy_steps)])
    pairs = [entropy_table(theta, mdp, t) for t in range(policy_steps)]
    entropy_ps = np.array([pair[0] for pair in pairs])
    grad_psa = np.array([pair[1] for pair in pairs])
    per_step = np.minimum(np.arange(steps), policy_steps - 1)
    trans_steps = mdp.horizon if mdp.time_dependent else 1
    trans = np.array([mdp.transitions_at(t) for t in range(trans_steps)])
    fixed = np.where(np.isclose(trans.max(axis=-1), 1.0), trans.argmax(axis=-1), -1).astype(np.int64)
    initial_fixed = int(np.argmax(mdp.initial_s)) if np.isclose(mdp.initial_s.max(), 1.0) else -1
    shape = (steps, mdp.n_states, mdp.n_actions)
    offsets = np.zeros((len(specs), *shape))
    gae_e, rho, gae_values = [], [], []
    for e, spec in enumerate(specs):
        if _needs_chain(spec):
            resolved = resolve(chain, spec)
        elif spec.baseline == "learned":
            resolved = value_baseline(mdp, spec, learned_table(mdp, learned_ts, steps))
        else:  # no baseline, or a running mean kept by the read-out
            resolved = ResolvedEstimator(spec, np.zeros(shape), np.zeros((steps + 1, mdp.n_states)))
        if spec.weight == "gae":
            gae_e.append(len(rho))
            rho.append(mdp.gamma * spec.lam)
            gae_values.append(_pad_steps(resolved.values_ts, steps + 1))
        else:
            gae_e.append(-1)
            offsets[e] = _pad_steps(resolved.offsets_tsa, steps)
    discount_t = mdp.gamma ** np.arange(steps, dtype=float)
    return _Tables(
        mdp,
        specs,
        steps,
        max_steps,
        probs_psa[per_step],
        np.cumsum(probs_psa, axis=-1),
        beta * entropy_ps,
        grad_psa[per_step],
        np.array([parameter_index(mdp, theta.shape, t) for t in range(steps)]),
        trans,
        np.cumsum(trans, axis=-1),
        fixed,
        np.ascontiguousarray(mdp.reward_sas),
        np.ascontiguousarray(mdp.noise_scale_sa),
        np.cumsum(mdp.initial_s),
        initial_fixed,
        offsets,
        np.array(gae_e, dtype=np.int64),
        np.array([spec.weight_kind for spec in specs], dtype=np.int64),
        np.array([0 if spec.weight == "gae" else spec.running for spec in specs], dtype=np.int64),
        np.array([score_scale_t(spec, mdp.gamma, steps) for spec in specs]).reshape(len(specs), steps),
        beta * discount_t[:, None, None] * grad_psa[per_step],
        np.array(rho, dtype=float),
        np.array(gae_values).reshape(len(rho), steps + 1, mdp.n_states),
        beta,
        theta.size,
        2 if (fixed < 0).any() and mdp.reward_noise == "uniform" else 1,
    )


@dataclass(frozen=True)
class _Paths:
    """A finite-horizon MDP with few paths, sampled a whole path at a time.

    The episode's whole state-action path is drawn from its exact probability (alias tables), and
    only the reward noise is drawn step by step: one number per episode instead of one or two per
    step, and no Markov chain to walk. Per batch the kernel keeps the count of each path and its
    summed noise per step; ``paths_to_stats`` turns them into the statistics of ``simulate``.
    Arrays: ``*_k`` per path, ``*_kt`` per path and step (zero after the path ended)."""

    threshold_k: np.ndarray
    alias_k: np.ndarray
    length_k: np.ndarray
    cell_kt: np.ndarray  # flat (step, state, action) cell within a batch
    scale_kt: np.ndarray  # reward noise scale (uniform width or Gaussian std)
    mean_g_kt: np.ndarray  # G_t at the mean rewards
    mean_adv_gkt: np.ndarray  # each GAE advantage at the mean rewards
    # for reading small batches out episode by episode (``_kernels.paths_readout``):
    state_kt: np.ndarray
    param_kta: np.ndarray  # flat index of the logit of each action a' at (t, s_t)
    score_kta: np.ndarray  # the score e_{a_t} - pi(.|s_t) at step t
    at_mean_ekta: np.ndarray  # each estimator's visit at the mean rewards: (w - fixed b) score + direct
    decay_e: np.ndarray  # how the noise in its weight decays backwards: gamma (G_t), gamma lambda (GAE)
    distinct_params: bool  # no path visits one logit twice (episodes then need no buffer)
    # for one-episode batches summed per cell (``_kernels.paths_readings``): a visit is at_mean + m
    # score, m moving per episode, so with distinct logits an episode's squared norm is
    # |at_mean|^2 + sum_t m_t (2 at_mean . score + m_t |score|^2) at step t
    score_sq_kt: np.ndarray
    lane_tables: tuple  # the estimators' coefficients as SIMD lanes (``_lane_tables``)


def alias_tables(prob_k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker's alias tables (Vose's construction) for drawing index k with probability prob_k:
    pick a column i uniformly, keep it with probability ``threshold_k[i]``, else take ``alias_k[i]``.

    Returns (threshold_k, alias_k)."""
    n = prob_k.size
    scaled = prob_k * (n / prob_k.sum())
    threshold = np.ones(n)
    alias = np.arange(n)
    small = [i for i in range(n) if scaled[i] < 1.0]
    large = [i for i in range(n) if scaled[i] >= 1.0]
    while small and large:
        low, high = small.pop(), large[-1]
        threshold[low], alias[low] = scaled[low], high
        scaled[high] -= 1.0 - scaled[low]
        if scaled[high] < 1.0:
            small.append(large.pop())
    return threshold, alias  # columns left over are full (threshold 1) up to rounding


class _Flow:
    """pi(a|s) P(s'|s, a) at step t, zero in terminal states, made one step at a time when asked for
    (all T steps at once would be T copies of the transition table)."""

    def __init__(self, tables: _Tables) -> None:
        self.tables = tables

    def __len__(self) -> int:
        return self.tables.steps

    def __getitem__(self, t: int) -> np.ndarray:
        tables = self.tables
        trans_sas = tables.trans[min(t, tables.trans.shape[0] - 1)]
        return tables.probs_tsa[t][..., None] * trans_sas * ~tables.mdp.terminal_s[:, None, None]


def _paths(tables: _Tables) -> _Paths | None:
    """Path tables when the horizon is finite and the paths few (else None)."""
    mdp = tables.mdp
    if mdp.horizon is None:
        return None
    flow_tsas = _Flow(tables)
    if count_flow_paths(mdp.initial_s, flow_tsas, mdp.terminal_s, MAX_SAMPLED_PATHS) > MAX_SAMPLED_PATHS:
        return None
    prob_k, states_tk, actions_tk, next_tk, alive_tk = enumerate_flow_paths(
        mdp.initial_s, flow_tsas, mdp.terminal_s
    )
    steps, n_paths = states_tk.shape
    policy_t = np.minimum(np.arange(steps), tables.entropy_bonus_ps.shape[0] - 1)[:, None]
    reward_tk = mdp.reward_sas[states_tk, actions_tk, next_tk] + tables.entropy_bonus_ps[policy_t, states_tk]
    reward_tk = np.where(alive_tk, reward_tk, 0.0)
    length_k = alive_tk.sum(axis=0)
    mean_g_tk = reward_to_go(reward_tk, mdp.gamma)  # rewards are zero after a path ended
    n_gae = tables.gae_rho_g.size
    mean_adv_gtk = np.zeros((n_gae, steps, n_paths))
    for g in range(n_gae):
        values_ts = tables.gae_values_gts[g]
        ends_tk = np.arange(1, steps + 1)[:, None] >= length_k[None, :]
        value_next_tk = np.where(ends_tk, 0.0, values_ts[np.arange(1, steps + 1)[:, None], next_tk])
        delta_tk = np.where(
            alive_tk,
            reward_tk + mdp.gamma * value_next_tk - values_ts[np.arange(steps)[:, None], states_tk],
            0.0,
        )
        mean_adv_gtk[g] = reward_to_go(delta_tk, tables.gae_rho_g[g])  # A_t = delta_t + rho A_{t+1}
    cell_tk = (np.arange(steps)[:, None] * mdp.n_states + states_tk) * mdp.n_actions + actions_tk
    scale_tk = np.where(alive_tk, tables.noise_scale_sa[states_tk, actions_tk], 0.0)
    threshold_k, alias_k = alias_tables(prob_k)
    # per-episode read-out tables: the read-out's formula for one visit of (t, s, a), see batch_gradients
    step_tk = np.broadcast_to(np.arange(steps)[:, None], states_tk.shape)
    param_tka = tables.index_tsa[step_tk, states_tk]
    score_tka = (np.arange(mdp.n_actions) == actions_tk[..., None]) - tables.probs_tsa[step_tk, states_tk]
    direct_tka = tables.direct_tsa[step_tk, states_tk]
    weight_etk = np.empty((len(tables.specs), steps, n_paths))  # at the mean rewards
    decay_e = np.zeros(len(tables.specs))  # the return's noise is G_0's: no decay of its own
    for e, spec in enumerate(tables.specs):
        if spec.weight == "return":
            weight_etk[e] = mean_g_tk[0]
        elif spec.weight == "rtg":
            weight_etk[e], decay_e[e] = tables.scale_et[e][:, None] * mean_g_tk, mdp.gamma
        else:
            g = tables.gae_e[e]
            weight_etk[e], decay_e[e] = tables.scale_et[e][:, None] * mean_adv_gtk[g], tables.gae_rho_g[g]
    fixed_etka = weight_etk[..., None] - tables.offsets_etsa[:, step_tk, states_tk]
    alive_tka = alive_tk[..., None]

    def per_path(array, axis_t):  # (..., T, K, A) -> (..., K, T, A), zero after the path ended
        return np.ascontiguousarray(np.swapaxes(np.where(alive_tka, array, 0), axis_t, axis_t + 1))

    score_kta = per_path(score_tka, 0)
    at_mean_ekta = per_path(fixed_etka * score_tka + direct_tka, 1)
    square_ek = (at_mean_ekta**2).sum(axis=(2, 3))
    cross_ekt = (at_mean_ekta * score_kta).sum(axis=3)
    weight_ekt = np.ascontiguousarray(np.where(alive_tk, weight_etk, 0.0).transpose(0, 2, 1))

    return _Paths(
        threshold_k,
        alias_k,
        length_k.astype(np.int64),
        np.ascontiguousarray(np.where(alive_tk, cell_tk, 0).T),
        np.ascontiguousarray(scale_tk.T),
        np.ascontiguousarray(mean_g_tk.T),
        np.ascontiguousarray(mean_adv_gtk.transpose(0, 2, 1)),
        np.ascontiguousarray(states_tk.T),
        per_path(param_tka, 0),
        score_kta,
        at_mean_ekta,
        decay_e,
        _visits_each_logit_once(param_tka, alive_tk),
        (score_kta**2).sum(axis=2),
        _lane_tables(tables, mean_g_tk.T, alive_tk.T, decay_e, square_ek, cross_ekt, weight_ekt),
    )


def _lane_tables(
    tables: _Tables,
    paths_mean_g_kt: np.ndarray,
    alive_kt: np.ndarray,
    decay_e: np.ndarray,
    square_ek: np.ndarray,
    cross_ekt: np.ndarray,
    weight_ekt: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """The coefficients of ``_kernels.paths_readings``'s lanes, lane innermost, padded with zeros to
    whole SIMD vectors (``_lanes.LANES``): the estimators, then three weights summed the same way, 1
    (visits), G_t and R. Per lane: the decay of its weight's noise, whether that noise is the full
    return's, the factor on the running mean of R; per step and lane the score scale (on the noise)
    and the factor on the running mean of G_t; per path the squared norm at the mean rewards; per path,
    step and lane twice the cross term and the weight at the mean rewards."""
    used = decay_e.size + 3
    lanes = -(-used // _lanes.LANES) * _lanes.LANES

    def padded(array_xe: np.ndarray, *extra) -> np.ndarray:
        out = np.zeros((*array_xe.shape[:-1], lanes), dtype=array_xe.dtype)
        out[..., : decay_e.size] = array_xe
        for lane, value in enumerate(extra, start=decay_e.size):
            out[..., lane] = value
        return out

    minus_g_et, minus_r_e = _running_factors(tables)
    mean_r_kt = np.where(alive_kt, paths_mean_g_kt[:, :1], 0.0)
    return (
        padded(decay_e, 0.0, tables.mdp.gamma, 0.0),
        padded(tables.weight_kind_e == _kernels.WEIGHT_RETURN, False, False, True),
        padded(minus_r_e, 0.0, 0.0, 0.0),
        padded(tables.scale_et.T, 0.0, 1.0, 0.0),
        padded(minus_g_et.T, 0.0, 0.0, 0.0),
        padded(square_ek.T, 0.0, 0.0, 0.0),
        padded(2.0 * cross_ekt.transpose(1, 2, 0), 0.0, 0.0, 0.0),
        padded(weight_ekt.transpose(1, 2, 0), alive_kt.astype(float), paths_mean_g_kt, mean_r_kt),
    )


def _running_factors(tables: _Tables) -> tuple[np.ndarray, np.ndarray]:
    """What each estimator subtracts per unit of the running mean of G_t at step t (``minus_g_et``,
    (E, T): the lesson's baseline, scaled as the reward-to-go it is compared with) and of R
    (``minus_r_e``, (E,): the running mean of the return itself)."""
    rtg_e1 = (tables.weight_kind_e == _kernels.WEIGHT_RTG)[:, None]
    minus_g_et = np.where((tables.running_e == 1)[:, None], np.where(rtg_e1, tables.scale_et, 1.0), 0.0)
    return minus_g_et, (tables.running_e == 2).astype(float)


@dataclass(frozen=True)
class _Moments:
    """Batches read out through each path's moments, where no estimator has a running baseline, no
    path visits a logit twice and the horizon is at most ``MAX_MOMENT_STEPS``.

    On path k with unit reward noise u (T,), an estimator's weight noise at step t is m_t = B_kt . u:
    the return's is sum_j gamma^j scale_kj u_j at every step, G_t's or a GAE advantage's is
    scale_et sum_{j >= t} decay^(j - t) scale_kj u_j. At each visit the episode's gradient is
    at_mean + m_t score, linear in u. So a batch's (or a reading's) summed gradient is linear in each
    path's count and noise sums, K (1 + T) numbers (``readout_xf``), and so are the running sums that
    later batches see and the visits and sums of G_t per (step, state). For one-episode readings,
    each episode's squared norm is a quadratic in u, whose coefficients (``coef_ekw``)
    ``_kernels.path_moments`` evaluates as it draws the noise."""

    steps_witness: tuple  # T zeros, E zeros: the kernel is compiled for these lengths
    estimators_witness: tuple
    coef_ekw: np.ndarray  # (E, K, 1 + T + T (T + 1) / 2): on 1, on u_t, on u_t u_j (j <= t) row by row
    readout_xf: np.ndarray  # (K (1 + T), E D): each path's count and noise sums -> the summed gradients
    running_xf: np.ndarray  # (K (1 + T), 3 T): -> the sums of G_t and of R, and the counts, per step
    visits_xf: np.ndarray  # (K (1 + T), 2 T S): -> the visits, then the sums of G_t, per (step, state)
    readout_budget: ClassVar[int] = MOMENT_READOUT_PER_EPISODE

    def _path_rows(self, path_stats_bkw: np.ndarray) -> np.ndarray:
        """(B, K (1 + T)) from (B, K, W) path sums (W = 1 without reward noise: no noise sums)."""
        batches, _, width = path_stats_bkw.shape
        steps = len(self.steps_witness)
        if width < 1 + steps:
            path_stats_bkw = np.pad(path_stats_bkw, ((0, 0), (0, 0), (0, 1 + steps - width)))
        return path_stats_bkw.reshape(batches, -1)

    def _add_totals(
        self, rows_bx: np.ndarray, running: RunningBaselines, count_ts: np.ndarray | None = None,
        sum_g_ts: np.ndarray | None = None,
    ) -> None:  # fmt: skip
        """Add the episodes of the path-sum rows into ``running`` (and ``count_ts``, ``sum_g_ts``)."""
        total_x = rows_bx.sum(axis=0)
        sum_g_t, sum_r_t, count_t = (total_x @ self.running_xf).reshape(3, -1)
        running.sum_g_t += sum_g_t
        running.sum_r_t += sum_r_t
        running.count_t += count_t
        if count_ts is not None:
            visits_ts, sums_ts = (total_x @ self.visits_xf).reshape(2, *count_ts.shape)
            count_ts += visits_ts
            sum_g_ts += sums_ts

    def sums(
        self, paths: _Paths, uniforms: np.ndarray, noise_it: np.ndarray, first_batch: int, per_reading: int,
        readings: int, running: RunningBaselines,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The per-path sums (R, K W) of ``readings`` one-episode readings from their episodes' random
        numbers, and their squared norms summed (R, E); adds the episodes into ``running``."""
        n_paths, n_estimators = paths.threshold_k.size, len(self.estimators_witness)
        sums_rkw = np.zeros((readings, n_paths, 1 + len(self.steps_witness)))
        squares_rke = np.zeros((readings, n_paths, n_estimators))
        _kernels.path_moments(
            uniforms, noise_it, self.steps_witness, self.estimators_witness, paths.threshold_k,
            paths.alias_k, self.coef_ekw, first_batch, per_reading, sums_rkw, squares_rke,
        )  # fmt: skip
        sums_rx = sums_rkw.reshape(readings, -1)
        self._add_totals(sums_rx, running)
        return sums_rx, squares_rke.sum(axis=1)

    def batch_means(
        self, path_stats_bkw: np.ndarray, n: int, running: RunningBaselines, count_ts: np.ndarray,
        sum_g_ts: np.ndarray,
    ) -> np.ndarray:  # fmt: skip
        """(B, E, D) batch means of n episodes each from their path sums (see :func:`_path_sums`); the
        contract of :func:`batch_gradients` otherwise."""
        rows_bx = self._path_rows(path_stats_bkw)
        self._add_totals(rows_bx, running, count_ts, sum_g_ts)
        return (rows_bx @ self.readout_xf).reshape(rows_bx.shape[0], len(self.estimators_witness), -1) / n


@dataclass(frozen=True)
class _RunningMoments:
    """One-episode batches read out through each path's moments when an estimator has a running
    baseline: where no path visits a logit twice and the horizon is at most
    ``MAX_RUNNING_MOMENT_STEPS``.

    A running baseline b_t changes from episode to episode, but enters the gradient linearly: at each
    visit the episode's gradient is at_mean + (m_t - b_t) score. So a reading's summed gradient is
    linear in each path's count and noise sums and in the running means of G_t and of R summed per
    visited cell (``readout_xf``: per cell, not per path, since the score depends on the cell only
    and the read-out's product is then 2.5 times smaller on the lesson). For one-episode readings
    ``_kernels.path_moments_running`` sums those means and the episodes' squared norms as it draws
    the episodes. (Larger batches keep the per-cell statistics: read out from path sums, their
    running means per batch cost more NumPy calls than they save.) Tables named ``_bl`` hold the
    estimators in blocks of ``_lanes.QUAD`` lanes (padded with zeros); ``running_kjl`` gives each
    path's G_t and R per step: at the mean rewards, then per unit noise of step j."""

    steps_witness: tuple  # T zeros, ceil(E / QUAD) zeros: the kernel is compiled for these lengths
    blocks_witness: tuple
    gamma_t: np.ndarray  # (T,) gamma^t: the return's noise
    decay_bl: np.ndarray  # (B, QUAD) the decay of the weight's noise backwards (see ``_Paths.decay_e``)
    weight_btl: np.ndarray  # (B, T, QUAD) the score scale on that noise (0 where the weight is R)
    return_bl: np.ndarray  # (B, QUAD) 1 where the weight is R
    minus_g_btl: np.ndarray  # (B, T, QUAD) and (B, QUAD): see ``_running_factors``
    minus_r_bl: np.ndarray
    cross2_kbtl: np.ndarray  # (K, B, T, QUAD) twice at_mean . score per visit
    running_kjl: np.ndarray  # (K, 1 + T, 2, QUAD): G_t and R at step t (QUAD lanes), zero after the end
    alive_kl: np.ndarray  # (K, QUAD) 1 while the path lasts
    mean_row_kt: np.ndarray  # (K, T) where the running means at step t of path k are summed
    square_ke: np.ndarray  # (K, E) |at_mean|^2
    readout_xf: np.ndarray  # (K (1 + T) + 2 cells, E D): the sums of a reading -> its summed gradients
    readout_budget: ClassVar[int] = RUNNING_MOMENT_READOUT_PER_EPISODE

    def sums(
        self, paths: _Paths, uniforms: np.ndarray, noise_it: np.ndarray, first_batch: int, per_reading: int,
        readings: int, running: RunningBaselines,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """As :meth:`_Moments.sums`; the kernel reads and updates ``running`` episode by episode."""
        quad, steps = _lanes.QUAD, len(self.steps_witness)
        n_paths, n_estimators = paths.threshold_k.size, self.square_ke.shape[1]
        sums_rx = np.zeros((readings, self.readout_xf.shape[0]))
        squares_rbl = np.zeros((readings, len(self.blocks_witness), quad))
        prior_xl = np.zeros((3, quad))
        prior_xl[:, :steps] = running.sum_g_t, running.sum_r_t, running.count_t
        _kernels.path_moments_running(
            uniforms, noise_it, self.steps_witness, self.blocks_witness, paths.threshold_k, paths.alias_k,
            paths.scale_kt, self.gamma_t, self.decay_bl, self.weight_btl, self.return_bl, self.minus_g_btl,
            self.minus_r_bl, self.cross2_kbtl, paths.score_sq_kt, self.running_kjl, self.alive_kl,
            self.mean_row_kt, prior_xl, first_batch, per_reading, sums_rx, squares_rbl,
        )  # fmt: skip
        running.sum_g_t[:], running.sum_r_t[:], running.count_t[:] = prior_xl[:, :steps]
        counts_rk = sums_rx[:, : n_paths * (1 + steps) : 1 + steps]
        squares_re = squares_rbl.reshape(readings, -1)[:, :n_estimators] + counts_rk @ self.square_ke
        return sums_rx, squares_re


def _moments(tables: _Tables, paths: _Paths) -> _Moments | _RunningMoments | None:
    """The tables of :class:`_Moments` or, where an estimator has a running baseline, of
    :class:`_RunningMoments`; None where a path visits a logit twice, the horizon is too long or the
    dense read-out map would be larger than ``MAX_MOMENT_READOUT``."""
    scale_kt, score_kta, at_mean_ekta = paths.scale_kt, paths.score_kta, paths.at_mean_ekta
    n_paths, steps = scale_kt.shape
    n_estimators, n_params = len(tables.specs), tables.n_params
    has_running = bool(tables.running_e.any())
    alive_kt = np.arange(steps) < paths.length_k[:, None]
    # with running baselines, their means summed per visited cell: a row pair each (one more pair for
    # the steps after a path ended, where there are such)
    cells, cell_kt = np.unique(np.where(alive_kt, paths.cell_kt, -1), return_inverse=True)
    cell_kt = cell_kt.reshape(n_paths, steps)
    mean_rows = 2 * cells.size if has_running else 0
    too_big = (n_paths * (1 + steps) + mean_rows) * n_estimators * n_params > MAX_MOMENT_READOUT
    too_long = steps > (MAX_RUNNING_MOMENT_STEPS if has_running else MAX_MOMENT_STEPS)
    if not paths.distinct_params or too_long or too_big:
        return None
    gamma = tables.mdp.gamma
    lag_tj = np.arange(steps)[None, :] - np.arange(steps)[:, None]  # j - t

    def decaying(decay: float) -> np.ndarray:  # (T, T): decay^(j - t) for j >= t, else 0
        return np.where(lag_tj >= 0, decay ** np.maximum(lag_tj, 0), 0.0)

    noisy_kj = gamma ** np.arange(steps) * scale_kt  # the noise in R per unit noise of step j
    noise_ektj = np.empty((n_estimators, n_paths, steps, steps))
    for e in range(n_estimators):
        if tables.weight_kind_e[e] == _kernels.WEIGHT_RETURN:
            noise_ektj[e] = noisy_kj[:, None, :]
        else:
            decay_tj = decaying(paths.decay_e[e])
            noise_ektj[e] = tables.scale_et[e][None, :, None] * decay_tj[None] * scale_kt[:, None, :]
    square_ek = np.einsum("ekta,ekta->ek", at_mean_ekta, at_mean_ekta)
    cross_ekt = np.einsum("ekta,kta->ekt", at_mean_ekta, score_kta)
    # the summed gradients: a visit adds n at_mean + (B s)_t score at its logit (after a path ended, 0)
    values_ktaxe = np.concatenate(
        [at_mean_ekta[None], noise_ektj.transpose(3, 0, 1, 2)[..., None] * score_kta]
    ).transpose(2, 3, 4, 0, 1)
    readout_kdxe = np.zeros((n_paths, n_params, 1 + steps, n_estimators))
    path_kta = np.broadcast_to(np.arange(n_paths)[:, None, None], paths.param_kta.shape)
    np.add.at(readout_kdxe, (path_kta, paths.param_kta), values_ktaxe)
    readout_xf = readout_kdxe.transpose(0, 2, 3, 1).reshape(n_paths * (1 + steps), -1)
    # the running sums: n mean G_t + the noise in G_t, n R + the noise in R, n, per step alive
    running_kxct = np.zeros((n_paths, 1 + steps, 3, steps))
    running_kxct[:, 0, 0] = paths.mean_g_kt
    running_kxct[:, 0, 1] = alive_kt * paths.mean_g_kt[:, :1]
    running_kxct[:, 0, 2] = alive_kt
    running_kxct[:, 1:, 0] = (decaying(gamma)[None] * scale_kt[:, None, :]).transpose(0, 2, 1)
    running_kxct[:, 1:, 1] = noisy_kj[:, :, None] * alive_kt[:, None, :]
    path_i, step_i = np.nonzero(alive_kt)  # the visits (k, t)
    if has_running:
        # and - (minus_g_t mean_g_t + minus_r mean_r_t) score per visit, summed per cell (the score
        # depends on the cell only): row 2 c takes the means of G_t, row 2 c + 1 those of R
        minus_g_et, minus_r_e = _running_factors(tables)
        mean_rcde = np.zeros((2, cells.size, n_params, n_estimators))
        cell_i, params_ia = cell_kt[path_i, step_i], paths.param_kta[path_i, step_i]
        score_ia1 = score_kta[path_i, step_i, :, None]
        mean_rcde[0, cell_i[:, None], params_ia] = -minus_g_et[:, step_i].T[:, None] * score_ia1
        mean_rcde[1, cell_i[:, None], params_ia] = -minus_r_e * score_ia1
        mean_xf = mean_rcde.transpose(1, 0, 3, 2).reshape(mean_rows, -1)
        mean_row_kt = n_paths * (1 + steps) + 2 * cell_kt
        readout_xf = np.ascontiguousarray(np.concatenate([readout_xf, mean_xf]))
        return _running_moments(
            tables, paths, noise_ektj, square_ek, cross_ekt, running_kxct, mean_row_kt, readout_xf
        )
    # and per (step, state): the visits and the sums of G_t
    visits_kxcts = np.zeros((n_paths, 1 + steps, 2, steps, tables.mdp.n_states))
    state_i = paths.state_kt[path_i, step_i]
    visits_kxcts[path_i, :, :, step_i, state_i] = running_kxct[path_i, :, 2::-2, step_i]  # count, G_t
    # |at_mean + sum_t m_t score_t|^2 over the visits: the squared norm's coefficients on 1, u, u u^T
    linear_ekj = np.einsum("ekt,ektj->ekj", 2.0 * cross_ekt, noise_ektj)
    quadratic_ekjl = np.einsum("kt,ektj,ektl->ekjl", paths.score_sq_kt, noise_ektj, noise_ektj)
    row_p, column_p = np.tril_indices(steps)
    pairs_ekp = np.where(row_p == column_p, 1.0, 2.0) * quadratic_ekjl[..., row_p, column_p]
    coef_ekw = np.concatenate([square_ek[..., None], linear_ekj, pairs_ekp], axis=2)
    return _Moments(
        readout_xf=np.ascontiguousarray(readout_xf),
        steps_witness=(0,) * steps,
        estimators_witness=(0,) * n_estimators,
        coef_ekw=np.ascontiguousarray(coef_ekw),
        running_xf=running_kxct.reshape(n_paths * (1 + steps), 3 * steps),
        visits_xf=visits_kxcts.reshape(n_paths * (1 + steps), -1),
    )


def _running_moments(
    tables: _Tables,
    paths: _Paths,
    noise_ektj: np.ndarray,
    square_ek: np.ndarray,
    cross_ekt: np.ndarray,
    running_kxct: np.ndarray,
    mean_row_kt: np.ndarray,
    readout_xf: np.ndarray,
) -> _RunningMoments:
    """The kernel's tables of :class:`_RunningMoments` (see :func:`_moments` for the arguments)."""
    quad = _lanes.QUAD
    n_estimators, n_paths, steps, _ = noise_ektj.shape
    blocks = -(-n_estimators // quad)

    def in_blocks(array_ex: np.ndarray) -> np.ndarray:  # (E, ...) -> (B, ..., QUAD), padded with zeros
        padded = np.zeros((blocks * quad, *array_ex.shape[1:]))
        padded[:n_estimators] = array_ex
        return np.ascontiguousarray(np.moveaxis(padded.reshape(blocks, quad, *array_ex.shape[1:]), 1, -1))

    is_return_e = tables.weight_kind_e == _kernels.WEIGHT_RETURN
    minus_g_et, minus_r_e = _running_factors(tables)
    # G_t and R, at the mean rewards and per unit noise u_j, as the running sums add them (lanes: t)
    running_kjcl = np.zeros((n_paths, 1 + steps, 2, quad))
    running_kjcl[..., :steps] = running_kxct[:, :, :2]
    alive_kl = np.zeros((n_paths, quad))
    alive_kl[:, :steps] = running_kxct[:, 0, 2]
    return _RunningMoments(
        steps_witness=(0,) * steps,
        blocks_witness=(0,) * blocks,
        gamma_t=tables.mdp.gamma ** np.arange(steps),
        decay_bl=in_blocks(paths.decay_e),
        weight_btl=in_blocks(np.where(is_return_e[:, None], 0.0, tables.scale_et)),
        return_bl=in_blocks(is_return_e.astype(float)),
        minus_g_btl=in_blocks(minus_g_et),
        minus_r_bl=in_blocks(minus_r_e),
        cross2_kbtl=np.ascontiguousarray(in_blocks(2.0 * cross_ekt).transpose(1, 0, 2, 3)),
        running_kjl=running_kjcl,
        alive_kl=alive_kl,
        mean_row_kt=mean_row_kt,
        square_ke=np.ascontiguousarray(square_ek.T),
        readout_xf=readout_xf,
    )


def _visits_each_logit_once(param_tka: np.ndarray, alive_tk: np.ndarray) -> bool:
    """Whether no path visits one parameter twice ((T, K, A) flat indices, (T, K) alive flags)."""
    steps, n_paths, n_actions = param_tka.shape
    unique_dead = -1 - np.arange(steps * n_actions).reshape(steps, 1, n_actions)  # never equal
    visited_kx = np.where(alive_tk[..., None], param_tka, unique_dead).transpose(1, 0, 2).reshape(n_paths, -1)
    visited_kx = np.sort(visited_kx, axis=1)
    return not (visited_kx[:, 1:] == visited_kx[:, :-1]).any()


def _path_slots(tables: _Tables) -> int:
    """32-bit uniforms per path-sampled episode: its path, then one per step for uniform noise."""
    return 1 + (tables.steps if tables.mdp.reward_noise == "uniform" else 0)


def _path_uniforms(bits: np.random.PCG64, episodes: int, slots: int) -> np.ndarray:
    """(episodes, slots) 32-bit uniforms from whole raw words (an odd count leaves the last word's
    high half unused), so the numbers do not depend on how the episodes are split into draws."""
    words = bits.random_raw((episodes * slots + 1) // 2)
    return words.view(np.uint32)[: episodes * slots].reshape(episodes, slots)


def _simulate_paths(
    tables: _Tables, paths: _Paths, seed: np.random.SeedSequence, n_episodes: int, batch_size: int,
    stats: BatchStats,
) -> None:  # fmt: skip
    """Sample ``n_episodes`` episodes a path at a time (see :class:`_Paths`) into ``stats``."""
    path_stats_bkw = _path_sums(tables, paths, seed, n_episodes, batch_size, stats.batches)
    _kernels.paths_to_stats(
        path_stats_bkw, paths.cell_kt, paths.length_k, paths.scale_kt, paths.mean_g_kt, tables.mdp.gamma,
        paths.mean_adv_gkt, tables.gae_rho_g, stats.stats_btsak,
    )  # fmt: skip


def _path_sums(
    tables: _Tables, paths: _Paths, seed: np.random.SeedSequence, n_episodes: int, batch_size: int,
    batches: int,
) -> np.ndarray:  # fmt: skip
    """Sample ``n_episodes`` episodes a path at a time: per (batch, path), the count and the unit noise
    summed per step, (B, K, 1 + T) (no noise columns without reward noise)."""
    mdp = tables.mdp
    bits = np.random.PCG64(seed)  # the Gaussian sums, if any, come from a child stream
    slots = _path_slots(tables)
    path_stats_bkw = np.zeros((batches, paths.length_k.size, slots))
    chunk = max(2, 2 * _WORDS // slots // 2 * 2)  # episodes per draw, even: no half word is skipped
    for first in range(0, n_episodes, chunk):
        uniforms = _path_uniforms(bits, min(chunk, n_episodes - first), slots)
        _kernels.sample_paths(uniforms, paths.threshold_k, paths.alias_k, path_stats_bkw, first, batch_size)
    if mdp.reward_noise == "gaussian":
        # the sum of n standard normals is sqrt(n) times one: one draw per (batch, path, step) visited
        counts_bk1 = path_stats_bkw
        path_stats_bkw = np.zeros((*counts_bk1.shape[:2], 1 + tables.steps))
        path_stats_bkw[..., :1] = counts_bk1
        batch_i, path_i = np.nonzero(counts_bk1[..., 0])
        normals = np.random.default_rng(seed.spawn(1)[0]).standard_normal((batch_i.size, tables.steps))
        path_stats_bkw[batch_i, path_i, 1:] = np.sqrt(counts_bk1[batch_i, path_i]) * normals
    return path_stats_bkw


def _path_numbers(
    tables: _Tables, seed: np.random.SeedSequence, n_episodes: int
) -> tuple[np.ndarray, np.ndarray]:
    """The random numbers of ``n_episodes`` path-sampled episodes, as :func:`_simulate_paths` draws
    them: (episodes, slots) 32-bit uniforms (the path, then the uniform noise per step) and
    (episodes, T) Gaussian noise (empty unless the noise is Gaussian)."""
    uniforms = _path_uniforms(np.random.PCG64(seed), n_episodes, _path_slots(tables))
    normals = np.zeros((0, tables.steps))
    if tables.mdp.reward_noise == "gaussian":
        normals = np.random.default_rng(seed.spawn(1)[0]).standard_normal((n_episodes, tables.steps))
    return uniforms, normals


def _episode_gradients(
    tables: _Tables,
    paths: _Paths,
    uniforms: np.ndarray,
    normals: np.ndarray,
    n: int,
    running: RunningBaselines,
    first_batch: int,
    sums: _Sums,
    count_ts: np.ndarray,
    sum_g_ts: np.ndarray,
) -> None:
    """Add into ``sums`` the batch-mean gradients of batches ``first_batch`` .. (episodes / n more),
    read out episode by episode from the random numbers of :func:`_path_numbers`; otherwise the
    contract of :func:`batch_gradients`."""
    _kernels.paths_readout(
        uniforms, normals, paths.threshold_k, paths.alias_k, paths.length_k, paths.state_kt, paths.scale_kt,
        paths.mean_g_kt, tables.mdp.gamma, paths.param_kta, paths.score_kta, paths.at_mean_ekta,
        paths.decay_e, tables.scale_et, tables.weight_kind_e, tables.running_e,
        running.sum_g_t, running.sum_r_t, running.count_t, n, first_batch, sums.per_reading, sums.sum_red,
        sums.sumsq_re, count_ts, sum_g_ts, paths.distinct_params,
    )  # fmt: skip


def _episode_readings(
    tables: _Tables,
    paths: _Paths,
    uniforms: np.ndarray,
    normals: np.ndarray,
    running: RunningBaselines,
    first_batch: int,
    sums: _Sums,
) -> None:
    """As :func:`_episode_gradients` with N = 1, through sums per cell (``_kernels.paths_readings``);
    ``count_ts`` and ``sum_g_ts`` are not kept."""
    _kernels.paths_readings(
        uniforms, normals, paths.threshold_k, paths.alias_k, paths.length_k, paths.cell_kt, paths.scale_kt,
        paths.mean_g_kt, tables.mdp.gamma, paths.score_sq_kt, paths.lane_tables, len(tables.specs),
        tables.probs_tsa, tables.direct_tsa, tables.index_tsa, tables.offsets_etsa, running.sum_g_t,
        running.sum_r_t, running.count_t, first_batch, sums.per_reading, sums.sum_red, sums.sumsq_re,
    )  # fmt: skip


def _episode_moments(
    tables: _Tables,
    paths: _Paths,
    moments: _Moments | _RunningMoments,
    uniforms: np.ndarray,
    normals: np.ndarray,
    running: RunningBaselines,
    first_batch: int,
    sums: _Sums,
) -> None:
    """As :func:`_episode_readings`, through each path's moments per reading (:class:`_Moments`,
    :class:`_RunningMoments`), a chunk of readings at a time."""
    per_reading = sums.per_reading
    n_estimators, n_params = len(tables.specs), tables.n_params
    noise_it = normals if normals.shape[0] else uniforms[:, 1:]
    per_chunk = max(1, _MOMENT_CHUNK // moments.readout_xf.shape[0])  # readings
    start = 0
    while start < uniforms.shape[0]:
        reading = (first_batch + start) // per_reading
        stop = min(uniforms.shape[0], (reading + per_chunk) * per_reading - first_batch)
        readings = -(-(first_batch + stop) // per_reading) - reading
        sums_rx, squares_re = moments.sums(
            paths, uniforms[start:stop], noise_it[start:stop], first_batch + start, per_reading, readings,
            running,
        )  # fmt: skip
        chunk = slice(reading, reading + readings)
        sums.sum_red[chunk] += (sums_rx @ moments.readout_xf).reshape(readings, n_estimators, n_params)
        sums.sumsq_re[chunk] += squares_re
        start = stop


_WORDS = 1 << 18  # raw words drawn at a time (2 MB): refills stay rare, memory small


def _simulate(
    tables: _Tables, seed: np.random.SeedSequence, n_episodes: int, batch_size: int, stats: BatchStats
) -> None:
    """Run the kernel over ``n_episodes`` episodes of one random stream, refilling its buffers.

    The kernel returns when an episode would run past the end of a buffer, pointing at that episode's
    first random number; the episode is then replayed from the same numbers after the refill."""
    mdp = tables.mdp
    word_seed, normal_seed = seed.spawn(2)
    bits = np.random.PCG64(word_seed)
    gaussian = mdp.reward_noise == "gaussian"
    normal_rng = np.random.default_rng(normal_seed) if gaussian else None
    noise_kind = {"none": 0, "uniform": 1, "gaussian": 2}[mdp.reward_noise]
    # the first draw: exactly what episodes of length min(H, 64) use (the kernel asks for more if needed)
    typical = min(tables.max_steps, 64)
    per_episode = (0 if tables.initial_fixed >= 0 else 1) + tables.step_words * typical
    words = bits.random_raw(min(_WORDS, per_episode * n_episodes + 1))
    normals = normal_rng.standard_normal(min(_WORDS, typical * n_episodes)) if gaussian else np.zeros(0)
    word_pos = normal_pos = 0
    cells_t, states_t, next_t = (np.empty(tables.max_steps, dtype=np.int64) for _ in range(3))
    rewards_t = np.empty(tables.max_steps)
    episode = 0
    while True:
        episode, word_pos, normal_pos, cut = _kernels.simulate(
            words, word_pos, normals, normal_pos,
            tables.initial_cdf, tables.initial_fixed, tables.trans_cdf, tables.trans_fixed, tables.reward_sas,
            noise_kind, tables.noise_scale_sa, mdp.terminal_s, mdp.gamma, tables.max_steps,
            tables.probs_cdf_psa, tables.entropy_bonus_ps, tables.gae_rho_g, tables.gae_values_gts,
            episode, n_episodes, batch_size, tables.step_words,
            stats.stats_btsak, cells_t, states_t, rewards_t, next_t,
        )  # fmt: skip
        stats.truncated += cut
        if episode >= n_episodes:
            return
        more = min(_WORDS, per_episode * (n_episodes - episode) + 1)
        words = np.concatenate([words[word_pos:], bits.random_raw(more)])
        word_pos = 0
        if gaussian:
            normals = np.concatenate([normals[normal_pos:], normal_rng.standard_normal(_WORDS)])
            normal_pos = 0


def batch_gradients(
    tables: _Tables,
    stats: BatchStats,
    n: int,
    running: RunningBaselines,
    count_ts: np.ndarray,
    sum_g_ts: np.ndarray,
) -> np.ndarray:
    """(E, B, D) batch-mean gradients from sufficient statistics; running baselines of batch b use
    ``running`` plus batches before b only. Updates ``running`` with all B batches and adds the visits
    and summed reward-to-go per (step, state) into ``count_ts`` and ``sum_g_ts``.

    With score e_a - pi(.|s), a batch's estimate is, summed over steps t and states s, in the component
    of action a': W(t,s,a') - pi(a'|s) W(t,s,.) - b(t,s,a') (n(t,s,a') - pi(a'|s) n(t,s)), where W
    sums the weights and n counts the visits; plus the entropy bonus's direct term per visit."""
    grads = np.zeros((len(tables.specs), stats.batches, tables.n_params))
    _kernels.readout(
        stats.stats_btsak,
        tables.probs_tsa,
        tables.direct_tsa,
        tables.index_tsa,
        tables.weight_kind_e,
        tables.gae_e,
        tables.running_e,
        tables.scale_et,
        tables.offsets_etsa,
        running.sum_g_t,
        running.sum_r_t,
        running.count_t,
        n,
        grads,
        count_ts,
        sum_g_ts,
    )
    return grads


class Sampler:
    """A plan for Monte-Carlo measurement of ``specs`` on one MDP and policy: the policy, transition
    and baseline tables are computed once, so repeated readings (the explorer, a sweep over N) pay only
    for the episodes.

    ``method``: ``paths`` draws each episode's whole path at once from its exact probability (finite
    horizon, at most ``MAX_SAMPLED_PATHS`` paths), ``steps`` walks the MDP step by step, ``auto``
    (default) takes paths where it can. Both sample the same distribution; the random numbers, and so
    the figures for one seed, differ between them."""

    def __init__(
        self,
        mdp: TabularMDP,
        theta: np.ndarray,
        specs: Sequence[EstimatorSpec],
        *,
        chain: Chain | None = None,
        learned_ts: np.ndarray | None = None,
        method: str = "auto",
    ) -> None:
        if method not in ("auto", "paths", "steps"):
            raise SpecError(f"method: unknown {method!r}; use auto, paths or steps")
        self.specs = list(specs)
        if not self.specs:
            raise SpecError("estimators: give at least one")
        betas = {spec.entropy for spec in self.specs}
        if len(betas) != 1:
            raise SpecError("entropy: all estimators measured together must share one entropy coefficient")
        beta = betas.pop()
        chain = chain if chain is not None and chain.beta == beta else None
        self.mdp, self.theta = mdp, theta
        self.tables = _tables(mdp, theta, self.specs, beta, chain, learned_ts)
        self.paths = _paths(self.tables) if method != "steps" else None
        if method == "paths" and self.paths is None:
            raise SpecError(
                f"method: paths needs a finite horizon and at most {MAX_SAMPLED_PATHS} paths; use steps"
            )
        self.method = "paths" if self.paths is not None else "steps"

    @cached_property
    def _moments(self) -> _Moments | _RunningMoments | None:
        """The path-moments read-out's tables, made when a read-out through path sums first needs them."""
        return _moments(self.tables, self.paths) if self.paths is not None else None

    def _simulate(
        self, seed: np.random.SeedSequence, n_episodes: int, batch_size: int, stats: BatchStats
    ) -> None:
        if self.paths is not None:
            _simulate_paths(self.tables, self.paths, seed, n_episodes, batch_size, stats)
        else:
            _simulate(self.tables, seed, n_episodes, batch_size, stats)

    def sample(
        self,
        n: int,
        batches: int = DEFAULT_BATCHES,
        seed: int | np.random.SeedSequence = 0,
        *,
        warmup: int | None = None,
        running: RunningBaselines | None = None,
        workers: int = 1,
        progress: Callable[[int], None] | None = None,
    ) -> Sample:
        """Simulate ``warmup + batches * n`` episodes; see :func:`sample_batch_means`."""
        _check_counts(n, batches, least_batches=1)
        sums, truncated, running, count_ts, sum_g_ts = self._run(
            n, batches, 1, seed, warmup, running, workers, progress
        )
        return Sample(self.specs, n, sums.sum_red.transpose(1, 0, 2), truncated, running, count_ts, sum_g_ts)

    def readings(
        self,
        n: int,
        batches: int = DEFAULT_BATCHES,
        count: int = 1,
        seed: int | np.random.SeedSequence = 0,
        *,
        warmup: int | None = None,
        running: RunningBaselines | None = None,
        workers: int = 1,
        progress: Callable[[int], None] | None = None,
    ) -> Readings:
        """``count`` independent readings of the KPI, each from ``batches`` batches of ``n`` episodes:
        the trace of the covariance of the batch means per reading and estimator, computed as the
        episodes are drawn, without keeping the batch means. Reading r is exactly what
        :func:`variance_trace` gives on batches ``r * batches`` .. ``(r + 1) * batches - 1`` of
        ``sample(n, batches * count, seed)`` (up to rounding): the same episodes, running baselines
        carried from reading to reading."""
        _check_counts(n, batches, count=count)
        sums, truncated, running, _, _ = self._run(
            n, batches * count, batches, seed, warmup, running, workers, progress
        )
        return Readings(self.specs, n, batches, sums.variance_trace_re(), truncated, running)

    def _run(
        self,
        n: int,
        batches: int,
        per_reading: int,
        seed: int | np.random.SeedSequence,
        warmup: int | None,
        running: RunningBaselines | None,
        workers: int,
        progress: Callable[[int], None] | None,
    ) -> tuple[_Sums, int, RunningBaselines, np.ndarray, np.ndarray]:
        """Simulate ``warmup + batches * n`` episodes into per-reading sums of the batch means."""
        tables, mdp = self.tables, self.mdp
        if warmup is None:
            warmup = DEFAULT_WARMUP if any(spec.running for spec in self.specs) and running is None else 0
        running = running if running is not None else RunningBaselines.empty(tables.steps)
        running.fit(tables.steps)
        root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        shape = (tables.steps, mdp.n_states, mdp.n_actions)
        n_gae = tables.gae_rho_g.size

        def stream(key: int) -> np.random.SeedSequence:
            return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, key))

        truncated = 0
        if warmup > 0:
            stats = BatchStats.zeros(1, *shape, n_gae)
            self._simulate(stream(_WARMUP_STREAM), warmup, warmup, stats)
            truncated += stats.truncated
            running.sum_g_t += stats.per_step(_kernels.SUM_G)
            running.sum_r_t += stats.per_step(_kernels.SUM_R)
            running.count_t += stats.per_step(_kernels.COUNT)
            if progress is not None:
                progress(warmup)
        by_episode = self.paths is not None and n <= EPISODE_READOUT_MAX_N
        # a block is one random stream; its per-cell statistics, where kept, are bounded in size
        per_block = -(-STREAM_EPISODES // n)
        if not by_episode:
            per_block = max(1, min(per_block, BLOCK_CELLS // math.prod(shape)))
        starts = list(range(0, batches, per_block))
        # one-episode batches in readings of at least as many batches as there are states: sums per
        # cell, read out once a reading (as cheap as reading out its episodes one by one, or cheaper)
        by_cell_sums = by_episode and n == 1 and self.paths.distinct_params and per_reading >= mdp.n_states
        # better still, for short horizons: sums per path (``_Moments``, ``_RunningMoments``); also for
        # larger batches without running baselines (each path's count and noise sums per batch, read
        # out by one dense product: fewer steps than the per-cell statistics)
        one_episode_readings = by_episode and n == 1 and per_reading > 1
        wanted = self.paths is not None and (one_episode_readings or not by_episode)
        moments = self._moments if wanted else None
        by_moments = (
            one_episode_readings
            and moments is not None
            and moments.readout_xf.size <= moments.readout_budget * per_reading
        )
        by_path_sums = not by_episode and isinstance(moments, _Moments)  # (running means: per cell)

        def rows(index: int) -> slice:
            return slice(starts[index], min(starts[index] + per_block, batches))

        def run_block(index: int) -> BatchStats | np.ndarray | tuple[np.ndarray, np.ndarray]:
            size = rows(index).stop - starts[index]
            if by_episode:  # only the random numbers here: the read-out simulates as it goes
                return _path_numbers(tables, stream(index), size * n)
            if by_path_sums:
                return _path_sums(tables, self.paths, stream(index), size * n, n, size)
            stats = BatchStats.zeros(size, *shape, n_gae)
            self._simulate(stream(index), size * n, n, stats)
            return stats

        sums = _Sums.zeros(batches // per_reading, len(self.specs), tables.n_params, per_reading)
        count_ts = np.zeros(shape[:2])
        sum_g_ts = np.zeros(shape[:2])

        def read(index: int, block: BatchStats | np.ndarray | tuple[np.ndarray, np.ndarray]) -> None:
            nonlocal truncated
            block_rows = rows(index)
            if by_path_sums:
                sums.add(block_rows.start, moments.batch_means(block, n, running, count_ts, sum_g_ts))
            elif by_moments:
                _episode_moments(tables, self.paths, moments, *block, running, block_rows.start, sums)
            elif by_cell_sums:
                _episode_readings(tables, self.paths, *block, running, block_rows.start, sums)
            elif by_episode:
                _episode_gradients(
                    tables, self.paths, *block, n, running, block_rows.start, sums, count_ts, sum_g_ts
                )
            else:
                truncated += block.truncated
                grads_ebd = batch_gradients(tables, block, n, running, count_ts, sum_g_ts)
                sums.add(block_rows.start, grads_ebd.transpose(1, 0, 2))
            if progress is not None:
                progress((block_rows.stop - block_rows.start) * n)

        if workers <= 1 or len(starts) == 1:
            for index in range(len(starts)):
                read(index, run_block(index))
        else:
            # a sliding window of 2 blocks per thread: threads never wait for the read-out, and at most
            # that many blocks of statistics are held at once
            with ThreadPoolExecutor(max_workers=workers) as pool:
                pending: deque = deque()
                for index in range(len(starts)):
                    pending.append(pool.submit(run_block, index))
                    if len(pending) == 2 * workers:
                        read(index - len(pending) + 1, pending.popleft().result())
                while pending:
                    read(len(starts) - len(pending), pending.popleft().result())
        return sums, truncated, running, count_ts, sum_g_ts


def sample_batch_means(
    mdp: TabularMDP,
    theta: np.ndarray,
    specs: Sequence[EstimatorSpec],
    n: int,
    batches: int = DEFAULT_BATCHES,
    seed: int | np.random.SeedSequence = 0,
    *,
    warmup: int | None = None,
    running: RunningBaselines | None = None,
    chain: Chain | None = None,
    workers: int = 1,
    learned_ts: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    method: str = "auto",
) -> Sample:
    """Simulate ``warmup + batches * n`` episodes and return every estimator's batch means.

    Running baselines (``lesson``, ``running``) see only episodes of earlier batches or of the warm-up
    (default: 1000 episodes when a running baseline is asked for and ``running`` is not given); pass
    ``running`` to carry them across calls. GAE's value function is fixed: exact V, the exact limit
    of the running mean, zero, or ``learned_ts`` (the (T, S) table of a ``learned`` baseline).
    ``Sample.count_ts`` and ``Sample.sum_g_ts`` total the visits and returns per (step, state), so a
    caller can fit a learned baseline from them. Episodes are split into blocks of whole batches, each
    with its own random stream, so ``workers`` threads give the same numbers as one. For repeated
    readings build a :class:`Sampler` once; ``method`` is the Sampler's.
    """
    sampler = Sampler(mdp, theta, specs, chain=chain, learned_ts=learned_ts, method=method)
    return sampler.sample(
        n, batches, seed, warmup=warmup, running=running, workers=workers, progress=progress
    )


def estimate_gradient(
    mdp: TabularMDP,
    theta: np.ndarray,
    spec: EstimatorSpec,
    n: int,
    seed: int | np.random.SeedSequence = 0,
    *,
    running: RunningBaselines | None = None,
    learned_ts: np.ndarray | None = None,
) -> np.ndarray:
    """One batch-mean gradient estimate from ``n`` fresh episodes, shaped like theta (what one step
    of stochastic gradient ascent uses). Pass ``running`` to keep running baselines across steps and
    ``learned_ts`` for a ``learned`` baseline."""
    sample = sample_batch_means(mdp, theta, [spec], n, 1, seed, running=running, learned_ts=learned_ts)
    return sample.batch_means_emd[0, 0].reshape(theta.shape)


# -- the KPI -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VarianceReading:
    """One estimator at one batch size N.

    Attributes:
      variance_trace: trace of the covariance of the batch-mean gradient across batches.
      ci95: 95% confidence interval of that trace (normal approximation on the per-batch squared
        deviations, so heavy tails at small N widen it).
      exact_variance_trace: the exact single-episode trace divided by N, where computed.
      vs_vanilla / vs_vanilla_n1: ratio to vanilla at the same N / to vanilla at N = 1.
      snr: |grad J|^2 / variance_trace (exact grad J where known, else the sample mean).
      cosine_to_exact: mean over batches of cos(batch estimate, grad J).
    """

    spec: EstimatorSpec
    n: int
    batches: int
    variance_trace: float
    ci95: tuple[float, float]
    mean: np.ndarray
    exact_variance_trace: float | None = None
    vs_vanilla: float | None = None
    vs_vanilla_n1: float | None = None
    snr: float | None = None
    cosine_to_exact: float | None = None
    truncated_episodes: int = 0


def variance_trace(batch_means_md: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Trace of the sample covariance of (M, D) batch means, and its 95% confidence interval."""
    n_batches = batch_means_md.shape[0]
    deviations_sq = (
        ((batch_means_md - batch_means_md.mean(axis=0)) ** 2).sum(axis=1) * n_batches / (n_batches - 1)
    )
    estimate = float(deviations_sq.mean())
    half = 1.959963984540054 * float(deviations_sq.std(ddof=1)) / np.sqrt(n_batches)
    return estimate, (max(estimate - half, 0.0), estimate + half)


def read_sample(
    sample: Sample, grad: np.ndarray | None, exact_traces: dict[str, float] | None = None
) -> list[VarianceReading]:
    """Turn a :class:`Sample` into one :class:`VarianceReading` per estimator."""
    readings = []
    for spec, means_md in zip(sample.specs, sample.batch_means_emd, strict=True):
        trace, ci = variance_trace(means_md)
        mean = means_md.mean(axis=0)
        signal = grad if grad is not None else mean
        snr = float(signal @ signal / trace) if trace > 0 else float("inf")
        cosine = None
        if grad is not None and np.linalg.norm(grad) > 0:
            norms = np.linalg.norm(means_md, axis=1) * np.linalg.norm(grad)
            cosine = float(
                np.mean(np.divide(means_md @ grad, norms, out=np.zeros(len(norms)), where=norms > 0))
            )
        exact = (
            None
            if exact_traces is None or spec.canonical not in exact_traces
            else exact_traces[spec.canonical] / sample.n
        )
        readings.append(
            VarianceReading(
                spec,
                sample.n,
                means_md.shape[0],
                trace,
                ci,
                mean,
                exact,
                snr=snr,
                cosine_to_exact=cosine,
                truncated_episodes=sample.truncated_episodes,
            )
        )
    return readings


@dataclass(frozen=True)
class Study:
    """Readings for several estimators and batch sizes, with the ratios and the 1/N slopes."""

    mdp: TabularMDP
    batches: int
    seed: int
    readings: list[VarianceReading]
    grad: np.ndarray | None
    slopes: dict[str, float]
    sampled_paths: int | None = None  # episodes drawn as whole paths, out of this many; None: step by step


def _with_vanilla(
    specs: Sequence[EstimatorSpec],
) -> tuple[list[EstimatorSpec], list[EstimatorSpec], EstimatorSpec]:
    """(specs, the estimators to measure: specs and vanilla unless it is among them, vanilla), for
    the ratios to vanilla the lesson shows; vanilla gets the estimators' entropy coefficient."""
    specs = list(specs)
    if not specs:
        raise SpecError("estimators: give at least one")
    vanilla = EstimatorSpec("return", "none", entropy=specs[0].entropy, label="vanilla")
    measured = specs if any(s.canonical == vanilla.canonical for s in specs) else [*specs, vanilla]
    return specs, measured, vanilla


def variance_study(
    mdp: TabularMDP,
    theta: np.ndarray,
    specs: Sequence[EstimatorSpec],
    ns: Sequence[int] = (1,),
    batches: int = DEFAULT_BATCHES,
    seed: int = 0,
    *,
    exact: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Study:
    """Measure every estimator at every N; add the exact values, ratios to vanilla and 1/N slopes.

    Vanilla (return+none) is measured alongside when it is not asked for, at N = 1 too, so that both
    ratios the lesson shows are available.
    """
    specs, measured, vanilla = _with_vanilla(specs)
    for n in ns:
        _check_counts(n, batches)
    beta = vanilla.entropy
    chain = unroll(mdp, theta, beta) if exact else None
    grad = _gradient(chain) if exact else None
    exact_traces = None
    if exact:
        exact_traces = {
            s.canonical: exact_moments(mdp, theta, s, chain=chain).variance_trace for s in measured
        }
    all_ns = sorted(set(ns) | {1})
    children = np.random.SeedSequence(seed).spawn(len(all_ns))
    by_n: dict[int, list[VarianceReading]] = {}
    everything = Sampler(mdp, theta, measured, chain=chain)
    vanilla_only = None  # for the N = 1 reference when N = 1 was not asked for
    for n, child in zip(all_ns, children, strict=True):
        if n in ns:
            sampler = everything
        else:
            vanilla_only = vanilla_only or Sampler(mdp, theta, [vanilla], chain=chain)
            sampler = vanilla_only
        by_n[n] = read_sample(sampler.sample(n, batches, child, progress=progress), grad, exact_traces)
    vanilla_at = {
        n: next(r for r in rs if r.spec.canonical == vanilla.canonical).variance_trace
        for n, rs in by_n.items()
    }
    wanted = {spec.canonical for spec in specs}
    readings = [
        _with_ratios(reading, vanilla_at[n], vanilla_at[1])
        for n in ns
        for reading in by_n[n]
        if reading.spec.canonical in wanted
    ]
    slopes = {}
    if len(set(ns)) >= 2:
        for spec in specs:
            points = [
                (np.log(r.n), np.log(r.variance_trace))
                for r in readings
                if r.spec.canonical == spec.canonical and r.variance_trace > 0
            ]
            if len(points) >= 2:
                x, y = np.array(points).T
                slopes[spec.name] = float(np.polyfit(x, y, 1)[0])
    paths = None if everything.paths is None else everything.paths.length_k.size
    return Study(mdp, batches, seed, readings, grad, slopes, paths)


@dataclass(frozen=True)
class ReadingSpread:
    """How much one reading of the KPI moves: ``count`` independent readings of one estimator.

    Attributes:
      exact: the exact single-episode variance trace / N, what a reading estimates.
      mean, relative_std: the readings' mean and the standard deviation of one reading / that mean.
      low, high: the 5% and 95% quantiles of the readings.
      agrees_with_exact: fraction of readings in which this estimator and vanilla, measured on the same
        episodes, are ordered as their exact variances are (None for vanilla itself).
    """

    spec: EstimatorSpec
    exact: float
    mean: float
    relative_std: float
    low: float
    high: float
    agrees_with_exact: float | None


def reading_spread(
    mdp: TabularMDP,
    theta: np.ndarray,
    specs: Sequence[EstimatorSpec],
    n: int = 1,
    batches: int = DEFAULT_BATCHES,
    count: int = 1000,
    seed: int = 0,
) -> list[ReadingSpread]:
    """Take ``count`` readings of every estimator (and vanilla, for the ordering) in one call and say
    how far one reading strays: the question behind the lesson's bar, which jumps from tick to tick."""
    specs, measured, vanilla = _with_vanilla(specs)
    _check_counts(n, batches, count=count)
    chain = unroll(mdp, theta, vanilla.entropy)
    exact_e = np.array([exact_moments(mdp, theta, s, chain=chain).variance_trace / n for s in measured])
    traces_re = Sampler(mdp, theta, measured, chain=chain).readings(n, batches, count, seed).variance_trace_re
    v = next(e for e, s in enumerate(measured) if s.canonical == vanilla.canonical)
    spreads = []
    for e, spec in enumerate(specs):
        traces_r = traces_re[:, e]
        mean = float(traces_r.mean())
        agrees = None
        if e != v:
            agrees = float(np.mean(np.sign(traces_r - traces_re[:, v]) == np.sign(exact_e[e] - exact_e[v])))
        low, high = np.quantile(traces_r, [0.05, 0.95])
        std = float(traces_r.std(ddof=1)) if count > 1 else 0.0
        relative = std / mean if mean > 0 else float("nan")
        spreads.append(
            ReadingSpread(spec, float(exact_e[e]), mean, relative, float(low), float(high), agrees)
        )
    return spreads


def _with_ratios(reading: VarianceReading, vanilla_same_n: float, vanilla_n1: float) -> VarianceReading:
    return replace(
        reading,
        vs_vanilla=reading.variance_trace / vanilla_same_n if vanilla_same_n > 0 else None,
        vs_vanilla_n1=reading.variance_trace / vanilla_n1 if vanilla_n1 > 0 else None,
    )
