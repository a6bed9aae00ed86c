"""A tabular Gymnasium environment's model as a :class:`~pgvar.mdp.TabularMDP` (``--mdp gym:ID``).

Toy-text environments (FrozenLake, CliffWalking, Taxi) publish their dynamics as
``env.unwrapped.P``: a dict state -> action -> list of ``(probability, next_state, reward,
terminated)``. :func:`from_gym` reads it, with the start distribution (``initial_state_distrib``,
else ``isd``, else ``start_state_index``) and the time limit (``env.spec.max_episode_steps``), so the
exact engine and the sampler run on the same MDP as the environment::

    from_gym("FrozenLake-v1,map_name=8x8,is_slippery=false")

How the model becomes pgvar's:

- outcomes that list the same next state twice are merged: their probabilities add, the reward is
  the probability-weighted mean, and a spread of rewards becomes Gaussian reward noise with the same
  variance (the exact engine uses the noise's variance alone). pgvar's noise has one variance per
  (state, action); a model whose spread differs between next states of one (state, action) is refused.
- a state is terminal when every transition into it (from a state an episode can reach) is flagged
  ``terminated``; terminal states become absorbing. A state entered both ways is refused: in pgvar,
  being terminal is a property of the state.
- states an episode cannot reach keep their rows as ``P`` gives them (Taxi lists positions with the
  passenger already delivered; CliffWalking lists the cliff cells), so state indices stay the
  environment's observations.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np

from pgvar import budget
from pgvar.errors import MDPError, SpecError
from pgvar.gym.envspec import env_horizon, make_env, parse_env
from pgvar.mdp import TabularMDP

#: Action names of the toy-text environments, by the class of ``env.unwrapped`` (from their docs).
ACTION_NAMES = {
    "FrozenLakeEnv": ("left", "down", "right", "up"),
    "CliffWalkingEnv": ("up", "right", "down", "left"),
    "TaxiEnv": ("south", "north", "east", "west", "pickup", "dropoff"),
}
_TAXI_PLACES = ("R", "G", "Y", "B", "taxi")  # Taxi's pickup/drop-off letters; index 4: in the taxi
_NOISE_RTOL = 1e-9  # reward spreads below this (relative to the reward) are rounding, not noise


# -- the environment -------------------------------------------------------------------------
def _spaces(env: gymnasium.Env, label: str) -> tuple[int, int]:
    """(S, A) of Discrete observation and action spaces that start at 0."""
    sizes = []
    for which, space in (("observation", env.observation_space), ("action", env.action_space)):
        if not isinstance(space, gymnasium.spaces.Discrete):
            raise MDPError(f"{label}: the {which} space is {space}, pgvar needs Discrete spaces")
        if int(space.start) != 0:
            raise MDPError(f"{label}: the {which} space starts at {int(space.start)}, pgvar needs 0")
        sizes.append(int(space.n))
    return sizes[0], sizes[1]


def _initial_s(unwrapped: Any, n_states: int, label: str) -> np.ndarray:
    """The start distribution: ``initial_state_distrib`` (FrozenLake, Taxi, CliffWalking 1.x), the
    older ``isd``, else a one-hot ``start_state_index`` (CliffWalking 0.x)."""
    for attribute in ("initial_state_distrib", "isd"):
        found = getattr(unwrapped, attribute, None)
        if found is not None:
            initial_s = np.asarray(found, dtype=float)
            if initial_s.shape != (n_states,):
                raise MDPError(
                    f"{label}: env.unwrapped.{attribute} has shape {initial_s.shape}, not ({n_states},)"
                )
            return initial_s
    start = getattr(unwrapped, "start_state_index", None)
    if start is not None:
        return np.eye(n_states)[int(start)]
    raise MDPError(
        f"{label}: no start distribution found (env.unwrapped has no initial_state_distrib, isd or "
        "start_state_index)"
    )


# -- the model: P flattened to one row per listed outcome ------------------------------------
def flatten_model(
    model: Mapping, n_states: int, n_actions: int, label: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``P`` as flat arrays over its listed outcomes, sorted by state then action: (state, action,
    next state, probability, reward, terminated), each (I,). Loops over P's entries only (S * A * k)."""
    rows: list[tuple[float, ...]] = []
    for s in range(n_states):
        by_action = model.get(s)
        if not isinstance(by_action, Mapping):
            raise MDPError(f"{label}: env.unwrapped.P has no entry for state {s}")
        for a in range(n_actions):
            outcomes = by_action.get(a)
            if not outcomes:
                raise MDPError(f"{label}: env.unwrapped.P[{s}] has no outcomes for action {a}")
            try:
                rows += [(s, a, o[1], o[0], o[2], bool(o[3])) for o in outcomes]
            except (TypeError, IndexError, KeyError):
                raise MDPError(
                    f"{label}: env.unwrapped.P[{s}][{a}] is not a list of (probability, next_state, reward, "
                    "terminated)"
                ) from None
    try:
        table_ix = np.array(rows, dtype=float)
    except (TypeError, ValueError):
        raise MDPError(f"{label}: env.unwrapped.P holds entries that are not numbers") from None
    state_i, action_i, next_raw_i, prob_i, reward_i, term_i = table_ix.T
    bad = ~np.isfinite(table_ix).all(axis=1) | (prob_i < 0)
    bad |= (next_raw_i != np.round(next_raw_i)) | (next_raw_i < 0) | (next_raw_i >= n_states)
    if bad.any():
        s, a, nxt, p, r, _ = table_ix[np.argmax(bad)]
        raise MDPError(
            f"{label}: env.unwrapped.P[{int(s)}][{int(a)}] lists next state {nxt:g} with probability {p:g} "
            f"and reward {r:g}; need a state 0..{n_states - 1}, a probability >= 0 and a finite reward"
        )
    return (
        state_i.astype(np.int64),
        action_i.astype(np.int64),
        next_raw_i.astype(np.int64),
        prob_i,
        reward_i,
        term_i.astype(bool),
    )


def terminal_states(
    state_i: np.ndarray,
    action_i: np.ndarray,
    next_i: np.ndarray,
    prob_i: np.ndarray,
    term_i: np.ndarray,
    initial_s: np.ndarray,
    label: str,
) -> np.ndarray:
    """(S,) bool: the states entered only by ``terminated`` outcomes, found by a breadth-first walk
    from the start over outcomes of positive probability (an episode stops where it enters one).
    States no episode reaches are not terminal, whatever ``P`` lists for them."""
    n_states = initial_s.shape[0]
    first_ix = np.searchsorted(state_i, np.arange(n_states + 1))  # rows are sorted by state
    entered = np.full(n_states, -1, dtype=np.int8)  # -1 not yet, 0 going on, 1 terminated
    source: dict[int, str] = {}
    queue = deque(int(s) for s in np.flatnonzero(initial_s > 0))
    for s in queue:
        entered[s], source[s] = 0, "the start"
    while queue:
        s = queue.popleft()
        for i in range(first_ix[s], first_ix[s + 1]):
            if prob_i[i] <= 0:
                continue
            nxt, ends = int(next_i[i]), int(term_i[i])
            here = f"state {s}, action {action_i[i]}"
            if entered[nxt] < 0:
                entered[nxt], source[nxt] = ends, here
                if not ends:
                    queue.append(nxt)
            elif entered[nxt] != ends:
                with_flag, without = (here, source[nxt]) if ends else (source[nxt], here)
                raise MDPError(
                    f"{label}: state {nxt} is entered with terminated=True (from {with_flag}) and without it "
                    f"(from {without}); pgvar's terminal states end every episode that enters them"
                )
    return entered == 1


def dense_tables(
    state_i: np.ndarray,
    action_i: np.ndarray,
    next_i: np.ndarray,
    prob_i: np.ndarray,
    reward_i: np.ndarray,
    n_states: int,
    n_actions: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(transitions_sas, rewards_sas, spread_sas): outcomes listing the same (s, a, s') merged, their
    probabilities summed, the probability-weighted mean reward and the variance of the reward about it."""
    index = (state_i, action_i, next_i)
    transitions_sas = np.zeros((n_states, n_actions, n_states))
    weighted_sas = np.zeros_like(transitions_sas)
    spread_sas = np.zeros_like(transitions_sas)
    np.add.at(transitions_sas, index, prob_i)
    np.add.at(weighted_sas, index, prob_i * reward_i)
    listed_sas = transitions_sas > 0
    rewards_sas = np.divide(weighted_sas, transitions_sas, out=np.zeros_like(weighted_sas), where=listed_sas)
    np.add.at(spread_sas, index, prob_i * (reward_i - rewards_sas[index]) ** 2)
    spread_sas = np.divide(spread_sas, transitions_sas, out=np.zeros_like(spread_sas), where=listed_sas)
    return transitions_sas, rewards_sas, spread_sas


def noise_std_sa(
    transitions_sas: np.ndarray, rewards_sas: np.ndarray, spread_sas: np.ndarray, label: str
) -> np.ndarray | None:
    """(S, A) std of the reward noise, None without noise. pgvar's noise has one variance per (s, a),
    so every next state of a noisy (s, a) must have the same spread."""
    noisy_sas = spread_sas > (_NOISE_RTOL**2) * (1.0 + rewards_sas**2)
    if not noisy_sas.any():
        return None
    listed_sas = transitions_sas > 0
    high_sa = np.where(listed_sas, spread_sas, -np.inf).max(axis=2)
    low_sa = np.where(listed_sas, spread_sas, np.inf).min(axis=2)
    uneven_sa = noisy_sas.any(axis=2) & (high_sa - low_sa > 1e-6 * (1.0 + high_sa))
    if uneven_sa.any():
        s, a = (int(i) for i in np.argwhere(uneven_sa)[0])
        raise MDPError(
            f"{label}: state {s}, action {a}: outcomes with the same next state have different rewards, by "
            "a spread that differs between next states; pgvar's reward noise has one variance per (state, "
            "action)"
        )
    return np.sqrt(np.where(noisy_sas.any(axis=2), np.maximum(high_sa, 0.0), 0.0))


# -- names -----------------------------------------------------------------------------------
def _state_names(unwrapped: Any, n_states: int) -> tuple[str, ...] | None:
    """Grid positions "(row,col)" where the environment says its layout (FrozenLake adds its tile, Taxi
    where the passenger is and where to: "(0,0) R→G")."""
    kind = type(unwrapped).__name__
    try:
        if kind == "FrozenLakeEnv":
            desc = np.asarray(unwrapped.desc)
            names = [f"({r},{c}) {tile.decode()}" for (r, c), tile in np.ndenumerate(desc)]
        elif kind == "CliffWalkingEnv":
            rows, cols = unwrapped.shape
            names = [f"({r},{c})" for r in range(rows) for c in range(cols)]
        elif kind == "TaxiEnv":
            decoded = (tuple(unwrapped.decode(s)) for s in range(n_states))
            names = [f"({r},{c}) {_TAXI_PLACES[p]}→{_TAXI_PLACES[d]}" for r, c, p, d in decoded]
        else:
            return None
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    return tuple(names) if len(names) == n_states and len(set(names)) == n_states else None


def _action_names(unwrapped: Any, n_actions: int) -> tuple[str, ...] | None:
    names = ACTION_NAMES.get(type(unwrapped).__name__)
    return names if names is not None and len(names) == n_actions else None


# -- the whole -------------------------------------------------------------------------------
def from_gym(text: str) -> TabularMDP:
    """The MDP of a tabular Gymnasium environment, from the text after ``gym:``:
    ``ID[,key=value...]``, e.g. ``FrozenLake-v1,map_name=8x8,is_slippery=false``.

    Reads ``env.unwrapped.P`` (state -> action -> [(probability, next_state, reward, terminated)]),
    ``env.unwrapped.initial_state_distrib`` (else ``isd`` or ``start_state_index``) and
    ``env.spec.max_episode_steps``. ``horizon=`` and ``gamma=`` are pgvar's (horizon defaults to the
    time limit, gamma to 1); other options go to ``gymnasium.make`` as true/false, ints, floats or text.
    """
    spec = parse_env(text)
    env_id, label = spec.id, f"gym:{spec.text}"
    env = make_env(spec)
    try:
        unwrapped = env.unwrapped
        model = getattr(unwrapped, "P", None)
        if not isinstance(model, Mapping):
            raise SpecError(
                f"{label} exposes no tabular model (env.unwrapped.P); use --env for neural policies"
            )
        n_states, n_actions = _spaces(env, label)
        horizon = env_horizon(spec)
        horizon_source = "the time limit" if spec.horizon is None else "given"
        initial_s = _initial_s(unwrapped, n_states, label)
        budget.check_table(label, float(n_states) * n_actions * n_states)
        state_i, action_i, next_i, prob_i, reward_i, term_i = flatten_model(model, n_states, n_actions, label)
        state_names = _state_names(unwrapped, n_states)
        action_names = _action_names(unwrapped, n_actions)
    finally:
        env.close()
    terminal_s = terminal_states(state_i, action_i, next_i, prob_i, term_i, initial_s, label)
    transitions_sas, rewards_sas, spread_sas = dense_tables(
        state_i, action_i, next_i, prob_i, reward_i, n_states, n_actions
    )
    # terminal states are absorbing and pay nothing: what P lists for them is never played
    terminal_ix = np.flatnonzero(terminal_s)
    transitions_sas[terminal_ix] = 0.0
    transitions_sas[terminal_ix, :, terminal_ix] = 1.0
    rewards_sas[terminal_s] = 0.0
    spread_sas[terminal_s] = 0.0
    std_sa = noise_std_sa(transitions_sas, rewards_sas, spread_sas, label)
    noise = "" if std_sa is None else "; rewards that vary for one next state are Gaussian noise"
    try:
        return TabularMDP(
            initial_s=initial_s,
            transitions=transitions_sas,
            rewards=rewards_sas,
            gamma=spec.gamma,
            horizon=horizon,
            terminal_s=terminal_s,
            reward_noise="none" if std_sa is None else "gaussian",
            noise_scale=0.0 if std_sa is None else std_sa,
            name=label,
            description=f"Gymnasium {env_id} read from env.unwrapped.P: {n_states} states, {n_actions} "
            f"actions, {int(terminal_s.sum())} terminal; horizon {horizon} ({horizon_source}){noise}.",
            state_names=state_names,
            action_names=action_names,
        )
    except MDPError as err:
        raise MDPError(f"{label}: {err}") from None
