"""Throughput of pgvar's reward_to_go and gae against a memory proxy, a NumPy loop and peer libraries.

    bash benchmarks/setup_peers.sh && benchmarks/.peers-venv/bin/python benchmarks/bench_returns.py

Every implementation gets the same float32 arrays (gamma 0.99, lambda 0.95, terminations and
truncations inside every stream, a bootstrap value per stream) and must agree with pgvar before it is
timed; the largest absolute difference is printed. Each peer's conventions are met by preparing its
inputs outside the timed region:
- rlax (jax.jit, compile excluded; vmap over streams): the truncation value is folded into the reward
  (r + gamma * V_cut, discount 0 there) since its `values` array holds one value per state;
- Stable-Baselines3: episode_starts[t + 1] flags that step t ended an episode and truncation is folded
  into the reward, as its own collect_rollouts does; the buffer arrays are filled directly;
- TorchRL: batch-major tensors (B, T, 1) with time_dim=-2; done = terminated | truncated, and the
  truncated steps' next_state_value is the value of the state they were cut in;
- Spinning Up (scipy.signal.lfilter discount_cumsum, one finish_path call per episode) and a CleanRL
  loop (which treats truncation as termination, so it gets the reward-folded inputs too) are written here.
The memory proxy is a numba kernel making one fused pass over the flat arrays that reads 3 float32
arrays (rewards, values, truncation values) and writes 2 (a*b + c style elementwise results): the cost
of touching the data once, a floor no reverse scan can beat.

Msteps/s is T*B divided by the median of the timed calls (Python call overhead included). Rounds are
interleaved, so every ratio in a table comes from the same stretch of machine time; in each round an
implementation is called twice and the second call is timed (its inputs warm in cache, as in a timeit
loop). Python-loop implementations are timed on the first 16,384 steps of the 1-D stream (marked *).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from pgvar.returns import gae, reward_to_go

GAMMA, LAM = 0.99, 0.95
SHAPES = [(2048, 8), (1024, 64), (128, 1024), (1_000_000,)]
SLOW_PREFIX = 16_384  # steps of the 1-D stream given to per-time-step Python loops


# --- inputs ------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Time-major float32 arrays (T, B) (a 1-D stream is B = 1) and what peers derive from them."""

    rewards: np.ndarray
    values: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    truncation_values: np.ndarray
    bootstrap: np.ndarray  # (B,)
    one_d: bool
    derived: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.rewards.size

    def public(self, array: np.ndarray) -> np.ndarray:
        """The array as pgvar's API takes it: (T,) for a 1-D stream."""
        return array[:, 0] if self.one_d else array

    def prefix(self, n: int) -> Batch:
        cut = {name: getattr(self, name)[:n] for name in ("rewards", "values", "terminated", "truncated")}
        return Batch(
            **cut, truncation_values=self.truncation_values[:n], bootstrap=self.bootstrap, one_d=self.one_d
        )

    def next_values(self) -> np.ndarray:
        """V(s_{t+1}) as each step sees it: the cut state's value after a truncation, the bootstrap last."""
        nv = np.empty_like(self.values)
        nv[:-1] = self.values[1:]
        nv[-1] = self.bootstrap
        return np.where(self.truncated, self.truncation_values, nv).astype(np.float32)

    def folded_rewards(self) -> np.ndarray:
        """Rewards with gamma * V_cut added at truncated steps: truncation becomes termination (SB3's way)."""
        return (self.rewards + GAMMA * np.where(self.truncated, self.truncation_values, 0)).astype(np.float32)

    def ends(self) -> np.ndarray:
        return self.terminated | self.truncated


def make_batch(shape: tuple[int, ...], seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    one_d = len(shape) == 1
    shape2 = (shape[0], 1) if one_d else shape
    f32 = np.float32
    u = rng.random(shape2)
    terminated = u < 1 / 200
    truncated = (u >= 1 / 200) & (u < 1 / 200 + 1 / 500)
    terminated[shape2[0] // 3] = True  # every stream has both kinds of ends inside it, never both at once
    truncated[2 * shape2[0] // 3] = True
    truncated &= ~terminated
    return Batch(
        rewards=rng.normal(size=shape2).astype(f32),
        values=rng.normal(size=shape2).astype(f32),
        terminated=terminated,
        truncated=truncated,
        truncation_values=rng.normal(size=shape2).astype(f32),
        bootstrap=rng.normal(size=shape2[1]).astype(f32),
        one_d=one_d,
    )


# --- implementations ---------------------------------------------------------------------------------
# Each maker takes a Batch, does its preparation untimed, and returns a zero-argument callable giving
# the (T, B) result as a NumPy array, or None where the task is not offered.


def pgvar_gae(batch: Batch):
    p = batch.public
    kw = _pgvar_kw(batch)
    return lambda: gae(p(batch.rewards), p(batch.values), GAMMA, LAM, **kw).reshape(batch.rewards.shape)


def pgvar_reward_to_go(batch: Batch):
    p = batch.public
    kw = _pgvar_kw(batch)
    return lambda: reward_to_go(p(batch.rewards), GAMMA, **kw).reshape(batch.rewards.shape)


def _pgvar_kw(batch: Batch) -> dict:
    p = batch.public
    return {
        "terminated_t": p(batch.terminated),
        "truncated_t": p(batch.truncated),
        "truncation_values_t": p(batch.truncation_values),
        "bootstrap_value": batch.bootstrap[0] if batch.one_d else batch.bootstrap,
    }


@njit(cache=True)
def _memory_proxy_kernel(a, b, c, out1, out2):
    for i in range(a.size):
        out1[i] = a[i] * b[i] + c[i]
        out2[i] = a[i] + c[i]


def memory_proxy(batch: Batch):
    a, b, c = (x.reshape(-1) for x in (batch.rewards, batch.values, batch.truncation_values))
    out1, out2 = np.empty_like(a), np.empty_like(a)

    def run():
        _memory_proxy_kernel(a, b, c, out1, out2)
        return None

    return run


def numpy_loop_gae(batch: Batch):
    """A reverse loop over time in NumPy, vectorised over streams (pgvar's former implementation)."""
    r, v, nv = batch.rewards, batch.values, batch.next_values()
    nv = np.where(batch.terminated, 0, nv)
    deltas = r + GAMMA * nv - v
    keep = GAMMA * LAM * ~batch.ends()

    def run():
        out = np.empty_like(r)
        carry = np.zeros_like(r[0])
        for t in range(r.shape[0] - 1, -1, -1):
            carry = deltas[t] + keep[t] * carry
            out[t] = carry
        return out

    return run


def numpy_loop_reward_to_go(batch: Batch):
    r, ends = batch.rewards, batch.ends()
    cut = np.where(batch.terminated, 0, batch.truncation_values).astype(np.float32)

    def run():
        out = np.empty_like(r)
        carry = batch.bootstrap.copy()
        for t in range(r.shape[0] - 1, -1, -1):
            carry = r[t] + GAMMA * np.where(ends[t], cut[t], carry)
            out[t] = carry
        return out

    return run


def cleanrl_gae(batch: Batch):
    """CleanRL ppo.py's loop: dones[t] says the step before t ended an episode; no truncation bootstrap."""
    rewards, values = batch.folded_rewards(), batch.values
    dones = np.zeros_like(values)
    dones[1:] = batch.ends()[:-1]
    next_done = batch.ends()[-1].astype(np.float32)
    next_value = batch.bootstrap

    def run():
        advantages = np.zeros_like(rewards)
        lastgaelam = 0
        num_steps = rewards.shape[0]
        for t in reversed(range(num_steps)):
            if t == num_steps - 1:
                nextnonterminal = 1.0 - next_done
                nextvalues = next_value
            else:
                nextnonterminal = 1.0 - dones[t + 1]
                nextvalues = values[t + 1]
            delta = rewards[t] + GAMMA * nextvalues * nextnonterminal - values[t]
            advantages[t] = lastgaelam = delta + GAMMA * LAM * nextnonterminal * lastgaelam
        return advantages

    return run


def _episodes(batch: Batch):
    """(stream, start, stop, value after the episode's last step) for every episode piece."""
    ends = batch.ends()
    after_cut = np.where(batch.terminated, 0, batch.truncation_values)
    pieces = []
    T, B = batch.rewards.shape
    for b in range(B):
        start = 0
        for stop in [*(np.flatnonzero(ends[:, b]) + 1), T]:
            if stop > start:
                last = after_cut[stop - 1, b] if ends[stop - 1, b] else batch.bootstrap[b]
                pieces.append((b, start, stop, np.float32(last)))
            start = stop
    return pieces


def spinningup_gae(batch: Batch):
    """Spinning Up's PPOBuffer.finish_path, once per episode piece (last_val = 0 after a termination)."""
    import scipy.signal

    def discount_cumsum(x, discount):
        return scipy.signal.lfilter([1], [1, float(-discount)], x[::-1], axis=0)[::-1]

    pieces = _episodes(batch)
    rewards, values = batch.rewards, batch.values

    def run():
        adv = np.empty_like(rewards)
        for b, start, stop, last_val in pieces:
            rews = np.append(rewards[start:stop, b], last_val)
            vals = np.append(values[start:stop, b], last_val)
            deltas = rews[:-1] + GAMMA * vals[1:] - vals[:-1]
            adv[start:stop, b] = discount_cumsum(deltas, GAMMA * LAM)
        return adv

    return run


def spinningup_reward_to_go(batch: Batch):
    import scipy.signal

    def discount_cumsum(x, discount):
        return scipy.signal.lfilter([1], [1, float(-discount)], x[::-1], axis=0)[::-1]

    pieces = _episodes(batch)
    rewards = batch.rewards

    def run():
        ret = np.empty_like(rewards)
        for b, start, stop, last_val in pieces:
            rews = np.append(rewards[start:stop, b], last_val)
            ret[start:stop, b] = discount_cumsum(rews, GAMMA)[:-1]
        return ret

    return run


def rlax_gae(batch: Batch):
    import jax
    import jax.numpy as jnp
    import rlax

    rewards = jnp.asarray(batch.folded_rewards())
    discounts = jnp.asarray(GAMMA * ~batch.ends(), dtype=jnp.float32)
    values = jnp.asarray(np.concatenate([batch.values, batch.bootstrap[None]]))
    fn = jax.jit(
        jax.vmap(rlax.truncated_generalized_advantage_estimation, in_axes=(1, 1, None, 1), out_axes=1)
    )
    fn(rewards, discounts, LAM, values).block_until_ready()  # compile
    return lambda: np.asarray(fn(rewards, discounts, LAM, values).block_until_ready())


def rlax_reward_to_go(batch: Batch):
    """rlax.lambda_returns with lambda 1 inside episodes and 0 at truncations, bootstrapping V_cut."""
    import jax
    import jax.numpy as jnp
    import rlax

    rewards = jnp.asarray(batch.rewards)
    discounts = jnp.asarray(GAMMA * ~batch.terminated, dtype=jnp.float32)
    next_values = jnp.asarray(batch.next_values())
    lambdas = jnp.asarray(~batch.truncated, dtype=jnp.float32)
    fn = jax.jit(jax.vmap(rlax.lambda_returns, in_axes=(1, 1, 1, 1), out_axes=1))
    fn(rewards, discounts, next_values, lambdas).block_until_ready()  # compile
    return lambda: np.asarray(fn(rewards, discounts, next_values, lambdas).block_until_ready())


def sb3_gae(batch: Batch):
    import torch
    from gymnasium import spaces
    from stable_baselines3.common.buffers import RolloutBuffer

    T, B = batch.rewards.shape
    box = spaces.Box(-1.0, 1.0, (1,), dtype=np.float32)
    buffer = RolloutBuffer(T, box, box, device="cpu", gae_lambda=LAM, gamma=GAMMA, n_envs=B)
    buffer.rewards[:] = batch.folded_rewards()
    buffer.values[:] = batch.values
    buffer.episode_starts[1:] = batch.ends()[:-1]
    last_values = torch.as_tensor(batch.bootstrap)
    dones = batch.ends()[-1]

    def run():
        buffer.compute_returns_and_advantage(last_values=last_values, dones=dones)
        return buffer.advantages

    return run


def _torch_bt1(array: np.ndarray):
    import torch

    return torch.as_tensor(np.ascontiguousarray(array.T)[..., None])  # (B, T, 1): time_dim=-2


def torchrl_gae(batch: Batch):
    import torch
    from torchrl.objectives.value.functional import generalized_advantage_estimate

    args = {
        "state_value": _torch_bt1(batch.values),
        "next_state_value": _torch_bt1(batch.next_values()),
        "reward": _torch_bt1(batch.rewards),
        "done": _torch_bt1(batch.ends()),
        "terminated": _torch_bt1(batch.terminated),
    }

    def run():
        with torch.no_grad():
            advantage, _ = generalized_advantage_estimate(GAMMA, LAM, time_dim=-2, **args)
        return advantage[..., 0].numpy().T

    return run


def torchrl_reward_to_go(batch: Batch):
    """torchrl reward2go has no bootstrap: V after each piece is folded into its last reward."""
    import torch
    from torchrl.objectives.value.functional import reward2go

    folded = batch.folded_rewards()
    last = ~batch.ends()[-1]
    folded[-1] += GAMMA * batch.bootstrap * last
    folded = folded.astype(np.float32)
    done = batch.ends().copy()
    done[-1] = True
    reward, done = _torch_bt1(folded), _torch_bt1(done)

    def run():
        with torch.no_grad():
            returns = reward2go(reward, done, GAMMA, time_dim=-2)
        return returns[..., 0].numpy().T

    return run


@dataclass
class Impl:
    name: str
    make: Callable[[Batch], Callable[[], np.ndarray | None]]
    needs: tuple[str, ...] = ()
    python_loop: bool = False  # timed on a prefix of the 1-D stream
    reference: bool = False  # not checked for agreement (does different work)


IMPLS = {
    "gae": [
        Impl("pgvar (numba)", pgvar_gae),
        Impl("memory proxy (numba, 3 reads + 2 writes)", memory_proxy, reference=True),
        Impl("NumPy reverse loop", numpy_loop_gae, python_loop=True),
        Impl("rlax truncated_generalized_advantage_estimation (jit)", rlax_gae, ("rlax", "jax")),
        Impl(
            "SB3 RolloutBuffer.compute_returns_and_advantage", sb3_gae, ("stable_baselines3", "torch"), True
        ),
        Impl("TorchRL generalized_advantage_estimate", torchrl_gae, ("torchrl", "torch"), True),
        Impl("Spinning Up discount_cumsum (lfilter) per episode", spinningup_gae, ("scipy",), True),
        Impl("CleanRL-style loop", cleanrl_gae, (), True),
    ],
    "reward_to_go": [
        Impl("pgvar (numba)", pgvar_reward_to_go),
        Impl("memory proxy (numba, 3 reads + 2 writes)", memory_proxy, reference=True),
        Impl("NumPy reverse loop", numpy_loop_reward_to_go, python_loop=True),
        Impl("rlax lambda_returns (jit)", rlax_reward_to_go, ("rlax", "jax")),
        Impl("TorchRL reward2go", torchrl_reward_to_go, ("torchrl", "torch"), True),
        Impl("Spinning Up discount_cumsum (lfilter) per episode", spinningup_reward_to_go, ("scipy",), True),
    ],
}


# --- timing ------------------------------------------------------------------------------------------


def available(modules: tuple[str, ...]) -> str | None:
    """None if every module imports, else why not."""
    for module in modules:
        try:
            __import__(module)
        except Exception as error:  # any import failure means "not in this environment"
            return f"{module}: {type(error).__name__}: {error}"
    return None


def measure(
    impls: list[Impl], batch: Batch, rounds: int, budget_s: float
) -> dict[str, tuple[float | None, float, int]]:
    """Interleaved rounds; returns name -> (max abs diff vs pgvar, median seconds, steps timed)."""
    runs, results = {}, {}
    for impl in impls:
        b = batch.prefix(SLOW_PREFIX) if impl.python_loop and batch.one_d else batch
        run = impl.make(b)
        output = run()  # warm-up (and numba / jax compile)
        ours = impls[0].make(b)()
        diff = None if impl.reference else float(np.max(np.abs(np.asarray(output, dtype=np.float64) - ours)))
        runs[impl.name] = (run, b.steps, diff)
    samples = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (run, _, _) in runs.items():
            if len(samples[name]) >= 3 and sum(samples[name]) > budget_s:
                continue
            run()  # untimed: the inputs are back in cache for everyone, as in a timeit loop
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    for name, (_, steps, diff) in runs.items():
        results[name] = (diff, statistics.median(samples[name]), steps)
    return results


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "machine": _cpu()}
    for dist in ("pgvar", "numpy", "numba", "scipy", "torch", "stable-baselines3", "torchrl", "jax", "rlax"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {platform.system()} {platform.machine()}"


def shape_label(shape: tuple[int, ...]) -> str:
    return f"{shape[0]:,} (1-D)" if len(shape) == 1 else f"{shape[0]} x {shape[1]}"


def one_thread() -> None:
    """Every implementation runs on one thread, as pgvar's kernels do: set before torch or jax load
    (idle OpenMP / XLA workers spinning between calls would also take the core from the next one timed)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--rounds", type=int, default=31, help="interleaved timing rounds (default 31)")
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per implementation per shape")
    args = parser.parse_args(argv)
    one_thread()

    info = versions()
    print("# Returns and GAE throughput, float32, gamma 0.99, lambda 0.95")
    print("; ".join(f"{k} {v}" for k, v in info.items()))
    report = {"versions": info, "shapes": [list(s) for s in SHAPES], "results": [], "skipped": {}}
    for task, impls in IMPLS.items():
        present = []
        for impl in impls:
            why = available(impl.needs)
            if why is None:
                present.append(impl)
            else:
                report["skipped"][f"{task}: {impl.name}"] = why
                print(f"skipping {impl.name}: {why}", file=sys.stderr)
        table = {impl.name: {} for impl in present}
        for shape in SHAPES:
            batch = make_batch(shape)
            for name, (diff, seconds, steps) in measure(present, batch, args.rounds, args.budget).items():
                rate = steps / seconds / 1e6
                table[name][shape] = (rate, diff, steps)
                report["results"].append(
                    {
                        "task": task,
                        "implementation": name,
                        "shape": list(shape),
                        "msteps_per_s": rate,
                        "median_s": seconds,
                        "steps_timed": steps,
                        "max_abs_diff_vs_pgvar": diff,
                    }
                )
        print_table(task, table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


def print_table(task: str, table: dict) -> None:
    ours = table["pgvar (numba)"]
    print(f"\n## {task}: Msteps/s (pgvar's speed-up over each in brackets)\n")
    print("| implementation | " + " | ".join(shape_label(s) for s in SHAPES) + " | max abs diff vs pgvar |")
    print("|---|" + "---:|" * len(SHAPES) + "---:|")
    for name, cells in table.items():
        row = []
        for shape in SHAPES:
            rate, _, steps = cells[shape]
            mark = "*" if steps < ours[shape][2] else ""
            ratio = "" if name == "pgvar (numba)" else f" ({ours[shape][0] / rate:.2g}x)"
            row.append(f"{rate:,.1f}{mark}{ratio}" if rate < 100 else f"{rate:,.0f}{mark}{ratio}")
        diffs = [cells[s][1] for s in SHAPES if cells[s][1] is not None]
        worst = "n/a" if not diffs or name == "pgvar (numba)" else f"{max(diffs):.1e}"
        print(f"| {name} | " + " | ".join(row) + f" | {worst} |")


if __name__ == "__main__":
    raise SystemExit(main())
