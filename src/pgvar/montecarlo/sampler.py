"""The sampler: one plan, one episode source, and the first read-out that serves each request.

``Sampler(mdp, theta, specs)`` builds the plan once, picks the source (whole paths where the horizon
is finite and the paths few, else step by step) and, per call, the first read-out of ``READ_OUTS``
that applies; the result says which (``route``). Episodes come in blocks of whole batches, each block
one random stream of NumPy's PCG64 keyed by its index, so one seed gives the same numbers whatever the
number of threads; the read-outs differ only in how they add the episodes up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from pgvar import budget
from pgvar.baselines import RunningBaselines
from pgvar.errors import PgvarError, SpecError
from pgvar.estimators import EstimatorSpec
from pgvar.exact import Chain, expected_visits
from pgvar.mdp import TabularMDP
from pgvar.montecarlo.cells import Cells
from pgvar.montecarlo.path_moments import PathMoments
from pgvar.montecarlo.path_source import MAX_PATHS, PathSource
from pgvar.montecarlo.plan import Episodes, Plan, make_plan
from pgvar.montecarlo.readout import ReadingSums, ReadOut, Request
from pgvar.montecarlo.step_source import StepSource
from pgvar.validation import check_choice, check_int

DEFAULT_BATCHES = 60
DEFAULT_WARMUP = 1000  # episodes that warm running baselines up when no running state is passed
READ_OUTS: tuple[type[ReadOut], ...] = (PathMoments, Cells)  # the first that applies serves a request
METHODS = ("auto", "paths", "steps")
_WARMUP_STREAM = 1 << 30  # the warm-up's stream key, apart from the blocks'
_NAMES = [kind.name for kind in READ_OUTS]


@dataclass
class Sample:
    """Batch means of every estimator: ``batch_means_emd`` has shape (E, M, D). ``count_ts`` and
    ``sum_g_ts`` (T, S) total this call's visits and reward-to-go per (step, state), from which a
    caller can fit a value table; ``route`` names the read-out that served the call."""

    specs: list[EstimatorSpec]
    n: int
    route: str
    batch_means_emd: np.ndarray
    truncated_episodes: int
    running: RunningBaselines = field(repr=False)
    count_ts: np.ndarray = field(repr=False)
    sum_g_ts: np.ndarray = field(repr=False)


@dataclass
class Readings:
    """Many readings of the KPI from one call: ``variance_trace_re`` (R, E) is reading r's trace of
    the covariance of its ``batches`` batch means, per estimator (see :meth:`Sampler.readings`)."""

    specs: list[EstimatorSpec]
    n: int
    batches: int
    route: str
    variance_trace_re: np.ndarray
    truncated_episodes: int
    running: RunningBaselines = field(repr=False)


class Sampler:
    """A plan for Monte-Carlo measurement of ``specs`` on one MDP and policy: the policy, transition
    and baseline tables are computed once, so repeated readings (the explorer, a sweep over N) pay only
    for the episodes.

    ``method``: ``paths`` draws each episode's whole path at once from its exact probability (finite
    horizon, at most ``MAX_PATHS`` paths), ``steps`` walks the MDP step by step, ``auto`` (default)
    takes paths where it can. Both sample the same distribution; the random numbers, and so the
    figures for one seed, differ between them. ``learned_ts`` is the (T, S) table of a ``learned``
    baseline; ``chain`` (``exact.unroll``) is reused for exact baselines when given."""

    def __init__(
        self,
        mdp: TabularMDP,
        theta: np.ndarray,
        specs: Sequence[EstimatorSpec],
        *,
        chain: Chain | None = None,
        learned_ts: np.ndarray | None = None,
        method: str = "auto",
    ) -> None:
        check_choice(method, "method", METHODS)
        self.plan: Plan = make_plan(mdp, theta, specs, chain=chain, learned_ts=learned_ts)
        source = PathSource.build(self.plan) if method != "steps" else None
        if method == "paths" and source is None:
            raise SpecError(f"method: paths needs a finite horizon and at most {MAX_PATHS} paths; use steps")
        self.source: PathSource | StepSource = source if source is not None else StepSource.build(self.plan)
        self._read_outs: dict[str, ReadOut] = {}
        self._chosen: dict[tuple, ReadOut] = {}

    @cached_property
    def episode_steps(self) -> float:
        """Steps an episode takes on average, for cost estimates: the horizon (an upper bound) for
        finite horizons, the expected length (capped at the step cap) for unbounded episodes."""
        plan = self.plan
        if plan.mdp.horizon is not None:
            return float(plan.mdp.horizon)
        try:
            return min(float(expected_visits(plan.mdp, plan.theta).sum()), float(plan.max_steps))
        except budget.BudgetError:
            raise
        except PgvarError:  # episodes that (almost) never end: every one runs to the cap
            return float(plan.max_steps)

    def check_cost(self, what: str, episodes: float, readings: float) -> None:
        """Refuse ``episodes`` episodes kept as ``readings`` sums of every estimator's gradient when
        they exceed the current limits (``pgvar.budget``); ``what`` names the request."""
        plan = self.plan
        steps = episodes * self.episode_steps
        memory = 8.0 * 3 * readings * plan.n_estimators * plan.n_params
        budget.check_steps(
            f"{what}: {episodes:,.0f} episodes, about {steps:,.3g} agent steps", steps, memory=memory
        )

    @property
    def specs(self) -> list[EstimatorSpec]:
        return list(self.plan.specs)

    @property
    def method(self) -> str:
        """How episodes are drawn: ``paths`` or ``steps``."""
        return self.source.name

    def route(self, n: int, batches: int = DEFAULT_BATCHES, per_reading: int = 1) -> str:
        """The read-out that serves batches of ``n`` episodes read ``per_reading`` batches at a time."""
        request = Request(n, batches, per_reading)
        return next(kind.name for kind in READ_OUTS if kind.applies(self.plan, self.source, request))

    def _read_out(self, request: Request, route: str) -> ReadOut:
        """The read-out named ``route`` (``auto``: the first that applies), made once per sampler."""
        key = (route, request.n == 1, request.per_reading)  # what ``applies`` looks at, besides the plan
        if key not in self._chosen:
            if route == "auto":
                route = self.route(request.n, request.batches, request.per_reading)
            kind = READ_OUTS[_NAMES.index(check_choice(route, "route", ["auto", *_NAMES]))]
            if not kind.applies(self.plan, self.source, request):
                raise SpecError(f"route: {route} does not apply to this request")
            if route not in self._read_outs:
                self._read_outs[route] = kind(self.plan, self.source)
            self._chosen[key] = self._read_outs[route]
        return self._chosen[key]

    def sample(
        self,
        n: int,
        batches: int = DEFAULT_BATCHES,
        seed: int | np.random.SeedSequence = 0,
        *,
        warmup: int | None = None,
        running: RunningBaselines | None = None,
        workers: int = 1,
        progress: Callable[[int], None] | None = None,
        route: str = "auto",
    ) -> Sample:
        """Simulate ``warmup + batches * n`` episodes and return every estimator's batch means.

        Running baselines (``lesson``, ``running``, ``running-value``) see only episodes of earlier
        batches or of the warm-up (default: ``DEFAULT_WARMUP`` episodes when a running baseline is
        measured and ``running`` is not given); pass ``running`` to carry them across calls. GAE's
        value function is fixed: exact V, the exact limit of a running mean, zero, or the learned
        table. Episodes are split into blocks of whole batches, each with its own random stream, so
        ``workers`` threads give the same numbers as one. ``route`` forces a read-out by name."""
        request = Request(check_int(n, "N", low=1), check_int(batches, "batches", low=1), 1)
        self.check_cost(f"N={n}, batches={batches}", float(n) * batches + (warmup or 0), batches)
        running = self._running(running, warmup, seed)
        count_ts, sum_g_ts = running.count_ts.copy(), running.sum_g_ts.copy()
        read_out, sums, truncated = self._run(request, seed, running, workers, progress, route)
        return Sample(
            self.specs, n, read_out.name, sums.sum_red.transpose(1, 0, 2), truncated, running,
            running.count_ts - count_ts, running.sum_g_ts - sum_g_ts,
        )  # fmt: skip

    def readings(
        self,
        n: int,
        batches: int = DEFAULT_BATCHES,
        count: int = 1,
        seed: int | np.random.SeedSequence = 0,
        *,
        warmup: int | None = None,
        running: RunningBaselines | None = None,
        workers: int = 1,
        progress: Callable[[int], None] | None = None,
        route: str = "auto",
    ) -> Readings:
        """``count`` independent readings of the KPI, each from ``batches`` batches of ``n`` episodes:
        the trace of the covariance of the batch means per reading and estimator, computed as the
        episodes are drawn, without keeping the batch means. Reading r is what ``kpi.variance_trace``
        gives on batches ``r * batches`` .. ``(r + 1) * batches - 1`` of ``sample(n, batches * count,
        seed)`` (up to rounding, on the same route): the same episodes, running baselines carried from
        reading to reading."""
        check_int(n, "N", low=1)
        check_int(batches, "batches", low=2)
        check_int(count, "count", low=1)
        self.check_cost(
            f"N={n}, batches={batches}, count={count}", float(n) * batches * count + (warmup or 0), count
        )
        running = self._running(running, warmup, seed)
        request = Request(n, batches * count, batches)
        read_out, sums, truncated = self._run(request, seed, running, workers, progress, route)
        return Readings(self.specs, n, batches, read_out.name, sums.variance_trace_re(), truncated, running)

    def episodes(
        self, n: int, batches: int, seed: int | np.random.SeedSequence = 0, *, per_reading: int = 1,
        route: str = "auto",
    ) -> Episodes:  # fmt: skip
        """The episodes that ``batches`` batches of ``n`` read ``per_reading`` at a time are made of,
        in order (no warm-up): for looking at them, and for checking a read-out against the reference
        estimator (``estimators.episode_gradients``)."""
        request = Request(check_int(n, "N", low=1), check_int(batches, "batches", low=1), per_reading)
        read_out = self._read_out(request, route)
        return Episodes.concatenate(
            [
                self.source.episodes(stream, episodes)
                for stream, _, episodes in self._blocks(request, read_out, seed)
            ]
        )

    def _running(
        self, running: RunningBaselines | None, warmup: int | None, seed: int | np.random.SeedSequence
    ) -> RunningBaselines:
        """The running state a call starts from, warmed up when asked (or by default without one)."""
        plan = self.plan
        has_running = bool((plan.mean_e != 0).any())
        if warmup is None:
            warmup = DEFAULT_WARMUP if has_running and running is None else 0
        check_int(warmup, "warmup", low=0)
        running = running if running is not None else RunningBaselines.empty(plan.steps, plan.mdp.n_states)
        running.fit(plan.steps, plan.mdp.n_states)
        if warmup > 0:
            cells = self._read_out(Request(warmup, 1, 1), "cells")
            stream = _stream(_root(seed), _WARMUP_STREAM)
            discard = ReadingSums.zeros(1, plan.n_estimators, plan.n_params, 1)
            cells.read(cells.draw(stream, warmup, warmup), warmup, 0, running, discard)
        return running

    def _blocks(self, request: Request, read_out: ReadOut, seed: int | np.random.SeedSequence):
        """(stream, first batch, episodes) of each block of whole batches."""
        root = _root(seed)
        per_block = read_out.block_batches(request.n)
        for index, first in enumerate(range(0, request.batches, per_block)):
            batches = min(per_block, request.batches - first)
            yield _stream(root, index), first, batches * request.n

    def _run(
        self,
        request: Request,
        seed: int | np.random.SeedSequence,
        running: RunningBaselines,
        workers: int,
        progress: Callable[[int], None] | None,
        route: str,
    ) -> tuple[ReadOut, ReadingSums, int]:
        """Draw and read every block of ``request`` into per-reading sums."""
        plan = self.plan
        read_out = self._read_out(request, route)
        n = request.n
        sums = ReadingSums.zeros(request.batches // request.per_reading, plan.n_estimators, plan.n_params,
                                 request.per_reading)  # fmt: skip
        blocks = list(self._blocks(request, read_out, seed))
        truncated = 0

        def read(index: int, drawn) -> None:
            nonlocal truncated
            _, first, episodes = blocks[index]
            truncated += read_out.read(drawn, n, first, running, sums)
            if progress is not None:
                progress(episodes)

        if workers <= 1 or len(blocks) == 1:
            for index, (stream, _, episodes) in enumerate(blocks):
                read(index, read_out.draw(stream, episodes, n))
        else:
            # a sliding window of 2 blocks per thread: threads never wait for the read-out, and at most
            # that many drawn blocks are held at once
            with ThreadPoolExecutor(max_workers=workers) as pool:
                pending: deque = deque()
                for index, (stream, _, episodes) in enumerate(blocks):
                    pending.append(pool.submit(read_out.draw, stream, episodes, n))
                    if len(pending) == 2 * workers:
                        read(index - len(pending) + 1, pending.popleft().result())
                while pending:
                    read(len(blocks) - len(pending), pending.popleft().result())
        return read_out, sums, truncated


def _root(seed: int | np.random.SeedSequence) -> np.random.SeedSequence:
    if isinstance(seed, np.random.SeedSequence):
        return seed
    return np.random.SeedSequence(check_int(seed, "seed", low=0))


def _stream(root: np.random.SeedSequence, key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, key))


def sample_batch_means(
    mdp: TabularMDP,
    theta: np.ndarray,
    specs: Sequence[EstimatorSpec],
    n: int,
    batches: int = DEFAULT_BATCHES,
    seed: int | np.random.SeedSequence = 0,
    *,
    warmup: int | None = None,
    running: RunningBaselines | None = None,
    chain: Chain | None = None,
    workers: int = 1,
    learned_ts: np.ndarray | None = None,
    progress: Callable[[int], None] | None = None,
    method: str = "auto",
) -> Sample:
    """``Sampler(mdp, theta, specs, ...).sample(n, batches, seed, ...)`` in one call; for repeated
    readings build the :class:`Sampler` once."""
    sampler = Sampler(mdp, theta, specs, chain=chain, learned_ts=learned_ts, method=method)
    return sampler.sample(
        n, batches, seed, warmup=warmup, running=running, workers=workers, progress=progress
    )


def estimate_gradient(
    mdp: TabularMDP,
    theta: np.ndarray,
    spec: EstimatorSpec,
    n: int,
    seed: int | np.random.SeedSequence = 0,
    *,
    running: RunningBaselines | None = None,
    learned_ts: np.ndarray | None = None,
) -> np.ndarray:
    """One batch-mean gradient estimate from ``n`` fresh episodes, shaped like theta (what one step
    of stochastic gradient ascent uses). Pass ``running`` to keep running baselines across steps and
    ``learned_ts`` for a ``learned`` baseline."""
    sample = sample_batch_means(mdp, theta, [spec], n, 1, seed, running=running, learned_ts=learned_ts)
    return sample.batch_means_emd[0, 0].reshape(theta.shape)
