"""Where chunks of cells run: ``inline`` (this process, for debugging), ``processes`` (a local pool,
the default) or ``ray`` (Ray core tasks, on a local Ray started on demand or on a cluster).

Every engine runs the same function on a chunk, :func:`run_chunk`: compute each cell's rows
(:func:`pgvar.sweep.rows.cell_rows`) and write them under temporary names
(:func:`pgvar.sweep.store.write_chunk`). It hands back the file names, never the rows: the driver
only renames (commits) them, so results do not travel through it, on one machine or on a cluster.
A chunk's rows depend on its cells only, so every engine and worker count gives the same files.

An engine is a context manager whose ``run(chunks)`` yields each :class:`ChunkDone` as it finishes
(in any order); leaving the block stops what is still running. Its ``slots`` (known once entered)
say how many chunks run at once: the driver cuts the cells into chunks for them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from pgvar.errors import PgvarError, SpecError

ENGINES = ("inline", "processes", "ray")
RAY_RETRIES = 3  # a chunk whose worker (or node) dies is run again, up to this many times
ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")  # a worker per core, one thread


@dataclass(frozen=True)
class Chunk:
    """Cells run as one task: ``id`` names its files, ``out`` is the results folder (as the workers
    see it), ``base_dir`` the folder the spec's relative file names are read from, ``limits`` the
    driver's budget (memory in bytes, seconds), which each cell runs under."""

    id: str
    cells: tuple[dict[str, Any], ...]
    out: str
    partition: str | None
    base_dir: str
    limits: tuple[float, float] | None = None


@dataclass(frozen=True)
class ChunkDone:
    """A finished chunk: its temporary and final file names, its cells and rows, its seconds of work."""

    chunk: str
    files: tuple[tuple[str, str], ...]
    cells: int
    rows: int
    seconds: float


def run_chunk(chunk: Chunk) -> ChunkDone:
    """Compute a chunk's rows and write them under temporary names (what every worker runs)."""
    from pgvar import budget
    from pgvar.sweep.rows import cell_rows
    from pgvar.sweep.store import write_chunk

    start = time.perf_counter()
    limits = budget.current() if chunk.limits is None else budget.Limits(*chunk.limits)
    with budget.using(limits):
        rows = [row for cell in chunk.cells for row in cell_rows(cell, chunk.base_dir)]
    files = write_chunk(chunk.out, chunk.partition, chunk.id, rows)
    return ChunkDone(chunk.id, tuple(files), len(chunk.cells), len(rows), time.perf_counter() - start)


def local_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Inline:
    """Each chunk in this process, one after the other."""

    name = "inline"
    slots = 1

    def __enter__(self) -> Inline:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def run(self, chunks: Sequence[Chunk]) -> Iterator[ChunkDone]:
        for chunk in chunks:
            yield run_chunk(chunk)


def _quiet_worker() -> None:
    """A pool worker ignores Ctrl-C: the driver decides what stops (see :class:`Processes`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Processes:
    """A pool of ``workers`` local processes (forkserver where there is one, else spawn), each with
    one BLAS thread (unless the environment says otherwise); each worker takes the next chunk. On
    Ctrl-C the driver stops handing out chunks and waits for the running ones (at most a few seconds
    each), which are kept; a second Ctrl-C abandons them."""

    name = "processes"

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.slots = workers
        self.pool: ProcessPoolExecutor | None = None
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> Processes:
        self._saved = {name: os.environ.get(name) for name in ONE_THREAD}
        for name in ONE_THREAD:  # read by the workers' NumPy (BLAS) as they start, as Ray's workers do
            os.environ.setdefault(name, "1")
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if context.get_start_method() == "forkserver":
            context.set_forkserver_preload(["pgvar.sweep.rows", "pgvar.sweep.store", "pyarrow.parquet"])
        self.pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_quiet_worker)
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
        finally:
            for name, value in self._saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    def run(self, chunks: Sequence[Chunk]) -> Iterator[ChunkDone]:
        assert self.pool is not None
        pending = {self.pool.submit(run_chunk, chunk) for chunk in chunks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        except BrokenProcessPool:
            raise PgvarError(
                "--engine processes: a worker process died (killed, or out of memory); the finished cells "
                "are kept: run the same command to resume (--engine ray runs a lost worker's chunks again)"
            ) from None
        except KeyboardInterrupt:
            for future in pending:
                future.cancel()
            running = [future for future in pending if not future.cancelled()]
            for future in running:  # a second Ctrl-C leaves from here
                with contextlib.suppress(Exception):
                    yield future.result()
            raise


def ray_available() -> bool:
    """Whether Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def _loopback_only(ray) -> Iterator[None]:
    """While a local Ray starts: a single-machine Ray, whose node address is 127.0.0.1 and whose
    servers (GCS, raylet, workers) listen on 127.0.0.1 only. Ray 2.x does so where clusters are off
    (its default on macOS and Windows; ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when ray is
    imported, hence the constant set too); elsewhere it would replace 127.0.0.1 by the machine's
    address and listen on every interface. Both are restored once Ray has started."""
    constants = getattr(getattr(ray, "_private", None), "ray_constants", None)
    before_env = os.environ.get(SINGLE_MACHINE_ENV)
    before = getattr(constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[SINGLE_MACHINE_ENV] = "0"
    if before is not None:
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if before_env is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = before_env
        if before is not None:
            constants.ENABLE_RAY_CLUSTER = before


@contextlib.contextmanager
def ray_session(workers: int | None = None, address: str | None = None) -> Iterator[Any]:
    """Ray for the block: the session already open in this process if there is one (left open),
    else a connection to ``address`` (``auto`` or ``HOST:PORT``; a cluster left running), else a
    local Ray with ``workers`` CPUs and no dashboard, on 127.0.0.1 only (:func:`_loopback_only`),
    shut down at the end."""
    try:
        import ray
    except ImportError:
        raise SpecError(
            "--engine ray: needs the sweep extra (ray is missing): pip install 'pgvar[sweep]'"
        ) from None
    if ray.is_initialized():
        yield ray
        return
    import logging

    quiet = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}
    if address is not None:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as error:
            raise SpecError(f"--address: no Ray cluster at {address} ({error})") from None
    else:
        with _loopback_only(ray):
            ray.init(
                address="local",  # a new instance, even where `ray start` left a cluster's address
                num_cpus=workers or local_cores(),
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                **quiet,
            )
    try:
        yield ray
    finally:
        ray.shutdown()


class Ray:
    """One Ray core task per chunk (``num_cpus=1``), retried by Ray up to ``RAY_RETRIES`` times when
    its worker process or node dies. On Ctrl-C the driver stops waiting and leaves Ray (a local Ray
    is shut down, which stops its workers; on a cluster the job ends and Ray stops its tasks); the
    chunks already committed are kept."""

    name = "ray"

    def __init__(self, workers: int | None, address: str | None) -> None:
        self.workers = workers
        self.address = address
        self._session: contextlib.ExitStack | None = None
        self.ray: Any = None
        self.slots = workers or 1

    def __enter__(self) -> Ray:
        self._session = contextlib.ExitStack()
        self.ray = self._session.enter_context(ray_session(self.workers, self.address))
        self.slots = max(int(self.ray.cluster_resources().get("CPU", 1)), 1)  # a cluster's, not --workers
        return self

    def __exit__(self, *exc) -> None:
        if self._session is not None:
            self._session.close()

    def run(self, chunks: Sequence[Chunk]) -> Iterator[ChunkDone]:
        ray = self.ray
        task = ray.remote(num_cpus=1, max_retries=RAY_RETRIES, retry_exceptions=False)(run_chunk)
        pending = [task.remote(chunk) for chunk in chunks]
        while pending:  # on Ctrl-C, leaving the session ends the job and its tasks (no ray.cancel:
            done, pending = ray.wait(pending, num_returns=1)  # in Ray 2.60 it can abort the driver)
            for ref in done:
                yield ray.get(ref)


def make_engine(name: str, workers: int | None, address: str | None):
    """The engine called ``name`` (checked), with ``workers`` processes or CPUs (default: all local cores)."""
    if name not in ENGINES:
        raise SpecError(f"--engine: unknown {name!r}; use one of {', '.join(ENGINES)}")
    if address is not None and name != "ray":
        raise SpecError("--address: applies to --engine ray only")
    if name == "inline":
        return Inline()
    if name == "processes":
        return Processes(workers or local_cores())
    return Ray(workers, address)
