"""Fuzzing the command line: nothing a user types may crash, hang or exhaust the machine.

Hypothesis draws argument lists for every command (tiny sizes mostly, and options with hostile values:
negative, huge, NaN, inf, text, empty, built-ins asking for millions of states) and MDP documents
(YAML and JSON, valid and broken). Each command runs in a subprocess under a memory limit
(``RLIMIT_AS``) and a time limit, always with ``pgvar --max-memory 1 --max-seconds 5`` so that the
library's cost checks, not the operating system, refuse a request too large. Every run must

- exit 0 or 2 (1 only where ``verify`` reports a failed claim), never die of a signal or time out;
- print no traceback, and at most one line on stderr when it exits 2;
- never run out of memory (``main`` turns a ``MemoryError`` into one line, but the budget should
  have refused the request before it allocated);
- print strict JSON (no NaN, no Infinity) when ``--json`` was given and it exits 0 (or 1 for verify).

The examples are derandomized and few (about 70 s on two cores: some 100 distinct invocations, two
subprocesses at a time, each run once however often Hypothesis draws it); shrinking is off, since
every example costs seconds, so a failure is reported as drawn. The memory limit is set by the child
itself before it imports pgvar (``preexec_fn`` is not safe beside the threads that run the children).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

MEMORY_LIMIT = 2 * 1024**3  # bytes of address space per command
TIME_LIMIT = 40  # seconds of wall time per command (its budget is 5 s of estimated work)
BUDGET = ["--max-memory", "1", "--max-seconds", "5"]  # refused up front well inside both limits
WORKERS = 2
ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
    report_multiple_bugs=False,
)


@dataclass
class Invocation:
    """One command line, the files it needs in its working directory, and what to expect of it."""

    args: list[str]
    files: dict[str, str] = field(default_factory=dict)
    json: bool = False

    def key(self) -> tuple:
        return (*self.args, *sorted(self.files.items()))

    def __str__(self) -> str:
        files = f"  [files: {', '.join(self.files)}]" if self.files else ""
        return (
            "pgvar " + " ".join(repr(a) if not a or " " in a or "\n" in a else a for a in self.args) + files
        )


# -- values ------------------------------------------------------------------------------------------

argv_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=0, max_size=12
)
HOSTILE_NUMBERS = [
    "-1",
    "0",
    "1e308",
    "-1e308",
    "1e400",
    "nan",
    "inf",
    "-inf",
    "",
    " ",
    "abc",
    "1e9",
    "100000000",
    "99999999999999999999999",
    "1.5",
    "0x10",
    "1_000",
    "１",
    "2 3",
    "--json",
]
BUILTINS = [
    "lesson",
    "short-corridor",
    "bandit:k=3",
    "random:states=3,actions=2,horizon=3",
    "random:seed=2,states=2,actions=3,horizon=4,gamma=0.9",
    "repayment",
    "deceptive:depth=3",
]
HOSTILE_BUILTINS = [
    "random:states=10000000",
    "random:states=3000,actions=300",
    "random:states=2000,actions=10",
    "random:horizon=1000000000",
    "random:horizon=1000000",
    "random:actions=100000000",
    "bandit:k=100000000",
    "bandit:k=1000000",
    "deceptive:depth=100000000",
    "deceptive:actions=100000",
    "random:states=1e308",
    "random:states=-1",
    "random:gamma=nan",
    "random:gamma=2",
    "lesson:noise_width=1e308",
    "lesson:noise_width=1e60",
    "lesson:noise_width=-1",
    "bandit:mean=1e308",
    "bandit:mean=1e60",
    "deceptive:treasure=1e300",
    "repayment:bonus=-1e200",
    "random:states=3,states=4",
    "random:seed=-5",
    "random:seed=1e30",
    "nosuch",
    "lesson:",
    ":",
    "lesson:=",
    "random:states",
    "x" * 300,
    "m.yaml",  # a file that does not exist
    "/",
]
LESSON_THETAS = [
    "[[0.5,0,0],[0,1,0],[0,0,-1]]",
    "[[1e6,-1e6,0],[0,0,0],[0,0,0]]",
    "[[800,0,0],[0,800,0],[0,0,800]]",
]
HOSTILE_THETAS = [
    "[[1e308,0,0],[0,0,0],[0,0,0]]",
    "[[0,-1e308,0],[0,1e308,0],[0,0,0]]",
    "[[NaN,0,0],[0,0,0],[0,0,0]]",
    "[[Infinity,0,0],[0,0,0],[0,0,0]]",
    "[[1e400,0,0],[0,0,0],[0,0,0]]",
    "[[1]]",
    "[]",
    "[[[[[[[[[[1]]]]]]]]]]",
    "[" * 5000 + "]" * 5000,
    '[["a",0,0],[0,0,0],[0,0,0]]',
    "[1,",
    "nowhere.json",
    "nowhere.npy",
    "taken.txt",
    "[[7,0]]",  # the short corridor's episodes hardly end: long exact unrolls
    "[[12,0]]",
]
ESTIMATORS = [
    "vanilla",
    "rtg",
    "base",
    "rtg+base",
    "rtg+value",
    "gae0.9+value",
    "rtg+optimal",
    "return+optimal-per-parameter",
    "rtg+running-value",
    "rtg+value:common",
]
HOSTILE_ESTIMATORS = ["", ",", "rtg,rtg", "gae2", "gae", "gae0.5+optimal", "return+value:common", "x" * 200]
HUGE_SIZES = ["100000000", "1000000000000", "1e9"]

#: Per option: the values a careful user gives (tiny sizes), and the hostile ones beside the generic.
OPTIONS: dict[str, tuple[list[str], list[str]]] = {
    "--entropy": (["0", "0.01", "0.5", "1e50"], ["1e51", "1e308", "-0.1"]),
    "--method": (["auto", "enumeration", "recursion"], ["exact"]),
    "--N": (["1", "2", "3"], ["0", *HUGE_SIZES]),
    "--N list": (["1", "2", "1,4", "2,3"], ["0", "1,,2", "1,100000000", " , "]),
    "--batches": (["2", "3", "6"], ["1", *HUGE_SIZES]),
    "--count": (["1", "5", "20"], HUGE_SIZES),
    "--seed": (["0", "1", "5", "123456789012345678901234567890"], []),
    "--lr": (["0.1", "1"], ["1e300", "0"]),
    "--updates": (["1", "2", "3"], [*HUGE_SIZES, "0"]),
    "--runs": (["1", "2"], [*HUGE_SIZES, "0"]),
    "--baseline-lr": (["0.1", "1"], ["0", "2"]),
    "--learned-by": (["state", "observation"], ["both"]),
    "--variance-every": (["0", "1"], ["-1", *HUGE_SIZES]),
}
PER_COMMAND = {
    "exact": ["--mdp", "--theta", "-e", "--entropy", "--method"],
    "variance": ["--mdp", "--theta", "-e", "--entropy", "--N list", "--batches", "--seed"],
    "readings": ["--mdp", "--theta", "-e", "--entropy", "--N", "--batches", "--count", "--seed"],
    "verify": ["--mdp", "--theta", "--seed"],
    "report": ["--mdp", "--theta", "--seed"],
    "train": [
        "--mdp",
        "--theta",
        "-e",
        "--entropy",
        "--lr",
        "--N",
        "--updates",
        "--runs",
        "--seed",
        "--baseline-lr",
        "--learned-by",
        "--variance-every",
    ],
}
REQUIRED = {  # sizes a fuzz run must keep small unless it is being hostile about them
    "readings": {"--count": "5"},
    "report": {"--batches": "2"},
    "train": {"--updates": "2", "--runs": "1"},
}


def flag(name: str) -> st.SearchStrategy[list[str]]:
    return st.sampled_from([[], [name]])


# -- command lines -----------------------------------------------------------------------------------


@st.composite
def command_lines(draw) -> Invocation:
    """About half the command lines are careful (tiny, valid); the others have hostile values."""
    command = draw(
        st.sampled_from(["exact", "variance", "readings", "verify", "mdp", "train"] * 3 + ["report"])
    )
    hostile = draw(st.booleans())

    def pick(good: list[str], bad: list[str]) -> str:
        if hostile and draw(st.integers(0, 2)) == 0:
            return draw(st.one_of(st.sampled_from([*bad, *HOSTILE_NUMBERS]), argv_text))
        return draw(st.sampled_from(good))

    prefix = list(BUDGET)
    if hostile and draw(st.integers(0, 4)) == 0:
        bad = draw(st.sampled_from(["0", "-1", "nan", "inf", "", "abc", "1e-300"]))
        prefix[draw(st.sampled_from([1, 3]))] = bad
    mdp = pick(BUILTINS, HOSTILE_BUILTINS)
    if command == "mdp":
        return Invocation([*prefix, "mdp", draw(st.sampled_from(["check", "show"])), mdp])
    values = dict(REQUIRED.get(command, {}))
    for name in PER_COMMAND[command]:
        if name == "--mdp":
            values[name] = mdp
        elif name == "--theta":
            good = ["uniform", *LESSON_THETAS] if mdp == "lesson" else ["uniform"]
            values[name] = pick(good, HOSTILE_THETAS)
        elif name == "-e":
            chosen = draw(st.lists(st.sampled_from(ESTIMATORS), min_size=1, max_size=3, unique=True))
            values[name] = pick([",".join(chosen)], HOSTILE_ESTIMATORS)
        elif draw(st.booleans()) or name in values:
            values[name] = pick(*OPTIONS[name])
    if command == "report":
        values["--out"] = pick(["out", "."], ["out/deeper/still", "taken.txt", ""])
    if command == "train":
        values["--out"] = pick(["run"], ["run/deeper/still", "taken.txt", ""])
    parts = [[name.split()[0], value] for name, value in values.items()]
    if command in ("report", "train"):
        parts += [draw(flag("--overwrite"))]
    if command == "train":
        parts += [draw(flag("--no-exact-reference"))]
    json_flag = draw(flag("--json")) if command in ("exact", "variance", "readings", "verify") else []
    order = draw(st.permutations([part for part in parts if part]))
    args = [*prefix, command, *[item for part in order for item in part], *json_flag]
    return Invocation(args, {"taken.txt": "not a folder\n"}, json=bool(json_flag))


# -- MDP documents -----------------------------------------------------------------------------------


@st.composite
def mdp_documents(draw) -> dict:
    """A dense MDP document: valid as drawn, then perhaps broken in one place."""
    n_s = draw(st.integers(2, 4))
    n_a = draw(st.integers(1, 3))
    finite = draw(st.booleans())

    def distribution(size: int) -> list[float]:
        weights = draw(st.lists(st.integers(0, 4), min_size=size, max_size=size))
        if not any(weights):
            weights[0] = 1
        return [w / sum(weights) for w in weights]

    terminal = n_s - 1
    transitions = [[distribution(n_s) for _ in range(n_a)] for _ in range(n_s)]
    for a in range(n_a):
        transitions[terminal][a] = [float(s == terminal) for s in range(n_s)]
    if not finite:  # every state can reach the terminal one
        for s in range(n_s - 1):
            transitions[s][0] = [0.5 * (t == terminal) + 0.5 * (t == s) for t in range(n_s)]
    reward = st.one_of(
        st.floats(-10, 10, allow_nan=False),
        st.sampled_from([1e50, -1e50, 1e51, 1e308, -1e308, float("nan"), float("inf")]),
    )
    doc: dict = {
        "states": n_s,
        "actions": n_a,
        "initial": [1.0] + [0.0] * (n_s - 1),
        "transitions": transitions,
        "rewards": [[draw(reward) for _ in range(n_a)] for _ in range(n_s)],
        "gamma": draw(st.sampled_from([1.0, 0.9, 0.0])),
        "horizon": draw(st.integers(1, 5)) if finite else None,
        "terminal": [terminal],
    }
    if draw(st.booleans()):
        doc["noise"] = {
            "kind": draw(st.sampled_from(["gaussian", "uniform"])),
            "scale": draw(st.sampled_from([0.5, 1e50, 1e60, -1.0, float("nan")])),
        }
    breakage = draw(st.integers(0, 12))
    keys = list(doc)
    if breakage == 1:
        del doc[draw(st.sampled_from(keys))]
    elif breakage == 2:
        doc[draw(st.sampled_from(keys))] = draw(
            st.sampled_from(["x", -1, 0, 10**400, 1e308, [], {}, None, True, [[[]]], "1e9"])
        )
    elif breakage == 3:
        doc["states"] = draw(st.sampled_from([100000000, 10**12, 3000]))
    elif breakage == 4:
        doc["horizon"] = draw(st.sampled_from([10**9, 10**12, 0, -3, 2.5]))
    elif breakage == 5:
        doc["unknown"] = 1
    return doc


BILLION_LAUGHS = "\n".join(
    [
        'a: &a ["x","x","x","x","x","x","x","x","x"]',
        *[f"{n}: &{n} [{','.join(['*' + p] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)],
        "states: 2",
        "actions: 1",
        "initial: [1, 0]",
        "terminal: [1]",
        "horizon: 2",
        "transitions: *i",
        "rewards: *i",
    ]
)


@st.composite
def mdp_files(draw) -> Invocation:
    doc = draw(mdp_documents())
    kind = draw(st.sampled_from(["yaml", "json"]))
    text = yaml.safe_dump(doc) if kind == "yaml" else json.dumps(doc)
    mangle = draw(st.integers(0, 9))
    if mangle == 1:
        text = text[: draw(st.integers(0, len(text)))]  # cut short: a syntax error
    elif mangle == 2:
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from(["{", "]", ":", "\t", "&x *y", "!!python/object:os.system"]))
            + text[at:]
        )
    elif mangle == 3:
        text, kind = BILLION_LAUGHS, "yaml"
    elif mangle == 4:
        text = "[" * 100_000 + "]" * 100_000
    name = f"m.{kind}"
    command = draw(
        st.sampled_from(
            [
                ["mdp", "check", name],
                ["mdp", "show", name],
                ["exact", "--mdp", name, "--json"],
                ["variance", "--mdp", name, "--N", "2", "--batches", "3", "--json"],
                ["verify", "--mdp", name, "--json"],
            ]
        )
    )
    return Invocation([*BUDGET, *command], {name: text}, json="--json" in command)


# -- running and judging -----------------------------------------------------------------------------

#: ``python -c BOOT ARGS...``: limit the address space, then run ``pgvar ARGS...``.
BOOT = (
    "import resource, runpy; "
    f"resource.setrlimit(resource.RLIMIT_AS, ({MEMORY_LIMIT}, {MEMORY_LIMIT})); "
    "runpy.run_module('pgvar.cli', run_name='__main__', alter_sys=True)"
)


def strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def problems(case: Invocation) -> list[str]:
    """Run one invocation in a fresh folder; what it did wrong (empty when nothing)."""
    with tempfile.TemporaryDirectory() as folder:
        for name, text in case.files.items():
            Path(folder, name).write_text(text)
        env = {**os.environ, "COLUMNS": "120", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT / "src")}
        try:
            done = subprocess.run(
                [sys.executable, "-c", BOOT, *case.args],
                cwd=folder,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=TIME_LIMIT,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return [f"{case}: no answer within {TIME_LIMIT} s"]
    code, out, err = done.returncode, done.stdout, done.stderr
    found = []
    verify_failed = case.args[len(BUDGET)] == "verify" and ("FAIL" in out or '"passed": false' in out)
    if code not in (0, 2) and not (code == 1 and verify_failed):
        found.append(f"exit code {code}")
    if "Traceback" in err or "Traceback" in out:
        found.append("a traceback")
    if code == 2 and len(err.strip().splitlines()) > 1:
        found.append(f"{len(err.strip().splitlines())} lines on stderr")
    if "out of memory" in err:
        found.append("ran out of memory: the budget did not refuse it up front")
    if case.json and code in (0, 1):
        try:
            strict_json(out)
        except ValueError as error:
            found.append(f"not strict JSON ({error})")
    if found:
        tail = " | ".join(err.strip().splitlines()[-3:])[:600]
        return [f"{case}: {', '.join(found)}; stderr: {tail}"]
    return []


_DONE: dict[tuple, list[str]] = {}  # Hypothesis draws some invocations again: each runs once


def check_all(cases: list[Invocation]) -> None:
    new = list({case.key(): case for case in cases if case.key() not in _DONE}.values())
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for case, result in zip(new, pool.map(problems, new), strict=True):
            _DONE[case.key()] = result
    found = [problem for case in cases for problem in _DONE[case.key()]]
    assert not found, "\n".join(found)


@FUZZ
@given(cases=st.lists(command_lines(), min_size=WORKERS * 2, max_size=WORKERS * 2))
def test_random_command_lines_exit_cleanly(cases):
    check_all(cases)


@settings(FUZZ, max_examples=15)
@given(cases=st.lists(mdp_files(), min_size=WORKERS * 2, max_size=WORKERS * 2))
def test_random_mdp_documents_exit_cleanly(cases):
    check_all(cases)
