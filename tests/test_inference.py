"""Inference on a folder of arbitrary files: predictions for the good ones, reasons for the rest."""

import numpy as np
import pytest
import torch
from PIL import Image

from skin_utils import CLASS_NAMES
from skin_utils.checkpoint import Checkpoint
from skin_utils.inference import Predictor, predictions_table, write_demo_images
from skin_utils.model import MultiTaskNet


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = MultiTaskNet()
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES),
               image_size=64).save(path)
    return path


def test_folder_with_bad_files_predicts_the_good_ones_and_lists_the_rest(checkpoint, tmp_path, monkeypatch):
    folder = write_demo_images(tmp_path / "in", n=3)
    (folder / "notes.txt").write_text("not an image")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    good = (folder / "demo_00.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 3])
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(folder / "tiny.png")
    Image.fromarray(np.full((300, 400), 128, np.uint8)).save(folder / "huge_gray.png")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000)  # 400x300 = 120,000 px > 2x the limit
    predictions, failures = Predictor(checkpoint, device="cpu").predict_folder(folder, batch_size=2, progress=False)
    assert sorted(p.image_id for p in predictions) == ["demo_00", "demo_01", "demo_02"]
    reasons = dict(zip([p.rsplit("/", 1)[-1] for p in failures["path"]], failures["reason"]))
    assert set(reasons) == {"notes.txt", "corrupt.jpg", "truncated.jpg", "tiny.png", "huge_gray.png"}
    assert "not an image" in reasons["notes.txt"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "smaller than" in reasons["tiny.png"]
    assert "too many pixels" in reasons["huge_gray.png"]
    table = predictions_table(predictions)
    assert np.allclose(table[[f"p_{c}" for c in CLASS_NAMES]].sum(axis=1), 1, atol=1e-3)


def test_grayscale_and_odd_sizes_get_masks_at_their_own_size(checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (37, 91), dtype=np.uint8)).save(folder / "g.png")
    predictions, failures = Predictor(checkpoint, device="cpu").predict_folder(folder, progress=False)
    assert failures.empty
    assert predictions[0].mask.shape == (37, 91)


def test_single_image_matches_the_batched_path(checkpoint, tmp_path):
    folder = write_demo_images(tmp_path / "in", n=2)
    predictor = Predictor(checkpoint, device="cpu", amp="off")
    batched, _ = predictor.predict_folder(folder, batch_size=2, progress=False)
    single = predictor.predict_image(folder / "demo_01.jpg")
    assert single.pred == batched[1].pred
    assert single.prob == pytest.approx(batched[1].prob, abs=1e-5)
    assert np.array_equal(single.mask, batched[1].mask)


def test_predictor_reads_size_and_normalisation_from_the_checkpoint(checkpoint, tmp_path):
    ckpt = Checkpoint.load(checkpoint)
    image = np.asarray(Image.open(write_demo_images(tmp_path / "in", n=1) / "demo_00.jpg"))
    plain = Predictor(checkpoint, device="cpu", amp="off")
    assert plain.image_size == (64, 64) and plain.class_names == list(CLASS_NAMES)
    # a format-1 file of the same model (image size under "config") predicts the same
    torch.save({"format_version": 1, "model": ckpt.model, "model_config": ckpt.model_config,
                "class_names": ckpt.class_names, "config": {"image_size": 64}}, tmp_path / "v1.pt")
    old = Predictor(tmp_path / "v1.pt", device="cpu", amp="off")
    assert old.predict_image(image).probs == plain.predict_image(image).probs
    # another normalisation in the checkpoint changes what the model sees
    ckpt.normalization = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    other = Predictor(ckpt.save(tmp_path / "other.pt"), device="cpu", amp="off")
    assert other.predict_image(image).probs != plain.predict_image(image).probs
