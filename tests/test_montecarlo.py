"""Monte-Carlo measurement against the exact engine, with tolerances from confidence bounds."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_mdp
from hypothesis import given, settings
from hypothesis import strategies as st

from pgvar import envs, kpi
from pgvar.baselines import RunningBaselines, add_episodes, running_offsets_tsa
from pgvar.errors import PgvarError, SpecError
from pgvar.estimators import ResolvedEstimator, episode_gradients, parse_estimator, parse_estimators
from pgvar.exact import exact_gradient, exact_moments
from pgvar.montecarlo import (
    Sampler,
    cells,
    estimate_gradient,
    path_moments,
    path_source,
    sample_batch_means,
    step_source,
)
from pgvar.montecarlo.path_source import alias_tables
from pgvar.montecarlo.plan import pad_steps
from pgvar.policy import entropy_table
from pgvar.returns import reward_to_go
from pgvar.studies import reading_spread, variance_study

Z_MAX = 4.5  # per-parameter z-scores; with at most ~40 parameters a false alarm has probability < 1e-3

CASES = {
    "lesson": (envs.lesson, "uniform"),
    "random-gaussian-gamma0.8": (lambda: random_mdp(4, states=3, actions=3, horizon=4, gamma=0.8), "random"),
    "few-paths-gaussian": (lambda: random_mdp(6, states=3, actions=2, horizon=3, gamma=0.9), "random"),
    "per-step-time-dependent": (
        lambda: random_mdp(
            5,
            states=3,
            actions=2,
            horizon=3,
            gamma=0.9,
            time_dependent=True,
            sas_rewards=True,
            noise="uniform",
            terminal=True,
        ),
        "per-step",
    ),
    "short-corridor": (envs.short_corridor, "random"),
}


def _case(name):
    build, kind = CASES[name]
    mdp = build()
    if kind == "uniform":
        return mdp, np.zeros(mdp.theta_shape())
    theta = np.random.default_rng(2).normal(scale=0.5, size=mdp.theta_shape(kind == "per-step"))
    return mdp, theta


SPECS = (
    "vanilla,rtg,base,rtg+base,return+running,rtg+value,return+optimal,rtg+optimal-per-parameter,gae0.8+value"
)


TOO_MANY_PATHS = ("short-corridor", "random-gaussian-gamma0.8")  # unbounded; 27^4 * 3 paths


def _with_methods(names):
    """(name, method) pairs: every case walked step by step, and drawn a path at a time where it can."""
    return [
        (name, method)
        for name in names
        for method in ("steps", "paths")
        if not (method == "paths" and name in TOO_MANY_PATHS)
    ]


@pytest.mark.parametrize(("name", "method"), _with_methods(CASES))
def test_monte_carlo_mean_is_the_exact_gradient(name, method):
    mdp, theta = _case(name)
    beta = 0.1 if name == "lesson" else 0.0
    specs = parse_estimators(SPECS, entropy=beta)
    n, batches = 500, 40
    sample = sample_batch_means(mdp, theta, specs, n, batches, seed=11, method=method)
    grad = exact_gradient(mdp, theta, beta).ravel()
    for spec, means_md in zip(specs, sample.batch_means_emd, strict=True):
        exact = exact_moments(mdp, theta, spec)
        standard_error = np.sqrt(exact.variance / (n * batches))
        z = (means_md.mean(axis=0) - grad) / np.where(standard_error > 0, standard_error, 1.0)
        assert np.abs(z).max() < Z_MAX, (spec.name, z)


@pytest.mark.parametrize(
    ("name", "method"),
    _with_methods(
        [
            "lesson",
            "random-gaussian-gamma0.8",
            "few-paths-gaussian",
            "per-step-time-dependent",
            "short-corridor",
        ]
    ),
)
@pytest.mark.parametrize("n", [1, 8])
def test_monte_carlo_variance_matches_exact_variance_over_n(name, method, n):
    mdp, theta = _case(name)
    specs = parse_estimators("vanilla,rtg+base,rtg+value,gae0.5+value")
    sample = sample_batch_means(mdp, theta, specs, n, batches=1500, seed=3, method=method)
    for spec, means_md in zip(specs, sample.batch_means_emd, strict=True):
        measured, (low, high) = kpi.variance_trace(means_md), kpi.variance_trace_ci(means_md)
        expected = exact_moments(mdp, theta, spec).variance_trace / n
        standard_error = (high - low) / (2 * 1.959963984540054)
        assert abs(measured - expected) < 4 * standard_error, (spec.name, measured, expected)


def test_variance_falls_as_one_over_n():
    mdp = envs.lesson()
    theta = np.zeros(mdp.theta_shape())
    specs = parse_estimators("vanilla,rtg+base")
    study = variance_study(mdp, theta, specs, ns=[1, 4, 16, 64], batches=400, seed=5)
    for reading in study.readings:
        half = (reading.ci95[1] - reading.ci95[0]) / 2
        assert abs(reading.variance_trace - reading.exact_variance_trace) < 4 * half / 1.96
    for slope in study.slopes.values():
        assert -1.15 < slope < -0.85


def test_ratios_to_vanilla_use_vanilla_at_n_and_at_one():
    mdp = envs.lesson()
    study = variance_study(mdp, np.zeros((3, 3)), parse_estimators("rtg"), ns=[4], batches=50, seed=0)
    (reading,) = study.readings
    assert reading.vs_vanilla_n1 < reading.vs_vanilla  # vanilla at N=1 is ~4x noisier than at N=4
    assert reading.cosine_to_exact is not None and -1 <= reading.cosine_to_exact <= 1


@pytest.mark.parametrize(
    ("name", "method"),
    _with_methods(["lesson", "random-gaussian-gamma0.8", "few-paths-gaussian", "short-corridor"]),
)
def test_same_seed_same_numbers_whatever_the_chunking(name, method, monkeypatch):
    mdp, theta = _case(name)
    specs = parse_estimators("vanilla,rtg+base")

    def sample(seed=42, workers=1):
        return sample_batch_means(mdp, theta, specs, 7, 9, seed=seed, workers=workers, method=method)

    first, again, threaded = sample(), sample(), sample(workers=2)
    monkeypatch.setattr(step_source, "_WORDS", 16)  # tiny buffers: many refills and kernel calls
    monkeypatch.setattr(path_source, "_DRAW_WORDS", 16)
    monkeypatch.setattr(cells, "STREAM_EPISODES", 14)  # many stream blocks, two batches each
    blocks, blocks_threaded = sample(), sample(workers=2)
    monkeypatch.setattr(step_source, "_WORDS", 1 << 15)
    monkeypatch.setattr(path_source, "_DRAW_WORDS", 1 << 15)
    refilled, other = sample(), sample(seed=43)
    np.testing.assert_array_equal(first.batch_means_emd, again.batch_means_emd)
    np.testing.assert_array_equal(first.batch_means_emd, threaded.batch_means_emd)
    np.testing.assert_array_equal(blocks.batch_means_emd, blocks_threaded.batch_means_emd)
    np.testing.assert_array_equal(blocks.batch_means_emd, refilled.batch_means_emd)
    assert not np.array_equal(first.batch_means_emd, other.batch_means_emd)


def test_running_baselines_stay_unbiased_without_warm_up():
    """Batch m uses the running mean of batches < m only; even starting from b = 0 the mean is grad J."""
    mdp = envs.lesson()
    theta = np.random.default_rng(0).normal(size=mdp.theta_shape())
    specs = parse_estimators("base,rtg+base,return+running")
    n, batches = 20, 1000
    sample = sample_batch_means(mdp, theta, specs, n, batches, seed=9, warmup=0)
    grad = exact_gradient(mdp, theta).ravel()
    for _spec, means_md in zip(specs, sample.batch_means_emd, strict=True):
        standard_error = means_md.std(axis=0, ddof=1) / np.sqrt(batches)
        assert np.abs((means_md.mean(axis=0) - grad) / standard_error).max() < Z_MAX


def test_estimate_gradient_has_theta_shape_and_keeps_running_state():
    mdp = envs.lesson()
    theta = np.zeros(mdp.theta_shape())
    running = RunningBaselines.empty(mdp.horizon)
    grad = estimate_gradient(mdp, theta, parse_estimator("rtg+base"), 32, seed=1, running=running)
    assert grad.shape == theta.shape
    assert running.count_t[0] == 32


@pytest.mark.parametrize(("n", "batches", "message"), [(0, 60, "N: must be"), (4, 1, "batches")])
def test_bad_counts_are_refused(n, batches, message):
    mdp = envs.lesson()
    with pytest.raises(SpecError, match=message):
        variance_study(mdp, np.zeros((3, 3)), parse_estimators("vanilla"), ns=[n], batches=batches)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60).filter(lambda p: sum(p) > 1e-6),
)
def test_alias_tables_give_every_index_its_probability(weights):
    """Column i is kept with probability threshold_i and otherwise gives alias_i: summed over the
    columns, each index must get exactly its share."""
    prob_k = np.array(weights) / sum(weights)
    threshold_k, alias_k = alias_tables(prob_k)
    assert np.all((threshold_k >= 0) & (threshold_k <= 1 + 1e-12))
    got_k = threshold_k + np.bincount(alias_k, weights=1.0 - threshold_k, minlength=prob_k.size)
    np.testing.assert_allclose(got_k / prob_k.size, prob_k, atol=1e-12)


def test_the_sampler_draws_paths_where_it_can_and_says_why_not_otherwise():
    lesson = envs.lesson()
    specs = parse_estimators("vanilla")
    assert Sampler(lesson, np.zeros(lesson.theta_shape()), specs).method == "paths"
    big = envs.make("random:states=10,actions=4,horizon=50")
    assert Sampler(big, np.zeros(big.theta_shape()), specs).method == "steps"
    corridor = envs.short_corridor()
    with pytest.raises(SpecError, match="paths needs a finite horizon"):
        Sampler(corridor, np.zeros(corridor.theta_shape()), specs, method="paths")
    with pytest.raises(SpecError, match="method: unknown 'fast'"):
        Sampler(lesson, np.zeros(lesson.theta_shape()), specs, method="fast")


# -- every read-out against the reference estimator ---------------------------------------------


def reference_batch_means(
    sampler: Sampler, n: int, batches: int, seed: int, running, per_reading=1, route="auto"
):
    """(E, M, D) batch means from the reference code on the episodes the sampler reads:
    ``estimators.episode_gradients`` per episode, running baselines from ``baselines.running_offsets_tsa``
    of the batches before (``running`` is moved as the sampler moves it)."""
    plan = sampler.plan
    mdp, theta = plan.mdp, plan.theta
    episodes = sampler.episodes(n, batches, seed, per_reading=per_reading, route=route)
    steps = episodes.states_tb.shape[0]
    entropy_tb = np.stack(
        [entropy_table(theta, mdp, t)[0][episodes.states_tb[t]] for t in range(steps)]
    ).reshape(episodes.states_tb.shape)
    bonus_tb = np.where(episodes.alive_tb, plan.entropy * entropy_tb, 0.0)
    means_emd = np.zeros((plan.n_estimators, batches, plan.n_params))
    for b in range(batches):
        batch = slice(b * n, (b + 1) * n)
        states, actions = episodes.states_tb[:, batch], episodes.actions_tb[:, batch]
        rewards, alive = episodes.rewards_tb[:, batch], episodes.alive_tb[:, batch]
        for e, spec in enumerate(plan.specs):
            offsets_tsa = plan.offsets_etsa[e]
            if plan.mean_e[e]:
                offsets_tsa = running_offsets_tsa(spec, running, plan.scale_et[e], mdp.n_actions)
            values_ts = plan.gae_values_gts[plan.gae_e[e]] if spec.weight == "gae" else np.zeros((1, 1))
            resolved = ResolvedEstimator(spec, pad_steps(offsets_tsa, steps), pad_steps(values_ts, steps + 1))
            grads_nD = episode_gradients(mdp, theta, resolved, states, actions, rewards, alive)
            means_emd[e, b] = grads_nD.mean(axis=0)
        returns = reward_to_go(np.where(alive, rewards, 0.0) + bonus_tb[:, batch], mdp.gamma)
        add_episodes(running, states, returns, alive)
    return means_emd


ALL_SPECS = (
    "vanilla", "rtg", "base", "rtg+base", "return+running", "rtg+running", "rtg+running-value",
    "return+running-value", "rtg+value", "return+optimal", "rtg+optimal-per-parameter", "gae0.8+value",
    "gae0.5+lesson", "gae0.9+none", "rtg+learned", "rtg+value:common", "gae0.7+running-value",
)  # fmt: skip


@st.composite
def measurement(draw, methods=("auto", "steps")):
    """A small random MDP and policy, a random subset of every weight and baseline, an entropy bonus,
    and a warm running state."""
    seed = draw(st.integers(0, 10_000))
    horizon = draw(st.integers(1, 4))
    mdp = random_mdp(
        seed,
        states=draw(st.integers(2, 3)),
        actions=draw(st.integers(2, 3)),
        horizon=horizon,
        gamma=draw(st.sampled_from([1.0, 0.8])),
        time_dependent=draw(st.booleans()),
        sas_rewards=draw(st.booleans()),
        noise=draw(st.sampled_from(["none", "uniform", "gaussian"])),
        terminal=draw(st.booleans()),
    )
    theta = np.random.default_rng(seed).normal(size=mdp.theta_shape(draw(st.booleans())))
    names = draw(st.lists(st.sampled_from(ALL_SPECS), min_size=1, max_size=6, unique=True))
    specs = parse_estimators(",".join(names), entropy=draw(st.sampled_from([0.0, 0.2])))
    learned_ts = np.random.default_rng(seed + 1).normal(size=(horizon, mdp.n_states))
    method = draw(st.sampled_from(methods))
    return Sampler(mdp, theta, specs, learned_ts=learned_ts, method=method)


def warm_state(sampler: Sampler) -> RunningBaselines:
    plan = sampler.plan
    state = RunningBaselines.empty(plan.steps, plan.mdp.n_states)
    state.sum_g_t += 3.0 * np.arange(plan.steps) - 1.0
    state.sum_r_t += 2.0
    state.count_t += 5.0
    state.sum_g_ts += np.arange(plan.mdp.n_states) - 0.5
    state.count_ts += 2.0
    return state


def assert_same_state(state: RunningBaselines, reference: RunningBaselines) -> None:
    for name in ("sum_g_t", "sum_r_t", "count_t", "sum_g_ts", "count_ts"):
        np.testing.assert_allclose(getattr(state, name), getattr(reference, name), rtol=1e-10, atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(measurement(), st.integers(1, 3))
def test_batch_means_are_those_of_the_reference_estimator(sampler, n):
    """Every weight, every baseline, both sources: the batch means the sampler reads out are the
    reference code's on the same episodes, and the running state moves the same way."""
    state, reference = warm_state(sampler), warm_state(sampler)
    sample = sampler.sample(n, 7, seed=3, running=state)
    assert sample.route == "cells"
    expected = reference_batch_means(sampler, n, 7, 3, reference)
    scale = max(1.0, np.abs(expected).max())
    np.testing.assert_allclose(sample.batch_means_emd, expected, rtol=1e-9, atol=1e-10 * scale)
    assert_same_state(state, reference)


@settings(max_examples=40, deadline=None)
@given(measurement(methods=("auto",)), st.sampled_from(["auto", "auto", "cells"]))
def test_readings_are_the_kpi_of_the_reference_batch_means(sampler, route):
    """Many one-episode readings in one call, through whichever read-out serves them (``path-moments``
    where it applies) or forced through ``cells``: each is the KPI of the reference's batch means."""
    batches, count = 12, 5
    state, reference = warm_state(sampler), warm_state(sampler)
    readings = sampler.readings(1, batches, count, seed=5, running=state, route=route)
    assert readings.route == sampler.route(1, batches, batches) if route == "auto" else "cells"
    means_emd = reference_batch_means(sampler, 1, batches * count, 5, reference, batches, readings.route)
    expected_re = np.array(
        [
            [kpi.variance_trace(m_md[r * batches : (r + 1) * batches]) for m_md in means_emd]
            for r in range(count)
        ]
    )
    np.testing.assert_allclose(readings.variance_trace_re, expected_re, rtol=1e-8, atol=1e-10)
    assert_same_state(state, reference)


FIXED_SPECS = "vanilla,rtg,rtg+value,return+optimal,rtg+optimal-per-parameter,gae0.8+value"
RUNNING_SPECS = (
    "vanilla,rtg,base,rtg+base,return+running,rtg+running,gae0.9+lesson,rtg+value"  # two lane blocks
)


@pytest.mark.parametrize(
    ("name", "specs_text", "batches", "route"),
    [
        ("lesson", RUNNING_SPECS, 60, "path-moments"),
        ("lesson", FIXED_SPECS, 60, "path-moments"),
        ("lesson", "vanilla", 2, "path-moments"),  # the read-out map of one estimator is small
        ("lesson", RUNNING_SPECS, 2, "cells"),  # the dense read-out would cost more than the episodes
        ("lesson", "vanilla,rtg+running-value", 60, "cells"),  # a running mean per state
        ("per-step-time-dependent", FIXED_SPECS, 4, "cells"),  # 212 paths: the read-out costs too much
        ("few-paths-gaussian", FIXED_SPECS, 30, "cells"),  # a path may visit one logit twice
        ("short-corridor", "vanilla", 30, "cells"),  # walked step by step
    ],
)
def test_readings_take_the_first_read_out_that_applies(name, specs_text, batches, route):
    mdp, theta = _case(name)
    sampler = Sampler(mdp, theta, parse_estimators(specs_text))
    assert sampler.route(1, batches, batches) == route
    assert sampler.readings(1, batches, 2, seed=1).route == route
    assert sampler.sample(1, batches, seed=1).route == "cells"  # batch means are kept: no readings


def test_a_forced_read_out_must_apply():
    mdp, theta = _case("short-corridor")
    sampler = Sampler(mdp, theta, parse_estimators("vanilla"))
    with pytest.raises(SpecError, match="route: path-moments does not apply"):
        sampler.readings(1, 20, 2, route="path-moments")
    with pytest.raises(SpecError, match="route: unknown 'fast'"):
        sampler.sample(1, 20, route="fast")


@pytest.mark.parametrize("horizon", [8, 9])
def test_path_moments_take_horizons_up_to_their_limit(horizon):
    mdp = random_mdp(3, states=1, actions=2, horizon=horizon, noise="uniform")
    sampler = Sampler(mdp, np.zeros(mdp.theta_shape(True)), parse_estimators("vanilla,rtg+running"))
    expected = "path-moments" if horizon <= path_moments.MAX_STEPS else "cells"
    assert sampler.route(1, 100, 100) == expected


def test_path_moments_give_the_same_readings_in_chunks(monkeypatch):
    """A chunk of readings per kernel call, and random-stream blocks that start mid-reading, change
    nothing but rounding."""
    mdp, theta = _case("lesson")
    sampler = Sampler(mdp, theta, parse_estimators(RUNNING_SPECS, entropy=0.1))

    def readings():
        state = warm_state(sampler)
        return sampler.readings(1, 30, 6, seed=2, running=state).variance_trace_re, state

    whole_re, whole_state = readings()
    monkeypatch.setattr(path_moments, "_CHUNK", 1)  # a reading per chunk
    chunked_re, chunked_state = readings()
    np.testing.assert_allclose(chunked_re, whole_re, rtol=1e-12)
    assert_same_state(chunked_state, whole_state)


def test_episodes_longer_than_asked_are_refused():
    corridor = envs.short_corridor()
    source = Sampler(corridor, np.zeros(corridor.theta_shape()), parse_estimators("vanilla")).source
    with pytest.raises(PgvarError, match="episodes: an episode ran"):
        source.episodes(np.random.SeedSequence(0), 200, max_length=1)


def test_a_running_value_baseline_is_unbiased_and_tends_to_the_value_baseline():
    """Subtracting the running mean of G_t per (step, state) keeps the estimate unbiased even from
    b = 0; once it has seen many episodes its variance is that of the exact V(s_t) baseline."""
    mdp = envs.lesson()
    theta = np.random.default_rng(4).normal(size=mdp.theta_shape())
    spec = parse_estimator("rtg+running-value")
    n, batches = 10, 2000
    sample = sample_batch_means(mdp, theta, [spec], n, batches, seed=6, warmup=0)
    means_md = sample.batch_means_emd[0]
    standard_error = means_md.std(axis=0, ddof=1) / np.sqrt(batches)
    assert np.abs((means_md.mean(axis=0) - exact_gradient(mdp, theta).ravel()) / standard_error).max() < Z_MAX
    warm = sample_batch_means(mdp, theta, [spec], 1, 3000, seed=7, warmup=100_000).batch_means_emd[0]
    measured, (low, high) = kpi.variance_trace(warm), kpi.variance_trace_ci(warm)
    exact = exact_moments(mdp, theta, parse_estimator("rtg+value")).variance_trace
    assert abs(measured - exact) < 4 * (high - low) / (2 * kpi.Z95), (measured, exact)


@pytest.mark.parametrize("batches", [20, 60])
def test_readings_at_n1_average_to_the_exact_variance(batches):
    """A reading is an unbiased estimate of the exact single-episode variance trace (no running
    baseline here): the mean of 1500 readings lies within 4 standard errors of it, the standard error
    taken from the readings' own spread."""
    mdp = envs.lesson()
    theta = np.random.default_rng(3).normal(scale=0.5, size=mdp.theta_shape())
    specs = parse_estimators("vanilla,rtg,rtg+value,gae0.9+value", entropy=0.05)
    readings = Sampler(mdp, theta, specs).readings(1, batches, 1500, seed=5)
    assert readings.route == "path-moments"
    for spec, traces_r in zip(specs, readings.variance_trace_re.T, strict=True):
        exact = exact_moments(mdp, theta, spec).variance_trace
        z = (traces_r.mean() - exact) / (traces_r.std(ddof=1) / np.sqrt(traces_r.size))
        assert abs(z) < 4.0, (spec.name, traces_r.mean(), exact)


@pytest.mark.parametrize(
    ("n", "batches", "count", "message"),
    [
        (0, 60, 3, "N: must be a whole number"),
        (1, 1, 3, "batches"),
        (1, 60, 0, "count: must be"),
        (1, 60, 2.5, "count"),
    ],
)
def test_bad_reading_counts_are_refused(n, batches, count, message):
    mdp = envs.lesson()
    sampler = Sampler(mdp, np.zeros(mdp.theta_shape()), parse_estimators("vanilla"))
    with pytest.raises(SpecError, match=message):
        sampler.readings(n, batches, count)


def test_reading_spread_says_how_far_one_reading_strays():
    """The readings centre on the exact value (z-score from their own spread), their 5-95% range holds
    it, and vanilla against itself has no ordering to report."""
    mdp = envs.lesson()
    specs = parse_estimators("vanilla,rtg+base,return+optimal")
    spreads = reading_spread(mdp, np.zeros(mdp.theta_shape()), specs, 2, 40, 600, seed=1)
    assert [s.spec.canonical for s in spreads] == [s.canonical for s in specs]
    for spread in spreads:
        standard_error = spread.relative_std * spread.mean / np.sqrt(600)
        assert abs(spread.mean - spread.exact) < 4 * standard_error, spread
        assert spread.low < spread.exact < spread.high
    assert spreads[0].agrees_with_exact is None
    assert spreads[1].agrees_with_exact == 1.0  # rtg + baseline has under a quarter of vanilla's variance
