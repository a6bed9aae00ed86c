"""The exact engine lifted to a network's parameters (``exact.lifted_moments``): for any Jacobian J of
the logits, the lifted moments are J' E[g] and tr(J' Cov(g) J), by recursion and by enumeration alike."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import pgvar
from pgvar.errors import PgvarError
from pgvar.exact import exact_moments, lifted_moments

SPECS = ["vanilla", "rtg", "rtg+value", "gae0.9+value", "rtg+running", "base", "rtg:common"]


def _jacobian(mdp, blocks, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(pgvar.uniform_theta(mdp).size, sum(blocks)))


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("entropy", [0.0, 0.3])
def test_lifted_moments_are_the_jacobian_transform_of_the_full_covariance(name, entropy):
    mdp = pgvar.make("lesson")
    theta = np.random.default_rng(1).normal(size=pgvar.uniform_theta(mdp).shape)
    spec = pgvar.parse_estimator(name, entropy=entropy)
    blocks = [5, 2, 9]  # one tensor narrower than the 9 logits, one wider
    jacobian = _jacobian(mdp, blocks)
    logits = exact_moments(mdp, theta, spec, method="enumeration")
    covariance = jacobian.T @ logits.covariance @ jacobian
    edges = np.cumsum([0, *blocks])
    expected_blocks = [np.trace(covariance[a:b, a:b]) for a, b in itertools.pairwise(edges)]
    for method in ("recursion", "enumeration"):
        lifted = lifted_moments(mdp, theta, spec, jacobian, blocks, method=method)
        np.testing.assert_allclose(lifted.mean, jacobian.T @ logits.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(lifted.block_traces, expected_blocks, rtol=1e-9, atol=1e-12)
        assert lifted.variance_trace == pytest.approx(np.trace(covariance), rel=1e-9)


def test_the_lifted_optimal_constant_is_optimal_for_the_network_s_parameters():
    """Lifted, ``optimal`` minimises the trace in the network's parameters: below the trace with the
    logits' own optimal constants, and with none; recursion and enumeration agree."""
    mdp = pgvar.make("lesson")
    theta = np.random.default_rng(1).normal(size=pgvar.uniform_theta(mdp).shape)
    blocks = [5, 2, 9]
    jacobian = _jacobian(mdp, blocks)
    optimal = pgvar.parse_estimator("rtg+optimal")
    by_recursion = lifted_moments(mdp, theta, optimal, jacobian, blocks, method="recursion")
    by_enumeration = lifted_moments(mdp, theta, optimal, jacobian, blocks, method="enumeration")
    assert by_recursion.variance_trace == pytest.approx(by_enumeration.variance_trace, rel=1e-9)
    logit_optimal = exact_moments(mdp, theta, optimal, method="enumeration").covariance
    none = lifted_moments(mdp, theta, pgvar.parse_estimator("rtg"), jacobian, blocks)
    assert by_recursion.variance_trace < np.trace(jacobian.T @ logit_optimal @ jacobian)
    assert by_recursion.variance_trace < none.variance_trace


def test_the_identity_jacobian_gives_the_table_s_own_moments_on_an_unbounded_mdp():
    mdp = pgvar.make("short-corridor")
    theta = np.array([[0.3, -0.2]])
    spec = pgvar.parse_estimator("rtg+value")
    lifted = lifted_moments(mdp, theta, spec, np.eye(theta.size), [1, 1])
    table = exact_moments(mdp, theta, spec)
    np.testing.assert_allclose(lifted.mean, table.mean, rtol=1e-10)
    np.testing.assert_allclose(lifted.block_traces, table.variance, rtol=1e-10)


def test_bad_jacobians_and_the_per_parameter_optimum_are_refused_in_one_line():
    mdp = pgvar.make("lesson")
    theta = pgvar.uniform_theta(mdp)
    spec = pgvar.parse_estimator("rtg")
    for jacobian, blocks in [(np.ones((4, 3)), [3]), (np.ones((9, 3)), [2]), (np.full((9, 2), np.nan), [2])]:
        with pytest.raises(PgvarError, match=r"^lift: ") as error:
            lifted_moments(mdp, theta, spec, jacobian, blocks)
        assert "\n" not in str(error.value)
    with pytest.raises(PgvarError, match="optimal-per-parameter"):
        lifted_moments(mdp, theta, pgvar.parse_estimator("rtg+optimal-per-parameter"), np.eye(9), [9])
