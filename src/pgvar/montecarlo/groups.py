"""Grouped episodes for the group baselines (RLOO, GRPO): a batch of N episodes is N/K groups of K
that share a start state drawn from the MDP's start distribution (in LLM terms, K answers to one
prompt), and each episode's baseline comes from the other episodes of its group.

:class:`GroupSampler` draws the groups from one episode source per start state (``Sampler`` on the
MDP started there) and reads each estimate with the reference (``estimators.episode_gradients``,
which takes consecutive columns as groups), so it returns the same :class:`Sample` as the sampler
and the KPI is read as for any estimator. Estimators without a group baseline are not its business:
they take independent episodes (``Sampler``).

:func:`estimator_moments` gives every estimator's moments: exact where ``pgvar.exact`` (and
``pgvar.groups``) can compute them, else, for group baselines, estimated from sampled groups with
95% intervals (method ``monte-carlo``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from pgvar import budget, kpi
from pgvar.baselines import RunningBaselines
from pgvar.errors import SpecError
from pgvar.estimators import EstimatorSpec, ResolvedEstimator, episode_gradients, without_group
from pgvar.exact import Chain, ExactMoments, exact_moments
from pgvar.groups import GroupMomentsError, start_states
from pgvar.mdp import TabularMDP
from pgvar.montecarlo.plan import Episodes
from pgvar.montecarlo.sampler import Sample, Sampler
from pgvar.validation import check_int

GROUP_STREAM = 0x6770  # the grouped episodes' stream key beside the independent ones of the same seed
CHUNK_EPISODES = 65_536  # episodes drawn at a time (each chunk its own stream), whatever the total
ESTIMATE_EPISODES = 80_000  # episodes sampled where a group baseline's moments cannot be enumerated
ESTIMATE_MIN_GROUPS = 256
READ_COST = 20  # a grouped step, read by the NumPy reference estimator, costs about 20 compiled ones


def estimate_groups(k: int) -> int:
    """How many groups of ``k`` an estimate of a group baseline's moments samples: 20,000 groups of
    4, and at least 256 groups for large K."""
    return max(ESTIMATE_MIN_GROUPS, ESTIMATE_EPISODES // k)


def check_group_size(spec: EstimatorSpec, n: int) -> None:
    """Refuse a batch size that is not whole groups."""
    if n % spec.group:
        raise SpecError(
            f"N = {n} is not a multiple of the group size K = {spec.group} ({spec.name}: a batch is N/K "
            "groups of K episodes that share a start state)"
        )


class GroupSampler:
    """Batches of grouped episodes for estimators with a group baseline (see the module docs); specs
    with the same group size K share their episodes (common random numbers)."""

    def __init__(self, mdp: TabularMDP, theta: np.ndarray, specs: Sequence[EstimatorSpec]) -> None:
        self.specs = list(specs)
        if not self.specs or not all(spec.grouped for spec in self.specs):
            raise SpecError(
                "GroupSampler: every estimator must have a group baseline (loo, group, group-std)"
            )
        self.mdp, self.theta = mdp, theta
        self.starts = start_states(mdp)
        self.start_probs = mdp.initial_s[self.starts] / mdp.initial_s[self.starts].sum()
        plain = without_group(self.specs[0])
        self._sources = [
            Sampler(replace(mdp, initial_s=np.eye(mdp.n_states)[s]), theta, [plain]).source
            for s in self.starts
        ]
        steps = self._sources[0].plan.steps
        zeros = np.zeros((steps, mdp.n_states, mdp.n_actions))
        self._resolved = [
            ResolvedEstimator(spec, zeros, np.zeros((steps + 1, mdp.n_states))) for spec in self.specs
        ]
        self.steps = steps  # the horizon, or the sampler's rows for unbounded episodes

    def episodes(self, k: int, groups: int, seed: int | np.random.SeedSequence) -> Episodes:
        """``groups`` groups of ``k`` episodes, group g in columns g k .. g k + k - 1."""
        root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        start_seed, *source_seeds = root.spawn(1 + len(self._sources))
        start_g = np.random.default_rng(start_seed).choice(
            len(self._sources), size=groups, p=self.start_probs
        )
        parts, order = [], []
        for j, (source, child) in enumerate(zip(self._sources, source_seeds, strict=True)):
            members = np.flatnonzero(start_g == j)
            if members.size:
                parts.append(source.episodes(child, members.size * k))
                order.append(members)
        drawn = Episodes.concatenate(parts)
        columns = np.empty(groups * k, dtype=np.int64)  # drawn column of each group member, in group order
        columns.reshape(groups, k)[np.concatenate(order)] = np.arange(groups * k).reshape(groups, k)
        return Episodes(*(array[:, columns] for array in vars(drawn).values()))

    def check_cost(self, what: str, episodes: float) -> None:
        steps = episodes * self.steps
        budget.check_steps(
            f"{what}: {episodes:,.0f} grouped episodes, about {steps:,.3g} agent steps",
            steps * READ_COST,
            memory=8.0
            * min(episodes, CHUNK_EPISODES)
            * (self.steps * (self.mdp.n_actions * 6 + 4) + self.theta.size),
        )

    def sample(self, n: int, batches: int, seed: int | np.random.SeedSequence = 0) -> Sample:
        """Batch means (E, M, D) of every estimator over ``batches`` batches of ``n`` episodes."""
        check_int(n, "N", low=1)
        check_int(batches, "batches", low=1)
        for spec in self.specs:
            check_group_size(spec, n)
        sizes = sorted({spec.group for spec in self.specs})
        self.check_cost(f"N={n}, batches={batches}", float(n) * batches * len(sizes))
        root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
        means_emd = np.zeros((len(self.specs), batches, self.theta.size))
        per_chunk = max(1, CHUNK_EPISODES // n)  # batches drawn and read at a time, to bound memory
        for k, child in zip(sizes, root.spawn(len(sizes)), strict=True):
            for index, first in enumerate(range(0, batches, per_chunk)):
                last = min(batches, first + per_chunk)
                stream = np.random.SeedSequence(child.entropy, spawn_key=(*child.spawn_key, index))
                drawn = self.episodes(k, (last - first) * n // k, stream)
                arrays = (drawn.states_tb, drawn.actions_tb, drawn.rewards_tb, drawn.alive_tb)
                for e, estimator in enumerate(self._resolved):
                    if estimator.spec.group == k:
                        grads_bD = episode_gradients(self.mdp, self.theta, estimator, *arrays)
                        means_emd[e, first:last] = grads_bD.reshape(last - first, n, -1).mean(axis=1)
        zeros_ts = np.zeros((self.steps, self.mdp.n_states))
        running = RunningBaselines.empty(self.steps, self.mdp.n_states)
        return Sample(self.specs, n, "groups", means_emd, 0, running, zeros_ts, zeros_ts)


def group_moments_estimate(
    mdp: TabularMDP, theta: np.ndarray, spec: EstimatorSpec, groups: int | None = None, seed: int = 0
) -> ExactMoments:
    """A group baseline's mean and variance estimated from ``groups`` sampled groups (default
    :func:`estimate_groups`; method ``monte-carlo``), with the 95% interval of the variance trace
    and each mean's standard error."""
    groups = estimate_groups(spec.group) if groups is None else check_int(groups, "groups", low=2)
    sampler = GroupSampler(mdp, theta, [spec])
    sample = sampler.sample(spec.group, groups, seed)
    group_means_gD = sample.batch_means_emd[0]
    k = spec.group
    mean = group_means_gD.mean(axis=0)
    variance = k * group_means_gD.var(axis=0, ddof=1)
    low, high = kpi.variance_trace_ci(group_means_gD)
    standard_error = group_means_gD.std(axis=0, ddof=1) / np.sqrt(groups)
    total = float(variance.sum())
    return ExactMoments(
        spec, mean, variance, total, float("nan"), float("nan"), "monte-carlo", sampler.steps,
        0.0, None, None, (k * low, k * high), standard_error,
    )  # fmt: skip


def estimator_moments(
    mdp: TabularMDP, theta: np.ndarray, spec: EstimatorSpec, chain: Chain | None = None, seed: int = 0
) -> ExactMoments:
    """``spec``'s moments: exact (``pgvar.exact.exact_moments``), or for a group baseline whose
    moments cannot be enumerated, estimated by :func:`group_moments_estimate` (``method`` says which)."""
    try:
        return exact_moments(mdp, theta, spec, chain=chain)
    except GroupMomentsError:
        return group_moments_estimate(mdp, theta, spec, seed=seed)
