"""Notebook hygiene: the .py/.ipynb pairs agree, papermill sees the typed parameters, outputs
are cleared, each figure says how to read it, each notebook ends with a computed conclusion, and
all four run end to end through `python -m skin_utils.sweep all` (papermill), also on a
real-data subset when the shared HAM10000 folder is present."""

import ast
import json
import typing

import jupytext
import nbformat
import pytest

from tests.conftest import ROOT

NOTEBOOKS = ["01_eda", "02_train", "03_evaluate", "04_inference"]  # the pipeline the runner executes
ALL = sorted(p.stem for p in (ROOT / "notebooks").glob("*.py"))      # the rules of every notebook
REQUIRED = {
    "01_eda": {"data_dir", "reports_dir", "split_path", "seed"},
    "02_train": {"data_dir", "image_size", "epochs", "time_budget", "batch_size", "lr", "seg_weight", "cls_weight",
                 "seed", "max_samples", "reports_dir", "run_name", "overwrite", "resume", "split_path",
                 "overrides"},  # the knobs a reader turns; every other TrainConfig field goes with -p or overrides
    "03_evaluate": {"run", "checkpoint", "data_dir", "split", "reports_dir", "device", "n_bootstrap"},
    "04_inference": {"run", "checkpoint", "input_dir", "reports_dir", "device"},
    "05_experiments": {"name", "grid", "seeds", "fixed", "eval_params", "reference", "experiments_dir"},
}


def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


@pytest.mark.parametrize("name", ALL)
def test_pair_holds_the_same_cells(name):
    py = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    ipynb = jupytext.read(ROOT / "notebooks" / f"{name}.ipynb")
    assert _cells(py) == _cells(ipynb), f"{name}.py and {name}.ipynb differ: run `jupytext --sync notebooks/{name}.py`"


@pytest.mark.parametrize("name", ALL)
def test_committed_notebook_is_clean_and_has_a_kernel(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, "commit notebooks with outputs cleared"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first_code.metadata.get("tags", []), "the parameters cell comes first"
    assert nb.cells[0].cell_type == "markdown" and "colab.research.google.com" in nb.cells[0].source


def _parameters_cell(name):
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    return next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))


@pytest.mark.parametrize("name", ALL)
def test_papermill_finds_the_parameters(name):
    from papermill.inspection import inspect_notebook

    found = set(inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb")))
    assert REQUIRED.get(name, set()) <= found, f"missing parameters: {REQUIRED.get(name, set()) - found}"
    body = ast.parse(_parameters_cell(name).source).body
    assigned = {t.id for node in body if isinstance(node, ast.Assign) for t in node.targets}
    assigned |= {node.target.id for node in body if isinstance(node, ast.AnnAssign)}
    assert assigned == found, (f"papermill misreads {assigned ^ found} (a '=' in a comment, or an annotation it "
                               "cannot parse such as `int | None`: write Optional[int])")


@pytest.mark.parametrize("name", ALL)
def test_every_parameter_has_a_type_that_papermill_shows(name):
    from papermill.inspection import inspect_notebook

    body = ast.parse(_parameters_cell(name).source).body
    untyped = [t.id for node in body if isinstance(node, ast.Assign) for t in node.targets]
    assert not untyped, f"{name}: give these parameters a type annotation (`epochs: int = 3`): {untyped}"
    others = [ast.unparse(node) for node in body if not isinstance(node, (ast.AnnAssign, ast.ImportFrom))]
    assert not others, f"{name}: the parameters cell holds only typed assignments: {others}"
    shown = {k: v["inferred_type_name"] for k, v in inspect_notebook(str(ROOT / "notebooks" / f"{name}.ipynb")).items()}
    annotated = {node.target.id: ast.unparse(node.annotation) for node in body if isinstance(node, ast.AnnAssign)}
    assert shown == annotated
    namespace = {}
    exec(compile(ast.Module(body=body, type_ignores=[]), name, "exec"), namespace)
    for node in body:
        if isinstance(node, ast.AnnAssign):
            hint, value = eval(ast.unparse(node.annotation), namespace), namespace[node.target.id]
            assert _matches(value, hint), f"{name}: {node.target.id}={value!r} is not a {ast.unparse(node.annotation)}"


def _matches(value, hint) -> bool:
    """Whether ``value`` fits the annotation ``hint`` (Optional[...], list[...], plain classes)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(_matches(value, h) for h in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(_matches(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def test_the_colab_setup_cell_is_the_same_in_every_notebook():
    cells = {}
    for name in ALL:
        nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", [])
        cells[name] = code[1].source
        assert "google.colab" in cells[name] and "os.chdir" in cells[name], f"{name}: the 2nd code cell is the Colab setup"
    assert len(set(cells.values())) == 1, "the Colab setup cell differs between notebooks: copy one to the others"


#: Notebooks whose job is one library call that writes the report section (evaluate(cfg), infer(cfg)).
ONE_CALL = {"02_train": "train(cfg)", "03_evaluate": "evaluate(cfg)", "04_inference": "infer(cfg)"}


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_notebook_ends_with_a_computed_conclusion(name):
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    if name in ONE_CALL:  # the conclusion is computed and put into the report section by the library call
        assert f"result = {ONE_CALL[name]}" in code and 'result.show("conclusion")' in code
    else:
        assert "conclusion = " in code, f"{name}: compute the conclusion from the notebook's numbers"
        assert "**Conclusion.** {conclusion}" in code, f"{name}: put the conclusion into the report section"
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any(h.startswith("## Conclusion") for h in headings)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_figure_comes_with_how_to_read_it(name):
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    last_markdown = ""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            last_markdown = cell.source
        elif "plots.publish(" in cell.source or ".show(" in cell.source:
            assert "*Reading" in last_markdown, \
                f"{name}: say how to read {cell.source.splitlines()[0]!r} in the markdown above it"


@pytest.mark.parametrize("name", ONE_CALL)
def test_the_one_call_notebooks_import_a_handful_of_names(name):
    nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    imports = [line for line in code.splitlines() if line.startswith(("from skin_utils", "import skin_utils"))]
    assert len(imports) <= 3 and "result.show(" in code, imports


def test_papermill_help_lists_the_parameters():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", "notebooks/02_train.ipynb"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "epochs: int (default 3)" in out.stdout and "seg_weight: float" in out.stdout
    assert "max_samples: Optional[int] (default None)" in out.stdout and "Unknown type" not in out.stdout


def _run_all(data_dir, tmp_path, **train):
    """All four notebooks through the runner (`python -m skin_utils.sweep all`); returns the
    reports folder and the run folder."""
    from skin_utils.sweep import main

    reports = tmp_path / "reports"
    argv = ["all", "--data-dir", str(data_dir), "--reports-dir", str(reports), "--run-name", "e2e", "--only", *NOTEBOOKS]
    for key, value in train.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    assert main(argv) == 0
    run = reports / "runs" / "e2e"
    assert (reports / "notebooks" / "01_eda.ipynb").is_file()
    for name in NOTEBOOKS[1:]:
        assert (run / "notebooks" / f"{name}.ipynb").is_file()
    return reports, run


def _check_reports(reports, run, synthetic):
    evaluate = json.loads((run / "metrics" / "evaluate.json").read_text())
    for key in ("dice", "jaccard", "thresholded_jaccard", "accuracy", "balanced_accuracy", "macro_auc", "n_images",
                "ci95", "classes_present", "tasks"):
        assert key in evaluate, key
    for key in ("dice", "balanced_accuracy", "macro_auc"):
        lo, hi = evaluate["ci95"][key]
        assert lo <= evaluate[key] <= hi, key
    assert evaluate["data"]["synthetic"] is synthetic
    assert set(evaluate["per_class"]) == {"MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"}
    train = json.loads((run / "metrics" / "train.json").read_text())
    assert train["params"]["epochs"] >= 1 and train["history"]
    assert (reports / "runs" / "LATEST").read_text().strip() == run.name
    for path in (reports / "REPORT.md", run / "REPORT.md"):
        report = path.read_text()
        for section in ("## Training", "## Evaluation", "## Inference"):
            assert section in report
        assert ("synthetic demo data" in report) is synthetic
    report = (reports / "REPORT.md").read_text()
    assert "## Data" in report and report.count("**Conclusion.**") == 4, "each section ends with its conclusion"
    data_section = report.split("## Data")[1].split("<details>")[0]
    assert "labels from\n`HAM10000_metadata.csv`" in data_section, data_section
    assert f"](runs/{run.name}/figures/evaluate_confusion_matrix.png)" in report, "figure links point into the run"
    assert (reports / "figures" / "eda_class_distribution.png").stat().st_size > 1000
    for figure in ("train_learning_curves", "evaluate_confusion_matrix", "evaluate_best_worst", "inference_examples"):
        assert (run / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    assert (run / "inference" / "predictions.csv").is_file()
    assert (run / "metrics" / "evaluate_per_image.csv").is_file()
    _check_trust(run, evaluate, train)


def _check_trust(run, evaluate, train):
    """Calibration fitted on validation by 02 and stored in best.pt; 03's calibration, referral,
    melanoma operating point and Grad-CAM check in evaluate.json, the per-image table and the
    report; 04's calibrated probabilities, uncertainty, flags and overlays."""
    import pandas as pd
    import torch

    stored = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["calibration"]
    assert set(stored) == {"tta", "plain", "features"} and stored["tta"]["temperature"] > 0
    assert len(stored["features"]["mean"]) == 512 and stored["features"]["threshold"] > 0
    assert stored["tta"]["split"] == "val" and stored["tta"]["referral_threshold"] is not None
    assert set(train["calibration"]) == {"tta", "plain", "features"}
    assert "precision" not in train["calibration"]["features"]  # the JSON keeps the reference without its arrays
    assert evaluate["calibration_used"]["missing"] == [] and evaluate["calibration_used"]["kind"] == "tta"
    trust = evaluate["trust"]
    for part in ("before", "after"):
        assert {"ece", "classwise_ece", "nll", "brier"} <= set(trust["calibration"][part])
    assert [r["referral_fraction"] for r in trust["referral"]["table"]] == [0.0, 0.1, 0.2, 0.3]
    assert {"entropy", "tta_disagreement"} <= set(trust["referral"]["aurc"])
    assert trust["referral"]["at_threshold"]["threshold"] == stored["tta"]["referral_threshold"]
    assert trust["operating_point"]["at_threshold"]["threshold"] == stored["tta"]["mel_threshold"]
    cam = evaluate["cam"]
    assert cam["n_images"] == evaluate["n_images"] and "per_image" not in cam["true_mask"]
    for part in ("true_mask", "pred_mask"):
        assert 0 <= cam[part]["overall"]["energy_inside"] <= 1 and 0 < cam[part]["overall"]["area_share"] <= 1
    per_image = pd.read_csv(run / "metrics" / "evaluate_per_image.csv")
    for col in ("p_MEL", "entropy", "tta_disagreement", "mask_uncertainty", "refer", "mel_flag",
                "cam_energy_true", "cam_area_true", "cam_energy_pred"):
        assert col in per_image, col
    for figure in ("evaluate_reliability", "evaluate_risk_coverage", "evaluate_cam_examples", "inference_trust"):
        assert (run / "figures" / f"{figure}.png").stat().st_size > 1000, figure
    report = (run / "REPORT.md").read_text()
    assert "### Trust in each prediction" in report and "figures/evaluate_reliability.png" in report
    predictions = pd.read_csv(run / "inference" / "predictions.csv")
    for col in ("prob_calibrated", "p_cal_MEL", "entropy", "tta_disagreement", "mask_uncertainty", "refer",
                "mel_flag", "overlay"):
        assert col in predictions, col
    assert all((run / "inference" / "overlays" / f"{i}.png").is_file() for i in predictions["image_id"])


def test_all_notebooks_on_the_synthetic_demo_via_papermill(synthetic_dir, tmp_path):
    reports, run = _run_all(synthetic_dir, tmp_path, epochs=1, image_size=64)
    _check_reports(reports, run, synthetic=True)


def test_all_notebooks_on_a_real_ham10000_subset_via_papermill(real_data_dir, tmp_path):
    reports, run = _run_all(real_data_dir, tmp_path, epochs=1, image_size=64, max_samples=300)
    _check_reports(reports, run, synthetic=False)
    evaluate = json.loads((run / "metrics" / "evaluate.json").read_text())
    split = __import__("pandas").read_csv(reports / "split.csv")
    assert split.groupby("lesion_id")["split"].nunique().max() == 1
    assert evaluate["n_images"] == (split["split"] == "test").sum()


def test_a_second_run_of_the_same_name_needs_resume_or_overwrite(synthetic_dir, tmp_path):
    """No result is overwritten silently: 02_train stops with the message, the first run's
    checkpoint is untouched, and overwrite=True replaces it."""
    import papermill

    params = {"data_dir": str(synthetic_dir), "reports_dir": str(tmp_path / "reports"), "run_name": "same",
              "epochs": 1, "image_size": 48, "max_samples": 60}

    def train(**extra):
        papermill.execute_notebook(str(ROOT / "notebooks" / "02_train.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={**params, **extra}, kernel_name="python3", language="python",
                                   cwd=str(ROOT), progress_bar=False)

    train()
    best = tmp_path / "reports" / "runs" / "same" / "checkpoints" / "best.pt"
    before = best.stat().st_mtime_ns
    with pytest.raises(papermill.PapermillExecutionError, match="already holds results"):
        train()
    assert best.stat().st_mtime_ns == before
    train(overwrite=True)
    assert best.stat().st_mtime_ns != before
