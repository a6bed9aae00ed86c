"""The page of ``pgvar explore``: the lesson's widget, then Panel widgets and Bokeh plots under "More",
around one :class:`ExplorerState`.

The landing tab is the lesson's widget (:mod:`pgvar.explorer.lesson`, a :class:`LessonWidget`): the
three knobs, the variance bar as a share of vanilla's at N = 1, the rolling history with its knob
changes marked, the per-knob breakdown, the ratio to vanilla and a four-step story. A collapsed
area below it, "More", holds everything else (estimator and policy controls, MDPs, the exact split,
variance against N, the detailed plots, exports); its contents join the page when it is first opened
(a fast first load). The page's URL mirrors every setting
(:func:`pgvar.explorer.state.settings_query`), so a link restores the page.

Each browser session gets its own state, its own figures (:func:`build` runs per session) and its own
worker thread (:class:`pgvar.explorer.jobs.SessionJobs`). Every piece of work runs there, one at a
time and under the session's limits (``budget.EXPLORER``): a tick's measurement, a knob or policy
change, loading an MDP, the exact values, the variance-vs-N sweep and the exports. The event loop only
submits work and draws: each job ends with a :class:`~pgvar.explorer.state.Frame` (a copy of what the
page shows), drawn on the event loop with the session's document lock (a next-tick callback) whatever
started the job (a widget, a button, the query string, the periodic tick). So a session that builds
a large MDP never stalls another one, and a refusal (:class:`pgvar.budget.BudgetError`) or any other
:class:`~pgvar.errors.PgvarError` becomes a message on the page.

A periodic callback (every 300 ms, started when the page has loaded) submits one tick when the
session's worker is idle, and waits longer after slow ticks, so work never queues up. When the
session ends, the tick stops, queued work is cancelled, running work is dropped when it finishes and
the session's memory is freed. Outside a server (a notebook, the tests) the work runs inline.

Stable CSS ids for tests and scripts, in the lesson's widget: ``#pgvar-config``, ``#pgvar-n``,
``#pgvar-variance`` (``data-value``, ``data-lo``, ``data-hi``, ``data-exact``, ``data-share``,
``data-share-exact``) and ``#pgvar-ratio`` (the share of vanilla's variance at N = 1: ``data-value``,
``data-lo``, ``data-hi``, ``data-exact``, ``data-tone``), ``#pgvar-objective``, ``#pgvar-status``
(``data-tick``, ``data-history``, ``data-history-max``, ``data-learning``, ``data-stale``,
``data-mdp``, ``data-story``), ``#pgvar-stale`` (why the numbers are old, when they are),
``#pgvar-story`` (``data-step``), ``#pgvar-caption`` (``data-tone``), ``#pgvar-next``, ``#pgvar-back``,
``#pgvar-leave``, the knobs ``#pgvar-rtg``, ``#pgvar-baseline`` (switches) and ``#pgvar-n-range``,
``#pgvar-bar-fill``, ``#pgvar-history-svg`` (knob changes: ``.pgvar-mark``), ``#pgvar-rows``; on the
page ``#pgvar-messages``, ``#pgvar-header``, ``#pgvar-activity`` (``data-busy``: work other than ticks
in progress); under "More" ``#pgvar-breakdown`` (one ``tr`` per configuration), ``#pgvar-mdp-info``;
widgets carry the classes ``pgvar-kind``,
``pgvar-lam``, ``pgvar-gamma``, ``pgvar-entropy``, ``pgvar-batches``, ``pgvar-learn``, ``pgvar-lr``,
``pgvar-mdp``, ``pgvar-mdp-text``, ``pgvar-mdp-load``, ``pgvar-logit``. The history's
ColumnDataSource is named ``pgvar-history``, the policy's ``pgvar-policy`` (column ``p``: pi(a|o) row
by row, column ``row``: the rows' names), the learning curve's ``pgvar-learn``, the measured points
against N ``pgvar-vs-n``. Sliders and selectors
offer the ranges the query string accepts (:mod:`pgvar.explorer.state` defines each once).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from urllib.parse import urlencode

import numpy as np
import panel as pn
import param
from bokeh.models import ColumnDataSource, CustomJSTickFormatter, FactorRange, HoverTool, Legend, Range1d
from bokeh.plotting import figure
from panel.custom import JSComponent
from panel.io.state import set_curdoc

from pgvar import budget
from pgvar.errors import PgvarError
from pgvar.explorer.export import history_csv, readings_csv, render_png
from pgvar.explorer.jobs import SessionJobs
from pgvar.explorer.lesson import CSS as LESSON_CSS
from pgvar.explorer.lesson import (
    FORMAT_JS,
    PAGE_COLOURS,
    WIDGET_JS,
    bias_text,
    number,
    page_view,
    story_changes,
    story_step_of,
)
from pgvar.explorer.state import (
    BATCH_CHOICES,
    CONFIGS,
    DEFAULT_HISTORY,
    ENTROPY,
    GAMMA,
    GROUP_CHOICES,
    LAMBDA,
    LEARNING_RATE,
    LOGIT_LIMIT,
    N_CHOICES,
    PAGE_BASELINE_KINDS,
    STORY_STEPS,
    ExplorerState,
    Frame,
    Knobs,
    Span,
    builtin_choices,
    is_builtin_spec,
    parse_query,
    settings_query,
)
from pgvar.vocabulary import BASELINE_KINDS, MEASURED_COLOUR

log = logging.getLogger(__name__)

PERIOD_MS = 300
MAX_PAUSE_S = 2.0  # the longest wait after a slow tick
MAX_SLIDERS = 36
SPAN_DECADES = 5.3
HEADROOM = 6.0  # top of the log axes = HEADROOM x vanilla's variance at N = 1
CURRENT_ALPHA, OTHER_ALPHA = 0.95, 0.35

CSS = """
:host { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.pgvar-tiles { display: flex; gap: 10px; flex-wrap: wrap; }
.pgvar-tile { background: #f6f7f9; border: 1px solid #dde1e6; border-radius: 8px; padding: 8px 12px;
              flex: 1 1 auto; min-width: 90px; }
.pgvar-k { font-size: 11px; color: #5b6470; text-transform: uppercase; letter-spacing: .04em; }
.pgvar-v { font-size: 24px; font-weight: 650; color: #1d2330; font-variant-numeric: tabular-nums; }
.pgvar-sub { font-size: 11.5px; color: #5b6470; font-variant-numeric: tabular-nums; }
.pgvar-status { font-size: 11.5px; color: #6b7380; margin-top: 6px; }
.pgvar-stale .pgvar-v, table.pgvar-stale td { color: #a0a6ae; text-decoration: line-through; }
.pgvar-stale .pgvar-tile { background: #fafafa; border-style: dashed; }
#pgvar-stale { background: #fff4e5; color: #6b3d00; border: 1px solid #f3d19e; border-radius: 6px;
               padding: 4px 10px; font-size: 12.5px; margin-bottom: 6px; }
table.pgvar-table { border-collapse: collapse; font-size: 12px; font-variant-numeric: tabular-nums; }
table.pgvar-table th, table.pgvar-table td { padding: 2px 8px; text-align: right; }
table.pgvar-table th:first-child, table.pgvar-table td:first-child { text-align: left; }
table.pgvar-table tr.pgvar-current td { font-weight: 650; background: #eef6ee; }
#pgvar-messages:empty { display: none; }
#pgvar-messages { background: #fdecea; color: #7a1712; border: 1px solid #f5c2bd; border-radius: 6px;
                  padding: 6px 10px; font-size: 13px; }
#pgvar-messages div + div { margin-top: 3px; }
#pgvar-activity { font-size: 12px; color: #00528a; }
.pgvar-note { font-size: 12px; color: #5b6470; }
"""


_fmt = number  # the page's one number format (pgvar.explorer.lesson.number)


def _short(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


def _attr(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else repr(float(value))


def _slider(span: Span, label: str, value: float, css_class: str) -> pn.widgets.FloatSlider:
    """A slider over ``span``: the same range the knob's check and the query string accept."""
    return pn.widgets.FloatSlider(
        label=label,
        start=span.low,
        end=span.high,
        step=span.step,
        value=value,
        css_classes=[css_class],
        width=300,
    )


def _tick_formatter() -> CustomJSTickFormatter:
    """Axis labels in the page's number format (no e-notation)."""
    return CustomJSTickFormatter(code=FORMAT_JS + "return pgvarFormat(tick, 3);")


#: The widget's module: the lesson's drawing code, then its wiring to the component's parameters.
_ESM = (
    WIDGET_JS
    + f"const CHOICES = {list(N_CHOICES)};\n"
    + """
export function render({ model }) {
  const root = document.createElement('div');
  const widget = pgvarLesson(root, {send: (name, value) => { model[name] = value; }});
  const knobs = () =>
    widget.setKnobs({n_choices: CHOICES, rtg: model.rtg, baseline: model.baseline, n: model.n});
  const url = () => {  // the page's URL mirrors the settings (sent with every view)
    const query = model.view && model.view.query;
    if (query && window.location.search !== query)
      window.history.replaceState(null, '', window.location.pathname + query);
  };
  const draw = () => { if (model.view && model.view.labels) widget.update(model.view); url(); };
  model.on('view', draw);
  for (const name of ['rtg', 'baseline', 'n']) model.on(name, knobs);
  knobs(); draw(); url();
  return root;
}
"""
)


class LessonWidget(JSComponent):
    """The lesson's widget (:mod:`pgvar.explorer.lesson`) as a Panel component. Its knobs and story
    buttons set ``rtg``, ``baseline``, ``n`` and ``story``; the page sets ``view`` (what to draw) and
    ``query`` (the page's URL follows it)."""

    rtg = param.Boolean(default=False)
    baseline = param.Boolean(default=False)
    n = param.Integer(default=1)
    story = param.Integer(default=0, bounds=(0, STORY_STEPS))
    view = param.Dict(default={})
    query = param.String(default="")

    _esm = _ESM
    _stylesheets = [LESSON_CSS]  # noqa: RUF012 (Panel's class attribute)


MORE_TITLE = "More: estimator, policy, MDP, exact split, variance against N, export"
#: The page's HTML: Panel's, with a viewport meta tag (phones lay the page out at their own width).
TEMPLATE = """{% extends base %}
{% block inner_head %}
<meta name="viewport" content="width=device-width, initial-scale=1">
{{ super() }}
{% endblock %}
{% block contents %}
{{ embed(roots.app) }}
{% endblock %}
"""


class ExplorerView:
    """Widgets, figures, the worker and the tick of one session.

    ``doc`` is the session's Bokeh document on a server: work then runs in the session's thread and
    frames are drawn on the event loop; without one (a notebook, the tests) work runs inline.
    """

    def __init__(
        self,
        mdp: str = "lesson",
        *,
        history: int = DEFAULT_HISTORY,
        seed: int | None = None,
        query: dict[str, str] | None = None,
        file_choice: str | None = None,
        doc=None,
        limits: budget.Limits = budget.EXPLORER,
    ) -> None:
        changes, query_messages = parse_query(query or {})
        self._history = history  # the server's default length: a link names another one only
        history = int(changes.pop("history", history))
        wanted_mdp = changes.pop("mdp", None)
        self._doc = doc
        self._loop = None
        if doc is not None:
            from tornado.ioloop import IOLoop

            self._loop = IOLoop.current()
        self._closed = False
        self.jobs = SessionJobs(limits, inline=doc is None)
        # exact values: one more thread per session, so that ticks go on while they are computed
        self._exact_pool = None if doc is None else ThreadPoolExecutor(1, thread_name_prefix="pgvar-exact")
        self.state = ExplorerState("lesson", history=history, seed=seed, executor=self._exact_pool)
        self.choices = builtin_choices()
        if file_choice is not None and file_choice not in self.choices.values():
            self.choices = {f"{file_choice} (--mdp)": file_choice, **self.choices}
        if wanted_mdp is not None and not (
            wanted_mdp in self.choices.values() or is_builtin_spec(wanted_mdp)
        ):
            query_messages.append(f"query string: mdp {wanted_mdp!r} is not a built-in MDP")
            wanted_mdp = None
        self._syncing = False
        self._ticking = False
        self._next_allowed = 0.0
        self._last_ms = 0.0
        self._range_anchor: float | None = None
        self._callback = None
        self._seq = 0  # jobs submitted; a frame from the latest one may set the widgets
        self._activity: dict[int, str] = {}  # work other than ticks in flight, by job number
        self._frame: Frame | None = None
        self._shown_version = -1
        self._shown_epoch = -1
        self._shown_theta: bytes | None = None
        self._history_seen = 0
        self._sliders: list[pn.widgets.FloatSlider] = []
        self._build_widgets()
        self._build_figures()
        self._build_layout()
        learn = changes.pop("learn", False)
        lr = changes.pop("lr", None)
        logits = changes.pop("logits", None)
        story = int(changes.pop("story", 0))
        if story:
            kind = changes.get("baseline_kind", Knobs.baseline_kind)
            changes.update(story_changes(story, kind, changes.get("group", Knobs.group)))
            if changes.get("baseline_kind", kind) != kind:
                query_messages.append(
                    f"query string: kind={kind} set aside for the story: its steps take N = 1, less than a "
                    "group of K episodes; the lesson's running-mean baseline stands in"
                )
        self._syncing = True
        self.lesson.story = story
        self._syncing = False
        setup = partial(self._setup, str(mdp), wanted_mdp, changes, learn, lr, logits, query_messages)
        self._submit(setup, "mdp", "loading the MDP")

    def _setup(self, mdp, wanted_mdp, changes, learn, lr, logits, query_messages) -> None:
        """The session's first job: its MDP (``--mdp``, then the query string's), knobs, logits and
        learn mode."""
        state = self.state
        if mdp != state.mdp_source:
            state.load_mdp(mdp)
        if wanted_mdp is not None:
            state.load_mdp(wanted_mdp)
        for name, value in changes.items():
            if not state.apply(**{name: value}):
                query_messages.append(f"query string: {state.messages.pop('knobs')}")
        if logits is not None:
            if len(logits) != state.theta.size:
                query_messages.append(
                    f"query string: logits: {state.base_mdp.name} has {state.theta.size} logits, "
                    f"the link gives {len(logits)}; the policy stays uniform"
                )
            else:
                state.set_theta(np.reshape(logits, state.theta.shape))
        if query_messages:
            state.messages["query"] = "; ".join(query_messages)
        state.set_learning(learn, lr)

    # -- widgets ---------------------------------------------------------------------------
    def _build_widgets(self) -> None:
        k = self.state.knobs
        self.lesson = LessonWidget(
            rtg=k.rtg, baseline=k.baseline, n=k.n, sizing_mode="stretch_width", margin=(6, 4)
        )
        kinds = {BASELINE_KINDS[kind]: kind for kind in PAGE_BASELINE_KINDS}
        self.kind = pn.widgets.Select(
            label="baseline kind", options=kinds, value=k.baseline_kind, css_classes=["pgvar-kind"], width=300
        )
        self.lam = _slider(LAMBDA, "GAE λ (1 = plain reward-to-go)", k.lam, "pgvar-lam")
        self.gamma = _slider(GAMMA, "discount γ", self.state.gamma, "pgvar-gamma")
        self.entropy = _slider(ENTROPY, "entropy bonus", k.entropy, "pgvar-entropy")
        self.batches = pn.widgets.Select(
            label="batches per reading",
            options=list(BATCH_CHOICES),
            value=k.batches,
            css_classes=["pgvar-batches"],
            width=300,
        )
        self.group = pn.widgets.Select(
            label="group size K (RLOO, GRPO: episodes per start state; N is at least K)",
            options=list(GROUP_CHOICES),
            value=k.group,
            disabled=not k.grouped,
            css_classes=["pgvar-group"],
            width=300,
        )
        self._knob_widgets = {
            "baseline_kind": self.kind,
            "group": self.group,
            "lam": self.lam,
            "gamma": self.gamma,
            "entropy": self.entropy,
            "batches": self.batches,
        }
        for name, widget in self._knob_widgets.items():
            widget.param.watch(lambda event, name=name: self._on_knob(name, event.new), "value")
        for name in ("rtg", "baseline", "n"):
            self.lesson.param.watch(lambda event, name=name: self._on_knob(name, event.new), name)
        self.lesson.param.watch(lambda event: self._on_story(event.new), "story")

        self.learn = pn.widgets.Toggle(
            label=_learn_label(self.state.learning),
            value=self.state.learning,
            color="success",
            variant="outline",
            css_classes=["pgvar-learn"],
            width=300,
        )
        self.lr = _slider(LEARNING_RATE, "learning rate", self.state.learning_rate, "pgvar-lr")
        self.learn.param.watch(self._on_learn, "value")
        self.lr.param.watch(self._on_learn, "value")
        self.uniform = pn.widgets.Button(label="uniform policy", width=145)
        self.randomize = pn.widgets.Button(label="random logits", width=145)
        self.uniform.on_click(self._on_uniform)
        self.randomize.on_click(self._on_randomize)
        self.sliders_box = pn.Column(width=320, margin=0)

        options = {label: spec for label, spec in self.choices.items()}
        self.mdp_select = pn.widgets.Select(
            label="MDP", options=options, css_classes=["pgvar-mdp"], width=300
        )
        self.mdp_text = pn.widgets.TextInput(
            label="or a built-in with options",
            placeholder="random:seed=3,states=4",
            width=220,
            css_classes=["pgvar-mdp-text"],
        )
        self.mdp_load = pn.widgets.Button(label="load", width=70, align="end", css_classes=["pgvar-mdp-load"])
        self.mdp_select.param.watch(lambda e: self._load_mdp(e.new), "value")
        self.mdp_load.on_click(lambda _: self._load_typed_mdp())
        self.mdp_info = pn.pane.HTML("", width=300, stylesheets=[CSS])
        self.activity = pn.pane.HTML(
            '<div id="pgvar-activity" data-busy="0"></div>', stylesheets=[CSS], sizing_mode="stretch_width"
        )

        self.csv = pn.widgets.FileDownload(
            callback=self._readings_csv,
            filename="pgvar-readings.csv",
            label="readings (CSV)",
            color="light",
            width=145,
            css_classes=["pgvar-csv"],
        )
        self.history_csv = pn.widgets.FileDownload(
            callback=self._history_csv,
            filename="pgvar-history.csv",
            label="history (CSV)",
            color="light",
            width=145,
        )
        self.png = pn.widgets.FileDownload(
            callback=self._png,
            filename="pgvar-explorer.png",
            label="figure (PNG)",
            color="light",
            width=145,
            css_classes=["pgvar-png"],
        )
        self.sweep = pn.widgets.Button(label="measure every N", width=160, css_classes=["pgvar-sweep"])
        self.sweep.on_click(self._on_sweep)

        self.messages = pn.pane.HTML(
            '<div id="pgvar-messages" role="alert"></div>', stylesheets=[CSS], sizing_mode="stretch_width"
        )
        self.table = pn.pane.HTML("", stylesheets=[CSS], width=900)
        self.header = pn.pane.HTML("", stylesheets=[CSS], sizing_mode="stretch_width")

    # -- figures ---------------------------------------------------------------------------
    def _build_figures(self) -> None:
        tools = "save"
        self.y_range = Range1d(1e-4, 10.0)
        self.x_range_breakdown = Range1d(1e-4, 10.0)
        self.vs_n_range = Range1d(1e-4, 10.0)

        self.history_src = ColumnDataSource(
            {"tick": [], "variance": [], "lo": [], "hi": [], "exact": []}, name="pgvar-history"
        )
        hist = figure(
            width=650,
            height=300,
            y_axis_type="log",
            y_range=self.y_range,
            tools=tools,
            title="rolling history: measured variance (95% CI band) and exact variance",
            x_axis_label="tick",
        )
        hist.yaxis.formatter = _tick_formatter()
        band = hist.varea(
            x="tick",
            y1="lo",
            y2="hi",
            source=self.history_src,
            color=MEASURED_COLOUR,
            alpha=0.18,
        )
        measured = hist.line(
            x="tick",
            y="variance",
            source=self.history_src,
            color=MEASURED_COLOUR,
            line_width=2,
        )
        exact_line = hist.line(
            x="tick",
            y="exact",
            source=self.history_src,
            color="#111111",
            line_dash="dashed",
            line_width=2,
        )
        hist.add_layout(
            Legend(
                items=[("measured", [measured]), ("95% CI", [band]), ("exact / N", [exact_line])],
                orientation="horizontal",
                border_line_alpha=0,
                margin=0,
                padding=2,
            ),
            "above",
        )
        hist.add_tools(
            HoverTool(
                tooltips=[
                    ("tick", "@tick"),
                    ("variance", "@variance{0.[000000]}"),
                    ("exact", "@exact{0.[000000]}"),
                ]
            )
        )
        self.history_fig = hist

        labels = self.state.labels()
        self.breakdown_src = ColumnDataSource(self._breakdown_data(None))
        bd = figure(
            width=470,
            height=210,
            x_axis_type="log",
            x_range=self.x_range_breakdown,
            y_range=FactorRange(*labels[::-1]),
            tools=tools,
            title="per-knob breakdown at this N",
            toolbar_location="right",
        )
        bd.xaxis.formatter = _tick_formatter()
        bd.hbar(
            y="label",
            left="left",
            right="variance",
            height=0.65,
            source=self.breakdown_src,
            color="color",
            alpha="alpha",
        )
        bd.segment(
            x0="lo", x1="hi", y0="label", y1="label", source=self.breakdown_src, color="#1d2330", line_width=2
        )
        bd.scatter(
            x="exact", y="label", source=self.breakdown_src, marker="diamond", size=13, color="#111111"
        )
        self.breakdown = bd

        self.split_src = ColumnDataSource({"label": labels, "noise": [0.0] * 4, "sampling": [0.0] * 4})
        self.split_range = Range1d(0.0, 1.0)
        sp = figure(
            width=420,
            height=240,
            y_range=FactorRange(*labels[::-1]),
            tools=tools,
            x_range=self.split_range,
            title="exact variance / N: reward noise + action sampling",
        )
        parts = sp.hbar_stack(
            ["sampling", "noise"], y="label", height=0.65, source=self.split_src, color=["#8da0cb", "#fc8d62"]
        )
        sp.add_layout(
            Legend(
                items=[("action sampling", [parts[0]]), ("reward noise", [parts[1]])],
                orientation="horizontal",
                border_line_alpha=0,
            ),
            "below",
        )
        sp.xaxis.ticker.desired_num_ticks = 4
        sp.xaxis.formatter = _tick_formatter()
        self.split = sp

        self.vs_n_lines = ColumnDataSource({"xs": [], "ys": [], "color": [], "width": [], "alpha": []})
        self.vs_n_points = ColumnDataSource({"n": [], "variance": [], "lo": [], "hi": []}, name="pgvar-vs-n")
        self.vs_n_now = ColumnDataSource({"n": [], "variance": []})
        vn = figure(
            width=560,
            height=290,
            x_axis_type="log",
            y_axis_type="log",
            tools=tools,
            x_range=(0.7, 1500),
            y_range=self.vs_n_range,
            x_axis_label="batch size N",
            title="variance against N: exact / N lines, measured points (95% CI)",
        )
        vn.yaxis.formatter = _tick_formatter()
        vn.multi_line(
            xs="xs", ys="ys", source=self.vs_n_lines, color="color", line_width="width", alpha="alpha"
        )
        vn.segment(x0="n", x1="n", y0="lo", y1="hi", source=self.vs_n_points, color="#1d2330")
        vn.scatter(x="n", y="variance", source=self.vs_n_points, size=7, color=MEASURED_COLOUR)
        vn.scatter(
            x="n",
            y="variance",
            source=self.vs_n_now,
            size=14,
            marker="circle",
            fill_alpha=0,
            line_color="#D55E00",
            line_width=2,
        )
        self.vs_n = vn

        self.policy_src = ColumnDataSource(
            {"row": [], "action": [], "p": [], "text": [], "color": []}, name="pgvar-policy"
        )
        pol = figure(
            width=320,
            height=150,
            x_range=FactorRange(),
            y_range=FactorRange(),
            tools="",
            toolbar_location=None,
            title="policy π(a|o)",
        )
        pol.rect(x="action", y="row", width=0.95, height=0.9, source=self.policy_src, color="color")
        pol.text(
            x="action",
            y="row",
            text="text",
            source=self.policy_src,
            text_align="center",
            text_baseline="middle",
            text_font_size="11px",
        )
        pol.grid.visible = False
        pol.axis.major_tick_line_color = None
        pol.axis.axis_line_color = None
        self.policy_fig = pol

        self.learn_src = ColumnDataSource({"step": [], "J": []}, name="pgvar-learn")
        lf = figure(
            width=320, height=170, tools="save", title="J(θ) while learning (exact)", x_axis_label="step"
        )
        lf.line(x="step", y="J", source=self.learn_src, color="#009E73", line_width=2)
        lf.scatter(x="step", y="J", source=self.learn_src, color="#009E73", size=4)
        self.learn_fig = lf

        figures = {
            "history": self.history_fig,
            "breakdown": self.breakdown,
            "split": self.split,
            "vs_n": self.vs_n,
            "policy": self.policy_fig,
            "learn": self.learn_fig,
        }
        self.panes = {name: pn.pane.Bokeh(fig) for name, fig in figures.items()}

    # -- layout ----------------------------------------------------------------------------
    def _build_layout(self) -> None:
        def card(title, *items, collapsed=False):
            return pn.Card(*items, title=title, collapsed=collapsed, width=340, margin=(4, 4))

        controls = pn.Column(
            card("Estimator", self.kind, self.group, self.lam, self.gamma, self.entropy, self.batches),
            card(
                "Policy",
                self.sliders_box,
                self.panes["policy"],
                pn.Row(self.uniform, self.randomize),
                self.learn,
                self.lr,
                self.panes["learn"],
            ),
            card("MDP", self.mdp_select, pn.Row(self.mdp_text, self.mdp_load), self.mdp_info),
            card(
                "Export",
                pn.Row(self.csv, self.history_csv),
                self.png,
                pn.pane.HTML(
                    '<div class="pgvar-note">Each plot also has a save tool (PNG).</div>', stylesheets=[CSS]
                ),
            ),
            width=350,
        )
        main = pn.Column(
            self.panes["history"],
            pn.FlexBox(self.panes["breakdown"], self.panes["split"]),
            self.table,
            pn.Row(
                self.panes["vs_n"],
                pn.Column(
                    self.sweep,
                    pn.pane.HTML(
                        '<div class="pgvar-note" style="width:300px">Points: the latest reading at each N of '
                        "the current configuration (drag N or press the button). Lines: exact single-episode "
                        "variance / N for all four configurations; the current one is bold.</div>",
                        stylesheets=[CSS],
                    ),
                ),
            ),
            max_width=1100,
        )
        self._more_contents = pn.FlexBox(controls, main)
        self.more = pn.Card(
            pn.pane.HTML('<div class="pgvar-note">opening…</div>', stylesheets=[CSS]),
            title=MORE_TITLE,
            collapsed=True,  # the lesson's widget first; everything else one click away
            sizing_mode="stretch_width",
            css_classes=["pgvar-more"],
            margin=(6, 4),
        )
        self.more.param.watch(self._open_more, "collapsed")
        for pane in (self.header, self.messages, self.activity):
            pane.margin = (2, 5)
        self.layout = pn.Column(
            self.header,
            self.messages,
            self.activity,
            self.lesson,
            self.more,
            margin=(2, 8),
            sizing_mode="stretch_width",
        )

    def _open_more(self, event) -> None:
        """The "More" area is opened for the first time: its contents join the page (they are kept up
        to date meanwhile, so they show the current state at once)."""
        if not event.new and self._more_contents is not None:
            contents, self._more_contents = self._more_contents, None
            self.more.objects = [contents]

    # -- work: submitted from the event loop, run in the session's thread, drawn back on the loop ----
    def _job(self, work: Callable[[], object] | None, topic: str) -> tuple[Frame, float]:
        """Run ``work`` (in the session's thread, under its limits); a refusal or an error becomes a
        message under ``topic``. Returns the frame to draw and the seconds it took."""
        start = time.perf_counter()
        state = self.state
        try:
            if work is not None:
                work()
        except (PgvarError, MemoryError) as err:
            state.messages[topic] = str(err) or "out of memory"
        except Exception as err:  # a bug must not kill the page: show it and carry on
            log.exception("pgvar explorer: %s failed", topic)
            state.messages["bug"] = f"internal error (please report): {err!r}"
        return state.snapshot(), time.perf_counter() - start

    def _submit(
        self, work: Callable[[], object] | None, topic: str, doing: str | None = None, *, tick: bool = False
    ) -> None:
        """Queue ``work`` on the session's thread; its frame is drawn when it is done. ``doing`` (not
        for ticks) is shown while it waits or runs."""
        if self._closed:
            return
        self._seq += 1
        seq = self._seq
        if doing is not None:
            self._activity[seq] = doing
            self._render_activity()
        future = self.jobs.submit(self._job, work, topic)
        future.add_done_callback(lambda done: self._post(partial(self._finish, done, seq, tick)))

    def _post(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the page's event loop with the document lock (from any thread); at once when
        there is no server."""
        if self._doc is None:
            fn()
            return
        if self._closed:
            return
        doc = self._doc

        def locked() -> None:
            if self._closed:
                return
            try:
                with set_curdoc(doc), pn.io.hold(doc):
                    fn()
            except Exception:  # drawing failed: log it, the next frame draws again
                log.exception("pgvar explorer: drawing failed")

        def on_loop() -> None:
            if self._closed:
                return
            with contextlib.suppress(Exception):  # the session has just ended
                doc.add_next_tick_callback(locked)

        with contextlib.suppress(Exception):  # the server has stopped
            self._loop.add_callback(on_loop)  # tornado's add_callback is safe from any thread

    def _finish(self, future: Future, seq: int, tick: bool) -> None:
        """Draw a job's frame (on the event loop)."""
        if self._closed or future.cancelled():
            return
        self._activity.pop(seq, None)
        frame, seconds = future.result()
        if tick:
            self._ticking = False
            self._last_ms = 1000 * seconds
            # keep the session's duty cycle below about two thirds when ticks are slow (big MDPs), but
            # never wait long (a first tick also compiles the kernels)
            pause = min(max(0.0, 2 * seconds - PERIOD_MS / 1000), MAX_PAUSE_S)
            self._next_allowed = time.monotonic() + pause
        self.render(frame, latest=seq == self._seq)

    # -- state <-> widgets -----------------------------------------------------------------
    def _on_knob(self, name: str, value) -> None:
        if self._syncing:
            return
        self._submit(partial(self.state.apply, **{name: value}), "knobs")

    def _on_story(self, step: int) -> None:
        """A story button: go to ``step`` (its three knobs), or leave the story (0)."""
        if self._syncing:
            return
        if step:
            self._submit(partial(self._go_to_story, step), "knobs")
        elif self._frame is not None:
            self._render_lesson(self._frame, latest=False)

    def _go_to_story(self, step: int) -> None:
        """The story step's knobs (in the session's worker, where the state's knobs are current)."""
        knobs = self.state.knobs
        self.state.apply(**story_changes(step, knobs.baseline_kind, knobs.group))

    def _sync_widgets(self, frame: Frame) -> None:
        k = frame.knobs
        values = {
            "baseline_kind": k.baseline_kind,
            "group": k.group,
            "lam": k.lam,
            "gamma": frame.gamma,
            "entropy": k.entropy,
            "batches": k.batches,
        }
        self._syncing = True
        try:
            for name, widget in self._knob_widgets.items():
                if widget.value != values[name]:
                    widget.value = values[name]
            self.group.disabled = not k.grouped
            lesson = self.lesson
            if (lesson.rtg, lesson.baseline, lesson.n) != (k.rtg, k.baseline, k.n):
                lesson.param.update(rtg=k.rtg, baseline=k.baseline, n=k.n)
            if lesson.story and story_step_of(k.rtg, k.baseline, k.n) != lesson.story:
                lesson.story = 0  # a knob turned by hand: the story gives way to free play
            if self.learn.value != frame.learning:
                self.learn.value = frame.learning
            self.learn.label = _learn_label(frame.learning)
            if self.lr.value != frame.learning_rate:
                self.lr.value = frame.learning_rate
            if frame.mdp_source not in self.mdp_select.options.values():  # typed in: offer it too
                self.mdp_select.options = {**self.choices, f"{frame.mdp_source} (typed)": frame.mdp_source}
            if self.mdp_select.value != frame.mdp_source:
                self.mdp_select.value = frame.mdp_source
        finally:
            self._syncing = False

    def _on_learn(self, _event=None) -> None:
        if self._syncing:
            return
        self._submit(partial(self.state.set_learning, self.learn.value, self.lr.value), "policy")

    def _on_uniform(self, _event=None) -> None:
        self._submit(lambda: self.state.set_theta(np.zeros_like(self.state.theta)), "policy")

    def _on_randomize(self, _event=None) -> None:
        rng = np.random.default_rng()

        def randomize() -> None:
            self.state.set_theta(rng.normal(0.0, 1.0, self.state.theta.shape).round(1))

        self._submit(randomize, "policy")

    def _on_logit(self, index: int, value: float, version: int) -> None:
        if self._syncing:
            return

        def set_logit() -> None:
            if self.state.mdp_version == version:  # a slider of the MDP before does nothing
                self.state.set_logit(index, value)

        self._submit(set_logit, "policy")

    def _build_sliders(self, frame: Frame) -> None:
        """One slider per logit, grouped under the name of its observation (row of theta)."""
        theta = frame.theta
        rows, actions = frame.row_names, frame.action_names
        sliders = []
        if theta.size <= MAX_SLIDERS:
            groups = []
            n_actions = theta.shape[-1]
            for row, row_name in enumerate(rows):
                row_sliders = []
                for action, action_name in enumerate(actions):
                    index = row * n_actions + action
                    slider = pn.widgets.FloatSlider(
                        label=_short(action_name, 10),
                        start=-LOGIT_LIMIT,
                        end=LOGIT_LIMIT,
                        step=0.1,
                        value=float(theta.flat[index]),
                        width=92,
                        margin=(0, 6),
                        css_classes=["pgvar-logit"],
                    )
                    watcher = partial(self._on_logit, index, version=frame.mdp_version)
                    slider.param.watch(lambda e, watcher=watcher: watcher(e.new), "value")
                    row_sliders.append(slider)
                sliders.extend(row_sliders)
                groups.append(
                    pn.pane.HTML(
                        f'<div class="pgvar-note"><b>{html.escape(_short(row_name, 44))}</b> logits</div>',
                        stylesheets=[CSS],
                        margin=(4, 6, 0, 6),
                    )
                )
                groups.append(pn.GridBox(*row_sliders, ncols=min(3, n_actions), width=320))
            self.sliders_box.objects = groups
        else:
            self.sliders_box.objects = [
                pn.pane.HTML(
                    f'<div class="pgvar-note">{theta.size} logits: too many for sliders; use the buttons or'
                    " learn mode.</div>",
                    stylesheets=[CSS],
                )
            ]
        self._sliders = sliders

    def _sync_sliders(self, frame: Frame) -> None:
        self._syncing = True
        try:
            for index, slider in enumerate(self._sliders):
                value = round(float(frame.theta.flat[index]), 2)
                if slider.value != value:
                    slider.value = value
        finally:
            self._syncing = False

    def _load_mdp(self, spec: str) -> None:
        if self._syncing:
            return
        self._submit(partial(self.state.load_mdp, spec), "mdp", f"loading MDP {spec!r}…")

    def _load_typed_mdp(self) -> None:
        text = self.mdp_text.value.strip()
        if not text:
            return
        if not is_builtin_spec(text):
            message = (
                f"{text!r}: type a built-in ({', '.join(builtin_choices())}, "
                "with options like random:seed=3); files come from --mdp"
            )
            self._submit(partial(self.state.messages.__setitem__, "mdp", message), "mdp")
        else:
            self._submit(partial(self.state.load_mdp, text), "mdp", f"loading MDP {text!r}…")

    def _on_sweep(self, _event=None) -> None:
        def sweep() -> None:
            self.state.messages.pop("sweep", None)
            self.state.sweep()

        self._submit(sweep, "sweep", "measuring every N…")

    # -- exports: computed in the session's thread, while the page goes on ----------------
    async def _export(self, make: Callable[[ExplorerState], object], topic: str):
        def job() -> object:
            try:
                return make(self.state)
            except (PgvarError, MemoryError) as err:
                self.state.messages[topic] = f"{topic}: {err or 'out of memory'}"
                raise

        return await asyncio.wrap_future(self.jobs.submit(job))

    async def _readings_csv(self) -> io.StringIO:
        return io.StringIO(await self._export(readings_csv, "export"))

    async def _history_csv(self) -> io.StringIO:
        return io.StringIO(await self._export(history_csv, "export"))

    async def _png(self) -> io.BytesIO:
        return io.BytesIO(await self._export(render_png, "export"))

    # -- the tick --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the periodic tick (call once the page has loaded)."""
        if self._callback is None and not self._closed:
            self._callback = pn.state.add_periodic_callback(self.on_tick, period=PERIOD_MS)
            self.on_tick()  # the first reading now, not a period later

    def stop(self) -> None:
        if self._callback is not None:
            callback, self._callback = self._callback, None
            with contextlib.suppress(Exception):  # the session is already gone
                callback.stop()

    def close(self) -> None:
        """The session has ended: stop the tick, cancel queued work, drop the running job's result
        when it finishes, then free the state's memory (in the session's thread, after that job)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        state, pool = self.state, self._exact_pool

        def release() -> None:
            state.close()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

        self.jobs.close(last=release)

    def _connected(self) -> bool:
        """False once the browser tab has gone (nothing to draw for until the session ends)."""
        context = getattr(self._doc, "session_context", None) if self._doc is not None else None
        session = getattr(context, "session", None) if context is not None else None
        return session is None or session.connection_count > 0

    def on_tick(self) -> None:
        """Submit one tick, unless one is running, other work is queued, the last tick was slow or
        the tab has gone."""
        if self._closed or self._ticking or self.jobs.busy or time.monotonic() < self._next_allowed:
            return
        if not self._connected():
            return
        self._ticking = True
        self._submit(self.state.tick, "measure", tick=True)

    # -- rendering (on the event loop, from a frame) ----------------------------------------
    def render(self, frame: Frame, *, latest: bool = True) -> None:
        """Draw ``frame``; the widgets follow it only when it comes from the latest job (``latest``),
        so a frame never undoes a change still queued."""
        self._frame = frame
        if frame.mdp_version != self._shown_version:
            self._render_mdp(frame)
        if latest:
            self._sync_widgets(frame)
            self._sync_sliders(frame)
        theta = frame.theta.tobytes()
        if theta != self._shown_theta:
            self._shown_theta = theta
            self._render_policy(frame)
        self._render_header(frame)
        if frame.last is not None:
            self._update_range(frame)
        self._render_lesson(frame, latest=latest)
        self._render_table(frame)
        self._render_history(frame)
        self._render_breakdown(frame)
        self._render_vs_n(frame)
        self._render_learning(frame)
        self._render_messages(frame)
        self._render_activity()

    def _render_mdp(self, frame: Frame) -> None:
        """A new MDP: its description, its sliders, empty plots."""
        self._shown_version = frame.mdp_version
        self._build_sliders(frame)
        horizon = "unbounded" if frame.horizon is None else f"horizon {frame.horizon}"
        self.mdp_info.object = (
            f'<div id="pgvar-mdp-info" class="pgvar-note" data-mdp="{html.escape(frame.mdp_name)}">'
            f"<b>{html.escape(frame.mdp_name)}</b>: {html.escape(frame.mdp_description)}<br>"
            f"{frame.n_states} states, {frame.n_actions} actions, {horizon}, γ={frame.mdp_gamma:g}, "
            f"{frame.theta.size} logits</div>"
        )
        self.learn_src.data = {"step": [], "J": []}
        self._range_anchor = None

    def _render_header(self, frame: Frame) -> None:
        name = html.escape(frame.mdp_name)
        self.header.object = (
            f'<div id="pgvar-header" data-mdp="{name}" data-batches="{frame.knobs.batches}" '
            'style="display:flex;align-items:baseline;gap:14px">'
            '<span style="font-size:21px;font-weight:700">pgvar explorer</span>'
            '<span class="pgvar-note">gradient-estimate variance: three knobs, one villain · MDP '
            f"<b>{name}</b> · each tick measures {frame.knobs.batches} fresh independent "
            "batches</span></div>"
        )

    def _update_range(self, frame: Frame) -> None:
        result = frame.last
        van = result.vanilla_n1
        anchor = van.exact if van.exact is not None and van.exact > 0 else van.variance
        if not anchor or not math.isfinite(anchor) or anchor <= 0:
            values = [c.variance for c in result.configs if c.variance > 0]
            anchor = max(values) if values else 1.0
        old = self._range_anchor
        if old is None or not 0.5 < anchor / old < 2.0 or (van.exact is not None and anchor != old):
            self._range_anchor = anchor
            top = anchor * HEADROOM
            bottom = top / 10**SPAN_DECADES
            for rng in (self.y_range, self.x_range_breakdown, self.vs_n_range):
                rng.start, rng.end = bottom, top

    def _floor(self, value: float | None) -> float:
        bottom = self.y_range.start
        if value is None or not math.isfinite(value):
            return math.nan
        return max(value, bottom * 1.0001)

    def _render_lesson(self, frame: Frame, *, latest: bool = True) -> None:
        """The lesson's widget: what it draws, and (for the latest job's frame) the page's URL."""
        doing = " · ".join(dict.fromkeys(self._activity.values()))
        if latest:
            settings = settings_query(frame, story=self.lesson.story, default_history=self._history)
            query = "?" + urlencode(settings, safe=",:")
            if self.lesson.query != query:
                self.lesson.query = query
        view = page_view(frame, story=self.lesson.story, doing=doing, ms=self._last_ms)
        self.lesson.view = {**view, "query": self.lesson.query}

    def _render_table(self, frame: Frame) -> None:
        """The table of the four configurations under "More" (measured, CI, exact, the split)."""
        r = frame.last
        stale = frame.stale
        rows = []
        biased = r is not None and any(c.bias is not None for c in r.configs)
        for i, c in enumerate(r.configs if r is not None else ()):
            cls = ' class="pgvar-current"' if i == r.current else ""
            exact_cell = "no exact value" if c.no_exact else _fmt(c.exact)
            rows.append(
                f'<tr{cls} data-config="{html.escape(c.label)}" data-value="{_attr(c.variance)}" '
                f'data-lo="{_attr(c.lo)}" data-hi="{_attr(c.hi)}" data-exact="{_attr(c.exact)}">'
                f"<td>{html.escape(c.label)}</td><td>{_fmt(c.variance)}</td>"
                f"<td>{_fmt(c.lo)} to {_fmt(c.hi)}</td><td>{exact_cell}</td>"
                f"<td>{_fmt(c.reward_noise)}</td><td>{_fmt(c.sampling)}</td>"
                + (f'<td data-bias="{_attr(c.bias)}">{html.escape(bias_text(c))}</td>' if biased else "")
                + "</tr>"
            )
        table_class = "pgvar-table pgvar-stale" if stale is not None else "pgvar-table"
        self.table.object = (
            f'<table id="pgvar-breakdown" class="{table_class}"><tr><th>config</th><th>measured</th>'
            "<th>95% CI</th><th>exact</th><th>reward noise</th><th>sampling</th>"
            + ("<th>bias |E g − ∇J| (cos to ∇J)</th>" if biased else "")
            + "</tr>"
            + "".join(rows)
            + "</table>"
        )

    def _render_history(self, frame: Frame) -> None:
        points = frame.history
        if frame.history_epoch != self._shown_epoch:  # cleared (a new MDP): start the plot afresh
            self._shown_epoch = frame.history_epoch
            self._history_seen = 0
            self.history_src.data = {"tick": [], "variance": [], "lo": [], "hi": [], "exact": []}
        new = [p for p in points if p.tick > self._history_seen]
        if not new:
            return
        self._history_seen = new[-1].tick
        self.history_src.stream(
            {
                "tick": [p.tick for p in new],
                "variance": [self._floor(p.variance) for p in new],
                "lo": [self._floor(p.lo) for p in new],
                "hi": [self._floor(p.hi) for p in new],
                "exact": [self._floor(p.exact) for p in new],
            },
            rollover=frame.history_maxlen,
        )

    def _breakdown_data(self, frame: Frame | None) -> dict:
        r = frame.last if frame is not None else None
        if r is None:
            labels = list(frame.labels) if frame is not None else self.state.labels()
            return {
                "label": labels,
                "variance": [np.nan] * 4,
                "lo": [np.nan] * 4,
                "hi": [np.nan] * 4,
                "exact": [np.nan] * 4,
                "left": [1e-12] * 4,
                "color": list(PAGE_COLOURS),
                "alpha": [0.5] * 4,
            }
        current = r.current
        return {
            "label": [c.label for c in r.configs],
            "variance": [self._floor(c.variance) for c in r.configs],
            "lo": [self._floor(c.lo) for c in r.configs],
            "hi": [self._floor(c.hi) for c in r.configs],
            "exact": [self._floor(c.exact) for c in r.configs],
            "left": [self.x_range_breakdown.start] * 4,
            "color": list(PAGE_COLOURS),
            "alpha": [CURRENT_ALPHA if i == current else OTHER_ALPHA for i in range(4)],
        }

    def _render_breakdown(self, frame: Frame) -> None:
        r = frame.last
        configs = r.configs if r is not None else ()
        labels = [c.label for c in configs] if r is not None else list(frame.labels)
        factors = labels[::-1]
        if list(self.breakdown.y_range.factors) != factors:
            self.breakdown.y_range.factors = factors
            self.split.y_range.factors = factors
        self.breakdown_src.data = self._breakdown_data(frame)
        noise = [c.reward_noise if c.reward_noise is not None else 0.0 for c in configs] or [0.0] * 4
        sampling = [c.sampling if c.sampling is not None else 0.0 for c in configs] or [0.0] * 4
        self.split_src.data = {"label": labels, "noise": noise, "sampling": sampling}
        n = r.n if r is not None else frame.knobs.n
        self.breakdown.title.text = f"per-knob breakdown at N={n} (bar: measured, ◆ exact / N)"
        top = max([a + b for a, b in zip(noise, sampling, strict=True)] + [1e-12])
        self.split_range.end = top * 1.08

    def _render_vs_n(self, frame: Frame) -> None:
        exact = frame.exact
        if exact is not None:
            ns = np.array(N_CHOICES, dtype=float)
            current = frame.current_index
            # a group baseline's line starts at N = K (whole groups); none where it has no exact value
            grouped = [frame.knobs.grouped and baseline for _, baseline in CONFIGS]
            xs = [[n for n in ns if not (g and n < frame.knobs.group)] for g in grouped]
            xs = [x if m is not None else [] for x, m in zip(xs, exact.moments, strict=True)]
            self.vs_n_lines.data = {
                "xs": xs,
                "ys": [
                    [self._floor(m.variance_trace / n) for n in x] if m is not None else []
                    for x, m in zip(xs, exact.moments, strict=True)
                ],
                "color": list(PAGE_COLOURS),
                "width": [4 if i == current else 1.5 for i in range(4)],
                "alpha": [CURRENT_ALPHA if i == current else 0.5 for i in range(4)],
            }
        elif frame.last is None:
            self.vs_n_lines.data = {"xs": [], "ys": [], "color": [], "width": [], "alpha": []}
        points = sorted(frame.by_n.items())
        self.vs_n_points.data = {
            "n": [n for n, _ in points],
            "variance": [self._floor(v[0]) for _, v in points],
            "lo": [self._floor(v[1]) for _, v in points],
            "hi": [self._floor(v[2]) for _, v in points],
        }
        r = frame.last
        if r is not None:
            self.vs_n_now.data = {"n": [r.n], "variance": [self._floor(r.reading.variance)]}
        else:
            self.vs_n_now.data = {"n": [], "variance": []}
        self.vs_n.title.text = f"variance against N: {frame.label} (exact / N lines; measured points)"

    def _render_policy(self, frame: Frame) -> None:
        probs = frame.policy
        rows, actions = list(frame.row_names), list(frame.action_names)
        data = {"row": [], "action": [], "p": [], "text": [], "color": []}
        for i, row in enumerate(rows):
            for j, action in enumerate(actions):
                p = float(probs[i, j])
                data["row"].append(row)
                data["action"].append(action)
                data["p"].append(p)
                data["text"].append(f"{p:.2f}")
                shade = int(255 - 150 * p)
                data["color"].append(f"#{shade:02x}{int(255 - 90 * p):02x}{255:02x}")
        fig = self.policy_fig
        if list(fig.x_range.factors) != actions or list(fig.y_range.factors) != rows[::-1]:
            fig.x_range.factors = actions
            fig.y_range.factors = rows[::-1]
            fig.height = 60 + 24 * len(rows)
        self.policy_src.data = data

    def _render_learning(self, frame: Frame) -> None:
        steps = list(frame.learn_history)
        exact = frame.exact
        if not steps and exact is not None:
            steps = [(frame.learn_steps, exact.objective)]
        shown = self.learn_src.data["step"]
        shown_j = self.learn_src.data["J"]
        if len(steps) != len(shown) or (steps and (steps[-1][0] != shown[-1] or steps[-1][1] != shown_j[-1])):
            self.learn_src.data = {"step": [s for s, _ in steps], "J": [j for _, j in steps]}

    def _render_messages(self, frame: Frame) -> None:
        items = "".join(f"<div>{html.escape(m)}</div>" for m in frame.messages.values())
        self.messages.object = f'<div id="pgvar-messages" role="alert">{items}</div>'

    def _render_activity(self) -> None:
        doing = " · ".join(dict.fromkeys(self._activity.values()))
        busy = int(bool(self._activity))
        self.activity.object = f'<div id="pgvar-activity" data-busy="{busy}">{html.escape(doing)}</div>'
        view = self.lesson.view
        if view and view.get("doing") != doing:  # the widget says what is being computed
            self.lesson.view = {**view, "doing": doing}


def _learn_label(learning: bool) -> str:
    """The learn toggle's label, which says what it does now."""
    return "learning: on (press to stop)" if learning else "learn: off (press to start gradient ascent)"


def build(mdp: str = "lesson", **kwargs) -> ExplorerView:
    """A new session's view (no server needed; ``view.layout`` is the Panel object)."""
    return ExplorerView(mdp, **kwargs)


def session_query() -> dict[str, str]:
    """The page's query string as ``{key: value}`` (the last value of each key)."""
    args = getattr(pn.state, "session_args", None) or {}
    out = {}
    for key, values in args.items():
        if values:
            raw = values[-1]
            out[key] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return out


def in_server_session() -> bool:
    """True while Panel builds a page for a browser session of a running server."""
    doc = pn.state.curdoc
    return doc is not None and getattr(doc, "session_context", None) is not None


def app(mdp: str = "lesson", *, history: int = DEFAULT_HISTORY, file_choice: str | None = None):
    """The explorer for one session: a Panel layout whose tick starts when the page has loaded.

    Outside a server session (a notebook) this also calls ``pn.extension(inline=True)``: no CDN needed,
    and the work runs inline."""
    served = in_server_session()
    if not served:
        pn.extension(inline=True)
    view = build(
        mdp,
        history=history,
        query=session_query() if served else None,
        file_choice=file_choice,
        doc=pn.state.curdoc if served else None,
    )
    pn.state.onload(view.start)
    if not served:
        return view.layout
    pn.state.on_session_destroyed(lambda _context: view.close())
    page = pn.Template(TEMPLATE)
    page.add_panel("app", view.layout)
    return page
