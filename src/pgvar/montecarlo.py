"""Move 4 of the lesson, measured: the variance of the batch-mean gradient across independent batches.

This is the lesson widget's KPI. M batches (60 by default) of N episodes each; every estimator is
evaluated on the same episodes (common random numbers, so ratios between estimators are sharp).
KPI = trace of the covariance of the batch-mean gradient across the M batches, i.e. the sum over
parameters of each parameter's variance, with a 95% confidence interval.

Random numbers come from NumPy's Generator (PCG64) seeded with ``seed``: the same seed gives the
same numbers, however the work is chunked. Memory stays bounded: only per-batch sums are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pgvar import _kernels
from pgvar.errors import SpecError
from pgvar.estimators import EstimatorSpec, parse_estimator
from pgvar.exact import Chain, _gradient, exact_moments, resolve, unroll
from pgvar.mdp import TabularMDP
from pgvar.policy import entropy_table, parameter_index, policy_table

DEFAULT_BATCHES = 60
DEFAULT_WARMUP = 1000
UNBOUNDED_CAP = 100_000
_BUFFER = 1 << 20


@dataclass
class RunningBaselines:
    """Per-step running sums behind the ``lesson`` and ``running`` baselines; pass it on to keep
    them warm across calls (the explorer does, as the lesson's widget does)."""

    sum_g_t: np.ndarray
    sum_r_t: np.ndarray
    count_t: np.ndarray

    @classmethod
    def empty(cls, steps: int) -> RunningBaselines:
        return cls(np.zeros(steps), np.zeros(steps), np.zeros(steps))


@dataclass
class Sample:
    """Batch means of every estimator: ``batch_means_emd`` has shape (E, M, D)."""

    specs: list[EstimatorSpec]
    n: int
    batch_means_emd: np.ndarray
    truncated_episodes: int
    running: RunningBaselines = field(repr=False)


def _check_counts(n: int, batches: int, least_batches: int = 2) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SpecError(f"N: batch size must be an integer >= 1, got {n!r}")
    if isinstance(batches, bool) or not isinstance(batches, (int, np.integer)) or batches < least_batches:
        raise SpecError(f"batches: need an integer >= {least_batches} to measure a variance, got {batches!r}")


def _policy_tables(mdp: TabularMDP, theta: np.ndarray):
    steps = theta.shape[0] if theta.ndim == 3 else 1
    probs = np.array([policy_table(theta, mdp, t) for t in range(steps)])
    index = np.array([parameter_index(mdp, theta.shape, t) for t in range(steps)])
    entropy_pairs = [entropy_table(theta, mdp, t) for t in range(steps)]
    entropy_ps = np.array([pair[0] for pair in entropy_pairs])
    grad_psa = np.array([pair[1] for pair in entropy_pairs])
    return probs, np.cumsum(probs, axis=-1), index, entropy_ps, grad_psa


def _transition_tables(mdp: TabularMDP, max_steps: int):
    steps = mdp.horizon if mdp.time_dependent else 1
    trans = np.array([mdp.transitions_at(t) for t in range(steps)])
    fixed = np.where(np.isclose(trans.max(axis=-1), 1.0), trans.argmax(axis=-1), -1).astype(np.int64)
    initial_fixed = int(np.argmax(mdp.initial_s)) if np.isclose(mdp.initial_s.max(), 1.0) else -1
    return np.cumsum(trans, axis=-1), fixed, np.cumsum(mdp.initial_s), initial_fixed


def _pad_steps(array: np.ndarray, steps: int) -> np.ndarray:
    """Repeat the last step of a per-step table up to ``steps`` (unbounded MDPs only)."""
    if array.shape[0] >= steps:
        return array[:steps]
    return np.concatenate([array, np.repeat(array[-1:], steps - array.shape[0], axis=0)])


def sample_batch_means(
    mdp: TabularMDP,
    theta: np.ndarray,
    specs: Sequence[EstimatorSpec],
    n: int,
    batches: int = DEFAULT_BATCHES,
    seed: int | np.random.SeedSequence = 0,
    *,
    warmup: int | None = None,
    running: RunningBaselines | None = None,
    chain: Chain | None = None,
    progress: Callable[[int], None] | None = None,
) -> Sample:
    """Simulate ``warmup + batches * n`` episodes and return every estimator's batch means.

    Running baselines (``lesson``, ``running``) see only episodes of earlier batches or of the warm-up
    (default: 1000 episodes when a running baseline is asked for and ``running`` is not given).
    """
    _check_counts(n, batches, least_batches=1)
    specs = list(specs)
    betas = {spec.entropy for spec in specs}
    if len(betas) != 1:
        raise SpecError("entropy: all estimators measured together must share one entropy coefficient")
    beta = betas.pop()
    chain = chain if chain is not None else unroll(mdp, theta, beta)
    unbounded = mdp.horizon is None
    max_steps = mdp.horizon if not unbounded else max(UNBOUNDED_CAP, 10 * chain.steps)
    needs_running = any(spec.running for spec in specs)
    if warmup is None:
        warmup = DEFAULT_WARMUP if needs_running and running is None else 0
    running = running if running is not None else RunningBaselines.empty(max_steps)

    # fixed baselines (value, optimal) come from the exact engine; running ones live in the kernel
    resolved = [resolve(chain, spec) for spec in specs]
    offsets = np.array([_pad_steps(r.offsets_tsa, max_steps) * (r.spec.running == 0) for r in resolved])
    values = np.array([_pad_steps(r.values_ts, max_steps + 1) * (r.spec.running == 0) for r in resolved])
    weight_kind = np.array([spec.weight_kind for spec in specs], dtype=np.int64)
    rho = np.array([mdp.gamma * spec.lam for spec in specs])
    scaled = np.array([spec.weight != "return" and spec.discount_scores for spec in specs])
    running_kind = np.array([spec.running for spec in specs], dtype=np.int64)
    probs, probs_cdf, index, entropy_ps, grad_psa = _policy_tables(mdp, theta)
    trans_cdf, trans_fixed, initial_cdf, initial_fixed = _transition_tables(mdp, max_steps)
    noise_kind = {"none": 0, "uniform": 1, "gaussian": 2}[mdp.reward_noise]

    seeds = (
        seed.spawn(2) if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed).spawn(2)
    )
    uniform_rng, normal_rng = (np.random.Generator(np.random.PCG64(s)) for s in seeds)
    per_episode = 1 + 3 * max_steps
    buffer = max(_BUFFER, 2 * per_episode)
    uniforms = uniform_rng.random(buffer)
    normals = normal_rng.standard_normal(buffer if noise_kind == 2 else 0)
    sums = np.zeros((len(specs), batches, theta.size))
    pending = [np.zeros(max_steps) for _ in range(3)]
    scratch_int = [np.zeros(max_steps, dtype=np.int64) for _ in range(2)]
    scratch = [np.zeros(max_steps) for _ in range(3)]
    total = warmup + batches * n
    episode, upos, npos, truncated = 0, 0, 0, 0
    while episode < total:
        stop = min(total, episode + max(1, buffer // (4 * per_episode)) * 4)
        done, upos, npos, cut = _kernels.simulate_batches(
            initial_cdf,
            initial_fixed,
            trans_cdf,
            trans_fixed,
            mdp.reward_sas,
            noise_kind,
            mdp.noise_scale_sa,
            mdp.terminal_s,
            mdp.gamma,
            max_steps,
            unbounded,
            probs,
            probs_cdf,
            index,
            entropy_ps,
            grad_psa,
            beta,
            weight_kind,
            rho,
            scaled,
            running_kind,
            offsets,
            values,
            episode,
            stop,
            warmup,
            n,
            uniforms,
            upos,
            normals,
            npos,
            sums,
            running.sum_g_t,
            running.sum_r_t,
            running.count_t,
            *pending,
            *scratch_int,
            *scratch,
        )
        truncated += cut
        if progress is not None and done > episode:
            progress(done - episode)
        episode = done
        if episode < total and upos + per_episode > uniforms.size:
            uniforms = np.concatenate([uniforms[upos:], uniform_rng.random(buffer)])
            upos = 0
        if noise_kind == 2 and episode < total and npos + max_steps > normals.size:
            normals = np.concatenate([normals[npos:], normal_rng.standard_normal(buffer)])
            npos = 0
    return Sample(specs, n, sums / n, truncated, running)


def estimate_gradient(
    mdp: TabularMDP,
    theta: np.ndarray,
    spec: EstimatorSpec,
    n: int,
    seed: int | np.random.SeedSequence = 0,
    *,
    running: RunningBaselines | None = None,
) -> np.ndarray:
    """One batch-mean gradient estimate from ``n`` fresh episodes, shaped like theta (what one step
    of stochastic gradient ascent uses). Pass ``running`` to keep running baselines across steps."""
    sample = sample_batch_means(mdp, theta, [spec], n, 1, seed, running=running)
    return sample.batch_means_emd[0, 0].reshape(theta.shape)


# -- the KPI -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VarianceReading:
    """One estimator at one batch size N.

    Attributes:
      variance_trace: trace of the covariance of the batch-mean gradient across batches.
      ci95: 95% confidence interval of that trace (normal approximation on the per-batch squared
        deviations, so heavy tails at small N widen it).
      exact_variance_trace: the exact single-episode trace divided by N, where computed.
      vs_vanilla / vs_vanilla_n1: ratio to vanilla at the same N / to vanilla at N = 1.
      snr: |grad J|^2 / variance_trace (exact grad J where known, else the sample mean).
      cosine_to_exact: mean over batches of cos(batch estimate, grad J).
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


def variance_trace(batch_means_md: np.ndarray) -> tuple[float, tuple[float, float]]:
    """Trace of the sample covariance of (M, D) batch means, and its 95% confidence interval."""
    n_batches = batch_means_md.shape[0]
    deviations_sq = (
        ((batch_means_md - batch_means_md.mean(axis=0)) ** 2).sum(axis=1) * n_batches / (n_batches - 1)
    )
    estimate = float(deviations_sq.mean())
    half = 1.959963984540054 * float(deviations_sq.std(ddof=1)) / np.sqrt(n_batches)
    return estimate, (max(estimate - half, 0.0), estimate + half)


def read_sample(
    sample: Sample, grad: np.ndarray | None, exact_traces: dict[str, float] | None = None
) -> list[VarianceReading]:
    """Turn a :class:`Sample` into one :class:`VarianceReading` per estimator."""
    readings = []
    for spec, means_md in zip(sample.specs, sample.batch_means_emd, strict=True):
        trace, ci = variance_trace(means_md)
        mean = means_md.mean(axis=0)
        signal = grad if grad is not None else mean
        snr = float(signal @ signal / trace) if trace > 0 else float("inf")
        cosine = None
        if grad is not None and np.linalg.norm(grad) > 0:
            norms = np.linalg.norm(means_md, axis=1) * np.linalg.norm(grad)
            cosine = float(
                np.mean(np.divide(means_md @ grad, norms, out=np.zeros(len(norms)), where=norms > 0))
            )
        exact = (
            None
            if exact_traces is None or spec.canonical not in exact_traces
            else exact_traces[spec.canonical] / sample.n
        )
        readings.append(
            VarianceReading(
                spec,
                sample.n,
                means_md.shape[0],
                trace,
                ci,
                mean,
                exact,
                snr=snr,
                cosine_to_exact=cosine,
                truncated_episodes=sample.truncated_episodes,
            )
        )
    return readings


@dataclass(frozen=True)
class Study:
    """Readings for several estimators and batch sizes, with the ratios and the 1/N slopes."""

    mdp: TabularMDP
    batches: int
    seed: int
    readings: list[VarianceReading]
    grad: np.ndarray | None
    slopes: dict[str, float]


VANILLA = parse_estimator("vanilla")


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
    ratios the lesson shows are available.
    """
    specs = list(specs)
    if not specs:
        raise SpecError("estimators: give at least one")
    for n in ns:
        _check_counts(n, batches)
    beta = specs[0].entropy
    vanilla = EstimatorSpec("return", "none", entropy=beta, label="vanilla")
    measured = specs if any(s.canonical == vanilla.canonical for s in specs) else [*specs, vanilla]
    chain = unroll(mdp, theta, beta)
    grad = _gradient(chain) if exact else None
    exact_traces = None
    if exact:
        exact_traces = {
            s.canonical: exact_moments(mdp, theta, s, chain=chain).variance_trace for s in measured
        }
    all_ns = sorted(set(ns) | {1})
    children = np.random.SeedSequence(seed).spawn(len(all_ns))
    by_n: dict[int, list[VarianceReading]] = {}
    for n, child in zip(all_ns, children, strict=True):
        run_specs = measured if n in ns else [vanilla]
        sample = sample_batch_means(mdp, theta, run_specs, n, batches, child, chain=chain, progress=progress)
        by_n[n] = read_sample(sample, grad, exact_traces)
    vanilla_at = {
        n: next(r for r in rs if r.spec.canonical == vanilla.canonical).variance_trace
        for n, rs in by_n.items()
    }
    readings = []
    for n in ns:
        for reading in by_n[n]:
            if reading.spec not in specs and reading.spec.canonical not in {s.canonical for s in specs}:
                continue
            readings.append(_with_ratios(reading, vanilla_at[n], vanilla_at[1]))
    slopes = {}
    if len(set(ns)) >= 2:
        for spec in specs:
            points = [
                (np.log(r.n), np.log(r.variance_trace))
                for r in readings
                if r.spec.canonical == spec.canonical and r.variance_trace > 0
            ]
            if len(points) >= 2:
                x, y = np.array(points).T
                slopes[spec.name] = float(np.polyfit(x, y, 1)[0])
    return Study(mdp, batches, seed, readings, grad, slopes)


def _with_ratios(reading: VarianceReading, vanilla_same_n: float, vanilla_n1: float) -> VarianceReading:
    from dataclasses import replace

    return replace(
        reading,
        vs_vanilla=reading.variance_trace / vanilla_same_n if vanilla_same_n > 0 else None,
        vs_vanilla_n1=reading.variance_trace / vanilla_n1 if vanilla_n1 > 0 else None,
    )
