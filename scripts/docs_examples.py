"""Every example output shown in the docs, produced by one script: run the commands, rewrite the blocks.

    .venv/bin/python scripts/docs_examples.py            # rewrite the docs' example blocks in place
    .venv/bin/python scripts/docs_examples.py --check    # exit 1 and print a diff when a doc differs
    .venv/bin/python scripts/docs_examples.py --slow     # also the long runs (minutes), not checked by tests
    .venv/bin/python scripts/docs_examples.py NAME ...   # only these examples

A block of example output in a doc sits between two marker comments,

    <!-- example: NAME -->
    ```text
    $ the command
    what it prints
    ```
    <!-- /example -->

and everything between the markers is this script's output for the example NAME of ``EXAMPLES``
below. A doc's ```text blocks must all be such blocks (``--check`` fails on one outside markers).

The output must be the same on every machine: commands run with a fixed seed, with stdout not a
terminal (pgvar's tables are then 160 columns wide whatever the terminal; COLUMNS is set to 160 too)
and without colour. Nothing that depends on the machine (timings, temporary paths) is embedded: each
example that prints such a thing says what it leaves out, in ``keep`` (a deterministic filter) and in
a visible note under the block. Examples marked ``slow`` take minutes; they are regenerated and
checked only with ``--slow``, and their note says that the tests do not check them.

tests/test_docs.py runs ``problems()`` (the check without the slow examples).
"""

from __future__ import annotations

import argparse
import difflib
import itertools
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 160
# The docs whose ```text blocks this script owns (docs/explorer.md and docs/architecture.md are not here).
DOCS = (
    "README.md",
    "docs/training.md",
    "docs/examples.md",
    "docs/mdp-format.md",
    "docs/neural.md",
    "docs/sweeps.md",
    "docs/groups.md",
)
TIMEOUT_S = 900  # per command; a fast example takes a few seconds, a slow one a few minutes

REGION = re.compile(r"<!-- example: (?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- /example -->\n", re.S)
FENCE = re.compile(r"^```text\n.*?^```\n", re.S | re.M)
SEPARATORS = set("┏┳┓┃┡╇┩│└┴┘├┼┤╭╮╰╯")  # Rich's box characters between the columns of a table


# ---------------------------------------------------------------------------------------------------
# Deterministic shortening: each filter takes the command's stdout and returns what the doc shows.


def keep_all(text: str) -> str:
    return text


def drop_lines(pattern: str) -> Callable[[str], str]:
    """Leave out every line that matches ``pattern`` (a regular expression, from the line's start)."""
    compiled = re.compile(pattern)

    def keep(text: str) -> str:
        return "\n".join(line for line in text.split("\n") if not compiled.match(line))

    return keep


def drop_column(header: str) -> Callable[[str], str]:
    """Leave out the column titled ``header`` of every Rich table in the output (not the first column)."""

    def cuts(line: str) -> list[int]:
        return [i for i, char in enumerate(line) if char in SEPARATORS]

    def keep(text: str) -> str:
        lines = text.split("\n")
        top = 0
        while top < len(lines):
            if not lines[top].startswith(("┏", "┌", "╭")):
                top += 1
                continue
            bottom = next(
                (i for i in range(top + 1, len(lines)) if lines[i].startswith(("└", "╰"))), len(lines) - 1
            )
            head = next((lines[i] for i in range(top + 1, bottom) if lines[i].startswith(("┃", "│"))), "")
            at = cuts(head)
            cells = [head[a + 1 : b].strip() for a, b in itertools.pairwise(at)]
            if header in cells:
                column = cells.index(header) + 1
                if column == 1:
                    raise ValueError(f"cannot leave out the first column {header!r}")
                for i in range(top, bottom + 1):
                    at = cuts(lines[i])
                    if len(at) > column:
                        lines[i] = lines[i][: at[column - 1]] + lines[i][at[column] :]
            top = bottom + 1
        return "\n".join(lines)

    return keep


def fail_details_only(text: str) -> str:
    """`pgvar verify`: every claim's PASS/FAIL line, but the details (the numbers) of failed claims only.

    A PASS claim's details include Monte-Carlo z-scores and a finite-difference error, which may differ
    in the last digits between machines; a failed claim's details are exact values.
    """
    out, keeping = [], True
    for line in text.split("\n"):
        if line.startswith(("PASS ", "FAIL ")):
            keeping = line.startswith("FAIL ")
            out.append(line)
        elif line.startswith("variance-optimal"):
            keeping = True
            out.append(line)
        elif keeping:
            out.append(line)
    return "\n".join(out)


def the_out_dir_as(name: str) -> Callable[[str], str]:
    """Show the temporary ``--out`` directory under the name the reader typed."""
    return lambda text: re.sub(r"/\S*/out[\w-]*", name, text)


def chain(*filters: Callable[[str], str]) -> Callable[[str], str]:
    def keep(text: str) -> str:
        for one in filters:
            text = one(text)
        return text

    return keep


# ---------------------------------------------------------------------------------------------------
# The examples


@dataclass(frozen=True)
class Command:
    shown: str  # what the reader types, after "$ "
    argv: tuple[str, ...]  # what runs, from the repository root: "pgvar" or "python" first; {out}: a new dir
    returncode: int = 0
    keep: Callable[[str], str] = keep_all  # the explicit, deterministic shortening


@dataclass(frozen=True)
class Example:
    name: str  # the marker's name
    doc: str  # the doc (relative to the repository root) that shows it
    commands: tuple[Command, ...]
    note: str = ""  # a line under the block: what is left out, and whether the tests check it
    slow: bool = False  # minutes, not seconds: only with --slow, never in the tests


def pgvar(shown: str, *extra: str, returncode: int = 0, keep=keep_all) -> Command:
    """A `pgvar ...` command: runs the words of ``shown`` plus ``extra`` (say --out {out})."""
    return Command(f"pgvar {shown}", ("pgvar", *shown.split(), *extra), returncode, keep)


def example_script(script: str, *args: str) -> Command:
    """`.venv/bin/python examples/SCRIPT ARGS`, writing into a temporary --out; its last line left out."""
    shown = " ".join((".venv/bin/python", f"examples/{script}", *args))
    argv = ("python", f"examples/{script}", *args, "--out", "{out}")
    return Command(shown, argv, 0, drop_lines(r"\(\d+ s; wrote "))


SLOW_NOTE = (
    "*Not checked by the tests, to keep them fast: `.venv/bin/python scripts/docs_examples.py --slow` "
    "regenerates it. Left out: the last line (the run time and the files written).*"
)


def train_example(name: str, doc: str, options: str) -> Example:
    """``pgvar train OPTIONS`` into a fresh folder, its timings and the files it names left out."""
    keep = chain(drop_column("seconds"), drop_lines(r"wrote "))
    note = (
        "*Left out (scripts/docs_examples.py): the seconds column (timings) and the last line, which names "
        "the files written.*"
    )
    return Example(name, doc, (pgvar(f"train {options}", "--out", "{out}", keep=keep),), note=note)


EXAMPLES: tuple[Example, ...] = (
    Example("exact", "README.md", (pgvar("exact"),)),
    Example("variance", "README.md", (pgvar("variance --N 1,16"),)),
    Example(
        "verify-repayment",
        "README.md",
        (pgvar("verify --mdp repayment", returncode=1, keep=fail_details_only),),
        note="*Exit code 1. The details under the PASS claims are left out (scripts/docs_examples.py).*",
    ),
    train_example(
        "train-lesson",
        "docs/training.md",
        "--mdp lesson --estimators vanilla,rtg,base,rtg+base --lr 0.5 --N 4 --updates 50 --runs 5",
    ),
    Example(
        "entropy-deceptive",
        "docs/training.md",
        (example_script("entropy_deceptive.py"),),
        note=SLOW_NOTE,
        slow=True,  # about 8 s of CPU at the documented size, and smaller runs would change the numbers
    ),
    Example(
        "train-cartpole",
        "docs/training.md",
        (
            Command(
                ".venv/bin/python scripts/train_cartpole.py",
                ("python", "scripts/train_cartpole.py", "--out", "{out}"),
                keep=chain(drop_column("seconds"), drop_lines(r"wrote ")),
            ),
        ),
        note="*Not checked by the tests, to keep them fast (about 1.5 minutes): `.venv/bin/python "
        "scripts/docs_examples.py --slow` regenerates it, and the figure below with it. Left out: the "
        "seconds column (timings) and the last line, which names the files written.*",
        slow=True,  # three runs of four estimators on CartPole; torch's last digits may differ by machine
    ),
    Example(
        "variance-env",
        "docs/neural.md",
        (
            pgvar(
                "variance --env FrozenLake-v1,is_slippery=false,horizon=20 --policy mlp:32 "
                "-e vanilla,rtg+value,gae0.9+value --N 4,16 --reference-episodes 1024"
            ),
        ),
    ),
    Example(
        "exact-env",
        "docs/neural.md",
        (pgvar("exact --env FrozenLake-v1 --policy mlp:64,64 -e vanilla,rtg+value,gae0.9+value"),),
    ),
    Example(
        "sweep-dry-run",
        "docs/sweeps.md",
        (
            Command(
                "cat examples/sweep-study.yaml",
                ("python", "-c", "print(open('examples/sweep-study.yaml').read())"),
            ),
            Command(
                "pgvar sweep run examples/sweep-study.yaml --out results --dry-run --workers 2 --chunk 16",
                (
                    "pgvar",
                    "sweep",
                    "run",
                    "examples/sweep-study.yaml",
                    "--out",
                    "{out}",
                    "--dry-run",
                    "--workers",
                    "2",
                    "--chunk",
                    "16",
                ),
                keep=chain(drop_lines(r"estimated cost: "), the_out_dir_as("results")),
            ),
        ),
        note="*Left out: the line of the estimated cost, which is measured on the machine (here: 28 s of "
        "one core, about 14 s on 2 workers).*",
    ),
    Example(
        "groups-exact",
        "docs/groups.md",
        (
            pgvar(
                "exact --mdp prompts -e vanilla,rtg+value,return+loo,return+group,return+group-std,"
                "return+group-std:per-length --group 8"
            ),
        ),
    ),
    Example(
        "groups-variance",
        "docs/groups.md",
        (
            pgvar(
                "variance --mdp prompts -e vanilla,rtg+value,return+loo,return+group,return+group-std "
                "--group 8 --N 8,32"
            ),
        ),
    ),
    Example(
        "groups-prompts",
        "docs/groups.md",
        (Command(".venv/bin/python examples/grpo_prompts.py", ("python", "examples/grpo_prompts.py")),),
    ),
    train_example(
        "groups-train",
        "docs/groups.md",
        "--mdp prompts -e rtg+loo,rtg+group,rtg+group-std,rtg+value --group 4 --N 8 --lr 0.5 --updates 100"
        " --runs 5",
    ),
    Example(
        "groups-lesson",
        "docs/groups.md",
        (pgvar("exact -e vanilla,rtg+base,rtg+loo,rtg+group-std --group 4"),),
    ),
    Example(
        "mdp-two-rooms",
        "docs/mdp-format.md",
        (pgvar("mdp check examples/two-rooms.yaml"), pgvar("mdp show examples/two-rooms.yaml")),
    ),
    Example(
        "sutton-barto-13-1",
        "docs/examples.md",
        (example_script("sutton_barto_13_1.py"),),
        note=SLOW_NOTE,
        slow=True,
    ),
    Example(
        "sutton-barto-13-2",
        "docs/examples.md",
        (example_script("sutton_barto_13_2.py"),),
        note=SLOW_NOTE,
        slow=True,
    ),
    Example(
        "sutton-barto-2-5",
        "docs/examples.md",
        (example_script("sutton_barto_2_5.py"),),
        note=SLOW_NOTE,
        slow=True,
    ),
)


# ---------------------------------------------------------------------------------------------------
# Running


def environment() -> dict[str, str]:
    """The commands' environment: fixed width, no colour, no terminal features, one hash seed."""
    env = dict(os.environ)
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE", "JUPYTER_COLUMNS"):
        env.pop(name, None)
    env.update(COLUMNS=str(WIDTH), LINES="50", NO_COLOR="1", TERM="dumb", PYTHONHASHSEED="0")
    env.update(PYTHONIOENCODING="utf-8")
    return env


def executable(first: str) -> list[str]:
    if first == "python":
        return [sys.executable]
    script = Path(sys.executable).with_name("pgvar")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from pgvar.cli import main; main()"]


class ExampleError(RuntimeError):
    """A documented command did not behave as documented (exit code, or it did not run)."""


def run_command(command: Command, out: Path) -> str:
    """The command's stdout, shortened by its ``keep``, trailing spaces and blank lines removed.

    ``out`` (a directory that does not exist yet) replaces ``{out}`` in the command's words.
    """
    argv = executable(command.argv[0]) + [arg.replace("{out}", str(out)) for arg in command.argv[1:]]
    try:
        done = subprocess.run(
            argv,
            cwd=ROOT,
            env=environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ExampleError(f"`{command.shown}` ran past {TIMEOUT_S} s") from error
    if done.returncode != command.returncode:
        raise ExampleError(
            f"`{command.shown}` exited with {done.returncode}, the docs say {command.returncode}\n"
            f"{done.stderr[-2000:]}"
        )
    text = command.keep(done.stdout.replace("\r\n", "\n"))
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


def render(example: Example, outputs: Sequence[str]) -> str:
    """The text between an example's markers."""
    parts = []
    for command, output in zip(example.commands, outputs, strict=True):
        parts.append(f"$ {command.shown}\n{output}\n" if output else f"$ {command.shown}\n")
    block = "```text\n" + "".join(parts) + "```\n"
    return block + (f"\n{example.note}\n" if example.note else "")


def generate(examples: Iterable[Example], workers: int | None = None) -> dict[str, str]:
    """Run the examples' commands (in parallel) and render each example: name -> region text."""
    examples = list(examples)
    jobs = [(example, command) for example in examples for command in example.commands]
    workers = workers or max(2, os.cpu_count() or 2)
    with tempfile.TemporaryDirectory(prefix="pgvar-docs-") as tmp, ThreadPoolExecutor(workers) as pool:
        futures = [
            pool.submit(run_command, command, Path(tmp) / f"out-{i}") for i, (_, command) in enumerate(jobs)
        ]
        outputs = [future.result() for future in futures]
    by_example: dict[str, list[str]] = {example.name: [] for example in examples}
    for (example, _), output in zip(jobs, outputs, strict=True):
        by_example[example.name].append(output)
    return {example.name: render(example, by_example[example.name]) for example in examples}


# ---------------------------------------------------------------------------------------------------
# The docs


def regions(text: str) -> list[re.Match[str]]:
    return list(REGION.finditer(text))


def structure_problems(doc: str, text: str) -> list[str]:
    """Markers that name no example, examples without their marker, and ```text blocks outside markers."""
    problems = []
    known = {example.name for example in EXAMPLES if example.doc == doc}
    found = [match["name"] for match in regions(text)]
    for name in found:
        if name not in known:
            problems.append(f"{doc}: marker names an unknown example {name!r} (known: {sorted(known)})")
        elif found.count(name) > 1:
            problems.append(f"{doc}: the example {name!r} is shown twice")
    problems += [f"{doc}: no marker <!-- example: {name} --> for this example" for name in known - set(found)]
    outside = REGION.sub("", text)
    for block in FENCE.finditer(outside):
        first = block.group(0).split("\n")[1]
        problems.append(
            f"{doc}: a ```text block outside example markers (starting {first!r}); "
            "give it markers and an entry in scripts/docs_examples.py"
        )
    if text.count("<!-- example:") != len(found) or text.count("<!-- /example -->") != len(found):
        problems.append(f"{doc}: unbalanced example markers")
    return problems


def rewrite(text: str, generated: dict[str, str]) -> str:
    """The doc with the generated examples' regions replaced (others, e.g. slow ones, left as they are)."""

    def replace(match: re.Match[str]) -> str:
        body = generated.get(match["name"], match["body"])
        return f"<!-- example: {match['name']} -->\n{body}<!-- /example -->\n"

    return REGION.sub(replace, text)


def selected(names: Sequence[str] = (), include_slow: bool = False) -> list[Example]:
    unknown = set(names) - {example.name for example in EXAMPLES}
    if unknown:
        raise SystemExit(f"unknown example(s): {', '.join(sorted(unknown))}")
    if names:
        return [example for example in EXAMPLES if example.name in names]
    return [example for example in EXAMPLES if include_slow or not example.slow]


def updated_docs(examples: Sequence[Example]) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """doc -> (text now, text with fresh examples), and the structural problems of every doc."""
    generated = generate(examples)
    docs, problems = {}, []
    for doc in DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        problems += structure_problems(doc, text)
        docs[doc] = (text, rewrite(text, generated))
    return docs, problems


def diff(doc: str, old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"{doc} (in the repository)",
            tofile=f"{doc} (what the commands print now)",
        )
    )


def problems(names: Sequence[str] = (), include_slow: bool = False) -> list[str]:
    """Everything ``--check`` reports: structural problems and a diff per doc that differs."""
    try:
        docs, found = updated_docs(selected(names, include_slow))
    except ExampleError as error:
        return [str(error)]
    found += [diff(doc, old, new) for doc, (old, new) in docs.items() if old != new]
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="only these examples (default: all but the slow ones)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 with a diff if stale")
    parser.add_argument("--slow", action="store_true", help="include the slow examples (minutes)")
    parser.add_argument("--list", action="store_true", help="list the examples and exit")
    args = parser.parse_args(argv)
    if args.list:
        for example in EXAMPLES:
            commands = "; ".join(command.shown for command in example.commands)
            print(f"{example.name:<20} {example.doc:<20} {'slow' if example.slow else '    '}  {commands}")
        return 0
    if args.check:
        found = problems(args.names, args.slow)
        for problem in found:
            print(problem)
        if found:
            print("docs differ from the commands' output: run .venv/bin/python scripts/docs_examples.py")
        return 1 if found else 0
    try:
        docs, found = updated_docs(selected(args.names, args.slow))
    except ExampleError as error:
        print(error, file=sys.stderr)
        return 1
    for doc, (old, new) in docs.items():
        if old != new:
            (ROOT / doc).write_text(new, encoding="utf-8")
            print(f"rewrote {doc}")
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
