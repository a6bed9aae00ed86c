"""Speed of the Monte-Carlo variance measurement (issue: "speed to the limit").

Measures, in one process and one run (ratios are what count on a noisy machine):
- the lesson's MDP at N = 256 with 60 batches: pgvar's time against NumPy's Generator drawing only
  the random numbers the work needs (2 float64 uniforms per step), and against drawing the raw
  64-bit words pgvar actually consumes (one per step on the lesson: two 32-bit halves);
- N = 1 with many readings in one call (1000 readings x 60 batches, ``Sampler.readings``), as the
  explorer needs, and the same batches' means kept one by one (``Sampler.sample``);
- a literal pure-Python port of the lesson's per-rollout loop (steps per second);
- the two-core speed-up on a larger job;
- a random MDP (10 states, 4 actions, H = 50, stochastic transitions, Gaussian noise);
- optionally (--big) 10^8 episodes with the peak memory of the process.

Single-thread figures are single-threaded throughout: NumPy's BLAS (OpenBLAS here), which the
one-episode readings use for one matrix product, is held to one thread before NumPy loads (its
second thread, spinning after each product, slowed those readings by 10 to 15% on this machine).
The two-thread rows split the work with pgvar's own ``workers``.

    .venv/bin/python benchmarks/bench_montecarlo.py [--repeats 7] [--big] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before NumPy loads: see the docstring
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numba
import numpy as np

from pgvar import envs
from pgvar.baselines import RunningBaselines
from pgvar.estimators import parse_estimators
from pgvar.exact import unroll
from pgvar.montecarlo import Sampler, sample_batch_means
from pgvar.studies import variance_study

LESSON_FOUR = "vanilla,rtg,base,rtg+base"


def best_time(work, repeats: int, min_seconds: float = 0.5) -> float:
    """Best of at least ``repeats`` timed calls (more, for fast work, until ``min_seconds`` have been
    spent) after a warm-up, as timeit reports: on a shared machine the minimum is the least disturbed
    reading (medians moved by +-40% between runs here)."""
    work()  # warm: compile, caches
    times = []
    while len(times) < repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def pgvar_job(
    mdp,
    specs_text: str,
    n: int,
    batches: int,
    workers: int = 1,
    method: str = "auto",
    readings: int = 0,
    route: str = "auto",
):
    """One reading of every estimator, from a Sampler built once (as the explorer and sweeps do); with
    ``readings``, that many readings in one call (``Sampler.readings``: no batch means kept); ``route``
    forces a read-out by name."""
    theta = np.zeros(mdp.theta_shape())
    sampler = Sampler(mdp, theta, parse_estimators(specs_text), chain=unroll(mdp, theta), method=method)
    plan = sampler.plan

    def work():
        running = RunningBaselines.empty(plan.steps, plan.mdp.n_states)
        if readings:
            sampler.readings(n, batches, readings, seed=1, running=running, route=route)
        else:
            sampler.sample(n, batches, seed=1, running=running, workers=workers, route=route)

    return work


def tick_job(n: int, route: str = "auto"):
    """What one explorer tick measures: the four configurations at N on 60 batches with warm running
    baselines, and vanilla at N = 1 for the ratio (the page's redraw: bench_explorer.py)."""
    lesson = envs.lesson()
    theta = np.zeros(lesson.theta_shape())
    chain = unroll(lesson, theta)
    four = Sampler(lesson, theta, parse_estimators(LESSON_FOUR), chain=chain)
    vanilla = Sampler(lesson, theta, parse_estimators("vanilla"), chain=chain)
    running = RunningBaselines.empty(lesson.horizon, lesson.n_states)

    def work():
        four.sample(n, 60, seed=1, running=running, route=route)
        vanilla.sample(1, 60, seed=2, route=route)

    return work


def route_table(repeats: int) -> list[str]:
    """Each point a user feels, through the read-out the sampler picks and through ``cells``, the
    general one: a fast route is kept only where it is at least 1.3x faster on one of these points."""
    lesson = envs.lesson()
    theta = np.zeros(lesson.theta_shape())
    four = parse_estimators(LESSON_FOUR)
    points = [
        ("explorer tick, N=1", lambda route: tick_job(1, route)),
        ("explorer tick, N=1024", lambda route: tick_job(1024, route)),
        (
            "pgvar variance (defaults: N=1,4,16, 60 batches)",
            lambda route: lambda: variance_study(lesson, theta, four, [1, 4, 16], 60, 0),
        ),
        (
            "pgvar readings --count 1000 (N=1, 60 batches)",
            lambda route: pgvar_job(lesson, LESSON_FOUR, 1, 60, readings=1000, route=route),
        ),
        ("N=256, 60 batches", lambda route: pgvar_job(lesson, LESSON_FOUR, 256, 60, route=route)),
    ]
    sampler = Sampler(lesson, theta, four)
    picked = {
        "explorer tick, N=1": sampler.route(1),
        "explorer tick, N=1024": sampler.route(1024),
        "pgvar variance (defaults: N=1,4,16, 60 batches)": sampler.route(1),
        "pgvar readings --count 1000 (N=1, 60 batches)": sampler.route(1, 60, 60),
        "N=256, 60 batches": sampler.route(256),
    }
    lines = ["| point (lesson, the four configurations) | route | ms | through cells, ms | cells / route |",
             "|---|---|---:|---:|---:|"]  # fmt: skip
    for name, job in points:
        chosen = best_time(job("auto"), repeats)
        general = chosen if picked[name] == "cells" else best_time(job("cells"), repeats)
        figures = f"{chosen * 1e3:.3f} | {general * 1e3:.3f} | {general / chosen:.2f}x"
        lines.append(f"| {name} | {picked[name]} | {figures} |")
    return lines


def draw_only(count: int, kind: str):
    rng = np.random.default_rng(1)
    bits = np.random.PCG64(1)

    def uniforms():
        rng.random(count)

    def words():
        bits.random_raw(count)

    return uniforms if kind == "uniforms" else words


VANILLA_ONLY = ((False, False),)
LESSON_CONFIGS = ((False, False), (True, False), (False, True), (True, True))


def python_port(n: int, batches: int, configs=VANILLA_ONLY) -> None:
    """A literal port of the lesson's JavaScript core (rollout + estimateGrad), each configuration
    estimated from its own rollouts as the widget's code does."""
    T, A, best = 3, 3, [0, 1, 2]
    theta = [[0.0] * A for _ in range(T)]
    b_rtg = [0.0] * T

    def softmax(row):
        m = max(row)
        e = [math.exp(x - m) for x in row]
        z = sum(e)
        return [x / z for x in e]

    def sample(pi):
        u, acc = random.random(), 0.0
        for i, p in enumerate(pi):
            acc += p
            if u < acc:
                return i
        return len(pi) - 1

    def rollout():
        steps = []
        for t in range(T):
            pi = softmax(theta[t])
            a = sample(pi)
            r = (1 if a == best[t] else 0) + 0.6 * (random.random() - 0.5)
            score = [(1 if i == a else 0) - p for i, p in enumerate(pi)]
            steps.append((a, r, score))
        return steps

    def estimate_grad(n_episodes, use_rtg, use_base):
        g = [[0.0] * A for _ in range(T)]
        for _ in range(n_episodes):
            ep = rollout()
            total = sum(x[1] for x in ep)
            for t in range(T):
                gt = sum(x[1] for x in ep[t:]) if use_rtg else total
                if use_base:
                    gt -= b_rtg[t]
                for i in range(A):
                    g[t][i] += gt * ep[t][2][i] / n_episodes
        return g

    for _ in range(batches):
        for use_rtg, use_base in configs:
            estimate_grad(n, use_rtg, use_base)


def compile_time() -> dict:
    """First-call time in a fresh process with an empty numba cache, then with the cache filled."""
    code = (
        "import time; t=time.perf_counter(); import numpy as np; from pgvar import envs; "
        "from pgvar.estimators import parse_estimators; from pgvar.montecarlo import sample_batch_means; "
        "m=envs.lesson(); specs=parse_estimators('vanilla,rtg+base'); "
        "sample_batch_means(m, np.zeros((3,3)), specs, 4, 2); "
        "print(time.perf_counter()-t)"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = {"NUMBA_CACHE_DIR": cache, "PATH": "/usr/bin:/bin"}
        first = float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            ).stdout
        )
        second = float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            ).stdout
        )
    return {"first_call_s": first, "cached_call_s": second}


def big_run() -> dict:
    mdp = envs.lesson()
    theta = np.zeros(mdp.theta_shape())
    start = time.perf_counter()
    sample_batch_means(mdp, theta, parse_estimators(LESSON_FOUR), 1_000_000, 100, seed=1, workers=2)
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"episodes": 100_000_000, "seconds": elapsed, "peak_rss_mb": peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--big", action="store_true", help="also run 10^8 episodes and report peak memory")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    lesson = envs.lesson()
    rows, figures = [], {}

    def row(name, seconds, steps, reference=None, note=""):
        ratio = "" if reference is None else f"{seconds / reference:.2f}x"
        rows.append(f"| {name} | {steps / seconds:,.3g} | {seconds * 1e3:,.3f} | {ratio} | {note} |")
        figures[name] = {
            "seconds": seconds,
            "steps_per_s": steps / seconds,
            "ratio_to_draw_only": None if reference is None else seconds / reference,
        }

    steps = 60 * 256 * 3
    uniforms = best_time(draw_only(2 * steps, "uniforms"), args.repeats)
    words = best_time(draw_only(steps, "words"), args.repeats)
    row("draw-only: 2 float64 uniforms per step (N=256)", uniforms, steps)
    row("draw-only: 1 raw 64-bit word per step (N=256)", words, steps)
    for text in ("vanilla", LESSON_FOUR):
        seconds = best_time(pgvar_job(lesson, text, 256, 60), args.repeats)
        row(
            f"pgvar {text}, N=256, 60 batches",
            seconds,
            steps,
            uniforms,
            f"{seconds / words:.2f}x the raw words",
        )
    seconds = best_time(pgvar_job(lesson, LESSON_FOUR, 256, 60, method="steps"), args.repeats)
    row(f"pgvar {LESSON_FOUR}, N=256, 60 batches, walked step by step", seconds, steps, uniforms)
    many = 1000 * 60 * 3
    uniforms_n1 = best_time(draw_only(2 * many, "uniforms"), args.repeats)
    row("draw-only: 2 uniforms per step (N=1, 1000 readings)", uniforms_n1, many)
    for text in ("vanilla", LESSON_FOUR):
        seconds = best_time(pgvar_job(lesson, text, 1, 60, readings=1000), args.repeats)
        row(f"pgvar {text}, N=1, 1000 readings x 60 batches", seconds, many, uniforms_n1)
    seconds = best_time(pgvar_job(lesson, LESSON_FOUR, 1, 60_000), args.repeats)
    row(
        f"pgvar {LESSON_FOUR}, N=1, the 60,000 batch means themselves",
        seconds,
        many,
        uniforms_n1,
        "Sampler.sample: every batch mean kept",
    )
    python_steps = 256 * 6 * 3
    python_seconds = best_time(lambda: python_port(256, 6), max(1, args.repeats // 3))
    row("literal pure-Python port of the lesson's loop (vanilla)", python_seconds, python_steps)
    four_seconds = best_time(lambda: python_port(256, 6, LESSON_CONFIGS), max(1, args.repeats // 3))
    row(
        "literal pure-Python port, the four configurations (own rollouts each)",
        four_seconds,
        4 * python_steps,
    )
    pg_vanilla = figures["pgvar vanilla, N=256, 60 batches"]["seconds"] / 10  # 60 batches vs the port's 6
    speedup = python_seconds / pg_vanilla
    pg_four = figures[f"pgvar {LESSON_FOUR}, N=256, 60 batches"]["seconds"] / 10
    speedup_four = four_seconds / pg_four
    # N = 1: the port's 6,000 batches of one episode against pgvar's 60,000 (scaled)
    python_n1 = best_time(lambda: python_port(1, 6000), max(1, args.repeats // 3))
    row("literal pure-Python port, vanilla, N=1, 6000 batches", python_n1, 6000 * 3)
    four_n1 = best_time(lambda: python_port(1, 6000, LESSON_CONFIGS), max(1, args.repeats // 3))
    row("literal pure-Python port, the four configurations, N=1, 6000 batches", four_n1, 4 * 6000 * 3)
    speedup_n1 = python_n1 / (figures["pgvar vanilla, N=1, 1000 readings x 60 batches"]["seconds"] / 10)
    speedup_four_n1 = four_n1 / (
        figures[f"pgvar {LESSON_FOUR}, N=1, 1000 readings x 60 batches"]["seconds"] / 10
    )

    for big_n in (8192, 65536):
        big_steps = 60 * big_n * 3
        one = best_time(pgvar_job(lesson, LESSON_FOUR, big_n, 60, workers=1), max(3, args.repeats // 2))
        two = best_time(pgvar_job(lesson, LESSON_FOUR, big_n, 60, workers=2), max(3, args.repeats // 2))
        row(f"pgvar lesson four, N={big_n}, 60 batches, 1 thread", one, big_steps)
        row(
            f"pgvar lesson four, N={big_n}, 60 batches, 2 threads",
            two,
            big_steps,
            note=f"speed-up {one / two:.2f}x",
        )

    random_mdp = envs.make("random:seed=1,states=10,actions=4,horizon=50")
    random_steps = 60 * 64 * 50
    # per step: 1 word for action + stochastic transition, plus one normal for the Gaussian noise
    rng = np.random.default_rng(1)
    random_draw = best_time(
        lambda: (rng.random(2 * random_steps), rng.standard_normal(random_steps)), args.repeats
    )
    row("draw-only: random MDP, 2 uniforms + 1 normal per step", random_draw, random_steps)
    seconds = best_time(pgvar_job(random_mdp, "vanilla,rtg+value,gae0.95+value", 64, 60), args.repeats)
    row(
        "pgvar random MDP (10 states, 4 actions, H=50), N=64, 60 batches",
        seconds,
        random_steps,
        random_draw,
        "vanilla, rtg+value, gae0.95+value",
    )

    print(
        f"numpy {np.__version__}, numba {numba.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}"
    )
    print()
    print("| job | steps/s | ms | vs draw-only | note |")
    print("|---|---:|---:|---:|---|")
    print("\n".join(rows))
    print()
    print("\n".join(route_table(args.repeats)))
    print()
    print(
        f"time for the same readings, pure-Python port / pgvar: N=256 vanilla {speedup:,.0f}x, "
        f"the four configurations {speedup_four:,.0f}x; N=1 vanilla {speedup_n1:,.0f}x, "
        f"the four configurations {speedup_four_n1:,.0f}x"
    )
    figures["speedup_vs_python_port"] = {
        "vanilla": speedup,
        "four_configurations": speedup_four,
        "vanilla_n1": speedup_n1,
        "four_configurations_n1": speedup_four_n1,
    }
    compile_figures = compile_time()
    figures["compile"] = compile_figures
    print(
        f"first call in a fresh process with an empty numba cache: {compile_figures['first_call_s']:.1f} s; "
        f"with the cache: {compile_figures['cached_call_s']:.1f} s"
    )
    if args.big:
        big = big_run()
        figures["big"] = big
        print(
            f"10^8 episodes (lesson, 4 estimators, 2 threads): {big['seconds']:.1f} s, "
            f"peak RSS {big['peak_rss_mb']:.0f} MB"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(figures, handle, indent=2)


if __name__ == "__main__":
    main()
