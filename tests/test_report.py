"""pgvar report: figure files and a self-contained HTML page."""

from __future__ import annotations

from test_cli import run


def test_report_writes_figures_and_html(tmp_path, capsys):
    out = tmp_path / "report"
    code, printed, err = run(["report", "--mdp", "repayment", "--out", str(out), "--batches", "20"], capsys)
    assert code == 0, err
    for name in ("variance_by_estimator", "variance_against_n", "baselines", "gae_lambda", "learning_curves"):
        for suffix in ("png", "svg"):
            assert (out / f"{name}.{suffix}").stat().st_size > 1000
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert "FAIL" in page and "reward-to-go lowers the variance" in page  # repayment breaks that claim
    assert "report.html" in printed


def test_report_never_overwrites_without_asking(tmp_path, capsys):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run(["report", "--out", str(out)], capsys)
    assert code == 2 and "--overwrite" in err
    assert (out / "notes.txt").read_text() == "mine"
