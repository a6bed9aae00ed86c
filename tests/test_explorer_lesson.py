"""The lesson's widget without a browser: the number format, the story's captions, the link that
restores a page, the static page's data and the kernels' warm-up."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import numpy as np
import pytest

from pgvar import envs
from pgvar.estimators import parse_estimator
from pgvar.exact import exact_moments
from pgvar.explorer.lesson import (
    STORY_N,
    axis_top,
    number,
    percent,
    ratio_words,
    story_caption,
    story_changes,
    story_knobs,
    story_step_of,
    tone,
)
from pgvar.explorer.state import LESSON_SPECS, N_CHOICES, parse_query


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3.2911, "3.29"),
        (0.000768, "0.000768"),
        (1364.2, "1,360"),
        (100.0, "100"),
        (0.99996, "1.00"),
        (9.996, "10.0"),
        (0.0, "0"),
        (None, "–"),
        (math.nan, "–"),
        (math.inf, "∞"),
        (7.68e-7, "7.68 × 10⁻⁷"),
        (2.5e9, "2.50 × 10⁹"),
    ],
)
def test_one_number_format_without_e_notation(value, text):
    assert number(value) == text


def test_ratios_read_as_times_smaller_or_larger():
    assert ratio_words(1 / 4.3) == "4.3× smaller"
    assert ratio_words(1.6) == "1.6× larger"
    assert ratio_words(2.05e-4) == "4,900× smaller"
    assert ratio_words(1.0) == "the same" and tone(1.0) == "same"
    assert ratio_words(0.5, " than vanilla's") == "2.0× smaller than vanilla's"
    assert (tone(0.5), tone(2.0)) == ("better", "worse")
    assert percent(0.554) == "55.4%" and percent(None) == "–"


def test_the_bar_is_linear_up_to_vanillas_and_zooms_in_below_a_tenth():
    assert axis_top([0.55, 0.5]) == 1.0
    assert axis_top([2.14]) == 2.5  # repayment's reward-to-go: above vanilla's
    assert axis_top([0.0037, 0.0039]) == pytest.approx(0.005)  # N = 64: zoomed in
    assert axis_top([None]) == 1.0


def exact_traces(name: str) -> list[float]:
    model = envs.make(name)
    theta = np.zeros(model.theta_shape())
    return [exact_moments(model, theta, parse_estimator(s)).variance_trace for s in LESSON_SPECS]


def test_the_story_falls_at_every_step_on_the_lesson():
    traces = exact_traces("lesson")
    captions = [story_caption(step, traces, "lesson") for step in (1, 2, 3, 4)]
    assert [c["tone"] for c in captions] == ["same", "better", "better", "better"]
    assert "100%" in captions[0]["sentence"]
    assert "fell to 55.4% of vanilla's (1.8× smaller than vanilla's)" in captions[1]["sentence"]
    assert (
        "fell to 23.9% of vanilla's (2.3× smaller than the step before, 4.2× smaller"
        in captions[2]["sentence"]
    )
    assert f"N = {STORY_N}" in captions[3]["sentence"] and "0.373%" in captions[3]["sentence"]
    for c in captions:  # one plain sentence each
        assert c["sentence"].count(". ") == 0 and c["sentence"].endswith(".")


def test_the_story_says_where_a_knob_makes_things_worse():
    traces = exact_traces("repayment")
    rtg = story_caption(2, traces, "repayment")
    assert rtg["tone"] == "worse"
    assert "rose to 214% of vanilla's (2.1× larger than vanilla's)" in rtg["sentence"]
    assert "makes things worse" in rtg["sentence"]
    baseline = story_caption(3, traces, "repayment")
    assert baseline["tone"] == "better" and "still 1.6× larger than vanilla's" in baseline["sentence"]


def test_story_steps_set_the_three_knobs():
    assert [story_step_of(**story_knobs(step)) for step in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert story_step_of(rtg=True, baseline=False, n=8) == 0


# -- the link ---------------------------------------------------------------------------------------


def settle(view, ticks: int = 2) -> None:
    for _ in range(ticks):
        view._next_allowed = 0.0
        view.on_tick()


def test_the_link_mirrors_every_setting_and_restores_the_page():
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    query = {
        "mdp": "repayment", "rtg": "1", "baseline": "1", "N": "16", "kind": "value", "lam": "0.9",
        "gamma": "0.95", "entropy": "0.2", "batches": "120", "logits": "0.5,-1,0,2.25,0,-0.3", "story": "0",
    }  # fmt: skip
    view = build("lesson", seed=0, query=query)
    view.state._executor = None
    settle(view)
    link = dict(parse_qsl(view.lesson.query.lstrip("?")))
    assert link == {k: v for k, v in query.items() if k != "story"}
    again = build("lesson", seed=1, query=link)  # open the link: the same page
    again.state._executor = None
    settle(again)
    assert again.state.knobs == view.state.knobs and again.state.base_mdp.name == "repayment"
    assert np.array_equal(again.state.theta, view.state.theta)
    assert again.lesson.query == view.lesson.query and "query" not in again.state.messages
    assert (again.kind.value, again.lam.value, again.gamma.value) == ("value", 0.9, 0.95)


def test_a_story_link_opens_at_its_step_and_a_knob_ends_it():
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    view = build("lesson", seed=0, query={"story": "3"})
    view.state._executor = None
    settle(view)
    lesson = view.lesson
    assert lesson.story == 3 and (lesson.rtg, lesson.baseline, lesson.n) == (True, True, 1)
    assert "query" not in view.state.messages
    assert view.lesson.view["caption"]["title"] == "Step 3 of 4: the baseline on"
    assert "story=3" in view.lesson.query
    view.lesson.story = 4  # "next"
    settle(view)
    assert view.state.knobs.n == STORY_N and view.lesson.view["caption"]["step"] == 4
    view.lesson.rtg = False  # a knob by hand: free play
    settle(view)
    assert view.lesson.story == 0 and view.lesson.view["caption"] is None and "story" not in view.lesson.query


def test_the_story_sets_a_group_baseline_aside_and_says_so():
    """A group baseline needs N >= K >= 2 and the story's steps 1 to 3 take N = 1: a story link or
    button with a group kind chosen takes the lesson's running-mean baseline instead (the link says
    why), so the story opens at its step instead of giving way to free play."""
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    assert story_changes(2, "lesson", 8) == story_knobs(2)
    assert story_changes(2, "group-std", 8) == {**story_knobs(2), "baseline_kind": "lesson"}
    assert story_changes(4, "group-std", 8) == story_knobs(4)  # N = 64: whole groups of 8
    view = build("lesson", seed=0, query={"kind": "group", "group": "8", "story": "1"})
    view.state._executor = None
    settle(view)
    assert view.lesson.story == 1 and view.state.knobs.baseline_kind == "lesson" and view.state.knobs.n == 1
    assert "kind=group set aside for the story" in view.state.messages["query"]
    assert view.lesson.view["caption"]["step"] == 1
    free = build("lesson", seed=0, query={"kind": "loo", "baseline": "1"})  # no story yet: N lifted to K
    free.state._executor = None
    settle(free)
    assert free.state.knobs.n == free.state.knobs.group and free.lesson.story == 0
    free.lesson.story = 3  # a story button
    settle(free)
    assert free.lesson.story == 3 and free.state.knobs.baseline_kind == "lesson" and free.state.knobs.n == 1


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"logits": "1,2"}, "lesson has 9 logits, the link gives 2"),
        ({"logits": "1,x"}, "logits: must be a finite number"),
        ({"logits": "99"}, "logits: must be a finite number from -8 to 8"),
        ({"story": "5"}, "story: must be a whole number from 0 to 4"),
    ],
)
def test_bad_links_give_a_message(query, words):
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    view = build("lesson", seed=0, query=query)
    assert words in view.state.messages["query"]
    assert not view.state.theta.any()


def test_settings_query_reads_back_through_parse_query():
    changes, messages = parse_query(dict(parse_qsl("N=4&rtg=on&logits=0.1,0.2&story=2")))
    assert messages == [] and changes == {"n": 4, "rtg": True, "logits": (0.1, 0.2), "story": 2}
    assert urlencode({"logits": "0.1,-2"}, safe=",") == "logits=0.1,-2"


# -- the static page and the warm-up -----------------------------------------------------------------


def test_static_data_holds_the_librarys_readings_for_every_knob_and_n():
    from pgvar.explorer.static import static_data
    from pgvar.studies import variance_study

    data = static_data("lesson", seed=5, readings=2)
    assert data["n_choices"] == list(N_CHOICES) and len(data["by_n"]) == len(N_CHOICES)
    model = envs.make("lesson")
    specs = [parse_estimator(s) for s in LESSON_SPECS]
    study = variance_study(model, np.zeros(model.theta_shape()), specs, ns=N_CHOICES, batches=60, seed=6)
    table = {(r.n, r.spec.canonical): r for r in study.readings}
    for i, n in enumerate(N_CHOICES):
        shown = data["by_n"][i][1]  # the second reading: seed 5 + 1
        assert shown["n"] == n
        for config, spec in zip(shown["configs"], LESSON_SPECS, strict=True):
            assert config["value"] == table[(n, spec)].variance_trace
            assert config["share"] == pytest.approx(
                table[(n, spec)].variance_trace / table[(1, "return+none")].variance_trace, rel=1e-12
            )
    assert [data["captions"][str(s)]["tone"] for s in (1, 2, 3, 4)] == ["same", "better", "better", "better"]


def test_warm_up_reports_only_when_it_is_slow(monkeypatch):
    from pgvar.explorer import warmup

    lines: list[str] = []
    monkeypatch.setattr(warmup, "_exercise", lambda: None)
    warmup.warm_up(lines.append)
    assert lines == []
    monkeypatch.setattr(warmup, "QUIET_SECONDS", 0.0)
    monkeypatch.setattr(warmup, "_exercise", lambda: __import__("time").sleep(0.05))
    warmup.warm_up(lines.append)
    assert lines[0].startswith("compiling the numba kernels") and lines[1].startswith("kernels ready in")


def test_the_readmes_screenshot_shows_the_story_mode():
    from PIL import Image

    root = Path(__file__).resolve().parents[1]
    section = (
        root.joinpath("README.md").read_text(encoding="utf-8").split("## The explorer")[1].split("\n## ")[0]
    )
    assert "(docs/explorer.png)" in section and "story" in section
    with Image.open(root / "docs" / "explorer.png") as image:  # written by scripts/screenshot.py
        assert image.text.get("pgvar-view", "").startswith("story mode, step 4 of 4, lesson")
        assert image.size == (1366, 768)
