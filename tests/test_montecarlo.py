"""Monte-Carlo measurement against the exact engine, with tolerances from confidence bounds."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_mdp
from hypothesis import given, settings
from hypothesis import strategies as st

from pgvar import envs, montecarlo
from pgvar.errors import SpecError
from pgvar.estimators import parse_estimator, parse_estimators
from pgvar.exact import exact_gradient, exact_moments
from pgvar.montecarlo import estimate_gradient, sample_batch_means, variance_study, variance_trace

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
        measured, (low, high) = variance_trace(means_md)
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
    monkeypatch.setattr(montecarlo, "_WORDS", 16)  # tiny buffers: many refills and kernel calls
    monkeypatch.setattr(montecarlo, "STREAM_EPISODES", 14)  # many stream blocks, two batches each
    blocks, blocks_threaded = sample(), sample(workers=2)
    monkeypatch.setattr(montecarlo, "_WORDS", 1 << 15)
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
    running = montecarlo.RunningBaselines.empty(mdp.horizon)
    grad = estimate_gradient(mdp, theta, parse_estimator("rtg+base"), 32, seed=1, running=running)
    assert grad.shape == theta.shape
    assert running.count_t[0] == 32


@pytest.mark.parametrize(("n", "batches", "message"), [(0, 60, "N: batch size"), (4, 1, "batches")])
def test_bad_counts_are_refused(n, batches, message):
    mdp = envs.lesson()
    with pytest.raises(SpecError, match=message):
        variance_study(mdp, np.zeros((3, 3)), parse_estimators("vanilla"), ns=[n], batches=batches)


@pytest.mark.parametrize(
    ("name", "n"),
    [
        ("lesson", 1),
        ("lesson", 3),
        ("per-step-time-dependent", 1),
        ("per-step-time-dependent", 3),
        ("few-paths-gaussian", 1),
    ],
)
def test_reading_out_episode_by_episode_equals_summing_per_path(name, n, monkeypatch):
    """Small batches are read out per episode, larger ones from per-path sums: on the same random
    numbers (Gaussian noise: at N = 1 only) both give the same estimates and running state."""
    mdp, theta = _case(name)
    specs = parse_estimators(SPECS + ",rtg+running", entropy=0.1)
    results = []
    for limit in (0, n):
        monkeypatch.setattr(montecarlo, "EPISODE_READOUT_MAX_N", limit)
        running = montecarlo.RunningBaselines.empty(mdp.horizon)
        sample = sample_batch_means(mdp, theta, specs, n, 40, seed=4, running=running, method="paths")
        results.append((sample.batch_means_emd, running.sum_g_t, running.count_t, sample.sum_g_ts))
    for by_sums, by_episode in zip(*results, strict=True):
        np.testing.assert_allclose(by_episode, by_sums, rtol=1e-12, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60).filter(lambda p: sum(p) > 1e-6),
)
def test_alias_tables_give_every_index_its_probability(weights):
    """Column i is kept with probability threshold_i and otherwise gives alias_i: summed over the
    columns, each index must get exactly its share."""
    prob_k = np.array(weights) / sum(weights)
    threshold_k, alias_k = montecarlo.alias_tables(prob_k)
    assert np.all((threshold_k >= 0) & (threshold_k <= 1 + 1e-12))
    got_k = threshold_k + np.bincount(alias_k, weights=1.0 - threshold_k, minlength=prob_k.size)
    np.testing.assert_allclose(got_k / prob_k.size, prob_k, atol=1e-12)


def test_the_sampler_draws_paths_where_it_can_and_says_why_not_otherwise():
    lesson = envs.lesson()
    specs = parse_estimators("vanilla")
    assert montecarlo.Sampler(lesson, np.zeros(lesson.theta_shape()), specs).method == "paths"
    big = envs.make("random:states=10,actions=4,horizon=50")
    assert montecarlo.Sampler(big, np.zeros(big.theta_shape()), specs).method == "steps"
    corridor = envs.short_corridor()
    with pytest.raises(SpecError, match="paths needs a finite horizon"):
        montecarlo.Sampler(corridor, np.zeros(corridor.theta_shape()), specs, method="paths")
    with pytest.raises(SpecError, match="method: unknown 'fast'"):
        montecarlo.Sampler(lesson, np.zeros(lesson.theta_shape()), specs, method="fast")


# -- many readings in one call ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "method", "n", "batches", "route"),
    [
        ("lesson", "paths", 1, 60, "moments"),  # one-episode readings of a short horizon: sums per path
        ("lesson", "paths", 1, 2, "episodes"),  # too few batches a reading for that: episode by episode
        ("lesson", "paths", 3, 30, "episodes"),
        ("lesson", "paths", 8, 10, "statistics"),  # per-cell statistics (running baselines here)
        ("lesson", "steps", 1, 30, "statistics"),
        ("per-step-time-dependent", "paths", 1, 25, "cell sums"),  # 212 paths, some ending early
        ("per-step-time-dependent", "paths", 2, 25, "episodes"),
        ("few-paths-gaussian", "paths", 1, 30, "episodes"),  # a path may visit one logit twice
        ("short-corridor", "steps", 2, 20, "statistics"),
    ],
)
def test_readings_are_the_variance_traces_of_consecutive_batches(
    name, method, n, batches, route, monkeypatch
):
    """Reading r, computed as the episodes are drawn, is variance_trace of batches r M .. (r + 1) M - 1
    of one long sample from the same seed, whichever way the batches are read out."""
    mdp, theta = _case(name)
    specs = parse_estimators(SPECS + ",rtg+running,gae0.9+running", entropy=0.1)
    routes = _recorded_routes(monkeypatch)
    count = 3
    sampler = montecarlo.Sampler(mdp, theta, specs, method=method)
    state = montecarlo.RunningBaselines.empty(sampler.tables.steps)
    readings = sampler.readings(n, batches, count, seed=9, running=state)
    assert routes == {route}
    reference = montecarlo.RunningBaselines.empty(sampler.tables.steps)
    sample = sampler.sample(n, batches * count, seed=9, running=reference)
    expected_re = [
        [variance_trace(means_md[r * batches : (r + 1) * batches])[0] for means_md in sample.batch_means_emd]
        for r in range(count)
    ]
    np.testing.assert_allclose(readings.variance_trace_re, expected_re, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state.sum_g_t, reference.sum_g_t, rtol=1e-12)
    np.testing.assert_array_equal(state.count_t, reference.count_t)
    assert readings.variance_trace_re.shape == (count, len(specs))


def _recorded_routes(monkeypatch) -> set:
    """The read-outs that ``Sampler`` calls from now on, by name (filled as it runs)."""
    routes = set()
    for owner, name, route in (
        (montecarlo._Moments, "batch_means", "path sums"),
        (montecarlo, "_episode_moments", "moments"),
        (montecarlo, "_episode_readings", "cell sums"),
        (montecarlo, "_episode_gradients", "episodes"),
        (montecarlo, "batch_gradients", "statistics"),
    ):
        function = getattr(owner, name)

        def recording(*args, _function=function, _route=route, **kwargs):
            routes.add(_route)
            return _function(*args, **kwargs)

        monkeypatch.setattr(owner, name, recording)
    return routes


FIXED_SPECS = "vanilla,rtg,rtg+value,return+optimal,rtg+optimal-per-parameter,gae0.8+value"  # no running mean
RUNNING_SPECS = "vanilla,rtg,base,rtg+base,return+running,rtg+running,gae0.9+lesson,rtg+value"  # two blocks


def _small_per_step(name):
    """``small-NOISE``: 22 paths, some ending early, a logit per step: readings of 30 batches go
    through path moments; ``small4-NOISE``: the same over 4 steps (46 paths)."""
    noise, horizon = name.split("-")[1], 4 if name.startswith("small4") else 3
    mdp = random_mdp(7, states=2, actions=2, horizon=horizon, gamma=0.9, noise=noise, terminal=True)
    return mdp, np.random.default_rng(2).normal(scale=0.5, size=mdp.theta_shape(True))


@pytest.mark.parametrize(
    ("name", "batches", "moments"),
    [
        ("lesson", 60, True),
        ("lesson", 2, False),  # the dense read-out would cost more than the episodes
        ("per-step-time-dependent", 30, False),  # 212 paths: likewise
        ("few-paths-gaussian", 30, False),  # a path may visit one logit twice
        ("small-gaussian", 30, True),
        ("small-uniform", 30, True),
        ("small-none", 30, True),
        ("small4-uniform", 100, True),  # as many steps as a 4-wide register holds
    ],
)
@pytest.mark.parametrize(
    "specs_text",
    [FIXED_SPECS, RUNNING_SPECS],
    ids=["fixed", "running"],
)
def test_readings_through_path_moments_are_the_variance_traces(
    name, batches, moments, specs_text, monkeypatch
):
    """One-episode readings come from each path's count, noise sums (and running means) and the
    episodes' squared norms: the same readings and running sums as reading every episode out, also
    when the readings are split into chunks; random-stream blocks start mid-reading here. Eight
    estimators with running baselines are two blocks of the kernel's lanes."""
    mdp, theta = _small_per_step(name) if name.startswith("small") else _case(name)
    specs = parse_estimators(specs_text, entropy=0.1)
    sampler = montecarlo.Sampler(mdp, theta, specs)
    routes = []
    monkeypatch.setattr(montecarlo, "_episode_moments", _recording(montecarlo._episode_moments, routes))
    monkeypatch.setattr(montecarlo, "STREAM_EPISODES", 2 * batches + 7)
    count = 4

    def readings():
        state = montecarlo.RunningBaselines.empty(sampler.tables.steps)
        state.sum_g_t += 3.0 * np.arange(sampler.tables.steps)  # a warm start: the baselines move
        state.count_t += 5.0
        return sampler.readings(1, batches, count, seed=9, running=state).variance_trace_re, state

    whole_re, state = readings()
    assert bool(routes) == moments
    reference = montecarlo.RunningBaselines.empty(sampler.tables.steps)
    reference.sum_g_t += 3.0 * np.arange(sampler.tables.steps)
    reference.count_t += 5.0
    sample = sampler.sample(1, batches * count, seed=9, running=reference)
    expected_re = [
        [variance_trace(means_md[r * batches : (r + 1) * batches])[0] for means_md in sample.batch_means_emd]
        for r in range(count)
    ]
    np.testing.assert_allclose(whole_re, expected_re, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(state.sum_g_t, reference.sum_g_t, rtol=1e-12)
    np.testing.assert_allclose(state.sum_r_t, reference.sum_r_t, rtol=1e-12)
    np.testing.assert_array_equal(state.count_t, reference.count_t)
    monkeypatch.setattr(montecarlo, "_MOMENT_CHUNK", 1)  # a reading per chunk
    chunked_re, chunked_state = readings()
    np.testing.assert_allclose(chunked_re, whole_re, rtol=1e-12)
    np.testing.assert_allclose(chunked_state.sum_g_t, state.sum_g_t, rtol=1e-12)


@pytest.mark.parametrize(
    ("name", "n"),
    [("lesson", 8), ("lesson", 256), ("small-gaussian", 5), ("small-uniform", 7), ("small-none", 9)],
)
def test_batches_through_path_sums_are_those_of_the_per_cell_statistics(name, n, monkeypatch):
    """Batches of more than a few episodes on a short horizon, without running baselines, are read
    out from each path's count and noise sums per batch (one dense product): the same batch means,
    running sums and per-(step, state) totals as the per-cell statistics of the same episodes."""
    mdp, theta = _small_per_step(name) if name.startswith("small") else _case(name)
    specs = parse_estimators(FIXED_SPECS, entropy=0.1)
    monkeypatch.setattr(montecarlo, "STREAM_EPISODES", 3 * n + 1)  # several blocks, hence streams
    samples = []
    for route in ("path sums", "statistics"):
        if route == "statistics":
            monkeypatch.setattr(montecarlo.Sampler, "_moments", None)
        routes = _recorded_routes(monkeypatch)
        sampler = montecarlo.Sampler(mdp, theta, specs)
        running = montecarlo.RunningBaselines.empty(sampler.tables.steps)
        running.sum_g_t += 2.0
        running.count_t += 3.0
        samples.append(sampler.sample(n, 20, seed=4, running=running))
        assert routes == {route}
    via_sums, via_statistics = samples
    np.testing.assert_allclose(
        via_sums.batch_means_emd, via_statistics.batch_means_emd, rtol=1e-10, atol=1e-13
    )
    for total in ("sum_g_t", "sum_r_t", "count_t"):
        expected = getattr(via_statistics.running, total)
        np.testing.assert_allclose(getattr(via_sums.running, total), expected, rtol=1e-12)
    np.testing.assert_allclose(via_sums.count_ts, via_statistics.count_ts, rtol=1e-12)
    np.testing.assert_allclose(via_sums.sum_g_ts, via_statistics.sum_g_ts, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("specs_text", "horizon", "kind"),
    [
        ("vanilla,gae0.9+value", 8, montecarlo._Moments),
        ("vanilla", 9, None),
        ("vanilla,rtg+running", 4, montecarlo._RunningMoments),
        ("vanilla,rtg+running", 5, None),
    ],
)
def test_path_moments_need_a_short_horizon(specs_text, horizon, kind):
    """The kernels are compiled per horizon: up to MAX_MOMENT_STEPS, or with a running baseline up to
    MAX_RUNNING_MOMENT_STEPS (the running sums of those steps fill one register)."""
    mdp = random_mdp(3, states=1, actions=2, horizon=horizon, noise="uniform")
    sampler = montecarlo.Sampler(mdp, np.zeros(mdp.theta_shape(True)), parse_estimators(specs_text))
    assert type(sampler._moments) is (kind or type(None))


def _recording(function, calls):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("batches", [20, 60])
def test_readings_at_n1_average_to_the_exact_variance(batches):
    """A reading is an unbiased estimate of the exact single-episode variance trace (no running
    baseline here): the mean of 1500 readings lies within 4 standard errors of it, the standard error
    taken from the readings' own spread."""
    mdp = envs.lesson()
    theta = np.random.default_rng(3).normal(scale=0.5, size=mdp.theta_shape())
    specs = parse_estimators("vanilla,rtg,rtg+value,gae0.9+value", entropy=0.05)
    readings = montecarlo.Sampler(mdp, theta, specs).readings(1, batches, 1500, seed=5)
    for spec, traces_r in zip(specs, readings.variance_trace_re.T, strict=True):
        exact = exact_moments(mdp, theta, spec).variance_trace
        z = (traces_r.mean() - exact) / (traces_r.std(ddof=1) / np.sqrt(traces_r.size))
        assert abs(z) < 4.0, (spec.name, traces_r.mean(), exact)


@pytest.mark.parametrize(
    ("n", "batches", "count", "message"),
    [
        (0, 60, 3, "N: batch size"),
        (1, 1, 3, "batches"),
        (1, 60, 0, "count: the number"),
        (1, 60, 2.5, "count"),
    ],
)
def test_bad_reading_counts_are_refused(n, batches, count, message):
    mdp = envs.lesson()
    sampler = montecarlo.Sampler(mdp, np.zeros(mdp.theta_shape()), parse_estimators("vanilla"))
    with pytest.raises(SpecError, match=message):
        sampler.readings(n, batches, count)


def test_reading_spread_says_how_far_one_reading_strays():
    """The readings centre on the exact value (z-score from their own spread), their 5-95% range holds
    it, and vanilla against itself has no ordering to report."""
    mdp = envs.lesson()
    specs = parse_estimators("vanilla,rtg+base,return+optimal")
    spreads = montecarlo.reading_spread(mdp, np.zeros(mdp.theta_shape()), specs, 2, 40, 600, seed=1)
    assert [s.spec.canonical for s in spreads] == [s.canonical for s in specs]
    for spread in spreads:
        standard_error = spread.relative_std * spread.mean / np.sqrt(600)
        assert abs(spread.mean - spread.exact) < 4 * standard_error, spread
        assert spread.low < spread.exact < spread.high
    assert spreads[0].agrees_with_exact is None
    assert spreads[1].agrees_with_exact == 1.0  # rtg + baseline has under a quarter of vanilla's variance
