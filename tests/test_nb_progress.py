"""Progress bars render as widgets in Jupyter (tqdm.auto with ipywidgets), with no warning."""

import nbformat
import pytest


def test_the_progress_bars_of_skin_utils_are_jupyter_widgets_without_warnings(monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # the test run turns bars off; this test needs them
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import warnings\nwarnings.simplefilter('always')\n"
                                          "from skin_utils import engine\n"
                                          "for _ in engine.tqdm(range(3), desc='epoch 1 train'):\n    pass")]
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    outputs = nb.cells[0].outputs
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    if "IProgress not found" in stderr:
        pytest.fail("tqdm.auto fell back to a text bar: ipywidgets is missing from the environment "
                    "(`pip install ipywidgets`, a dependency in pyproject.toml)")
    assert stderr == "", stderr
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs), outputs
