"""What a request may cost: memory and work are estimated before anything is allocated or looped.

Every entry point that allocates in proportion to its input (the exact engine's tables, the sampler's
plan and its batches, built-in MDPs' tables, MDP files) first estimates what it is about to use and
calls :func:`check`; above the current :class:`Limits` it raises :class:`BudgetError`, one line naming
the parameter, the estimate and the limit. The limits are a context variable: the library and the
command line default to ``DEFAULT`` (a settable share of this machine; ``pgvar --max-memory``,
``--max-seconds``), each explorer session runs under ``EXPLORER`` (about 2 GB and a few seconds).

    with pgvar.budget.limits(memory_gb=1, seconds=5):
        pgvar.exact_moments(mdp, theta, spec)   # refused up front if it would need more

Work is counted in seconds of one core at the rates measured in benchmarks/README.md (agent steps
per second of the Monte-Carlo kernels, entries per second of the exact engine's array passes), so an
estimate is good to a small factor, not to the percent.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from pgvar.errors import PgvarError

GB = 1e9
MAX_TABLE_ENTRIES = (
    50_000_000  # entries of an MDP's tables (transitions per step, state, action and next state)
)
MC_STEPS_PER_SECOND = (
    5e7  # agent steps per second of the Monte-Carlo kernels, a slow case (random MDP: 2e7 to 2e8)
)
EXACT_ENTRIES_PER_SECOND = 2e8  # entries of the exact engine's NumPy passes per second
NUMPY_CALL_SECONDS = 1e-5  # one small NumPy call from Python: what a loop over steps pays per call


class BudgetError(PgvarError):
    """A request would use more memory or time than the current limits allow."""


def _physical_memory() -> float:
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16 * GB


@dataclass(frozen=True)
class Limits:
    """Memory in bytes and work in seconds of one core that one request may use."""

    memory: float
    seconds: float

    def describe(self) -> str:
        return f"{self.memory / GB:.3g} GB of memory and {_duration(self.seconds)} of work"


DEFAULT = Limits(memory=min(8 * GB, 0.5 * _physical_memory()), seconds=600.0)
EXPLORER = Limits(memory=2 * GB, seconds=3.0)
_current: ContextVar[Limits] = ContextVar("pgvar_limits", default=DEFAULT)


def current() -> Limits:
    """The limits in force here (``DEFAULT`` unless :func:`limits` set others)."""
    return _current.get()


@contextlib.contextmanager
def limits(memory_gb: float | None = None, seconds: float | None = None) -> Iterator[Limits]:
    """Run the block under other limits (either may be left as it is)."""
    now = _current.get()
    new = Limits(
        memory=now.memory if memory_gb is None else memory_gb * GB,
        seconds=now.seconds if seconds is None else seconds,
    )
    token = _current.set(new)
    try:
        yield new
    finally:
        _current.reset(token)


@contextlib.contextmanager
def using(new: Limits) -> Iterator[Limits]:
    """Run the block under ``new`` (the explorer's per-session limits)."""
    token = _current.set(new)
    try:
        yield new
    finally:
        _current.reset(token)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"


def _size(nbytes: float) -> str:
    return f"{nbytes / GB:.3g} GB" if nbytes >= 0.1 * GB else f"{nbytes / 1e6:.3g} MB"


def check(what: str, *, memory: float = 0.0, seconds: float = 0.0, hint: str = "") -> None:
    """Refuse ``what`` (the parameter or request, as the user names it) when its estimated memory in
    bytes or work in seconds exceeds the current limits."""
    now = current()
    tail = f"; {hint}" if hint else ""
    if memory > now.memory:
        raise BudgetError(
            f"{what}: needs about {_size(memory)} of memory, over the limit of {_size(now.memory)}{tail}"
        )
    if seconds > now.seconds:
        raise BudgetError(
            f"{what}: needs about {_duration(seconds)} of work, over the limit of "
            f"{_duration(now.seconds)}{tail}"
        )


def check_steps(what: str, steps: float, *, memory: float = 0.0, hint: str = "") -> None:
    """:func:`check` for ``steps`` agent steps of Monte-Carlo sampling."""
    check(what, memory=memory, seconds=steps / MC_STEPS_PER_SECOND, hint=hint)


def check_table(what: str, entries: float) -> None:
    """Refuse an MDP whose tables would have more than ``MAX_TABLE_ENTRIES`` entries, or more than
    the current limits allow to build and check (a few passes over them)."""
    if entries > MAX_TABLE_ENTRIES:
        raise BudgetError(
            f"{what}: {entries:,.0f} table entries, over the {MAX_TABLE_ENTRIES:,} an MDP may have "
            "(the exact engine and the sampler work on these tables)"
        )
    check_entries(what, 3.0 * entries, passes=3.0)


def check_entries(what: str, entries: float, *, passes: float = 1.0, hint: str = "") -> None:
    """:func:`check` for arrays of ``entries`` float64 entries, made and passed over ``passes`` times."""
    check(what, memory=8.0 * entries, seconds=passes * entries / EXACT_ENTRIES_PER_SECOND, hint=hint)
