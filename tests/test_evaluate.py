"""skin_utils.evaluate: trust assessed on an evaluated split (calibration before and after,
referral, the melanoma operating point, Grad-CAM checked against the masks) and the one sentence
each section says, on known numbers. (Scoring other data sets and 03_evaluate end to end:
tests/test_external_eval.py.)"""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from skin_utils import CLASS_NAMES
from skin_utils.evaluate import (Evaluation, assess_trust, calibration_sentence, calibration_table, cam_check,
                                 cam_columns, cam_examples, cam_report, cam_sentence, cam_summary_table,
                                 choose_cam_examples, conclusion, melanoma_sentence, operating_point_table,
                                 operating_sentence, referral_sentence, referral_table, score_split)
from skin_utils.metrics import to_jsonable
from skin_utils.trust import StoredCalibration, calibration_record, trust_columns
from tests.test_calibrate import _ckpt, _softmax, small  # noqa: F401 (small: a fixture)


def _evaluation(n=200, seed=0, calibration=None):
    """An evaluation of 8 TTA views 3x too sharp, made with ``calibration`` (None: none)."""
    rng = np.random.default_rng(seed)
    k = len(CLASS_NAMES)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 2.0
    views = np.stack([_softmax(3 * (z + rng.normal(scale=0.5, size=z.shape))) for _ in range(8)])
    raw = views.mean(0)
    probs = raw if calibration is None else calibration.apply(raw)
    per_image = pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], "lesion_id": [f"l{i}" for i in range(n)],
                              "true": [CLASS_NAMES[i] for i in y], "pred": [CLASS_NAMES[i] for i in probs.argmax(1)],
                              "prob_pred": probs.max(1), "dice": rng.uniform(0.3, 1.0, n),
                              "mask_uncertainty": rng.uniform(0, 1, n), "row": np.arange(n)})
    return Evaluation(report={}, per_image=per_image, mask_probs=torch.zeros(n, 4, 4), threshold=0.5, probs=probs,
                      labels=y, view_probs=views, raw_probs=None if calibration is None else raw)


def test_without_a_melanoma_class_the_referral_table_has_no_melanoma_columns():
    """Class names without MEL: no column may describe class 0 as if it were the melanomas."""
    names = ["LES", *CLASS_NAMES[1:]]
    val = _evaluation(seed=1)
    stored = StoredCalibration.from_checkpoint(_ckpt({"tta": calibration_record(val.probs, val.labels, names)}),
                                               tta=True)
    trust = assess_trust(_evaluation(calibration=stored), stored, names)
    assert trust.operating_point is None
    for row in [*trust.referral["table"], trust.referral["at_threshold"]]:
        assert not [k for k in row if "mel" in k], row
        assert 0 < row["coverage"] <= 1 and np.isfinite(row["accuracy"])
    assert not [c for c in referral_table(trust).columns if "MEL" in c or "melanoma" in c]
    assert trust.per_image["mel_flag"].isna().all()


def test_assess_trust_on_known_predictions():
    val = _evaluation(seed=1)
    record = calibration_record(val.probs, val.labels, CLASS_NAMES)
    stored = StoredCalibration.from_checkpoint(_ckpt({"tta": record}), tta=True)
    ev = _evaluation(calibration=stored)
    trust = assess_trust(ev, stored, CLASS_NAMES)
    cal = trust.calibration
    assert cal["calibrated"] and cal["temperature"] == record["temperature"] > 1  # views were 3x too sharp
    assert cal["after"]["nll"] < cal["before"]["nll"]
    assert set(cal["before"]["per_class_ece"]) == set(CLASS_NAMES)
    assert sum(cal["reliability_before"]["count"]) == 200
    cols = trust.per_image
    assert {"entropy", "tta_disagreement", "tta_mutual_info", "refer", "mel_flag"} <= set(cols)
    p_cal = stored.apply(ev.raw_probs)  # the one rule: the evaluation's probabilities are the calibrated ones
    assert np.allclose(p_cal, ev.probs) and np.allclose(p_cal.sum(axis=1), 1)
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
    json.dumps(to_jsonable(trust.report()), allow_nan=False)
    assert list(calibration_table(cal).columns) == ["uncalibrated", f"T = {cal['temperature']:.2f}"]
    assert "refer entropy >" in referral_table(trust).index[-1]
    assert operating_point_table(op).loc["flag at threshold, this split", "tp"] == op["at_threshold"]["tp"]
    # an uncalibrated checkpoint: the same numbers before, nothing after, no flags
    bare_stored = StoredCalibration.from_checkpoint(_ckpt(), tta=True)
    bare = assess_trust(_evaluation(calibration=bare_stored), bare_stored, CLASS_NAMES)
    assert bare.calibration["after"] is None and bare.calibration["before"] == cal["before"]
    assert bare.referral["at_threshold"] is None and "at_threshold" not in bare.operating_point
    assert trust_columns(_evaluation(calibration=bare_stored).probs, bare_stored, CLASS_NAMES)["refer"].isna().all()
    assert list(calibration_table(bare.calibration).columns) == ["uncalibrated"]
    # each section's sentence
    assert "the temperature never changes the predicted class" in calibration_sentence(cal)
    assert calibration_sentence(bare.calibration).endswith(")."), "no temperature: nothing said about one"
    assert "no referral threshold" not in referral_sentence(ref) and "no referral threshold" in \
        referral_sentence(bare.referral)
    assert f"finds {op['at_threshold']['tp']} of {op['n_mel']} here" in operating_sentence(op)
    assert "holds no melanoma threshold" in operating_sentence(bare.operating_point)


def test_the_sentences_on_known_numbers():
    mel = {"auc": 0.8, "n_mel": 20, "n_other": 80, "threshold": 0.123, "sensitivity": 0.85, "specificity": 0.6}
    text = melanoma_sentence(mel)
    assert text.startswith("Melanoma versus the rest (20 images of melanoma, 80 of other lesions)")
    assert "P(MEL) threshold 0.123 chosen on the training data's validation split" in text
    assert "no P(MEL) threshold" in melanoma_sentence({**mel, "threshold": None})
    assert "undefined here (no melanoma)" in melanoma_sentence({"auc": math.nan, "notes": ["no melanoma"]})
    assert melanoma_sentence(None) == ""
    text = referral_sentence({"aurc": {"entropy": {"aurc": 0.1, "optimal_aurc": 0.05, "error_rate": 0.25}},
                              "at_threshold": None})
    assert "AURC 0.100 against 0.250 at random and 0.050 for an oracle" in text
    assert "no melanoma here" in operating_sentence(None)
    rel = {"confidence_overall": 0.9, "accuracy_overall": 0.7}
    cal = {"before": {"ece": 0.2, "nll": 1.2}, "after": {"ece": 0.03, "nll": 0.9}, "temperature": 1.8,
           "reliability_before": rel}
    assert "over-confident (mean confidence 0.90 against accuracy 0.70)" in calibration_sentence(cal)
    under = {**cal, "reliability_before": {"confidence_overall": 0.5, "accuracy_overall": 0.6}}
    assert "under-confident" in calibration_sentence(under)
    part = {"energy_inside": 0.6, "area_share": 0.3, "mostly_outside": 0.2}
    cam = {"true_mask": {"overall": part}, "n_images": 50, "n_split": 80}
    assert ("60% of the Grad-CAM energy lies inside the true lesion, which covers 30%" in cam_sentence(cam)
            and "checked on 50 of the 80 images" in cam_sentence(cam))
    assert "Every heat map was empty" in cam_sentence({**cam, "true_mask": {"overall": {**part, "energy_inside": math.nan}}})
    result = {"scored": ["segmentation", "classification"], "balanced_accuracy": 0.55, "dice": 0.88, "n_images": 40,
              "chance": {"balanced_accuracy": 1 / 7}, "ci95": {"dice": [0.85, 0.9]},
              "majority_baseline": {"majority": "NV", "accuracy": 0.67, "balanced_accuracy": 1 / 7}}
    per_image = pd.DataFrame({"jaccard": [0.9, 0.8, 0.5, 0.7]})
    text = conclusion(result, per_image, ["segmentation", "classification"], synthetic=True)
    assert "Balanced accuracy 0.55 against 0.14 by chance and 0.14 for always answering NV" in text
    assert "Mean Dice 0.88 (95% CI 0.85–0.90); 1 of 4 masks have Jaccard below 0.65" in text
    assert "Only 40 images" in text and "synthetic demo data" in text
    assert "classification head was not trained" in conclusion(result, per_image, ["segmentation"])
    shift = {"table": pd.DataFrame({"external − test": {"dice": -0.1, "balanced_accuracy": 0.02}})}
    assert "test split: dice -0.10, balanced accuracy +0.02" in conclusion(result, per_image, ["segmentation"], shift)


def test_cam_check_on_the_demo_split(small):
    data, _, model, _ = small
    ev = score_split(model, data, "test", "cpu", CLASS_NAMES, amp="off", progress=False, tta=True, return_views=True)
    assert ev.view_probs.shape[0] == 8
    assert ev.per_image["mask_uncertainty"].between(0, 1).all()
    n = len(ev.per_image)
    cam = cam_check(model, data, ev, "cpu", CLASS_NAMES, batch_size=8, progress=False)
    assert cam["n_images"] == n == cam["true_mask"]["overall"]["n_images"]
    cols = cam_columns(cam)
    assert cols["image_id"].tolist() == ev.per_image["image_id"].tolist()
    assert cols["cam_energy_true"].dropna().between(0, 1).all() and cols["cam_area_true"].between(0, 1).all()
    table = cam_summary_table(cam)
    assert table.loc["all", "images"] == n and "energy in predicted lesion" in table
    json.dumps(to_jsonable(cam_report(cam)))
    assert "per_image" not in cam_report(cam)["true_mask"]
    few = cam_check(model, data, ev, "cpu", CLASS_NAMES, max_images=3, progress=False)
    assert few["n_images"] == 3 and few["n_split"] == n
    assert few["true_mask"]["per_image"][0]["energy_inside"] == pytest.approx(  # NaN: a map with no heat at all
        cam["true_mask"]["per_image"][0]["energy_inside"], abs=1e-5, nan_ok=True)
    # a set without masks: the heat against the predicted lesion only, said so
    pred_only = cam_check(model, data, ev, "cpu", CLASS_NAMES, max_images=3, against=("pred_mask",), progress=False)
    assert "true_mask" not in pred_only and "true_mask" not in cam_report(pred_only)
    assert pred_only["pred_mask"]["per_image"][1]["energy_inside"] == pytest.approx(
        few["pred_mask"]["per_image"][1]["energy_inside"], abs=1e-5, nan_ok=True)
    assert list(cam_columns(pred_only)) == ["image_id", "cam_energy_pred", "cam_area_pred"]
    assert list(cam_summary_table(pred_only)) == ["images", "energy in predicted lesion", "predicted area share", "lift",
                                                  "above uniform", "mostly outside"]
    assert "inside the predicted lesion (this set has no masks" in cam_sentence(pred_only)
    picks = choose_cam_examples(ev.per_image, 3)
    assert len(picks) == min(3, ev.per_image["true"].nunique()) and len(set(ev.per_image.loc[picks, "true"])) == len(picks)
    examples = cam_examples(model, data, ev, picks, "cpu", energy=dict(zip(cols["image_id"], cols["cam_energy_true"])))
    assert len(examples["images"]) == len(examples["cams"]) == len(examples["captions"]) == len(picks)
    assert examples["masks"][0].shape == examples["images"][0].shape[:2] == examples["pred_masks"][0].shape
    assert "of the map in the lesion" in examples["captions"][0] or math.isnan(cols["cam_energy_true"][picks[0]])
