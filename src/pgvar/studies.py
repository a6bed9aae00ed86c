"""The lesson's questions answered with measurements: the KPI for several estimators and batch sizes
beside its exact value (:func:`variance_study`, behind ``pgvar variance``, the explorer and reports),
and how far one reading of it strays (:func:`reading_spread`, behind ``pgvar readings``).

Every statistic comes from ``pgvar.kpi``; the episodes from ``pgvar.montecarlo``; the exact values from
``pgvar.exact``. Vanilla is measured alongside when it is not asked for, so that both ratios the
lesson shows (to vanilla at the same N, and at N = 1) are always there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from pgvar import budget, kpi
from pgvar.estimators import EstimatorSpec, with_vanilla
from pgvar.exact import ExactMoments, chain_gradient, exact_moments, moments_refused, unroll
from pgvar.groups import GroupMomentsError
from pgvar.mdp import TabularMDP
from pgvar.montecarlo import DEFAULT_BATCHES, Sample, Sampler
from pgvar.montecarlo.groups import GROUP_STREAM, GroupSampler, check_group_size
from pgvar.validation import check_int, check_int_list, check_seed


@dataclass(frozen=True)
class VarianceReading:
    """One estimator at one batch size N.

    Attributes:
      variance_trace: the KPI, the trace of the covariance of the batch-mean gradient across batches.
      ci95: its 95% interval (``kpi.variance_trace_ci``).
      effective_dof: its effective degrees of freedom (``kpi.effective_dof``); ``reliable`` is False
        below ``kpi.RELIABLE_DOF``, where heavy tails make one reading and its interval untrustworthy.
      mean: (D,) the mean of the batch means.
      exact_variance_trace: the exact single-episode trace divided by N, where computed.
      vs_vanilla / vs_vanilla_n1: ratio to vanilla at the same N / to vanilla at N = 1.
      snr: |grad J|^2 / variance_trace (exact grad J where known, else the sample mean).
      cosine_to_exact: mean over batches of cos(batch estimate, grad J).
      exact_bias, exact_cosine: |E g - grad J| and cos(E g, grad J) from the exact mean, where
        computed (``kpi.bias_norm``, ``kpi.gradient_cosine``): 0 and 1 for an unbiased estimator.
    """

    spec: EstimatorSpec
    n: int
    batches: int
    variance_trace: float
    ci95: tuple[float, float]
    mean: np.ndarray
    exact_variance_trace: float | None = None
    vs_vanilla: float | None = None
    vs_vanilla_n1: float | None = None
    snr: float | None = None
    cosine_to_exact: float | None = None
    truncated_episodes: int = 0
    effective_dof: float = float("inf")
    exact_bias: float | None = None
    exact_cosine: float | None = None

    @property
    def reliable(self) -> bool:
        return self.effective_dof >= kpi.RELIABLE_DOF


def read_sample(
    sample: Sample, grad: np.ndarray | None, exact: dict[EstimatorSpec, ExactMoments] | None = None
) -> list[VarianceReading]:
    """One :class:`VarianceReading` per estimator of a :class:`~pgvar.montecarlo.Sample`;
    ``exact`` maps specs to their exact moments, where known."""
    readings = []
    for spec, means_md in zip(sample.specs, sample.batch_means_emd, strict=True):
        trace = kpi.variance_trace(means_md)
        mean = means_md.mean(axis=0)
        moments = None if exact is None else exact.get(spec)
        bias = cosine = None
        if moments is not None and grad is not None:
            bias, cosine = kpi.bias_norm(moments.mean, grad), kpi.gradient_cosine(moments.mean, grad)
        readings.append(
            VarianceReading(
                spec,
                sample.n,
                means_md.shape[0],
                trace,
                kpi.variance_trace_ci(means_md),
                mean,
                None if moments is None else moments.variance_trace / sample.n,
                snr=kpi.signal_to_noise(grad if grad is not None else mean, trace),
                cosine_to_exact=None if grad is None else kpi.mean_cosine(means_md, grad),
                truncated_episodes=sample.truncated_episodes,
                effective_dof=kpi.effective_dof(means_md),
                exact_bias=bias,
                exact_cosine=cosine,
            )
        )
    return readings


@dataclass(frozen=True)
class Study:
    """Readings for several estimators and batch sizes, with the ratios and the 1/N slopes (keyed by
    estimator name)."""

    mdp: TabularMDP
    batches: int
    seed: int
    readings: list[VarianceReading]
    grad: np.ndarray | None
    slopes: dict[str, float]
    sampled_paths: int | None = None  # episodes drawn as whole paths, out of this many; None: step by step
    exact_note: str | None = None  # why there are no exact values, where they were asked for and refused


def variance_study(
    mdp: TabularMDP,
    theta: np.ndarray,
    specs: Sequence[EstimatorSpec],
    ns: Sequence[int] = (1,),
    batches: int = DEFAULT_BATCHES,
    seed: int = 0,
    *,
    exact: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Study:
    """Measure every estimator at every N; add the exact values, ratios to vanilla and 1/N slopes.

    Vanilla (return+none) is measured alongside when it is not asked for, at N = 1 too, so that both
    ratios the lesson shows are available. Estimators with a group baseline are measured on batches
    of N/K groups of K episodes sharing a start state (``montecarlo.GroupSampler``; every N must be
    a multiple of K), the others on independent episodes."""
    measured, vanilla = with_vanilla(specs)
    ns = check_int_list(list(ns), "N", low=1)
    check_int(batches, "batches", low=2)
    check_seed(seed)
    grouped = [s for s in measured if s.grouped]
    for spec in grouped:
        for n in ns:
            check_group_size(spec, n)
    chain = grad = moments = None
    notes = [moments_refused(mdp, theta)] if exact else []
    if exact and notes[0] is None:  # exact values beside the measured ones, where the budget allows
        notes = []
        try:
            chain = unroll(mdp, theta, vanilla.entropy)
            grad = chain_gradient(chain)
            moments = {}
            for s in measured:
                try:
                    moments[s] = exact_moments(mdp, theta, s, chain=chain)
                except GroupMomentsError as why:
                    notes.append(f"no exact value for {why}")
        except budget.BudgetError as error:
            chain = grad = moments = None
            notes = [str(error)]
    all_ns = sorted(set(ns) | {1})
    children = np.random.SeedSequence(seed).spawn(len(all_ns))
    group_children = dict(zip(ns, np.random.SeedSequence([seed, GROUP_STREAM]).spawn(len(ns)), strict=True))
    by_n: dict[int, list[VarianceReading]] = {}
    independent = [s for s in measured if not s.grouped]
    everything = Sampler(mdp, theta, independent, chain=chain)
    in_groups = GroupSampler(mdp, theta, grouped) if grouped else None
    vanilla_only = None  # for the N = 1 reference when N = 1 was not asked for
    for n, child in zip(all_ns, children, strict=True):
        if n in ns:
            sampler = everything
        else:
            vanilla_only = vanilla_only or Sampler(mdp, theta, [vanilla], chain=chain)
            sampler = vanilla_only
        found = read_sample(sampler.sample(n, batches, child, progress=progress), grad, moments)
        if n in ns and in_groups is not None:
            found += read_sample(in_groups.sample(n, batches, group_children[n]), grad, moments)
            if progress is not None:
                progress(n * batches)
        by_n[n] = sorted(found, key=lambda r: measured.index(r.spec))
    readings, slopes = kpi.against_vanilla(by_n, vanilla, ns, specs)
    paths = getattr(everything.source, "n_paths", None)
    return Study(mdp, batches, seed, readings, grad, slopes, paths, "; ".join(n for n in notes if n) or None)


@dataclass(frozen=True)
class ReadingSpread:
    """How much one reading of the KPI moves: ``count`` independent readings of one estimator.

    Attributes:
      exact: the exact single-episode variance trace / N, what a reading estimates.
      mean, relative_std: the readings' mean and the standard deviation of one reading / that mean.
      low, high: the 5% and 95% quantiles of the readings.
      agrees_with_exact: fraction of readings in which this estimator and vanilla, measured on the same
        episodes, are ordered as their exact variances are (None for vanilla itself).
    """

    spec: EstimatorSpec
    exact: float
    mean: float
    relative_std: float
    low: float
    high: float
    agrees_with_exact: float | None


def reading_spread(
    mdp: TabularMDP,
    theta: np.ndarray,
    specs: Sequence[EstimatorSpec],
    n: int = 1,
    batches: int = DEFAULT_BATCHES,
    count: int = 1000,
    seed: int = 0,
    *,
    progress: Callable[[int], None] | None = None,
) -> list[ReadingSpread]:
    """Take ``count`` readings of every estimator (and vanilla, for the ordering) in one call and say
    how far one reading strays: the question behind the lesson's bar, which jumps from tick to tick."""
    measured, vanilla = with_vanilla(specs)
    check_seed(seed)
    chain = unroll(mdp, theta, vanilla.entropy)
    exact_e = np.array([exact_moments(mdp, theta, s, chain=chain).variance_trace / n for s in measured])
    sampler = Sampler(mdp, theta, measured, chain=chain)
    traces_re = sampler.readings(n, batches, count, seed, progress=progress).variance_trace_re
    v = measured.index(vanilla)
    spreads = []
    for e, spec in enumerate(specs):
        traces_r = traces_re[:, e]
        mean = float(traces_r.mean())
        agrees = None
        if e != v:
            agrees = float(np.mean(np.sign(traces_r - traces_re[:, v]) == np.sign(exact_e[e] - exact_e[v])))
        low, high = np.quantile(traces_r, [0.05, 0.95])
        std = float(traces_r.std(ddof=1)) if count > 1 else 0.0
        relative = std / mean if mean > 0 else float("nan")
        spreads.append(
            ReadingSpread(spec, float(exact_e[e]), mean, relative, float(low), float(high), agrees)
        )
    return spreads
