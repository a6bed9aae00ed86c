"""Training: exact read-outs, the learned baseline, learning curves, the entropy example, files
(pgvar.curves), the command and the examples."""

from __future__ import annotations

import ast
import csv
import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from pgvar import envs
from pgvar.baselines import LearnedBaseline
from pgvar.commands.train import train as train_command
from pgvar.curves import default_out, save
from pgvar.errors import PgvarError, SpecError
from pgvar.estimators import parse_estimator
from pgvar.exact import exact_gradient, objective
from pgvar.groups import group_moments
from pgvar.kpi import mean_ci, t_quantile_975
from pgvar.policy import uniform_theta
from pgvar.train import (
    EXACT_LABEL,
    TrainConfig,
    combine,
    episodes_to_reach,
    evaluate,
    train,
    validate_config,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CORRIDOR_START = np.array([[1.47, -1.47]])  # pi(right) = 0.05, Sutton & Barto's starting policy


def improvement_margin(before_r: np.ndarray, after_r: np.ndarray) -> tuple[float, float]:
    """Mean improvement over runs and its standard error."""
    gain = after_r - before_r
    return float(gain.mean()), float(gain.std(ddof=1) / np.sqrt(gain.size))


# -- exact read-outs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("entropy", [0.0, 0.7])
def test_evaluation_on_the_corridor_splits_off_the_entropy_term(entropy):
    mdp = envs.make("short-corridor")
    now = evaluate(mdp, CORRIDOR_START, entropy)
    assert now.objective == pytest.approx(objective(mdp, CORRIDOR_START, entropy), rel=1e-12)
    assert objective(mdp, CORRIDOR_START) == pytest.approx(now.J, rel=1e-12)
    assert 0 < now.policy_entropy < np.log(2)


def test_finite_horizon_evaluation_splits_off_the_entropy_term():
    mdp = envs.make("lesson")
    theta = np.random.default_rng(3).normal(size=mdp.theta_shape())
    now = evaluate(mdp, theta, 0.5)
    assert now.objective == pytest.approx(objective(mdp, theta, 0.5))
    assert objective(mdp, theta) == pytest.approx(now.J)
    # every episode makes three decisions, so the mean entropy is the entropy term / (3 * 0.5)
    assert now.policy_entropy == pytest.approx((now.objective - now.J) / (3 * 0.5))
    assert evaluate(mdp, np.zeros((3, 3))).policy_entropy == pytest.approx(np.log(3))


# -- the learned baseline ----------------------------------------------------------------------------


def test_learned_baseline_first_visit_sets_then_moves_toward_the_batch_mean():
    mdp = envs.make("lesson")  # finite horizon: one row per step
    learned = LearnedBaseline.start(mdp, lr=0.25)
    assert learned.table().shape == (3, 4) and not learned.table().any()
    count = np.zeros((3, 4))
    sums = np.zeros((3, 4))
    count[0, 0], sums[0, 0] = 2, 6.0  # mean 3 at (t=0, s=0)
    learned.update(count, sums)
    assert learned.table()[0, 0] == 3.0 and learned.table().sum() == 3.0
    count[0, 0], sums[0, 0] = 4, 4.0  # mean 1: move a quarter of the way
    count[1, 1], sums[1, 1] = 1, 2.0
    learned.update(count, sums)
    assert learned.table()[0, 0] == pytest.approx(3.0 + 0.25 * (1.0 - 3.0))
    assert learned.table()[1, 1] == 2.0
    assert learned.table()[:, 3].sum() == 0.0  # the terminal state keeps zero


def test_learned_baseline_by_observation_shares_one_value_between_look_alike_states():
    mdp = envs.make("short-corridor")  # unbounded: one row; all three states look alike
    learned = LearnedBaseline.start(mdp, lr=0.5, by="observation")
    count = np.zeros((7, 4))
    sums = np.zeros((7, 4))
    count[0, 0], sums[0, 0] = 1, -10.0
    count[5, 2], sums[5, 2] = 3, -6.0
    learned.update(count, sums)
    np.testing.assert_allclose(learned.table(), [[-4.0, -4.0, -4.0, 0.0]])
    by_state = LearnedBaseline.start(mdp, lr=0.5)
    by_state.update(count, sums)
    np.testing.assert_allclose(by_state.table(), [[-10.0, 0.0, -2.0, 0.0]])
    with pytest.raises(SpecError, match=r"^learned_by: unknown 'time'"):
        LearnedBaseline.start(mdp, lr=0.5, by="time")


# -- learning curves ---------------------------------------------------------------------------------


def test_every_lesson_estimator_improves_the_policy():
    mdp = envs.make("lesson")
    config = TrainConfig(lr=0.5, n=4, updates=25, runs=6, seed=11)
    result = train(mdp, ["vanilla", "rtg", "base", "rtg+base"], config)
    assert [c.label for c in result.curves] == ["vanilla", "rtg", "base", "rtg+base", EXACT_LABEL]
    for curve in result.curves[:-1]:
        gain, se = improvement_margin(curve.J_rk[:, 0], curve.J_rk[:, -1])
        assert gain > 3 * se and gain > 0.5, (curve.label, gain, se)
    exact = result.curve(EXACT_LABEL)
    assert exact.runs == 1 and np.all(np.diff(exact.J_rk[0]) > 0)  # small steps on J: monotone


def test_a_baseline_learns_faster_on_the_short_corridor():
    """Sutton & Barto Fig. 13.2, shortened: REINFORCE at 2^-13 against REINFORCE with a learned
    baseline at 2^-9 (the step size the baseline allows), area under the J curve over 100 episodes."""
    mdp = envs.make("short-corridor")
    common = dict(n=1, updates=100, runs=4, seed=2)
    plain = train(mdp, ["rtg"], TrainConfig(lr=2.0**-13, **common), CORRIDOR_START, exact_reference=False)
    based = train(
        mdp,
        ["rtg+learned"],
        TrainConfig(lr=2.0**-9, baseline_lr=0.3, learned_by="observation", **common),
        CORRIDOR_START,
        exact_reference=False,
    )
    area_plain = plain.curves[0].J_rk.mean(axis=1)
    area_based = based.curves[0].J_rk.mean(axis=1)
    gain, se = improvement_margin(area_plain, area_based)
    assert gain > 3 * se and gain > 5.0, (gain, se)
    reach = episodes_to_reach(based.curves[0], 1.1 * -11.657)
    assert np.isfinite(reach).sum() >= 3  # most runs are within 10% of v* after 100 episodes
    assert not np.isfinite(episodes_to_reach(plain.curves[0], 1.1 * -11.657)).any()


def test_group_baselines_step_by_their_exact_mean_and_record_their_exact_variance():
    """One update of N = 16,384 episodes (8,192 groups of K = 2) on prompts steps by lr times an
    estimate of E g: grad J for rtg+loo (RLOO is unbiased), (K - 1)/K grad J for rtg+group (GRPO's
    mean). The squared error's mean is tr Var / N (exact, pgvar.groups), so it is under 10 times that
    with P > 0.9 (Markov); the two means are |grad J / 2|^2 = 6.7e-4 apart, 3 and 12 of those bounds,
    so a sampler that ignored the groups would fail. The recorded variance is the exact one over N."""
    mdp = envs.make("prompts")
    theta0 = uniform_theta(mdp)
    k, n = 2, 16_384
    specs = [parse_estimator(text, group=k) for text in ("rtg+loo", "rtg+group")]
    config = TrainConfig(lr=1.0, n=n, updates=1, runs=1, variance_every=1)
    result = train(mdp, specs, config, exact_reference=False)
    grad = exact_gradient(mdp, theta0).ravel()
    for spec, curve, expected in zip(specs, result.curves, (grad, (k - 1) / k * grad), strict=True):
        moments = group_moments(mdp, theta0, spec)
        np.testing.assert_allclose(moments.mean, expected, atol=1e-12)
        assert curve.variance_rk[0, 0] == pytest.approx(moments.variance_trace / n, rel=1e-12)
        step = (curve.theta_rp[0] - theta0.ravel()) / config.lr
        assert np.sum((step - expected) ** 2) < 10 * moments.variance_trace / n, spec.name
    with pytest.raises(SpecError, match="N = 6 is not a multiple of the group size K = 4"):
        train(mdp, [parse_estimator("rtg+loo", group=4)], TrainConfig(n=6))


def test_runs_are_reproducible_and_independent():
    mdp = envs.make("lesson")
    config = TrainConfig(lr=0.5, n=2, updates=5, runs=3, seed=4)
    first = train(mdp, ["rtg+learned"], config, exact_reference=False).curves[0]
    again = train(mdp, ["rtg+learned"], config, exact_reference=False).curves[0]
    np.testing.assert_array_equal(first.probs_rkp, again.probs_rkp)
    assert len({tuple(theta) for theta in first.theta_rp}) == 3


def test_one_mdp_per_run_and_the_count_must_match():
    bandits = [envs.make(f"bandit:k=3,seed={seed}") for seed in range(2)]
    config = TrainConfig(lr=0.1, n=1, updates=3, runs=2)
    result = train(bandits, ["rtg+lesson"], config)
    assert result.curve(EXACT_LABEL).runs == 2  # one exact run per distinct bandit
    with pytest.raises(SpecError, match="one per run"):
        train(bandits, ["rtg"], TrainConfig(lr=0.1, updates=3, runs=3))


def test_a_run_whose_policy_stops_ending_episodes_stops_and_the_others_go_on():
    mdp = envs.make("short-corridor")
    result = train(mdp, ["rtg"], TrainConfig(lr=1e3, n=1, updates=4, runs=2, seed=0))
    for curve in result.curves:  # the huge step throws both the sampled runs and the exact one out
        assert np.all(curve.stopped_r >= 1), curve.label
        assert all("never end" in reason or "cap" in reason for reason in curve.reasons), curve.reasons
        assert np.isfinite(curve.J_rk[:, 0]).all()
        for run, stop in enumerate(curve.stopped_r):
            assert np.isnan(curve.J_rk[run, stop:]).all()
    assert [row["stopped_runs"] for row in result.summary()] == [2, 1]
    with pytest.raises(PgvarError, match="never end"):  # a start that cannot be evaluated is an error
        train(mdp, ["rtg"], TrainConfig(updates=1, runs=1), np.array([[60.0, 0.0]]))


# -- the entropy example -----------------------------------------------------------------------------


def _deceptive(entropy: float):
    config = TrainConfig(lr=1.0, n=16, updates=150, runs=4, seed=0, entropy=entropy)
    return train(envs.make("deceptive"), ["rtg+learned"], config)


def _onward(curve) -> np.ndarray:
    """(R, 8) final probability of walking on in the start state and the seven corridor states."""
    return curve.probs_rkp[:, -1].reshape(curve.runs, 8, 2)[:, :, 0]


def test_deceptive_without_entropy_commits_to_the_early_optimum():
    for curve in _deceptive(0.0).curves:  # sampled and exact
        final = curve.J_rk[:, -1]
        assert np.all(np.abs(final - 1.0) < 0.05), (curve.label, final)
        assert np.all(_onward(curve)[:, 0] < 0.02)  # hardly ever walks in any more
        assert np.all(curve.policy_entropy_rk[:, -1] < 0.1)  # committed


def test_deceptive_with_an_entropy_bonus_finds_the_treasure():
    for curve in _deceptive(0.3).curves:
        assert np.all(curve.J_rk[:, -1] > 2.5), (curve.label, curve.J_rk[:, -1])
        assert np.all(_onward(curve).prod(axis=1) > 0.9)  # reaches the treasure
        assert np.all(curve.objective_rk[:, -1] > curve.J_rk[:, -1])  # J + entropy * H with H > 0


def test_deceptive_with_too_much_entropy_never_commits():
    for curve in _deceptive(3.0).curves:
        onward = _onward(curve)
        typical = onward.mean(axis=1)
        assert np.all((typical > 0.6) & (typical < 0.95)), (curve.label, onward)  # neither walks nor stops
        treasure = onward.prod(axis=1)
        assert np.all((treasure > 0.05) & (treasure < 0.5)), (curve.label, treasure)  # no outcome is sure
        # worse than even the trap: at the regularised optimum (the exact curve), and on average over
        # the sampled runs' last 50 updates (one final update is too noisy at lr = 1, batch 16)
        assert np.mean(curve.J_rk[:, -50:]) < 1.0
        assert np.all(curve.policy_entropy_rk[:, -1] > 0.25)  # log 2 = 0.69 at uniform; committed: < 0.1


def test_deceptive_is_a_built_in():
    assert "deceptive" in envs.BUILTINS and envs.make("deceptive").name == "deceptive"
    mdp = envs.make("deceptive:depth=2,treasure=5")
    assert mdp.horizon == 3 and mdp.n_states == 4 and mdp.name.startswith("deceptive:depth=2")
    assert objective(mdp, np.zeros(mdp.theta_shape())) == pytest.approx(1 / 2 + 5 / 8)


# -- statistics --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "quantile"), [(1, 12.7062), (10, 2.2281), (30, 2.0423), (31, 2.0395), (60, 2.0003), (1000, 1.9623)]
)
def test_t_quantiles(df, quantile):
    assert t_quantile_975(df) == pytest.approx(quantile, abs=2e-4)


def test_mean_ci_is_a_t_interval_and_skips_missing_records():
    values = np.array([[1.0, np.nan], [2.0, 5.0], [3.0, 7.0]])
    mean, _, high = mean_ci(values)
    np.testing.assert_allclose(mean, [2.0, 6.0])
    assert high[0] - mean[0] == pytest.approx(4.302652730 * 1.0 / np.sqrt(3))
    assert high[1] - mean[1] == pytest.approx(12.706204736 * np.sqrt(2) / np.sqrt(2))


# -- configuration and files -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"n": 0}, "n"),
        ({"updates": 0}, "updates"),
        ({"runs": 0}, "runs"),
        ({"entropy": -1.0}, "entropy"),
        ({"baseline_lr": 0.0}, "baseline_lr"),
        ({"learned_by": "time"}, "learned_by"),
        ({"variance_every": -2}, "variance_every"),
        ({"n": 2.5}, "n"),
        ({"n": True}, "n"),
        ({"seed": -1}, "seed"),
        ({"lr": "fast"}, "lr"),
    ],
)
def test_bad_configuration_is_one_line_naming_the_field(changes, field):
    with pytest.raises(SpecError) as error:
        TrainConfig(**changes)
    assert str(error.value).startswith(f"{field}: ") and "\n" not in str(error.value)


def test_configuration_keeps_the_checked_types():
    config = TrainConfig(lr=1, n=np.int64(2), updates=3.0, seed="7")
    assert (config.lr, config.n, config.updates, config.seed) == (1.0, 2, 3, 7)
    assert type(config.lr) is float and type(config.n) is int and type(config.updates) is int
    assert config.episodes == 6
    assert json.loads(json.dumps(asdict(config)))["n"] == 2  # a NumPy integer would not serialise


def test_validation_names_each_field_as_the_caller_spells_it():
    fields = asdict(TrainConfig())
    assert validate_config(fields) == fields
    with pytest.raises(SpecError, match=r"^--baseline-lr: must be a finite number > 0 and <= 1, got 1.5$"):
        validate_config({**fields, "baseline_lr": 1.5}, {"baseline_lr": "--baseline-lr"})


@pytest.fixture(scope="module")
def small_result():
    config = TrainConfig(lr=0.5, n=2, updates=6, runs=2, seed=1, variance_every=3)
    return train(envs.make("lesson"), ["rtg", "rtg+learned"], config)


def test_files_are_written_and_readable(small_result, tmp_path):
    paths = save(small_result, tmp_path / "out")
    names = {path.name for path in paths}
    assert {"curves.csv", "summary.json", "curves.png", "curves.svg"} <= names
    for path in paths:
        assert path.stat().st_size > 0
    with (tmp_path / "out" / "curves.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == (2 * 2 + 1) * 7
    columns = {
        "estimator",
        "lr",
        "N",
        "run",
        "update",
        "episodes",
        "J",
        "objective",
        "entropy",
        "policy_entropy",
        "variance",
    }
    assert columns | {"p[0,0]", "p[2,2]"} <= set(table[0])
    rows = [row for row in table if row["estimator"] == "rtg" and row["run"] == "0"]
    assert [row["variance"] != "" for row in rows] == [True, False, False, True, False, False, True]
    assert [int(row["episodes"]) for row in rows] == [0, 2, 4, 6, 8, 10, 12]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["config"]["lr"] == 0.5 and len(summary["summary"]) == 3
    assert (tmp_path / "out" / "curves.svg").read_text().lstrip().startswith("<?xml")


def test_parquet_is_written_when_pyarrow_is_there(small_result, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    save(small_result, tmp_path)
    assert pq.read_table(tmp_path / "curves.parquet").num_rows == (2 * 2 + 1) * 7


def test_save_refuses_to_overwrite_results(small_result, tmp_path):
    save(small_result, tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    before = (tmp_path / "curves.csv").read_bytes()
    with pytest.raises(SpecError, match="--overwrite"):
        save(small_result, tmp_path)
    assert (tmp_path / "curves.csv").read_bytes() == before
    save(small_result, tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_combine_keeps_each_curves_step_size(small_result):
    other = train(
        envs.make("lesson"), ["rtg"], TrainConfig(lr=0.1, n=2, updates=6, runs=2), exact_reference=False
    )
    both = combine([small_result, other], [None, None, None, "rtg at 0.1"])
    assert [c.lr for c in both.curves] == [0.5, 0.5, 0.5, 0.1]
    assert both.curves[-1].label == "rtg at 0.1"


def test_default_out_is_a_new_directory_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("pgvar.curves.time.strftime", lambda _: "20250102-030405")
    first = default_out("examples/two rooms.yaml")
    assert first == Path("runs/train-two-rooms-20250102-030405")
    first.mkdir(parents=True)
    assert default_out("examples/two rooms.yaml") == Path("runs/train-two-rooms-20250102-030405-2")
    assert default_out("!!").name == "train-mdp-20250102-030405"


# -- the command -------------------------------------------------------------------------------------


def invoke(args):
    """Run ``pgvar train ARGS`` through a stand-in app (the lead registers the real one in cli.py)."""
    app = typer.Typer(add_completion=False)
    app.command()(train_command)

    @app.command()
    def other() -> None:  # a second command keeps ``train`` as a sub-command, as in pgvar
        pass

    return CliRunner().invoke(app, ["train", *args])


def test_command_trains_saves_and_prints_a_summary(tmp_path):
    out = tmp_path / "run"
    args = ["--mdp", "lesson", "-e", "rtg,rtg+learned", "--lr", "0.5", "--N", "2", "--episodes", "12"]
    result = invoke([*args, "--runs", "2", "--out", str(out), "--entropy", "0.1"])
    assert result.exit_code == 0, result.output
    assert "final J" in result.output and "rtg+learned" in result.output and "exact gradient" in result.output
    assert (out / "curves.png").stat().st_size > 0 and (out / "curves.csv").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["updates"] == 6 and summary["config"]["entropy"] == 0.1
    again = invoke([*args, "--out", str(out)])
    assert isinstance(again.exception, SpecError) and "--overwrite" in str(again.exception)
    assert invoke([*args, "--out", str(out), "--overwrite", "--no-exact-reference"]).exit_code == 0


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--lr", "-1"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--N", "0"], "--N"),
        (["--runs", "0"], "--runs"),
        (["--entropy", "-0.5"], "--entropy"),
        (["--baseline-lr", "1.5"], "--baseline-lr"),
        (["--episodes", "10", "--N", "3"], "--episodes"),
        (["--episodes", "10", "--updates", "5"], "--episodes/--updates"),
        (["--episodes", "0"], "--episodes"),
        (["--updates", "0"], "--updates"),
        (["--learned-by", "time"], "--learned-by"),
        (["--variance-every", "-1"], "--variance-every"),
        (["--mdp", "nowhere"], "mdp"),
        (["-e", "rtg+nonsense"], "estimator"),
        (["--theta", "[1, 2]"], "theta"),
    ],
)
def test_command_rejects_bad_options_with_one_line(args, option, tmp_path):
    result = invoke([*args, "--out", str(tmp_path / "x")])
    assert isinstance(result.exception, PgvarError), result.output
    message = str(result.exception)
    assert message.startswith(option) and "\n" not in message
    assert not (tmp_path / "x").exists()


def test_command_trains_group_baselines_on_prompts(tmp_path):
    out = tmp_path / "grpo"
    args = ["--mdp", "prompts", "-e", "rtg+loo,rtg+group-std", "--group", "2", "--N", "4", "--updates", "3"]
    result = invoke([*args, "--runs", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert [row["estimator"] for row in summary["summary"]] == ["rtg+loo", "rtg+group-std", EXACT_LABEL]
    with (out / "curves.csv").open() as f:
        rows = [row for row in csv.DictReader(f) if row["estimator"] == "rtg+group-std"]
    assert rows and all(np.isfinite(float(row["variance"])) for row in rows if row["update"] == "0")


def test_command_refuses_an_out_path_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = invoke(["--updates", "1", "--out", str(target)])
    assert isinstance(result.exception, SpecError) and "not a directory" in str(result.exception)


def test_command_takes_estimators_like_every_other_command(tmp_path):
    args = ["--updates", "2", "--runs", "1", "--no-exact-reference"]
    result = invoke(["--estimators", "rtg,rtg+learned", *args, "--out", str(tmp_path / "long")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "long" / "summary.json").read_text())
    assert [row["estimator"] for row in summary["summary"]] == ["rtg", "rtg+learned"]
    old = invoke(["--estimator", "rtg", *args, "--out", str(tmp_path / "old")])
    assert old.exit_code == 2 and "--estimator" in old.output
    assert not (tmp_path / "old").exists()


# -- the examples ------------------------------------------------------------------------------------

SMOKE_ARGS = {
    "entropy_deceptive.py": ["--runs", "2", "--updates", "3"],
    "sutton_barto_13_1.py": ["--runs", "2", "--episodes", "3"],
    "sutton_barto_13_2.py": ["--runs", "2", "--episodes", "3"],
    "sutton_barto_2_5.py": ["--runs", "2", "--steps", "3"],
}


def _pgvar_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "pgvar":
            modules |= {f"pgvar.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return {module for module in modules if module.split(".")[0] == "pgvar"}


def test_every_example_has_a_smoke_run():
    # the CleanRL-style loop uses torch and pgvar.torch.monitor: tests/test_torch_monitor.py runs it;
    # grpo_prompts.py trains nothing: tests/test_docs.py checks its output in docs/groups.md
    others = {"cleanrl_style_reinforce.py", "grpo_prompts.py"}
    assert set(SMOKE_ARGS) == {path.name for path in EXAMPLES.glob("*.py")} - others


@pytest.mark.parametrize("name", sorted(SMOKE_ARGS))
def test_examples_import_only_library_modules(name):
    modules = _pgvar_imports(EXAMPLES / name)
    assert {"pgvar.train", "pgvar.curves"} <= modules
    assert not {m for m in modules if m.split(".")[1] in ("cli", "commands", "explorer")}, modules


@pytest.mark.parametrize("name", sorted(SMOKE_ARGS))
def test_examples_run_and_write_their_curves(name, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(f"example_{name.removesuffix('.py')}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([*SMOKE_ARGS[name], "--out", str(tmp_path)])
    assert f"wrote {tmp_path}/" in capsys.readouterr().out
    with (tmp_path / "curves.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert {row["run"] for row in table} == {"0", "1"}
    assert max(int(row["update"]) for row in table) == 3
    assert (tmp_path / "curves.png").stat().st_size > 0
