"""pgvar sweep: cells that are `pgvar variance --json`, rows identical whatever the engine, Parquet
files that are whole or absent, resuming after kill -9, one-line spec errors, DuckDB queries, plots.

Tests wait on state (files in place, processes gone), never on a fixed sleep. The Ray tests share one
local Ray (loopback, 2 CPUs) started and stopped by a module fixture, which checks that no raylet or
gcs_server outlives it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas
import pytest
import yaml
from helpers import run, strict_json

pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

import pgvar.sweep
from pgvar.sweep import store
from pgvar.sweep.rows import RESOLVED, cell_rows
from pgvar.sweep.spec import CONFIG_COLUMNS, load_spec

ROOT = Path(__file__).resolve().parents[1]
SMALL = {  # 12 quick cells over two partitions (a partition value with ':', ',' and '=')
    "name": "small",
    "mdp": ["lesson", "random:states=3,actions=2,horizon=4"],
    "estimators": "vanilla,rtg,rtg+base",
    "N": [1, 4],
    "seeds": [0, 1, 2],
    "batches": 10,
}
SLOW = {  # 24 cells of ~0.15 s each (the short corridor's exact moments): about 1.8 s on 2 workers, so a
    # signal sent when two are done lands mid-run even when the workers starve this process of its core
    "mdp": ["short-corridor"],
    "estimators": "vanilla,rtg+base",
    "N": [1, 4],
    "readings": 12,
    "batches": 60,
}
EVERY_COLUMN_BUT_TIME = "SELECT * EXCLUDE (cell_seconds) FROM results ORDER BY cell, estimator"
META = {"cell", "error", "pgvar_version", "cell_seconds"}
OPTION_ONLY = set(CONFIG_COLUMNS) - {
    "N",
    "seed",
    "batches",
    "entropy",
}  # kept as spelled; the JSON's resolved


def write_spec(folder: Path, spec: dict, name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def table(out: Path) -> list[tuple]:
    """Every row but its run time, in a fixed order."""
    return pgvar.sweep.query(str(out), EVERY_COLUMN_BUT_TIME).fetchall()


def keys(out: Path) -> list[tuple]:
    """(cell, estimator) of every row."""
    return pgvar.sweep.query(str(out), "SELECT cell, estimator FROM results").fetchall()


def pgvar_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pgvar.cli", *args]


def wait_for(condition, what: str, timeout: float = 60.0, process: subprocess.Popen | None = None):
    """Poll ``condition`` until it is true (a state, not a duration); fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the sweep ended (code {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def ray_daemons() -> set[int]:
    """Pids of Ray's daemons (raylet, gcs_server) on this machine, and of Ray processes orphaned
    (``ray::...`` whose parent is init: what a Ray that did not shut down cleanly leaves)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                name = (entry / "comm").read_text().strip()
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if name in ("raylet", "gcs_server") or (name.startswith("ray::") and parent == 1):
                pids.add(int(entry.name))
    return pids


def pool_workers(driver: int) -> list[int]:
    """The worker processes of a sweep started in a session of its own: the session's processes
    whose parent is neither the driver nor init (the forkserver's children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != driver:
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            parent, session = int(fields[1]), int(fields[3])
            if session == driver and parent not in (driver, 1):
                pids.append(int(entry.name))
    return pids


def task_processes(title: str) -> list[int]:
    """Pids of the processes whose command line starts with ``title`` (Ray names a task's worker so)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(title.encode()):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@pytest.fixture(scope="module")
def ray_local():
    """One local Ray for the module's Ray tests: loopback, 2 CPUs, no dashboard; stopped at the end,
    leaving no daemon behind."""
    pytest.importorskip("ray")
    from pgvar.sweep.engines import ray_session

    before = ray_daemons()
    with ray_session(workers=2) as ray:
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        yield ray
    wait_for(lambda: not (ray_daemons() - before), "Ray's daemons to exit", timeout=30)


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory):
    """The small spec, run inline: the table every engine must reproduce."""
    folder = tmp_path_factory.mktemp("small")
    spec = load_spec(write_spec(folder, SMALL))
    pgvar.sweep.run_sweep(spec, str(folder / "out"), engine="inline")
    return folder / "out", table(folder / "out")


# -- the cell is `pgvar variance --json` ----------------------------------------------------------
def json_view(row: dict) -> dict:
    """A row's keys of the JSON document: options kept as spelled and bookkeeping left out, the
    resolved ones under their JSON names, the logits decoded."""
    inverse = {column: key for key, column in RESOLVED.items()}
    view = {inverse.get(k, k): v for k, v in row.items() if k not in META and k not in OPTION_ONLY}
    if "theta" in view:
        view["theta"] = json.loads(view["theta"])
    return view


def expected_rows(payload: dict) -> list[dict]:
    top = {k: v for k, v in payload.items() if k not in ("results", "slopes")}
    return [{**top, **result} for result in payload["results"]]


@pytest.mark.parametrize(
    "options",
    [
        {"mdp": "random:states=3,actions=2,horizon=4", "theta": "uniform", "N": 4, "seed": 5, "batches": 12,
         "entropy": 0.1, "estimators": "vanilla,rtg+base,gae0.9"},
        {"mdp": "short-corridor", "theta": "[[0.5, -0.5]]", "N": 2, "seed": 1, "batches": 8,
         "estimators": "rtg+value,base"},
    ],
    ids=["random", "short-corridor"],
)  # fmt: skip
def test_a_cells_rows_are_pgvar_variance_json(tmp_path, capsys, options):
    spec = load_spec(write_spec(tmp_path, options))
    (cell,) = spec.cells()
    rows = cell_rows(cell)
    args = ["variance", "--json", "--mdp", options["mdp"], "--theta", options["theta"],
            "-e", options["estimators"], "--N", str(options["N"]), "--seed", str(options["seed"]),
            "--batches", str(options["batches"]), "--entropy", str(options.get("entropy", 0.0))]  # fmt: skip
    code, out, _ = run(args, capsys)
    assert code == 0
    payload = strict_json(out)
    assert payload["slopes"] == {}  # one N per cell: why rows leave slopes out
    assert [json_view(row) for row in rows] == expected_rows(payload)
    assert all(row["error"] is None and row["mdp"] == options["mdp"] for row in rows)


def test_a_neural_cells_rows_are_pgvar_variance_env_json(tmp_path, capsys):
    pytest.importorskip("gymnasium")
    pytest.importorskip("torch")
    options = {"env": "CartPole-v1", "policy": "mlp:8", "policy_seed": 1, "estimators": "vanilla,rtg",
               "N": 2, "batches": 3, "seed": 3, "reference_episodes": 16}  # fmt: skip
    spec = load_spec(write_spec(tmp_path, options))
    (cell,) = spec.cells()
    rows = cell_rows(cell)
    code, out, _ = run(["variance", "--json", "--env", "CartPole-v1", "--policy", "mlp:8",
                        "--policy-seed", "1", "-e", "vanilla,rtg", "--N", "2", "--batches", "3",
                        "--seed", "3", "--reference-episodes", "16"], capsys)  # fmt: skip
    assert code == 0
    assert [json_view(row) for row in rows] == expected_rows(strict_json(out))


# -- one-line errors before any work --------------------------------------------------------------
BAD_SPECS = [
    ({**SMALL, "estimater": "rtg"}, "unknown key 'estimater'; did you mean 'estimators'?"),
    ({**SMALL, "N": [1, "x"]}, "N[1]: must be a whole number >= 1, got 'x'"),
    ({**SMALL, "N": 0}, "N: must be a whole number >= 1, got 0"),
    ({**SMALL, "mdp": ["lesson", "nosuch"]}, "mdp 'nosuch': unknown built-in 'nosuch'"),
    ({**SMALL, "mdp": "lesson", "theta": "[1, 2]"}, "theta '[1, 2]' for mdp 'lesson': shape (2,)"),
    ({**SMALL, "estimators": "rtg+bogus"}, "estimators: estimator 'rtg+bogus': unknown baseline 'bogus'"),
    ({**SMALL, "batches": 1}, "batches: must be a whole number >= 2, got 1"),
    ({**SMALL, "entropy": -1}, "entropy: must be a finite number from 0"),
    ({**SMALL, "seeds": [1, 1]}, "seed: 1 given twice"),
    ({**SMALL, "readings": 3}, "readings: give readings with one first seed, or a list of seeds"),
    ({**SMALL, "partition": "estimator"}, "partition: unknown column 'estimator'"),
    ({**SMALL, "policy": "mlp:8"}, "policy: applies to env cells, but the spec has no env"),
    ({"estimators": "rtg"}, "give mdp (tabular MDPs) and/or env"),
    (["lesson"], "a spec is a mapping of keys"),
]


@pytest.mark.parametrize("spec, message", BAD_SPECS, ids=[m.split(":")[0][:24] for _, m in BAD_SPECS])
def test_spec_errors_are_one_line_naming_the_field_before_any_work(tmp_path, capsys, spec, message):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, out, err = run(["sweep", "run", str(path), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("error: spec.yaml: ") and message in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--engine", "spark"], "--engine: unknown 'spark'; use one of inline, processes, ray"),
        (["--workers", "0"], "--workers: must be a whole number from 1 to 4096, got 0"),
        (["--address", "auto"], "--address: applies to --engine ray only"),
        (["--chunk", "0"], "--chunk: must be a whole number"),
    ],
)
def test_option_errors_are_one_line(tmp_path, capsys, args, message):
    path = write_spec(tmp_path, SMALL)
    code, _, err = run(["sweep", "run", str(path), "--out", str(tmp_path / "out"), *args], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_yaml_and_a_cell_over_the_budget_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mdp: [lesson\nN: 1\n")
    code, _, err = run(["sweep", "run", str(bad), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "bad.yaml: not valid YAML/JSON" in err and len(err.strip().splitlines()) == 1
    path = write_spec(tmp_path, {**SMALL, "N": [1, 1_000_000], "batches": 60})
    args = ["--max-seconds", "1", "sweep", "run", str(path), "--out", str(tmp_path / "out")]
    code, _, err = run(args, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert (
        err.startswith("error: spec.yaml: the cell lesson N=1000000 batches=60") and "over the limit" in err
    )
    code, _, err = run(["--max-seconds", "1e-9", *args[2:]], capsys)  # refused while the MDP is read
    assert code == 2 and err.startswith("error: spec.yaml: mdp 'lesson': ") and "over the limit" in err
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_the_cells_and_their_cost_and_writes_nothing(tmp_path, capsys):
    path = write_spec(tmp_path, SMALL)
    args = ["sweep", "run", str(path), "--out", str(tmp_path / "out"), "--dry-run", "--workers", "2"]
    code, out, _ = run(args, capsys)
    assert code == 0
    assert "12 cells (12 tabular, 0 neural) x 3 estimators = 36 rows; partitioned by mdp" in out
    assert "0 already in" in out and "12 to run" in out
    assert "estimated cost:" in out and "on 2 workers (processes)" in out
    assert not (tmp_path / "out").exists()


# -- engines ---------------------------------------------------------------------------------------
def test_processes_and_ray_give_the_inline_rows_bit_for_bit(tmp_path, capsys, small_reference, ray_local):
    _, reference = small_reference
    assert len(reference) == 12 * 3 and len(set(keys(small_reference[0]))) == 36
    path = write_spec(tmp_path, SMALL)
    for engine, extra in (("processes", ["--workers", "2", "--chunk", "2"]), ("ray", ["--chunk", "5"])):
        out = tmp_path / engine
        code, stdout, err = run(
            ["sweep", "run", str(path), "--out", str(out), "--engine", engine, *extra], capsys
        )
        assert code == 0, err
        assert "12 cells (36 rows) written" in stdout
        assert table(out) == reference, engine
        assert store.temp_files(str(out)) == []


def test_ray_runs_again_a_chunk_whose_worker_was_killed(tmp_path, ray_local):
    spec = load_spec(write_spec(tmp_path, SLOW))
    out = tmp_path / "out"
    result = {}
    runner = threading.Thread(
        target=lambda: result.update(summary=pgvar.sweep.run_sweep(spec, str(out), engine="ray", chunk=1))
    )
    runner.start()
    wait_for(lambda: len(store.result_files(str(out))) >= 2, "two chunks in place")
    wait_for(lambda: task_processes("ray::run_chunk"), "a Ray worker running a chunk")
    victim = task_processes("ray::run_chunk")[0]
    os.kill(victim, signal.SIGKILL)
    runner.join(timeout=120)
    assert not runner.is_alive()
    assert result["summary"].cells == 24 and not result["summary"].interrupted
    assert len(keys(out)) == 24 * 2 and len(set(keys(out))) == 48
    assert store.temp_files(str(out)) == []


def test_ctrl_c_of_a_ray_sweep_keeps_its_cells_and_leaves_no_ray_behind(tmp_path):
    pytest.importorskip("ray")
    path = write_spec(tmp_path, SLOW)
    out = tmp_path / "out"
    before = ray_daemons()
    command = pgvar_command("sweep", "run", str(path), "--out", str(out), "--engine", "ray", "--workers", "2")
    sweep = subprocess.Popen([*command, "--chunk", "1"], start_new_session=True, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)  # fmt: skip
    wait_for(lambda: len(store.result_files(str(out))) >= 2, "two chunks in place", process=sweep)
    os.kill(sweep.pid, signal.SIGINT)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, err
    wait_for(lambda: not (ray_daemons() - before), "the sweep's own Ray to exit", timeout=30)
    stopped = pgvar.sweep.progress(str(out))
    assert 2 <= stopped.done < 24 and stopped.rows == 2 * stopped.done


# -- crashes and resuming ----------------------------------------------------------------------------
def test_ctrl_c_a_dead_worker_and_kill_9_of_everything_then_resume_give_the_uninterrupted_table(tmp_path):
    path = write_spec(tmp_path, SLOW)
    pgvar.sweep.run_sweep(load_spec(path), str(tmp_path / "reference"), engine="inline")
    out = tmp_path / "out"
    command = pgvar_command("sweep", "run", str(path), "--out", str(out), "--workers", "2", "--chunk", "1")
    # Ctrl-C: the driver stops handing out chunks, keeps the finished ones (and those running)
    sweep = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: len(store.result_files(str(out))) >= 2, "two chunks in place", process=sweep)
    os.kill(sweep.pid, signal.SIGINT)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 130, err
    assert b"interrupted: every finished cell is kept" in err
    assert store.temp_files(str(out)) == []
    stopped = pgvar.sweep.progress(str(out))
    assert 2 <= stopped.done < 24 and stopped.rows == 2 * stopped.done
    # kill -9 of one worker: the driver says so in one line and keeps what is done
    sweep = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: pgvar.sweep.progress(str(out)).done > stopped.done, "one more chunk", process=sweep)
    wait_for(lambda: pool_workers(sweep.pid), "the pool's workers", process=sweep)
    os.kill(pool_workers(sweep.pid)[0], signal.SIGKILL)
    _, err = sweep.communicate(timeout=60)
    assert sweep.returncode == 2 and len(err.splitlines()) == 2, err  # the plan's line, the error's
    assert err.splitlines()[-1].startswith(b"error: --engine processes: a worker process died")
    assert store.temp_files(str(out)) == []
    stopped = pgvar.sweep.progress(str(out))
    # kill -9 of the whole process group: the driver, the forkserver and every worker
    sweep = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(
        lambda: pgvar.sweep.progress(str(out)).done >= stopped.done + 2, "two more chunks", process=sweep
    )
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=30)
    killed = pgvar.sweep.progress(str(out))
    assert killed.done < 24, "the sweep finished before it was killed: make SLOW slower"
    assert pgvar.sweep.query(str(out), "SELECT count(*) FROM results").fetchall() == [(2 * killed.done,)]
    # the same command resumes: no lost and no duplicated rows, the finished cells skipped
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{killed.done} already in" in done.stderr
    assert table(out) == table(tmp_path / "reference")
    assert store.temp_files(str(out)) == []


def test_a_partial_temporary_file_is_ignored_and_cleaned(tmp_path, capsys, small_reference):
    _, reference = small_reference
    out = tmp_path / "out"
    path = write_spec(tmp_path, SMALL)
    assert run(["sweep", "run", str(path), "--out", str(out), "--engine", "inline"], capsys)[0] == 0
    whole = Path(store.result_files(str(out))[0])
    torn = whole.parent / f".part-{'0' * 16}-abcdef012345{store.TEMP_SUFFIX}"
    torn.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # a crash mid-write
    assert table(out) == reference  # readers never see it
    code, shown, _ = run(["sweep", "show", str(out)], capsys)
    assert code == 0 and "12 of 12 cells done" in shown and "1 temporary files" in shown
    code, stdout, err = run(["sweep", "run", str(path), "--out", str(out), "--engine", "inline"], capsys)
    assert code == 0 and "12 already in" in err and "0 cells (0 rows) written" in stdout
    assert not torn.exists() and table(out) == reference


def test_a_changed_spec_is_refused_unless_new_and_keeps_the_cells_it_shares(tmp_path, capsys):
    out = tmp_path / "out"
    path = write_spec(tmp_path, SMALL)
    assert run(["sweep", "run", str(path), "--out", str(out), "--engine", "inline"], capsys)[0] == 0
    bigger = write_spec(tmp_path, {**SMALL, "seeds": [0, 1, 2, 3]}, "bigger.yaml")
    code, _, err = run(["sweep", "run", str(bigger), "--out", str(out), "--engine", "inline"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "holds the results of another spec (changed: seed); run with --new" in err
    code, stdout, err = run(
        ["sweep", "run", str(bigger), "--out", str(out), "--engine", "inline", "--new"], capsys
    )
    assert code == 0 and "12 already in" in err and "4 cells (12 rows) written" in stdout
    assert pgvar.sweep.progress(str(out)).done == 16
    repartitioned = write_spec(tmp_path, {**SMALL, "partition": "N"}, "repartitioned.yaml")
    code, _, err = run(["sweep", "run", str(repartitioned), "--out", str(out), "--new"], capsys)
    assert code == 2 and "is partitioned by mdp, the spec asks for N" in err


# -- reading the results -----------------------------------------------------------------------------
def test_duckdb_queries_return_what_was_written(tmp_path, capsys, small_reference):
    out, _ = small_reference
    spec = load_spec(write_spec(tmp_path, SMALL))
    cell = next(c for c in spec.cells() if c["mdp"].startswith("random") and c["N"] == 4 and c["seed"] == 2)
    written = {row["estimator"]: row for row in cell_rows(cell)}
    sql = (
        "SELECT estimator, mdp, N, seed, variance_trace, ci95, exact_variance_trace, vs_vanilla, "
        f"theta_resolved FROM results WHERE cell = '{cell['cell']}' ORDER BY estimator"
    )
    code, stdout, _ = run(["sweep", "query", str(out), sql, "--json"], capsys)
    assert code == 0
    got = json.loads(stdout)
    assert [row["estimator"] for row in got] == sorted(written)
    for row in got:
        assert row == {key: written[row["estimator"]][key] for key in row}  # the partition value decoded too
    frame = pgvar.sweep.results(str(out)).filter(f"cell = '{cell['cell']}'").df()  # pandas, from Python
    assert sorted(frame["variance_trace"]) == sorted(r["variance_trace"] for r in written.values())
    con = pgvar.sweep.connect(str(out))
    assert con.sql("SELECT count(DISTINCT cell), count(*) FROM results").fetchall() == [(12, 36)]
    code, _, err = run(["sweep", "query", str(out), "SELECT nosuch FROM results"], capsys)
    assert code == 2 and err.startswith("error: query: ") and len(err.strip().splitlines()) == 1


def test_show_summarises_and_plot_writes_one_figure_per_problem(tmp_path, capsys, small_reference):
    out, _ = small_reference
    code, shown, _ = run(["sweep", "show", str(out)], capsys)
    assert code == 0 and "small: 12 of 12 cells done (100%), 36 rows" in shown
    assert "lesson" in shown and "rtg+base" in shown
    code, printed, _ = run(["sweep", "plot", str(out), "--out", str(tmp_path / "plots")], capsys)
    assert code == 0
    figures = sorted((tmp_path / "plots").glob("*.png"))
    assert [f.name for f in figures] == [
        "variance-01-lesson.png",
        "variance-02-random-states-3-actions-2-horizon-4.png",
    ]
    assert all(f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 10_000 for f in figures)
    assert printed.split() == [str(f) for f in figures]
    assert run(["sweep", "plot", str(out)], capsys)[0] == 0  # by default into DIR/_plots, which
    assert len(list((out / "_plots").glob("*.png"))) == 2  # Parquet readers skip (as _sweep.json):
    assert pandas.read_parquet(out, partitioning=None).shape[0] == 36  # the folder is one dataset
    code, _, err = run(["sweep", "show", str(tmp_path)], capsys)
    assert code == 2 and "not a sweep's folder" in err


def test_importing_pgvar_loads_neither_ray_nor_duckdb_nor_pyarrow():
    code = (
        "import sys, pgvar, pgvar.cli, pgvar.sweep; "
        "print(sorted(m for m in ('ray', 'duckdb', 'pyarrow') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_folder_given_as_a_uri_goes_through_pyarrows_filesystems(tmp_path, capsys, small_reference):
    _, reference = small_reference
    out = f"file://{tmp_path}/out"  # the code path of s3://, gs://, hdfs:// (no lock, no fsync: moves)
    path = write_spec(tmp_path, SMALL)
    code, stdout, err = run(["sweep", "run", str(path), "--out", out, "--workers", "2"], capsys)
    assert code == 0, err
    assert "12 cells (36 rows) written" in stdout
    assert pgvar.sweep.query(out, EVERY_COLUMN_BUT_TIME).fetchall() == reference
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "_sweep.json",
        "mdp=lesson",
        "mdp=random%3Astates%3D3%2Cactions%3D2%2Chorizon%3D4",
    ]
    code, shown, _ = run(["sweep", "show", out], capsys)
    assert code == 0 and "12 of 12 cells done" in shown


@pytest.mark.parametrize("partition", ["N", "entropy", "theta", "none"])
def test_every_partition_column_reads_back_as_written(tmp_path, partition):
    grid = {"mdp": "lesson", "theta": ["uniform", "[[0, 1, 0], [1, 0, 0], [0, 0, 1]]"], "estimators": "rtg",
            "N": [1, 3], "entropy": [0.0, 0.125], "batches": 4, "partition": partition}  # fmt: skip
    spec = load_spec(write_spec(tmp_path, grid))
    out = tmp_path / "out"
    pgvar.sweep.run_sweep(spec, str(out), engine="inline")
    rows = pgvar.sweep.query(str(out), "SELECT cell, theta, N, entropy FROM results ORDER BY cell").fetchall()
    assert rows == sorted((c["cell"], c["theta"], c["N"], c["entropy"]) for c in spec.cells())
    depth = {len(Path(f).relative_to(out).parts) for f in store.result_files(str(out))}
    assert depth == ({1} if partition == "none" else {2})
