"""Your own tabular MDP in a YAML or JSON file: read, check, write and describe it.

The format is documented in ``docs/mdp-format.md``; ``examples/two-rooms.yaml`` is a commented
worked example. In short, a file is a mapping with the keys

    name, description          text (name defaults to the file name)
    states, actions            a count, or a list of names (required)
    initial                    a state, a list of S probabilities, or a mapping state -> probability
    transitions                dense (S, A, S) / (H, S, A, S) nested lists, or the sparse form
                               state -> action -> next state | {next state: probability} | [S probs]
                               (a list of sparse mappings gives per-step transitions)
    rewards                    a number, dense (S, A) / (S, A, S) lists, or the sparse form
                               state -> number | {action -> number | {next state: number}}
    noise                      {kind: none | uniform | gaussian, scale: number or (S, A) table}
    gamma, horizon             discount (default 1) and horizon (default null = unbounded)
    terminal                   list of states where episodes stop
    observations               list of S ints, -1 only for terminal states (default: identity)
    per_step_logits            true for logits per (step, observation)

Every problem is reported as one :class:`~pgvar.errors.MDPError` line that starts with the file
name and the field, e.g. ``maze.yaml: transitions.hall.left: probabilities sum to 0.9, must sum to 1``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pgvar import budget, envs
from pgvar.errors import MDPError
from pgvar.mdp import NOISE_KINDS, TabularMDP

SUFFIXES = (".yaml", ".yml", ".json")
KNOWN_KEYS = (
    "name",
    "description",
    "states",
    "actions",
    "initial",
    "transitions",
    "rewards",
    "noise",
    "gamma",
    "horizon",
    "terminal",
    "observations",
    "per_step_logits",
)
REQUIRED_KEYS = ("states", "actions", "initial", "transitions", "rewards")
NOISE_KEYS = ("kind", "scale")
WILDCARD = "*"
#: Largest transition table (entries S * A * S, times H when per step) a file may describe.
_PROB_TOL = 1e-6

# -- YAML dialect --------------------------------------------------------------------------------
# PyYAML follows YAML 1.1, where ``1e-3`` is a string; hand-written files mean a number, so both the
# loader and the dumper use the YAML 1.2 float syntax.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """Safe YAML loader with YAML 1.2 floats that rejects duplicate keys."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable key: the base class reports it
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """Safe YAML dumper that quotes any string the loader would read as a float."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


# -- small helpers -------------------------------------------------------------------------------
def _fail(message: str) -> MDPError:
    return MDPError(" ".join(message.split("\n")))


def _show(value: Any) -> str:
    """A short description of a value for an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _key_path(field: str, *keys: Any) -> str:
    parts = [field]
    for key in keys:
        text = str(key)
        parts.append(text if re.fullmatch(r"[\w*+-]+", text) else json.dumps(text))
    return ".".join(parts)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


_FRACTION_RE = re.compile(
    r"^\s*([+-]?\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*/\s*(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)\s*$"
)


def _number(value: Any, where: str) -> float:
    """A finite float from an int, a float or a fraction string such as ``"1/3"``."""
    if isinstance(value, bool) or value is None:
        raise _fail(f"{where}: expected a number, got {_show(value)}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            number = float(value)
        except OverflowError:
            raise _fail(f"{where}: {_show(value)} is too large") from None
    elif isinstance(value, str) and (match := _FRACTION_RE.match(value)):
        numerator, denominator = float(match.group(1)), float(match.group(2))
        if denominator == 0:
            raise _fail(f"{where}: {value!r} divides by zero")
        number = numerator / denominator
    else:
        raise _fail(f"{where}: expected a number, got {_show(value)}")
    if not math.isfinite(number):
        raise _fail(f"{where}: {number} is not allowed, must be a finite number")
    return number


def _depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list) and value:
        depth += 1
        value = value[0]
    return depth + (1 if isinstance(value, list) else 0)


def _dense(value: Any, field: str, shape: tuple[int, ...], labels: tuple[str, ...]) -> np.ndarray:
    """Nested lists of exactly ``shape`` -> float array; errors name the index path."""
    out = np.empty(shape)

    def walk(item: Any, index: tuple[int, ...]) -> None:
        where = field + "".join(f"[{i}]" for i in index)
        level = len(index)
        if level == len(shape):
            out[index] = _number(item, where)
            return
        if not isinstance(item, list):
            raise _fail(
                f"{where}: expected a list of {shape[level]} entries (one per {labels[level]}), "
                f"got {_show(item)}"
            )
        if len(item) != shape[level]:
            raise _fail(
                f"{where}: expected {shape[level]} entries (one per {labels[level]}), got {len(item)}"
            )
        for i, sub in enumerate(item):
            walk(sub, (*index, i))

    walk(value, ())
    return out


class _Space:
    """The states or the actions of a file: a count and optional names."""

    def __init__(self, value: Any, field: str, noun: str) -> None:
        self.field, self.noun = field, noun
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                raise _fail(f"{field}: must be at least 1, got {value}")
            self.count, self.names = value, None
        elif isinstance(value, list) and value:
            for i, name in enumerate(value):
                if not isinstance(name, str) or not name.strip():
                    raise _fail(f"{field}[{i}]: a {noun} name must be a non-empty string, got {_show(name)}")
                if name == WILDCARD:
                    raise _fail(f"{field}[{i}]: {WILDCARD!r} is reserved (it means 'every {noun}')")
                if name in value[:i]:
                    raise _fail(f"{field}[{i}]: {noun} name {name!r} is used twice")
            self.count, self.names = len(value), tuple(value)
        else:
            raise _fail(
                f"{field}: must be a positive number of {noun}s or a non-empty list of {noun} names, "
                f"got {_show(value)}"
            )

    def label(self, index: int) -> str:
        return self.names[index] if self.names else str(index)

    def ref(self, value: Any, where: str) -> int:
        """The index of a state/action written as a name or an index."""
        if isinstance(value, str) and self.names and value in self.names:
            return self.names.index(value)
        index = None
        if isinstance(value, int) and not isinstance(value, bool):
            index = value
        elif isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            index = int(value)
        if index is not None:
            if not 0 <= index < self.count:
                raise _fail(f"{where}: {self.noun} index {index} is out of range 0..{self.count - 1}")
            return index
        if isinstance(value, str):
            if self.names:
                known = ", ".join(repr(n) for n in self.names)
                raise _fail(
                    f"{where}: unknown {self.noun} {value!r}{_suggest(value, self.names)} "
                    f"({self.field}: {known})"
                )
            raise _fail(
                f"{where}: unknown {self.noun} {value!r}; {self.field} has no names, "
                f"use an index 0..{self.count - 1} or give {self.field} as a list of names"
            )
        raise _fail(f"{where}: expected a {self.noun} name or index, got {_show(value)}")

    def keys(self, mapping: dict, where: str) -> list[tuple[Any, list[int]]]:
        """(key, indices) for each key of a sparse mapping, the wildcard first, duplicates refused."""
        out, seen = [], {}
        for key in sorted(mapping, key=lambda k: k != WILDCARD):
            if key == WILDCARD:
                out.append((key, list(range(self.count))))
                continue
            index = self.ref(key, where)
            if index in seen:
                raise _fail(
                    f"{where}: {self.noun} {self.label(index)!r} is given twice "
                    f"(as {_show(seen[index])} and {_show(key)})"
                )
            seen[index] = key
            out.append((key, [index]))
        return out


def _check_rows(table: np.ndarray, field: str, states: _Space, actions: _Space, sparse: bool) -> None:
    """Each (s, a) row of an (S, A, S) table: probabilities >= 0 that sum to one."""
    negative = table < 0
    if negative.any():
        s, a, s2 = (int(i) for i in np.argwhere(negative)[0])
        where = (
            _key_path(field, states.label(s), actions.label(a), states.label(s2))
            if sparse
            else f"{field}[{s}][{a}][{s2}]"
        )
        raise _fail(f"{where}: probability {table[s, a, s2]:g} is negative")
    sums = table.sum(axis=-1)
    off = np.abs(sums - 1.0) > _PROB_TOL
    if off.any():
        s, a = (int(i) for i in np.argwhere(off)[0])
        where = (
            _key_path(field, states.label(s), actions.label(a))
            if sparse
            else f"{field}[{s}][{a}] (state {states.label(s)!r}, action {actions.label(a)!r})"
        )
        raise _fail(f"{where}: probabilities sum to {sums[s, a]:.6g}, must sum to 1")


# -- reading -------------------------------------------------------------------------------------
def _parse_initial(value: Any, states: _Space) -> np.ndarray:
    S = states.count
    if isinstance(value, list):
        initial = _dense(value, "initial", (S,), ("state",))
        where = [f"initial[{i}]" for i in range(S)]
    elif isinstance(value, dict):
        initial = np.zeros(S)
        where = [f"initial.{states.label(i)}" for i in range(S)]
        for key, indices in states.keys(value, "initial"):
            if key == WILDCARD:
                raise _fail(f"initial: {WILDCARD!r} is not allowed here; list the start states")
            index = indices[0]
            initial[index] = _number(value[key], _key_path("initial", key))
            where[index] = _key_path("initial", key)
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        initial = np.zeros(S)
        initial[states.ref(value, "initial")] = 1.0
        return initial
    else:
        raise _fail(
            "initial: must be a state (name or index), a list of S probabilities or a mapping "
            f"state -> probability, got {_show(value)}"
        )
    if (initial < 0).any():
        i = int(np.argmax(initial < 0))
        raise _fail(f"{where[i]}: probability {initial[i]:g} is negative")
    if abs(initial.sum() - 1.0) > _PROB_TOL:
        raise _fail(f"initial: probabilities sum to {initial.sum():.6g}, must sum to 1")
    return initial


def _parse_row(value: Any, where: str, states: _Space) -> np.ndarray:
    """One next-state distribution: a state, {state: probability} or a list of S probabilities."""
    row = np.zeros(states.count)
    if isinstance(value, dict):
        for key, indices in states.keys(value, where):
            if key == WILDCARD:
                raise _fail(f"{where}: {WILDCARD!r} is not allowed as a next state")
            index = indices[0]
            row[index] = _number(value[key], _key_path(where, key))
    elif isinstance(value, list):
        row = _dense(value, where, (states.count,), ("next state",))
    elif isinstance(value, (str, int)) and not isinstance(value, bool):
        row[states.ref(value, where)] = 1.0
    else:
        raise _fail(
            f"{where}: expected a next state, a mapping next state -> probability or a list of "
            f"{states.count} probabilities, got {_show(value)}"
        )
    return row


def _parse_sparse_transitions(
    value: dict, field: str, states: _Space, actions: _Space, terminal: np.ndarray
) -> np.ndarray:
    S, A = states.count, actions.count
    table = np.zeros((S, A, S))
    given = np.zeros((S, A), dtype=bool)
    for state_key, state_indices in states.keys(value, field):
        per_action = value[state_key]
        where = _key_path(field, state_key)
        if not isinstance(per_action, dict):
            raise _fail(f"{where}: expected a mapping action -> next state(s), got {_show(per_action)}")
        for action_key, action_indices in actions.keys(per_action, where):
            row = _parse_row(per_action[action_key], _key_path(where, action_key), states)
            for s in state_indices:
                table[s, action_indices] = row
                given[s, action_indices] = True
    for s in range(S):
        if given[s].all():
            continue
        if terminal[s]:
            table[s, ~given[s], s] = 1.0  # terminal states stay put unless told otherwise
        elif not given[s].any():
            raise _fail(
                f"{field}: no entry for state {states.label(s)!r}; every non-terminal state needs one "
                "(terminal states default to staying put)"
            )
        else:
            a = int(np.argmin(given[s]))
            raise _fail(
                f"{_key_path(field, states.label(s))}: no entry for action {actions.label(a)!r} "
                f"(use {WILDCARD!r} for 'every other action')"
            )
    _check_rows(table, field, states, actions, sparse=True)
    return table


def _parse_transitions(value: Any, states: _Space, actions: _Space, terminal: np.ndarray) -> np.ndarray:
    S, A = states.count, actions.count
    labels = ("state", "action", "next state")
    if isinstance(value, dict):
        return _parse_sparse_transitions(value, "transitions", states, actions, terminal)
    if not isinstance(value, list) or not value:
        raise _fail(
            "transitions: must be nested lists (S, A, S) or (H, S, A, S), a mapping "
            f"state -> action -> next state(s), or a list of such mappings, got {_show(value)}"
        )
    if any(isinstance(step, dict) for step in value) or _depth(value) >= 4:
        if len(value) * S * A * S > budget.MAX_TABLE_ENTRIES:
            raise _fail(
                f"transitions: {len(value)} steps x {S} states x {A} actions is too large "
                f"(at most {budget.MAX_TABLE_ENTRIES} entries)"
            )
        steps = []
        for t, step in enumerate(value):
            field = f"transitions[{t}]"
            if isinstance(step, dict):
                steps.append(_parse_sparse_transitions(step, field, states, actions, terminal))
            else:
                table = _dense(step, field, (S, A, S), labels)
                _check_rows(table, field, states, actions, sparse=False)
                steps.append(table)
        return np.stack(steps)
    if _depth(value) != 3:
        raise _fail(
            f"transitions: a dense table must be nested lists of shape (S, A, S) = ({S}, {A}, {S}) "
            f"or (H, S, A, S), got {_depth(value)} level(s) of lists"
        )
    table = _dense(value, "transitions", (S, A, S), labels)
    _check_rows(table, "transitions", states, actions, sparse=False)
    return table


def _parse_rewards(value: Any, states: _Space, actions: _Space) -> np.ndarray:
    S, A = states.count, actions.count
    if isinstance(value, list):
        depth = _depth(value)
        if depth == 2:
            return _dense(value, "rewards", (S, A), ("state", "action"))
        if depth == 3:
            return _dense(value, "rewards", (S, A, S), ("state", "action", "next state"))
        raise _fail(
            f"rewards: dense rewards must be nested lists of shape (S, A) = ({S}, {A}) or (S, A, S), "
            f"got {depth} level(s) of lists"
        )
    if isinstance(value, dict):
        table = np.zeros((S, A, S))
        per_next = False
        for state_key, state_indices in states.keys(value, "rewards"):
            where = _key_path("rewards", state_key)
            entry = value[state_key]
            if not isinstance(entry, dict):
                table[state_indices] = _number(entry, where)
                continue
            for action_key, action_indices in actions.keys(entry, where):
                where_a = _key_path(where, action_key)
                reward = entry[action_key]
                cells = np.ix_(state_indices, action_indices)
                if not isinstance(reward, dict):
                    table[cells] = _number(reward, where_a)
                    continue
                per_next = True
                for next_key, next_indices in states.keys(reward, where_a):
                    r = _number(reward[next_key], _key_path(where_a, next_key))
                    table[np.ix_(state_indices, action_indices, next_indices)] = r
        return table if per_next else table[:, :, 0].copy()
    if isinstance(value, (int, float, str)):
        return np.full((S, A), _number(value, "rewards"))
    raise _fail(
        "rewards: must be a number, nested lists (S, A) or (S, A, S), or a mapping "
        f"state -> number or action -> reward, got {_show(value)}"
    )


def _parse_scale(value: Any, states: _Space, actions: _Space) -> float | np.ndarray:
    field = "noise.scale"
    S, A = states.count, actions.count
    if isinstance(value, list):
        scale: float | np.ndarray = _dense(value, field, (S, A), ("state", "action"))
    elif isinstance(value, dict):
        scale = np.zeros((S, A))
        for state_key, state_indices in states.keys(value, field):
            where = _key_path(field, state_key)
            entry = value[state_key]
            if not isinstance(entry, dict):
                scale[state_indices] = _number(entry, where)
                continue
            for action_key, action_indices in actions.keys(entry, where):
                scale[np.ix_(state_indices, action_indices)] = _number(
                    entry[action_key], _key_path(where, action_key)
                )
    else:
        scale = _number(value, field)
    if np.min(scale) < 0:
        if isinstance(scale, np.ndarray):
            s, a = (int(i) for i in np.argwhere(scale < 0)[0])
            where = f"{field}[{s}][{a}] (state {states.label(s)!r}, action {actions.label(a)!r})"
            raise _fail(f"{where}: width/std {scale[s, a]:g} is negative, must be >= 0")
        raise _fail(f"{field}: width/std {scale:g} is negative, must be >= 0")
    return scale


def _parse_noise(value: Any, states: _Space, actions: _Space) -> tuple[str, float | np.ndarray]:
    if value is None:
        return "none", 0.0
    if isinstance(value, str):
        value = {"kind": value}
    if not isinstance(value, dict):
        raise _fail(
            f"noise: must be a mapping with kind (none, uniform or gaussian) and scale, got {_show(value)}"
        )
    for key in value:
        if key not in NOISE_KEYS:
            raise _fail(f"noise: unknown key {_show(key)}{_suggest(key, NOISE_KEYS)} (known: kind, scale)")
    kind = value.get("kind", "none" if "scale" not in value else None)
    if kind not in NOISE_KINDS:
        if kind is None:
            raise _fail("noise.kind: missing; use one of " + ", ".join(NOISE_KINDS))
        raise _fail(
            f"noise.kind: unknown noise kind {_show(kind)}{_suggest(kind, NOISE_KINDS)} "
            f"(use one of {', '.join(NOISE_KINDS)})"
        )
    if "scale" not in value:
        if kind != "none":
            what = "width" if kind == "uniform" else "standard deviation"
            raise _fail(f"noise.scale: missing; {kind} noise needs a scale (its {what})")
        return kind, 0.0
    return kind, _parse_scale(value["scale"], states, actions)


def _parse_observations(value: Any, states: _Space, terminal: np.ndarray) -> np.ndarray | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _fail(f"observations: must be a list of {states.count} integers, got {_show(value)}")
    if len(value) != states.count:
        raise _fail(f"observations: expected {states.count} entries (one per state), got {len(value)}")
    out = np.empty(states.count, dtype=np.int64)
    for i, obs in enumerate(value):
        where = f"observations[{i}]"
        if isinstance(obs, bool) or not isinstance(obs, int):
            raise _fail(f"{where}: expected an integer observation, got {_show(obs)}")
        if obs < -1:
            raise _fail(
                f"{where}: {obs} is not allowed; observations are 0, 1, ... (or -1 for terminal states)"
            )
        if obs == -1 and not terminal[i]:
            raise _fail(
                f"{where}: -1 is only allowed for terminal states; state {states.label(i)!r} is not terminal"
            )
        out[i] = obs
    return out


def _parse_terminal(value: Any, states: _Space) -> np.ndarray:
    terminal = np.zeros(states.count, dtype=bool)
    if value is None:
        return terminal
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items):
        where = f"terminal[{i}]" if isinstance(value, list) else "terminal"
        terminal[states.ref(item, where)] = True
    return terminal


def mdp_from_dict(data: Any, source: str = "<mdp>") -> TabularMDP:
    """Build a :class:`TabularMDP` from a parsed file; errors start with ``source``."""
    try:
        return _build(data, default_name=Path(source).stem if source != "<mdp>" else "mdp")
    except MDPError as err:
        raise _fail(f"{source}: {err}") from None


def _build(data: Any, default_name: str) -> TabularMDP:
    if not isinstance(data, dict):
        what = "an empty file" if data is None else _show(data)
        raise _fail(
            f"top level must be a mapping with keys such as states, actions, initial, transitions, "
            f"rewards; got {what}"
        )
    for key in data:
        if key not in KNOWN_KEYS:
            raise _fail(
                f"unknown key {_show(key)}{_suggest(key, KNOWN_KEYS)} (known keys: {', '.join(KNOWN_KEYS)})"
            )
    missing = [key for key in REQUIRED_KEYS if key not in data]
    if missing:
        raise _fail(
            f"missing required key{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(required: {', '.join(REQUIRED_KEYS)})"
        )
    states = _Space(data["states"], "states", "state")
    actions = _Space(data["actions"], "actions", "action")
    if states.count**2 * actions.count > budget.MAX_TABLE_ENTRIES:
        raise _fail(
            f"states: {states.count} states x {actions.count} actions is too large for exact tabular "
            f"computations (at most {budget.MAX_TABLE_ENTRIES} transition entries)"
        )
    terminal = _parse_terminal(data.get("terminal"), states)
    initial = _parse_initial(data["initial"], states)
    transitions = _parse_transitions(data["transitions"], states, actions, terminal)
    rewards = _parse_rewards(data["rewards"], states, actions)
    kind, scale = _parse_noise(data.get("noise"), states, actions)

    gamma = _number(data.get("gamma", 1.0), "gamma")
    if not 0.0 <= gamma <= 1.0:
        raise _fail(f"gamma: must be in [0, 1], got {gamma:g}")
    horizon = data.get("horizon")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1):
        raise _fail(f"horizon: must be a positive integer or null (unbounded), got {_show(horizon)}")
    observations = _parse_observations(data.get("observations"), states, terminal)
    per_step = data.get("per_step_logits", False)
    if not isinstance(per_step, bool):
        raise _fail(f"per_step_logits: must be true or false, got {_show(per_step)}")
    name = data.get("name", default_name)
    description = data.get("description", "")
    for key, text in (("name", name), ("description", description)):
        if not isinstance(text, str):
            raise _fail(f"{key}: must be text, got {_show(text)}")
    return TabularMDP(
        initial_s=initial,
        transitions=transitions,
        rewards=rewards,
        gamma=gamma,
        horizon=horizon,
        terminal_s=terminal,
        observation_s=observations,
        reward_noise=kind,
        noise_scale=scale,
        per_step_logits=per_step,
        name=name,
        description=description.strip(),
        state_names=states.names,
        action_names=actions.names,
    )


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        got = f"{path.suffix!r}" if path.suffix else "no extension"
        raise _fail(f"{path}: unknown MDP file type ({got}); the name must end in .yaml, .yml or .json")
    return suffix


def _dict_pairs(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_text(text: str, source: str, suffix: str) -> Any:
    """Parse YAML or JSON text; syntax errors become one-line :class:`MDPError` with the line number."""
    if suffix == ".json":
        try:
            return json.loads(text, object_pairs_hook=_dict_pairs)
        except json.JSONDecodeError as err:
            raise _fail(
                f"{source}: line {err.lineno}, column {err.colno}: JSON syntax error: {err.msg}"
            ) from None
        except ValueError as err:  # duplicate key, raised by _dict_pairs
            raise _fail(f"{source}: JSON error: {err}") from None
        except RecursionError:
            raise _fail(f"{source}: JSON error: nested too deeply") from None
    try:
        return yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = err.problem or err.context or "invalid YAML"
        context = ""
        if err.context and err.problem:
            started = err.context_mark
            at = f" at line {started.line + 1}" if started and mark and started.line != mark.line else ""
            context = f" ({err.context}{at})"
        label = "YAML error" if isinstance(err, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise _fail(f"{source}: {where}{label}: {problem}{context}") from None
    except yaml.YAMLError as err:
        raise _fail(f"{source}: YAML error: {err}") from None
    except RecursionError:
        raise _fail(f"{source}: YAML error: nested too deeply") from None


def load_mdp(path: str | os.PathLike) -> TabularMDP:
    """Read an MDP from a .yaml/.yml or .json file (see ``docs/mdp-format.md``)."""
    path = Path(path).expanduser()
    suffix = _check_suffix(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(f"{path}: file not found") from None
    except IsADirectoryError:
        raise _fail(f"{path}: is a directory, not an MDP file") from None
    except UnicodeDecodeError as err:
        raise _fail(f"{path}: not UTF-8 text (byte {err.start})") from None
    except OSError as err:
        raise _fail(f"{path}: cannot read: {err.strerror}") from None
    return mdp_from_dict(parse_text(text, str(path), suffix), str(path))


def resolve_mdp(name_or_path: str | os.PathLike) -> TabularMDP:
    """A file (if the path exists or ends in .yaml/.yml/.json) or a built-in ``pgvar.envs.make(name)``."""
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.suffix.lower() in SUFFIXES or path.exists():
        return load_mdp(path)
    return envs.make(text)


# -- writing -------------------------------------------------------------------------------------
def _num(x: float) -> int | float:
    x = float(x)
    return int(x) if x.is_integer() and abs(x) < 2**53 else x


def _names_for_file(names: tuple[str, ...] | None, count: int, field: str) -> tuple[list, Any]:
    """(labels used as keys, value of the states/actions key)."""
    if not names:
        return list(range(count)), count
    names = tuple(names)
    bad = (
        len(names) != count
        or len(set(names)) != count
        or any(not isinstance(n, str) or not n.strip() or n == WILDCARD for n in names)
    )
    if bad:
        raise _fail(
            f"{field}: names {list(names)} cannot be saved: need {count} distinct non-empty strings "
            f"other than {WILDCARD!r}"
        )
    return list(names), list(names)


def _sparse_transitions(table: np.ndarray, terminal: np.ndarray, s_keys: list, a_keys: list) -> dict:
    out: dict = {}
    S = table.shape[0]
    for s in range(S):
        rows = table[s]
        if terminal[s] and np.array_equal(rows, np.broadcast_to(np.eye(S)[s], rows.shape)):
            continue  # the default for terminal states

        def row_value(row: np.ndarray) -> Any:
            nonzero = np.flatnonzero(row)
            if len(nonzero) == 1 and row[nonzero[0]] == 1.0:
                return s_keys[nonzero[0]]
            return {s_keys[j]: _num(row[j]) for j in nonzero}

        if len(a_keys) > 1 and all(np.array_equal(rows[0], r) for r in rows[1:]):
            out[s_keys[s]] = {WILDCARD: row_value(rows[0])}
        else:
            out[s_keys[s]] = {a_keys[a]: row_value(rows[a]) for a in range(len(a_keys))}
    return out


def _rewards_value(rewards: np.ndarray, s_keys: list, a_keys: list) -> Any:
    """A number, the sparse form (the commonest value as "*", then the exceptions) or dense lists."""
    values, counts = np.unique(rewards, return_counts=True)
    common = float(values[np.argmax(counts)])
    if counts.max() == np.sum(rewards == 0):
        common = 0.0  # ties: prefer zero, the sparse default
    if rewards.ndim == 2 and np.all(rewards == common):
        return _num(common)
    sparse: dict = {WILDCARD: _num(common)} if common != 0 else {}
    cells = 0
    for s in range(rewards.shape[0]):
        entry: dict = {}
        for a in range(rewards.shape[1]):
            cell = rewards[s, a]
            if np.all(cell == common):
                continue
            if rewards.ndim == 3 and not np.all(cell == cell[0]):
                entry[a_keys[a]] = {s_keys[j]: _num(cell[j]) for j in np.flatnonzero(cell != common)}
            else:
                entry[a_keys[a]] = _num(cell if rewards.ndim == 2 else cell[0])
        cells += len(entry)
        if entry:
            values = list(entry.values())
            whole = len(entry) == len(a_keys) > 1 and all(v == values[0] for v in values)
            sparse[s_keys[s]] = values[0] if whole and not isinstance(values[0], dict) else entry
    has_next_level = any(
        isinstance(v, dict) for e in sparse.values() if isinstance(e, dict) for v in e.values()
    )
    if cells * 2 <= rewards.shape[0] * rewards.shape[1] and (rewards.ndim == 2 or has_next_level):
        return sparse
    return (
        rewards.tolist() if rewards.ndim == 2 else [[[_num(x) for x in row] for row in sa] for sa in rewards]
    )


def mdp_to_dict(mdp: TabularMDP) -> dict:
    """The file form of ``mdp`` (plain Python values); ``mdp_from_dict`` gives back equal arrays."""
    s_keys, states = _names_for_file(mdp.state_names, mdp.n_states, "state_names")
    a_keys, actions = _names_for_file(mdp.action_names, mdp.n_actions, "action_names")
    out: dict[str, Any] = {"name": mdp.name}
    if mdp.description:
        out["description"] = mdp.description
    out["states"] = states
    out["actions"] = actions
    start = np.flatnonzero(mdp.initial_s)
    if len(start) == 1 and mdp.initial_s[start[0]] == 1.0:
        out["initial"] = s_keys[start[0]]
    elif len(start) < mdp.n_states:
        out["initial"] = {s_keys[i]: _num(mdp.initial_s[i]) for i in start}
    else:
        out["initial"] = [_num(p) for p in mdp.initial_s]
    terminal = mdp.terminal_s
    if mdp.time_dependent:
        out["transitions"] = [_sparse_transitions(t, terminal, s_keys, a_keys) for t in mdp.transitions]
    else:
        out["transitions"] = _sparse_transitions(mdp.transitions, terminal, s_keys, a_keys)
    out["rewards"] = _rewards_value(mdp.rewards, s_keys, a_keys)
    scale = np.asarray(mdp.noise_scale)
    if mdp.reward_noise != "none" or scale.ndim != 0 or scale != 0:
        noise: dict[str, Any] = {"kind": mdp.reward_noise}
        noise["scale"] = _num(scale) if scale.ndim == 0 else [[_num(x) for x in row] for row in scale]
        out["noise"] = noise
    out["gamma"] = _num(mdp.gamma)
    out["horizon"] = None if mdp.horizon is None else int(mdp.horizon)
    out["terminal"] = [s_keys[i] for i in np.flatnonzero(terminal)]
    if not np.array_equal(mdp.observation_s, np.arange(mdp.n_states)):
        out["observations"] = [int(o) for o in mdp.observation_s]
    if mdp.per_step_logits:
        out["per_step_logits"] = True
    return out


def _json_text(value: Any, indent: int = 0) -> str:
    """JSON with lists of numbers on one line and mappings indented."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        if all(not isinstance(v, (dict, list)) for v in value.values()):
            flat = json.dumps({str(k): v for k, v in value.items()}, allow_nan=False)
            if len(flat) + len(inner) <= 100:
                return flat
        items = [f"{inner}{json.dumps(str(k))}: {_json_text(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        if any(isinstance(v, dict) for v in value):
            items = [inner + _json_text(v, indent + 1) for v in value]
            return "[\n" + ",\n".join(items) + "\n" + pad + "]"
        return "[" + ", ".join(_json_text(v, indent) for v in value) + "]"
    return json.dumps(value, allow_nan=False)


def dump_text(mdp: TabularMDP, suffix: str) -> str:
    """The text of ``mdp`` as a .yaml/.yml or .json file."""
    data = mdp_to_dict(mdp)
    if suffix == ".json":
        return _json_text(data) + "\n"
    body = yaml.dump(
        data, Dumper=_Dumper, sort_keys=False, default_flow_style=None, allow_unicode=True, width=100
    )
    return "# pgvar tabular MDP; the format is described in docs/mdp-format.md\n" + body


def save_mdp(mdp: TabularMDP, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``mdp`` to a .yaml/.yml or .json file; an existing file is kept unless ``overwrite``."""
    path = Path(path).expanduser()
    text = dump_text(mdp, _check_suffix(path))
    if path.is_dir():
        raise _fail(f"{path}: is a directory")
    if not path.parent.is_dir():
        raise _fail(f"{path}: directory {path.parent} does not exist")
    if not overwrite:
        try:
            with open(path, "x", encoding="utf-8") as handle:
                handle.write(text)
        except FileExistsError:
            raise _fail(
                f"{path}: already exists; not overwriting it (pass overwrite=True to replace it)"
            ) from None
        except OSError as err:
            raise _fail(f"{path}: cannot write: {err.strerror}") from None
        return path
    try:  # write a sibling and rename, so a failed write never leaves half a file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as err:
        raise _fail(f"{path}: cannot write: {err.strerror}") from None
    return path


# -- describing ----------------------------------------------------------------------------------
def _g(x: float) -> str:
    return f"{float(x):.4g}"


def _target(name: str, p: float, extra: str = "") -> str:
    """``name`` or ``name (p 0.8, r 1)``."""
    details = ([] if p == 1.0 else [f"p {_g(p)}"]) + ([extra.strip()] if extra else [])
    return f"{name} ({', '.join(details)})" if details else name


DESCRIBED_ROWS = 200  # (state, action) rows of the dynamics listed, at most, over all steps
DESCRIBED_TARGETS = 12  # next states listed per row, at most
DESCRIBED_NAMES = 40  # states (or actions) named in a one-line list, at most


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:DESCRIBED_NAMES])
    return shown + (f", ... ({len(names) - DESCRIBED_NAMES:,} more)" if len(names) > DESCRIBED_NAMES else "")


def describe(mdp: TabularMDP) -> str:
    """A readable multi-line summary: sizes, discount, terminals, observations, noise, dynamics (the
    first ``DESCRIBED_ROWS`` rows of a large table, so a summary stays short whatever the size)."""
    S, A = mdp.n_states, mdp.n_actions
    s_name = [mdp.state_names[i] if mdp.state_names else str(i) for i in range(S)]
    a_name = [mdp.action_names[i] if mdp.action_names else str(i) for i in range(A)]
    lines = [f"{mdp.name}"]
    if mdp.description:
        lines.append(f"  {mdp.description}")
    horizon = "unbounded" if mdp.horizon is None else str(mdp.horizon)
    n_obs = mdp.n_observations
    lines.append(
        f"  {S} states, {A} actions, {n_obs} observation{'s' if n_obs != 1 else ''}; "
        f"gamma {_g(mdp.gamma)}, horizon {horizon}"
    )
    if mdp.state_names or mdp.action_names:
        lines.append(f"  states: {_names(s_name)}; actions: {_names(a_name)}")
    terminal = [s_name[i] for i in np.flatnonzero(mdp.terminal_s)]
    lines.append(f"  terminal: {_names(terminal) if terminal else 'none'}")
    obs = mdp.observation_s
    if np.array_equal(obs, np.arange(S)):
        lines.append("  observations: each state is its own observation")
    else:
        groups = {}
        for s in range(S):
            groups.setdefault(int(obs[s]), []).append(s_name[s])
        parts = [f"{o} = {_names(names)}" for o, names in sorted(groups.items()) if o >= 0]
        if -1 in groups:
            parts.append(f"none (terminal) = {_names(groups[-1])}")
        more = f"; ... ({len(parts) - DESCRIBED_NAMES:,} more)" if len(parts) > DESCRIBED_NAMES else ""
        lines.append(f"  observations: {'; '.join(parts[:DESCRIBED_NAMES])}{more}")
    scale = np.asarray(mdp.noise_scale)
    word = "width" if mdp.reward_noise == "uniform" else "std"
    if mdp.reward_noise == "none":
        lines.append("  reward noise: none")
    elif scale.ndim == 0:
        lines.append(
            f"  reward noise: {mdp.reward_noise}, {word} {_g(scale)} "
            f"(variance {_g(mdp.noise_variance_sa.flat[0])})"
        )
    else:
        var = mdp.noise_variance_sa
        lines.append(
            f"  reward noise: {mdp.reward_noise}, {word} per (state, action) "
            f"{_g(scale.min())}..{_g(scale.max())} (variance {_g(var.min())}..{_g(var.max())})"
        )
    starts = np.flatnonzero(mdp.initial_s)
    start = [_target(s_name[i], mdp.initial_s[i]) for i in starts[:DESCRIBED_NAMES]]
    more = f", ... ({starts.size - DESCRIBED_NAMES:,} more)" if starts.size > DESCRIBED_NAMES else ""
    lines.append(f"  start: {', '.join(start)}{more}")
    steps = range(mdp.transitions.shape[0]) if mdp.time_dependent else [None]
    width_s = max(len(n) for n in s_name)
    width_a = max(len(n) for n in a_name)
    per_sa_noise = mdp.reward_noise != "none" and scale.ndim != 0
    rows_left = DESCRIBED_ROWS
    for t in steps:
        table = mdp.transitions if t is None else mdp.transitions[t]
        lines.append("  transitions and mean rewards:" if t is None else f"  step {t}:")
        for s in range(S):
            if rows_left <= 0:
                break
            if mdp.terminal_s[s]:
                lines.append(f"    {s_name[s]:<{width_s}}  (terminal)")
                continue
            for a in range(min(A, rows_left)):
                rows_left -= 1
                row = table[s, a]
                targets = []
                nonzero = np.flatnonzero(row)
                if nonzero.size > DESCRIBED_TARGETS:
                    targets.append(f"{nonzero.size:,} next states")
                    nonzero = nonzero[:0]
                for j in nonzero:
                    r = f" r {_g(mdp.rewards[s, a, j])}" if mdp.rewards.ndim == 3 else ""
                    targets.append(_target(s_name[j], row[j], r))
                reward = f"; r {_g(mdp.rewards[s, a])}" if mdp.rewards.ndim == 2 else ""
                noise = f", noise {word} {_g(scale[s, a])}" if per_sa_noise else ""
                head = s_name[s] if a == 0 else ""
                lines.append(
                    f"    {head:<{width_s}}  {a_name[a]:<{width_a}} -> {', '.join(targets)}{reward}{noise}"
                )
    listed = DESCRIBED_ROWS - rows_left
    total = len(steps) * int((~mdp.terminal_s).sum()) * A
    if listed < total:
        lines.append(f"  ... {listed:,} of {total:,} (state, action) rows listed")
    return "\n".join(lines)
