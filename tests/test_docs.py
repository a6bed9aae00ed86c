"""The example outputs in the docs are what the commands print today (scripts/docs_examples.py).

The check runs every documented command that takes seconds (the slow ones are marked as not checked
in the docs), in parallel, and fails with a diff when a doc differs; the fix is to run
``.venv/bin/python scripts/docs_examples.py`` and review the diff (or fix the command, when its new
output is a bug).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("docs_examples", ROOT / "scripts" / "docs_examples.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def docs_examples():
    return load_script()


def test_docs_show_what_the_commands_print(docs_examples):
    problems = docs_examples.problems()
    assert not problems, "\n".join(
        [*problems, "docs differ from the commands' output: run .venv/bin/python scripts/docs_examples.py"]
    )


def test_every_text_block_of_the_docs_is_generated(docs_examples):
    for doc in docs_examples.DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert docs_examples.structure_problems(doc, text) == []


def test_a_text_block_without_markers_is_reported(docs_examples):
    text = "Intro\n\n```text\n$ pgvar exact\nJ = 1\n```\n"
    problems = docs_examples.structure_problems("README.md", text)
    assert any("outside example markers" in problem for problem in problems)
    assert any("no marker <!-- example: exact -->" in problem for problem in problems)


def test_rewrite_replaces_only_the_generated_regions(docs_examples):
    text = (
        "a\n<!-- example: one -->\n```text\nold\n```\n<!-- /example -->\n"
        "b\n<!-- example: two -->\n```text\nkept\n```\n<!-- /example -->\nc\n"
    )
    new = docs_examples.rewrite(text, {"one": "```text\nnew\n```\n"})
    assert new == text.replace("old", "new")


def test_shortening_is_explicit_and_deterministic(docs_examples):
    table = (
        "title\n"
        "┏━━━┳━━━━━━━━━┳━━━┓\n"
        "┃ a ┃ seconds ┃ b ┃\n"
        "┡━━━╇━━━━━━━━━╇━━━┩\n"
        "│ 1 │     0.3 │ 2 │\n"
        "└───┴─────────┴───┘\n"
        "wrote runs/x/curves.csv"
    )
    keep = docs_examples.chain(docs_examples.drop_column("seconds"), docs_examples.drop_lines("wrote "))
    assert keep(table) == "title\n┏━━━┳━━━┓\n┃ a ┃ b ┃\n┡━━━╇━━━┩\n│ 1 │ 2 │\n└───┴───┘"
    verify = "head\nPASS one\n     z = 0.83\nFAIL two\n     exact 0.5\nwrapped\nvariance-optimal here: x\ny)"
    assert docs_examples.fail_details_only(verify) == (
        "head\nPASS one\nFAIL two\n     exact 0.5\nwrapped\nvariance-optimal here: x\ny)"
    )


def test_the_examples_embed_no_timings(docs_examples):
    for doc in docs_examples.DOCS:
        text = (ROOT / doc).read_text(encoding="utf-8")
        for match in docs_examples.regions(text):
            body = match["body"]
            assert "took " not in body and "seconds ┃" not in body and " s; wrote " not in body, match["name"]
            assert "/tmp" not in body and "pgvar-docs-" not in body, match["name"]
