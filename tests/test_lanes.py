"""The SIMD calls of ``pgvar.lanes`` against NumPy, lane by lane: the 4-wide arithmetic, and shifting
a Mask (the flags of 8 steps) as the scan of ``pgvar.returns`` widens its episode ends."""

import numpy as np
import pytest
from numba import njit

from pgvar.lanes import (
    LANES,
    QUAD,
    fma,
    lane_of,
    load,
    load4,
    maximum,
    select,
    shift,
    splat,
    splat4,
    store,
    store4,
)


@njit(cache=False)
def _quad_arithmetic(a, b, out, picked):
    """out[0:4] = fma(a, b, 2) / max(a, b), out[4:8] = 1.5 - a * b + a; picked = each lane of a."""
    x, y = load4(a, 0), load4(b, 0)
    store4(out, 0, fma(x, y, splat4(2.0)) / maximum(x, y))
    store4(out, QUAD, 1.5 - x * y + x)
    for i in range(QUAD):
        picked[i] = lane_of(x, i)


def test_four_lanes_compute_what_numpy_does():
    a = np.array([1.0, -2.0, 3.5, 0.25])
    b = np.array([0.5, -1.0, 4.0, 0.25])
    out, picked = np.zeros(2 * QUAD), np.zeros(QUAD)
    _quad_arithmetic(a, b, out, picked)
    np.testing.assert_allclose(out[:QUAD], (a * b + 2.0) / np.maximum(a, b), rtol=1e-15)
    np.testing.assert_allclose(out[QUAD:], 1.5 - a * b + a, rtol=1e-15)
    np.testing.assert_array_equal(picked, a)


@njit(cache=False)
def _shifted_masks(flags, out):
    """out[8j : 8j + 8] = 1 where the flags shifted by 1, 2 and 4 lanes (filled with False, True,
    False), then or-ed with the flags as a scan widens them, are set; else 0."""
    mask, one, zero = load(flags, 0), splat(1.0), splat(0.0)
    store(out, 0, select(shift(mask, 1, False), one, zero))
    store(out, LANES, select(shift(mask, 2, True), one, zero))
    store(out, 2 * LANES, select(shift(mask, 4, False), one, zero))
    widened = mask | shift(mask, 1, False)
    widened = widened | shift(widened, 2, False)
    store(out, 3 * LANES, select(widened | shift(widened, 4, False), one, zero))


@pytest.mark.parametrize(
    "flags", [[0, 0, 1, 0, 0, 0, 0, 1], [1, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 1, 0], [0] * 8]
)
def test_a_mask_shifts_lane_i_to_lane_i_minus_k(flags):
    flags = np.array(flags, bool)
    out = np.full(4 * LANES, -1.0)
    _shifted_masks(flags, out)
    np.testing.assert_array_equal(out[:LANES], np.r_[flags[1:], False])
    np.testing.assert_array_equal(out[LANES : 2 * LANES], np.r_[flags[2:], True, True])
    np.testing.assert_array_equal(out[2 * LANES : 3 * LANES], np.r_[flags[4:], [False] * 4])
    # lane i: an episode ends at one of the steps i to 7
    np.testing.assert_array_equal(out[3 * LANES :], np.logical_or.accumulate(flags[::-1])[::-1])
