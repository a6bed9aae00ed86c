"""Reading a sweep's results with DuckDB: a view over the folder's Parquet files, a summary, progress.

    import pgvar.sweep
    rel = pgvar.sweep.results("out")                  # a DuckDB relation over every row
    rel.filter("N = 16").df()                         # a pandas frame (.pl(): polars, .arrow(): Arrow)
    con = pgvar.sweep.connect("out")                  # a connection with the view ``results``
    con.sql("SELECT estimator, avg(variance_trace) FROM results GROUP BY ALL").df()

Only files in place are read (temporary files of a running or crashed sweep are not ``*.parquet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgvar.errors import SpecError
from pgvar.sweep import store
from pgvar.sweep.spec import spec_from_canonical

VIEW = "results"


def _duckdb():
    try:
        import duckdb
    except ImportError:
        raise SpecError(
            "sweep: needs the sweep extra (duckdb is missing): pip install 'pgvar[sweep]'"
        ) from None
    return duckdb


def recorded_spec(out: str) -> dict[str, Any]:
    """``DIR/_sweep.json``, or one line saying that DIR holds no sweep."""
    if not store.exists(out):
        raise SpecError(f"{out}: no such folder")
    recorded = store.read_spec(out)
    if recorded is None:
        raise SpecError(
            f"{out}: not a sweep's folder (no {store.SPEC_FILE}); run `pgvar sweep run SPEC --out {out}`"
        )
    return recorded


def connect(out: str, database: str = ":memory:"):
    """A DuckDB connection with the view ``results`` over every row in ``out`` (an empty table with
    the same columns before the first file is in place)."""
    duckdb = _duckdb()
    recorded = recorded_spec(out)
    con = duckdb.connect(database)
    files = store.result_files(out)
    if files and store.is_remote(out):  # through pyarrow's filesystem: DuckDB scans the Arrow dataset
        con.register(VIEW, store.arrow_dataset(out, files))
    elif files:
        source = store.duckdb_source(out, recorded["spec"]["partition"])
        con.sql(f"CREATE VIEW {VIEW} AS SELECT * FROM {source}")
    else:
        import pyarrow as pa

        con.register("empty_results", pa.Table.from_pylist([], schema=store.schema()))
        con.sql(f"CREATE TABLE {VIEW} AS SELECT * FROM empty_results")
        con.unregister("empty_results")
    return con


def results(out: str):
    """Every row in ``out`` as a DuckDB relation (``.df()``, ``.pl()``, ``.arrow()``, ``.filter()``...)."""
    return connect(out).table(VIEW)


def query(out: str, sql: str):
    """Run ``sql`` (which reads the view ``results``) over ``out``; a DuckDB relation, or one line
    naming what DuckDB refused."""
    duckdb = _duckdb()
    con = connect(out)
    try:
        return con.sql(sql)
    except duckdb.Error as error:
        raise SpecError(f"query: {' '.join(str(error).split())}") from None


def current_cells(out: str):
    """The spec's cells (an Arrow table with ``cell`` and the option columns, in the spec's order)."""
    import pyarrow as pa

    spec = spec_from_canonical(recorded_spec(out)["spec"])
    cells = [{**cell, "position": i} for i, cell in enumerate(spec.cells())]
    return pa.Table.from_pylist(cells) if cells else pa.table({"cell": pa.array([], pa.string())})


@dataclass(frozen=True)
class Progress:
    """How far a sweep has come: its cells, those in place, rows and cells that failed (``error``),
    files in place and temporary files, and rows from cells outside the current spec."""

    total: int
    done: int
    rows: int
    failed: int
    files: int
    temps: int
    other_rows: int


def progress(out: str) -> Progress:
    """Count what is in ``out`` against its spec."""
    con = connect(out)
    cells = current_cells(out)
    con.register("cells", cells)
    done, rows, failed = con.sql(
        "SELECT count(DISTINCT r.cell), count(*), "
        "count(DISTINCT CASE WHEN r.error IS NOT NULL THEN r.cell END) "
        f"FROM {VIEW} r SEMI JOIN cells c ON r.cell = c.cell"
    ).fetchall()[0]
    (other,) = con.sql(f"SELECT count(*) FROM {VIEW} r ANTI JOIN cells c ON r.cell = c.cell").fetchall()[0]
    return Progress(
        len(cells), done, rows, failed, len(store.result_files(out)), len(store.temp_files(out)), other
    )


SUMMARY_SQL = """
SELECT
  coalesce(r.mdp, r.env || ' ' || r.policy) AS problem,
  r.estimator, r.N,
  count(*) AS readings,
  avg(r.variance_trace) AS variance,
  avg(r.exact_variance_trace) AS exact,
  avg(r.vs_vanilla) AS vs_vanilla,
  count(r.error) AS errors,
  min(c.position) AS position,
  min(r.estimator_position) AS estimator_position
FROM (SELECT *, list_position(string_split(estimators, ','), estimator) AS estimator_position FROM {view}) r
JOIN cells c ON r.cell = c.cell
GROUP BY problem, r.estimator, r.N
"""


def summary(out: str) -> list[dict[str, Any]]:
    """Per problem (MDP, or environment and policy), estimator and N, over the spec's cells: the
    readings (seeds and other axes), the mean variance, the exact value, the mean ratio to vanilla
    and the count of failed cells. In the spec's order."""
    con = connect(out)
    con.register("cells", current_cells(out))
    relation = con.sql(SUMMARY_SQL.format(view=VIEW))
    names = relation.columns
    rows = [dict(zip(names, values, strict=True)) for values in relation.fetchall()]
    first: dict[str, int] = {}
    for row in rows:
        first[row["problem"]] = min(first.get(row["problem"], row["position"]), row["position"])
    rows.sort(key=lambda row: (first[row["problem"]], row["N"], row["estimator_position"] or 0))
    return rows
