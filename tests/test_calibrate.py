"""Calibration after training (skin_utils.trust.calibrate), the per-view outputs it rests on
(engine.forward_probs / predict), and the trust sections of the evaluation (skin_utils.evaluation)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from skin_utils import CLASS_NAMES
from skin_utils.trust.calibrate import (
    StoredCalibration,
    calibrate_checkpoint,
    calibrated_probs,
    calibration_record,
    main,
    referral_uncertainty,
    summary_lines,
)
from skin_utils.checkpoint import Checkpoint
from skin_utils.engine import forward_probs, predict
from skin_utils.model import MultiTaskNet
from skin_utils.trust.numbers import fit_temperature, operating_threshold, probs_to_logits


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
    assert stored.refer(probs) is None and stored.mel_flag(probs, CLASS_NAMES) is None
    assert "no calibration for tta outputs" in stored.describe()
    assert "python -m skin_utils.trust.calibrate" in stored.describe()
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
    u = stored.uncertainty_of(cal)
    assert u[2] == pytest.approx(1.0) and 0.5 < u[0] < 0.8  # T = 2 softens the sure ones
    assert stored.refer(cal).tolist() == list(u > 0.8) == [False, False, True]
    assert stored.mel_flag(cal, CLASS_NAMES).tolist() == list(cal[:, 0] >= 0.3) == [True, False, False]
    assert "temperature 2.000" in stored.describe() and stored.as_dict()["missing"] == []


# --------------------------------------------------------------------------------------------
# per-view outputs of the engine
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MultiTaskNet(num_classes=len(CLASS_NAMES), encoder_weights=None).eval()


@pytest.mark.parametrize("shape, views", [((32, 32), 8), ((32, 48), 4)])
def test_forward_probs_returns_the_views_it_averages(tiny_model, shape, views):
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        m, p = forward_probs(tiny_model, x, tta=True)
        m2, p2, vm, vp = forward_probs(tiny_model, x, tta=True, return_views=True)
        plain_m, plain_p = forward_probs(tiny_model, x)
        _, _, one_m, one_p = forward_probs(tiny_model, x, return_views=True)
    assert vm.shape == (views, 2, *shape) and vp.shape == (views, 2, len(CLASS_NAMES))
    assert torch.allclose(m, m2) and torch.allclose(p, p2)
    assert torch.allclose(vp.mean(0), p, atol=1e-6) and torch.allclose(vm.mean(0), m, atol=1e-6)
    assert torch.allclose(vp[0], plain_p, atol=1e-6) and torch.allclose(vm[0], plain_m, atol=1e-6)  # view 0: as is
    assert one_p.shape == (1, 2, len(CLASS_NAMES)) and torch.equal(one_p[0], plain_p) and torch.equal(one_m[0], plain_m)


def _batches(n=5, size=32, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        out.append((torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8),
                    torch.randint(0, 2, (b, 1, size, size), generator=g, dtype=torch.uint8),
                    torch.randint(0, len(CLASS_NAMES), (b,), generator=g), torch.arange(start, start + b)))
    return out


def test_predict_keeps_its_default_and_adds_views_and_mc_dropout_on_request(tiny_model):
    batches = _batches()
    plain = predict(tiny_model, batches, "cpu", progress=False, tta=True)
    assert set(plain) == {"probs", "mask_probs", "labels", "rows"}
    full = predict(tiny_model, batches, "cpu", progress=False, tta=True, return_views=True, mc_samples=3)
    assert np.allclose(full["probs"], plain["probs"]) and torch.equal(full["mask_probs"], plain["mask_probs"])
    assert full["view_probs"].shape == (8, 5, len(CLASS_NAMES))
    assert np.allclose(full["view_probs"].mean(0), full["probs"], atol=1e-5)
    assert full["mask_var"].shape == (5, 32, 32) and float(full["mask_var"].min()) >= 0
    assert full["mc_probs"].shape == (3, 5, len(CLASS_NAMES))
    assert np.allclose(full["mc_probs"].sum(-1), 1, atol=1e-5)
    assert not np.allclose(full["mc_probs"][0], full["mc_probs"][1])  # dropout varies the samples
    no_tta = predict(tiny_model, batches, "cpu", progress=False, return_views=True)
    assert no_tta["view_probs"].shape == (1, 5, len(CLASS_NAMES)) and "mask_var" not in no_tta
    with pytest.raises(ValueError, match="mc_samples"):
        predict(tiny_model, batches, "cpu", progress=False, mc_samples=1)


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
    assert set(records) == {"tta", "plain"}
    stored = Checkpoint.load(path).calibration
    assert stored == records
    assert records["tta"]["n_images"] == len(data.rows["val"])
    for r in records.values():
        assert r["temperature"] > 0 and r["referral_threshold"] is not None
    # the plain record is what a plain pass alone gives (the first TTA view is the image as is)
    path2 = ckpt.save(tmp_path / "plain.pt")
    plain = calibrate_checkpoint(path2, data, tta=False, device="cpu", amp="off", progress=False)
    assert set(plain) == {"plain"}
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
    assert set(saved) == {"tta", "plain"} and saved["tta"]["target_coverage"] == 0.7
    assert json.loads((run / "metrics" / "calibration.json").read_text())["tta"]["temperature"] > 0
    assert "tta: T = " in capsys.readouterr().out
    # other data than the training data is refused, and so is a lost split file
    other = Checkpoint.from_dict({**ckpt.to_dict(), "data": {**ckpt.data, "fingerprint": "0123456789ab"}})
    with pytest.raises(ValueError, match="not the data this model was trained on"):
        main([str(other.save(tmp_path / "other.pt")), "--device", "cpu", "--no-progress"])
    with pytest.raises(FileNotFoundError, match="No split file"):
        main([str(run / "checkpoints" / "best.pt"), "--device", "cpu", "--no-progress",
              "--split-path", str(tmp_path / "gone.csv")])


# --------------------------------------------------------------------------------------------
# the evaluation's trust sections
# --------------------------------------------------------------------------------------------

def _evaluation(n=200, seed=0, with_views=True):
    from skin_utils.evaluation import Evaluation

    rng = np.random.default_rng(seed)
    k = len(CLASS_NAMES)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 2.0
    views = np.stack([_softmax(3 * (z + rng.normal(scale=0.5, size=z.shape))) for _ in range(8)])
    probs = views.mean(0)
    pred = probs.argmax(1)
    per_image = pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], "lesion_id": [f"l{i}" for i in range(n)],
                              "true": [CLASS_NAMES[i] for i in y], "pred": [CLASS_NAMES[i] for i in pred],
                              "prob_pred": probs.max(1), "dice": rng.uniform(0.3, 1.0, n),
                              "mask_uncertainty": rng.uniform(0, 1, n), "row": np.arange(n)})
    return Evaluation(report={}, per_image=per_image, mask_probs=torch.zeros(n, 4, 4), threshold=0.5,
                      probs=probs, labels=y, view_probs=views if with_views else None)


def test_assess_trust_on_known_predictions():
    from skin_utils.trust.assess import (assess_trust, calibration_table, operating_point_table, referral_table,
                                         trust_columns)

    ev = _evaluation()
    val, yv = _evaluation(seed=1).probs, _evaluation(seed=1).labels
    record = calibration_record(val, yv, CLASS_NAMES)
    stored = StoredCalibration.from_checkpoint(_ckpt({"tta": record}), tta=True)
    trust = assess_trust(ev, stored, CLASS_NAMES)
    cal = trust.calibration
    assert cal["calibrated"] and cal["temperature"] == record["temperature"] > 1  # views were 3x too sharp
    assert cal["after"]["nll"] < cal["before"]["nll"]
    assert set(cal["before"]["per_class_ece"]) == set(CLASS_NAMES)
    assert sum(cal["reliability_before"]["count"]) == 200
    cols = trust.per_image
    assert {"entropy", "tta_disagreement", "tta_mutual_info", "refer", "mel_flag"} <= set(cols)
    p_cal = stored.apply(ev.probs)  # an Evaluation made without the calibration: assess_trust applies it
    assert np.allclose(p_cal.sum(axis=1), 1)
    assert cols["refer"].tolist() == list(cols["entropy"] > record["referral_threshold"])
    assert cols["mel_flag"].tolist() == list(p_cal[:, 0] >= record["mel_threshold"])
    ref = trust.referral
    assert [r["referral_fraction"] for r in ref["table"]] == [0.0, 0.1, 0.2, 0.3]
    assert [r["n_referred"] for r in ref["table"]] == [0, 20, 40, 60]
    assert set(ref["curves"]) == {"entropy", "tta_disagreement", "tta_mutual_info"}
    assert ref["aurc"]["entropy"]["aurc"] < ref["aurc"]["entropy"]["error_rate"]  # entropy ranks the errors
    assert ref["at_threshold"]["coverage"] == pytest.approx(1 - cols["refer"].mean())
    assert ref["mask"]["loss"] == "1 - Dice"
    op = trust.operating_point
    is_mel = ev.labels == 0
    flagged = p_cal[:, 0] >= record["mel_threshold"]
    assert op["at_threshold"]["sensitivity"] == pytest.approx(flagged[is_mel].mean())
    assert op["at_threshold"]["specificity"] == pytest.approx((~flagged[~is_mel]).mean())
    assert op["argmax"]["tp"] == int(((ev.probs.argmax(1) == 0) & is_mel).sum())
    json.dumps(__import__("skin_utils.metrics", fromlist=["to_jsonable"]).to_jsonable(trust.report()), allow_nan=False)
    assert list(calibration_table(cal).columns) == ["uncalibrated", f"T = {cal['temperature']:.2f}"]
    assert "refer entropy >" in referral_table(trust).index[-1]
    assert operating_point_table(op).loc["flag at threshold, this split", "tp"] == op["at_threshold"]["tp"]
    # an uncalibrated checkpoint: the same numbers before, nothing after, no flags
    bare = assess_trust(ev, StoredCalibration.from_checkpoint(_ckpt(), tta=True), CLASS_NAMES)
    assert bare.calibration["after"] is None and bare.calibration["before"] == cal["before"]
    assert bare.referral["at_threshold"] is None and "at_threshold" not in bare.operating_point
    assert trust_columns(ev, StoredCalibration.from_checkpoint(_ckpt(), tta=True), CLASS_NAMES)["refer"].isna().all()
    assert list(calibration_table(bare.calibration).columns) == ["uncalibrated"]


def test_cam_check_on_the_demo_split(small):
    from skin_utils.evaluation import evaluate_original_size
    from skin_utils.trust.assess import (cam_check, cam_columns, cam_examples, cam_report, cam_summary_table,
                                         choose_cam_examples)

    data, _, model, _ = small
    ev = evaluate_original_size(model, data, "test", "cpu", CLASS_NAMES, amp="off", progress=False, tta=True,
                                return_views=True)
    assert ev.view_probs.shape[0] == 8 and ev.mask_var.shape == ev.mask_probs.shape
    assert ev.per_image["mask_uncertainty"].between(0, 1).all()
    n = len(ev.per_image)
    cam = cam_check(model, data, "test", ev, "cpu", CLASS_NAMES, batch_size=8, progress=False)
    assert cam["n_images"] == n == cam["true_mask"]["overall"]["n_images"]
    cols = cam_columns(cam)
    assert cols["image_id"].tolist() == ev.per_image["image_id"].tolist()
    e = cols["cam_energy_true"].dropna()
    assert e.between(0, 1).all()
    assert cols["cam_area_true"].between(0, 1).all()
    table = cam_summary_table(cam)
    assert table.loc["all", "images"] == n and "energy in predicted lesion" in table
    json.dumps(__import__("skin_utils.metrics", fromlist=["to_jsonable"]).to_jsonable(cam_report(cam)))
    assert "per_image" not in cam_report(cam)["true_mask"]
    few = cam_check(model, data, "test", ev, "cpu", CLASS_NAMES, max_images=3, progress=False)
    assert few["n_images"] == 3 and few["n_split"] == n
    assert few["true_mask"]["per_image"][0]["energy_inside"] == pytest.approx(  # NaN: a map with no heat at all
        cam["true_mask"]["per_image"][0]["energy_inside"], abs=1e-5, nan_ok=True)
    picks = choose_cam_examples(ev.per_image, CLASS_NAMES, 3)
    assert len(picks) == min(3, ev.per_image["true"].nunique()) and len(set(ev.per_image.loc[picks, "true"])) == len(picks)
    examples = cam_examples(model, data, ev, picks, "cpu", energy=dict(zip(cols["image_id"], cols["cam_energy_true"])))
    assert len(examples["images"]) == len(examples["cams"]) == len(examples["captions"]) == len(picks)
    assert examples["masks"][0].shape == examples["images"][0].shape[:2] == examples["pred_masks"][0].shape
    assert "of the map in the lesion" in examples["captions"][0] or math.isnan(cols["cam_energy_true"][picks[0]])
