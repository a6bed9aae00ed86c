"""The KPI and every statistic pgvar reports, defined once, on plain arrays.

The lesson's KPI is the variance of the batch-mean gradient: M independent batches of N episodes
each give M estimates g_1 .. g_M in R^D, and the KPI is the trace of their sample covariance, the sum
over parameters of each parameter's variance (what the lesson's bar shows). Everything else here is
read off the same arrays: its 95% interval, the ratio to vanilla, the signal-to-noise ratio
|grad J|^2 / trace, the cosine of each batch estimate to a reference gradient, the slope of
log-variance against log-N (-1 when the variance falls like 1/N), the agreement of independent
batches (mean pairwise cosine), the gradient noise scale B_simple and the batch size it implies, and
the mean over training runs with its t-interval. A tabular sampler, a neural-policy sampler or a
sweep feeds these functions the same arrays, so every surface reports the same numbers.

Shape suffixes follow docs/architecture.md: ``_md`` M batches by D parameters, ``_rd`` R readings by
D, ``_r`` per reading, ``_rk`` runs by records, ``_hd`` H chunks of a reference sample by D.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal


def variance_trace(batch_means_md: np.ndarray) -> float:
    """Trace of the sample covariance (ddof 1) of M batch means, (M, D) -> float: the KPI."""
    batch_means_md = np.asarray(batch_means_md, dtype=float)
    deviations_md = batch_means_md - batch_means_md.mean(axis=0)
    return float(np.einsum("md,md->", deviations_md, deviations_md) / (batch_means_md.shape[0] - 1))


def _squared_deviations(batch_means_md: np.ndarray) -> np.ndarray:
    """(M,) each batch's squared distance from the mean of all, scaled so that their mean is the KPI."""
    batch_means_md = np.asarray(batch_means_md, dtype=float)
    n_batches = batch_means_md.shape[0]
    deviations_md = batch_means_md - batch_means_md.mean(axis=0)
    return np.einsum("md,md->m", deviations_md, deviations_md) * n_batches / (n_batches - 1)


def effective_dof(batch_means_md: np.ndarray) -> float:
    """Satterthwaite's effective degrees of freedom of the KPI, 2 v^2 / Var(v), Var(v) estimated from
    the per-batch squared deviations: about (M - 1) D for well-behaved gradients, small when a few
    batches dominate (heavy tails), where any interval from M batches is unreliable."""
    squared_m = _squared_deviations(batch_means_md)
    spread = float(squared_m.var(ddof=1)) / squared_m.size
    if spread > 0:
        return 2.0 * float(squared_m.mean()) ** 2 / spread
    # no spread to go on: M = 2, or every batch the same (a KPI of 0 from identical batches, as with
    # a sparse reward never seen, is no evidence of zero variance)
    return (squared_m.size - 1) * np.shape(batch_means_md)[1] if squared_m.mean() > 0 else 0.0


#: The expected cosine to the true gradient whose batch size every surface reports (``batch_for_cosine``).
TARGET_COSINE = 0.9

RELIABLE_DOF = 30.0  # below this many effective degrees of freedom an interval is flagged unreliable


def _chi2_quantile(dof: float, z: float) -> float:
    """The chi-square quantile with ``dof`` degrees of freedom at the normal quantile ``z`` (Wilson &
    Hilferty 1931: the cube root of chi-square is nearly normal); 0 where the cube would be negative."""
    root = 1.0 - 2.0 / (9.0 * dof) + z * math.sqrt(2.0 / (9.0 * dof))
    return dof * max(root, 0.0) ** 3


def variance_trace_ci(batch_means_md: np.ndarray) -> tuple[float, float]:
    """95% interval of :func:`variance_trace`: the KPI taken as a scaled chi-square with its
    effective degrees of freedom (Satterthwaite 1946), so the interval is right-skewed like the
    statistic. Measured coverage over 1,000 readings of 60 batches (benchmarks/README.md): 94% on the
    lesson's MDP at N = 1 and 16; with heavy tails less (short corridor: 78% at N = 1, 93% at N = 64),
    where :func:`effective_dof` falls below ``RELIABLE_DOF`` and the reading is flagged."""
    estimate = variance_trace(batch_means_md)
    dof = effective_dof(batch_means_md)
    if dof == 0:  # every batch the same: nothing to build an interval on
        return estimate, estimate
    high = _chi2_quantile(dof, -Z95)
    return dof * estimate / _chi2_quantile(dof, Z95), (dof * estimate / high if high > 0 else math.inf)


def variance_traces(sum_rd: np.ndarray, sum_squares_r: np.ndarray, batches: int) -> np.ndarray:
    """(R,) the KPI of R readings from their sums alone: ``sum_rd`` the sum of each reading's
    ``batches`` batch means, ``sum_squares_r`` the sum of their squared norms. The one-pass form of
    :func:`variance_trace` (rounding error about 1e-16 |mean|^2 / variance), for readings whose batch
    means are never kept."""
    return (sum_squares_r - np.einsum("rd,rd->r", sum_rd, sum_rd) / batches) / (batches - 1)


def ratio(value: float, reference: float) -> float | None:
    """value / reference, None where the reference is not positive (e.g. the ratio to vanilla)."""
    return value / reference if reference > 0 else None


def signal_to_noise(signal_d: np.ndarray, trace: float) -> float:
    """|signal|^2 / trace: how many times the squared gradient exceeds the estimate's variance."""
    signal_d = np.asarray(signal_d, dtype=float)
    return float(signal_d @ signal_d / trace) if trace > 0 else math.inf


def mean_cosine(batch_means_md: np.ndarray, reference_d: np.ndarray) -> float | None:
    """Mean over batches of cos(batch estimate, reference); a zero estimate counts as 0. None when the
    reference is zero."""
    reference_d = np.asarray(reference_d, dtype=float)
    if not np.linalg.norm(reference_d) > 0:
        return None
    norms_m = np.linalg.norm(batch_means_md, axis=1) * np.linalg.norm(reference_d)
    cosines_m = np.divide(
        batch_means_md @ reference_d, norms_m, out=np.zeros(len(norms_m)), where=norms_m > 0
    )
    return float(cosines_m.mean())


def mean_pairwise_cosine(batch_means_md: np.ndarray) -> float | None:
    """Mean over pairs of batches i < j of cos(g_i, g_j): how well two independent estimates agree
    (Ilyas et al. 2020, "A closer look at deep policy gradients"); a zero estimate counts as 0, as in
    :func:`mean_cosine` (a sparse reward leaves many). None with fewer than two batches."""
    batch_means_md = np.asarray(batch_means_md, dtype=float)
    count = batch_means_md.shape[0]
    if count < 2:
        return None
    norms_m = np.linalg.norm(batch_means_md, axis=1)
    units_md = np.divide(batch_means_md, norms_m[:, None], out=np.zeros(batch_means_md.shape),
                         where=norms_m[:, None] > 0)  # fmt: skip
    summed_d = units_md.sum(axis=0)
    return float((summed_d @ summed_d - np.count_nonzero(norms_m)) / (count * (count - 1)))


def squared_norm_estimate(mean_d: np.ndarray, single_trace: float, episodes: int) -> float:
    """Unbiased |G|^2 from the mean of ``episodes`` single-episode gradients: |mean|^2 is too large
    by tr(Sigma) / episodes (McCandlish et al. 2018, "An empirical model of large-batch training",
    appendix A); ``single_trace`` is tr(Sigma) of one episode's gradient."""
    mean_d = np.asarray(mean_d, dtype=float)
    return float(mean_d @ mean_d) - single_trace / episodes


def squared_norm_ci(chunk_means_hd: np.ndarray) -> tuple[float, float, float]:
    """|G|^2 and its 95% interval from K equal chunks of a reference sample, (K, D) their means:
    the unbiased estimate of :func:`squared_norm_estimate` and the delta method's standard error
    2 sqrt(m' C m / K) (C the covariance of the chunk means), the low end clipped at 0."""
    chunk_means_hd = np.asarray(chunk_means_hd, dtype=float)
    count = chunk_means_hd.shape[0]
    mean_d = chunk_means_hd.mean(axis=0)
    deviations_hd = chunk_means_hd - mean_d
    estimate = float(mean_d @ mean_d) - variance_trace(chunk_means_hd) / count
    spread = float(np.sum((deviations_hd @ mean_d) ** 2) / (count - 1))
    half = Z95 * 2.0 * math.sqrt(spread / count)
    return estimate, max(estimate - half, 0.0), estimate + half


def norm_standard_error(chunk_means_hd: np.ndarray) -> tuple[float, float]:
    """|mean| of a reference sample and its standard error, from K equal chunks' means (K, D): the
    spread of the chunk means along the mean's direction, sqrt(u' C u / K) with u = mean / |mean|."""
    chunk_means_hd = np.asarray(chunk_means_hd, dtype=float)
    count = chunk_means_hd.shape[0]
    mean_d = chunk_means_hd.mean(axis=0)
    norm = float(np.linalg.norm(mean_d))
    if norm == 0 or count < 2:
        return norm, math.nan
    along_h = (chunk_means_hd - mean_d) @ (mean_d / norm)
    return norm, float(math.sqrt(along_h @ along_h / (count - 1) / count))


def noise_scale(single_trace: float, squared_norm: float) -> float | None:
    """The simple gradient noise scale B_simple = tr(Sigma) / |G|^2, in episodes (McCandlish et al.
    2018): the batch size at which the estimate's noise equals its signal. None where |G|^2 <= 0."""
    return single_trace / squared_norm if squared_norm > 0 else None


def noise_scale_ci(
    trace_ci: tuple[float, float], squared_norm_interval: tuple[float, float]
) -> tuple[float, float]:
    """A conservative 95%-or-more interval of :func:`noise_scale` from the intervals of its numerator
    and denominator (the low trace over the high norm, the high trace over the low norm)."""
    low_trace, high_trace = trace_ci
    low_norm, high_norm = squared_norm_interval
    return (
        low_trace / high_norm if high_norm > 0 else 0.0,
        high_trace / low_norm if low_norm > 0 else math.inf,
    )


def expected_cosine(noise_scale_value: float, n: float) -> float:
    """Expected cosine between a mean of N episodes' gradients and the true gradient,
    (1 + B_simple / N)^(-1/2) (McCandlish et al. 2018; the noise taken as isotropic-enough)."""
    return (1.0 + noise_scale_value / n) ** -0.5


def batch_for_cosine(noise_scale_value: float, cosine: float = 0.9) -> float:
    """The N at which :func:`expected_cosine` reaches ``cosine``: B_simple / (1 / cosine^2 - 1)."""
    return noise_scale_value / (1.0 / cosine**2 - 1.0)


def two_batch_estimates(
    small_squared_norm: float, big_squared_norm: float, small: float, big: float
) -> tuple[float, float]:
    """|G|^2 and tr(Sigma) from the squared norms of gradients averaged over two batch sizes
    ``small`` < ``big`` (McCandlish et al. 2018, appendix A), for loops where per-episode gradients
    cost too much. Average many such pairs' numerators and denominators before dividing."""
    squared_norm = (big * big_squared_norm - small * small_squared_norm) / (big - small)
    trace = (small_squared_norm - big_squared_norm) / (1.0 / small - 1.0 / big)
    return float(squared_norm), float(trace)


def against_vanilla(by_n: dict, vanilla: object, ns: Sequence[int], specs: Sequence) -> tuple[list, dict]:
    """The readings asked for, each with its ratios to vanilla filled in, and each estimator's slope.

    Args:
      by_n: N -> readings (dataclasses with ``spec``, ``n``, ``variance_trace``, ``vs_vanilla`` and
        ``vs_vanilla_n1``), vanilla's among them, N = 1 included.
      vanilla: vanilla's spec; ns, specs: the batch sizes and estimators asked for, in their order.
    Returns:
      (the readings of ``specs`` at ``ns`` with ``vs_vanilla`` = ratio to vanilla at the same N and
      ``vs_vanilla_n1`` = ratio to vanilla at N = 1; estimator name -> :func:`loglog_slope` over N).
    """
    vanilla_at = {n: next(r for r in rs if r.spec == vanilla).variance_trace for n, rs in by_n.items()}
    readings = [
        replace(r, vs_vanilla=ratio(r.variance_trace, vanilla_at[n]),
                vs_vanilla_n1=ratio(r.variance_trace, vanilla_at[1]))
        for n in ns
        for r in by_n[n]
        if r.spec in specs
    ]  # fmt: skip
    slopes = {}
    for spec in specs:
        own = [r for r in readings if r.spec == spec]
        slope = loglog_slope([r.n for r in own], [r.variance_trace for r in own])
        if slope is not None:
            slopes[spec.name] = slope
    return readings, slopes


def loglog_slope(ns: Sequence[float], traces: Sequence[float]) -> float | None:
    """Least-squares slope of log(trace) on log(N) over the positive traces (-1: falls like 1/N);
    None with fewer than two distinct N."""
    points = [(math.log(n), math.log(v)) for n, v in zip(ns, traces, strict=True) if v > 0]
    if len({x for x, _ in points}) < 2:
        return None
    x, y = np.array(points).T
    return float(np.polyfit(x, y, 1)[0])


# -- across independent runs ----------------------------------------------------------------------

_T975 = (
    12.706204736, 4.302652730, 3.182446305, 2.776445105, 2.570581836, 2.446911851, 2.364624252,
    2.306004135, 2.262157163, 2.228138852, 2.200985160, 2.178812830, 2.160368656, 2.144786688,
    2.131449546, 2.119905299, 2.109815578, 2.100922040, 2.093024054, 2.085963447, 2.079613845,
    2.073873068, 2.068657610, 2.063898562, 2.059538553, 2.055529439, 2.051830516, 2.048407142,
    2.045229642, 2.042272456,
)  # fmt: skip


def t_quantile_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (exact table to 30, then the
    Cornish-Fisher expansion, error < 1e-6)."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = Z95
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def mean_ci(values_rk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over runs (axis 0) and its 95% t-interval; with one run the interval is the mean itself.

    NaN entries (records not computed) are left out."""
    values_rk = np.asarray(values_rk, dtype=float)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        count = np.sum(~np.isnan(values_rk), axis=0)
        mean = np.nanmean(values_rk, axis=0) if values_rk.size else np.zeros(values_rk.shape[1:])
        spread = np.nanstd(values_rk, axis=0, ddof=1) if values_rk.shape[0] > 1 else np.zeros_like(mean)
        quantile = np.array([t_quantile_975(int(n) - 1) if n > 1 else 0.0 for n in np.ravel(count)])
        half = quantile.reshape(mean.shape) * np.nan_to_num(spread) / np.sqrt(np.maximum(count, 1))
    return mean, mean - half, mean + half


def bias_norm(mean: np.ndarray, grad: np.ndarray) -> float:
    """|E g - grad J|: how far an estimator's mean lies from the gradient."""
    return float(np.linalg.norm(np.asarray(mean) - np.asarray(grad)))


def gradient_cosine(mean: np.ndarray, grad: np.ndarray) -> float | None:
    """cos(E g, grad J): 1 where a bias only rescales the step; None where either vector is zero."""
    norms = float(np.linalg.norm(mean) * np.linalg.norm(grad))
    return float(np.dot(mean, grad) / norms) if norms > 0 else None


def gradient_angle(mean_d: np.ndarray, grad_d: np.ndarray) -> float | None:
    """The angle between ``mean_d`` and ``grad_d`` in degrees, from the parts along and across
    ``grad_d`` (arccos of a cosine near 1 would round a small angle away); None where either is 0."""
    norm = float(np.linalg.norm(grad_d))
    if norm == 0 or not np.any(mean_d):
        return None
    along = float(mean_d @ grad_d) / norm
    return math.degrees(math.atan2(float(np.linalg.norm(mean_d - along * grad_d / norm)), along))
