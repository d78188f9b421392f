"""skin_utils.runs and the experiment loop: no result is overwritten silently, finished runs are
skipped, interrupted ones resume, failed ones are recorded and the sweep goes on."""

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skin_utils import sweep
from skin_utils.config import TrainConfig
from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import CLASSIFICATION_METRICS
from skin_utils.runs import Run, RunExistsError, default_run_name, find_run, set_latest, start_run


def test_default_run_name_says_when_and_what():
    name = default_run_name({"image_size": 128, "epochs": 5, "seg_weight": 1.0, "cls_weight": 0.0, "seed": 2},
                            now=dt.datetime(2026, 11, 26, 15, 30, 12))
    assert name == "20261126-153012_128px_e5_seg1-cls0_seed2"


def test_a_run_with_results_needs_resume_or_overwrite(tmp_path):
    run = start_run(tmp_path, "r1", {"epochs": 1})
    assert run.checkpoints.is_dir() and json.loads((run.root / "run.json").read_text())["params"] == {"epochs": 1}
    run.last.write_bytes(b"weights")
    (run.metrics / "train.json").write_text("{}")
    with pytest.raises(RunExistsError, match="resume=True.*overwrite=True"):
        start_run(tmp_path, "r1", {"epochs": 1})
    assert run.last.read_bytes() == b"weights"  # untouched
    again = start_run(tmp_path, "r1", {"epochs": 2}, resume=True)
    assert again.last.read_bytes() == b"weights"
    (run.notebooks / "02_train.ipynb").write_text("being written")
    start_run(tmp_path, "r1", {"epochs": 1}, overwrite=True)
    assert not run.last.exists() and not (run.metrics / "train.json").exists()
    assert (run.notebooks / "02_train.ipynb").exists()  # papermill's output is kept
    with pytest.raises(ValueError, match="contradict"):  # checked with the other parameters, before any run
        TrainConfig(resume=True, overwrite=True)


def test_latest_pointer_and_finding_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="No run yet"):
        find_run("latest", tmp_path)
    run = start_run(tmp_path, "first", {})
    set_latest(tmp_path, run)
    assert find_run("latest", tmp_path) == run
    assert find_run("first", tmp_path) == run and find_run(str(run.root), tmp_path) == run
    with pytest.raises(FileNotFoundError, match="Runs there: \\['first'\\]"):
        find_run("second", tmp_path)
    assert Run(tmp_path / "x").evaluation("val").name == "evaluate_val.json"
    assert Run(tmp_path / "x").per_image("test").name == "evaluate_per_image.csv"


def test_grid_expansion():
    assert sweep.expand_grid({"a": [1, 2], "b": [0]}) == [{"a": 1, "b": 0}, {"a": 2, "b": 0}]
    assert sweep.expand_grid([{"a": 1}, {"b": 2}]) == [{"a": 1}, {"b": 2}]
    with pytest.raises(ValueError, match="non-empty list"):
        sweep.expand_grid({"a": 3})
    assert sweep.cell_name({"seg_weight": 1.0, "cls_weight": 0.0}) == "seg_weight=1,cls_weight=0"
    assert sweep.tasks_of({"seg_weight": 0, "cls_weight": 1}) == ["classification"]


def _fake_executor(calls, fail_on=None):
    """Stands in for papermill: writes what 02_train and 03_evaluate would write."""
    rng = np.random.default_rng(0)

    def execute(name, output, params, root):
        calls.append((name, dict(params)))
        if name == "02_train":
            if fail_on and fail_on(params):
                raise RuntimeError("CUDA out of memory (simulated)")
            run = start_run(Path(params["reports_dir"]) / "runs", params["run_name"], params, resume=params["resume"])
            run.last.write_bytes(b"w")
            return
        run = Run(Path(params["run"]))
        train = json.loads((run.root / "run.json").read_text())["params"]
        tasks = sweep.tasks_of(train)
        per_image = pd.DataFrame({"image_id": [f"i{k}" for k in range(40)], "lesion_id": [f"l{k // 2}" for k in range(40)],
                                  "true": [CLASS_NAMES[k % 7] for k in range(40)],
                                  "dice": rng.uniform(0.7, 0.95, 40), "jaccard": rng.uniform(0.6, 0.9, 40),
                                  **{f"p_{c}": rng.dirichlet(np.ones(7), 40)[:, i] for i, c in enumerate(CLASS_NAMES)}})
        per_image.to_csv(run.per_image(params["split"]), index=False)
        result = {"tasks": tasks, "dice": 0.9, "balanced_accuracy": 0.5, "ci95": {"dice": [0.88, 0.92]}}
        run.evaluation(params["split"]).write_text(json.dumps(result))
    return execute


def test_experiment_skips_finished_runs_and_records_failures(tmp_path):
    calls = []
    grid = [{"seg_weight": 1.0, "cls_weight": 1.0}, {"seg_weight": 1.0, "cls_weight": 0.0}]
    fail = lambda p: p["cls_weight"] == 0.0 and p["seed"] == 1  # noqa: E731
    status = sweep.run_experiment("abl", grid, seeds=[0, 1], fixed={"epochs": 1}, experiments_dir=tmp_path,
                                        root=tmp_path, executor=_fake_executor(calls, fail), progress=False)
    assert list(status["status"]) == ["finished", "finished", "finished", "failed"]
    assert "CUDA out of memory" in status["error"].iloc[3]
    recorded = json.loads((tmp_path / "abl" / "runs" / status["run"].iloc[3] / "status.json").read_text())
    assert "RuntimeError: CUDA out of memory" in recorded["traceback"]  # the real one, not "NoneType: None"
    assert sum(name == "03_evaluate" for name, _ in calls) == 6  # val and test of the three that trained
    # a second call skips the finished runs and retries the failed one, resuming its folder
    calls.clear()
    status = sweep.run_experiment("abl", grid, seeds=[0, 1], fixed={"epochs": 1}, experiments_dir=tmp_path,
                                        root=tmp_path, executor=_fake_executor(calls), progress=False)
    assert list(status["skipped"]) == [True, True, True, False] and (status["status"] == "finished").all()
    assert [name for name, _ in calls] == ["02_train", "03_evaluate", "03_evaluate"]
    table = sweep.gather("abl", tmp_path, root=tmp_path)
    assert (tmp_path / "abl.csv").is_file()
    seg_only = table[table["cls_weight"] == 0.0]
    assert "balanced_accuracy" not in set(seg_only["metric"])  # untrained head: not applicable
    assert set(table["split"]) == {"val", "test"}
    joint = table[(table["cls_weight"] == 1.0) & (table["metric"] == "dice") & (table["split"] == "val")]
    assert sorted(joint["seed"]) == [0, 1]
    diff = sweep.compare("abl", {"seg_weight": 1.0, "cls_weight": 1.0}, "val", tmp_path, root=tmp_path,
                               n_resamples=20)
    assert set(diff["metric"]) == {"dice", "jaccard", "thresholded_jaccard"}  # only the shared head
    assert (diff["seeds"] == 2).all()


@pytest.mark.parametrize("fixed, heads", [({"cls_weight": 0.0}, "segmentation"),
                                          ({}, "segmentation,classification")])
def test_compare_reads_head_weights_from_fixed_parameters(tmp_path, fixed, heads):
    """--fixed '{"cls_weight": 0}' --grid '{"lr": [...]}': no cell trains the classification head."""
    sweep.run_experiment("lr", {"lr": [0.001, 0.003]}, seeds=[0], fixed=fixed, experiments_dir=tmp_path,
                         root=tmp_path, executor=_fake_executor([]), progress=False)
    diff = sweep.compare("lr", {"lr": 0.001}, "val", tmp_path, root=tmp_path, n_resamples=20)
    assert set(diff["cell_tasks"]) == {heads}
    shown = set(CLASSIFICATION_METRICS) & set(diff["metric"])
    assert shown == (set(CLASSIFICATION_METRICS) if "classification" in heads else set()), set(diff["metric"])
    assert "dice" in set(diff["metric"])


def test_fixed_may_not_set_what_the_experiment_sets(tmp_path):
    with pytest.raises(ValueError, match="seed"):
        sweep.run_experiment("x", {}, fixed={"seed": 3}, experiments_dir=tmp_path, root=tmp_path,
                                   executor=_fake_executor([]), progress=False)


def test_multitask_verdict_states_help_harm_or_no_difference():
    diff = pd.DataFrame([
        {"metric": "dice", "difference": -0.02, "ci_low": -0.03, "ci_high": -0.01, "cell_tasks": "segmentation", "seeds": 3, "split": "val"},
        {"metric": "balanced_accuracy", "difference": 0.01, "ci_low": -0.03, "ci_high": 0.05, "cell_tasks": "classification", "seeds": 3, "split": "val"},
        {"metric": "dice", "difference": 0.01, "ci_low": -0.03, "ci_high": 0.05, "cell_tasks": "segmentation,classification", "seeds": 3, "split": "val"}]
    ).assign(cell=lambda d: d["cell_tasks"], reference="joint", reference_tasks="segmentation,classification")
    seg, cls = sweep.multitask_verdict(diff)
    assert seg.startswith("Segmentation: joint training **helps**") and "+0.020 (95% CI +0.010 to +0.030" in seg
    assert cls.startswith("Classification: **no detectable difference**")
    only_joint = diff[diff["cell_tasks"].str.contains(",")]
    assert all("no verdict" in line for line in sweep.multitask_verdict(only_joint))


def test_summary_markdown_shows_means_intervals_and_not_applicable(tmp_path):
    grid = [{"seg_weight": 1.0, "cls_weight": 1.0}, {"seg_weight": 1.0, "cls_weight": 0.0}]
    sweep.run_experiment("md", grid, seeds=[0, 1], experiments_dir=tmp_path, root=tmp_path,
                               executor=_fake_executor([]), progress=False)
    text = sweep.summary_markdown("md", {"seg_weight": 1.0, "cls_weight": 1.0}, tmp_path, root=tmp_path,
                                        n_resamples=20)
    assert "**val split**" in text and "**test split**" in text
    seg_only = next(line for line in text.splitlines() if line.startswith("| seg_weight=1,cls_weight=0 |"))
    assert "n/a" in seg_only and "0.900 ± 0.000 [0.880–0.920]" in seg_only
    assert "Paired differences against `seg_weight=1,cls_weight=1`" in text and "Segmentation:" in text


def test_what_03_and_04_score(tmp_path):
    from skin_utils.runs import run_to_score

    run = start_run(tmp_path, "r1", {})
    set_latest(tmp_path, run)
    assert run_to_score("latest", None, tmp_path) == (run, run.best)
    assert run_to_score("latest", run.best, tmp_path) == (run, run.best)  # a run's own checkpoint: its folder
    loose = tmp_path.parent / "weights.pt"
    out, path = run_to_score("latest", loose, tmp_path)
    assert path == loose and out.root == tmp_path / "checkpoint-weights"


def test_a_resumed_run_keeps_the_start_time_and_parameters_of_its_first_start(tmp_path):
    """run.json says when and how the run started: a resume (refused by fit if its settings differ) rewrote both."""
    run = start_run(tmp_path, "r1", {"epochs": 1, "lr": 0.002})
    record = json.loads((run.root / "run.json").read_text())
    (run.root / "run.json").write_text(json.dumps({**record, "started": "2026-01-02T03:04:05"}))
    run.last.write_bytes(b"weights")
    start_run(tmp_path, "r1", {"epochs": 3, "lr": 0.0002}, resume=True)
    again = json.loads((run.root / "run.json").read_text())
    assert (again["started"], again["params"], again["resumed"]) == ("2026-01-02T03:04:05", {"epochs": 1, "lr": 0.002},
                                                                     True)


def _verdict(tmp_path, name, grid, reference, fixed=None, n_resamples=20):
    """multitask_verdict of an experiment run with the fake executor, and compare's rows it read."""
    sweep.run_experiment(name, grid, seeds=[0], fixed=fixed, experiments_dir=tmp_path, root=tmp_path,
                         executor=_fake_executor([]), progress=False)
    diff = sweep.compare(name, reference, "val", tmp_path, root=tmp_path, n_resamples=n_resamples)
    return sweep.multitask_verdict(diff), diff


def test_the_multitask_verdict_compares_a_joint_cell_with_a_single_head_cell_whichever_the_reference(tmp_path):
    """It took the reference for the joint cell and any other for a single head: an lr grid of classification-only
    runs got "joint training hurts", and the ablation with a single-head reference (05's default) no verdict."""
    lines, _ = _verdict(tmp_path, "lr", {"lr": [0.002, 0.001]}, {"lr": 0.002}, fixed={"seg_weight": 0.0})
    assert len(lines) == 1 and "no verdict" in lines[0] and "joint −" not in lines[0], lines
    ablation = sweep.PRESETS["ablation"][:3]  # segmentation only, classification only, joint: in the preset's order
    joint, seg_only = {"seg_weight": 1.0, "cls_weight": 1.0}, {"seg_weight": 1.0, "cls_weight": 0.0}
    assert sweep.reference_cell(None, ablation) == joint  # 05's and the command line's default: the joint cell
    assert sweep.reference_cell(None, [{"lr": 0.002}, {"lr": 0.001}], {"seg_weight": 0.0}) == {"lr": 0.002}
    (seg, cls), diff = _verdict(tmp_path, "abl", ablation, joint)
    dice = diff[(diff["cell"] == "seg_weight=1,cls_weight=0") & (diff["metric"] == "dice")].iloc[0]
    assert f"dice joint − segmentation only = {0.0 - dice['difference']:+.3f} (95% CI " in seg
    assert "balanced_accuracy joint − classification only = " in cls
    (seg, cls), diff = _verdict(tmp_path, "abl", ablation, seg_only)  # the joint cell is now the one compared
    dice = diff[(diff["cell"] == "seg_weight=1,cls_weight=1") & (diff["metric"] == "dice")].iloc[0]
    assert f"dice joint − segmentation only = {dice['difference']:+.3f} (95% CI {dice['ci_low']:+.3f} to " in seg
    assert cls == "Classification: no classification-only run compared with a joint one, so no verdict."
    seg, cls = _verdict(tmp_path, "abl", ablation, joint, n_resamples=0)[0]
    assert "no interval (n_bootstrap=0)" in seg and "nan" not in seg + cls and "no detectable" not in seg + cls


def test_every_notebook_path_named_in_the_notebooks_docs_and_code_exists():
    """05's Colab badge and papermill command named notebooks/05_sweep.ipynb, a file that never existed."""
    import re

    from tests.conftest import ROOT

    texts = [*ROOT.glob("*.md"), *ROOT.glob("docs/**/*.md"), *ROOT.glob("notebooks/*.py"),
             *ROOT.glob("skin_utils/**/*.py"), *ROOT.glob("scripts/*")]
    named = {(path.relative_to(ROOT).as_posix(), m.group(0)) for path in texts if path.is_file()
             for m in re.finditer(r"notebooks/\d\d_\w+(\.ipynb|\.py)?", path.read_text(errors="replace"))}
    assert len(named) > 10
    missing = sorted((where, nb) for where, nb in named
                     if not (ROOT / (nb if nb.endswith((".ipynb", ".py")) else nb + ".py")).is_file())
    assert missing == []
