"""Small shared pieces for the tests: random MDPs (finite differences: pgvar.claims), the CLI run
in-process as a user runs it, and strict JSON."""

from __future__ import annotations

import json
import sys

import numpy as np

from pgvar.mdp import TabularMDP


def random_mdp(
    seed: int,
    states: int = 3,
    actions: int = 2,
    horizon: int | None = 3,
    gamma: float = 0.9,
    time_dependent: bool = False,
    sas_rewards: bool = False,
    noise: str = "gaussian",
    terminal: bool = False,
) -> TabularMDP:
    """A small random MDP with every feature switchable (independent of pgvar.envs.random_mdp)."""
    rng = np.random.default_rng(seed)
    shape = (horizon, states, actions, states) if time_dependent else (states, actions, states)
    transitions = rng.dirichlet(np.ones(states), size=shape[:-1])
    terminal_s = np.zeros(states, dtype=bool)
    if terminal:
        terminal_s[-1] = True
        transitions[..., -1, :, :] = 0.0
        transitions[..., -1, :, -1] = 1.0
    rewards = rng.normal(size=(states, actions, states) if sas_rewards else (states, actions))
    return TabularMDP(
        initial_s=_start(rng, terminal_s),
        transitions=transitions,
        rewards=rewards,
        gamma=gamma,
        horizon=horizon,
        terminal_s=terminal_s,
        reward_noise=noise,
        noise_scale=0.7 if noise != "none" else 0.0,
        observation_s=np.where(terminal_s, -1, rng.integers(0, max(states - 1, 1), size=states)),
        name=f"test-random-{seed}",
    )


def _start(rng, terminal_s):
    start = rng.dirichlet(np.ones(terminal_s.size)) * ~terminal_s
    return start / start.sum()


def run(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``pgvar ARGS`` in-process through ``pgvar.cli.main`` (its one-line errors and exit codes);
    return (exit code, stdout, stderr)."""
    from pgvar import cli

    old = sys.argv
    sys.argv = ["pgvar", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def strict_json(text: str) -> dict:
    """json.loads that refuses NaN and Infinity, which are not JSON (RFC 8259)."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)
