"""``pgvar report``: a figure set and a self-contained HTML page for one MDP and policy.

Every number comes from the core (``exact``, ``montecarlo``, ``claims``, ``train``, ``curves``); this
module only draws. The names of the lesson's configurations and of the baseline kinds come from
:mod:`pgvar.vocabulary`. Figures are written as PNG and SVG; the HTML page embeds the PNGs, so it can be
mailed alone.
"""

from __future__ import annotations

import base64
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pgvar import kpi
from pgvar.budget import BudgetError
from pgvar.errors import SpecError
from pgvar.estimators import EstimatorSpec, parse_estimator, parse_estimators
from pgvar.exact import Chain, chain_gradient, exact_gradient, exact_moments, unroll
from pgvar.groups import GroupMomentsError
from pgvar.mdp import TabularMDP
from pgvar.montecarlo.groups import GroupSampler, estimate_groups
from pgvar.studies import variance_study
from pgvar.vocabulary import BASELINE_KINDS, GROUP_BASELINES, LESSON_COLOURS, LESSON_FOUR

#: The baseline kinds the report compares: every kind with an exact value or limit (``learned`` needs
#: a table that only training fits, so it is left out).
COMPARED_BASELINES = tuple(kind for kind in BASELINE_KINDS if kind not in ("learned", *GROUP_BASELINES))
GAE_LAMBDAS = tuple(np.round(np.linspace(0.0, 1.0, 11), 2))


_STYLE = (
    "body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}img{max-width:100%}"
    "td{vertical-align:top;padding:4px 8px;border-bottom:1px solid #ddd}"
    ".pass{color:#1a7f37}.fail{color:#c62828}"
)


def _section(title: str, png: bytes, caption: str) -> str:
    encoded = base64.b64encode(png).decode()
    return (
        f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
        f"src='data:image/png;base64,{encoded}'><p>{html.escape(caption)}</p>"
    )


@dataclass
class Figure:
    name: str
    title: str
    caption: str
    figure: object  # matplotlib Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_variance_by_estimator(mdp: TabularMDP, theta: np.ndarray, chain) -> Figure:
    plt = _pyplot()
    names = [*LESSON_FOUR, "rtg+value", "rtg+optimal", "gae0.95+value"]
    moments = [exact_moments(mdp, theta, parse_estimator(n), chain=chain) for n in names]
    if not all(np.isfinite([m.variance_trace, m.reward_noise, m.sampling]).all() for m in moments):
        raise SpecError(
            "report: the exact variances are not finite numbers (floating-point overflow); scale the "
            "rewards down or move the logits toward 0"
        )
    noise = [m.reward_noise for m in moments]
    sampling = [m.sampling for m in moments]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(names, sampling, label="action/transition sampling", color="#4c72b0")
    ax.bar(names, noise, bottom=sampling, label="reward noise", color="#dd8452")
    for i, m in enumerate(moments):
        ax.text(i, m.variance_trace, f"{m.variance_trace:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("exact variance of one episode's estimate (trace)")
    ax.legend()
    ax.tick_params(axis="x", rotation=20)
    fig.tight_layout()
    return Figure(
        "variance_by_estimator",
        "Variance by estimator, and its split",
        "Exact single-episode variance (trace of the covariance), split by the law of total "
        "variance into reward noise and action/transition sampling.",
        fig,
    )


def figure_variance_against_n(mdp: TabularMDP, theta: np.ndarray, batches: int, seed: int) -> Figure:
    plt = _pyplot()
    ns = [1, 2, 4, 8, 16, 32, 64, 128]
    study = variance_study(mdp, theta, parse_estimators(",".join(LESSON_FOUR)), ns, batches, seed)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in LESSON_FOUR:
        rows = [r for r in study.readings if r.spec.name == name]
        n = np.array([r.n for r in rows])
        value = np.array([r.variance_trace for r in rows])
        # at the ends of a zero-width interval (2 batches) rounding can leave an error bar at -1e-17
        low = np.maximum(value - np.array([r.ci95[0] for r in rows]), 0.0)
        high = np.maximum(np.array([r.ci95[1] for r in rows]) - value, 0.0)
        line = ax.errorbar(n, value, yerr=[low, high], fmt="o", capsize=3, label=f"{name} (Monte Carlo)")
        exact = rows[0].exact_variance_trace * rows[0].n
        ax.plot(n, exact / n, "-", color=line[0].get_color(), alpha=0.6)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size N")
    ax.set_ylabel("variance of the batch-mean gradient")
    ax.legend(fontsize=8)
    slopes = ", ".join(f"{k} {v:+.2f}" for k, v in study.slopes.items())
    fig.tight_layout()
    return Figure(
        "variance_against_n",
        "Variance against N, with the 1/N line",
        f"Points: {batches} independent batches per reading with 95% intervals; lines: exact "
        f"variance / N. Fitted slopes of log variance on log N: {slopes}.",
        fig,
    )


def figure_baselines(mdp: TabularMDP, theta: np.ndarray, chain) -> tuple[Figure, str]:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    notes = []
    for k, weight in enumerate(("return", "rtg")):
        traces = [
            exact_moments(mdp, theta, parse_estimator(f"{weight}+{b}"), chain=chain).variance_trace
            for b in COMPARED_BASELINES
        ]
        x = np.arange(len(COMPARED_BASELINES)) + (k - 0.5) * width
        ax.bar(x, traces, width, label=f"weight {weight}")
        lowest = min(traces)
        # kinds that reach the same exact variance (running-value at its limit is V) all count as best
        best = [
            kind
            for kind, t in zip(COMPARED_BASELINES, traces, strict=True)
            if np.isclose(t, lowest, rtol=1e-9)
        ]
        value = traces[COMPARED_BASELINES.index("value")]
        notes.append(
            f"{weight}: best baseline {' = '.join(best)} ({lowest:.4g}); V(s) gives {value:.4g}"
            + ("" if "value" in best else f", {value / lowest:.2f}x the best")
            + ("; V raises the variance over no baseline" if value > traces[0] else "")
        )
    ax.set_xticks(np.arange(len(COMPARED_BASELINES)), COMPARED_BASELINES, rotation=15)
    ax.set_ylabel("exact single-episode variance")
    ax.legend()
    fig.tight_layout()
    text = "; ".join(notes)
    return Figure("baselines", "Baselines compared", "Exact variance per baseline. " + text + ".", fig), text


def figure_gae(mdp: TabularMDP, theta: np.ndarray, chain, n: int) -> Figure:
    plt = _pyplot()
    grad = exact_gradient(mdp, theta).ravel()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for value in ("value", "lesson", "none"):
        bias, variance = [], []
        for lam in GAE_LAMBDAS:
            m = exact_moments(mdp, theta, parse_estimator(f"gae{lam:g}+{value}"), chain=chain)
            bias.append(float(np.linalg.norm(m.mean - grad)))
            variance.append(m.variance_trace)
        label = {"value": "V exact", "lesson": "V = running mean of G_t", "none": "V = 0"}[value]
        axes[0].plot(GAE_LAMBDAS, bias, "o-", label=label)
        axes[1].plot(GAE_LAMBDAS, np.array(bias) ** 2 + np.array(variance) / n, "o-", label=label)
    axes[0].set_xlabel("λ")
    axes[0].set_ylabel("|E g − ∇J| (bias)")
    axes[1].set_xlabel("λ")
    axes[1].set_ylabel(f"mean squared error at N = {n}")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return Figure(
        "gae_lambda",
        "GAE: bias and variance against λ",
        "Left: bias of the GAE(λ) estimate with the exact gradient as reference, for three value "
        "functions (with the exact V every λ is unbiased). Right: squared bias + variance / N.",
        fig,
    )


GROUP_SIZES = (2, 4, 8, 16)
#: The group baselines the report draws against K, each with its Okabe–Ito colour (Okabe & Ito 2008).
#: Their weight is reward-to-go, the two reference lines' weight, so that only the baseline differs
#: (with ``return`` GRPO's std keeps the direction on the lesson's MDP, by the symmetry of its steps).
GROUP_FIGURE: dict[str, str] = {"rtg+loo": "#009E73", "rtg+group": "#CC79A7", "rtg+group-std": "#E69F00"}
#: Marker and size per group baseline: RLOO's larger circles stay visible under the group mean's
#: squares where the two are drawn at the same value (an angle of 0).
GROUP_MARKERS: dict[str, tuple[str, float]] = {
    "rtg+loo": ("o", 8.0),
    "rtg+group": ("s", 5.0),
    "rtg+group-std": ("^", 6.0),
}


@dataclass(frozen=True)
class GroupPoint:
    """One group baseline at one K in the group figure.

    Attributes:
      method: ``pgvar.groups``' exact method (pairs, recursion, tuples), or "monte-carlo".
      variance: one episode's variance, K times a group mean's (``ExactMoments.variance_trace``).
      variance_ci95: its 95% interval where sampled (``kpi.variance_trace_ci`` times K), else None.
      bias: |E g - grad J| (``kpi.bias_norm``); angle: the angle between E g and grad J in degrees
        (``kpi.gradient_angle``; None where E g = 0; sampled, without the noise's share:
        :func:`_sampled_angle`).
        ``bias_half``, ``angle_half``: half-widths of their 95% intervals where sampled (1.96
        delta-method standard errors from the groups' covariance), else 0.
      groups: the groups sampled (0 where exact).
    """

    spec: EstimatorSpec
    method: str
    variance: float
    variance_ci95: tuple[float, float] | None
    bias: float
    bias_half: float
    angle: float | None
    angle_half: float
    groups: int = 0

    @property
    def sampled(self) -> bool:
        return self.method == "monte-carlo"


def group_point(
    mdp: TabularMDP, theta: np.ndarray, spec: EstimatorSpec, chain: Chain, seed: int = 0
) -> GroupPoint:
    """``spec``'s point in the group figure: exact where ``pgvar.exact`` serves it, else from the
    groups that ``montecarlo.groups.estimator_moments`` samples with this seed (the same mean and
    variance as ``pgvar exact`` prints), with 95% intervals."""
    grad = chain_gradient(chain).ravel()
    try:
        moments = exact_moments(mdp, theta, spec, chain=chain)
    except (GroupMomentsError, BudgetError):
        moments = None
    if moments is not None:
        bias, angle = kpi.bias_norm(moments.mean, grad), kpi.gradient_angle(moments.mean, grad)
        return GroupPoint(spec, moments.method, moments.variance_trace, None, bias, 0.0, angle, 0.0)
    k, groups = spec.group, estimate_groups(spec.group)
    means_gd = GroupSampler(mdp, theta, [spec]).sample(k, groups, seed).batch_means_emd[0]
    mean = means_gd.mean(axis=0)

    def half_width(slope_d: np.ndarray) -> float:  # 1.96 standard errors of slope . (mean of the groups)
        return kpi.Z95 * float(np.std(means_gd @ slope_d, ddof=1)) / math.sqrt(groups)

    bias = kpi.bias_norm(mean, grad)
    bias_half = half_width((mean - grad) / bias) if bias > 0 else 0.0
    angle, angle_half = _sampled_angle(means_gd, grad, half_width)
    low, high = kpi.variance_trace_ci(means_gd)
    return GroupPoint(
        spec, "monte-carlo", k * kpi.variance_trace(means_gd), (k * low, k * high), bias, bias_half,
        angle, angle_half, groups,
    )  # fmt: skip


def _sampled_angle(means_gd: np.ndarray, grad: np.ndarray, half_width) -> tuple[float | None, float]:
    """The angle between the groups' mean and grad J in degrees, without the noise's share, and its
    95% half-width. Noise lengthens the mean's part across grad J: E |across|^2 = |E across|^2 +
    tr Cov(across) / G, so the sampled angle of a kept direction would still show a turn; the
    estimate takes that share off. Its half-width is the delta method's (d angle / d mean = (along
    across/|across| - |across| unit) / |mean|^2); where nothing is left, the angle is 0 and the
    half-width the angle that 1.96 times the noise's share would make."""
    norm = float(np.linalg.norm(grad))
    mean = means_gd.mean(axis=0)
    if norm == 0 or not np.any(mean):
        return None, 0.0
    unit = grad / norm
    along = float(mean @ unit)
    across_d = mean - along * unit
    across = float(np.linalg.norm(across_d))
    groups = means_gd.shape[0]
    noise = max(float(np.var(means_gd, axis=0, ddof=1).sum() - np.var(means_gd @ unit, ddof=1)), 0.0) / groups
    kept = across**2 - noise
    if kept <= 0:
        return 0.0, math.degrees(math.atan2(kpi.Z95 * math.sqrt(noise), abs(along)))
    angle = math.degrees(math.atan2(math.sqrt(kept), along))
    slope_d = (along * across_d / across - across * unit) / float(mean @ mean)
    return angle, math.degrees(half_width(slope_d))


def figure_groups(mdp: TabularMDP, theta: np.ndarray, chain: Chain, seed: int = 0) -> Figure:
    """Variance, bias and angle to grad J of the group baselines (RLOO, GRPO) against the group size
    K, beside the lesson's running baseline and the exact V: exact where the groups can be
    enumerated or the recursion serves, else estimated from sampled groups with 95% intervals."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    points = {
        text: [group_point(mdp, theta, parse_estimator(text, group=k), chain, seed) for k in GROUP_SIZES]
        for text in GROUP_FIGURE
    }
    for text, row in points.items():
        marker, size = GROUP_MARKERS[text]
        style = {"fmt": f"{marker}-", "markersize": size, "color": GROUP_FIGURE[text], "capsize": 3}
        low = [p.variance - p.variance_ci95[0] if p.variance_ci95 else 0.0 for p in row]
        high = [p.variance_ci95[1] - p.variance if p.variance_ci95 else 0.0 for p in row]
        variance = np.array([p.variance for p in row])
        axes[0].errorbar(GROUP_SIZES, variance, yerr=[low, high], label=text, **style)
        bias = np.array([p.bias for p in row])
        axes[1].errorbar(GROUP_SIZES, bias, [p.bias_half for p in row], label=text, **style)
        angles = np.array([np.nan if p.angle is None else p.angle for p in row])
        axes[2].errorbar(GROUP_SIZES, angles, [p.angle_half for p in row], label=text, **style)
    references = {}
    for text, style in (("rtg+lesson", "--"), ("rtg+value", ":")):
        references[text] = exact_moments(mdp, theta, parse_estimator(text), chain=chain).variance_trace
        label = f"{text}: {BASELINE_KINDS[parse_estimator(text).baseline]} (no groups)"
        axes[0].axhline(
            references[text],
            linestyle=style,
            color=LESSON_COLOURS["rtg+lesson"] if text == "rtg+lesson" else "#000000",
            label=label,
        )
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(GROUP_SIZES, [str(k) for k in GROUP_SIZES])
        ax.set_xlabel("group size K (episodes per start state)")
    axes[0].set_ylabel("variance of one episode's estimate (trace)")
    axes[0].set_ylim(bottom=0)
    axes[1].set_ylabel("|E g − ∇J| (bias)")
    axes[2].set_ylabel("angle between E g and ∇J (degrees)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    estimated = [text for text, row in points.items() if any(p.sampled for p in row)]
    fewest = min((p.groups for row in points.values() for p in row if p.sampled), default=0)
    how = (
        f"Estimated from sampled groups ({fewest:,} "
        "or more per K; error bars: 95% intervals, the variance's a scaled chi-square, the bias's and "
        "angle's 1.96 delta-method standard errors; the angle without the share that noise adds "
        f"across ∇J): {', '.join(estimated)}. "
        if estimated
        else ""
    )
    tie = "; here the two coincide" if math.isclose(*references.values(), rel_tol=1e-9) else ""
    return Figure(
        "group_baselines",
        "Group baselines (RLOO, GRPO) against the group size K",
        "Left: variance of one episode's estimate (K times the variance of a group's mean gradient, so a "
        "batch of N has variance / N) for the leave-one-out baseline (RLOO), the group mean (GRPO, Dr. "
        "GRPO) and the group mean and std (GRPO), all with reward-to-go, beside the lesson's running "
        f"baseline and the exact V(s), which need no groups{tie}. Middle: bias, zero for RLOO and "
        "|∇J| / K for the group mean, which is RLOO's estimate times (K − 1)/K episode by episode (so "
        "its variance is ((K − 1)/K)² RLOO's). Right: the angle between E g and ∇J: 0 where a bias only "
        "rescales the step (the group mean), above 0 where the std normalisation turns it. "
        + how
        + "docs/groups.md.",
        fig,
    )


def learning_curves(mdp: TabularMDP, theta: np.ndarray, out: Path, seed: int) -> tuple[Path, str]:
    """Learning curves of the lesson's four estimators (``pgvar.train``), written as PNG + SVG
    (``pgvar.curves``)."""
    from pgvar.curves import plot
    from pgvar.train import TrainConfig, train

    config = TrainConfig(lr=0.1, n=8, updates=60, runs=5, seed=seed)
    result = train(mdp, list(LESSON_FOUR), config, theta)
    png = next(path for path in plot(result, out / "learning_curves") if path.suffix == ".png")
    caption = (
        f"Stochastic gradient ascent, lr {config.lr}, N = {config.n}, {config.updates} updates, "
        f"{config.runs} runs per estimator: mean and 95% band over runs; dashed: the exact gradient."
    )
    return png, caption


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse (one-line :class:`SpecError`) an ``out`` that is a file, a non-empty folder without
    ``overwrite``, or a new folder whose parent does not exist (only the last folder is created)."""
    try:
        if out.exists() and not out.is_dir():
            raise SpecError(f"--out: {out} exists and is not a folder; give a folder for the report")
        if out.is_dir():
            if any(out.iterdir()) and not overwrite:
                raise SpecError(f"--out: {out} is not empty; pass --overwrite to replace its files")
            return
        parent = out.absolute().parent
        if not parent.is_dir():
            raise SpecError(
                f"--out: {out.parent} is not an existing folder; create it first (the report creates "
                f"only the last folder, {out.name})"
            )
    except OSError as err:  # a name too long, a folder that cannot be listed
        raise SpecError(f"--out: cannot use {out}: {err.strerror}") from None


def build_report(
    mdp: TabularMDP,
    theta: np.ndarray,
    out: Path,
    *,
    batches: int = 60,
    seed: int = 0,
    n: int = 16,
    overwrite: bool = False,
    learning: bool = True,
) -> Path:
    """Write the figures (PNG + SVG) and ``report.html`` into ``out``; return the HTML path.

    ``out`` is a folder: an empty or new one (only its last part is created, its parent must exist),
    or one whose files may be replaced with ``overwrite``. It is created only once every figure is
    computed, so a report that fails leaves nothing behind."""
    out = Path(out)
    check_out(out, overwrite)
    chain = unroll(mdp, theta)
    figures = [
        figure_variance_by_estimator(mdp, theta, chain),
        figure_variance_against_n(mdp, theta, batches, seed),
    ]
    baseline_figure, _ = figure_baselines(mdp, theta, chain)
    figures += [baseline_figure, figure_gae(mdp, theta, chain, n), figure_groups(mdp, theta, chain, seed)]
    plt = _pyplot()
    try:
        out.mkdir(exist_ok=True)
    except OSError as err:
        for fig in figures:
            plt.close(fig.figure)
        raise SpecError(f"--out: cannot create {out}: {err.strerror}") from None
    sections = []
    for fig in figures:
        png = io.BytesIO()
        fig.figure.savefig(png, format="png", dpi=110)
        (out / f"{fig.name}.png").write_bytes(png.getvalue())
        fig.figure.savefig(out / f"{fig.name}.svg", format="svg")
        plt.close(fig.figure)
        sections.append(_section(fig.title, png.getvalue(), fig.caption))
    if learning:
        png_path, caption = learning_curves(mdp, theta, out, seed)
        sections.append(_section("Learning curves", png_path.read_bytes(), caption))
    from pgvar.claims import verify_groups, verify_lesson

    claims, summary = verify_lesson(mdp, theta, seed)
    rows = "".join(
        f"<tr><td class='{'pass' if c.passed else 'fail'}'>{'PASS' if c.passed else 'FAIL'}</td>"
        f"<td>{html.escape(c.claim)}</td><td>{html.escape(c.detail)}</td></tr>"
        for c in [*claims, *verify_groups(mdp, theta, seed)]
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>pgvar report: {html.escape(mdp.name)}</title><style>{_STYLE}</style></head>
<body><h1>pgvar report: {html.escape(mdp.name)}</h1><p>{html.escape(mdp.description)}</p>
<p>theta = {html.escape(np.array2string(theta, precision=3))}</p>
{"".join(sections)}<h2>The claims on this MDP</h2><table>{rows}</table><p>{html.escape(summary)}</p>
</body></html>"""
    path = out / "report.html"
    path.write_text(page)
    return path
