"""The statistics every surface reports (pgvar.kpi), against closed forms and over many seeds."""

from __future__ import annotations

import numpy as np
import pytest

from pgvar import envs, kpi
from pgvar.estimators import parse_estimators
from pgvar.exact import exact_moments
from pgvar.montecarlo import Sampler


def test_the_kpi_is_the_trace_of_the_sample_covariance():
    means_md = np.random.default_rng(0).normal(size=(40, 5))
    assert kpi.variance_trace(means_md) == pytest.approx(np.trace(np.cov(means_md.T)), rel=1e-12)


def test_readings_from_sums_equal_readings_from_batch_means():
    means_rmd = np.random.default_rng(1).normal(loc=3.0, size=(7, 20, 4))
    traces_r = kpi.variance_traces(means_rmd.sum(axis=1), np.einsum("rmd,rmd->r", means_rmd, means_rmd), 20)
    np.testing.assert_allclose(traces_r, [kpi.variance_trace(m) for m in means_rmd], rtol=1e-10)


@pytest.mark.parametrize(
    ("dof", "low", "high"), [(10, 3.2470, 20.4832), (30, 16.7908, 46.9792), (100, 74.2219, 129.5612)]
)
def test_chi_square_quantiles_are_close_to_the_tables(dof, low, high):
    assert kpi._chi2_quantile(dof, -kpi.Z95) == pytest.approx(low, rel=0.01)
    assert kpi._chi2_quantile(dof, kpi.Z95) == pytest.approx(high, rel=0.002)


def test_effective_degrees_of_freedom_of_gaussian_batches():
    """For independent Gaussian batch means with D equal variances the trace estimate is a scaled
    chi-square with (M - 1) D degrees of freedom; the estimate from one sample is within a third."""
    means_md = np.random.default_rng(2).normal(size=(400, 6))
    assert kpi.effective_dof(means_md) == pytest.approx(399 * 6, rel=0.33)


def test_the_interval_covers_the_exact_variance_about_95_percent_of_the_time():
    """1000 readings of 60 batches on the lesson's MDP at N = 16: the interval holds the exact value in
    94% of them (0.94 +- 3 binomial standard errors of 0.0075), and none is flagged as heavy-tailed."""
    mdp = envs.lesson()
    theta = np.zeros(mdp.theta_shape())
    specs = parse_estimators("vanilla")
    exact = exact_moments(mdp, theta, specs[0]).variance_trace / 16
    means_rmd = Sampler(mdp, theta, specs).sample(16, 60_000, seed=1).batch_means_emd[0].reshape(1000, 60, -1)
    covered = [low <= exact <= high for low, high in map(kpi.variance_trace_ci, means_rmd)]
    assert 0.917 <= np.mean(covered) <= 0.963
    assert min(kpi.effective_dof(m) for m in means_rmd) >= kpi.RELIABLE_DOF


def test_heavy_tails_are_flagged():
    """The short corridor's vanilla gradient at N = 1 is heavy-tailed (an episode can last very long):
    most readings of 60 batches have few effective degrees of freedom and are flagged."""
    mdp = envs.short_corridor()
    theta = np.array([[0.0, np.log(0.59 / 0.41)]])
    means_rmd = Sampler(mdp, theta, parse_estimators("vanilla")).sample(1, 12_000, seed=2)
    means_rmd = means_rmd.batch_means_emd[0].reshape(200, 60, -1)
    flagged = np.mean([kpi.effective_dof(m) < kpi.RELIABLE_DOF for m in means_rmd])
    assert flagged > 0.8


def test_loglog_slope_and_ratios():
    assert kpi.loglog_slope([1, 4, 16], [2.0, 0.5, 0.125]) == pytest.approx(-1.0)
    assert kpi.loglog_slope([4, 4], [1.0, 2.0]) is None
    assert kpi.ratio(1.0, 0.0) is None and kpi.ratio(1.0, 4.0) == 0.25
    assert kpi.mean_cosine(np.eye(3), np.zeros(3)) is None


# -- what deep-RL practice reads off the batch means (McCandlish et al. 2018; Ilyas et al. 2020) -------


def test_mean_pairwise_cosine_is_the_mean_over_pairs_with_zero_estimates_counting_zero():
    rng = np.random.default_rng(3)
    means_md = rng.normal(size=(7, 5))
    means_md[2] = 0.0
    units = [m / np.linalg.norm(m) if np.linalg.norm(m) > 0 else m for m in means_md]
    pairs = [units[i] @ units[j] for i in range(7) for j in range(i + 1, 7)]
    assert kpi.mean_pairwise_cosine(means_md) == pytest.approx(np.mean(pairs), rel=1e-12)
    assert kpi.mean_pairwise_cosine(means_md[:1]) is None
    assert kpi.mean_cosine(means_md, means_md[0]) == pytest.approx(
        np.mean([u @ units[0] for u in units]), rel=1e-12
    )


def gaussian_gradients(rng, episodes: int, batches: int = 1):
    """(batches, episodes, D) draws of a gradient with known G and Sigma (D = 4, tr Sigma = 10)."""
    mean_d = np.array([1.0, -0.5, 0.25, 0.0])
    scales_d = np.sqrt([4.0, 3.0, 2.0, 1.0])
    return mean_d, 10.0, mean_d + scales_d * rng.normal(size=(batches, episodes, 4))


def test_the_squared_norm_estimate_is_unbiased_where_the_plain_square_is_not():
    rng = np.random.default_rng(5)
    mean_d, _, grads_rbd = gaussian_gradients(rng, episodes=8, batches=20_000)
    means_rd = grads_rbd.mean(axis=1)
    traces_r = grads_rbd.var(axis=1, ddof=1).sum(axis=1)
    estimates_r = np.einsum("rd,rd->r", means_rd, means_rd) - traces_r / 8
    exact = mean_d @ mean_d  # 1.3125; the plain square is too large by tr Sigma / 8 = 1.25
    stderr = estimates_r.std(ddof=1) / np.sqrt(estimates_r.size)
    assert abs(estimates_r.mean() - exact) < 4 * stderr
    assert kpi.squared_norm_estimate(means_rd[0], traces_r[0], 8) == pytest.approx(estimates_r[0])
    plain_r = np.einsum("rd,rd->r", means_rd, means_rd)
    assert plain_r.mean() - exact > 20 * stderr  # the bias the correction removes is visible


def test_the_squared_norm_interval_covers_about_95_percent():
    rng = np.random.default_rng(7)
    mean_d, _, grads_rbd = gaussian_gradients(rng, episodes=32 * 16, batches=2000)
    covered = 0
    for grads_bd in grads_rbd:
        _, low, high = kpi.squared_norm_ci(grads_bd.reshape(32, 16, 4).mean(axis=1))
        covered += low <= mean_d @ mean_d <= high
    # binomial(2000, 0.95): standard deviation 0.49%; the delta method is approximate, so 4 of them
    assert abs(covered / 2000 - 0.95) < 0.02


def test_norm_standard_error_matches_the_spread_of_the_norm():
    rng = np.random.default_rng(11)
    _, _, grads_rbd = gaussian_gradients(rng, episodes=32 * 16, batches=2000)
    chunks_rhd = grads_rbd.reshape(2000, 32, 16, 4).mean(axis=2)
    norms, errors = zip(*(kpi.norm_standard_error(c) for c in chunks_rhd), strict=True)
    # the mean standard error is the norm's actual spread, within the 1.6% noise of 2000 draws' std
    assert np.mean(errors) == pytest.approx(np.std(norms, ddof=1), rel=0.08)


def test_noise_scale_expected_cosine_and_batch_for_cosine():
    assert kpi.noise_scale(10.0, 2.0) == 5.0 and kpi.noise_scale(10.0, 0.0) is None
    assert kpi.noise_scale_ci((8.0, 12.0), (1.0, 4.0)) == (2.0, 12.0)
    assert kpi.noise_scale_ci((8.0, 12.0), (0.0, 4.0))[1] == np.inf
    assert kpi.expected_cosine(kpi.noise_scale(10.0, 2.0), kpi.batch_for_cosine(5.0, 0.9)) == pytest.approx(
        0.9
    )
    # the expected cosine of a batch mean to G, by simulation with isotropic noise: B_simple = 4 / 1
    rng = np.random.default_rng(13)
    n, scale = 16, kpi.noise_scale(4.0, 1.0)
    means_rd = np.array([1.0, 0, 0, 0]) + rng.normal(size=(20_000, 4)) / np.sqrt(n)
    cosines_r = means_rd[:, 0] / np.linalg.norm(means_rd, axis=1)
    # (1 + B/N)^(-1/2) is a first-order formula (E[cos] is not the ratio of the expectations): 1.8%
    # low here, with 0.07% of simulation noise; a formula off by a factor in B/N would be 5% off or more
    assert cosines_r.mean() == pytest.approx(kpi.expected_cosine(scale, n), rel=0.03)


def test_two_batch_estimates_recover_the_squared_norm_and_the_trace():
    rng = np.random.default_rng(17)
    mean_d, trace, _ = gaussian_gradients(rng, episodes=1)
    small, big, pairs = 4, 64, 20_000
    scales_d = np.sqrt([4.0, 3.0, 2.0, 1.0])
    small_rd = mean_d + scales_d * rng.normal(size=(pairs, 4)) / np.sqrt(small)
    big_rd = mean_d + scales_d * rng.normal(size=(pairs, 4)) / np.sqrt(big)
    squared_norm, found_trace = kpi.two_batch_estimates(
        float(np.einsum("rd,rd->r", small_rd, small_rd).mean()),
        float(np.einsum("rd,rd->r", big_rd, big_rd).mean()),
        small,
        big,
    )
    # standard errors at these sizes: about 0.008 for |G|^2 and 0.04 for the trace
    assert squared_norm == pytest.approx(mean_d @ mean_d, abs=0.04)
    assert found_trace == pytest.approx(trace, abs=0.2)
