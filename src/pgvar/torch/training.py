"""Training a neural policy on a Gymnasium environment with pgvar's estimators, measuring the gradient
noise along the way (``pgvar train --env``).

One update, REINFORCE (Williams 1992) with the estimator's weights and baselines::

    batch = collect(env, policy, N, seed_k)                  # N fresh episodes of the current policy
    g_bD = episode_gradients(policy, batch, spec, ...)       # (N, D) per-episode estimates of grad J
    p.grad = -(g_bD.mean(0)) for each parameter p            # torch minimises: the negative is ascent
    optimizer.step()                                         # Adam (Kingma & Ba 2015) or plain SGD

and, read off the same N per-episode gradients before the step (:mod:`pgvar.kpi`; McCandlish et al.
2018, "An empirical model of large-batch training")::

    tr Sigma       = sum over parameters of the sample variance (ddof 1) of g_1 .. g_N  (one episode's)
    variance_trace = tr Sigma / N                              # of the batch mean that took the step
    |G|^2          = |mean g|^2 - tr Sigma / N                 # unbiased
    B_simple       = tr Sigma / |G|^2                          # the gradient noise scale, in episodes

One update's |G|^2 is noisy (negative when the noise dominates), so its B_simple is too; the curves
also carry ``noise_scale_ema``, the ratio of exponential moving averages of tr Sigma and |G|^2
(weight ``ema`` on the past, bias-corrected as in Adam and :class:`pgvar.torch.monitor.GradientMonitor`),
and the expected cosine of the batch gradient to the true one read off it, (1 + B_simple / N)^(-1/2).
With N = 1 there is no variance to measure: those columns are NaN.

Baselines (none adds bias: nothing a batch subtracts is computed from that batch):
``lesson``/``running``: per-step running means over every earlier batch of the run
(:class:`~pgvar.torch.gradients.RunningBaseline`; 0 at the first update). ``value`` (and GAE's value
function): a critic (``pgvar.torch.critic.fit_critic``) refitted from scratch at every update on the
PREVIOUS update's N episodes, so it lags the policy by one update; at the first update there is no
earlier batch and V = 0. As in :mod:`pgvar.torch.study`, a GAE weight bootstraps an episode cut by the
time limit from the critic's value of its final observation; return and reward-to-go weights do not.

Reproducibility: run r's collection seeds come from ``np.random.SeedSequence(seed).spawn(runs)[r]``
(one per update), the same for every estimator (common random numbers: the first batch is the same
episodes for all); every estimator starts from a copy of the same initial weights. The same seed gives
the same curves.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from pgvar import budget, kpi
from pgvar.baselines import is_running
from pgvar.errors import PgvarError, SpecError
from pgvar.estimators import EstimatorSpec, parse_estimator
from pgvar.gym.envspec import EnvSpec, env_horizon, parse_env
from pgvar.torch.critic import fit_critic
from pgvar.torch.episodes import ENV_STEPS_PER_SECOND, VECTOR_STEP_SECONDS, Episodes, collect
from pgvar.torch.gradients import FLOPS, RunningBaseline, check_supported, episode_gradients
from pgvar.torch.policies import Policy, torch_threads
from pgvar.validation import check_choice, check_int, check_number, check_seed

__all__ = [
    "COLUMNS",
    "OPTIMIZERS",
    "NetworkConfig",
    "NetworkCurve",
    "NetworkResult",
    "batch_noise",
    "batch_returns",
    "check_estimators",
    "check_network_cost",
    "train_network",
    "train_networks",
    "update_seeds",
    "validate_network_config",
]

OPTIMIZERS = ("adam", "sgd")
ENVS = 8  # sub-environments of the vector environment that collects each batch
CRITIC_EPOCHS = 100  # Adam steps per critic refit (fit_critic's 200 fit CartPole no better)
CRITIC_PARAMETERS = 1_300  # about the parameters of fit_critic's default 32-32 critic, for the cost
CANCELLATION = 1e-10  # |G|^2 below this share of tr Sigma / N is rounding error: taken as 0
FINAL_SHARE = 0.1  # the summary's final return: the mean over the last 10% of updates
Progress = Callable[[int], None]  # called with the number of updates just done


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkConfig:
    """How to train a neural policy.

    Attributes:
      updates: optimizer steps per run (>= 1).
      n: episodes N per update, the batch size (>= 1; the variance columns need >= 2).
      lr: the optimizer's step size (> 0).
      runs: independent runs per estimator (>= 1), each from the same initial weights.
      seed: seed of the root ``SeedSequence`` (>= 0).
      optimizer: ``adam`` (default) or ``sgd`` (plain gradient ascent, as the tabular ``pgvar train``).
      ema: weight of the past in the moving averages behind ``noise_scale_ema``, in [0, 1).
      threads: torch's intra-op threads while training (restored after). 1 by default: these networks
        and batches are small, and on a busy 2-core machine two threads made the critic's fits 20 to 200
        times slower (each small op waits for the other thread).
    """

    updates: int = 100
    n: int = 16
    lr: float = 0.01
    runs: int = 1
    seed: int = 0
    optimizer: str = "adam"
    ema: float = 0.9
    threads: int = 1

    def __post_init__(self) -> None:
        for key, value in validate_network_config(self).items():  # keep the checked types (2.0 -> 2)
            object.__setattr__(self, key, value)

    @property
    def episodes(self) -> int:
        """Episodes per run: updates * n."""
        return self.updates * self.n


def validate_network_config(
    config: NetworkConfig | dict, names: dict[str, str] | None = None
) -> dict[str, object]:
    """The fields of ``config`` in their checked types; :class:`SpecError` (one line naming the option,
    as ``names`` spells it, e.g. ``{"n": "--N"}``) for the first bad one."""
    values = config if isinstance(config, dict) else asdict(config)
    names = names or {}

    def name(key: str) -> str:
        return names.get(key, key)

    return {
        "updates": check_int(values["updates"], name("updates"), low=1),
        "n": check_int(values["n"], name("n"), low=1),
        "lr": check_number(values["lr"], name("lr"), low=0, low_open=True),
        "runs": check_int(values["runs"], name("runs"), low=1),
        "seed": check_seed(values["seed"], name("seed")),
        "optimizer": check_choice(values["optimizer"], name("optimizer"), OPTIMIZERS),
        "ema": check_number(values["ema"], name("ema"), low=0, high=0.999999),
        "threads": check_int(values.get("threads", 1), name("threads"), low=1),
    }


def check_estimators(specs: Sequence[EstimatorSpec]) -> None:
    """Refuse up front (one line) an estimator whose baseline neural policies do not support."""
    for spec in specs:
        check_supported(spec)


def _uses_critic(spec: EstimatorSpec) -> bool:
    """Whether ``spec`` subtracts a critic's V(s_t) (``value``, or GAE's value function)."""
    return spec.baseline == "value"


def check_network_cost(
    env: EnvSpec, policy: Policy, specs: Sequence[EstimatorSpec], config: NetworkConfig, what: str = ""
) -> None:
    """Refuse up front (:class:`~pgvar.budget.BudgetError`, one line) a training whose worst case (every
    episode runs to the time limit) would outlast the current limits: per episode-step, the
    environment's step, the per-episode gradient's passes and, for value baselines, the critic's refits.
    ``what`` names the request (``{horizon}`` is filled in); by default the config's fields."""
    horizon = env_horizon(env)
    parameters = sum(p.numel() for p in policy.parameters())
    steps = float(config.runs) * config.updates * config.n * horizon  # per estimator
    per_step = 1.0 / ENV_STEPS_PER_SECOND + VECTOR_STEP_SECONDS / min(ENVS, config.n)
    per_step += 6.0 * (parameters + policy.activations_per_step()) / FLOPS
    critic = 6.0 * CRITIC_EPOCHS * CRITIC_PARAMETERS / FLOPS
    seconds = sum(steps * (per_step + (critic if _uses_critic(spec) else 0.0)) for spec in specs)
    budget.check(
        what.format(horizon=horizon)
        or f"train: {config.updates} updates x N={config.n} x {config.runs} run(s) x {len(specs)} "
        f"estimator(s), up to {horizon} steps an episode",
        memory=8.0 * config.n * horizon * (policy.n_inputs + 4) * 4 + 8.0 * config.n * parameters * 4,
        seconds=seconds,
        hint="fewer updates, runs, estimators or episodes per update, or a shorter horizon=",
    )


# -- one estimator ---------------------------------------------------------------------------------


METRICS = (
    "mean_return",
    "discounted_return",
    "mean_length",
    "grad_norm",
    "single_trace",
    "variance_trace",
    "squared_norm",
    "noise_scale",
    "noise_scale_ema",
    "expected_cosine",
)


@dataclass
class NetworkCurve:
    """Learning curves of one estimator: arrays (R, K), one row per run, one column per update.

    Record k is update k + 1's batch of N episodes, drawn from the policy BEFORE that update's step.

    Attributes:
      label, spec: the estimator's spelling and canonical form.
      updates_k: (K,) 1 .. updates; episodes_k: (K,) episodes drawn so far, (k + 1) N.
      mean_return_rk: the batch's mean undiscounted episode return; discounted_return_rk: the mean
        of sum_t gamma^t r_t (an unbiased estimate of J); mean_length_rk: its mean episode length.
      grad_norm_rk: |mean g|, the norm of the step's gradient estimate (the ascent direction).
      single_trace_rk: tr Sigma, one episode's gradient variance (sum of per-parameter sample
        variances, ddof 1, over the batch's N episodes); variance_trace_rk: tr Sigma / N, the batch mean's.
      squared_norm_rk: unbiased |G|^2 (may be negative); noise_scale_rk: B_simple = tr Sigma / |G|^2 of
        this update alone (NaN where |G|^2 <= 0); noise_scale_ema_rk: the ratio of moving averages;
        expected_cosine_rk: (1 + noise_scale_ema / N)^(-1/2).
      seconds: wall time of every run of this estimator; policies: the trained policy of each run.
    """

    label: str
    spec: str
    updates_k: np.ndarray
    episodes_k: np.ndarray
    mean_return_rk: np.ndarray
    discounted_return_rk: np.ndarray
    mean_length_rk: np.ndarray
    grad_norm_rk: np.ndarray
    single_trace_rk: np.ndarray
    variance_trace_rk: np.ndarray
    squared_norm_rk: np.ndarray
    noise_scale_rk: np.ndarray
    noise_scale_ema_rk: np.ndarray
    expected_cosine_rk: np.ndarray
    seconds: float = 0.0
    policies: list[Policy] = field(default_factory=list, repr=False, compare=False)

    @property
    def runs(self) -> int:
        return self.mean_return_rk.shape[0]

    def metric(self, name: str) -> np.ndarray:
        """(R, K) one of :data:`METRICS`."""
        if name not in METRICS:
            raise KeyError(name)
        return getattr(self, f"{name}_rk")


def update_seeds(seed: int, runs: int, updates: int) -> np.ndarray:
    """(R, K) collection seeds: run r's come from ``SeedSequence(seed).spawn(runs)[r]``, one per update
    (32-bit, so that the vector environment's seed + i stays an ordinary integer)."""
    children = np.random.SeedSequence(seed).spawn(runs)
    return np.array([child.generate_state(updates, dtype=np.uint32) for child in children], dtype=np.int64)


def _moving_ratio(numerator_k: np.ndarray, denominator_k: np.ndarray, ema: float) -> np.ndarray:
    """(K,) the ratio of the bias-corrected exponential moving averages of two series (``ema`` the
    weight of the past; NaN entries are skipped), NaN where the averaged denominator is not positive."""
    out = np.full(numerator_k.shape, np.nan)
    top = bottom = weight = 0.0
    for k, (a, b) in enumerate(zip(numerator_k, denominator_k, strict=True)):
        if np.isfinite(a) and np.isfinite(b):
            top, bottom = ema * top + (1 - ema) * a, ema * bottom + (1 - ema) * b
            weight = ema * weight + (1 - ema)
        if weight > 0:
            scale = kpi.noise_scale(top / weight, bottom / weight)
            out[k] = np.nan if scale is None else scale
    return out


def _critic_extra(critic, batch: Episodes, spec: EstimatorSpec) -> dict[str, np.ndarray]:
    """values_bt for a value baseline (the critic's, or 0 without one yet), and for a GAE weight the
    value of each cut episode's final observation, which it bootstraps from (as ``pgvar.torch.study``)."""
    zeros = critic is None
    extra = {"values_bt": np.zeros(batch.alive_bt.shape) if zeros else critic.values_bt(batch)}
    if spec.weight == "gae":
        extra["truncation_values_b"] = np.zeros(batch.n_episodes) if zeros else critic.final_values_b(batch)
    return extra


def _optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=lr) if name == "adam" else torch.optim.SGD(parameters, lr=lr)


def _set_ascent_gradient(policy: Policy, mean_d: np.ndarray) -> None:
    """Put -mean_d (flat, in parameter order) into each parameter's .grad: a step down the negative
    is a step up the estimate."""
    start = 0
    for parameter in policy.parameters():
        size = parameter.numel()
        piece = torch.from_numpy(-mean_d[start : start + size]).reshape(parameter.shape)
        parameter.grad = piece.to(parameter.dtype)
        start += size


def batch_noise(grads_bD: np.ndarray) -> dict[str, float]:
    """The noise readings of one update from its N per-episode gradients (N, D), all ``pgvar.kpi``:
    ``single_trace`` tr Sigma (ddof 1), ``variance_trace`` tr Sigma / N, ``squared_norm`` the unbiased
    |G|^2 and ``noise_scale`` B_simple = tr Sigma / |G|^2 (NaN where |G|^2 <= 0); all NaN for N = 1."""
    n = grads_bD.shape[0]
    if n < 2:
        return dict.fromkeys(("single_trace", "variance_trace", "squared_norm", "noise_scale"), math.nan)
    single = kpi.variance_trace(grads_bD)
    squared = kpi.squared_norm_estimate(grads_bD.mean(axis=0), single, n)
    if abs(squared) <= CANCELLATION * single / n:  # |mean|^2 and tr Sigma / N cancel to rounding:
        squared = 0.0  # no signal (one rewarded episode among N, the rest zero, gives exactly 0)
    scale = kpi.noise_scale(single, squared)
    return {
        "single_trace": single,
        "variance_trace": single / n,
        "squared_norm": squared,
        "noise_scale": math.nan if scale is None else scale,
    }


def batch_returns(batch: Episodes) -> dict[str, float]:
    """The batch's mean undiscounted return, mean discounted return and mean length."""
    rewards_bt = np.where(batch.alive_bt, batch.rewards_bt, 0.0)
    return {
        "mean_return": float(rewards_bt.sum(axis=1).mean()),
        "discounted_return": float((rewards_bt @ batch.gamma ** np.arange(batch.n_steps)).mean()),
        "mean_length": float(batch.lengths_b.mean()),
    }


def _run(
    env: EnvSpec,
    policy: Policy,
    spec: EstimatorSpec,
    config: NetworkConfig,
    seeds_k: np.ndarray,
    progress: Progress | None,
    where: str,
) -> tuple[dict[str, np.ndarray], Policy]:
    """One run: ``config.updates`` updates of a copy of ``policy``; returns the records (K,) by metric
    name and the trained policy."""
    policy = copy.deepcopy(policy)
    optimizer = _optimizer(config.optimizer, policy.parameters(), config.lr)
    running = RunningBaseline(spec) if is_running(spec) else None
    critic, previous = None, None
    records: list[dict[str, float]] = []
    for k, seed in enumerate(int(s) for s in seeds_k):
        batch = collect(env, policy, config.n, seed, envs=ENVS)
        extra: dict[str, np.ndarray] = {}
        if running is not None:  # per-step running means of earlier batches
            key = "values_bt" if spec.weight == "gae" else "baseline_bt"
            extra[key] = running.values_bt(batch) if spec.weight == "gae" else running.baseline_bt(batch)
        elif _uses_critic(spec):  # refit on the previous update's episodes, never on this batch
            if previous is not None:
                critic = fit_critic(previous, policy.observation_space, epochs=CRITIC_EPOCHS, seed=seed)
            extra = _critic_extra(critic, batch, spec)
        grads_bD = episode_gradients(policy, batch, spec, **extra).numpy()
        mean_d = grads_bD.mean(axis=0)
        if not np.isfinite(mean_d).all():
            raise PgvarError(
                f"{where}, update {k + 1}: the gradient estimate is not a finite number; lower the "
                "learning rate or scale the rewards down"
            )
        records.append({**batch_returns(batch), "grad_norm": float(np.linalg.norm(mean_d)),
                        **batch_noise(grads_bD)})  # fmt: skip
        if running is not None:
            running.add(policy, batch)  # used from the next batch on (before the step: the same policy)
        optimizer.zero_grad()
        _set_ascent_gradient(policy, mean_d)
        optimizer.step()
        if not all(torch.isfinite(p).all() for p in policy.parameters()):
            raise PgvarError(f"{where}, update {k + 1}: the weights overflowed; lower the learning rate")
        previous = batch
        if progress is not None:
            progress(1)
    log = {name: np.array([record[name] for record in records]) for name in records[0]}
    log["noise_scale_ema"] = _moving_ratio(log["single_trace"], log["squared_norm"], config.ema)
    with np.errstate(invalid="ignore"):
        log["expected_cosine"] = np.array([kpi.expected_cosine(b, config.n) for b in log["noise_scale_ema"]])
    return log, policy


def train_network(
    env: EnvSpec | str,
    policy: Policy,
    spec: EstimatorSpec | str,
    config: NetworkConfig | None = None,
    *,
    progress: Progress | None = None,
) -> NetworkCurve:
    """Train copies of ``policy`` with ``spec`` for ``config.runs`` runs; the learning curves and the
    gradient noise of every update (see the module docstring). ``progress`` is called with 1 after
    every update of every run."""
    env = env if isinstance(env, EnvSpec) else parse_env(env)
    spec = spec if isinstance(spec, EstimatorSpec) else parse_estimator(spec)
    config = config or NetworkConfig()
    check_estimators([spec])
    seeds_rk = update_seeds(config.seed, config.runs, config.updates)
    started = time.perf_counter()
    logs, policies = [], []
    with torch_threads(config.threads):
        for run in range(config.runs):
            where = f"train: {spec.name}" + (f", run {run}" if config.runs > 1 else "")
            log, trained = _run(env, policy, spec, config, seeds_rk[run], progress, where)
            logs.append(log)
            policies.append(trained)
    updates_k = np.arange(1, config.updates + 1)
    arrays = {f"{name}_rk": np.array([log[name] for log in logs]) for name in METRICS}
    return NetworkCurve(
        spec.name, spec.canonical, updates_k, updates_k * config.n, **arrays,
        seconds=time.perf_counter() - started, policies=policies,
    )  # fmt: skip


# -- several estimators ----------------------------------------------------------------------------


@dataclass
class NetworkResult:
    """Every curve of one ``pgvar train --env`` call, ready to save and plot."""

    env: str
    policy: str
    parameters: int
    gamma: float
    horizon: int
    config: NetworkConfig
    curves: list[NetworkCurve]

    def summary(self) -> list[dict]:
        """Per estimator, over runs and over the first and the last 10% of updates ("start", "final"):
        the mean return (the final one with a 95% t-interval over runs); B_simple at the start and over
        the whole run, each the ratio of the mean tr Sigma to the mean |G|^2 over those updates and runs
        (NaN where the mean |G|^2 is not positive: no signal above the noise); the mean variance trace of
        the batch mean at the start and over the run; updates, episodes, seconds."""
        rows = []
        share = max(1, math.ceil(FINAL_SHARE * self.config.updates))
        start, every = slice(0, share), slice(None)
        for curve in self.curves:
            final_r = curve.mean_return_rk[:, -share:].mean(axis=1)
            mean, low, high = kpi.mean_ci(final_r[:, None])
            rows.append({
                "estimator": curve.label,
                "spec": curve.spec,
                "runs": curve.runs,
                "updates": int(curve.updates_k[-1]),
                "episodes": int(curve.episodes_k[-1]),
                "share_updates": share,
                "start_return": float(curve.mean_return_rk[:, start].mean()),
                "final_return": float(mean[0]),
                "final_return_ci95": [float(low[0]), float(high[0])],
                "start_noise_scale": _pooled_noise_scale(curve, start),
                "noise_scale": _pooled_noise_scale(curve, every),
                "start_variance_trace": _mean(curve.variance_trace_rk[:, start]),
                "variance_trace": _mean(curve.variance_trace_rk),
                "seconds": round(curve.seconds, 3),
            })  # fmt: skip
        return rows

    def rows(self) -> Iterator[list]:
        """The long table: a header, then one row per (estimator, run, update)."""
        yield ["estimator", "spec", "run", "update", "episodes", *COLUMNS]
        for curve in self.curves:
            for run in range(curve.runs):
                for k, update in enumerate(curve.updates_k):
                    values = [curve.metric(name)[run, k] for name in COLUMNS]
                    yield [curve.label, curve.spec, run, int(update), int(curve.episodes_k[k]), *values]


def _mean(values: np.ndarray) -> float:
    """The mean of the finite entries, NaN without any (N = 1 records no variance)."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else math.nan


def _pooled_noise_scale(curve: NetworkCurve, updates: slice) -> float:
    """B_simple over some updates of every run: mean tr Sigma / mean |G|^2 (the ratio of averages, not
    the average of the noisy ratios), NaN where the mean |G|^2 is not positive."""
    trace, squared = _mean(curve.single_trace_rk[:, updates]), _mean(curve.squared_norm_rk[:, updates])
    scale = kpi.noise_scale(trace, squared) if math.isfinite(squared) else None
    return math.nan if scale is None else scale


COLUMNS = METRICS  # the per-update columns of curves.csv, after estimator, spec, run, update, episodes


def train_networks(
    env: EnvSpec | str,
    policy: Policy,
    specs: Sequence[EstimatorSpec | str],
    config: NetworkConfig | None = None,
    *,
    progress: Progress | None = None,
) -> NetworkResult:
    """:func:`train_network` for each estimator (each from the same initial weights and the same seeds),
    after checking the whole training's cost against the budget."""
    env = env if isinstance(env, EnvSpec) else parse_env(env)
    config = config or NetworkConfig()
    specs = [s if isinstance(s, EstimatorSpec) else parse_estimator(s) for s in specs]
    if not specs:
        raise SpecError("estimators: give at least one, e.g. vanilla,rtg,rtg+base,gae0.95+value")
    check_estimators(specs)
    check_network_cost(env, policy, specs, config)
    curves = [train_network(env, policy, spec, config, progress=progress) for spec in specs]
    parameters = sum(p.numel() for p in policy.parameters())
    return NetworkResult(env.text, policy.spec, parameters, env.gamma, env_horizon(env), config, curves)
