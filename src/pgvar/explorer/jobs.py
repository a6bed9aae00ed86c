"""Each explorer session's heavy work, off the server's event loop, under the session's limits.

A :class:`SessionJobs` runs one session's jobs one at a time, in order, on the session's own thread,
each under ``budget.EXPLORER`` (:func:`pgvar.budget.using` inside the thread: context variables do
not cross threads by themselves). The event loop only submits jobs and draws their results, so a
session that builds a large MDP, computes exact values or renders a PNG never stalls another one.
When the session ends, :meth:`SessionJobs.close` cancels the jobs still queued, lets the running one
finish (the limits bound it to a few seconds), drops its result and runs a last job that frees the
session's memory.

``inline=True`` runs each job at once in the caller's thread (a notebook, the tests, the benchmark).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pgvar import budget


class SessionJobs:
    """One session's queue of jobs: one thread, one job at a time, in order, under ``limits``."""

    def __init__(self, limits: budget.Limits = budget.EXPLORER, *, inline: bool = False) -> None:
        self.limits = limits
        self.inline = inline
        self.closed = False
        self._lock = threading.Lock()
        self._pending: set[Future] = set()
        self._pool = None if inline else ThreadPoolExecutor(1, thread_name_prefix="pgvar-session")

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        with budget.using(self.limits):
            return fn(*args)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Queue ``fn(*args)``; its future (already done when inline; cancelled once closed)."""
        if self.closed:
            future: Future = Future()
            future.cancel()
            return future
        if self._pool is None:
            future = Future()
            future.set_running_or_notify_cancel()
            try:
                future.set_result(self._call(fn, args))
            except BaseException as err:  # the future carries it, as a thread's would
                future.set_exception(err)
            return future
        with self._lock:
            future = self._pool.submit(self._call, fn, args)
            self._pending.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future) -> None:
        with self._lock:
            self._pending.discard(future)

    @property
    def busy(self) -> bool:
        """True while a job is queued or running."""
        with self._lock:
            return bool(self._pending)

    def close(self, last: Callable[[], None] | None = None) -> None:
        """Cancel the queued jobs, then run ``last`` after the running one (if any) and stop the thread.
        Never waits."""
        if self.closed:
            return
        self.closed = True
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()
        if self._pool is None:
            if last is not None:
                last()
            return
        if last is not None:
            self._pool.submit(self._call, last, ())
        self._pool.shutdown(wait=False)
