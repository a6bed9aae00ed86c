"""The path source: an episode drawn as a whole state-action path from its exact probability.

Where the horizon is finite and the paths few (at most ``MAX_PATHS``, e.g. the lesson's 27, any
bandit), every path and its probability is listed once (``pgvar.paths``). An episode then takes its
path from one 32-bit uniform (Walker's alias method, Vose's construction) and its reward noise from
one more number per step: a 32-bit uniform for uniform noise (u 2^-32 - 1/2, scaled), a standard
normal from a second stream for Gaussian noise. Every episode has the same slots of random numbers,
so a block's numbers do not depend on how it is split into draws, and no Markov chain is walked.

For the per-cell read-out (``cells``), the source sums per batch each path's count and unit noise per
step, and turns those sums into the per-(step, state, action) statistics (every sum there is affine in
the rewards). The ``path-moments`` read-out uses the random numbers directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, NamedTuple

import numpy as np
from numba import njit

from pgvar import budget
from pgvar.montecarlo.plan import Episodes, Plan
from pgvar.paths import count_flow_paths, enumerate_flow_paths
from pgvar.returns import gae, reward_to_go

MAX_PATHS = 4096  # finite-horizon MDPs with at most this many paths are sampled a path at a time
TO_UNIT = 1.0 / 4294967296.0  # 2**-32: a 32-bit integer as a uniform in [0, 1)
CHANNELS = ("count", "sum_g", "sum_r")  # statistics per cell, then one sum per GAE estimator
COUNT, SUM_G, SUM_R, SUM_ADV = 0, 1, 2, 3
_NO_NORMALS = np.zeros((0, 0))
_DRAW_WORDS = 1 << 18  # raw words drawn at a time (2 MB) when a block's path sums are gathered


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


class CellPaths(NamedTuple):
    """The path tables ``path_sums_to_cells`` reads: per path k and step t (zero after the end)."""

    cell_kt: np.ndarray  # flat (step, state, action) cell of the visit
    length_k: np.ndarray
    scale_kt: np.ndarray  # reward-noise scale (uniform width or Gaussian standard deviation)
    mean_g_kt: np.ndarray  # G_t at the mean rewards (entropy bonus included)
    mean_adv_gkt: np.ndarray  # each GAE estimator's advantage at the mean rewards
    gamma: float
    gae_decay_g: np.ndarray


@njit(cache=True, nogil=True)
def add_path_sums(uniforms_bu, normals_bt, threshold_k, alias_k, first, n, sums_mkw):
    """Add episodes ``first`` .. ``first + E - 1`` into per-batch path sums: episode i (batch
    i // n) takes path k from ``uniforms_bu[i, 0]`` (column floor(u K), kept when the
    fraction of u K is below ``threshold_k[column]``, else ``alias_k[column]``) and adds 1 to
    ``sums_mkw[batch, k, 0]`` and its unit noise of step t to ``sums_mkw[batch, k, 1 + t]``: a
    standard normal from ``normals_bt`` where it has rows, else u 2^-32 - 1/2 from the uniform in
    slot 1 + t."""
    n_paths = threshold_k.shape[0]
    width = sums_mkw.shape[2]
    rows_xw = sums_mkw.reshape((sums_mkw.shape[0] * n_paths, width))
    gaussian = normals_bt.shape[0] > 0
    to_column = n_paths * TO_UNIT
    batch, in_batch = first // n, first % n
    for i in range(uniforms_bu.shape[0]):
        x = uniforms_bu[i, 0] * to_column
        column = int(x)
        row = batch * n_paths + (column if x - column < threshold_k[column] else alias_k[column])
        rows_xw[row, 0] += 1.0
        if gaussian:
            for t in range(width - 1):
                rows_xw[row, 1 + t] += normals_bt[i, t]
        else:  # four at a time, the rest unrolled: the CPU then overlaps one episode with the next
            t = 1
            while t + 4 <= width:
                rows_xw[row, t] += uniforms_bu[i, t] * TO_UNIT - 0.5
                rows_xw[row, t + 1] += uniforms_bu[i, t + 1] * TO_UNIT - 0.5
                rows_xw[row, t + 2] += uniforms_bu[i, t + 2] * TO_UNIT - 0.5
                rows_xw[row, t + 3] += uniforms_bu[i, t + 3] * TO_UNIT - 0.5
                t += 4
            left = width - t
            if left == 3:
                rows_xw[row, t] += uniforms_bu[i, t] * TO_UNIT - 0.5
                rows_xw[row, t + 1] += uniforms_bu[i, t + 1] * TO_UNIT - 0.5
                rows_xw[row, t + 2] += uniforms_bu[i, t + 2] * TO_UNIT - 0.5
            elif left == 2:
                rows_xw[row, t] += uniforms_bu[i, t] * TO_UNIT - 0.5
                rows_xw[row, t + 1] += uniforms_bu[i, t + 1] * TO_UNIT - 0.5
            elif left == 1:
                rows_xw[row, t] += uniforms_bu[i, t] * TO_UNIT - 0.5
        in_batch += 1
        if in_batch == n:
            batch += 1
            in_batch = 0


@njit(cache=True, nogil=True)
def path_sums_to_cells(sums_mkw, paths, stats_mtsac):
    """Add per-batch path sums (count, then unit noise per step) into per-cell statistics: the visit
    count and the sums of G_t, of R and of each GAE advantage per (batch, step, state, action).

    Every sum is affine in the rewards: over the n episodes of path k in a batch, the sum of G_t is
    n * (G_t at the mean rewards) + sum_{t' >= t} gamma^(t' - t) scale_t' (noise summed at t'); the
    same with gamma * lambda for a GAE advantage, and R = G_0."""
    n_batches, n_steps, n_states, n_actions, n_channels = stats_mtsac.shape
    cells = n_steps * n_states * n_actions
    stats_xc = stats_mtsac.reshape((n_batches * cells, n_channels))
    noisy = sums_mkw.shape[2] > 1
    noise_g_t = np.zeros(n_steps + 1)
    for b in range(n_batches):
        for k in range(sums_mkw.shape[1]):
            n = sums_mkw[b, k, 0]
            if n == 0.0:
                continue
            length = paths.length_k[k]
            noise_g_t[length] = 0.0
            for t in range(length - 1, -1, -1):
                noise = paths.scale_kt[k, t] * sums_mkw[b, k, 1 + t] if noisy else 0.0
                noise_g_t[t] = noise + paths.gamma * noise_g_t[t + 1]
            total = n * paths.mean_g_kt[k, 0] + noise_g_t[0]
            for t in range(length):
                cell = b * cells + paths.cell_kt[k, t]
                stats_xc[cell, COUNT] += n
                stats_xc[cell, SUM_G] += n * paths.mean_g_kt[k, t] + noise_g_t[t]
                stats_xc[cell, SUM_R] += total
            for g in range(paths.gae_decay_g.shape[0]):
                noise_adv = 0.0
                for t in range(length - 1, -1, -1):
                    if noisy:
                        noise_adv = (
                            paths.scale_kt[k, t] * sums_mkw[b, k, 1 + t] + paths.gae_decay_g[g] * noise_adv
                        )
                    stats_xc[b * cells + paths.cell_kt[k, t], SUM_ADV + g] += (
                        n * paths.mean_adv_gkt[g, k, t] + noise_adv
                    )


class _Flow:
    """pi(a|s) P(s'|s, a) at step t, zero in terminal states, made one step at a time when asked for
    (all T steps at once would be T copies of the transition table)."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan

    def __len__(self) -> int:
        return self.plan.steps

    def __getitem__(self, t: int) -> np.ndarray:
        mdp = self.plan.mdp
        return self.plan.probs_tsa[t][..., None] * mdp.transitions_at(t) * ~mdp.terminal_s[:, None, None]


@dataclass
class PathStream:
    """One block's random stream: PCG64 for the 32-bit uniforms, and a child stream of standard
    normals for Gaussian reward noise (made on first use)."""

    seed: np.random.SeedSequence
    bits: np.random.PCG64
    normals: np.random.Generator | None = None


@dataclass(frozen=True)
class PathSource:
    """The paths of a finite-horizon MDP under the plan's policy, ready to be drawn (see the module
    docs). Arrays ``*_k`` are per path, ``*_kt`` per path and step (zero after the path ended)."""

    name: ClassVar[str] = "paths"
    plan: Plan
    prob_k: np.ndarray
    threshold_k: np.ndarray
    alias_k: np.ndarray
    length_k: np.ndarray
    states_kt: np.ndarray
    actions_kt: np.ndarray
    next_kt: np.ndarray
    alive_kt: np.ndarray
    rewards_kt: np.ndarray  # mean reward of the visit, without the entropy bonus
    bonus_kt: np.ndarray  # the entropy bonus of the visit
    scale_kt: np.ndarray  # reward-noise scale

    @classmethod
    def build(cls, plan: Plan) -> PathSource | None:
        """The source of ``plan``, or None when the horizon is unbounded or the paths too many."""
        mdp = plan.mdp
        if mdp.horizon is None:
            return None
        flow = _Flow(plan)
        budget.check_entries(  # the flow of one step at a time, made once per step to count the paths
            f"mdp {mdp.name!r}: counting its paths",
            float(mdp.n_states) * mdp.n_actions * mdp.n_states,
            passes=2.0 * plan.steps,
        )
        budget.check(
            f"mdp {mdp.name!r}: counting its paths", seconds=4.0 * plan.steps * budget.NUMPY_CALL_SECONDS
        )
        if count_flow_paths(mdp.initial_s, flow, mdp.terminal_s, MAX_PATHS) > MAX_PATHS:
            return None
        prob_k, states_tk, actions_tk, next_tk, alive_tk = enumerate_flow_paths(
            mdp.initial_s, flow, mdp.terminal_s
        )
        threshold_k, alias_k = alias_tables(prob_k)
        policy_tk = plan.policy_step(np.arange(plan.steps))[:, None]

        def per_path(array_tk: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.where(alive_tk, array_tk, 0).T)

        return cls(
            plan=plan,
            prob_k=prob_k,
            threshold_k=threshold_k,
            alias_k=alias_k,
            length_k=alive_tk.sum(axis=0).astype(np.int64),
            states_kt=per_path(states_tk),
            actions_kt=per_path(actions_tk),
            next_kt=per_path(next_tk),
            alive_kt=np.ascontiguousarray(alive_tk.T),
            rewards_kt=per_path(mdp.reward_sas[states_tk, actions_tk, next_tk]),
            bonus_kt=per_path(plan.entropy_bonus_ps[policy_tk, states_tk]),
            scale_kt=per_path(mdp.noise_scale_sa[states_tk, actions_tk]),
        )

    @property
    def n_paths(self) -> int:
        return self.prob_k.size

    @property
    def slots(self) -> int:
        """32-bit uniforms per episode: its path, then one per step for uniform noise."""
        return 1 + (self.plan.steps if self.plan.mdp.reward_noise == "uniform" else 0)

    def stream(self, seed: np.random.SeedSequence) -> PathStream:
        return PathStream(seed, np.random.PCG64(seed))

    def numbers(self, stream: PathStream, episodes: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``episodes`` episodes' random numbers: (E, slots) 32-bit uniforms (the path, then
        the uniform reward noise per step) and (E, T) standard normals for Gaussian noise ((0, 0)
        otherwise). The uniforms come from whole raw words (an odd count leaves the last word's high
        half unused), so drawing in pieces of even size gives the same numbers."""
        slots = self.slots
        words = stream.bits.random_raw((episodes * slots + 1) // 2)
        uniforms_bu = words.view(np.uint32)[: episodes * slots].reshape(episodes, slots)
        if self.plan.mdp.reward_noise != "gaussian":
            return uniforms_bu, _NO_NORMALS
        if stream.normals is None:
            stream.normals = np.random.default_rng(stream.seed.spawn(1)[0])
        return uniforms_bu, stream.normals.standard_normal((episodes, self.plan.steps))

    def paths_of(self, uniforms_bu: np.ndarray) -> np.ndarray:
        """(E,) the path each episode's first uniform picks (as the kernels pick it)."""
        x = uniforms_bu[:, 0] * (self.n_paths * TO_UNIT)
        column = x.astype(np.int64)
        return np.where(x - column < self.threshold_k[column], column, self.alias_k[column])

    def decode(self, uniforms_bu: np.ndarray, normals_bt: np.ndarray) -> Episodes:
        """The episodes these random numbers stand for."""
        k = self.paths_of(uniforms_bu)
        if normals_bt.shape[0]:
            unit_kt = normals_bt
        elif uniforms_bu.shape[1] > 1:
            unit_kt = uniforms_bu[:, 1:] * TO_UNIT - 0.5
        else:
            unit_kt = np.zeros((k.size, self.plan.steps))
        rewards_kt = (self.rewards_kt[k] + self.scale_kt[k] * unit_kt) * self.alive_kt[k]
        return Episodes(self.states_kt[k].T, self.actions_kt[k].T, rewards_kt.T, self.alive_kt[k].T)

    def episodes(self, seed: np.random.SeedSequence, episodes: int) -> Episodes:
        """The first ``episodes`` episodes of the stream ``seed``."""
        return self.decode(*self.numbers(self.stream(seed), episodes))

    @cached_property
    def cell_paths(self) -> CellPaths:
        """The tables of ``path_sums_to_cells``: G_t and each GAE advantage at the mean rewards."""
        plan = self.plan
        alive_tk = self.alive_kt.T
        rewards_tk = (self.rewards_kt + self.bonus_kt).T
        mean_adv_gkt = np.zeros((plan.gae_decay_g.size, self.n_paths, plan.steps))
        steps_t1 = np.arange(plan.steps)[:, None]
        for g, lam in enumerate(plan.gae_lam_g):
            values_tk = np.where(alive_tk, plan.gae_values_gts[g][steps_t1, self.states_kt.T], 0.0)
            mean_adv_gkt[g] = gae(rewards_tk, values_tk, plan.mdp.gamma, lam).T
        cell_kt = (steps_t1.T * plan.mdp.n_states + self.states_kt) * plan.mdp.n_actions + self.actions_kt
        return CellPaths(
            np.ascontiguousarray(np.where(self.alive_kt, cell_kt, 0)),
            self.length_k,
            self.scale_kt,
            np.ascontiguousarray(reward_to_go(rewards_tk, plan.mdp.gamma).T),
            mean_adv_gkt,
            float(plan.mdp.gamma),
            plan.gae_decay_g,
        )

    @cached_property
    def distinct_logits(self) -> bool:
        """Whether no path visits one logit twice (its visits' scores are then orthogonal)."""
        plan = self.plan
        steps_kt = np.broadcast_to(np.arange(plan.steps), self.states_kt.shape)
        params_ktA = plan.index_tsa[steps_kt, self.states_kt]
        dead = -1 - np.arange(params_ktA[0].size).reshape(params_ktA.shape[1:])  # never equal to anything
        visited = np.sort(
            np.where(self.alive_kt[..., None], params_ktA, dead).reshape(self.n_paths, -1), axis=1
        )
        return not (visited[:, 1:] == visited[:, :-1]).any()

    @cached_property
    def visited_cells(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct (step, state, action) cells the paths visit, and each visit's index among them
        (the cell -1, first, stands for the steps after a path ended)."""
        cells, inverse = np.unique(np.where(self.alive_kt, self.cell_paths.cell_kt, -1), return_inverse=True)
        return cells, inverse.reshape(self.alive_kt.shape)

    def cell_stats(self, seed: np.random.SeedSequence, episodes: int, n: int, stats_mtsac: np.ndarray) -> int:
        """Draw ``episodes`` episodes (batches of ``n``) from the stream ``seed`` and add their
        per-cell statistics into ``stats_mtsac``; returns the episodes cut short (none here)."""
        stream = self.stream(seed)
        width = 1 + (self.plan.steps if self.plan.mdp.reward_noise != "none" else 0)
        sums_mkw = np.zeros((stats_mtsac.shape[0], self.n_paths, width))
        chunk = max(2, _DRAW_WORDS // self.slots // 2 * 2)  # episodes per draw, even: no half word skipped
        for first in range(0, episodes, chunk):
            uniforms_bu, normals_bt = self.numbers(stream, min(chunk, episodes - first))
            add_path_sums(uniforms_bu, normals_bt, self.threshold_k, self.alias_k, first, n, sums_mkw)
        path_sums_to_cells(sums_mkw, self.cell_paths, stats_mtsac)
        return 0
