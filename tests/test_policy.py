"""The softmax policy: stable log-softmax, the score, the entropy gradient and reading theta."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pgvar import envs
from pgvar.claims import finite_difference
from pgvar.errors import SpecError
from pgvar.policy import entropy, entropy_gradient, log_softmax, parse_theta, score, softmax

HUGE = 1e300
huge_floats = st.floats(-HUGE, HUGE, allow_nan=False, allow_infinity=False)
moderate_floats = st.floats(-30, 30, allow_nan=False, allow_infinity=False)


def rows(elements, max_actions: int = 6, max_rows: int = 3):
    """(B, A) arrays of logits."""
    shape = st.tuples(st.integers(1, max_rows), st.integers(1, max_actions))
    return hnp.arrays(np.float64, shape, elements=elements)


def reference_log_softmax(row: np.ndarray) -> np.ndarray:
    """The max-shifted computation in plain Python with an exactly rounded sum."""
    top = max(row)
    total = math.fsum(math.exp(x - top) for x in row)
    return np.array([(x - top) - math.log(total) for x in row])


# -- log_softmax / softmax -----------------------------------------------------------------------
@given(logits=rows(huge_floats), shift=huge_floats)
def test_log_softmax_is_finite_and_exact_for_huge_logits(logits, shift):
    shifted = logits + shift  # entries up to 2e300: still finite
    for z in (logits, shifted):
        out = log_softmax(z)
        assert np.isfinite(out).all()
        assert (out <= 0).all()
        for row, got in zip(z, out, strict=True):
            want = reference_log_softmax(row)
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        # the largest logit keeps at least 1/A of the mass
        assert (out.max(axis=-1) >= -math.log(z.shape[-1]) - 1e-12).all()


@given(
    logits=rows(st.integers(-(2**40), 2**40).map(float)),
    shift=st.integers(-(2**50), 2**50).map(float),
)
def test_log_softmax_is_shift_invariant(logits, shift):
    # integers below 2**52 add exactly, so the shifted logits are exactly the same distribution
    np.testing.assert_allclose(log_softmax(logits + shift), log_softmax(logits), rtol=1e-12, atol=1e-12)


@given(logits=rows(huge_floats))
def test_softmax_rows_sum_to_one(logits):
    probs = softmax(logits)
    assert probs.shape == logits.shape
    assert ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


def test_log_softmax_known_values():
    np.testing.assert_allclose(log_softmax(np.zeros(4)), np.full(4, -math.log(4)), rtol=0, atol=1e-15)
    out = log_softmax(np.array([HUGE, -HUGE, HUGE]))
    np.testing.assert_allclose(out, [-math.log(2), -2 * HUGE, -math.log(2)], rtol=1e-15)
    np.testing.assert_array_equal(softmax(np.array([[1e300, 0.0]])), [[1.0, 0.0]])


# -- the score -----------------------------------------------------------------------------------
@given(logits=rows(huge_floats))
def test_score_has_zero_mean_under_pi(logits):
    probs = softmax(logits)
    n_actions = logits.shape[-1]
    mean = np.zeros_like(probs)
    for a in range(n_actions):
        actions = np.full(logits.shape[:-1], a)
        s = score(probs, actions)
        assert s.shape == probs.shape
        mean += probs[..., a : a + 1] * s
    np.testing.assert_allclose(mean, 0.0, rtol=0, atol=1e-12)


def test_score_is_one_hot_minus_pi():
    probs = np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    np.testing.assert_allclose(score(probs, np.array([2, 0])), [[-0.2, -0.3, 0.5], [0.4, -0.2, -0.2]])


# -- entropy and its gradient --------------------------------------------------------------------
@settings(deadline=None)
@given(logits=hnp.arrays(np.float64, st.integers(1, 6), elements=st.floats(-5, 5)))
def test_entropy_gradient_matches_central_differences(logits):
    numeric = finite_difference(lambda x: entropy(softmax(x)), logits)
    np.testing.assert_allclose(entropy_gradient(logits), numeric, rtol=0, atol=1e-7)


@given(n_actions=st.integers(1, 8), level=huge_floats)
def test_entropy_gradient_is_zero_at_uniform(n_actions, level):
    logits = np.full(n_actions, level)
    np.testing.assert_allclose(entropy_gradient(logits), 0.0, rtol=0, atol=1e-15)
    assert entropy(softmax(logits)) == pytest.approx(math.log(n_actions), abs=1e-12)


@given(logits=rows(st.floats(-50, 50)))
def test_entropy_gradient_points_toward_uniform(logits):
    grad = entropy_gradient(logits)
    centred = logits - logits.mean(axis=-1, keepdims=True)
    inner = (grad * centred).sum(axis=-1)
    scale = (np.abs(grad) * np.abs(centred)).sum(axis=-1)
    assert (inner <= 1e-12 * (1.0 + scale)).all()
    np.testing.assert_allclose(grad.sum(axis=-1), 0.0, atol=1e-12)  # the gradient keeps the mean


@given(logits=rows(huge_floats))
def test_entropy_and_gradient_stay_finite(logits):
    assert np.isfinite(entropy_gradient(logits)).all()
    h = entropy(softmax(logits))
    assert np.isfinite(h).all() and (h >= -1e-12).all() and (h <= np.log(logits.shape[-1]) + 1e-12).all()


# -- parse_theta ---------------------------------------------------------------------------------
LESSON = envs.lesson()  # 3 observations x 3 actions, horizon 3


def spec_error(value, mdp=LESSON) -> str:
    with pytest.raises(SpecError) as info:
        parse_theta(value, mdp)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_parse_theta_uniform_and_none():
    for value in ("uniform", " uniform ", None):
        theta = parse_theta(value, LESSON)
        assert theta.shape == (3, 3) and not theta.any()


@given(theta=hnp.arrays(np.float64, st.sampled_from([(3, 3), (3, 3, 3)]), elements=moderate_floats))
def test_parse_theta_json_literal_round_trips(theta):
    np.testing.assert_array_equal(parse_theta(json.dumps(theta.tolist()), LESSON), theta)


def test_parse_theta_files(tmp_path):
    theta = np.arange(27.0).reshape(3, 3, 3) / 7
    path_json = tmp_path / "theta.json"
    path_json.write_text(json.dumps(theta.tolist()))
    np.testing.assert_array_equal(parse_theta(str(path_json), LESSON), theta)
    path_npy = tmp_path / "theta.npy"
    np.save(path_npy, theta[0])
    np.testing.assert_array_equal(parse_theta(str(path_npy), LESSON), theta[0])
    np.testing.assert_array_equal(parse_theta(theta[1].tolist(), LESSON), theta[1])


def test_parse_theta_wrong_shape():
    message = spec_error("[[1, 2, 3], [4, 5, 6]]")
    assert "shape (2, 3) does not fit MDP 'lesson'" in message and "(3, 3)" in message
    assert "shape (3,)" in spec_error(np.zeros(3))
    corridor = envs.short_corridor()  # unbounded: no per-step logits
    assert "expected (1, 2)" in spec_error(np.zeros((3, 1, 2)), corridor)


def test_parse_theta_per_step_shape_needs_the_horizon():
    assert "(3, 3, 3)" in spec_error(np.zeros((4, 3, 3)))


@pytest.mark.parametrize("value", ['[["a", 1, 2], [0, 0, 0], [0, 0, 0]]', "[[1, 2], [3]]", '{"a": 1}'])
def test_parse_theta_non_numbers(value):
    message = spec_error(value)
    assert "must be a nested list of numbers" in message or "does not fit" in message


def test_parse_theta_not_json():
    assert "not 'uniform', a .json/.npy file or a JSON list" in spec_error("softmax please")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_parse_theta_nan(literal):
    assert "logits must be finite numbers" in spec_error(f"[[{literal}, 0, 0], [0, 0, 0], [0, 0, 0]]")


def test_parse_theta_nan_in_npy(tmp_path):
    path = tmp_path / "bad.npy"
    np.save(path, np.full((3, 3), np.nan))
    assert spec_error(str(path)).startswith(f"{path}: logits must be finite")


@pytest.mark.parametrize("name", ["missing.json", "missing.npy"])
def test_parse_theta_missing_file(tmp_path, name):
    path = tmp_path / name
    message = spec_error(str(path))
    assert message.startswith("theta: cannot read") and name in message


def test_parse_theta_bad_npy(tmp_path):
    path = tmp_path / "bad.npy"
    path.write_text("not an array")
    assert spec_error(str(path)).startswith("theta: cannot read")


@pytest.mark.parametrize("logit", [1e308, -1e308, 1.0000001e6, -2e6])
def test_parse_theta_refuses_logits_beyond_the_limit(logit):
    message = spec_error(json.dumps([[0, 0, 0], [0, logit, 0], [0, 0, 0]]))
    assert message.startswith(f"theta: logit [1, 1] is {logit:g}; logits must lie within ±1e+06")


def test_parse_theta_takes_logits_at_the_limit_and_deep_nesting_is_one_line():
    theta = parse_theta(json.dumps([[1e6, -1e6, 0], [0, 0, 0], [0, 0, 0]]), LESSON)
    assert np.isfinite(softmax(theta)).all()
    assert "nested too deeply" in spec_error("[" * 100_000 + "]" * 100_000)
    assert "nested list of numbers" in spec_error(json.dumps([[10**400, 0, 0], [0, 0, 0], [0, 0, 0]]))
