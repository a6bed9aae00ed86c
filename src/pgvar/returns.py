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

Non-finite input propagates only within its own episode. An inf or NaN reward, value, truncation
value or bootstrap value makes the results that sum it inf or NaN (in its episode, the steps up to
the one that uses it), as the definition says; every other step, in every other episode and stream,
gets exactly the value it would get without it, on every shape and kernel. An overflow to inf inside
an episode stays there too. (The kernels cut the trace at an episode end by a select, not by a
product with 0, since 0 * inf is NaN; the one-stream SIMD kernel keeps a product with 0 only when all
its results are finite, and otherwise computes them again by selects: see below.)

The work is done by numba kernels, each one reverse pass over time writing straight into the
preallocated output. Both recurrences have the form y_t = d_t + k_t y_{t+1} (k_t = gamma * lambda, 0 where
an episode ended; ``_lanes_terms``): reward-to-go is GAE with no values and lambda 1, so the explicit-SIMD
kernels serve both:
- one C-contiguous stream: 8 consecutive steps per vector, solved with a 3-step scan inside the vector;
  it cuts at episode ends by a product with 0 (a select on the running value would add its latency to
  every vector) and, if any result is an inf or NaN, runs the vectors again cutting by selects;
- 8 to 31 C-contiguous streams: 8 streams per vector, one stream group at a time down the whole time axis.
Otherwise (more streams, 2 to 7 streams, or other strides) the generic kernels run: with a few streams one
stream at a time with the running value in a register, else sweeping whole rows, step t reading row t + 1
of the output and of the values, so the row loop vectorises. Nothing of size T x B is made besides the
output (and an index array of length T). float32 and float64 are computed in their own precision, other
float dtypes in float64; arrays in the other byte order are converted to the native one first.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from pgvar.errors import SpecError
from pgvar.lanes import LANES, first, fma, load, load_or, no_lanes, select, shift, splat, store
from pgvar.validation import check_number

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


# --- Explicit SIMD (see pgvar.lanes) ---------------------------------------------------------------

_NARROW = 32  # from this many streams on, the generic row sweep is as fast (it reads whole rows at once)


def _less_value(d, values_t, value):
    """``d - value``, or ``d`` when there are no values (``values_t`` None, decided when numba compiles:
    the subtraction of a zero it does not know to be 0 would cost the reward-to-go one operation)."""
    return d if values_t is None else d - value


@overload(_less_value, inline="always")
def _less_value_overload(d, values_t, value):
    if isinstance(values_t, types.NoneType):
        return lambda d, values_t, value: d
    return lambda d, values_t, value: d - value


@njit(inline="always")
def _lanes_terms(
    i, value, next_value, rewards_t, values_t, gamma, terminated_t, truncated_t, truncation_values_t
):
    """(d, ends) of A_t = d_t + gamma * lam * A_{t+1} for the LANES steps at flat index i, given V(s_t)
    and V(s_{t+1}): d_t = r_t + gamma * V(s_{t+1}) - V(s_t), with V(s_{t+1}) 0 after a termination and
    the cut state's value after a truncation, and ``ends`` the steps after which an episode ended, where
    A_{t+1} is not followed. With V = 0 and lam = 1 this is the reward-to-go."""
    zero = splat(gamma - gamma)
    terminated = load_or(terminated_t, i, no_lanes())
    truncated = load_or(truncated_t, i, no_lanes())
    next_value = select(truncated, load_or(truncation_values_t, i, zero), next_value)
    d = _less_value(load(rewards_t, i) + gamma * select(terminated, zero, next_value), values_t, value)
    return d, terminated | truncated


@njit(inline="always")
def _scan_lanes(d, k, carry):
    """y_i = d_i + k_i y_{i+1} for lanes i of consecutive steps, the last lane following the scalar
    ``carry``: three doubling steps (Hillis and Steele) compose each (d_i, k_i) up to the vector's end.
    An episode end is a k_i of 0, so an inf or NaN after it leaks back as 0 * inf = NaN: the caller
    checks (see _gae_stream_kernel)."""
    d = d + k * shift(d, 1, 0.0)
    k = k * shift(k, 1, 1.0)
    d = d + k * shift(d, 2, 0.0)
    k = k * shift(k, 2, 1.0)
    d = d + k * shift(d, 4, 0.0)
    k = k * shift(k, 4, 1.0)
    return fma(k, splat(carry), d)


@njit(inline="always")
def _powers(gamma_lam):
    """The k_i of _scan_lanes, composed where no episode ends: gamma_lam ** (LANES - i), multiplied
    in the same order."""
    k = splat(gamma_lam)
    k = k * shift(k, 1, 1.0)
    k = k * shift(k, 2, 1.0)
    return k * shift(k, 4, 1.0)


@njit(inline="always")
def _select_scan_lanes(d, gamma_lam, powers, ends, carry):
    """_scan_lanes with selects: ``ends`` lane i, widened at each doubling step, tells whether an episode
    ends between step i and the lanes composed so far; there what would be added is replaced by 0
    rather than multiplied by 0, so that nothing after the end reaches the lane, inf and NaN included.
    Where no episode ends the arithmetic is _scan_lanes', operation for operation."""
    zero, squared = splat(gamma_lam - gamma_lam), gamma_lam * gamma_lam
    d = d + gamma_lam * select(ends, zero, shift(d, 1, 0.0))
    ends = ends | shift(ends, 1, False)
    d = d + squared * select(ends, zero, shift(d, 2, 0.0))
    ends = ends | shift(ends, 2, False)
    d = d + squared * squared * select(ends, zero, shift(d, 4, 0.0))
    ends = ends | shift(ends, 4, False)
    return fma(powers, select(ends, zero, splat(carry)), d)


@njit(inline="always")
def _stream_vector(
    t, value, following, carry, by_select, rewards_t, values_t, gamma, gamma_lam, powers, terminated_t,
    truncated_t, truncation_values_t, out_t,
):  # fmt: skip
    """Steps t to t + LANES - 1 of one stream, given V(s_t) and V(s_{t+1}) (``value``, ``following``)
    and A after the last (``carry``): stores and returns their A."""
    d, ends = _lanes_terms(
        t, value, following, rewards_t, values_t, gamma, terminated_t, truncated_t, truncation_values_t
    )
    if by_select:
        advantages = _select_scan_lanes(d, gamma_lam, powers, ends, carry)
    else:
        advantages = _scan_lanes(d, select(ends, splat(gamma - gamma), splat(gamma_lam)), carry)
    store(out_t, t, advantages)
    return advantages


@njit(inline="always")
def _stream_vectors(
    by_select, whole, next_value, next_advantage, rewards_t, values_t, gamma, gamma_lam, terminated_t,
    truncated_t, truncation_values_t, out_t,
):  # fmt: skip
    """Steps 0 to whole - 1 of one stream (whole a multiple of LANES), given V(s) and A after them, LANES
    steps per vector; ``by_select`` (a constant) picks _select_scan_lanes over _scan_lanes. Returns
    Lanes that are all 0 unless some result is an inf or NaN. V(s_{t+1}) is read from values_t at
    t + 1 (a load costs less than a shift), except in the last vector of a stream of whole vectors."""
    zero = splat(gamma - gamma)
    powers, nan_seen = _powers(gamma_lam), zero
    t = whole - LANES
    if t >= 0 and whole == rewards_t.shape[0]:
        value = load_or(values_t, t, zero)
        advantages = _stream_vector(
            t, value, shift(value, 1, next_value), next_advantage, by_select, rewards_t, values_t, gamma,
            gamma_lam, powers, terminated_t, truncated_t, truncation_values_t, out_t,
        )  # fmt: skip
        next_advantage, nan_seen = first(advantages), fma(advantages, zero, nan_seen)
        t -= LANES
    for s in range(t, -1, -LANES):
        advantages = _stream_vector(
            s, load_or(values_t, s, zero), load_or(values_t, s + 1, zero), next_advantage, by_select,
            rewards_t, values_t, gamma, gamma_lam, powers, terminated_t, truncated_t, truncation_values_t,
            out_t,
        )  # fmt: skip
        next_advantage = first(advantages)
        nan_seen = fma(advantages, zero, nan_seen)  # 0 * inf and 0 * NaN are NaN
    return nan_seen


@njit(inline="always")
def _all_finite(lanes):
    """Whether every lane is finite, for Lanes that are 0 or NaN: their sum is 0."""
    lanes = lanes + shift(lanes, 4, 0.0)
    lanes = lanes + shift(lanes, 2, 0.0)
    return first(lanes + shift(lanes, 1, 0.0)) == 0


# The two kernels below take the generic GAE kernel's arguments, C-contiguous, with ``values_t`` None
# for the reward-to-go (gamma_lam is then gamma); the generic kernels call them through _simd_gae.


@njit
def _gae_stream_kernel(
    rewards_t, values_t, gamma, gamma_lam, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t
):
    """One stream, (T, 1): LANES consecutive steps per vector, the running value handed from vector to
    vector as a scalar. The last T % LANES steps go first, one at a time.

    The vectors cut the trace at episode ends by multiplying by 0, the fast way (a select on the running
    value would add its latency to every vector), and note whether any result is an inf or NaN (only
    then can 0 * inf have been computed); if so they run again, cutting by selects."""
    T = rewards_t.shape[0]
    zero = gamma - gamma
    next_value, next_advantage = bootstrap_b[0], zero
    whole = T - T % LANES
    for s in range(T - 1, whole - 1, -1):
        end = _episode_end(s, 0, terminated_t, truncated_t, truncation_values_t, zero)
        value = _get(values_t, s, 0, zero)
        next_advantage = _gae_step(rewards_t[s, 0], value, next_value, next_advantage, end, gamma, gamma_lam)
        out_t[s, 0] = next_advantage
        next_value = value
    nan_seen = _stream_vectors(
        False, whole, next_value, next_advantage, rewards_t, values_t, gamma, gamma_lam, terminated_t,
        truncated_t, truncation_values_t, out_t,
    )  # fmt: skip
    if not _all_finite(nan_seen):
        _stream_vectors(
            True, whole, next_value, next_advantage, rewards_t, values_t, gamma, gamma_lam, terminated_t,
            truncated_t, truncation_values_t, out_t,
        )  # fmt: skip


@njit
def _gae_narrow_kernel(
    rewards_t, values_t, gamma, gamma_lam, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t
):
    """LANES <= B < _NARROW streams, (T, B): LANES streams per vector, one group of streams at a time
    down the whole time axis with the running value in a register. When B is not a multiple of LANES
    the last group overlaps the one before; both write the same numbers there."""
    T, B = rewards_t.shape
    zero, factor = splat(gamma - gamma), splat(gamma_lam)
    for group in range(0, B, LANES):
        b = min(group, B - LANES)
        next_value, next_advantage = load(bootstrap_b, b), zero
        for s in range(T - 1, -1, -1):
            i = s * B + b
            value = load_or(values_t, i, zero)
            d, ends = _lanes_terms(
                i, value, next_value, rewards_t, values_t, gamma, terminated_t, truncated_t,
                truncation_values_t,
            )  # fmt: skip
            next_advantage = select(ends, d, fma(factor, next_advantage, d))  # a select: 0 * inf is NaN
            store(out_t, i, next_advantage)
            next_value = value


def _simd_gae(
    rewards_t, values_t, gamma, gamma_lam, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t
):
    """Run the SIMD kernel that fits these (T, B) arrays and return True, or return False: B is not 1 nor
    in [LANES, _NARROW), or an array is not C-contiguous (known when numba compiles)."""
    B = rewards_t.shape[1]
    args = (rewards_t, values_t, gamma, gamma_lam, terminated_t, truncated_t, truncation_values_t)
    if B == 1:
        _gae_stream_kernel(*args, bootstrap_b, out_t)
    elif LANES <= B < _NARROW:
        _gae_narrow_kernel(*args, bootstrap_b, out_t)
    else:
        return False
    return True


def _no_simd(
    rewards_t, values_t, gamma, gamma_lam, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t
):
    return False


@overload(_simd_gae)
def _simd_gae_overload(
    rewards_t, values_t, gamma, gamma_lam, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t
):
    arrays = (rewards_t, values_t, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t)
    if all(isinstance(array, types.NoneType) or array.layout == "C" for array in arrays):
        return _simd_gae
    return _no_simd


def _in_dtype_of(value, array):
    """``value`` as ``array``'s float type: float32 or float64 (decided when numba compiles)."""


@overload(_in_dtype_of, inline="always")
def _in_dtype_of_overload(value, array):
    if array.dtype == types.float32:
        return lambda value, array: np.float32(value)
    return lambda value, array: np.float64(value)


# Both kernels take (T, B) arrays and None for absent flags (numba compiles a version without them),
# and the discount factors as Python floats, cast at once to the arrays' own float type (making NumPy
# scalars of them costs more than the whole kernel on small arrays); ``gamma - gamma`` is then a zero
# of that type, so float32 stays float32 throughout.
# Time is indexed by unsigned integers, walked through an index array in the row sweep: with a signed
# descending index numba wraps negative indices on every access, and with an index LLVM can follow it
# hoists the row loop's overlap checks out of the time loop where, for descending rows, they always
# fail. Either keeps the loops from vectorising or strength-reducing (3 to 4 times slower).


@njit(cache=True)
def _reward_to_go_kernel(
    rewards_t, gamma_given, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t
):
    gamma = _in_dtype_of(gamma_given, out_t)
    if _simd_gae(
        rewards_t, None, gamma, gamma, terminated_t, truncated_t, truncation_values_t, bootstrap_b, out_t
    ):
        return  # the reward-to-go is GAE with V = 0 and lambda = 1
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
    rewards_t, values_t, gamma_given, gamma_lam_given, terminated_t, truncated_t, truncation_values_t,
    bootstrap_b, out_t,
):  # fmt: skip
    gamma, gamma_lam = _in_dtype_of(gamma_given, out_t), _in_dtype_of(gamma_lam_given, out_t)
    if _simd_gae(
        rewards_t,
        values_t,
        gamma,
        gamma_lam,
        terminated_t,
        truncated_t,
        truncation_values_t,
        bootstrap_b,
        out_t,
    ):
        return
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


def _discount(value: object, name: str) -> float:
    """gamma or lam, a number in [0, 1] by ``check_number``, which is also given as an array of one
    element (of any shape: its value; NumPy 2 deprecates, then refuses, float() of an array with
    dimensions). Any other array is a SpecError naming its shape."""
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise SpecError(
                f"{name}: must be a finite number from 0 to 1, got an array of shape {value.shape}"
            )
        value = value.item()  # a Python scalar: bool, str and the like are refused as they are alone
    return check_number(value, name, low=0.0, high=1.0)


def _float_rewards(rewards_t) -> np.ndarray:
    """The rewards as a (T,) or (T, B) array of floats in native byte order (numba compiles no kernel
    for an array in the other byte order: a big-endian one on a little-endian machine)."""
    rewards_t = np.asarray(rewards_t)
    if rewards_t.dtype.kind != "f":
        rewards_t = rewards_t.astype(float)
    elif not rewards_t.dtype.isnative:
        rewards_t = rewards_t.astype(rewards_t.dtype.newbyteorder("="))
    if rewards_t.ndim not in (1, 2) or rewards_t.shape[0] == 0:
        raise SpecError(f"rewards_t: must have shape (T,) or (T, B) with T >= 1, got {rewards_t.shape}")
    return rewards_t


def _flags(flag_t, shape, name: str) -> np.ndarray | None:
    if flag_t is None:
        return None
    if not (isinstance(flag_t, np.ndarray) and flag_t.dtype.char == "?"):  # cheaper than == np.bool_
        flag_t = np.asarray(flag_t, dtype=bool)
    if flag_t.shape != shape:
        raise SpecError(f"{name}: shape {flag_t.shape} does not match rewards_t {shape}")
    return flag_t


def _as_2d(array_t: np.ndarray | None, dtype=None) -> np.ndarray | None:
    """A (T,) array as a (T, 1) view, optionally cast; (T, B) passes through, None stays None."""
    if array_t is None:
        return None
    if dtype is not None and array_t.dtype != dtype:  # the check is cheaper than a no-op astype
        array_t = array_t.astype(dtype)
    return array_t[:, None] if array_t.ndim == 1 else array_t


def _episode_ends(rewards_t, dtype, terminated_t, truncated_t, bootstrap_value, truncation_values_t):
    """The checked episode-end arguments, ready for a kernel: flags and truncation values as (T, B) views
    (None where absent or never used) and the value after the last step as a contiguous (B,) row of
    ``dtype`` (the kernels only read it)."""
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
    if bootstrap_value is None:
        return _as_2d(terminated_t), _as_2d(truncated_t), _as_2d(truncation_values_t), np.zeros(width, dtype)
    bootstrap_b = np.asarray(bootstrap_value, dtype=dtype)
    if bootstrap_b.shape not in ((), (width,)):
        raise SpecError(
            f"bootstrap_value: shape {bootstrap_b.shape} must be () or ({width},) for rewards_t {shape}"
        )
    if bootstrap_b.ndim == 0:
        bootstrap_b = np.full(width, bootstrap_b, dtype=dtype)
    elif not bootstrap_b.flags.c_contiguous:
        bootstrap_b = bootstrap_b.copy()
    return _as_2d(terminated_t), _as_2d(truncated_t), _as_2d(truncation_values_t), bootstrap_b


def _as_given(rewards_t, same_t, terminated_t, truncated_t, bootstrap_value, truncation_values_t):
    """The kernel's episode-end arguments when every argument is already what the kernels take, else
    None (and the checked path converts). That is: ``rewards_t`` a (T, B) float32 or float64 array,
    ``same_t`` (values, or None) and ``truncation_values_t`` arrays of its dtype and shape, the flags
    bool arrays of its shape, truncations given with their values or neither, and ``bootstrap_value``
    a (B,) array of its dtype or None. On small arrays the checked path's conversions cost more than
    the kernel, more still when other libraries ran in between and left their code cold; so the tests
    here are identity tests on NumPy's canonical dtypes (anything else takes the checked path)."""
    if type(rewards_t) is not np.ndarray:
        return None
    dtype, shape = rewards_t.dtype, rewards_t.shape
    if (dtype is not _FLOAT32 and dtype is not _FLOAT64) or len(shape) != 2 or shape[0] == 0:
        return None
    if (truncated_t is None) != (truncation_values_t is None):
        return None
    for array in (same_t, truncation_values_t):
        if array is not None and (
            type(array) is not np.ndarray or array.dtype is not dtype or array.shape != shape
        ):
            return None
    for flag_t in (terminated_t, truncated_t):
        if flag_t is not None and (
            type(flag_t) is not np.ndarray or flag_t.dtype is not _BOOL or flag_t.shape != shape
        ):
            return None
    if bootstrap_value is None:
        return terminated_t, truncated_t, truncation_values_t, np.zeros(shape[1], dtype)
    if (
        type(bootstrap_value) is not np.ndarray
        or bootstrap_value.dtype is not dtype
        or bootstrap_value.shape != shape[1:]
    ):
        return None
    return terminated_t, truncated_t, truncation_values_t, bootstrap_value


_FLOAT32, _FLOAT64, _BOOL = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.bool_)


def _kernel_dtype(dtype: np.dtype) -> np.dtype:
    """float32 and float64 are computed in their own precision, other floats in float64."""
    return dtype if dtype.char in "fd" else np.dtype(np.float64)  # the char test is the cheap one


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
      gamma: discount in [0, 1] (a number, or an array of one element).
      terminated_t, truncated_t: optional (T,) or (T, B) episode-end flags (see module doc).
      bootstrap_value: value after the last step, () or (B,); default 0.
      truncation_values_t: (T,) or (T, B) value of the state each truncated step was cut in.
    Returns:
      returns_t with the shape and dtype of rewards_t (float64 for integer input), in native byte order.
    """
    gamma = _discount(gamma, "gamma")
    ends = _as_given(rewards_t, None, terminated_t, truncated_t, bootstrap_value, truncation_values_t)
    if ends is not None:
        returns_t = np.empty(rewards_t.shape, rewards_t.dtype)
        _reward_to_go_kernel(rewards_t, float(gamma), *ends, returns_t)
        return returns_t
    rewards_t = _float_rewards(rewards_t)
    dtype = _kernel_dtype(rewards_t.dtype)
    ends = _episode_ends(rewards_t, dtype, terminated_t, truncated_t, bootstrap_value, truncation_values_t)
    returns_t = np.empty_like(rewards_t, dtype=dtype, order="C")
    _reward_to_go_kernel(_as_2d(rewards_t, dtype), float(gamma), *ends, _as_2d(returns_t))
    return returns_t if returns_t.dtype == rewards_t.dtype else returns_t.astype(rewards_t.dtype)


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
      gamma, lam: discount and trace parameter, both in [0, 1] (numbers, or arrays of one element).
      terminated_t, truncated_t, bootstrap_value, truncation_values_t: see the module doc.
    Returns:
      advantages_t, the shape of rewards_t, in native byte order.
    """
    gamma = _discount(gamma, "gamma")
    lam = _discount(lam, "lam")
    ends = _as_given(rewards_t, values_t, terminated_t, truncated_t, bootstrap_value, truncation_values_t)
    if ends is not None:
        advantages_t = np.empty(rewards_t.shape, rewards_t.dtype)
        _gae_kernel(rewards_t, values_t, float(gamma), float(gamma * lam), *ends, advantages_t)
        return advantages_t
    rewards_t = _float_rewards(rewards_t)
    values_t = np.asarray(values_t, dtype=rewards_t.dtype)
    if values_t.shape != rewards_t.shape:
        raise SpecError(f"values_t: shape {values_t.shape} does not match rewards_t {rewards_t.shape}")
    dtype = _kernel_dtype(rewards_t.dtype)
    ends = _episode_ends(rewards_t, dtype, terminated_t, truncated_t, bootstrap_value, truncation_values_t)
    advantages_t = np.empty_like(rewards_t, dtype=dtype, order="C")
    _gae_kernel(
        _as_2d(rewards_t, dtype),
        _as_2d(values_t, dtype),
        float(gamma),
        float(gamma * lam),
        *ends,
        _as_2d(advantages_t),
    )
    return advantages_t if advantages_t.dtype == rewards_t.dtype else advantages_t.astype(rewards_t.dtype)
