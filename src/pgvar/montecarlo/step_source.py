"""The step source: episodes walked through the MDP one step at a time, for any MDP (unbounded
episodes, and finite horizons with too many paths to list).

Randomness comes from NumPy's PCG64 as raw 64-bit words, drawn in bulk: each word gives two 32-bit
uniforms. A step uses the high half for its action and the low half for a stochastic transition, or
else for uniform reward noise; whatever is still needed takes another word. Gaussian noise comes from
a second stream of standard normals. An episode that would run past the end of a buffer is abandoned
and replayed from its first number after a refill, so results do not depend on buffer sizes.

The walk adds each episode straight into the per-cell statistics of the ``cells`` read-out (the visit
count and the sums of G_t, of R and of each GAE advantage per (batch, step, state, action)); it can
also record the episodes (``StepSource.episodes``), for inspection and the reference estimator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np
from numba import njit

from pgvar import budget
from pgvar.errors import PgvarError
from pgvar.montecarlo.path_source import COUNT, SUM_ADV, SUM_G, SUM_R, TO_UNIT
from pgvar.montecarlo.plan import Episodes, Plan

NOISE_KINDS = ("none", "uniform", "gaussian")
NOISE_UNIFORM, NOISE_GAUSSIAN = 1, 2
_WORDS = 1 << 18  # raw words drawn at a time (2 MB): refills stay rare, memory small


class WalkTables(NamedTuple):
    """The MDP and policy as the walk reads them: cumulative distributions to draw from, the state
    each (s, a) leads to when the transition is deterministic (-1 otherwise)."""

    initial_cdf: np.ndarray  # (S,)
    initial_fixed: int  # the start state when there is only one, else -1
    trans_cdf: np.ndarray  # (Q, S, A, S), Q = 1 or the horizon for time-dependent transitions
    trans_fixed: np.ndarray  # (Q, S, A)
    reward_sas: np.ndarray
    noise_kind: int  # index into NOISE_KINDS
    noise_scale_sa: np.ndarray
    terminal_s: np.ndarray
    gamma: float
    max_steps: int
    probs_cdf_psa: np.ndarray  # (P, S, A) per policy step
    entropy_bonus_ps: np.ndarray
    gae_decay_g: np.ndarray
    gae_values_gts: np.ndarray
    step_words: int  # raw words a step may use: 2 when a stochastic transition and uniform noise share one


class Scratch(NamedTuple):
    """One episode's visits, ``max_steps`` long each."""

    cells_t: np.ndarray
    states_t: np.ndarray
    actions_t: np.ndarray
    rewards_t: np.ndarray  # with the entropy bonus
    next_t: np.ndarray


class Trace(NamedTuple):
    """Recorded episodes, (E, L) each and their lengths; E = 0 records nothing."""

    states_bt: np.ndarray
    actions_bt: np.ndarray
    rewards_bt: np.ndarray  # without the entropy bonus
    length_b: np.ndarray


@njit(cache=True, nogil=True, inline="always")
def _draw(cdf_a, u):
    # branchless: count the cumulative probabilities below u (random branches would mispredict)
    index = 0
    for i in range(cdf_a.shape[0] - 1):
        index += u >= cdf_a[i]
    return index


@njit(cache=True, nogil=True)
def walk(words, word_pos, normals, normal_pos, tables, episode, n_episodes, n, stats_mtsac, scratch, trace):
    """Walk episodes ``episode`` .. ``n_episodes - 1``; episode i belongs to batch i // n
    and its statistics go into ``stats_mtsac[batch]`` (steps t >= T into the last step row).

    Stops early, before finishing an episode, when ``words`` or ``normals`` could run out, and returns
    the positions of that episode's first numbers so the caller can refill and replay it.
    Returns (next episode, word_pos, normal_pos, episodes cut at ``max_steps`` without ending)."""
    n_batches, n_acc_steps, n_states, n_actions, n_channels = stats_mtsac.shape
    stats_xc = stats_mtsac.reshape((n_batches * n_acc_steps * n_states * n_actions, n_channels))
    per_step_policy = tables.probs_cdf_psa.shape[0] > 1
    per_step_trans = tables.trans_cdf.shape[0] > 1
    n_gae = tables.gae_decay_g.shape[0]
    max_steps = tables.max_steps
    gaussian = tables.noise_kind == NOISE_GAUSSIAN
    n_words = words.shape[0]
    tracing = trace.length_b.shape[0] > 0
    cut = 0
    batch = episode // n
    in_batch = episode - batch * n  # a counter, not a division per episode
    while episode < n_episodes:
        first_word, first_normal = word_pos, normal_pos
        if word_pos >= n_words:
            break
        if tables.initial_fixed >= 0:
            s = tables.initial_fixed
        else:
            s = _draw(tables.initial_cdf, (words[word_pos] >> 32) * TO_UNIT)
            word_pos += 1
        length = 0
        total = 0.0  # the discounted return R, summed on the way
        discount = 1.0
        ran_out = False
        batch_cell = batch * n_acc_steps
        # check the buffers step by step only when a whole worst-case episode might not fit
        careful = word_pos + tables.step_words * max_steps > n_words or (
            gaussian and normal_pos + max_steps > normals.shape[0]
        )
        while True:
            if careful and (
                word_pos + tables.step_words > n_words or (gaussian and normal_pos >= normals.shape[0])
            ):
                ran_out = True
                break
            p = length if per_step_policy else 0
            word = words[word_pos]
            word_pos += 1
            a = _draw(tables.probs_cdf_psa[p, s], (word >> 32) * TO_UNIT)
            low = (word & 0xFFFFFFFF) * TO_UNIT
            low_used = False
            q = length if per_step_trans else 0
            nxt = tables.trans_fixed[q, s, a]
            if nxt < 0:
                nxt = _draw(tables.trans_cdf[q, s, a], low)
                low_used = True
            r = tables.reward_sas[s, a, nxt]
            if tables.noise_kind == NOISE_UNIFORM:
                if low_used:
                    low = (words[word_pos] >> 32) * TO_UNIT
                    word_pos += 1
                r += tables.noise_scale_sa[s, a] * (low - 0.5)
            elif gaussian:
                r += tables.noise_scale_sa[s, a] * normals[normal_pos]
                normal_pos += 1
            if tracing and length < trace.states_bt.shape[1]:
                trace.states_bt[episode, length] = s
                trace.actions_bt[episode, length] = a
                trace.rewards_bt[episode, length] = r
            r += tables.entropy_bonus_ps[p, s]
            scratch.cells_t[length] = (
                (batch_cell + min(length, n_acc_steps - 1)) * n_states + s
            ) * n_actions + a
            scratch.rewards_t[length] = r
            scratch.states_t[length] = s
            scratch.next_t[length] = nxt
            total += discount * r
            discount *= tables.gamma
            length += 1
            s = nxt
            if tables.terminal_s[s] or length == max_steps:
                break
        if ran_out:
            return episode, first_word, first_normal, cut
        if not tables.terminal_s[s] and length == max_steps and max_steps > n_acc_steps:
            cut += 1
        if tracing:
            trace.length_b[episode] = length
        ret = 0.0
        for t in range(length - 1, -1, -1):
            ret = scratch.rewards_t[t] + tables.gamma * ret  # the reward-to-go G_t
            cell = scratch.cells_t[t]
            stats_xc[cell, COUNT] += 1.0
            stats_xc[cell, SUM_G] += ret
            stats_xc[cell, SUM_R] += total
        for g in range(n_gae):
            # A_t = delta_t + gamma lambda A_{t+1}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t)
            adv = 0.0
            for t in range(length - 1, -1, -1):
                tc = min(t, n_acc_steps - 1)
                tn = min(t + 1, n_acc_steps)
                value_next = tables.gae_values_gts[g, tn, scratch.next_t[t]] if t + 1 < length else 0.0
                delta = (
                    scratch.rewards_t[t]
                    + tables.gamma * value_next
                    - tables.gae_values_gts[g, tc, scratch.states_t[t]]
                )
                adv = delta + tables.gae_decay_g[g] * adv
                stats_xc[scratch.cells_t[t], SUM_ADV + g] += adv
        episode += 1
        in_batch += 1
        if in_batch == n:
            batch += 1
            in_batch = 0
    return episode, word_pos, normal_pos, cut


@dataclass(frozen=True)
class StepSource:
    """Episodes walked step by step under the plan's policy (see the module docs)."""

    name: ClassVar[str] = "steps"
    plan: Plan
    tables: WalkTables

    @classmethod
    def build(cls, plan: Plan) -> StepSource:
        mdp = plan.mdp
        trans_steps = mdp.horizon if mdp.time_dependent else 1
        budget.check_entries(
            f"mdp {mdp.name!r}: the step walker's transition tables",
            3.0 * trans_steps * mdp.n_states * mdp.n_actions * mdp.n_states + 5.0 * plan.max_steps,
        )
        trans_qsas = np.array([mdp.transitions_at(t) for t in range(trans_steps)])
        fixed_qsa = np.where(np.isclose(trans_qsas.max(axis=-1), 1.0), trans_qsas.argmax(axis=-1), -1)
        stochastic = (fixed_qsa < 0).any()
        tables = WalkTables(
            initial_cdf=np.cumsum(mdp.initial_s),
            initial_fixed=int(np.argmax(mdp.initial_s)) if np.isclose(mdp.initial_s.max(), 1.0) else -1,
            trans_cdf=np.cumsum(trans_qsas, axis=-1),
            trans_fixed=fixed_qsa.astype(np.int64),
            reward_sas=np.ascontiguousarray(mdp.reward_sas, dtype=float),
            noise_kind=NOISE_KINDS.index(mdp.reward_noise),
            noise_scale_sa=np.ascontiguousarray(mdp.noise_scale_sa, dtype=float),
            terminal_s=mdp.terminal_s,
            gamma=float(mdp.gamma),
            max_steps=plan.max_steps,
            probs_cdf_psa=np.cumsum(plan.policy_probs_psa, axis=-1),
            entropy_bonus_ps=plan.entropy_bonus_ps,
            gae_decay_g=plan.gae_decay_g,
            gae_values_gts=plan.gae_values_gts,
            step_words=2 if stochastic and mdp.reward_noise == "uniform" else 1,
        )
        return cls(plan, tables)

    def _walk(
        self, seed: np.random.SeedSequence, episodes: int, n: int, stats_mtsac: np.ndarray, trace: Trace
    ) -> int:
        """Walk ``episodes`` episodes of the stream ``seed``, refilling the buffers; returns the
        episodes cut at the step cap."""
        tables = self.tables
        word_seed, normal_seed = seed.spawn(2)
        bits = np.random.PCG64(word_seed)
        gaussian = tables.noise_kind == NOISE_GAUSSIAN
        normal_rng = np.random.default_rng(normal_seed) if gaussian else None
        # the first draw: exactly what episodes of length min(H, 64) use (the walk asks for more if needed)
        typical = min(tables.max_steps, 64)
        per_episode = (0 if tables.initial_fixed >= 0 else 1) + tables.step_words * typical
        words = bits.random_raw(min(_WORDS, per_episode * episodes + 1))
        normals = normal_rng.standard_normal(min(_WORDS, typical * episodes)) if gaussian else np.zeros(0)
        word_pos = normal_pos = 0
        steps = tables.max_steps
        scratch = Scratch(np.empty(steps, np.int64), np.empty(steps, np.int64), np.empty(steps, np.int64),
                          np.empty(steps), np.empty(steps, np.int64))  # fmt: skip
        episode = truncated = 0
        while True:
            episode, word_pos, normal_pos, cut = walk(
                words,
                word_pos,
                normals,
                normal_pos,
                tables,
                episode,
                episodes,
                n,
                stats_mtsac,
                scratch,
                trace,
            )
            truncated += cut
            if episode >= episodes:
                return truncated
            more = min(_WORDS, per_episode * (episodes - episode) + 1)
            words = np.concatenate([words[word_pos:], bits.random_raw(more)])
            word_pos = 0
            if gaussian:
                normals = np.concatenate([normals[normal_pos:], normal_rng.standard_normal(_WORDS)])
                normal_pos = 0

    def cell_stats(self, seed: np.random.SeedSequence, episodes: int, n: int, stats_mtsac: np.ndarray) -> int:
        """Walk ``episodes`` episodes (batches of ``n``) of the stream ``seed`` into the per-cell
        statistics ``stats_mtsac``; returns the episodes cut short at the step cap."""
        return self._walk(seed, episodes, n, stats_mtsac, _NO_TRACE)

    def episodes(
        self, seed: np.random.SeedSequence, episodes: int, max_length: int | None = None
    ) -> Episodes:
        """The first ``episodes`` episodes of the stream ``seed``, padded to their longest (at most
        ``max_length``, default the plan's steps: a longer episode is refused)."""
        plan = self.plan
        width = max_length or plan.steps
        budget.check_entries(f"episodes: {episodes} episodes of up to {width} steps", 4.0 * episodes * width)
        trace = Trace(
            np.zeros((episodes, width), dtype=np.int64),
            np.zeros((episodes, width), dtype=np.int64),
            np.zeros((episodes, width)),
            np.zeros(episodes, dtype=np.int64),
        )
        stats = np.zeros(
            (1, plan.steps, plan.mdp.n_states, plan.mdp.n_actions, SUM_ADV + plan.gae_decay_g.size)
        )
        self._walk(seed, episodes, max(episodes, 1), stats, trace)
        longest = int(trace.length_b.max(initial=0))
        if longest > width:
            raise PgvarError(f"episodes: an episode ran {longest} steps, past the {width} asked for")
        alive_bt = np.arange(longest)[None, :] < trace.length_b[:, None]
        return Episodes(trace.states_bt[:, :longest].T, trace.actions_bt[:, :longest].T,
                        trace.rewards_bt[:, :longest].T * alive_bt.T, alive_bt.T)  # fmt: skip


_NO_TRACE = Trace(np.zeros((0, 0), dtype=np.int64), np.zeros((0, 0), dtype=np.int64), np.zeros((0, 0)),
                  np.zeros(0, dtype=np.int64))  # fmt: skip
