"""``pgvar explore --static OUT.html``: the lesson's widget as one self-contained HTML file.

No server and no network: the page holds precomputed readings of the lesson's four configurations
(every combination of the reward-to-go and baseline knobs) at every N of the slider (1 to 1024), a
few independent readings of each (seeds ``seed``, ``seed + 1``, ...), and the story's captions. Its
knobs pick among them and its tick cycles through a setting's readings, so the bar moves, the history
fills and marks the knob changes, and the story runs offline, as on the live page. A teacher can put
the file on a course site.

Every number is the library's: :func:`pgvar.studies.variance_study` at the uniform policy (the same
readings a script gets with the same seed), the exact values from :mod:`pgvar.exact`; the widget and
its formatting are :mod:`pgvar.explorer.lesson`'s, shared with the live page.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from pgvar.errors import SpecError
from pgvar.estimators import parse_estimator
from pgvar.exact import objective
from pgvar.explorer.lesson import CSS, PAGE_COLOURS, WIDGET_JS, reading_view, story_caption, story_knobs
from pgvar.explorer.state import (
    CONFIGS,
    DEFAULT_HISTORY,
    LESSON_SPECS,
    N_CHOICES,
    STORY_STEPS,
    ConfigReading,
    TickResult,
    config_label,
)
from pgvar.mdpfile import resolve_mdp
from pgvar.montecarlo import DEFAULT_BATCHES
from pgvar.studies import variance_study
from pgvar.validation import check_int, check_seed

#: Independent readings kept for each setting (the page's tick cycles through them).
STATIC_READINGS = 6


def static_data(
    mdp: str = "lesson", *, seed: int = 0, readings: int = STATIC_READINGS, batches: int = DEFAULT_BATCHES
) -> dict:
    """The static page's data: for each N of the slider and each of ``readings`` seeds, what the
    widget shows of one tick (:func:`pgvar.explorer.lesson.reading_view`), and the story's captions."""
    readings = check_int(readings, "readings", low=1, high=50)
    seed = check_seed(seed)
    model = resolve_mdp(mdp)
    theta = np.zeros(model.theta_shape())
    specs = [parse_estimator(spec) for spec in LESSON_SPECS]
    labels = [config_label(r, b) for r, b in CONFIGS]
    j = objective(model, theta)
    by_n: list[list[dict]] = [[] for _ in N_CHOICES]
    traces: list[float] | None = None
    for k in range(readings):
        study = variance_study(model, theta, specs, ns=N_CHOICES, batches=batches, seed=seed + k)
        table = {(r.n, r.spec.canonical): r for r in study.readings}

        def reading(spec, n, label, rtg, baseline, table=table) -> ConfigReading:
            r = table[(n, spec.canonical)]
            return ConfigReading(
                label, r.spec.canonical, rtg, baseline, r.variance_trace, r.ci95[0], r.ci95[1],
                r.exact_variance_trace,
            )  # fmt: skip

        vanilla = reading(specs[0], 1, labels[0], False, False)
        if traces is None and all(table[(1, s.canonical)].exact_variance_trace is not None for s in specs):
            traces = [table[(1, s.canonical)].exact_variance_trace for s in specs]
        for i, n in enumerate(N_CHOICES):
            configs = tuple(
                reading(spec, n, label, r, b)
                for spec, label, (r, b) in zip(specs, labels, CONFIGS, strict=True)
            )
            result = TickResult(k + 1, n, batches, 0, configs, vanilla, 1.0, 1.0, 1.0, None, j, 0.0, 0)
            view = reading_view(result)
            for config in view["configs"]:  # the static page shows no spec strings: keep it small
                config.pop("spec")
            by_n[i].append(view)
    return {
        "mdp": model.name,
        "labels": labels,
        "colours": list(PAGE_COLOURS),
        "n_choices": list(N_CHOICES),
        "batches": batches,
        "seed": seed,
        "readings": readings,
        "history_max": DEFAULT_HISTORY,
        "story_knobs": {str(step): story_knobs(step) for step in range(1, STORY_STEPS + 1)},
        "captions": {
            str(step): story_caption(step, traces, model.name) for step in range(1, STORY_STEPS + 1)
        },
        "by_n": by_n,
    }


_DRIVER = r"""
(function () {
  const DATA = JSON.parse(document.getElementById('pgvar-data').textContent);
  const root = document.getElementById('pgvar-app');
  const knobs = {rtg: false, baseline: false, n: 1};
  let story = 0, tick = 0;
  const history = [];
  const matches = step => {
    const k = DATA.story_knobs[step];
    return k && k.rtg === knobs.rtg && k.baseline === knobs.baseline && k.n === knobs.n;
  };
  function readHash() {
    const args = new URLSearchParams(window.location.hash.slice(1));
    const flag = v => v === '1' || v === 'true' || v === 'on';
    if (args.has('rtg')) knobs.rtg = flag(args.get('rtg'));
    if (args.has('baseline')) knobs.baseline = flag(args.get('baseline'));
    const n = Number(args.get('N'));
    if (DATA.n_choices.indexOf(n) >= 0) knobs.n = n;
    const step = Number(args.get('story'));
    if (step >= 1 && step <= 4) { story = step; Object.assign(knobs, DATA.story_knobs[step]); }
  }
  function writeHash() {
    const hash = `#rtg=${knobs.rtg ? 1 : 0}&baseline=${knobs.baseline ? 1 : 0}&N=${knobs.n}` +
      (story ? `&story=${story}` : '');
    if (window.location.hash !== hash) window.history.replaceState(null, '', hash);
  }
  const widget = pgvarLesson(root, {send: (name, value) => {
    if (name === 'story') {
      story = value;
      if (story) Object.assign(knobs, DATA.story_knobs[story]);
    } else {
      knobs[name] = value;
      if (story && !matches(story)) story = 0;  // a knob turned by hand: free play
    }
    widget.setKnobs(knobs);
    step();
  }});
  function step() {
    tick += 1;
    const base = DATA.by_n[DATA.n_choices.indexOf(knobs.n)][(tick - 1) % DATA.readings];
    const current = (knobs.rtg ? 1 : 0) + (knobs.baseline ? 2 : 0);
    const reading = Object.assign({}, base, {current: current, bar_top: base.bar_tops[current], tick: tick});
    history.push([tick, reading.configs[current].share, current, knobs.n]);
    while (history.length > DATA.history_max) history.shift();
    widget.update({
      mdp: DATA.mdp, labels: DATA.labels, colours: DATA.colours, n_choices: DATA.n_choices,
      knobs: Object.assign({}, knobs), reading: reading, stale: null, status: '', doing: '',
      tick: tick, history: history, history_max: DATA.history_max, learning: false, story: story,
      caption: story ? DATA.captions[story] : null,
      note: `static page: ${DATA.readings} precomputed readings per setting (seeds ${DATA.seed} to ` +
        `${DATA.seed + DATA.readings - 1}, ${DATA.batches} batches each), shown in turn`,
    });
    writeHash();
  }
  readHash();
  widget.setKnobs(Object.assign({n_choices: DATA.n_choices}, knobs));
  step();
  setInterval(step, 300);
})();
"""


def static_html(mdp: str = "lesson", *, seed: int = 0, readings: int = STATIC_READINGS) -> str:
    """The static page as HTML text: the widget, its styles, its data and a small driver, inline."""
    data = static_data(mdp, seed=seed, readings=readings)
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    title = f"pgvar explorer · {data['mdp']} (static page)"
    css = CSS.replace(":host", "#pgvar-app")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
body {{ margin: 8px 12px; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }}
#pgvar-app {{ font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; }}
{css}
.pl-head {{ font-size: 13px; color: #4a5361; margin-bottom: 6px; }}
</style>
</head>
<body>
<div class="pl-head"><b style="font-size:19px;color:#1d2330">pgvar explorer</b> ·
gradient-estimate variance on <b>{html.escape(data["mdp"])}</b>: three knobs, one villain ·
a static page, precomputed by <code>pgvar explore --static</code> (no server, no network)</div>
<main id="pgvar-app"><noscript>This page needs JavaScript.</noscript></main>
<script type="application/json" id="pgvar-data">{payload}</script>
<script>
{WIDGET_JS}
{_DRIVER}
</script>
</body>
</html>
"""


def write_static(
    path: str | Path, mdp: str = "lesson", *, seed: int = 0, readings: int = STATIC_READINGS
) -> int:
    """Write the static page to ``path``; returns its size in bytes."""
    target = Path(path)
    if target.is_dir():
        raise SpecError(f"--static: {target} is a folder; give a file name such as explorer.html")
    text = static_html(mdp, seed=seed, readings=readings)
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as err:
        raise SpecError(f"--static: cannot write {target}: {err.strerror or err}") from None
    return len(text.encode("utf-8"))
