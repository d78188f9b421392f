"""Notebook hygiene: the .py/.ipynb pairs agree, papermill sees the parameters, outputs are
cleared, and every notebook runs end to end with papermill (on a real-data subset when the
shared HAM10000 folder is present)."""

import json
from pathlib import Path

import jupytext
import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOKS = ["01_eda", "02_train", "03_evaluate", "04_inference"]
REQUIRED = {
    "01_eda": {"data_dir", "reports_dir", "split_path", "seed"},
    "02_train": {"data_dir", "image_size", "epochs", "batch_size", "lr", "seg_weight", "cls_weight",
                 "encoder_weights", "seed", "device", "max_samples", "reports_dir", "checkpoint_dir",
                 "class_balance", "lr_schedule", "patience", "resume", "on_bad_data", "split_path"},
    "03_evaluate": {"checkpoint", "data_dir", "split", "reports_dir", "device"},
    "04_inference": {"checkpoint", "input_dir", "reports_dir", "device"},
}


def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_pair_holds_the_same_cells(name):
    py = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    ipynb = jupytext.read(ROOT / "notebooks" / f"{name}.ipynb")
    assert _cells(py) == _cells(ipynb), f"{name}.py and {name}.ipynb differ: run `jupytext --sync notebooks/{name}.py`"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_clean_and_has_a_kernel(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit notebooks with outputs cleared"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", []), "the parameters cell comes first"
    assert nb.cells[0].cell_type == "markdown" and "colab.research.google.com" in nb.cells[0].source


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_papermill_finds_the_parameters(name):
    from papermill.inspection import inspect_notebook

    import ast

    found = set(inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb")))
    assert REQUIRED[name] <= found, f"missing parameters: {REQUIRED[name] - found}"
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert assigned == found, f"papermill misreads {assigned ^ found} (a '=' in a comment hides a parameter)"


def test_papermill_help_lists_the_parameters():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", "notebooks/02_train.ipynb"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "epochs" in out.stdout and "seg_weight" in out.stdout


def _execute(name, out_dir, params):
    import papermill

    return papermill.execute_notebook(str(ROOT / "notebooks" / f"{name}.ipynb"), str(out_dir / f"{name}.ipynb"),
                                      parameters=params, kernel_name="python3", language="python",
                                      cwd=str(ROOT), progress_bar=False)


def _run_all(data_dir, tmp_path, **train):
    reports, ckpts = tmp_path / "reports", tmp_path / "checkpoints"
    split = str(reports / "split.csv")
    common = {"reports_dir": str(reports)}
    _execute("01_eda", tmp_path, {**common, "data_dir": str(data_dir), "split_path": split,
                                  "max_samples": train.get("max_samples")})
    _execute("02_train", tmp_path, {**common, "data_dir": str(data_dir), "split_path": split,
                                    "checkpoint_dir": str(ckpts), **train})
    _execute("03_evaluate", tmp_path, {**common, "data_dir": str(data_dir), "split_path": split,
                                       "checkpoint": str(ckpts / "best.pt")})
    _execute("04_inference", tmp_path, {**common, "checkpoint": str(ckpts / "best.pt")})
    return reports


def _check_reports(reports, synthetic):
    evaluate = json.loads((reports / "metrics" / "evaluate.json").read_text())
    for key in ("dice", "jaccard", "thresholded_jaccard", "accuracy", "balanced_accuracy", "macro_auc", "n_images"):
        assert key in evaluate, key
    assert evaluate["data"]["synthetic"] is synthetic
    assert set(evaluate["per_class"]) == {"MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"}
    train = json.loads((reports / "metrics" / "train.json").read_text())
    assert train["params"]["epochs"] >= 1 and train["history"]
    report = (reports / "REPORT.md").read_text()
    for section in ("## Data", "## Training", "## Evaluation", "## Inference"):
        assert section in report
    assert ("synthetic demo data" in report) is synthetic
    for figure in ("eda_class_distribution", "train_learning_curves", "evaluate_confusion_matrix",
                   "evaluate_best_worst", "inference_examples"):
        assert (reports / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    assert (reports / "inference" / "predictions.csv").is_file()


def test_all_notebooks_on_the_synthetic_demo_via_papermill(synthetic_dir, tmp_path):
    reports = _run_all(synthetic_dir, tmp_path, epochs=1, image_size=64)
    _check_reports(reports, synthetic=True)


def test_all_notebooks_on_a_real_ham10000_subset_via_papermill(real_data_dir, tmp_path):
    reports = _run_all(real_data_dir, tmp_path, epochs=1, image_size=64, max_samples=300)
    _check_reports(reports, synthetic=False)
    evaluate = json.loads((reports / "metrics" / "evaluate.json").read_text())
    split = __import__("pandas").read_csv(reports / "split.csv")
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    assert evaluate["n_images"] == (split["split"] == "test").sum()
