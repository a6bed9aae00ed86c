"""The lesson's widget: three knobs, the variance bar, the rolling history, the per-knob breakdown, the
ratio to vanilla and a guided four-step story; the same widget on the live page and on the static page.

Python turns a :class:`~pgvar.explorer.state.Frame` (or precomputed readings, for the static page)
into plain data (:func:`reading_view`, :func:`page_view`, :func:`story_caption`): every number is
the library's, only divided (a variance over vanilla's at N = 1, a trace over N) and formatted here
with the page's one number format (:func:`number`, :func:`percent`, :func:`ratio_words`). The
widget's JavaScript (:data:`WIDGET_JS`, a function ``pgvarLesson(root, host)``) draws that data in
plain HTML and SVG, with native controls (a switch per knob, a range for N that reports N itself to
screen readers), and tells its host when a knob or a story button is used. It computes nothing but
the layout of its charts and the marks of knob changes on the history.

Colours are the Okabe–Ito palette (safe for colour-blind readers); where a knob helps or hurts, the
page says so in words and with ▼/▲ as well as in colour.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pgvar.estimators import GROUP_BASELINES
from pgvar.explorer.state import (
    CONFIG_COLOURS,
    CONFIGS,
    N_CHOICES,
    STORY_STEPS,
    ConfigReading,
    Frame,
    Knobs,
    TickResult,
)
from pgvar.vocabulary import BASELINE_KINDS

#: The four configurations' colours on the page (``pgvar.vocabulary``'s colour-blind-safe ones).
PAGE_COLOURS: tuple[str, ...] = CONFIG_COLOURS
#: N of the story's last step.
STORY_N = 64
#: Below this share of vanilla's variance the bar's axis zooms in (a linear axis up to 100% would
#: show nothing).
ZOOM_BELOW = 0.1
_NICE = (1.0, 2.0, 5.0)


# -- the page's one number format ------------------------------------------------------------------


def number(value: float | None, digits: int = 3) -> str:
    """The page's number format: ``digits`` significant digits as plain decimals with thousands
    separators (``3.29``, ``0.000768``, ``1,400``) from 1e-6 to 1e9, ``7.7 × 10⁻⁷`` beyond; ``–``
    for unknown, ``∞`` for infinite. The widget's JavaScript ``fmt`` is the same function."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if value == 0:
        return "0"
    rounded = float(f"{value:.{digits}g}")
    magnitude = math.floor(math.log10(abs(rounded)))
    if -6 <= magnitude < 9:
        return f"{rounded:,.{max(digits - 1 - magnitude, 0)}f}"
    mantissa = rounded / 10**magnitude
    return f"{mantissa:.{digits - 1}f} × 10{_superscript(magnitude)}"


def _superscript(exponent: int) -> str:
    return str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))


def percent(share: float | None) -> str:
    """A share as a percentage in the page's format (``55.4%``)."""
    return "–" if share is None or math.isnan(share) else f"{number(100 * share)}%"


def ratio_words(share: float | None, reference: str = "") -> str:
    """``4.3× smaller`` / ``1.6× larger`` / ``the same`` for a ratio ``share`` (value over reference)."""
    if share is None or math.isnan(share) or share < 0:
        return "–"
    if share == 0:
        return "∞× smaller" + reference
    if math.isinf(share):
        return "∞× larger" + reference
    factor = number(1 / share if share < 1 else share, 2)
    if factor == "1.0":
        return "the same" + (reference.replace(" than ", " as ") if reference else "")
    return f"{factor}× {'smaller' if share < 1 else 'larger'}{reference}"


def tone(share: float | None) -> str:
    """``better`` (below 1), ``worse`` (above) or ``same``, for a ratio."""
    if share is None or math.isnan(share) or number(share if share >= 1 else 1 / share, 2) == "1.0":
        return "same"
    return "better" if share < 1 else "worse"


def _nice_top(value: float) -> float:
    """The smallest 1-2-5 number at or above ``value``."""
    exponent = math.floor(math.log10(value))
    for step in (*_NICE, 10.0):
        if step * 10**exponent >= value * (1 - 1e-12):
            return step * 10**exponent
    return 10.0 ** (exponent + 1)  # pragma: no cover


def axis_top(shares: Sequence[float | None]) -> float:
    """Top of a linear share axis: 100% (or above, where a share is larger than vanilla's) unless
    every share is below ZOOM_BELOW: then zoomed in to the smallest 1-2-5 step above them."""
    finite = [s for s in shares if s is not None and math.isfinite(s) and s > 0]
    if not finite:
        return 1.0
    top = max(finite)
    if top > 1:  # larger than vanilla's: up to the next half
        return math.ceil(top * 1.02 / 0.5) * 0.5
    if top >= ZOOM_BELOW:
        return 1.0
    return _nice_top(top * 1.1)


# -- readings as data ------------------------------------------------------------------------------


def _share(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or not reference > 0 or not math.isfinite(value):
        return None
    return value / reference


def bias_text(reading: ConfigReading) -> str:
    """A biased configuration's exact bias beside its variance (GRPO's group mean and std, ...);
    empty for an unbiased one."""
    if reading.bias is None:
        return ""
    cosine = "" if reading.cosine is None else f", cos to ∇J {reading.cosine:.4f}"
    return f"biased: |E g − ∇J| = {number(reading.bias)}{cosine}"


def config_view(reading: ConfigReading, vanilla: ConfigReading, index: int) -> dict:
    """One configuration at the current N, against vanilla at N = 1 (both measured in the same tick;
    the exact share from the exact values)."""
    share = _share(reading.variance, vanilla.variance)
    exact_share = _share(reading.exact, vanilla.exact)
    return {
        "label": reading.label,
        "spec": reading.spec,
        "colour": PAGE_COLOURS[index],
        "value": reading.variance,
        "lo": reading.lo,
        "hi": reading.hi,
        "exact": reading.exact,
        "share": share,
        "share_lo": _share(reading.lo, vanilla.hi),
        "share_hi": _share(reading.hi, vanilla.lo),
        "share_exact": exact_share,
        "value_text": number(reading.variance),
        "ci_text": f"95% CI {number(reading.lo)} to {number(reading.hi)}",
        "exact_text": number(reading.exact),
        "no_exact": reading.no_exact,
        "bias_text": bias_text(reading),
        "share_text": percent(share),
        "share_exact_text": percent(exact_share),
        "ratio_text": ratio_words(share),
        "tone": tone(share),
    }


def reading_view(result: TickResult) -> dict:
    """What the widget shows of one tick: the four configurations at N (the current one marked) as
    shares of vanilla's variance at N = 1, and the bar's and the breakdown's axes."""
    configs = [config_view(c, result.vanilla_n1, i) for i, c in enumerate(result.configs)]
    current = configs[result.current]
    shares = [c["share"] for c in configs]
    return {
        "tick": result.tick,
        "n": result.n,
        "batches": result.batches,
        "current": result.current,
        "configs": configs,
        "bar_top": axis_top([current["share"], current["share_exact"]]),
        "bar_tops": [axis_top([c["share"], c["share_exact"]]) for c in configs],
        "breakdown_top": axis_top(shares + [c["share_exact"] for c in configs]),
        "vanilla_text": number(result.vanilla_n1.variance),
        "objective": result.objective,
        "objective_text": number(result.objective),
    }


# -- the story -------------------------------------------------------------------------------------


def story_knobs(step: int) -> dict[str, object]:
    """The three knobs at a step of the story: vanilla at N = 1, reward-to-go on, the baseline on,
    N raised to STORY_N."""
    return {
        1: {"rtg": False, "baseline": False, "n": 1},
        2: {"rtg": True, "baseline": False, "n": 1},
        3: {"rtg": True, "baseline": True, "n": 1},
        4: {"rtg": True, "baseline": True, "n": STORY_N},
    }[step]


def story_changes(step: int, baseline_kind: str, group: int) -> dict[str, object]:
    """What going to a story step changes: its three knobs (:func:`story_knobs`), and, in place of a
    group baseline whose groups of K episodes are more than the step's N (N = 1 in steps 1 to 3),
    the lesson's running-mean baseline."""
    changes = story_knobs(step)
    if baseline_kind in GROUP_BASELINES and changes["n"] < group:
        changes["baseline_kind"] = Knobs.baseline_kind
    return changes


def story_step_of(rtg: bool, baseline: bool, n: int) -> int:
    """The story step whose knobs these are, or 0."""
    for step in range(1, STORY_STEPS + 1):
        if story_knobs(step) == {"rtg": rtg, "baseline": baseline, "n": n}:
            return step
    return 0


def story_shares(traces: Sequence[float]) -> list[float | None]:
    """Each step's variance as a share of vanilla's at N = 1, from the four configurations' variances
    at N = 1 (CONFIGS order)."""
    vanilla = traces[0]
    rtg, both = _share(traces[1], vanilla), _share(traces[3], vanilla)
    return [1.0 if vanilla > 0 else None, rtg, both, None if both is None else both / STORY_N]


def story_caption(step: int, traces: Sequence[float] | None, mdp: str, baseline_kind: str = "lesson") -> dict:
    """Title, one plain sentence and tone (``better``, ``worse``, ``same``) of a story step, from the
    four configurations' variances at N = 1 (exact where known); ``traces`` None: not known yet."""
    titles = {
        1: "vanilla at N = 1",
        2: "reward-to-go on",
        3: "the baseline on",
        4: f"N raised to {STORY_N}",
    }
    title = f"Step {step} of {STORY_STEPS}: {titles[step]}"
    if traces is None:
        return {"step": step, "title": title, "sentence": "Measuring this step…", "tone": "same"}
    shares = story_shares(traces)
    share = shares[step - 1]
    before = shares[step - 2] if step > 1 else None
    change = _share(share, before)
    way = tone(change)
    fell = {"better": "fell", "worse": "rose", "same": "stayed"}[way]
    vs_before = ratio_words(change, " than the step before")
    vs_vanilla = ratio_words(share, " than vanilla's")
    if step == 1:
        sentence = (
            "Vanilla REINFORCE weights every action's score by the whole return R(τ), rewards from "
            "before the action included, and averages a single episode: its variance is the bar's 100%, "
            "the mark every fix is measured against."
        )
        way = "same"
    elif step == 2:
        what = "Reward-to-go weights each score only by the rewards that came after its action"
        if way == "worse":
            sentence = (
                f"{what}, and here the variance rose to {percent(share)} of vanilla's ({vs_vanilla}): "
                f"on {mdp} the past rewards it drops were cancelling part of the later ones, so this knob "
                "makes things worse."
            )
        else:
            sentence = (
                f"{what}, since an action cannot change the past, so the noise of the earlier rewards is "
                f"gone and the variance {fell} to {percent(share)} of vanilla's ({vs_vanilla})."
            )
    elif step == 3:
        what = (
            f"Subtracting a baseline ({BASELINE_KINDS[baseline_kind]}) from each weight centres it on zero "
            "without adding bias"
        )
        if way == "worse":
            sentence = (
                f"{what} in expectation, but here the variance rose to {percent(share)} of vanilla's "
                f"({vs_before}): on {mdp} this baseline is a poor centre for the weight, so this knob makes "
                "things worse."
            )
        else:
            still = f", though still {vs_vanilla}" if tone(share) == "worse" else f", {vs_vanilla}"
            sentence = (
                f"{what}, so the variance {fell} to {percent(share)} of vanilla's ({vs_before}{still})."
            )
    else:
        sentence = (
            f"Averaging N = {STORY_N} episodes per estimate divides the variance by {STORY_N}, so it fell "
            f"to {percent(share)} of vanilla's at N = 1 ({vs_vanilla})."
        )
    return {"step": step, "title": title, "sentence": sentence, "tone": way}


def story_traces(frame: Frame) -> list[float | None] | None:
    """The four configurations' variances at N = 1 for the captions: exact where known, else the last
    tick's measurements times N (vanilla's own at N = 1; a group baseline without exact values, as
    GRPO's std on noisy rewards, takes its measurement too)."""
    last = frame.last
    measured: list[float | None] = [None] * len(CONFIGS)
    if last is not None:
        measured = [c.variance * last.n for c in last.configs]
        measured[0] = last.vanilla_n1.variance
    if frame.exact is not None:
        return [m.variance_trace if m is not None else measured[i] for i, m in enumerate(frame.exact.moments)]
    return None if last is None else measured


# -- the live page's data ---------------------------------------------------------------------------


def page_view(frame: Frame, *, story: int = 0, doing: str = "", ms: float = 0.0) -> dict:
    """Everything the widget draws for one frame of the live page."""
    last = frame.last
    history = [[p.tick, p.ratio if math.isfinite(p.ratio) else None, p.config, p.n] for p in frame.history]
    if frame.stale is not None:
        status = f"stale: {frame.stale}"
    elif last is None:
        status = f"measuring {frame.knobs.batches} batches of N = {frame.knobs.n} episodes…"
    elif frame.exact_pending:
        status = "computing the exact values…"
    else:
        status = ""
    exact_note = (
        f"exact values in {1000 * frame.exact.seconds:.0f} ms"
        if frame.exact is not None
        else ("exact: computing…" if frame.exact_pending else "exact: unavailable")
    )
    caption = None
    if story:
        caption = story_caption(story, story_traces(frame), frame.mdp_name, frame.knobs.baseline_kind)
    return {
        "mdp": frame.mdp_name,
        "labels": list(frame.labels),
        "colours": list(PAGE_COLOURS),
        "n_choices": list(N_CHOICES),
        "knobs": {"rtg": frame.knobs.rtg, "baseline": frame.knobs.baseline, "n": frame.knobs.n},
        "reading": None if last is None else reading_view(last),
        "stale": frame.stale,
        "status": status,
        "doing": doing,
        "tick": frame.tick_count if last is None else last.tick,
        "history": history,
        "history_max": frame.history_maxlen,
        "learning": frame.learning,
        "story": story,
        "caption": caption,
        "note": (
            f"each tick measures {frame.knobs.batches} fresh batches · {exact_note}"
            + (f" · {ms:.0f} ms last tick" if ms else "")
            + (" · learning: the policy moves every tick" if frame.learning else "")
        ),
    }


CSS = """
:host { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; }
.pl-wrap { display: grid; gap: 8px 14px; width: 100%; box-sizing: border-box;
  grid-template-columns: minmax(250px, 300px) 128px minmax(0, 1fr);
  grid-template-areas: "story story story" "knobs bar history" "readout bar history"
                       "breakdown breakdown breakdown" "status status status"; }
.pl-story { grid-area: story; display: flex; gap: 10px; align-items: center; flex-wrap: wrap;
  background: #f3f6fa; border: 1px solid #d5dde8; border-radius: 8px; padding: 6px 10px; min-height: 44px; }
.pl-story-text { flex: 1 1 300px; min-width: 0; }
.pl-story-title { font-weight: 650; font-size: 14px; }
.pl-caption { margin: 2px 0 0 0; font-size: 14px; line-height: 1.35; }
.pl-caption.worse, .pl-tone.worse { color: #9a3a00; }
.pl-caption.better, .pl-tone.better { color: #00528a; }
.pl-story.worse { background: #fdf0e6; border-color: #D55E00; }
.pl-story.better { background: #eaf3fa; border-color: #0072B2; }
.pl-story-buttons { display: flex; gap: 6px; flex-wrap: wrap; }
.pl-wrap button { font: inherit; font-size: 14px; padding: 5px 12px; border-radius: 6px;
  border: 1px solid #8895a7; background: #fff; cursor: pointer; }
.pl-wrap button:disabled { opacity: .45; cursor: default; }
.pl-wrap button.pl-primary { background: #0072B2; color: #fff; border-color: #0072B2; }
.pl-wrap :focus-visible { outline: 3px solid #E69F00; outline-offset: 2px; }
.pl-knobs { grid-area: knobs; display: flex; flex-direction: column; gap: 6px; }
.pl-switch { display: flex; align-items: center; gap: 8px; font-size: 15px; cursor: pointer; }
.pl-switch input { width: 20px; height: 20px; accent-color: #0072B2; margin: 0; }
.pl-state { font-size: 12px; color: #4a5361; }
.pl-n-label { font-size: 15px; }
.pl-knobs input[type=range] { width: 100%; accent-color: #0072B2; margin: 0; }
.pl-readout { grid-area: readout; display: grid; grid-template-columns: auto 1fr; gap: 0 10px;
  align-items: baseline; }
.pl-k { font-size: 11.5px; color: #4a5361; text-transform: uppercase; letter-spacing: .03em; }
.pl-big { font-size: 24px; font-weight: 650; font-variant-numeric: tabular-nums; }
.pl-sub { grid-column: 1 / span 2; font-size: 12px; color: #4a5361; font-variant-numeric: tabular-nums;
  margin-bottom: 4px; }
.pl-config { font-size: 17px; font-weight: 650; }
.pl-bar { grid-area: bar; margin: 0; display: flex; flex-direction: column; align-items: center; }
.pl-fig-title { font-size: 12px; color: #4a5361; text-align: center; margin-bottom: 2px; }
.pl-track { position: relative; width: 60px; height: 260px; border-left: 1px solid #8895a7;
  border-bottom: 1px solid #8895a7; margin-left: 40px; }
.pl-fill { position: absolute; bottom: 0; left: 8px; right: 8px; transition: height .25s; }
.pl-exact { position: absolute; left: 0; right: 0; border-top: 3px dashed #1d2330; }
.pl-tick { position: absolute; left: -44px; width: 40px; text-align: right; font-size: 11px;
  color: #4a5361; transform: translateY(-50%); }
.pl-zoom { font-size: 11.5px; color: #9a3a00; text-align: center; min-height: 15px; max-width: 128px; }
.pl-history { grid-area: history; margin: 0; min-width: 0; }
.pl-history svg { width: 100%; height: 290px; display: block; }
.pl-breakdown { grid-area: breakdown; margin: 0; }
.pl-rows { display: grid; grid-template-columns: minmax(90px, max-content) minmax(0, 1fr) 150px; gap: 3px 8px;
  align-items: center; font-size: 13px; }
.pl-row-label.current { font-weight: 700; }
.pl-row-track { position: relative; height: 16px; background: #f1f3f6; border-radius: 3px; }
.pl-row-fill { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 3px; }
.pl-row-exact { position: absolute; top: -2px; bottom: -2px; border-left: 2px solid #1d2330; }
.pl-row-text { font-variant-numeric: tabular-nums; white-space: nowrap; }
.pl-status { grid-area: status; font-size: 12px; color: #4a5361; }
#pgvar-doing:empty, #pgvar-stale:empty { display: none; }
#pgvar-doing { color: #00528a; }
#pgvar-stale { background: #fff4e5; color: #6b3d00; border: 1px solid #f3d19e; border-radius: 6px;
  padding: 2px 8px; display: inline-block; }
.pl-stale .pl-big { color: #8a919b; text-decoration: line-through; }
.pl-legend { font-size: 11.5px; color: #4a5361; }
@media (max-width: 760px) {
  .pl-wrap { grid-template-columns: minmax(0, 1fr) 112px;
    grid-template-areas: "story story" "knobs knobs" "readout bar" "history history"
                         "breakdown breakdown" "status status"; }
  .pl-track { height: 170px; width: 44px; }
  .pl-history svg { height: 200px; }
  .pl-rows { grid-template-columns: minmax(70px, max-content) minmax(0, 1fr); }
  .pl-row-text { grid-column: 1 / span 2; font-size: 12px; }
}
@media (min-width: 1700px) {
  .pl-wrap { grid-template-columns: 320px 150px minmax(0, 1.6fr) minmax(320px, 1fr);
    grid-template-areas: "story story story story" "knobs bar history breakdown"
                         "readout bar history breakdown" "status status status status"; }
  .pl-track { height: 300px; }
  .pl-history svg { height: 340px; }
  .pl-rows { grid-template-columns: minmax(90px, max-content) minmax(0, 1fr); }
  .pl-row-text { grid-column: 1 / span 2; }
}
"""

#: The page's number format in JavaScript, the same as :func:`number` (also used for the plots' axes).
FORMAT_JS = r"""
function pgvarFormat(v, digits) {
  digits = digits || 3;
  if (v === null || v === undefined || Number.isNaN(v)) return '–';
  if (!Number.isFinite(v)) return v > 0 ? '∞' : '−∞';
  if (v === 0) return '0';
  const r = Number(v.toPrecision(digits));
  const mag = Math.floor(Math.log10(Math.abs(r)));
  if (mag >= -6 && mag < 9) {
    const dec = Math.max(digits - 1 - mag, 0);
    return r.toLocaleString('en-US', {minimumFractionDigits: dec, maximumFractionDigits: dec});
  }
  const sup = String(mag).replace(/./g, c => '⁻⁰¹²³⁴⁵⁶⁷⁸⁹'['-0123456789'.indexOf(c)]);
  return (r / 10 ** mag).toFixed(digits - 1) + ' × 10' + sup;
}
"""

#: The widget: ``pgvarLesson(root, host)`` fills ``root`` and returns ``{update(view), setKnobs(k)}``;
#: ``host.send(name, value)`` receives ``rtg``, ``baseline``, ``n`` and ``story`` from the controls.
WIDGET_JS = (
    FORMAT_JS
    + r"""
function pgvarLesson(root, host) {
  const SVGNS = 'http://www.w3.org/2000/svg';
  const fmt = pgvarFormat;
  const pct = s => (s === null || s === undefined) ? '–' : fmt(100 * s) + '%';
  const axisPct = s => fmt(100 * s, 2) + '%';  // axis labels: two significant digits
  root.innerHTML = `
<div class="pl-wrap" id="pgvar-lesson">
  <section class="pl-story" id="pgvar-story" aria-label="guided story">
    <div class="pl-story-text">
      <div class="pl-story-title" id="pgvar-story-title"></div>
      <p class="pl-caption" id="pgvar-caption" aria-live="polite"></p>
    </div>
    <div class="pl-story-buttons">
      <button type="button" id="pgvar-back" class="pgvar-back">◀ back</button>
      <button type="button" id="pgvar-next" class="pgvar-next pl-primary">next ▶</button>
      <button type="button" id="pgvar-leave" class="pgvar-leave">free play</button>
    </div>
  </section>
  <section class="pl-knobs" aria-label="the three knobs">
    <label class="pl-switch"><input type="checkbox" role="switch" id="pgvar-rtg" class="pgvar-rtg">
      reward-to-go <span class="pl-state" id="pgvar-rtg-state">off</span></label>
    <label class="pl-switch"><input type="checkbox" role="switch" id="pgvar-baseline" class="pgvar-baseline">
      baseline <span class="pl-state" id="pgvar-baseline-state">off</span></label>
    <label class="pl-n-label" for="pgvar-n-range">batch size N = <output id="pgvar-n-out"
      for="pgvar-n-range">1</output></label>
    <input type="range" id="pgvar-n-range" class="pgvar-n-range" min="0" step="1" value="0"
      aria-valuetext="N = 1">
  </section>
  <section class="pl-readout" id="pgvar-readout" aria-label="current reading">
    <div class="pl-k">config</div><div id="pgvar-config" class="pl-config"></div>
    <div class="pl-k">variance</div><div id="pgvar-variance" class="pl-big"></div>
    <div class="pl-sub" id="pgvar-variance-sub"></div>
    <div class="pl-k">vs vanilla</div><div id="pgvar-ratio" class="pl-big"></div>
    <div class="pl-sub" id="pgvar-ratio-sub"></div>
    <div class="pl-k">batch</div><div class="pl-sub" style="grid-column:auto">N = <span id="pgvar-n"></span>
      episodes · J(θ) = <span id="pgvar-objective"></span></div>
  </section>
  <figure class="pl-bar" aria-label="variance bar">
    <div class="pl-fig-title">variance, as a share<br>of vanilla's at N = 1</div>
    <div class="pl-track" id="pgvar-bar" role="img"><div class="pl-fill" id="pgvar-bar-fill"></div>
      <div class="pl-exact" id="pgvar-bar-exact"></div></div>
    <div class="pl-zoom" id="pgvar-zoom"></div>
  </figure>
  <figure class="pl-history" aria-label="rolling history">
    <div class="pl-fig-title">rolling history: share of vanilla's variance at N = 1 (log scale);
      dashed lines mark knob changes</div>
    <svg id="pgvar-history-svg" role="img"></svg>
  </figure>
  <figure class="pl-breakdown" aria-label="per-knob breakdown">
    <div class="pl-fig-title" id="pgvar-breakdown-title">per-knob breakdown</div>
    <div class="pl-rows" id="pgvar-rows"></div>
  </figure>
  <div class="pl-status"><span id="pgvar-doing" role="status"></span> <span id="pgvar-stale"></span>
    <span id="pgvar-status" data-tick="0" data-history="0">starting: loading the MDP and measuring the
    first reading…</span></div>
</div>`;
  const $ = id => root.querySelector('#' + id);
  const rtg = $('pgvar-rtg'), baseline = $('pgvar-baseline'), range = $('pgvar-n-range');
  let choices = [1], story = 0, last = null;
  const send = (name, value) => host.send(name, value);
  rtg.addEventListener('change', () => { switchText(); send('rtg', rtg.checked); });
  baseline.addEventListener('change', () => { switchText(); send('baseline', baseline.checked); });
  range.addEventListener('input', () => nText());
  range.addEventListener('change', () => { nText(); send('n', choices[Number(range.value)]); });
  $('pgvar-next').addEventListener('click', () => send('story', Math.min(story + 1, 4)));
  $('pgvar-back').addEventListener('click', () => send('story', Math.max(story - 1, 1)));
  $('pgvar-leave').addEventListener('click', () => send('story', 0));
  function switchText() {
    $('pgvar-rtg-state').textContent = rtg.checked ? 'on' : 'off';
    $('pgvar-baseline-state').textContent = baseline.checked ? 'on' : 'off';
  }
  function nText() {
    const n = choices[Number(range.value)];
    $('pgvar-n-out').textContent = n;
    range.setAttribute('aria-valuetext', 'N = ' + n);
  }
  function setKnobs(k) {
    if (k.n_choices) { choices = k.n_choices; range.max = choices.length - 1; }
    if (k.rtg !== undefined) rtg.checked = !!k.rtg;
    if (k.baseline !== undefined) baseline.checked = !!k.baseline;
    if (k.n !== undefined && choices.indexOf(k.n) >= 0) range.value = choices.indexOf(k.n);
    switchText(); nText();
  }
  const attr = (el, key, v) => el.setAttribute(key, v === null || v === undefined ? '' : String(v));
  // live regions are written only when their words change (a screen reader reads each change)
  const say = (el, words) => { if (el.textContent !== words) el.textContent = words; };

  function drawBar(reading) {
    const track = $('pgvar-bar'), fill = $('pgvar-bar-fill'), exact = $('pgvar-bar-exact');
    track.querySelectorAll('.pl-tick').forEach(e => e.remove());
    if (!reading) { fill.style.height = '0'; exact.style.display = 'none'; return; }
    const c = reading.configs[reading.current], top = reading.bar_top;
    const h = s => Math.max(0, Math.min(1, (s || 0) / top)) * 100;
    fill.style.height = h(c.share) + '%';
    fill.style.background = c.colour;
    if (c.share_exact === null) exact.style.display = 'none';
    else { exact.style.display = ''; exact.style.bottom = h(c.share_exact) + '%'; }
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      const t = document.createElement('div');
      t.className = 'pl-tick'; t.style.top = (100 - 100 * f) + '%'; t.textContent = axisPct(f * top);
      track.appendChild(t);
    }
    track.setAttribute('aria-label', `variance bar at ${c.share_text} of vanilla's variance at N = 1`);
    $('pgvar-zoom').textContent = top < 1 ? `axis zoomed in: 0 to ${pct(top)}` : '';
  }

  function drawRows(view) {
    const rows = $('pgvar-rows'), reading = view.reading;
    rows.innerHTML = '';
    const n = reading ? reading.n : view.knobs.n;
    $('pgvar-breakdown-title').textContent = `per-knob breakdown at N = ${n}: each configuration's ` +
      `variance as a share of vanilla's at N = 1, measured on the same episodes (line: exact)`;
    const top = reading ? reading.breakdown_top : 1;
    view.labels.forEach((label, i) => {
      const c = reading ? reading.configs[i] : null, current = reading ? i === reading.current : false;
      const name = document.createElement('div');
      name.className = 'pl-row-label' + (current ? ' current' : '');
      name.textContent = (current ? '▶ ' : '') + label;
      const track = document.createElement('div');
      track.className = 'pl-row-track';
      const fill = document.createElement('div');
      fill.className = 'pl-row-fill';
      fill.style.background = view.colours[i];
      fill.style.opacity = current ? '1' : '0.55';
      fill.style.width = c ? Math.min(100, 100 * (c.share || 0) / top) + '%' : '0';
      track.appendChild(fill);
      if (c && c.share_exact !== null) {
        const ex = document.createElement('div');
        ex.className = 'pl-row-exact';
        ex.style.left = Math.min(100, 100 * c.share_exact / top) + '%';
        track.appendChild(ex);
      }
      const text = document.createElement('div');
      text.className = 'pl-row-text';
      text.textContent = c ? `${c.share_text} · ${c.value_text}` : '–';
      const row = [name, track, text];
      row.forEach(e => { e.dataset.config = label; if (c) { attr(e, 'data-share', c.share); } });
      rows.append(...row);
    });
  }

  function drawHistory(view) {
    const svg = $('pgvar-history-svg');
    const width = Math.max(svg.clientWidth || 600, 200), height = Math.max(svg.clientHeight || 260, 120);
    const pts = view.history.filter(p => p[1] !== null && p[1] > 0);
    svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    svg.innerHTML = '';
    const el = (name, attrs, text) => {
      const e = document.createElementNS(SVGNS, name);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    const left = 52, right = 8, topPad = 40, bottom = 18;
    if (!pts.length) {
      el('text', {x: left, y: height / 2, 'font-size': 12, fill: '#4a5361'}, 'no readings yet');
      return;
    }
    let lo = Math.min(...pts.map(p => p[1])), hi = Math.max(...pts.map(p => p[1]));
    lo = Math.log10(lo) - 0.08; hi = Math.log10(hi) + 0.08;
    if (hi - lo < 0.5) { const mid = (hi + lo) / 2; lo = mid - 0.25; hi = mid + 0.25; }
    const first = view.history[0][0], lastTick = view.history[view.history.length - 1][0];
    const span = Math.max(view.history_max - 1, lastTick - first, 1);
    const x = t => left + (width - left - right) * (t - first) / span;
    const y = s => topPad + (height - topPad - bottom) * (hi - Math.log10(s)) / (hi - lo);
    const ticks = [];
    const steps = hi - lo < 1.2 ? [1, 1.5, 2, 3, 4, 5, 6, 7, 8] : [1, 2, 5];
    for (let e = Math.floor(lo) - 1; e <= Math.ceil(hi); e++)
      for (const m of steps) {
        const v = m * 10 ** e;
        if (Math.log10(v) >= lo && Math.log10(v) <= hi) ticks.push(v);
      }
    let shown = ticks;
    while (shown.length > 6) shown = shown.filter((_, i) => i % 2 === 0);
    for (const v of shown) {
      el('line', {x1: left, x2: width - right, y1: y(v), y2: y(v), stroke: '#e3e7ec'});
      el('text', {x: left - 4, y: y(v) + 4, 'font-size': 11, 'text-anchor': 'end', fill: '#4a5361'},
        axisPct(v));
    }
    el('line', {x1: left, x2: left, y1: topPad, y2: height - bottom, stroke: '#8895a7'});
    const marks = [];
    for (let i = 0; i < view.history.length; i++) {
      const p = view.history[i], q = view.history[i - 1];
      if (q && (p[2] !== q[2] || p[3] !== q[3])) {
        const words = [];
        if (p[2] !== q[2]) words.push(view.labels[p[2]]);
        if (p[3] !== q[3]) words.push('N = ' + p[3]);
        marks.push([p[0], words.join(', ')]);
      }
    }
    marks.forEach(([t, words], i) => {
      const line = el('line', {x1: x(t - 0.5), x2: x(t - 0.5), y1: topPad, y2: height - bottom,
        stroke: '#1d2330', 'stroke-dasharray': '4 3', 'stroke-width': 1.2, class: 'pgvar-mark'});
      line.dataset.tick = t;
      if (i >= marks.length - 6)
        el('text', {x: x(t - 0.5) + 3, y: 12 + 12 * (i % 3), 'font-size': 11, fill: '#1d2330'},
          '▸ ' + words);
    });
    for (let i = 1; i < pts.length; i++) {
      const a = pts[i - 1], b = pts[i];
      el('path', {d: `M${x(a[0])},${y(a[1])}H${x(b[0])}V${y(b[1])}`, fill: 'none',
        stroke: view.colours[b[2]], 'stroke-width': 2.5});
    }
    const end = pts[pts.length - 1];
    el('circle', {cx: x(end[0]), cy: y(end[1]), r: 4, fill: view.colours[end[2]]});
    svg.setAttribute('aria-label', `rolling history of ${pts.length} readings, ` +
      `${marks.length} knob changes; latest ${pct(end[1])} of vanilla's variance at N = 1`);
  }

  function update(view) {
    last = view;
    if (view.n_choices) { choices = view.n_choices; range.max = choices.length - 1; }
    story = view.story || 0;
    const storyBox = $('pgvar-story'), caption = view.caption;
    storyBox.className = 'pl-story' + (caption ? ' ' + caption.tone : '');
    storyBox.dataset.step = story;
    $('pgvar-back').hidden = !story; $('pgvar-leave').hidden = !story;
    $('pgvar-back').disabled = story <= 1;
    $('pgvar-next').disabled = story >= 4;
    $('pgvar-next').textContent = story ? 'next ▶' : '▶ start the story';
    if (caption) {
      say($('pgvar-story-title'), caption.title);
      const arrow = caption.tone === 'worse' ? '▲ ' : caption.tone === 'better' ? '▼ ' : '';
      say($('pgvar-caption'), arrow + caption.sentence);
      $('pgvar-caption').className = 'pl-caption ' + caption.tone;
      $('pgvar-caption').dataset.tone = caption.tone;
    } else {
      say($('pgvar-story-title'),
        `Three knobs, one villain: the variance of the gradient estimate on ${view.mdp}`);
      say($('pgvar-caption'),
        'Start the story to walk the lesson in four steps, or turn the knobs yourself.');
      $('pgvar-caption').className = 'pl-caption'; $('pgvar-caption').dataset.tone = '';
    }
    const r = view.reading, c = r ? r.configs[r.current] : null;
    const readout = $('pgvar-readout');
    readout.classList.toggle('pl-stale', !!view.stale);
    const slot = (view.knobs.rtg ? 1 : 0) + (view.knobs.baseline ? 2 : 0);
    $('pgvar-config').textContent = c ? c.label : (view.labels[slot] || '');
    $('pgvar-n').textContent = r ? r.n : view.knobs.n;
    const v = $('pgvar-variance'), q = $('pgvar-ratio');
    v.textContent = c ? c.value_text : '–';
    attr(v, 'data-value', c && c.value); attr(v, 'data-lo', c && c.lo); attr(v, 'data-hi', c && c.hi);
    attr(v, 'data-exact', c && c.exact); attr(v, 'data-share', c && c.share);
    attr(v, 'data-share-exact', c && c.share_exact);
    const biased = c && c.bias_text ? ` · ${c.bias_text}` : '';
    const exactWords = c && c.no_exact ? 'no exact value' : `exact ${c && c.exact_text}`;
    $('pgvar-variance-sub').textContent =
      c ? `${c.ci_text} · ${exactWords}${biased}` : (view.status || '');
    q.textContent = c ? c.ratio_text : '–';
    q.className = 'pl-big pl-tone ' + (c ? c.tone : '');
    attr(q, 'data-value', c && c.share); attr(q, 'data-lo', c && c.share_lo);
    attr(q, 'data-hi', c && c.share_hi);
    attr(q, 'data-exact', c && c.share_exact); attr(q, 'data-tone', c && c.tone);
    const shareExact = c && c.no_exact ? 'no exact value' : `exact ${c && c.share_exact_text}`;
    $('pgvar-ratio-sub').textContent =
      c ? `${c.share_text} of vanilla's variance at N = 1 (${shareExact})` : '';
    const j = $('pgvar-objective');
    j.textContent = r ? r.objective_text : '–'; attr(j, 'data-value', r && r.objective);
    const status = $('pgvar-status');
    status.dataset.tick = view.tick; status.dataset.history = view.history.length;
    status.dataset.historyMax = view.history_max; status.dataset.learning = view.learning ? '1' : '0';
    status.dataset.stale = view.stale ? '1' : '0'; status.dataset.mdp = view.mdp;
    status.dataset.story = story;
    status.textContent = (view.status ? view.status + ' · ' : '') + `tick ${view.tick} · ${view.note || ''}`;
    say($('pgvar-doing'), view.doing || '');
    $('pgvar-stale').textContent = view.stale ? 'stale: ' + view.stale : '';
    drawBar(r);
    drawRows(view);
    drawHistory(view);
  }
  if (window.ResizeObserver)
    new ResizeObserver(() => { if (last) drawHistory(last); }).observe($('pgvar-history-svg'));
  return {update, setKnobs};
}
"""
)
