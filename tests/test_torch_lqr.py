"""The LQR's closed form as ground truth for PyTorch Gaussian policies (pgvar.torch.lqr): the mapping
to the policy's parameters against finite differences of the exact objective, the bias against the
cost of the mean path, and the real pipeline (collect + episode_gradients) against the exact gradient
and objective, within bounds derived from the sample, with the power to see the mistakes it guards
against (a wrong discount, horizon, sign, bias or noise scale)."""

from __future__ import annotations

import functools
from dataclasses import replace
from statistics import NormalDist

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gym = pytest.importorskip("gymnasium")

from gymnasium import spaces  # noqa: E402
from torch import nn  # noqa: E402

import pgvar.gym  # noqa: E402, F401 (registers pgvar/LQR-v0)
from pgvar.estimators import parse_estimator  # noqa: E402
from pgvar.gym.envspec import EnvSpec, make_env  # noqa: E402
from pgvar.gym.lqr import lqr_objective  # noqa: E402
from pgvar.torch.episodes import collect  # noqa: E402
from pgvar.torch.gradients import episode_gradients, flat_parameters, parameter_layout  # noqa: E402
from pgvar.torch.lqr import (  # noqa: E402
    LQRSetting,
    exact_lqr_gradient,
    exact_lqr_objective,
    lqr_setting,
    setting_gradient,
    setting_objective,
)
from pgvar.torch.policies import DTYPE, Policy, make_policy  # noqa: E402

GAIN = [[1.0, 1.5]]  # K: stabilises the default double integrator (as in test_lqr.py)
BIAS = [1.0]
LOG_STD = float(np.log(0.5))


def _random_spec(gamma: float, horizon: int) -> EnvSpec:
    """3 states, 2 actions, correlated costs, process noise and start state, given to gym.make."""
    rng = np.random.default_rng(0)
    q, r = rng.normal(size=(3, 3)), rng.normal(size=(2, 2))
    kwargs = {
        "A": 0.4 * rng.normal(size=(3, 3)),
        "B": rng.normal(size=(3, 2)),
        "Q": q @ q.T + 0.1 * np.eye(3),
        "R": r @ r.T + 0.1 * np.eye(2),
        "W": [[0.05, 0.01, 0.0], [0.01, 0.04, 0.0], [0.0, 0.0, 0.02]],
        "Sigma0": [[1.0, 0.3, 0.0], [0.3, 0.5, 0.0], [0.0, 0.0, 2.0]],
    }
    return EnvSpec("pgvar/LQR-v0", kwargs, horizon=horizon, gamma=gamma)


def _policy(env: EnvSpec | str, seed: int = 0, *, gain=None, bias=None, log_std=None) -> Policy:
    """A ``linear`` policy for ``env``: PyTorch's initial weights, or u = -gain x + bias + σ ε."""
    made = make_env(env)
    policy = make_policy("linear", made.observation_space, made.action_space, seed=seed)
    made.close()
    with torch.no_grad():
        if gain is not None:
            policy.body.weight.copy_(-torch.tensor(gain, dtype=DTYPE))
        if bias is not None:
            policy.body.bias.copy_(torch.tensor(bias, dtype=DTYPE))
        if log_std is not None:
            policy.log_std.copy_(torch.as_tensor(log_std, dtype=DTYPE))
    return policy


def _bias_free(env: EnvSpec | str) -> Policy:
    """u = W x + σ ε: a Policy on an ``nn.Linear`` without bias."""
    made = make_env(env)
    n, m = made.observation_space.shape[0], made.action_space.shape[0]
    body = nn.Linear(n, m, bias=False, dtype=DTYPE)
    with torch.no_grad():
        body.weight.copy_(-torch.tensor(GAIN, dtype=DTYPE))
    policy = Policy("linear", made.observation_space, made.action_space, body)
    made.close()
    return policy


def _set_flat(policy: Policy, values: np.ndarray) -> None:
    torch.nn.utils.vector_to_parameters(torch.tensor(values, dtype=DTYPE), policy.parameters())


# -- the mapping, exactly ---------------------------------------------------------------------------

CASES = {  # name -> (env, policy factory)
    "default-init": ("pgvar/LQR-v0", lambda env: _policy(env, seed=0)),  # T 50, γ 1, PyTorch's init
    "stable-gamma": (
        "pgvar/LQR-v0,gamma=0.9,horizon=7,W=0.01",
        lambda env: _policy(env, gain=GAIN, bias=BIAS, log_std=[LOG_STD]),
    ),
    "random-3x2": (_random_spec(0.8, 6), lambda env: _policy(env, seed=1, log_std=[-0.5, 0.2])),
    "gamma-0": (_random_spec(0.0, 3), lambda env: _policy(env, seed=2)),
    "module-prefix": ("pgvar.gym:pgvar/LQR-v0,horizon=4", lambda env: _policy(env, seed=3)),
    "bias-free": ("pgvar/LQR-v0,gamma=0.95,horizon=10", _bias_free),
}


@pytest.mark.parametrize("case", CASES)
def test_gradient_is_the_derivative_of_the_objective_in_the_policy_parameters(case):
    """Central differences of exact_lqr_objective in the flat parameters, parameter_layout order."""
    env, factory = CASES[case]
    policy = factory(env)
    gradient = exact_lqr_gradient(policy, env)
    D = sum(size for _, size in parameter_layout(policy))
    assert gradient.shape == (D,) and gradient.dtype == np.float64
    point = flat_parameters(policy).numpy()
    step = 1e-5  # J is smooth (a polynomial in W, b and σ²): truncation ~ step², rounding ~ 1e-16 |J| / step
    finite = np.zeros(D)
    for d in range(D):
        shift = np.zeros(D)
        shift[d] = step
        _set_flat(policy, point + shift)
        high = exact_lqr_objective(policy, env)
        _set_flat(policy, point - shift)
        low = exact_lqr_objective(policy, env)
        finite[d] = (high - low) / (2 * step)
    _set_flat(policy, point)
    np.testing.assert_allclose(gradient, finite, rtol=1e-6, atol=1e-6 * np.max(np.abs(gradient)))


def _mean_path_cost(env: EnvSpec | str, gain, bias, gamma: float, horizon: int) -> float:
    """Σ_{t<T} γ^t (μ_tᵀ Q μ_t + v_tᵀ R v_t), μ_0 = 0, μ_{t+1} = A μ_t + B v_t, v_t = b - K μ_t: the
    cost of the state and action MEANS, all that a bias adds (the covariances do not depend on it)."""
    made = make_env(env)
    s = made.unwrapped.system
    made.close()
    K, b = np.asarray(gain, dtype=float), np.asarray(bias, dtype=float)
    mean, total = np.zeros(s.state_dim), 0.0
    for t in range(horizon):
        action = b - K @ mean
        total += gamma**t * (mean @ s.Q @ mean + action @ s.R @ action)
        mean = s.A @ mean + s.B @ action
    return total


@pytest.mark.parametrize("case", ["stable-gamma", "random-3x2"])
def test_a_bias_costs_its_mean_path_and_has_zero_gradient_at_zero(case):
    """J(W, b, σ) = J(W, 0, σ) - (cost of the mean path), independently of the augmented system; at
    b = 0 that cost is a quadratic form in b, so ∂J/∂b = 0 there (and not elsewhere)."""
    env, factory = CASES[case]
    policy = factory(env)
    setting, _ = lqr_setting(policy, env)
    gain, bias = -policy.body.weight.detach().numpy(), policy.body.bias.detach().numpy().copy()
    assert np.any(bias != 0)
    objective = exact_lqr_objective(policy, env)
    expected_cost = _mean_path_cost(env, gain, bias, setting.gamma, setting.horizon)
    with torch.no_grad():
        policy.body.bias.zero_()
    assert objective == pytest.approx(exact_lqr_objective(policy, env) - expected_cost, rel=1e-10)
    bias_columns = slice(sum(size for _, size in parameter_layout(policy)) - len(bias), None)
    at_zero = exact_lqr_gradient(policy, env)
    assert np.max(np.abs(at_zero[bias_columns])) <= 1e-12 * np.max(np.abs(at_zero))
    with torch.no_grad():
        policy.body.bias.copy_(torch.from_numpy(bias))
    assert np.min(np.abs(exact_lqr_gradient(policy, env)[bias_columns])) > 1e-3


def test_layout_and_the_sign_of_the_gain():
    """log_std, body.weight, body.bias: the same order as episode_gradients' columns; K = -W."""
    env = "pgvar/LQR-v0,gamma=0.9,horizon=5"
    policy = _policy(env, gain=GAIN, bias=BIAS, log_std=[LOG_STD])
    setting, note = lqr_setting(policy, env)
    assert note is None and setting.has_bias and setting.layout == tuple(parameter_layout(policy))
    assert [name for name, _ in setting.layout] == ["log_std", "body.weight", "body.bias"]
    np.testing.assert_array_equal(setting.gain, [[1.0, 1.5, -1.0]])  # K̃ = -[W | b]
    assert (setting.gamma, setting.horizon, setting.system.state_dim) == (0.9, 5, 3)
    made = make_env(env)
    plain = lqr_objective(made.unwrapped.system, GAIN, [LOG_STD], 0.9, 5)
    made.close()
    with torch.no_grad():
        policy.body.bias.zero_()
    assert exact_lqr_objective(policy, env) == pytest.approx(plain, rel=1e-12)


def test_other_policies_and_environments_get_none_and_a_reason():
    lqr = "pgvar/LQR-v0"
    made = make_env(lqr)
    bounded = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float64)  # collect would clip to it
    cases = {
        "mlp": make_policy("mlp:4", made.observation_space, made.action_space),
        "clipped": make_policy("linear", made.observation_space, bounded),
        "shape": _policy(_random_spec(0.9, 5)),
    }
    made.close()
    cartpole = make_env("CartPole-v1")
    cases["categorical"] = make_policy("linear", cartpole.observation_space, cartpole.action_space)
    cartpole.close()
    reasons = {name: lqr_setting(policy, lqr)[1] for name, policy in cases.items()}
    reasons["other-env"] = lqr_setting(_policy(lqr), "Pendulum-v1,gamma=0.9")[1]
    assert "linear policy" in reasons["mlp"]
    assert "finite bounds" in reasons["clipped"]
    assert "3 observations to 2 actions" in reasons["shape"]
    assert "Gaussian" in reasons["categorical"]
    assert "pgvar/LQR-v0" in reasons["other-env"]
    for reason in reasons.values():
        assert reason.startswith("exact LQR gradient: ") and "\n" not in reason
    assert exact_lqr_gradient(cases["mlp"], lqr) is None and exact_lqr_objective(cases["mlp"], lqr) is None
    assert exact_lqr_gradient(_policy(lqr), "Pendulum-v1") is None
    assert exact_lqr_gradient(cases["clipped"], lqr) is None


# -- the real pipeline against the closed form ------------------------------------------------------

MC = {  # name -> (env, episodes, seed): γ = 1 at the registered 50 steps; γ < 1 with a short horizon
    "gamma-1-T50": ("pgvar/LQR-v0", 4000, 11),  # where truncation cuts deep and γ^t matters
    "gamma-0.9-T5": ("pgvar/LQR-v0,gamma=0.9,horizon=5,W=0.01", 20_000, 12),
}
ESTIMATORS = ("rtg", "vanilla")
#: The chance that any comparison below fails although the pipeline is right (the episodes are
#: fixed, so this is the chance over the choice of seeds), shared out by Bonferroni over every
#: coordinate of every (case, estimator) and every objective; with ~N(0, 1) z-scores (B in the
#: thousands, the central limit), that gives one two-sided threshold.
FALSE_ALARM = 1e-3
N_COMPARISONS = len(MC) * (1 + len(ESTIMATORS) * 4)  # D = 4: log σ, W (1, 2), b
Z = NormalDist().inv_cdf(1 - FALSE_ALARM / (2 * N_COMPARISONS))  # about 4.03


@functools.cache
def _sample(case: str) -> tuple[LQRSetting, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(the setting, {"return" or estimator: (mean, standard error)}) from B episodes of the policy
    u = -GAIN x + BIAS + σ ε collected through the vector environment."""
    env, episodes, seed = MC[case]
    policy = _policy(env, gain=GAIN, bias=BIAS, log_std=[LOG_STD])
    setting, _ = lqr_setting(policy, env)
    sample = collect(env, policy, episodes, seed)
    assert sample.truncated_b.all() and not sample.terminated_b.any()
    assert (sample.lengths_b == setting.horizon).all()
    moments = {}
    returns_b = sample.rewards_bt @ (setting.gamma ** np.arange(sample.n_steps))
    for name, rows in [("return", returns_b[:, None])] + [
        (name, episode_gradients(policy, sample, parse_estimator(name)).numpy()) for name in ESTIMATORS
    ]:
        moments[name] = (rows.mean(axis=0), rows.std(axis=0, ddof=1) / np.sqrt(len(rows)))
    return setting, moments


def _z_scores(case: str, setting: LQRSetting) -> np.ndarray:
    """(MC mean - closed form) / SE for the objective and every coordinate of every estimator."""
    _, moments = _sample(case)
    exact = {"return": np.array([setting_objective(setting)])}
    exact |= dict.fromkeys(ESTIMATORS, setting_gradient(setting))
    return np.concatenate([(moments[name][0] - exact[name]) / moments[name][1] for name in moments])


@pytest.mark.parametrize("case", MC)
def test_monte_carlo_gradients_and_return_match_the_closed_form(case):
    """|mean - exact| < Z SE for the return and each coordinate of rtg and vanilla (return+none)."""
    setting, _ = _sample(case)
    z_scores = _z_scores(case, setting)
    assert z_scores.shape == (1 + len(ESTIMATORS) * 4,)
    assert np.all(np.abs(z_scores) < Z), z_scores
    # the policy exact_lqr_gradient sees is the one sampled: the public entry points agree
    policy = _policy(MC[case][0], gain=GAIN, bias=BIAS, log_std=[LOG_STD])
    np.testing.assert_array_equal(exact_lqr_gradient(policy, MC[case][0]), setting_gradient(setting))
    assert exact_lqr_objective(policy, MC[case][0]) == setting_objective(setting)


def _logvar(setting: LQRSetting) -> LQRSetting:
    return replace(setting, log_std=setting.log_std / 2)  # log_std read as log σ²


def _no_bias(setting: LQRSetting) -> LQRSetting:
    return replace(setting, gain=np.hstack([setting.gain[:, :-1], np.zeros((setting.gain.shape[0], 1))]))


WRONG = {  # case -> mistakes the comparison must see
    "gamma-0.9-T5": {
        "no discount": lambda s: replace(s, gamma=1.0),
        "horizon 4": lambda s: replace(s, horizon=4),
        "horizon 6": lambda s: replace(s, horizon=6),
        "K = +W": lambda s: replace(s, gain=-s.gain),
        "bias ignored": _no_bias,
        "log_std as log variance": _logvar,
    },
    "gamma-1-T50": {
        "K = +W": lambda s: replace(s, gain=-s.gain),
        "bias ignored": _no_bias,
        "log_std as log variance": _logvar,
        "discounted 0.99": lambda s: replace(s, gamma=0.99),
    },
}


@pytest.mark.parametrize(("case", "mistake"), [(c, m) for c, wrong in WRONG.items() for m in wrong])
def test_the_comparison_sees_a_wrong_discount_horizon_sign_bias_or_noise_scale(case, mistake):
    """The same sample rejects the closed form of a mistaken mapping (power, not just calibration)."""
    setting, _ = _sample(case)
    assert np.max(np.abs(_z_scores(case, WRONG[case][mistake](setting)))) > Z
