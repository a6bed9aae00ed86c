"""The pgvar command: tables, documented JSON keys, and one-line errors for bad input."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import numpy as np
import pytest
from helpers import run, strict_json

import pgvar
from pgvar import cli


def test_version_prints_the_package_version(capsys):
    code, out, err = run(["--version"], capsys)
    assert code == 0 and err == ""
    assert out.strip() == f"pgvar {pgvar.__version__}"
    assert pgvar.__version__ == importlib.metadata.version("pgvar")  # pyproject.toml says the same


def test_exact_json_has_the_documented_keys(capsys):
    code, out, _ = run(["exact", "--json", "-e", "vanilla,rtg+value"], capsys)
    assert code == 0
    payload = strict_json(out)
    assert {"mdp", "method", "J", "grad", "estimators"} <= payload.keys()
    assert payload["mdp"] == "lesson" and payload["method"] == "enumeration"
    for entry in payload["estimators"].values():
        assert {"spec", "label", "mean", "bias", "variance_trace", "variance_parts"} <= entry.keys()
        parts = entry["variance_parts"]
        assert parts["reward_noise"] + parts["sampling"] == pytest.approx(entry["variance_trace"])
        np.testing.assert_allclose(entry["mean"], payload["grad"], atol=1e-12)


def test_json_keys_an_estimator_by_its_spelling_with_the_lessons_label(capsys):
    code, out, _ = run(["exact", "--json", "-e", "rtg,return+none,base,rtg+value,rtg+lesson"], capsys)
    assert code == 0
    estimators = strict_json(out)["estimators"]
    assert list(estimators) == ["rtg", "return+none", "base", "rtg+value", "rtg+lesson"]
    assert {name: (e["spec"], e["label"]) for name, e in estimators.items()} == {
        "rtg": ("rtg+none", "reward-to-go"),
        "return+none": ("return+none", "vanilla"),
        "base": ("return+lesson", "baseline"),
        "rtg+value": ("rtg+value", "rtg+value"),
        "rtg+lesson": ("rtg+lesson", "rtg + baseline"),
    }


def test_the_same_estimator_spelled_twice_is_refused(capsys):
    code, _out, err = run(["exact", "-e", "rtg,vanilla,rtg"], capsys)
    assert code == 2 and "rtg given twice" in err


def test_variance_json_is_reproducible_and_has_the_documented_keys(capsys):
    args = ["variance", "--json", "--N", "1,4", "--batches", "30", "--seed", "7"]
    code, out, _ = run(args, capsys)
    assert code == 0
    payload = strict_json(out)
    assert {"mdp", "batches", "seed", "results", "slopes", "sampling", "paths"} <= payload.keys()
    assert (payload["sampling"], payload["paths"]) == ("paths", 27)  # 3 steps, 3 actions each
    keys = {
        "estimator",
        "spec",
        "label",
        "N",
        "variance_trace",
        "ci95",
        "exact_variance_trace",
        "vs_vanilla_n1",
        "vs_vanilla",
        "snr",
        "cosine_to_exact",
    }
    assert len(payload["results"]) == 8
    names = ["vanilla", "rtg", "base", "rtg+base"]  # the default -e, as spelled there
    assert [(r["estimator"], r["N"]) for r in payload["results"]] == [(e, n) for n in (1, 4) for e in names]
    labels = {r["estimator"]: (r["spec"], r["label"]) for r in payload["results"]}
    assert labels == {
        "vanilla": ("return+none", "vanilla"),
        "rtg": ("rtg+none", "reward-to-go"),
        "base": ("return+lesson", "baseline"),
        "rtg+base": ("rtg+lesson", "rtg + baseline"),
    }
    assert list(payload["slopes"]) == names
    for result in payload["results"]:
        assert keys <= result.keys()
        low, high = result["ci95"]
        assert low <= result["variance_trace"] <= high
    assert json.loads(run(args, capsys)[1])["results"] == payload["results"]


def test_variance_json_names_only_what_was_asked_for(capsys):
    code, out, _ = run(["variance", "--json", "-e", "rtg+none", "--N", "2,8", "--batches", "10"], capsys)
    assert code == 0
    payload = strict_json(out)
    assert {r["estimator"] for r in payload["results"]} == {"rtg+none"}  # vanilla measured, not listed
    assert all(r["label"] == "reward-to-go" and r["vs_vanilla"] > 0 for r in payload["results"])
    assert list(payload["slopes"]) == ["rtg+none"]


def test_variance_table_names_the_lesson_configurations(capsys):
    code, out, _ = run(["variance", "--N", "2", "--batches", "10"], capsys)
    assert code == 0
    names = ("vanilla ", "rtg (reward-to-go)", "base (baseline)", "rtg+base (rtg + baseline)")
    for label in (*names, "vs vanilla", "(27 paths)"):
        assert label in out
    assert "vanilla (vanilla)" not in out
    assert "slope of log variance against log N" not in out  # one N: no slope


def test_tables_add_the_lessons_label_only_where_it_differs(capsys):
    code, out, _ = run(["exact", "-e", "return+none,rtg+value,rtg+lesson,vanilla"], capsys)
    assert code == 0
    first_column = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert first_column == ["return+none (vanilla)", "rtg+value", "rtg+lesson (rtg + baseline)", "vanilla"]


def test_variance_of_an_unbounded_mdp_is_walked_step_by_step(capsys):
    args = ["variance", "--mdp", "short-corridor", "--theta", "[[0.5, 0]]", "-e", "vanilla", "--N", "2"]
    code, out, _ = run([*args, "--batches", "10", "--json"], capsys)
    assert code == 0
    payload = strict_json(out)
    assert (payload["sampling"], payload["paths"]) == ("steps", None)


def test_readings_json_has_the_documented_keys_and_brackets_the_exact_value(capsys):
    args = ["readings", "--json", "-e", "rtg,base", "--N", "2", "--count", "400", "--seed", "3"]
    code, out, _ = run(args, capsys)
    assert code == 0
    payload = strict_json(out)
    assert {"mdp", "N", "batches", "count", "seed", "results"} <= payload.keys()
    assert [r["estimator"] for r in payload["results"]] == ["rtg", "base"]
    assert [r["label"] for r in payload["results"]] == ["reward-to-go", "baseline"]
    assert [r["spec"] for r in payload["results"]] == ["rtg+none", "return+lesson"]
    for result in payload["results"]:
        keys = {"exact_variance_trace", "mean", "relative_std", "q05", "q95", "agrees_with_exact"}
        assert keys <= result.keys()
        assert result["q05"] < result["exact_variance_trace"] < result["q95"]
        assert 0.0 <= result["agrees_with_exact"] <= 1.0
    assert json.loads(run(args, capsys)[1])["results"] == payload["results"]


def test_readings_table_shows_the_spread_of_one_reading(capsys):
    code, out, _ = run(["readings", "--count", "50"], capsys)
    assert code == 0
    for label in (
        "50 readings",
        "vanilla",
        "rtg+base (rtg + baseline)",
        "ordered as exact",
        "µs per reading",
    ):
        assert label in out


def test_exact_table_reports_bias_of_the_common_form(capsys):
    code, out, _ = run(["exact", "--mdp", "random:gamma=0.8", "-e", "rtg+value,rtg+value:common"], capsys)
    assert code == 0
    rows = [line for line in out.splitlines() if "rtg+value" in line]
    assert "none" in rows[0] and "none" not in rows[1]


BAD = {
    "zero batch size": (["variance", "--N", "0"], "--N: must be a whole number >= 1, got '0'"),
    "not a batch size": (["variance", "--N", "1,abc"], "--N: must be a whole number >= 1, got 'abc'"),
    "no batch size": (["variance", "--N", " , "], "--N: give at least one whole number"),
    "negative entropy": (["exact", "--entropy", "-0.1"], "--entropy: must be a finite number from 0 to"),
    "entropy not a number": (["variance", "--entropy", "nan"], "--entropy: must be a finite number from 0"),
    "entropy absurd": (["exact", "--entropy", "1e308"], "--entropy: must be a finite number from 0 to 1e+50"),
    "train entropy absurd": (["train", "--entropy", "1e308"], "--entropy: must be a finite number from 0"),
    "huge logit": (["exact", "--theta", "[[1e308,0,0],[0,0,0],[0,0,0]]"], "logits must lie within ±1e+06"),
    "huge logit (train)": (["train", "--theta", "[[0,0,0],[0,-1e308,0],[0,0,0]]"], "within ±1e+06"),
    "huge reward (built-in)": (["exact", "--mdp", "bandit:mean=1e70"], "bandit: mean: must be a finite"),
    "huge noise (built-in)": (["variance", "--mdp", "lesson:noise_width=1e300"], "noise.scale: is 1e+300"),
    "no memory": (["--max-memory", "0", "exact"], "--max-memory: must be a finite number > 0, got 0"),
    "memory not a number": (["--max-memory", "nan", "exact"], "--max-memory: must be a finite number > 0"),
    "no time": (["--max-seconds", "-1", "verify"], "--max-seconds: must be a finite number > 0"),
    "time not a number": (["--max-seconds", "soon", "exact"], "Invalid value for '--max-seconds'"),
    "unknown option": (["variance", "--bogus", "1"], "No such option: --bogus (see 'pgvar variance --help')"),
    "not an integer": (["readings", "--count", "many"], "Invalid value for '--count'"),
    "unknown method": (["exact", "--method", "exact"], "--method: unknown 'exact'; use one of auto"),
    "unknown estimator": (["exact", "-e", "vanila"], "unknown weight 'vanila'"),
    "unknown baseline": (["exact", "-e", "rtg+mean"], "unknown baseline 'mean'"),
    "gae without lambda": (["exact", "-e", "gae+value"], "GAE needs its lambda"),
    "theta shape": (["exact", "--theta", "[[1, 2]]"], "shape (1, 2) does not fit"),
    "theta not json": (["exact", "--theta", "[1,"], "theta: not 'uniform'"),
    "unknown mdp": (["exact", "--mdp", "lessons"], "unknown built-in 'lessons'"),
    "missing file": (["exact", "--mdp", "nowhere.yaml"], "nowhere.yaml"),
    "one batch": (["variance", "--batches", "1"], "--batches: must be a whole number >= 2, got 1"),
    "no readings": (["readings", "--count", "0"], "--count: must be a whole number >= 1, got 0"),
    "readings of one batch": (["readings", "--batches", "1"], "--batches: must be a whole number >= 2"),
    "readings of empty batches": (["readings", "--N", "0"], "--N: must be a whole number >= 1, got 0"),
    "report of one batch": (["report", "--batches", "1"], "--batches: must be a whole number >= 2"),
    "port out of range": (["explore", "--port", "70000"], "--port: must be a whole number from 0 to 65535"),
    **{
        f"negative seed ({command})": (
            [command, "--seed", "-1"],
            "--seed: must be a whole number >= 0, got -1",
        )
        for command in ("variance", "readings", "verify", "report")
    },
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line(case, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a report that slipped through would write pgvar-report/ here
    args, message = BAD[case]
    code, out, err = run(args, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out
    assert list(tmp_path.iterdir()) == []


def test_bad_mdp_files_give_one_line(tmp_path, capsys):
    nan_reward = tmp_path / "nan.yaml"
    nan_reward.write_text(
        "states: 2\nactions: 1\ninitial: [1, 0]\nterminal: [1]\nhorizon: 2\n"
        "transitions: [[[0, 1]], [[0, 1]]]\nrewards: [[.nan], [0]]\n"
    )
    bad_sum = tmp_path / "sum.json"
    bad_sum.write_text(
        json.dumps(
            {
                "states": 2,
                "actions": 1,
                "initial": [1, 0],
                "terminal": [1],
                "horizon": 2,
                "transitions": [[[0.5, 0.2]], [[0, 1]]],
                "rewards": [[1], [0]],
            }
        )
    )
    for path, message in ((nan_reward, "rewards"), (bad_sum, "sum to 0.7")):
        code, _out, err = run(["exact", "--mdp", str(path)], capsys)
        assert code == 2, err
        assert message in err and str(path.name) in err
        assert len(err.strip().splitlines()) == 1


def test_the_console_script_runs():
    done = subprocess.run(
        [sys.executable, "-m", "pgvar.cli", "exact", "--mdp", "short-corridor"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "J(θ) = -12" in done.stdout


# -- nothing a user types can crash, hang or exhaust the machine ----------------------------------


def test_budget_options_hold_while_the_command_runs(capsys, monkeypatch):
    import pgvar.mdpfile
    from pgvar import budget

    seen = []
    original = pgvar.mdpfile.resolve_mdp

    def resolve(name):
        seen.append(budget.current())
        return original(name)

    monkeypatch.setattr(pgvar.mdpfile, "resolve_mdp", resolve)
    code, _out, err = run(["--max-memory", "0.5", "--max-seconds", "7", "exact", "-e", "rtg"], capsys)
    assert code == 0, err
    assert (seen[0].memory, seen[0].seconds) == (0.5 * budget.GB, 7.0)
    assert budget.current() == budget.DEFAULT  # left when the command ends
    code, _out, err = run(["--max-seconds", "2", "mdp", "check", "lesson"], capsys)
    assert code == 0 and (seen[-1].memory, seen[-1].seconds) == (budget.DEFAULT.memory, 2.0)


def test_a_budget_refusal_is_one_line(capsys, monkeypatch):
    import pgvar.mdpfile
    from pgvar import budget

    def refuse(name):
        budget.check(f"--mdp {name}", memory=2 * budget.current().memory)

    monkeypatch.setattr(pgvar.mdpfile, "resolve_mdp", refuse)
    code, _out, err = run(["--max-memory", "1", "exact"], capsys)
    assert code == 2 and "over the limit of 1 GB" in err and len(err.strip().splitlines()) == 1


def test_explore_on_a_port_in_use_is_one_line(capsys, monkeypatch):
    import socket

    import pgvar.explorer

    monkeypatch.setattr(pgvar.explorer, "serve", lambda **_: pytest.fail("served on a taken port"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _out, err = run(["explore", "--port", str(port), "--no-browser"], capsys)
    assert code == 2 and f"--port: 127.0.0.1:{port} is not free (in use)" in err
    assert len(err.strip().splitlines()) == 1
    for bad in ("-1", "65536", "1e9"):
        code, _out, err = run(["explore", "--port", bad, "--no-browser"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("command", ["report", "train"])
def test_out_must_be_a_folder_whose_parent_exists(command, tmp_path, capsys):
    a_file = tmp_path / "taken.txt"
    a_file.write_text("mine")
    deep = tmp_path / "a" / "b" / "c"
    for out, message in (
        (a_file, "exists and is not a"),
        (deep, f"--out: {deep.parent} is not an existing"),
        (a_file / "sub", "is not an existing"),
    ):
        code, _out, err = run(
            [command, "--out", str(out), "--batches" if command == "report" else "--runs", "2"], capsys
        )
        assert code == 2 and message in err, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert a_file.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["taken.txt"]


def test_train_creates_only_the_last_folder(tmp_path, capsys):
    out = tmp_path / "new"
    args = ["train", "-e", "rtg", "--updates", "2", "--runs", "1", "--no-exact-reference", "--out", str(out)]
    code, _out, err = run(args, capsys)
    assert code == 0, err
    assert (out / "curves.csv").exists()


def test_absurd_rewards_in_a_file_are_refused(tmp_path, capsys):
    huge = tmp_path / "huge.yaml"
    huge.write_text(
        "states: 2\nactions: 1\ninitial: [1, 0]\nterminal: [1]\nhorizon: 2\n"
        "transitions: [[[0, 1]], [[0, 1]]]\nrewards: [[1e308], [0]]\n"
    )
    for command in (["exact"], ["variance", "--json"], ["mdp", "check"]):
        args = [*command, str(huge)] if command[0] == "mdp" else [*command, "--mdp", str(huge)]
        code, out, err = run(args, capsys)
        assert code == 2 and out == ""
        assert "huge.yaml: rewards: entry [0, 0] is 1e+308, must be a finite number within ±1e+50" in err
        assert len(err.strip().splitlines()) == 1


def test_a_result_that_is_not_finite_is_one_line(capsys, monkeypatch):
    import dataclasses

    import pgvar.exact

    original = pgvar.exact.exact_moments

    def overflowing(*args, **kwargs):
        return dataclasses.replace(original(*args, **kwargs), variance_trace=float("inf"))

    monkeypatch.setattr(pgvar.exact, "exact_moments", overflowing)
    for extra in ([], ["--json"]):
        code, out, err = run(["exact", "-e", "rtg", *extra], capsys)
        assert code == 2 and out == ""
        assert "exact: rtg: the result is not a finite number" in err
        assert len(err.strip().splitlines()) == 1


def test_train_says_whether_the_start_or_the_step_size_is_to_blame(tmp_path, capsys):
    # the sampler cannot finish an episode at these starting logits: nothing to do with --lr
    args = ["train", "--mdp", "short-corridor", "--theta", "[[8, 0]]", "-e", "vanilla", "--updates", "2"]
    code, _out, err = run([*args, "--runs", "1", "--out", str(tmp_path / "start")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "at the starting --theta, before any step" in err and "step size" not in err
    # a first step of 1e300 times a gradient of about 1e49 overflows: the step size's fault
    args = ["train", "--mdp", "bandit:mean=1e49", "--lr", "1e300", "-e", "vanilla", "--updates", "2"]
    code, _out, err = run([*args, "--runs", "1", "--out", str(tmp_path / "step")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--lr 1e+300 is too large" in err and "--theta" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing learned, nothing written


def test_every_baseline_kind_has_a_table_formula():
    from pgvar.estimators import EstimatorSpec
    from pgvar.vocabulary import BASELINE_KINDS

    for baseline in BASELINE_KINDS:
        for weight in ("return", "rtg", "gae"):
            assert cli.weight_formula(EstimatorSpec(weight, baseline, lam=0.9), gamma=0.9)
