"""A linear-quadratic regulator as a Gymnasium environment, and its exact policy gradient.

Ground truth for continuous actions: the environment ``pgvar/LQR-v0`` (registered on ``import
pgvar.gym``) and, in closed form, the objective and gradient of the linear Gaussian policy
u = -K x + σ ⊙ ε that a Monte-Carlo estimator run on it must reproduce (Fazel, Ge, Kakade &
Mesbahi 2018, "Global convergence of policy gradient methods for the linear quadratic regulator",
here for a finite horizon, with discounting and policy noise).

The system (n states, m actions; :class:`LQRSystem`):

    x_0 ~ N(0, Sigma0),   x_{t+1} = A x_t + B u_t + w_t,   w_t ~ N(0, W),
    r_t = -(x_tᵀ Q x_t + u_tᵀ R u_t)                        (Gymnasium maximises reward)

never terminates; the time limit T truncates it. The policy u_t = -K x_t + σ ⊙ ε_t, ε_t ~ N(0, I_m),
σ = exp(log_std), gives, with D = diag(σ²), L = A - B K and N = B D Bᵀ + W (every mean is zero):

    Σ_0 = Sigma0,   Σ_{t+1} = L Σ_t Lᵀ + N                   (state covariances)
    P_T = 0,        P_t = Q + KᵀRK + γ Lᵀ P_{t+1} L          (cost-to-go matrices)
    c_T = 0,        c_t = tr(R D) + γ tr(P_{t+1} N) + γ c_{t+1}
    J = E[Σ_{t<T} γ^t r_t] = -(tr(P_0 Sigma0) + c_0) = -Σ_{t<T} γ^t (tr((Q + KᵀRK) Σ_t) + tr(R D))

and V_t(x) = -(xᵀ P_t x + c_t). With H_t = R + γ Bᵀ P_{t+1} B (the action block of the step-t
Q-function; H_{T-1} = R since P_T = 0):

    ∇_K J       = -2 Σ_{t<T} γ^t (H_t K - γ Bᵀ P_{t+1} A) Σ_t
    ∇_{log σ} J = -2 σ² ⊙ Σ_{t<T} γ^t diag(H_t)

The first is Fazel et al.'s formula with a cost-to-go per step. The second: J depends on D only
through tr(R D) (the noise in this step's action cost) and tr(P_{t+1} B D Bᵀ) (the state perturbation
B σ ε carried into the future), both linear in D, and ∂D_ii/∂log σ_i = 2 σ_i². The infinite-horizon
versions (γ < 1) replace P_t by the solution P of P = Q + KᵀRK + γ Lᵀ P L and Σ_{t<T} γ^t Σ_t by S
with S = Sigma0 + γ L S Lᵀ + γ/(1 - γ) N, both discrete Lyapunov equations, solved here in
Kronecker form (small n only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

from pgvar import budget
from pgvar.errors import SpecError
from pgvar.validation import check_int, check_number

ENV_ID = "pgvar/LQR-v0"
MAX_EPISODE_STEPS = 50
DT = 0.1  # the default double integrator's time step

_TOLERANCE = 1e-9  # relative slack for symmetry and positive semi-definiteness


@dataclass(frozen=True, eq=False)
class LQRSystem:
    """x' = A x + B u + w, w ~ N(0, W); cost xᵀ Q x + uᵀ R u; x_0 ~ N(0, Sigma0).

    A (n, n), B (n, m), Q (n, n), R (m, m), W (n, n), Sigma0 (n, n); Q, R, W, Sigma0 symmetric
    positive semi-definite. Build one with :func:`lqr_system`, which checks all this.
    """

    A: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    W: np.ndarray
    Sigma0: np.ndarray

    @property
    def state_dim(self) -> int:
        return self.A.shape[0]

    @property
    def action_dim(self) -> int:
        return self.B.shape[1]


def _array(value: object, name: str) -> np.ndarray:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise SpecError(f"{name}: must be an array of numbers, got {value!r}") from error
    if not np.all(np.isfinite(array)):
        raise SpecError(f"{name}: must be finite, got {array.tolist()!r}")
    return array


def _matrix(value: object, name: str, shape: tuple[int, int], meaning: str) -> np.ndarray:
    array = _array(value, name)
    if array.shape != shape:
        raise SpecError(f"{name}: must have shape {shape} ({meaning}), got {array.shape}")
    return array


def _covariance(value: object | None, name: str, size: int, default: float, meaning: str) -> np.ndarray:
    """A symmetric positive semi-definite (size, size) matrix; a number c stands for c I."""
    if value is None:
        value = default
    array = _array(value, name)
    if array.ndim == 0:
        array = float(array) * np.eye(size)
    array = _matrix(array, name, (size, size), meaning)
    scale = 1.0 + float(np.max(np.abs(array)))
    if np.max(np.abs(array - array.T)) > _TOLERANCE * scale:
        raise SpecError(f"{name}: must be symmetric, got {array.tolist()!r}")
    array = 0.5 * (array + array.T)
    if np.linalg.eigvalsh(array)[0] < -_TOLERANCE * scale:
        raise SpecError(f"{name}: must be positive semi-definite, got {array.tolist()!r}")
    return array


def lqr_system(
    A: object | None = None,
    B: object | None = None,
    Q: object | None = None,
    R: object | None = None,
    W: object | None = None,
    Sigma0: object | None = None,
) -> LQRSystem:
    """The checked :class:`LQRSystem` from nested lists or arrays; one-line ``SpecError`` otherwise.

    Defaults: the double integrator with time step ``DT`` = 0.1 (position and velocity, one force),
    A = [[1, 0.1], [0, 1]], B = [[0.005], [0.1]]; Q = I, R = I, Sigma0 = I, W = 0 (no process noise:
    the start state and the policy are then the only randomness). Q, R, W and Sigma0 may be given as
    one number c, meaning c I.
    """
    A = _array([[1.0, DT], [0.0, 1.0]] if A is None else A, "A")
    if A.ndim != 2 or A.shape[0] != A.shape[1] or A.shape[0] == 0:
        raise SpecError(f"A: must be a square matrix (states × states), got shape {A.shape}")
    n = A.shape[0]
    B = _array([[0.5 * DT**2], [DT]] if B is None else B, "B")
    if B.ndim != 2 or B.shape[0] != n or B.shape[1] == 0:
        raise SpecError(f"B: must have shape ({n}, m) (states × actions, A is {n}×{n}), got {B.shape}")
    m = B.shape[1]
    return LQRSystem(
        A=A,
        B=B,
        Q=_covariance(Q, "Q", n, 1.0, "states × states"),
        R=_covariance(R, "R", m, 1.0, "actions × actions"),
        W=_covariance(W, "W", n, 0.0, "states × states"),
        Sigma0=_covariance(Sigma0, "Sigma0", n, 1.0, "states × states"),
    )


def _factor(covariance: np.ndarray) -> np.ndarray:
    """F with F Fᵀ = covariance, for a semi-definite one too (where Cholesky fails)."""
    values, vectors = np.linalg.eigh(covariance)
    return vectors * np.sqrt(np.clip(values, 0.0, None))


class LQREnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """The linear-quadratic regulator: observation x (n,), action u (m,), both float64 and unbounded.

    float64 because the observation is the state itself: a policy that reads it computes u, its score
    and the rewards from the very numbers the dynamics used, so nothing separates a Monte-Carlo
    estimate from the float64 closed form but sampling (a float32 network casts its input). Unbounded
    because a Gaussian policy's actions are: clipping them would break the closed form.

    ``gym.make("pgvar/LQR-v0", A=..., B=..., Q=..., R=..., W=..., Sigma0=...)`` sets the system
    (see :func:`lqr_system`); ``reset(options={"state": x})`` starts from a given state. Never
    terminated; the ``TimeLimit`` of the registration (``MAX_EPISODE_STEPS``) truncates. ``system``
    holds the checked matrices for :func:`lqr_objective` and :func:`lqr_gradient`.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (Gymnasium's own annotation)

    def __init__(
        self,
        A: object | None = None,
        B: object | None = None,
        Q: object | None = None,
        R: object | None = None,
        W: object | None = None,
        Sigma0: object | None = None,
        render_mode: str | None = None,
    ) -> None:
        self.system = lqr_system(A, B, Q, R, W, Sigma0)
        n, m = self.system.state_dim, self.system.action_dim
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float64)
        self.action_space = spaces.Box(-np.inf, np.inf, shape=(m,), dtype=np.float64)
        self.render_mode = render_mode
        self._start_factor = _factor(self.system.Sigma0)
        # no draw at all without process noise, so W = 0 spends no random numbers on it
        self._noise_factor = _factor(self.system.W) if np.any(self.system.W) else None
        self._state: np.ndarray | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        n = self.system.state_dim
        if options and options.get("state") is not None:
            state = _array(options["state"], "options['state']")
            if state.shape != (n,):
                raise SpecError(f"options['state']: must have shape ({n},), got {state.shape}")
        else:
            state = self._start_factor @ self.np_random.standard_normal(n)
        self._state = state
        return state.copy(), {}

    def step(self, action: object) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise gymnasium.error.ResetNeeded("call reset() before step()")
        s = self.system
        u = np.asarray(action, dtype=np.float64).reshape(-1)
        if u.shape != (s.action_dim,):
            raise SpecError(f"action: must have {s.action_dim} components, got shape {np.shape(action)}")
        x = self._state
        reward = -(x @ s.Q @ x + u @ s.R @ u)
        x_next = s.A @ x + s.B @ u
        if self._noise_factor is not None:
            x_next = x_next + self._noise_factor @ self.np_random.standard_normal(s.state_dim)
        self._state = x_next
        return x_next.copy(), float(reward), False, False, {}


def _policy(
    system: LQRSystem, K: object, log_std: object, gamma: object, horizon: object | None
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The checked (gain (m, n), variances σ² (m,), γ, T); T is 0 for the infinite horizon."""
    if not isinstance(system, LQRSystem):
        raise SpecError(
            f"system: must be an LQRSystem (lqr_system(...) or env.unwrapped.system), got {system!r}"
        )
    n, m = system.state_dim, system.action_dim
    gain = _matrix(K, "K", (m, n), "actions × states")
    log_std = _array(log_std, "log_std")
    if log_std.shape != (m,):
        raise SpecError(f"log_std: must have shape ({m},) (one per action), got {log_std.shape}")
    gamma = check_number(gamma, "gamma", low=0.0, high=1.0)
    steps = 0 if horizon is None else check_int(horizon, "horizon", low=1)
    with np.errstate(over="ignore"):
        variances = np.exp(2.0 * log_std)
    if not np.all(np.isfinite(variances)):
        raise SpecError(f"log_std: exp(2 log_std) overflows, got {log_std.tolist()!r}")
    return gain, variances, gamma, steps


def _check_horizon(system: LQRSystem, horizon: int) -> None:
    """The recursions keep 2 (T + 1) n×n matrices and make about ten small NumPy calls a step."""
    n = system.state_dim
    budget.check(
        "horizon",
        memory=16.0 * (horizon + 1) * n * n,
        seconds=horizon * (10 * budget.NUMPY_CALL_SECONDS + 10.0 * n**3 / budget.EXACT_ENTRIES_PER_SECOND),
    )


def _finite(value: np.ndarray | float, what: str) -> None:
    if not np.all(np.isfinite(value)):
        raise SpecError(f"{what}: not finite (the closed loop A - B K grows too fast for this horizon)")


def _cost_to_go(
    system: LQRSystem, gain: np.ndarray, variances: np.ndarray, gamma: float, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """P_t (T + 1, n, n) and c_t (T + 1,) backwards from P_T = 0, c_T = 0 (module docstring)."""
    s = system
    closed = s.A - s.B @ gain
    step_cost = s.Q + gain.T @ s.R @ gain
    injected = s.B @ (variances[:, None] * s.B.T) + s.W  # N = B D Bᵀ + W
    action_noise_cost = float(np.sum(np.diag(s.R) * variances))  # tr(R D)
    cost_to_go = np.zeros((horizon + 1, s.state_dim, s.state_dim))
    offsets = np.zeros(horizon + 1)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(horizon - 1, -1, -1):
            later = cost_to_go[t + 1]
            matrix = step_cost + gamma * closed.T @ later @ closed
            cost_to_go[t] = 0.5 * (matrix + matrix.T)  # symmetric up to rounding; keep it exactly so
            offsets[t] = action_noise_cost + gamma * (np.sum(later * injected) + offsets[t + 1])
    return cost_to_go, offsets


def _state_covariances(
    system: LQRSystem, gain: np.ndarray, variances: np.ndarray, horizon: int
) -> np.ndarray:
    """Σ_t = E[x_t x_tᵀ] for t < T, (T, n, n), forwards from Sigma0."""
    s = system
    closed = s.A - s.B @ gain
    injected = s.B @ (variances[:, None] * s.B.T) + s.W
    covariances = np.empty((horizon, s.state_dim, s.state_dim))
    covariances[0] = s.Sigma0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(horizon - 1):
            matrix = closed @ covariances[t] @ closed.T + injected
            covariances[t + 1] = 0.5 * (matrix + matrix.T)
    return covariances


def lqr_cost_to_go(
    system: LQRSystem, K: object, log_std: object, gamma: float, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """The exact value function of u = -K x + σ ε: V_t(x) = -(xᵀ P_t x + c_t), V_T = 0.

    K (m, n), log_std (m,); returns P (T + 1, n, n) and c (T + 1,). A state-dependent baseline
    (or critic) with no estimation error.
    """
    gain, variances, gamma, horizon = _policy(system, K, log_std, gamma, horizon)
    _check_horizon(system, horizon)
    cost_to_go, offsets = _cost_to_go(system, gain, variances, gamma, horizon)
    _finite(cost_to_go, "lqr_cost_to_go")
    return cost_to_go, offsets


def lqr_objective(system: LQRSystem, K: object, log_std: object, gamma: float, horizon: int) -> float:
    """J = E[Σ_{t<T} γ^t r_t] exactly, for u_t = -K x_t + σ ⊙ ε_t, σ = exp(log_std).

    K (m, n), log_std (m,), gamma in [0, 1], horizon T ≥ 1 (the environment's time limit).
    J = -(tr(P_0 Sigma0) + c_0); see the module docstring.
    """
    gain, variances, gamma, horizon = _policy(system, K, log_std, gamma, horizon)
    _check_horizon(system, horizon)
    cost_to_go, offsets = _cost_to_go(system, gain, variances, gamma, horizon)
    with np.errstate(over="ignore", invalid="ignore"):
        objective = -(float(np.sum(cost_to_go[0] * system.Sigma0)) + float(offsets[0]))
    _finite(objective, "lqr_objective")
    return objective


def lqr_gradient(
    system: LQRSystem, K: object, log_std: object, gamma: float, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """(∇_K J (m, n), ∇_{log σ} J (m,)) of :func:`lqr_objective`, exactly.

    ∇_K J = -2 Σ_t γ^t (H_t K - γ Bᵀ P_{t+1} A) Σ_t and ∇_{log σ} J = -2 σ² ⊙ Σ_t γ^t diag(H_t),
    H_t = R + γ Bᵀ P_{t+1} B (Fazel et al. 2018, per step of a finite horizon; module docstring).
    """
    gain, variances, gamma, horizon = _policy(system, K, log_std, gamma, horizon)
    _check_horizon(system, horizon)
    s = system
    cost_to_go, _ = _cost_to_go(s, gain, variances, gamma, horizon)
    covariances = _state_covariances(s, gain, variances, horizon)
    discounts = gamma ** np.arange(horizon, dtype=np.float64)  # 0.0 ** 0 = 1: step 0 counts at γ = 0
    with np.errstate(over="ignore", invalid="ignore"):
        b_later = s.B.T @ cost_to_go[1:]  # Bᵀ P_{t+1}, (T, m, n)
        action_block = s.R + gamma * b_later @ s.B  # H_t, (T, m, m)
        directions = action_block @ gain - gamma * b_later @ s.A  # (T, m, n)
        grad_K = -2.0 * np.einsum("t,tan,tnk->ak", discounts, directions, covariances)
        diagonals = np.diagonal(action_block, axis1=1, axis2=2)  # (T, m)
        grad_log_std = -2.0 * variances * (discounts @ diagonals)
    _finite(grad_K, "lqr_gradient")
    _finite(grad_log_std, "lqr_gradient")
    return grad_K, grad_log_std


def _lyapunov(closed: np.ndarray, constant: np.ndarray, gamma: float, name: str) -> np.ndarray:
    """X with X = constant + γ closed X closedᵀ, by vectorisation: (I - γ closed ⊗ closed) vec X =
    vec constant (row-major vec). n² unknowns: small n only."""
    n = closed.shape[0]
    budget.check_entries("state dimension (Lyapunov equation)", float(n) ** 4, passes=float(n) ** 2)
    radius = float(np.max(np.abs(np.linalg.eigvals(closed)))) * np.sqrt(gamma)
    if radius >= 1.0:
        raise SpecError(
            f"{name}: sqrt(gamma) × spectral radius of A - B K is {radius:.6g}, must be < 1 "
            "for a finite infinite-horizon objective"
        )
    system_matrix = np.eye(n * n) - gamma * np.kron(closed, closed)
    solution = np.linalg.solve(system_matrix, constant.reshape(-1)).reshape(n, n)
    return 0.5 * (solution + solution.T)


def _infinite(
    system: LQRSystem, K: object, log_std: object, gamma: float
) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, np.ndarray]:
    """(gain, σ², γ, P, N) of the infinite horizon, γ < 1."""
    gain, variances, gamma, _ = _policy(system, K, log_std, gamma, None)
    if gamma >= 1.0:
        raise SpecError(f"gamma: must be < 1 for the infinite horizon, got {gamma!r}")
    s = system
    closed = s.A - s.B @ gain
    injected = s.B @ (variances[:, None] * s.B.T) + s.W
    cost_to_go = _lyapunov(closed.T, s.Q + gain.T @ s.R @ gain, gamma, "K")
    return gain, variances, gamma, cost_to_go, injected


def lqr_objective_infinite(system: LQRSystem, K: object, log_std: object, gamma: float) -> float:
    """J = E[Σ_{t≥0} γ^t r_t], γ < 1: -(tr(P Sigma0) + (γ tr(P N) + tr(R D)) / (1 - γ)), with P the
    solution of P = Q + KᵀRK + γ Lᵀ P L. K (m, n), log_std (m,). The limit of :func:`lqr_objective`
    as the horizon grows; needs sqrt(γ) ρ(A - B K) < 1."""
    _, variances, gamma, cost_to_go, injected = _infinite(system, K, log_std, gamma)
    noise = gamma * float(np.sum(cost_to_go * injected)) + float(np.sum(np.diag(system.R) * variances))
    objective = -(float(np.sum(cost_to_go * system.Sigma0)) + noise / (1.0 - gamma))
    _finite(objective, "lqr_objective_infinite")
    return objective


def lqr_gradient_infinite(
    system: LQRSystem, K: object, log_std: object, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """(∇_K J (m, n), ∇_{log σ} J (m,)) of :func:`lqr_objective_infinite`:
    ∇_K J = -2 (H K - γ Bᵀ P A) S and ∇_{log σ} J = -2 σ² ⊙ diag(H) / (1 - γ), H = R + γ Bᵀ P B,
    S = Σ_t γ^t Σ_t the solution of S = Sigma0 + γ L S Lᵀ + γ/(1 - γ) N (Fazel et al. 2018, Lemma 1)."""
    gain, variances, gamma, cost_to_go, injected = _infinite(system, K, log_std, gamma)
    s = system
    closed = s.A - s.B @ gain
    occupancy = _lyapunov(closed, s.Sigma0 + gamma / (1.0 - gamma) * injected, gamma, "K")
    action_block = s.R + gamma * s.B.T @ cost_to_go @ s.B
    grad_K = -2.0 * (action_block @ gain - gamma * s.B.T @ cost_to_go @ s.A) @ occupancy
    grad_log_std = -2.0 * variances * np.diag(action_block) / (1.0 - gamma)
    _finite(grad_K, "lqr_gradient_infinite")
    return grad_K, grad_log_std
