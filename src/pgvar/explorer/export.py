"""The explorer's exports: the readings and the history as CSV (Python's :mod:`csv`), the figure as a
PNG (a matplotlib rendering). :class:`~pgvar.explorer.state.ExplorerState` keeps plain data; this
module formats it. The page calls these in the session's worker thread, never on the event loop
(a PNG takes a second or two); PNGs are drawn one at a time in a process.
"""

from __future__ import annotations

import csv
import io
import math
import threading
from collections.abc import Iterable

import numpy as np

from pgvar.explorer.state import CONFIG_COLOURS, N_CHOICES, ExplorerState, safe_ratio
from pgvar.vocabulary import MEASURED_COLOUR

READINGS_COLUMNS: tuple[str, ...] = (
    "config",
    "spec",
    "N",
    "batches",
    "variance",
    "ci95_lo",
    "ci95_hi",
    "exact_variance",
    "exact_reward_noise",
    "exact_sampling",
    "exact_bias",
    "exact_cosine",
    "vs_vanilla_n1",
    "mdp",
    "gamma",
    "entropy",
    "tick",
)
#: One PNG at a time in this process: matplotlib's font and text caches are shared between figures.
PNG_LOCK = threading.Lock()
HISTORY_COLUMNS: tuple[str, ...] = (
    "tick",
    "config",
    "N",
    "variance",
    "ci95_lo",
    "ci95_hi",
    "exact_variance",
    "vs_vanilla_n1",
)


def _num(value: float | None) -> str:
    """A number with ten significant digits; empty when unknown."""
    return "" if value is None else f"{value:.10g}"


def _csv_text(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def readings_csv(state: ExplorerState) -> str:
    """The latest tick's readings (four configurations at N, then vanilla at N = 1) as CSV text; only
    the header before the first tick."""
    last = state.last
    rows = []
    if last is not None:
        vanilla = last.vanilla_n1.variance
        for reading, n in [*((c, last.n) for c in last.configs), (last.vanilla_n1, 1)]:
            rows.append(
                [
                    reading.label,
                    reading.spec,
                    n,
                    last.batches,
                    _num(reading.variance),
                    _num(reading.lo),
                    _num(reading.hi),
                    _num(reading.exact),
                    _num(reading.reward_noise),
                    _num(reading.sampling),
                    _num(reading.bias),
                    _num(reading.cosine),
                    _num(safe_ratio(reading.variance, vanilla)),
                    state.base_mdp.name,
                    _num(state.gamma),
                    _num(state.knobs.entropy),
                    last.tick,
                ]
            )
    return _csv_text(READINGS_COLUMNS, rows)


def history_csv(state: ExplorerState) -> str:
    """The rolling history, one row per tick, as CSV text."""
    rows = (
        [
            p.tick,
            p.label,
            p.n,
            _num(p.variance),
            _num(p.lo),
            _num(p.hi),
            _num(None if math.isnan(p.exact) else p.exact),  # nan: not known at that tick
            _num(p.ratio),
        ]
        for p in state.history
    )
    return _csv_text(HISTORY_COLUMNS, rows)


def render_png(state: ExplorerState, dpi: int = 110) -> bytes:
    """History, per-knob breakdown and variance against N of ``state`` as PNG bytes (no pyplot)."""
    with PNG_LOCK:
        return _render_png(state, dpi)


def _render_png(state: ExplorerState, dpi: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax_hist, ax_bd, ax_n = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.5, 1, 1]})
    points = list(state.history)
    last = state.last
    knobs = state.knobs
    title = f"pgvar explorer · {state.base_mdp.name} · {state.label}"
    fig.suptitle(f"{title} · γ={state.gamma:g} · entropy {knobs.entropy:g}", fontsize=11)
    if points:
        ticks = np.array([p.tick for p in points])
        ax_hist.fill_between(
            ticks,
            [max(p.lo, 1e-300) for p in points],
            [p.hi for p in points],
            color=MEASURED_COLOUR,
            alpha=0.2,
            label="95% CI",
        )
        ax_hist.plot(ticks, [p.variance for p in points], color=MEASURED_COLOUR, label="measured")
        ax_hist.plot(ticks, [p.exact for p in points], "k--", label="exact / N")
        ax_hist.set_yscale("log")
        ax_hist.legend(fontsize=8)
    ax_hist.set_title("rolling history", fontsize=10)
    ax_hist.set_xlabel("tick")
    ax_hist.set_ylabel("variance of the batch-mean gradient (trace)")
    if last is not None:
        labels = [c.label for c in last.configs]
        y = np.arange(4)[::-1]
        values = [c.variance for c in last.configs]
        errors = np.array(
            [[c.variance - c.lo for c in last.configs], [c.hi - c.variance for c in last.configs]]
        )
        ax_bd.barh(y, values, color=CONFIG_COLOURS, alpha=0.8, xerr=errors, capsize=3)
        exact = [c.exact if c.exact is not None else math.nan for c in last.configs]
        ax_bd.scatter(exact, y, marker="D", color="k", zorder=3, label="exact / N")
        ax_bd.set_yticks(y, labels, fontsize=9)
        ax_bd.set_xscale("log")
        ax_bd.legend(fontsize=8)
        ax_bd.set_title(f"per-knob breakdown at N={last.n}", fontsize=10)
    exact_values = state.exact
    ns = np.array(N_CHOICES, dtype=float)
    if exact_values is not None:
        for i, moments in enumerate(exact_values.moments):
            if moments is None:  # a group baseline without exact values here: no line
                continue
            bold = i == state.current_index
            line_ns = ns[ns >= moments.spec.group] if moments.spec.grouped else ns  # whole groups
            ax_n.plot(
                line_ns,
                moments.variance_trace / line_ns,
                color=CONFIG_COLOURS[i],
                lw=3 if bold else 1.2,
                alpha=1 if bold else 0.6,
                label=state.labels()[i],
            )
    if state.by_n:
        items = sorted(state.by_n.items())
        n = np.array([k for k, _ in items], dtype=float)
        v = np.array([x[0] for _, x in items])
        lo = np.array([x[1] for _, x in items])
        hi = np.array([x[2] for _, x in items])
        ax_n.errorbar(n, v, yerr=[v - lo, hi - v], fmt="o", color=MEASURED_COLOUR, ms=4, label="measured")
    ax_n.set_xscale("log")
    ax_n.set_yscale("log")
    ax_n.set_xlabel("batch size N")
    ax_n.set_title("variance against N (exact / N lines)", fontsize=10)
    ax_n.legend(fontsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
