"""The explorer's session state and tick logic, without a browser (and the page built without a server)."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from pgvar import envs
from pgvar.errors import SpecError
from pgvar.estimators import parse_estimator
from pgvar.exact import exact_moments, objective
from pgvar.explorer.export import HISTORY_COLUMNS, READINGS_COLUMNS, history_csv, readings_csv
from pgvar.explorer.lesson import PAGE_COLOURS
from pgvar.explorer.state import (
    BATCH_CHOICES,
    CONFIG_COLOURS,
    CONFIGS,
    DEFAULT_GROUP,
    LESSON_SPECS,
    N_CHOICES,
    PAGE_BASELINE_KINDS,
    QUERY_KEYS,
    ExplorerState,
    Knobs,
    check_knobs,
    config_label,
    parse_query,
    settings_query,
    spec_text,
)
from pgvar.vocabulary import BASELINE_KINDS, LESSON_COLOURS, LESSON_FOUR, LESSON_LABELS, PRESETS

LESSON_NAMES = [LESSON_LABELS[spec] for spec in LESSON_SPECS]


def lesson_state(**kwargs) -> ExplorerState:
    return ExplorerState("lesson", seed=kwargs.pop("seed", 7), **kwargs)


# -- labels ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rtg", "baseline", "label", "spec"),
    [
        (False, False, "vanilla", "return+none"),
        (True, False, "reward-to-go", "rtg+none"),
        (False, True, "baseline", "return+lesson"),
        (True, True, "rtg + baseline", "rtg+lesson"),
    ],
)
def test_lesson_labels_for_each_knob_combination(rtg, baseline, label, spec):
    assert spec_text(rtg, baseline, Knobs()) == spec
    assert config_label(rtg, baseline) == label == LESSON_LABELS[spec]
    state = lesson_state()
    state.set_knobs(rtg=rtg, baseline=baseline, n=4)
    result = state.tick()
    assert result.label == label
    assert result.reading.spec == spec
    assert [c.label for c in result.configs] == LESSON_NAMES


def test_the_four_slots_follow_the_vocabulary():
    """CONFIGS is the lesson's order (vocabulary.LESSON_FOUR) and each slot keeps its lesson colour."""
    assert list(LESSON_SPECS) == [PRESETS[name] for name in LESSON_FOUR]
    assert list(CONFIG_COLOURS) == [LESSON_COLOURS[spec] for spec in LESSON_SPECS]
    assert len(set(CONFIG_COLOURS)) == 4


def test_labels_for_other_baselines_and_gae():
    assert config_label(True, True, Knobs(baseline_kind="value")) == "rtg + baseline (exact V)"
    assert config_label(False, True, Knobs(baseline_kind="optimal")) == "baseline (optimal b)"
    assert (
        config_label(True, True, Knobs(baseline_kind="running-value"))
        == "rtg + baseline (running V per state)"
    )
    assert config_label(True, False, Knobs(lam=0.9)) == "GAE λ=0.9"
    assert config_label(True, True, Knobs(lam=0.9, baseline_kind="value")) == "GAE λ=0.9 + baseline (exact V)"
    assert config_label(False, False, Knobs(lam=0.9)) == "vanilla"  # lambda only changes reward-to-go
    assert spec_text(True, True, Knobs(lam=0.95, baseline_kind="running")) == "gae0.95+running"
    assert len({config_label(r, b, Knobs(baseline_kind="running")) for r, b in CONFIGS}) == 4


# -- knobs and the query string ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"n": "abc"}, "N: must be a whole number"),
        ({"n": 0}, "N: must be a whole number from 1 to 1024"),
        ({"n": 2048}, "from 1 to 1024"),
        ({"n": 2.5}, "whole number"),
        ({"n": 100}, "N: must be a power of two"),
        ({"lam": 1.5}, "lam: must be a finite number from 0 to 1"),
        ({"gamma": -0.1}, "gamma: must be a finite number from 0 to 1"),
        ({"entropy": math.nan}, "entropy: must be a finite number from 0 to 1"),
        ({"entropy": 1.5}, "entropy: must be a finite number from 0 to 1"),
        ({"batches": 1}, "batches: must be a whole number from 20 to 1000"),
        ({"batches": 100}, "batches: must be one of 20, 60, 120"),
        ({"rtg": "maybe"}, "rtg: must be on or off"),
        ({"baseline_kind": "magic"}, "kind: unknown 'magic'"),
        ({"baseline_kind": "learned"}, "kind: unknown 'learned'"),  # needs a value table from outside
        ({"lam": 0.5, "baseline_kind": "optimal"}, "value function"),
        ({"colour": 1}, "unknown colour"),
        ({"beta": 0.1}, "unknown beta"),
    ],
)
def test_invalid_knobs_are_refused_with_a_message(changes, words):
    state = lesson_state()
    before = state.knobs
    assert not state.apply(**changes)
    assert words in state.messages["knobs"]
    assert state.knobs == before
    assert state.apply(n=8)
    assert "knobs" not in state.messages


def test_query_string_values_and_messages():
    changes, messages = parse_query(
        {
            "N": "64",
            "rtg": "1",
            "baseline": "on",
            "kind": "value",
            "gamma": "0.9",
            "entropy": "0.25",
            "lam": "0.5",
            "batches": "240",
            "history": "30",
            "learn": "0",
            "lr": "1.5",
            "mdp": "bandit",
        }
    )
    assert changes == {
        "n": 64,
        "rtg": True,
        "baseline": True,
        "baseline_kind": "value",
        "gamma": 0.9,
        "entropy": 0.25,
        "lam": 0.5,
        "batches": 240,
        "history": 30,
        "learn": False,
        "lr": 1.5,
        "mdp": "bandit",
    }
    assert messages == []
    changes, messages = parse_query({"N": "abc", "lam": "2", "zoom": "3", "N2": "1", "beta": "0.1"})
    assert changes == {}
    assert len(messages) == 5
    assert any("N: must be a whole number" in m and "'abc'" in m for m in messages)
    assert any("lam: must be a finite number from 0 to 1, got '2'" in m for m in messages)
    # the old name of the entropy coefficient is refused, and the message names the new key
    beta = next(m for m in messages if "'beta'" in m)
    assert beta.startswith("query string: unknown parameter 'beta'") and "entropy" in beta
    _, messages = parse_query({"N": "100"})
    assert messages == ["query string: N: must be a power of two from 1 to 1024, got '100'"]
    for key, raw in [("history", "1"), ("lr", "0"), ("lr", "2.5"), ("learn", "maybe"), ("entropy", "-0.1")]:
        changes, messages = parse_query({key: raw})
        assert changes == {} and len(messages) == 1 and messages[0].startswith(f"query string: {key}: ")
    assert set(QUERY_KEYS) == {
        "N", "rtg", "baseline", "kind", "lam", "gamma", "entropy", "batches", "group", "history", "learn",
        "lr", "mdp", "logits", "story",
    }  # fmt: skip


def test_check_knobs_keeps_gamma_none_for_the_mdps_own():
    knobs = check_knobs(Knobs(), {"gamma": None, "n": "16"})
    assert knobs.gamma is None and knobs.n == 16


# -- the tick ----------------------------------------------------------------------------------------


def test_tick_measures_four_configurations_and_vanilla_at_n1():
    state = lesson_state()
    state.set_knobs(n=16)
    result = state.tick()
    assert result.tick == 1 and result.n == 16 and result.batches == 60
    assert len(result.configs) == 4
    assert result.vanilla_n1.spec == "return+none"
    for c in result.configs:
        assert 0 <= c.lo <= c.variance <= c.hi
    assert result.ratio == pytest.approx(result.reading.variance / result.vanilla_n1.variance)
    assert result.ratio_lo <= result.ratio <= result.ratio_hi
    assert state.tick().tick == 2


def test_vanilla_at_n1_ratio_is_one():
    state = lesson_state()
    result = state.tick()
    assert result.ratio == 1.0
    assert result.ratio_exact == 1.0


def test_exact_values_agree_with_exact_moments():
    mdp = envs.make("lesson")
    theta = np.array([[0.5, -0.2, 0.0], [0.0, 1.0, -1.0], [0.3, 0.3, 0.9]])
    state = lesson_state()
    state.set_theta(theta)
    state.set_knobs(n=32, rtg=True, baseline=True)
    result = state.tick()
    exact = state.exact
    assert exact is not None
    for spec_name, moments, reading in zip(LESSON_SPECS, exact.moments, result.configs, strict=True):
        reference = exact_moments(mdp, theta, parse_estimator(spec_name))
        assert moments.variance_trace == pytest.approx(reference.variance_trace, rel=1e-12)
        assert reading.exact == pytest.approx(reference.variance_trace / 32, rel=1e-12)
        assert reading.reward_noise == pytest.approx(reference.reward_noise / 32, rel=1e-12)
        assert reading.sampling == pytest.approx(reference.sampling / 32, rel=1e-12)
    vanilla = exact_moments(mdp, theta, parse_estimator("vanilla")).variance_trace
    rtg_base = exact_moments(mdp, theta, parse_estimator("rtg+base")).variance_trace
    assert result.ratio_exact == pytest.approx(rtg_base / 32 / vanilla, rel=1e-12)
    assert exact.objective == pytest.approx(objective(mdp, theta))


def test_exact_values_follow_gamma_entropy_and_baseline_kind():
    mdp = dataclasses.replace(envs.make("lesson"), gamma=0.8)
    state = lesson_state()
    state.set_knobs(gamma=0.8, entropy=0.05, baseline_kind="value", rtg=True, baseline=True, n=4)
    result = state.tick()
    reference = exact_moments(mdp, np.zeros((3, 3)), parse_estimator("rtg+value", entropy=0.05))
    assert result.reading.exact == pytest.approx(reference.variance_trace / 4, rel=1e-12)
    assert result.reading.spec == "rtg+value"
    state.set_knobs(lam=0.5)
    result = state.tick()
    reference = exact_moments(mdp, np.zeros((3, 3)), parse_estimator("gae0.5+value", entropy=0.05))
    assert result.reading.exact == pytest.approx(reference.variance_trace / 4, rel=1e-12)


def test_measured_variance_agrees_with_exact_within_the_confidence_interval():
    state = lesson_state(seed=11)
    state.set_knobs(n=8)
    covered = {spec: 0 for spec in LESSON_SPECS}
    ticks = 30
    for _ in range(ticks):
        result = state.tick()
        for c in result.configs:
            covered[c.spec] += c.lo <= c.exact <= c.hi
    # nominal 95%; the normal-approximation interval is a little narrow at 60 batches
    for spec, hits in covered.items():
        assert hits >= 0.75 * ticks, (spec, hits)


def test_measurement_follows_a_new_policy_and_gamma():
    """Each setting's Monte-Carlo plan is kept from tick to tick: after the policy or gamma moves,
    the readings must still bracket the new exact variance, not the old one."""
    state = lesson_state(seed=5)
    state.set_knobs(n=4)
    state.tick()
    for change in (
        lambda: state.set_theta(np.array([[2.0, -1.0, 0.0], [0.0, 2.5, -1.0], [-1.0, 0.5, 2.0]])),
        lambda: state.set_knobs(gamma=0.5),
    ):
        change()
        covered = 0
        for _ in range(12):
            result = state.tick()
            covered += sum(c.lo <= c.exact <= c.hi for c in result.configs)
        assert covered >= 0.75 * 12 * len(LESSON_SPECS)


def test_variance_falls_with_each_knob_on_the_lesson_mdp():
    state = lesson_state(seed=3)
    means = {}
    for rtg, baseline, n in [(False, False, 1), (True, False, 1), (True, True, 1), (True, True, 64)]:
        state.set_knobs(rtg=rtg, baseline=baseline, n=n)
        values = [state.tick().reading.variance for _ in range(8)]
        means[(rtg, baseline, n)] = float(np.mean(values))
    ordered = list(means.values())
    assert ordered == sorted(ordered, reverse=True)
    assert ordered[-1] < ordered[-2] / 20


def test_history_is_bounded():
    state = lesson_state(history=5)
    for _ in range(12):
        state.tick()
    assert len(state.history) == 5
    assert [p.tick for p in state.history] == list(range(8, 13))
    assert state.history.maxlen == 5
    state.set_knobs(n=2)
    state.tick()
    state.set_knobs(n=4)
    state.tick()
    assert len(state.learn_history) == 0
    assert set(state.by_n) == {1, 2, 4}  # the latest reading at each N of this configuration


def test_running_baselines_stay_warm_across_ticks():
    state = lesson_state()
    state.set_knobs(baseline=True, n=4)
    state.tick()
    count = state._running.count_t.copy()
    state.tick()
    assert (state._running.count_t > count).all()
    state.set_knobs(n=8)  # N does not change what the running means estimate
    state.tick()
    assert state._running.count_t[0] > count[0]
    state.set_knobs(gamma=0.5)  # gamma does
    assert state._running is None


def test_two_states_are_independent():
    a, b = lesson_state(seed=1), lesson_state(seed=1)
    a.set_knobs(rtg=True, n=64)
    a.set_theta(np.ones((3, 3)))
    result_b = b.tick()
    for _ in range(3):
        a.tick()
    assert b.knobs == Knobs() and np.all(b.theta == 0)
    assert result_b.label == "vanilla" and b.tick_count == 1 and a.tick_count == 3
    assert len(a.history) == 3 and len(b.history) == 1
    # the same seed and setting give the same numbers; fresh sessions differ
    c = lesson_state(seed=1)
    assert c.tick().reading.variance == result_b.reading.variance
    d, e = ExplorerState("lesson"), ExplorerState("lesson")
    assert d.tick().reading.variance != e.tick().reading.variance


def test_fresh_batches_every_tick():
    state = lesson_state()
    values = {state.tick().reading.variance for _ in range(5)}
    assert len(values) == 5


# -- MDPs ---------------------------------------------------------------------------------------------


def test_bad_mdp_file_gives_a_message_and_the_lesson_mdp(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text(
        "states: 2\nactions: 2\ninitial: [0.5, 0.6]\ntransitions: [[[1, 0], [0, 1]]]\nrewards: 0\n"
    )
    state = ExplorerState(str(bad), seed=0)
    assert "broken.yaml" in state.messages["mdp"]
    assert state.base_mdp.name == "lesson"
    assert state.tick() is not None
    missing = ExplorerState(str(tmp_path / "nowhere.json"))
    assert "file not found" in missing.messages["mdp"]
    unknown = ExplorerState("maze")
    assert "unknown built-in" in unknown.messages["mdp"]
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\xff\xfe{")
    assert "garbage.json" in ExplorerState(str(garbage)).messages["mdp"]


def test_switching_mdps_resets_policy_and_history():
    state = lesson_state()
    state.tick()
    assert state.load_mdp("bandit:k=4")
    assert state.theta.shape == (1, 4)
    assert len(state.history) == 0
    result = state.tick()
    assert result.reading.exact is not None
    assert not state.load_mdp("bandit:k=0")
    assert "bandit" in state.messages["mdp"] and ">= 1" in state.messages["mdp"]
    assert state.base_mdp.n_actions == 4  # the old MDP stays
    assert state.load_mdp("lesson")
    assert "mdp" not in state.messages


@pytest.mark.parametrize("name", sorted(envs.BUILTINS))
def test_every_builtin_ticks(name):
    state = ExplorerState(name, seed=0)
    state.set_knobs(n=4, rtg=True, baseline=True)
    result = state.tick()
    assert result is not None, state.messages
    assert result.reading.exact is not None
    assert math.isfinite(result.reading.variance)


def test_an_unmeasurable_policy_gives_a_message_not_an_exception():
    state = ExplorerState("short-corridor", seed=0)
    state.set_theta(np.array([[8.0, -8.0]]))  # always left: episodes (almost) never end
    assert state.tick() is None
    assert "cannot measure" in state.messages["measure"]
    state.set_theta(np.zeros((1, 2)))
    assert state.tick() is not None
    assert "measure" not in state.messages


def test_file_mdp_from_examples():
    state = ExplorerState("examples/corridor.json", seed=0)
    assert not state.messages
    assert state.base_mdp.name == "short-corridor"


# -- learn mode ------------------------------------------------------------------------------------


def test_learn_mode_climbs_j_with_the_chosen_estimator():
    state = lesson_state(seed=5)
    state.set_knobs(rtg=True, baseline=True, n=32)
    start = state.objective()
    state.set_learning(True, 0.5)
    for _ in range(25):
        result = state.tick()
        assert result.learned
    assert state.learn_steps == 25
    assert state.objective() > start + 0.8
    assert state.learn_history[-1][1] == pytest.approx(state.objective())
    policy = state.policy()
    assert policy[0, 0] > 0.5 and policy[1, 1] > 0.5 and policy[2, 2] > 0.5  # best actions [0, 1, 2]


# -- async exact values, sweep and export ------------------------------------------------------------


def test_exact_values_in_a_worker_thread_follow_the_latest_setting():
    with ThreadPoolExecutor(1) as pool:
        state = ExplorerState("lesson", seed=0, executor=pool)
        state.set_knobs(n=2)
        first = state.tick()
        assert first.reading.exact is None and state.exact_pending
        state.set_theta(np.full((3, 3), 0.5) * np.eye(3))
        for _ in range(100):
            if state.refresh_exact() is not None:
                break
            time.sleep(0.02)
        exact = state.exact
        assert exact is not None
        reference = exact_moments(envs.make("lesson"), state.theta, parse_estimator("vanilla"))
        assert exact.moments[0].variance_trace == pytest.approx(reference.variance_trace)
        assert state.tick().reading.exact == pytest.approx(reference.variance_trace / 2)


def test_sweep_measures_every_n():
    state = lesson_state()
    state.set_knobs(rtg=True)
    points = state.sweep()
    assert sorted(points) == list(N_CHOICES)
    assert points[1024][0] < points[1][0] / 100


def test_csv_exports():
    state = lesson_state()
    assert readings_csv(state) == ",".join(READINGS_COLUMNS) + "\n"  # the header only before a tick
    assert history_csv(state) == ",".join(HISTORY_COLUMNS) + "\n"
    assert "entropy" in READINGS_COLUMNS and "beta" not in READINGS_COLUMNS
    state.set_knobs(n=16, rtg=True, entropy=0.125)
    state.tick()
    rows = list(csv.DictReader(io.StringIO(readings_csv(state))))
    assert list(rows[0]) == list(READINGS_COLUMNS)
    assert [r["config"] for r in rows] == [*LESSON_NAMES, "vanilla"]
    assert [r["spec"] for r in rows] == [*LESSON_SPECS, "return+none"]
    assert [r["N"] for r in rows] == ["16"] * 4 + ["1"]
    assert {r["entropy"] for r in rows} == {"0.125"} and {r["tick"] for r in rows} == {"1"}
    last = state.last
    assert float(rows[1]["exact_variance"]) == pytest.approx(last.configs[1].exact, rel=1e-9)
    assert float(rows[1]["vs_vanilla_n1"]) == pytest.approx(last.ratio, rel=1e-9)
    assert float(rows[4]["vs_vanilla_n1"]) == pytest.approx(1.0)
    history = list(csv.DictReader(io.StringIO(history_csv(state))))
    assert len(history) == 1 and history[0]["config"] == "reward-to-go"
    assert float(history[0]["variance"]) == pytest.approx(last.reading.variance, rel=1e-9)


def test_csv_quotes_names_with_commas_and_quotes():
    """An MDP named with commas (a built-in with options) and quotes survives a round trip."""
    state = lesson_state()
    assert state.load_mdp("random:seed=3,states=4")
    assert "," in state.base_mdp.name
    state.set_knobs(baseline=True, baseline_kind="value", lam=0.5, rtg=True)
    state.tick()
    rows = list(csv.DictReader(io.StringIO(readings_csv(state))))
    assert len(rows) == 5 and {r["mdp"] for r in rows} == {state.base_mdp.name}
    assert rows[3]["config"] == "GAE λ=0.5 + baseline (exact V)"
    odd = dataclasses.replace(envs.make("lesson"), name='lesson, "quoted"\nand split')
    state = ExplorerState(odd, seed=0)
    state.tick()
    rows = list(csv.DictReader(io.StringIO(readings_csv(state))))
    assert len(rows) == 5 and rows[0]["mdp"] == 'lesson, "quoted"\nand split'


def test_running_value_baseline_end_to_end():
    """The running mean of G_t per (step, state) is offered, measured and exactly known: its limit is
    V(s), so the exact values equal exact V's, and once warm the readings bracket them."""
    assert "running-value" in PAGE_BASELINE_KINDS
    changes, messages = parse_query({"kind": "running-value", "rtg": "1", "baseline": "1", "N": "8"})
    assert messages == []
    state = lesson_state(seed=13)
    assert state.set_knobs(**changes).baseline_kind == "running-value"
    assert state.label == "rtg + baseline (running V per state)"
    mdp, theta = envs.make("lesson"), np.zeros((3, 3))
    covered = 0
    ticks = 20
    for tick in range(ticks):
        result = state.tick()
        if tick == 0:
            visits = state._running.count_ts.copy()
            assert visits.sum() > 0
        covered += result.reading.lo <= result.reading.exact <= result.reading.hi
    assert (state._running.count_ts >= visits).all() and state._running.count_ts.sum() > visits.sum()
    assert result.reading.spec == "rtg+running-value"
    assert [c.spec for c in result.configs][2:] == ["return+running-value", "rtg+running-value"]
    for reading, spec in zip(result.configs[2:], ("return+value", "rtg+value"), strict=True):
        exact_value = exact_moments(mdp, theta, parse_estimator(spec)).variance_trace
        assert reading.exact == pytest.approx(exact_value / 8, rel=1e-9)
    assert covered >= 0.75 * ticks
    state.set_knobs(lam=0.5)  # unbiased inside GAE too (its exact limit, V, is GAE's value function)
    assert state.tick().reading.spec == "gae0.5+running-value"


def test_png_export():
    from pgvar.explorer.export import render_png

    state = lesson_state()
    for _ in range(3):
        state.tick()
    state.sweep()
    data = render_png(state)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


# -- the page, built without a server ---------------------------------------------------------------


def test_widgets_offer_exactly_what_the_query_string_accepts():
    """Each knob's range is defined once: a widget's ends are accepted, one step beyond is refused."""
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    view = build("lesson", seed=0)
    view.state._executor = None
    view.on_tick()
    assert view.lesson.view["n_choices"] == list(N_CHOICES)
    assert list(view.batches.options) == list(BATCH_CHOICES)
    assert list(view.kind.options.values()) == list(PAGE_BASELINE_KINDS)
    assert list(view.kind.options) == [BASELINE_KINDS[kind] for kind in PAGE_BASELINE_KINDS]
    sliders = {"lam": view.lam, "gamma": view.gamma, "entropy": view.entropy, "lr": view.lr}
    for key, slider in sliders.items():
        for edge in (slider.start, slider.end):
            assert parse_query({key: str(edge)})[1] == [], (key, edge)
        for outside in (slider.start - slider.step, slider.end + slider.step):
            assert len(parse_query({key: str(outside)})[1]) == 1, (key, outside)
    for key, options in (("N", N_CHOICES), ("batches", BATCH_CHOICES)):
        for value in options:
            assert parse_query({key: str(value)})[1] == []
        assert len(parse_query({key: str(options[-1] + 1)})[1]) == 1
    assert "pgvar-entropy" in view.entropy.css_classes


def test_view_applies_the_query_string_to_its_widgets():
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    query = {"entropy": "0.3", "kind": "running-value", "baseline": "1", "batches": "120", "lr": "1.25"}
    view = build("lesson", seed=0, query=query)
    assert view.state.knobs.entropy == 0.3 and view.entropy.value == 0.3
    assert view.kind.value == "running-value" and view.state.knobs.baseline_kind == "running-value"
    assert view.batches.value == 120 and view.lr.value == 1.25 and view.state.learning_rate == 1.25
    assert not view.state.learning and "query" not in view.state.messages
    view.state._executor = None
    view.on_tick()
    assert view.breakdown_src.data["color"] == list(PAGE_COLOURS)
    assert view.lesson.view["reading"]["configs"][2]["label"] == "baseline (running V per state)"
    view.entropy.value = 0.5  # a widget change goes through the same checks
    assert view.state.knobs.entropy == 0.5
    view = build("lesson", seed=0, query={"beta": "0.3", "learn": "1"})
    assert view.state.knobs.entropy == 0.0 and view.state.learning
    assert "unknown parameter 'beta'" in html.unescape(view.messages.object)


def test_view_ticks_and_renders_stable_ids():
    pytest.importorskip("panel")
    from pgvar.explorer.page import LessonWidget, build

    view = build("lesson", seed=0, query={"N": "64", "rtg": "1", "history": "3"})
    view.state._executor = None  # compute exact values in the tick, for a deterministic check
    for _ in range(5):
        view._next_allowed = 0.0
        view.on_tick()
    for element in ("pgvar-config", "pgvar-n", "pgvar-variance", "pgvar-ratio", "pgvar-status"):
        assert f'id="{element}"' in LessonWidget._esm
    shown = view.lesson.view
    assert shown["reading"]["n"] == 64 and shown["reading"]["current"] == 1
    assert shown["reading"]["configs"][1]["label"] == "reward-to-go"
    assert len(shown["history"]) == 3 and shown["history_max"] == 3
    assert len(view.history_src.data["tick"]) == 3  # rollover keeps the history bounded
    assert 'id="pgvar-breakdown"' in view.table.object


def test_view_shows_query_and_mdp_messages(tmp_path):
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    bad = tmp_path / "bad.json"
    bad.write_text("{")
    view = build(str(bad), query={"N": "abc"}, file_choice=str(bad))
    text = view.messages.object
    assert "bad.json" in text and "N: must be a whole number" in text
    assert view.state.base_mdp.name == "lesson"


def test_a_slider_drag_costs_one_exact_computation_per_tick(monkeypatch):
    from pgvar.explorer import state as state_module

    calls = []
    real = state_module.compute_exact
    monkeypatch.setattr(state_module, "compute_exact", lambda *args: calls.append(1) or real(*args))
    state = lesson_state()
    state.tick()
    assert len(calls) == 1
    for step in range(50):  # a drag: many value changes between two ticks
        state.set_logit(0, step / 10)
        state.apply(gamma=1 - step / 100)
    assert len(calls) == 1
    state.tick()
    assert len(calls) == 2
    state.apply(rtg=True, baseline=True, n=64)  # the main knobs need no exact recomputation
    state.tick()
    assert len(calls) == 2


def test_view_skips_a_tick_while_one_runs():
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    view = build("lesson", seed=0)
    view.state._executor = None
    view._ticking = True
    view.on_tick()
    assert view.state.tick_count == 0
    view._ticking = False
    view.on_tick()
    assert view.state.tick_count == 1
    view._next_allowed = time.monotonic() + 60  # after a slow tick the next ones wait
    view.on_tick()
    assert view.state.tick_count == 1


def test_the_app_builds_outside_a_server_as_in_a_notebook():
    import panel as pn

    from pgvar.explorer import app

    layout = app("lesson")
    assert isinstance(layout, pn.viewable.Viewable)
    assert layout.get_root() is not None  # renders to a Bokeh model without a running server


# -- work off the event loop, limits, sessions ending ------------------------------------------------


def test_session_jobs_run_in_order_in_their_thread_under_the_session_limits():
    import threading

    from pgvar import budget
    from pgvar.explorer.jobs import SessionJobs

    limits = budget.Limits(memory=1e6, seconds=0.5)
    jobs = SessionJobs(limits)
    gate = threading.Event()
    seen = []
    first = jobs.submit(lambda: gate.wait(10) and seen.append(("first", budget.current())))
    second = jobs.submit(lambda: seen.append(("second", threading.current_thread().name)))
    third = jobs.submit(lambda: seen.append("never"))
    assert jobs.busy and budget.current() == budget.DEFAULT  # the caller's limits are untouched
    released = threading.Event()
    jobs.close(last=lambda: released.set() or seen.append(("last", budget.current())))
    gate.set()
    assert released.wait(10)
    assert first.result() is None and first.done()
    assert third.cancelled() and second.cancelled()  # queued work is dropped when the session ends
    assert seen == [("first", limits), ("last", limits)]
    assert jobs.submit(lambda: 1).cancelled()  # nothing runs after close
    # refusals travel back in the future
    jobs = SessionJobs(limits)
    refused = jobs.submit(lambda: budget.check("a table", memory=2e6))
    with pytest.raises(budget.BudgetError, match="a table"):
        refused.result(10)
    jobs.close()
    inline = SessionJobs(limits, inline=True)
    assert inline.submit(budget.current).result() == limits and not inline.busy


def test_exact_values_in_a_worker_thread_inherit_the_limits():
    from pgvar import budget

    with ThreadPoolExecutor(1) as pool, budget.limits(memory_gb=1e-9):
        state = ExplorerState(envs.make("lesson"), seed=0, executor=pool)
        state._exact_seconds = 1.0  # too slow to compute inside the tick: it goes to the pool
        assert state.refresh_exact() is None
        for _ in range(200):
            state.refresh_exact()
            if not state.exact_pending:
                break
            time.sleep(0.01)
        assert state.exact is None and "exact values" in state.messages["exact"]
        assert "limit" in state.messages["exact"]


def tick(view) -> None:
    """One tick of a view built without a server (inline work), not held back by the last one's time."""
    view._next_allowed = 0.0
    view.on_tick()


def _frame_panels(view) -> dict:
    return {
        "header": html.unescape(view.header.object),
        "info": html.unescape(view.mdp_info.object),
        "status": view.lesson.view["mdp"],
        "rows": list(dict.fromkeys(view.policy_src.data["row"])),
        "policy": len(view.policy_src.data["p"]),
        "history": list(view.history_src.data["exact"]),
        "J": list(view.learn_src.data["J"]),
        "sliders": len(view._sliders),
        "select": view.mdp_select.value,
    }


@pytest.mark.parametrize("via", ["menu", "text box", "query string"])
def test_each_input_loads_an_mdp_into_every_panel(via):
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    view = build("lesson", seed=0, query={"mdp": "repayment"} if via == "query string" else None)
    for _ in range(3):
        tick(view)
    if via == "menu":
        view.mdp_select.value = "repayment"
    elif via == "text box":
        view.mdp_text.value = " repayment "
        view.mdp_load.clicks += 1
    for _ in range(3):
        tick(view)
    model = envs.make("repayment")
    theta = np.zeros(model.theta_shape())
    exact = exact_moments(model, theta, parse_estimator("vanilla")).variance_trace
    panels = _frame_panels(view)
    assert 'data-mdp="repayment"' in panels["header"] and "MDP <b>repayment</b>" in panels["header"]
    assert "<b>repayment</b>" in panels["info"] and f"{theta.size} logits" in panels["info"]
    assert panels["status"] == "repayment"
    assert panels["rows"] == ExplorerState("repayment").row_names()
    assert panels["policy"] == panels["sliders"] == theta.size
    ticks = 6 if via == "query string" else 3  # the query string loads it before the first tick
    assert len(panels["history"]) == ticks and panels["history"] == pytest.approx([exact] * ticks, rel=1e-9)
    assert panels["J"] == pytest.approx([objective(model, theta)])
    assert panels["select"] == "repayment"
    assert "mdp" not in view.state.messages


def test_a_gymnasium_model_loads_from_the_text_box():
    pytest.importorskip("panel")
    pytest.importorskip("gymnasium")
    from pgvar.explorer.page import build

    view = build("lesson", seed=0)
    tick(view)
    view.mdp_text.value = "gym:FrozenLake-v1,map_name=4x4"
    view.mdp_load.clicks += 1
    tick(view)
    assert view.state.base_mdp.name == "gym:FrozenLake-v1,map_name=4x4"
    assert view.state.base_mdp.n_states == 16 and "mdp" not in view.state.messages


def test_a_typed_mdp_over_the_limits_is_refused_with_a_message():
    pytest.importorskip("panel")
    from pgvar import budget
    from pgvar.explorer.page import build

    view = build("lesson", seed=0, limits=budget.Limits(memory=2e6, seconds=3.0))
    tick(view)
    view.mdp_text.value = "random:states=300,actions=4"  # 2.9 MB of transitions: over 2 MB
    view.mdp_load.clicks += 1
    text = html.unescape(view.messages.object)
    assert "cannot load MDP 'random:states=300,actions=4'" in text and "limit" in text
    assert view.state.base_mdp.name == "lesson"  # the old MDP stays, and keeps ticking
    tick(view)
    assert view.state.tick_count == 2 and view.lesson.view["stale"] is None
    view.mdp_text.value = "maze"
    view.mdp_load.clicks += 1
    assert "type a built-in" in html.unescape(view.messages.object)


def test_numbers_that_cannot_be_measured_any_more_are_marked_stale():
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    view = build("short-corridor", seed=0)
    tick(view)
    assert view.lesson.view["stale"] is None and view.lesson.view["reading"] is not None
    last = view.state.tick_count
    view.state.set_theta(np.array([[8.0, -8.0]]))  # always left: episodes (almost) never end
    tick(view)
    shown = view.lesson.view
    assert shown["stale"].startswith(f"numbers of tick {last}; cannot measure")
    assert shown["reading"]["tick"] == last  # the old numbers, marked stale
    assert "pgvar-stale" in view.table.object
    # a new MDP that cannot be measured (its exact tables are over the session's limits) shows no
    # number at all, only why
    view.mdp_text.value = "random:states=700,actions=4,horizon=200"
    view.mdp_load.clicks += 1
    tick(view)
    shown = view.lesson.view
    assert shown["stale"].startswith("cannot measure") and "limit" in shown["stale"]
    assert shown["reading"] is None  # no numbers of the MDP before
    assert "exact: unavailable" in shown["note"] and shown["mdp"].startswith("random:seed=0,states=700")
    view.mdp_select.value = "lesson"
    tick(view)
    assert view.lesson.view["stale"] is None


def test_the_header_follows_the_number_of_batches():
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    view = build("lesson", seed=0)
    tick(view)
    assert "measures 60 fresh independent batches" in view.header.object
    view.batches.value = 240
    assert "measures 240 fresh independent batches" in view.header.object
    tick(view)
    assert view.state.last.batches == 240 and view.lesson.view["reading"]["batches"] == 240


def test_running_baselines_restart_when_learning_stops():
    """After learn mode the running means hold episodes of old policies: they restart when learning
    stops, so the readings of the policy now fixed bracket its exact value again."""
    state = lesson_state(seed=5)
    state.set_knobs(rtg=True, baseline=True, n=32)
    state.set_learning(True, 0.5)
    for _ in range(40):
        state.tick()
    assert state._running is not None and state._running.count_t[0] > 40 * 32 * 60
    state.set_learning(False)
    assert state._running is None
    results = [state.tick() for _ in range(20)]
    covered = sum(r.reading.lo <= r.reading.exact <= r.reading.hi for r in results)
    ratio = np.mean([r.reading.variance / r.reading.exact for r in results])
    assert covered >= 0.75 * 20 and 0.8 < ratio < 1.25, (covered, ratio)


def test_a_closed_session_frees_its_state_and_does_no_more_work():
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    view = build("lesson", seed=0, query={"mdp": "random:seed=1,states=50,actions=3"})
    tick(view)
    assert view.state.base_mdp.n_states == 50
    view.close()
    assert view.state.closed and view.state.base_mdp.name == "lesson" and not view.state._samplers
    ticks = view.state.tick_count
    tick(view)
    view.mdp_select.value = "bandit"
    assert view.state.tick_count == ticks and view.state.base_mdp.name == "lesson"
    view.close()  # twice is harmless


# -- the group baselines (RLOO, GRPO; docs/groups.md) -----------------------------------------------


def test_group_kinds_take_a_group_size_and_whole_groups():
    knobs = check_knobs(Knobs(), {"baseline_kind": "loo"})
    assert knobs.grouped and knobs.group == DEFAULT_GROUP and knobs.n == DEFAULT_GROUP  # N follows K up
    knobs = check_knobs(knobs, {"group": 16})
    assert knobs.n == 16
    assert check_knobs(knobs, {"n": 64}).n == 64  # N above K stays: a power of two is whole groups
    assert check_knobs(knobs, {"n": 2}).n == 16
    with pytest.raises(SpecError, match="group: must be one of 2, 4, 8, 16, 32, 64"):
        check_knobs(knobs, {"group": 3})
    with pytest.raises(SpecError, match="GAE"):
        check_knobs(knobs, {"lam": 0.9})
    assert check_knobs(Knobs(), {"group": 8}).n == 1  # K alone changes nothing while no group kind is chosen
    specs = lesson_state().specs(knobs)
    assert [s.grouped for s in specs] == [False, False, True, True] and specs[3].group == 16


def test_group_knobs_round_trip_through_the_query_string():
    state = lesson_state()
    state.set_knobs(baseline_kind="group-std", group=8, baseline=True, rtg=True)
    query = settings_query(state.snapshot())
    assert query["kind"] == "group-std" and query["group"] == "8" and query["N"] == "8"
    changes, messages = parse_query(query)
    assert messages == [] and changes["group"] == 8 and changes["baseline_kind"] == "group-std"
    assert "group" not in settings_query(lesson_state().snapshot())  # the default stays out of links
    _, messages = parse_query({"group": "5"})
    assert messages == ["query string: group: must be one of 2, 4, 8, 16, 32, 64, got '5'"]


def test_a_group_baseline_ticks_with_its_exact_value_and_bias():
    """loo is unbiased; the group mean's bias is exactly |grad J| / K (E g = (K - 1)/K grad J)."""
    state = lesson_state()
    state.set_knobs(baseline_kind="group", group=4, n=16, baseline=True, rtg=True)
    result = state.tick()
    grad_norm = float(np.linalg.norm(state.exact.grad))
    group = result.configs[3]
    assert group.spec == "rtg+group" and group.bias == pytest.approx(grad_norm / 4, rel=1e-9)
    assert group.cosine == pytest.approx(1.0)
    assert result.configs[1].bias is None  # reward-to-go without a baseline: unbiased, nothing shown
    exact = exact_moments(state.mdp, state.theta, parse_estimator("rtg+group", group=4)).variance_trace / 16
    assert group.exact == pytest.approx(exact)
    assert group.lo <= group.variance <= group.hi
    rows = list(csv.DictReader(io.StringIO(readings_csv(state))))
    assert float(rows[3]["exact_bias"]) == pytest.approx(grad_norm / 4, rel=1e-9)
    assert float(rows[3]["exact_cosine"]) == pytest.approx(1.0)
    assert rows[1]["exact_bias"] == rows[1]["exact_cosine"] == ""  # unbiased: empty, as on the page
    state.set_knobs(baseline_kind="loo")
    loo = state.tick().configs[3]
    assert loo.spec == "rtg+loo" and loo.bias is None and loo.exact is not None


def test_group_std_on_noisy_rewards_is_measured_without_an_exact_value():
    state = lesson_state()
    state.set_knobs(baseline_kind="group-std", baseline=True, rtg=True)
    result = state.tick()
    reading = result.configs[3]
    assert reading.exact is None and reading.bias is None and math.isfinite(reading.variance)
    assert "exact" not in state.messages  # the other configurations still have theirs
    assert result.configs[0].exact is not None


def test_the_group_measurement_agrees_with_the_exact_value():
    """The KPI over 1,000 batches against exact / N: its standard error is the 95% interval's half
    width / 1.96 (the interval is a scaled chi-square with Satterthwaite's degrees of freedom,
    kpi.variance_trace_ci, nearly symmetric at this size), and |z| < 4 fails with probability ~6e-5."""
    state = ExplorerState("prompts", seed=3)
    state.set_knobs(baseline_kind="loo", group=8, n=32, batches=1000, baseline=True)
    reading = state.tick().configs[2]
    assert reading.spec == "return+loo" and reading.exact is not None
    error = (reading.hi - reading.lo) / 2 / 1.96
    assert abs(reading.variance - reading.exact) / error < 4


def test_learn_mode_and_the_n_sweep_take_group_baselines():
    state = ExplorerState("prompts", seed=2)
    state.set_knobs(baseline_kind="loo", group=4, baseline=True)
    before = state.objective()
    state.set_learning(True, 1.0)
    for _ in range(20):
        state.tick()
    assert state.learn_steps == 20 and state.objective() > before
    state.set_learning(False)
    curve = state.sweep()
    assert min(curve) == 4  # no N below one group


def test_view_offers_the_group_knob_and_shows_the_bias():
    pytest.importorskip("panel")
    from pgvar.explorer.page import build

    view = build("lesson", seed=0)
    assert view.group.disabled and list(view.group.options) == [2, 4, 8, 16, 32, 64]
    view = build("lesson", seed=0, query={"kind": "group", "group": "8", "baseline": "1", "rtg": "1"})
    assert view.group.value == 8 and not view.group.disabled and view.state.knobs.n == 8
    view.state._executor = None
    view.on_tick()
    current = view.lesson.view["reading"]["configs"][3]
    assert (
        current["bias_text"].startswith("biased: |E g − ∇J| = ")
        and "cos to ∇J 1.0000" in current["bias_text"]
    )
    assert view.lesson.view["reading"]["configs"][1]["bias_text"] == ""  # reward-to-go: unbiased
    assert "bias |E g − ∇J|" in view.table.object and "data-bias=" in view.table.object
    assert "group=8" in view.lesson.query


def test_a_group_baseline_without_exact_values_is_drawn_and_exported():
    """GRPO's std on the lesson's noisy rewards has no exact value: every panel, the story's caption
    and the PNG show the measurement only ("no exact value"), and the vs-N lines of the grouped
    configurations start at N = K."""
    pytest.importorskip("panel")
    from pgvar.explorer.export import render_png
    from pgvar.explorer.page import build

    view = build("lesson", seed=0, query={"kind": "group-std", "group": "8", "story": "4"})
    view.state._executor = None
    view.on_tick()
    frame = view.state.snapshot()
    assert frame.exact is not None and frame.exact.moments[3] is None and view.lesson.story == 4
    config = view.lesson.view["reading"]["configs"][3]
    assert config["no_exact"] and config["exact"] is None and config["bias_text"] == ""
    assert view.lesson.view["caption"]["step"] == 4  # the caption takes the measurement instead
    assert view.lesson.view["reading"]["configs"][0]["no_exact"] is False
    assert "no exact value" in view.table.object
    lines = view.vs_n_lines.data
    assert len(lines["xs"]) == 4 and lines["ys"][2] == lines["ys"][3] == [] and min(lines["xs"][0]) == 1
    assert render_png(view.state)[:8] == b"\x89PNG\r\n\x1a\n"
    view.state.set_knobs(baseline_kind="group")  # exact values again: its line from N = K on
    view.on_tick()
    lines = view.vs_n_lines.data
    assert min(lines["xs"][2]) == min(lines["xs"][3]) == 8 and len(lines["ys"][3]) == len(lines["xs"][3])
    assert "no exact value" not in view.table.object
    view.close()
