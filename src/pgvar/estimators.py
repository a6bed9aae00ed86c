"""Move 3 of the lesson: every estimator g = sum_t Psi_t * score_t of its table, and more.

A spec names a weight and a baseline, ``WEIGHT+BASELINE``:

weights
  ``return``   the full return R(tau) on every score (vanilla REINFORCE, Williams 1992);
  ``rtg``      the reward-to-go, gamma^t * G_t (causality: the past cannot be changed);
  ``gae<lam>`` gamma^t * A_t^GAE(lam) (Schulman et al. 2016) with the baseline as its value function.
baselines
  ``none``; ``lesson`` (per-step running mean of the reward-to-go, subtracted from whichever weight
  is used: the lesson widget's ``bRtg``); ``running`` (per-step running mean of the weight itself);
  ``value`` (exact V(s_t)); ``optimal`` (variance-minimising constant per step, Greensmith, Bartlett
  & Baxter 2004); ``optimal-per-parameter`` (one constant per step and parameter, Peters & Schaal 2008);
  ``learned`` (a value table V(t, s) the caller supplies, e.g. one learned from earlier batches).

Presets named as in the lesson: ``vanilla`` = return+none, ``rtg`` = rtg+none, ``base`` =
return+lesson, ``rtg+base`` = rtg+lesson.

With gamma < 1 the objective J = E[sum_t gamma^t r_t] needs the factor gamma^t on the reward-to-go
for an unbiased gradient. Most libraries drop it; the result is not the gradient of any objective
(Nota & Thomas 2020). The suffix ``:common`` asks for that dropped-factor form, e.g. ``rtg+value:common``.

Running baselines are estimated only from earlier batches (or warm-up episodes), never from the batch
they are used in, so every estimator here stays unbiased.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pgvar.errors import SpecError
from pgvar.mdp import TabularMDP
from pgvar.policy import entropy_table, parameter_index, policy_table
from pgvar.returns import gae, reward_to_go

WEIGHTS = ("return", "rtg", "gae")
BASELINES = ("none", "lesson", "running", "value", "optimal", "optimal-per-parameter", "learned")
PRESETS = {"vanilla": "return+none", "rtg": "rtg+none", "base": "return+lesson", "rtg+base": "rtg+lesson"}
LESSON_NAMES = {
    "return+none": "vanilla",
    "rtg+none": "reward-to-go",
    "return+lesson": "baseline",
    "rtg+lesson": "rtg + baseline",
}
BIAS_FREE_FOR_GAE = ("none", "lesson", "running", "value", "learned")


@dataclass(frozen=True)
class EstimatorSpec:
    """A parsed estimator: weight, baseline, GAE lambda, gamma^t convention and entropy bonus."""

    weight: str
    baseline: str = "none"
    lam: float = 1.0
    discount_scores: bool = True
    entropy: float = 0.0
    label: str = ""

    @property
    def name(self) -> str:
        weight = f"gae{self.lam:g}" if self.weight == "gae" else self.weight
        text = f"{weight}+{self.baseline}" + ("" if self.discount_scores else ":common")
        return self.label or text

    @property
    def canonical(self) -> str:
        weight = f"gae{self.lam:g}" if self.weight == "gae" else self.weight
        return f"{weight}+{self.baseline}" + ("" if self.discount_scores else ":common")

    @property
    def weight_kind(self) -> int:
        return WEIGHTS.index(self.weight)

    @property
    def running(self) -> int:
        """0: fixed baseline table; 1: running mean of G_t (lesson); 2: running mean of the weight."""
        if self.baseline == "lesson" or (self.baseline == "running" and self.weight != "return"):
            return 1
        return 2 if self.baseline == "running" else 0


_GAE = re.compile(r"^gae(?P<lam>[0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$")


def parse_estimator(text: str, *, entropy: float = 0.0) -> EstimatorSpec:
    """Parse ``WEIGHT+BASELINE[:common]`` or a preset into an :class:`EstimatorSpec`."""
    if not isinstance(entropy, (int, float)) or not np.isfinite(entropy) or entropy < 0:
        raise SpecError(f"entropy: coefficient beta must be a finite number >= 0, got {entropy}")
    raw = text.strip()
    body, _, convention = raw.partition(":")
    if convention not in ("", "common"):
        raise SpecError(f"estimator {raw!r}: unknown suffix ':{convention}' (only ':common' exists)")
    label = raw if body in PRESETS else ""
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
    if weight == "return" and convention:
        raise SpecError(f"estimator {raw!r}: ':common' changes reward-to-go weights only")
    return EstimatorSpec(weight, baseline, lam, convention != "common", float(entropy), label)


def parse_estimators(text: str, *, entropy: float = 0.0) -> list[EstimatorSpec]:
    """Parse a comma-separated list of specs."""
    specs = [parse_estimator(item, entropy=entropy) for item in text.split(",") if item.strip()]
    if not specs:
        raise SpecError("estimators: give at least one, e.g. vanilla,rtg,base,rtg+base")
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
    """(T,) factor c_t on the weight of step t: gamma^t for rtg/GAE, 1 for the full return."""
    if spec.weight == "return" or not spec.discount_scores:
        return np.ones(horizon)
    return gamma ** np.arange(horizon, dtype=float)


def episode_gradients(
    mdp: TabularMDP,
    theta: np.ndarray,
    estimator: ResolvedEstimator,
    states_tb: np.ndarray,
    actions_tb: np.ndarray,
    rewards_tb: np.ndarray,
    alive_tb: np.ndarray,
) -> np.ndarray:
    """The single-episode estimate g = sum_t Psi_t * score_t for B padded episodes (reference code).

    Args:
      mdp, theta: the environment and the logits.
      estimator: a resolved estimator (its tables cover at least T steps).
      states_tb, actions_tb: (T, B) int, the state and action at each step (anything after the end).
      rewards_tb: (T, B) rewards (zero after the end).
      alive_tb: (T, B) bool, True while the episode runs.
    Returns:
      (B, D) estimates, D = theta.size.
    """
    spec = estimator.spec
    n_steps, n_episodes = states_tb.shape
    gamma = mdp.gamma
    probs_tbA = np.stack([policy_table(theta, mdp, t)[states_tb[t]] for t in range(n_steps)])
    rewards_tb = np.where(alive_tb, rewards_tb, 0.0)
    if spec.entropy > 0:
        entropy_tb = np.stack([entropy_table(theta, mdp, t)[0][states_tb[t]] for t in range(n_steps)])
        rewards_tb = rewards_tb + spec.entropy * np.where(alive_tb, entropy_tb, 0.0)
    returns_tb = reward_to_go(rewards_tb, gamma)
    scale_t = score_scale_t(spec, gamma, n_steps)[:, None]
    if spec.weight == "return":
        weights_tb = np.broadcast_to(returns_tb[0], (n_steps, n_episodes))
    elif spec.weight == "rtg":
        weights_tb = scale_t * returns_tb
    else:
        values_tb = np.where(alive_tb, np.take_along_axis(estimator.values_ts[:n_steps], states_tb, 1), 0.0)
        weights_tb = scale_t * gae(rewards_tb, values_tb, gamma, spec.lam)
    steps = np.arange(n_steps)[:, None]
    offsets_tbA = estimator.offsets_tsa[steps, states_tb]
    psi_tbA = (weights_tb[..., None] - offsets_tbA) * alive_tb[..., None]
    scores_tbA = np.eye(mdp.n_actions)[actions_tb] - probs_tbA
    contrib_tbA = psi_tbA * scores_tbA
    if spec.entropy > 0:
        grad_h_tbA = np.stack([entropy_table(theta, mdp, t)[1][states_tb[t]] for t in range(n_steps)])
        contrib_tbA = (
            contrib_tbA + spec.entropy * (gamma**steps)[..., None] * grad_h_tbA * alive_tb[..., None]
        )
    index_tbA = np.stack([parameter_index(mdp, theta.shape, t)[states_tb[t]] for t in range(n_steps)])
    grads_bD = np.zeros((n_episodes, theta.size))
    episode_tbA = np.broadcast_to(np.arange(n_episodes)[None, :, None], index_tbA.shape)
    np.add.at(grads_bD, (episode_tbA, index_tbA), contrib_tbA)
    return grads_bD
