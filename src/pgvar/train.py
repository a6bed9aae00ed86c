"""Learning with the estimators: stochastic gradient ascent, and exact gradient ascent as the reference.

One update of stochastic gradient ascent::

    g_hat = mean of N single-episode estimates sum_t Psi_t * grad log pi(a_t|s_t)   (one fresh batch)
    theta <- theta + lr * g_hat

The reference follows the exact gradient of the same objective, ``theta <- theta + lr * grad J``. With
an entropy bonus ``entropy`` > 0 both ascend J + entropy * E[sum_t gamma^t H[pi(.|s_t)]] (lesson 07,
"The entropy bonus"). Runs are independent; their seeds come from one ``np.random.SeedSequence(seed)``;
run r uses the same stream for every estimator (common random numbers for the first batch, then they
diverge).

Baselines that learn:

``lesson`` / ``running`` / ``running-value``
  running means of G_t (or R) over every earlier episode of the run, per step (or per step and
  state), kept warm across updates in a :class:`~pgvar.baselines.RunningBaselines`.
``learned``
  a tabular value V(t, s) fitted to the reward-to-go after each batch and used from the next one on
  (:class:`~pgvar.baselines.LearnedBaseline`; ``learned_by="observation"`` shares one value between
  states that look alike).

Group baselines (``loo``, ``group``, ``group-std``: RLOO and GRPO, :mod:`pgvar.groups`) draw each
batch as N/K groups of K episodes that share a start state (a prompt), fresh every update; the
recorded variance is exact where the groups can be enumerated, else left out.

Everything recorded per update (index 0 = the starting policy) is exact: the objective, J without the
entropy term, the mean policy entropy, the variance of the next estimate and the action probabilities.
All exact numbers come from :mod:`pgvar.exact` (linear solves for unbounded episodes). Files and plots
of the curves are :mod:`pgvar.curves`; the mean and t-interval over runs are :mod:`pgvar.kpi`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from pgvar import budget
from pgvar.baselines import LEARNED_BY, LearnedBaseline, RunningBaselines
from pgvar.errors import PgvarError, SpecError
from pgvar.estimators import EstimatorSpec, parse_estimator
from pgvar.exact import exact_gradient, exact_moments, expected_visits, objective, state_distribution, unroll
from pgvar.groups import GroupMomentsError
from pgvar.kpi import mean_ci
from pgvar.mdp import TabularMDP
from pgvar.montecarlo import UNBOUNDED_CAP, sample_batch_means
from pgvar.montecarlo.groups import READ_COST, GroupSampler, check_group_size
from pgvar.policy import entropy_table, softmax, uniform_theta
from pgvar.validation import check_choice, check_int, check_number, check_seed

__all__ = [
    "EXACT_LABEL",
    "Curve",
    "Evaluation",
    "Progress",
    "TrainConfig",
    "TrainResult",
    "ascend",
    "ascend_exact",
    "combine",
    "episodes_to_reach",
    "evaluate",
    "probability_names",
    "train",
    "validate_config",
]

EXACT_LABEL = "exact gradient"
Progress = Callable[[int], None]  # called with the number of updates just done


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """How to train.

    Attributes:
      lr: step size of the ascent (> 0).
      n: episodes N per update, the batch size (>= 1).
      updates: number of updates per run (>= 1).
      runs: independent runs (>= 1).
      seed: seed of the root ``SeedSequence``.
      entropy: entropy bonus coefficient (>= 0).
      baseline_lr: rate at which a ``learned`` baseline moves toward each batch's mean (0 < x <= 1).
      learned_by: ``state`` (one value per step and state) or ``observation`` (look-alike states share).
      variance_every: record the exact variance of the estimate every k updates (and at the first and
        the last); 0 never. It costs one exact-moments computation per record.
    """

    lr: float = 0.1
    n: int = 1
    updates: int = 100
    runs: int = 5
    seed: int = 0
    entropy: float = 0.0
    baseline_lr: float = 0.1
    learned_by: str = "state"
    variance_every: int = 0

    def __post_init__(self) -> None:
        for key, value in validate_config(self).items():  # keep the checked types (2.0 -> 2)
            object.__setattr__(self, key, value)

    @property
    def episodes(self) -> int:
        """Episodes per run: updates * n."""
        return self.updates * self.n


def validate_config(config: TrainConfig | dict, names: dict[str, str] | None = None) -> dict[str, object]:
    """The fields of ``config`` in their checked types; :class:`SpecError` (one line naming the
    option) for the first bad one.

    ``config``: a :class:`TrainConfig` or a dict of its fields; ``names`` maps field names to how the
    caller spells the options (the command line passes ``--lr`` etc.)."""
    values = config if isinstance(config, dict) else asdict(config)
    names = names or {}

    def name(key: str) -> str:
        return names.get(key, key)

    return {
        "lr": check_number(values["lr"], name("lr"), low=0, low_open=True),
        "n": check_int(values["n"], name("n"), low=1),
        "updates": check_int(values["updates"], name("updates"), low=1),
        "runs": check_int(values["runs"], name("runs"), low=1),
        "seed": check_seed(values["seed"], name("seed")),
        "entropy": check_number(values["entropy"], name("entropy"), low=0),
        "baseline_lr": check_number(values["baseline_lr"], name("baseline_lr"), low=0, high=1, low_open=True),
        "learned_by": check_choice(values["learned_by"], name("learned_by"), LEARNED_BY),
        "variance_every": check_int(values["variance_every"], name("variance_every"), low=0),
    }


# -- exact read-outs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """Exact quantities at one theta.

    Attributes:
      objective: J + entropy * E[sum_t gamma^t H[pi(.|s_t)]] (equals J without the bonus).
      J: the expected discounted return, without the entropy term.
      policy_entropy: mean policy entropy per decision: sum_t sum_s d_t(s) H_t(s) / sum_t sum_s d_t(s),
        d_t the (undiscounted) probability of being in non-terminal state s at step t.
      probs: softmax(theta), flattened like theta.
    """

    objective: float
    J: float
    policy_entropy: float
    probs: np.ndarray


def evaluate(mdp: TabularMDP, theta: np.ndarray, entropy: float = 0.0) -> Evaluation:
    """Exact objective, J, mean policy entropy and probabilities at ``theta`` (``entropy``: the bonus
    coefficient of the objective)."""
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
    ``objective_rk`` (J + entropy * H), ``J_rk``, ``policy_entropy_rk``, ``variance_rk`` (exact trace of the
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
    policy_entropy_rk: np.ndarray
    variance_rk: np.ndarray
    probs_rkp: np.ndarray
    theta_rp: np.ndarray
    seconds: float = 0.0
    lr: float = math.nan
    n: int = 1
    entropy: float = 0.0
    stopped_r: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    reasons: list[str] = field(default_factory=list)

    @property
    def runs(self) -> int:
        return self.J_rk.shape[0]

    def metric(self, name: str) -> np.ndarray:
        """(R, K) one of ``objective``, ``J``, ``policy_entropy``, ``variance``."""
        return {
            "objective": self.objective_rk,
            "J": self.J_rk,
            "policy_entropy": self.policy_entropy_rk,
            "variance": self.variance_rk,
        }[name]


def _child(seq: np.random.SeedSequence, key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, key))


class _Recorder:
    def __init__(self, updates: int, n_params: int):
        size = updates + 1
        self.objective = np.full(size, np.nan)
        self.J = np.full(size, np.nan)
        self.policy_entropy = np.full(size, np.nan)
        self.variance = np.full(size, np.nan)
        self.probs = np.full((size, n_params), np.nan)
        self.stopped = -1  # the update at which the run had to stop, -1 if it ran to the end
        self.reason = ""

    def stop(self, update: int, reason: str, updates: int, progress: Progress | None) -> None:
        self.stopped, self.reason = update, reason
        if progress is not None:
            progress(updates - update + 1)

    def record(self, k: int, mdp: TabularMDP, theta: np.ndarray, entropy: float) -> None:
        now = evaluate(mdp, theta, entropy)
        self.objective[k], self.J[k], self.policy_entropy[k] = now.objective, now.J, now.policy_entropy
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
    running = RunningBaselines.empty(1)  # running baselines, warm across updates (the sampler sizes it)
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
            try:
                moments = exact_moments(mdp, theta, spec, learned_ts=table)
            except GroupMomentsError:  # a group baseline whose groups cannot be enumerated: no record
                return
            log.variance[k] = moments.variance_trace / config.n

    record(0)
    for update in range(1, config.updates + 1):
        try:
            if spec.grouped:  # N/K groups of K episodes that share a start state
                sample = GroupSampler(mdp, theta, [spec]).sample(config.n, 1, _child(seed, update))
            else:
                sample = sample_batch_means(
                    mdp,
                    theta,
                    [spec],
                    config.n,
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
            step = theta + config.lr * g_hat  # gradient ascent on J + entropy * H
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
                "N": curve.n,
                "entropy": curve.entropy,
                "runs": curve.runs,
                "stopped_runs": int((curve.stopped_r >= 0).sum()),
                "updates": int(curve.updates_k[-1]),
                "episodes": int(curve.episodes_k[-1]) if curve.spec != "exact" else 0,
                "seconds": round(curve.seconds, 3),
            }
            for name in ("J", "objective", "policy_entropy"):
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
      config: step size, batch size n, updates, runs, seed, entropy, baseline settings.
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
        else parse_estimator(item, entropy=config.entropy, group=None)
        for item in estimators
    ]
    if not specs and not exact_reference:
        raise SpecError("estimators: give at least one (or ask for the exact reference)")
    for spec in specs:  # K = 1 takes any N
        check_group_size(spec, config.n)
    read_cost = sum(READ_COST if spec.grouped else 1.0 for spec in specs)  # in compiled episode reads
    budget.check_steps(
        f"train: {config.runs} runs x {len(specs)} estimators x {config.updates} updates x N={config.n}",
        float(config.runs) * config.updates * config.n * read_cost * _episode_steps(mdps[0], theta0),
    )
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


def _episode_steps(mdp: TabularMDP, theta: np.ndarray) -> float:
    """Steps an episode takes at the start, for the cost estimate: the horizon, or the expected
    length of an unbounded episode (the step cap where episodes hardly end)."""
    if mdp.horizon is not None:
        return float(mdp.horizon)
    try:
        return min(float(expected_visits(mdp, theta).sum()), float(UNBOUNDED_CAP))
    except budget.BudgetError:
        raise
    except PgvarError:
        return float(UNBOUNDED_CAP)


def _curve(label, spec, logs, thetas, config: TrainConfig, seconds: float) -> Curve:
    updates_k = np.arange(config.updates + 1)
    return Curve(
        label,
        spec,
        updates_k,
        updates_k * config.n,
        np.array([log.objective for log in logs]),
        np.array([log.J for log in logs]),
        np.array([log.policy_entropy for log in logs]),
        np.array([log.variance for log in logs]),
        np.array([log.probs for log in logs]),
        np.array([theta.ravel() for theta in thetas]),
        seconds,
        config.lr,
        config.n,
        config.entropy,
        np.array([log.stopped for log in logs], dtype=int),
        [log.reason for log in logs],
    )


def combine(results: Sequence[TrainResult], labels: Sequence[str | None] | None = None) -> TrainResult:
    """Put the curves of several training calls (e.g. one per step size) into one result; ``labels``
    renames the curves in order (None keeps a name). The result's ``config`` is the first call's; every
    curve keeps its own lr, n and entropy."""
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


def episodes_to_reach(curve: Curve, threshold: float, metric: str = "J") -> np.ndarray:
    """(R,) episodes until each run's curve first reaches ``threshold`` and stays there at the next
    record too (NaN if never); for the exact curve, updates * n."""
    values_rk = curve.metric(metric)
    above = values_rk >= threshold
    steady = above & np.concatenate([above[:, 1:], above[:, -1:]], axis=1)
    out = np.full(values_rk.shape[0], np.nan)
    for run, row in enumerate(steady):
        hits = np.flatnonzero(row)
        if hits.size:
            out[run] = curve.episodes_k[hits[0]]
    return out
