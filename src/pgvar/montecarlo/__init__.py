"""Move 4 of the lesson, measured: the variance of the batch-mean gradient across independent batches.

This is the lesson widget's KPI (``pgvar.kpi``): M batches (60 by default) of N episodes each, every
estimator evaluated on the same episodes (common random numbers, so ratios between estimators are
sharp). The layers, each a module:

- ``plan``: the tables of one (MDP, theta, estimators), computed once (:class:`Plan`);
- the episode sources: ``path_source`` (whole paths drawn from their exact probabilities) and
  ``step_source`` (episodes walked step by step);
- the read-outs, which turn a block of episodes into per-reading sums (``readout`` has the protocol):
  ``cells`` (per-cell statistics, the general one) and ``path_moments`` (many one-episode readings
  from each path's moments);
- ``sampler``: :class:`Sampler` picks the source and, per call, the first read-out that applies,
  and names it on the result (``route``).
"""

from pgvar.montecarlo.plan import UNBOUNDED_CAP, UNBOUNDED_STEPS, Episodes, Plan, make_plan
from pgvar.montecarlo.sampler import (
    DEFAULT_BATCHES,
    DEFAULT_WARMUP,
    READ_OUTS,
    Readings,
    Sample,
    Sampler,
    estimate_gradient,
    sample_batch_means,
)

__all__ = [
    "DEFAULT_BATCHES",
    "DEFAULT_WARMUP",
    "READ_OUTS",
    "UNBOUNDED_CAP",
    "UNBOUNDED_STEPS",
    "Episodes",
    "Plan",
    "Readings",
    "Sample",
    "Sampler",
    "estimate_gradient",
    "make_plan",
    "sample_batch_means",
]
