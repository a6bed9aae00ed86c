"""Reward-to-go and GAE: the numba kernels against plain loops, and the conventions of other libraries.

The references below are written from the definitions, as sums over the rest of each episode, with
Python floats: slow and obviously right. Kernel results must agree with them to rounding.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pgvar.errors import SpecError
from pgvar.returns import _FEW_STREAMS, gae, reward_to_go

PROPERTY = settings(max_examples=50, deadline=None)  # deadline=None: the first call compiles


# --- plain references --------------------------------------------------------------------------------


def _as_streams(array, shape2):
    """(T,) or (T, B) as a (T, B) float64 array; None as zeros (or False)."""
    if array is None:
        return np.zeros(shape2)
    return np.asarray(array, dtype=float).reshape(shape2)


def _episode(rewards, terminated, truncated, bootstrap_value, truncation_values):
    """Unpack the arguments into (T, B) float arrays and a function giving, for step t of stream b, the
    last step of its episode inside the array and the value bootstrapped after that step."""
    rewards = np.asarray(rewards, dtype=float)
    T = rewards.shape[0]
    shape2 = (T, rewards.size // T)
    term = _as_streams(terminated, shape2).astype(bool)
    trunc = _as_streams(truncated, shape2).astype(bool)
    cut_values = _as_streams(truncation_values, shape2)
    boot = np.broadcast_to(0.0 if bootstrap_value is None else np.asarray(bootstrap_value, float), shape2[1:])

    def end_of_episode(t, b):
        end = t
        while end < T - 1 and not (term[end, b] or trunc[end, b]):
            end += 1
        if term[end, b]:
            return end, 0.0
        if trunc[end, b]:
            return end, float(cut_values[end, b])
        return end, float(boot[b])

    return rewards.reshape(shape2), end_of_episode


def _reward_to_go_reference(
    rewards, gamma, terminated=None, truncated=None, bootstrap_value=None, truncation_values=None
):
    """G_t = sum_{k=t}^{end} gamma^(k-t) r_k + gamma^(end-t+1) V_after_end, pure Python loops."""
    r, end_of_episode = _episode(rewards, terminated, truncated, bootstrap_value, truncation_values)
    T, B = r.shape
    out = np.zeros((T, B))
    for b in range(B):
        for t in range(T):
            end, after = end_of_episode(t, b)
            total = sum(gamma ** (k - t) * float(r[k, b]) for k in range(t, end + 1))
            out[t, b] = total + gamma ** (end - t + 1) * after
    return out.reshape(np.shape(rewards))


def _gae_reference(
    rewards, values, gamma, lam, terminated=None, truncated=None, bootstrap_value=None, truncation_values=None
):
    """A_t = sum_{k=t}^{end} (gamma lam)^(k-t) delta_k (Schulman et al. 2016, eq. 16), pure Python loops."""
    r, end_of_episode = _episode(rewards, terminated, truncated, bootstrap_value, truncation_values)
    T, B = r.shape
    v = np.asarray(values, dtype=float).reshape(T, B)
    out = np.zeros((T, B))
    for b in range(B):
        for t in range(T):
            end, after = end_of_episode(t, b)
            total = 0.0
            for k in range(t, end + 1):
                next_value = after if k == end else float(v[k + 1, b])
                delta = float(r[k, b]) + gamma * next_value - float(v[k, b])
                total += (gamma * lam) ** (k - t) * delta
            out[t, b] = total
    return out.reshape(np.shape(rewards))


# --- strategies --------------------------------------------------------------------------------------


def _tolerance(dtype):
    return {"rtol": 1e-5, "atol": 2e-3} if dtype == np.float32 else {"rtol": 1e-9, "atol": 1e-9}


@st.composite
def batches(draw, dtypes=(np.float64, np.float32), optional_flags=True):
    """Random rewards, values and episode ends; streams from 1 to 10 (both kernel paths), 1-D or 2-D."""
    dtype = draw(st.sampled_from(dtypes))
    T = draw(st.integers(1, 12))
    B = draw(st.one_of(st.none(), st.integers(1, 10)))
    shape = (T,) if B is None else (T, B)
    real = st.floats(-10, 10, width=32)
    rewards = draw(hnp.arrays(dtype, shape, elements=real))
    values = draw(hnp.arrays(dtype, shape, elements=real))
    kw = {}
    for name in ("terminated_t", "truncated_t"):
        if optional_flags and draw(st.booleans()):
            continue
        flags = draw(hnp.arrays(np.bool_, shape, elements=st.booleans() | st.just(False)))
        if draw(st.booleans()):  # episodes ending at the first and at the last step
            flags[0] = flags[-1] = True
        kw[name] = flags
    if "truncated_t" in kw:
        kw["truncation_values_t"] = draw(hnp.arrays(dtype, shape, elements=real))
    if draw(st.booleans()):
        kw["bootstrap_value"] = draw(
            hnp.arrays(np.float64, draw(st.sampled_from([(), shape[1:]])), elements=real)
        )
    return rewards, values, kw


def _reference_kw(kw):
    return {
        "terminated": kw.get("terminated_t"),
        "truncated": kw.get("truncated_t"),
        "bootstrap_value": kw.get("bootstrap_value"),
        "truncation_values": kw.get("truncation_values_t"),
    }


# --- kernels against the references ------------------------------------------------------------------


@PROPERTY
@given(batches(dtypes=(np.float64,)), st.floats(0, 1), st.floats(0, 1))
def test_gae_matches_reference(batch, gamma, lam):
    rewards, values, kw = batch
    got = gae(rewards, values, gamma, lam, **kw)
    assert got.shape == rewards.shape and got.dtype == rewards.dtype
    want = _gae_reference(rewards, values, gamma, lam, **_reference_kw(kw))
    np.testing.assert_allclose(got, want, **_tolerance(got.dtype))


@PROPERTY
@given(batches(dtypes=(np.float64,)), st.floats(0, 1))
def test_reward_to_go_matches_reference(batch, gamma):
    rewards, _, kw = batch
    got = reward_to_go(rewards, gamma, **kw)
    assert got.shape == rewards.shape and got.dtype == rewards.dtype
    want = _reward_to_go_reference(rewards, gamma, **_reference_kw(kw))
    np.testing.assert_allclose(got, want, **_tolerance(got.dtype))


@PROPERTY
@given(batches(dtypes=(np.float32,), optional_flags=False), st.floats(0, 1), st.floats(0, 1))
def test_float32_stays_float32_and_matches_reference(batch, gamma, lam):
    rewards, values, kw = batch
    advantages = gae(rewards, values, gamma, lam, **kw)
    returns = reward_to_go(rewards, gamma, **kw)
    assert advantages.dtype == returns.dtype == np.float32
    ref = _reference_kw(kw)
    np.testing.assert_allclose(
        advantages, _gae_reference(rewards, values, gamma, lam, **ref), rtol=1e-5, atol=2e-3
    )
    np.testing.assert_allclose(returns, _reward_to_go_reference(rewards, gamma, **ref), rtol=1e-5, atol=2e-3)


@PROPERTY
@given(batches(dtypes=(np.float64,)), st.floats(0, 1))
def test_gae_with_lambda_one_and_zero_values_is_reward_to_go(batch, gamma):
    rewards, _, kw = batch
    zeros = np.zeros_like(rewards)
    np.testing.assert_allclose(
        gae(rewards, zeros, gamma, 1.0, **kw), reward_to_go(rewards, gamma, **kw), atol=1e-9
    )


@PROPERTY
@given(batches(dtypes=(np.float64,)), st.floats(0, 1))
def test_gae_with_lambda_one_is_return_minus_value(batch, gamma):
    rewards, values, kw = batch
    returns = reward_to_go(rewards, gamma, **kw)
    np.testing.assert_allclose(gae(rewards, values, gamma, 1.0, **kw), returns - values, atol=1e-9)


@pytest.mark.parametrize("streams", [1, _FEW_STREAMS - 1, _FEW_STREAMS, 37])
def test_both_kernel_paths_on_long_streams(streams):
    """Streams one at a time (few streams) and row sweeps (many), with T long enough to vectorise."""
    rng = np.random.default_rng(streams)
    shape = (300, streams)
    rewards, values, cut_values = rng.normal(size=(3, *shape))
    terminated, truncated = rng.random((2, *shape)) < 0.03
    kw = {"terminated_t": terminated, "truncated_t": truncated, "truncation_values_t": cut_values}
    kw["bootstrap_value"] = rng.normal(size=streams)
    np.testing.assert_allclose(
        gae(rewards, values, 0.99, 0.95, **kw),
        _gae_reference(rewards, values, 0.99, 0.95, **_reference_kw(kw)),
        rtol=1e-9,
        atol=1e-9,
    )
    np.testing.assert_allclose(
        reward_to_go(rewards, 0.99, **kw),
        _reward_to_go_reference(rewards, 0.99, **_reference_kw(kw)),
        atol=1e-9,
    )


def test_strided_inputs_give_the_same_numbers():
    """Views with any strides work (Fortran order is covered by the TorchRL test below)."""
    rng = np.random.default_rng(1)
    big = rng.normal(size=(40, 16))
    flags = rng.random((40, 16)) < 0.1
    rewards, values, terminated = big[::2, ::3], big[1::2, ::3], flags[::2, ::3]
    contiguous = gae(rewards.copy(), values.copy(), 0.9, 0.8, terminated_t=terminated.copy())
    np.testing.assert_array_equal(gae(rewards, values, 0.9, 0.8, terminated_t=terminated), contiguous)
    stream = reward_to_go(big[::3, 5], 0.9, terminated_t=flags[::3, 5])
    np.testing.assert_allclose(stream, _reward_to_go_reference(big[::3, 5], 0.9, flags[::3, 5]), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_arguments_given_ready_or_in_any_other_form_give_the_same_numbers(dtype):
    """(T, B) arrays of one float dtype with bool flags go straight to the kernels; lists, int flags,
    a scalar bootstrap or a bootstrap of another dtype go through the checked conversions first."""
    rng = np.random.default_rng(4)
    rewards, values, cut_values = (rng.normal(size=(30, 9)).astype(dtype) for _ in range(3))
    terminated, truncated = rng.random((30, 9)) < 0.1, rng.random((30, 9)) < 0.05
    bootstrap = np.full(9, 0.5, dtype=dtype)
    ready = {"terminated_t": terminated, "truncated_t": truncated, "truncation_values_t": cut_values}
    other = {
        "terminated_t": terminated.astype(int).tolist(),
        "truncated_t": truncated.astype(np.int8),
        "truncation_values_t": cut_values.tolist(),
    }
    for function, args in ((gae, (values, 0.9, 0.8)), (reward_to_go, (0.9,))):
        fast = function(rewards, *args, bootstrap_value=bootstrap, **ready)
        assert fast.dtype == dtype
        for bootstrap_other in (0.5, bootstrap.astype(np.float16), [0.5] * 9):
            checked = function(rewards.tolist(), *args, bootstrap_value=bootstrap_other, **other)
            tolerance = 1e-5 if dtype == np.float32 else 1e-12  # lists are computed in float64
            np.testing.assert_allclose(checked.astype(dtype), fast, rtol=tolerance, atol=tolerance)


def test_dtypes_and_inputs_left_alone():
    assert reward_to_go(np.arange(4), 0.5).dtype == np.float64
    half = reward_to_go(np.ones(3, dtype=np.float16), 0.5)
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, [1.75, 1.5, 1.0])
    bootstrap = np.array([1.0, 2.0])
    rewards = np.ones((3, 2))
    gae(rewards, rewards, 0.9, 0.9, bootstrap_value=bootstrap)
    np.testing.assert_array_equal(bootstrap, [1.0, 2.0])
    np.testing.assert_array_equal(rewards, np.ones((3, 2)))


def _swapped(array):
    """The array in the other byte order (big-endian on a little-endian machine), same values."""
    return array.astype(array.dtype.newbyteorder("S"))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("shape", [(7,), (29,), (32,), (29, 3), (29, 11), (29, 40)], ids=str)
def test_arrays_in_the_other_byte_order_give_what_native_ones_give(shape, dtype):
    """Every kernel path (see test_returns_simd.py), with every float array in the other byte order, or
    the rewards native and the rest swapped; the result is in native byte order."""
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    rewards, values, cut_values = rng.normal(size=(3, *shape)).astype(dtype)
    terminated, truncated = rng.random((2, *shape)) < 0.1
    bootstrap = rng.normal(size=shape[1:]).astype(dtype)
    flags = {"terminated_t": terminated, "truncated_t": truncated}
    native = (
        gae(rewards, values, 0.9, 0.8, truncation_values_t=cut_values, bootstrap_value=bootstrap, **flags),
        reward_to_go(rewards, 0.9, truncation_values_t=cut_values, bootstrap_value=bootstrap, **flags),
    )
    kw = {"truncation_values_t": _swapped(cut_values), "bootstrap_value": _swapped(bootstrap), **flags}
    assert not kw["truncation_values_t"].dtype.isnative
    for rewards_given in (_swapped(rewards), rewards):
        swapped = (
            gae(rewards_given, _swapped(values), 0.9, 0.8, **kw),
            reward_to_go(rewards_given, 0.9, **kw),
        )
        for got, want in zip(swapped, native, strict=True):
            assert got.dtype == np.dtype(dtype) and got.dtype.isnative
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "argument",
    [
        np.array([0.9]),
        np.array([[0.9]]),
        np.array(0.9),
        np.array([0.9]).astype(">f8"),
        np.array([0.9], np.float32),
    ],
    ids=["(1,)", "(1, 1)", "()", "other byte order", "float32"],
)
def test_gamma_and_lam_as_arrays_of_one_element_are_their_value(argument):
    """Without a warning (NumPy 2 deprecates float() of an array with dimensions, then refuses it)."""
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(2, 20, 3))
    terminated = rng.random((20, 3)) < 0.2
    value = float(argument.reshape(-1)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        returns = reward_to_go(rewards, argument, terminated_t=terminated)
        advantages = gae(rewards, values, argument, argument, terminated_t=terminated)
    np.testing.assert_array_equal(returns, reward_to_go(rewards, value, terminated_t=terminated))
    np.testing.assert_array_equal(advantages, gae(rewards, values, value, value, terminated_t=terminated))


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        (np.array([0.9, 0.8]), "an array of shape (2,)"),
        (np.full((2, 3), 0.5), "an array of shape (2, 3)"),
        (np.array([[0.1], [0.2]]), "an array of shape (2, 1)"),
        (np.array([]), "an array of shape (0,)"),
        (np.array([1.5]), "got 1.5"),
        (np.array([[np.nan]]), "got nan"),
        (np.array([True]), "got True"),
        ([0.9], "got [0.9]"),
    ],
)
def test_gamma_or_lam_as_any_other_array_is_a_one_line_spec_error(argument, message):
    rewards = np.ones((4, 2))
    calls = {
        "gamma": lambda: reward_to_go(rewards, argument),
        "lam": lambda: gae(rewards, rewards, 0.9, argument),
    }
    for name, call in calls.items():
        with pytest.raises(SpecError, match=f"^{name}: must be a finite number from 0 to 1") as error:
            call()
        assert str(error.value).endswith(message) and "\n" not in str(error.value)


# --- conventions of other libraries ------------------------------------------------------------------


def _sb3_style_gae(rewards, values, episode_starts, last_values, dones, gamma, lam):
    """Stable-Baselines3's RolloutBuffer.compute_returns_and_advantage, written out: episode_starts[t]
    flags the first step of an episode, so the flag that step t ended one is episode_starts[t + 1]."""
    T = len(rewards)
    advantages = np.zeros_like(rewards)
    last_gae_lam = 0.0
    for step in reversed(range(T)):
        if step == T - 1:
            next_non_terminal = 1.0 - dones
            next_values = last_values
        else:
            next_non_terminal = 1.0 - episode_starts[step + 1]
            next_values = values[step + 1]
        delta = rewards[step] + gamma * next_values * next_non_terminal - values[step]
        last_gae_lam = delta + gamma * lam * next_non_terminal * last_gae_lam
        advantages[step] = last_gae_lam
    return advantages


def test_sb3_episode_starts_are_shifted_by_one_step():
    rng = np.random.default_rng(3)
    T, B = 7, 3
    rewards, values = rng.normal(size=(2, T, B))
    episode_starts = np.zeros((T, B))
    episode_starts[[0, 3, 4], [0, 1, 2]] = 1.0  # a new episode begins at these steps
    last_values, dones = rng.normal(size=B), np.array([0.0, 1.0, 0.0])
    sb3 = _sb3_style_gae(rewards, values, episode_starts, last_values, dones, 0.9, 0.8)

    # The conversion: step t ended an episode iff step t + 1 starts one; SB3's `dones` covers the last.
    terminated_t = np.concatenate([episode_starts[1:], dones[None]]).astype(bool)
    ours = gae(rewards, values, 0.9, 0.8, terminated_t=terminated_t, bootstrap_value=last_values)
    np.testing.assert_allclose(ours, sb3, atol=1e-12)

    unshifted = gae(
        rewards, values, 0.9, 0.8, terminated_t=episode_starts.astype(bool), bootstrap_value=last_values
    )
    assert not np.allclose(unshifted, sb3)  # the trap: using episode_starts as terminated_t directly


def test_torchrl_batch_major_arrays_must_be_transposed():
    """TorchRL puts time at ``time_dim`` (default -2, batch first); ours is time-major, axis 0 is time.
    A (B, T) array is read as T=B steps of B=T streams, and gives that answer, not the per-row one."""
    rng = np.random.default_rng(4)
    B, T = 3, 5
    rewards_bt, values_bt = rng.normal(size=(2, B, T))
    per_row = np.stack([_gae_reference(rewards_bt[b], values_bt[b], 0.9, 0.8) for b in range(B)])

    np.testing.assert_allclose(gae(rewards_bt.T, values_bt.T, 0.9, 0.8).T, per_row, atol=1e-12)
    as_given = gae(rewards_bt, values_bt, 0.9, 0.8)
    np.testing.assert_allclose(as_given, _gae_reference(rewards_bt, values_bt, 0.9, 0.8), atol=1e-12)
    assert not np.allclose(as_given, per_row)


def _cleanrl_style_gae(rewards, values, dones, next_value, next_done, gamma, lam):
    """CleanRL's PPO loop: dones[t] = terminated or truncated for the step *before* t, no bootstrap."""
    T = len(rewards)
    advantages = np.zeros_like(rewards)
    last_gae_lam = 0.0
    for t in reversed(range(T)):
        if t == T - 1:
            next_non_terminal, next_values = 1.0 - next_done, next_value
        else:
            next_non_terminal, next_values = 1.0 - dones[t + 1], values[t + 1]
        delta = rewards[t] + gamma * next_values * next_non_terminal - values[t]
        advantages[t] = last_gae_lam = delta + gamma * lam * next_non_terminal * last_gae_lam
    return advantages


def test_cleanrl_treats_truncation_as_termination():
    """Three steps, gamma 0.5, lambda 1, V = 0.5 everywhere, reward 1 each step; the episode ends after
    step 1, a new one runs in step 2 and V after it is 4. If step 1 was cut by a time limit, the cut
    state is worth 2.

    Truncated (we bootstrap 2):   G_2 = 1 + 0.5*4 = 3, G_1 = 1 + 0.5*2 = 2, G_0 = 1 + 0.5*2 = 2.
    Terminated (nothing after):   G_2 = 3,             G_1 = 1,             G_0 = 1 + 0.5*1 = 1.5.
    A = G - V with lambda 1.
    """
    rewards, values = np.ones(3), np.full(3, 0.5)
    ended = np.array([False, True, False])
    kw = {"bootstrap_value": 4.0}
    truncated = gae(rewards, values, 0.5, 1.0, truncated_t=ended, truncation_values_t=np.full(3, 2.0), **kw)
    terminated = gae(rewards, values, 0.5, 1.0, terminated_t=ended, **kw)
    np.testing.assert_allclose(truncated, [1.5, 1.5, 2.5])
    np.testing.assert_allclose(terminated, [1.0, 0.5, 2.5])

    cleanrl_dones = np.array([0.0, 0.0, 1.0])  # the step after the end carries CleanRL's done flag
    cleanrl = _cleanrl_style_gae(
        rewards, values, cleanrl_dones, next_value=4.0, next_done=0.0, gamma=0.5, lam=1.0
    )
    np.testing.assert_allclose(cleanrl, terminated)  # CleanRL's answer for the truncated episode
    assert not np.allclose(cleanrl, truncated)


# --- bad inputs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: gae(np.ones((3, 2)), np.ones((3, 1)), 0.9, 0.9), "values_t"),
        (
            lambda: gae(np.ones((3, 2)), np.ones((3, 2)), 0.9, 0.9, terminated_t=np.ones(3, bool)),
            "terminated_t",
        ),
        (lambda: reward_to_go(np.ones(3), 0.9, truncated_t=np.ones(4, bool)), "truncated_t"),
        (
            lambda: reward_to_go(
                np.ones(3), 0.9, truncated_t=np.ones(3, bool), truncation_values_t=np.ones(2)
            ),
            "truncation_values_t",
        ),
        (lambda: reward_to_go(np.ones((3, 2)), 0.9, bootstrap_value=np.ones(3)), "bootstrap_value"),
        (lambda: reward_to_go(np.ones(3), 0.9, bootstrap_value=np.ones((1, 1))), "bootstrap_value"),
        (lambda: reward_to_go(np.ones((2, 2, 2)), 0.9), "rewards_t"),
        (lambda: reward_to_go(np.ones(0), 0.9), "rewards_t"),
        (lambda: reward_to_go(np.ones(3), -0.1), "gamma"),
        (lambda: reward_to_go(np.ones(3), 1.5), "gamma"),
        (lambda: gae(np.ones(3), np.ones(3), float("nan"), 0.5), "gamma"),
        (lambda: gae(np.ones(3), np.ones(3), 0.9, 2.0), "lam"),
        (lambda: gae(np.ones(3), np.ones(3), 0.9, 0.9, truncated_t=[0, 1, 0]), "truncation_values_t"),
        (lambda: reward_to_go(np.ones(3), 0.9, truncated_t=[0, 0, 1]), "truncation_values_t"),
    ],
)
def test_bad_inputs_name_the_argument(call, argument):
    with pytest.raises(SpecError, match=f"^{argument}:"):
        call()


def test_truncated_flags_without_truncations_need_no_values():
    np.testing.assert_allclose(reward_to_go(np.ones(3), 0.5, truncated_t=np.zeros(3, bool)), [1.75, 1.5, 1.0])
