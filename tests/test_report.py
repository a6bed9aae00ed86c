"""pgvar report: figure files and a self-contained HTML page."""

from __future__ import annotations

import numpy as np
import pytest
from test_cli import run

from pgvar import envs, report, vocabulary
from pgvar.errors import SpecError
from pgvar.exact import exact_gradient, unroll
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
    figure = report.figure_groups(mdp, theta, unroll(mdp, theta))
    variance_ax, bias_ax = figure.figure.axes
    lines = {bars.get_label(): bars.lines[0] for bars in bias_ax.containers}  # each an ErrorbarContainer
    grad_norm = float(np.linalg.norm(exact_gradient(mdp, theta)))
    loo, group = (lines[name].get_ydata() for name in ("rtg+loo", "rtg+group"))
    np.testing.assert_allclose(loo, 0.0, atol=1e-12)  # RLOO is unbiased
    np.testing.assert_allclose(group, grad_norm / np.array(report.GROUP_SIZES), rtol=1e-9)  # |∇J| / K
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
