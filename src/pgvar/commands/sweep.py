"""``pgvar sweep``: run a grid of ``pgvar variance`` cells (``run``), read it (``show``, ``query``) and
draw it (``plot``). A thin shell over :mod:`pgvar.sweep`: every value is checked there before any
work starts (one-line errors, exit code 2, as every command), and this module only parses, shows a
progress bar and prints. Registered in ``pgvar.cli`` with ``app.add_typer(sweep_app, name="sweep")``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

app = typer.Typer(
    no_args_is_help=True,
    help="Sweep a grid of `pgvar variance` cells on processes or Ray; results in Parquet, read with DuckDB.",
)
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

DirArgument = Annotated[
    str, typer.Argument(help="The sweep's results folder (the --out of `pgvar sweep run`).")
]


class _Rate(ProgressColumn):
    """Cells per second since the start."""

    def render(self, task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:,.1f} cells/s", style="progress.data.speed")


def _fmt(value: Any, digits: int = 4) -> str:
    """A table cell: numbers to ``digits`` significant digits (inside lists too), null as a dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(item, digits) for item in value) + "]"
    return str(value)


@app.command("run")
def run(
    spec: Annotated[str, typer.Argument(help="The sweep's spec, a YAML or JSON file (see docs/sweeps.md).")],
    out_dir: Annotated[
        str, typer.Option("--out", help="Results folder (created; resumed when it holds this spec).")
    ],
    engine: Annotated[
        str, typer.Option("--engine", help="inline, processes (all local cores) or ray.")
    ] = "processes",
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Worker processes, or Ray CPUs of a local Ray (default: all cores)."),
    ] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="With --engine ray: a running cluster, auto or HOST:PORT.")
    ] = None,
    chunk: Annotated[
        int | None, typer.Option("--chunk", help="Cells per task (default: about 2 s of work).")
    ] = None,
    new: Annotated[
        bool, typer.Option("--new", help="Adopt a changed spec in a folder that holds another.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the cells and the estimated cost; run nothing.")
    ] = False,
) -> None:
    """Run every cell of SPEC not yet in --out: kill it at any moment and run it again to resume."""
    from pgvar.sweep.run import check_folder, check_options, plan_run, run_sweep
    from pgvar.sweep.spec import load_spec

    count = check_options(engine, workers, address, chunk)
    sweep = load_spec(spec)
    if dry_run:
        check_folder(sweep, out_dir, new)
        _print_plan(plan_run(sweep, out_dir, workers=count, chunk=chunk), engine)
        return
    progress = Progress(
        TextColumn("cells"),
        BarColumn(),
        MofNCompleteColumn(),
        _Rate(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )
    task = None

    def started(plan) -> None:
        nonlocal task
        task = progress.add_task("cells", total=plan.todo)
        err.print(
            f"{plan.total} cells, {plan.finished} already in {plan.out}; running {plan.todo} in "
            f"{len(plan.chunks)} chunks on {engine} ({plan.workers} worker{'s' if plan.workers > 1 else ''})",
            highlight=False,
            soft_wrap=True,
        )

    with progress:
        summary = run_sweep(
            sweep,
            out_dir,
            engine=engine,
            workers=workers,
            address=address,
            chunk=chunk,
            new=new,
            on_start=started,
            on_chunk=lambda done: progress.advance(task, done.cells),
        )
    rate = summary.cells / summary.seconds if summary.seconds > 0 else 0.0
    done = summary.skipped + summary.cells
    line = (
        f"{summary.cells} cells ({summary.rows} rows) written in {summary.seconds:.1f} s "
        f"({rate:.1f} cells/s); {done} of {summary.total} cells in {out_dir}"
    )
    out.print(line, highlight=False, soft_wrap=True)
    if summary.interrupted:
        err.print(
            "interrupted: every finished cell is kept; run the same command to resume",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130)


def _print_plan(plan, engine: str) -> None:
    from pgvar.sweep.cost import duration

    cost = plan.estimate
    cells = plan.spec.cells()
    tabular = sum(1 for cell in cells if cell["env"] is None)
    estimators = len(plan.spec.grid["estimators"].split(","))
    out.print(
        f"{plan.spec.source}: {plan.total} cells ({tabular} tabular, {plan.total - tabular} neural) x "
        f"{estimators} estimators = {plan.total * estimators} rows; partitioned by "
        f"{plan.spec.partition or 'nothing'}",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"{plan.finished} already in {plan.out}; {plan.todo} to run in {len(plan.chunks)} chunks of up to "
        f"{max((len(c.cells) for c in plan.chunks), default=0)} cells",
        highlight=False,
        soft_wrap=True,
    )
    out.print(
        f"estimated cost: {duration(cost.seconds)} of one core (largest cell {duration(cost.largest)}); "
        f"about {duration(cost.wall(plan.workers))} on {plan.workers} "
        f"worker{'s' if plan.workers > 1 else ''} ({engine})",
        highlight=False,
        soft_wrap=True,
    )


@app.command("show")
def show(
    out_dir: DirArgument,
    limit: Annotated[int, typer.Option("--limit", help="Rows of the summary table at most.")] = 60,
) -> None:
    """Progress of a sweep and a summary: per problem, estimator and N, the mean variance over seeds."""
    from pgvar.sweep.dataset import progress, recorded_spec, summary
    from pgvar.validation import check_int

    limit = check_int(limit, "--limit", low=1)
    recorded = recorded_spec(out_dir)
    state = progress(out_dir)
    share = state.done / state.total if state.total else 1.0
    name = recorded["spec"]["grid"].get("name")
    out.print(
        f"{escape(name) + ': ' if name else ''}{state.done} of {state.total} cells done ({share:.0%}), "
        f"{state.rows} rows in {state.files} files"
        + (f"; {state.failed} cells failed (see the error column)" if state.failed else "")
        + (f"; {state.temps} temporary files (a sweep is running, or one crashed)" if state.temps else "")
        + (f"; {state.other_rows} rows from cells outside the current spec" if state.other_rows else ""),
        highlight=False,
        soft_wrap=True,
    )
    rows = summary(out_dir)
    if not rows:
        return
    table = Table(title="Mean over readings (seeds) per problem, estimator and N", title_justify="left")
    for column in ("problem", "estimator", "N", "readings", "variance", "exact", "vs vanilla", "failed"):
        table.add_column(column, justify="left" if column in ("problem", "estimator") else "right")
    for row in rows[:limit]:
        table.add_row(
            escape(str(row["problem"])),
            escape(str(row["estimator"])),
            str(row["N"]),
            str(row["readings"]),
            _fmt(row["variance"]),
            _fmt(row["exact"]),
            "—" if row["vs_vanilla"] is None else f"{row['vs_vanilla']:.3f}×",
            str(row["errors"]),
        )
    out.print(table)
    if len(rows) > limit:
        out.print(
            f"... {len(rows) - limit} more rows (--limit, or `pgvar sweep query`)",
            highlight=False,
            soft_wrap=True,
        )


@app.command("query")
def query(
    out_dir: DirArgument,
    sql: Annotated[
        str, typer.Argument(help="DuckDB SQL over the view `results` (one row per cell and estimator).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows instead of a table.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV instead of a table.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="Rows of a table at most (JSON and CSV: all).")] = 100,
) -> None:
    """Run DuckDB SQL over a sweep's results, e.g. "SELECT estimator, N, avg(variance_trace) FROM results
    GROUP BY ALL ORDER BY ALL"."""
    from pgvar.errors import SpecError
    from pgvar.sweep.dataset import query as run_query
    from pgvar.sweep.rows import plain
    from pgvar.validation import check_int

    limit = check_int(limit, "--limit", low=1)
    if as_json and as_csv:
        raise SpecError("--json/--csv: give one of them")
    relation = run_query(out_dir, sql)
    if relation is None:  # a statement that returns nothing (COPY ... TO, ...)
        out.print("ok", highlight=False, soft_wrap=True)
        return
    columns = relation.columns
    records = relation.fetchall()
    if as_json:
        rows = [dict(zip(columns, (plain(_jsonable(v)) for v in values), strict=True)) for values in records]
        out.print_json(json.dumps(rows, allow_nan=False, default=str))
        return
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(records)
        return
    table = Table(title_justify="left")
    for column in columns:
        table.add_column(escape(column))
    for values in records[:limit]:
        table.add_row(*(escape(_fmt(value)) for value in values))
    out.print(table)
    if len(records) > limit:
        out.print(
            f"... {len(records) - limit} more rows (--limit, --json or --csv)",
            highlight=False,
            soft_wrap=True,
        )


def _jsonable(value: Any) -> Any:
    """DuckDB's Python values as JSON holds them (decimals as floats, anything else as text)."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


@app.command("plot")
def plot(
    out_dir: DirArgument,
    folder: Annotated[
        str | None, typer.Option("--out", help="Folder for the PNG files (default: DIR/_plots).")
    ] = None,
) -> None:
    """Draw the variance against N per estimator, and the ratio to vanilla, with exact lines where known."""
    from pgvar.sweep.plot import plot_sweep

    start = time.perf_counter()
    written = plot_sweep(out_dir, folder)
    for path in written:
        out.print(str(path), highlight=False, soft_wrap=True)
    err.print(
        f"{len(written)} figures in {time.perf_counter() - start:.1f} s", highlight=False, soft_wrap=True
    )
