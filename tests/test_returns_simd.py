"""The explicit-SIMD kernels of pgvar.returns against the plain references of test_returns.py.

One C-contiguous stream goes 8 consecutive steps per vector (a scan inside the vector, the last T % 8
steps one at a time); 8 to 31 C-contiguous streams go 8 streams per vector, the last group overlapping
the one before when B is not a multiple of 8. Other layouts take the generic kernels. The cases below
put episode ends on and next to the vectors' edges and use lengths and widths around the lane count.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit
from test_returns import _gae_reference, _reward_to_go_reference

from pgvar.lanes import LANES
from pgvar.returns import _FEW_STREAMS, _NARROW, _simd_gae, gae, reward_to_go

TOLERANCE = {np.float64: {"rtol": 1e-9, "atol": 1e-9}, np.float32: {"rtol": 1e-5, "atol": 2e-3}}


def _inputs(shape, seed, dtype=np.float64, ends=None):
    """Random rewards, values and keyword arguments; ``ends`` (step index -> 'terminated' or 'truncated')
    puts episode ends at chosen steps of every stream, else they fall at random (3% each)."""
    rng = np.random.default_rng(seed)
    rewards, values, cut_values = rng.normal(size=(3, *shape)).astype(dtype)
    if ends is None:
        terminated, truncated = rng.random((2, *shape)) < 0.03
    else:
        terminated, truncated = np.zeros((2, *shape), bool)
        for step, kind in ends.items():
            (terminated if kind == "terminated" else truncated)[step] = True
    kw = {
        "terminated_t": terminated,
        "truncated_t": truncated,
        "truncation_values_t": cut_values,
        "bootstrap_value": rng.normal(size=shape[1:]),
    }
    return rewards, values, kw


def _check(rewards, values, kw, gamma=0.99, lam=0.95):
    ref = {
        "terminated": kw.get("terminated_t"),
        "truncated": kw.get("truncated_t"),
        "bootstrap_value": kw.get("bootstrap_value"),
        "truncation_values": kw.get("truncation_values_t"),
    }
    tolerance = TOLERANCE[rewards.dtype.type]
    advantages = gae(rewards, values, gamma, lam, **kw)
    returns = reward_to_go(rewards, gamma, **kw)
    assert advantages.dtype == returns.dtype == rewards.dtype
    np.testing.assert_allclose(advantages, _gae_reference(rewards, values, gamma, lam, **ref), **tolerance)
    np.testing.assert_allclose(returns, _reward_to_go_reference(rewards, gamma, **ref), **tolerance)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("T", [1, LANES - 1, LANES, LANES + 1, 3 * LANES, 3 * LANES + 5, 203])
def test_one_stream_of_any_length(T, dtype):
    """Shorter than a vector (all one step at a time), whole vectors, and vectors plus a tail."""
    _check(*_inputs((T,), seed=T, dtype=dtype))


@pytest.mark.parametrize(
    "ends",
    [
        {7: "terminated"},  # the last step of the first vector
        {8: "truncated"},  # the first step of the second
        {15: "truncated", 16: "terminated"},  # both sides of a vector edge
        {0: "terminated", 23: "truncated"},  # the first step, and the last of the vectors before the tail
        {24: "terminated", 28: "truncated"},  # inside the tail
        {27: "truncated", 28: "terminated"},  # the last two steps
        {3: "terminated", 4: "truncated", 5: "terminated"},  # one-step episodes inside a vector
    ],
)
def test_one_stream_with_episode_ends_at_vector_edges(ends):
    """T = 29: three vectors of 8 and a tail of 5."""
    _check(*_inputs((29,), seed=1, ends=ends))
    _check(*_inputs((29,), seed=2, dtype=np.float32, ends=ends))


def test_one_stream_without_flags_or_with_flags_that_never_fire():
    rewards, values, kw = _inputs((45,), seed=3)
    _check(rewards, values, {})
    _check(rewards, values, {"bootstrap_value": 2.5})
    _check(rewards, values, {"terminated_t": kw["terminated_t"]})
    never = np.zeros(45, bool)
    _check(rewards, values, {"truncated_t": never, "terminated_t": never, "bootstrap_value": -1.0})


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("B", [LANES, LANES + 1, 2 * LANES - 1, 2 * LANES, 2 * LANES + 3, _NARROW - 1])
def test_narrow_batches_of_any_width(B, dtype):
    """Widths that are and are not multiples of the lane count (the last group overlaps)."""
    _check(*_inputs((37, B), seed=B, dtype=dtype))


def test_narrow_batch_with_episode_ends_at_the_first_and_last_steps():
    _check(*_inputs((20, 11), seed=4, ends={0: "terminated", 19: "truncated"}))
    _check(*_inputs((20, 11), seed=5, ends={0: "truncated", 19: "terminated"}))


@pytest.mark.parametrize("B", [1, _FEW_STREAMS - 1, LANES, 13, _NARROW - 1, _NARROW])
def test_simd_and_generic_kernels_agree(B):
    """The same numbers from C-contiguous arrays (SIMD kernels where B is 1 or in [8, 32)) and from
    strided views of them (always the generic kernels), to rounding."""
    rewards, values, kw = _inputs((50, B), seed=B)
    strided = {name: np.repeat(a, 2, axis=0)[::2] if np.ndim(a) == 2 else a for name, a in kw.items()}
    pairs = [
        (
            gae(rewards, values, 0.9, 0.8, **kw),
            gae(np.repeat(rewards, 2, 0)[::2], values, 0.9, 0.8, **strided),
        ),
        (reward_to_go(rewards, 0.9, **kw), reward_to_go(np.repeat(rewards, 2, 0)[::2], 0.9, **strided)),
    ]
    for contiguous, generic in pairs:
        np.testing.assert_allclose(contiguous, generic, rtol=1e-12, atol=1e-12)


# --- non-finite input stays in its episode, on every kernel path -----------------------------------

# shape, and whether the arrays are strided views (which take the generic kernels whatever B)
KERNEL_PATHS = {
    "one stream, T < 8: one step at a time": ((7,), False),
    "one stream, vectors and a tail of 5": ((29,), False),
    "one stream, whole vectors": ((32,), False),
    "2 to 7 streams: generic, stream by stream": ((29, 3), False),
    "8 to 31 streams: 8 per vector, groups overlapping": ((29, 11), False),
    "32 streams or more: generic, row sweep": ((29, 40), False),
    "one stream, strided": ((29,), True),
    "11 streams, strided": ((29, 11), True),
}
# episode ends of every stream, on and next to the vectors' edges (steps 7/8, 15/16, 23/24)
ENDS = {4: "terminated", 7: "truncated", 15: "terminated", 16: "truncated", 23: "terminated"}


def _episodes(T):
    """(first, last) steps of each episode of a stream of length T with the ENDS."""
    lasts = [t for t in sorted(ENDS) if t < T - 1] + [T - 1]
    return list(zip([0] + [t + 1 for t in lasts[:-1]], lasts, strict=True))


def _computed(rewards, values, kw, strided):
    """(advantages, returns), gamma 0.9 and lambda 0.8, of these arrays or of strided views of them."""
    if strided:
        T = rewards.shape[0]
        view = {name: np.repeat(a, 2, axis=0)[::2] for name, a in kw.items() if np.shape(a)[:1] == (T,)}
        kw = {**kw, **view}
        rewards, values = np.repeat(rewards, 2, axis=0)[::2], np.repeat(values, 2, axis=0)[::2]
        assert not rewards.flags.c_contiguous
    return gae(rewards, values, 0.9, 0.8, **kw), reward_to_go(rewards, 0.9, **kw)


def _injections(first, last, dtype):
    """{step: value} put into one episode's rewards, and whether the steps up to the last of them must
    be non-finite (a finite overflow need not make all of them so)."""
    middle = (first + last) // 2
    yield {last: np.nan}, True
    yield {last: np.inf}, True
    yield {middle: -np.inf}, True
    yield {first: np.nan, last: np.inf}, True  # a NaN and an inf in one episode
    big = np.finfo(dtype).max
    yield {first: big, last: big}, False  # the sum overflows to inf: made, not given


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_an_inf_or_nan_reward_stays_in_its_episode(path, dtype):
    """An inf or NaN put into one episode of one stream makes the steps of that episode up to it inf
    or NaN (they sum it) and nothing else: every other step, the rest of the episode, the other
    episodes and the other streams, equals the same computation without it, exactly. (An episode end
    must drop the value after it by a select: 0 * inf is NaN.)"""
    shape, strided = KERNEL_PATHS[path]
    T = shape[0]
    ends = {t: kind for t, kind in ENDS.items() if t < T}
    rewards, values, kw = _inputs(shape, seed=T, dtype=dtype, ends=ends)
    stream = (slice(None),) if len(shape) == 1 else (slice(None), shape[1] // 2)
    clean = _computed(rewards, values, kw, strided)
    for first, last in _episodes(T):
        for injected, all_non_finite in _injections(first, last, dtype):
            dirty_rewards = rewards.copy()
            for step, value in injected.items():
                dirty_rewards[stream][step] = value
            touched = np.zeros(shape, bool)
            touched[stream][first : max(injected) + 1] = True
            for got, want in zip(_computed(dirty_rewards, values, kw, strided), clean, strict=True):
                np.testing.assert_array_equal(got[~touched], want[~touched], err_msg=f"{injected}")
                if all_non_finite:
                    assert not np.isfinite(got[touched]).any(), injected


@pytest.mark.parametrize("path", KERNEL_PATHS)
def test_inf_or_nan_values_and_bootstrap_values_stay_in_their_episode(path):
    """In one stream: V(s_8) NaN (the first state of an episode: step 7 before it was truncated and
    bootstraps the value of the state it was cut in), V(s_16) inf (a one-step episode after a
    termination), the value of the state cut in after step 7 NaN, and the bootstrap value NaN. They
    make exactly the steps that use them non-finite: advantages at 5 to 8, 16 and the last episode,
    returns (no V) at 5 to 7 and the last episode; every other step equals the computation without them."""
    shape, strided = KERNEL_PATHS[path]
    T = shape[0]
    rewards, values, kw = _inputs(shape, seed=3, ends={t: kind for t, kind in ENDS.items() if t < T})
    stream = (slice(None),) if len(shape) == 1 else (slice(None), shape[1] // 2)
    dirty_values, dirty_kw = values.copy(), dict(kw, truncation_values_t=kw["truncation_values_t"].copy())
    dirty_kw["bootstrap_value"] = np.array(kw["bootstrap_value"], copy=True)
    dirty_kw["bootstrap_value"][stream[1:]] = np.nan
    non_finite = {"advantages": np.zeros(shape, bool), "returns": np.zeros(shape, bool)}
    for touched in non_finite.values():
        touched[stream][_episodes(T)[-1][0] :] = True
    if T > 16:
        dirty_values[stream][8], dirty_values[stream][16] = np.nan, np.inf
        dirty_kw["truncation_values_t"][stream][7] = np.nan
        non_finite["advantages"][stream][[5, 6, 7, 8, 16]] = True
        non_finite["returns"][stream][[5, 6, 7]] = True
    clean = _computed(rewards, values, kw, strided)
    dirty = _computed(rewards, dirty_values, dirty_kw, strided)
    for got, want, touched in zip(dirty, clean, non_finite.values(), strict=True):
        np.testing.assert_array_equal(got[~touched], want[~touched])
        assert not np.isfinite(got[touched]).any()


@njit
def _takes_simd_path(rewards_t, out_t):
    return _simd_gae(rewards_t, None, 0.9, 0.9, None, None, None, np.zeros(rewards_t.shape[1]), out_t)


@pytest.mark.parametrize(
    ("B", "contiguous", "expected"),
    [
        (1, True, True),
        (LANES, True, True),
        (_NARROW - 1, True, True),
        (1, False, False),
        (LANES, False, False),
        (LANES - 1, True, False),
        (_NARROW, True, False),
    ],
)
def test_which_layouts_take_the_simd_kernels(B, contiguous, expected):
    rewards = np.ones((10, B)) if contiguous else np.ones((20, B))[::2]
    assert _takes_simd_path(rewards, np.empty((10, B))) is expected


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([np.float64, np.float32]),
    st.integers(1, 40),
    st.sampled_from([None, LANES, LANES + 2, 2 * LANES + 1]),
    st.data(),
)
def test_simd_kernels_match_reference(dtype, T, B, data):
    shape = (T,) if B is None else (T, B)
    real = st.floats(-10, 10, width=32)
    rewards = data.draw(hnp.arrays(dtype, shape, elements=real))
    values = data.draw(hnp.arrays(dtype, shape, elements=real))
    terminated = data.draw(hnp.arrays(np.bool_, shape, elements=st.booleans() | st.just(False)))
    truncated = data.draw(hnp.arrays(np.bool_, shape, elements=st.booleans() | st.just(False)))
    kw = {
        "terminated_t": terminated,
        "truncated_t": truncated,
        "truncation_values_t": data.draw(hnp.arrays(dtype, shape, elements=real)),
        "bootstrap_value": data.draw(hnp.arrays(np.float64, shape[1:], elements=real)),
    }
    gamma, lam = data.draw(st.floats(0, 1)), data.draw(st.floats(0, 1))
    _check(rewards, values, kw, gamma, lam)
