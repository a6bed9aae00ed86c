"""Server cost of one explorer tick, and memory over many ticks (no browser).

    .venv/bin/python benchmarks/bench_explorer.py [--ticks 40] [--memory-ticks 3000] [--mdp lesson]

A tick measures all four configurations at N (60 fresh batches, same episodes) plus vanilla at N = 1
for the ratio; "page" adds the redraw of every output into a Bokeh document (a server measures in the
tab's worker thread and redraws on its event loop; here both run inline, one after the other). The
budget is 50 ms of CPU per tick at N = 1024 and 60 batches, for a tick every 300 ms. The memory
check runs many ticks with a bounded history (200 points) and reports how the traced Python memory
grows after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc

BUDGET_MS = 50.0


def _timed(fn, ticks: int) -> tuple[float, float, float]:
    """(median wall ms, p90 wall ms, mean CPU ms) of ``fn`` over ``ticks`` calls."""
    walls = []
    cpu_start = time.process_time()
    for _ in range(ticks):
        start = time.perf_counter()
        fn()
        walls.append(1000 * (time.perf_counter() - start))
    cpu = 1000 * (time.process_time() - cpu_start) / ticks
    walls.sort()
    return statistics.median(walls), walls[int(0.9 * (len(walls) - 1))], cpu


def bench_ticks(mdp: str, ticks: int) -> dict[int, float]:
    from pgvar.explorer.state import ExplorerState, Knobs

    results = {}
    batches = Knobs().batches
    print(f"tick cost on {mdp!r}, {batches} batches, four configurations + vanilla at N=1 (ms):")
    print(f"  {'N':>5} {'state wall':>11} {'p90':>7} {'state CPU':>10} {'page wall':>10} {'page CPU':>9}")
    for n in (1, 1024):
        state = ExplorerState(mdp, seed=0)
        state.set_knobs(n=n, rtg=True, baseline=True)
        for _ in range(3):  # warm-up: numba cache load, exact values
            state.tick()
        median, p90, cpu = _timed(state.tick, ticks)
        page_median, _, page_cpu = _page_tick(mdp, n, ticks)
        results[n] = max(cpu, page_cpu)
        print(f"  {n:>5} {median:>11.1f} {p90:>7.1f} {cpu:>10.1f} {page_median:>10.1f} {page_cpu:>9.1f}")
    return results


def _page_tick(mdp: str, n: int, ticks: int) -> tuple[float, float, float]:
    """The page's whole tick (measure + redraw into a Bokeh document), without a browser or a server
    (the view then works inline)."""
    from bokeh.document import Document

    from pgvar.explorer.page import build

    view = build(mdp, seed=0, query={"N": str(n), "rtg": "1", "baseline": "1"})
    view.state._executor = None  # exact values computed in the warm-up tick, not in a thread
    view.layout.get_root(Document())

    def tick():
        view._next_allowed = 0.0
        view.on_tick()

    for _ in range(3):
        tick()
    return _timed(tick, ticks)


def bench_memory(mdp: str, ticks: int) -> tuple[float, int, int]:
    """Traced memory and live-object growth between a warmed-up tick and the last one."""
    import gc

    from bokeh.document import Document

    from pgvar.explorer.page import build

    view = build(mdp, seed=0, history=200)
    view.state._executor = None
    view.layout.get_root(Document())
    warmup = min(500, ticks // 3)

    def run(count: int) -> None:
        for _ in range(count):
            view._next_allowed = 0.0
            view.on_tick()

    run(warmup)
    tracemalloc.start()
    gc.collect()
    base, objects = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
    run(ticks - warmup)
    gc.collect()
    end, objects_end = tracemalloc.get_traced_memory()[0], len(gc.get_objects())
    tracemalloc.stop()
    growth_kib = (end - base) / 1024
    points = len(view.history_src.data["tick"])
    print(
        f"memory over {ticks} page ticks at N=1 (history 200), from tick {warmup} on: traced Python memory "
        f"{growth_kib:+.0f} KiB ({1024 * growth_kib / (ticks - warmup):+.0f} B per tick, allocator caches), "
        f"live objects {objects_end - objects:+d}; history holds {len(view.state.history)} points, "
        f"the plot's source {points}"
    )
    return growth_kib, points, objects_end - objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--memory-ticks", type=int, default=3000)
    parser.add_argument("--mdp", default="lesson")
    args = parser.parse_args(argv)
    cpu = bench_ticks(args.mdp, args.ticks)
    growth, points, objects = bench_memory(args.mdp, args.memory_ticks)
    ok = cpu[1024] < BUDGET_MS and points <= 200 and objects < 1000 and growth < 4096
    verdict = "within" if cpu[1024] < BUDGET_MS else "OVER"
    print(f"N=1024: {cpu[1024]:.1f} ms of CPU per tick, {verdict} the {BUDGET_MS:.0f} ms budget")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
