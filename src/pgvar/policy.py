"""Move 2 of the lesson: the softmax policy and its score.

pi_theta(.|o) = softmax(theta[o]) over actions, with logits per observation, shape (n_obs, A), or per
(step, observation), shape (H, n_obs, A). The log-derivative trick needs only the score,
grad_theta log pi(a|o) = e_a - pi(.|o) in the block of theta that belongs to o (and to the step t
for per-step logits); every other block of the score is zero.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pgvar.errors import SpecError
from pgvar.mdp import TabularMDP


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log pi over the last axis, stable for logits of any size (log-sum-exp)."""
    logits = np.asarray(logits, dtype=float)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """pi over the last axis; (..., A) -> (..., A), rows sum to one."""
    return np.exp(log_softmax(logits))


def score(probs: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The score of a softmax policy, e_a - pi.

    Args:
      probs: (..., A) action probabilities pi(.|o).
      actions: (...) integer actions a.
    Returns:
      (..., A) grad of log pi(a|o) with respect to the logits of o.
    """
    probs = np.asarray(probs, dtype=float)
    one_hot = np.eye(probs.shape[-1])[np.asarray(actions)]
    return one_hot - probs


def entropy(probs: np.ndarray) -> np.ndarray:
    """H[pi] = -sum_a pi(a) log pi(a) over the last axis (0 log 0 = 0)."""
    probs = np.asarray(probs, dtype=float)
    return -np.sum(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0), axis=-1)


def entropy_gradient(logits: np.ndarray) -> np.ndarray:
    """d H[softmax(logits)] / d logits = -pi * (log pi + H), same shape as logits.

    It points toward the uniform policy: it is zero there and its inner product with
    (logits - mean) is never positive.
    """
    log_probs = log_softmax(logits)
    probs = np.exp(log_probs)
    return -probs * (log_probs + entropy(probs)[..., None])


def logits_table(theta: np.ndarray, mdp: TabularMDP, t: int = 0) -> np.ndarray:
    """(S, A) logits used in each state at step t (terminal states get zeros)."""
    logits_oa = theta[min(t, theta.shape[0] - 1)] if theta.ndim == 3 else theta
    obs = np.where(mdp.observation_s >= 0, mdp.observation_s, 0)
    logits_sa = np.array(logits_oa[obs], dtype=float)
    logits_sa[mdp.terminal_s] = 0.0
    return logits_sa


def policy_table(theta: np.ndarray, mdp: TabularMDP, t: int = 0) -> np.ndarray:
    """(S, A) pi(a|s) at step t for every state (terminal states get the uniform row)."""
    return softmax(logits_table(theta, mdp, t))


def entropy_table(theta: np.ndarray, mdp: TabularMDP, t: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """H[pi(.|s)] as (S,) and its gradient with respect to the logits as (S, A), zero in terminal states."""
    logits_sa = logits_table(theta, mdp, t)
    entropy_s = np.where(mdp.terminal_s, 0.0, entropy(softmax(logits_sa)))
    grad_sa = entropy_gradient(logits_sa)
    grad_sa[mdp.terminal_s] = 0.0
    return entropy_s, grad_sa


def parameter_index(mdp: TabularMDP, theta_shape: tuple[int, ...], t: int) -> np.ndarray:
    """(S, A) flat index into theta of the logit of (step t, observation of s, action a)."""
    n_actions = mdp.n_actions
    obs = np.where(mdp.observation_s >= 0, mdp.observation_s, 0)
    block = obs if len(theta_shape) == 2 else t * theta_shape[1] + obs
    return block[:, None] * n_actions + np.arange(n_actions)[None, :]


def uniform_theta(mdp: TabularMDP, per_step: bool | None = None) -> np.ndarray:
    """All-zero logits: the uniform policy."""
    return np.zeros(mdp.theta_shape(per_step))


#: Largest |logit| :func:`parse_theta` accepts. Only differences of logits matter, and softmax is
#: deterministic to double precision once two logits differ by ~745 (exp underflows to 0), so 1e6
#: leaves room for any policy; near 1e308 the differences themselves overflow and every result is NaN.
#: The bound also keeps theta + lr * g of the first training steps far from overflow.
LOGIT_LIMIT = 1e6


def parse_theta(value: str | np.ndarray | list | None, mdp: TabularMDP) -> np.ndarray:
    """Read logits from ``uniform``, a JSON literal, a .json or .npy file, or an array.

    The shape must be the MDP's (n_obs, A) or, with a finite horizon, (H, n_obs, A); every logit a
    finite number with |logit| <= ``LOGIT_LIMIT``.
    """
    if value is None or (isinstance(value, str) and value.strip() == "uniform"):
        return uniform_theta(mdp)
    source = "theta"
    if isinstance(value, str):
        text = value.strip()
        path = Path(text)
        if text.endswith(".npy"):
            source = text
            try:
                array = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as err:
                raise SpecError(f"theta: cannot read {text}: {err}") from None
        else:
            if text.endswith(".json"):
                source = text
                try:
                    text = path.read_text()
                except OSError as err:
                    raise SpecError(f"theta: cannot read {path}: {err.strerror}") from None
            try:
                array = json.loads(text)
            except json.JSONDecodeError as err:
                raise SpecError(
                    f"{source}: not 'uniform', a .json/.npy file or a JSON list ({err.msg} at char {err.pos})"
                ) from None
            except RecursionError:
                raise SpecError(f"{source}: JSON nested too deeply for logits") from None
    else:
        array = value
    try:
        theta = np.asarray(array, dtype=float)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond float range
        raise SpecError(f"{source}: must be a nested list of numbers") from None
    allowed = [mdp.theta_shape(per_step=False)]
    if mdp.horizon is not None:
        allowed.append(mdp.theta_shape(per_step=True))
    if theta.shape not in allowed:
        wanted = " or ".join(str(s) for s in allowed)
        raise SpecError(
            f"{source}: shape {theta.shape} does not fit MDP {mdp.name!r}; expected {wanted} "
            "(observations x actions, optionally per step)"
        )
    if not np.isfinite(theta).all():
        raise SpecError(f"{source}: logits must be finite numbers")
    if theta.size and np.abs(theta).max() > LOGIT_LIMIT:
        where = [int(i) for i in np.unravel_index(np.abs(theta).argmax(), theta.shape)]
        raise SpecError(
            f"{source}: logit {where} is {theta[tuple(where)]:g}; logits must lie within "
            f"±{LOGIT_LIMIT:g} (a difference of ~750 already makes the policy deterministic)"
        )
    return theta
