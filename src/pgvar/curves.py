"""Learning curves on disk and on paper: the files ``pgvar train`` writes and the plots it draws.

:mod:`pgvar.train` computes a :class:`~pgvar.train.TrainResult`; this module turns it into

- ``curves.csv``: the long table, one row per (curve, run, record) (:func:`rows`);
- ``curves.parquet``: the same table, when ``pyarrow`` imports;
- ``summary.json``: the configuration, the starting theta, the summary rows, every run's final theta
  and the runs that stopped early;
- ``curves.png`` / ``curves.svg``: the mean over runs with a 95% t-band (:func:`plot`).

``pgvar train --env`` (``pgvar.torch.training.NetworkResult``) gets the same five files from
:func:`save_network`: one row per (estimator, run, update), plotted by :func:`plot_network`.

Every file is written under a temporary name and then moved over the old one, so an interrupted write
never leaves half a file; :func:`check_out_dir` refuses a directory that already holds results unless
asked to overwrite. The statistics (mean and t-interval over runs) come from :mod:`pgvar.kpi`.
"""

from __future__ import annotations

import csv
import json
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pgvar.documents import plain
from pgvar.errors import SpecError
from pgvar.kpi import mean_ci
from pgvar.train import Curve, TrainResult

if TYPE_CHECKING:
    from pgvar.torch.training import NetworkResult

__all__ = ["OUTPUT_NAMES", "Panel", "check_out_dir", "default_out", "default_panels", "plot", "rows", "save"]

OUTPUT_NAMES = ("curves.csv", "curves.parquet", "summary.json", "curves.png", "curves.svg")


# -- where to write --------------------------------------------------------------------------------


def default_out(mdp_name: str) -> Path:
    """``runs/train-<mdp>-<YYYYmmdd-HHMMSS>`` (with a suffix if that exists already)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(mdp_name).stem if "/" in mdp_name else mdp_name).strip("-")
    base = Path("runs") / f"train-{slug or 'mdp'}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def check_out_dir(out: Path, overwrite: bool, option: str = "out", *, parents: bool = True) -> None:
    """Refuse (SpecError, one line) to write into ``out`` when it is a file or already holds one of our
    result files; with ``parents=False`` (a directory the user named) also when it is new and its parent
    is not an existing directory, so that only the last directory is ever created."""
    out = Path(out)
    try:
        if out.exists() and not out.is_dir():
            raise SpecError(f"{option}: {out} exists and is not a directory")
        if out.is_dir():
            taken = [] if overwrite else [name for name in OUTPUT_NAMES if (out / name).exists()]
            if taken:
                raise SpecError(
                    f"{option}: {out} already holds results ({', '.join(taken)}); "
                    "pass --overwrite to replace them or choose another directory"
                )
        elif not parents and not out.absolute().parent.is_dir():
            raise SpecError(
                f"{option}: {out.parent} is not an existing directory; create it first (only the last "
                f"directory, {out.name}, is created)"
            )
    except OSError as err:  # a name too long, a directory that cannot be listed
        raise SpecError(f"{option}: cannot use {out}: {err.strerror}") from None


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary name, then move it over ``path`` (never a half-written result)."""
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


# -- the table and the summary ---------------------------------------------------------------------


def rows(result: TrainResult) -> Iterator[list]:
    """The long table: a header, then one row per (curve, run, record). Its ``entropy`` column is
    the curve's entropy coefficient, ``policy_entropy`` the mean policy entropy at that record."""
    header = ["estimator", "spec", "lr", "N", "entropy", "run", "update", "episodes"]
    header += ["objective", "J", "policy_entropy", "variance"]
    yield header + result.prob_names
    for curve in result.curves:
        for run in range(curve.runs):
            for k, update in enumerate(curve.updates_k):
                yield [
                    curve.label,
                    curve.spec,
                    curve.lr,
                    curve.n,
                    curve.entropy,
                    run,
                    int(update),
                    int(curve.episodes_k[k]),
                    curve.objective_rk[run, k],
                    curve.J_rk[run, k],
                    curve.policy_entropy_rk[run, k],
                    curve.variance_rk[run, k],
                    *curve.probs_rkp[run, k],
                ]


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.10g}"
    return str(value)


def _summary_payload(result: TrainResult) -> dict:
    return {
        "mdp": result.mdp_name,
        "config": asdict(result.config),
        "theta0": result.theta0.tolist(),
        "summary": result.summary(),
        "final_theta": {curve.label: curve.theta_rp.tolist() for curve in result.curves},
        "stopped_runs": {
            curve.label: [
                {"run": run, "update": int(update), "reason": curve.reasons[run]}
                for run, update in enumerate(curve.stopped_r)
                if update >= 0
            ]
            for curve in result.curves
        },
    }


def _write_results(
    out: Path | str, table: list[list], payload: dict, draw: Callable[[Path], list[Path]], overwrite: bool
) -> list[Path]:
    """curves.csv (always), curves.parquet (if pyarrow imports), summary.json and what ``draw`` plots
    from the stem ``out``/curves, each written under a temporary name and moved into place."""
    out = Path(out)
    check_out_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def write_csv(path: Path) -> None:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            for row in table:
                writer.writerow([_fmt(v) for v in row])

    _replace(out / "curves.csv", write_csv)
    written.append(out / "curves.csv")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (out / "curves.parquet").unlink(missing_ok=True)  # never leave a stale one beside the new CSV
    else:
        columns = {name: [row[i] for row in table[1:]] for i, name in enumerate(table[0])}
        _replace(out / "curves.parquet", lambda path: pq.write_table(pa.table(columns), path))
        written.append(out / "curves.parquet")
    text = json.dumps(plain(payload), indent=2, allow_nan=False) + "\n"
    _replace(out / "summary.json", lambda path: path.write_text(text))
    written.append(out / "summary.json")
    written += draw(out / "curves")
    return written


def save(
    result: TrainResult,
    out: Path | str,
    *,
    overwrite: bool = False,
    hlines: dict[str, float] | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write curves.csv (always), curves.parquet (if pyarrow imports), summary.json and the plots
    curves.png / curves.svg into ``out``; refuses to replace earlier results unless ``overwrite``."""
    draw = lambda stem: plot(result, stem, hlines=hlines, title=title)  # noqa: E731
    return _write_results(out, list(rows(result)), _summary_payload(result), draw, overwrite)


def save_network(result: NetworkResult, out: Path | str, *, overwrite: bool = False) -> list[Path]:
    """The files of ``pgvar train --env`` (``pgvar.torch.training.NetworkResult``): the same five as
    :func:`save`, the table one row per (estimator, run, update), the plots :func:`plot_network`."""
    payload = {
        "env": result.env,
        "policy": result.policy,
        "parameters": result.parameters,
        "gamma": result.gamma,
        "horizon": result.horizon,
        "config": asdict(result.config),
        "summary": result.summary(),
    }
    draw = lambda stem: plot_network(result, stem)  # noqa: E731
    return _write_results(out, list(result.rows()), payload, draw, overwrite)


def _save_figure(fig, stem: Path | str) -> list[Path]:
    """``stem``.png and ``stem``.svg of the figure (each written whole or not at all), then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    for path in paths:
        _replace(path, lambda target, fmt=path.suffix[1:]: fig.savefig(target, format=fmt, dpi=110))
    plt.close(fig)
    return paths


# -- plotting --------------------------------------------------------------------------------------

Panel = tuple[str, str | Callable[[Curve], np.ndarray]]


def default_panels(result: TrainResult) -> list[Panel]:
    """J, the regularised objective when the entropy bonus is on, the mean entropy, and the variance
    when recorded."""
    panels: list[Panel] = [("J (expected return)", "J")]
    if result.config.entropy > 0:
        panels.append((f"J + {result.config.entropy:g}·H (objective)", "objective"))
    panels.append(("mean policy entropy (nats)", "policy_entropy"))
    if any(np.isfinite(curve.variance_rk).any() for curve in result.curves):
        panels.append(("variance of the estimate (trace, exact)", "variance"))
    return panels


def plot(
    result: TrainResult,
    stem: Path | str,
    *,
    panels: Sequence[Panel] | None = None,
    hlines: dict[str, float] | None = None,
    title: str | None = None,
    x: str = "episodes",
) -> list[Path]:
    """Learning curves: the mean over runs with a 95% t-band, one line per estimator and the exact
    reference (dashed), against episodes (or ``x="updates"``); writes ``stem``.png and ``stem``.svg.

    ``panels``: (y label, metric name or function Curve -> (R, K) values); ``hlines``: label -> y drawn
    on the first panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(panels) if panels is not None else default_panels(result)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.8 * len(panels) + 0.6), sharex=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    several_exact = sum(curve.spec == "exact" for curve in result.curves) > 1
    for ax, (ylabel, metric) in zip(axes[:, 0], panels, strict=True):
        for index, curve in enumerate(result.curves):
            values_rk = metric(curve) if callable(metric) else curve.metric(metric)
            xs = curve.episodes_k if x == "episodes" else curve.updates_k
            keep = np.isfinite(values_rk).any(axis=0)
            if not keep.any():
                continue
            mean, low, high = mean_ci(values_rk[:, keep])
            exact = curve.spec == "exact"
            color = colors[index % len(colors)]
            if exact:  # one reference: black; several (combined results): the colour of the curve before
                color = colors[(index - 1) % len(colors)] if several_exact and index > 0 else "black"
            runs = f"{curve.runs} run{'s' if curve.runs > 1 else ''}"
            ax.plot(
                xs[keep],
                mean,
                color=color,
                ls="--" if exact else "-",
                lw=1.4,
                label=f"{curve.label} ({runs})",
            )
            if curve.runs > 1:
                if metric == "variance":  # a positive quantity on a log axis: keep the band inside the runs
                    low = np.maximum(low, np.nanmin(values_rk[:, keep], axis=0))
                ax.fill_between(xs[keep], low, high, color=color, alpha=0.18, lw=0)
        if metric == "variance":
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    styles = [("tab:red", ":"), ("tab:gray", "-."), ("tab:purple", "--"), ("tab:olive", ":")]
    for index, (label, y) in enumerate((hlines or {}).items()):
        color, line = styles[index % len(styles)]
        axes[0, 0].axhline(y, color=color, ls=line, lw=1.2, label=label)
    axes[0, 0].legend(fontsize=8, loc="best")
    exact_note = "; exact: updates × N" if any(curve.spec == "exact" for curve in result.curves) else ""
    axes[-1, 0].set_xlabel(
        f"episodes (batch N = {result.config.n}{exact_note})" if x == "episodes" else "updates"
    )
    fig.suptitle(
        title
        or f"{result.mdp_name}: lr {result.config.lr:g}, N {result.config.n}, "
        f"β {result.config.entropy:g}; mean over runs, 95% t-band",
        fontsize=10,
    )
    return _save_figure(fig, stem)


# -- neural policies (pgvar train --env) ------------------------------------------------------

NETWORK_PANELS = (
    ("mean episode return", "mean_return", False),
    ("variance of the batch-mean gradient\n(trace, per update)", "variance_trace", True),
    ("gradient noise scale B_simple\n(episodes, moving average)", "noise_scale_ema", True),
)


def plot_network(result: NetworkResult, stem: Path | str, *, title: str | None = None) -> list[Path]:
    """Three panels against episodes, one line per estimator (the mean over runs, and a band from the
    lowest to the highest run when there are several): the batch's mean return, the variance trace of
    the batch-mean gradient (log scale) and B_simple's moving average (log scale). Writes ``stem``.png
    and ``stem``.svg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = 2.6 * len(NETWORK_PANELS) + 0.6
    fig, axes = plt.subplots(len(NETWORK_PANELS), 1, figsize=(8, height), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (ylabel, metric, log) in zip(axes, NETWORK_PANELS, strict=True):
        for index, curve in enumerate(result.curves):
            values_rk = curve.metric(metric)
            if log:
                values_rk = np.where(values_rk > 0, values_rk, np.nan)
            if not np.isfinite(values_rk).any():
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # updates without a value stay NaN: gaps
                mean = np.nanmean(values_rk, axis=0)
                low, high = np.nanmin(values_rk, axis=0), np.nanmax(values_rk, axis=0)
            color = colors[index % len(colors)]
            ax.plot(curve.episodes_k, mean, color=color, lw=1.3, label=curve.label)
            if curve.runs > 1:  # the runs' range: with a few runs a t-band would leave the possible values
                ax.fill_between(curve.episodes_k, low, high, color=color, alpha=0.18, lw=0)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    config = result.config
    axes[-1].set_xlabel(f"episodes (N = {config.n} per update)")
    runs = f"{config.runs} runs: mean, band from the lowest to the highest" if config.runs > 1 else "1 run"
    fig.suptitle(
        title
        or f"{result.env}\n{result.policy} ({result.parameters} parameters), {config.optimizer} lr "
        f"{config.lr:g}; {runs}",
        fontsize=10,
    )
    return _save_figure(fig, stem)
