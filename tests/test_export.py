"""The model outside the notebooks: the export folder (safetensors + config.json + ONNX + card), its parity
with the run's checkpoint on real images, the predict command and the ISIC 2018 submission files."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from skin_utils import CLASS_NAMES
from skin_utils.checkpoint import Checkpoint, CheckpointError
from skin_utils.config import InferConfig, TrainConfig
from skin_utils.engine import upsample_mask
from skin_utils.export import CARD_FILE, ONNX_FILE, export, onnx_input
from skin_utils.inference import ISIC_TASK3, Predictor, infer, write_demo_images
from skin_utils.layout import find_images, read_image
from skin_utils.predict import main as predict_main
from skin_utils.train import train
from tests.conftest import REAL_DATA

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def run(synthetic_dir, tmp_path_factory):
    """A run trained one epoch at 64 px (Shades of Gray, calibrated on validation): a model with real outputs."""
    root = tmp_path_factory.mktemp("export")
    cfg = TrainConfig(data_dir=str(synthetic_dir), image_size=64, epochs=1, max_samples=120, encoder_weights=None,
                      device="cpu", num_workers=0, split_path=str(root / "split.csv"),
                      reports_dir=str(root / "reports"), run_name="tiny")
    return train(cfg, progress=False).run


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Real HAM10000 images when the shared folder is there (16, sizes as stored), else new demo images."""
    if (REAL_DATA / "HAM10000_metadata.csv").is_file():
        return sorted(find_images(REAL_DATA))[:: 500][:16]
    return sorted(find_images(write_demo_images(tmp_path_factory.mktemp("img"), n=8)))


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    return export(run.root, tmp_path_factory.mktemp("out") / "model")


def test_export_folder_is_plain_files_that_rebuild_the_checkpoint(run, exported):
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        ["config.json", "model.safetensors", "features.safetensors", ONNX_FILE, CARD_FILE])
    config = json.loads((exported / "config.json").read_text())
    assert config["onnx"]["opset"] == 17 and "training" not in config and "model" not in config
    # the familiarity reference's 512 x 512 precision travels as a tensor file; config.json keeps what a person reads
    assert "precision" not in config["calibration"]["features"] and config["calibration"]["features"]["threshold"] > 0
    assert (exported / "config.json").stat().st_size < 100_000
    original, copy = Checkpoint.load(run.best), Checkpoint.load(exported)
    for field in ("model_config", "class_names", "image_size", "normalization", "calibration", "params", "epoch"):
        assert getattr(copy, field) == getattr(original, field), field
    assert all(torch.equal(copy.model[k], v) for k, v in original.model.items())
    (exported.parent / "half").mkdir()
    (exported.parent / "half" / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        Checkpoint.load(exported.parent / "half")


def test_folder_and_onnx_reproduce_the_checkpoints_predictions(run, exported, images):
    """From the folder: identical; from ONNX (plain outputs, no skin_utils): calibrated probabilities within
    1e-4 and masks IoU >= 0.99 at each image's own size."""
    checkpoint = Predictor(run.best, device="cpu", amp="off", tta=False)
    folder = Predictor.from_folder(exported, device="cpu", amp="off", tta=False)
    assert folder.calibration.as_dict() == checkpoint.calibration.as_dict()
    assert checkpoint.calibration.calibrated  # the temperature inside the graph is a fitted one
    session = ort.InferenceSession(str(exported / ONNX_FILE), providers=["CPUExecutionProvider"])
    diffs, ious = [], []
    for path in images:
        a, b = checkpoint.predict_image(path), folder.predict_image(path)
        assert a.probs_calibrated == b.probs_calibrated and np.array_equal(a.mask, b.mask)
        image = read_image(path)
        probs, mask = session.run(None, {"image": onnx_input(image, checkpoint.image_size)})
        diffs.append(np.abs(probs[0] - np.array([a.probs_calibrated[c] for c in CLASS_NAMES])).max())
        onnx_mask = upsample_mask(torch.from_numpy(mask[0, 0]), image.shape[:2], 0.5)
        union = (onnx_mask | a.mask).sum()
        ious.append(1.0 if union == 0 else (onnx_mask & a.mask).sum() / union)
    print(f"ONNX vs PyTorch on {len(images)} images: max |dp| {max(diffs):.2e}, min mask IoU {min(ious):.4f}")
    assert max(diffs) < 1e-4 and min(ious) >= 0.99


def test_onnx_takes_any_batch_and_image_size(exported):
    session = ort.InferenceSession(str(exported / ONNX_FILE), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 64), (3, 3, 150, 200), (2, 3, 97, 131)]:
        probs, mask = session.run(None, {"image": np.random.default_rng(0).random(shape, dtype=np.float32)})
        assert probs.shape == (shape[0], len(CLASS_NAMES)) and mask.shape == (shape[0], 1, *shape[2:])
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_model_card_is_written_from_the_run(run, exported):
    card = (exported / CARD_FILE).read_text()
    assert "not a medical device" in card
    assert "Not evaluated yet" in card  # no 03_evaluate on this run: said, not invented
    assert "synthetic demo" in card  # the failure mode read from the data description
    assert "papermill notebooks/02_train.ipynb" in card and "-p image_size 64" in card and "-p epochs 1" in card
    assert "temperature" in card and "onnxruntime" in card and "`features.safetensors` (the familiarity" in card


def test_the_model_cards_onnx_snippet_reads_an_image_as_the_predictor_does(exported, tmp_path, monkeypatch):
    # a JPEG stored on its side with EXIF orientation 6, as phones write them: the snippet must turn it upright
    card = (exported / CARD_FILE).read_text()
    snippet = card.split("Without skin_utils (numpy, Pillow, onnxruntime):\n```python\n")[1].split("```")[0]
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "lesion.jpg", exif=exif)
    for name in ("config.json", ONNX_FILE):
        (tmp_path / name).symlink_to(exported / name)
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(snippet, scope)
    prediction = Predictor.from_folder(exported, device="cpu", amp="off").predict_image(tmp_path / "lesion.jpg")
    assert scope["mask"].shape[2:] == tuple(scope["cfg"]["image_size"]) and prediction.mask.shape == (60, 40)
    expected = [prediction.probs_calibrated[c] for c in CLASS_NAMES]
    assert np.abs(scope["probs"][0] - expected).max() < 1e-4


@pytest.fixture(scope="module")
def card_run(run, tmp_path_factory):
    """A run folder of its own (run.json, a hard link to the tiny run's best.pt) for hand-written evaluations."""
    root = tmp_path_factory.mktemp("card") / "tiny"
    (root / "checkpoints").mkdir(parents=True)
    (root / "metrics").mkdir()
    shutil.copy(run.root / "run.json", root / "run.json")
    os.link(run.best, root / "checkpoints" / "best.pt")  # another path to the same file, without a 100 MB copy
    return root


def _card(root, tmp_path, **evaluation) -> str:
    """The model card of ``root``'s best.pt once metrics/evaluate.json holds a test evaluation of it (macro AUC
    0.717 [0.577, 0.785]) with ``evaluation``'s fields in place of the defaults."""
    best = root / "checkpoints" / "best.pt"
    saved = {"n_images": 25, "n_lesions": 18, "macro_auc": 0.717, "ci95": {"macro_auc": [0.577, 0.785]},
             "checkpoint": str(best), "checkpoint_epoch": Checkpoint.load(best).epoch + 1, "subgroups": {},
             **evaluation}
    (root / "metrics" / "evaluate.json").write_text(json.dumps(saved))
    return (export(best, tmp_path / "model", onnx=False) / CARD_FILE).read_text()


def test_model_card_of_outputs_without_a_fitted_temperature(card_run, tmp_path):
    """evaluate stores "after": None when no temperature was fitted for the outputs it scored (last.pt, or TTA
    outputs of a checkpoint calibrated without TTA): the card gives the uncalibrated figures only."""
    calibration = {"kind": "tta", "calibrated": False, "before": {"ece": 0.123, "nll": 1.456}, "after": None}
    card = _card(card_run, tmp_path, trust={"calibration": calibration})
    assert "On the test split (tta outputs): ECE 0.123, NLL 1.456 (no temperature fitted for them)." in card
    assert "| macro AUC | 0.717 [0.577, 0.785] |" in card


def test_model_card_leaves_out_subgroup_columns_without_a_group(card_run, tmp_path):
    """A small test split has no age band of >= 10 lesions: evaluate.json holds "age_band": []."""
    male = {"sex": "male", "n_images": 17, "dice": 0.264, "balanced_accuracy": 0.333, "mel_auc": 0.967}
    card = _card(card_run, tmp_path, subgroups={"age_band": [], "sex": [male]})
    assert "## Subgroups: sex" in card and "0.967" in card
    assert "age_band" not in card


def test_model_card_takes_only_the_evaluation_of_the_exported_checkpoint(card_run, tmp_path):
    best = card_run / "checkpoints" / "best.pt"
    epoch = Checkpoint.load(best).epoch + 1
    # the run's evaluate.json scored last.pt, or best.pt as it was before a resume: not this model's numbers
    for other in ({"checkpoint": str(card_run / "checkpoints" / "last.pt")}, {"checkpoint_epoch": epoch + 3}):
        card = _card(card_run, tmp_path, **other)
        assert "0.717" not in card, other
        assert "The run's test results (`metrics/evaluate.json`) are of another checkpoint" in card
        assert f"`papermill notebooks/03_evaluate.ipynb 03_evaluate.out.ipynb -p checkpoint {best}`" in card
    # the evaluation of this file at this epoch is on the card, also when the run folder was made elsewhere
    for where in (best, "/content/repo/reports/runs/card/checkpoints/best.pt"):
        card = _card(card_run, tmp_path, checkpoint=str(where))
        assert "| macro AUC | 0.717 [0.577, 0.785] |" in card and "another checkpoint" not in card


def _check_isic(folder, images):
    """The ISIC 2018 rules: Task 1 `<id>_segmentation.png`, one channel, 0/255, the image's size; Task 3 CSV
    `image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`, one row per image, probabilities in [0, 1] summing to 1."""
    table = pd.read_csv(folder / ISIC_TASK3)
    assert list(table.columns) == ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    assert sorted(table["image"]) == sorted(p.stem for p in images)
    probs = table[list(CLASS_NAMES)].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all() and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    for path in images:
        mask = Image.open(folder / f"{path.stem}_segmentation.png")
        assert mask.mode == "L" and mask.size == Image.open(path).size
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_predict_command_writes_masks_table_and_isic_files(exported, images, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in images[:4]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (37, 91, 3), dtype=np.uint8)).save(folder / "odd.png")
    out = tmp_path / "out"
    assert predict_main([str(folder), "--run", str(exported), "--out", str(out), "--isic", "--no-tta",
                         "--device", "cpu"]) == 0
    predicted = sorted(p for p in folder.iterdir() if p.suffix != ".txt")
    _check_isic(out / "isic", predicted)
    table = pd.read_csv(out / "predictions.csv")
    assert {"pred", "p_cal_MEL", "entropy", "refer", "mel_flag"} <= set(table.columns) and len(table) == 5
    assert table["refer"].notna().all() and table["mel_flag"].notna().all()  # calibrated: the flags are set
    assert pd.read_csv(out / "skipped.csv")["path"].str.endswith("notes.txt").tolist() == [True]
    assert sorted(p.name for p in (out / "masks").iterdir()) == sorted(f"{p.stem}.png" for p in predicted)
    assert "1 file(s) were skipped" in capsys.readouterr().out
    assert predict_main([str(predicted[0]), "--run", str(exported), "--out", str(tmp_path / "one"),
                         "--device", "cpu", "--no-tta"]) == 0
    assert len(pd.read_csv(tmp_path / "one" / "predictions.csv")) == 1
    with pytest.raises(SystemExit):
        predict_main([str(tmp_path / "nowhere"), "--run", str(exported), "--out", str(out)])


def test_notebook_inference_writes_the_isic_files_too(run, images, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for path in images[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    cfg = InferConfig(run=str(run.root), input_dir=str(folder), isic=True, cam=False, tta=False, device="cpu",
                      reports_dir=str(tmp_path / "reports"))
    result = infer(cfg, progress=False)
    _check_isic(result.run.root / "inference" / "isic", sorted(folder.iterdir()))
    # the report's table shows every flag the conclusion counts
    saved = json.loads((result.run.metrics / "inference.json").read_text())
    assert saved["n_unfamiliar"] == sum(bool(p.unfamiliar) for p in result.predictions)
    section = (result.run.root / "sections" / "04_inference.md").read_text()
    assert result.predictor.features is not None and "| unfamiliar |" in section
