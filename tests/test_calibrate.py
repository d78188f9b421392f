"""The calibration a checkpoint stores (skin_utils.trust): the record fitted on validation, what
readers make of it (StoredCalibration), and calibrate_checkpoint from Python and from the command
line. (The per-view outputs it rests on: tests/test_engine.py; trust assessed on an evaluated
split: tests/test_evaluate.py.)"""

import json

import numpy as np
import pytest
import torch

from skin_utils import CLASS_NAMES
from skin_utils.checkpoint import Checkpoint
from skin_utils.model import MultiTaskNet
from skin_utils.trust import (StoredCalibration, calibrate_checkpoint, calibrated_probs, calibration_record,
                              feature_summary, fit_temperature, main, operating_threshold, probs_to_logits,
                              referral_uncertainty, summary_lines, trust_columns)


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _overconfident(n=600, k=3, seed=0, scale=4.0):
    """Labels and probabilities from logits that are right on average but ``scale`` times too
    sharp: temperature scaling should find T near ``scale``."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 1.0
    return _softmax(scale * z), y


# --------------------------------------------------------------------------------------------
# the record and what readers make of it
# --------------------------------------------------------------------------------------------

def test_record_fits_the_temperature_and_both_thresholds_on_known_outputs():
    probs, y = _overconfident()
    names = ["MEL", "NV", "BCC"]
    r = calibration_record(probs, y, names, target_sensitivity=0.9, target_coverage=0.8)
    assert 3.0 < r["temperature"] < 5.0, r["temperature"]  # the logits were 4x too sharp
    assert r["temperature"] == pytest.approx(fit_temperature(probs_to_logits(probs), y))
    assert r["after"]["nll"] < r["before"]["nll"] and r["after"]["ece"] < r["before"]["ece"]
    cal = calibrated_probs(probs, r["temperature"])
    assert r["mel_threshold"] == pytest.approx(operating_threshold(cal[:, 0], y == 0, 0.9))
    assert r["mel_at_threshold"]["sensitivity"] >= 0.9 and r["n_mel"] == int((y == 0).sum())
    u = referral_uncertainty(cal)
    assert np.all((u >= 0) & (u <= 1 + 1e-12))
    assert r["coverage_at_threshold"] == pytest.approx(np.mean(u <= r["referral_threshold"]))
    assert 0.8 <= r["coverage_at_threshold"] < 0.8 + 2 / len(y)
    assert r["target_sensitivity"] == 0.9 and r["target_coverage"] == 0.8 and r["split"] == "val"
    # plain Python types only: a checkpoint (weights_only) and a JSON file can hold it
    json.dumps(r, allow_nan=False)


def test_record_without_melanomas_has_no_flag_threshold_and_says_why():
    probs, y = _overconfident()
    y = np.where(y == 0, 1, y)
    r = calibration_record(probs, y, ["MEL", "NV", "BCC"])
    assert r["mel_threshold"] is None and r["mel_at_threshold"] is None and r["n_mel"] == 0
    assert "no melanoma" in r["notes"][0]
    assert "none (no melanoma" in summary_lines({"tta": r})[0]
    with pytest.raises(ValueError, match="class names"):
        calibration_record(probs, y, ["MEL", "NV"])


def test_temperature_one_changes_nothing_and_a_higher_one_softens():
    probs, _ = _overconfident(n=50)
    assert np.allclose(calibrated_probs(probs, 1.0), probs, atol=1e-12)
    soft = calibrated_probs(probs, 3.0)
    assert np.all(soft.max(1) <= probs.max(1) + 1e-12)
    assert np.array_equal(soft.argmax(1), probs.argmax(1))


def _ckpt(calibration=None):
    model = MultiTaskNet(num_classes=len(CLASS_NAMES), encoder_weights=None)
    return Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES),
                      image_size=32, calibration=calibration or {})


def test_an_old_checkpoint_gives_temperature_one_no_flags_and_says_what_is_missing():
    stored = StoredCalibration.from_checkpoint(_ckpt(), tta=True)
    assert stored.temperature == 1.0 and not stored.calibrated and stored.kind == "tta"
    assert stored.missing == ["temperature", "mel_threshold", "referral_threshold"]
    probs, _ = _overconfident(n=20, k=7)
    assert np.allclose(stored.apply(probs), probs, atol=1e-12)
    flags = trust_columns(stored.apply(probs), stored, CLASS_NAMES)
    assert flags["refer"].isna().all() and flags["mel_flag"].isna().all()
    assert "no calibration for tta outputs" in stored.describe()
    assert "python -m skin_utils.trust <run or checkpoint>" in stored.describe()
    # a record for the other kind of output does not count
    plain_only = StoredCalibration.from_checkpoint(_ckpt({"plain": {"temperature": 2.0}}), tta=True)
    assert plain_only.temperature == 1.0 and "temperature" in plain_only.missing
    assert "--no-tta" in StoredCalibration.from_checkpoint(_ckpt(), tta=False).describe()


def test_stored_thresholds_raise_the_flags_on_known_values():
    record = {"temperature": 2.0, "mel_threshold": 0.3, "referral_threshold": 0.8, "uncertainty": "entropy",
              "split": "val", "n_images": 10, "target_sensitivity": 0.9, "target_coverage": 0.8, "notes": []}
    stored = StoredCalibration.from_checkpoint(_ckpt({"tta": record}), tta=True)
    assert stored.calibrated and stored.missing == [] and stored.temperature == 2.0
    k = len(CLASS_NAMES)
    probs = np.full((3, k), 0.01)
    probs[0, 0] = 1 - 0.01 * (k - 1)          # sure melanoma
    probs[1, 1] = 1 - 0.01 * (k - 1)          # sure nevus
    probs[2] = 1 / k                          # no idea
    cal = stored.apply(probs)
    expected = _softmax(np.log(probs) / 2.0)
    assert np.allclose(cal, expected)
    u = referral_uncertainty(cal)
    assert u[2] == pytest.approx(1.0) and 0.5 < u[0] < 0.8  # T = 2 softens the sure ones
    flags = trust_columns(cal, stored, CLASS_NAMES)
    assert flags["refer"].tolist() == list(u > 0.8) == [False, False, True]
    assert flags["mel_flag"].tolist() == list(cal[:, 0] >= 0.3) == [True, False, False]
    assert "temperature 2.000" in stored.describe() and stored.as_dict()["missing"] == []


# --------------------------------------------------------------------------------------------
# the step on a checkpoint, from Python and from the command line
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small(synthetic_dir, tmp_path_factory):
    """A small demo data set at 32 px and an untrained model's checkpoint that records it."""
    from skin_utils.data import load_data

    folder = tmp_path_factory.mktemp("calibrate")
    split = folder / "split.csv"
    data = load_data(synthetic_dir, 32, split_path=split, max_samples=120, progress=False)
    torch.manual_seed(0)
    model = MultiTaskNet(num_classes=len(CLASS_NAMES), encoder_weights=None)
    ckpt = Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES),
                      image_size=32, data=data.describe(), split_path=str(split), epoch=0,
                      params={"max_samples": 120, "seed": 0, "seg_weight": 1.0, "cls_weight": 1.0})
    return data, ckpt, model, folder


UNTRAINED = pytest.mark.filterwarnings("ignore:fit_temperature:UserWarning")  # an untrained model's T sits on a bound


@UNTRAINED
def test_calibrate_checkpoint_stores_both_kinds_from_one_tta_pass(small, tmp_path):
    data, ckpt, _, _ = small
    path = ckpt.save(tmp_path / "best.pt")
    records = calibrate_checkpoint(path, data, device="cpu", amp="off", batch_size=16, progress=False)
    assert set(records) == {"tta", "plain", "features"}
    stored = Checkpoint.load(path).calibration
    assert {k: stored[k] for k in ("tta", "plain")} == {k: records[k] for k in ("tta", "plain")}
    assert records["tta"]["n_images"] == records["features"]["n_images"] == len(data.rows["val"])
    for kind in ("tta", "plain"):
        assert records[kind]["temperature"] > 0 and records[kind]["referral_threshold"] is not None
    ref = stored["features"]  # the pooled layer4 map: 512 numbers per image; the summary leaves the arrays out
    assert len(ref["mean"]) == 512 and np.shape(ref["precision"]) == (512, 512)
    assert ref["threshold"] > ref["median"] > 0 and records["features"] == feature_summary(ref)
    assert any(line.startswith("features: reference of") for line in summary_lines(records))
    # the plain record is what a plain pass alone gives (the first TTA view is the image as is)
    path2 = ckpt.save(tmp_path / "plain.pt")
    plain = calibrate_checkpoint(path2, data, tta=False, device="cpu", amp="off", progress=False)
    assert set(plain) == {"plain", "features"}
    assert (records["plain"]["target_sensitivity"], records["plain"]["target_coverage"]) == (0.9, 0.8)  # defaults
    # a run trained with its own targets is recalibrated (03's recalibrate, the command line) at them
    own = Checkpoint.from_dict({**ckpt.to_dict(), "params": {**ckpt.params, "target_sensitivity": 0.6,
                                                              "target_coverage": 0.5}}).save(tmp_path / "own.pt")
    again = calibrate_checkpoint(own, data, tta=False, device="cpu", amp="off", progress=False)["plain"]
    assert (again["target_sensitivity"], again["target_coverage"]) == (0.6, 0.5)
    # ... and at the targets it was last calibrated at, when they differ from its parameters
    calibrate_checkpoint(own, data, tta=False, target_sensitivity=0.7, device="cpu", amp="off", progress=False)
    again = calibrate_checkpoint(own, data, tta=False, device="cpu", amp="off", progress=False)["plain"]
    assert (again["target_sensitivity"], again["target_coverage"]) == (0.7, 0.5)
    assert plain["plain"]["temperature"] == pytest.approx(records["plain"]["temperature"], rel=1e-3)
    assert StoredCalibration.from_checkpoint(Checkpoint.load(path2), tta=True).missing  # no TTA record


def test_calibrate_refuses_an_untrained_classification_head(small, tmp_path):
    data, ckpt, _, _ = small
    ckpt = Checkpoint.from_dict({**ckpt.to_dict(), "params": {**ckpt.params, "cls_weight": 0.0}})
    with pytest.raises(ValueError, match="classification head was not trained"):
        calibrate_checkpoint(ckpt.save(tmp_path / "seg_only.pt"), data, device="cpu", progress=False)


@UNTRAINED
def test_the_command_line_calibrates_a_run_folder(small, tmp_path, capsys):
    _, ckpt, _, _ = small
    run = tmp_path / "reports" / "runs" / "old-run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    ckpt.save(run / "checkpoints" / "best.pt")
    assert main([str(run), "--device", "cpu", "--amp", "off", "--no-progress", "--target-coverage", "0.7"]) == 0
    saved = Checkpoint.load(run / "checkpoints" / "best.pt").calibration
    assert set(saved) == {"tta", "plain", "features"} and saved["tta"]["target_coverage"] == 0.7
    assert json.loads((run / "metrics" / "calibration.json").read_text())["tta"]["temperature"] > 0
    assert "tta: T = " in capsys.readouterr().out
    # other data than the training data is refused, and so is a lost split file
    other = Checkpoint.from_dict({**ckpt.to_dict(), "data": {**ckpt.data, "fingerprint": "0123456789ab"}})
    with pytest.raises(ValueError, match="not the data this model was trained on"):
        main([str(other.save(tmp_path / "other.pt")), "--device", "cpu", "--no-progress"])
    with pytest.raises(FileNotFoundError, match="No split file"):
        main([str(run / "checkpoints" / "best.pt"), "--device", "cpu", "--no-progress",
              "--split-path", str(tmp_path / "gone.csv")])


