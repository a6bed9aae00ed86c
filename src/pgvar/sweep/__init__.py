"""Sweeps: a grid of ``pgvar variance`` cells, run on local processes or Ray, kept as Parquet files
(whole or absent, resumable after any crash) and queried with DuckDB. See docs/sweeps.md.

    import pgvar.sweep
    spec = pgvar.sweep.load_spec("sweep.yaml")            # every key and value checked
    pgvar.sweep.run_sweep(spec, "out", engine="processes")
    pgvar.sweep.results("out").df()                       # every row, as a pandas frame

Importing this package loads neither Ray nor DuckDB nor pyarrow (the ``sweep`` extra): they load when
a sweep runs or is read.
"""

from __future__ import annotations

from typing import Any

from pgvar.sweep.spec import Spec, load_spec

__all__ = [
    "Spec",
    "connect",
    "load_spec",
    "plot_sweep",
    "progress",
    "query",
    "results",
    "run_sweep",
    "summary",
]


def __getattr__(name: str) -> Any:
    if name == "run_sweep":
        from pgvar.sweep.run import run_sweep

        return run_sweep
    if name in ("connect", "results", "query", "progress", "summary"):
        from pgvar.sweep import dataset

        return getattr(dataset, name)
    if name == "plot_sweep":
        from pgvar.sweep.plot import plot_sweep

        return plot_sweep
    raise AttributeError(f"module 'pgvar.sweep' has no attribute {name!r}")
