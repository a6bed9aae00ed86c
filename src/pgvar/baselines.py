"""Baselines, move 3b of the lesson: what each kind subtracts, and the state of the running ones.

A baseline b(s_t) subtracted from the weight leaves the estimate unbiased because the score has zero
mean under the policy (Williams 1992; Greensmith, Bartlett & Baxter 2004). The kinds are listed in
``pgvar.vocabulary.BASELINE_KINDS``; their exact values or limits are resolved by
``pgvar.exact.resolve``. The running kinds are means over *earlier* batches only, kept here:

  ``lesson``         the per-step running mean of G_t (the lesson widget's ``bRtg``), Gbar_t;
  ``running``        the per-step running mean of the weight itself: Gbar_t for reward-to-go
                     weights, the running mean of R(tau) over episodes still running at t, Rbar_t,
                     for the full return;
  ``running-value``  the running mean of G_t per (step, state): a Monte-Carlo estimate of V_t(s)
                     from earlier batches, with V_t(s) as its limit.

Each is scaled like the weight it is compared with (gamma^t for discounted reward-to-go).
Inside GAE a running kind is used at its exact limit, the value function GAE needs to be fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pgvar.estimators import EstimatorSpec
from pgvar.mdp import TabularMDP
from pgvar.validation import check_choice

#: Which running mean an estimator subtracts: codes the compiled read-outs switch on.
MEAN_NONE, MEAN_G_T, MEAN_R_T, MEAN_G_TS = 0, 1, 2, 3


def running_mean_kind(spec: EstimatorSpec) -> int:
    """The running mean ``spec`` subtracts (``MEAN_*``); ``MEAN_NONE`` for fixed baselines and GAE."""
    if spec.weight == "gae":
        return MEAN_NONE
    if spec.baseline == "lesson" or (spec.baseline == "running" and spec.weight == "rtg"):
        return MEAN_G_T
    if spec.baseline == "running":
        return MEAN_R_T
    if spec.baseline == "running-value":
        return MEAN_G_TS
    return MEAN_NONE


def is_running(spec: EstimatorSpec) -> bool:
    """Whether the baseline moves with the episodes (and needs warm-up or carried state)."""
    return spec.baseline in ("lesson", "running", "running-value")


@dataclass
class RunningBaselines:
    """The sums behind the running baselines, over every episode seen so far: per step t the sums
    of G_t and of R(tau) over the episodes still running at t and their count, and per (t, s) the
    sum of G_t and the visits. Pass one object on to keep the baselines warm across calls (the
    explorer does, as the lesson's widget does; so does ``pgvar train`` across updates)."""

    sum_g_t: np.ndarray
    sum_r_t: np.ndarray
    count_t: np.ndarray
    sum_g_ts: np.ndarray
    count_ts: np.ndarray

    @classmethod
    def empty(cls, steps: int, states: int = 1) -> RunningBaselines:
        return cls(np.zeros(steps), np.zeros(steps), np.zeros(steps), np.zeros((steps, states)),
                   np.zeros((steps, states)))  # fmt: skip

    def fit(self, steps: int, states: int) -> None:
        """Resize in place to ``steps`` rows and ``states`` columns: extra rows are folded into the
        last one (episodes longer than the tables share it); a change of states starts the
        per-state sums afresh."""
        for name in ("sum_g_t", "sum_r_t", "count_t", "sum_g_ts", "count_ts"):
            old = getattr(self, name)
            if old.ndim == 2 and old.shape[1] != states:
                old = np.zeros((old.shape[0], states))
            if old.shape[0] == steps:
                setattr(self, name, old)
                continue
            new = np.zeros((steps, *old.shape[1:]))
            keep = min(steps, old.shape[0])
            new[:keep] = old[:keep]
            new[steps - 1] += old[keep:].sum(axis=0)
            setattr(self, name, new)

    def copy(self) -> RunningBaselines:
        return RunningBaselines(*(getattr(self, name).copy() for name in
                                  ("sum_g_t", "sum_r_t", "count_t", "sum_g_ts", "count_ts")))  # fmt: skip


def _mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def running_offsets_tsa(
    spec: EstimatorSpec, running: RunningBaselines, scale_t: np.ndarray, actions: int
) -> np.ndarray:
    """(T, S, A) what ``spec``'s running baseline subtracts from the weight now: the running mean
    (0 before any episode was seen) times the weight's scale ``scale_t``. Reference code: the
    compiled read-outs compute the same inside their loops."""
    steps, states = running.count_ts.shape
    kind = running_mean_kind(spec)
    mean_ts = np.zeros((steps, states))
    if kind == MEAN_G_T:
        mean_ts[:] = _mean(running.sum_g_t, running.count_t)[:, None]
    elif kind == MEAN_R_T:
        mean_ts[:] = _mean(running.sum_r_t, running.count_t)[:, None]
    elif kind == MEAN_G_TS:
        mean_ts = _mean(running.sum_g_ts, running.count_ts)
    return np.repeat((scale_t[:steps, None] * mean_ts)[..., None], actions, axis=2)


def add_episodes(
    running: RunningBaselines,
    states_tb: np.ndarray,
    returns_tb: np.ndarray,
    alive_tb: np.ndarray,
) -> None:
    """Add B episodes into the running sums (reference code, as :func:`running_offsets_tsa`).

    Args:
      states_tb: (T, B) states; returns_tb: (T, B) G_t (entropy bonus included); alive_tb: (T, B).
    """
    steps = running.count_t.size
    rows_tb = np.minimum(np.arange(states_tb.shape[0]), steps - 1)[:, None] + 0 * states_tb
    weight_tb = alive_tb.astype(float)
    np.add.at(running.sum_g_t, rows_tb, returns_tb * weight_tb)
    np.add.at(running.sum_r_t, rows_tb, returns_tb[0] * weight_tb)
    np.add.at(running.count_t, rows_tb, weight_tb)
    np.add.at(running.sum_g_ts, (rows_tb, states_tb), returns_tb * weight_tb)
    np.add.at(running.count_ts, (rows_tb, states_tb), weight_tb)


# -- the learned baseline of ``pgvar train`` --------------------------------------------------------


#: How a ``learned`` baseline groups states: one value per state, or one per observation.
LEARNED_BY = ("state", "observation")


@dataclass
class LearnedBaseline:
    """A tabular value V(t, s) fitted to the reward-to-go of past batches, for the ``learned`` kind.

    After each batch every visited cell moves toward the batch's mean G_t there,
    ``V <- V + lr * (mean G_t - V)`` (a cell's first visit sets it to the mean); the table is used
    only from the next batch on, so the estimate stays unbiased. One row per step for a finite
    horizon, one row for unbounded episodes; with ``by="observation"`` states that look alike share
    one value (the linear baseline with state-independent features of Sutton & Barto's Example 13.1).

    Attributes:
      value_to: (T, O) values per step row and group (a group is a state, or an observation).
      seen_to: (T, O) whether the cell has been visited yet.
      group_s: (S,) group of each state; terminal states get the extra group G (always zero).
      lr: the rate ``baseline_lr``.
    """

    value_to: np.ndarray
    seen_to: np.ndarray
    group_s: np.ndarray
    lr: float

    @classmethod
    def start(cls, mdp: TabularMDP, lr: float, by: str = "state") -> LearnedBaseline:
        """All-zero table: one row per step for a finite horizon, one row for unbounded episodes."""
        check_choice(by, "learned_by", LEARNED_BY)
        rows = mdp.horizon if mdp.horizon is not None else 1
        n_groups = mdp.n_states if by == "state" else mdp.n_observations
        group_s = np.arange(mdp.n_states) if by == "state" else mdp.observation_s
        group_s = np.where(mdp.terminal_s, n_groups, group_s)
        return cls(np.zeros((rows, n_groups + 1)), np.zeros((rows, n_groups + 1), dtype=bool), group_s, lr)

    def table(self) -> np.ndarray:
        """(T, S) the values per step and state, the form ``learned_ts`` takes."""
        table = self.value_to[:, self.group_s].copy()
        table[:, self.group_s == self.value_to.shape[1] - 1] = 0.0
        return table

    def update(self, count_ts: np.ndarray, sum_g_ts: np.ndarray) -> None:
        """Move every visited cell toward the batch's mean reward-to-go there."""
        rows, n_cells = self.value_to.shape
        count_ts, sum_g_ts = np.asarray(count_ts, float), np.asarray(sum_g_ts, float)
        if rows == 1:
            count_ts, sum_g_ts = count_ts.sum(axis=0, keepdims=True), sum_g_ts.sum(axis=0, keepdims=True)
        else:  # a finite horizon: the sampler's rows are the steps 0 .. H-1
            count_ts, sum_g_ts = count_ts[:rows], sum_g_ts[:rows]
        count_to = np.zeros((count_ts.shape[0], n_cells))
        sum_to = np.zeros_like(count_to)
        np.add.at(count_to, (slice(None), self.group_s), count_ts)
        np.add.at(sum_to, (slice(None), self.group_s), sum_g_ts)
        visited = count_to > 0
        visited[:, -1] = False
        mean_to = np.divide(sum_to, count_to, out=np.zeros_like(sum_to), where=visited)
        first = visited & ~self.seen_to[: count_to.shape[0]]
        again = visited & ~first
        block = self.value_to[: count_to.shape[0]]
        block[first] = mean_to[first]
        block[again] += self.lr * (mean_to[again] - block[again])
        self.seen_to[: count_to.shape[0]] |= visited
