"""What a read-out is: the protocol every way of turning episodes into estimates follows, and the sums
they all fill.

A read-out takes the episodes of one block of batches (one random stream) and adds, per reading, the
sum of its batch-mean gradients and of their squared norms into :class:`ReadingSums`; the KPI is read
off those sums (``pgvar.kpi``). The sampler asks each read-out in turn whether it applies to a request
and uses the first that does, so a new read-out is one module with a class following
:class:`ReadOut` and one entry in ``sampler.READ_OUTS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from pgvar.baselines import RunningBaselines
from pgvar.kpi import variance_traces
from pgvar.montecarlo.plan import Plan

STREAM_EPISODES = 1 << 16  # episodes per random stream at most (whole batches; fixed, so results never
# depend on how the work is split)


@dataclass(frozen=True)
class Request:
    """What is asked: ``batches`` batches of ``n`` episodes, read out ``per_reading`` batches to a
    reading (1: every batch mean is kept)."""

    n: int
    batches: int
    per_reading: int


@dataclass(frozen=True)
class ReadingSums:
    """Per reading of ``per_reading`` batches: the sum of its batch means ``sum_red`` (R, E, D) and of
    their squared norms ``sumsq_re`` (R, E). With one batch a reading, ``sum_red`` holds the batch
    means themselves and ``sumsq_re`` stays zero."""

    per_reading: int
    sum_red: np.ndarray
    sumsq_re: np.ndarray

    @classmethod
    def zeros(cls, readings: int, estimators: int, params: int, per_reading: int) -> ReadingSums:
        return cls(per_reading, np.zeros((readings, estimators, params)), np.zeros((readings, estimators)))

    def add(self, first_batch: int, means_med: np.ndarray) -> None:
        """Fold in the (B, E, D) means of batches ``first_batch`` .. ``first_batch + B - 1``."""
        if self.per_reading == 1:
            self.sum_red[first_batch : first_batch + means_med.shape[0]] += means_med
            return
        squares_me = np.einsum("bed,bed->be", means_med, means_med)
        reading_m = (first_batch + np.arange(means_med.shape[0])) // self.per_reading
        firsts = np.flatnonzero(np.diff(reading_m, prepend=-1))  # each reading's first row in the block
        self.sum_red[reading_m[firsts]] += np.add.reduceat(means_med, firsts)
        self.sumsq_re[reading_m[firsts]] += np.add.reduceat(squares_me, firsts)

    def variance_trace_re(self) -> np.ndarray:
        """(R, E) each reading's KPI per estimator (``kpi.variance_traces``)."""
        readings, estimators, params = self.sum_red.shape
        traces_x = variance_traces(
            self.sum_red.reshape(-1, params), self.sumsq_re.reshape(-1), self.per_reading
        )
        return traces_x.reshape(readings, estimators)


class ReadOut(Protocol):
    """One way of turning a block of episodes into :class:`ReadingSums`.

    ``applies`` says whether it can serve a request (a class-level test, before any table is built);
    an instance holds the tables it built for one plan and source. ``draw`` makes what a block of
    episodes needs from its random stream (called from worker threads: it must not touch shared
    state); ``read`` then adds the block into the sums and moves the running baselines (called in
    block order on one thread)."""

    name: ClassVar[str]

    @staticmethod
    def applies(plan: Plan, source: Any, request: Request) -> bool: ...

    def block_batches(self, n: int) -> int: ...

    def draw(self, seed: np.random.SeedSequence, episodes: int, n: int) -> Any: ...

    def read(
        self, drawn: Any, n: int, first_batch: int, running: RunningBaselines, sums: ReadingSums
    ) -> int: ...
