"""The explorer in a real browser (Debian's Chromium through pytest-playwright).

Readings come from the page's stable ids (``#pgvar-variance`` with ``data-value``, ``data-lo``,
``data-hi``, ``data-exact`` ...). Comparisons use the page's own 95% confidence intervals: k readings
from k ticks (independent batches) are averaged, and the interval half-width shrinks by sqrt(k).

Every wait polls a condition on the page until a deadline (never a bare sleep): exact values arrive
from a worker thread a tick or more after a change, so a reading is taken only once they are there.
The tests write nothing in the working tree (the screenshot goes to a temporary folder; refresh
docs/explorer.png with ``scripts/screenshot.py``).
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from pathlib import Path

import numpy as np
import pytest

from pgvar import budget, envs
from pgvar.estimators import parse_estimator
from pgvar.exact import exact_gradient, exact_moments, objective
from pgvar.explorer.lesson import number
from pgvar.explorer.state import ExplorerState

pytestmark = pytest.mark.browser

K = 5  # readings (ticks) per setting

READOUT_JS = """el => {
  const root = el.getRootNode();
  const get = id => root.querySelector('#' + id);
  if (!el.isConnected || !get('pgvar-config')) return null;  // caught while the readout is replaced
  const num = (e, key) => {
    const v = e.getAttribute(key);
    return v === null || v === '' ? null : parseFloat(v);
  };
  const v = get('pgvar-variance'), r = get('pgvar-ratio'), s = get('pgvar-status');
  const j = get('pgvar-objective');
  return {
    config: get('pgvar-config').textContent.trim(), n: parseInt(get('pgvar-n').textContent),
    tick: parseInt(s.dataset.tick), history: parseInt(s.dataset.history),
    history_max: parseInt(s.dataset.historyMax), learning: s.dataset.learning === '1',
    variance: num(v, 'data-value'), lo: num(v, 'data-lo'), hi: num(v, 'data-hi'), exact: num(v, 'data-exact'),
    ratio: num(r, 'data-value'), ratio_lo: num(r, 'data-lo'), ratio_hi: num(r, 'data-hi'),
    ratio_exact: num(r, 'data-exact'), objective: num(j, 'data-value'),
  };
}"""

HISTORY_SOURCE_JS = """() => {
  for (const doc of window.Bokeh.documents) {
    const source = doc.get_model_by_name('pgvar-history');
    if (source) return source.data.tick.length;
  }
  return -1;
}"""

POLICY_JS = """() => {
  for (const doc of window.Bokeh.documents) {
    const source = doc.get_model_by_name('pgvar-policy');
    if (source) return Array.from(source.data.p);
  }
  return null;
}"""

SOURCE_JS = """([name, column]) => {
  for (const doc of window.Bokeh.documents) {
    const source = doc.get_model_by_name(name);
    if (source) return Array.from(source.data[column], v => (typeof v === 'number' && isNaN(v)) ? null : v);
  }
  return null;
}"""


def readout(page) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = page.locator("#pgvar-status").evaluate(READOUT_JS)
        if state is not None:
            return state
        time.sleep(0.02)
    raise AssertionError("the readout never settled")


def source(page, name: str, column: str) -> list | None:
    """A column of one of the page's named Bokeh data sources."""
    return page.evaluate(SOURCE_JS, [name, column])


def attribute(page, selector: str, name: str) -> str | None:
    return page.locator(selector).get_attribute(name)


def poll(check, timeout: float = 20.0, what: str = "condition"):
    """Call ``check`` until it returns something true (then return it), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last seen {value!r}")
        time.sleep(0.1)


def messages(page) -> str:
    return page.locator("#pgvar-messages").inner_text()


def open_page(page, url: str, timeout: float = 60_000) -> dict:
    """Open the page and wait for its first tick (the first one in a server compiles the kernels)."""
    page.goto(url)
    page.wait_for_selector("#pgvar-status[data-tick]:not([data-tick='0'])", timeout=timeout)
    return readout(page)


def wait_for(page, predicate, timeout: float = 20.0, what: str = "condition") -> dict:
    deadline = time.monotonic() + timeout
    state = readout(page)
    while not predicate(state):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; page shows {state}")
        time.sleep(0.1)
        state = readout(page)
    return state


def collect(page, config: str, n: int, k: int = K) -> list[dict]:
    """k readings of ``config`` at ``n`` with their exact values, each from a different tick (exact
    values come from a worker thread: the first ticks after a change may have none yet)."""
    readings: list[dict] = []
    last_tick = -1
    deadline = time.monotonic() + 30
    while len(readings) < k:
        assert time.monotonic() < deadline, f"no readings of {config} at N={n}; page shows {readout(page)}"
        state = readout(page)
        complete = (
            state["variance"] is not None and state["exact"] is not None and state["ratio_exact"] is not None
        )
        if state["tick"] != last_tick and state["config"] == config and state["n"] == n and complete:
            readings.append(state)
        last_tick = state["tick"]
        time.sleep(0.08)
    return readings


def summary(readings: list[dict]) -> tuple[float, float]:
    """Mean of the readings and the half-width of its 95% interval (from the displayed intervals)."""
    mean = float(np.mean([r["variance"] for r in readings]))
    half = float(np.mean([(r["hi"] - r["lo"]) / 2 for r in readings])) / math.sqrt(len(readings))
    return mean, half


def exact_trace(spec: str, mdp: str = "lesson") -> float:
    model = envs.make(mdp)
    return exact_moments(model, np.zeros(model.theta_shape()), parse_estimator(spec)).variance_trace


def open_more(page) -> None:
    """Open the collapsed "More" area (estimator, policy, MDP, plots, export) once."""
    if page.locator(".pgvar-kind").count() == 0:
        page.get_by_text("More: estimator", exact=False).first.click()
    page.wait_for_selector(".pgvar-kind select", timeout=20_000)


def click(page, css_class: str) -> None:
    """The lesson's switches (reward-to-go, baseline) or a button under "More"."""
    if css_class in ("pgvar-rtg", "pgvar-baseline"):
        page.locator(f"#{css_class}").click()
        return
    open_more(page)
    page.locator(f".{css_class} button").click()


def press_slider(page, css_class: str, *keys: str) -> None:
    """Keys on the lesson's N slider (``pgvar-n-slider``) or on a slider under "More"."""
    if css_class == "pgvar-n-slider":
        page.locator("#pgvar-n-range").focus()
    else:
        open_more(page)
        page.locator(f".{css_class} .noUi-handle").first.focus()
    for key in keys:
        page.keyboard.press(key)


def check_ratio(readings: list[dict], spec: str, n: int) -> None:
    """The displayed ratio to vanilla (N = 1) agrees with the core's exact ratio within its bound."""
    exact = exact_trace(spec) / n / exact_trace("vanilla")
    for r in readings:
        assert r["ratio_exact"] == pytest.approx(exact, rel=1e-9)
        assert r["exact"] == pytest.approx(exact_trace(spec) / n, rel=1e-9)
    inside = sum(r["ratio_lo"] <= exact <= r["ratio_hi"] for r in readings)
    assert inside >= len(readings) - 2, (spec, n, exact, [(r["ratio_lo"], r["ratio_hi"]) for r in readings])


def test_page_loads_locally(page, explorer_server):
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda error: errors.append(str(error)))
    first = open_page(page, explorer_server.url)
    assert first["config"] == "vanilla" and first["n"] == 1
    state = wait_for(page, lambda s: s["tick"] >= first["tick"] + 2, what="ticks")
    assert state["variance"] > 0 and state["lo"] <= state["variance"] <= state["hi"]
    assert page.title() == "pgvar explorer"
    outside = [
        url
        for url in requests
        if not url.startswith(("http://127.0.0.1", "ws://127.0.0.1", "blob:http://127.0.0.1", "data:"))
    ]
    assert outside == [], "the page must not load anything from outside"
    assert errors == []


def test_each_knob_changes_the_configuration_label(page, explorer_server):
    open_page(page, explorer_server.url)
    wait_for(page, lambda s: s["config"] == "vanilla")
    click(page, "pgvar-rtg")
    wait_for(page, lambda s: s["config"] == "reward-to-go", what="reward-to-go")
    click(page, "pgvar-baseline")
    wait_for(page, lambda s: s["config"] == "rtg + baseline", what="rtg + baseline")
    click(page, "pgvar-rtg")
    wait_for(page, lambda s: s["config"] == "baseline", what="baseline")
    open_more(page)
    page.locator(".pgvar-kind select").select_option(label="exact V(s)")
    wait_for(page, lambda s: s["config"] == "baseline (exact V)", what="baseline kind")
    page.locator(".pgvar-kind select").select_option(label="running mean of G_t per state")
    state = wait_for(
        page,
        lambda s: s["config"] == "baseline (running V per state)" and s["exact"] is not None,
        what="running-value",
    )
    # its exact limit is V(s): the page shows exact V's variance for it
    assert state["exact"] == pytest.approx(exact_trace("return+value"), rel=1e-9)
    click(page, "pgvar-baseline")
    wait_for(page, lambda s: s["config"] == "vanilla", what="vanilla again")
    click(page, "pgvar-rtg")
    press_slider(page, "pgvar-lam", "ArrowLeft")
    wait_for(page, lambda s: s["config"] == "GAE λ=0.95", what="GAE lambda")
    press_slider(page, "pgvar-n-slider", "ArrowRight", "ArrowRight")
    wait_for(page, lambda s: s["n"] == 4, what="N = 4")
    before = readout(page)["objective"]
    press_slider(page, "pgvar-entropy", "ArrowRight")  # entropy bonus: J = E[sum r + entropy * H]
    wait_for(page, lambda s: s["objective"] is not None and s["objective"] > before + 0.01, what="entropy")
    after = readout(page)["objective"]
    press_slider(page, "pgvar-gamma", "ArrowLeft")  # discounting lowers J
    wait_for(page, lambda s: s["objective"] is not None and s["objective"] < after - 0.005, what="gamma")


def test_variance_falls_with_each_knob_and_the_ratio_matches_the_exact_one(page, explorer_server, tmp_path):
    open_page(page, explorer_server.url)
    steps = [
        ("vanilla", "return+none", 1, None),
        ("reward-to-go", "rtg+none", 1, "pgvar-rtg"),
        ("rtg + baseline", "rtg+lesson", 1, "pgvar-baseline"),
        ("rtg + baseline", "rtg+lesson", 1024, "N"),
    ]
    previous = None
    for label, spec, n, knob in steps:
        if knob == "N":
            press_slider(page, "pgvar-n-slider", "End")
        elif knob is not None:
            click(page, knob)
        readings = collect(page, label, n)
        mean, half = summary(readings)
        check_ratio(readings, spec, n)
        if previous is not None:
            before_mean, before_half = previous
            assert mean + half < before_mean - before_half, (label, n, mean, half, previous)
        previous = mean, half
    click(page, "pgvar-sweep")
    poll(lambda: len(source(page, "pgvar-vs-n", "n") or []) == 11, what="a point at every N")
    state = readout(page)
    wait_for(page, lambda s: s["tick"] >= state["tick"] + 2)
    page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)  # not docs/: scripts/screenshot.py


def test_history_grows_and_stays_bounded(page, explorer_server):
    first = open_page(page, explorer_server.url + "?history=8")
    assert first["history_max"] == 8
    early = wait_for(page, lambda s: s["tick"] >= 3, what="three ticks")
    assert 3 <= early["history"] <= 8
    open_more(page)
    assert page.evaluate(HISTORY_SOURCE_JS) >= 3
    late = wait_for(page, lambda s: s["tick"] >= 14, what="fourteen ticks")
    assert late["history"] == 8
    assert page.evaluate(HISTORY_SOURCE_JS) == 8


def test_two_pages_keep_separate_states(browser, explorer_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1150})
    try:
        one, two = context.new_page(), context.new_page()
        open_page(one, explorer_server.url)
        open_page(two, explorer_server.url)
        click(one, "pgvar-rtg")
        press_slider(one, "pgvar-n-slider", "End")
        wait_for(one, lambda s: s["config"] == "reward-to-go" and s["n"] == 1024, what="page one's knobs")
        start = readout(two)["tick"]
        for state in collect(two, "vanilla", 1, k=4):
            assert state["ratio_exact"] == pytest.approx(1.0)
        assert readout(two)["tick"] >= start + 3
        state = readout(one)
        assert (state["config"], state["n"]) == ("reward-to-go", 1024)
    finally:
        context.close()


def test_query_string_errors_show_on_the_page(page, explorer_server):
    open_page(page, explorer_server.url + "?N=abc&rtg=1&beta=0.5")
    message = page.locator("#pgvar-messages").inner_text()
    assert "N: must be a whole number" in message
    assert "unknown parameter 'beta'" in message and "entropy" in message
    state = wait_for(
        page, lambda s: s["config"] == "reward-to-go" and s["n"] == 1 and s["objective"] is not None
    )
    assert state["objective"] == pytest.approx(1.0)  # beta is not read: no entropy bonus


def test_query_string_sets_the_entropy_bonus(page, explorer_server):
    open_page(page, explorer_server.url + "?entropy=0.5&kind=running-value&baseline=1")
    state = wait_for(page, lambda s: s["objective"] is not None, what="J")
    model = envs.make("lesson")
    assert state["objective"] == pytest.approx(objective(model, np.zeros(model.theta_shape()), 0.5), rel=1e-9)
    assert state["config"] == "baseline (running V per state)"
    assert page.locator("#pgvar-messages").inner_text().strip() == ""


def test_learn_mode_climbs_j_and_moves_the_policy(page, explorer_server):
    first = open_page(page, explorer_server.url + "?rtg=1&baseline=1&N=64")
    wait_for(page, lambda s: s["objective"] is not None)
    start = readout(page)["objective"]
    assert start == pytest.approx(1.0)
    open_more(page)
    assert page.evaluate(POLICY_JS) == pytest.approx([1 / 3] * 9, abs=1e-9)
    click(page, "pgvar-learn")
    wait_for(
        page,
        lambda s: s["learning"] and s["objective"] is not None and s["objective"] > start + 0.5,
        timeout=30,
        what="J to climb",
    )
    probs = np.reshape(page.evaluate(POLICY_JS), (3, 3))
    # the best actions are [0, 1, 2]: the policy moves to them (J = their summed probability)
    assert np.all(np.diag(probs) > 1 / 3) and np.trace(probs) > 1.4
    assert first["config"] == "rtg + baseline"


def test_mdp_picker_switches_to_another_builtin(page, explorer_server):
    open_page(page, explorer_server.url)
    open_more(page)
    page.locator(".pgvar-mdp select").select_option("bandit")
    expected = exact_trace("vanilla", "bandit")
    state = wait_for(
        page,
        lambda s: s["exact"] is not None and abs(s["exact"] - expected) < 1e-9 * expected,
        what="bandit's exact variance",
    )
    assert state["config"] == "vanilla"
    page.locator(".pgvar-mdp-text input").fill("bandit:k=0")
    page.locator(".pgvar-mdp-load button").click()
    poll(lambda: re.search(r"bandit.*>= 1", messages(page)), what="the message on k")


def test_csv_and_png_export(page, explorer_server):
    open_page(page, explorer_server.url)
    wait_for(page, lambda s: s["tick"] >= 2)
    open_more(page)
    with page.expect_download(timeout=15_000) as info:
        page.locator(".pgvar-csv a, .pgvar-csv button").first.click()
    text = Path(info.value.path()).read_text()
    assert text.startswith("config,spec,N,batches,variance")
    assert text.splitlines()[0].endswith(",mdp,gamma,entropy,tick")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["config"] for r in rows] == ["vanilla", "reward-to-go", "baseline", "rtg + baseline", "vanilla"]
    assert {r["entropy"] for r in rows} == {"0"} and {r["mdp"] for r in rows} == {"lesson"}
    with page.expect_download(timeout=30_000) as info:
        page.locator(".pgvar-png a, .pgvar-png button").first.click()
    assert Path(info.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_mdp_file_shows_a_message_and_the_app_lives(page, start_explorer, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "states: 2\nactions: 1\ninitial: [0.5, 0.6]\ntransitions: [[[1, 0]], [[0, 1]]]\nrewards: 0\n"
    )
    server = start_explorer("--mdp", str(bad))
    first = open_page(page, server.url)
    message = page.locator("#pgvar-messages").inner_text()
    assert "bad.yaml" in message and "initial" in message
    wait_for(page, lambda s: s["tick"] >= first["tick"] + 2, what="ticks on the fallback MDP")
    assert server.interrupt() == 0  # Ctrl-C stops it cleanly
    output = server.output()
    assert f"pgvar explorer: http://127.0.0.1:{server.port}/" in output
    assert "pgvar explorer: stopped" in output


# -- loading MDPs, limits, sessions ending ----------------------------------------------------------


def expected_panels(name: str) -> dict:
    """What every panel should show for the built-in ``name`` at the uniform policy."""
    state = ExplorerState(name, seed=0)
    model = state.base_mdp
    theta = np.zeros(model.theta_shape())
    return {
        "mdp": model.name,
        "rows": state.row_names(40),
        "logits": theta.size,
        "exact": exact_moments(model, theta, parse_estimator("vanilla")).variance_trace,
        "J": objective(model, theta),
    }


def check_every_panel(page, name: str) -> None:
    """Header, description, status, policy heatmap, sliders, history, J plot and numbers all show
    ``name`` (a stale page shows the old MDP in some of them)."""
    want = expected_panels(name)
    open_more(page)
    poll(lambda: attribute(page, "#pgvar-status", "data-mdp") == want["mdp"], what=f"{name} in the status")
    state = wait_for(
        page,
        lambda s: s["exact"] is not None and abs(s["exact"] - want["exact"]) <= 1e-9 * want["exact"],
        what=f"{name}'s exact variance",
    )
    assert state["objective"] == pytest.approx(want["J"], rel=1e-9)
    assert attribute(page, "#pgvar-header", "data-mdp") == want["mdp"]
    assert attribute(page, "#pgvar-mdp-info", "data-mdp") == want["mdp"]
    rows = source(page, "pgvar-policy", "row")
    assert list(dict.fromkeys(rows)) == want["rows"]
    assert len(rows) == want["logits"]
    assert page.locator(".pgvar-logit").count() == want["logits"]
    poll(lambda: (source(page, "pgvar-learn", "J") or [None])[-1] is not None, what="J plot")
    assert source(page, "pgvar-learn", "J")[-1] == pytest.approx(want["J"], rel=1e-9)
    # the history holds this MDP's ticks only: its exact line is this MDP's
    exact_line = poll(
        lambda: [v for v in source(page, "pgvar-history", "exact") or [] if v is not None], what="history"
    )
    assert exact_line[-1] == pytest.approx(want["exact"], rel=1e-9)
    assert all(v == pytest.approx(want["exact"], rel=1e-9) for v in exact_line)
    assert "cannot load" not in messages(page)


def test_every_input_loads_an_mdp_into_every_panel(page, explorer_server):
    open_page(page, explorer_server.url)
    check_every_panel(page, "lesson")
    page.locator(".pgvar-mdp select").select_option("bandit")  # the menu
    check_every_panel(page, "bandit")
    page.locator(".pgvar-mdp-text input").fill("repayment")  # the text box (it once left a half page)
    page.locator(".pgvar-mdp-load button").click()
    check_every_panel(page, "repayment")
    assert page.locator(".pgvar-mdp select").input_value() == "repayment"
    page.locator(".pgvar-mdp-text input").fill("random:seed=3,states=4")
    page.locator(".pgvar-mdp-load button").click()
    check_every_panel(page, "random:seed=3,states=4")
    open_page(page, explorer_server.url + "?mdp=short-corridor")  # the query string
    check_every_panel(page, "short-corridor")
    assert "_pending_writes" not in explorer_server.output()


def rss_bytes(pid: int) -> float:
    """Resident memory of a process (VmRSS in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return float(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def type_mdp(page, text: str) -> None:
    open_more(page)
    page.locator(".pgvar-mdp-text input").fill(text)
    page.locator(".pgvar-mdp-load button").click()


def test_an_oversized_mdp_is_refused_or_confined_and_other_tabs_keep_ticking(browser, start_explorer):
    """One tab types MDPs over the limits while another keeps ticking; when the first tab closes the
    server gives its memory back and logs no traceback."""
    server = start_explorer()
    pid = server.process.pid
    context = browser.new_context(viewport={"width": 1400, "height": 1150})
    try:
        other, heavy = context.new_page(), context.new_page()
        open_page(other, server.url)
        open_page(heavy, server.url)
        wait_for(other, lambda s: s["tick"] >= 2, what="the other tab's ticks")
        wait_for(heavy, lambda s: s["tick"] >= 2, what="ticks")
        before = rss_bytes(pid)

        # refused up front: no table is allocated
        type_mdp(heavy, "bandit:k=100000000")
        poll(lambda: re.search(r"bandit.*(over|limit)", messages(heavy)), what="the bandit refused")
        assert attribute(heavy, "#pgvar-status", "data-mdp") == "lesson"  # the old MDP stays

        # built (under the memory limit) in the tab's own thread, then measurement refused
        type_mdp(heavy, "random:states=3000,actions=4,horizon=50")
        poll(lambda: attribute(heavy, "#pgvar-activity", "data-busy") == "1", what="the heavy tab busy")
        seen: list[int] = []
        while attribute(heavy, "#pgvar-activity", "data-busy") == "1":
            seen.append(readout(other)["tick"])
            assert len(seen) < 300, "the heavy tab never finished"
            time.sleep(0.1)
        # about three ticks a second: over k polls 0.1 s apart the other tab advances by about 0.3 k; a
        # stalled server would leave it where it was (a short busy period proves less, so asks less)
        assert max(seen) - min(seen) >= min(2, len(seen) // 5), f"the other tab stalled: ticks {seen}"
        poll(
            lambda: "states=3000" in (attribute(heavy, "#pgvar-status", "data-mdp") or ""), what="the big MDP"
        )
        poll(lambda: "cannot measure" in messages(heavy), what="the measurement refused")
        assert attribute(heavy, "#pgvar-status", "data-stale") == "1"
        assert "cannot measure" in heavy.locator("#pgvar-stale").inner_text()
        assert readout(heavy)["variance"] is None  # no numbers of the lesson left on the tiles
        start = readout(other)["tick"]
        wait_for(other, lambda s: s["tick"] >= start + 3, what="the other tab's ticks afterwards")
        loaded = rss_bytes(pid)

        heavy.close()  # the session ends a few seconds later and frees its MDP
        limit = budget.EXPLORER.memory
        after = poll(
            lambda: (rss := rss_bytes(pid)) < before + 150e6 and rss, timeout=40, what="memory to come back"
        )
        assert after < limit, (before, loaded, after)
        start = readout(other)["tick"]
        wait_for(other, lambda s: s["tick"] >= start + 2, what="the other tab still ticking")
    finally:
        context.close()
    output = server.output()
    assert "Traceback" not in output and "WebSocketClosedError" not in output, output[-3000:]


def test_group_baselines_show_their_bias_or_say_no_exact_value(page, explorer_server):
    """GRPO's group mean: its exact bias |grad J| / K beside the variance; its std on the lesson's
    noisy rewards: the measurement with "no exact value" (docs/explorer.md, group baselines)."""
    open_page(page, explorer_server.url + "?kind=group&group=4&baseline=1&rtg=1&N=16")
    state = wait_for(page, lambda s: s["exact"] is not None, what="the exact values")
    assert state["config"] == "rtg + baseline (group mean)" and state["n"] == 16
    model = envs.make("lesson")
    bias = float(np.linalg.norm(exact_gradient(model, np.zeros(model.theta_shape())))) / 4
    sub = poll(
        lambda: (
            "biased" in page.locator("#pgvar-variance-sub").inner_text()
            and page.locator("#pgvar-variance-sub").inner_text()
        ),
        what="the bias",
    )
    assert f"biased: |E g − ∇J| = {number(bias)}" in sub and "cos to ∇J 1.0000" in sub
    assert "group=4" in page.evaluate("window.location.search")

    open_page(page, explorer_server.url + "?kind=group-std&baseline=1&rtg=1&N=16")
    text = poll(
        lambda: (
            "no exact value" in page.locator("#pgvar-variance-sub").inner_text()
            and page.locator("#pgvar-variance-sub").inner_text()
        ),
        what="no exact value",
    )
    state = readout(page)
    assert state["variance"] is not None and state["exact"] is None and "biased" not in text
    assert messages(page).strip() == ""
