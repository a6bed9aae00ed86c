"""The exact objective and policy gradient of a ``linear`` Gaussian policy on ``pgvar/LQR-v0``: the
LQR's closed form (``pgvar.gym.lqr``; Fazel, Ge, Kakade & Mesbahi 2018, "Global convergence of
policy gradient methods for the linear quadratic regulator", here per step of a finite horizon, with
discounting and policy noise) in the policy's own parameters, as ground truth for its Monte-Carlo
gradients.

The mapping. A ``linear`` policy (:func:`pgvar.torch.policies.make_policy`) on the LQR's float64 Box
spaces samples u = W x + b + σ ⊙ ε, ε ~ N(0, I_m), with ``body.weight`` W (m, n), ``body.bias`` b
(m,) and ``log_std`` = log σ (m,) (stored as log σ, as ``pgvar.gym.lqr`` takes it; the actions are
unbounded, so nothing clips them). The closed form is for u = -K x + σ ⊙ ε. A bias is an affine
offset, which the closed form takes through the constant state: z = (x, 1) (n + 1,) follows the LQR

    Ã = [[A, 0], [0, 1]],   B̃ = [[B], [0]],   Q̃ = [[Q, 0], [0, 0]],   R̃ = R,
    W̃ = [[W, 0], [0, 0]],   Σ̃0 = E[z_0 z_0ᵀ] = [[Sigma0, 0], [0, 1]],

under u = -K̃ z + σ ⊙ ε with K̃ = -[W | b] (m, n + 1): the same states (its last coordinate stays 1),
actions and rewards, so the same J = E[Σ_{t<T} γ^t r_t]. The closed form needs only second moments
(E[z_0 z_0ᵀ] and the noise covariances: both recursions of ``pgvar.gym.lqr`` hold for them, the
start state need not be zero-mean), so it is exact for the augmented system, and

    ∂J/∂W = -(∇_K̃ J)[:, :n],   ∂J/∂b = -(∇_K̃ J)[:, n],   ∂J/∂log σ = ∇_{log σ} J.

Without a bias (an ``nn.Linear(n, m, bias=False)`` body) the plain system is used, K = -W.

At b = 0 the bias gradient is exactly zero: the state mean μ_t = E[x_t] follows μ_0 = 0,
μ_{t+1} = (A - B K) μ_t + B b, so it is linear in b, and the covariance of x_t does not depend on b;
J = J(b = 0) - Σ_t γ^t (μ_tᵀ Q μ_t + (b - K μ_t)ᵀ R (b - K μ_t)) is its value at b = 0 minus a
quadratic form in b, whose gradient vanishes at b = 0 (the zero-mean start and the symmetric noise
make J even in b). Away from 0 it does not, and the augmented closed form gives it.

J is the environment's own objective: its rewards are r_t = -(x_tᵀ Q x_t + u_tᵀ R u_t) (a negative
cost), summed with γ^t for t < T, T the time limit (``horizon=`` or the registered 50) at which the
episode is truncated and nothing is bootstrapped, γ the ``gamma=`` of the environment spec. That is
what ``pgvar.torch.episodes.collect`` records and ``pgvar.torch.gradients.episode_gradients``
estimates (with its default ``truncation_values_b=None``); the mean of every unbiased estimator
without an entropy bonus is :func:`exact_lqr_gradient` (a bonus adds its own term, not given here).

Anything else (another environment, a categorical or MLP policy, a policy whose action space has
finite bounds, so that ``collect`` would clip its actions) gets None, and :func:`lqr_setting` says
why, in one line. Failures of the closed form itself (a closed loop that overflows over the horizon,
a horizon over the budget) raise pgvar's one-line errors, as ``pgvar.gym.lqr`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from pgvar.gym.envspec import EnvSpec, env_horizon, make_env, parse_env
from pgvar.gym.lqr import ENV_ID, LQREnv, LQRSystem, lqr_gradient, lqr_objective, lqr_system
from pgvar.torch.policies import Policy

#: The ``linear`` policy's parameters, in the names ``parameter_layout`` gives them.
LOG_STD, WEIGHT, BIAS = "log_std", "body.weight", "body.bias"


@dataclass(frozen=True, eq=False)
class LQRSetting:
    """A ``linear`` Gaussian policy on the LQR, in the closed form's terms.

    Attributes:
      system: the system the closed form is evaluated on: the environment's, or its affine
        augmentation (n + 1 states) for a policy with a bias (:func:`affine_system`).
      gain: K̃ (m, n + 1) = -[W | b] with a bias, else K = -W (m, n).
      log_std: (m,) log σ.
      gamma: the discount of the objective; horizon: T, the time limit.
      layout: (name, size) of each parameter, in ``parameter_layout`` order.
      has_bias: whether the policy has a bias (the gain's last column).
    """

    system: LQRSystem
    gain: np.ndarray
    log_std: np.ndarray
    gamma: float
    horizon: int
    layout: tuple[tuple[str, int], ...]
    has_bias: bool


def affine_system(system: LQRSystem) -> LQRSystem:
    """The LQR on z = (x, 1) (n + 1 states, m actions), so that u = W x + b + σ ε is u = -K̃ z + σ ε
    with K̃ = -[W | b]: Ã = diag(A, 1), B̃ = [B; 0], Q̃ = diag(Q, 0), W̃ = diag(W, 0) and the start's
    second moment diag(Sigma0, 1) (module docstring)."""
    n, m = system.state_dim, system.action_dim

    def padded(matrix: np.ndarray, corner: float) -> np.ndarray:
        out = np.zeros((n + 1, n + 1))
        out[:n, :n] = matrix
        out[n, n] = corner
        return out

    return lqr_system(
        A=padded(system.A, 1.0),
        B=np.vstack([system.B, np.zeros((1, m))]),
        Q=padded(system.Q, 0.0),
        R=system.R,
        W=padded(system.W, 0.0),
        Sigma0=padded(system.Sigma0, 1.0),
    )


def _policy_problem(policy: object) -> str | None:
    """Why ``policy`` is not a ``linear`` Gaussian on unbounded Box spaces, or None if it is."""
    if not isinstance(policy, Policy):
        return f"needs a pgvar.torch Policy, got {type(policy).__name__}"
    if policy.discrete or policy.obs_kind != "box":
        return "needs a Gaussian policy on Box observations and actions"
    if not isinstance(policy.body, nn.Linear):
        return f"needs a linear policy (u = W x + b + σ ε), got {policy.spec!r}"
    low, high = np.asarray(policy.action_space.low), np.asarray(policy.action_space.high)
    if not (np.all(np.isneginf(low)) and np.all(np.isposinf(high))):
        return "the policy's action space has finite bounds: collect clips to them, the closed form can't"
    names = [name for name, _ in policy.named_parameters()]
    if sorted(names) not in (sorted([LOG_STD, WEIGHT]), sorted([LOG_STD, WEIGHT, BIAS])):
        return f"needs parameters {LOG_STD}, {WEIGHT} (and {BIAS}), got {names}"
    return None


def _is_lqr_id(spec: EnvSpec) -> bool:
    """The id names the LQR (``pgvar/LQR-v0``, or ``pgvar.gym:pgvar/LQR-v0`` with its module)."""
    return spec.id.rpartition(":")[2] == ENV_ID


def lqr_setting(policy: Policy, env: EnvSpec | str) -> tuple[LQRSetting | None, str | None]:
    """(the :class:`LQRSetting` of ``policy`` on ``env``, None), or (None, one line saying why not).

    ``env`` is an :class:`EnvSpec` or its string (``pgvar/LQR-v0,gamma=0.9,horizon=20,W=0.01``); the
    system is the environment's own (``gym.make`` with the spec's options), the horizon its time limit.
    A malformed spec of the LQR itself (a bad ``A=``) raises its one-line SpecError.
    """
    problem = _policy_problem(policy)
    if problem is not None:
        return None, f"exact LQR gradient: {problem}"
    spec = env if isinstance(env, EnvSpec) else parse_env(env)
    if not _is_lqr_id(spec):
        return None, f"exact LQR gradient: needs the environment {ENV_ID}, got {spec.id!r}"
    made = make_env(spec)
    try:
        unwrapped = made.unwrapped
        if not isinstance(unwrapped, LQREnv):
            return None, f"exact LQR gradient: {spec.id!r} is not pgvar's LQREnv"
        system = unwrapped.system
    finally:
        made.close()
    n, m = system.state_dim, system.action_dim
    if (policy.n_inputs, policy.n_outputs) != (n, m):
        return None, (
            f"exact LQR gradient: the policy maps {policy.n_inputs} observations to {policy.n_outputs} "
            f"actions, the LQR has {n} states and {m} actions"
        )
    parameters = {name: value.detach().double().numpy() for name, value in policy.named_parameters()}
    has_bias = BIAS in parameters
    gain = -parameters[WEIGHT]  # u = W x + ... = -K x + ...
    if has_bias:
        gain = np.hstack([gain, -parameters[BIAS][:, None]])
        system = affine_system(system)
    layout = tuple((name, value.size) for name, value in parameters.items())
    log_std = parameters[LOG_STD].copy()
    return LQRSetting(system, gain, log_std, spec.gamma, env_horizon(spec), layout, has_bias), None


def setting_objective(setting: LQRSetting) -> float:
    """J = E[Σ_{t<T} γ^t r_t] of the setting, by ``pgvar.gym.lqr.lqr_objective``."""
    s = setting
    return lqr_objective(s.system, s.gain, s.log_std, s.gamma, s.horizon)


def setting_gradient(setting: LQRSetting) -> np.ndarray:
    """(D,) ∇J in the policy's parameters, in ``parameter_layout`` order: ``lqr_gradient``'s
    (∇_K̃ J, ∇_{log σ} J) mapped by ∂J/∂[W | b] = -∇_K̃ J (row-major W, as torch flattens it)."""
    s = setting
    grad_gain, grad_log_std = lqr_gradient(s.system, s.gain, s.log_std, s.gamma, s.horizon)
    n = grad_gain.shape[1] - int(s.has_bias)
    pieces = {LOG_STD: grad_log_std, WEIGHT: -grad_gain[:, :n]}
    if s.has_bias:
        pieces[BIAS] = -grad_gain[:, n]
    return np.concatenate([pieces[name].reshape(-1) for name, _ in s.layout])


def exact_lqr_objective(policy: Policy, env: EnvSpec | str) -> float | None:
    """The exact J = E[Σ_{t<T} γ^t r_t] (≤ 0: the rewards are negative costs) of a ``linear``
    Gaussian policy on ``pgvar/LQR-v0``; None for any other policy or environment
    (:func:`lqr_setting` says why)."""
    setting, _ = lqr_setting(policy, env)
    return None if setting is None else setting_objective(setting)


def exact_lqr_gradient(policy: Policy, env: EnvSpec | str) -> np.ndarray | None:
    """The exact ∇J (D,) float64 of a ``linear`` Gaussian policy on ``pgvar/LQR-v0`` (any system,
    γ and horizon), in ``parameter_layout(policy)`` order: the mean of ``episode_gradients``' (B, D)
    rows for every unbiased estimator without an entropy bonus. None for any other policy or
    environment (:func:`lqr_setting` says why). Closed form of Fazel et al. 2018, mapped to the
    policy's weight, bias and log σ as the module docstring derives."""
    setting, _ = lqr_setting(policy, env)
    return None if setting is None else setting_gradient(setting)
