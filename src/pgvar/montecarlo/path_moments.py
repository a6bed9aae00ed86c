"""The ``path-moments`` read-out: many readings of one-episode batches from each path's moments.

It serves ``Sampler.readings`` at N = 1 on the path source, where no path visits one logit twice, the
horizon is at most ``MAX_STEPS`` and no estimator keeps a running mean per state. There every
estimator's episode gradient is linear in the episode's unit reward noise u (T,) and in the running
means it subtracts, visit by visit:

    g = sum_t [ at_mean_t + (N_t u - b_t) score_t ]

with at_mean_t the visit's term at the mean rewards (fixed baselines included), N_t u its weight's
noise and b_t the running baseline, all from the reference (``estimators.weights`` and
``estimators.visit_terms`` on the listed paths). So a reading's summed gradient is one dense product of
a few sums the kernel keeps per reading: each path's count and summed noise, and the running means
summed per visited cell. With distinct logits the visits are orthogonal, so each episode's squared norm
is |at_mean|^2 + sum_t y_t (2 at_mean_t . score_t + y_t |score_t|^2), y_t = N_t u - b_t, which the
kernel adds up as it draws the episode, four estimators to a SIMD vector (``pgvar.lanes``).
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar, NamedTuple

import numpy as np
from numba import njit

from pgvar.baselines import MEAN_G_T, MEAN_G_TS, MEAN_R_T, RunningBaselines
from pgvar.estimators import visit_terms, weights
from pgvar.lanes import LANES, QUAD, fma, lane_of, load, load4, maximum, splat, splat4, store, store4
from pgvar.montecarlo.path_source import TO_UNIT, PathSource
from pgvar.montecarlo.plan import Plan
from pgvar.montecarlo.readout import STREAM_EPISODES, ReadingSums, Request

MAX_STEPS = LANES  # horizons up to this: the running sums of every step fill one SIMD vector
READOUT_PER_EPISODE = 1024  # multiply-adds of the dense read-out per episode, at most
MAX_READOUT = 1 << 20  # entries of the dense read-out map, at most
_CHUNK = 1 << 17  # per-reading sums held at once (1 MB)


class MomentTables(NamedTuple):
    """What the kernel reads. Estimators come in blocks of QUAD lanes (padded with zeros); ``_kbtjl``
    is per path, block, step t, noise step j and lane. The running sums of G_t and of R hold the steps
    as the LANES lanes of one vector (``_jcl``: at the mean rewards, then per unit noise of step j)."""

    threshold_k: np.ndarray
    alias_k: np.ndarray
    running_kjcl: np.ndarray  # (K, 1 + T, 2, LANES) the episode's G_t and R per step (0 after its end)
    alive_kl: np.ndarray  # (K, LANES) 1.0 while the path lasts
    noise_kvtjl: np.ndarray  # the weight's noise at step t per unit noise of step j
    minus_g_vtl: np.ndarray  # what each lane subtracts per unit running mean of G_t at step t
    minus_r_vtl: np.ndarray  # ... and of R at step t
    cross2_kvtl: np.ndarray  # 2 at_mean_t . score_t
    score_sq_kt: np.ndarray  # |score_t|^2
    mean_row_kt: np.ndarray  # the first of the two sums rows of the visit's cell (running means of G_t, R)
    has_running: bool


@njit(cache=True, nogil=True)
def path_moments(
    uniforms_bu, normals_bt, steps_witness, blocks_witness, tables, prior_xl, first_batch, per_reading,
    sums_rx, squares_rvl,
):  # fmt: skip
    """One-episode batches ``first_batch`` .. (one per row of ``uniforms_bu``), read out per reading
    (the call's r-th reading is r = 0 for ``first_batch``'s): into ``sums_rx[r]`` each path's count and
    summed unit noise (row k (1 + T): n, then sum u_t), and the running means of G_t and R summed per
    visited cell (rows ``mean_row_kt``); into ``squares_rvl[r]`` the episodes' squared norms less their
    part at the mean rewards. The running sums of G_t, of R and the count per step (``prior_xl``,
    3 rows of LANES) are read before each episode and take it in after. ``steps_witness`` and
    ``blocks_witness`` are tuples of T and of ceil(E / 4) zeros: numba compiles the kernel for each
    length, so the loops over them are unrolled. The episode's noise: standard normals where
    ``normals_bt`` has rows, else the uniforms in slots 1 .. T, else none."""
    n_steps = len(steps_witness)
    n_blocks = len(blocks_witness)
    n_paths = tables.threshold_k.shape[0]
    gaussian = normals_bt.shape[0] > 0
    uniform = not gaussian and uniforms_bu.shape[1] > 1
    to_column = n_paths * TO_UNIT
    one = np.uint64(1)
    unit_t = np.zeros(n_steps)
    ones = splat(1.0)
    mean_g = mean_r = splat(0.0)  # the running means an episode sees
    prior_g, prior_r, prior_n = load(prior_xl, 0), load(prior_xl, LANES), load(prior_xl, 2 * LANES)
    row_width = np.uint64(1 + n_steps)
    r = np.uint64(0)
    left = per_reading - first_batch % per_reading  # batches until reading r is complete
    for i in range(uniforms_bu.shape[0]):
        if left == 0:
            r += one
            left = per_reading
        left -= 1
        x = uniforms_bu[i, 0] * to_column
        column = int(x)
        path = column if x - column < tables.threshold_k[column] else tables.alias_k[column]
        k = np.uint64(path)
        row = k * row_width
        sums_rx[r, row] += 1.0
        for step in range(n_steps):
            t = np.uint64(step)
            if gaussian:
                unit_t[t] = normals_bt[i, t]
            elif uniform:
                unit_t[t] = uniforms_bu[i, one + t] * TO_UNIT - 0.5
            sums_rx[r, row + one + t] += unit_t[t]
        if tables.has_running:
            inverse = ones / maximum(prior_n, ones)  # the sums are 0 while the count is
            mean_g, mean_r = prior_g * inverse, prior_r * inverse
            for step in range(n_steps):
                cell = np.uint64(tables.mean_row_kt[k, np.uint64(step)])
                sums_rx[r, cell] += lane_of(mean_g, step)
                sums_rx[r, cell + one] += lane_of(mean_r, step)
        # this episode joins the running sums: its G_t and R per step, at the mean rewards plus noise
        at = path * (n_steps + 1) * 2 * LANES
        g, total = load(tables.running_kjcl, at), load(tables.running_kjcl, at + LANES)
        for step in range(n_steps):
            unit = splat(unit_t[np.uint64(step)])
            at += 2 * LANES
            g = fma(unit, load(tables.running_kjcl, at), g)
            total = fma(unit, load(tables.running_kjcl, at + LANES), total)
        prior_g, prior_r = prior_g + g, prior_r + total
        prior_n = prior_n + load(tables.alive_kl, path * LANES)
        for block in range(n_blocks):
            square = splat4(0.0)
            for step in range(n_steps):
                t = np.uint64(step)
                at = (block * n_steps + step) * QUAD
                y = splat4(0.0) - load4(tables.minus_g_vtl, at) * splat4(lane_of(mean_g, step))
                y = y - load4(tables.minus_r_vtl, at) * splat4(lane_of(mean_r, step))
                first = ((path * n_blocks + block) * n_steps + step) * n_steps * QUAD
                for noise_step in range(n_steps):
                    noise = load4(tables.noise_kvtjl, first + noise_step * QUAD)
                    y = fma(noise, splat4(unit_t[np.uint64(noise_step)]), y)
                cross2 = load4(tables.cross2_kvtl, ((path * n_blocks + block) * n_steps + step) * QUAD)
                square = fma(y, fma(splat4(tables.score_sq_kt[k, t]), y, cross2), square)
            at = (r * n_blocks + block) * QUAD
            store4(squares_rvl, at, load4(squares_rvl, at) + square)
    store(prior_xl, 0, prior_g)
    store(prior_xl, LANES, prior_r)
    store(prior_xl, 2 * LANES, prior_n)


@cache
def _witness(length: int) -> tuple:
    return (0,) * length


class PathMoments:
    """The ``path-moments`` read-out (see the module docs)."""

    name: ClassVar[str] = "path-moments"

    @staticmethod
    def applies(plan: Plan, source: Any, request: Request) -> bool:
        if not isinstance(source, PathSource) or request.n != 1 or request.per_reading < 2:
            return False
        if plan.steps > MAX_STEPS or (plan.mean_e == MEAN_G_TS).any():
            return False
        rows = source.n_paths * (1 + plan.steps)
        if (plan.mean_e != 0).any():
            rows += 2 * source.visited_cells[0].size
        size = rows * plan.n_estimators * plan.n_params
        if size > MAX_READOUT or size > READOUT_PER_EPISODE * request.per_reading:
            return False
        return source.distinct_logits

    def __init__(self, plan: Plan, source: PathSource) -> None:
        self.plan, self.source = plan, source
        mdp, steps, n_paths = plan.mdp, plan.steps, source.n_paths
        n_estimators, n_params, n_actions = plan.n_estimators, plan.n_params, mdp.n_actions
        blocks = -(-n_estimators // QUAD)
        alive_tk = source.alive_kt.T
        states_tk, actions_tk = source.states_kt.T, source.actions_kt.T
        steps_t1 = np.arange(steps)[:, None]
        rewards_tk = (source.rewards_kt + source.bonus_kt).T
        scores_tkA = np.eye(n_actions)[actions_tk] - plan.probs_tsa[steps_t1, states_tk]
        direct_tkA = plan.direct_tsa[steps_t1, states_tk]
        params_ktA = plan.index_tsa[steps_t1, states_tk].transpose(1, 0, 2)
        has_running = bool((plan.mean_e != 0).any())
        cells, cell_kt = source.visited_cells
        count_rows = n_paths * (1 + steps)
        # the dense read-out: per path its count row, then one row per step's unit noise; then per
        # visited cell two rows for the running means of G_t and of R summed there
        readout_xed = np.zeros((count_rows + (2 * cells.size if has_running else 0), n_estimators, n_params))
        path_rows_kj = count_rows // n_paths * np.arange(n_paths)[:, None] + np.arange(1 + steps)[None, :]
        noise_ektj = np.zeros((n_estimators, n_paths, steps, steps))
        square_ke = np.zeros((n_paths, n_estimators))
        cross2_ekt = np.zeros((n_estimators, n_paths, steps))
        minus_g_et = plan.scale_et * (plan.mean_e == MEAN_G_T)[:, None]
        minus_r_et = plan.scale_et * (plan.mean_e == MEAN_R_T)[:, None]
        path_kt, step_kt = np.nonzero(source.alive_kt)  # the visits
        for e, spec in enumerate(plan.specs):
            values_tk = None
            if spec.weight == "gae":
                values_tk = np.where(alive_tk, plan.gae_values_gts[plan.gae_e[e]][steps_t1, states_tk], 0.0)
            weight_tk = weights(spec, rewards_tk, mdp.gamma, values_tk)
            at_mean_tkA = visit_terms(
                weight_tk, plan.offsets_etsa[e][steps_t1, states_tk], scores_tkA, direct_tkA, alive_tk
            )
            for j in range(steps):
                bumped_tk = rewards_tk.copy()
                bumped_tk[j] += source.scale_kt[:, j]
                noise_ektj[e, :, :, j] = (
                    weights(spec, bumped_tk, mdp.gamma, values_tk) - weight_tk
                ).T * source.alive_kt
            at_mean_ktA = at_mean_tkA.transpose(1, 0, 2)
            square_ke[:, e] = (at_mean_ktA**2).sum(axis=(1, 2))
            cross2_ekt[e] = 2.0 * (at_mean_ktA * scores_tkA.transpose(1, 0, 2)).sum(axis=2)
            np.add.at(readout_xed[:, e], (path_rows_kj[:, :1, None], params_ktA), at_mean_ktA)
            noise_kjtA = noise_ektj[e].transpose(0, 2, 1)[..., None] * scores_tkA.transpose(1, 0, 2)[:, None]
            np.add.at(readout_xed[:, e], (path_rows_kj[:, 1:, None, None], params_ktA[:, None]), noise_kjtA)
            if has_running:
                rows_i = count_rows + 2 * cell_kt[path_kt, step_kt]
                score_iA = scores_tkA[step_kt, path_kt]
                params_iA = params_ktA[path_kt, step_kt]
                first_visit = np.unique(rows_i, return_index=True)[1]  # the score depends on the cell alone
                rows_i, score_iA, params_iA, step_i = (
                    rows_i[first_visit],
                    score_iA[first_visit],
                    params_iA[first_visit],
                    step_kt[first_visit],
                )
                readout_xed[rows_i[:, None], e, params_iA] = -minus_g_et[e, step_i, None] * score_iA
                readout_xed[rows_i[:, None] + 1, e, params_iA] = -minus_r_et[e, step_i, None] * score_iA

        def in_blocks(array_ex: np.ndarray) -> np.ndarray:  # (E, ...) -> (blocks, ..., QUAD)
            padded = np.zeros((blocks * QUAD, *array_ex.shape[1:]))
            padded[:n_estimators] = array_ex
            return np.moveaxis(padded.reshape(blocks, QUAD, *array_ex.shape[1:]), 1, -1)

        self.readout_xf = np.ascontiguousarray(readout_xed.reshape(readout_xed.shape[0], -1))
        self.square_ke = square_ke
        self.count_rows = count_rows
        # G_t and R per step as the running sums add them: at the mean rewards, then per unit noise u_j
        lag_tj = np.arange(steps)[None, :] - np.arange(steps)[:, None]
        decay_tj = np.where(lag_tj >= 0, mdp.gamma ** np.maximum(lag_tj, 0), 0.0)
        running_kjcl = np.zeros((n_paths, 1 + steps, 2, LANES))
        running_kjcl[:, 0, 0, :steps] = source.cell_paths.mean_g_kt
        running_kjcl[:, 0, 1, :steps] = source.alive_kt * source.cell_paths.mean_g_kt[:, :1]
        running_kjcl[:, 1:, 0, :steps] = (decay_tj[None] * source.scale_kt[:, None, :]).transpose(0, 2, 1)
        noise_r_kj = mdp.gamma ** np.arange(steps) * source.scale_kt
        running_kjcl[:, 1:, 1, :steps] = noise_r_kj[:, :, None] * source.alive_kt[:, None, :]
        alive_kl = np.zeros((n_paths, LANES))
        alive_kl[:, :steps] = source.alive_kt
        self.tables = MomentTables(
            threshold_k=source.threshold_k,
            alias_k=source.alias_k,
            running_kjcl=running_kjcl,
            alive_kl=alive_kl,
            noise_kvtjl=np.ascontiguousarray(in_blocks(noise_ektj).transpose(1, 0, 2, 3, 4)),
            minus_g_vtl=np.ascontiguousarray(in_blocks(minus_g_et)),
            minus_r_vtl=np.ascontiguousarray(in_blocks(minus_r_et)),
            cross2_kvtl=np.ascontiguousarray(in_blocks(cross2_ekt).transpose(1, 0, 2, 3)),
            score_sq_kt=np.ascontiguousarray((scores_tkA**2).sum(axis=2).T * source.alive_kt),
            mean_row_kt=(count_rows + 2 * cell_kt).astype(np.int64),
            has_running=has_running,
        )
        self.witnesses = (_witness(steps), _witness(blocks))

    def block_batches(self, n: int) -> int:
        return -(-STREAM_EPISODES // n)

    def draw(self, seed: np.random.SeedSequence, episodes: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        return self.source.numbers(self.source.stream(seed), episodes)

    def read(
        self, drawn: tuple[np.ndarray, np.ndarray], n: int, first_batch: int, running: RunningBaselines,
        sums: ReadingSums,
    ) -> int:  # fmt: skip
        uniforms_bu, normals_bt = drawn
        per_reading = sums.per_reading
        plan = self.plan
        rows = self.readout_xf.shape[0]
        blocks = len(self.witnesses[1])
        per_chunk = max(1, _CHUNK // rows)  # readings
        start = 0
        while start < uniforms_bu.shape[0]:
            reading = (first_batch + start) // per_reading
            stop = min(uniforms_bu.shape[0], (reading + per_chunk) * per_reading - first_batch)
            readings = -(-(first_batch + stop) // per_reading) - reading
            sums_rx = np.zeros((readings, rows))
            squares_rvl = np.zeros((readings, blocks, QUAD))
            prior_xl = np.zeros((3, LANES))
            prior_xl[:, : plan.steps] = running.sum_g_t, running.sum_r_t, running.count_t
            path_moments(
                uniforms_bu[start:stop], normals_bt[start:stop], *self.witnesses, self.tables, prior_xl,
                first_batch + start, per_reading, sums_rx, squares_rvl,
            )  # fmt: skip
            running.sum_g_t[:], running.sum_r_t[:], running.count_t[:] = prior_xl[:, : plan.steps]
            chunk = slice(reading, reading + readings)
            summed_rx = sums_rx @ self.readout_xf
            sums.sum_red[chunk] += summed_rx.reshape(readings, plan.n_estimators, plan.n_params)
            counts_rk = sums_rx[:, : self.count_rows : 1 + plan.steps]
            sums.sumsq_re[chunk] += (
                squares_rvl.reshape(readings, -1)[:, : plan.n_estimators] + counts_rk @ self.square_ke
            )
            self._count_states(sums_rx, running)
            start = stop
        return 0

    def _count_states(self, sums_rx: np.ndarray, running: RunningBaselines) -> None:
        """Add the chunk's visits and sums of G_t per (step, state) into ``running`` (what the
        ``cells`` read-out keeps for ``running-value`` baselines and learned tables)."""
        source, plan = self.source, self.plan
        total_x = sums_rx[:, : self.count_rows].sum(axis=0).reshape(source.n_paths, 1 + plan.steps)
        count_k, noise_kj = total_x[:, 0], total_x[:, 1:]
        # G_t of path k summed over its episodes: count * G_t at the mean + the noise behind it
        lag_tj = np.arange(plan.steps)[None, :] - np.arange(plan.steps)[:, None]
        decay_tj = np.where(lag_tj >= 0, plan.mdp.gamma ** np.maximum(lag_tj, 0), 0.0)
        sum_g_kt = count_k[:, None] * source.cell_paths.mean_g_kt + (noise_kj * source.scale_kt) @ decay_tj.T
        steps_kt = np.broadcast_to(np.arange(plan.steps), source.states_kt.shape)
        np.add.at(running.count_ts, (steps_kt, source.states_kt), count_k[:, None] * source.alive_kt)
        np.add.at(running.sum_g_ts, (steps_kt, source.states_kt), sum_g_kt * source.alive_kt)
