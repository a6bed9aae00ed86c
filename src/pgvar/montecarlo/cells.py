"""The ``cells`` read-out, the general one: every batch's estimate from per-cell sufficient statistics.

With a tabular softmax policy the score of a step depends only on (t, s, a), so a batch's estimate is
linear in per-(batch, step, state, action) sums: the visit count n and the sums of G_t, of R and of
each GAE advantage (``path_source.CHANNELS``), which either source fills (``cell_stats``). In the
component of action a' at (t, s) a batch's summed estimate is

    W(t, s, a') - pi(a'|s) W(t, s, .) - b(t, s, a') (n(t, s, a') - pi(a'|s) n(t, s)) + n(t, s) e(t, s, a')

where W sums the estimator's weights (R, c_t G_t or c_t A_t), b is its baseline and e the entropy
bonus's direct term: the reference ``estimators.visit_terms`` summed over the visits. Running
baselines of batch m use the sums of the batches before m only.
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
from numba import njit

from pgvar.baselines import MEAN_G_T, MEAN_G_TS, MEAN_R_T, RunningBaselines
from pgvar.montecarlo.path_source import COUNT, SUM_ADV, SUM_G, SUM_R
from pgvar.montecarlo.plan import WEIGHT_RETURN, WEIGHT_RTG, Plan
from pgvar.montecarlo.readout import STREAM_EPISODES, ReadingSums, Request

BLOCK_CELLS = 1 << 16  # bound on batches x steps x states x actions held at once (stays in cache)


class CellTables(NamedTuple):
    """The plan's tables the read-out kernel reads (see :class:`~pgvar.montecarlo.plan.Plan`)."""

    probs_tsa: np.ndarray
    direct_tsa: np.ndarray
    index_tsa: np.ndarray
    weight_e: np.ndarray
    mean_e: np.ndarray
    gae_e: np.ndarray
    scale_et: np.ndarray
    offsets_etsa: np.ndarray


class RunningSums(NamedTuple):
    """The arrays of a :class:`~pgvar.baselines.RunningBaselines`, updated in place."""

    sum_g_t: np.ndarray
    sum_r_t: np.ndarray
    count_t: np.ndarray
    sum_g_ts: np.ndarray
    count_ts: np.ndarray


@njit(cache=True, nogil=True)
def batch_means(stats_mtsac, tables, running, n, means_med):
    """Every estimator's batch-mean gradient from the per-cell statistics, into ``means_med``
    (B, E, D); the running means of batch b use ``running`` as it was before b, and ``running`` takes
    in every batch."""
    n_batches, n_steps, n_states, n_actions, _ = stats_mtsac.shape
    n_estimators = tables.weight_e.shape[0]
    weights_a = np.zeros(n_actions)
    batch_g_t = np.zeros(n_steps)
    batch_r_t = np.zeros(n_steps)
    batch_n_t = np.zeros(n_steps)
    inv_n = 1.0 / n
    for b in range(n_batches):
        batch_g_t[:] = 0.0
        batch_r_t[:] = 0.0
        batch_n_t[:] = 0.0
        for t in range(n_steps):
            inverse = 1.0 / running.count_t[t] if running.count_t[t] > 0 else 0.0  # one division, not two
            mean_g = running.sum_g_t[t] * inverse
            mean_r = running.sum_r_t[t] * inverse
            for s in range(n_states):
                visits = 0.0
                sum_g = 0.0
                for a in range(n_actions):
                    visits += stats_mtsac[b, t, s, a, COUNT]
                    sum_g += stats_mtsac[b, t, s, a, SUM_G]
                    batch_r_t[t] += stats_mtsac[b, t, s, a, SUM_R]
                if visits == 0.0:
                    continue
                batch_g_t[t] += sum_g
                batch_n_t[t] += visits
                # the state's own running mean, before this batch joins it
                seen = running.count_ts[t, s]
                mean_gs = running.sum_g_ts[t, s] / seen if seen > 0 else 0.0
                running.count_ts[t, s] += visits
                running.sum_g_ts[t, s] += sum_g
                for e in range(n_estimators):
                    kind = tables.weight_e[e]
                    scale = tables.scale_et[e, t]
                    total = 0.0
                    for a in range(n_actions):
                        if kind == WEIGHT_RETURN:
                            w = stats_mtsac[b, t, s, a, SUM_R]
                        elif kind == WEIGHT_RTG:
                            w = scale * stats_mtsac[b, t, s, a, SUM_G]
                        else:
                            w = scale * stats_mtsac[b, t, s, a, SUM_ADV + tables.gae_e[e]]
                        weights_a[a] = w
                        total += w
                    mean_kind = tables.mean_e[e]
                    for a in range(n_actions):
                        if mean_kind == MEAN_G_T:
                            base = scale * mean_g
                        elif mean_kind == MEAN_R_T:
                            base = scale * mean_r
                        elif mean_kind == MEAN_G_TS:
                            base = scale * mean_gs
                        else:
                            base = tables.offsets_etsa[e, t, s, a]
                        p = tables.probs_tsa[t, s, a]
                        value = (
                            weights_a[a]
                            - p * total
                            - base * (stats_mtsac[b, t, s, a, COUNT] - p * visits)
                            + tables.direct_tsa[t, s, a] * visits
                        )
                        means_med[b, e, tables.index_tsa[t, s, a]] += value * inv_n
        for t in range(n_steps):
            running.sum_g_t[t] += batch_g_t[t]
            running.sum_r_t[t] += batch_r_t[t]
            running.count_t[t] += batch_n_t[t]


def running_sums(running: RunningBaselines) -> RunningSums:
    return RunningSums(running.sum_g_t, running.sum_r_t, running.count_t, running.sum_g_ts, running.count_ts)


class Cells:
    """The ``cells`` read-out (see the module docs): serves every request, from either source."""

    name: ClassVar[str] = "cells"

    def __init__(self, plan: Plan, source: Any) -> None:
        self.plan, self.source = plan, source
        self.tables = CellTables(plan.probs_tsa, plan.direct_tsa, plan.index_tsa, plan.weight_e, plan.mean_e,
                                 plan.gae_e, plan.scale_et, plan.offsets_etsa)  # fmt: skip
        mdp = plan.mdp
        self.cell_shape = (plan.steps, mdp.n_states, mdp.n_actions, SUM_ADV + plan.gae_decay_g.size)

    @staticmethod
    def applies(plan: Plan, source: Any, request: Request) -> bool:
        return True

    def block_batches(self, n: int) -> int:
        cells = self.cell_shape[0] * self.cell_shape[1] * self.cell_shape[2]
        return max(1, min(-(-STREAM_EPISODES // n), BLOCK_CELLS // cells))

    def draw(self, seed: np.random.SeedSequence, episodes: int, n: int) -> tuple[np.ndarray, int]:
        stats_mtsac = np.zeros((-(-episodes // n), *self.cell_shape))
        truncated = self.source.cell_stats(seed, episodes, n, stats_mtsac)
        return stats_mtsac, truncated

    def read(
        self,
        drawn: tuple[np.ndarray, int],
        n: int,
        first_batch: int,
        running: RunningBaselines,
        sums: ReadingSums,
    ) -> int:
        stats_mtsac, truncated = drawn
        means_med = np.zeros((stats_mtsac.shape[0], self.plan.n_estimators, self.plan.n_params))
        batch_means(stats_mtsac, self.tables, running_sums(running), n, means_med)
        sums.add(first_batch, means_med)
        return truncated
