"""Speed of neural-policy measurement (pgvar.torch): per-episode gradients and episode collection.

Measures, in one process (ratios are what count on a noisy machine):
- per-episode gradients of a 64-64 tanh MLP on 256 CartPole-v1 episodes (``episode_gradients``: its
  default ``packed`` method, one backward pass and each layer's per-episode outer products, and its
  ``vmap`` method, vmap(grad) over padded episodes) against ONE batched backward pass over the same
  episodes (``batched_gradient``, the limit; target at most 1.5x) and against a per-episode backward
  loop (``loop_gradients``, the reference); the same on 64 Pendulum-v1 episodes of 200 steps
  (Gaussian head);
- episode collection (``collect``, 8 sub-environments) against the same vector environment stepping
  with uniformly random actions for the same number of vector steps (target at most 2x);
- the lifted exact engine (``exact_network_moments``: J' E[g], tr(J' Cov J) per parameter tensor) on
  FrozenLake 4x4 and 8x8 with a 64-64 MLP (target: seconds), one run each (a single call is the unit).

Everything runs on one thread (torch and the BLAS), as the per-core figures of the other benchmarks.

    .venv/bin/python benchmarks/bench_torch.py [--repeats 5] [--episodes 256] [--processes K]

The packed/batched ratio moves from one process to the next (glibc's page faults, the host's load):
``--processes K`` also times the two gradient rows in K fresh processes and prints the ratio's
minimum, median and maximum, and in how many of them the 1.5x limit was met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch

import pgvar.torch.episodes as episodes_module
from pgvar.estimators import parse_estimator
from pgvar.gym.envspec import make_env, make_vector_env
from pgvar.gym.tabular import from_gym
from pgvar.torch.episodes import collect
from pgvar.torch.gradients import (
    batched_gradient,
    episode_gradients,
    loop_gradients,
    parameter_layout,
)
from pgvar.torch.lift import exact_network_moments
from pgvar.torch.policies import make_policy


def best_time(work, repeats: int, min_seconds: float = 0.3) -> float:
    """Best of at least ``repeats`` timed calls after a warm-up (the least disturbed reading)."""
    work()
    times: list[float] = []
    while len(times) < repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def gradient_row(env_text: str, n_episodes: int, repeats: int) -> dict:
    env = make_env(env_text)
    policy = make_policy("mlp:64,64", env.observation_space, env.action_space, seed=0)
    batch = collect(env_text, policy, n_episodes, seed=0)
    spec = parse_estimator("rtg")
    per_episode = episode_gradients(policy, batch, spec, method="packed")
    assert torch.allclose(per_episode.mean(0), batched_gradient(policy, batch, spec), rtol=1e-6, atol=1e-12)
    assert torch.allclose(
        per_episode, episode_gradients(policy, batch, spec, method="vmap"), rtol=1e-9, atol=1e-12
    )
    return {
        "case": f"{env_text.split(',')[0]}: B={n_episodes}, T={batch.n_steps}, "
        f"mean length {batch.lengths_b.mean():.1f}, D={sum(size for _, size in parameter_layout(policy))}",
        "packed": best_time(lambda: episode_gradients(policy, batch, spec, method="packed"), repeats),
        "vmap": best_time(lambda: episode_gradients(policy, batch, spec, method="vmap"), repeats),
        "batched": best_time(lambda: batched_gradient(policy, batch, spec), repeats),
        "loop": best_time(lambda: loop_gradients(policy, batch, spec), max(1, repeats // 2)),
    }


def collection_row(env_text: str, n_episodes: int, repeats: int) -> dict:
    env = make_env(env_text)
    policy = make_policy("mlp:64,64", env.observation_space, env.action_space, seed=0)
    vector_steps = [0]
    make = episodes_module.make_vector_env

    def counting(*args, **kwargs):  # counts the vector steps collect takes (resets included)
        vec = make(*args, **kwargs)
        step = vec.step

        def counted(actions):
            vector_steps[0] += 1
            return step(actions)

        vec.step = counted
        return vec

    episodes_module.make_vector_env = counting
    try:
        batch = collect(env_text, policy, n_episodes, seed=0)
    finally:
        episodes_module.make_vector_env = make
    steps = vector_steps[0]
    collected = best_time(lambda: collect(env_text, policy, n_episodes, seed=0), repeats)
    vec = make_vector_env(env_text, 8)
    rng = np.random.default_rng(0)
    space = vec.action_space

    def random_actions() -> None:
        vec.reset(seed=0)
        for _ in range(steps):
            if hasattr(space, "nvec"):
                vec.step(rng.integers(0, space.nvec))
            else:
                vec.step(rng.uniform(space.low, space.high))

    stepped = best_time(random_actions, repeats)
    return {
        "case": f"{env_text.split(',')[0]}: {n_episodes} episodes, {int(batch.lengths_b.sum())} steps, "
        f"{steps} vector steps x 8",
        "collect": collected,
        "random": stepped,
    }


def lifted_row(env_text: str) -> dict:
    env = make_env(env_text)
    policy = make_policy("mlp:64,64", env.observation_space, env.action_space, seed=0)
    mdp = from_gym(env_text)
    start = time.perf_counter()
    moments = exact_network_moments(policy, mdp, parse_estimator("rtg"))
    seconds = time.perf_counter() - start
    return {
        "case": f"{env_text}: {mdp.n_states} states, horizon {mdp.horizon}, D={moments.mean.size}",
        "method": moments.method,
        "seconds": seconds,
    }


def ratio_spread(env_text: str, n_episodes: int, repeats: int, processes: int) -> dict:
    """packed / batched of :func:`gradient_row` in ``processes`` fresh interpreters, one each."""
    ratios = []
    for _ in range(processes):
        command = [sys.executable, __file__, "--row", env_text, "--episodes", str(n_episodes)]
        done = subprocess.run(
            [*command, "--repeats", str(repeats)], capture_output=True, text=True, check=True
        )
        row = json.loads(done.stdout)
        ratios.append(row["packed"] / row["batched"])
    return {"case": env_text, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument(
        "--processes", type=int, default=1, help="also time the gradient rows in K fresh processes"
    )
    parser.add_argument("--row", help=argparse.SUPPRESS)  # one gradient row as JSON (what --processes runs)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.row:
        print(json.dumps(gradient_row(args.row, args.episodes, args.repeats)))
        return
    machine = platform.processor() or platform.machine()
    print(f"# torch {torch.__version__}, numpy {np.__version__}, {machine}, 1 thread")
    rows = [
        gradient_row("CartPole-v1", args.episodes, args.repeats),
        gradient_row("Pendulum-v1", max(args.episodes // 4, 1), args.repeats),
    ]
    print("\nPer-episode gradients (rtg, 64-64 tanh MLP), seconds, best of repeats")
    header = ("packed", "vmap", "batched", "ratio", "ratio", "loop", "gain")
    print(f"{'case':<58}" + "".join(f"{name:>8}" for name in header))
    for row in rows:
        cells = (row["packed"], row["vmap"], row["batched"], row["packed"] / row["batched"],
                 row["vmap"] / row["batched"], row["loop"], row["loop"] / row["packed"])  # fmt: skip
        formats = ("8.4f", "8.4f", "8.4f", "8.2f", "8.2f", "8.4f", "8.1f")
        line = "".join(format(cell, spec) for cell, spec in zip(cells, formats, strict=True))
        print(f"{row['case']:<58}{line}")
    print("  packed, vmap: episode_gradients(method=...); batched: batched_gradient (one backward over")
    print("  the steps that run); ratios: packed / batched (target <= 1.5), vmap / batched;")
    print("  gain: loop (one backward per episode) / packed")
    rows = [
        collection_row("CartPole-v1", args.episodes, args.repeats),
        collection_row("Pendulum-v1", max(args.episodes // 4, 1), args.repeats),
    ]
    print("\nCollection (8 sub-environments, 64-64 policy), seconds, best of repeats")
    print(f"{'case':<58} {'collect':>8} {'random':>8} {'ratio':>6}")
    for row in rows:
        ratio = row["collect"] / row["random"]
        print(f"{row['case']:<58} {row['collect']:8.4f} {row['random']:8.4f} {ratio:6.2f}")
    print("  ratio: collect / the same vector steps with random actions (target <= 2)")
    print("\nLifted exact engine (rtg, 64-64 tanh MLP), seconds, one call")
    for row in (lifted_row("FrozenLake-v1"), lifted_row("FrozenLake-v1,map_name=8x8")):
        print(f"{row['case']:<58} {row['method']:>10} {row['seconds']:8.2f}")
    if args.processes > 1:
        cases = (("CartPole-v1", args.episodes), ("Pendulum-v1", max(args.episodes // 4, 1)))
        spreads = [ratio_spread(env, n, args.repeats, args.processes) for env, n in cases]
        print(f"\nPer-episode gradients, packed / batched in {args.processes} fresh processes")
        print(f"{'case':<58}{'min':>8}{'median':>8}{'max':>8}{'<= 1.5':>8}")
        for spread in spreads:
            ratios = spread["ratios"]
            within = f"{sum(ratio <= 1.5 for ratio in ratios)}/{len(ratios)}"
            cells = f"{min(ratios):8.2f}{statistics.median(ratios):8.2f}{max(ratios):8.2f}{within:>8}"
            print(f"{spread['case']:<58}{cells}")


if __name__ == "__main__":
    main()
