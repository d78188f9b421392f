"""Inference on a folder of arbitrary files: predictions for the good ones, reasons for the rest."""

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from skin_utils import CLASS_NAMES
from skin_utils.checkpoint import Checkpoint
from skin_utils.inference import Predictor, predictions_table, summary, write_demo_images
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


def _calibrated(checkpoint, tmp_path, **record):
    ckpt = Checkpoint.load(checkpoint)
    ckpt.calibration = {"tta": {"temperature": 1.5, "mel_threshold": 0.0, "referral_threshold": 0.0,
                                "uncertainty": "entropy", "notes": [], **record}}
    return ckpt.save(tmp_path / "calibrated.pt")


def test_trust_columns_flags_and_cam_overlays(checkpoint, tmp_path):
    from skin_utils.trust import calibrated_probs
    from skin_utils.inference import flags_caption, save_overlays

    folder = write_demo_images(tmp_path / "in", n=3)
    # thresholds of 0: every image is referred and raises the melanoma flag
    predictor = Predictor(_calibrated(checkpoint, tmp_path), device="cpu", amp="off", tta=True, cam=True)
    assert predictor.calibration.temperature == 1.5 and predictor.calibration.missing == []
    predictions, _ = predictor.predict_folder(folder, batch_size=2, progress=False)
    p = predictions[0]
    raw = np.array([p.probs[c] for c in CLASS_NAMES])
    assert np.allclose([p.probs_calibrated[c] for c in CLASS_NAMES], calibrated_probs(raw[None], 1.5)[0], atol=1e-4)
    assert p.refer is True and p.mel_flag is True and 0 <= p.entropy <= 1
    assert 0 <= p.tta_disagreement <= 1 and p.tta_mutual_info >= 0
    assert p.cam.shape == (64, 64) and 0 <= p.cam.min() and p.cam.max() <= 1
    assert p.mask_uncertainty_map.shape == (64, 64) and 0 <= p.mask_uncertainty <= 1
    assert "REFER" in flags_caption(p) and "MELANOMA FLAG" in flags_caption(p)
    overlays = save_overlays(predictions, tmp_path / "overlays")
    assert all(path.stat().st_size > 1000 for path in overlays)
    table = predictions_table(predictions, overlays)
    for col in ("prob_calibrated", "p_cal_MEL", "entropy", "tta_disagreement", "tta_mutual_info", "mask_uncertainty",
                "refer", "mel_flag", "overlay"):
        assert col in table, col
    assert table["refer"].all() and table["overlay"].tolist() == [str(o) for o in overlays]
    assert np.allclose(table[[f"p_cal_{c}" for c in CLASS_NAMES]].sum(axis=1), 1, atol=1e-3)
    # the latency is that of a prediction without the heat map
    assert predictor.predict_image(folder / "demo_00.jpg", cam=False).cam is None


def test_an_uncalibrated_checkpoint_predicts_with_temperature_one_and_no_flags(checkpoint, tmp_path):
    from skin_utils.inference import flags_caption

    folder = write_demo_images(tmp_path / "in", n=2)
    predictor = Predictor(checkpoint, device="cpu", amp="off")
    assert predictor.calibration.temperature == 1.0 and "no calibration" in predictor.calibration.describe()
    predictions, _ = predictor.predict_folder(folder, progress=False)
    p = predictions[0]
    assert p.refer is None and p.mel_flag is None and p.cam is None and p.tta_disagreement is None
    assert p.probs_calibrated == pytest.approx(p.probs, abs=1e-6)
    assert "no flags" in flags_caption(p)
    table = predictions_table(predictions)
    assert table["refer"].isna().all() and table["mel_flag"].isna().all() and "overlay" not in table
    assert "tta_disagreement" not in table
    # a calibration of TTA outputs does not apply to plain ones
    plain = Predictor(_calibrated(checkpoint, tmp_path), device="cpu", amp="off", tta=False)
    assert plain.calibration.temperature == 1.0 and plain.calibration.kind == "plain"


def test_the_summary_counts_classes_uncertain_predictions_flags_and_skipped_files(checkpoint, tmp_path):
    folder = write_demo_images(tmp_path / "in", n=3)
    predictions, _ = Predictor(_calibrated(checkpoint, tmp_path), device="cpu", amp="off", tta=True).predict_folder(
        folder, progress=False)
    text = summary(predictions, n_skipped=2, demo=True)
    counts = ", ".join(f"{k} {v}" for k, v in Counter(p.pred for p in predictions).most_common())
    assert text.startswith(f"3 image(s) predicted: {counts}.")
    assert "3 of 3 should be referred" in text and "3 raise the melanoma flag" in text   # thresholds of 0
    assert "2 file(s) were skipped" in text and "synthetic demo" in text
    assert "1 of 1 should be referred" in summary(predictions[:1], 0) and "1 raises the melanoma flag" in summary(
        predictions[:1], 0)
    bare, _ = Predictor(checkpoint, device="cpu", amp="off").predict_folder(folder, progress=False)
    assert "no referral or melanoma threshold" in summary(bare, 0) and "python -m skin_utils.trust" in summary(bare, 0)
    assert "skipped" not in summary(bare, 0) and summary([], 1).startswith("No image could be predicted.")
    unsure = sum(p.prob_calibrated < 0.5 for p in bare)
    assert (f"{unsure} of 3 have a calibrated top probability below 0.5" in summary(bare, 0)) is (unsure > 0)


def test_images_unlike_the_validation_ones_are_called_unfamiliar(checkpoint, tmp_path):
    from skin_utils.app import result_markdown
    from skin_utils.engine import image_batch, predict
    from skin_utils.inference import flags_caption
    from skin_utils.trust import feature_distance, feature_reference

    # the reference: the pooled features of 12 demo lesions, as calibration stores them
    familiar = write_demo_images(tmp_path / "familiar", n=12)
    plain = Predictor(checkpoint, device="cpu", amp="off")
    assert plain.features is None  # no reference stored: no familiarity, and no column that pretends to one
    images = [plain.preprocess(np.asarray(Image.open(p).convert("RGB"))) for p in sorted(familiar.glob("*.jpg"))]
    feats = predict(plain.model, [image_batch(torch.stack(images))], "cpu", normalize=plain.normalize,
                    progress=False, features=True)["features"]
    ckpt = Checkpoint.load(checkpoint)
    ckpt.calibration = {"features": feature_reference(feats)}
    predictor = Predictor(ckpt.save(tmp_path / "with_reference.pt"), device="cpu", amp="off", tta=True)
    # images of another kind: flat grey and saturated noise
    other = tmp_path / "other"
    other.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(np.full((64, 80, 3), 200, np.uint8)).save(other / "grey.png")
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(other / "noise.png")
    seen, _ = predictor.predict_folder(familiar, progress=False)
    new, _ = predictor.predict_folder(other, progress=False)
    assert [p.feature_distance for p in seen] == pytest.approx(feature_distance(feats, ckpt.calibration["features"]),
                                                               rel=1e-4)  # the plain view's, TTA or not
    assert sum(p.unfamiliar for p in seen) <= 2 and all(p.unfamiliar for p in new)
    assert min(p.feature_distance for p in new) > max(p.feature_distance for p in seen)
    assert "UNFAMILIAR" in flags_caption(new[0])
    assert "Familiarity:** UNFAMILIAR" in result_markdown(new[0], predictor.calibration)
    table = predictions_table(seen + new)
    assert table["unfamiliar"].dtype == "boolean" and table["unfamiliar"].tail(2).all()
    assert "2 of 2 are unfamiliar" in summary(new, 0) and "1 of 1 is unfamiliar" in summary(new[:1], 0)
    bare, _ = plain.predict_folder(other, progress=False)
    assert bare[0].unfamiliar is None and predictions_table(bare)["unfamiliar"].isna().all()
    assert "unfamiliar" not in summary(bare, 0) and "not calibrated" in result_markdown(bare[0], plain.calibration)


def test_images_of_one_name_in_two_folders_keep_their_own_id_mask_overlay_and_row(checkpoint, tmp_path):
    from skin_utils.inference import ISIC_TASK3, save_predictions

    src, folder = write_demo_images(tmp_path / "src", n=3), tmp_path / "in"
    for name, target in (("demo_00", "clinicA/IMG_0001"), ("demo_01", "clinicB/IMG_0001"), ("demo_02", "other")):
        (folder / target).parent.mkdir(parents=True, exist_ok=True)
        (src / f"{name}.jpg").rename(folder / f"{target}.jpg")
    predictor = Predictor(checkpoint, device="cpu", amp="off")
    predictions, failures = predictor.predict_folder(folder, progress=False)
    ids = ["clinicA__IMG_0001", "clinicB__IMG_0001", "other"]  # a stem stays the id where no other image has it
    assert [p.image_id for p in predictions] == ids
    save_predictions(predictions, failures, tmp_path / "out", overlays=True, isic=True)
    assert pd.read_csv(tmp_path / "out" / "predictions.csv")["image_id"].tolist() == ids
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == [f"{i}.png" for i in ids]
    assert sorted(p.name for p in (tmp_path / "out" / "overlays").iterdir()) == [f"{i}.png" for i in ids]
    assert pd.read_csv(tmp_path / "out" / "isic" / ISIC_TASK3)["image"].tolist() == ids
    assert sorted(p.name for p in (tmp_path / "out" / "isic").glob("*.png")) == [f"{i}_segmentation.png" for i in ids]
    # the same from a list of paths, and predictions made one by one that would overwrite each other are refused
    two = [folder / "clinicA" / "IMG_0001.jpg", folder / "clinicB" / "IMG_0001.jpg"]
    assert [p.image_id for p in predictor.predict_paths(two, progress=False)[0]] == ids[:2]
    with pytest.raises(ValueError, match="clinicA/IMG_0001.jpg.*clinicB/IMG_0001.jpg.*distinct file names"):
        save_predictions([predictor.predict_image(p) for p in two], failures, tmp_path / "out2")


def test_images_of_one_stem_and_two_extensions_get_distinct_ids(checkpoint, tmp_path):
    from skin_utils.inference import image_ids, save_predictions

    assert image_ids(["/d/x.jpg", "/d/x.png"]) == ["x_jpg", "x_png"]
    assert image_ids(["/d/x.jpg", "/d/y.png"]) == ["x", "y"]  # nothing collides: the plain stems
    assert image_ids(["/d/a/x.jpg", "/d/b/x.jpg", "/d/b/x.png"]) == ["a__x", "b__x_jpg", "b__x_png"]
    folder = write_demo_images(tmp_path / "in", n=2)
    Image.open(folder / "demo_01.jpg").save(folder / "demo_00.png")
    (folder / "demo_01.jpg").unlink()
    predictions, failures = Predictor(checkpoint, device="cpu", amp="off").predict_folder(folder, progress=False)
    assert [p.image_id for p in predictions] == ["demo_00_jpg", "demo_00_png"]
    table = save_predictions(predictions, failures, tmp_path / "out")  # HEAD: "would share an image_id"
    assert table["image_id"].tolist() == ["demo_00_jpg", "demo_00_png"]
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["demo_00_jpg.png", "demo_00_png.png"]


def test_predict_refuses_an_out_folder_with_masks_of_other_images(checkpoint, tmp_path, capsys):
    from skin_utils.inference import ISIC_TASK3, save_predictions
    from skin_utils.predict import main as predict_main

    first, second, out = write_demo_images(tmp_path / "a", n=3), tmp_path / "b", tmp_path / "out"
    second.mkdir()
    (first / "demo_02.jpg").rename(second / "other.jpg")
    command = ["--run", str(checkpoint), "--out", str(out), "--device", "cpu", "--no-tta", "--isic"]
    assert predict_main([str(first), *command]) == 0
    assert predict_main([str(first), *command]) == 0  # the same input again: it writes the same files
    written = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert pd.read_csv(out / "isic" / ISIC_TASK3)["image"].tolist() == ["demo_00", "demo_01"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # refused before predicting
        predict_main([str(second), *command])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{out / 'masks'} holds 2 file(s) this call would not write" in err
    assert f"{out / 'isic'} holds 2 file(s)" in err and "empty folder" in err and "delete" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written  # nothing written
    # save_predictions itself refuses too, before writing anything (predictions made some other way)
    predictions, failures = Predictor(checkpoint, device="cpu", amp="off").predict_folder(second, progress=False)
    with pytest.raises(FileExistsError, match="masks holds 2 file"):
        save_predictions(predictions, failures, out, isic=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == written


def test_notebook_inference_on_another_input_keeps_only_its_masks_and_names_the_checkpoint(checkpoint, tmp_path):
    import json

    from skin_utils.checkpoint import Checkpoint
    from skin_utils.config import InferConfig
    from skin_utils.inference import ISIC_TASK3, infer

    ckpt = Checkpoint.load(checkpoint)
    ckpt.epoch = 3
    path = ckpt.save(tmp_path / "best.pt")
    first, second = write_demo_images(tmp_path / "a", n=3), tmp_path / "b"
    second.mkdir()
    (first / "demo_02.jpg").rename(second / "other.jpg")
    for folder in (first, second):
        cfg = InferConfig(checkpoint=str(path), input_dir=str(folder), reports_dir=str(tmp_path / "reports"),
                          tta=False, cam=False, isic=True, device="cpu", amp="off")
        result = infer(cfg, progress=False)
    out = result.run.root / "inference"
    assert pd.read_csv(out / "predictions.csv")["image_id"].tolist() == ["other"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["other.png"]
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["other.png"]
    assert sorted(p.name for p in (out / "isic").iterdir()) == [ISIC_TASK3, "other_segmentation.png"]
    saved = json.loads((result.run.metrics / "inference.json").read_text())
    assert Path(saved["checkpoint"]).resolve() == path.resolve() and saved["checkpoint_epoch"] == 4  # counted from 1


def test_a_large_image_gets_the_pixels_the_evaluation_cache_gives_it(checkpoint, tmp_path):
    # over 4 MP the cache reads a JPEG reduced (DCT scaling) before resizing: 04 must see what 03 scored
    from skin_utils.data import build_cache

    rng = np.random.default_rng(0)
    path = tmp_path / "large.jpg"
    Image.fromarray(rng.integers(0, 255, (45, 60, 3), dtype=np.uint8)).resize((2560, 1920), Image.BICUBIC).save(path)
    predictor = Predictor(checkpoint, device="cpu", amp="off")
    index = pd.DataFrame({"image_id": ["large"], "image_path": [str(path)], "mask_path": [None]})
    cached = torch.from_numpy(np.array(build_cache(index, predictor.image_size, tmp_path / "cache",
                                                   progress=False).images[0])).permute(2, 0, 1)
    expected = predictor._predict([([cached], [("large", path, (1920, 2560))])])[0]
    for got in (predictor.predict_paths([path], progress=False)[0][0], predictor.predict_image(path)):
        assert got.probs == expected.probs and got.mask.shape == (1920, 2560)
