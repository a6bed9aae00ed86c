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

The work is done by two numba kernels, each one reverse pass over time writing straight into the
preallocated output. With a few streams they run one stream at a time with the running value in a
register; otherwise they sweep whole rows, step t reading row t + 1 of the output and of the values, so
the row loop vectorises. Nothing of size T x B is made besides the output (and an index array of
length T). float32 and float64 are computed in their own precision, other float dtypes in float64.
C-contiguous time-major arrays are the fast case; any strides work.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from pgvar.errors import SpecError

# Below this many streams a row is too short to pay for the vectorised row loop's set-up: the kernels
# then run one stream at a time, carrying the running value in a register instead of a row.
_FEW_STREAMS = 8


def _get(array_t, t, b, default):
    """``array_t[t, b]``, or ``default`` when the optional array is None (decided when numba compiles)."""
    return default if array_t is None else array_t[t, b]


@overload(_get, inline="always")
def _get_overload(array_t, t, b, default):
    if isinstance(array_t, types.NoneType):
        return lambda array_t, t, b, default: default
    return lambda array_t, t, b, default: array_t[t, b]


@njit(inline="always")
def _episode_end(t, b, terminated_t, truncated_t, truncation_values_t, zero):
    """(terminated, truncated, truncation value) of step t in stream b, as scalars."""
    terminated = _get(terminated_t, t, b, False)
    truncated = _get(truncated_t, t, b, False)
    return terminated, truncated, _get(truncation_values_t, t, b, zero)


@njit
def _bootstrap(following, episode_end, zero):
    """What step t bootstraps from: ``following`` (the next step's value or return) unless the episode
    ended after t: then 0 after a termination, the value of the state it was cut in after a truncation."""
    terminated, truncated, truncation_value = episode_end
    if terminated:
        return zero
    if truncated:
        return truncation_value
    return following


@njit
def _return_step(reward, next_return, episode_end, gamma):
    """G_t = r_t + gamma * G_{t+1}, with G_{t+1} replaced by the bootstrap at an episode end."""
    return reward + gamma * _bootstrap(next_return, episode_end, gamma - gamma)


@njit
def _gae_step(reward, value, next_value, next_advantage, episode_end, gamma, gamma_lam):
    """A_t = delta_t + gamma * lam * A_{t+1} (Schulman et al. 2016, eq. 16); an episode end cuts the trace."""
    zero = gamma - gamma
    terminated, truncated, _ = episode_end
    if terminated or truncated:
        next_advantage = zero
    return reward + gamma * _bootstrap(next_value, episode_end, zero) - value + gamma_lam * next_advantage


# Both kernels take (T, B) arrays and None for absent flags (numba compiles a version without them);
# ``gamma - gamma`` is a zero of the arrays' own float type, so float32 stays float32 throughout.
# Time is indexed by unsigned integers, walked through an index array in the row sweep: with a signed
# descending index numba wraps negative indices on every access, and with an index LLVM can follow it
# hoists the row loop's overlap checks out of the time loop where, for descending rows, they always
# fail. Either keeps the loops from vectorising or strength-reducing (3 to 4 times slower).


@njit(cache=True)
def _reward_to_go_kernel(
    rewards_t, gamma, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t
):
    T, B = rewards_t.shape
    zero = gamma - gamma
    if B < _FEW_STREAMS:
        for b in range(B):
            next_return = bootstrap_b[b]
            for s in range(T - 1, -1, -1):
                t = np.uint64(s)
                end = _episode_end(t, b, terminated_t, truncated_t, truncation_values_t, zero)
                next_return = _return_step(rewards_t[t, b], next_return, end, gamma)
                out_t[t, b] = next_return
        return
    for b in range(B):
        end = _episode_end(T - 1, b, terminated_t, truncated_t, truncation_values_t, zero)
        out_t[T - 1, b] = _return_step(rewards_t[T - 1, b], bootstrap_b[b], end, gamma)
    one = np.uint64(1)
    for t in np.arange(T - 2, -1, -1, dtype=np.uint64):
        for b in range(B):
            end = _episode_end(t, b, terminated_t, truncated_t, truncation_values_t, zero)
            out_t[t, b] = _return_step(rewards_t[t, b], out_t[t + one, b], end, gamma)


@njit(cache=True)
def _gae_kernel(
    rewards_t, values_t, gamma, gamma_lam, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t
):
    T, B = rewards_t.shape
    zero = gamma - gamma
    if B < _FEW_STREAMS:
        for b in range(B):
            next_value, next_advantage = bootstrap_b[b], zero
            for s in range(T - 1, -1, -1):
                t = np.uint64(s)
                end = _episode_end(t, b, terminated_t, truncated_t, truncation_values_t, zero)
                next_advantage = _gae_step(
                    rewards_t[t, b], values_t[t, b], next_value, next_advantage, end, gamma, gamma_lam
                )
                out_t[t, b] = next_advantage
                next_value = values_t[t, b]
        return
    for b in range(B):
        end = _episode_end(T - 1, b, terminated_t, truncated_t, truncation_values_t, zero)
        out_t[T - 1, b] = _gae_step(
            rewards_t[T - 1, b], values_t[T - 1, b], bootstrap_b[b], zero, end, gamma, gamma_lam
        )
    one = np.uint64(1)
    for t in np.arange(T - 2, -1, -1, dtype=np.uint64):
        for b in range(B):
            end = _episode_end(t, b, terminated_t, truncated_t, truncation_values_t, zero)
            next_value, next_advantage = values_t[t + one, b], out_t[t + one, b]
            out_t[t, b] = _gae_step(
                rewards_t[t, b], values_t[t, b], next_value, next_advantage, end, gamma, gamma_lam
            )


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


def _as_2d(array_t: np.ndarray | None, dtype=None) -> np.ndarray | None:
    """A (T,) array as a (T, 1) view, optionally cast; (T, B) passes through, None stays None."""
    if array_t is None:
        return None
    if dtype is not None:
        array_t = array_t.astype(dtype, copy=False)
    return array_t[:, None] if array_t.ndim == 1 else array_t


def _episode_ends(rewards_t, dtype, terminated_t, truncated_t, bootstrap_value, truncation_values_t):
    """The checked episode-end arguments, ready for a kernel: flags and truncation values as (T, B) views
    (None where absent or never used) and the value after the last step as a fresh (B,) row of ``dtype``."""
    shape = rewards_t.shape
    terminated_t = _flags(terminated_t, shape, "terminated_t")
    truncated_t = _flags(truncated_t, shape, "truncated_t")
    if truncation_values_t is not None:
        truncation_values_t = np.asarray(truncation_values_t, dtype=dtype)
        if truncation_values_t.shape != shape:
            raise SpecError(f"truncation_values_t: shape {truncation_values_t.shape} does not match {shape}")
    elif truncated_t is not None and truncated_t.any():
        raise SpecError("truncation_values_t: needed to bootstrap the truncated steps")
    if truncated_t is None or truncation_values_t is None:  # nothing is truncated: compile without them
        truncated_t = truncation_values_t = None
    width = shape[1] if len(shape) == 2 else 1
    bootstrap_b = np.zeros(width, dtype=dtype)
    if bootstrap_value is not None:
        bootstrap_value = np.asarray(bootstrap_value, dtype=dtype)
        if bootstrap_value.shape not in ((), (width,)):
            raise SpecError(
                f"bootstrap_value: shape {bootstrap_value.shape} must be () or ({width},) "
                f"for rewards_t {shape}"
            )
        bootstrap_b[:] = bootstrap_value
    return _as_2d(terminated_t), _as_2d(truncated_t), _as_2d(truncation_values_t), bootstrap_b


def _kernel_dtype(dtype: np.dtype) -> np.dtype:
    """float32 and float64 are computed in their own precision, other floats in float64."""
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
    ends = _episode_ends(rewards_t, dtype, terminated_t, truncated_t, bootstrap_value, truncation_values_t)
    returns_t = np.empty(rewards_t.shape, dtype=dtype)
    _reward_to_go_kernel(_as_2d(rewards_t, dtype), dtype.type(gamma), *ends, _as_2d(returns_t))
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
    ends = _episode_ends(rewards_t, dtype, terminated_t, truncated_t, bootstrap_value, truncation_values_t)
    advantages_t = np.empty(rewards_t.shape, dtype=dtype)
    _gae_kernel(
        _as_2d(rewards_t, dtype),
        _as_2d(values_t, dtype),
        dtype.type(gamma),
        dtype.type(gamma * lam),
        *ends,
        _as_2d(advantages_t),
    )
    return advantages_t.astype(rewards_t.dtype, copy=False)
