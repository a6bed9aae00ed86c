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
