"""Figures of a sweep: per problem, the variance against N per estimator (the mean over seeds, the
band from the smallest to the largest reading, the exact value as a dashed line where it is known)
and the ratio to vanilla at the same N (exact ratios dashed, where vanilla is among the estimators).

A problem is one value of every option but ``N`` and ``seed``: an MDP with its theta, entropy and
batches, or an environment with its policy. One PNG per problem.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgvar.errors import SpecError
from pgvar.sweep.dataset import connect, current_cells
from pgvar.sweep.store import is_remote

PLOTS = "_plots"  # inside the results folder, a name Parquet readers skip
GROUP = (
    "mdp",
    "theta",
    "env",
    "policy",
    "policy_seed",
    "weights",
    "reference_episodes",
    "estimators",
    "batches",
    "entropy",
)
PLOT_SQL = """
SELECT {group}, r.estimator, r.N,
  avg(r.variance_trace) AS variance, min(r.variance_trace) AS low, max(r.variance_trace) AS high,
  avg(r.exact_variance_trace) AS exact, avg(r.vs_vanilla) AS ratio, min(c.position) AS position
FROM results r JOIN cells c ON r.cell = c.cell
WHERE r.error IS NULL
GROUP BY ALL
ORDER BY position
"""


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "problem"


def _title(key: dict[str, Any], varying: Sequence[str]) -> str:
    head = key["mdp"] if key["env"] is None else f"{key['env']}, {key['policy']}"
    extra = ", ".join(f"{name}={key[name]}" for name in varying if name not in ("mdp", "env", "policy"))
    return f"{head} ({extra})" if extra else head


def plot_sweep(out: str, folder: str | None = None) -> list[Path]:
    """Draw every problem of the sweep in ``out`` into ``folder`` (default ``out/_plots``); the files."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SpecError("sweep plot: needs matplotlib: pip install 'pgvar[sweep]'") from None
    con = connect(out)
    con.register("cells", current_cells(out))
    group = ", ".join(f"r.{name}" for name in GROUP)
    relation = con.sql(PLOT_SQL.format(group=group))
    names = relation.columns
    rows = [dict(zip(names, values, strict=True)) for values in relation.fetchall()]
    if not rows:
        raise SpecError(f"sweep plot: {out} has no finished cells of its spec yet")
    problems: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        problems.setdefault(tuple(row[name] for name in GROUP), []).append(row)
    varying = [name for i, name in enumerate(GROUP) if len({key[i] for key in problems}) > 1]
    if folder is None and is_remote(out):
        raise SpecError("sweep plot: --out: give a local folder for the figures of a sweep stored at a URI")
    target = Path(folder) if folder is not None else Path(out) / PLOTS
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for index, (values, members) in enumerate(problems.items()):
        key = dict(zip(GROUP, values, strict=True))
        title = _title(key, varying)
        figure = _figure(Figure, title, members, key["estimators"].split(","))
        path = target / f"variance-{index + 1:02d}-{_slug(title)}.png"
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        figure.savefig(temp, format="png", dpi=110)
        os.replace(temp, path)
        written.append(path)
    return written


def _figure(Figure, title: str, rows: list[dict[str, Any]], order: list[str]):
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    vanilla = {
        row["N"]: row["exact"] for row in rows if row["estimator"] in ("vanilla", "return+none", "return")
    }
    estimators = [name for name in order if any(row["estimator"] == name for row in rows)]
    for index, name in enumerate(estimators):
        mine = sorted((row for row in rows if row["estimator"] == name), key=lambda row: row["N"])
        ns = [row["N"] for row in mine]
        color = f"C{index % 10}"
        left.plot(ns, [row["variance"] for row in mine], "o-", color=color, label=name)
        left.fill_between(
            ns, [row["low"] for row in mine], [row["high"] for row in mine], color=color, alpha=0.15
        )
        exact = [(row["N"], row["exact"]) for row in mine if row["exact"] is not None]
        if exact:
            left.plot(*zip(*exact, strict=True), "--", color=color, alpha=0.8)
        right.plot(ns, [row["ratio"] for row in mine], "o-", color=color, label=name)
        exact_ratio = [
            (row["N"], row["exact"] / vanilla[row["N"]])
            for row in mine
            if row["exact"] is not None and vanilla.get(row["N"])
        ]
        if exact_ratio:
            right.plot(*zip(*exact_ratio, strict=True), "--", color=color, alpha=0.8)
    left.set(xscale="log", yscale="log", xlabel="batch size N", ylabel="variance of the batch-mean gradient")
    left.set_title("variance (mean over seeds; band: min to max; dashed: exact)", fontsize=9)
    right.set(xscale="log", xlabel="batch size N", ylabel="ratio to vanilla at the same N")
    right.axhline(1.0, color="0.6", lw=0.8)
    right.set_title("ratio to vanilla (dashed: exact)", fontsize=9)
    left.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    return figure
