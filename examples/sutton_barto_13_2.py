"""Sutton & Barto (2018), Figure 13.2: REINFORCE with and without a baseline on the short corridor.

    .venv/bin/python examples/sutton_barto_13_2.py [--runs 6] [--episodes 1000] [--seed 0] [--out DIR]

Plain REINFORCE (batch N = 1, weight ``rtg``) with the book's step size alpha = 2^-13, against
REINFORCE with a learned state-value baseline (``rtg+learned``) with the book's alpha_theta = 2^-9. The
book's baseline is a linear v-hat(s, w) whose features do not tell the states apart, i.e. one number
w, moved by alpha_w = 2^-6 toward every G_t of the episode; here ``learned_by="observation"`` is the
same single number (every state looks alike), moved once per episode 30% of the way toward the
episode's mean G_t (alpha_w = 2^-6 per step amounts to 17% to 72% per episode for the episodes of 12
to 80 steps seen here). It is fitted after each episode and used from the next one on, so the estimate
stays unbiased. Both start at pi(right) = 0.05 (J = -81.8). The book averages 100 runs of sampled
returns; we record the exact J after every episode and use fewer runs (default 6, about a minute).

Book's claim (caption of Fig. 13.2): "Adding a baseline to REINFORCE can make it learn much faster".
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pgvar.curves import default_out, save
from pgvar.envs import make
from pgvar.kpi import mean_ci
from pgvar.train import TrainConfig, combine, episodes_to_reach, evaluate, train

THETA0 = np.array([[1.47, -1.47]])  # logits of (left, right): pi(right) = 0.05
V_STAR_P = 2 - np.sqrt(2)  # the best pi(right) of Example 13.1, (2p - 4) / (p (1 - p)) is maximal there
WITHIN = 0.10


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=6, help="runs per method (book: 100)")
    parser.add_argument("--episodes", type=int, default=1000, help="episodes per run (book: 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baseline-lr", type=float, default=0.3, help="learned baseline's rate per episode")
    parser.add_argument("--out", default=None, help="output directory (default: a new one under runs/)")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    args = parser.parse_args(argv)

    mdp = make("short-corridor")
    best = evaluate(mdp, np.array([[0.0, np.log(V_STAR_P / (1 - V_STAR_P))]])).J
    threshold = best * (1 + WITHIN)
    print(
        f"Sutton & Barto Fig. 13.2: REINFORCE with and without baseline on the short corridor, "
        f"{args.runs} runs x {args.episodes} episodes (book: 100 runs x 1000)."
    )
    print(f"start: pi(right) = 0.05, J = {evaluate(mdp, THETA0).J:.1f};  v*(S) = {best:.2f}")
    started = time.perf_counter()
    common = dict(n=1, updates=args.episodes, runs=args.runs, seed=args.seed)
    plain = train(mdp, ["rtg"], TrainConfig(lr=2.0**-13, **common), THETA0, exact_reference=False)
    with_baseline = train(
        mdp,
        ["rtg+learned"],
        TrainConfig(lr=2.0**-9, baseline_lr=args.baseline_lr, learned_by="observation", **common),
        THETA0,
        exact_reference=False,
    )
    result = combine(
        [plain, with_baseline],
        ["REINFORCE, α = 2^-13", "REINFORCE with baseline, α = 2^-9 (learned V)"],
    )
    out = args.out or default_out("sutton-barto-13.2")
    save(
        result,
        out,
        overwrite=args.overwrite,
        hlines={f"v*(S) = {best:.2f}": best, f"within {WITHIN:.0%} of v*": threshold},
        title=f"Sutton & Barto Fig. 13.2 (short corridor): {args.runs} runs, mean and 95% band",
    )

    marks = [m for m in (25, 50, 100, 250, 500, 1000) if m <= args.episodes]
    print(f"\n{'':46}" + "".join(f"{f'J @ {m}':>9}" for m in marks))
    medians = []
    for curve in result.curves:
        mean, low, high = mean_ci(curve.J_rk)
        print(f"{curve.label:<46}" + "".join(f"{mean[m]:>9.1f}" for m in marks))
        reach = episodes_to_reach(curve, threshold)
        reached = np.isfinite(reach)
        medians.append(float(np.median(np.where(reached, reach, np.inf))))
        when = (
            f"median {np.median(reach[reached]):.0f} episodes ({reached.sum()}/{reach.size} runs reached it)"
            if reached.any()
            else f"not within {args.episodes} episodes"
        )
        print(f"{'':4}within 10% of v*: {when}; final J = {mean[-1]:.2f} ± {(high[-1] - low[-1]) / 2:.2f}")
    without, with_ = medians
    print("\nBook: adding a baseline to REINFORCE can make it learn much faster.")
    if with_ < without:
        plain_text = (
            f"after {without:.0f} ({without / with_:.0f}x as many)"
            if np.isfinite(without)
            else f"not within {args.episodes}"
        )
        print(
            f"Here: with the baseline the median run is within 10% of v* after {with_:.0f} episodes, "
            f"without it {plain_text}. Agrees."
        )
    else:
        print(f"Here: with baseline {with_:.0f} episodes, without {without:.0f}: does not agree.")
    print(f"({time.perf_counter() - started:.0f} s; wrote {out}/curves.png, .svg, .csv)")


if __name__ == "__main__":
    main()
