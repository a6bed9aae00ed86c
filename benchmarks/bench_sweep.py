"""pgvar sweep on one machine: 10^4 small tabular cells with each engine and worker count.

    .venv/bin/python benchmarks/bench_sweep.py [--cells 10000] [--rounds 1] [--json PATH]

Each cell is ``pgvar variance --json`` on the lesson's MDP (vanilla and reward-to-go, N = 1, 20
batches); the cells differ by their seed. Every run starts from an empty folder and ends with every
row in place (files written, fsynced and renamed). Reported per engine and worker count:

- wall: seconds of ``run_sweep``, the pool's start included (for ray: the local Ray, started before
  each timed run with ``workers`` CPUs, is not; its start is reported on its own line);
- cells/s: cells / wall; per cell: wall x workers / cells, in ms of one worker, and the overhead
  over ``inline`` (the same cells computed in this process, with no pool and no tasks);
- ray / processes: the ratio of throughputs at the same worker count (the issue's goal: >= 0.7).

Rounds interleave the engines, so that the ratios come from the same minutes of a shared machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

import pgvar.sweep
from pgvar.sweep.engines import local_cores, ray_session

SPEC = {"mdp": "lesson", "estimators": "vanilla,rtg", "N": 1, "batches": 20}


def timed_run(spec, folder: Path, engine: str, workers: int) -> float:
    out = folder / f"{engine}-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = pgvar.sweep.run_sweep(spec, str(out), engine=engine, workers=workers)
    seconds = time.perf_counter() - start
    assert summary.cells == summary.total, summary
    shutil.rmtree(out)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cores = local_cores()
    folder = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    spec_path = folder / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({**SPEC, "readings": args.cells}))
    spec = pgvar.sweep.load_spec(spec_path)
    pgvar.sweep.run_sweep(pgvar.sweep.load_spec(_warm(folder)), str(folder / "warm"), engine="inline")
    runs = [("inline", 1)] + [(engine, w) for w in range(1, cores + 1) for engine in ("processes", "ray")]
    seconds: dict[tuple[str, int], list[float]] = {key: [] for key in runs}
    ray_starts = []
    for _ in range(args.rounds):
        for engine, workers in runs:
            if engine != "ray":
                seconds[engine, workers].append(timed_run(spec, folder, engine, workers))
                continue
            start = time.perf_counter()
            with ray_session(workers=workers):  # a local Ray with `workers` CPUs, its start not timed
                ray_starts.append(time.perf_counter() - start)
                seconds[engine, workers].append(timed_run(spec, folder, engine, workers))
    shutil.rmtree(folder, ignore_errors=True)
    report(args.cells, cores, min(ray_starts), seconds, args.json)


def _warm(folder: Path) -> Path:
    """A few cells run first in this process: Numba's compiled kernels loaded before any timing."""
    path = folder / "warm.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "readings": 8}))
    return path


def report(cells: int, cores: int, ray_start: float, seconds, path: Path | None) -> None:
    best = {key: min(values) for key, values in seconds.items()}
    inline = best["inline", 1] / cells
    rows = []
    print(f"{cells:,} cells, {cores} cores; local Ray start: {ray_start:.1f} s (not in the times below)")
    print("| engine | workers | wall (s) | cells/s | per cell (ms of a worker) | overhead over inline (ms) |")
    print("|---|---:|---:|---:|---:|---:|")
    for (engine, workers), wall in best.items():
        per_cell = wall * workers / cells
        row = {"engine": engine, "workers": workers, "wall": wall, "cells_per_second": cells / wall,
               "per_cell_ms": 1e3 * per_cell, "overhead_ms": 1e3 * (per_cell - inline)}  # fmt: skip
        rows.append(row)
        print(f"| {engine} | {workers} | {wall:.1f} | {cells / wall:,.0f} | {1e3 * per_cell:.2f} | "
              f"{1e3 * (per_cell - inline):+.2f} |")  # fmt: skip
    ratios = {w: best["processes", w] / best["ray", w] for w in range(1, cores + 1)}
    print("ray / processes throughput: " + ", ".join(f"{w} worker(s) {r:.2f}x" for w, r in ratios.items()))
    scaling = {e: best[e, 1] / best[e, cores] for e in ("processes", "ray")}
    print(f"speed-up from 1 to {cores} workers: " + ", ".join(f"{e} {s:.2f}x" for e, s in scaling.items()))
    if path is not None:
        payload = {"cells": cells, "cores": cores, "ray_start": ray_start, "rows": rows,
                   "ray_vs_processes": ratios, "scaling": scaling,
                   "python": sys.version.split()[0]}  # fmt: skip
        path.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
