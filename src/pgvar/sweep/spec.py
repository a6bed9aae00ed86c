"""The sweep spec: a grid of ``pgvar variance`` configurations in a YAML (or JSON) file.

A spec is a mapping. Every option of ``pgvar variance`` is a key, spelled as the option without its
dashes (``mdp``, ``theta``, ``N``, ``seed``, ``batches``, ``entropy``, ``env``, ``policy``,
``policy_seed``, ``weights``, ``reference_episodes``; ``policy-seed`` is accepted too), and takes one
value or a list of values; the grid is the product of the lists. Besides those:

    estimators   the estimators measured in every cell (a list or a comma-separated string): one row each
    seeds        an alias of ``seed``
    readings     R independent readings per configuration: seeds ``seed`` .. ``seed + R - 1``
    partition    the column the Parquet files are partitioned by (default ``mdp``, else ``env``; ``none``)
    name, description   free text, kept with the results

A cell is one ``pgvar variance --json`` call with one value of every key (one ``N``): tabular cells
come from ``mdp`` x ``theta``, neural ones from ``env`` x ``policy`` x ``policy_seed`` x ``weights``
x ``reference_episodes``, each times ``entropy`` x ``batches`` x ``N`` x ``seed``. Its identity is a
hash of that configuration (and of the content of every file it names), so the same spec gives the
same cells, whatever runs them.

Everything is checked by :func:`load_spec` before any work starts: an unknown key or a bad value is
one :class:`~pgvar.errors.SpecError` line naming the file and the field.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pgvar.errors import PgvarError, SpecError
from pgvar.validation import check_int, check_number, check_seed

CELL_FORMAT = 1  # part of every cell's identity: bump when a cell's rows change meaning
CELL_BYTES = 1200.0  # a cell's configuration held by the driver (a dict of 13 entries and its identity)
MDP_AXES = ("mdp", "theta", "entropy", "batches", "N", "seed")
ENV_AXES = (
    "env",
    "policy",
    "policy_seed",
    "weights",
    "reference_episodes",
    "entropy",
    "batches",
    "N",
    "seed",
)
CONFIG_COLUMNS = (
    "mdp", "theta", "env", "policy", "policy_seed", "weights", "reference_episodes",
    "estimators", "N", "seed", "batches", "entropy",
)  # fmt: skip
INT_COLUMNS = ("policy_seed", "reference_episodes", "N", "seed", "batches")
PARTITION_CHOICES = ("mdp", "theta", "env", "policy", "policy_seed", "N", "seed", "batches", "entropy")
DEFAULTS: dict[str, Any] = {  # those of ``pgvar variance``
    "theta": "uniform",
    "estimators": "vanilla,rtg,base,rtg+base",
    "N": [1, 4, 16],
    "seed": 0,
    "batches": 60,
    "entropy": 0.0,
    "policy": "mlp:64,64",
    "policy_seed": 0,
    "weights": None,
    "reference_episodes": 2048,
}
MDP_ONLY = ("theta",)
ENV_ONLY = ("policy", "policy_seed", "weights", "reference_episodes")
KEYS = (
    "mdp", "theta", "env", "policy", "policy_seed", "weights", "reference_episodes", "estimators",
    "N", "seed", "readings", "batches", "entropy", "partition", "name", "description",
)  # fmt: skip
ALIASES = {"seeds": "seed"}
MDP_SUFFIXES = (".yaml", ".yml", ".json")
THETA_SUFFIXES = (".json", ".npy")


def cell_id(config: Mapping[str, Any], digests: Mapping[str, str] | None = None) -> str:
    """A cell's identity: the first 20 hex digits of the SHA-256 of its configuration (the option
    columns), the digests of the files it names and ``CELL_FORMAT``, as canonical JSON."""
    payload = {"format": CELL_FORMAT, "config": dict(config), "files": dict(digests or {})}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def is_file_value(key: str, text: str | None) -> bool:
    """Whether an option's value names a file (as ``pgvar variance`` reads it): an MDP file (a
    .yaml/.yml/.json name), a theta file (.json/.npy) or trained weights."""
    if text is None:
        return False
    if key == "mdp":
        return Path(text).suffix.lower() in MDP_SUFFIXES
    if key == "theta":
        return text.strip().endswith(THETA_SUFFIXES)
    return key == "weights"


def local_path(key: str, text: str | None, base_dir: str) -> str | None:
    """The value as a worker passes it on: a relative file name resolved against ``base_dir`` (the
    spec's folder); anything else unchanged."""
    if text is None or not is_file_value(key, text) or os.path.isabs(text.strip()):
        return text
    return os.path.join(base_dir, text.strip())


def file_digest(path: str) -> str:
    """SHA-256 of a file's bytes (part of the identity of the cells that read it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Spec:
    """A checked spec.

    Attributes:
      source: the file name, for messages.
      base_dir: the folder relative file names in the spec are read from.
      grid: every key with its values as a list (estimators as one comma-separated string), canonical.
      partition: the partition column, or None.
      digests: SHA-256 of each file the spec names, by ``key:value``.
      costs: the price list of each group of cells (:func:`cost_key`), for estimates; empty when the
        spec was read back from ``_sweep.json``.
    """

    source: str
    base_dir: str
    grid: dict[str, Any]
    partition: str | None
    digests: dict[str, str] = field(default_factory=dict)
    costs: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def canonical(self) -> dict[str, Any]:
        """What identifies the spec (its grid, partition and files); what ``_sweep.json`` keeps."""
        return {"grid": self.grid, "partition": self.partition, "files": self.digests}

    @property
    def hash(self) -> str:
        text = json.dumps(self.canonical, sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def cells(self) -> list[dict[str, Any]]:
        """Every cell, in the spec's order: a dict with ``cell`` (its identity) and the option columns
        (made once per spec; do not change the dicts)."""
        return list(self._cells)

    @cached_property
    def _cells(self) -> tuple[dict[str, Any], ...]:
        return tuple(iter_cells(self.grid, self.digests))


def iter_cells(grid: Mapping[str, Any], digests: Mapping[str, str]) -> Iterator[dict[str, Any]]:
    """The cells of a canonical grid (see :class:`Spec`)."""
    blank = dict.fromkeys(CONFIG_COLUMNS)
    for kind, axes in (("mdp", MDP_AXES), ("env", ENV_AXES)):
        if not grid.get(kind):
            continue
        for values in itertools.product(*(grid[axis] for axis in axes)):
            config = {**blank, **dict(zip(axes, values, strict=True)), "estimators": grid["estimators"]}
            files = {
                key: digests[f"{key}:{config[key]}"]
                for key in ("mdp", "theta", "weights")
                if f"{key}:{config[key]}" in digests
            }
            yield {"cell": cell_id(config, files), **config}


def read_spec_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a YAML or JSON file (one line naming the file when it cannot be read)."""
    import yaml

    name = os.fspath(path)
    short = os.path.basename(name)
    try:
        text = Path(name).read_text()
    except OSError as error:
        raise SpecError(f"{name}: cannot read the spec: {error.strerror or error}") from None
    try:
        data = json.loads(text) if name.lower().endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        where = getattr(error, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise SpecError(f"{short}: not valid YAML/JSON{at}: {' '.join(str(error).split())[:200]}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{short}: a spec is a mapping of keys (mdp, estimators, N, seeds, ...)")
    return data


def _normalise_keys(source: str, data: Mapping[str, Any]) -> dict[str, Any]:
    keys: dict[str, Any] = {}
    for raw, value in data.items():
        key = str(raw).strip().replace("-", "_")
        key = ALIASES.get(key, key)
        if key not in KEYS:
            close = difflib.get_close_matches(key, [*KEYS, *ALIASES], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(KEYS)}"
            raise SpecError(f"{source}: unknown key {raw!r}{hint}")
        if key in keys:
            raise SpecError(f"{source}: {key}: given twice (seed and seeds are one key)")
        keys[key] = value
    return keys


def _as_list(source: str, key: str, value: Any) -> list[Any]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise SpecError(f"{source}: {key}: give at least one value")
    return values


def _texts(source: str, key: str, value: Any) -> list[str]:
    values = _as_list(source, key, value)
    for i, item in enumerate(values):
        if not isinstance(item, str) or not item.strip():
            where = f"{key}[{i}]" if isinstance(value, (list, tuple)) else key
            raise SpecError(f"{source}: {where}: must be a non-empty string, got {item!r}")
    return [item.strip() for item in values]


def _ints(source: str, key: str, value: Any, low: int) -> list[int]:
    values = _as_list(source, key, value)
    many = isinstance(value, (list, tuple))
    checked = [check_int(item, f"{source}: {key}[{i}]" if many else f"{source}: {key}", low=low)
               for i, item in enumerate(values)]  # fmt: skip
    return _distinct(source, key, checked)


def _distinct(source: str, key: str, values: list[Any]) -> list[Any]:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise SpecError(f"{source}: {key}: {seen[0]!r} given twice (a cell would be measured twice)")
    return values


def _thetas(source: str, value: Any) -> list[str]:
    """Theta values as text: strings as they are; a list of numbers (one logits array) as JSON."""
    if isinstance(value, list) and value and not all(isinstance(item, str) for item in value):
        if any(isinstance(item, str) for item in value):
            raise SpecError(
                f"{source}: theta: a list of strings ('uniform', files, JSON arrays) or one array of "
                "numbers, not both"
            )
        return [json.dumps(value)]
    return _distinct(source, "theta", _texts(source, "theta", value))


def _estimators(source: str, value: Any) -> str:
    names = _texts(source, "estimators", value)
    parts = [part.strip() for name in names for part in name.split(",") if part.strip()]
    if not parts:
        raise SpecError(f"{source}: estimators: give at least one, e.g. vanilla,rtg,base,rtg+base")
    return ",".join(parts)


def _seeds(source: str, keys: Mapping[str, Any]) -> list[int]:
    if "readings" not in keys:
        return _ints(source, "seed", keys.get("seed", DEFAULTS["seed"]), low=0)
    readings = check_int(keys["readings"], f"{source}: readings", low=1)
    start = keys.get("seed", 0)
    if isinstance(start, (list, tuple)):
        raise SpecError(
            f"{source}: readings: give readings with one first seed, or a list of seeds, not both"
        )
    first = check_seed(start, f"{source}: seed")
    return list(range(first, first + readings))


def parse_grid(source: str, data: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The canonical grid and the partition column of a spec's mapping, every value checked for its
    type and range (what needs the MDPs or environments is checked by :func:`check_cells`)."""
    keys = _normalise_keys(source, data)
    if "mdp" not in keys and "env" not in keys:
        raise SpecError(f"{source}: give mdp (tabular MDPs) and/or env (Gymnasium environments)")
    for key in MDP_ONLY:
        if key in keys and "mdp" not in keys:
            raise SpecError(f"{source}: {key}: applies to mdp cells, but the spec has no mdp")
    for key in ENV_ONLY:
        if key in keys and "env" not in keys:
            raise SpecError(f"{source}: {key}: applies to env cells, but the spec has no env")
    grid: dict[str, Any] = {
        "mdp": _distinct(source, "mdp", _texts(source, "mdp", keys["mdp"])) if "mdp" in keys else [],
        "env": _distinct(source, "env", _texts(source, "env", keys["env"])) if "env" in keys else [],
        "estimators": _estimators(source, keys.get("estimators", DEFAULTS["estimators"])),
        "N": _ints(source, "N", keys.get("N", DEFAULTS["N"]), low=1),
        "seed": _distinct(source, "seed", _seeds(source, keys)),
        "batches": _ints(source, "batches", keys.get("batches", DEFAULTS["batches"]), low=2),
        "entropy": _entropies(source, keys.get("entropy", DEFAULTS["entropy"])),
    }
    if grid["mdp"]:
        grid["theta"] = _thetas(source, keys.get("theta", DEFAULTS["theta"]))
    if grid["env"]:
        grid["policy"] = _distinct(
            source, "policy", _texts(source, "policy", keys.get("policy", "mlp:64,64"))
        )
        grid["policy_seed"] = _ints(
            source, "policy_seed", keys.get("policy_seed", DEFAULTS["policy_seed"]), low=0
        )
        weights = keys.get("weights")
        grid["weights"] = (
            [None] if weights is None else _distinct(source, "weights", _texts(source, "weights", weights))
        )
        grid["reference_episodes"] = _ints(
            source,
            "reference_episodes",
            keys.get("reference_episodes", DEFAULTS["reference_episodes"]),
            low=0,
        )
    for key in ("name", "description"):
        if key in keys:
            if not isinstance(keys[key], str):
                raise SpecError(f"{source}: {key}: must be text, got {keys[key]!r}")
            grid[key] = keys[key]
    _check_count(source, grid)
    return grid, _partition(source, keys, grid)


def cell_count(grid: Mapping[str, Any]) -> int:
    """How many cells a canonical grid has (without making them)."""
    count = 0
    for kind, axes in (("mdp", MDP_AXES), ("env", ENV_AXES)):
        if grid.get(kind):
            count += math.prod(len(grid[axis]) for axis in axes)
    return count


def _check_count(source: str, grid: Mapping[str, Any]) -> None:
    """Refuse (one line, :class:`~pgvar.budget.BudgetError`) a grid whose cells would not fit in
    memory: the driver holds every cell's configuration, about ``CELL_BYTES`` each."""
    from pgvar import budget

    count = cell_count(grid)
    budget.check(
        f"{source}: {count:,} cells",
        memory=CELL_BYTES * count,
        hint="split the grid into several specs (and folders)",
    )


def _entropies(source: str, value: Any) -> list[float]:
    from pgvar.mdp import REWARD_LIMIT

    values = _as_list(source, "entropy", value)
    many = isinstance(value, (list, tuple))
    checked = [
        check_number(
            item, f"{source}: entropy[{i}]" if many else f"{source}: entropy", low=0, high=REWARD_LIMIT
        )
        for i, item in enumerate(values)
    ]
    return _distinct(source, "entropy", checked)


def _partition(source: str, keys: Mapping[str, Any], grid: Mapping[str, Any]) -> str | None:
    default = "mdp" if grid["mdp"] and not grid["env"] else "env" if grid["env"] and not grid["mdp"] else None
    value = keys.get("partition", default)
    if value is None or value == "none":
        return None
    if not isinstance(value, str) or value not in PARTITION_CHOICES:
        raise SpecError(
            f"{source}: partition: unknown column {value!r}; "
            f"use one of {', '.join(PARTITION_CHOICES)} or none"
        )
    return value


def cost_key(cell: Mapping[str, Any]) -> str:
    """The group whose price list (:class:`~pgvar.sweep.cost.CellCost`) a cell's cost comes from."""
    if cell.get("env") is None:
        return json.dumps(["mdp", cell["mdp"], cell["theta"], cell["entropy"]])
    return json.dumps(
        ["env", cell["env"], cell["policy"], cell["policy_seed"], cell["weights"], cell["entropy"]]
    )


def check_cells(source: str, base_dir: str, grid: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """Check what needs the MDPs and environments: every MDP (built-in, file or gym:), every theta
    for every MDP, the estimators at every entropy, every environment and policy; price each group
    of cells (:mod:`pgvar.sweep.cost`). Returns (the digest of every file named, ``key:value`` ->
    SHA-256; the price lists by :func:`cost_key`). One :class:`SpecError` line naming the field."""
    from pgvar.budget import BudgetError
    from pgvar.estimators import parse_estimators
    from pgvar.mdpfile import resolve_mdp
    from pgvar.policy import parse_theta
    from pgvar.sweep.cost import network_cost, tabular_cost

    specs = {}
    for entropy in grid["entropy"]:
        try:
            specs[entropy] = parse_estimators(grid["estimators"], entropy=entropy, group=None)
        except PgvarError as error:
            raise SpecError(f"{source}: estimators: {_strip(error, 'estimators')}") from None
    digests: dict[str, str] = {}
    costs: dict[str, Any] = {}
    for mdp in grid["mdp"]:
        try:
            model = resolve_mdp(local_path("mdp", mdp, base_dir))
        except BudgetError:
            raise
        except PgvarError as error:
            raise SpecError(f"{source}: mdp {mdp!r}: {_strip(error, 'mdp')}") from None
        _digest(digests, "mdp", mdp, base_dir)
        for theta in grid["theta"]:
            try:
                logits = parse_theta(local_path("theta", theta, base_dir), model)
            except PgvarError as error:
                raise SpecError(
                    f"{source}: theta {theta!r} for mdp {mdp!r}: {_strip(error, 'theta')}"
                ) from None
            _digest(digests, "theta", theta, base_dir)
            for entropy in grid["entropy"]:
                key = cost_key({"mdp": mdp, "theta": theta, "entropy": entropy})
                costs[key] = _priced(source, f"mdp {mdp!r}", tabular_cost, model, logits, specs[entropy])
    for env in grid["env"]:
        for policy, seed, weights in itertools.product(grid["policy"], grid["policy_seed"], grid["weights"]):
            try:
                env_spec, network = network_for(env, policy, seed, local_path("weights", weights, base_dir))
            except PgvarError as error:
                raise SpecError(f"{source}: env {env!r}, policy {policy!r}: {error}") from None
            if weights is not None:
                _digest(digests, "weights", weights, base_dir)
            for entropy in grid["entropy"]:
                cell = {
                    "env": env,
                    "policy": policy,
                    "policy_seed": seed,
                    "weights": weights,
                    "entropy": entropy,
                }
                costs[cost_key(cell)] = _priced(
                    source, f"env {env!r}", network_cost, env_spec, network, specs[entropy]
                )
    return digests, costs


def _priced(source: str, what: str, price, *args):
    """``price(*args)``, its refusals prefixed with the spec and the field (budget refusals stay
    :class:`~pgvar.budget.BudgetError`)."""
    from pgvar.budget import BudgetError

    try:
        return price(*args)
    except BudgetError as error:
        raise BudgetError(f"{source}: {what}: {error}") from None
    except PgvarError as error:
        raise SpecError(f"{source}: {what}: {error}") from None


def check_budget(spec: Spec) -> None:
    """Every distinct cell (seeds aside) within the current limits, before any work starts."""
    from pgvar.sweep.cost import check_cell

    seen = set()
    for cell in iter_cells({**spec.grid, "seed": spec.grid["seed"][:1]}, spec.digests):
        key = (cost_key(cell), cell["N"], cell["batches"], cell["reference_episodes"])
        if key not in seen:
            seen.add(key)
            where = cell["mdp"] if cell["env"] is None else f"{cell['env']} {cell['policy']}"
            what = f"{spec.source}: the cell {where} N={cell['N']} batches={cell['batches']}"
            check_cell(what, spec.costs[cost_key(cell)], cell)


def _strip(error: Exception, prefix: str) -> str:
    text = " ".join(str(error).split())
    return text[len(prefix) + 2 :] if text.startswith(f"{prefix}: ") else text


def _digest(digests: dict[str, str], key: str, value: str, base_dir: str) -> None:
    path = local_path(key, value, base_dir)
    if is_file_value(key, value) and path is not None and os.path.isfile(path):
        digests[f"{key}:{value}"] = file_digest(path)


def network_for(env: str, policy: str, policy_seed: int, weights: str | None):
    """(environment spec, policy) as ``pgvar variance --env`` builds them; one line without the gym extra."""
    try:
        from pgvar.torch.policies import make_network
    except ImportError as missing:
        raise SpecError(
            f"env: needs the gym extra ({missing.name} is missing): pip install 'pgvar[gym]'"
        ) from None
    return make_network(env, policy, policy_seed, weights)


def estimate(spec: Spec, todo: list[dict[str, Any]] | None = None):
    """The :class:`~pgvar.sweep.cost.Estimate` of running ``todo`` (default: every cell) of ``spec``."""
    from pgvar.sweep.cost import Estimate, cell_seconds

    cells = spec.cells() if todo is None else todo
    seconds = [cell_seconds(spec.costs[cost_key(cell)], cell) for cell in cells] if spec.costs else []
    total = len(spec.cells()) if todo is not None else len(cells)
    return Estimate(total, len(cells), float(sum(seconds)), max(seconds, default=0.0))


def load_spec(path: str | os.PathLike, data: Mapping[str, Any] | None = None) -> Spec:
    """Read and check a spec file (or ``data``, read as if it were that file): every key and value,
    every MDP, theta, estimator, environment and policy, before any work starts."""
    source = os.fspath(path)
    base_dir = os.path.dirname(os.path.abspath(source))
    grid, partition = parse_grid(os.path.basename(source), read_spec_file(source) if data is None else data)
    digests, costs = check_cells(os.path.basename(source), base_dir, grid)
    spec = Spec(os.path.basename(source), base_dir, grid, partition, digests, costs)
    check_budget(spec)
    return spec


def spec_from_canonical(canonical: Mapping[str, Any], source: str = "_sweep.json") -> Spec:
    """A :class:`Spec` from what ``_sweep.json`` keeps (no file is read: its cells, not its checks)."""
    return Spec(source, "", dict(canonical["grid"]), canonical["partition"], dict(canonical["files"]))
