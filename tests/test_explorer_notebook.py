"""The explorer in a real notebook: nbclient runs a cell that displays the app in a fresh kernel, and
the test reads what the cell displayed (Panel's bundle, with the lesson's widget and its first frame,
and no reference to a CDN)."""

from __future__ import annotations

import json

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


def test_a_notebook_displays_the_explorer(tmp_path):
    cells = [
        nbformat.v4.new_code_cell("from pgvar.explorer import app\nlayout = app('lesson')\nlayout"),
        nbformat.v4.new_code_cell(
            "import json\nfrom pgvar.explorer.page import LessonWidget\n"
            "widget = next(o for o in layout.select(LessonWidget))\n"
            "print(json.dumps({'mdp': widget.view.get('mdp'), 'query': widget.query}))"
        ),
    ]
    notebook = nbformat.v4.new_notebook(cells=cells)
    client = nbclient.NotebookClient(
        notebook, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    shown = notebook.cells[0].outputs
    bundles = [o["data"] for o in shown if o["output_type"] in ("display_data", "execute_result")]
    mimes = {mime for bundle in bundles for mime in bundle}
    assert "application/vnd.holoviews_exec.v0+json" in mimes, mimes
    text = json.dumps(bundles)
    assert "pgvarLesson" in text  # the lesson's widget, its code inline in the bundle
    assert "cdn.bokeh.org" not in text and "cdn.holoviz.org" not in text  # inline resources only
    printed = "".join(o.get("text", "") for o in notebook.cells[1].outputs if o["output_type"] == "stream")
    state = json.loads(printed)
    assert state["mdp"] == "lesson" and state["query"].startswith("?mdp=lesson&rtg=0")
