"""GradientMonitor: per-episode gradients against a backward loop, its estimates against a problem
whose gradient and covariance are known (tolerances derived from their sampling variance), the
two-batch estimator's moving averages, the user's own backward left alone, and one-line errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from pgvar import kpi  # noqa: E402
from pgvar.errors import SpecError  # noqa: E402
from pgvar.torch.monitor import GradientMonitor, MonitorRecord, per_episode_gradients  # noqa: E402

DTYPE = torch.float64  # float64 so the batched backward and the loop agree to 1e-6 relative


# -- a small categorical MLP policy and made-up episodes ------------------------------------------------


def _policy(seed: int = 0, activation: type[nn.Module] = nn.Tanh) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(3, 16), activation(), nn.Linear(16, 16), activation(), nn.Linear(16, 4)
    ).to(DTYPE)


def _episodes(seed: int = 1, episodes: int = 6) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(observations_t3, actions_t, psi_t) per episode, of unequal lengths."""
    generator = torch.Generator().manual_seed(seed)
    made = []
    for b in range(episodes):
        steps = 3 + 2 * b
        made.append(
            (
                torch.randn(steps, 3, generator=generator, dtype=DTYPE),
                torch.randint(0, 4, (steps,), generator=generator),
                torch.randn(steps, generator=generator, dtype=DTYPE),
            )
        )
    return made


def _episode_loss(policy: nn.Module, episode) -> torch.Tensor:
    observations_t3, actions_t, psi_t = episode
    log_pi_t = torch.distributions.Categorical(logits=policy(observations_t3)).log_prob(actions_t)
    return -(psi_t * log_pi_t).sum()


def _batch_losses(policy: nn.Module, episodes) -> torch.Tensor:
    """(B,) per-episode losses from ONE forward over all steps, summed per episode (a user's graph)."""
    observations, actions, psi = (torch.cat(parts) for parts in zip(*episodes, strict=True))
    episode_i = torch.repeat_interleave(
        torch.arange(len(episodes)), torch.tensor([len(e[1]) for e in episodes])
    )
    log_pi_i = torch.distributions.Categorical(logits=policy(observations)).log_prob(actions)
    return torch.zeros(len(episodes), dtype=DTYPE).index_add(0, episode_i, -(psi * log_pi_i))


def _loop_gradients(policy: nn.Module, episodes) -> np.ndarray:
    """(B, D) each episode's gradient from its own forward and backward."""
    rows = []
    for episode in episodes:
        policy.zero_grad()
        _episode_loss(policy, episode).backward()
        rows.append(torch.cat([p.grad.reshape(-1) for p in policy.parameters()]).numpy().copy())
    policy.zero_grad(set_to_none=True)
    return np.array(rows)


@pytest.mark.parametrize("activation", [nn.Tanh, nn.ReLU])
def test_per_episode_gradients_equal_a_backward_loop(activation):
    policy, episodes = _policy(activation=activation), _episodes()
    expected_bd = _loop_gradients(policy, episodes)
    for chunk_size in (None, 4):
        got_bd = per_episode_gradients(_batch_losses(policy, episodes), policy, chunk_size=chunk_size).numpy()
        np.testing.assert_allclose(got_bd, expected_bd, rtol=1e-6, atol=1e-9 * np.abs(expected_bd).max())


def test_the_record_is_kpi_read_off_the_loop_gradients():
    policy, episodes = _policy(), _episodes()
    gradients_bd = _loop_gradients(policy, episodes)
    record = GradientMonitor(policy, ema=0.0).update(_batch_losses(policy, episodes))
    trace = kpi.variance_trace(gradients_bd)  # B batches of one episode: tr Sigma-hat per episode
    squared_norm = kpi.squared_norm_estimate(gradients_bd.mean(axis=0), trace, len(episodes))
    assert record.trace == pytest.approx(trace, rel=1e-9)
    assert record.squared_norm == pytest.approx(squared_norm, rel=1e-9, abs=1e-12 * trace)
    assert sum(record.per_layer.values()) == pytest.approx(trace, rel=1e-9)
    assert list(record.per_layer) == [name for name, _ in policy.named_parameters()]
    assert record.episodes == len(episodes) and record.step == 0 and record.mode == "per-episode"
    if record.noise_scale is not None and record.noise_scale > 0:  # ema=0: smoothed is raw
        assert record.noise_scale == pytest.approx(trace / squared_norm)
        assert record.expected_cosine == pytest.approx(kpi.expected_cosine(record.noise_scale, len(episodes)))
        assert record.batch_for_cosine_09 == pytest.approx(kpi.batch_for_cosine(record.noise_scale, 0.9))


def test_a_gaussian_policy_and_the_loop_fallback_agree(monkeypatch):
    """A Normal head with a free log-std parameter; then the batched backward made to fail: the
    monitor warns once, loops, and reads the same numbers."""
    torch.manual_seed(3)
    mean_net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 2)).to(DTYPE)
    log_std = nn.Parameter(torch.full((2,), -0.5, dtype=DTYPE))
    parameters = {**dict(mean_net.named_parameters()), "log_std": log_std}
    observations_b53 = torch.randn(5, 7, 3, dtype=DTYPE)
    actions_b72 = torch.randn(5, 7, 2, dtype=DTYPE)

    def losses() -> torch.Tensor:
        normal = torch.distributions.Normal(mean_net(observations_b53), log_std.exp())
        return -normal.log_prob(actions_b72).sum(dim=(1, 2))

    batched = GradientMonitor(parameters, ema=0.0).update(losses())
    original = torch.autograd.grad

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("vmap: no batching rule (simulated)")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    monitor = GradientMonitor(parameters, ema=0.0, chunk_size=2)
    with pytest.warns(RuntimeWarning, match="looping over episodes") as caught:
        looped = monitor.update(losses())
    assert len(caught) == 1  # warned once although three chunks fell back
    assert monitor.batched is False  # and later updates loop without trying again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor.update(losses())
    assert looped.trace == pytest.approx(batched.trace, rel=1e-9)
    assert looped.squared_norm == pytest.approx(batched.squared_norm, rel=1e-9, abs=1e-12 * batched.trace)
    assert looped.per_layer == pytest.approx(batched.per_layer, rel=1e-9)
    assert batched.per_layer["log_std"] > 0


def test_the_users_own_backward_is_undisturbed():
    policy, episodes = _policy(), _episodes()
    _batch_losses(policy, episodes).mean().backward()
    expected = [p.grad.clone() for p in policy.parameters()]
    policy.zero_grad(set_to_none=True)

    losses_b = _batch_losses(policy, episodes)
    GradientMonitor(policy).update(losses_b)
    assert all(p.grad is None for p in policy.parameters())  # the monitor wrote no .grad
    losses_b.mean().backward()  # the graph is still there
    for got, want in zip((p.grad for p in policy.parameters()), expected, strict=True):
        assert torch.equal(got, want)


# -- a problem with known gradient and covariance: losses_b = -(theta . x_b), so g_b = -x_b -----------


def _known_problem(dimension: int = 12):
    rng = np.random.default_rng(7)
    mu_d = rng.normal(size=dimension) * 0.3
    factor_dd = rng.normal(size=(dimension, dimension)) / math.sqrt(dimension)
    sigma_dd = factor_dd @ factor_dd.T + np.diag(rng.uniform(0.2, 1.0, dimension))
    return mu_d, sigma_dd, np.linalg.cholesky(sigma_dd)


def _draw(rng: np.random.Generator, mu_d, cholesky_dd, episodes: int) -> np.ndarray:
    return mu_d + rng.normal(size=(episodes, len(mu_d))) @ cholesky_dd.T


def test_trace_and_squared_norm_within_four_standard_errors():
    mu_d, sigma_dd, cholesky_dd = _known_problem()
    episodes = 400
    x_bd = torch.tensor(_draw(np.random.default_rng(11), mu_d, cholesky_dd, episodes))
    theta_d = torch.zeros(len(mu_d), dtype=DTYPE, requires_grad=True)
    record = GradientMonitor([theta_d]).update(-(x_bd @ theta_d))

    trace, squared_norm = float(np.trace(sigma_dd)), float(mu_d @ mu_d)  # G = -mu
    trace_sq = float(np.trace(sigma_dd @ sigma_dd))
    # Gaussian x: Var tr(Sigma-hat) = 2 tr(Sigma^2) / (B - 1); the unbiased |G|^2 (mean independent
    # of the sample covariance): 2 tr(Sigma^2) / (B (B - 1)) + 4 mu' Sigma mu / B
    trace_se = math.sqrt(2 * trace_sq / (episodes - 1))
    norm_se = math.sqrt(2 * trace_sq / (episodes * (episodes - 1)) + 4 * mu_d @ sigma_dd @ mu_d / episodes)
    assert abs(record.trace - trace) < 4 * trace_se
    assert abs(record.squared_norm - squared_norm) < 4 * norm_se


def test_trace_and_squared_norm_are_unbiased_over_many_updates():
    """The mean of 300 updates' raw readings of B = 8 within 4 standard errors of the mean."""
    mu_d, sigma_dd, cholesky_dd = _known_problem()
    rng, episodes, updates = np.random.default_rng(12), 8, 300
    theta_d = torch.zeros(len(mu_d), dtype=DTYPE, requires_grad=True)
    monitor = GradientMonitor([theta_d], ema=0.9)
    for _ in range(updates):
        monitor.update(-(torch.tensor(_draw(rng, mu_d, cholesky_dd, episodes)) @ theta_d))
    trace_sq = float(np.trace(sigma_dd @ sigma_dd))
    trace_se = math.sqrt(2 * trace_sq / (episodes - 1) / updates)
    norm_se = math.sqrt(
        (2 * trace_sq / (episodes * (episodes - 1)) + 4 * mu_d @ sigma_dd @ mu_d / episodes) / updates
    )
    rows = monitor.to_rows()
    assert len(rows) == updates and rows[-1]["step"] == updates - 1
    assert abs(np.mean([r["trace"] for r in rows]) - np.trace(sigma_dd)) < 4 * trace_se
    assert abs(np.mean([r["squared_norm"] for r in rows]) - mu_d @ mu_d) < 4 * norm_se


def _ema_weight_squares(ema: float, updates: int) -> float:
    """Sum of the squared weights of a bias-corrected moving average over ``updates`` readings."""
    weights = (1 - ema) * ema ** np.arange(updates)[::-1] / (1 - ema**updates)
    return float(np.sum(weights**2))


def test_two_batch_moving_averages_converge_to_the_known_values():
    mu_d, sigma_dd, cholesky_dd = _known_problem()
    rng, small, big, updates, ema = np.random.default_rng(13), 4, 32, 800, 0.99
    monitor = GradientMonitor(ema=ema)
    for _ in range(updates):  # the small batch is the first 4 of the big one, as on one device of many
        x_bd = _draw(rng, mu_d, cholesky_dd, big)
        monitor.update_two_batches(-x_bd[:small].mean(axis=0), torch.tensor(-x_bd.mean(axis=0)), small, big)
    # one pair's variance: S = |G_s|^2 and L = |G_b|^2 are quadratic forms of the Gaussian mean vectors;
    # with nested batches Cov(G_s, G_b) = Sigma / b, so Cov(S, L) = 2 tr(Sigma^2) / b^2 + 4 mu'Sigma mu / b
    trace_sq, signal = float(np.trace(sigma_dd @ sigma_dd)), float(mu_d @ sigma_dd @ mu_d)
    var_s, var_l = (2 * trace_sq / n**2 + 4 * signal / n for n in (small, big))
    cov = 2 * trace_sq / big**2 + 4 * signal / big
    norm_var = (big**2 * var_l + small**2 * var_s - 2 * big * small * cov) / (big - small) ** 2
    trace_var = (var_s + var_l - 2 * cov) / (1 / small - 1 / big) ** 2
    shrink = _ema_weight_squares(ema, updates)  # the moving average's variance: one pair's times this
    trace_bound, norm_bound = 4 * math.sqrt(trace_var * shrink), 4 * math.sqrt(norm_var * shrink)
    trace, squared_norm = float(np.trace(sigma_dd)), float(mu_d @ mu_d)
    last = monitor.history[-1]
    assert last.mode == "two-batch" and last.episodes == big and last.per_layer == {}
    assert abs(last.smoothed_trace - trace) < trace_bound
    assert abs(last.smoothed_squared_norm - squared_norm) < norm_bound
    assert last.noise_scale == pytest.approx(last.smoothed_trace / last.smoothed_squared_norm)
    # both within their bounds, so the ratio within the ratio of the bounds' ends
    low = (trace - trace_bound) / (squared_norm + norm_bound)
    assert low < last.noise_scale < (trace + trace_bound) / (squared_norm - norm_bound)
    raw = np.array([r.noise_scale_raw or np.nan for r in monitor.history])
    assert np.nanstd(raw) > np.std([r.noise_scale for r in monitor.history[100:]])  # smoothing helps


def test_two_batch_per_layer_from_lists_and_flat_gradients():
    model = nn.Linear(3, 2)
    monitor = GradientMonitor(model, ema=0.5)
    rng = np.random.default_rng(0)
    small_g = [torch.tensor(rng.normal(size=p.shape)) for p in model.parameters()]
    big_g = [torch.tensor(rng.normal(size=p.shape)) for p in model.parameters()]
    from_lists = monitor.update_two_batches(small_g, big_g, 2, 8)
    flat = monitor.update_two_batches(
        torch.cat([g.reshape(-1) for g in small_g]), np.concatenate([g.numpy().ravel() for g in big_g]), 2, 8
    )
    assert list(from_lists.per_layer) == ["weight", "bias"]
    assert from_lists.per_layer == pytest.approx(flat.per_layer)
    assert sum(flat.per_layer.values()) == pytest.approx(flat.trace)
    norm, trace = kpi.two_batch_estimates(
        sum(float(g.square().sum()) for g in small_g), sum(float(g.square().sum()) for g in big_g), 2, 8
    )
    assert (flat.trace, flat.squared_norm) == pytest.approx((trace, norm))
    assert [r["step"] for r in monitor.to_rows()] == [0, 1]
    assert "trace[weight]" in monitor.to_rows()[0]


def test_moving_averages_are_bias_corrected_and_the_record_frozen():
    theta_d = torch.zeros(2, dtype=DTYPE, requires_grad=True)
    monitor = GradientMonitor(theta_d, ema=0.9)
    first, second = (monitor.update(-(torch.randn(3, 2, dtype=DTYPE) @ theta_d)) for _ in range(2))
    assert (first.smoothed_trace, first.smoothed_squared_norm) == (first.trace, first.squared_norm)
    assert second.smoothed_trace == pytest.approx((0.9 * first.trace + second.trace) / 1.9)
    assert second.smoothed_squared_norm == pytest.approx(
        (0.9 * first.squared_norm + second.squared_norm) / 1.9
    )
    record = second
    assert isinstance(record, MonitorRecord)
    with pytest.raises(AttributeError):
        record.trace = 0.0


# -- bad inputs: one-line SpecErrors ----------------------------------------------------------------------


def _one_line(call, match: str) -> None:
    with pytest.raises(SpecError, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)


def test_bad_inputs_give_one_line_spec_errors():
    theta_d = torch.zeros(2, dtype=DTYPE, requires_grad=True)
    monitor = GradientMonitor([theta_d])
    x_bd = torch.randn(4, 2, dtype=DTYPE)
    _one_line(lambda: monitor.update(-(x_bd @ theta_d).reshape(2, 2)), "shape")
    _one_line(lambda: monitor.update(-(x_bd[:1] @ theta_d)), "at least 2")
    _one_line(lambda: monitor.update(-(x_bd @ theta_d) * torch.tensor([1, 1, math.nan, 1])), "NaN")
    _one_line(lambda: monitor.update([1.0, 2.0]), "torch.Tensor")
    _one_line(lambda: monitor.update(torch.ones(3)), "require grad")
    _one_line(lambda: GradientMonitor().update(-(x_bd @ theta_d)), "parameters")
    _one_line(lambda: GradientMonitor(ema=1.0), "ema")
    _one_line(lambda: GradientMonitor([theta_d], chunk_size=0), "chunk_size")
    _one_line(lambda: GradientMonitor([torch.zeros(2)]), "requires grad")
    _one_line(lambda: monitor.update_two_batches(np.ones(2), np.ones(2), 8, 8), "small < big")
    _one_line(lambda: monitor.update_two_batches(np.ones(2), np.ones(3), 2, 8), "sizes differ")
    _one_line(lambda: monitor.update_two_batches(np.ones(2), np.array([1, np.inf]), 2, 8), "NaN")
    _one_line(lambda: monitor.update_two_batches(np.ones(2), np.ones(2), 0, 8), "small")

    losses_b = -(x_bd @ theta_d)
    losses_b.sum().backward()  # the graph freed before the monitor saw it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a freed graph is the user's mistake, not a reason to fall back
        _one_line(lambda: monitor.update(losses_b), "before your own")
    assert monitor.history == []


def test_the_cleanrl_style_example_runs_and_records_every_update(tmp_path):
    import csv
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "cleanrl_style_reinforce.py"
    records = tmp_path / "noise.csv"
    done = subprocess.run([sys.executable, str(script), "--updates", "3", "--episodes", "4", "--csv",
                           str(records)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    with records.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {"trace", "noise_scale", "expected_cosine"} <= set(rows[0])
    assert float(rows[-1]["trace"]) > 0
