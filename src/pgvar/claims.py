"""Each claim of lesson 07, checked numerically for a given MDP and policy (``pgvar verify``).

A claim holds, fails, or (for the variance claims) does not hold *here*: the lesson's knobs lower the
variance in its own MDP, not in every MDP. When one does not, the check says why with exact numbers
and names the variance-optimal estimator among those pgvar knows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pgvar import kpi
from pgvar.estimators import EstimatorSpec, parse_estimator
from pgvar.exact import Chain, ExactMoments, chain_gradient, exact_moments, optimal_constants, unroll
from pgvar.groups import GroupMomentsError
from pgvar.mdp import TabularMDP
from pgvar.montecarlo import sample_batch_means
from pgvar.montecarlo.groups import GroupSampler
from pgvar.policy import entropy_gradient, log_softmax, logits_table, parameter_index, policy_table, softmax
from pgvar.studies import variance_study
from pgvar.validation import check_seed

Z_LIMIT = 4.0  # |z| above this for a Monte-Carlo comparison fails (two-sided p ~ 6e-5)
CANDIDATES = (
    "vanilla",
    "rtg",
    "base",
    "rtg+base",
    "rtg+value",
    "rtg+optimal",
    "rtg+optimal-per-parameter",
    "return+optimal",
)


@dataclass
class Claim:
    """One claim, whether it held, and the numbers that show it.

    ``passed`` is a Python bool and ``numbers`` holds Python floats, ints and bools (NumPy scalars are
    converted), with None for a number that does not exist (NaN, an infinite ratio), so a claim goes
    into strict JSON as it is."""

    claim: str
    passed: bool
    detail: str
    numbers: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.passed = bool(self.passed)
        self.numbers = {str(key): _plain_number(value) for key, value in self.numbers.items()}


def _plain_number(value: object) -> float | int | bool | None:
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else None


def check_score_has_zero_mean(mdp: TabularMDP, theta: np.ndarray) -> Claim:
    """E_{a~pi}[e_a - pi] = 0 in every state and step, computed exactly."""
    worst = 0.0
    steps = theta.shape[0] if theta.ndim == 3 else 1
    for t in range(steps):
        probs_sa = policy_table(theta, mdp, t)[~mdp.terminal_s]
        mean_score = probs_sa @ np.eye(mdp.n_actions) - probs_sa.sum(axis=1, keepdims=True) * probs_sa
        worst = max(worst, float(np.abs(mean_score).max()))
    return Claim(
        "the score has zero mean under pi",
        worst < 1e-12,
        f"max |sum_a pi(a) (e_a - pi)| = {worst:.1e}",
        {"max_abs_mean_score": worst},
    )


def finite_difference(f, theta: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of a scalar function of theta, shaped like theta."""
    grad = np.zeros(theta.size)
    for i in range(theta.size):
        step = np.zeros(theta.size)
        step[i] = eps
        step = step.reshape(theta.shape)
        grad[i] = (f(theta + step) - f(theta - step)) / (2 * eps)
    return grad.reshape(theta.shape)


def check_transitions_cancel(mdp: TabularMDP, theta: np.ndarray, seed: int = 0, episodes: int = 20) -> Claim:
    """grad_theta log P_theta(tau) (finite differences of the whole log-probability, transitions and
    start distribution included) equals sum_t score_t, which needs no model: the transitions cancel."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(episodes):
        states, actions, nexts = _sample_path(mdp, theta, rng)

        def log_prob(th, states=states, actions=actions, nexts=nexts):
            total = np.log(mdp.initial_s[states[0]])
            for t, (s, a, s_next) in enumerate(zip(states, actions, nexts, strict=True)):
                total += log_softmax(logits_table(th, mdp, t)[s])[a] + np.log(
                    mdp.transitions_at(t)[s, a, s_next]
                )
            return total

        numeric = finite_difference(log_prob, theta).ravel()
        scores = np.zeros(theta.size)
        for t, (s, a) in enumerate(zip(states, actions, strict=True)):
            probs = softmax(logits_table(theta, mdp, t)[s])
            np.add.at(scores, parameter_index(mdp, theta.shape, t)[s], np.eye(mdp.n_actions)[a] - probs)
        worst = max(worst, float(np.abs(numeric - scores).max()))
    return Claim(
        "the estimate needs no transition model (transitions cancel in grad log P(tau))",
        worst < 1e-5,
        f"on {episodes} sampled episodes, max |d/dtheta log P(tau) - sum_t score_t| = {worst:.1e} "
        "(finite differences of the full log-probability, transitions included)",
        {"max_abs_difference": worst},
    )


def _sample_path(mdp: TabularMDP, theta: np.ndarray, rng: np.random.Generator, cap: int = 1000):
    states, actions, nexts = [], [], []
    s = rng.choice(mdp.n_states, p=mdp.initial_s)
    for t in range(mdp.horizon or cap):
        a = rng.choice(mdp.n_actions, p=policy_table(theta, mdp, t)[s])
        s_next = rng.choice(mdp.n_states, p=mdp.transitions_at(t)[s, a])
        states.append(s)
        actions.append(a)
        nexts.append(s_next)
        s = s_next
        if mdp.terminal_s[s]:
            break
    return states, actions, nexts


def check_unbiased(
    mdp: TabularMDP,
    theta: np.ndarray,
    spec: EstimatorSpec,
    chain: Chain,
    claim: str,
    seed: int = 0,
    n: int = 200,
    batches: int = 50,
) -> Claim:
    """Exact mean equals grad J, and the Monte-Carlo mean agrees within Z_LIMIT standard errors."""
    grad = chain_gradient(chain)
    moments = exact_moments(mdp, theta, spec, chain=chain)
    exact_bias = float(np.abs(moments.mean - grad).max())
    sample = sample_batch_means(mdp, theta, [spec], n, batches, seed, chain=chain)
    error = np.sqrt(moments.variance / (n * batches))
    z = np.abs(sample.batch_means_emd[0].mean(axis=0) - grad) / np.where(error > 0, error, 1.0)
    passed = exact_bias < 1e-9 * max(1.0, float(np.abs(grad).max())) and float(z.max()) < Z_LIMIT
    return Claim(
        claim,
        passed,
        f"exact max |E g - grad J| = {exact_bias:.1e}; Monte Carlo ({n * batches} episodes): "
        f"max |z| = {z.max():.2f} (< {Z_LIMIT:g} passes)",
        {"exact_bias": exact_bias, "monte_carlo_max_z": float(z.max())},
    )


def check_lowers_variance(
    name_with: str, name_without: str, traces: dict[str, ExactMoments], claim: str, chain: Chain
) -> Claim:
    """Exact single-episode variance with the knob below the one without; if not, why, in numbers."""
    with_knob, without = traces[name_with].variance_trace, traces[name_without].variance_trace
    ratio = kpi.ratio(with_knob, without)  # None where the variance without the knob is 0
    passed = with_knob < without
    detail = f"exact Var[{name_with}] = {with_knob:.4g} vs Var[{name_without}] = {without:.4g}" + (
        f" ({ratio:.3f}x)" if ratio is not None else ""
    )
    if not passed and with_knob == without:
        detail += "; does NOT hold here: the knob leaves the variance as it is."
    elif not passed:
        detail += "; does NOT hold here. " + _why(name_with, name_without, traces, chain)
    return Claim(claim, passed, detail, {"with": with_knob, "without": without, "ratio": ratio})


def _why(name_with: str, name_without: str, traces: dict[str, ExactMoments], chain: Chain) -> str:
    spec_with = traces[name_with].spec
    if spec_with.baseline in ("lesson", "running") and traces[name_without].spec.baseline == "none":
        used = traces[name_with].baseline_t
        best = optimal_constants(chain, traces[name_without].spec)
        text = ", ".join(
            f"t={t}: b={b:.3g}, b*={o:.3g}" for t, (b, o) in enumerate(zip(used, best, strict=True)) if t < 6
        )
        return (
            f"A constant b_t lowers the variance only for b_t between 0 and 2 b*_t, where "
            f"b*_t = E[|score_t|^2 Psi_t] / E[|score_t|^2] weights each return by its squared score; "
            f"the running mean ignores that weighting: {text}."
        )
    if spec_with.weight == "rtg" and traces[name_without].spec.weight == "return":
        return (
            "The full return adds the past rewards sum_{k<t} gamma^k r_k to each step's weight; they have "
            "zero-mean products with the score but here they are negatively correlated with the "
            "reward-to-go part of the estimate, so dropping them removes noise that was cancelling."
        )
    return ""


def check_one_over_n(mdp: TabularMDP, theta: np.ndarray, seed: int = 0) -> Claim:
    """Monte-Carlo variance at N = 1, 4, 16, 64 agrees with exact Var / N (and the fitted slope)."""
    study = variance_study(
        mdp, theta, [parse_estimator("vanilla")], ns=[1, 4, 16, 64], batches=400, seed=seed
    )
    worst = 0.0
    for reading in study.readings:
        half = (reading.ci95[1] - reading.ci95[0]) / 2
        z = abs(reading.variance_trace - reading.exact_variance_trace) / max(half / 1.96, 1e-300)
        worst = max(worst, z)
    slope = study.slopes.get("vanilla")  # None where the variance is 0 and has no slope
    readings = ", ".join(
        f"N={r.n}: {r.variance_trace:.3g} (exact {r.exact_variance_trace:.3g})" for r in study.readings
    )
    slope_text = "—" if slope is None else f"{slope:+.3f}"
    return Claim(
        "the variance falls as 1/N",
        worst < Z_LIMIT,
        f"{readings}; slope of log Var on log N = {slope_text}; max |z| = {worst:.2f}",
        {"slope": slope, "max_z": worst},
    )


def check_entropy_gradient(mdp: TabularMDP, theta: np.ndarray) -> Claim:
    """A small step along grad H moves every state's policy toward uniform (KL to uniform falls) and
    grad H . (theta - mean theta) <= 0."""
    worst_inner, worst_kl, largest = -np.inf, -np.inf, 0.0
    steps = theta.shape[0] if theta.ndim == 3 else 1
    for t in range(steps):
        for logits in logits_table(theta, mdp, t)[~mdp.terminal_s]:
            grad = entropy_gradient(logits)
            largest = max(largest, float(np.abs(grad).max()))
            worst_inner = max(worst_inner, float(grad @ (logits - logits.mean())))
            before = _kl_to_uniform(logits)
            after = _kl_to_uniform(logits + 1e-3 * grad)
            if before > 1e-12:
                worst_kl = max(worst_kl, after - before)
    claim = "the entropy gradient points toward the uniform policy"
    if worst_kl == -np.inf:  # every state's policy is already uniform
        return Claim(
            claim,
            largest < 1e-12,
            f"the policy is uniform and grad H = 0 there (max |grad H| = {largest:.1e})",
            {"max_abs_gradient": largest},
        )
    passed = worst_inner <= 1e-12 and worst_kl < 0
    return Claim(
        claim,
        passed,
        f"max grad H . (theta - mean) = {worst_inner:.2e} (<= 0); a small step along grad H changes "
        f"KL(pi || uniform) by at most {worst_kl:+.2e} (< 0) in every state",
        {"max_inner_product": worst_inner, "max_kl_change": worst_kl},
    )


def _kl_to_uniform(logits: np.ndarray) -> float:
    log_probs = log_softmax(logits)
    return float(np.exp(log_probs) @ (log_probs + np.log(logits.size)))


# -- the group baselines of language-model RL (docs/groups.md) --------------------------------------

GROUP_SIZES = (2, 4, 8)  # K of the exact checks
SAMPLED_GROUP = 4  # K of the Monte-Carlo checks
SAMPLED_GROUPS = 4000
S_LIMIT = 15.1  # P(chi2_1 >= 15.1) = 1e-4 bounds the tail of S below (Szekely & Bakirov 2003)


def _group_sample(mdp: TabularMDP, theta: np.ndarray, spec: EstimatorSpec, seed: int) -> np.ndarray:
    """(G, D) the mean gradients of ``SAMPLED_GROUPS`` sampled groups."""
    return GroupSampler(mdp, theta, [spec]).sample(spec.group, SAMPLED_GROUPS, seed).batch_means_emd[0]


def _max_z(group_means_gD: np.ndarray, target: np.ndarray) -> float:
    """max over parameters of |mean - target| / its standard error (from the groups' spread)."""
    error = group_means_gD.std(axis=0, ddof=1) / np.sqrt(group_means_gD.shape[0])
    z = np.abs(group_means_gD.mean(axis=0) - target) / np.where(error > 0, error, 1.0)
    return float(np.where(error > 0, z, np.where(z > 0, np.inf, 0.0)).max())


def _exact_group_means(mdp, theta, text: str, chain: Chain) -> dict[int, ExactMoments]:
    return {k: exact_moments(mdp, theta, parse_estimator(text, group=k), chain=chain) for k in GROUP_SIZES}


def check_loo_unbiased(mdp: TabularMDP, theta: np.ndarray, chain: Chain, seed: int = 0) -> Claim:
    """RLOO (Ahmadian et al. 2024): E g = grad J exactly for every K, and a sampled mean agrees."""
    grad = chain_gradient(chain)
    scale = max(1.0, float(np.abs(grad).max()))
    bias = max(
        float(np.abs(m.mean - grad).max())
        for weight in ("return", "rtg")
        for m in _exact_group_means(mdp, theta, f"{weight}+loo", chain).values()
    )
    z = _max_z(_group_sample(mdp, theta, parse_estimator("rtg+loo", group=SAMPLED_GROUP), seed), grad)
    return Claim(
        "RLOO (leave-one-out baseline) is unbiased",
        bias < 1e-9 * scale and z < Z_LIMIT,
        f"exact max |E g - grad J| = {bias:.1e} over return and rtg, K = {', '.join(map(str, GROUP_SIZES))}; "
        f"Monte Carlo ({SAMPLED_GROUPS} groups of {SAMPLED_GROUP}, rtg+loo): max |z| = {z:.2f} "
        f"(< {Z_LIMIT:g} passes)",
        {"exact_bias": bias, "monte_carlo_max_z": z},
    )


def check_group_mean_shrinks(mdp: TabularMDP, theta: np.ndarray, chain: Chain, seed: int = 0) -> Claim:
    """GRPO's mean baseline includes the episode itself: E g = (K - 1)/K grad J exactly (Shao et al.
    2024; Liu et al. 2025), and a sampled mean agrees."""
    grad = chain_gradient(chain)
    scale = max(1.0, float(np.abs(grad).max()))
    exact = _exact_group_means(mdp, theta, "return+group", chain)
    off = max(float(np.abs(m.mean - (k - 1) / k * grad).max()) for k, m in exact.items())
    k = SAMPLED_GROUP
    z = _max_z(_group_sample(mdp, theta, parse_estimator("return+group", group=k), seed), (k - 1) / k * grad)
    norm = float(np.linalg.norm(grad))
    shrink = ", ".join(
        f"K={k}: {float(np.linalg.norm(m.mean)) / norm:.4f}" if norm > 0 else f"K={k}: —"
        for k, m in exact.items()
    )
    return Claim(
        "GRPO's group-mean baseline shrinks the gradient by (K - 1)/K",
        off < 1e-9 * scale and z < Z_LIMIT,
        f"|E g| / |grad J| = {shrink}; exact max |E g - (K-1)/K grad J| = {off:.1e}; Monte Carlo "
        f"({SAMPLED_GROUPS} groups of {k}): max |z| = {z:.2f} (< {Z_LIMIT:g} passes)",
        {"exact_max_difference": off, "monte_carlo_max_z": z},
    )


def check_std_turns_gradient(mdp: TabularMDP, theta: np.ndarray, chain: Chain, seed: int = 0) -> Claim:
    """Dividing by the group's std (GRPO) turns E g away from grad J: exactly where the groups can be
    enumerated (1 - cos > 1e-9), else by a sampled test. There the part of the groups' mean gradient
    orthogonal to grad J has, if E g were along grad J, mean zero, and S = G |r|^2 / tr Cov(r) over
    G groups exceeds 15.1 with probability at most 1e-4 (Szekely & Bakirov 2003)."""
    claim = "std normalisation (GRPO) changes the direction of the gradient"
    grad = chain_gradient(chain)
    norm = float(np.linalg.norm(grad))
    spec = parse_estimator("rtg+group-std", group=SAMPLED_GROUP)
    if norm == 0:
        return Claim(claim, False, "grad J = 0 here: there is no direction to change", {"cosine": None})
    try:
        exact = exact_moments(mdp, theta, spec, chain=chain)
        cosine = kpi.gradient_cosine(exact.mean, grad)
        passed = cosine is not None and 1 - cosine > 1e-9
        return Claim(
            claim,
            passed,
            f"{spec.name}, K = {spec.group}: exact cos(E g, grad J) = {cosine:.9f}"
            + ("" if passed else "; does NOT hold here: the std only rescales the gradient"),
            {"cosine": cosine, "statistic": None},
        )
    except GroupMomentsError as why:
        reason = str(why)
    means_gD = _group_sample(mdp, theta, spec, seed)
    unit = grad / norm
    orthogonal_gD = means_gD - np.outer(means_gD @ unit, unit)
    spread = float(orthogonal_gD.var(axis=0, ddof=1).sum())
    mean_orthogonal = orthogonal_gD.mean(axis=0)
    # estimates that all lie along grad J (one free logit per state) leave only rounding orthogonal to it
    along = spread <= 1e-20 * float(means_gD.var(axis=0, ddof=1).sum())
    statistic = 0.0 if along else means_gD.shape[0] * float(mean_orthogonal @ mean_orthogonal) / spread
    cosine = kpi.gradient_cosine(means_gD.mean(axis=0), grad)
    passed = statistic > S_LIMIT
    verdict = "" if passed else "; not shown here"
    if along:
        verdict = "; does NOT hold here: every estimate lies along grad J (the gradient has one direction)"
    return Claim(
        claim,
        passed,
        f"{spec.name}, K = {spec.group}, {SAMPLED_GROUPS} sampled groups (no exact value: {reason}): "
        f"cos(E g, grad J) = {cosine:.5f}; the part orthogonal to grad J gives S = {statistic:.1f} "
        f"(> {S_LIMIT:g} passes, P <= 1e-4 if the direction were kept){verdict}",
        {"cosine": cosine, "statistic": statistic},
    )


def verify_groups(mdp: TabularMDP, theta: np.ndarray, seed: int = 0) -> list[Claim]:
    """The claims about the group baselines of language-model RL, on this MDP and policy."""
    chain = unroll(mdp, theta)
    return [
        check_loo_unbiased(mdp, theta, chain, seed),
        check_group_mean_shrinks(mdp, theta, chain, seed),
        check_std_turns_gradient(mdp, theta, chain, seed),
    ]


def verify_lesson(mdp: TabularMDP, theta: np.ndarray, seed: int = 0) -> tuple[list[Claim], str]:
    """Every claim of the lesson for this MDP and policy, and the variance-optimal estimator."""
    seed = check_seed(seed)
    chain = unroll(mdp, theta)
    traces = {name: exact_moments(mdp, theta, parse_estimator(name), chain=chain) for name in CANDIDATES}
    claims = [
        check_score_has_zero_mean(mdp, theta),
        check_transitions_cancel(mdp, theta, seed),
        check_unbiased(
            mdp, theta, parse_estimator("vanilla"), chain, "the full-return estimate is unbiased", seed
        ),
        check_unbiased(mdp, theta, parse_estimator("rtg"), chain, "reward-to-go is unbiased", seed),
        check_unbiased(mdp, theta, parse_estimator("rtg+base"), chain, "a baseline is unbiased", seed),
        check_lowers_variance("rtg", "vanilla", traces, "reward-to-go lowers the variance", chain),
        check_lowers_variance(
            "base", "vanilla", traces, "a baseline lowers the variance (full return)", chain
        ),
        check_lowers_variance(
            "rtg+base", "rtg", traces, "a baseline lowers the variance (reward-to-go)", chain
        ),
        check_one_over_n(mdp, theta, seed),
        check_entropy_gradient(mdp, theta),
    ]
    best = min(traces.values(), key=lambda moments: moments.variance_trace)
    to_vanilla = kpi.ratio(best.variance_trace, traces["vanilla"].variance_trace)
    summary = (
        f"variance-optimal here among {', '.join(CANDIDATES)}: {best.spec.name} "
        f"(exact variance {best.variance_trace:.4g}"
        + ("" if to_vanilla is None else f", {to_vanilla:.3f}x vanilla")
        + ")"
    )
    return claims, summary
