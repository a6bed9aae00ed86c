"""Learning with the estimators: stochastic gradient ascent, and exact gradient ascent as the reference.

One update of stochastic gradient ascent::

    g_hat = mean of N single-episode estimates sum_t Psi_t * grad log pi(a_t|s_t)   (one fresh batch)
    theta <- theta + lr * g_hat

The reference follows the exact gradient of the same objective, ``theta <- theta + lr * grad J``. With
an entropy bonus beta > 0 both ascend J + beta * E[sum_t gamma^t H[pi(.|s_t)]] (lesson 07, "The entropy
bonus"). Runs are independent; their seeds come from one ``np.random.SeedSequence(seed)``; run r uses
the same stream for every estimator (common random numbers for the first batch, then they diverge).

Baselines that learn:

``lesson`` / ``running``
  per-step running means of G_t (or R) over every earlier episode of the run (kept warm in a
  :class:`~pgvar.montecarlo.RunningBaselines`).
``learned``
  a tabular value V(t, s) (per state; per step too when the horizon is finite) fitted to the
  reward-to-go: after each batch, every visited cell moves toward the batch's mean G_t there,
  ``V <- V + baseline_lr * (mean G_t - V)`` (a cell's first visit sets it to the mean). The table is
  used only from the next batch on, so the estimate stays unbiased. With ``learned_by="observation"``
  states that look alike share one value, as the linear baseline with state-independent features of
  Sutton & Barto's Example 13.1 does.

Everything recorded per update (index 0 = the starting policy) is exact: the objective, J without the
entropy term, the mean policy entropy, the variance of the next estimate and the action probabilities.

All exact numbers come from :mod:`pgvar.exact` (linear solves for unbounded episodes).
"""

from __future__ import annotations

import csv
import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from pgvar.baselines import RunningBaselines
from pgvar.errors import PgvarError, SpecError
from pgvar.estimators import EstimatorSpec, parse_estimator
from pgvar.exact import exact_gradient, exact_moments, expected_visits, objective, state_distribution, unroll
from pgvar.mdp import TabularMDP
from pgvar.montecarlo import UNBOUNDED_CAP, sample_batch_means
from pgvar.policy import entropy_table, softmax, uniform_theta

LEARNED_BY = ("state", "observation")
EXACT_LABEL = "exact gradient"
OUTPUT_NAMES = ("curves.csv", "curves.parquet", "summary.json", "curves.png", "curves.svg")
Progress = Callable[[int], None]


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
      lr: step size of the ascent (> 0).
      batch: episodes N per update (>= 1).
      updates: number of updates per run (>= 1).
      runs: independent runs (>= 1).
      seed: seed of the root ``SeedSequence``.
      entropy: entropy bonus coefficient beta (>= 0).
      baseline_lr: rate at which a ``learned`` baseline moves toward each batch's mean (0 < x <= 1).
      learned_by: ``state`` (one value per step and state) or ``observation`` (look-alike states share).
      variance_every: record the exact variance of the estimate every k updates (and at the first and
        the last); 0 never. It costs one exact-moments computation per record.
    """

    lr: float = 0.1
    batch: int = 1
    updates: int = 100
    runs: int = 5
    seed: int = 0
    entropy: float = 0.0
    baseline_lr: float = 0.1
    learned_by: str = "state"
    variance_every: int = 0

    def __post_init__(self) -> None:
        validate_config(self)

    @property
    def episodes(self) -> int:
        """Episodes per run: updates * batch."""
        return self.updates * self.batch


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def validate_config(config: TrainConfig | dict, names: dict[str, str] | None = None) -> None:
    """Raise :class:`SpecError` (one line naming the option) for the first bad field.

    ``config``: a :class:`TrainConfig` or a dict of its fields; ``names`` maps field names to how the
    caller spells the options (the command line passes ``--lr`` etc.)."""
    values = config if isinstance(config, dict) else {key: getattr(config, key) for key in _FIELDS}
    names = names or {}
    lr, entropy, baseline_lr = values["lr"], values["entropy"], values["baseline_lr"]
    checks: list[tuple[str, bool, str]] = [
        ("lr", _is_number(lr) and math.isfinite(lr) and lr > 0, "a finite number > 0"),
        ("batch", _is_int(values["batch"]) and values["batch"] >= 1, "an integer >= 1"),
        ("updates", _is_int(values["updates"]) and values["updates"] >= 1, "an integer >= 1"),
        ("runs", _is_int(values["runs"]) and values["runs"] >= 1, "an integer >= 1"),
        ("seed", _is_int(values["seed"]) and values["seed"] >= 0, "an integer >= 0"),
        ("entropy", _is_number(entropy) and math.isfinite(entropy) and entropy >= 0, "a finite number >= 0"),
        ("baseline_lr", _is_number(baseline_lr) and 0 < baseline_lr <= 1, "a number in (0, 1]"),
        ("learned_by", values["learned_by"] in LEARNED_BY, f"one of {', '.join(LEARNED_BY)}"),
        (
            "variance_every",
            _is_int(values["variance_every"]) and values["variance_every"] >= 0,
            "an integer >= 0",
        ),
    ]
    for key, ok, wanted in checks:
        if not ok:
            raise SpecError(f"{names.get(key, key)}: must be {wanted}, got {values[key]!r}")


_FIELDS = (
    "lr",
    "batch",
    "updates",
    "runs",
    "seed",
    "entropy",
    "baseline_lr",
    "learned_by",
    "variance_every",
)


# -- the learned baseline --------------------------------------------------------------------------


@dataclass
class LearnedBaseline:
    """A tabular value V(t, s) fitted to the reward-to-go of past batches (see the module docs).

    Attributes:
      value_tg: (T, G) values per step row and group (a group is a state, or an observation).
      seen_tg: (T, G) whether the cell has been visited yet.
      group_s: (S,) group of each state; terminal states get the extra group G (always zero).
      lr: the rate ``baseline_lr``.
    """

    value_tg: np.ndarray
    seen_tg: np.ndarray
    group_s: np.ndarray
    lr: float

    @classmethod
    def start(cls, mdp: TabularMDP, lr: float, by: str = "state") -> LearnedBaseline:
        """All-zero table: one row per step for a finite horizon, one row for unbounded episodes."""
        if by not in LEARNED_BY:
            raise SpecError(f"learned_by: must be one of {', '.join(LEARNED_BY)}, got {by!r}")
        rows = mdp.horizon if mdp.horizon is not None else 1
        n_groups = mdp.n_states if by == "state" else mdp.n_observations
        group_s = np.arange(mdp.n_states) if by == "state" else mdp.observation_s
        group_s = np.where(mdp.terminal_s, n_groups, group_s)
        return cls(np.zeros((rows, n_groups + 1)), np.zeros((rows, n_groups + 1), dtype=bool), group_s, lr)

    def table(self) -> np.ndarray:
        """(T, S) the values per step and state, the form ``learned_ts`` takes."""
        table = self.value_tg[:, self.group_s].copy()
        table[:, self.group_s == self.value_tg.shape[1] - 1] = 0.0
        return table

    def update(self, count_ts: np.ndarray, sum_g_ts: np.ndarray) -> None:
        """Move every visited cell toward the batch's mean reward-to-go there."""
        rows, n_cells = self.value_tg.shape
        count_ts, sum_g_ts = np.asarray(count_ts, float), np.asarray(sum_g_ts, float)
        if rows == 1:
            count_ts, sum_g_ts = count_ts.sum(axis=0, keepdims=True), sum_g_ts.sum(axis=0, keepdims=True)
        else:  # a finite horizon: the sampler's rows are the steps 0 .. H-1
            count_ts, sum_g_ts = count_ts[:rows], sum_g_ts[:rows]
        count_tg = np.zeros((count_ts.shape[0], n_cells))
        sum_tg = np.zeros_like(count_tg)
        np.add.at(count_tg, (slice(None), self.group_s), count_ts)
        np.add.at(sum_tg, (slice(None), self.group_s), sum_g_ts)
        visited = count_tg > 0
        visited[:, -1] = False
        mean_tg = np.divide(sum_tg, count_tg, out=np.zeros_like(sum_tg), where=visited)
        first = visited & ~self.seen_tg[: count_tg.shape[0]]
        again = visited & ~first
        block = self.value_tg[: count_tg.shape[0]]
        block[first] = mean_tg[first]
        block[again] += self.lr * (mean_tg[again] - block[again])
        self.seen_tg[: count_tg.shape[0]] |= visited


# -- exact read-outs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Exact quantities at one theta.

    Attributes:
      objective: J + beta * E[sum_t gamma^t H[pi(.|s_t)]] (equals J when beta = 0).
      J: the expected discounted return, without the entropy term.
      entropy: mean policy entropy per decision: sum_t sum_s d_t(s) H_t(s) / sum_t sum_s d_t(s), d_t the
        (undiscounted) probability of being in non-terminal state s at step t.
      probs: softmax(theta), flattened like theta.
    """

    objective: float
    J: float
    entropy: float
    probs: np.ndarray


def evaluate(mdp: TabularMDP, theta: np.ndarray, entropy: float = 0.0) -> Evaluation:
    """Exact objective, J, mean policy entropy and probabilities at ``theta``."""
    probs = softmax(theta).ravel()
    objective_value = objective(mdp, theta, entropy)
    J = objective(mdp, theta) if entropy else objective_value
    if mdp.horizon is None:  # one policy for every step
        visits_s = expected_visits(mdp, theta)
        entropy_s = entropy_table(theta, mdp)[0]
        mean_entropy = float(visits_s @ entropy_s / visits_s.sum()) if visits_s.sum() > 0 else 0.0
        return Evaluation(objective_value, J, mean_entropy, probs)
    dist_ts = state_distribution(unroll(mdp, theta))[:-1] * ~mdp.terminal_s
    entropy_ts = np.array([entropy_table(theta, mdp, t)[0] for t in range(mdp.horizon)])
    visits = float(dist_ts.sum())
    mean_entropy = float((dist_ts * entropy_ts).sum()) / visits if visits > 0 else 0.0
    return Evaluation(objective_value, J, mean_entropy, probs)


# -- one run ---------------------------------------------------------------------------------------


@dataclass
class Curve:
    """Learning curves of one estimator (or of the exact gradient), every run.

    Arrays have one row per run and one column per record (update 0 = the starting policy):
    ``objective_rk`` (J + beta H), ``J_rk``, ``entropy_rk``, ``variance_rk`` (exact trace of the
    variance of the next batch-mean estimate, NaN where not computed) and ``probs_rkp``.

    A run stops early when its policy leaves the MDP's reach (say, episodes that never end after a
    too-large step): ``stopped_r`` holds the update at which each run stopped (-1: it ran to the end),
    ``reasons`` why, and its later records are NaN, left out of means.
    """

    label: str
    spec: str
    updates_k: np.ndarray
    episodes_k: np.ndarray
    objective_rk: np.ndarray
    J_rk: np.ndarray
    entropy_rk: np.ndarray
    variance_rk: np.ndarray
    probs_rkp: np.ndarray
    theta_rp: np.ndarray
    seconds: float = 0.0
    lr: float = math.nan
    batch: int = 1
    entropy: float = 0.0
    stopped_r: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    reasons: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return self.J_rk.shape[0]

    def metric(self, name: str) -> np.ndarray:
        """(R, K) one of ``objective``, ``J``, ``entropy``, ``variance``."""
        return {
            "objective": self.objective_rk,
            "J": self.J_rk,
            "entropy": self.entropy_rk,
            "variance": self.variance_rk,
        }[name]


def _child(seq: np.random.SeedSequence, key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, key))


class _Recorder:
    def __init__(self, updates: int, n_params: int):
        size = updates + 1
        self.objective = np.full(size, np.nan)
        self.J = np.full(size, np.nan)
        self.entropy = np.full(size, np.nan)
        self.variance = np.full(size, np.nan)
        self.probs = np.full((size, n_params), np.nan)
        self.stopped = -1  # the update at which the run had to stop, -1 if it ran to the end
        self.reason = ""

    def stop(self, update: int, reason: str, updates: int, progress: Progress | None) -> None:
        self.stopped, self.reason = update, reason
        if progress is not None:
            progress(updates - update + 1)

    def record(self, k: int, mdp: TabularMDP, theta: np.ndarray, beta: float) -> None:
        now = evaluate(mdp, theta, beta)
        self.objective[k], self.J[k], self.entropy[k] = now.objective, now.J, now.entropy
        self.probs[k] = now.probs


def _variance_due(k: int, config: TrainConfig) -> bool:
    every = config.variance_every
    return every > 0 and (k % every == 0 or k == config.updates)


def ascend(
    mdp: TabularMDP,
    theta0: np.ndarray,
    spec: EstimatorSpec,
    config: TrainConfig,
    seed: np.random.SeedSequence,
    progress: Progress | None = None,
) -> tuple[_Recorder, np.ndarray]:
    """One run of stochastic gradient ascent with ``spec``; returns its records and the final theta."""
    theta = np.array(theta0, dtype=float)
    running = RunningBaselines.empty(1)  # ``lesson`` / ``running`` baselines, warm across updates
    learned = (
        LearnedBaseline.start(mdp, config.baseline_lr, config.learned_by)
        if spec.baseline == "learned"
        else None
    )
    log = _Recorder(config.updates, theta.size)

    def record(k: int) -> None:
        log.record(k, mdp, theta, spec.entropy)
        if _variance_due(k, config):
            table = learned.table() if learned is not None else None
            moments = exact_moments(mdp, theta, spec, learned_ts=table)
            log.variance[k] = moments.variance_trace / config.batch

    record(0)
    for update in range(1, config.updates + 1):
        try:
            sample = sample_batch_means(
                mdp,
                theta,
                [spec],
                config.batch,
                1,
                _child(seed, update),
                running=running,
                learned_ts=learned.table() if learned is not None else None,
            )
            if sample.truncated_episodes:  # a cut episode would bias the estimate: stop instead
                raise PgvarError(
                    f"{sample.truncated_episodes} episode(s) ran past the sampler's cap of "
                    f"{UNBOUNDED_CAP:,} steps: the policy hardly ends an episode (step size too large?)"
                )
            g_hat = sample.batch_means_emd[0, 0].reshape(theta.shape)
            step = theta + config.lr * g_hat  # gradient ascent on J + beta * H
            if not np.isfinite(step).all():
                raise PgvarError("the logits overflowed (is the step size too large?)")
            theta = step
            if learned is not None:  # fitted on this batch, used from the next one on: no bias
                learned.update(sample.count_ts, sample.sum_g_ts)
            record(update)
        except PgvarError as error:  # e.g. a policy whose episodes never end: the run stops here
            log.stop(update, str(error), config.updates, progress)
            break
        if progress is not None:
            progress(1)
    return log, theta


def ascend_exact(
    mdp: TabularMDP,
    theta0: np.ndarray,
    config: TrainConfig,
    progress: Progress | None = None,
) -> tuple[_Recorder, np.ndarray]:
    """Gradient ascent on the exact gradient (the reference), as many updates with the same lr."""
    theta = np.array(theta0, dtype=float)
    log = _Recorder(config.updates, theta.size)
    log.record(0, mdp, theta, config.entropy)
    for update in range(1, config.updates + 1):
        try:
            step = theta + config.lr * exact_gradient(mdp, theta, config.entropy)
            if not np.isfinite(step).all():
                raise PgvarError("the logits overflowed (is the step size too large?)")
            theta = step
            log.record(update, mdp, theta, config.entropy)
        except PgvarError as error:
            log.stop(update, str(error), config.updates, progress)
            break
        if progress is not None:
            progress(1)
    return log, theta


# -- several runs, several estimators --------------------------------------------------------------


@dataclass
class TrainResult:
    """Every curve of one training call, ready to save and plot."""

    mdp_name: str
    config: TrainConfig
    theta0: np.ndarray
    curves: list[Curve]
    prob_names: list[str] = field(default_factory=list)

    def curve(self, label: str) -> Curve:
        for curve in self.curves:
            if curve.label == label:
                return curve
        raise KeyError(label)

    def summary(self) -> list[dict]:
        """Per curve: the final objective, J and entropy (mean and 95% CI over runs), updates, episodes."""
        rows = []
        for curve in self.curves:
            row = {
                "estimator": curve.label,
                "spec": curve.spec,
                "lr": curve.lr,
                "batch": curve.batch,
                "entropy": curve.entropy,
                "runs": curve.runs,
                "stopped_runs": int((curve.stopped_r >= 0).sum()),
                "updates": int(curve.updates_k[-1]),
                "episodes": int(curve.episodes_k[-1]) if curve.spec != "exact" else 0,
                "seconds": round(curve.seconds, 3),
            }
            for name in ("J", "objective", "entropy"):
                mean, low, high = mean_ci(curve.metric(name)[:, -1:])
                row[f"final_{name}"] = float(mean[0])
                row[f"final_{name}_ci95"] = [float(low[0]), float(high[0])]
            row["initial_J"] = float(np.mean(curve.J_rk[:, 0]))
            rows.append(row)
        return rows


def train(
    mdp: TabularMDP | Sequence[TabularMDP],
    estimators: Sequence[EstimatorSpec | str],
    config: TrainConfig,
    theta0: np.ndarray | None = None,
    *,
    exact_reference: bool = True,
    progress: Progress | None = None,
) -> TrainResult:
    """Train every estimator for ``config.runs`` runs (and the exact-gradient reference).

    Args:
      mdp: one MDP, or one per run (e.g. a different bandit per run, as in Sutton & Barto Fig. 2.5).
      estimators: specs or spec strings; each gets ``config.entropy`` as its entropy bonus.
      config: step size, batch, updates, runs, seed, entropy, baseline settings.
      theta0: starting logits (default: uniform policy).
      exact_reference: also ascend the exact gradient (one run per distinct MDP).
      progress: called with 1 after every update of every run.
    """
    mdps = [mdp] * config.runs if isinstance(mdp, TabularMDP) else list(mdp)
    if len(mdps) != config.runs:
        raise SpecError(f"mdp: got {len(mdps)} MDPs for {config.runs} runs; give one, or one per run")
    theta0 = uniform_theta(mdps[0]) if theta0 is None else np.asarray(theta0, dtype=float)
    specs = [
        replace(item, entropy=config.entropy)
        if isinstance(item, EstimatorSpec)
        else parse_estimator(item, entropy=config.entropy)
        for item in estimators
    ]
    if not specs and not exact_reference:
        raise SpecError("estimator: give at least one estimator (or ask for the exact reference)")
    run_seeds = np.random.SeedSequence(config.seed).spawn(config.runs)
    curves = []
    for spec in specs:
        started = time.perf_counter()
        logs, thetas = [], []
        for run in range(config.runs):
            try:
                log, theta = ascend(mdps[run], theta0, spec, config, run_seeds[run], progress)
            except PgvarError as error:
                raise PgvarError(f"train: {spec.name}, run {run}: {error}") from None
            logs.append(log)
            thetas.append(theta)
        curves.append(_curve(spec.name, spec.canonical, logs, thetas, config, time.perf_counter() - started))
    if exact_reference:
        started = time.perf_counter()
        distinct = [mdps[0]] if all(m is mdps[0] for m in mdps) else mdps
        logs, thetas = [], []
        for model in distinct:
            try:
                log, theta = ascend_exact(model, theta0, config, progress)
            except PgvarError as error:
                raise PgvarError(f"train: exact gradient: {error}") from None
            logs.append(log)
            thetas.append(theta)
        curves.append(_curve(EXACT_LABEL, "exact", logs, thetas, config, time.perf_counter() - started))
    return TrainResult(mdps[0].name, config, theta0, curves, probability_names(mdps[0], theta0.shape))


def _curve(label, spec, logs, thetas, config: TrainConfig, seconds: float) -> Curve:
    updates_k = np.arange(config.updates + 1)
    return Curve(
        label,
        spec,
        updates_k,
        updates_k * config.batch,
        np.array([log.objective for log in logs]),
        np.array([log.J for log in logs]),
        np.array([log.entropy for log in logs]),
        np.array([log.variance for log in logs]),
        np.array([log.probs for log in logs]),
        np.array([theta.ravel() for theta in thetas]),
        seconds,
        config.lr,
        config.batch,
        config.entropy,
        np.array([log.stopped for log in logs], dtype=int),
        [log.reason for log in logs],
    )


def combine(results: Sequence[TrainResult], labels: Sequence[str | None] | None = None) -> TrainResult:
    """Put the curves of several training calls (e.g. one per step size) into one result; ``labels``
    renames the curves in order (None keeps a name). The result's ``config`` is the first call's; every
    curve keeps its own lr, batch and entropy."""
    if not results:
        raise SpecError("combine: give at least one result")
    curves = [curve for result in results for curve in result.curves]
    if labels is not None:
        if len(labels) != len(curves):
            raise SpecError(f"combine: {len(labels)} labels for {len(curves)} curves")
        curves = [
            curve if label is None else replace(curve, label=label)
            for curve, label in zip(curves, labels, strict=True)
        ]
    first = results[0]
    return TrainResult(first.mdp_name, first.config, first.theta0, curves, first.prob_names)


def probability_names(mdp: TabularMDP, shape: tuple[int, ...]) -> list[str]:
    """Column names of the flattened probabilities: ``p[o,a]`` or, per step, ``p[t,o,a]``."""
    index = np.indices(shape).reshape(len(shape), -1).T
    return ["p[" + ",".join(str(i) for i in row) + "]" for row in index]


# -- statistics ------------------------------------------------------------------------------------

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
    z = 1.959963984540054
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
        half = (
            np.array([t_quantile_975(int(n) - 1) if n > 1 else 0.0 for n in np.ravel(count)]).reshape(
                mean.shape
            )
            * np.nan_to_num(spread)
            / np.sqrt(np.maximum(count, 1))
        )
    return mean, mean - half, mean + half


def episodes_to_reach(curve: Curve, threshold: float, metric: str = "J") -> np.ndarray:
    """(R,) episodes until each run's curve first reaches ``threshold`` and stays there at the next
    record too (NaN if never); for the exact curve, updates * batch."""
    values_rk = curve.metric(metric)
    above = values_rk >= threshold
    steady = above & np.concatenate([above[:, 1:], above[:, -1:]], axis=1)
    out = np.full(values_rk.shape[0], np.nan)
    for run, row in enumerate(steady):
        hits = np.flatnonzero(row)
        if hits.size:
            out[run] = curve.episodes_k[hits[0]]
    return out


# -- saving ----------------------------------------------------------------------------------------


def check_out_dir(out: Path, overwrite: bool, option: str = "out") -> None:
    """Refuse (SpecError) to write into ``out`` when it already holds one of our result files."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SpecError(f"{option}: {out} exists and is not a directory")
    if out.is_dir() and not overwrite:
        taken = [name for name in OUTPUT_NAMES if (out / name).exists()]
        if taken:
            raise SpecError(
                f"{option}: {out} already holds results ({', '.join(taken)}); "
                "pass --overwrite to replace them or choose another directory"
            )


def rows(result: TrainResult):
    """The long table: one row per (curve, run, record)."""
    header = ["estimator", "spec", "lr", "batch", "beta", "run", "update", "episodes"]
    header += ["objective", "J", "entropy", "variance"]
    yield header + result.prob_names
    for curve in result.curves:
        for run in range(curve.runs):
            for k, update in enumerate(curve.updates_k):
                yield [
                    curve.label,
                    curve.spec,
                    curve.lr,
                    curve.batch,
                    curve.entropy,
                    run,
                    int(update),
                    int(curve.episodes_k[k]),
                    curve.objective_rk[run, k],
                    curve.J_rk[run, k],
                    curve.entropy_rk[run, k],
                    curve.variance_rk[run, k],
                    *curve.probs_rkp[run, k],
                ]


def _fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.10g}"
    return str(value)


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    """Write to a temporary name, then move it over ``path`` (never a half-written result)."""
    partial = path.with_name(path.name + ".partial")
    try:
        write(partial)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def save(
    result: TrainResult,
    out: Path | str,
    *,
    overwrite: bool = False,
    hlines: dict[str, float] | None = None,
    title: str | None = None,
) -> list[Path]:
    """Write curves.csv (always), curves.parquet (if pyarrow imports), summary.json and the plots
    curves.png / curves.svg into ``out``; refuses to replace earlier results unless ``overwrite``."""
    out = Path(out)
    check_out_dir(out, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    table = list(rows(result))
    written = []

    def write_csv(path: Path) -> None:
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            for row in table:
                writer.writerow([_fmt(v) for v in row])

    _replace(out / "curves.csv", write_csv)
    written.append(out / "curves.csv")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        (out / "curves.parquet").unlink(missing_ok=True)  # never leave a stale one beside the new CSV
    else:
        columns = {name: [row[i] for row in table[1:]] for i, name in enumerate(table[0])}
        _replace(out / "curves.parquet", lambda path: pq.write_table(pa.table(columns), path))
        written.append(out / "curves.parquet")
    payload = {
        "mdp": result.mdp_name,
        "config": asdict(result.config),
        "theta0": result.theta0.tolist(),
        "summary": result.summary(),
        "final_theta": {curve.label: curve.theta_rp.tolist() for curve in result.curves},
        "stopped_runs": {
            curve.label: [
                {"run": run, "update": int(update), "reason": curve.reasons[run]}
                for run, update in enumerate(curve.stopped_r)
                if update >= 0
            ]
            for curve in result.curves
        },
    }
    _replace(out / "summary.json", lambda path: path.write_text(json.dumps(payload, indent=2) + "\n"))
    written.append(out / "summary.json")
    written += plot(result, out / "curves", hlines=hlines, title=title)
    return written


# -- plotting --------------------------------------------------------------------------------------

Panel = tuple[str, str | Callable[[Curve], np.ndarray]]


def default_panels(result: TrainResult) -> list[Panel]:
    """J, the regularised objective when beta > 0, the mean entropy, and the variance when recorded."""
    panels: list[Panel] = [("J (expected return)", "J")]
    if result.config.entropy > 0:
        panels.append((f"J + {result.config.entropy:g}·H (objective)", "objective"))
    panels.append(("mean policy entropy (nats)", "entropy"))
    if any(np.isfinite(curve.variance_rk).any() for curve in result.curves):
        panels.append(("variance of the estimate (trace, exact)", "variance"))
    return panels


def plot(
    result: TrainResult,
    stem: Path | str,
    *,
    panels: Sequence[Panel] | None = None,
    hlines: dict[str, float] | None = None,
    title: str | None = None,
    x: str = "episodes",
) -> list[Path]:
    """Learning curves: the mean over runs with a 95% t-band, one line per estimator and the exact
    reference (dashed), against episodes (or ``x="updates"``); writes ``stem``.png and ``stem``.svg.

    ``panels``: (y label, metric name or function Curve -> (R, K) values); ``hlines``: label -> y drawn
    on the first panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(panels) if panels is not None else default_panels(result)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.8 * len(panels) + 0.6), sharex=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    several_exact = sum(curve.spec == "exact" for curve in result.curves) > 1
    for ax, (ylabel, metric) in zip(axes[:, 0], panels, strict=True):
        for index, curve in enumerate(result.curves):
            values_rk = metric(curve) if callable(metric) else curve.metric(metric)
            xs = curve.episodes_k if x == "episodes" else curve.updates_k
            keep = np.isfinite(values_rk).any(axis=0)
            if not keep.any():
                continue
            mean, low, high = mean_ci(values_rk[:, keep])
            exact = curve.spec == "exact"
            color = colors[index % len(colors)]
            if exact:  # one reference: black; several (combined results): the colour of the curve before
                color = colors[(index - 1) % len(colors)] if several_exact and index > 0 else "black"
            runs = f"{curve.runs} run{'s' if curve.runs > 1 else ''}"
            ax.plot(
                xs[keep],
                mean,
                color=color,
                ls="--" if exact else "-",
                lw=1.4,
                label=f"{curve.label} ({runs})",
            )
            if curve.runs > 1:
                if metric == "variance":  # a positive quantity on a log axis: keep the band inside the runs
                    low = np.maximum(low, np.nanmin(values_rk[:, keep], axis=0))
                ax.fill_between(xs[keep], low, high, color=color, alpha=0.18, lw=0)
        if metric == "variance":
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    styles = [("tab:red", ":"), ("tab:gray", "-."), ("tab:purple", "--"), ("tab:olive", ":")]
    for index, (label, y) in enumerate((hlines or {}).items()):
        color, line = styles[index % len(styles)]
        axes[0, 0].axhline(y, color=color, ls=line, lw=1.2, label=label)
    axes[0, 0].legend(fontsize=8, loc="best")
    exact_note = "; exact: updates × N" if any(curve.spec == "exact" for curve in result.curves) else ""
    axes[-1, 0].set_xlabel(
        f"episodes (batch N = {result.config.batch}{exact_note})" if x == "episodes" else "updates"
    )
    fig.suptitle(
        title
        or f"{result.mdp_name}: lr {result.config.lr:g}, N {result.config.batch}, "
        f"β {result.config.entropy:g}; mean over runs, 95% t-band",
        fontsize=10,
    )
    fig.tight_layout()
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".svg")]
    for path in paths:
        _replace(path, lambda target, fmt=path.suffix[1:]: fig.savefig(target, format=fmt, dpi=110))
    plt.close(fig)
    return paths
