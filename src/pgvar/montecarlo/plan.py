"""The plan of a Monte-Carlo measurement: every table the episode sources and read-outs need, computed
once per (MDP, theta, estimators), and the episodes a source can hand back for inspection.

A plan holds the policy's tables per step (probabilities, the entropy bonus and its direct term, where
each logit sits in theta) and each estimator's: its weight, the scale of its weight per step (gamma^t
or 1), its fixed baseline (exact V, an optimal constant, a learned table: ``offsets_etsa``), which
running mean it subtracts instead (``mean_e``: ``pgvar.baselines.MEAN_*``), and for GAE the value
function and gamma * lambda. Per-step tables have ``steps`` rows: the horizon, or for unbounded
episodes ``UNBOUNDED_STEPS`` rows whose last row stands for every later step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pgvar import budget
from pgvar.baselines import running_mean_kind
from pgvar.errors import SpecError
from pgvar.estimators import EstimatorSpec, ResolvedEstimator, score_scale_t
from pgvar.exact import Chain, learned_table, resolve, unroll, value_baseline
from pgvar.mdp import TabularMDP
from pgvar.policy import entropy_table, parameter_index, policy_table

UNBOUNDED_CAP = 100_000  # steps after which an episode without a horizon is cut (and counted)
UNBOUNDED_STEPS = 512  # per-step rows for unbounded episodes; later steps share the last row
WEIGHT_RETURN, WEIGHT_RTG, WEIGHT_GAE = 0, 1, 2  # ``Plan.weight_e`` codes, in ``estimators.WEIGHTS`` order


@dataclass(frozen=True)
class Plan:
    """Tables for measuring ``specs`` on ``mdp`` under softmax(``theta``) (see the module docs).

    Shapes: T = ``steps``, S states, A actions, E estimators, D = theta.size, P policy steps (1, or H
    for per-step logits), G estimators with a GAE weight.
    """

    mdp: TabularMDP
    theta: np.ndarray
    specs: tuple[EstimatorSpec, ...]
    entropy: float
    steps: int  # T of the per-step tables
    max_steps: int  # an episode's cap: the horizon, or UNBOUNDED_CAP
    policy_probs_psa: np.ndarray  # (P, S, A) pi(a|s) per policy step
    entropy_bonus_ps: np.ndarray  # (P, S) entropy * H[pi(.|s)], added to the reward
    probs_tsa: np.ndarray  # (T, S, A)
    direct_tsa: np.ndarray  # (T, S, A) entropy * gamma^t * grad H: the bonus's direct term per visit
    index_tsa: np.ndarray  # (T, S, A) flat index into theta of the logit of (t, s, a)
    weight_e: np.ndarray  # (E,) WEIGHT_* codes
    mean_e: np.ndarray  # (E,) the running mean subtracted (baselines.MEAN_*)
    scale_et: np.ndarray  # (E, T) the weight's scale: gamma^t, or 1 for the full return and ':common'
    offsets_etsa: np.ndarray  # (E, T, S, A) fixed baselines
    gae_e: np.ndarray  # (E,) row of the estimator's GAE tables, -1 for other weights
    gae_lam_g: np.ndarray  # (G,) lambda
    gae_decay_g: np.ndarray  # (G,) gamma * lambda
    gae_values_gts: np.ndarray  # (G, T + 1, S) the value function inside GAE

    @property
    def n_params(self) -> int:
        return self.theta.size

    @property
    def n_estimators(self) -> int:
        return len(self.specs)

    def policy_step(self, t: np.ndarray | int) -> np.ndarray | int:
        """Row of the per-policy-step tables used at step t."""
        return np.minimum(t, self.policy_probs_psa.shape[0] - 1)


def pad_steps(array: np.ndarray, steps: int) -> np.ndarray:
    """Cut or extend a per-step table to ``steps`` rows, repeating the last row."""
    if array.shape[0] >= steps:
        return array[:steps]
    return np.concatenate([array, np.repeat(array[-1:], steps - array.shape[0], axis=0)])


def _needs_chain(spec: EstimatorSpec) -> bool:
    """V, the optimal baselines and the running means inside GAE (at their limits) need the exact
    engine; running means of other weights, a learned table and no baseline do not."""
    if spec.weight == "gae":
        return spec.baseline not in ("none", "learned")
    return spec.baseline in ("value", "optimal", "optimal-per-parameter")


def make_plan(
    mdp: TabularMDP,
    theta: np.ndarray,
    specs: Sequence[EstimatorSpec],
    *,
    chain: Chain | None = None,
    learned_ts: np.ndarray | None = None,
) -> Plan:
    """The :class:`Plan` of ``specs`` at ``theta``; ``chain`` (from ``exact.unroll``) is reused when
    given, ``learned_ts`` is the (T, S) table of a ``learned`` baseline."""
    specs = tuple(specs)
    if not specs:
        raise SpecError("estimators: give at least one")
    grouped = [spec.name for spec in specs if spec.grouped]
    if grouped:  # their baseline comes from the other episodes of a group: montecarlo.groups
        raise SpecError(
            f"estimators {', '.join(grouped)}: group baselines are sampled in groups (GroupSampler)"
        )
    entropies = {spec.entropy for spec in specs}
    if len(entropies) != 1:
        raise SpecError("entropy: all estimators measured together must share one entropy coefficient")
    entropy = entropies.pop()
    steps = mdp.horizon if mdp.horizon is not None else UNBOUNDED_STEPS
    max_steps = mdp.horizon if mdp.horizon is not None else UNBOUNDED_CAP
    cells = float(steps) * mdp.n_states * mdp.n_actions
    budget.check_entries(
        f"mdp {mdp.name!r}: the sampler's tables of {len(specs)} estimators over {steps} steps",
        cells * (4 + len(specs)) + theta.size,
        passes=2,
    )
    budget.check(  # and the per-step tables made one step at a time, and one batch's per-cell statistics
        f"mdp {mdp.name!r}: the sampler's tables over {steps} steps",
        memory=8.0 * cells * (4 + 2 * len(specs)),
        seconds=4.0 * steps * budget.NUMPY_CALL_SECONDS,
    )
    if any(_needs_chain(spec) for spec in specs) and (chain is None or chain.beta != entropy):
        chain = unroll(mdp, theta, entropy)
    policy_steps = theta.shape[0] if theta.ndim == 3 else 1
    probs_psa = np.array([policy_table(theta, mdp, t) for t in range(policy_steps)])
    pairs = [entropy_table(theta, mdp, t) for t in range(policy_steps)]
    entropy_ps = np.array([pair[0] for pair in pairs])
    grad_h_psa = np.array([pair[1] for pair in pairs])
    policy_t = np.minimum(np.arange(steps), policy_steps - 1)
    shape = (steps, mdp.n_states, mdp.n_actions)
    offsets_etsa = np.zeros((len(specs), *shape))
    gae_e, lam_g, values_g = [], [], []
    for e, spec in enumerate(specs):
        if _needs_chain(spec):
            resolved = resolve(chain, spec)
        elif spec.baseline == "learned":
            resolved = value_baseline(mdp, spec, learned_table(mdp, learned_ts, steps))
        else:  # no baseline, or a running mean the read-outs keep
            resolved = ResolvedEstimator(spec, np.zeros(shape), np.zeros((steps + 1, mdp.n_states)))
        if spec.weight == "gae":
            gae_e.append(len(lam_g))
            lam_g.append(spec.lam)
            values_g.append(pad_steps(resolved.values_ts, steps + 1))
        else:
            gae_e.append(-1)
            offsets_etsa[e] = pad_steps(resolved.offsets_tsa, steps)
    discount_t = mdp.gamma ** np.arange(steps, dtype=float)
    return Plan(
        mdp=mdp,
        theta=theta,
        specs=specs,
        entropy=entropy,
        steps=steps,
        max_steps=max_steps,
        policy_probs_psa=probs_psa,
        entropy_bonus_ps=entropy * entropy_ps,
        probs_tsa=probs_psa[policy_t],
        direct_tsa=entropy * discount_t[:, None, None] * grad_h_psa[policy_t],
        index_tsa=np.array([parameter_index(mdp, theta.shape, t) for t in range(steps)], dtype=np.int64),
        weight_e=np.array([("return", "rtg", "gae").index(spec.weight) for spec in specs], dtype=np.int64),
        mean_e=np.array([running_mean_kind(spec) for spec in specs], dtype=np.int64),
        scale_et=np.array([score_scale_t(spec, mdp.gamma, steps) for spec in specs]).reshape(
            len(specs), steps
        ),
        offsets_etsa=offsets_etsa,
        gae_e=np.array(gae_e, dtype=np.int64),
        gae_lam_g=np.array(lam_g, dtype=float),
        gae_decay_g=mdp.gamma * np.array(lam_g, dtype=float),
        gae_values_gts=np.array(values_g).reshape(len(lam_g), steps + 1, mdp.n_states),
    )


@dataclass(frozen=True)
class Episodes:
    """B episodes padded to T steps, in the order they were drawn (episode i is in batch i // N):
    what a source hands back for inspection and for the reference estimator
    (``estimators.episode_gradients``). Rewards are the environment's (noise included, no entropy
    bonus); entries after an episode's end are zero, with ``alive_tb`` False."""

    states_tb: np.ndarray
    actions_tb: np.ndarray
    rewards_tb: np.ndarray
    alive_tb: np.ndarray

    @staticmethod
    def concatenate(parts: Sequence[Episodes]) -> Episodes:
        steps = max(part.states_tb.shape[0] for part in parts)

        def joined(name: str) -> np.ndarray:
            arrays = [getattr(part, name) for part in parts]
            return np.concatenate([np.pad(a, ((0, steps - a.shape[0]), (0, 0))) for a in arrays], axis=1)

        return Episodes(*(joined(name) for name in ("states_tb", "actions_tb", "rewards_tb", "alive_tb")))
