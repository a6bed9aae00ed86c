"""Sutton & Barto (2018), Figure 2.5: the gradient bandit with and without the average-reward baseline.

    .venv/bin/python examples/sutton_barto_2_5.py [--runs 20] [--steps 1000] [--seed 0] [--out DIR]

The 10-armed testbed with arm means q*(a) ~ N(4, 1) (the figure's offset +4) and unit reward noise;
each run draws its own bandit (``bandit:k=10,seed=r``). The gradient bandit algorithm,
H(a) += alpha (R_t - baseline) (1{a = A_t} - pi(a)), is policy gradient with one episode per update
(batch N = 1) on a one-step MDP: with the average of all earlier rewards as baseline it is
``rtg+lesson`` (the ``lesson`` baseline is the running mean of the reward-to-go over earlier episodes;
the book's first step uses R_1 itself, ours 0), and without it ``rtg``. Step sizes alpha = 0.1 and
0.4, as in the figure. The book plots the percentage of 2000 runs that pick the optimal arm at each
step; we record each run's exact probability of the optimal arm (the same quantity in expectation,
less noisy) and use fewer runs (default 10 bandits).

Book's claim (Section 2.8): with the baseline omitted "performance would be significantly degraded,
as shown in the figure".
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pgvar.curves import default_out, plot, save
from pgvar.envs import make
from pgvar.kpi import mean_ci
from pgvar.train import TrainConfig, combine, train

STEP_SIZES = (0.1, 0.4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="bandit problems, one run each (book: 2000)")
    parser.add_argument("--steps", type=int, default=1000, help="steps per run (book: 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output directory (default: a new one under runs/)")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    args = parser.parse_args(argv)

    bandits = [make(f"bandit:k=10,seed={args.seed * 100_000 + run}") for run in range(args.runs)]
    best_arm = np.array([int(np.argmax(bandit.rewards[0])) for bandit in bandits])
    print(
        f"Sutton & Barto Fig. 2.5: gradient bandit, 10 arms, q* ~ N(4, 1), {args.runs} bandits x "
        f"{args.steps} steps (book: 2000 x 1000)."
    )
    started = time.perf_counter()
    results, labels = [], []
    for alpha in STEP_SIZES:
        config = TrainConfig(lr=alpha, n=1, updates=args.steps, runs=args.runs, seed=args.seed)
        results.append(train(bandits, ["rtg+lesson", "rtg"], config, exact_reference=False))
        labels += [f"α = {alpha:g}, with baseline", f"α = {alpha:g}, without baseline"]
    result = combine(results, labels)

    def optimal_pct(curve):
        """(R, K) % probability of each run's optimal arm (the first observation's block of probs)."""
        return 100 * curve.probs_rkp[np.arange(curve.runs), :, best_arm]

    out = args.out or default_out("sutton-barto-2.5")
    save(result, out, overwrite=args.overwrite, title="Sutton & Barto Fig. 2.5: gradient bandit")
    plot(
        result,
        f"{out}/optimal-action",
        panels=[("% optimal action (exact π(a*))", optimal_pct), ("expected reward J", "J")],
        x="updates",
        title=f"Sutton & Barto Fig. 2.5: gradient bandit, q* ~ N(4, 1), {args.runs} bandits, mean, 95% band",
    )

    marks = [m for m in (100, 250, 500, 1000) if m <= args.steps]
    print(
        f"\n{'% optimal action':<30}"
        + "".join(f"{f'@ {m}':>9}" for m in marks)
        + "   (95% CI at the end, clipped to 0-100)"
    )
    finals = {}
    for curve in result.curves:
        mean, low, high = mean_ci(optimal_pct(curve))
        finals[curve.label] = mean[-1]
        print(
            f"{curve.label:<30}"
            + "".join(f"{mean[m]:>9.1f}" for m in marks)
            + f"   {max(low[-1], 0):.0f}-{min(high[-1], 100):.0f}"
        )
    print("\nBook: without the baseline, performance is significantly degraded.")
    gaps = []
    for alpha in STEP_SIZES:
        with_, without = finals[f"α = {alpha:g}, with baseline"], finals[f"α = {alpha:g}, without baseline"]
        gaps.append(with_ - without)
        print(
            f"Here, α = {alpha:g}: {with_:.0f}% optimal with the baseline vs {without:.0f}% without "
            f"after {args.steps} steps."
        )
    worst_with = min(v for k, v in finals.items() if "with baseline" in k)
    best_without = max(v for k, v in finals.items() if "without" in k)
    verdict = "Agrees" if worst_with > best_without else "Does not agree"
    print(
        f"{verdict}: both curves with the baseline end above both without it "
        f"({worst_with:.0f}% vs {best_without:.0f}% at best)."
    )
    print(f"({time.perf_counter() - started:.0f} s; wrote {out}/optimal-action.png, curves.png, curves.csv)")


if __name__ == "__main__":
    main()
