"""pgvar report: figure files and a self-contained HTML page."""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_cli import run

from pgvar import envs, kpi, report, vocabulary
from pgvar.errors import SpecError
from pgvar.estimators import parse_estimator
from pgvar.exact import exact_gradient, exact_moments, unroll
from pgvar.groups import GroupMomentsError
from pgvar.montecarlo.groups import estimator_moments
from pgvar.policy import uniform_theta
from pgvar.report import COMPARED_BASELINES, figure_baselines


def test_report_writes_figures_and_html(tmp_path, capsys):
    out = tmp_path / "report"
    code, printed, err = run(["report", "--mdp", "repayment", "--out", str(out), "--batches", "20"], capsys)
    assert code == 0, err
    names = ("variance_by_estimator", "variance_against_n", "baselines", "gae_lambda", "group_baselines")
    for name in (*names, "learning_curves"):
        for suffix in ("png", "svg"):
            assert (out / f"{name}.{suffix}").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6
    assert "RLOO (leave-one-out baseline) is unbiased" in page
    assert "FAIL" in page and "reward-to-go lowers the variance" in page  # repayment breaks that claim
    assert "report.html" in printed


def test_report_never_overwrites_without_asking(tmp_path, capsys):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run(["report", "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_report_takes_its_names_from_the_vocabulary():
    assert report.LESSON_FOUR is vocabulary.LESSON_FOUR  # the one list, not a copy
    single = ("learned", *vocabulary.GROUP_BASELINES)  # the group baselines have a figure of their own
    assert list(COMPARED_BASELINES) == [kind for kind in vocabulary.BASELINE_KINDS if kind not in single]
    assert COMPARED_BASELINES[0] == "none" and "running-value" in COMPARED_BASELINES


def test_baseline_figure_has_a_bar_per_kind_and_names_ties():
    mdp = envs.make("repayment")
    theta = uniform_theta(mdp)
    figure, text = figure_baselines(mdp, theta, unroll(mdp, theta))
    ax = figure.figure.axes[0]
    assert [tick.get_text() for tick in ax.get_xticklabels()] == list(COMPARED_BASELINES)
    assert len(ax.patches) == 2 * len(COMPARED_BASELINES)  # one bar per kind and weight
    # at its exact limit the running mean per state is V(s): the two tie, and both are named
    rtg = text.split("rtg: ")[1]
    assert rtg.startswith("best baseline running-value = value") and "x the best" not in rtg
    assert "return: best baseline running = optimal" in text and "6.33x the best" in text


def test_report_out_is_checked_before_anything_is_computed_or_created(tmp_path, monkeypatch):
    mdp = envs.make("lesson")
    theta = uniform_theta(mdp)
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    for out, message in (
        (a_file, "exists and is not a folder"),
        (tmp_path / "no" / "such", f"{tmp_path / 'no'} is not an existing folder"),
        (tmp_path / ("x" * 300), "File name too long"),
    ):
        with pytest.raises(SpecError, match=r"^--out: ") as info:
            report.build_report(mdp, theta, out, learning=False)
        assert message in str(info.value)

    def broken(*_args, **_kwargs):
        raise SpecError("report: the exact variances are not finite numbers")

    monkeypatch.setattr(report, "figure_gae", broken)
    with pytest.raises(SpecError, match="not finite"):
        report.build_report(mdp, theta, tmp_path / "new", batches=2, learning=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # a failed report leaves nothing


def test_the_group_figure_draws_exact_values_against_k_beside_the_single_episode_baselines():
    mdp = envs.make("prompts")
    theta = uniform_theta(mdp)
    chain = unroll(mdp, theta)
    figure = report.figure_groups(mdp, theta, chain)
    variance_ax, bias_ax, angle_ax = figure.figure.axes
    lines = {bars.get_label(): bars.lines[0] for bars in bias_ax.containers}  # each an ErrorbarContainer
    grad_norm = float(np.linalg.norm(exact_gradient(mdp, theta)))
    loo, group = (lines[name].get_ydata() for name in ("rtg+loo", "rtg+group"))
    np.testing.assert_allclose(loo, 0.0, atol=1e-12)  # RLOO is unbiased
    np.testing.assert_allclose(group, grad_norm / np.array(report.GROUP_SIZES), rtol=1e-9)  # |∇J| / K
    angles = {bars.get_label(): bars.lines[0].get_ydata() for bars in angle_ax.containers}
    np.testing.assert_allclose(angles["rtg+loo"], 0.0, atol=1e-6)  # degrees
    np.testing.assert_allclose(angles["rtg+group"], 0.0, atol=1e-6)  # a bias along ∇J only rescales it
    # GRPO's std: no turn at K = 2 (0/1 rewards: a rescaled group mean), then a growing one
    std = parse_estimator("rtg+group-std", group=4)
    cosine = kpi.gradient_cosine(
        exact_moments(mdp, theta, std, chain=chain).mean, exact_gradient(mdp, theta).ravel()
    )
    assert angles["rtg+group-std"][0] < 1e-6
    assert angles["rtg+group-std"][1] == pytest.approx(math.degrees(math.acos(cosine)), rel=1e-5)  # 0.855°
    assert list(angles["rtg+group-std"]) == sorted(angles["rtg+group-std"])
    flat = [
        line for line in variance_ax.get_lines() if line.get_label().startswith(("rtg+lesson", "rtg+value"))
    ]
    assert len(flat) == 2
    assert "Estimated from sampled groups" not in figure.caption  # prompts is enumerable: all exact
    lesson = envs.make("lesson")
    caption = report.figure_groups(
        lesson, uniform_theta(lesson), unroll(lesson, uniform_theta(lesson))
    ).caption
    assert "Estimated from sampled groups" in caption and "rtg+group-std" in caption  # noisy rewards


def test_a_sampled_group_point_matches_estimator_moments_and_its_intervals_cover_the_exact_values(
    monkeypatch,
):
    """On prompts the exact values are known; refuse them to the figure, and its sampled point (the
    groups of estimator_moments with the same seed) must lie within 4 of its own standard errors of
    them: the variance's interval from kpi, the bias's and angle's from the delta method, the angle
    without the share that noise adds across grad J (else it would sit about 2 degrees high)."""
    mdp = envs.make("prompts")
    theta = uniform_theta(mdp)
    chain = unroll(mdp, theta)
    spec = parse_estimator("rtg+group-std", group=8)
    exact = exact_moments(mdp, theta, spec, chain=chain)
    grad = exact_gradient(mdp, theta).ravel()

    def refused(*_args, **_kwargs):
        raise GroupMomentsError("refused for the test")

    monkeypatch.setattr(report, "exact_moments", refused)
    point = report.group_point(mdp, theta, spec, chain, seed=3)
    assert point.sampled and point.groups == 10_000
    monkeypatch.setattr("pgvar.montecarlo.groups.exact_moments", refused)
    same = estimator_moments(mdp, theta, spec, chain, seed=3)  # the numbers pgvar exact prints
    assert same.method == "monte-carlo" and point.variance == pytest.approx(same.variance_trace, rel=1e-12)
    assert point.variance_ci95 == pytest.approx(same.variance_ci95, rel=1e-12)
    low, high = point.variance_ci95
    z_variance = abs(point.variance - exact.variance_trace) / ((high - low) / (2 * kpi.Z95))
    z_bias = abs(point.bias - kpi.bias_norm(exact.mean, grad)) / (point.bias_half / kpi.Z95)
    exact_angle = kpi.gradient_angle(exact.mean, grad)  # 4.32 degrees
    z_angle = abs(point.angle - exact_angle) / (point.angle_half / kpi.Z95)
    assert max(z_variance, z_bias, z_angle) < 4, (z_variance, z_bias, z_angle)
    assert point.angle - point.angle_half > 0  # the turn is resolved by 10,000 groups of 8


def test_the_angle_keeps_what_arccos_rounds_away():
    grad = np.array([1.0, 0.0])
    assert kpi.gradient_angle(np.array([2.0, 2e-9]), grad) == pytest.approx(math.degrees(1e-9), rel=1e-6)
    assert kpi.gradient_angle(np.array([-1.0, 1.0]), grad) == pytest.approx(135.0)
    assert kpi.gradient_angle(np.zeros(2), grad) is None and kpi.gradient_angle(grad, np.zeros(2)) is None
