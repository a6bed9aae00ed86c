"""Moves 1, 2 and 4 of the lesson, computed exactly: J, grad J and every estimator's mean and variance.

Nothing here samples. Finite-horizon MDPs are solved by backward induction over the steps t; an
unbounded episodic MDP is unrolled until the probability that the episode is still running falls
below ``tail_tol`` (the output reports that probability as the truncation bound).

Estimator moments (mean and per-parameter second moment of g = sum_t Psi_t * score_t) come either
from enumerating every state-action path (few trajectories) or from a backward recursion on the
suffix quantities of an episode, each affine in the same quantity one step later:
  Y_t = x_t + rho * Y_{t+1}               (reward-to-go; for GAE x_t = delta_t and rho = gamma * lam)
  Z_t = score_t + Z_{t+1}                 (suffix sum of scores)
  A_t = w_t * score_t + d_t x_t Z_{t+1} + e_t + A_{t+1}   (the estimator's suffix)
with w_t = c_t * Y_t - b_t(s_t). The full return is written R = sum_t gamma^t r_t so that
sum_t (R - b_t) score_t = sum_t (gamma^t G_t - b_t) score_t + sum_t gamma^t r_t Z_{t+1}; hence d_t.
e_t = beta * gamma^t * grad H[pi(.|s_t)] is the direct term of the entropy bonus. The conditional
moments E[Y^i Z^j A^k | s_t = s] of total degree <= 2 (per parameter) need only the same or lower
degrees at the next state, so one backward pass gives them all. Reward noise enters only through its
variance; running the pass again with that variance set to zero gives the sampling part of the
variance, and the difference is the reward-noise part (law of total variance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pgvar import budget
from pgvar.errors import PgvarError
from pgvar.estimators import EstimatorSpec, ResolvedEstimator, episode_gradients, score_scale_t
from pgvar.mdp import TabularMDP
from pgvar.paths import count_flow_paths, enumerate_flow_paths
from pgvar.policy import entropy_table, parameter_index, policy_table

MAX_ENUMERATED_PATHS = 20_000


@dataclass(frozen=True)
class Chain:
    """The MDP under a fixed policy, unrolled over T steps (time-augmented).

    Attributes:
      flow_tsas: (T, S, A, S) pi(a|s) * P(s'|s, a), zero in terminal states (the episode stops).
      probs_tsa: (T, S, A) pi(a|s) at step t.
      reward_tsas: (T, S, A, S) mean reward, entropy bonus beta * H(s) included.
      noise_var_sa: (S, A) variance of the reward noise.
      score_tsaD: (T, S, A, D) score e_a - pi(.|s) placed in theta's flat layout.
      entropy_grad_tsD: (T, S, D) beta * gamma^t * grad H[pi(.|s)] (the direct term of the bonus).
      tail_mass: probability that an unbounded episode is still running after T steps (0 if finite).
      lift_zD: None for the table's own parameters; for a chain lifted to another parameterisation
        (:func:`lift_chain`), the (Z, D) factor W that maps each logit-space score to its Z components,
        and D in the shapes above reads Z.
    """

    mdp: TabularMDP
    theta: np.ndarray
    beta: float
    flow_tsas: np.ndarray
    probs_tsa: np.ndarray
    reward_tsas: np.ndarray
    noise_var_sa: np.ndarray
    score_tsaD: np.ndarray
    entropy_grad_tsD: np.ndarray
    tail_mass: float
    lift_zD: np.ndarray | None = None

    @property
    def steps(self) -> int:
        return self.flow_tsas.shape[0]

    @property
    def dimension(self) -> int:
        """Components of each score: theta.size, or the rows of the lift."""
        return self.score_tsaD.shape[-1]


def unroll(
    mdp: TabularMDP, theta: np.ndarray, beta: float = 0.0, tail_tol: float = 1e-14, max_steps: int = 200_000
) -> Chain:
    """Unroll ``mdp`` under softmax(theta) into a :class:`Chain` (see its docs). Where neither the
    transitions nor the logits depend on the step, the per-step tables are one table seen T times
    (a read-only broadcast view), so memory does not grow with T."""
    n_states, n_actions, n_params = mdp.n_states, mdp.n_actions, theta.size
    if mdp.horizon is not None:
        n_steps, tail = mdp.horizon, 0.0
    else:
        n_steps, tail = _steps_until_absorbed(mdp, theta, tail_tol, max_steps)
    per_step = theta.ndim == 3 or mdp.time_dependent
    budget.check(  # the tables, and the passes over T steps that values and distributions make
        f"mdp {mdp.name!r}: its exact tables over {n_steps} steps",
        memory=8.0
        * (chain_entries(n_steps, n_states, n_actions, n_params, per_step, beta > 0) + 4.0 * n_steps),
        seconds=8.0 * n_steps * n_states * n_actions * n_states / budget.EXACT_ENTRIES_PER_SECOND
        + 5.0 * n_steps * budget.NUMPY_CALL_SECONDS,
        hint="exact results need fewer steps, states or actions",
    )
    alive_s = ~mdp.terminal_s
    tables = []  # per distinct step: flow, probabilities, rewards, scores, entropy gradient
    for t in range(n_steps if per_step else 1):
        probs_sa = policy_table(theta, mdp, t)
        entropy_s, grad_h_sa = entropy_table(theta, mdp, t)
        index_sa = parameter_index(mdp, theta.shape, t)
        score_saD = np.zeros((n_states, n_actions, n_params))
        grad_h_sD = np.zeros((n_states, n_params))
        for s in np.flatnonzero(alive_s):
            score_saD[s][:, index_sa[s]] = np.eye(n_actions) - probs_sa[s][None, :]
            grad_h_sD[s, index_sa[s]] = grad_h_sa[s]
        flow_sas = probs_sa[:, :, None] * mdp.transitions_at(t) * alive_s[:, None, None]
        reward_sas = mdp.reward_sas + beta * entropy_s[:, None, None]
        tables.append((flow_sas, probs_sa, reward_sas, score_saD, grad_h_sD))

    def over_steps(k: int) -> np.ndarray:
        if per_step:
            return np.array([table[k] for table in tables])
        return np.broadcast_to(tables[0][k], (n_steps, *tables[0][k].shape))

    discount_t = mdp.gamma ** np.arange(n_steps, dtype=float)
    if beta > 0:
        entropy_grad_tsD = beta * discount_t[:, None, None] * over_steps(4)
    else:
        entropy_grad_tsD = np.broadcast_to(np.zeros((1, n_states, n_params)), (n_steps, n_states, n_params))
    return Chain(
        mdp,
        theta,
        beta,
        over_steps(0),
        over_steps(1),
        over_steps(2),
        mdp.noise_variance_sa,
        over_steps(3),
        entropy_grad_tsD,
        tail,
    )


def chain_entries(
    steps: int, states: int, actions: int, params: int, per_step: bool = True, entropy: bool = True
) -> float:
    """Float entries an unrolled :class:`Chain` holds: the flow and rewards per (s, a, s') and the
    score per (s, a, parameter), once or per step, and the entropy term per (t, s, parameter)."""
    tables = float(steps if per_step else 1) * states * actions * (2 * states + params + 1)
    return tables + (float(steps) * states * params if entropy else 0.0)


def _steps_until_absorbed(
    mdp: TabularMDP, theta: np.ndarray, tol: float, max_steps: int
) -> tuple[int, float]:
    n_states = mdp.n_states
    budget.check_entries(f"mdp {mdp.name!r}: its transition table", 2.0 * n_states * mdp.n_actions * n_states)
    flow_ss = np.einsum("sa,sap->sp", policy_table(theta, mdp), mdp.transitions) * ~mdp.terminal_s[:, None]
    alive_s = mdp.initial_s * ~mdp.terminal_s
    # how many steps fit in the current limits, at S^2 entries and a few NumPy calls each
    per_step = n_states * n_states / budget.EXACT_ENTRIES_PER_SECOND + 2 * budget.NUMPY_CALL_SECONDS
    affordable = budget.current().seconds / per_step
    for t in range(1, max_steps + 1):
        if t > affordable:
            raise budget.BudgetError(
                f"mdp {mdp.name!r}: under this policy an episode is still running after {t - 1} steps with "
                f"probability {alive_s.sum():.2g}; following it further exceeds the work limit of "
                f"{budget.current().seconds:g} s (move the logits off the extremes, or raise --max-seconds)"
            )
        alive_s = alive_s @ flow_ss
        mass = alive_s[~mdp.terminal_s].sum()
        if mass < tol:
            return t, float(mass)
    raise PgvarError(
        f"mdp {mdp.name!r}: under this policy an episode is still running after {max_steps} steps with "
        f"probability {mass:.2g}; exact results need episodes that end (move the logits off the extremes)"
    )


# -- move 1: the objective -----------------------------------------------------------------------


def state_distribution(chain: Chain) -> np.ndarray:
    """(T + 1, S) P(s_t = s and the episode has not ended before step t); terminal states hold the
    probability of having just arrived there."""
    dist = np.zeros((chain.steps + 1, chain.mdp.n_states))
    dist[0] = chain.mdp.initial_s
    for t in range(chain.steps):
        dist[t + 1] = np.einsum("sap,s->p", chain.flow_tsas[t], dist[t])
    return dist


def values(chain: Chain) -> tuple[np.ndarray, np.ndarray]:
    """V_t(s) as (T + 1, S) and Q_t(s, a) as (T, S, A): expected discounted reward-to-go (entropy bonus
    included), zero in terminal states and after the last step."""
    mdp = chain.mdp
    value_ts = np.zeros((chain.steps + 1, mdp.n_states))
    q_tsa = np.zeros((chain.steps, mdp.n_states, mdp.n_actions))
    for t in range(chain.steps - 1, -1, -1):
        trans_sas = mdp.transitions_at(t)
        q_tsa[t] = np.einsum(
            "sap,sap->sa", trans_sas, chain.reward_tsas[t] + mdp.gamma * value_ts[t + 1][None, None, :]
        )
        q_tsa[t][mdp.terminal_s] = 0.0
        value_ts[t] = (chain.probs_tsa[t] * q_tsa[t]).sum(axis=1) * ~mdp.terminal_s
    return value_ts, q_tsa


def objective(mdp: TabularMDP, theta: np.ndarray, entropy: float = 0.0) -> float:
    """J(theta) = E[sum_t gamma^t (r_t + entropy * H[pi(.|s_t)])]."""
    if _stationary(mdp, theta):
        return _Stationary(mdp, theta, entropy).objective
    chain = unroll(mdp, theta, entropy)
    return float(mdp.initial_s @ values(chain)[0][0])


def expected_visits(mdp: TabularMDP, theta: np.ndarray) -> np.ndarray:
    """(S,) expected number of visits to each non-terminal state in one episode (undiscounted)."""
    if _stationary(mdp, theta):
        return _Stationary(mdp, theta, 0.0).visits_s
    return state_distribution(unroll(mdp, theta))[:-1].sum(axis=0) * ~mdp.terminal_s


def _stationary(mdp: TabularMDP, theta: np.ndarray) -> bool:
    """Unbounded episodes, one transition table and per-observation logits: linear solves are exact."""
    return mdp.horizon is None and not mdp.time_dependent and theta.ndim == 2


class _Stationary:
    """Values and visits of an unbounded time-homogeneous MDP under a fixed policy, by linear solves:
    V = (I - gamma P_pi)^-1 r_pi over the non-terminal states, visits = rho0 (I - P_pi)^-1."""

    def __init__(self, mdp: TabularMDP, theta: np.ndarray, beta: float) -> None:
        n_states = float(mdp.n_states)
        budget.check_entries(  # a few S x A x S products and four S^3 solves
            f"mdp {mdp.name!r}: its linear solves", 4 * n_states * mdp.n_actions * n_states, passes=n_states
        )
        probs_sa = policy_table(theta, mdp)
        entropy_s, grad_h_sa = entropy_table(theta, mdp)
        alive = ~mdp.terminal_s
        flow_ss = np.einsum("sa,sap->sp", probs_sa, mdp.transitions)[np.ix_(alive, alive)]
        reward_sa = np.einsum("sap,sap->sa", mdp.transitions, mdp.reward_sas) + beta * entropy_s[:, None]
        eye = np.eye(flow_ss.shape[0])
        system = eye - mdp.gamma * flow_ss
        if np.linalg.cond(eye - flow_ss) > 1e12:
            raise PgvarError(
                f"mdp {mdp.name!r}: under this policy episodes (almost) never end "
                "(move the logits off the extremes)"
            )
        value_s = np.zeros(mdp.n_states)
        value_s[alive] = np.linalg.solve(system, (probs_sa * reward_sa).sum(axis=1)[alive])
        self.visits_s = np.zeros(mdp.n_states)
        self.visits_s[alive] = np.linalg.solve((eye - flow_ss).T, mdp.initial_s[alive])
        discounted_s = np.zeros(mdp.n_states)
        discounted_s[alive] = np.linalg.solve(system.T, mdp.initial_s[alive])
        q_sa = reward_sa + mdp.gamma * mdp.transitions @ value_s
        # sum_a pi(a) A(a) (e_a - pi) has component pi(a') A(a'), since sum_a pi(a) A(a) = 0
        weight_sa = discounted_s[:, None] * (probs_sa * (q_sa - value_s[:, None]) + beta * grad_h_sa)
        self.gradient = np.zeros(theta.size)
        np.add.at(self.gradient, parameter_index(mdp, theta.shape, 0)[alive], weight_sa[alive])
        self.objective = float(mdp.initial_s @ value_s)


# -- move 2: the policy-gradient theorem ---------------------------------------------------------


def exact_gradient(mdp: TabularMDP, theta: np.ndarray, entropy: float = 0.0) -> np.ndarray:
    """grad J(theta), same shape as theta, by the policy-gradient theorem:
    sum_t gamma^t sum_s d_t(s) [sum_a pi(a|s) (Q_t(s,a) - V_t(s)) score(s,a) + entropy * grad H(s)]."""
    if _stationary(mdp, theta):
        return _Stationary(mdp, theta, entropy).gradient.reshape(theta.shape)
    chain = unroll(mdp, theta, entropy)
    return chain_gradient(chain).reshape(theta.shape)


def chain_gradient(chain: Chain) -> np.ndarray:
    """grad J from an unrolled chain (see :func:`exact_gradient`), flat (D,)."""
    dist_ts = state_distribution(chain)
    value_ts, q_tsa = values(chain)
    advantage_tsa = q_tsa - value_ts[:-1, :, None]
    discount_t = chain.mdp.gamma ** np.arange(chain.steps)
    weight_tsa = discount_t[:, None, None] * dist_ts[:-1, :, None] * chain.probs_tsa * advantage_tsa
    return np.einsum("tsa,tsad->d", weight_tsa, chain.score_tsaD) + np.einsum(
        "ts,tsd->d", dist_ts[:-1], chain.entropy_grad_tsD
    )


# -- move 3: baselines at their exact values ----------------------------------------------------


def resolve(chain: Chain, spec: EstimatorSpec, learned_ts: np.ndarray | None = None) -> ResolvedEstimator:
    """Turn ``spec``'s baseline into numbers: running means at their exact limits, V, the optimum, or,
    for ``learned``, the given value table ``learned_ts`` of shape (T, S) (or (T + 1, S))."""
    mdp, n_steps = chain.mdp, chain.steps
    n_states, n_actions = mdp.n_states, mdp.n_actions
    scale_t = score_scale_t(spec, mdp.gamma, n_steps)
    offsets_tsa = np.zeros((n_steps, n_states, n_actions))
    values_ts = np.zeros((n_steps + 1, n_states))
    baseline_t = None
    if spec.baseline == "none" or spec.grouped:  # a group's baseline comes from its other episodes
        pass
    elif spec.baseline in ("lesson", "running"):
        baseline_t = running_baseline_limits(chain, spec)
        if spec.weight == "gae":
            values_ts[:n_steps] = baseline_t[:, None] * ~mdp.terminal_s  # nothing follows a terminal state
        else:
            offsets_tsa[:] = (scale_t * baseline_t)[:, None, None]
    elif spec.baseline in ("value", "running-value"):  # a running V per state tends to V itself
        return value_baseline(mdp, spec, values(chain)[0])
    elif spec.baseline == "learned":
        return value_baseline(mdp, spec, learned_table(mdp, learned_ts, n_steps))
    elif chain.lift_zD is not None and spec.baseline == "optimal-per-parameter":
        raise PgvarError(
            "baseline 'optimal-per-parameter': its constants belong to the logit table; a network's "
            "exact values take the other baselines"
        )
    elif chain.lift_zD is not None:  # one constant per step, optimal for the network's parameters
        coefficient_tD = _optimal_coefficients(chain, spec)
        offsets_tsa[:] = coefficient_tD[:, :1, None]
        baseline_t = coefficient_tD[:, 0] / scale_t
    else:
        coefficient_tD = _optimal_coefficients(chain, spec)
        for t in range(n_steps):
            index_sa = parameter_index(mdp, chain.theta.shape, t)
            offsets_tsa[t] = coefficient_tD[t][index_sa]
        if spec.baseline == "optimal":
            baseline_t = coefficient_tD[:, 0] / scale_t
    return ResolvedEstimator(spec, offsets_tsa, values_ts, baseline_t)


def value_baseline(mdp: TabularMDP, spec: EstimatorSpec, value_ts: np.ndarray) -> ResolvedEstimator:
    """A state-value baseline V(t, s) from a (T + 1, S) table: subtracted from the weight, or, for
    GAE, the value function inside the TD errors."""
    n_steps = value_ts.shape[0] - 1
    offsets_tsa = np.zeros((n_steps, mdp.n_states, mdp.n_actions))
    if spec.weight == "gae":
        return ResolvedEstimator(spec, offsets_tsa, value_ts)
    scale_t = score_scale_t(spec, mdp.gamma, n_steps)
    offsets_tsa[:] = (scale_t[:, None] * value_ts[:-1])[:, :, None]
    return ResolvedEstimator(spec, offsets_tsa, np.zeros_like(value_ts))


def learned_table(mdp: TabularMDP, learned_ts: np.ndarray | None, steps: int) -> np.ndarray:
    """(steps + 1, S) a learned value table cut, or padded with its last row, to ``steps`` rows and a
    zero row after them; zero at terminal states."""
    if learned_ts is None:
        raise PgvarError("baseline 'learned': it has no exact value of its own; pass the learned table")
    learned_ts = np.asarray(learned_ts, dtype=float)
    n_states = mdp.n_states
    if learned_ts.ndim != 2 or learned_ts.shape[1] != n_states:
        raise PgvarError(f"baseline 'learned': table must have shape (T, {n_states}), got {learned_ts.shape}")
    table = np.zeros((steps + 1, n_states))
    rows = min(steps, learned_ts.shape[0])
    table[:rows] = learned_ts[:rows]
    table[rows:steps] = learned_ts[rows - 1] if rows else 0.0
    return table * ~mdp.terminal_s


def running_baseline_limits(chain: Chain, spec: EstimatorSpec) -> np.ndarray:
    """(T,) the limit of the per-step running mean: E[G_t | running at t] for ``lesson`` (and for
    ``running`` with reward-to-go weights), E[R | running at t] for ``running`` with the full return."""
    mdp = chain.mdp
    dist_ts = state_distribution(chain)[:-1] * ~mdp.terminal_s
    alive_t = dist_ts.sum(axis=1)
    value_ts = values(chain)[0][:-1]
    expected_t = (dist_ts * value_ts).sum(axis=1)
    if spec.weight == "return" and spec.baseline == "running":
        past_t = _past_reward(chain, dist_ts)
        expected_t = past_t + mdp.gamma ** np.arange(chain.steps) * expected_t
    return np.divide(expected_t, alive_t, out=np.zeros_like(expected_t), where=alive_t > 0)


def _past_reward(chain: Chain, dist_ts: np.ndarray) -> np.ndarray:
    """(T,) E[sum_{k<t} gamma^k r_k ; running at t]."""
    mdp = chain.mdp
    past_s = np.zeros(mdp.n_states)
    out = np.zeros(chain.steps)
    full = state_distribution(chain)
    for t in range(chain.steps):
        out[t] = past_s[~mdp.terminal_s].sum()
        flow = chain.flow_tsas[t]
        past_s = np.einsum("sap,s->p", flow, past_s) + mdp.gamma**t * np.einsum(
            "sap,s,sap->p", flow, full[t], chain.reward_tsas[t]
        )
    return out


# -- move 4: exact moments ---------------------------------------------------------------------


@dataclass(frozen=True)
class ExactMoments:
    """Exact single-episode moments of an estimator.

    Attributes:
      mean: (D,) E[g] (equals grad J for every unbiased estimator).
      variance: (D,) Var[g_i] per parameter.
      variance_trace: sum of ``variance``: the expected squared distance of g from its mean.
      reward_noise: the part of the trace due to reward noise, E[Var(g | states, actions)].
      sampling: the part due to sampling actions and transitions, Var(E[g | states, actions]).
      method: "enumeration" or "recursion"; for group baselines "pairs", "recursion", "tuples" or
        "monte-carlo" (``pgvar.groups``).
      tail_mass: probability mass of episodes longer than the unrolled horizon (0 when exact).
      baseline_t: per-step baseline constants where the estimator has them, else None.
      covariance: (D, D) the full covariance of g, from enumeration (None from the recursion, which
        tracks each parameter's variance only).
      variance_ci95: the 95% interval of ``variance_trace`` where it was estimated by sampling
        (method "monte-carlo", group baselines only), else None; ``mean_standard_error`` (D,) likewise.

    For a group baseline (``pgvar.groups``), ``variance`` is K times the variance of a group's mean
    gradient, so a batch of N episodes has ``variance_trace / N`` as every other estimator.
    """

    spec: EstimatorSpec
    mean: np.ndarray
    variance: np.ndarray
    variance_trace: float
    reward_noise: float
    sampling: float
    method: str
    steps: int
    tail_mass: float
    baseline_t: np.ndarray | None
    covariance: np.ndarray | None = None
    variance_ci95: tuple[float, float] | None = None
    mean_standard_error: np.ndarray | None = None


def exact_moments(
    mdp: TabularMDP,
    theta: np.ndarray,
    spec: EstimatorSpec,
    method: str = "auto",
    chain: Chain | None = None,
    learned_ts: np.ndarray | None = None,
) -> ExactMoments:
    """Exact mean and variance of ``spec``'s single-episode gradient estimate at ``theta``
    (``learned_ts``: the value table of a ``learned`` baseline)."""
    chain = chain if chain is not None else unroll(mdp, theta, spec.entropy)
    if chain.beta != spec.entropy:
        raise PgvarError("exact_moments: the chain was unrolled with another entropy coefficient")
    if spec.grouped:  # groups of K episodes per start state: pgvar.groups
        from pgvar.groups import group_moments

        return group_moments(mdp, theta, spec, "auto" if method == "enumeration" else method, chain)
    estimator = resolve(chain, spec, learned_ts)
    if method not in ("auto", "enumeration", "recursion"):
        raise PgvarError(f"method: unknown {method!r}; use auto, enumeration or recursion")
    n_paths = count_paths(chain) if method != "recursion" else 0
    if method == "enumeration" and n_paths > MAX_ENUMERATED_PATHS:
        unbounded = " (episodes without a horizon have no end to their paths)" if chain.tail_mass > 0 else ""
        raise PgvarError(
            f"method: enumeration lists at most {MAX_ENUMERATED_PATHS:,} paths and this MDP has more"
            f"{unbounded}; use recursion or auto"
        )
    if method == "auto":  # enumeration, the independent check, where the paths are few and it is affordable
        affordable = (
            _enumeration_work(chain, n_paths) <= budget.current().seconds * budget.EXACT_ENTRIES_PER_SECOND
        )
        method = "enumeration" if n_paths <= MAX_ENUMERATED_PATHS and affordable else "recursion"
    _check_moments_work(chain, method, n_paths)
    covariance = None
    if method == "enumeration":
        mean, second_DD, second_no_noise_DD = _enumerate_moments(chain, estimator)
        covariance = second_DD - np.outer(mean, mean)
        second, second_no_noise = np.diag(second_DD), np.diag(second_no_noise_DD)
    elif method == "recursion":
        mean, second = _recursion_moments(chain, estimator, noise=True)
        second_no_noise = (
            _recursion_moments(chain, estimator, noise=False)[1] if chain.noise_var_sa.any() else second
        )
    variance = np.maximum(second - mean**2, 0.0)
    total = float(variance.sum())
    sampling = float(np.maximum(second_no_noise - mean**2, 0.0).sum())
    return ExactMoments(
        spec,
        mean,
        variance,
        total,
        max(total - sampling, 0.0),
        sampling,
        method,
        chain.steps,
        chain.tail_mass,
        estimator.baseline_t,
        covariance,
    )


# -- lifted to a network's parameters ---------------------------------------------------------------


def lift_chain(chain: Chain, factor_zD: np.ndarray) -> Chain:
    """The chain with every score (and entropy term) x replaced by W x, W = ``factor_zD`` (Z, D).

    Each estimator is a sum of terms Psi_t score_t, linear in the score, so the moments of the
    lifted chain are the moments of W g: with W'W = J J' for a Jacobian J (D, P) of the logits with
    respect to a network's parameters, |W (g - E g)|^2 = |J'(g - E g)|^2, and the lifted variance
    trace is the network's. Per-step tables that are one table seen T times stay so."""
    factor_zD = np.asarray(factor_zD, dtype=float)
    if factor_zD.ndim != 2 or factor_zD.shape[1] != chain.dimension or chain.lift_zD is not None:
        raise PgvarError(f"lift: the factor must be (Z, {chain.dimension}) and the chain not lifted yet")

    def lifted(table: np.ndarray) -> np.ndarray:
        if table.strides[0] == 0:  # a broadcast over steps: lift its one table
            return np.broadcast_to(table[0] @ factor_zD.T, (*table.shape[:-1], factor_zD.shape[0]))
        return table @ factor_zD.T

    return replace(
        chain,
        score_tsaD=lifted(chain.score_tsaD),
        entropy_grad_tsD=lifted(chain.entropy_grad_tsD),
        lift_zD=factor_zD,
    )


@dataclass(frozen=True)
class LiftedMoments:
    """Exact single-episode moments of an estimator for a network whose logits on every observation
    are ``theta``, in the network's own parameters.

    Attributes:
      mean: (P,) E[g] = J' E[g_logits] (the policy gradient for every unbiased estimator).
      variance_trace: tr Cov(g) = E |J'(g_logits - E g_logits)|^2.
      block_traces: (N,) the share of each parameter tensor (``block_sizes``), summing to the trace.
    """

    spec: EstimatorSpec
    mean: np.ndarray
    variance_trace: float
    block_traces: np.ndarray
    method: str
    steps: int
    tail_mass: float


def lifted_moments(
    mdp: TabularMDP,
    theta: np.ndarray,
    spec: EstimatorSpec,
    jacobian_dP: np.ndarray,
    block_sizes: Sequence[int],
    method: str = "auto",
) -> LiftedMoments:
    """Exact mean and variance of ``spec``'s estimate for a network with one-hot observations.

    Each episode's gradient in the network's P parameters is J' g, g its gradient in the logits of
    every observation and J = d theta / d params (D, P) (``jacobian_dP``, columns grouped into
    parameter tensors of ``block_sizes``). So the exact engine lifts to any network: the mean is
    J' E[g] and the covariance J' Cov(g) J. Its trace, per tensor n, is the variance of R_n g with
    R_n the triangular factor of J_n' (|R_n x| = |J_n' x|), at most D components each: the moment
    recursion runs once on the stacked factors and the identity (which gives E[g]).
    """
    theta = np.asarray(theta, dtype=float)
    jacobian_dP = np.asarray(jacobian_dP, dtype=float)
    n_logits = theta.size
    if jacobian_dP.ndim != 2 or jacobian_dP.shape[0] != n_logits:
        raise PgvarError(f"lift: the Jacobian must have {n_logits} rows, got {jacobian_dP.shape}")
    if sum(block_sizes) != jacobian_dP.shape[1] or min(block_sizes, default=0) < 1:
        raise PgvarError(f"lift: block sizes {list(block_sizes)} must add up to {jacobian_dP.shape[1]}")
    if not np.isfinite(jacobian_dP).all():
        raise PgvarError("lift: the Jacobian has non-finite entries")
    blocks = np.split(jacobian_dP, np.cumsum(block_sizes)[:-1], axis=1)
    components = sum(min(block.shape[1], n_logits) for block in blocks) + n_logits
    budget.check(
        f"lift: {len(blocks)} parameter tensors into {components} components",
        memory=8.0 * components * (n_logits + 2 * mdp.n_states * mdp.n_actions),
        seconds=float(jacobian_dP.size) * n_logits / budget.EXACT_ENTRIES_PER_SECOND,
    )
    factors = [np.linalg.qr(block.T, mode="r") for block in blocks]
    factor_zD = np.vstack([*factors, np.eye(n_logits)])
    chain = lift_chain(unroll(mdp, theta, spec.entropy), factor_zD)
    moments = exact_moments(mdp, theta, spec, method, chain=chain)
    ends = np.cumsum([factor.shape[0] for factor in factors])
    block_traces = np.array([part.sum() for part in np.split(moments.variance[: ends[-1]], ends[:-1])])
    return LiftedMoments(
        spec,
        jacobian_dP.T @ moments.mean[ends[-1] :],
        float(block_traces.sum()),
        block_traces,
        moments.method,
        moments.steps,
        moments.tail_mass,
    )


def _enumeration_work(chain: Chain, paths: int) -> float:
    """Entries the enumeration touches: the estimator on every path once per step's noise (T + 1
    times), and the D x D second moments summed over the paths (T + 1 times)."""
    steps, params = chain.steps, float(chain.dimension)
    return (steps + 1.0) * paths * (steps * chain.mdp.n_actions * 4 + params + params * params)


def _recursion_work(chain: Chain) -> float:
    """Entries the recursion touches: about 30 contractions of (S, A, S) with (S, D) per step, twice
    (with and without the reward noise)."""
    mdp = chain.mdp
    return 60.0 * chain.steps * mdp.n_states * mdp.n_actions * mdp.n_states * chain.dimension


def moments_refused(mdp: TabularMDP, theta: np.ndarray) -> str | None:
    """Why exact moments of one estimator would exceed the current limits, judged before anything is
    unrolled (None when they may fit): the recursion's work over the horizon, unless the paths are few
    enough to enumerate. For unbounded episodes the horizon is not known yet: None."""
    if mdp.horizon is None:
        return None
    steps, states, actions = float(mdp.horizon), float(mdp.n_states), float(mdp.n_actions)
    recursion = 60.0 * steps * states * actions * states * theta.size
    if recursion <= budget.current().seconds * budget.EXACT_ENTRIES_PER_SECOND:
        return None
    if mdp.horizon <= 64:  # few paths (counted over any action: an upper bound) can be enumerated

        class Flow:  # one step's table at a time
            def __len__(self) -> int:
                return mdp.horizon

            def __getitem__(self, t: int) -> np.ndarray:
                return mdp.transitions_at(t) * ~mdp.terminal_s[:, None, None]

        if (
            count_flow_paths(mdp.initial_s, Flow(), mdp.terminal_s, MAX_ENUMERATED_PATHS)
            <= MAX_ENUMERATED_PATHS
        ):
            return None
    seconds = recursion / budget.EXACT_ENTRIES_PER_SECOND
    return (
        f"mdp {mdp.name!r}: exact moments need about {seconds:,.3g} s of work, over the limit of "
        f"{budget.current().seconds:g} s"
    )


def _check_moments_work(chain: Chain, method: str, paths: int) -> None:
    mdp, params = chain.mdp, float(chain.dimension)
    if method == "enumeration":
        work, memory = (
            _enumeration_work(chain, paths),
            8.0 * (paths * (chain.steps * mdp.n_actions + params) + 3 * params**2),
        )
    else:
        work, memory = _recursion_work(chain), 8.0 * 20 * mdp.n_states * mdp.n_actions * params
    calls = 2 * 50.0 * chain.steps if method == "recursion" else 0.0  # NumPy calls of the two passes
    budget.check(
        f"mdp {mdp.name!r}: exact moments by {method}",
        memory=memory,
        seconds=work / budget.EXACT_ENTRIES_PER_SECOND + calls * budget.NUMPY_CALL_SECONDS,
        hint="measure the variance by sampling (pgvar variance) instead",
    )


def _coefficients(chain: Chain, spec: EstimatorSpec, values_ts: np.ndarray):
    """x_t's mean (T, S, A, S), rho, c_t, d_t of the recursion for this weight."""
    mdp, n_steps = chain.mdp, chain.steps
    gamma = mdp.gamma
    c_t = score_scale_t(spec, gamma, n_steps)
    d_t = np.zeros(n_steps)
    x_tsas = chain.reward_tsas
    rho = gamma
    if spec.weight == "return":
        c_t = gamma ** np.arange(n_steps, dtype=float)
        d_t = c_t.copy()
    elif spec.weight == "gae":
        rho = gamma * spec.lam
        x_tsas = chain.reward_tsas + gamma * values_ts[1:, None, None, :] - values_ts[:-1, :, None, None]
    return x_tsas, rho, c_t, d_t


class _StepSums:
    """Expectations over (a, s') given s at one step, for a per-(s, a, s') factor k (or a scalar):
    t1: E[k score], t2: E[k m(s')], t3: E[k score * m(s')], t4: E[k score^2]; each (S, D). Written as
    sums over s' first and matrix products after, so the work is S A S + S A D (S S D in BLAS for
    t2, S A S D for t3) rather than S A S D element by element."""

    def __init__(self, flow: np.ndarray, score: np.ndarray) -> None:
        self.flow = flow  # (S, A, S)
        self.score = score  # (S, A, D)
        self.score_squared = score**2

    def t1(self, k):
        return np.einsum("sa,sad->sd", (self.flow * k).sum(axis=2), self.score)

    def t2(self, k, m):
        return (self.flow * k).sum(axis=1) @ m

    def t3(self, k, m):
        n_states, n_actions, _ = self.flow.shape
        following_sad = ((self.flow * k).reshape(n_states * n_actions, -1) @ m).reshape(
            n_states, n_actions, -1
        )
        return np.einsum("sad,sad->sd", following_sad, self.score)

    def t4(self, k):
        return np.einsum("sa,sad->sd", (self.flow * k).sum(axis=2), self.score_squared)

    def all(self):
        return self.t1, self.t2, self.t3, self.t4


def _backward(chain: Chain, estimator: ResolvedEstimator, noise: bool, keep_for_optimum: bool = False):
    """One backward pass; returns the moments at t = 0 per state and, optionally, per-step terms."""
    mdp, n_steps = chain.mdp, chain.steps
    n_states, n_params = mdp.n_states, chain.dimension
    x_tsas, rho, c_t, d_t = _coefficients(chain, estimator.spec, estimator.values_ts)
    noise_var_sa = chain.noise_var_sa if noise else np.zeros_like(chain.noise_var_sa)
    zeros_s, zeros_sD = np.zeros(n_states), np.zeros((n_states, n_params))
    mY, mYY = zeros_s, zeros_s
    mZ = mZZ = mYZ = mA = mYA = mZA = mAA = zeros_sD
    kept = []
    for t in range(n_steps - 1, -1, -1):
        flow, mu, score = chain.flow_tsas[t], x_tsas[t], chain.score_tsaD[t]
        offsets_sD = _dense_offsets(chain, estimator, t)
        c, d = c_t[t], d_t[t]
        ex2 = mu**2 + noise_var_sa[:, :, None]
        q1 = mu + rho * mY[None, None, :]
        q2 = ex2 + 2 * rho * mu * mY[None, None, :] + rho**2 * mYY[None, None, :]
        t1, t2, t3, t4 = _StepSums(flow, score).all()
        one = 1.0
        b = offsets_sD
        eY = (flow * q1).sum(axis=(1, 2))
        eYY = (flow * q2).sum(axis=(1, 2))
        eZ = t1(one) + t2(one, mZ)
        eZZ = t4(one) + 2 * t3(one, mZ) + t2(one, mZZ)
        eYZ = t1(q1) + t2(mu, mZ) + rho * t2(one, mYZ)
        t3_1_mA = t3(one, mA)
        eA0 = c * t1(q1) - b * t1(one) + d * t2(mu, mZ) + t2(one, mA)
        eYA0 = (
            c * t1(q2) - b * t1(q1) + d * (t2(ex2, mZ) + rho * t2(mu, mYZ)) + t2(mu, mA) + rho * t2(one, mYA)
        )
        eZA0 = (
            c * t4(q1)
            - b * t4(one)
            + d * t3(mu, mZ)
            + t3_1_mA
            + c * t3(mu, mZ)
            + c * rho * t3(one, mYZ)
            - b * t3(one, mZ)
            + d * t2(mu, mZZ)
            + t2(one, mZA)
        )
        eAA0 = (
            c**2 * t4(q2)
            - 2 * c * b * t4(q1)
            + b**2 * t4(one)
            + d**2 * t2(ex2, mZZ)
            + t2(one, mAA)
            + 2 * d * (c * (t3(ex2, mZ) + rho * t3(mu, mYZ)) - b * t3(mu, mZ))
            + 2 * (c * (t3(mu, mA) + rho * t3(one, mYA)) - b * t3_1_mA)
            + 2 * d * t2(mu, mZA)
        )
        if keep_for_optimum:
            kept.append((t1(q1), t4(one) + t3(one, mZ), c * t4(q1) + d * t3(mu, mZ) + t3_1_mA, t4(one)))
        e = chain.entropy_grad_tsD[t]
        mY, mYY, mZ, mZZ, mYZ = eY, eYY, eZ, eZZ, eYZ
        mA, mYA, mZA, mAA = eA0 + e, eYA0 + e * eY[:, None], eZA0 + e * eZ, eAA0 + 2 * e * eA0 + e**2
    return mA, mAA, kept[::-1]


def _dense_offsets(chain: Chain, estimator: ResolvedEstimator, t: int) -> np.ndarray:
    """(S, D) the baseline offsets of step t placed where each state's scores live (in a lifted chain
    every component carries its state's score, so a baseline per state covers them all)."""
    mdp = chain.mdp
    if chain.lift_zD is not None:
        return np.broadcast_to(estimator.offsets_tsa[t][:, :1], (mdp.n_states, chain.dimension))
    index_sa = parameter_index(mdp, chain.theta.shape, t)
    dense = np.zeros((mdp.n_states, chain.theta.size))
    np.put_along_axis(dense, index_sa, estimator.offsets_tsa[t], axis=1)
    return dense


def _recursion_moments(chain: Chain, estimator: ResolvedEstimator, noise: bool):
    mA, mAA, _ = _backward(chain, estimator, noise)
    start_s = chain.mdp.initial_s
    return start_s @ mA, start_s @ mAA


def optimal_constants(chain: Chain, spec: EstimatorSpec) -> np.ndarray:
    """(T,) the variance-minimising constant baseline b*_t for ``spec``'s weight, in the units of G_t
    (or R for the full return): b*_t = E[|score_t|^2 Psi_t] / E[|score_t|^2] plus cross-step terms."""
    optimal = replace(spec, baseline="optimal", name="")
    scale_t = score_scale_t(optimal, chain.mdp.gamma, chain.steps)
    return _optimal_coefficients(chain, optimal)[:, 0] / scale_t


def _optimal_coefficients(chain: Chain, spec: EstimatorSpec) -> np.ndarray:
    """(T, D) the variance-minimising amount to subtract from step t's weight, per parameter
    (``optimal-per-parameter``) or one number per step broadcast over D (``optimal``):
    b*_t = E[score_t . g0] / E[|score_t|^2], g0 the estimator without baseline (cross-step terms of
    the scores have zero mean, so the steps decouple)."""
    numerator_tD, denominator_tD, _ = score_products(chain, spec, chain.mdp.initial_s)
    if spec.baseline == "optimal":
        numerator_t, denominator_t = numerator_tD.sum(axis=1), denominator_tD.sum(axis=1)
        safe_t = np.where(denominator_t > 0, denominator_t, 1.0)
        return np.broadcast_to(
            np.where(denominator_t > 0, numerator_t / safe_t, 0.0)[:, None], numerator_tD.shape
        )
    return np.divide(
        numerator_tD, denominator_tD, out=np.zeros_like(numerator_tD), where=denominator_tD > 1e-300
    )


def score_products(
    chain: Chain, spec: EstimatorSpec, initial_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per step t and parameter, for episodes started from ``initial_s`` with ``spec``'s weight and no
    baseline (g0): E[score_t * g0], E[score_t^2] and E[score_t * G_t], each (T, D), elementwise over
    the parameters (the baseline's own terms: Greensmith, Bartlett & Baxter 2004)."""
    mdp, n_steps, n_params = chain.mdp, chain.steps, chain.dimension
    zero = ResolvedEstimator(
        spec, np.zeros((n_steps, mdp.n_states, mdp.n_actions)), np.zeros((n_steps + 1, mdp.n_states))
    )
    _, _, kept = _backward(chain, zero, noise=True, keep_for_optimum=True)
    x_tsas, rho, c_t, d_t = _coefficients(chain, spec, zero.values_ts)
    dist_s = np.asarray(initial_s, dtype=float).copy()
    forward_sD = np.zeros((mdp.n_states, n_params))  # E[sum_{u<t} c_u rho^(t-u) score_u ; s_t = s]
    past_s = np.zeros(mdp.n_states)  # E[sum_{u<t} d_u x_u ; s_t = s]
    numerator_tD, denominator_tD, reward_to_go_tD = (np.zeros((n_steps, n_params)) for _ in range(3))
    for t in range(n_steps):
        score_y, score_score_z, score_a, score_sq = kept[t]
        numerator_tD[t] = (
            forward_sD * score_y + past_s[:, None] * score_score_z + dist_s[:, None] * score_a
        ).sum(0)
        denominator_tD[t] = (dist_s[:, None] * score_sq).sum(0)
        reward_to_go_tD[t] = dist_s @ score_y
        flow = chain.flow_tsas[t]
        forward_sD = rho * (
            np.einsum("sap,sd->pd", flow, forward_sD)
            + c_t[t] * np.einsum("sap,s,sad->pd", flow, dist_s, chain.score_tsaD[t])
        )
        past_s = np.einsum("sap,s->p", flow, past_s) + d_t[t] * np.einsum(
            "sap,s,sap->p", flow, dist_s, x_tsas[t]
        )
        dist_s = np.einsum("sap,s->p", flow, dist_s)
    return numerator_tD, denominator_tD, reward_to_go_tD


# -- enumeration: the independent check ---------------------------------------------------------


def count_paths(chain: Chain) -> int:
    """Number of state-action paths with positive probability (stops counting past the limit)."""
    if chain.tail_mass > 0:
        return MAX_ENUMERATED_PATHS + 1
    return count_flow_paths(chain.mdp.initial_s, chain.flow_tsas, chain.mdp.terminal_s, MAX_ENUMERATED_PATHS)


def enumerate_paths(chain: Chain):
    """Every path with positive probability, padded to T steps.

    Returns (prob_b, states_tb, actions_tb, next_tb, alive_tb)."""
    return enumerate_flow_paths(chain.mdp.initial_s, chain.flow_tsas, chain.mdp.terminal_s)


def _enumerate_moments(chain: Chain, estimator: ResolvedEstimator):
    """Mean (D,), second-moment matrix (D, D), and the same without reward noise, by enumerating
    every path.

    g is affine in the rewards, so E[g g^T | path] = g g^T (at the mean rewards) + sum_k Var(eps_k)
    h_k h_k^T with h_k = g(rewards + e_k) - g(rewards)."""
    mdp = chain.mdp
    prob_b, states_tb, actions_tb, next_tb, alive_tb = enumerate_paths(chain)
    base_rewards_tb = mdp.reward_sas[states_tb, actions_tb, next_tb]
    noise_var_tb = np.where(alive_tb, chain.noise_var_sa[states_tb, actions_tb], 0.0)

    def grads(rewards_tb):
        return episode_gradients(mdp, chain.theta, estimator, states_tb, actions_tb, rewards_tb, alive_tb)

    if chain.lift_zD is not None:
        logit_grads, lift_zD = grads, chain.lift_zD

        def grads(rewards_tb):
            return logit_grads(rewards_tb) @ lift_zD.T

    g_bD = grads(base_rewards_tb)
    mean = prob_b @ g_bD
    second_no_noise = (g_bD * prob_b[:, None]).T @ g_bD
    noise = np.zeros_like(second_no_noise)
    for k in range(states_tb.shape[0]):
        bumped = base_rewards_tb.copy()
        bumped[k] += 1.0
        h_bD = grads(bumped) - g_bD
        noise += (h_bD * (prob_b * noise_var_tb[k])[:, None]).T @ h_bD
    return mean, second_no_noise + noise, second_no_noise
