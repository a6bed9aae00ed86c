"""The entropy bonus on the ``deceptive`` MDP: none commits to the early optimum, some finds the better
policy, too much never commits (lesson 07, "The entropy bonus"; the MDP is documented in pgvar.envs).

    .venv/bin/python examples/entropy_deceptive.py [--runs 5] [--updates 150] [--seed 0] [--out DIR]

Stochastic gradient ascent with ``rtg+learned`` (batch N = 16, lr 1) for the entropy bonuses 0, 0.3
and 3 (``TrainConfig(entropy=...)``, β in the labels), each beside ascent on the exact gradient of
J + entropy * H. Prints the final J (expected return, without the entropy term), the regularised
objective J + entropy * H, the mean policy entropy and the probability of walking on in the start
state, and compares with the exact optimum of the regularised objective.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pgvar.curves import default_out, save
from pgvar.envs import make
from pgvar.kpi import mean_ci
from pgvar.train import TrainConfig, combine, evaluate, train

ENTROPIES = (0.0, 0.3, 3.0)


def soft_optimum(mdp, entropy: float) -> np.ndarray:
    """Logits of the policy that maximises J + entropy * H (soft value iteration; entropy > 0)."""
    value = np.zeros(mdp.n_states)
    for _ in range(mdp.horizon):  # the corridor is acyclic: horizon sweeps are exact
        q = mdp.rewards + mdp.transitions @ value
        top = q.max(axis=1)
        soft_max = top + entropy * np.log(np.exp((q - top[:, None]) / entropy).sum(1))
        value = np.where(mdp.terminal_s, 0.0, soft_max)
    return (q / entropy)[~mdp.terminal_s]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--updates", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="output directory (default: a new one under runs/)")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    args = parser.parse_args(argv)

    mdp = make("deceptive")
    print(
        f"Entropy bonus on 'deceptive': rtg+learned, N = 16, lr 1, {args.updates} updates "
        f"({16 * args.updates} episodes), {args.runs} runs per entropy bonus; J(uniform) = "
        f"{evaluate(mdp, np.zeros(mdp.theta_shape())).J:.3f}, trap J = 1, best J = 3; entropy: mean "
        "policy entropy in nats (log 2 = 0.69 at uniform)."
    )
    started = time.perf_counter()
    results, labels = [], []
    for entropy in ENTROPIES:
        config = TrainConfig(
            lr=1.0, n=16, updates=args.updates, runs=args.runs, seed=args.seed, entropy=entropy
        )
        results.append(train(mdp, ["rtg+learned"], config))
        labels += [f"rtg+learned, β = {entropy:g}", f"exact gradient, β = {entropy:g}"]
    result = combine(results, labels)
    out = args.out or default_out("entropy-deceptive")
    save(
        result,
        out,
        overwrite=args.overwrite,
        hlines={"trap: J = 1": 1.0, "best: J = 3": 3.0},
        title="deceptive: entropy bonus β = 0 / 0.3 / 3, mean and 95% band",
    )

    print(f"\n{'':28}{'final J':>16}{'J + βH':>10}{'entropy':>9}{'P(treasure)':>13}")
    for curve in result.curves:
        mean, low, high = mean_ci(curve.J_rk[:, -1:])
        walk = curve.probs_rkp[:, -1].reshape(curve.runs, *mdp.theta_shape())[:, :, 0].prod(axis=1).mean()
        print(
            f"{curve.label:<28}{mean[0]:>9.2f} ± {(high[0] - low[0]) / 2:<4.2f}"
            f"{curve.objective_rk[:, -1].mean():>10.3f}"
            f"{curve.policy_entropy_rk[:, -1].mean():>9.2f}{walk:>13.3f}"
        )
    print("\nExact optimum of J + βH:")
    for entropy in ENTROPIES[1:]:
        best = evaluate(mdp, soft_optimum(mdp, entropy), entropy)
        print(f"  β = {entropy:g}: max J + βH = {best.objective:.3f}, at a policy with J = {best.J:.3f}")
    sampled = result.curves[::2]  # each entropy's sampled curve, then its exact one
    finals = {entropy: curve.J_rk[:, -1] for entropy, curve in zip(ENTROPIES, sampled, strict=True)}
    stuck = np.all(np.abs(finals[0.0] - 1) < 0.05)
    found = np.all(finals[0.3] > 2.5)
    shape = (args.runs, *mdp.theta_shape())
    treasure = result.curves[4].probs_rkp[:, -1].reshape(shape)[:, :, 0].prod(axis=1)
    print(
        f"\nβ = 0: {'every run' if stuck else 'not every run'} ends at the trap (J = 1); "
        f"β = 0.3: {'every run' if found else 'not every run'} finds the treasure (J > 2.5); "
        f"β = 3: it reaches the treasure with probability {treasure.mean():.2f} on average (no "
        f"commitment), mean J {finals[3.0].mean():.2f}" + (" < 1." if finals[3.0].mean() < 1 else ".")
    )
    print(f"({time.perf_counter() - started:.0f} s; wrote {out}/curves.png, .svg, .csv)")


if __name__ == "__main__":
    main()
