"""The explorer as a teaching instrument, in a real browser (Debian's Chromium): the story mode, the
link that restores a page, screen widths, the keyboard alone, and the static page offline.

Every wait polls the page's state until a deadline (never a bare sleep); statistical checks use the
page's exact values or fixed seeds.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_explorer_browser import open_more, open_page, poll, wait_for

from pgvar import envs
from pgvar.estimators import parse_estimator
from pgvar.exact import exact_moments
from pgvar.explorer.lesson import STORY_N, number
from pgvar.explorer.state import LESSON_SPECS, N_CHOICES

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]

STORY_JS = """el => {
  const root = el.getRootNode(), get = id => root.querySelector('#' + id);
  const v = get('pgvar-variance');
  const num = key => v.getAttribute(key) === '' ? null : parseFloat(v.getAttribute(key));
  return {step: parseInt(get('pgvar-story').dataset.step), title: get('pgvar-story-title').textContent,
          caption: get('pgvar-caption').textContent, tone: get('pgvar-caption').dataset.tone,
          colour: getComputedStyle(get('pgvar-caption')).color, tick: parseInt(el.dataset.tick),
          share: num('data-share'), exact: num('data-share-exact'),
          bar: get('pgvar-bar-fill').style.height, zoom: get('pgvar-zoom').textContent,
          ratio: get('pgvar-ratio').textContent, marks: root.querySelectorAll('.pgvar-mark').length};
}"""


FOCUSED_JS = """() => {
  let e = document.activeElement;
  while (e && e.shadowRoot && e.shadowRoot.activeElement) e = e.shadowRoot.activeElement;
  return e ? e.id : '';
}"""


def location(page) -> str:
    """The page's URL as the page sees it (``page.url`` can lag behind ``history.replaceState``)."""
    return page.evaluate("() => window.location.href")


def story(page) -> dict:
    return page.locator("#pgvar-status").evaluate(STORY_JS)


def exact_shares(name: str) -> list[float]:
    """Each story step's exact variance over vanilla's at N = 1, from the library."""
    model = envs.make(name)
    theta = np.zeros(model.theta_shape())
    traces = [exact_moments(model, theta, parse_estimator(s)).variance_trace for s in LESSON_SPECS]
    return [1.0, traces[1] / traces[0], traces[3] / traces[0], traces[3] / traces[0] / STORY_N]


def walk_story(page, name: str) -> list[dict]:
    """Start the story and press "next" through its four steps; each step's state once its exact
    value and three measured readings are in."""
    page.locator("#pgvar-next").click()  # "start the story"
    steps = []
    for step in (1, 2, 3, 4):
        if step > 1:
            page.locator("#pgvar-next").click()
        state = poll(
            lambda step=step: (s := story(page))["step"] == step and s["exact"] is not None and s,
            what=f"step {step} on {name}",
        )
        assert state["title"].startswith(f"Step {step} of 4")
        measured = []
        while len(measured) < 3:
            now = poll(lambda tick=state["tick"]: (s := story(page))["tick"] > tick and s, what="a tick")
            measured.append(now["share"])
            state = now
        steps.append({**state, "measured": float(np.mean(measured))})
    return steps


def test_story_mode_on_the_lesson_falls_at_every_step(page, explorer_server):
    open_page(page, explorer_server.url)
    steps = walk_story(page, "lesson")
    expected = exact_shares("lesson")
    assert [s["exact"] for s in steps] == pytest.approx(expected, rel=1e-9)
    for before, after in itertools.pairwise(steps):
        assert after["exact"] < before["exact"] and after["measured"] < before["measured"], (before, after)
    assert [s["tone"] for s in steps] == ["same", "better", "better", "better"]
    assert "fell to 55.4% of vanilla's (1.8× smaller than vanilla's)" in steps[1]["caption"]
    assert "4.2× smaller than vanilla's" in steps[2]["caption"] and steps[3]["zoom"].startswith("axis zoomed")
    assert steps[3]["ratio"].endswith("× smaller") and "e-" not in steps[3]["ratio"]
    assert steps[3]["marks"] >= 3  # the history marks each knob change
    poll(lambda: "story=4" in location(page) and f"N={STORY_N}" in location(page), what="the story's link")


def test_story_mode_on_repayment_says_where_a_knob_makes_things_worse(page, explorer_server):
    open_page(page, explorer_server.url + "?mdp=repayment")
    steps = walk_story(page, "repayment")
    assert [s["exact"] for s in steps] == pytest.approx(exact_shares("repayment"), rel=1e-9)
    rtg = steps[1]
    assert rtg["exact"] > steps[0]["exact"] and rtg["measured"] > steps[0]["measured"]  # it rises
    assert (
        rtg["tone"] == "worse" and "makes things worse" in rtg["caption"] and "2.1× larger" in rtg["caption"]
    )
    assert rtg["colour"] != steps[2]["colour"]  # and says so in colour
    assert steps[2]["tone"] == "better" and "still 1.6× larger than vanilla's" in steps[2]["caption"]
    back = page.locator("#pgvar-back")
    back.click()
    poll(lambda: story(page)["step"] == 3, what="back to step 3")


def test_the_link_restores_the_page(page, explorer_server):
    open_page(page, explorer_server.url)
    page.locator("#pgvar-rtg").click()
    page.locator("#pgvar-n-range").focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    open_more(page)
    page.locator(".pgvar-kind select").select_option(label="exact V(s)")
    page.locator(".pgvar-batches select").select_option("120")
    poll(
        lambda: all(k in location(page) for k in ("rtg=1", "N=8", "kind=value", "batches=120")),
        what="the URL",
    )
    link = location(page)
    page.reload()
    state = wait_for(page, lambda s: s["tick"] >= 1 and s["config"] == "reward-to-go" and s["n"] == 8)
    assert page.locator("#pgvar-rtg").is_checked() and not page.locator("#pgvar-baseline").is_checked()
    assert page.locator("#pgvar-n-range").get_attribute("aria-valuetext") == "N = 8"
    open_more(page)
    assert page.locator(".pgvar-kind select").input_value() == "exact V(s)"
    poll(lambda: location(page) == link, what="the same link after a reload")
    assert state["n"] == 8


@pytest.mark.parametrize(("width", "height"), [(390, 844), (1366, 768), (1920, 1080)])
def test_every_width_shows_the_knobs_and_the_variance(browser, explorer_server, width, height):
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        open_page(page, explorer_server.url)
        wait_for(page, lambda s: s["variance"] is not None, what="a number")
        assert page.locator('meta[name="viewport"]').count() == 1
        sizes = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert sizes[0] <= sizes[1], f"horizontal overflow at {width} px: {sizes}"
        for selector in (
            "#pgvar-rtg",
            "#pgvar-baseline",
            "#pgvar-n-range",
            "#pgvar-variance",
            "#pgvar-ratio",
        ):
            box = page.locator(selector).bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= width, (selector, box)
        if width >= 1366:  # the whole lesson's widget on one screen, without scrolling
            for selector in ("#pgvar-story", "#pgvar-bar", "#pgvar-history-svg", "#pgvar-rows"):
                box = page.locator(selector).bounding_box()
                assert box and box["y"] + box["height"] <= height, (selector, box)
            history = page.locator("#pgvar-history-svg").bounding_box()
            assert history["width"] > 0.3 * width  # the space is used
    finally:
        context.close()


def test_the_three_knobs_work_from_the_keyboard_alone(page, explorer_server):
    open_page(page, explorer_server.url)
    page.locator("body").focus()
    focused = ""
    for _ in range(30):  # Tab to the first knob
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUSED_JS)
        if focused == "pgvar-rtg":
            break
    assert focused == "pgvar-rtg"
    page.keyboard.press("Space")
    wait_for(page, lambda s: s["config"] == "reward-to-go", what="reward-to-go from the keyboard")
    page.keyboard.press("Tab")
    page.keyboard.press("Space")
    wait_for(page, lambda s: s["config"] == "rtg + baseline", what="the baseline from the keyboard")
    page.keyboard.press("Tab")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    wait_for(page, lambda s: s["n"] == 4, what="N = 4 from the keyboard")
    assert page.locator("#pgvar-n-range").get_attribute("aria-valuetext") == "N = 4"  # N, not its position
    for selector in ("#pgvar-rtg", "#pgvar-baseline", "#pgvar-n-range"):  # every control has a label
        assert page.locator(selector).evaluate("e => e.labels.length") >= 1


def test_the_static_page_works_offline_with_the_librarys_numbers(browser, tmp_path):
    from pgvar.studies import variance_study

    out = tmp_path / "explorer.html"
    pgvar = Path(sys.executable).with_name("pgvar")
    command = [str(pgvar)] if pgvar.exists() else [sys.executable, "-m", "pgvar.cli"]
    done = subprocess.run(
        [*command, "explore", "--static", str(out)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}" in done.stdout and "KiB" in done.stdout
    size = out.stat().st_size
    assert 20_000 < size < 400_000, size
    context = browser.new_context(viewport={"width": 1366, "height": 768})
    requests: list[str] = []
    errors: list[str] = []
    try:
        context.route(
            "**/*",
            lambda route: route.continue_() if route.request.url.startswith("file:") else route.abort(),
        )
        page = context.new_page()
        page.on("request", lambda request: requests.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(out.as_uri())
        wait_for(page, lambda s: s["tick"] >= 2 and s["config"] == "vanilla", what="the static page")
        page.locator("#pgvar-rtg").click()
        page.locator("#pgvar-n-range").focus()
        for _ in range(4):
            page.keyboard.press("ArrowRight")
        state = wait_for(page, lambda s: s["config"] == "reward-to-go" and s["n"] == 16, what="the knobs")
        model = envs.make("lesson")
        specs = [parse_estimator(s) for s in LESSON_SPECS]
        k = (state["tick"] - 1) % 6  # the page cycles through seeds 0..5
        study = variance_study(model, np.zeros(model.theta_shape()), specs, ns=N_CHOICES, batches=60, seed=k)
        table = {(r.n, r.spec.canonical): r for r in study.readings}
        assert state["variance"] == table[(16, "rtg+none")].variance_trace
        assert state["ratio"] == pytest.approx(
            table[(16, "rtg+none")].variance_trace / table[(1, "return+none")].variance_trace, rel=1e-12
        )
        assert state["exact"] == pytest.approx(table[(16, "rtg+none")].exact_variance_trace, rel=1e-12)
        later = wait_for(page, lambda s: s["history"] >= state["history"] + 2, what="the history to grow")
        assert later["tick"] > state["tick"]
        assert page.locator(".pgvar-mark").count() >= 2  # the knob changes are marked
        values = [3.2911, 0.000768, 1364.2, 100.0, 0.99996, 9.996, 7.68e-7, 2.5e9, 0.0123]
        assert page.evaluate("vs => vs.map(v => pgvarFormat(v, 3))", values) == [number(v) for v in values]
        page.locator("#pgvar-next").click()
        poll(lambda: story(page)["step"] == 1 and "story=1" in location(page), what="the story in the link")
    finally:
        context.close()
    assert errors == [] and all(url.startswith("file:") for url in requests), (errors, requests)


def test_first_number_within_two_seconds_on_a_warm_server(page, explorer_server):
    open_page(page, explorer_server.url)  # the server is started and warm; this page is the next visitor
    start = time.monotonic()
    page.goto(explorer_server.url + "?rtg=1")
    page.wait_for_selector("#pgvar-variance:not([data-value=''])", timeout=10_000)
    assert time.monotonic() - start < 2.0
