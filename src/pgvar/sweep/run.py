"""The driver of a sweep: check, plan, dispatch, commit.

:func:`run_sweep` checks everything first (the spec, the engine, the folder: another spec's results
are refused unless ``new``), takes the folder's lock, removes what a crash left half-written, skips
the cells already in place, cuts the rest into chunks and hands them to the engine. Each finished
chunk is committed by renaming its files into place, so a sweep killed at any moment (kill -9 of the
driver and its workers included) loses at most its running chunks, and the same command resumes it
with no lost and no duplicated rows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pgvar.errors import SpecError
from pgvar.sweep import store
from pgvar.sweep.engines import Chunk, ChunkDone, local_cores, make_engine
from pgvar.sweep.spec import Spec, estimate
from pgvar.validation import check_int

CHUNK_SECONDS = 2.0  # a chunk's estimated work: large against a task's overhead, small against Ctrl-C
CHUNKS_PER_WORKER = 4  # at least this many chunks per worker, so that the last ones end together
MAX_CHUNK = 2000


@dataclass(frozen=True)
class Plan:
    """What a run will do: the spec's cells, those already in place, the chunks of the rest."""

    spec: Spec
    out: str
    total: int
    finished: int
    chunks: list[Chunk]
    estimate: Any
    workers: int

    @property
    def todo(self) -> int:
        return sum(len(chunk.cells) for chunk in self.chunks)


@dataclass(frozen=True)
class RunSummary:
    """What a run did: cells and rows written, cells skipped (already there), seconds, and whether
    it was interrupted before the end."""

    cells: int
    rows: int
    skipped: int
    total: int
    seconds: float
    interrupted: bool = False


def chunk_target(total_seconds: float, workers: int) -> float:
    """Seconds of estimated work per chunk: ``CHUNK_SECONDS``, less when that would leave fewer than
    ``CHUNKS_PER_WORKER`` chunks per worker."""
    return min(CHUNK_SECONDS, total_seconds / (CHUNKS_PER_WORKER * max(workers, 1)))


def make_chunks(
    cells: list[dict[str, Any]],
    seconds: list[float],
    out: str,
    partition: str | None,
    base_dir: str,
    *,
    target: float = CHUNK_SECONDS,
    size: int | None = None,
) -> list[Chunk]:
    """Consecutive runs of cells within one partition value (cells keep the spec's order inside a
    partition; partitions in order of first appearance): ``size`` cells each when given, else as
    many as make ``target`` seconds of estimated work (``seconds``, per cell), at most ``MAX_CHUNK``."""
    from pgvar import budget

    limits = (budget.current().memory, budget.current().seconds)
    groups: dict[object, list[tuple[dict[str, Any], float]]] = {}
    for cell, cost in zip(cells, seconds, strict=True):
        groups.setdefault(cell.get(partition) if partition else None, []).append((cell, cost))
    chunks: list[Chunk] = []

    def close(part: list[dict[str, Any]]) -> None:
        ids = store.chunk_id(c["cell"] for c in part)
        chunks.append(Chunk(ids, tuple(part), out, partition, base_dir, limits))

    for members in groups.values():
        part: list[dict[str, Any]] = []
        work = 0.0
        for cell, cost in members:
            part.append(cell)
            work += cost
            full = len(part) >= size if size else (work >= target or len(part) >= MAX_CHUNK)
            if full:
                close(part)
                part, work = [], 0.0
        if part:
            close(part)
    return chunks


def check_folder(spec: Spec, out: str, new: bool) -> dict[str, Any] | None:
    """The folder's recorded spec, refusing (one line) another spec's folder unless ``new``; a new
    partition column is refused even then (the folder's files could no longer be read as one table)."""
    recorded = store.read_spec(out)
    if recorded is None:
        if store.result_files(out):
            raise SpecError(
                f"--out: {out} holds Parquet files but no {store.SPEC_FILE}; choose an empty folder"
            )
        return None
    if recorded["spec"]["partition"] != spec.partition and store.result_files(out):
        raise SpecError(
            f"--out: {out} is partitioned by {recorded['spec']['partition'] or 'nothing'}, the spec asks "
            f"for {spec.partition or 'none'}; keep partition: {recorded['spec']['partition'] or 'none'} or "
            "choose another folder"
        )
    changed = store.spec_changes(recorded["spec"], spec.canonical)
    if changed and not new:
        raise SpecError(
            f"--out: {out} holds the results of another spec (changed: {', '.join(changed)}); run with --new "
            "to adopt this spec there (finished cells it shares are kept), or choose another folder"
        )
    return recorded


def plan_run(
    spec: Spec, out: str, *, workers: int, chunk: int | None = None, finished: set[str] | None = None
) -> Plan:
    """The chunks still to run on ``workers`` slots (reads the folder unless ``finished`` is given;
    writes nothing)."""
    cells = spec.cells()
    finished = store.finished_cells(out) if finished is None else finished
    todo = [cell for cell in cells if cell["cell"] not in finished]
    seconds = cell_costs(spec, todo)
    cost = estimate(spec, todo)
    target = chunk_target(cost.seconds, workers)
    chunks = make_chunks(todo, seconds, out, spec.partition, spec.base_dir, target=target, size=chunk)
    return Plan(spec, out, len(cells), len(cells) - len(todo), chunks, cost, workers)


def cell_costs(spec: Spec, cells: list[dict[str, Any]]) -> list[float]:
    """Each cell's estimated seconds (zeros for a spec read back from its folder, which has no prices)."""
    from pgvar.sweep.cost import cell_seconds
    from pgvar.sweep.spec import cost_key

    if not spec.costs:
        return [0.0] * len(cells)
    return [cell_seconds(spec.costs[cost_key(cell)], cell) for cell in cells]


def check_options(engine: str, workers: int | None, address: str | None, chunk: int | None) -> int:
    """The run's options, checked before anything starts; returns the worker count."""
    make_engine(engine, None, address)  # checks the engine's name and --address
    if workers is not None:
        check_int(workers, "--workers", low=1, high=4096)
    if chunk is not None:
        check_int(chunk, "--chunk", low=1, high=1_000_000)
    if engine == "ray":
        from pgvar.sweep.engines import ray_available

        if not ray_available():
            raise SpecError(
                "--engine ray: needs the sweep extra (ray is missing): pip install 'pgvar[sweep]'"
            )
    if engine == "inline":
        return 1
    return workers or local_cores()


def run_sweep(
    spec: Spec,
    out: str,
    *,
    engine: str = "processes",
    workers: int | None = None,
    address: str | None = None,
    chunk: int | None = None,
    new: bool = False,
    on_start: Callable[[Plan], None] | None = None,
    on_chunk: Callable[[ChunkDone], None] | None = None,
) -> RunSummary:
    """Run the cells of ``spec`` not yet in ``out`` on ``engine``; resumable, see the module doc.

    ``on_start`` sees the :class:`Plan` once the folder is locked and read; ``on_chunk`` each chunk
    once its files are in place. A Ctrl-C (KeyboardInterrupt) stops the run with every committed
    chunk kept and returns a summary with ``interrupted``."""
    check_options(engine, workers, address, chunk)
    start = time.perf_counter()
    cells = rows = 0
    interrupted = False
    with store.locked(out):
        recorded = check_folder(spec, out, new)
        if recorded is None or recorded["spec"] != spec.canonical:
            record = {"format": store.STORE_FORMAT, "spec": spec.canonical, "cells": len(spec.cells())}
            store.write_spec(out, record)
        store.clean_temps(out)
        finished = store.finished_cells(out)
        try:
            with contextlib.ExitStack() as stack:
                # the engine starts only when there is work; its slots (a cluster's CPUs) size the chunks
                todo = any(cell["cell"] not in finished for cell in spec.cells())
                runner = stack.enter_context(make_engine(engine, workers, address)) if todo else None
                plan = plan_run(
                    spec, out, workers=runner.slots if runner else 1, chunk=chunk, finished=finished
                )
                if on_start is not None:
                    on_start(plan)
                for done in runner.run(plan.chunks) if runner else ():
                    store.commit(out, done.files)
                    cells, rows = cells + done.cells, rows + done.rows
                    if on_chunk is not None:
                        on_chunk(done)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            store.clean_temps(out)  # left by tasks that were retried, abandoned or lost
    return RunSummary(cells, rows, len(finished), len(spec.cells()), time.perf_counter() - start, interrupted)
