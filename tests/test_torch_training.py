"""Training a neural policy on a Gymnasium environment (pgvar.torch.training, ``pgvar train --env``):
reproducible curves, the step's sign, the noise columns against pgvar.kpi, learning, files, errors."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch
from helpers import run

from pgvar import budget, kpi
from pgvar.estimators import parse_estimator
from pgvar.exact import objective
from pgvar.gym.tabular import from_gym
from pgvar.torch.episodes import collect
from pgvar.torch.gradients import episode_gradients, flat_parameters
from pgvar.torch.lift import logit_jacobian
from pgvar.torch.policies import make_network
from pgvar.torch.training import (
    COLUMNS,
    NetworkConfig,
    train_network,
    train_networks,
    update_seeds,
)

ENV = "CartPole-v1,horizon=30"


@pytest.fixture(scope="module")
def network():
    return make_network(ENV, "linear", policy_seed=0)


# -- the core ----------------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_curves(network):
    env, policy = network
    config = NetworkConfig(updates=3, n=4, runs=2, seed=5)
    specs = ["rtg+base", "gae0.95+value"]  # a running baseline and a critic refitted every update
    first = train_networks(env, policy, specs, config)
    again = train_networks(env, policy, specs, config)
    other = train_networks(env, policy, specs, NetworkConfig(updates=3, n=4, runs=2, seed=6))
    for one, two, three in zip(first.curves, again.curves, other.curves, strict=True):
        for name in COLUMNS:
            np.testing.assert_array_equal(one.metric(name), two.metric(name), err_msg=name)
        assert not np.array_equal(one.mean_return_rk, three.mean_return_rk)
        assert not np.array_equal(one.mean_return_rk[0], one.mean_return_rk[1])  # runs differ
    # the policy given is left as it was: every estimator starts from the same weights
    np.testing.assert_array_equal(flat_parameters(policy), flat_parameters(network[1]))
    assert first.curves[0].mean_return_rk[0, 0] == first.curves[1].mean_return_rk[0, 0]  # same first batch


def test_the_noise_columns_are_kpi_on_the_updates_own_gradients(network):
    """Record 0 is the first batch, drawn from the starting policy: recompute it from scratch."""
    env, policy = network
    spec = parse_estimator("vanilla")
    config = NetworkConfig(updates=2, n=6, seed=3)
    curve = train_network(env, policy, spec, config)
    batch = collect(env, policy, 6, int(update_seeds(3, 1, 2)[0, 0]), envs=8)
    grads_bD = episode_gradients(policy, batch, spec).numpy()
    mean_d = grads_bD.mean(axis=0)
    single = kpi.variance_trace(grads_bD)
    squared = kpi.squared_norm_estimate(mean_d, single, 6)
    assert curve.single_trace_rk[0, 0] == pytest.approx(single, rel=1e-12)
    assert curve.variance_trace_rk[0, 0] == pytest.approx(single / 6, rel=1e-12)
    assert curve.squared_norm_rk[0, 0] == pytest.approx(squared, rel=1e-9, abs=1e-9 * single)
    scale = kpi.noise_scale(single, squared)
    if scale is None:
        assert np.isnan(curve.noise_scale_rk[0, 0])
    else:
        assert curve.noise_scale_rk[0, 0] == pytest.approx(scale, rel=1e-9)
    assert curve.grad_norm_rk[0, 0] == pytest.approx(np.linalg.norm(mean_d), rel=1e-12)
    assert curve.mean_return_rk[0, 0] == pytest.approx(batch.rewards_bt.sum(axis=1).mean())
    assert curve.mean_length_rk[0, 0] == pytest.approx(batch.lengths_b.mean())
    # the moving average starts at the first update's own ratio; the cosine is read off it
    if scale is not None:
        assert curve.noise_scale_ema_rk[0, 0] == pytest.approx(scale, rel=1e-9)
        assert curve.expected_cosine_rk[0, 0] == pytest.approx(kpi.expected_cosine(scale, 6), rel=1e-9)


def test_one_sgd_step_is_ascent_along_the_mean_gradient(network):
    env, policy = network
    spec = parse_estimator("rtg")
    curve = train_network(env, policy, spec, NetworkConfig(updates=1, n=4, lr=0.01, seed=8, optimizer="sgd"))
    batch = collect(env, policy, 4, int(update_seeds(8, 1, 1)[0, 0]), envs=8)
    mean_d = episode_gradients(policy, batch, spec).numpy().mean(axis=0)
    moved = flat_parameters(curve.policies[0]) - flat_parameters(policy)
    np.testing.assert_allclose(moved.numpy(), 0.01 * mean_d, rtol=1e-10, atol=1e-14)


def test_one_episode_per_update_records_no_variance(network):
    env, policy = network
    curve = train_network(env, policy, "rtg", NetworkConfig(updates=2, n=1))
    assert np.isfinite(curve.mean_return_rk).all() and np.isfinite(curve.grad_norm_rk).all()
    for name in ("single_trace", "variance_trace", "squared_norm", "noise_scale", "noise_scale_ema"):
        assert np.isnan(curve.metric(name)).all(), name


def test_training_raises_the_return_on_cartpole():
    """Mean return of the last 3 updates minus the first 3, rtg+base, linear policy, N = 8, Adam lr
    0.05, 20 updates on CartPole with horizon 100: measured 30.2 ± 5.2 (mean ± sd over 60 runs, seed
    2) and 28.5 ± 4.0 (20 runs, seed 1). The mean of 4 runs has a standard error of about 2.6, so 15
    is more than 5 standard errors below what is expected."""
    env, policy = make_network("CartPole-v1,horizon=100", "linear", policy_seed=0)
    config = NetworkConfig(updates=20, n=8, lr=0.05, runs=4, seed=0)
    curve = train_network(env, policy, "rtg+base", config)
    gain_r = curve.mean_return_rk[:, -3:].mean(axis=1) - curve.mean_return_rk[:, :3].mean(axis=1)
    assert gain_r.mean() > 15.0, gain_r
    assert gain_r.mean() > 3 * gain_r.std(ddof=1) / np.sqrt(gain_r.size), gain_r


def test_training_raises_the_exact_objective_on_frozen_lake():
    """The exact J of the network policy (the lifted table of logits on FrozenLake's model) before and
    after 20 updates of rtg+base, N = 32, Adam lr 0.1: from 0.014 (uniform) to 0.72 ± 0.15 (mean ± sd
    over 30 runs, seed 1; the lowest 0.33). 0.2 is more than 3.5 sd below the mean."""
    text = "FrozenLake-v1,is_slippery=false"
    env, policy = make_network(text, "tabular")
    model = from_gym(text)
    states = int(model.observation_s.max()) + 1
    before = objective(model, logit_jacobian(policy, states)[0])
    curve = train_network(env, policy, "rtg+base", NetworkConfig(updates=20, n=32, lr=0.1, seed=0))
    after = objective(model, logit_jacobian(curve.policies[0], states)[0])
    assert before == pytest.approx(0.01394, abs=1e-5)
    assert after > 0.2, after


def test_the_cost_is_checked_before_training(network):
    env, policy = network
    with budget.limits(seconds=1e-3), pytest.raises(budget.BudgetError) as caught:
        train_networks(env, policy, ["rtg"], NetworkConfig(updates=50, n=16))
    message = str(caught.value)
    assert message.startswith("train: 50 updates x N=16 x 1 run(s) x 1 estimator(s), up to 30 steps")
    assert "\n" not in message


def test_unsupported_baselines_are_refused_up_front(network):
    env, policy = network
    with pytest.raises(ValueError, match=r"^estimator 'rtg\+optimal': baseline 'optimal' is not supported"):
        train_networks(env, policy, ["rtg", "rtg+optimal"], NetworkConfig(updates=1, n=2))


def test_torch_threads_are_restored(network):
    env, policy = network
    before = torch.get_num_threads()
    train_network(env, policy, "rtg", NetworkConfig(updates=1, n=2, threads=1))
    assert torch.get_num_threads() == before


# -- the command -------------------------------------------------------------------------------------

CLI_ARGS = ["train", "--env", ENV, "--policy", "linear", "--N", "4", "--updates", "3"]


def test_command_trains_saves_and_prints_a_summary(tmp_path, capsys):
    out = tmp_path / "run"
    estimators = ["-e", "vanilla,rtg+base,gae0.95+value"]
    code, stdout, stderr = run([*CLI_ARGS, *estimators, "--runs", "2", "--out", str(out)], capsys)
    assert code == 0, stderr
    assert "B_simple, start" in stdout and "gae0.95+value" in stdout and "2 runs" in stdout
    assert {p.name for p in out.iterdir()} == {
        "curves.csv", "curves.parquet", "summary.json", "curves.png", "curves.svg"
    }  # fmt: skip
    with (out / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["estimator", "spec", "run", "update", "episodes", *COLUMNS]
    assert len(rows) == 3 * 2 * 3 and {row["estimator"] for row in rows} == {
        "vanilla",
        "rtg+base",
        "gae0.95+value",
    }
    assert [int(row["episodes"]) for row in rows[:3]] == [4, 8, 12]
    pyarrow = pytest.importorskip("pyarrow.parquet")
    assert pyarrow.read_table(out / "curves.parquet").column_names == list(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == ENV and summary["policy"] == "linear" and summary["parameters"] == 10
    assert summary["config"]["n"] == 4 and summary["config"]["optimizer"] == "adam"
    assert summary["config"]["lr"] == 0.01 and summary["config"]["runs"] == 2
    assert [row["estimator"] for row in summary["summary"]] == ["vanilla", "rtg+base", "gae0.95+value"]
    assert (out / "curves.png").stat().st_size > 10_000
    code, _, stderr = run([*CLI_ARGS, "-e", "rtg", "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in stderr and len(stderr.strip().splitlines()) == 1


def test_command_with_one_episode_per_update_says_why_columns_are_empty(tmp_path, capsys):
    args = ["train", "--env", ENV, "--policy", "linear", "--N", "1", "--updates", "2", "-e", "rtg"]
    code, stdout, stderr = run([*args, "--out", str(tmp_path / "one")], capsys)
    assert code == 0, stderr
    assert "N = 1: one episode per update has no variance to measure" in stdout


BAD = {
    "both mdp and env": (["--mdp", "lesson"], "--env: give --mdp or --env, not both"),
    "unknown env": (["--env", "NoSuchEnv-v0"], "env 'NoSuchEnv-v0'"),
    "bad env options": (["--env", "CartPole-v1,horizon=0"], "horizon must be a whole number >= 1"),
    "unknown policy": (["--policy", "cnn"], "policy 'cnn': unknown"),
    "tabular policy on boxes": (["--policy", "tabular"], "policy 'tabular': needs Discrete observations"),
    "theta with env": (["--theta", "uniform"], "--theta: only for a tabular MDP (--mdp), not with --env"),
    "exact reference with env": (["--no-exact-reference"], "--exact-reference/--no-exact-reference: only"),
    "baseline lr with env": (["--baseline-lr", "0.5"], "--baseline-lr: only for a tabular MDP"),
    "unsupported baseline": (["-e", "rtg+learned"], "baseline 'learned' is not supported for neural"),
    "bad optimizer": (["--optimizer", "rmsprop"], "--optimizer: unknown 'rmsprop'; use one of adam, sgd"),
    "bad lr": (["--lr", "0"], "--lr: must be a finite number > 0"),
    "bad N": (["--N", "0"], "--N: must be a whole number >= 1"),
    "bad runs": (["--runs", "0"], "--runs: must be a whole number >= 1"),
    "bad policy seed": (["--policy-seed", "-1"], "--policy-seed: must be a whole number >= 0"),
    "missing weights": (["--weights", "nowhere.pt"], "weights 'nowhere.pt': cannot read"),
    "episodes not a multiple": (["--episodes", "10"], "--episodes: 10 is not a multiple of --N 4"),
    "too much work": (
        ["--updates", "100000", "--N", "64"],
        "--updates 100000 x --N 64 x --runs 1 x 1 estimator(s)",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_code_2(case, capsys, tmp_path):
    extra, message = BAD[case]
    base = {"--env": ENV, "--policy": "linear", "-e": "rtg", "--N": "4", "--updates": "2"}
    for option in [*extra, *(["--updates"] if "--episodes" in extra else [])]:
        base.pop(option, None)  # the case's value replaces the base's
    args = ["train", *(word for pair in base.items() for word in pair), *extra]
    code, stdout, stderr = run([*args, "--out", str(tmp_path / "x")], capsys)
    assert code == 2, (stdout, stderr)
    assert message in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not (tmp_path / "x").exists()


def test_network_options_are_refused_without_env(capsys, tmp_path):
    code, _, stderr = run(["train", "--policy", "linear", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "--policy: only with --env" in stderr


def test_without_torch_the_command_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.delitem(sys.modules, "pgvar.torch.training")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, as without the extra
    code, _, stderr = run([*CLI_ARGS, "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "pip install 'pgvar[gym]'" in stderr and "torch is missing" in stderr
