"""The results folder: Parquet files that are whole or absent, partitioned Hive-style, and nothing else.

    DIR/_sweep.json                          the spec (canonical), written before the first cell
    DIR/.lock                                held (flock) while a sweep runs here
    DIR/COLUMN=VALUE/part-CHUNK.parquet      the rows of a chunk of cells, partitioned by COLUMN
    DIR/COLUMN=VALUE/.part-CHUNK-X.parquet.tmp   a file being written (ignored; removed by the next run)

A worker writes a chunk's rows under a temporary name in the folder they go to, flushes and fsyncs it,
and hands the name back; the driver's rename (``os.replace``, atomic on POSIX filesystems) puts it in
place, and the folder is fsynced. A reader globs ``*.parquet`` and so never sees a partial file, and a
cell is finished exactly when a file holding its rows has its final name: the set of finished cells
is the ``cell`` column of the files in place. ``CHUNK`` is a hash of the chunk's cells, so the same
spec run the same way gives the same file names.

Values in folder names are percent-encoded (``/``, ``:``, ``,``, ``=``, spaces), a null value is
``__HIVE_DEFAULT_PARTITION__``; DuckDB's ``hive_partitioning`` reads both back.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from pgvar.errors import SpecError

SPEC_FILE = "_sweep.json"  # pyarrow, pandas and Spark skip names that start with _ or .
LOCK_FILE = ".lock"
TEMP_SUFFIX = ".parquet.tmp"
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"
STORE_FORMAT = 1


def schema():
    """The Arrow schema of every file: the same in all of them, so DuckDB, pandas and pyarrow read
    the folder as one table. Option columns first, then the keys of ``pgvar variance --json``."""
    import pyarrow as pa

    f64, i64, text = pa.float64(), pa.int64(), pa.string()
    return pa.schema([
        ("cell", text),
        ("mdp", text), ("theta", text), ("env", text), ("policy", text), ("policy_seed", i64),
        ("weights", text), ("reference_episodes", i64), ("estimators", text),
        ("N", i64), ("seed", i64), ("batches", i64), ("entropy", f64),
        ("estimator", text), ("spec", text), ("label", text),
        ("variance_trace", f64), ("ci95", pa.list_(f64)), ("ci95_reliable", pa.bool_()),
        ("exact_variance_trace", f64), ("vs_vanilla_n1", f64), ("vs_vanilla", f64), ("snr", f64),
        ("cosine_to_exact", f64), ("cosine_to_true", f64), ("pairwise_cosine", f64),
        ("noise_scale", pa.struct([("value", f64), ("ci95", pa.list_(f64)), ("batch_for_cosine_0.9", f64)])),
        ("layers", pa.map_(text, f64)),
        ("mdp_resolved", text), ("theta_resolved", text), ("env_resolved", text), ("policy_resolved", text),
        ("parameters", i64), ("sampling", text), ("paths", i64), ("exact_note", text),
        ("true_gradient", text),
        ("reference", pa.struct([("episodes", i64), ("norm", f64), ("standard_error", f64)])),
        ("error", text), ("pgvar_version", text), ("cell_seconds", f64),
    ])  # fmt: skip


DUCKDB_TYPES = {
    "N": "BIGINT",
    "seed": "BIGINT",
    "batches": "BIGINT",
    "policy_seed": "BIGINT",
    "entropy": "DOUBLE",
}


def partition_folder(column: str | None, value: object) -> str:
    """``COLUMN=VALUE`` (percent-encoded; floats as Python spells them), or ``""`` without a column."""
    from urllib.parse import quote

    if column is None:
        return ""
    if value is None:
        return f"{column}={NULL_PARTITION}"
    text = repr(float(value)) if isinstance(value, float) else str(value)
    return f"{column}={quote(text, safe='')}"


def chunk_id(cells: Iterable[str]) -> str:
    """A chunk's name: a hash of its cells' identities, in order."""
    return hashlib.sha256("\n".join(cells).encode()).hexdigest()[:16]


def location(out: str) -> tuple[Any, str]:
    """Where a results folder lives: ``(None, out)`` for a local path, ``(filesystem, path)`` for a
    URI that pyarrow's filesystems read (``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``,
    ``file:///...``)."""
    if "://" not in out:
        return None, out
    from pyarrow import fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(out)
    except (ValueError, OSError) as error:  # pyarrow.ArrowInvalid is a ValueError
        raise SpecError(f"--out: {out}: {' '.join(str(error).split())}") from None
    return filesystem, path.rstrip("/")


def is_remote(out: str) -> bool:
    """Whether ``out`` is a URI (read and written through a pyarrow filesystem)."""
    return "://" in out


def _join(*parts: str) -> str:
    return "/".join(part.rstrip("/") for part in parts if part)


def write_chunk(
    out: str, partition: str | None, chunk: str, rows: Sequence[Mapping[str, Any]]
) -> list[tuple[str, str]]:
    """Write a chunk's rows, one file per partition value, each under a temporary name, flushed and
    fsynced (run by the worker; on object storage an object appears whole when its upload ends).
    Returns (temporary, final) paths for the driver to rename."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    filesystem, root = location(out)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        folder = partition_folder(partition, row.get(partition) if partition else None)
        groups.setdefault(folder, []).append(row)
    written = []
    for folder, members in groups.items():
        where = _join(root, folder)
        final = _join(where, f"part-{chunk}.parquet")
        temp = _join(where, f".part-{chunk}-{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")
        table = pa.Table.from_pylist(list(members), schema=schema())
        if filesystem is None:
            os.makedirs(where, exist_ok=True)
            with open(temp, "wb") as handle:
                pq.write_table(table, handle, compression="zstd")
                handle.flush()
                os.fsync(handle.fileno())
        else:
            filesystem.create_dir(where, recursive=True)
            with filesystem.open_output_stream(temp) as stream:
                pq.write_table(table, stream, compression="zstd")
        written.append((temp, final))
    return written


def commit(out: str, files: Iterable[tuple[str, str]]) -> None:
    """Rename each temporary file into place (the driver's one write): ``os.replace`` and an fsync
    of its folder on a local or shared filesystem, the filesystem's move on a URI."""
    filesystem, _ = location(out)
    folders = set()
    for temp, final in files:
        if filesystem is None:
            os.replace(temp, final)
            folders.add(os.path.dirname(final))
        else:
            filesystem.move(temp, final)
    for folder in folders:
        _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a folder be opened or synced
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _listing(out: str) -> list[str]:
    """Every file under ``out`` (paths inside its filesystem), sorted."""
    filesystem, root = location(out)
    if filesystem is None:
        base = Path(root)
        return sorted(str(path) for path in base.rglob("*") if path.is_file()) if base.is_dir() else []
    from pyarrow import fs as pafs

    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    return sorted(info.path for info in filesystem.get_file_info(selector) if info.type == pafs.FileType.File)


def result_files(out: str) -> list[str]:
    """Every results file in place (final names only), sorted."""
    return [path for path in _listing(out) if path.endswith(".parquet") and not _name(path).startswith(".")]


def temp_files(out: str) -> list[str]:
    """Files left half-written (by a crash, a killed worker, a retried task)."""
    return [path for path in _listing(out) if path.endswith(TEMP_SUFFIX)]


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def clean_temps(out: str) -> int:
    """Remove every temporary file (only while holding the lock: none is being written). Returns how many."""
    filesystem, _ = location(out)
    removed = 0
    for path in temp_files(out):
        with contextlib.suppress(FileNotFoundError):
            if filesystem is None:
                os.remove(path)
            else:
                filesystem.delete_file(path)
            removed += 1
    return removed


def arrow_dataset(out: str, files: list[str] | None = None):
    """The results files as one pyarrow dataset (every file has the same schema)."""
    import pyarrow.dataset as ds

    filesystem, _ = location(out)
    files = result_files(out) if files is None else files
    return ds.dataset(files, format="parquet", schema=schema(), filesystem=filesystem)


def finished_cells(out: str) -> set[str]:
    """The identities of the cells whose rows are in place."""
    files = result_files(out)
    if not files:
        return set()
    try:
        table = arrow_dataset(out, files).to_table(columns=["cell"])
    except OSError as error:
        raise SpecError(
            f"{out}: a results file cannot be read ({error}); move it away and run again"
        ) from None
    return set(table.column("cell").to_pylist())


def exists(out: str) -> bool:
    """Whether the folder ``out`` exists."""
    filesystem, root = location(out)
    if filesystem is None:
        return os.path.isdir(root)
    from pyarrow import fs as pafs

    return filesystem.get_file_info(root).type == pafs.FileType.Directory


def read_spec(out: str) -> dict[str, Any] | None:
    """What ``DIR/_sweep.json`` holds, or None when there is none."""
    filesystem, root = location(out)
    path = _join(root, SPEC_FILE)
    try:
        if filesystem is None:
            with open(path) as handle:
                return json.load(handle)
        with filesystem.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise SpecError(f"{path}: cannot read the sweep's spec ({error})") from None


def write_spec(out: str, record: Mapping[str, Any]) -> None:
    """Write ``DIR/_sweep.json`` as every file here is written: temporary name, fsync, rename."""
    filesystem, root = location(out)
    path = _join(root, SPEC_FILE)
    temp = f"{path}.{uuid.uuid4().hex[:12]}.tmp"
    text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
    if filesystem is not None:
        filesystem.create_dir(root, recursive=True)
        with filesystem.open_output_stream(temp) as stream:
            stream.write(text.encode())
        filesystem.move(temp, path)
        return
    os.makedirs(root, exist_ok=True)
    with open(temp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_dir(root)


def spec_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The keys of the grid (and the partition, the files) that differ between two canonical specs."""
    changed = sorted(
        key for key in set(old["grid"]) | set(new["grid"]) if old["grid"].get(key) != new["grid"].get(key)
    )
    if old.get("partition") != new.get("partition"):
        changed.append("partition")
    if old.get("files") != new.get("files"):
        changed.append("files")
    return changed


@contextlib.contextmanager
def locked(out: str) -> Iterator[None]:
    """Hold ``DIR/.lock`` for the block: a second sweep on the same folder is refused (one line).
    The kernel drops the lock when the process dies, kill -9 included. A URI has no lock: run one
    driver per folder there."""
    if is_remote(out):
        yield
        return
    import fcntl

    os.makedirs(out, exist_ok=True)
    handle = os.open(os.path.join(out, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError(
                f"--out: another sweep is running in {out}; wait for it or choose another folder"
            ) from None
        yield
    finally:
        os.close(handle)


def duckdb_source(out: str, partition: str | None) -> str:
    """The DuckDB table function that reads the folder: every final Parquet file, Hive partitions on
    (the partition column typed as in the files), columns matched by name."""
    glob = os.path.join(os.path.abspath(out), "**", "*.parquet").replace("'", "''")
    if partition is None:
        return f"read_parquet('{glob}', union_by_name=true)"
    kind = DUCKDB_TYPES.get(partition, "VARCHAR")
    types = f"{{'{partition}': '{kind}'}}"
    return f"read_parquet('{glob}', hive_partitioning=true, union_by_name=true, hive_types={types})"
