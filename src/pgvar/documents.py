"""The JSON documents of ``pgvar variance``, defined once: the command line prints them, and a sweep
stores one row per result with the same keys, so a sweep's table and ``--json`` always agree.

Every value is plain and strict-JSON-ready (:func:`plain`): NumPy scalars and arrays become Python
values, and a number that does not exist (NaN, a ratio to a zero variance) becomes None.
"""

from __future__ import annotations

import math

import numpy as np

from pgvar.estimators import EstimatorSpec
from pgvar.kpi import TARGET_COSINE


def plain(value: object) -> object:
    """``value`` as strict JSON can hold it: NumPy scalars and arrays as Python values, and numbers
    that do not exist (NaN, an infinite ratio) as None."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def estimator_keys(spec: EstimatorSpec) -> dict[str, str]:
    """How a document names an estimator: as typed, canonically, and by the lesson's name."""
    return {"estimator": spec.name, "spec": spec.canonical, "label": spec.label}


def _kpi_keys(reading) -> dict[str, object]:
    """The keys every reading has, tabular or neural: the KPI, its interval and its ratios."""
    return {
        **estimator_keys(reading.spec),
        "N": reading.n,
        "variance_trace": reading.variance_trace,
        "ci95": list(reading.ci95),
        "ci95_reliable": reading.reliable,
        "exact_variance_trace": reading.exact_variance_trace,
        "vs_vanilla_n1": reading.vs_vanilla_n1,
        "vs_vanilla": reading.vs_vanilla,
        "snr": reading.snr,
    }


def variance_result(reading) -> dict[str, object]:
    """One estimator at one N of a tabular study (``pgvar.studies.VarianceReading``): the KPI keys,
    the group size K (1 without a group baseline) and, from the exact mean where it is known,
    |E g - grad J| and cos(E g, grad J)."""
    return plain({
        **_kpi_keys(reading),
        "cosine_to_exact": reading.cosine_to_exact,
        "group": reading.spec.group,
        "exact_bias": reading.exact_bias,
        "exact_cosine": reading.exact_cosine,
    })  # fmt: skip


def variance_document(study, theta: np.ndarray, entropy: float) -> dict[str, object]:
    """``pgvar variance --json`` for a tabular study (``pgvar.studies.Study``) at logits ``theta``."""
    return plain({
        "mdp": study.mdp.name,
        "batches": study.batches,
        "seed": study.seed,
        "theta": theta,
        "entropy": entropy,
        "results": [variance_result(r) for r in study.readings],
        "slopes": study.slopes,
        "sampling": "steps" if study.sampled_paths is None else "paths",
        "paths": study.sampled_paths,
        "exact_note": study.exact_note,
    })  # fmt: skip


def network_variance_result(reading, exact_truth: bool) -> dict[str, object]:
    """One estimator at one N of a neural policy's study (``pgvar.torch.study.NetworkReading``): the
    tabular keys (``cosine_to_exact`` where the true gradient is exact) and the deep-RL ones."""
    return plain({
        **_kpi_keys(reading),
        "cosine_to_exact": reading.cosine_to_true if exact_truth else None,
        "cosine_to_true": reading.cosine_to_true,
        "pairwise_cosine": reading.pairwise_cosine,
        "noise_scale": {
            "value": reading.noise_scale,
            "ci95": None if reading.noise_scale_ci is None else list(reading.noise_scale_ci),
            f"batch_for_cosine_{TARGET_COSINE:g}": reading.batch_for_cosine,
        },
        "layers": reading.layer_traces,
    })  # fmt: skip


def network_variance_document(study, entropy: float) -> dict[str, object]:
    """``pgvar variance --env ... --json`` (``pgvar.torch.study.NetworkStudy``)."""
    reference = study.reference
    exact_truth = study.true_source == "exact"
    return plain({
        "env": study.env.text,
        "policy": study.policy,
        "parameters": study.parameters,
        "batches": study.batches,
        "seed": study.seed,
        "entropy": entropy,
        "results": [network_variance_result(r, exact_truth) for r in study.readings],
        "slopes": study.slopes,
        "sampling": "episodes",
        "paths": None,
        "exact_note": study.exact_note,
        "true_gradient": study.true_source,
        "reference": None if reference is None else {
            "episodes": reference.episodes,
            "norm": reference.norm,
            "standard_error": reference.standard_error,
        },
    })  # fmt: skip
