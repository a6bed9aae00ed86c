"""The public API: ``import pgvar`` gives the user-facing names, lazily, each documented."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pgvar


def test_every_public_name_is_exported_and_documented():
    names = [name for name in pgvar.__all__ if name != "__version__"]
    assert set(names) == set(pgvar._EXPORTS)
    for name in names:
        value = getattr(pgvar, name)
        assert value.__doc__ and value.__doc__.strip(), name
        assert value.__module__.startswith("pgvar."), name


def test_importing_pgvar_loads_no_compiled_kernels_or_plots():
    code = "import sys, pgvar; print([m for m in ('numba', 'matplotlib', 'panel') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_thing"):
        pgvar.no_such_thing  # noqa: B018


def test_the_lesson_in_a_few_calls():
    mdp = pgvar.make("lesson")
    theta = pgvar.uniform_theta(mdp)
    specs = pgvar.parse_estimators("vanilla,rtg+base")
    exact = pgvar.exact_moments(mdp, theta, specs[0]).variance_trace
    readings = pgvar.Sampler(mdp, theta, specs).readings(1, 60, 200, seed=1)
    assert readings.route == "path-moments"
    # 200 readings of 60 batches: their mean is within 4 standard errors of the exact value
    traces_r = readings.variance_trace_re[:, 0]
    assert abs(traces_r.mean() - exact) < 4 * traces_r.std(ddof=1) / len(traces_r) ** 0.5
