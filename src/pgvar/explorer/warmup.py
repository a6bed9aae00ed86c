"""Compile the numba kernels the explorer needs before the server prints its URL.

numba caches its compiled kernels on disk (``cache=True``), so only the first start after an install
(or after the cache was cleared) compiles; later starts load them in a fraction of a second. Without
this step the first page opened would wait for the compilation with no word of why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: Print a progress line when the warm-up takes longer than this (a fresh install compiles).
QUIET_SECONDS = 2.0


def _exercise() -> None:
    """Run every kind of work a page does once, on small settings: ticks with whole paths and step by
    step, the other baseline kinds, GAE, a learning step and the sweep over N."""
    from pgvar.explorer.state import ExplorerState

    state = ExplorerState("lesson", seed=0)
    state.tick()
    state.apply(n=2, rtg=True, baseline=True)
    state.tick()
    state.apply(baseline_kind="running-value", lam=0.9)
    state.tick()
    state.set_learning(True)
    state.tick()
    state.set_learning(False)
    state.apply(baseline_kind="value", lam=1.0, batches=20)
    state.sweep()
    corridor = ExplorerState("short-corridor", seed=0)  # an unbounded horizon: sampled step by step
    corridor.apply(batches=20)
    corridor.tick()


def warm_up(progress: Callable[[str], None] | None = None) -> float:
    """Load or compile the explorer's kernels; returns the seconds it took. ``progress`` gets one line
    when it takes longer than QUIET_SECONDS (a fresh install) and one when it is done."""
    start = time.perf_counter()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            _exercise()
        except BaseException as err:  # re-raised in the caller
            errors.append(err)

    worker = threading.Thread(target=run, name="pgvar-warm-up", daemon=True)
    worker.start()
    worker.join(QUIET_SECONDS)
    loud = worker.is_alive()
    if loud and progress is not None:
        progress("compiling the numba kernels (first start after an install: about half a minute)…")
    worker.join()
    if errors:
        raise errors[0]
    seconds = time.perf_counter() - start
    if loud and progress is not None:
        progress(f"kernels ready in {seconds:.1f} s (cached for the next starts)")
    return seconds
