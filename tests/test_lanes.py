"""The 4-wide SIMD calls of ``pgvar.lanes`` against NumPy, lane by lane."""

import numpy as np
from numba import njit

from pgvar.lanes import QUAD, fma, lane_of, load4, maximum, splat4, store4


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
