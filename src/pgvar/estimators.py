"""Move 3 of the lesson: every estimator g = sum_t Psi_t * score_t of its table, and more.

A spec names a weight and a baseline, ``WEIGHT+BASELINE``:

weights
  ``return``   the full return R(tau) on every score (vanilla REINFORCE, Williams 1992);
  ``rtg``      the reward-to-go, gamma^t * G_t (causality: the past cannot be changed);
  ``gae<lam>`` gamma^t * A_t^GAE(lam) (Schulman et al. 2016) with the baseline as its value function.
baselines (``pgvar.baselines`` keeps their running state)
  ``none``; ``lesson`` (per-step running mean of the reward-to-go, subtracted from whichever weight
  is used: the lesson widget's ``bRtg``); ``running`` (per-step running mean of the weight itself);
  ``running-value`` (running mean of G_t per step and state: a Monte-Carlo estimate of V(s_t));
  ``value`` (exact V(s_t)); ``optimal`` (variance-minimising constant per step, Greensmith, Bartlett
  & Baxter 2004); ``optimal-per-parameter`` (one constant per step and parameter, Peters & Schaal 2008);
  ``learned`` (a value table V(t, s) the caller supplies, e.g. one learned from earlier batches).

group baselines (a batch of N episodes is N/K groups of K that share a start state: a prompt)
  ``loo``      the mean weight of the other K - 1 episodes of the group (RLOO: Kool, van Hoof &
               Welling 2019; Ahmadian et al. 2024), unbiased;
  ``group``    the group's mean weight, the episode's own included (GRPO's mean, Shao et al. 2024;
               Dr. GRPO, Liu et al. 2025): E g = (K - 1)/K grad J;
  ``group-std`` the group mean subtracted and the result divided by the group's sample std plus
               ``GROUP_STD_EPSILON`` (GRPO).
  Each takes the weight ``return`` or ``rtg``; the group's statistics are taken per step over the
  same weight (R for ``return``, c_t G_t for ``rtg``). The suffix ``:per-length`` divides each
  episode's estimate by its length (GRPO's 1/|o_i|). K is the spec's ``group``.

Presets named as in the lesson: ``vanilla`` = return+none, ``rtg`` = rtg+none, ``base`` =
return+lesson, ``rtg+base`` = rtg+lesson. A spec keeps the spelling it was parsed from (its
``name``); ``canonical`` is the ``WEIGHT+BASELINE`` form and ``label`` the lesson's name for it.

With gamma < 1 the objective J = E[sum_t gamma^t r_t] needs the factor gamma^t on the reward-to-go
for an unbiased gradient. Most libraries drop it; the result is not the gradient of any objective
(Nota & Thomas 2020). The suffix ``:common`` asks for that dropped-factor form, e.g. ``rtg+value:common``.

Running baselines are estimated only from earlier batches (or warm-up episodes), never from the batch
they are used in, so every estimator here stays unbiased.

The functions below are the reference: the estimator's formula written once, in NumPy, on explicit
(T, B) arrays of episodes. Every compiled read-out of ``pgvar.montecarlo`` is tested against them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from pgvar.errors import SpecError
from pgvar.mdp import REWARD_LIMIT, TabularMDP
from pgvar.policy import entropy_table, parameter_index, policy_table
from pgvar.returns import gae, reward_to_go
from pgvar.vocabulary import BASELINE_KINDS, GROUP_BASELINES, PRESETS, label

WEIGHTS = ("return", "rtg", "gae")
BASELINES = tuple(BASELINE_KINDS)
BIAS_FREE_FOR_GAE = ("none", "lesson", "running", "running-value", "value", "learned")
GROUP_STD_EPSILON = 1e-4  # added to the group's std before dividing, as GRPO's implementations do
MAX_GROUP = 1024


@dataclass(frozen=True)
class EstimatorSpec:
    """A parsed estimator: weight, baseline, GAE lambda, gamma^t convention and entropy bonus; for
    the group baselines, the group size K (``group``) and the division by length (``per_length``).

    ``name`` is the spelling it was parsed from (``rtg``, ``vanilla``, ``gae0.95``); empty means the
    canonical form. Outputs key an estimator by its name.
    """

    weight: str
    baseline: str = "none"
    lam: float = 1.0
    discount_scores: bool = True
    entropy: float = 0.0
    name: str = ""
    group: int = 1
    per_length: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            object.__setattr__(self, "name", self.canonical)

    @property
    def canonical(self) -> str:
        weight = f"gae{self.lam:g}" if self.weight == "gae" else self.weight
        suffixes = ("" if self.discount_scores else ":common") + (":per-length" if self.per_length else "")
        return f"{weight}+{self.baseline}{suffixes}"

    @property
    def grouped(self) -> bool:
        """True for the baselines computed from a group of episodes sharing a start state."""
        return self.baseline in GROUP_BASELINES

    @property
    def label(self) -> str:
        """The lesson's name of this configuration (``vanilla``, ``reward-to-go``, ...), else canonical."""
        return label(self.canonical)


_GAE = re.compile(r"^gae(?P<lam>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$")


def parse_estimator(text: str, *, entropy: float = 0.0, group: int | None = 1) -> EstimatorSpec:
    """Parse ``WEIGHT+BASELINE[:common][:per-length]`` or a preset into an :class:`EstimatorSpec`;
    ``group`` is the group size K of the group baselines (ignored by the others), None where a
    caller does not measure groups (a group baseline is then refused)."""
    # the bonus entropy * H[pi] is added to every reward (H <= log A), so it obeys the rewards' bound
    if (
        isinstance(entropy, bool)
        or not isinstance(entropy, (int, float))
        or not np.isfinite(entropy)
        or not 0 <= entropy <= REWARD_LIMIT
    ):
        raise SpecError(f"entropy: must be a finite number from 0 to {REWARD_LIMIT:g}, got {entropy!r}")
    if group is not None and (
        isinstance(group, bool) or not isinstance(group, (int, np.integer)) or not 1 <= group <= MAX_GROUP
    ):
        raise SpecError(f"group: must be a whole number from 1 to {MAX_GROUP}, got {group!r}")
    raw = text.strip()
    body, *suffixes = raw.split(":")
    unknown = [s for s in suffixes if s not in ("common", "per-length")]
    if unknown or len(set(suffixes)) < len(suffixes):
        what = f"unknown suffix ':{unknown[0]}'" if unknown else "a suffix given twice"
        raise SpecError(f"estimator {raw!r}: {what} (the suffixes are ':common' and ':per-length')")
    body = PRESETS.get(body, body)
    weight, _, baseline = body.partition("+")
    baseline = baseline or ("value" if weight.startswith("gae") else "none")
    lam = 1.0
    match = _GAE.match(weight)
    if match:
        weight, lam = "gae", float(match["lam"])
        if not 0.0 <= lam <= 1.0:
            raise SpecError(f"estimator {raw!r}: GAE lambda must be in [0, 1], got {lam:g}")
    if weight not in WEIGHTS or (weight == "gae" and not match):
        hint = " (GAE needs its lambda, e.g. gae0.95)" if weight == "gae" else ""
        raise SpecError(
            f"estimator {raw!r}: unknown weight {weight!r}{hint}; use return, rtg, gae<lambda> "
            f"or a preset ({', '.join(PRESETS)})"
        )
    if baseline not in BASELINES:
        raise SpecError(
            f"estimator {raw!r}: unknown baseline {baseline!r}; use one of {', '.join(BASELINES)}"
        )
    if weight == "gae" and baseline not in BIAS_FREE_FOR_GAE:
        raise SpecError(
            f"estimator {raw!r}: GAE takes its baseline as the value function; use one of "
            f"{', '.join(BIAS_FREE_FOR_GAE)}"
        )
    if weight == "return" and "common" in suffixes:
        raise SpecError(f"estimator {raw!r}: ':common' changes reward-to-go weights only")
    grouped = baseline in GROUP_BASELINES
    if "per-length" in suffixes and not grouped:
        raise SpecError(
            f"estimator {raw!r}: ':per-length' goes with the group baselines ({', '.join(GROUP_BASELINES)})"
        )
    if grouped and group is None:
        raise SpecError(
            f"estimator {raw!r}: group baselines ({', '.join(GROUP_BASELINES)}) are measured by pgvar exact, "
            "pgvar variance and pgvar train (--group K), not here"
        )
    if grouped and group < 2:
        raise SpecError(
            f"estimator {raw!r}: a group baseline needs groups of K >= 2 episodes per start state "
            f"(--group K, or group= in the library); got K = {group}"
        )
    return EstimatorSpec(
        weight, baseline, lam, "common" not in suffixes, float(entropy), raw,
        int(group) if grouped else 1, "per-length" in suffixes,
    )  # fmt: skip


def without_group(spec: EstimatorSpec) -> EstimatorSpec:
    """The single-episode estimator inside a group baseline: the same weight, no baseline."""
    return replace(spec, baseline="none", group=1, per_length=False, name="")


def parse_estimators(text: str, *, entropy: float = 0.0, group: int | None = 1) -> list[EstimatorSpec]:
    """Parse a comma-separated list of specs; a spelling given twice is refused."""
    specs = [parse_estimator(item, entropy=entropy, group=group) for item in text.split(",") if item.strip()]
    if not specs:
        raise SpecError("estimators: give at least one, e.g. vanilla,rtg,base,rtg+base")
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SpecError(f"estimators: {', '.join(twice)} given twice")
    return specs


@dataclass(frozen=True)
class ResolvedEstimator:
    """An estimator with every baseline turned into numbers for a given MDP, theta and horizon T.

    Attributes:
      spec: what was asked for.
      offsets_tsa: (T, S, A) amount subtracted from the weight of score component a' at (t, s).
      values_ts: (T + 1, S) value function inside GAE (zeros for other weights).
      baseline_t: (T,) the per-step baseline constant where there is one (for reports), else None.
    """

    spec: EstimatorSpec
    offsets_tsa: np.ndarray
    values_ts: np.ndarray
    baseline_t: np.ndarray | None = None


def score_scale_t(spec: EstimatorSpec, gamma: float, horizon: int) -> np.ndarray:
    """(T,) factor c_t on the weight of step t: gamma^t for rtg/GAE, 1 for the full return
    (Nota & Thomas 2020 on dropping it: ``:common``)."""
    if spec.weight == "return" or not spec.discount_scores:
        return np.ones(horizon)
    return gamma ** np.arange(horizon, dtype=float)


def weights(
    spec: EstimatorSpec,
    rewards_tb: np.ndarray,
    gamma: float,
    values_tb: np.ndarray | None = None,
) -> np.ndarray:
    """Psi_t before its baseline, (T, B): the full return R(tau) at every step (Williams 1992), the
    reward-to-go c_t G_t (causality), or c_t A_t^GAE(lambda) (Schulman et al. 2016) with the value
    function ``values_tb`` (zero after an episode's end, so the last TD error has no bootstrap).

    Args:
      rewards_tb: (T, B) rewards, entropy bonus included, zero after the episode's end.
      values_tb: (T, B) V(s_t) for GAE, else ignored.
    """
    n_steps, n_episodes = rewards_tb.shape
    returns_tb = reward_to_go(rewards_tb, gamma)
    if spec.weight == "return":
        return np.broadcast_to(returns_tb[0], (n_steps, n_episodes))
    scale_t1 = score_scale_t(spec, gamma, n_steps)[:, None]
    if spec.weight == "rtg":
        return scale_t1 * returns_tb
    return scale_t1 * gae(rewards_tb, values_tb, gamma, spec.lam)


def group_weights(spec: EstimatorSpec, weights_tb: np.ndarray) -> np.ndarray:
    """Psi_t after a group baseline, (T, B): episodes i = k K .. k K + K - 1 form group k, and each
    step's statistics are taken over the group's K weights at that step (zero after an episode's
    end for ``rtg``; R at every step for ``return``).

    ``loo`` subtracts the mean of the other K - 1 (Kool, van Hoof & Welling 2019; Ahmadian et al.
    2024); ``group`` the mean of all K (Shao et al. 2024; Liu et al. 2025); ``group-std`` divides that
    by the group's sample standard deviation plus ``GROUP_STD_EPSILON`` (Shao et al. 2024).
    """
    n_steps, n_episodes = weights_tb.shape
    k = spec.group
    if n_episodes % k:
        raise SpecError(f"estimator {spec.name!r}: {n_episodes} episodes do not split into groups of {k}")
    weights_tgk = weights_tb.reshape(n_steps, n_episodes // k, k)
    total_tg1 = weights_tgk.sum(axis=2, keepdims=True)
    if spec.baseline == "loo":
        centred_tgk = weights_tgk - (total_tg1 - weights_tgk) / (k - 1)
    else:
        centred_tgk = weights_tgk - total_tg1 / k
    if spec.baseline == "group-std":
        centred_tgk = centred_tgk / (weights_tgk.std(axis=2, ddof=1, keepdims=True) + GROUP_STD_EPSILON)
    return centred_tgk.reshape(n_steps, n_episodes)


def visit_terms(
    weights_tb: np.ndarray,
    offsets_tbA: np.ndarray,
    scores_tbA: np.ndarray,
    entropy_terms_tbA: np.ndarray,
    alive_tb: np.ndarray,
) -> np.ndarray:
    """What each step adds to the gradient in the logits of its state, (T, B, A):
    (Psi_t - b_t) (e_a - pi) plus the entropy bonus's direct term, zero after the episode's end.

    Args:
      weights_tb: (T, B) from :func:`weights`.
      offsets_tbA: (T, B, A) the baseline subtracted from the weight of each score component.
      scores_tbA: (T, B, A) the score e_a - pi(.|s_t) (``pgvar.policy.score``).
      entropy_terms_tbA: (T, B, A) entropy * gamma^t * grad H[pi(.|s_t)] (Williams & Peng 1991).
      alive_tb: (T, B) True while the episode runs.
    """
    alive_tb1 = alive_tb[..., None]
    return ((weights_tb[..., None] - offsets_tbA) * scores_tbA + entropy_terms_tbA) * alive_tb1


def episode_gradients(
    mdp: TabularMDP,
    theta: np.ndarray,
    estimator: ResolvedEstimator,
    states_tb: np.ndarray,
    actions_tb: np.ndarray,
    rewards_tb: np.ndarray,
    alive_tb: np.ndarray,
) -> np.ndarray:
    """The single-episode estimate g = sum_t Psi_t * score_t for B padded episodes; for a group
    baseline, episodes i = k K .. k K + K - 1 form group k (:func:`group_weights`), and with
    ``:per-length`` each estimate is divided by its episode's length.

    Args:
      mdp, theta: the environment and the logits.
      estimator: a resolved estimator (its tables cover at least T steps).
      states_tb, actions_tb: (T, B) int, the state and action at each step (anything after the end).
      rewards_tb: (T, B) rewards (anything after the end), without the entropy bonus.
      alive_tb: (T, B) bool, True while the episode runs.
    Returns:
      (B, D) estimates, D = theta.size.
    """
    spec = estimator.spec
    n_steps, n_episodes = states_tb.shape
    gamma = mdp.gamma
    steps_t1 = np.arange(n_steps)[:, None]
    probs_tbA = np.stack([policy_table(theta, mdp, t)[states_tb[t]] for t in range(n_steps)])
    entropy_tb, grad_h_tbA = np.zeros(states_tb.shape), np.zeros(probs_tbA.shape)
    if spec.entropy > 0:
        pairs = [entropy_table(theta, mdp, t) for t in range(n_steps)]
        entropy_tb = np.stack([pair[0][states_tb[t]] for t, pair in enumerate(pairs)])
        grad_h_tbA = np.stack([pair[1][states_tb[t]] for t, pair in enumerate(pairs)])
    rewards_tb = np.where(alive_tb, rewards_tb + spec.entropy * entropy_tb, 0.0)
    values_tb = None
    if spec.weight == "gae":
        values_tb = np.where(alive_tb, estimator.values_ts[steps_t1, states_tb], 0.0)
    scores_tbA = np.eye(mdp.n_actions)[actions_tb] - probs_tbA
    weights_tb = weights(spec, rewards_tb, gamma, values_tb)
    if spec.grouped:
        weights_tb = group_weights(spec, weights_tb)
    terms_tbA = visit_terms(
        weights_tb,
        estimator.offsets_tsa[steps_t1, states_tb],
        scores_tbA,
        spec.entropy * (gamma**steps_t1)[..., None] * grad_h_tbA,
        alive_tb,
    )
    index_tbA = np.stack([parameter_index(mdp, theta.shape, t)[states_tb[t]] for t in range(n_steps)])
    grads_bD = np.zeros((n_episodes, theta.size))
    episode_tbA = np.broadcast_to(np.arange(n_episodes)[None, :, None], index_tbA.shape)
    np.add.at(grads_bD, (episode_tbA, index_tbA), terms_tbA)
    if spec.per_length:
        grads_bD /= np.maximum(alive_tb.sum(axis=0), 1)[:, None]
    return grads_bD


def with_vanilla(specs: Sequence[EstimatorSpec]) -> tuple[list[EstimatorSpec], EstimatorSpec]:
    """(the estimators to measure: ``specs`` and vanilla unless it is among them, vanilla); vanilla
    gets the estimators' entropy coefficient."""
    specs = list(specs)
    if not specs:
        raise SpecError("estimators: give at least one")
    vanilla = next(
        (s for s in specs if s.canonical == "return+none"),
        EstimatorSpec("return", "none", entropy=specs[0].entropy, name="vanilla"),
    )
    return (specs if vanilla in specs else [*specs, vanilla]), vanilla
