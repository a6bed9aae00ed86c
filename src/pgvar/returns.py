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

The work is done by two numba kernels, one reverse pass over time each, carrying a row of B values
(the running return or advantage, and V(s_{t+1})) and writing straight into the preallocated output:
no other array of size T x B is made. float32 and float64 are computed in their own precision; other
float dtypes go through float64. C-contiguous time-major arrays are the fast case; any strides work.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pgvar.errors import SpecError


@njit(cache=True)
def _reward_to_go_kernel(rewards_t, gamma, terminated_t, truncated_t, truncation_values_t, return_b, out_t):
    """G_t = r_t + gamma * G_{t+1} over (T, B) arrays; ``return_b`` holds G_T and is overwritten.

    A flag array that is None is pruned at compile time (numba specialises on it).
    """
    T, B = rewards_t.shape
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if terminated_t is not None and terminated_t[t, b]:
                return_b[b] = 0
            elif truncated_t is not None and truncated_t[t, b]:
                return_b[b] = truncation_values_t[t, b]
            return_b[b] = rewards_t[t, b] + gamma * return_b[b]
            out_t[t, b] = return_b[b]


@njit(cache=True)
def _gae_kernel(
    rewards_t, values_t, gamma, gamma_lam, terminated_t, truncated_t, truncation_values_t, next_value_b, out_t
):
    """A_t = delta_t + gamma * lam * A_{t+1} (Schulman et al. 2016, eq. 16) over (T, B) arrays.

    ``next_value_b`` holds V after the last step and is overwritten; it carries V(s_{t+1}).
    """
    T, B = rewards_t.shape
    advantage_b = np.zeros(B, dtype=out_t.dtype)  # A_{t+1}
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if terminated_t is not None and terminated_t[t, b]:
                next_value_b[b] = 0
                advantage_b[b] = 0
            elif truncated_t is not None and truncated_t[t, b]:
                next_value_b[b] = truncation_values_t[t, b]
                advantage_b[b] = 0
            delta = rewards_t[t, b] + gamma * next_value_b[b] - values_t[t, b]
            advantage_b[b] = delta + gamma_lam * advantage_b[b]
            out_t[t, b] = advantage_b[b]
            next_value_b[b] = values_t[t, b]


def _float_rewards(rewards_t) -> np.ndarray:
    rewards_t = np.asarray(rewards_t)
    if rewards_t.dtype.kind != "f":
        rewards_t = rewards_t.astype(float)
    if rewards_t.ndim not in (1, 2) or rewards_t.shape[0] == 0:
        raise SpecError(f"rewards_t: must have shape (T,) or (T, B) with T >= 1, got {rewards_t.shape}")
    return rewards_t


def _check_unit_interval(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise SpecError(f"{name}: must be in [0, 1], got {value}")


def _flags(flag_t, shape, name: str) -> np.ndarray | None:
    if flag_t is None:
        return None
    flag_t = np.asarray(flag_t, dtype=bool)
    if flag_t.shape != shape:
        raise SpecError(f"{name}: shape {flag_t.shape} does not match rewards_t {shape}")
    return flag_t


def _episode_ends(rewards_t, dtype, terminated_t, truncated_t, bootstrap_value, truncation_values_t):
    """Checked episode-end arguments as 2-D views (T, B), and V after the last step as a fresh row."""
    shape = rewards_t.shape
    terminated_t = _flags(terminated_t, shape, "terminated_t")
    truncated_t = _flags(truncated_t, shape, "truncated_t")
    width = shape[1] if rewards_t.ndim == 2 else 1
    try:
        value_b = np.array(np.broadcast_to(0.0 if bootstrap_value is None else bootstrap_value, (width,)))
    except ValueError:
        raise SpecError(
            f"bootstrap_value: shape {np.shape(bootstrap_value)} must be () or ({width},) for rewards_t {shape}"
        ) from None
    if truncation_values_t is not None:
        truncation_values_t = np.asarray(truncation_values_t, dtype=dtype)
        if truncation_values_t.shape != shape:
            raise SpecError(f"truncation_values_t: shape {truncation_values_t.shape} does not match {shape}")
    elif truncated_t is not None and truncated_t.any():
        raise SpecError("truncation_values_t: needed to bootstrap the truncated steps")
    return (
        _as_2d(terminated_t),
        _as_2d(truncated_t),
        _as_2d(truncation_values_t),
        value_b.astype(dtype),
    )


def _as_2d(array_t):
    """A (T,) array as a (T, 1) view; (T, B) and None pass through."""
    return array_t[:, None] if array_t is not None and array_t.ndim == 1 else array_t


def _kernel_dtype(dtype: np.dtype) -> np.dtype:
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


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
    rewards_t = _float_rewards(rewards_t)
    _check_unit_interval("gamma", gamma)
    dtype = _kernel_dtype(rewards_t.dtype)
    terminated_t, truncated_t, truncation_values_t, return_b = _episode_ends(
        rewards_t, dtype, terminated_t, truncated_t, bootstrap_value, truncation_values_t
    )
    returns_t = np.empty(rewards_t.shape, dtype=dtype)
    _reward_to_go_kernel(
        _as_2d(rewards_t.astype(dtype, copy=False)),
        dtype.type(gamma),
        terminated_t,
        truncated_t,
        truncation_values_t,
        return_b,
        _as_2d(returns_t),
    )
    return returns_t.astype(rewards_t.dtype, copy=False)


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
    """Generalised advantage estimate A_t = delta_t + gamma * lam * A_{t+1} (Schulman et al. 2016).

    With ``values_t`` all zero and lam = 1 this is the reward-to-go; with lam = 1 it is G_t - V(s_t).

    Args:
      rewards_t: (T,) or (T, B) rewards.
      values_t: V(s_t), same shape.
      gamma, lam: discount and trace parameter, both in [0, 1].
      terminated_t, truncated_t, bootstrap_value, truncation_values_t: see the module doc.
    Returns:
      advantages_t, the shape of rewards_t.
    """
    rewards_t = _float_rewards(rewards_t)
    values_t = np.asarray(values_t, dtype=rewards_t.dtype)
    if values_t.shape != rewards_t.shape:
        raise SpecError(f"values_t: shape {values_t.shape} does not match rewards_t {rewards_t.shape}")
    _check_unit_interval("gamma", gamma)
    _check_unit_interval("lam", lam)
    dtype = _kernel_dtype(rewards_t.dtype)
    terminated_t, truncated_t, truncation_values_t, next_value_b = _episode_ends(
        rewards_t, dtype, terminated_t, truncated_t, bootstrap_value, truncation_values_t
    )
    advantages_t = np.empty(rewards_t.shape, dtype=dtype)
    _gae_kernel(
        _as_2d(rewards_t.astype(dtype, copy=False)),
        _as_2d(values_t.astype(dtype, copy=False)),
        dtype.type(gamma),
        dtype.type(gamma * lam),
        terminated_t,
        truncated_t,
        truncation_values_t,
        next_value_b,
        _as_2d(advantages_t),
    )
    return advantages_t.astype(rewards_t.dtype, copy=False)
