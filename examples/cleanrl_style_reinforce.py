"""REINFORCE with reward-to-go on CartPole-v1, in one file (CleanRL style), watched by pgvar's
GradientMonitor: each update prints the mean return, tr(Sigma) (the variance of one episode's
gradient), the gradient noise scale B_simple (the batch size at which noise equals signal) and the
expected cosine of this update's gradient to the true one.

    .venv/bin/python examples/cleanrl_style_reinforce.py                 # 30 updates x 16 episodes
    .venv/bin/python examples/cleanrl_style_reinforce.py --updates 5     # shorter
    .venv/bin/python examples/cleanrl_style_reinforce.py --two-batch 4   # from two batch sizes, 4 and 16
    .venv/bin/python examples/cleanrl_style_reinforce.py --csv noise.csv # every record, for pandas

Needs torch and gymnasium (pip install "pgvar[gym]"); see docs/monitor.md.
"""

from __future__ import annotations

import argparse
import csv
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from pgvar.torch.monitor import GradientMonitor, MonitorRecord


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="CartPole-v1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--updates", type=int, default=30, help="policy updates")
    parser.add_argument("--episodes", type=int, default=16, help="episodes per update (B)")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--ema", type=float, default=0.9, help="smoothing of the monitor's averages")
    parser.add_argument(
        "--two-batch",
        type=int,
        default=0,
        metavar="SMALL",
        help="measure from the gradients of the first SMALL episodes and of all, not per episode",
    )
    parser.add_argument("--csv", default="", help="write every monitor record to this CSV file")
    return parser.parse_args()


class Agent(nn.Module):
    """A tanh MLP from the observation to the action logits."""

    def __init__(self, observations: int, actions: int, hidden: int) -> None:
        super().__init__()
        self.actor = nn.Sequential(
            nn.Linear(observations, hidden), nn.Tanh(),
            nn.Linear(hidden, hidden), nn.Tanh(),
            nn.Linear(hidden, actions),
        )  # fmt: skip

    def distribution(self, observations: torch.Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.actor(observations))


def rewards_to_go(rewards_t: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = r_t + gamma r_{t+1} + ...: the weight of each step's log-probability."""
    returns_t = np.zeros(len(rewards_t))
    running = 0.0
    for t in reversed(range(len(rewards_t))):
        running = rewards_t[t] + gamma * running
        returns_t[t] = running
    return returns_t


def collect(env: gym.Env, agent: Agent, episodes: int, gamma: float):
    """Play ``episodes`` episodes; every step in one flat list (suffix _i), with its episode's index."""
    observations, actions, weights, episode_i, returns_b = [], [], [], [], []
    for b in range(episodes):
        observation, _ = env.reset()
        rewards, done = [], False
        while not done:
            with torch.no_grad():  # acting needs no graph; the update recomputes log pi below
                action = agent.distribution(torch.as_tensor(observation)).sample().item()
            observations.append(observation)
            actions.append(action)
            observation, reward, terminated, truncated, _ = env.step(action)
            rewards.append(float(reward))
            done = terminated or truncated
        weights.extend(rewards_to_go(np.array(rewards), gamma))
        episode_i.extend([b] * len(rewards))
        returns_b.append(sum(rewards))
    return (
        torch.as_tensor(np.array(observations)),
        torch.as_tensor(actions),
        torch.as_tensor(np.array(weights), dtype=torch.float32),
        torch.as_tensor(episode_i),
        float(np.mean(returns_b)),
    )


def show(value: float | None, width: int, form: str) -> str:
    """A reading, or "-" where there is none (the averaged |G|^2 is not yet positive)."""
    return ("-" if value is None else format(value, form)).rjust(width)


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    env = gym.make(args.env_id)
    env.reset(seed=args.seed)
    agent = Agent(env.observation_space.shape[0], env.action_space.n, args.hidden)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate)
    monitor = GradientMonitor(agent, ema=args.ema)
    params = list(agent.parameters())
    mode = f"two batch sizes, {args.two_batch} and {args.episodes}" if args.two_batch else "per episode"
    print(f"{args.env_id}: REINFORCE, {args.episodes} episodes per update, gradient noise {mode}")
    header = ("update", 6), ("return", 7), ("tr Sigma", 9), ("|G|^2", 9), ("B_simple", 9), ("cos(B)", 7)
    print(" ".join(name.rjust(width) for name, width in header), "N(0.9)".rjust(8))
    started, monitoring = time.perf_counter(), 0.0

    for update in range(1, args.updates + 1):
        observations_i, actions_i, weights_i, episode_i, mean_return = collect(
            env, agent, args.episodes, args.gamma
        )
        # one forward over every step; each episode's loss is the sum over its own steps
        log_pi_i = agent.distribution(observations_i).log_prob(actions_i)
        losses_b = torch.zeros(args.episodes).index_add(0, episode_i, -(weights_i * log_pi_i))

        tick = time.perf_counter()
        if args.two_batch:
            small_grads = torch.autograd.grad(losses_b[: args.two_batch].mean(), params, retain_graph=True)
        else:
            record: MonitorRecord = monitor.update(losses_b)  # before our own backward: it keeps the graph
        monitoring += time.perf_counter() - tick

        optimizer.zero_grad()
        losses_b.mean().backward()
        if args.two_batch:  # the big batch's gradient is the one we step with anyway
            tick = time.perf_counter()
            record = monitor.update_two_batches(
                small_grads, [p.grad for p in params], args.two_batch, args.episodes
            )
            monitoring += time.perf_counter() - tick
        optimizer.step()

        print(
            f"{update:>6} {mean_return:>7.1f} {record.trace:>9.3g} {record.squared_norm:>9.3g} "
            f"{show(record.noise_scale, 9, '.1f')} {show(record.expected_cosine, 7, '.2f')} "
            f"{show(record.batch_for_cosine_09, 8, '.0f')}"
        )

    total = time.perf_counter() - started
    print(f"{total:.1f} s in all, {monitoring:.2f} s in the monitor")
    print("tr Sigma, |G|^2: this update; B_simple, cos(B), N(0.9): from their moving averages")
    if args.csv:
        rows = monitor.to_rows()
        with open(args.csv, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {len(rows)} records to {args.csv}")
    env.close()


if __name__ == "__main__":
    main()
