"""Lessons run as notebooks in a real Jupyter kernel, as a learner opens them.

jupytext reads a lesson's percent-format .py as a notebook, nbclient executes it cell by cell in
an ipykernel (a notebook runs a lesson in quick mode, with its defaults), and each figure the
lesson saves comes back inline, as a PNG output of its cell. Needs the `lessons` extra
(`pip install -e ".[lessons]"`); CI installs it, and without it these tests are skipped.
"""

from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

LESSONS = Path(__file__).resolve().parents[1] / "lessons"


@pytest.mark.parametrize("name, figures", [("01_autograd", 2), ("04_convolution", 1)])
def test_a_lesson_runs_as_a_notebook_with_its_figures_inline(tmp_path, name, figures):
    notebook = jupytext.read(LESSONS / f"{name}.py")
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on a failure
    outputs = [output for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", [])]
    printed = "".join(output.get("text", "") for output in outputs)
    assert "figure saved" in printed  # the lesson ran to its figures, in the kernel's folder
    inline = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(inline) == figures
    assert sorted(path.name for path in (tmp_path / "out").iterdir())  # and wrote them there
