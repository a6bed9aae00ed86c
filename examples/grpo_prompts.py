"""Which prompts GRPO's std normalisation favours, exactly, on the ``prompts`` MDP (pgvar.envs.prompts).

    .venv/bin/python examples/grpo_prompts.py [--group 8] [--think=0,-2]

A prompt's parameters get gradient only from the groups drawn on that prompt, so the mean gradient of
each estimator splits by prompt. For each prompt the table gives its chance of a right answer under
the policy, the size of its part of the true gradient, and how each group baseline rescales that part:
|E g_prompt| / |grad J_prompt| (exact: every multiset of K paths). The group mean shrinks every prompt
by (K - 1)/K alike; dividing by the group's std weights most the prompts whose groups agree most: the
easiest and the hardest. ``--think`` sets the logit of "think" in every state (0: the uniform policy).
"""

from __future__ import annotations

import argparse

import numpy as np

from pgvar.envs import PROMPT_NAMES, make
from pgvar.estimators import parse_estimator
from pgvar.exact import exact_gradient, exact_moments, unroll, values
from pgvar.kpi import gradient_cosine
from pgvar.policy import uniform_theta

ESTIMATORS = ("return+loo", "return+group", "return+group-std", "return+group-std:per-length")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", type=int, default=8, help="group size K")
    parser.add_argument("--think", default="0,-2", help="logits of 'think', comma-separated")
    args = parser.parse_args(argv)
    mdp = make("prompts")
    depth = mdp.horizon
    for think in (float(x) for x in args.think.split(",")):
        theta = uniform_theta(mdp)
        theta[:, 1] = think
        grad = exact_gradient(mdp, theta)
        means = {
            text: exact_moments(mdp, theta, parse_estimator(text, group=args.group)) for text in ESTIMATORS
        }
        chain = unroll(mdp, theta)
        start_values = values(chain)[0][0]
        print(f"logit of 'think' = {think:g}, K = {args.group}: J = {mdp.initial_s @ start_values:.4f}")
        header = f"{'prompt':<10} {'P(right)':>9} {'|∇J_p|':>8} " + " ".join(
            f"{t[7:]:>22}" for t in ESTIMATORS
        )
        print(header)
        for prompt, name in enumerate(PROMPT_NAMES):
            rows = slice(prompt * depth, (prompt + 1) * depth)
            part = float(np.linalg.norm(grad[rows]))
            scales = [float(np.linalg.norm(m.mean.reshape(theta.shape)[rows])) / part for m in means.values()]
            print(
                f"{name:<10} {start_values[prompt * depth]:>9.3f} {part:>8.4f} "
                + " ".join(f"{scale:>22.3f}" for scale in scales)
            )
        cosines = [gradient_cosine(m.mean, grad.ravel()) for m in means.values()]
        print(f"{'cos(E g, ∇J)':<29}" + " ".join(f"{c:>22.6f}" for c in cosines))
        print()


if __name__ == "__main__":
    main()
