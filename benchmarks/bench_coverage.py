"""How often the KPI's 95% interval covers the exact variance, and how often a reading is flagged
unreliable: 1,000 readings of 60 batches each, per MDP and N. Run:

    .venv/bin/python benchmarks/bench_coverage.py
"""

from __future__ import annotations

import numpy as np

import pgvar
from pgvar import kpi
from pgvar.exact import exact_moments

READINGS, BATCHES = 1000, 60
CASES = [("lesson", "vanilla", 1), ("lesson", "vanilla", 16), ("short-corridor", "vanilla", 1),
         ("short-corridor", "vanilla", 4), ("short-corridor", "vanilla", 64)]  # fmt: skip


def main() -> None:
    print("| MDP | estimator | N | covered | flagged (dof < 30) |")
    print("|---|---|---:|---:|---:|")
    for seed, (name, estimator, n) in enumerate(CASES):
        mdp = pgvar.make(name)
        theta = pgvar.uniform_theta(mdp)
        spec = pgvar.parse_estimator(estimator)
        exact = exact_moments(mdp, theta, spec).variance_trace / n
        sample = pgvar.Sampler(mdp, theta, [spec]).sample(n, READINGS * BATCHES, seed=seed)
        means_rmd = sample.batch_means_emd[0].reshape(READINGS, BATCHES, -1)
        intervals = [kpi.variance_trace_ci(means_md) for means_md in means_rmd]
        covered = np.mean([low <= exact <= high for low, high in intervals])
        flagged = np.mean([kpi.effective_dof(means_md) < kpi.RELIABLE_DOF for means_md in means_rmd])
        print(f"| {name} | {estimator} | {n} | {covered:.1%} | {flagged:.1%} |")


if __name__ == "__main__":
    main()
