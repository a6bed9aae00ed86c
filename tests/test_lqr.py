"""The LQR environment and its closed-form policy gradient: the gradient against finite differences
and its infinite-horizon limit, the objective against episodes of the registered environment, the
REINFORCE gradient against the closed form (which checks γ^t and the truncation), and the API."""

from __future__ import annotations

import functools
import importlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

import pgvar.gym  # noqa: E402 (after the importorskip)
from pgvar.budget import BudgetError  # noqa: E402
from pgvar.errors import SpecError  # noqa: E402
from pgvar.gym.lqr import (  # noqa: E402
    ENV_ID,
    LQRSystem,
    lqr_cost_to_go,
    lqr_gradient,
    lqr_gradient_infinite,
    lqr_objective,
    lqr_objective_infinite,
    lqr_system,
)

GAIN = np.array([[1.0, 1.5]])  # stabilises the default double integrator
LOG_STD = np.array([np.log(0.5)])


def _random_system(seed: int = 0) -> LQRSystem:
    """3 states, 2 actions, correlated costs, process noise and start state."""
    rng = np.random.default_rng(seed)
    n, m = 3, 2
    q, r = rng.normal(size=(n, n)), rng.normal(size=(m, m))
    return lqr_system(
        A=0.4 * rng.normal(size=(n, n)),
        B=rng.normal(size=(n, m)),
        Q=q @ q.T + 0.1 * np.eye(n),
        R=r @ r.T + 0.1 * np.eye(m),
        W=[[0.05, 0.01, 0.0], [0.01, 0.04, 0.0], [0.0, 0.0, 0.02]],
        Sigma0=np.diag([1.0, 0.5, 2.0]),
    )


def _random_policy(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return 0.3 * rng.normal(size=(2, 3)), np.array([-0.5, 0.2])


def _flat(gradient: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    return np.concatenate([gradient[0].ravel(), gradient[1]])


# -- the closed form ------------------------------------------------------------------------------

CASES = {  # name -> (system, K, log_std, gamma, horizon)
    "default": (lqr_system(), GAIN, LOG_STD, 0.95, 50),
    "random": (_random_system(), *_random_policy(), 0.9, 7),
    "gamma-0": (_random_system(), *_random_policy(), 0.0, 3),
    "gamma-1": (_random_system(), *_random_policy(), 1.0, 4),
    "one-step": (_random_system(), *_random_policy(), 0.7, 1),
}


def _central_difference(f, point: np.ndarray, step: float) -> np.ndarray:
    grad = np.zeros_like(point)
    for index in np.ndindex(point.shape):
        shift = np.zeros_like(point)
        shift[index] = step
        grad[index] = (f(point + shift) - f(point - shift)) / (2 * step)
    return grad


@pytest.mark.parametrize("case", CASES)
def test_gradient_matches_central_finite_differences(case):
    system, K, log_std, gamma, horizon = CASES[case]
    grad_K, grad_log_std = lqr_gradient(system, K, log_std, gamma, horizon)
    step = 1e-5  # J is a polynomial in K and σ²: truncation ~ step², rounding ~ 1e-16 |J| / step
    fd_K = _central_difference(lambda k: lqr_objective(system, k, log_std, gamma, horizon), K, step)
    fd_log_std = _central_difference(lambda s: lqr_objective(system, K, s, gamma, horizon), log_std, step)
    scale = np.max(np.abs(_flat((grad_K, grad_log_std))))
    np.testing.assert_allclose(grad_K, fd_K, rtol=1e-6, atol=1e-6 * scale)
    np.testing.assert_allclose(grad_log_std, fd_log_std, rtol=1e-6, atol=1e-6 * scale)


@pytest.mark.parametrize("case", ["default", "random"])
def test_objective_is_the_value_at_the_start_and_the_sum_of_its_steps(case):
    system, K, log_std, gamma, horizon = CASES[case]
    cost_to_go, offsets = lqr_cost_to_go(system, K, log_std, gamma, horizon)
    assert cost_to_go.shape == (horizon + 1, system.state_dim, system.state_dim)
    assert not np.any(cost_to_go[-1]) and offsets[-1] == 0.0
    objective = lqr_objective(system, K, log_std, gamma, horizon)
    assert objective == pytest.approx(-(np.sum(cost_to_go[0] * system.Sigma0) + offsets[0]), rel=1e-12)
    # the forward form: -Σ_t γ^t (tr((Q + KᵀRK) Σ_t) + tr(R D))
    closed, variances = system.A - system.B @ K, np.exp(2 * log_std)
    covariance, total = system.Sigma0, 0.0
    for t in range(horizon):
        total -= gamma**t * np.trace((system.Q + K.T @ system.R @ K) @ covariance)
        total -= gamma**t * np.sum(np.diag(system.R) * variances)
        covariance = closed @ covariance @ closed.T + system.B @ np.diag(variances) @ system.B.T + system.W
    assert objective == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("case", ["default", "random"])
def test_infinite_horizon_is_the_limit_of_the_finite_one(case):
    system, K, log_std, _, _ = CASES[case]
    gamma = 0.9
    assert lqr_objective_infinite(system, K, log_std, gamma) == pytest.approx(
        lqr_objective(system, K, log_std, gamma, 2000), rel=1e-10
    )
    np.testing.assert_allclose(
        _flat(lqr_gradient_infinite(system, K, log_std, gamma)),
        _flat(lqr_gradient(system, K, log_std, gamma, 2000)),
        rtol=1e-10,
    )


def test_infinite_horizon_refuses_an_unstable_loop_and_gamma_one():
    with pytest.raises(SpecError, match="spectral radius"):
        lqr_objective_infinite(lqr_system(), [[-5.0, 0.0]], LOG_STD, 0.99)
    with pytest.raises(SpecError, match="gamma: must be < 1"):
        lqr_gradient_infinite(lqr_system(), GAIN, LOG_STD, 1.0)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: lqr_objective(lqr_system(), [1.0, 1.5], LOG_STD, 0.9, 5), r"^K: must have shape \(1, 2\)"),
        (lambda: lqr_objective(lqr_system(), [[np.nan, 1.0]], LOG_STD, 0.9, 5), "^K: must be finite"),
        (lambda: lqr_gradient(lqr_system(), GAIN, [0.0, 0.0], 0.9, 5), r"^log_std: must have shape \(1,\)"),
        (lambda: lqr_gradient(lqr_system(), GAIN, [1e3], 0.9, 5), "^log_std: exp"),
        (lambda: lqr_gradient(lqr_system(), GAIN, LOG_STD, 1.5, 5), "^gamma: must be a finite number"),
        (lambda: lqr_objective(lqr_system(), GAIN, LOG_STD, 0.9, 0), "^horizon: must be a whole number"),
        (lambda: lqr_objective("lqr", GAIN, LOG_STD, 0.9, 5), "^system: must be an LQRSystem"),
        (
            lambda: lqr_objective(lqr_system(), [[400.0, 300.0]], LOG_STD, 1.0, 200),
            "^lqr_objective: not finite",
        ),
        (lambda: lqr_system(A=[[1.0, 0.0, 0.0]]), "^A: must be a square matrix"),
        (lambda: lqr_system(A=np.eye(3)), r"^B: must have shape \(3, m\)"),
        (lambda: lqr_system(Q=[[1.0, 2.0], [0.0, 1.0]]), "^Q: must be symmetric"),
        (lambda: lqr_system(W=-0.1), "^W: must be positive semi-definite"),
        (lambda: lqr_system(R="big"), "^R: must be an array of numbers"),
        (lambda: lqr_system(Sigma0=np.eye(3)), r"^Sigma0: must have shape \(2, 2\)"),
        (lambda: gym.make(ENV_ID, B=[[1.0], [0.0], [0.0]]), r"^B: must have shape \(2, m\)"),
    ],
)
def test_bad_inputs_raise_one_line_spec_errors(call, message):
    with pytest.raises(SpecError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_a_huge_horizon_is_refused_before_it_runs():
    with pytest.raises(BudgetError, match=r"^horizon"):
        lqr_objective(lqr_system(), GAIN, LOG_STD, 0.9, 10**12)


# -- the environment --------------------------------------------------------------------------------


def test_registered_with_a_time_limit_and_idempotently():
    spec = gym.spec(ENV_ID)
    assert spec.max_episode_steps == 50 and spec.entry_point == "pgvar.gym.lqr:LQREnv"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Gymnasium warns when an id is registered twice
        importlib.reload(pgvar.gym)
        importlib.reload(pgvar.gym)
    assert gym.spec(ENV_ID).max_episode_steps == 50


def test_importing_pgvar_gym_loads_neither_torch_nor_the_lqr_module():
    code = "import sys, pgvar.gym; print('torch' in sys.modules, 'pgvar.gym.lqr' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "False"]


def test_reset_and_step_shapes_dtypes_and_the_time_limit():
    env = gym.make(ENV_ID)
    assert env.observation_space.shape == (2,) and env.observation_space.dtype == np.float64
    assert env.action_space.shape == (1,) and env.action_space.dtype == np.float64
    observation, info = env.reset(seed=0)
    assert observation.shape == (2,) and observation.dtype == np.float64 and info == {}
    for t in range(1, 51):
        observation, reward, terminated, truncated, info = env.step(np.array([0.1]))
        assert observation.shape == (2,) and observation.dtype == np.float64
        assert isinstance(reward, float) and reward <= 0.0
        assert terminated is False
        assert truncated is (t == 50)
    env.close()


def test_system_is_set_by_make_keywords():
    env = gym.make(ENV_ID, A=np.eye(3), B=np.ones((3, 2)), R=0.5, max_episode_steps=7)
    system = env.unwrapped.system
    assert (system.state_dim, system.action_dim) == (3, 2)
    np.testing.assert_array_equal(system.R, 0.5 * np.eye(2))
    assert env.reset(seed=1)[0].shape == (3,) and env.action_space.shape == (2,)
    steps = [env.step(np.zeros(2))[3] for _ in range(7)]
    assert steps == [False] * 6 + [True]


def test_step_follows_the_dynamics_and_the_reward_exactly():
    system = _random_system()
    env = gym.make(ENV_ID, A=system.A, B=system.B, Q=system.Q, R=system.R, Sigma0=system.Sigma0)
    rng = np.random.default_rng(5)
    state = rng.normal(size=3)
    observation, _ = env.reset(options={"state": state})
    np.testing.assert_array_equal(observation, state)
    for _ in range(10):
        action = rng.normal(size=2)
        observation, reward, *_ = env.step(action)
        assert reward == pytest.approx(-(state @ system.Q @ state + action @ system.R @ action), rel=1e-14)
        state = system.A @ state + system.B @ action
        np.testing.assert_allclose(observation, state, rtol=1e-14)


def test_process_noise_has_covariance_w():
    noise = np.array([[0.02, 0.01], [0.01, 0.03]])
    env = gym.make(ENV_ID, W=noise).unwrapped
    env.reset(seed=3)
    count = 4000
    draws = np.empty((count, 2))
    for i in range(count):
        env.reset(options={"state": np.zeros(2)})
        draws[i] = env.step(np.zeros(1))[0]
    sample = draws.T @ draws / count  # the mean is known to be 0
    # Var of the (i, j) entry of a sample second moment of N(0, W): (W_ii W_jj + W_ij²) / count
    standard_errors = np.sqrt((np.outer(np.diag(noise), np.diag(noise)) + noise**2) / count)
    assert np.all(np.abs(sample - noise) < 4.5 * standard_errors)


def test_seeding_is_reproducible():
    def trajectory(seed):
        env = gym.make(ENV_ID, W=0.05)
        observations = [env.reset(seed=seed)[0]]
        observations += [env.step(np.array([0.2]))[0] for _ in range(5)]
        return np.array(observations)

    np.testing.assert_array_equal(trajectory(11), trajectory(11))
    assert not np.allclose(trajectory(11), trajectory(12))


def test_vector_environment():
    envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="sync")
    observations, _ = envs.reset(seed=0)
    assert observations.shape == (3, 2) and observations.dtype == np.float64
    for t in range(1, 51):
        observations, rewards, terminated, truncated, _ = envs.step(np.zeros((3, 1)))
        assert rewards.shape == (3,) and not terminated.any() and truncated.all() == (t == 50)
    envs.close()


# -- Monte Carlo against the closed form ------------------------------------------------------------


def test_objective_matches_episodes_of_the_environment():
    """E[Σ_t γ^t r_t] over episodes stepped through gym.make, start and process noise included."""
    sigma0, noise = [[1.0, 0.3], [0.3, 0.5]], [[0.05, 0.01], [0.01, 0.03]]
    env = gym.make(ENV_ID, Sigma0=sigma0, W=noise)
    gamma, episodes, sigma = 0.95, 1000, np.exp(LOG_STD)
    rng = np.random.default_rng(7)
    returns = np.zeros(episodes)
    for b in range(episodes):
        observation, _ = env.reset(seed=1000 + b)
        t, truncated = 0, False
        while not truncated:
            action = -GAIN @ observation + sigma * rng.standard_normal(1)
            observation, reward, terminated, truncated, _ = env.step(action)
            assert not terminated
            returns[b] += gamma**t * reward
            t += 1
        assert t == 50
    objective = lqr_objective(env.unwrapped.system, GAIN, LOG_STD, gamma, 50)
    standard_error = returns.std(ddof=1) / np.sqrt(episodes)
    assert abs(returns.mean() - objective) < 4 * standard_error


def _rollouts(
    system: LQRSystem,
    K: np.ndarray,
    log_std: np.ndarray,
    gamma: float,
    horizon: int,
    episodes: int,
    baseline: bool,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Discounted returns (B,) and REINFORCE gradients (B, D) of B episodes, D = m n + m (K row-major,
    then log σ), simulated in NumPy as the environment steps (test_step_follows_the_dynamics...).

    g = Σ_t γ^t (G_t - b_t(x_t)) ∇log π(u_t | x_t), G_t = Σ_{s≥t} γ^{s-t} r_s, with the score of
    u = -K x + σ ε: ∇_K log π = -(ε / σ) xᵀ, ∇_{log σ} log π = ε² - 1. Σ_t γ^t G_t score_t is summed
    forwards as Σ_s γ^s r_s (Σ_{t≤s} score_t). The baseline, when asked for, is the exact value
    V_t(x) = -(xᵀ P_t x + c_t): any function of (t, x_t) leaves the mean alone, this one cuts the
    variance several-fold.
    """
    n, m = system.state_dim, system.action_dim
    rng = np.random.default_rng(seed)
    sigma = np.exp(log_std)
    cost_to_go, offsets = lqr_cost_to_go(system, K, log_std, gamma, horizon)
    noise_factor = np.linalg.cholesky(system.W) if np.any(system.W) else None
    states = rng.standard_normal((episodes, n)) @ np.linalg.cholesky(system.Sigma0).T  # (B, n)
    returns_b = np.zeros(episodes)
    gradients_bD = np.zeros((episodes, m * n + m))
    scores_so_far_bD = np.zeros((episodes, m * n + m))
    for t in range(horizon):
        noise = rng.standard_normal((episodes, m))  # ε, (B, m)
        actions = -states @ K.T + sigma * noise
        rewards_b = -(np.einsum("bi,ij,bj->b", states, system.Q, states))
        rewards_b -= np.einsum("bi,ij,bj->b", actions, system.R, actions)
        score_K = -(noise / sigma)[:, :, None] * states[:, None, :]  # (B, m, n)
        scores_bD = np.concatenate([score_K.reshape(episodes, -1), noise**2 - 1], axis=1)
        scores_so_far_bD += scores_bD
        gradients_bD += gamma**t * rewards_b[:, None] * scores_so_far_bD
        if baseline:
            values_b = -(np.einsum("bi,ij,bj->b", states, cost_to_go[t], states) + offsets[t])
            gradients_bD -= gamma**t * values_b[:, None] * scores_bD
        returns_b += gamma**t * rewards_b
        states = states @ system.A.T + actions @ system.B.T
        if noise_factor is not None:
            states += rng.standard_normal((episodes, n)) @ noise_factor.T
    return returns_b, gradients_bD


MC_CASES = {  # name -> (system, K, log_std, gamma, horizon, episodes, baseline)
    "default-T50": (lqr_system(W=0.01), GAIN, LOG_STD, 0.95, 50, 60_000, True),
    "default-T5": (lqr_system(W=0.01), GAIN, LOG_STD, 0.9, 5, 200_000, True),
    "default-T5-no-baseline": (lqr_system(W=0.01), GAIN, LOG_STD, 0.9, 5, 200_000, False),
    "random-T8": (_random_system(), *_random_policy(), 0.8, 8, 60_000, True),
}


@functools.cache
def _mc(case: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Means and standard errors of the return and of the REINFORCE gradient, (1,), (D,) each."""
    returns_b, gradients_bD = _rollouts(*MC_CASES[case], seed=sorted(MC_CASES).index(case))
    count = len(returns_b)
    return (
        returns_b.mean(keepdims=True),
        returns_b.std(ddof=1, keepdims=True) / np.sqrt(count),
        gradients_bD.mean(axis=0),
        gradients_bD.std(axis=0, ddof=1) / np.sqrt(count),
    )


def _z_scores(case: str, gamma: float, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(MC − closed form) / SE for the objective and each gradient coordinate, the closed form taken
    at (gamma, horizon)."""
    system, K, log_std = MC_CASES[case][:3]
    return_mean, return_se, gradient_mean, gradient_se = _mc(case)
    exact_gradient = _flat(lqr_gradient(system, K, log_std, gamma, horizon))
    return (
        (return_mean - lqr_objective(system, K, log_std, gamma, horizon)) / return_se,
        (gradient_mean - exact_gradient) / gradient_se,
    )


@pytest.mark.parametrize("case", MC_CASES)
def test_reinforce_gradient_matches_the_closed_form(case):
    """Every coordinate within 4.5 standard errors (a false alarm in about 1e-5 per coordinate) and
    the objective within 4."""
    gamma, horizon = MC_CASES[case][3:5]
    objective_z, gradient_z = _z_scores(case, gamma, horizon)
    assert abs(objective_z[0]) < 4, objective_z
    assert np.all(np.abs(gradient_z) < 4.5), gradient_z


@pytest.mark.parametrize(
    ("case", "wrong"),
    [
        ("default-T5", {"horizon": 4}),  # truncation one step early
        ("default-T5", {"horizon": 6}),  # one step late
        ("default-T5", {"horizon": 2000}),  # no truncation
        ("default-T5", {"gamma": 1.0}),  # no discount
        ("default-T50", {"gamma": 1.0}),
        ("random-T8", {"horizon": 7}),
    ],
)
def test_the_monte_carlo_check_rejects_a_wrong_horizon_or_discount(case, wrong):
    """The comparison above has the power to see the mistakes it is there to catch."""
    settings = {"gamma": MC_CASES[case][3], "horizon": MC_CASES[case][4], **wrong}
    objective_z, gradient_z = _z_scores(case, **settings)
    assert max(abs(objective_z[0]), np.max(np.abs(gradient_z))) > 6
