"""The layers of docs/architecture.md hold: a module imports only from its own layer or those below,
and no name with a leading underscore crosses a module boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "pgvar"
LAYERS = {  # module (or package) -> layer, bottom up, as in docs/architecture.md
    "errors": 0, "validation": 0, "vocabulary": 0, "lanes": 0, "kpi": 0, "paths": 0, "budget": 0,
    "mdp": 1, "envs": 1, "mdpfile": 1, "gym": 1,
    "policy": 2,
    "returns": 3, "estimators": 3, "baselines": 3,
    "exact": 4, "groups": 4,
    "montecarlo": 5, "torch": 5,
    "studies": 6, "documents": 6, "claims": 6, "train": 6, "curves": 6, "report": 6, "sweep": 6,
    "cli": 7, "commands": 7, "explorer": 7,
}  # fmt: skip


def _module(path: Path) -> str:
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts).removesuffix(".__init__")


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported, line) for every pgvar import in the file, nested ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "pgvar":  # from pgvar import kpi
            found += [(f"pgvar.{a.name}", [], node.lineno) for a in node.names if a.name != "__version__"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pgvar"):
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("pgvar")]
    return found


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


MODULES = sorted(p for p in SRC.rglob("*.py") if p.name != "__init__.py" or p.parent != SRC)


def test_every_module_has_a_layer():
    top = {path.relative_to(SRC).parts[0].removesuffix(".py") for path in MODULES}
    assert top == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_go_down_the_layers_and_take_no_private_names(path):
    importer = _module(path)
    for module, names, line in _imports(path):
        assert _layer(module) <= _layer(importer), f"{importer}:{line} imports {module} from a layer above"
        private = [name for name in names if name.startswith("_") and name != "__version__"]
        assert not private, f"{importer}:{line} imports private names {private} from {module}"
        assert not any(part.startswith("_") for part in module.split(".")), f"{importer}:{line} {module}"
