"""What a sweep will cost, estimated before any work starts, and each cell checked against the limits.

A cell's work is a fixed part (building the tables, the exact values, Python and the Parquet rows)
plus its episodes at a per-episode price: agent steps at ``budget.MC_STEPS_PER_SECOND`` for tabular
cells, environment steps and per-episode gradients for neural ones (the rates of
``pgvar.torch.episodes`` and ``pgvar.torch.gradients``). A tabular group's fixed part is measured:
its smallest study (N = 1, 2 batches) runs once while the spec is checked, since the exact engine's
work (a few ms on the lesson's MDP, a third of a second on the short corridor) dominates small
cells and no formula predicts it across MDPs. Neural cells are not run ahead: their fixed part is
``ENV_CELL_SECONDS``. Like every estimate of ``pgvar.budget``, this is good to a small factor. The
limits (``pgvar --max-memory``, ``--max-seconds``) apply to each cell, as they apply to one
``pgvar variance`` call; the sweep's total is reported, not limited.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgvar import budget

TABULAR_CELL_SECONDS = 2.5e-3  # measured: a small tabular cell (lesson, batches 20, N 1) costs ~3 ms
ROW_SECONDS = 2e-4  # a cell's rows: the document, its Parquet share, the chunk's bookkeeping
PROBE_AGAIN = 2e-3  # a probe longer than this runs twice (the first may include Numba's loading)
ENV_CELL_SECONDS = 0.05  # building the environment and the policy, per cell


@dataclass(frozen=True)
class CellCost:
    """The price list of one group of cells (an MDP with its theta and entropy, or an environment
    with its policy): ``fixed`` seconds per cell plus ``per_episode`` seconds for each episode.
    ``extra`` counts episodes a neural cell draws besides its batches (warm-up, critic), and
    ``sampler`` (tabular only) checks the batches against the limits as the study will."""

    fixed: float
    per_episode: float
    extra: int = 0
    sampler: Any = None


def tabular_cost(model, logits, specs) -> CellCost:
    """The price of a ``variance_study`` cell on ``model`` at ``logits`` for ``specs``: the fixed part
    (the exact values, the tables, Python) measured by running the smallest study of the group once
    (N = 1, 2 batches; its result is thrown away), the episodes at the sampler's rate."""
    from pgvar.estimators import with_vanilla
    from pgvar.montecarlo import Sampler

    measured, _ = with_vanilla(specs)
    sampler = Sampler(model, logits, measured)
    fixed = probe_seconds(model, logits, specs)
    return CellCost(fixed, sampler.episode_steps / budget.MC_STEPS_PER_SECOND, sampler=sampler)


def probe_seconds(model, logits, specs) -> float:
    """Seconds of the smallest ``variance_study`` of a group of cells (the best of two runs when it
    is long enough for a first run's compilation to matter); ``TABULAR_CELL_SECONDS`` when the
    study fails (its cells will fail as fast)."""
    from pgvar.budget import BudgetError
    from pgvar.errors import PgvarError
    from pgvar.studies import variance_study

    best = math.inf
    for _ in range(2):
        start = time.perf_counter()
        try:
            variance_study(model, logits, specs, [1], 2, 0)
        except BudgetError:
            raise
        except PgvarError:
            return TABULAR_CELL_SECONDS
        best = min(best, time.perf_counter() - start)
        if best < PROBE_AGAIN:
            break
    return best + ROW_SECONDS


def network_cost(env_spec, network, specs) -> CellCost:
    """The price of a ``network_variance_study`` cell: per episode, its steps in the environment and
    their share of the per-episode gradients (as ``pgvar.torch``'s own budget checks count them)."""
    from pgvar.gym.envspec import make_env
    from pgvar.torch.episodes import ENV_STEPS_PER_SECOND, VECTOR_STEP_SECONDS
    from pgvar.torch.gradients import FLOPS, parameter_layout
    from pgvar.torch.study import CRITIC_EPISODES, WARMUP_EPISODES

    horizon = env_spec.horizon
    if horizon is None:
        probe = make_env(env_spec)
        try:
            horizon = getattr(probe.spec, "max_episode_steps", None) or 1000
        finally:
            probe.close()
    parameters = sum(size for _, size in parameter_layout(network))
    per_step = (
        1.0 / ENV_STEPS_PER_SECOND
        + VECTOR_STEP_SECONDS / 8
        + 6.0 * (parameters + network.activations_per_step()) / FLOPS * len(specs)
    )
    extra = WARMUP_EPISODES + (CRITIC_EPISODES if any(s.baseline == "value" for s in specs) else 0)
    return CellCost(ENV_CELL_SECONDS, horizon * per_step, extra=extra)


def cell_episodes(cost: CellCost, cell: Mapping[str, Any]) -> float:
    """Episodes a cell draws: N x batches at its N and at N = 1 (the vanilla reference), with the
    sampler's warm-up (tabular) or the warm-up, critic and reference episodes (neural)."""
    from pgvar.montecarlo import DEFAULT_WARMUP

    ns = {int(cell["N"]), 1}
    batches = int(cell["batches"])
    if cell.get("env") is None:
        return float(sum(batches * n + DEFAULT_WARMUP for n in ns))
    return float(sum(batches * n for n in ns) + cost.extra + int(cell["reference_episodes"] or 0))


def cell_seconds(cost: CellCost, cell: Mapping[str, Any]) -> float:
    """Estimated seconds of one core for ``cell``."""
    return cost.fixed + cost.per_episode * cell_episodes(cost, cell)


def check_cell(what: str, cost: CellCost, cell: Mapping[str, Any]) -> None:
    """Refuse up front (:class:`~pgvar.budget.BudgetError`, one line) a cell the limits would refuse
    once it runs: tabular batches through the sampler's own check, neural cells by their seconds."""
    if cost.sampler is not None:
        for n in sorted({int(cell["N"]), 1}):
            cost.sampler.check_cost(f"{what} (N={n})", float(n) * int(cell["batches"]), int(cell["batches"]))
        return
    budget.check(
        what, seconds=cell_seconds(cost, cell), hint="fewer batches, a smaller N or reference_episodes"
    )


@dataclass(frozen=True)
class Estimate:
    """A sweep's cost: ``cells`` in all, ``todo`` still to run, ``seconds`` of one core for those,
    and the costliest cell's seconds."""

    cells: int
    todo: int
    seconds: float
    largest: float

    def wall(self, workers: int) -> float:
        """Seconds on ``workers`` cores, if the cells spread evenly."""
        return max(self.seconds / max(workers, 1), self.largest)


def duration(seconds: float) -> str:
    """``12.3 s``, ``4.5 min``, ``2.1 h``, ``3.2 days``."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    if seconds < 172800:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} days"
