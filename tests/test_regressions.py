"""Defects that made a reported number wrong or destroyed results, each pinned here by a test
that failed before its fix: experiments reusing runs made with other parameters, best.pt chosen
with an untrained head, placeholder and missing lesion ids, external ids matched silently, mask
loss on images without masks, run names that escape the runs folder, plain recalibration that
dropped the TTA record, resumed budget runs past their budget, misspelt parameters, and the
Grad-CAM caption that named another class than the map. (The one rule for melanoma AUC is
pinned in test_external_eval.py, beside the evaluated run it needs.)"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from skin_utils import CLASS_NAMES, sweep
from skin_utils.runs import Run, start_run
from tests.test_runs import _fake_executor

# --------------------------------------------------------------------------------------------
# experiments: never old numbers under new parameters
# --------------------------------------------------------------------------------------------

GRID = [{"seg_weight": 1.0, "cls_weight": 1.0}, {"seg_weight": 1.0, "cls_weight": 0.0}]


def test_rerunning_an_experiment_with_other_parameters_stops_and_names_them(tmp_path):
    calls = []
    run = lambda **kw: sweep.run_experiment("e", GRID, seeds=[0], experiments_dir=tmp_path, root=tmp_path,  # noqa: E731
                                                  executor=_fake_executor(calls), progress=False, **kw)
    run(fixed={"epochs": 2})
    assert len(calls) == 6
    before = (tmp_path / "e" / "experiment.json").read_text()
    calls.clear()
    with pytest.raises(ValueError, match=r"train epochs: 2 -> 30") as err:
        run(fixed={"epochs": 30})
    assert "seg_weight=1,cls_weight=1_seed0" in str(err.value) and "another experiment name" in str(err.value)
    with pytest.raises(ValueError, match=r"evaluate tta: '<unset>' -> False"):
        run(fixed={"epochs": 2}, eval_params={"tta": False})
    assert calls == [] and (tmp_path / "e" / "experiment.json").read_text() == before  # nothing ran, nothing rewritten
    # the same parameters: every run is skipped; a new cell alone runs
    run(fixed={"epochs": 2})
    assert calls == []
    status = sweep.run_experiment("e", GRID + [{"seg_weight": 0.3, "cls_weight": 1.0}], seeds=[0],
                                        fixed={"epochs": 2}, experiments_dir=tmp_path, root=tmp_path,
                                        executor=_fake_executor(calls), progress=False)
    assert list(status["skipped"]) == [True, True, False] and [c[0] for c in calls].count("02_train") == 1
    recorded = json.loads((tmp_path / "e" / "runs" / "seg_weight=1,cls_weight=1_seed0" / "status.json").read_text())
    assert recorded["config"]["train"]["epochs"] == 2 and recorded["config"]["evaluate"] == {}


def test_grid_values_that_differ_never_share_a_folder_and_misspelt_or_repeated_cells_stop(tmp_path):
    assert sweep.cell_name({"lr": 1e-3}) != sweep.cell_name({"lr": 0.0010000004})
    assert sweep.cell_name({"seg_weight": 1.0, "cls_weight": 0.0}) == "seg_weight=1,cls_weight=0"
    with pytest.raises(ValueError, match="same cell more than once"):
        sweep.expand_grid([{"lr": 1e-3}, {"lr": 0.001}])
    calls = []
    with pytest.raises(ValueError, match="'learning_rate' in grid.*did you mean 'lr'"):
        sweep.run_experiment("e", {"learning_rate": [1e-3]}, experiments_dir=tmp_path, root=tmp_path,
                                   executor=_fake_executor(calls), progress=False)
    with pytest.raises(ValueError, match="'epoch' in fixed.*did you mean 'epochs'"):
        sweep.run_experiment("e", GRID, fixed={"epoch": 2}, experiments_dir=tmp_path, root=tmp_path,
                                   executor=_fake_executor(calls), progress=False)
    assert calls == []


def test_the_reference_is_checked_against_the_grid_before_any_run(tmp_path):
    cells = sweep.expand_grid({"seg_weight": [1.0, 0.0]})
    assert sweep.reference_cell(None, cells) == {"seg_weight": 1.0}  # none: the first cell
    with pytest.raises(ValueError, match="not a cell of the grid"):
        sweep.reference_cell({"cls_weight": 1.0}, cells)
    with pytest.raises(ValueError, match="not a cell of the grid"):
        sweep.main(["experiment", "--name", "x", "--grid", '{"seg_weight": [1.0, 0.0]}', "--reference", '{"cls_weight": 1.0}',
                          "--experiments-dir", str(tmp_path)])
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------------------
# best.pt is chosen with the trained heads only; no mask loss on images without masks
# --------------------------------------------------------------------------------------------

def test_a_segmentation_only_run_chooses_best_pt_by_dice_alone(synthetic_dir, tmp_path, monkeypatch):
    import skin_utils.engine as engine
    from skin_utils.data import load_data, train_val_loaders
    from skin_utils.losses import MultiTaskLoss
    from skin_utils.model import MultiTaskNet

    data = load_data(synthetic_dir, 32, split_path=tmp_path / "split.csv", max_samples=60, progress=False)
    # validation as an untrained classifier gives it: Dice improves, balanced accuracy is noise
    scripted = iter([{"dice": 0.50, "balanced_accuracy": 0.90}, {"dice": 0.60, "balanced_accuracy": 0.10},
                     {"dice": 0.55, "balanced_accuracy": 0.50}])
    monkeypatch.setattr(engine, "evaluate", lambda *a, **k: {
        **next(scripted), "jaccard": 0.4, "thresholded_jaccard": 0.3, "accuracy": 0.5, "macro_auc": 0.5, "loss": 1.0})
    torch.manual_seed(0)
    model = MultiTaskNet(encoder_weights=None)
    train, val, _ = train_val_loaders(data, 16, "cpu", num_workers=0)
    opt, sched = engine.build_optimizer_and_schedule(model, 1e-3, 1e-4, 3, len(train))
    history = engine.fit(model, train, val, loss_fn=MultiTaskLoss(1.0, 0.0), optimizer=opt, scheduler=sched,
                         epochs=3, device="cpu", checkpoint_dir=tmp_path, class_names=CLASS_NAMES, image_size=32,
                         amp="off", progress=False)
    assert [row["best"] for row in history] == [True, True, False]   # by Dice: 0.50, 0.60, then 0.55
    assert math.isnan(history[0]["val_balanced_accuracy"])          # the untrained head's numbers are n/a
    from skin_utils.checkpoint import Checkpoint

    best = Checkpoint.load(tmp_path / "best.pt")
    assert best.epoch == 1 and best.selection == "dice"
    assert engine.selection_metrics("balanced_accuracy+dice", ["classification"]) == ("balanced_accuracy",)
    with pytest.raises(ValueError, match="does not train"):
        engine.selection_metrics("dice", ["classification"])


def _labels_only_folder(synthetic_dir, folder, n=48):
    """Images and a labels CSV of the demo, no masks (like the widely shared HAM10000 copy)."""
    (folder / "images").mkdir(parents=True)
    meta = pd.read_csv(synthetic_dir / "HAM10000_metadata.csv").head(n)
    for image_id in meta["image_id"]:
        (folder / "images" / f"{image_id}.jpg").write_bytes((synthetic_dir / "images" / f"{image_id}.jpg").read_bytes())
    meta.to_csv(folder / "HAM10000_metadata.csv", index=False)
    return folder


def test_training_on_a_labels_only_folder_trains_no_mask_and_counts_no_dice(synthetic_dir, tmp_path, capsys):
    from skin_utils import train

    folder = _labels_only_folder(synthetic_dir, tmp_path / "labels_only")
    common = ["--data-dir", str(folder), "--image-size", "32", "--epochs", "1", "--batch-size", "8",
              "--encoder-weights", "none", "--device", "cpu", "--amp", "off", "--reports-dir", str(tmp_path / "r"),
              "--split-path", str(tmp_path / "split.csv"), "--num-workers", "0"]
    with pytest.raises(ValueError, match="(?s)has no lesion masks.*-p seg_weight 0"):
        train.main(common + ["--run-name", "with-masks"])
    assert train.main(common + ["--run-name", "cls-only", "--seg-weight", "0"]) == 0
    summary = json.loads((tmp_path / "r" / "runs" / "cls-only" / "metrics" / "train.json").read_text())
    assert summary["selection_used"] == "balanced_accuracy"
    assert summary["best_val"]["dice"] is None or math.isnan(summary["best_val"]["dice"])


# --------------------------------------------------------------------------------------------
# lesion ids: placeholders are missing ids, missing ids are their own clusters
# --------------------------------------------------------------------------------------------

def _folder_with_lesion_ids(root, ids, dx="nv"):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for k, lesion in enumerate(ids):
        image_id = f"ISIC_{k:07d}"
        Image.new("RGB", (40, 30), (150, 100, 80)).save(root / "images" / f"{image_id}.jpg")
        mask = np.zeros((30, 40), np.uint8)
        mask[8:22, 10:30] = 255
        Image.fromarray(mask).save(root / "masks" / f"{image_id}_segmentation.png")
        rows.append({"lesion_id": lesion, "image_id": image_id, "dx": dx if k % 3 else "mel"})
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


def test_placeholder_lesion_ids_are_missing_ids_with_a_warning_naming_how_many(tmp_path):
    from skin_utils.data import make_split
    from skin_utils.layout import LesionLeakageWarning, load_index

    placeholders = ["NA"] * 12 + ["nan"] * 6 + ["-"] * 4 + ["unknown"] * 4 + ["None"] * 4
    folder = _folder_with_lesion_ids(tmp_path / "set", placeholders + [f"HAM_{k}" for k in range(30)])
    with pytest.warns(LesionLeakageWarning, match="30 images have no lesion id"):
        index = load_index(folder)
    na = index["image_id"].isin([f"ISIC_{k:07d}" for k in range(30)])
    assert (index.loc[na, "lesion_id"] == index.loc[na, "image_id"]).all()  # each its own lesion
    split = make_split(index, (0.6, 0.2, 0.2), seed=0)
    assert split.loc[na.to_numpy(), "split"].nunique() == 3                # not all in one split


def test_the_bootstrap_keeps_images_whose_lesion_id_is_missing_or_reads_as_missing(tmp_path):
    from skin_utils.metrics import bootstrap_ci, read_per_image

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"image_id": [f"i{k}" for k in range(40)], "lesion_id": ["NA"] * 40,
                          "dice": rng.uniform(0.2, 0.4, 40)})
    missing = table.assign(lesion_id=np.nan)                # what pd.read_csv makes of "NA"
    ci = bootstrap_ci(missing, tasks=("segmentation",), n_resamples=200)
    lo, hi = ci["ci95"]["dice"]
    assert lo <= ci["estimate"]["dice"] <= hi and hi - lo > 0.01
    assert ci["n_lesions"] == 40                            # each image its own cluster, none dropped

    table.to_csv(tmp_path / "per_image.csv", index=False)
    assert (read_per_image(tmp_path / "per_image.csv")["lesion_id"] == "NA").all()  # a name, not a missing value


# --------------------------------------------------------------------------------------------
# external ids: matched ignoring case where unambiguous, the rest said out loud
# --------------------------------------------------------------------------------------------

def test_external_ids_match_ignoring_case_and_the_unmatched_are_warned_about_with_examples(tmp_path):
    from skin_utils.data import load_data
    from skin_utils.layout import DataQualityWarning

    root = tmp_path / "clinic"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.zeros((30, 40), np.uint8)
    mask[8:22, 10:30] = 255
    for k in range(8):
        Image.new("RGB", (40, 30), (150, 100, 80)).save(root / "images" / f"ISIC_{k:07d}.jpg")
        Image.fromarray(mask).save(root / "masks" / f"ISIC_{k:07d}_segmentation.png")
    ids = [f"isic_{k:07d}" for k in range(4)] + ["ISIC_0000004.jpg", "lesion_9", "lesion_10"]
    pd.DataFrame({"image": ids, "diagnosis": ["nevus"] * len(ids)}).to_csv(root / "labels.csv", index=False)
    with pytest.warns(DataQualityWarning, match=r"3 of 8 images have no row in labels.csv \(e.g. ISIC_0000005.*"
                                                r"2 of its 7 rows name no image \(e.g. lesion_10, lesion_9\)"):
        index = load_data(root, 32, need_split=False, cache=False, cache_dir=tmp_path / "cache").index  # converted
    assert index.set_index("image_id").loc[[f"ISIC_{k:07d}" for k in range(5)], "has_label"].all()
    assert not index.set_index("image_id").loc["ISIC_0000005", "has_label"]


# --------------------------------------------------------------------------------------------
# run names, calibration records, budgets
# --------------------------------------------------------------------------------------------

def test_run_names_that_escape_or_change_are_refused_and_overwrite_stays_in_its_folder(tmp_path):
    runs = tmp_path / "reports" / "runs"
    other = start_run(runs, "other", {})
    other.last.write_bytes(b"keep me")
    (tmp_path / "reports" / "REPORT.md").write_text("keep me")
    for name in ("..", ".", "my run", "a/b", "-x"):
        with pytest.raises(ValueError, match="cannot name a run folder"):
            start_run(runs, name, {}, overwrite=True)
    assert other.last.read_bytes() == b"keep me" and (tmp_path / "reports" / "REPORT.md").is_file()
    with pytest.raises(ValueError, match="cannot name a run folder"):
        sweep.run_all({"run_name": "my run", "reports_dir": str(tmp_path / "reports")})
    from skin_utils.config import ConfigError, TrainConfig

    with pytest.raises(ConfigError, match="'my-run'"):
        TrainConfig(run_name="my run")


def test_a_plain_only_recalibration_keeps_the_stored_tta_record(synthetic_dir, tmp_path):
    from skin_utils.checkpoint import Checkpoint
    from skin_utils.data import load_data
    from skin_utils.model import MultiTaskNet
    from skin_utils.trust import StoredCalibration, calibrate_checkpoint

    data = load_data(synthetic_dir, 32, split_path=tmp_path / "split.csv", max_samples=120, progress=False)
    torch.manual_seed(0)
    model = MultiTaskNet(encoder_weights=None)
    path = Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES),
                      image_size=32, data=data.describe(), split_path=str(tmp_path / "split.csv"), epoch=0,
                      params={"max_samples": 120, "seg_weight": 1.0, "cls_weight": 1.0}).save(tmp_path / "best.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # an untrained model's temperature may sit on a bound
        both = calibrate_checkpoint(path, data, device="cpu", amp="off", progress=False)
        calibrate_checkpoint(path, data, tta=False, target_coverage=0.5, device="cpu", amp="off", progress=False)
    stored = Checkpoint.load(path).calibration
    assert stored["tta"] == both["tta"]                                  # kept
    assert stored["plain"]["target_coverage"] == 0.5                     # replaced
    assert not StoredCalibration.from_checkpoint(Checkpoint.load(path), tta=True).missing


def test_a_resumed_budget_run_counts_the_epochs_it_already_spent(synthetic_dir, tmp_path):
    from skin_utils.data import load_data, train_val_loaders
    from skin_utils.engine import build_optimizer_and_schedule, fit
    from skin_utils.losses import MultiTaskLoss
    from skin_utils.model import MultiTaskNet

    data = load_data(synthetic_dir, 32, split_path=tmp_path / "split.csv", max_samples=120, progress=False)

    def attempt(epochs, deadline, resume):
        torch.manual_seed(0)
        model = MultiTaskNet(encoder_weights=None)
        train, val, _ = train_val_loaders(data, 16, "cpu", num_workers=0)
        opt, sched = build_optimizer_and_schedule(model, 1e-3, 1e-4, 3, len(train))  # planned: 3 epochs
        return fit(model, train, val, loss_fn=MultiTaskLoss(), optimizer=opt, scheduler=sched, epochs=epochs,
                   device="cpu", checkpoint_dir=tmp_path / "ckpt", class_names=CLASS_NAMES, image_size=32, amp="off",
                   progress=False, resume=resume, deadline=deadline)

    first = attempt(1, time.perf_counter() + 1e6, resume=False)  # interrupted after its first epoch
    spent = first[0].get("epoch_seconds", first[0]["train_seconds"])
    assert spent > 0
    # the budget left room for 1.5 epochs in all: the epoch already trained counts, so no other fits
    resumed = attempt(3, time.perf_counter() + 1.5 * spent, resume=True)
    assert [row["epoch"] for row in resumed] == [1]


# --------------------------------------------------------------------------------------------
# notebooks: a misspelt parameter stops them; the Grad-CAM caption names the class of its map
# --------------------------------------------------------------------------------------------

def test_a_misspelt_papermill_parameter_stops_the_notebook_with_the_nearest_name(tmp_path):
    import papermill

    from tests.conftest import ROOT

    with pytest.raises(papermill.PapermillExecutionError, match="Unknown parameter 'epoch'.*did you mean 'epochs'"):
        papermill.execute_notebook(str(ROOT / "notebooks" / "02_train.ipynb"), str(tmp_path / "out.ipynb"),
                                   parameters={"epoch": 5}, kernel_name="python3", language="python",
                                   cwd=str(ROOT), progress_bar=False)
    from skin_utils.config import TrainConfig

    TrainConfig.from_notebook({"epochs": 5, "result": None, "_i3": "", "In": []})  # the notebook's own names pass


def test_the_grad_cam_caption_names_the_class_its_map_explains(tmp_path):
    from skin_utils.data import ArrayCache
    from skin_utils.data import Data
    from skin_utils.transforms import Normalize
    from skin_utils.engine import grad_cam
    from skin_utils.evaluate import Evaluation, cam_examples
    from skin_utils.model import MultiTaskNet

    torch.manual_seed(0)
    model = MultiTaskNet(encoder_weights=None).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (2, 32, 32, 3), dtype=np.uint8)
    paths = []
    for k, im in enumerate(images):
        paths.append(str(tmp_path / f"im{k}.png"))
        Image.fromarray(im).save(paths[-1])
    index = pd.DataFrame({"image_id": ["im0", "im1"], "image_path": paths, "mask_path": [None, None],
                          "label": [0, 1], "lesion_id": ["im0", "im1"]})
    cache = ArrayCache(path=None, images=images, masks=np.zeros((2, 32, 32), np.uint8), image_ids=["im0", "im1"])
    data = Data(index=index, split=index.assign(split="all"), cache=cache, image_size=(32, 32), rows={"all": np.arange(2)})
    x = Normalize.from_config(None)(torch.from_numpy(images).permute(0, 3, 1, 2))
    plain = model(x)[1].argmax(1).tolist()
    shown = [CLASS_NAMES[(c + 1) % 7] for c in plain]  # what a TTA average predicted instead
    per_image = pd.DataFrame({"image_id": ["im0", "im1"], "row": [0, 1], "true": ["MEL", "NV"], "pred": shown,
                              "prob_pred": [0.5, 0.5]})
    evaluation = Evaluation(report={}, per_image=per_image, mask_probs=torch.zeros(2, 32, 32), threshold=0.5)
    out = cam_examples(model, data, evaluation, [0, 1], "cpu")
    expected, _ = grad_cam(model, x, target=[CLASS_NAMES.index(c) for c in shown])
    for k in range(2):
        assert f"pred {shown[k]}" in out["captions"][k]
        assert np.allclose(out["cams"][k], expected[k], atol=1e-5)
