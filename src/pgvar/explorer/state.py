"""Session state and tick logic of ``pgvar explore``: plain Python, no Panel, testable on its own.

One :class:`ExplorerState` per browser session holds the knobs, the policy, the running baselines
(kept warm across ticks, as the lesson's widget keeps ``bRtg``), a bounded history and the exact
values. Every number comes from the core: :class:`pgvar.montecarlo.Sampler` (one plan per setting) and
:func:`pgvar.studies.read_sample` for the measured variance and its 95% confidence interval,
:func:`pgvar.exact.exact_moments` for the exact single-episode variance (divided by N), its split
into reward noise and action sampling, :func:`pgvar.exact.objective` for J and
:func:`pgvar.montecarlo.estimate_gradient` for the learning steps. The explorer only divides
(variance over N, ratio to vanilla) and never computes a variance of its own. Names and colours come
from :mod:`pgvar.vocabulary`, checks from :mod:`pgvar.validation`; formatting for export (CSV, PNG)
lives in :mod:`pgvar.explorer.export`.

Cost control: the exact values depend on the MDP, the policy, gamma, the entropy coefficient, the
baseline kind and lambda, but not on the three main knobs (the four configurations are computed
together), so they are recomputed only when one of those changes, at most once per tick, and in a
worker thread when an executor is given (the page then shows "computing" until the result arrives; a
newer change supersedes an older one). A tick measures the four configurations at the current N on
the same episodes (common random numbers) plus vanilla at N = 1 for the ratio.

Limits: every library call here checks its cost against the limits in force (:mod:`pgvar.budget`);
the page runs each session's work under ``budget.EXPLORER`` in that session's worker thread, and the
exact values' worker inherits those limits (the job is submitted with a copy of the caller's
context). A refusal (:class:`pgvar.budget.BudgetError`) becomes a message, never a crash.

Threads: the state is not thread-safe. The page calls it from one worker thread per session and reads
only :class:`Frame` copies (:meth:`ExplorerState.snapshot`), so the page's event loop never waits on
it and never sees it half changed.

Running baselines and learning: the running means stay warm across ticks and across learning steps
(as the lesson's ``bRtg`` does while it trains), so while learning they average episodes of the
recent policies. When learning stops (switched off, or stopped by an error) they restart, and they
restart whenever the policy is changed by hand: a reading of a fixed policy then compares with its
exact value (a mean warmed by thousands of episodes of older policies would hardly move and would
hold the measured variance away from the exact line indefinitely).
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgvar import envs
from pgvar.baselines import RunningBaselines
from pgvar.errors import PgvarError, SpecError
from pgvar.estimators import BIAS_FREE_FOR_GAE, EstimatorSpec, parse_estimator
from pgvar.exact import ExactMoments, exact_gradient, exact_moments, objective, state_distribution, unroll
from pgvar.groups import GroupMomentsError
from pgvar.mdp import TabularMDP
from pgvar.mdpfile import resolve_mdp
from pgvar.montecarlo import DEFAULT_BATCHES, Sampler, estimate_gradient
from pgvar.montecarlo.groups import GROUP_STREAM, GroupSampler
from pgvar.policy import softmax
from pgvar.studies import VarianceReading, read_sample
from pgvar.validation import check_choice, check_flag, check_int, check_number
from pgvar.vocabulary import (
    BASELINE_KINDS,
    BASELINE_SHORT,
    GROUP_BASELINES,
    LESSON_COLOURS,
    LESSON_LABELS,
    label,
)

# -- ranges: each defined once, for the checks (library calls, query string) and the widgets -------


@dataclass(frozen=True)
class Span:
    """A number knob's range, shared by its check and its slider (``step`` is the slider's only)."""

    low: float
    high: float
    step: float

    def check(self, value: object, name: str) -> float:
        return check_number(value, name, low=self.low, high=self.high)


#: Batch sizes offered by the N slider (a log scale, as in the lesson: 1 to 1024).
N_CHOICES: tuple[int, ...] = tuple(2**k for k in range(11))
MAX_N = N_CHOICES[-1]
#: Batches per reading offered by the page (more batches: a tighter confidence interval, a dearer tick).
BATCH_CHOICES: tuple[int, ...] = tuple(sorted({20, DEFAULT_BATCHES, 120, 240, 500, 1000}))
LAMBDA = Span(0.0, 1.0, 0.05)
GAMMA = Span(0.0, 1.0, 0.01)
ENTROPY = Span(0.0, 1.0, 0.01)
LEARNING_RATE = Span(0.01, 2.0, 0.01)
MIN_HISTORY, MAX_HISTORY = 2, 10_000
LOGIT_LIMIT = 8.0

#: (reward-to-go, baseline) of the four configurations, in the lesson's order.
CONFIGS: tuple[tuple[bool, bool], ...] = ((False, False), (True, False), (False, True), (True, True))
#: The baseline kinds the page offers (``none`` is the baseline switch; ``learned`` needs a table).
PAGE_BASELINE_KINDS: tuple[str, ...] = (
    "lesson",
    "running",
    "running-value",
    "value",
    "optimal",
    "optimal-per-parameter",
    *GROUP_BASELINES,
)
#: Group sizes K the page offers for the group baselines (powers of two, so that N >= K is whole groups).
GROUP_CHOICES: tuple[int, ...] = (2, 4, 8, 16, 32, 64)
DEFAULT_GROUP = 4
DEFAULT_HISTORY = 200
#: A bias below this (relative to max(1, |grad J|)) is rounding: the page shows none.
BIAS_TOLERANCE = 1e-9
DEFAULT_LEARNING_RATE = 0.5
#: A tick that would simulate more agent-steps than this is refused with a message (the server would
#: stall); the lesson's MDP at N = 1024 and 60 batches needs about 1.8e5.
MAX_STEPS_PER_TICK = 2e7
#: Exact values that took less than this last time are computed inside the tick (no waiting a tick).
SYNC_EXACT_SECONDS = 0.03


# -- knobs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Knobs:
    """Everything the page lets one choose, apart from the MDP and the policy.

    ``gamma`` None keeps the MDP's own discount; ``entropy`` is the entropy bonus's coefficient.
    """

    rtg: bool = False
    baseline: bool = False
    n: int = 1
    baseline_kind: str = "lesson"
    lam: float = 1.0
    gamma: float | None = None
    entropy: float = 0.0
    batches: int = DEFAULT_BATCHES
    group: int = DEFAULT_GROUP

    @property
    def grouped(self) -> bool:
        """The baseline kind is a group baseline: N is then at least the group size K."""
        return self.baseline_kind in GROUP_BASELINES


def spec_text(rtg: bool, baseline: bool, knobs: Knobs) -> str:
    """The core's spec string (``WEIGHT+BASELINE``) of one knob combination."""
    weight = "return" if not rtg else "rtg" if knobs.lam >= 1.0 else f"gae{knobs.lam:g}"
    return f"{weight}+{knobs.baseline_kind if baseline else 'none'}"


#: The lesson's spec in each slot of CONFIGS: a slot keeps its colour when GAE or another baseline
#: kind changes what it measures.
LESSON_SPECS: tuple[str, ...] = tuple(spec_text(r, b, Knobs()) for r, b in CONFIGS)
CONFIG_COLOURS: tuple[str, ...] = tuple(LESSON_COLOURS[spec] for spec in LESSON_SPECS)


def config_label(rtg: bool, baseline: bool, knobs: Knobs | None = None) -> str:
    """The name the page shows: the lesson's four names, adjusted for GAE and other baseline kinds."""
    knobs = knobs or Knobs()
    canonical = parse_estimator(spec_text(rtg, baseline, knobs), group=knobs.group).canonical
    if canonical in LESSON_LABELS:
        return LESSON_LABELS[canonical]
    name = label(LESSON_SPECS[CONFIGS.index((rtg, baseline))])
    if rtg and knobs.lam < 1.0:
        name = f"GAE λ={knobs.lam:g}" + (" + baseline" if baseline else "")
    if baseline and BASELINE_SHORT[knobs.baseline_kind]:
        name += f" ({BASELINE_SHORT[knobs.baseline_kind]})"
    return name


def _check_n(value: object, name: str) -> int:
    n = check_int(value, name, low=1, high=MAX_N)
    if n not in N_CHOICES:
        raise SpecError(f"{name}: must be a power of two from 1 to {MAX_N}, got {value!r}")
    return n


def _check_group(value: object, name: str) -> int:
    group = check_int(value, name, low=GROUP_CHOICES[0], high=GROUP_CHOICES[-1])
    if group not in GROUP_CHOICES:
        raise SpecError(f"{name}: must be one of {', '.join(map(str, GROUP_CHOICES))}, got {value!r}")
    return group


def _check_batches(value: object, name: str) -> int:
    batches = check_int(value, name, low=BATCH_CHOICES[0], high=BATCH_CHOICES[-1])
    if batches not in BATCH_CHOICES:
        raise SpecError(f"{name}: must be one of {', '.join(map(str, BATCH_CHOICES))}, got {value!r}")
    return batches


#: Query-string key of each knob: the name a message gives it.
KNOB_KEYS: dict[str, str] = {
    "n": "N",
    "rtg": "rtg",
    "baseline": "baseline",
    "baseline_kind": "kind",
    "lam": "lam",
    "gamma": "gamma",
    "entropy": "entropy",
    "batches": "batches",
    "group": "group",
}
_KNOB_CHECKS: dict[str, Callable[[object, str], object]] = {
    "n": _check_n,
    "rtg": check_flag,
    "baseline": check_flag,
    "baseline_kind": lambda value, name: check_choice(value, name, PAGE_BASELINE_KINDS),
    "lam": LAMBDA.check,
    "gamma": lambda value, name: None if value is None else GAMMA.check(value, name),
    "entropy": ENTROPY.check,
    "batches": _check_batches,
    "group": _check_group,
}


def check_knobs(knobs: Knobs, changes: Mapping[str, object]) -> Knobs:
    """``knobs`` with ``changes`` applied, every value checked; raises :class:`SpecError`."""
    unknown = set(changes) - set(_KNOB_CHECKS)
    if unknown:
        raise SpecError(f"knobs: unknown {', '.join(sorted(unknown))}; use {', '.join(sorted(_KNOB_CHECKS))}")
    values = {name: _KNOB_CHECKS[name](value, KNOB_KEYS[name]) for name, value in changes.items()}
    new = dataclasses.replace(knobs, **values)
    if new.grouped and new.n < new.group:  # a batch is whole groups: N follows K up
        new = dataclasses.replace(new, n=new.group)
    if new.lam < 1.0 and new.baseline_kind not in BIAS_FREE_FOR_GAE:
        allowed = ", ".join(BASELINE_KINDS[k] for k in PAGE_BASELINE_KINDS if k in BIAS_FREE_FOR_GAE)
        raise SpecError(
            f"GAE (lambda < 1) takes its baseline as the value function: choose {allowed}, or set lambda to 1"
        )
    return new


def check_history(value: object, name: str = "history") -> int:
    """Length of the rolling history."""
    return check_int(value, name, low=MIN_HISTORY, high=MAX_HISTORY)


def check_learning_rate(value: object, name: str = "lr") -> float:
    return LEARNING_RATE.check(value, name)


#: Steps of the guided story (0: no story, free play); see :mod:`pgvar.explorer.lesson`.
STORY_STEPS = 4
#: The most logits a link carries (a longer policy is left out of the URL, with a note).
MAX_QUERY_LOGITS = 1024


def check_story(value: object, name: str = "story") -> int:
    """A step of the guided story, 1 to STORY_STEPS, or 0 for none."""
    return check_int(value, name, low=0, high=STORY_STEPS)


def check_logits(value: object, name: str = "logits") -> tuple[float, ...]:
    """Logits from a link: numbers separated by commas, each within the sliders' range (+-LOGIT_LIMIT).
    Whether their number fits the MDP is checked when they are applied (:meth:`ExplorerState.set_theta`)."""
    parts = str(value).split(",")
    if len(parts) > MAX_QUERY_LOGITS:
        raise SpecError(f"{name}: at most {MAX_QUERY_LOGITS} numbers, got {len(parts)}")
    return tuple(check_number(part, name, low=-LOGIT_LIMIT, high=LOGIT_LIMIT) for part in parts)


#: Query-string keys that are not knobs, and their checks.
_OTHER_KEYS: dict[str, Callable[[object, str], object]] = {
    "history": check_history,
    "learn": check_flag,
    "lr": check_learning_rate,
    "mdp": lambda value, name: str(value),
    "logits": check_logits,
    "story": check_story,
}
QUERY_KEYS: tuple[str, ...] = (*KNOB_KEYS.values(), *_OTHER_KEYS)


def _number_text(value: float) -> str:
    """The shortest text that reads back as exactly ``value`` (``1``, ``0.95``, ``-0.3``)."""
    text = np.format_float_positional(float(value), unique=True, trim="-")
    return "0" if text == "-0" else text


def settings_query(frame: Frame, *, story: int = 0, default_history: int = DEFAULT_HISTORY) -> dict[str, str]:
    """The query string that opens a page in the state of ``frame`` (the inverse of :func:`parse_query`):
    the MDP, every knob, the logits (unless uniform or longer than MAX_QUERY_LOGITS), the story step and
    the learning settings where they differ from the defaults."""
    k = frame.knobs
    query = {
        "mdp": frame.mdp_source,
        "rtg": str(int(k.rtg)),
        "baseline": str(int(k.baseline)),
        "N": str(k.n),
        "kind": k.baseline_kind,
        "lam": _number_text(k.lam),
        "gamma": _number_text(frame.gamma),
        "entropy": _number_text(k.entropy),
        "batches": str(k.batches),
    }
    if k.group != DEFAULT_GROUP or k.grouped:
        query["group"] = str(k.group)
    if frame.theta.any() and frame.theta.size <= MAX_QUERY_LOGITS:
        query["logits"] = ",".join(_number_text(x) for x in frame.theta.ravel())
    if story:
        query["story"] = str(check_story(story))
    if frame.learning:
        query["learn"] = "1"
    if frame.learning_rate != DEFAULT_LEARNING_RATE:
        query["lr"] = _number_text(frame.learning_rate)
    if frame.history_maxlen != default_history:
        query["history"] = str(frame.history_maxlen)
    return query


def parse_query(args: Mapping[str, str]) -> tuple[dict[str, object], list[str]]:
    """Knob changes from a page's query string (``?N=64&rtg=1``); unknown or bad values become messages.

    Keys (:data:`QUERY_KEYS`): N, rtg, baseline, kind, lam, gamma, entropy, batches, group (knobs, returned
    under their :class:`Knobs` field names) and history, learn, lr, mdp, logits, story (returned under
    their keys). :func:`settings_query` writes a page's settings back in these keys.
    """
    fields = {key: name for name, key in KNOB_KEYS.items()}
    changes: dict[str, object] = {}
    messages: list[str] = []
    for key, raw in args.items():
        try:
            if key in fields:
                changes[fields[key]] = _KNOB_CHECKS[fields[key]](raw, key)
            elif key in _OTHER_KEYS:
                changes[key] = _OTHER_KEYS[key](raw, key)
            else:
                raise SpecError(f"unknown parameter {key!r}; use {', '.join(QUERY_KEYS)}")
        except PgvarError as err:
            messages.append(f"query string: {err}")
    return changes, messages


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExactValues:
    """Exact single-episode moments of the four configurations (CONFIGS order) at one setting."""

    key: tuple
    moments: tuple[ExactMoments | None, ...]  # None where a group baseline has no exact value
    grad: np.ndarray
    objective: float
    seconds: float

    @property
    def by_spec(self) -> dict[EstimatorSpec, ExactMoments]:
        return {m.spec: m for m in self.moments if m is not None}


def compute_exact(key: tuple, mdp: TabularMDP, theta: np.ndarray, specs: list[EstimatorSpec]) -> ExactValues:
    """Exact moments, grad J and J for ``specs`` (the four configurations); safe in a worker thread."""
    start = time.perf_counter()
    entropy = specs[0].entropy
    chain = unroll(mdp, theta, entropy)

    def exact_or_none(spec: EstimatorSpec) -> ExactMoments | None:
        try:
            return exact_moments(mdp, theta, spec, chain=chain)
        except GroupMomentsError:  # continuous reward noise or too many paths: measured only
            return None

    moments = tuple(exact_or_none(spec) for spec in specs)
    grad = exact_gradient(mdp, theta, entropy).ravel()
    value = objective(mdp, theta, entropy)
    return ExactValues(key, moments, grad, value, time.perf_counter() - start)


@dataclass(frozen=True)
class ConfigReading:
    """One configuration at the current N: measured trace with its 95% CI, exact trace / N."""

    label: str
    spec: str
    rtg: bool
    baseline: bool
    variance: float
    lo: float
    hi: float
    exact: float | None = None
    reward_noise: float | None = None
    sampling: float | None = None
    bias: float | None = None  # |E g - grad J| where the estimator is biased (exact), else None
    cosine: float | None = None  # cos(E g, grad J) beside it
    no_exact: bool = False  # a group baseline whose exact values cannot be had here: measured only


@dataclass(frozen=True)
class TickResult:
    """Everything one tick shows.

    ``ratio`` is the lesson's "vs vanilla": this tick's variance over vanilla's at N = 1 (both measured
    in this tick); ``ratio_lo``/``ratio_hi`` combine the two 95% intervals (lo/hi and hi/lo, so the
    bound holds with probability >= 90%); ``ratio_exact`` is the same ratio of exact values.
    """

    tick: int
    n: int
    batches: int
    current: int
    configs: tuple[ConfigReading, ...]
    vanilla_n1: ConfigReading
    ratio: float
    ratio_lo: float
    ratio_hi: float
    ratio_exact: float | None
    objective: float | None
    seconds: float
    truncated_episodes: int
    learned: bool = False

    @property
    def reading(self) -> ConfigReading:
        return self.configs[self.current]

    @property
    def label(self) -> str:
        return self.reading.label


@dataclass(frozen=True)
class HistoryPoint:
    tick: int
    label: str
    n: int
    variance: float
    lo: float
    hi: float
    exact: float  # nan while unknown
    ratio: float
    config: int = 0  # index in CONFIGS of the configuration measured


def safe_ratio(top: float, bottom: float) -> float:
    """top / bottom, with inf (or nan for 0 / 0) when bottom is not positive."""
    if bottom > 0:
        return top / bottom
    return math.inf if top > 0 else math.nan


#: Rows of the policy table a frame carries (the page draws at most this many).
MAX_POLICY_ROWS = 40


@dataclass(frozen=True)
class Frame:
    """A copy of everything the page shows, taken after each piece of work (:meth:`ExplorerState.snapshot`).

    The page reads only frames, never the live state, so it can draw while the session's worker
    thread computes. ``stale`` says why the numbers of ``last`` are old (the latest tick could not
    measure), or why there are none yet; None when ``last`` is this setting's latest reading.
    ``history_epoch`` changes when the history is cleared (a new MDP).
    """

    mdp_version: int
    mdp_source: str
    mdp_name: str
    mdp_description: str
    n_states: int
    n_actions: int
    horizon: int | None
    mdp_gamma: float
    knobs: Knobs
    gamma: float
    label: str
    labels: tuple[str, ...]
    current_index: int
    theta: np.ndarray
    policy: np.ndarray  # pi(a|o) of the first MAX_POLICY_ROWS rows of theta
    row_names: tuple[str, ...]  # the same rows' names
    action_names: tuple[str, ...]
    last: TickResult | None
    stale: str | None
    history: tuple[HistoryPoint, ...]
    history_maxlen: int
    history_epoch: int
    by_n: dict[int, tuple[float, float, float]]
    exact: ExactValues | None
    exact_pending: bool
    learning: bool
    learning_rate: float
    learn_steps: int
    learn_history: tuple[tuple[int, float], ...]
    messages: dict[str, str]
    tick_count: int


# -- the session ---------------------------------------------------------------------------------


class ExplorerState:
    """One explorer session. Not thread-safe: call it from one thread (the page: the session's worker).

    Args:
      mdp: a built-in name (``lesson``, ``random:seed=3``) or a YAML/JSON file; a bad one falls back to
        the lesson's MDP and leaves a message in ``messages["mdp"]``.
      history: length of the rolling history (bounded).
      seed: root of the random streams (None: fresh entropy, so sessions differ).
      executor: where to compute exact values (under the limits in force where the tick runs); None
        computes them in the tick that needs them.
    """

    def __init__(
        self,
        mdp: str | TabularMDP = "lesson",
        *,
        history: int = DEFAULT_HISTORY,
        seed: int | None = None,
        executor: Executor | None = None,
        knobs: Knobs | None = None,
    ) -> None:
        self.knobs = Knobs() if knobs is None else check_knobs(Knobs(), dataclasses.asdict(knobs))
        self.messages: dict[str, str] = {}
        self.history: deque[HistoryPoint] = deque(maxlen=check_history(history))
        self.learn_history: deque[tuple[int, float]] = deque(maxlen=self.history.maxlen)
        self.by_n: dict[int, tuple[float, float, float]] = {}
        self.last: TickResult | None = None
        self.tick_count = 0
        self.learning = False
        self.learning_rate = DEFAULT_LEARNING_RATE
        self.learn_steps = 0
        self._seeds = np.random.SeedSequence(seed)
        self._executor = executor
        self._future: Future | None = None
        self._exact: ExactValues | None = None
        self._chain_cache: tuple[tuple, object] | None = None
        self._samplers: dict[tuple, Sampler] = {}  # plans of the current setting, by estimators
        self._failed_key: tuple | None = None
        self._running: RunningBaselines | None = None
        self._truncated = 0  # episodes cut at the step cap in the latest tick
        self._curve_key: tuple | None = None
        self._mdp_version = 0
        self._gamma_mdps: dict[float, TabularMDP] = {}
        self._names: tuple[int, tuple[str, ...]] | None = None  # row names of the MDP of that version
        self.history_epoch = 0
        self.measure_error: str | None = None  # why the latest tick could not measure
        self.closed = False
        self.mdp_source = "lesson"
        self.base_mdp: TabularMDP = envs.make("lesson")
        self.theta = np.zeros(self.base_mdp.theta_shape())
        if isinstance(mdp, TabularMDP):
            self._install(mdp, mdp.name)
        elif not self.load_mdp(mdp):
            self._install(envs.make("lesson"), "lesson")

    # -- the environment --------------------------------------------------------------------
    def load_mdp(self, name_or_path: str) -> bool:
        """Switch to another MDP; False (and a message) if it cannot be read."""
        try:
            mdp = resolve_mdp(name_or_path)
            mdp.theta_shape()
        except PgvarError as err:
            self.messages["mdp"] = f"cannot load MDP {name_or_path!r}: {err}"
            return False
        except (OSError, ValueError, TypeError) as err:  # anything a hand-made file can still trip
            self.messages["mdp"] = f"cannot load MDP {name_or_path!r}: {err}"
            return False
        except MemoryError:
            self.messages["mdp"] = f"cannot load MDP {name_or_path!r}: out of memory"
            return False
        self._install(mdp, str(name_or_path))
        self.messages.pop("mdp", None)
        return True

    def _install(self, mdp: TabularMDP, source: str) -> None:
        self.base_mdp = mdp
        self._gamma_mdps = {}
        self.mdp_source = source
        self._mdp_version += 1
        self._exact_seconds: float | None = None
        # the old MDP's caches go now (its tables can be large); a job still computing its exact
        # values finishes in its thread and is dropped
        self._samplers.clear()
        self._chain_cache = None
        self._exact = None
        self._failed_key = None
        if self._future is not None:
            self._future.cancel()
            self._future = None
        self.theta = np.zeros(mdp.theta_shape())
        self.knobs = dataclasses.replace(self.knobs, gamma=None)
        self._reset_measurements()
        self.learn_history.clear()
        self.learn_steps = 0
        for topic in ("measure", "exact", "policy", "sweep"):
            self.messages.pop(topic, None)

    @property
    def mdp_version(self) -> int:
        """Counts the MDPs loaded: a widget made for one MDP checks it before changing the policy."""
        return self._mdp_version

    def close(self) -> None:
        """Drop the MDP and every cache (the session has ended): the memory goes back at once."""
        self._install(envs.make("lesson"), "closed")
        self.messages.clear()
        self.closed = True

    @property
    def mdp(self) -> TabularMDP:
        """The MDP in use: the loaded one with the page's gamma."""
        gamma = self.knobs.gamma
        if gamma is None or gamma == self.base_mdp.gamma:
            return self.base_mdp
        return self._with_gamma(gamma)

    def _with_gamma(self, gamma: float) -> TabularMDP:
        if gamma not in self._gamma_mdps:
            if len(self._gamma_mdps) > 64:
                self._gamma_mdps.clear()
            self._gamma_mdps[gamma] = dataclasses.replace(self.base_mdp, gamma=gamma)
        return self._gamma_mdps[gamma]

    @property
    def gamma(self) -> float:
        return self.mdp.gamma

    # -- knobs and policy ------------------------------------------------------------------
    def set_knobs(self, **changes) -> Knobs:
        """Change knobs; raises :class:`PgvarError` (and changes nothing) if a value is invalid."""
        new = check_knobs(self.knobs, changes)
        if new.gamma is not None and new.gamma != self.base_mdp.gamma:
            self._with_gamma(new.gamma)  # validates (e.g. an MDP that needs gamma < 1)
        self.specs(new)
        old = self.knobs
        self.knobs = new
        if self.gamma_of(old) != self.gamma_of(new) or old.entropy != new.entropy:
            self._running = None  # the running means estimate another quantity now
        return new

    def gamma_of(self, knobs: Knobs) -> float:
        return self.base_mdp.gamma if knobs.gamma is None else knobs.gamma

    def apply(self, **changes) -> bool:
        """Like :meth:`set_knobs` but records a message instead of raising; True if applied."""
        try:
            self.set_knobs(**changes)
        except PgvarError as err:
            self.messages["knobs"] = str(err)
            return False
        self.messages.pop("knobs", None)
        return True

    def set_theta(self, theta, *, keep_running: bool = False) -> None:
        """Set the logits (shape of ``mdp.theta_shape()``, finite, clipped to +-LOGIT_LIMIT); the running
        baselines restart unless ``keep_running`` (a learning step)."""
        try:
            array = np.asarray(theta, dtype=float)
        except (TypeError, ValueError):
            raise SpecError("theta: logits must be numbers") from None
        if array.shape != self.theta.shape:
            raise SpecError(f"theta: shape {array.shape} does not fit the MDP; expected {self.theta.shape}")
        if not np.isfinite(array).all():
            raise SpecError("theta: logits must be finite numbers")
        self.theta = np.clip(array, -LOGIT_LIMIT, LOGIT_LIMIT)
        if not keep_running:
            self._running = None

    def set_logit(self, index: int, value: float) -> None:
        theta = self.theta.copy()
        theta.flat[index] = value
        self.set_theta(theta)

    def specs(self, knobs: Knobs | None = None) -> list[EstimatorSpec]:
        """The four configurations' estimators (CONFIGS order) for ``knobs``."""
        knobs = knobs or self.knobs
        return [
            parse_estimator(spec_text(r, b, knobs), entropy=knobs.entropy, group=knobs.group)
            for r, b in CONFIGS
        ]

    @property
    def current_index(self) -> int:
        return CONFIGS.index((self.knobs.rtg, self.knobs.baseline))

    @property
    def label(self) -> str:
        return config_label(self.knobs.rtg, self.knobs.baseline, self.knobs)

    def labels(self) -> list[str]:
        return [config_label(r, b, self.knobs) for r, b in CONFIGS]

    def policy(self) -> np.ndarray:
        """pi(a|o) for every row of theta, shape theta.shape (the page's probability table)."""
        return softmax(self.theta)

    def row_names(self, limit: int | None = None) -> list[str]:
        """One name per row of theta (the first ``limit`` rows): the observation (with its step for
        per-step logits)."""
        rows = self.theta.size // self.theta.shape[-1]
        limit = rows if limit is None else min(limit, rows)
        if self._names is None or self._names[0] != self._mdp_version or len(self._names[1]) < limit:
            self._names = (self._mdp_version, tuple(self._row_names(limit)))
        return list(self._names[1][:limit])

    def _row_names(self, limit: int) -> list[str]:
        mdp = self.base_mdp
        n_obs = self.theta.shape[-2]
        wanted = range(min(n_obs, limit))
        names = []
        observation_s = np.asarray(mdp.observation_s)
        for o in wanted:
            states = np.flatnonzero(observation_s == o)[:3]
            if mdp.state_names and states.size:
                more = " …" if states.size > 2 else ""
                names.append(" / ".join(mdp.state_names[i] for i in states[:2]) + more)
            else:
                names.append(f"obs {o}")
        if self.theta.ndim == 3:
            steps = -(-limit // n_obs)
            return [f"t={t} {name}" for t in range(steps) for name in names][:limit]
        return names

    def action_names(self) -> list[str]:
        mdp = self.base_mdp
        if mdp.action_names:
            return list(mdp.action_names)
        return [f"a{a}" for a in range(mdp.n_actions)]

    # -- exact values ---------------------------------------------------------------------
    def _exact_key(self) -> tuple:
        k = self.knobs
        return (
            self._mdp_version,
            self.gamma,
            k.entropy,
            k.baseline_kind,
            k.lam,
            k.group,
            self.theta.tobytes(),
        )

    @property
    def exact(self) -> ExactValues | None:
        """Exact values of the current setting, or None while they are being computed."""
        if self._exact is not None and self._exact.key == self._exact_key():
            return self._exact
        return None

    def refresh_exact(self) -> ExactValues | None:
        """Bring the exact values up to date: compute them now when there is no executor or when they
        are cheap for this MDP (under SYNC_EXACT_SECONDS last time), else start or collect a job."""
        key = self._exact_key()
        if self._future is not None:
            if not self._future.done():
                return self.exact
            future, self._future = self._future, None
            try:
                self._exact = future.result()
                self._exact_seconds = self._exact.seconds
                self.messages.pop("exact", None)
            except (PgvarError, MemoryError) as err:
                self.messages["exact"] = f"exact values: {err or 'out of memory'}"
                self._failed_key = future.pgvar_key  # type: ignore[attr-defined]
        if self._exact is not None and self._exact.key == key:
            return self._exact
        if self._failed_key == key:
            return None
        args = (key, self.mdp, self.theta.copy(), self.specs())
        fast = self._exact_seconds is not None and self._exact_seconds < SYNC_EXACT_SECONDS
        if self._executor is None or fast:
            try:
                self._exact = compute_exact(*args)
                self._exact_seconds = self._exact.seconds
            except (PgvarError, MemoryError) as err:
                self.messages["exact"] = f"exact values: {err or 'out of memory'}"
                self._failed_key = key
                return None
            self.messages.pop("exact", None)
            return self._exact
        # the worker runs under the limits in force here (context variables do not cross threads)
        self._future = self._executor.submit(contextvars.copy_context().run, compute_exact, *args)
        self._future.pgvar_key = key  # type: ignore[attr-defined]
        return None

    @property
    def exact_pending(self) -> bool:
        return self.exact is None and self._failed_key != self._exact_key()

    # -- the tick -------------------------------------------------------------------------
    def _chain(self):
        """The unrolled chain of the current setting (cached; a failure is cached too)."""
        key = (self._mdp_version, self.gamma, self.knobs.entropy, self.theta.tobytes())
        if self._chain_cache is None or self._chain_cache[0] != key:
            try:
                chain = unroll(self.mdp, self.theta, self.knobs.entropy)
            except PgvarError as err:
                chain = err
            self._chain_cache = (key, chain)
        chain = self._chain_cache[1]
        if isinstance(chain, PgvarError):
            raise chain
        return chain

    def _sampler(self, specs: list[EstimatorSpec], chain) -> Sampler | GroupSampler:
        """The Monte-Carlo plan for ``specs`` in the current setting, made once per setting (its
        policy, path and baseline tables cost about half a millisecond on the lesson): grouped
        episodes for group baselines (all of ``specs`` or none)."""
        key = (self._mdp_version, self.gamma, self.knobs.entropy, self.theta.tobytes(), tuple(specs))
        if key not in self._samplers:
            if len(self._samplers) >= 8:  # settings change as the knobs move: keep the last few
                self._samplers.pop(next(iter(self._samplers)))
            if specs[0].grouped:
                self._samplers[key] = GroupSampler(self.mdp, self.theta, specs)
            else:
                self._samplers[key] = Sampler(self.mdp, self.theta, specs, chain=chain)
        return self._samplers[key]

    def _sample(self, specs: list[EstimatorSpec], chain, n: int, seed) -> list[VarianceReading]:
        """Readings of ``specs`` at N (CONFIGS order kept): independent episodes for the single-episode
        baselines (carrying the running baselines), groups sharing a start state for the others."""
        exact = self.exact
        by_spec = exact.by_spec if exact is not None else None
        grad = exact.grad if exact is not None else None
        single = [spec for spec in specs if not spec.grouped]
        grouped = [spec for spec in specs if spec.grouped]
        readings = []
        if single:
            sample = self._sampler(single, chain).sample(n, self.knobs.batches, seed, running=self._running)
            self._running = sample.running
            self._truncated = sample.truncated_episodes
            readings += read_sample(sample, grad, by_spec)
        if grouped:  # a stream of its own, derived without touching the one above
            group_seed = np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, GROUP_STREAM))
            sample = self._sampler(grouped, chain).sample(n, self.knobs.batches, group_seed)
            readings += read_sample(sample, grad, by_spec)
        return sorted(readings, key=lambda reading: specs.index(reading.spec))

    def steps_per_tick(self, chain=None) -> float:
        """Expected number of simulated steps in one tick (measurement + vanilla at N = 1)."""
        chain = chain if chain is not None else self._chain()
        alive = state_distribution(chain)[:-1] @ ~self.base_mdp.terminal_s
        length = float(alive.sum())
        return length * self.knobs.batches * (self.knobs.n + 1)

    def _reset_measurements(self) -> None:
        self._running = None
        self.history.clear()
        self.by_n.clear()
        self._curve_key = None
        self.last = None
        self.measure_error = None
        self.history_epoch += 1

    def _stop_learning(self) -> None:
        """Learning ends: the running baselines restart, so that readings of the policy now fixed
        compare with its exact values (see the module's notes)."""
        if self.learning:
            self.learning = False
            self._running = None

    def tick(self) -> TickResult | None:
        """Measure once: fresh independent batches of every configuration at N, vanilla at N = 1,
        the exact values where known; then, in learn mode, one gradient-ascent step. None (and a
        message, and ``measure_error``) when the setting cannot be measured: too long a tick, or a
        request over the limits in force (:mod:`pgvar.budget`)."""
        start = time.perf_counter()
        knobs = self.knobs
        try:
            chain = self._chain()
            cost = self.steps_per_tick(chain)
            if cost > MAX_STEPS_PER_TICK:
                length = cost / knobs.batches / (knobs.n + 1)
                raise PgvarError(
                    f"one tick would simulate about {cost:.3g} steps (episodes last {length:.3g} steps on "
                    "average); lower N or the number of batches, or change the policy"
                )
            exact = self.refresh_exact()
            specs = self.specs()
            seeds = self._seeds.spawn(3)
            readings = self._sample(specs, chain, knobs.n, seeds[0])
            if knobs.n == 1:
                vanilla = readings[0]
            else:
                by_spec = exact.by_spec if exact is not None else None
                sample_n1 = self._sampler(specs[:1], chain).sample(1, knobs.batches, seeds[1])
                vanilla = read_sample(sample_n1, exact.grad if exact is not None else None, by_spec)[0]
        except (PgvarError, MemoryError) as err:
            self.measure_error = f"cannot measure: {err or 'out of memory'}"
            self.messages["measure"] = self.measure_error
            self._stop_learning()
            return None
        self.messages.pop("measure", None)
        self.measure_error = None
        labels = self.labels()
        configs = tuple(
            self._reading(lab, r, b, reading, exact, knobs.n)
            for lab, (r, b), reading in zip(labels, CONFIGS, readings, strict=True)
        )
        vanilla_n1 = self._reading(labels[0], False, False, vanilla, exact, 1)
        current = self.current_index
        now = configs[current]
        ratio = safe_ratio(now.variance, vanilla_n1.variance)
        ratio_lo = safe_ratio(now.lo, vanilla_n1.hi)
        ratio_hi = safe_ratio(now.hi, vanilla_n1.lo)
        ratio_exact = None
        if now.exact is not None and vanilla_n1.exact is not None:
            ratio_exact = safe_ratio(now.exact, vanilla_n1.exact)
        self.tick_count += 1
        learned = False
        if self.learning:
            learned = self._learn_step(specs[current], seeds[2])
        result = TickResult(
            self.tick_count,
            knobs.n,
            knobs.batches,
            current,
            configs,
            vanilla_n1,
            ratio,
            ratio_lo,
            ratio_hi,
            ratio_exact,
            exact.objective if exact is not None else None,
            time.perf_counter() - start,
            self._truncated,
            learned,
        )
        self.history.append(
            HistoryPoint(
                result.tick,
                now.label,
                knobs.n,
                now.variance,
                now.lo,
                now.hi,
                now.exact if now.exact is not None else math.nan,
                ratio,
                current,
            )
        )
        curve_key = (self._exact_key(), knobs.rtg, knobs.baseline, knobs.batches)
        if curve_key != self._curve_key:
            self.by_n.clear()
            self._curve_key = curve_key
        self.by_n[knobs.n] = (now.variance, now.lo, now.hi)
        self.last = result
        return result

    @staticmethod
    def _reading(
        label: str, rtg: bool, baseline: bool, reading: VarianceReading, exact: ExactValues | None, n: int
    ) -> ConfigReading:
        noise = sampling = bias = cosine = None
        moments = exact.moments[CONFIGS.index((rtg, baseline))] if exact is not None else None
        if moments is not None:
            noise, sampling = moments.reward_noise / n, moments.sampling / n
            if reading.exact_bias is not None and reading.exact_bias > BIAS_TOLERANCE * max(
                1.0, float(np.linalg.norm(exact.grad))
            ):
                bias, cosine = reading.exact_bias, reading.exact_cosine
        return ConfigReading(
            label,
            reading.spec.canonical,
            rtg,
            baseline,
            float(reading.variance_trace),
            float(reading.ci95[0]),
            float(reading.ci95[1]),
            reading.exact_variance_trace,
            noise,
            sampling,
            bias,
            cosine,
            exact is not None and moments is None,
        )

    def sweep(self) -> dict[int, tuple[float, float, float]]:
        """Measure the current configuration at every N on the slider (for the variance-vs-N panel)."""
        knobs = self.knobs
        chain = self._chain()
        spec = self.specs()[self.current_index]
        if self.steps_per_tick(chain) / (knobs.n + 1) * sum(N_CHOICES) > MAX_STEPS_PER_TICK:
            raise PgvarError("sweep: too many steps for this MDP and policy; lower the number of batches")
        for n, child in zip(N_CHOICES, self._seeds.spawn(len(N_CHOICES)), strict=True):
            if spec.grouped and n < spec.group:  # fewer episodes than one group
                continue
            reading = self._sample([spec], chain, n, child)[0]
            self.by_n[n] = (float(reading.variance_trace), float(reading.ci95[0]), float(reading.ci95[1]))
        self._curve_key = (self._exact_key(), knobs.rtg, knobs.baseline, knobs.batches)
        return dict(self.by_n)

    # -- learn mode -----------------------------------------------------------------------
    def _learn_step(self, spec: EstimatorSpec, seed) -> bool:
        """theta += lr * (one batch-mean gradient estimate of the chosen estimator at N)."""
        try:
            if spec.grouped:  # one batch of N/K groups
                grad = (
                    self._sampler([spec], self._chain()).sample(self.knobs.n, 1, seed).batch_means_emd[0, 0]
                )
                grad = grad.reshape(self.theta.shape)
            else:
                grad = estimate_gradient(
                    self.mdp, self.theta, spec, self.knobs.n, seed, running=self._running
                )
            self.set_theta(self.theta + self.learning_rate * grad, keep_running=True)
            self._chain()
            value = objective(self.mdp, self.theta, self.knobs.entropy)
        except (PgvarError, MemoryError) as err:
            self.messages["policy"] = f"learning stopped: {err or 'out of memory'}"
            self._stop_learning()
            return False
        self.learn_steps += 1
        self.learn_history.append((self.learn_steps, value))
        return True

    def set_learning(self, on: bool, learning_rate: float | None = None) -> None:
        """Start or stop learn mode (stopping restarts the running baselines)."""
        if learning_rate is not None:
            self.learning_rate = check_learning_rate(learning_rate)
        on = check_flag(on, "learn")
        if not on:
            self._stop_learning()
            return
        if not self.learn_history:
            self.learn_history.append((self.learn_steps, objective(self.mdp, self.theta, self.knobs.entropy)))
        self.learning = True

    def objective(self) -> float:
        return objective(self.mdp, self.theta, self.knobs.entropy)

    # -- what the page shows --------------------------------------------------------------
    def snapshot(self) -> Frame:
        """A :class:`Frame`: copies of everything the page shows, safe to read from another thread."""
        mdp = self.base_mdp
        rows = self.row_names(MAX_POLICY_ROWS)
        policy = self.policy().reshape(-1, self.theta.shape[-1])[: len(rows)]
        stale = self.measure_error
        if stale is not None and self.last is not None:
            stale = f"numbers of tick {self.last.tick}; {stale}"
        return Frame(
            mdp_version=self._mdp_version,
            mdp_source=self.mdp_source,
            mdp_name=mdp.name,
            mdp_description=mdp.description,
            n_states=mdp.n_states,
            n_actions=mdp.n_actions,
            horizon=mdp.horizon,
            mdp_gamma=mdp.gamma,
            knobs=self.knobs,
            gamma=self.gamma,
            label=self.label,
            labels=tuple(self.labels()),
            current_index=self.current_index,
            theta=self.theta.copy(),
            policy=policy,
            row_names=tuple(rows),
            action_names=tuple(self.action_names()),
            last=self.last,
            stale=stale,
            history=tuple(self.history),
            history_maxlen=self.history.maxlen or 0,
            history_epoch=self.history_epoch,
            by_n=dict(self.by_n),
            exact=self.exact,
            exact_pending=self.exact_pending and self.measure_error is None,
            learning=self.learning,
            learning_rate=self.learning_rate,
            learn_steps=self.learn_steps,
            learn_history=tuple(self.learn_history),
            messages=dict(self.messages),
            tick_count=self.tick_count,
        )


def builtin_choices() -> dict[str, str]:
    """Page label -> MDP spec for every built-in (listed from ``pgvar.envs.BUILTINS``)."""
    return {name: name for name in envs.BUILTINS}


def is_builtin_spec(text: str) -> bool:
    """A built-in with options or a Gymnasium model (``gym:ID,...``), not a file name."""
    suffix = Path(text).suffix.lower()
    base = text.partition(":")[0].strip()
    return (base in envs.BUILTINS or base == "gym") and suffix not in (".yaml", ".yml", ".json")
