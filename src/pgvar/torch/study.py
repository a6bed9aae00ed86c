"""The lesson's question asked of a neural policy on a Gymnasium environment: how noisy is its
gradient, which estimator and batch size fix it, and how far is an estimate from the true gradient?

:func:`network_variance_study` reports the tabular core's KPI (M batches of N episodes, the trace of
the covariance of the batch means, its interval, the ratios to vanilla, SNR), all from ``pgvar.kpi``,
and what deep-RL practice needs besides: a reference gradient from a large sample with its standard
error, the cosine of each batch estimate to the true gradient and between batches (Ilyas et al.
2020), the gradient noise scale B_simple with an interval and the batch size it implies for a
cosine of 0.9 (McCandlish et al. 2018), and the variance per parameter tensor. Where the environment
is tabular (a model to read) and the policy categorical, the lifted exact engine fills in the exact
variances and gradient (``pgvar.torch.lift``); on the LQR (``pgvar/LQR-v0``) with a linear Gaussian
policy, the closed form gives the exact gradient (``pgvar.torch.lqr``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pgvar import budget, kpi
from pgvar.baselines import is_running
from pgvar.errors import PgvarError
from pgvar.estimators import EstimatorSpec, parse_estimator, with_vanilla
from pgvar.exact import unroll, values
from pgvar.gym.envspec import EnvSpec, env_horizon, parse_env
from pgvar.torch.critic import fit_critic
from pgvar.torch.episodes import Episodes, collect, collection_cost
from pgvar.torch.gradients import RunningBaseline, episode_gradients, parameter_layout
from pgvar.torch.lift import exact_network_moments, logit_table
from pgvar.torch.lqr import lqr_setting, setting_gradient
from pgvar.torch.policies import Policy
from pgvar.validation import check_int, check_int_list, check_seed

REFERENCE_CHUNKS = 32  # equal groups of the reference sample, for its standard errors
REFERENCE_SPEC = "rtg"  # unbiased and needs no critic: what the reference gradient averages
WARMUP_EPISODES = 64  # episodes that warm a running baseline up before the first batch
CRITIC_EPISODES = 256  # episodes a value critic is fitted on (never the ones it is used on)


@dataclass(frozen=True)
class Reference:
    """The "true" gradient estimated from a large sample of reward-to-go estimates.

    Attributes:
      episodes: its size; mean: (D,) the estimate; norm, standard_error: |mean| and its standard error.
      mean_variance: the trace of the covariance of ``mean`` (from its chunks).
      squared_norm, squared_norm_ci: unbiased |G|^2 and its 95% interval (``kpi.squared_norm_ci``).
    """

    episodes: int
    mean: np.ndarray
    norm: float
    standard_error: float
    mean_variance: float
    squared_norm: float
    squared_norm_ci: tuple[float, float]


@dataclass(frozen=True)
class NetworkReading:
    """One estimator at one batch size N, for a neural policy (the tabular reading's fields, and more).

    Attributes:
      variance_trace, ci95, effective_dof: the KPI, its 95% interval and its degrees of freedom.
      exact_variance_trace: the exact single-episode trace / N where the environment is tabular.
      vs_vanilla / vs_vanilla_n1: ratio to vanilla at the same N / at N = 1.
      snr: |G|^2 / variance_trace, G the true gradient (exact where known, else the reference).
      cosine_to_true: mean over batches of cos(batch estimate, G).
      pairwise_cosine: mean cosine between two batches' estimates.
      noise_scale, noise_scale_ci: B_simple = N variance_trace / |G|^2 in episodes, and its interval.
      batch_for_cosine: the N whose expected cosine to G is ``kpi.TARGET_COSINE``.
      layer_traces: the KPI's share of each parameter tensor, by name.
    """

    spec: EstimatorSpec
    n: int
    batches: int
    variance_trace: float
    ci95: tuple[float, float]
    effective_dof: float
    mean: np.ndarray
    exact_variance_trace: float | None = None
    vs_vanilla: float | None = None
    vs_vanilla_n1: float | None = None
    snr: float | None = None
    cosine_to_true: float | None = None
    pairwise_cosine: float | None = None
    noise_scale: float | None = None
    noise_scale_ci: tuple[float, float] | None = None
    batch_for_cosine: float | None = None
    layer_traces: dict[str, float] = field(default_factory=dict)

    @property
    def reliable(self) -> bool:
        return self.effective_dof >= kpi.RELIABLE_DOF


@dataclass(frozen=True)
class NetworkStudy:
    """Readings of several estimators and batch sizes for one policy on one environment.

    Attributes:
      true_gradient: (D,) G, exact where the environment is tabular, else the reference's mean;
        ``true_source`` says which ("exact", "reference" or None without either).
      exact_note: why there are no exact values (None where there are).
    """

    env: EnvSpec
    policy: str
    batches: int
    seed: int
    readings: list[NetworkReading]
    slopes: dict[str, float]
    reference: Reference | None
    true_gradient: np.ndarray | None
    true_source: str | None
    parameters: int
    exact_note: str | None = None


def tabular_model(env: EnvSpec, policy: Policy):
    """The environment's tabular model for the exact engine, or (None, why not)."""
    if not policy.discrete or policy.obs_kind != "discrete":
        return None, "exact values need discrete observations and actions"
    from pgvar.gym.tabular import from_gym

    try:
        return from_gym(env.text), None
    except PgvarError as error:
        return None, str(error)


def _batch(episodes: Episodes, start: int, stop: int) -> Episodes:
    """Episodes ``start`` .. ``stop`` - 1."""
    return replace(
        episodes,
        observations_bt=episodes.observations_bt[start:stop],
        actions_bt=episodes.actions_bt[start:stop],
        rewards_bt=episodes.rewards_bt[start:stop],
        alive_bt=episodes.alive_bt[start:stop],
        terminated_b=episodes.terminated_b[start:stop],
        truncated_b=episodes.truncated_b[start:stop],
        final_observations_b=episodes.final_observations_b[start:stop],
    )


class StateValues:
    """V(s_t) for ``value`` baselines and GAE: the exact V where the environment is tabular, else a
    critic fitted on episodes of its own (so the estimates it enters stay unbiased)."""

    def __init__(self, env: EnvSpec, policy: Policy, model, entropy: float, seed: int) -> None:
        self.env, self.policy, self.seed = env, policy, seed
        self.value_ts = None
        self.critic = None
        if model is not None:
            theta_oa = logit_table(policy, int(model.observation_s.max()) + 1)
            self.value_ts = values(unroll(model, theta_oa, entropy))[0]

    def __call__(self, episodes: Episodes) -> tuple[np.ndarray, np.ndarray]:
        """((B, T) V(s_t), (B,) V of each final observation)."""
        if self.value_ts is not None:
            steps_bt = np.broadcast_to(np.arange(episodes.n_steps), episodes.alive_bt.shape)
            states_bt = episodes.observations_bt.numpy()
            last = self.value_ts.shape[0] - 1
            values_bt = self.value_ts[np.minimum(steps_bt, last), states_bt]
            final_b = self.value_ts[
                np.minimum(episodes.lengths_b, last), episodes.final_observations_b.numpy()
            ]
            return np.where(episodes.alive_bt, values_bt, 0.0), final_b
        if self.critic is None:
            fitting = collect(self.env, self.policy, CRITIC_EPISODES, self.seed)
            self.critic = fit_critic(fitting, self.policy.observation_space, seed=self.seed)
        return self.critic.values_bt(episodes), self.critic.final_values_b(episodes)


def _gradients(policy, episodes, spec, values, n) -> np.ndarray:
    """(M, D) batch means of ``spec``'s per-episode gradients over consecutive groups of ``n``."""
    if is_running(spec):
        running = RunningBaseline(spec)
        running.add(policy, _batch(episodes, 0, WARMUP_EPISODES))
        means = []
        for start in range(WARMUP_EPISODES, episodes.n_episodes, n):
            batch = _batch(episodes, start, start + n)
            extra = {}
            if spec.weight == "gae":
                extra["values_bt"] = running.values_bt(batch)
            else:
                extra["baseline_bt"] = running.baseline_bt(batch)
            means.append(episode_gradients(policy, batch, spec, **extra).numpy().mean(axis=0))
            running.add(policy, batch)
        return np.array(means)
    extra = {}
    if spec.baseline == "value" or (spec.weight == "gae" and spec.baseline != "none"):
        values_bt, final_b = values(episodes)
        extra = {"values_bt": values_bt}
        if spec.weight == "gae":  # a value-based weight bootstraps where the time limit cut an episode
            extra["truncation_values_b"] = final_b
    grads_bD = episode_gradients(policy, episodes, spec, **extra).numpy()
    return grads_bD.reshape(-1, n, grads_bD.shape[1]).mean(axis=1)


def _reference(env, policy, episodes: int, seed: int, progress) -> Reference:
    spec = parse_estimator(REFERENCE_SPEC)
    chunks = min(REFERENCE_CHUNKS, episodes)
    size = episodes // chunks
    sample = collect(env, policy, chunks * size, seed)
    if progress:
        progress(chunks * size)
    grads_bD = episode_gradients(policy, sample, spec).numpy()
    chunk_means_hd = grads_bD.reshape(chunks, size, -1).mean(axis=1)
    squared, low, high = kpi.squared_norm_ci(chunk_means_hd)
    norm, error = kpi.norm_standard_error(chunk_means_hd)
    spread = kpi.variance_trace(chunk_means_hd) / chunks
    return Reference(chunks * size, chunk_means_hd.mean(axis=0), norm, error, spread, squared, (low, high))


def planned_episodes(
    specs: Sequence[EstimatorSpec], ns: Sequence[int], batches: int, reference_episodes: int
) -> int:
    """The episodes :func:`network_variance_study` collects (besides a critic's own): the reference
    sample, and M N per batch size (vanilla at N = 1 too) plus a running baseline's warm-up."""
    measured, vanilla = with_vanilla(specs)
    total = (reference_episodes // min(REFERENCE_CHUNKS, reference_episodes)) * min(
        REFERENCE_CHUNKS, reference_episodes) if reference_episodes >= 2 else 0  # fmt: skip
    for n in sorted(set(ns) | {1}):
        mine = measured if n in ns else [vanilla]
        total += batches * n + (WARMUP_EPISODES if any(is_running(s) for s in mine) else 0)
    return total


def check_study_cost(env: EnvSpec, policy: Policy, specs, ns, batches: int, reference_episodes: int) -> None:
    """Refuse up front (one line, ``pgvar.budget``) a study whose episodes would take longer than the
    limit to collect, before any is collected."""
    episodes = planned_episodes(specs, ns, batches, reference_episodes)
    horizon = env_horizon(env)
    _, seconds = collection_cost(policy, episodes, horizon)
    hint = "fewer --batches, smaller --N or --reference-episodes, or a shorter horizon="
    budget.check(f"variance --env ({episodes} episodes of up to {horizon} steps)", seconds=seconds, hint=hint)


def network_variance_study(
    env: EnvSpec | str,
    policy: Policy,
    specs: Sequence[EstimatorSpec],
    ns: Sequence[int] = (1,),
    batches: int = 60,
    seed: int = 0,
    *,
    reference_episodes: int = 2048,
    exact: bool = True,
    progress: Callable[[int], None] | None = None,
) -> NetworkStudy:
    """Measure every estimator at every N for ``policy`` on ``env``; vanilla alongside, and at N = 1,
    as the tabular :func:`pgvar.studies.variance_study` does. ``reference_episodes`` = 0 skips the
    reference sample (where exact values exist, the true gradient needs none)."""
    env = env if isinstance(env, EnvSpec) else parse_env(env)
    measured, vanilla = with_vanilla(specs)
    ns = check_int_list(list(ns), "N", low=1)
    batches = check_int(batches, "batches", low=2)
    seed = check_seed(seed)
    reference_episodes = check_int(reference_episodes, "reference episodes", low=0)
    check_study_cost(env, policy, measured, ns, batches, reference_episodes)
    model, note = tabular_model(env, policy) if exact else (None, None)
    exact_traces, true_gradient, true_source = {}, None, None
    if model is not None:
        try:
            for spec in measured:
                moments = exact_network_moments(policy, model, spec)
                exact_traces[spec] = moments.variance_trace
                if spec.canonical == "rtg+none" or true_gradient is None:
                    true_gradient = moments.mean  # every unbiased estimator's mean; rtg's where asked
            true_source = "exact"
        except PgvarError as error:
            exact_traces, true_gradient, note = {}, None, str(error)
    if model is None and exact and true_gradient is None:
        true_gradient, lqr_note = _lqr_gradient(env, policy, measured[0].entropy)
        if true_gradient is not None:
            true_source = "exact"
            lqr_note = "the gradient is the LQR's closed form; exact variances need a tabular environment"
        note = note if lqr_note is None else lqr_note
    children = [int(c.generate_state(1)[0]) for c in np.random.SeedSequence(seed).spawn(len(ns) + 3)]
    reference = None
    if reference_episodes >= 2:
        reference = _reference(env, policy, reference_episodes, children[-1], progress)
    if true_gradient is None and reference is not None:
        true_gradient, true_source = reference.mean, "reference"
    if true_source == "exact":
        squared_norm, squared_interval = float(true_gradient @ true_gradient), None
    elif reference is not None:
        squared_norm, squared_interval = reference.squared_norm, reference.squared_norm_ci
    else:
        squared_norm = squared_interval = None
    value_of = StateValues(env, policy, model, measured[0].entropy, children[-2])
    layout = parameter_layout(policy)
    edges = np.cumsum([0, *(size for _, size in layout)])
    by_n: dict[int, list[NetworkReading]] = {}
    for n, child in zip(sorted(set(ns) | {1}), children, strict=False):
        mine = measured if n in ns else [vanilla]
        warmup = WARMUP_EPISODES if any(is_running(s) for s in mine) else 0
        episodes = collect(env, policy, batches * n + warmup, child)
        if progress:
            progress(batches * n + warmup)
        readings = []
        for spec in mine:
            if is_running(spec):
                means_md = _gradients(policy, episodes, spec, value_of, n)
            else:
                means_md = _gradients(
                    policy, _batch(episodes, warmup, episodes.n_episodes), spec, value_of, n
                )
            readings.append(_read(spec, n, means_md, exact_traces.get(spec), true_gradient, squared_norm,
                                  squared_interval, layout, edges))  # fmt: skip
        by_n[n] = readings
    readings, slopes = kpi.against_vanilla(by_n, vanilla, ns, specs)
    return NetworkStudy(env, policy.spec, batches, seed, readings, slopes, reference, true_gradient,
                        true_source, int(edges[-1]), note)  # fmt: skip


def _lqr_gradient(env: EnvSpec, policy: Policy, entropy: float) -> tuple[np.ndarray | None, str | None]:
    """The LQR's closed-form gradient for a linear Gaussian policy on ``pgvar/LQR-v0`` (None elsewhere,
    with no note: the tabular note stands), or (None, why not)."""
    setting, _ = lqr_setting(policy, env)
    if setting is None:
        return None, None
    if entropy > 0:
        return None, "the LQR's closed form is for the objective without an entropy bonus"
    try:
        return setting_gradient(setting), None
    except PgvarError as error:
        return None, str(error)


def _read(spec, n, means_md, exact_trace, true_gradient, squared_norm, squared_interval, layout, edges):
    """One :class:`NetworkReading` from the (M, D) batch means."""
    trace = kpi.variance_trace(means_md)
    ci95 = kpi.variance_trace_ci(means_md)
    scale = noise_ci = for_cosine = None
    if squared_norm is not None:
        scale = kpi.noise_scale(n * trace, squared_norm)
        if squared_interval is None:  # |G|^2 exact: only the trace's interval
            squared_interval = (squared_norm, squared_norm)
        noise_ci = kpi.noise_scale_ci((n * ci95[0], n * ci95[1]), squared_interval)
        for_cosine = None if scale is None else kpi.batch_for_cosine(scale, kpi.TARGET_COSINE)
    layers = {
        name: kpi.variance_trace(means_md[:, low:high])
        for (name, _), low, high in zip(layout, edges[:-1], edges[1:], strict=True)
    }
    return NetworkReading(
        spec,
        n,
        means_md.shape[0],
        trace,
        ci95,
        kpi.effective_dof(means_md),
        means_md.mean(axis=0),
        None if exact_trace is None else exact_trace / n,
        snr=None if squared_norm is None else kpi.ratio(squared_norm, trace),
        cosine_to_true=None if true_gradient is None else kpi.mean_cosine(means_md, true_gradient),
        pairwise_cosine=kpi.mean_pairwise_cosine(means_md),
        noise_scale=scale,
        noise_scale_ci=noise_ci,
        batch_for_cosine=for_cosine,
        layer_traces=layers,
    )
