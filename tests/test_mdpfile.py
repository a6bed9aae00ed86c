"""The YAML/JSON MDP file format: round trips, the examples, and one test per error a user may see."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgvar import envs, mdpfile
from pgvar.errors import MDPError, PgvarError, SpecError
from pgvar.mdp import TabularMDP

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
BUILTINS = ["lesson", "short-corridor", "bandit:k=4", "random:seed=3,states=4,actions=2,horizon=5"]
ARRAYS = ("initial_s", "transitions", "rewards", "terminal_s", "observation_s", "noise_scale")
SCALARS = ("gamma", "horizon", "reward_noise", "per_step_logits", "name", "description")

# A small valid MDP that each error test breaks in one place.
BASE = {
    "name": "tiny",
    "states": ["a", "b", "end"],
    "actions": ["go", "wait"],
    "initial": "a",
    "transitions": {
        "a": {"go": {"b": 0.5, "end": 0.5}, "wait": "a"},
        "b": {"go": "end", "wait": "b"},
    },
    "rewards": {"a": {"go": 1}, "b": -1},
    "noise": {"kind": "gaussian", "scale": 0.5},
    "gamma": 0.9,
    "horizon": 5,
    "terminal": ["end"],
}


def assert_same(mdp: TabularMDP, other: TabularMDP) -> None:
    for name in ARRAYS:
        a, b = np.asarray(getattr(mdp, name)), np.asarray(getattr(other, name))
        assert a.shape == b.shape, name
        assert np.array_equal(a, b), name
    for name in SCALARS:
        assert getattr(mdp, name) == getattr(other, name), name
    assert (mdp.state_names or None) == (other.state_names or None)
    assert (mdp.action_names or None) == (other.action_names or None)


def write(tmp_path: Path, data, suffix: str = ".yaml") -> Path:
    path = tmp_path / f"mdp{suffix}"
    if isinstance(data, str):
        path.write_text(data)
    elif suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(MDPError) as info:
        mdpfile.load_mdp(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert "Traceback" not in message and "numpy" not in message
    return message


def broken(tmp_path: Path, suffix: str = ".yaml", **changes) -> str:
    data = copy.deepcopy(BASE)
    for key, value in changes.items():
        if value is KeyError:
            del data[key]
        else:
            data[key] = value
    return load_error(write(tmp_path, data, suffix))


# -- round trips and examples --------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
@pytest.mark.parametrize("name", BUILTINS)
def test_builtins_round_trip(tmp_path, name, suffix):
    mdp = envs.make(name)
    path = mdpfile.save_mdp(mdp, tmp_path / f"saved{suffix}")
    assert_same(mdp, mdpfile.load_mdp(path))
    assert_same(mdp, mdpfile.resolve_mdp(str(path)))


def test_base_fixture_loads(tmp_path):
    mdp = mdpfile.load_mdp(write(tmp_path, BASE))
    assert mdp.transitions[0, 0].tolist() == [0.0, 0.5, 0.5]
    assert mdp.transitions[2].tolist() == [[0, 0, 1], [0, 0, 1]]  # terminal states stay put
    assert mdp.rewards.tolist() == [[1, 0], [-1, -1], [0, 0]]


def test_two_rooms_example_loads():
    mdp = mdpfile.load_mdp(EXAMPLES / "two-rooms.yaml")
    assert mdp.name == "two-rooms"
    assert (mdp.n_states, mdp.n_actions, mdp.horizon) == (4, 3, 8)
    assert mdp.state_names == ("hall", "room A", "room B", "exit")
    assert mdp.terminal_s.tolist() == [False, False, False, True]
    assert mdp.reward_noise == "gaussian" and mdp.noise_variance_sa[0, 0] == pytest.approx(0.25)
    assert mdp.initial_s.tolist() == [0.8, 0.2, 0.0, 0.0]
    assert mdp.transitions[0, 0].tolist() == [0.1, 0.9, 0.0, 0.0]  # stochastic
    assert mdp.rewards.shape == (4, 3, 4)
    assert mdp.rewards[2, 1, 3] == 10 and mdp.rewards[2, 1, 2] == -0.1 and mdp.rewards[1, 2, 1] == 0.5
    assert mdp.observation_s.tolist() == [0, 1, 1, -1]


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_two_rooms_example_round_trips(tmp_path, suffix):
    mdp = mdpfile.load_mdp(EXAMPLES / "two-rooms.yaml")
    assert_same(mdp, mdpfile.load_mdp(mdpfile.save_mdp(mdp, tmp_path / f"copy{suffix}")))


def test_corridor_json_equals_builtin():
    from_file = mdpfile.load_mdp(EXAMPLES / "corridor.json")
    assert_same(envs.short_corridor(), from_file)
    assert "{" in (EXAMPLES / "corridor.json").read_text().split('"transitions"')[1][:20]  # sparse form


def test_resolve_mdp_builtin_and_file(tmp_path):
    assert_same(mdpfile.resolve_mdp("lesson"), envs.lesson())
    assert mdpfile.resolve_mdp("bandit:k=3").n_actions == 3
    path = write(tmp_path, BASE)
    assert mdpfile.resolve_mdp(path).name == "tiny"
    with pytest.raises(MDPError, match="file not found"):
        mdpfile.resolve_mdp(str(tmp_path / "missing.yml"))
    with pytest.raises(SpecError, match="unknown built-in 'nope'"):
        mdpfile.resolve_mdp("nope")


def test_describe_mentions_everything():
    text = mdpfile.describe(mdpfile.load_mdp(EXAMPLES / "two-rooms.yaml"))
    assert len(text.splitlines()) > 8
    for part in (
        "two-rooms",
        "4 states",
        "3 actions",
        "gamma 0.95",
        "horizon 8",
        "terminal: exit",
        "room A, room B",
        "gaussian",
        "variance 0.25",
        "start: hall (p 0.8)",
        "room B (p 0.3",
        "exit (p 0.7, r 10)",
        "stay",
    ):
        assert part in text, part
    corridor = mdpfile.describe(envs.short_corridor())
    assert "horizon unbounded" in corridor and "switched" in corridor and "reward noise: none" in corridor
    assert "variance 0.03" in mdpfile.describe(envs.lesson())


def test_default_name_is_file_stem_and_defaults(tmp_path):
    data = {k: v for k, v in BASE.items() if k not in ("name", "gamma", "horizon", "noise")}
    data["transitions"] = copy.deepcopy(BASE["transitions"])
    data["transitions"]["a"]["wait"] = "end"  # unbounded episodes must be able to end
    data["transitions"]["b"]["wait"] = "end"
    path = tmp_path / "my-maze.json"
    path.write_text(json.dumps(data))
    mdp = mdpfile.load_mdp(path)
    assert mdp.name == "my-maze" and mdp.gamma == 1.0 and mdp.horizon is None and mdp.reward_noise == "none"
    assert mdp.observation_s.tolist() == [0, 1, 2]


def test_dense_per_step_fractions_and_yaml12_floats(tmp_path):
    text = """
states: 2
actions: 1
initial: [1/4, 0.75]
transitions: [[[[1/3, 2/3]], [[0, 1]]], [[[1, 0]], [[1e-1, 9e-1]]]]
rewards: [[[1e-3, 2]], [[0, 0]]]
horizon: 2
per_step_logits: true
"""
    mdp = mdpfile.load_mdp(write(tmp_path, text))
    assert mdp.initial_s.tolist() == [0.25, 0.75]
    assert mdp.transitions.shape == (2, 2, 1, 2) and mdp.transitions[0, 0, 0, 0] == 1 / 3
    assert mdp.rewards[0, 0, 0] == 0.001 and mdp.per_step_logits


def test_sparse_per_step_wildcards_and_indices(tmp_path):
    data = {
        "states": 3,
        "actions": ["x", "y"],
        "initial": {"0": 0.5, 1: 0.5},
        "transitions": [{"*": {"*": 2}, 0: {"x": [0, 1, 0]}}, {0: {"*": {2: 1}}, "1": {"y": 0, "*": 2}}],
        "rewards": {"*": {"y": 2}, 1: 3},
        "noise": {"kind": "uniform", "scale": {"0": {"x": 1.2}}},
        "horizon": 2,
        "terminal": [2],
    }
    for suffix in (".yaml", ".json"):
        mdp = mdpfile.load_mdp(write(tmp_path, data, suffix))
        assert mdp.transitions[0, 0].tolist() == [[0, 1, 0], [0, 0, 1]]
        assert mdp.transitions[1, 1].tolist() == [[0, 0, 1], [1, 0, 0]]
        assert mdp.rewards.tolist() == [[0, 2], [3, 3], [0, 2]]
        assert mdp.noise_scale.tolist() == [[1.2, 0], [0, 0], [0, 0]]


# -- saving never loses a file -------------------------------------------------------------------
def test_save_refuses_to_overwrite(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("precious\n")
    with pytest.raises(MDPError) as info:
        mdpfile.save_mdp(envs.lesson(), path)
    assert "already exists" in str(info.value) and "overwrite=True" in str(info.value)
    assert path.read_text() == "precious\n"
    mdpfile.save_mdp(envs.lesson(), path, overwrite=True)
    assert_same(mdpfile.load_mdp(path), envs.lesson())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml"]  # no temporary files left


def test_save_rejects_bad_suffix_and_missing_directory(tmp_path):
    with pytest.raises(MDPError, match=r"\.txt.*must end in \.yaml, \.yml or \.json"):
        mdpfile.save_mdp(envs.lesson(), tmp_path / "x.txt")
    with pytest.raises(MDPError, match="does not exist"):
        mdpfile.save_mdp(envs.lesson(), tmp_path / "no" / "x.yaml")


# -- errors, one per case ------------------------------------------------------------------------
def test_error_unknown_extension(tmp_path):
    path = tmp_path / "mdp.toml"
    path.write_text("x")
    message = load_error(path)
    assert "'.toml'" in message and ".yaml, .yml or .json" in message


def test_error_file_not_found(tmp_path):
    assert load_error(tmp_path / "nope.yaml").endswith("file not found")


def test_error_yaml_syntax_has_line_number(tmp_path):
    message = load_error(write(tmp_path, "states: 2\nactions: [a, b\ninitial: 0\n"))
    assert "YAML syntax error" in message and "line 3" in message


def test_error_json_syntax_has_line_number(tmp_path):
    message = load_error(write(tmp_path, '{\n  "states": 2,\n  "actions": 2\n  "initial": 0\n}', ".json"))
    assert "JSON syntax error" in message and "line 4" in message


def test_error_duplicate_keys(tmp_path):
    assert "line 2, column 1: YAML error: duplicate key 'states'" in load_error(
        write(tmp_path, "states: 2\nstates: 3\n")
    )
    assert "duplicate key 'states'" in load_error(write(tmp_path, '{"states": 2, "states": 3}', ".json"))


@pytest.mark.parametrize("text", ["[1, 2]", "", "just text"])
def test_error_top_level_not_a_mapping(tmp_path, text):
    assert "top level must be a mapping" in load_error(write(tmp_path, text))


def test_error_unknown_key_suggests_closest(tmp_path):
    data = copy.deepcopy(BASE)
    data["trasitions"] = data.pop("transitions")
    message = load_error(write(tmp_path, data))
    assert "unknown key 'trasitions'" in message and "did you mean 'transitions'" in message


def test_error_missing_required_keys(tmp_path):
    message = broken(tmp_path, rewards=KeyError, initial=KeyError)
    assert "missing required keys initial, rewards" in message


def test_error_states_bad(tmp_path):
    assert "states: must be a positive number" in broken(tmp_path, states="three")
    assert "states[1]: state name 'a' is used twice" in broken(tmp_path, states=["a", "a", "end"])
    assert "actions: must be at least 1, got 0" in broken(tmp_path, actions=0)


def test_error_dense_wrong_shape(tmp_path):
    dense = [[[0, 1, 0], [1, 0, 0]], [[0, 0, 1], [0, 1]], [[0, 0, 1], [0, 0, 1]]]
    message = broken(tmp_path, transitions=dense)
    assert "transitions[1][1]: expected 3 entries (one per next state), got 2" in message
    message = broken(tmp_path, rewards=[[0, 0], [0, 0]])
    assert "rewards: expected 3 entries (one per state), got 2" in message
    assert "transitions: a dense table must be nested lists of shape (S, A, S) = (3, 2, 3)" in broken(
        tmp_path, transitions=[[0, 1, 0]]
    )


def test_error_probabilities_do_not_sum_to_one(tmp_path):
    transitions = copy.deepcopy(BASE["transitions"])
    transitions["a"]["go"] = {"b": 0.5, "end": 0.4}
    message = broken(tmp_path, transitions=transitions)
    assert "transitions.a.go: probabilities sum to 0.9, must sum to 1" in message
    dense = [[[0, 1, 0], [1, 0, 0]], [[0, 0, 1], [0, 0.7, 0]], [[0, 0, 1], [0, 0, 1]]]
    message = broken(tmp_path, transitions=dense)
    assert "transitions[1][1] (state 'b', action 'wait'): probabilities sum to 0.7" in message
    assert "initial: probabilities sum to 1.2, must sum to 1" in broken(tmp_path, initial=[0.6, 0.6, 0])


def test_error_negative_probability(tmp_path):
    transitions = copy.deepcopy(BASE["transitions"])
    transitions["a"]["go"] = {"b": 1.5, "end": -0.5}
    assert "transitions.a.go.end: probability -0.5 is negative" in broken(tmp_path, transitions=transitions)
    assert "initial[1]: probability -0.5 is negative" in broken(tmp_path, initial=[1.5, -0.5, 0])


def test_error_noise(tmp_path):
    assert "noise.scale: width/std -0.5 is negative" in broken(
        tmp_path, noise={"kind": "gaussian", "scale": -0.5}
    )
    table = [[0.1, 0.1], [0.1, -2], [0, 0]]
    message = broken(tmp_path, noise={"kind": "uniform", "scale": table})
    assert "noise.scale[1][1] (state 'b', action 'wait'): width/std -2 is negative" in message
    message = broken(tmp_path, noise={"kind": "gausian", "scale": 1})
    assert "noise.kind: unknown noise kind 'gausian'; did you mean 'gaussian'?" in message
    assert "noise: unknown key 'std'" in broken(tmp_path, noise={"kind": "gaussian", "std": 1})
    assert "noise.scale: missing" in broken(tmp_path, noise={"kind": "uniform"})


@pytest.mark.parametrize(
    "suffix,literal", [(".yaml", ".nan"), (".yaml", "-.inf"), (".json", "NaN"), (".json", "Infinity")]
)
def test_error_nan_and_inf(tmp_path, suffix, literal):
    if suffix == ".yaml":
        text = yaml.safe_dump(BASE, sort_keys=False).replace("gamma: 0.9", f"gamma: {literal}")
    else:
        text = json.dumps(BASE).replace('"gamma": 0.9', f'"gamma": {literal}')
    message = load_error(write(tmp_path, text, suffix))
    assert message.split(": ", 2)[1] == "gamma" and "must be a finite number" in message
    rewards = {"a": {"go": float("nan")}}
    message = broken(tmp_path, suffix, rewards=rewards)
    assert "rewards.a.go: nan is not allowed, must be a finite number" in message
    message = broken(tmp_path, suffix, initial=[1, float("inf"), 0])
    assert "initial[1]: inf is not allowed" in message


def test_error_unknown_names_in_sparse_forms(tmp_path):
    transitions = copy.deepcopy(BASE["transitions"])
    transitions["a"]["go"] = {"bb": 1}
    message = broken(tmp_path, transitions=transitions)
    assert "transitions.a.go: unknown state 'bb'; did you mean 'b'?" in message
    transitions = copy.deepcopy(BASE["transitions"])
    transitions["a"]["jump"] = "b"
    assert "transitions.a: unknown action 'jump'" in broken(tmp_path, transitions=transitions)
    assert "initial: unknown state 'c'" in broken(tmp_path, initial="c")
    assert "terminal[0]: state index 7 is out of range 0..2" in broken(tmp_path, terminal=[7])
    message = broken(tmp_path, states=3, initial="a", terminal=[2])
    assert "initial: unknown state 'a'; states has no names" in message


def test_error_missing_sparse_entries(tmp_path):
    transitions = copy.deepcopy(BASE["transitions"])
    del transitions["b"]
    assert "transitions: no entry for state 'b'" in broken(tmp_path, transitions=transitions)
    transitions = copy.deepcopy(BASE["transitions"])
    del transitions["b"]["wait"]
    assert "transitions.b: no entry for action 'wait'" in broken(tmp_path, transitions=transitions)


def test_error_same_state_twice(tmp_path):
    transitions = copy.deepcopy(BASE["transitions"])
    transitions["a"]["go"] = {"b": 0.5, 1: 0.5}
    assert "state 'b' is given twice" in broken(tmp_path, transitions=transitions)


@pytest.mark.parametrize(
    "field,value,expected",
    [
        ("rewards", {"a": {"go": "lots"}}, "rewards.a.go: expected a number, got 'lots'"),
        ("rewards", {"a": {"go": True}}, "rewards.a.go: expected a number, got true"),
        ("initial", [1, "x", 0], "initial[1]: expected a number, got 'x'"),
        ("gamma", "high", "gamma: expected a number, got 'high'"),
        ("horizon", 2.5, "horizon: must be a positive integer or null"),
        ("observations", [0, "one", -1], "observations[1]: expected an integer observation"),
        ("per_step_logits", "yes please", "per_step_logits: must be true or false"),
        ("name", 3, "name: must be text"),
        ("rewards", {"a": {"go": "1/0"}}, "rewards.a.go: '1/0' divides by zero"),
    ],
)
def test_error_non_numeric_values(tmp_path, field, value, expected):
    assert expected in broken(tmp_path, **{field: value})


def test_error_observations(tmp_path):
    message = broken(tmp_path, observations=[0, -1, -1])
    assert "observations[1]: -1 is only allowed for terminal states; state 'b' is not terminal" in message
    assert "observations: expected 3 entries" in broken(tmp_path, observations=[0, 1])


def test_error_from_tabular_mdp_validation_is_prefixed(tmp_path):
    transitions = copy.deepcopy(BASE["transitions"])
    transitions["b"] = {"*": "b"}  # b can never reach the terminal state
    message = broken(tmp_path, transitions=transitions, horizon=None)
    assert "terminal: state 1 can never reach a terminal state" in message
    message = broken(tmp_path, per_step_logits=True, horizon=None)
    assert "per_step_logits: needs a finite horizon" in message
    assert "gamma: must be in [0, 1], got 1.5" in broken(tmp_path, gamma=1.5)


# -- never a traceback: fuzz each field with arbitrary JSON-like values ---------------------------
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 5)
    | st.floats(allow_nan=True)
    | st.sampled_from(["a", "b", "end", "go", "wait", "*", "1/2", "0", "x"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["a", "b", "end", "go", "wait", "*", "0", "kind", "scale"]), children, max_size=3
        )
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(mdpfile.KNOWN_KEYS), value=_json_values)
def test_any_field_value_gives_mdp_or_one_line_error(field, value):
    data = copy.deepcopy(BASE)
    data[field] = value
    try:
        mdpfile.mdp_from_dict(data, "fuzz.yaml")
    except MDPError as err:
        assert "\n" not in str(err) and str(err).startswith("fuzz.yaml: ")


# -- round trips of arbitrary MDPs ---------------------------------------------------------------
@st.composite
def tabular_mdps(draw):
    S, A = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    terminal = np.array(draw(st.lists(st.booleans(), min_size=S, max_size=S)))
    if terminal.all():
        terminal[0] = False
    horizon = draw(st.integers(1, 4))
    steps = draw(st.sampled_from([None, horizon]))
    nice = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 0.1, 1 / 3])

    def distribution(size):
        weights = np.array(draw(st.lists(nice, min_size=size, max_size=size)))
        if weights.sum() == 0:
            weights[draw(st.integers(0, size - 1))] = 1.0
        return weights / weights.sum()

    shape = (S, A) if steps is None else (steps, S, A)
    transitions = np.array([distribution(S) for _ in range(int(np.prod(shape)))]).reshape(*shape, S)
    reward_values = st.sampled_from([0.0, 0.0, 1.0, -1.0, 2.5, -0.1, 1e-7, 1e50])
    r_shape = draw(st.sampled_from([(S, A), (S, A, S)]))
    rewards = np.array(
        draw(st.lists(reward_values, min_size=int(np.prod(r_shape)), max_size=int(np.prod(r_shape))))
    ).reshape(r_shape)
    kind = draw(st.sampled_from(["none", "uniform", "gaussian"]))
    scale = draw(st.sampled_from(["scalar", "table"]))
    noise_scale = (
        np.array(draw(st.lists(nice, min_size=S * A, max_size=S * A))).reshape(S, A)
        if scale == "table"
        else draw(nice)
    )
    obs = np.array(draw(st.lists(st.integers(0, 2), min_size=S, max_size=S)))
    obs[terminal & np.array(draw(st.lists(st.booleans(), min_size=S, max_size=S)))] = -1
    names = draw(st.booleans())
    return TabularMDP(
        initial_s=distribution(S),
        transitions=transitions,
        rewards=rewards,
        gamma=draw(st.sampled_from([1.0, 0.9, 0.0])),
        horizon=horizon,
        terminal_s=terminal,
        observation_s=obs if draw(st.booleans()) else None,
        reward_noise=kind,
        noise_scale=noise_scale,
        per_step_logits=draw(st.booleans()),
        name=draw(st.sampled_from(["m", "1e3", "yes", "a: b"])),
        description=draw(st.sampled_from(["", "text", "null"])),
        state_names=tuple(draw(st.sampled_from(["s", "1", "true", "x y"])) + str(i) for i in range(S))
        if names
        else None,
        action_names=tuple(f"a{i}" for i in range(A)) if draw(st.booleans()) else None,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mdp=tabular_mdps(), suffix=st.sampled_from([".yaml", ".json"]))
def test_any_mdp_round_trips(tmp_path, mdp, suffix):
    text = mdpfile.dump_text(mdp, suffix)
    again = mdpfile.mdp_from_dict(mdpfile.parse_text(text, "x" + suffix, suffix), "x" + suffix)
    assert_same(mdp, again)


def test_errors_are_pgvar_errors():
    assert issubclass(MDPError, PgvarError)


def test_docs_first_example_loads_in_yaml_and_json():
    import re

    text = (ROOT / "docs" / "mdp-format.md").read_text()
    blocks = re.findall(r"```(yaml|json)\n(.*?)```", text, re.S)[:2]
    assert [lang for lang, _ in blocks] == ["yaml", "json"]
    loaded = [
        mdpfile.mdp_from_dict(mdpfile.parse_text(body, f"doc.{lang}", f".{lang}"), f"doc.{lang}")
        for lang, body in blocks
    ]
    assert_same(*loaded)
    assert loaded[0].transitions[0, 0].tolist() == [0.1, 0.9, 0.0]


def test_yaml_syntax_error_names_where_the_list_started(tmp_path):
    message = load_error(write(tmp_path, "states: 2\nactions: [a, b\ninitial: 0\n"))
    assert "(while parsing a flow sequence at line 2)" in message
