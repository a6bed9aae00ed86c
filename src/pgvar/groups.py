"""Exact moments of the group baselines of language-model RL: RLOO (``loo``), GRPO's group mean
(``group``) and its std normalisation (``group-std``), with or without ``:per-length``.

A batch of N episodes is N/K groups of K that share a start state (a prompt). Episode i of a group
estimates g_i = l_i (A_i - c B_i sum_{j != i} w_j): w_j is episode j's weight per step (T,), B_i the
(D, T) matrix of its scores per step, l_i = 1/|tau_i| with ``:per-length`` (else 1), and
  loo:   A_i = B_i w_i + e_i,            c = 1/(K - 1)   (Kool, van Hoof & Welling 2019; Ahmadian et al. 2024)
  group: A_i = (1 - 1/K) B_i w_i + e_i,  c = 1/K         (Shao et al. 2024; Liu et al. 2025)
with e_i the entropy bonus's direct term. Given the start state the K episodes are independent, so
the mean and second moment of the group's mean gradient need only moments of one episode: E[A],
E[A^2], E[w], E[w w'], E[B], E[A w'], E[A B], E[B B] and E[B w'] per parameter. Method "pairs" sums
them over each start state's enumerated paths (reward noise enters through its variance, as in
``pgvar.exact``); method "recursion" computes them by passes over the steps, using that the scores
have zero mean given the past (E[B] = 0, E[B_t B_u] = 0 for t != u), for any horizon but without
``:per-length`` or an entropy bonus. ``group-std`` divides by the group's std and is not linear:
its moments come from enumerating every multiset of K paths ("tuples"), which needs noiseless
rewards (noise that is discrete is a random transition) and few paths. Elsewhere
:class:`GroupMomentsError` says why, and ``pgvar.montecarlo.groups.group_moments_estimate`` samples
them with confidence intervals.

The variance reported is K times the variance of a group's mean gradient: the batch mean of N/K
groups then has variance ``variance_trace / N``, as every other estimator's.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np

from pgvar import budget
from pgvar.errors import PgvarError
from pgvar.estimators import EstimatorSpec, episode_gradients, score_scale_t, weights, without_group
from pgvar.exact import (
    MAX_ENUMERATED_PATHS,
    Chain,
    ExactMoments,
    exact_moments,
    resolve,
    score_products,
    state_distribution,
    unroll,
    values,
)
from pgvar.mdp import TabularMDP
from pgvar.paths import count_flow_paths, enumerate_flow_paths
from pgvar.policy import entropy_table, parameter_index, policy_table

MAX_TUPLES = 200_000  # multisets of K paths per start state that "tuples" enumerates at most
METHODS = ("auto", "pairs", "recursion", "tuples")


class GroupMomentsError(PgvarError):
    """The exact moments of a group baseline cannot be had here (the message says why)."""


def start_states(mdp: TabularMDP) -> np.ndarray:
    """The start states with positive probability (the prompts)."""
    return np.flatnonzero(mdp.initial_s > 0)


def group_moments(
    mdp: TabularMDP, theta: np.ndarray, spec: EstimatorSpec, method: str = "auto", chain: Chain | None = None
) -> ExactMoments:
    """Exact mean and variance of a group baseline's estimate at ``theta``: ``mean`` is E g (biased
    for ``group``, ``group-std`` and ``:per-length``), ``variance`` K times the per-parameter variance
    of a group's mean gradient. ``method``: ``pairs`` (loo and group, each start state's paths
    enumerated), ``recursion`` (loo and group without ``:per-length`` or entropy bonus, any horizon),
    ``tuples`` (any, noiseless rewards), ``auto`` the first that applies. Raises
    :class:`GroupMomentsError` where none does."""
    if not spec.grouped:
        raise PgvarError(f"group_moments: {spec.name!r} has no group baseline")
    if method not in METHODS:
        raise PgvarError(f"method: unknown {method!r} for a group baseline; use {', '.join(METHODS)}")
    chain = chain if chain is not None else unroll(mdp, theta, spec.entropy)
    if chain.lift_zD is not None:
        raise GroupMomentsError("group baselines: exact values are for the logit table only")
    method = _method(chain, spec, method)
    starts = start_states(mdp)
    if method == "recursion":
        _check_recursion_work(chain, spec, starts.size)
        parts = [_recursion_parts(chain, spec, s) for s in starts]
    else:
        paths = [_Paths(chain, s) for s in starts]
        if method == "pairs":
            _check_pairs_work(chain, spec, paths)
            parts = [_pair_parts(chain, spec, p) for p in paths]
        else:
            _check_tuples_work(chain, spec, paths)
            parts = [_tuple_parts(chain, spec, p) for p in paths]
    weights_s = mdp.initial_s[starts]
    mean = sum(w * part[0] for w, part in zip(weights_s, parts, strict=True))
    second = sum(w * part[1] for w, part in zip(weights_s, parts, strict=True))
    second_no_noise = sum(w * part[2] for w, part in zip(weights_s, parts, strict=True))
    k = spec.group
    variance = np.maximum(k * (second - mean**2), 0.0)
    total = float(variance.sum())
    sampling = max(k * (second_no_noise - float(mean @ mean)), 0.0) if chain.noise_var_sa.any() else total
    return ExactMoments(
        spec, mean, variance, total, max(total - sampling, 0.0), min(sampling, total), method, chain.steps,
        chain.tail_mass, None,
    )  # fmt: skip


def _method(chain: Chain, spec: EstimatorSpec, method: str) -> str:
    """The method that serves ``spec`` (``auto``: pairs, else recursion, for the linear baselines;
    tuples for group-std), or why none does."""
    mdp = chain.mdp
    linear = spec.baseline != "group-std"
    recursion_ok = linear and not spec.per_length and chain.beta == 0
    enumerable = chain.tail_mass == 0 and all(
        count_flow_paths(np.eye(mdp.n_states)[s], chain.flow_tsas, mdp.terminal_s, MAX_ENUMERATED_PATHS)
        <= MAX_ENUMERATED_PATHS
        for s in start_states(mdp)
    )
    if method == "auto":
        if not linear:
            method = "tuples"
        elif enumerable or not recursion_ok:
            method = "pairs"
        else:
            method = "recursion"
    if method in ("pairs", "recursion") and not linear:
        raise GroupMomentsError(f"{spec.name}: the std normalisation is not linear; use tuples")
    if method == "recursion" and not recursion_ok:
        what = "the division by length" if spec.per_length else "the entropy bonus"
        raise GroupMomentsError(f"{spec.name}: the recursion does not take {what}; use pairs")
    if method in ("pairs", "tuples") and chain.tail_mass > 0:
        raise GroupMomentsError(
            f"{spec.name}: exact moments of {'K-tuples' if method == 'tuples' else 'pairs'} enumerate paths, "
            "and episodes without a horizon have no end"
        )
    if method in ("pairs", "tuples") and not enumerable:
        raise GroupMomentsError(
            f"mdp {mdp.name!r}: {spec.name}'s exact moments enumerate each start state's paths, at most "
            f"{MAX_ENUMERATED_PATHS:,}, and this MDP has more"
        )
    if method == "tuples" and chain.noise_var_sa.any():
        raise GroupMomentsError(
            f"{spec.name} on {mdp.name!r}: the reward noise is continuous, so K-tuples of episodes cannot "
            "be enumerated"
        )
    return method


# -- the recursion: one episode's moments by passes over the steps -----------------------------------


def _recursion_parts(chain: Chain, spec: EstimatorSpec, start: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean (D,), second moment (D,), second moment's trace without reward noise) of a group's mean
    gradient from one start state, by the module's formulas with E[B] = 0 (the scores have zero mean
    given the past) and E[B_t B_u] = 0 for t != u, from passes over the steps (no paths listed).

    Needs per step t and u, from ``start``: E[f^2] and E[f] of the plain estimator f (pgvar.exact),
    U_t = E[score_t f], V_t = E[score_t^2], q_t = E[score_t G_t] (``exact.score_products``), E[w_t],
    E[w_t w_u] and Y_tu = E[score_t w_u]."""
    mdp, k = chain.mdp, spec.group
    initial = np.eye(mdp.n_states)[start]
    started = replace(chain, mdp=replace(mdp, initial_s=initial))
    plain = without_group(spec)
    f = exact_moments(started.mdp, chain.theta, plain, method="recursion", chain=started)
    own_tD, squares_tD, reward_to_go_tD = score_products(started, plain, initial)
    mean_w_t, second_w_tt, second_w_no_noise_tt, cross_ttD = _weight_moments(started, plain, reward_to_go_tD)
    kappa, c = (0.0, 1.0 / (k - 1)) if spec.baseline == "loo" else (1.0 / k, 1.0 / k)
    mu_A = (1 - kappa) * f.mean
    pair = mu_A**2 + c**2 * np.einsum("tud,utd->d", cross_ttD, cross_ttD)

    def own_square(second_f: np.ndarray, second_w: np.ndarray) -> np.ndarray:
        diagonal_t = np.diag(second_w)
        return (
            (1 - kappa) ** 2 * second_f
            - 2 * c * (k - 1) * (1 - kappa) * (mean_w_t @ own_tD)
            + c**2 * ((k - 1) * (diagonal_t @ squares_tD) + (k - 1) * (k - 2) * (mean_w_t**2 @ squares_tD))
        )

    second = own_square(f.variance + f.mean**2, second_w_tt) / k + (k - 1) / k * pair
    sampling_f = f.sampling + float(f.mean @ f.mean)  # the plain estimator's trace without reward noise
    second_no_noise = float(
        own_square(np.full(f.mean.size, sampling_f / f.mean.size), second_w_no_noise_tt).sum() / k
        + (k - 1) / k * pair.sum()
    )
    return mu_A, second, second_no_noise


def _weight_moments(chain: Chain, plain: EstimatorSpec, reward_to_go_tD: np.ndarray):
    """E[w_t] (T,), E[w_t w_u] with and without reward noise (T, T), and E[score_t w_u] (T, T, D),
    for episodes from the chain's start distribution; w_t = c_t G_t (``rtg``) or R (``return``)."""
    mdp, n_steps, gamma = chain.mdp, chain.steps, chain.mdp.gamma
    value_ts = values(chain)[0]
    dist_ts = state_distribution(chain)
    seconds = [_second_moment_of_return(chain, value_ts, noise) for noise in (True, False)]
    discount_t = gamma ** np.arange(n_steps, dtype=float)
    if plain.weight == "return":  # R at every step: E[score_t R] = gamma^t E[score_t G_t]
        mean_t = np.full(n_steps, mdp.initial_s @ value_ts[0])
        second = [np.full((n_steps, n_steps), mdp.initial_s @ y_ts[0]) for y_ts in seconds]
        cross_ttD = np.broadcast_to(
            (discount_t[:, None] * reward_to_go_tD)[:, None, :], (n_steps, n_steps, chain.dimension)
        )
        return mean_t, second[0], second[1], cross_ttD
    scale_t = score_scale_t(plain, gamma, n_steps)
    mean_t = (dist_ts[:-1] * value_ts[:-1]).sum(axis=1)
    square_t = [(dist_ts[:-1] * y_ts[:-1]).sum(axis=1) for y_ts in seconds]
    steps_t = np.arange(n_steps)
    products_tt = np.zeros((n_steps, n_steps))  # E[G_t G_u] - gamma^(u - t) E[G_u^2], t < u: the past part
    past_ts = np.zeros((n_steps, mdp.n_states))  # row t: E[sum_{k=t}^{u-1} gamma^(k-t) r_k ; s_u = s]
    for u in range(n_steps):
        flow = chain.flow_tsas[u]
        products_tt[:, u] = past_ts @ value_ts[u]
        earned_s = np.einsum("sap,s,sap->p", flow, dist_ts[u], chain.reward_tsas[u])
        started_t = np.where(steps_t <= u, gamma ** np.maximum(u - steps_t, 0), 0.0)
        past_ts = past_ts @ flow.sum(axis=1) + started_t[:, None] * earned_s
    cross_ttD = np.zeros((n_steps, n_steps, chain.dimension))  # E[score_t G_u]
    ahead_tt = np.maximum(steps_t[None, :] - steps_t[:, None], 0)  # u - t where u >= t
    cross_ttD += np.tril(gamma**ahead_tt.T)[:, :, None] * reward_to_go_tD[:, None, :]  # u <= t
    following_us = np.zeros((n_steps, mdp.n_states))  # row u > t: E[G_u | s_(t+1) = s]
    for t in range(n_steps - 1, -1, -1):
        flow = chain.flow_tsas[t]
        if t + 1 < n_steps:
            following_us[t + 1] = value_ts[t + 1]
            later = following_us[t + 1 :]
            moved_usa = np.einsum("sap,up->usa", flow, later)
            cross_ttD[t, t + 1 :] = np.einsum("s,usa,sad->ud", dist_ts[t], moved_usa, chain.score_tsaD[t])
            following_us[t + 1 :] = moved_usa.sum(axis=2)
    second = []
    for square in square_t:
        moment_tt = products_tt + np.triu(gamma**ahead_tt * square[None, :], 1)
        moment_tt = np.triu(moment_tt, 1) + np.diag(square)
        moment_tt = moment_tt + np.triu(moment_tt, 1).T
        second.append(scale_t[:, None] * scale_t[None, :] * moment_tt)
    return scale_t * mean_t, second[0], second[1], cross_ttD * scale_t[None, :, None]


def _second_moment_of_return(chain: Chain, value_ts: np.ndarray, noise: bool) -> np.ndarray:
    """(T + 1, S) E[G_t^2 | s_t = s], reward noise included or not, zero in terminal states."""
    mdp, gamma = chain.mdp, chain.mdp.gamma
    square_ts = np.zeros((chain.steps + 1, mdp.n_states))
    noise_var_sa1 = chain.noise_var_sa[:, :, None] if noise else 0.0
    for t in range(chain.steps - 1, -1, -1):
        reward = chain.reward_tsas[t]
        following = (
            reward**2 + noise_var_sa1 + 2 * gamma * reward * value_ts[t + 1] + gamma**2 * square_ts[t + 1]
        )
        square_ts[t] = (chain.flow_tsas[t] * following).sum(axis=(1, 2))
    return square_ts


def _check_recursion_work(chain: Chain, spec: EstimatorSpec, starts: int) -> None:
    mdp, steps, params = chain.mdp, float(chain.steps), float(chain.dimension)
    per_start = steps * steps * mdp.n_states * mdp.n_actions * (2 * mdp.n_states + params) + 120.0 * steps * (
        mdp.n_states * mdp.n_actions * mdp.n_states * params
    )
    budget.check(
        f"{spec.name}: exact group moments by recursion over {chain.steps} steps from {starts} start states",
        memory=8.0 * (steps * steps * params * 3 + 20 * mdp.n_states * mdp.n_actions * params),
        seconds=starts * per_start / budget.EXACT_ENTRIES_PER_SECOND
        + starts * steps * steps * 4 * budget.NUMPY_CALL_SECONDS,
        hint="measure it by sampling (pgvar variance) instead",
    )


# -- one start state's paths ---------------------------------------------------------------------


class _Paths:
    """The paths from one start state: probabilities (B,), padded arrays (T, B), rewards at their
    means (T, B) and the reward-noise variance per step (T, B)."""

    def __init__(self, chain: Chain, start: int) -> None:
        mdp = chain.mdp
        initial = np.eye(mdp.n_states)[start]
        self.prob_b, self.states_tb, self.actions_tb, next_tb, self.alive_tb = enumerate_flow_paths(
            initial, chain.flow_tsas, mdp.terminal_s
        )
        self.rewards_tb = np.where(
            self.alive_tb, mdp.reward_sas[self.states_tb, self.actions_tb, next_tb], 0.0
        )
        self.noise_var_tb = np.where(self.alive_tb, chain.noise_var_sa[self.states_tb, self.actions_tb], 0.0)

    @property
    def count(self) -> int:
        return self.prob_b.size


def _scores(chain: Chain, paths: _Paths) -> np.ndarray:
    """(B, T, D) each path's score e_a - pi(.|s_t) per step in theta's layout, zero after its end."""
    mdp, theta = chain.mdp, chain.theta
    n_steps, n_paths = paths.states_tb.shape
    scores_btD = np.zeros((n_paths, n_steps, theta.size))
    rows = np.arange(n_paths)[:, None]
    for t in range(n_steps):
        states = paths.states_tb[t]
        score_bA = np.eye(mdp.n_actions)[paths.actions_tb[t]] - policy_table(theta, mdp, t)[states]
        index_bA = parameter_index(mdp, theta.shape, t)[states]
        np.add.at(scores_btD[:, t], (np.broadcast_to(rows, index_bA.shape), index_bA), score_bA)
    return scores_btD * paths.alive_tb.T[:, :, None]


def _pair_parts(chain: Chain, spec: EstimatorSpec, paths: _Paths) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean (D,), second moment (D,), its trace without reward noise) of a group's mean gradient
    from one start state."""
    mean, second = _pair_moments(chain, spec, paths, noise=True)
    if not paths.noise_var_tb.any():
        return mean, second, float(second.sum())
    return mean, second, float(_pair_moments(chain, spec, paths, noise=False)[1].sum())


def _pair_moments(chain: Chain, spec: EstimatorSpec, paths: _Paths, noise: bool):
    """(mean (D,), second moment (D,)) of a group's mean gradient from one start state (see the
    module docs for A, B, w, c)."""
    mdp, k = chain.mdp, spec.group
    p = paths.prob_b
    plain = resolve(chain, without_group(spec))
    args = (paths.states_tb, paths.actions_tb)
    own_bD = episode_gradients(mdp, chain.theta, plain, *args, paths.rewards_tb, paths.alive_tb)
    w_bt = np.ascontiguousarray(weights(plain.spec, _with_bonus(chain, paths), mdp.gamma).T)
    scores_btD = _scores(chain, paths)
    entropy_bD = own_bD - np.einsum("bt,btd->bd", w_bt, scores_btD)
    kappa, c = (0.0, 1.0 / (k - 1)) if spec.baseline == "loo" else (1.0 / k, 1.0 / k)
    scale_b = 1.0 / np.maximum(paths.alive_tb.sum(axis=0), 1) if spec.per_length else np.ones(p.size)
    B_btD = scores_btD * scale_b[:, None, None]
    A_bD = scale_b[:, None] * ((1 - kappa) * np.einsum("bt,btd->bd", w_bt, scores_btD) + entropy_bD)
    mu_A, mu_w = p @ A_bD, p @ w_bt
    second_A = p @ A_bD**2
    second_w = (w_bt * p[:, None]).T @ w_bt
    beta_tD = np.einsum("b,btd->td", p, B_btD)
    cross_tD = np.einsum("b,bt,bd->td", p, w_bt, A_bD)  # E[w_t A]
    own_tD = np.einsum("b,bd,btd->td", p, A_bD, B_btD)  # E[A B_t]
    scores_ttD = np.einsum("b,btd,bud->tud", p, B_btD, B_btD)  # E[B_t B_u]
    score_weight_ttD = np.einsum("b,btd,bu->tud", p, B_btD, w_bt)  # E[B_t w_u]
    if noise and paths.noise_var_tb.any():  # w and A are affine in each step's noise
        base = weights(plain.spec, _with_bonus(chain, paths), mdp.gamma)
        for step in range(w_bt.shape[1]):
            var_b = p * paths.noise_var_tb[step]
            if not var_b.any():
                continue
            bumped_rewards = paths.rewards_tb.copy()
            bumped_rewards[step] += 1.0
            bumped = _with_bonus(chain, paths, bumped_rewards)
            h_bt = (weights(plain.spec, bumped, mdp.gamma) - base).T
            a_bD = scale_b[:, None] * (1 - kappa) * np.einsum("bt,btd->bd", h_bt, scores_btD)
            second_A = second_A + var_b @ a_bD**2
            second_w = second_w + (h_bt * var_b[:, None]).T @ h_bt
            cross_tD = cross_tD + np.einsum("b,bt,bd->td", var_b, h_bt, a_bD)
    beta_w_D = mu_w @ beta_tD  # sum_t E[B_t] E[w_t]
    others = (k - 2) * second_w + (k - 2) * (k - 3) * np.outer(mu_w, mu_w)  # E[R R'], R the other K - 2
    mean = mu_A - c * (k - 1) * beta_w_D
    self_sq = (
        second_A
        - 2 * c * (k - 1) * (mu_w @ own_tD)
        + c**2
        * (
            (k - 1) * np.einsum("tud,tu->d", scores_ttD, second_w)
            + (k - 1) * (k - 2) * np.einsum("tud,t,u->d", scores_ttD, mu_w, mu_w)
        )
    )
    pair = (
        mu_A**2
        - 2 * c * ((beta_tD * cross_tD).sum(axis=0) + (k - 2) * mu_A * beta_w_D)
        + c**2
        * (
            np.einsum("tud,utd->d", score_weight_ttD, score_weight_ttD)
            + 2 * (k - 2) * np.einsum("td,utd,u->d", beta_tD, score_weight_ttD, mu_w)
            + np.einsum("td,ud,tu->d", beta_tD, beta_tD, others)
        )
    )
    return mean, self_sq / k + (k - 1) / k * pair


def _with_bonus(chain: Chain, paths: _Paths, rewards_tb: np.ndarray | None = None) -> np.ndarray:
    """(T, B) rewards with the entropy bonus beta * H[pi(.|s_t)] added, zero after the end."""
    rewards_tb = paths.rewards_tb if rewards_tb is None else rewards_tb
    if chain.beta == 0:
        return rewards_tb
    mdp = chain.mdp
    bonus_tb = np.stack(
        [entropy_table(chain.theta, mdp, t)[0][paths.states_tb[t]] for t in range(paths.states_tb.shape[0])]
    )
    return np.where(paths.alive_tb, rewards_tb + chain.beta * bonus_tb, 0.0)


def _multisets(n_paths: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Every multiset of k of ``n_paths`` path indices, (M, k), and its multinomial coefficient
    k! / prod_i m_i! (m_i: how often path i is in it)."""
    tuples_mk = np.array(list(itertools.combinations_with_replacement(range(n_paths), k)), dtype=np.int64)
    factorials = np.array([math.factorial(m) for m in range(k + 1)], dtype=float)
    counts_mp = np.zeros((tuples_mk.shape[0], n_paths), dtype=np.int64)
    np.add.at(counts_mp, (np.arange(tuples_mk.shape[0])[:, None], tuples_mk), 1)
    return tuples_mk, math.factorial(k) / factorials[counts_mp].prod(axis=1)


def _tuple_parts(chain: Chain, spec: EstimatorSpec, paths: _Paths) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, second moment) per parameter of a group's mean gradient from one start state, summed
    over every multiset of K paths with its multinomial probability (noiseless rewards), and the
    second moment's trace."""
    mdp, k = chain.mdp, spec.group
    tuples_mk, coefficient_m = _multisets(paths.count, k)
    prob_m = coefficient_m * np.prod(paths.prob_b[tuples_mk], axis=1)
    estimator = resolve(chain, spec)  # no offsets: the group supplies the baseline
    mean = np.zeros(chain.theta.size)
    second = np.zeros(chain.theta.size)
    chunk = max(1, 65_536 // k)
    for first in range(0, tuples_mk.shape[0], chunk):
        columns = tuples_mk[first : first + chunk].ravel()
        grads_bD = episode_gradients(
            mdp, chain.theta, estimator, paths.states_tb[:, columns], paths.actions_tb[:, columns],
            paths.rewards_tb[:, columns], paths.alive_tb[:, columns],
        )  # fmt: skip
        group_mD = grads_bD.reshape(-1, k, grads_bD.shape[1]).mean(axis=1)
        prob = prob_m[first : first + chunk]
        mean += prob @ group_mD
        second += prob @ group_mD**2
    return mean, second, float(second.sum())


def _check_pairs_work(chain: Chain, spec: EstimatorSpec, paths: list[_Paths]) -> None:
    steps, params = chain.steps, chain.theta.size
    entries = sum(p.count for p in paths) * steps * (steps * params * 2 + params * 4 + steps)
    budget.check(
        f"{spec.name}: exact group moments over {sum(p.count for p in paths):,} paths",
        memory=8.0 * (max(p.count for p in paths) * steps * params * 3 + 2 * steps * steps * params),
        seconds=entries
        * (2 if chain.noise_var_sa.any() else 1)
        * (steps + 1)
        / budget.EXACT_ENTRIES_PER_SECOND,
        hint="measure it by sampling (pgvar variance) instead",
    )


def _check_tuples_work(chain: Chain, spec: EstimatorSpec, paths: list[_Paths]) -> None:
    k = spec.group
    counts = [math.comb(p.count + k - 1, k) for p in paths]
    if max(counts) > MAX_TUPLES:
        raise GroupMomentsError(
            f"{spec.name}: {max(counts):,} multisets of {k} paths from one start state, over the "
            f"{MAX_TUPLES:,} that are enumerated"
        )
    steps, params, actions = chain.steps, chain.theta.size, chain.mdp.n_actions
    episodes = sum(counts) * k
    budget.check(
        f"{spec.name}: exact moments over {sum(counts):,} groups of {k} paths",
        memory=8.0 * min(episodes, 65_536) * (steps * actions * 6 + params),
        seconds=episodes * steps * actions * 40 / budget.EXACT_ENTRIES_PER_SECOND,
        hint="measure it by sampling (pgvar variance) instead",
    )
