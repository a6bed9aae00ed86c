"""pgvar: policy-gradient estimators and their variance, exact where mathematics allows.

``import pgvar`` gives the names below, loaded on first use (the compiled kernels and the plotting
stack stay unloaded until something needs them)::

    import pgvar
    mdp = pgvar.make("lesson")                      # or pgvar.load_mdp("my.yaml"), pgvar.resolve_mdp(...)
    theta = pgvar.uniform_theta(mdp)
    specs = pgvar.parse_estimators("vanilla,rtg,base,rtg+base")
    pgvar.exact_gradient(mdp, theta)                # the policy-gradient theorem
    pgvar.exact_moments(mdp, theta, specs[0]).variance_trace
    pgvar.Sampler(mdp, theta, specs).readings(1, 60, 1000).variance_trace_re
    pgvar.variance_study(mdp, theta, specs, ns=[1, 16])
    grpo = pgvar.parse_estimator("return+group-std", group=8)   # RLOO: loo, GRPO: group, group-std
    prompts = pgvar.make("prompts")
    pgvar.estimator_moments(prompts, pgvar.uniform_theta(prompts), grpo)  # exact, else sampled

Modules hold the rest: ``pgvar.estimators`` (the reference estimator), ``pgvar.exact``,
``pgvar.montecarlo``, ``pgvar.kpi``, ``pgvar.returns``, ``pgvar.policy``, ``pgvar.train``; their
names without a leading underscore are public. docs/architecture.md shows the layers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # the model (move 1)
    "TabularMDP": "pgvar.mdp",
    "make": "pgvar.envs",
    "load_mdp": "pgvar.mdpfile",
    "resolve_mdp": "pgvar.mdpfile",
    # the policy and its score (move 2)
    "softmax": "pgvar.policy",
    "score": "pgvar.policy",
    "entropy": "pgvar.policy",
    "uniform_theta": "pgvar.policy",
    "parse_theta": "pgvar.policy",
    # estimators (move 3)
    "EstimatorSpec": "pgvar.estimators",
    "parse_estimator": "pgvar.estimators",
    "parse_estimators": "pgvar.estimators",
    "episode_gradients": "pgvar.estimators",
    "reward_to_go": "pgvar.returns",
    "gae": "pgvar.returns",
    "RunningBaselines": "pgvar.baselines",
    # exact answers
    "objective": "pgvar.exact",
    "exact_gradient": "pgvar.exact",
    "exact_moments": "pgvar.exact",
    # measured answers (move 4)
    "Sampler": "pgvar.montecarlo",
    "GroupSampler": "pgvar.montecarlo.groups",
    "estimator_moments": "pgvar.montecarlo.groups",
    "variance_trace": "pgvar.kpi",
    "variance_study": "pgvar.studies",
    "reading_spread": "pgvar.studies",
    # errors
    "PgvarError": "pgvar.errors",
}

__all__ = [
    "EstimatorSpec",
    "GroupSampler",
    "PgvarError",
    "RunningBaselines",
    "Sampler",
    "TabularMDP",
    "__version__",
    "entropy",
    "episode_gradients",
    "estimator_moments",
    "exact_gradient",
    "exact_moments",
    "gae",
    "load_mdp",
    "make",
    "objective",
    "parse_estimator",
    "parse_estimators",
    "parse_theta",
    "reading_spread",
    "resolve_mdp",
    "reward_to_go",
    "score",
    "softmax",
    "uniform_theta",
    "variance_study",
    "variance_trace",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pgvar' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from pgvar.baselines import RunningBaselines
    from pgvar.envs import make
    from pgvar.errors import PgvarError
    from pgvar.estimators import EstimatorSpec, episode_gradients, parse_estimator, parse_estimators
    from pgvar.exact import exact_gradient, exact_moments, objective
    from pgvar.kpi import variance_trace
    from pgvar.mdp import TabularMDP
    from pgvar.mdpfile import load_mdp, resolve_mdp
    from pgvar.montecarlo import Sampler
    from pgvar.montecarlo.groups import GroupSampler, estimator_moments
    from pgvar.policy import entropy, parse_theta, score, softmax, uniform_theta
    from pgvar.returns import gae, reward_to_go
    from pgvar.studies import reading_spread, variance_study
