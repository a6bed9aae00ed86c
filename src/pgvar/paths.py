"""The state-action paths of an episode under a fixed policy: counted, and listed with their exact
probabilities. The exact engine enumerates them to compute moments with no recursion (the
independent check of the recursion), and the path sampler draws whole episodes from them.

A flow is pi(a|s) P(s'|s, a) per step, shaped (T, S, A, S), zero in terminal states: an episode stops
there. A path that ends before T stays in its terminal state, with ``alive`` False.
"""

from __future__ import annotations

import numpy as np


def count_flow_paths(initial_s: np.ndarray, flow_tsas, terminal_s: np.ndarray, limit: int) -> int:
    """Paths with positive probability through the flow pi(a|s) P(s'|s, a) (zero in terminal
    states), counted up to ``limit``: a larger count returns ``limit + 1``. ``flow_tsas`` is a (T, S,
    A, S) array or any sequence of T (S, A, S) arrays (read one step at a time, so it can be lazy)."""
    count_s = (initial_s > 0).astype(float)
    total = 0.0
    for t in range(len(flow_tsas)):
        branches_sp = (flow_tsas[t] > 0).sum(axis=1)
        total += (count_s * terminal_s).sum()
        count_s = count_s @ branches_sp
        if total + count_s.sum() > limit:
            return limit + 1
    return int(total + count_s.sum())


def enumerate_flow_paths(initial_s: np.ndarray, flow_tsas: np.ndarray, terminal_s: np.ndarray):
    """Every path with positive probability through the (T, S, A, S) flow (see
    :func:`count_flow_paths`), padded to T steps: a path that ended stays in its terminal state with
    ``alive`` false.

    Returns (prob_b, states_tb, actions_tb, next_tb, alive_tb)."""
    start = np.flatnonzero(initial_s > 0)
    prob = initial_s[start]
    states = [start]
    actions, nexts, alive = [], [], []
    current = start
    running = ~terminal_s[start]
    for t in range(len(flow_tsas)):
        flow = flow_tsas[t]
        b_idx, a_idx, p_idx = [], [], []
        for b in range(current.size):
            if running[b]:
                a_s, p_s = np.nonzero(flow[current[b]])
            else:
                a_s, p_s = np.array([0]), np.array([current[b]])
            b_idx.append(np.full(a_s.size, b))
            a_idx.append(a_s)
            p_idx.append(p_s)
        b_idx, a_idx, p_idx = map(np.concatenate, (b_idx, a_idx, p_idx))
        step_prob = np.where(running[b_idx], flow[current[b_idx], a_idx, p_idx], 1.0)
        prob = prob[b_idx] * step_prob
        states = [s[b_idx] for s in states]
        actions = [a[b_idx] for a in actions] + [a_idx]
        nexts = [n[b_idx] for n in nexts] + [p_idx]
        alive = [r[b_idx] for r in alive] + [running[b_idx]]
        running = running[b_idx] & ~terminal_s[p_idx]
        current = p_idx
        states.append(p_idx)
    return prob, np.array(states[:-1]), np.array(actions), np.array(nexts), np.array(alive)
