"""Exact moments of the group baselines of language-model RL: RLOO (``loo``), GRPO's group mean
(``group``) and its std normalisation (``group-std``), with or without ``:per-length``.

A batch of N episodes is N/K groups of K that share a start state (a prompt). Episode i of a group
estimates g_i = l_i (A_i - c B_i sum_{j != i} w_j): w_j is episode j's weight per step (T,), B_i the
(D, T) matrix of its scores per step, l_i = 1/|tau_i| with ``:per-length`` (else 1), and
  loo:   A_i = B_i w_i + e_i,            c = 1/(K - 1)   (Kool, van Hoof & Welling 2019; Ahmadian et al. 2024)
  group: A_i = (1 - 1/K) B_i w_i + e_i,  c = 1/K         (Shao et al. 2024; Liu et al. 2025)
with e_i the entropy bonus's direct term. Given the start state the K episodes are independent, so
the mean and second moment of the group's mean gradient need only moments of one episode: E[A],
E[A^2], E[w], E[w w'], E[B], E[A w'], E[A B], E[B B] and E[B w'] per parameter (:func:`pair_moments`,
"pairs"). Those come from enumerating each start state's paths; reward noise enters through its
variance, as in ``pgvar.exact``. ``group-std`` divides by the group's std and is not linear: its
moments come from enumerating every multiset of K paths ("tuples"), which needs noiseless rewards
(noise that is discrete is a random transition) and few paths. Elsewhere
:class:`GroupMomentsError` says why, and ``pgvar.montecarlo.group_moments_estimate`` samples
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
from pgvar.estimators import EstimatorSpec, ResolvedEstimator, episode_gradients, weights
from pgvar.exact import MAX_ENUMERATED_PATHS, Chain, ExactMoments, unroll
from pgvar.mdp import TabularMDP
from pgvar.paths import count_flow_paths, enumerate_flow_paths
from pgvar.policy import entropy_table, parameter_index, policy_table

MAX_TUPLES = 200_000  # multisets of K paths per start state that "tuples" enumerates at most
METHODS = ("auto", "pairs", "tuples")


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
    of a group's mean gradient. ``method``: ``pairs`` (loo, group), ``tuples`` (any, noiseless
    rewards), ``auto`` the first that applies. Raises :class:`GroupMomentsError` where neither
    does."""
    if not spec.grouped:
        raise PgvarError(f"group_moments: {spec.name!r} has no group baseline")
    if method not in METHODS:
        raise PgvarError(f"method: unknown {method!r} for a group baseline; use {', '.join(METHODS)}")
    chain = chain if chain is not None else unroll(mdp, theta, spec.entropy)
    if chain.lift_zD is not None:
        raise GroupMomentsError("group baselines: exact values are for the logit table only")
    if chain.tail_mass > 0:
        raise GroupMomentsError(
            f"{spec.name}: exact group moments enumerate paths, and episodes without a horizon have no end"
        )
    if method == "auto":
        method = "pairs" if spec.baseline != "group-std" else "tuples"
    if method == "pairs" and spec.baseline == "group-std":
        raise GroupMomentsError(f"{spec.name}: the std normalisation is not linear; use tuples")
    noisy = bool(chain.noise_var_sa.any())
    if method == "tuples" and noisy:
        raise GroupMomentsError(
            f"{spec.name} on {mdp.name!r}: the reward noise is continuous, so K-tuples of episodes cannot "
            "be enumerated"
        )
    rho_s = mdp.initial_s
    paths = [_start_paths(chain, s) for s in start_states(mdp)]
    if method == "pairs":
        _check_pairs_work(chain, spec, paths)
        parts = [_pair_parts(chain, spec, p) for p in paths]
        noiseless = [_pair_parts(chain, spec, p, noise=False) for p in paths] if noisy else parts
    else:
        _check_tuples_work(chain, spec, paths)
        parts = noiseless = [_tuple_parts(chain, spec, p) for p in paths]
    weights_s = rho_s[start_states(mdp)]
    mean = sum(w * m for w, (m, _) in zip(weights_s, parts, strict=True))
    second = sum(w * q for w, (_, q) in zip(weights_s, parts, strict=True))
    second_no_noise = sum(w * q for w, (_, q) in zip(weights_s, noiseless, strict=True))
    k = spec.group
    variance = np.maximum(k * (second - mean**2), 0.0)
    total = float(variance.sum())
    sampling = float(np.maximum(k * (second_no_noise - mean**2), 0.0).sum())
    return ExactMoments(
        spec, mean, variance, total, max(total - sampling, 0.0), sampling, method, chain.steps, 0.0, None
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


def _start_paths(chain: Chain, start: int) -> _Paths:
    mdp = chain.mdp
    initial = np.eye(mdp.n_states)[start]
    if (
        count_flow_paths(initial, chain.flow_tsas, mdp.terminal_s, MAX_ENUMERATED_PATHS)
        > MAX_ENUMERATED_PATHS
    ):
        raise GroupMomentsError(
            f"mdp {mdp.name!r}: exact group moments enumerate each start state's paths, at most "
            f"{MAX_ENUMERATED_PATHS:,}, and start state {start} has more"
        )
    return _Paths(chain, start)


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


def _zero_baseline(chain: Chain, spec: EstimatorSpec) -> ResolvedEstimator:
    mdp = chain.mdp
    plain = replace(spec, baseline="none", group=1, per_length=False, name="")
    return ResolvedEstimator(
        plain, np.zeros((chain.steps, mdp.n_states, mdp.n_actions)), np.zeros((chain.steps + 1, mdp.n_states))
    )


def _pair_parts(chain: Chain, spec: EstimatorSpec, paths: _Paths, noise: bool = True):
    """(mean (D,), second moment (D,)) of a group's mean gradient from one start state (see the
    module docs for A, B, w, c)."""
    mdp, k = chain.mdp, spec.group
    p = paths.prob_b
    plain = _zero_baseline(chain, spec)
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


def _tuple_parts(chain: Chain, spec: EstimatorSpec, paths: _Paths):
    """(mean, second moment) per parameter of a group's mean gradient from one start state, summed
    over every multiset of K paths with its multinomial probability (noiseless rewards)."""
    mdp, k = chain.mdp, spec.group
    tuples_mk, coefficient_m = _multisets(paths.count, k)
    prob_m = coefficient_m * np.prod(paths.prob_b[tuples_mk], axis=1)
    estimator = ResolvedEstimator(
        spec, np.zeros((chain.steps, mdp.n_states, mdp.n_actions)), np.zeros((chain.steps + 1, mdp.n_states))
    )
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
    return mean, second


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
