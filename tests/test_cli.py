"""The pgvar command: tables, documented JSON keys, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from pgvar import cli


def run(args, capsys):
    """Run ``pgvar ARGS`` in-process; return (exit code, stdout, stderr)."""
    old = sys.argv
    sys.argv = ["pgvar", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_exact_json_has_the_documented_keys(capsys):
    code, out, _ = run(["exact", "--json", "-e", "vanilla,rtg+value"], capsys)
    assert code == 0
    payload = json.loads(out)
    assert {"mdp", "method", "J", "grad", "estimators"} <= payload.keys()
    assert payload["mdp"] == "lesson" and payload["method"] == "enumeration"
    for entry in payload["estimators"].values():
        assert {"mean", "variance_trace", "variance_parts"} <= entry.keys()
        parts = entry["variance_parts"]
        assert parts["reward_noise"] + parts["sampling"] == pytest.approx(entry["variance_trace"])
        np.testing.assert_allclose(entry["mean"], payload["grad"], atol=1e-12)


def test_variance_json_is_reproducible_and_has_the_documented_keys(capsys):
    args = ["variance", "--json", "--N", "1,4", "--batches", "30", "--seed", "7"]
    code, out, _ = run(args, capsys)
    assert code == 0
    payload = json.loads(out)
    assert {"mdp", "batches", "seed", "results", "sampling", "paths"} <= payload.keys()
    assert (payload["sampling"], payload["paths"]) == ("paths", 27)  # 3 steps, 3 actions each
    keys = {
        "estimator",
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
    for result in payload["results"]:
        assert keys <= result.keys()
        low, high = result["ci95"]
        assert low <= result["variance_trace"] <= high
    assert json.loads(run(args, capsys)[1])["results"] == payload["results"]


def test_variance_table_names_the_lesson_configurations(capsys):
    code, out, _ = run(["variance", "--N", "2", "--batches", "10"], capsys)
    assert code == 0
    for label in ("vanilla", "reward-to-go", "baseline", "rtg + baseline", "vs vanilla", "(27 paths)"):
        assert label in out


def test_variance_of_an_unbounded_mdp_is_walked_step_by_step(capsys):
    args = ["variance", "--mdp", "short-corridor", "--theta", "[[0.5, 0]]", "-e", "vanilla", "--N", "2"]
    code, out, _ = run([*args, "--batches", "10", "--json"], capsys)
    assert code == 0
    payload = json.loads(out)
    assert (payload["sampling"], payload["paths"]) == ("steps", None)


def test_readings_json_has_the_documented_keys_and_brackets_the_exact_value(capsys):
    args = ["readings", "--json", "-e", "rtg,base", "--N", "2", "--count", "400", "--seed", "3"]
    code, out, _ = run(args, capsys)
    assert code == 0
    payload = json.loads(out)
    assert {"mdp", "N", "batches", "count", "seed", "results"} <= payload.keys()
    assert [r["estimator"] for r in payload["results"]] == ["reward-to-go", "baseline"]
    for result in payload["results"]:
        keys = {"spec", "exact_variance_trace", "mean", "relative_std", "q05", "q95", "agrees_with_exact"}
        assert keys <= result.keys()
        assert result["q05"] < result["exact_variance_trace"] < result["q95"]
        assert 0.0 <= result["agrees_with_exact"] <= 1.0
    assert json.loads(run(args, capsys)[1])["results"] == payload["results"]


def test_readings_table_shows_the_spread_of_one_reading(capsys):
    code, out, _ = run(["readings", "--count", "50"], capsys)
    assert code == 0
    for label in ("50 readings", "vanilla", "rtg + baseline", "ordered as exact", "µs per reading"):
        assert label in out


def test_exact_table_reports_bias_of_the_common_form(capsys):
    code, out, _ = run(["exact", "--mdp", "random:gamma=0.8", "-e", "rtg+value,rtg+value:common"], capsys)
    assert code == 0
    rows = [line for line in out.splitlines() if "rtg+value" in line]
    assert "none" in rows[0] and "none" not in rows[1]


BAD = {
    "zero batch size": (["variance", "--N", "0"], "--N: batch size must be >= 1"),
    "not a batch size": (["variance", "--N", "abc"], "--N: 'abc' is not an integer"),
    "negative entropy": (["exact", "--entropy", "-0.1"], "entropy: coefficient beta must be"),
    "unknown estimator": (["exact", "-e", "vanila"], "unknown weight 'vanila'"),
    "unknown baseline": (["exact", "-e", "rtg+mean"], "unknown baseline 'mean'"),
    "gae without lambda": (["exact", "-e", "gae+value"], "GAE needs its lambda"),
    "theta shape": (["exact", "--theta", "[[1, 2]]"], "shape (1, 2) does not fit"),
    "theta not json": (["exact", "--theta", "[1,"], "theta: not 'uniform'"),
    "unknown mdp": (["exact", "--mdp", "lessons"], "unknown built-in 'lessons'"),
    "missing file": (["exact", "--mdp", "nowhere.yaml"], "nowhere.yaml"),
    "one batch": (["variance", "--batches", "1"], "need at least 2 batches"),
    "no readings": (["readings", "--count", "0"], "count: the number of readings must be"),
    "readings of one batch": (["readings", "--batches", "1"], "batches: need an integer >= 2"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line(case, capsys):
    args, message = BAD[case]
    code, out, err = run(args, capsys)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err + out


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
