"""One cell's rows: what ``pgvar variance --json`` prints for the cell's configuration, one row per
estimator, with the configuration beside it.

The measurement and the document are the command's own: :func:`pgvar.studies.variance_study` for
``mdp`` cells, :func:`pgvar.torch.study.network_variance_study` for ``env`` cells, called with the
same arguments, and :mod:`pgvar.documents` for the JSON. Each row holds every key of the document
(the top-level keys, then the estimator's entry of ``results``) under the same name, except where a
key names an option whose value the row already holds as the user spelled it: the document's
``mdp``, ``theta``, ``env`` and ``policy`` (the MDP's name, the logits, the parsed environment and
policy) are ``mdp_resolved``, ``theta_resolved`` (the logits as JSON text), ``env_resolved`` and
``policy_resolved`` (see ``RESOLVED``). ``slopes`` is left out: a cell has one N, so it is always
empty (the slope across N is a query over cells). Numbers that do not exist (NaN, an infinite
ratio) are null, as in the JSON.

Rows of a cell whose study is refused (a :class:`~pgvar.errors.PgvarError`, the budget's included)
or whose result is not a finite number carry the one-line message in ``error``, as the command would
print it; ``pgvar_version`` and ``cell_seconds`` (the cell's run time) close every row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from pgvar import __version__
from pgvar.documents import estimator_keys, network_variance_document, plain, variance_document
from pgvar.errors import PgvarError
from pgvar.sweep.spec import CONFIG_COLUMNS, local_path

RESOLVED = {
    "mdp": "mdp_resolved",
    "theta": "theta_resolved",
    "env": "env_resolved",
    "policy": "policy_resolved",
}
NOT_FINITE = (
    "the result is not a finite number (floating-point overflow); scale the rewards down or move the "
    "logits toward 0"
)


def _finite(*values: object) -> bool:
    return all(value is None or np.isfinite(np.asarray(value, dtype=float)).all() for value in values)


def tabular_document(cell: Mapping[str, Any], base_dir: str) -> dict[str, Any]:
    """``pgvar variance --json --mdp MDP --theta THETA --estimators E --N N --batches B --seed S
    --entropy H`` for the cell, as a dict; raises what the command would report."""
    from pgvar.estimators import parse_estimators
    from pgvar.mdpfile import resolve_mdp
    from pgvar.policy import parse_theta
    from pgvar.studies import variance_study

    model = resolve_mdp(local_path("mdp", cell["mdp"], base_dir))
    logits = parse_theta(local_path("theta", cell["theta"], base_dir), model)
    specs = parse_estimators(cell["estimators"], entropy=cell["entropy"], group=None)
    study = variance_study(model, logits, specs, [cell["N"]], cell["batches"], cell["seed"])
    for r in study.readings:
        if not _finite(r.variance_trace, r.exact_variance_trace):
            raise PgvarError(f"variance: {r.spec.name} at N = {r.n}: {NOT_FINITE}")
    return variance_document(study, logits, cell["entropy"])


def network_document(cell: Mapping[str, Any], base_dir: str) -> dict[str, Any]:
    """``pgvar variance --json --env ENV --policy P --policy-seed PS [--weights W] --estimators E --N N
    --batches B --seed S --entropy H --reference-episodes R`` for the cell, as a dict. PyTorch runs
    on one thread here, so that every engine and worker count gives the same bits."""
    from pgvar.estimators import parse_estimators
    from pgvar.sweep.spec import network_for
    from pgvar.torch.policies import torch_threads
    from pgvar.torch.study import network_variance_study

    with torch_threads(1):
        weights = local_path("weights", cell["weights"], base_dir)
        spec, network = network_for(cell["env"], cell["policy"], cell["policy_seed"], weights)
        specs = parse_estimators(cell["estimators"], entropy=cell["entropy"], group=None)
        study = network_variance_study(spec, network, specs, [cell["N"]], cell["batches"], cell["seed"],
                                       reference_episodes=cell["reference_episodes"])  # fmt: skip
    for r in study.readings:
        if not _finite(r.variance_trace):
            raise PgvarError(f"variance: {r.spec.name} at N = {r.n}: {NOT_FINITE}")
    return network_variance_document(study, specs[0].entropy)


def document_rows(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A ``pgvar variance --json`` document as rows: its top-level keys (``RESOLVED`` renamed, the
    logits as JSON text, ``slopes`` left out) joined to each entry of ``results``."""
    document = plain(dict(document))
    top = {
        RESOLVED.get(key, key): value for key, value in document.items() if key not in ("results", "slopes")
    }
    if "theta_resolved" in top:
        top["theta_resolved"] = json.dumps(top["theta_resolved"])
    return [{**top, **result} for result in document["results"]]


def cell_rows(cell: Mapping[str, Any], base_dir: str = ".") -> list[dict[str, Any]]:
    """The rows of one cell (a dict with ``cell`` and every option column, as :class:`Spec` makes
    them): one per estimator, the configuration first, then the JSON's keys, then ``error``,
    ``pgvar_version`` and ``cell_seconds``. A pure function of the cell, but for ``cell_seconds``."""
    from pgvar.estimators import parse_estimators

    start = time.perf_counter()
    config = {"cell": cell["cell"], **{key: cell[key] for key in CONFIG_COLUMNS}}
    try:
        document = (
            tabular_document(cell, base_dir) if cell.get("env") is None else network_document(cell, base_dir)
        )
        rows, error = document_rows(document), None
    except PgvarError as failure:  # the one line `pgvar variance` would print; the budget's refusals too
        specs = parse_estimators(cell["estimators"], entropy=cell["entropy"], group=None)
        rows, error = [{**estimator_keys(s), "N": cell["N"]} for s in specs], " ".join(str(failure).split())
    seconds = time.perf_counter() - start
    return [
        {**config, **row, "error": error, "pgvar_version": __version__, "cell_seconds": seconds}
        for row in rows
    ]
