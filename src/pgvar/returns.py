"""Move 3 of the lesson: the weights that multiply each score.

Reward-to-go G_t = r_t + gamma * G_{t+1} (causality: an action cannot change the past) and the
generalised advantage estimate (Schulman et al. 2016, "High-dimensional continuous control using
generalized advantage estimation"), A_t = sum_l (gamma * lambda)^l * delta_{t+l} with
delta_t = r_t + gamma * V(s_{t+1}) - V(s_t).

Arrays are time-major: ``rewards_t`` has shape (T,) for one stream or (T, B) for B streams.
Episode ends inside a stream are flagged per step:
- ``terminated_t[t]``: the episode ended after step t in a terminal state: nothing is bootstrapped.
- ``truncated_t[t]``: the episode was cut after step t (a time limit): the value of the state it was
  cut in, ``truncation_values_t[t]``, is bootstrapped.
Both cut the trace: nothing flows back from the next episode. ``bootstrap_value`` (shape () or (B,))
is V of the state after the last step of the array, used unless the last step ended an episode.
"""

from __future__ import annotations

import numpy as np

from pgvar.errors import SpecError


def _flags(flag_t, shape, name: str) -> np.ndarray:
    if flag_t is None:
        return np.zeros(shape, dtype=bool)
    flag_t = np.asarray(flag_t, dtype=bool)
    if flag_t.shape != shape:
        raise SpecError(f"{name}: shape {flag_t.shape} does not match rewards_t {shape}")
    return flag_t


def _next_values(values_t, bootstrap_value, terminated_t, truncated_t, truncation_values_t):
    """V(s_{t+1}) as seen from step t, with the episode-end conventions applied. Shape of values_t."""
    shape = values_t.shape
    next_values_t = np.empty_like(values_t)
    next_values_t[:-1] = values_t[1:]
    next_values_t[-1] = 0.0 if bootstrap_value is None else bootstrap_value
    if truncation_values_t is not None:
        truncation_values_t = np.asarray(truncation_values_t, dtype=values_t.dtype)
        if truncation_values_t.shape != shape:
            raise SpecError(f"truncation_values_t: shape {truncation_values_t.shape} does not match {shape}")
        next_values_t = np.where(truncated_t, truncation_values_t, next_values_t)
    elif truncated_t.any():
        raise SpecError("truncation_values_t: needed to bootstrap the truncated steps")
    return np.where(terminated_t, 0.0, next_values_t)


def reward_to_go(
    rewards_t: np.ndarray,
    gamma: float,
    *,
    terminated_t: np.ndarray | None = None,
    truncated_t: np.ndarray | None = None,
    bootstrap_value: float | np.ndarray | None = None,
    truncation_values_t: np.ndarray | None = None,
) -> np.ndarray:
    """Discounted reward-to-go G_t = r_t + gamma * G_{t+1}, cut at episode ends.

    Args:
      rewards_t: (T,) or (T, B) rewards.
      gamma: discount in [0, 1].
      terminated_t, truncated_t: optional (T,) or (T, B) episode-end flags (see module doc).
      bootstrap_value: value after the last step, () or (B,); default 0.
      truncation_values_t: (T,) or (T, B) value of the state each truncated step was cut in.
    Returns:
      returns_t with the shape and dtype of rewards_t (float64 for integer input).
    """
    rewards_t = np.asarray(rewards_t)
    if rewards_t.dtype.kind != "f":
        rewards_t = rewards_t.astype(float)
    zeros_t = np.zeros_like(rewards_t)
    return gae(
        rewards_t,
        zeros_t,
        gamma,
        1.0,
        terminated_t=terminated_t,
        truncated_t=truncated_t,
        bootstrap_value=bootstrap_value,
        truncation_values_t=truncation_values_t,
    )


def gae(
    rewards_t: np.ndarray,
    values_t: np.ndarray,
    gamma: float,
    lam: float,
    *,
    terminated_t: np.ndarray | None = None,
    truncated_t: np.ndarray | None = None,
    bootstrap_value: float | np.ndarray | None = None,
    truncation_values_t: np.ndarray | None = None,
) -> np.ndarray:
    """Generalised advantage estimate A_t = delta_t + gamma * lam * A_{t+1}.

    With ``values_t`` all zero and lam = 1 this is the reward-to-go; with lam = 1 it is G_t - V(s_t).

    Args:
      rewards_t: (T,) or (T, B) rewards.
      values_t: V(s_t), same shape.
      gamma, lam: discount and trace parameter, both in [0, 1].
      terminated_t, truncated_t, bootstrap_value, truncation_values_t: see the module doc.
    Returns:
      advantages_t, the shape of rewards_t.
    """
    rewards_t = np.asarray(rewards_t)
    if rewards_t.dtype.kind != "f":
        rewards_t = rewards_t.astype(float)
    values_t = np.asarray(values_t, dtype=rewards_t.dtype)
    if rewards_t.ndim not in (1, 2) or rewards_t.shape[0] == 0:
        raise SpecError(f"rewards_t: must have shape (T,) or (T, B) with T >= 1, got {rewards_t.shape}")
    if values_t.shape != rewards_t.shape:
        raise SpecError(f"values_t: shape {values_t.shape} does not match rewards_t {rewards_t.shape}")
    for name, value in (("gamma", gamma), ("lam", lam)):
        if not 0.0 <= value <= 1.0:
            raise SpecError(f"{name}: must be in [0, 1], got {value}")
    terminated_t = _flags(terminated_t, rewards_t.shape, "terminated_t")
    truncated_t = _flags(truncated_t, rewards_t.shape, "truncated_t")
    next_values_t = _next_values(values_t, bootstrap_value, terminated_t, truncated_t, truncation_values_t)
    deltas_t = rewards_t + gamma * next_values_t - values_t
    continues_t = ~(terminated_t | truncated_t)
    advantages_t = np.empty_like(rewards_t)
    carry = np.zeros_like(rewards_t[0])
    for t in range(rewards_t.shape[0] - 1, -1, -1):  # a loop over time, vectorised over streams
        carry = deltas_t[t] + gamma * lam * continues_t[t] * carry
        advantages_t[t] = carry
    return advantages_t
