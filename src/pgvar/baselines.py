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
