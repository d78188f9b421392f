"""The notebooks' conclusions in words (skin_utils.nb.conclusions) on small known inputs."""

import math

import pytest

from skin_utils.nb import conclusions as c

NAMES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def _per_class(**overrides):
    base = {k: {"support": 20, "sensitivity": 0.7, "auc": 0.85} for k in NAMES}
    for k, v in overrides.items():
        base[k] = {**base[k], **v}
    return base


def _report(**kw):
    report = {"balanced_accuracy": 0.55, "accuracy": 0.75, "dice": 0.88, "n_images": 140,
              "majority_baseline": {"majority": "NV", "accuracy": 0.67, "balanced_accuracy": 1 / 7},
              "per_class": _per_class()}
    report.update(kw)
    return report


def test_data_conclusion_names_the_imbalance_repeats_thin_test_classes_and_size():
    counts = {"MEL": 100, "NV": 700, "BCC": 50, "AKIEC": 30, "BKL": 100, "DF": 10, "VASC": 10}
    text = c.data_conclusion(counts, [1, 1, 2, 3], test_counts={"MEL": 15, "NV": 100, "BCC": 8, "AKIEC": 5,
                                                              "BKL": 15, "DF": 2, "VASC": 1},
                             median_lesion_share=0.3)
    assert "**NV** makes up 70% of the 1000 images" in text
    assert "**DF** only 10 (70 to 1)" in text and "accuracy 0.70" in text and "chance: 0.14" in text
    assert "2 of 4 lesions (50%) have more than one image" in text
    assert "fewer than 10 images of BCC (8), AKIEC (5), DF (2), VASC (1)" in text
    assert "30% of its image (medium-sized)" in text
    assert c.SYNTHETIC_WARNING not in text


def test_data_conclusion_missing_classes_single_images_and_synthetic():
    text = c.data_conclusion({"MEL": 5, "NV": 5, "BCC": 0}, [1, 1, 1], synthetic=True)
    assert "No images at all of BCC" in text and "chance: 0.50" in text
    assert "Every lesion has a single image" in text and text.endswith(c.SYNTHETIC_WARNING)
    with pytest.raises(ValueError, match="all 0"):
        c.data_conclusion({"MEL": 0}, [])


def _epoch(epoch, score, train_loss, val_loss, bal=0.5, dice=0.8):
    return {"epoch": epoch, "score": score, "train_loss": train_loss, "val_loss": val_loss,
            "val_balanced_accuracy": bal, "val_dice": dice}


def test_training_conclusion_still_improving():
    history = [_epoch(1, 0.5, 1.0, 1.0, bal=0.3), _epoch(2, 0.9, 0.8, 0.9, bal=0.45, dice=0.9)]
    text = c.training_conclusion(history, "balanced_accuracy+dice", 7)
    assert "still improving at the last epoch (2)" in text
    assert "balanced accuracy 0.45 (chance 0.14): clearly above chance" in text
    assert "Dice 0.90 (good" in text and "overfit" not in text


def test_training_conclusion_overfitting_and_near_chance():
    history = [_epoch(1, 0.6, 1.0, 0.7, bal=0.18, dice=0.6), _epoch(2, 0.5, 0.6, 0.9), _epoch(3, 0.4, 0.4, 1.1)]
    text = c.training_conclusion(history, "dice", 7)
    assert "best validation score (`dice`) came at epoch 1 of 3" in text and "2 epoch(s) after it" in text
    assert "validation loss rose (0.700 to 1.100): the model began to overfit" in text
    assert "barely above chance; the classifier has learnt little yet" in text and "Dice 0.60 (weak" in text
    at_chance = c.training_conclusion([_epoch(1, 0.5, 1.0, 1.0, bal=0.15)], "loss", 7)
    assert "balanced accuracy 0.15 (chance 0.14): no better than chance" in at_chance


def test_training_conclusion_single_epoch_and_empty():
    assert "A single epoch" in c.training_conclusion([_epoch(1, 0.5, 1.0, 1.0)], "loss", 7)
    with pytest.raises(ValueError, match="empty"):
        c.training_conclusion([], "loss", 7)


def test_evaluation_conclusion_good_model():
    text = c.evaluation_conclusion(_report(per_class=_per_class(MEL={"sensitivity": 0.85, "support": 20},
                                                                NV={"auc": 0.95})),
                                   per_image_jaccard=[0.9, 0.8, 0.5, 0.7])
    assert "Balanced accuracy 0.55 against 0.14 for always answering NV: +0.41" in text
    assert "does not beat" not in text
    assert "Melanoma sensitivity 0.85: 3 of 20 melanomas missed (good)" in text
    assert "Best separated class: NV (AUC 0.95)" in text and "Near chance" not in text
    assert "Mean Dice 0.88 (good); 1 of 4 masks (25%) have Jaccard below 0.65" in text
    assert "noise" not in text and "noisy" not in text


def test_evaluation_conclusion_weak_model_names_the_weaknesses():
    per_class = _per_class(MEL={"sensitivity": 0.3, "support": 10, "auc": 0.55}, DF={"auc": 0.5, "support": 3},
                           VASC={"support": 0, "sensitivity": math.nan, "auc": math.nan})
    text = c.evaluation_conclusion(_report(balanced_accuracy=0.16, accuracy=0.6, dice=0.5, per_class=per_class),
                                   synthetic=True)
    assert "hardly better than always answering NV (0.14): the diagnosis head is not useful yet" in text
    assert "Accuracy 0.60 does not beat always answering NV (0.67)" in text
    assert "Melanoma sensitivity 0.30: 7 of 10 melanomas missed (the main weakness" in text
    assert "Near chance (AUC below 0.6): DF (0.50), MEL (0.55)." in text
    assert "Not in this split, so not measured: VASC" in text
    assert "Mean Dice 0.50 (weak)." in text
    assert "Fewer than 10 test images of DF" in text and text.endswith(c.SYNTHETIC_WARNING)
    small = c.evaluation_conclusion(_report(n_images=40))
    assert "Only 40 test images" in small


def test_inference_conclusion():
    text = c.inference_conclusion(["NV", "MEL", "NV"], [0.9, 0.4, 0.6], n_skipped=2, demo=True)
    assert text.startswith("3 image(s) predicted: NV 2, MEL 1.")
    assert "1 of 3 predictions have a top probability below 0.5" in text
    assert "2 file(s) were skipped" in text and "synthetic demo" in text
    collapsed = c.inference_conclusion(["NV"] * 5, [0.9] * 5, 0)
    assert "Every image got NV" in collapsed and "at least 0.5" in collapsed and "skipped" not in collapsed
    assert c.inference_conclusion([], [], 1).startswith("No image could be predicted.")
    with pytest.raises(ValueError, match="2 predictions but 1"):
        c.inference_conclusion(["NV", "MEL"], [0.5], 0)
    flagged = c.inference_conclusion(["NV", "MEL", "NV"], [0.9, 0.4, 0.6], 0, refer=[False, True, True],
                                     mel_flags=[False, True, False])
    assert "2 of 3 image(s) should be referred" in flagged and "1 of 3 image(s) raise the melanoma flag" in flagged
    bare = c.inference_conclusion(["NV"], [0.9], 0, refer=[None], mel_flags=[None])
    assert "no referral or melanoma threshold" in bare and "python -m skin_utils.trust.calibrate" in bare
    with pytest.raises(ValueError, match="1 predictions but 2 refer"):
        c.inference_conclusion(["NV"], [0.9], 0, refer=[True, False])


def _cal(ece, nll=1.0, classwise=0.05, brier=0.4):
    return {"ece": ece, "classwise_ece": classwise, "nll": nll, "brier": brier}


def test_calibration_conclusion_before_and_after():
    text = c.calibration_conclusion(_cal(0.20, 1.2), _cal(0.03, 0.9), 1.8,
                                    {"confidence_overall": 0.90, "accuracy_overall": 0.70})
    assert "ECE is 0.200 (poorly calibrated" in text and "over-confident" in text
    assert "T = 1.80, softens" in text and "from 0.200 to 0.030 (well calibrated)" in text
    assert "never changes the predicted class" in text
    worse = c.calibration_conclusion(_cal(0.04), _cal(0.08), 0.7, {"confidence_overall": 0.5, "accuracy_overall": 0.6})
    assert "under-confident" in worse and "sharpens" in worse and "does not lower ECE" in worse
    missing = c.calibration_conclusion(_cal(0.10), None, None, missing=["temperature", "mel_threshold"])
    assert "moderately calibrated" in missing and "no temperature (missing: temperature, mel_threshold)" in missing
    assert "python -m skin_utils.trust.calibrate" in missing


def _rows(bal=(0.5, 0.55, 0.6, 0.65), mel=(0.6, 0.7, 0.8, 0.9)):
    return [{"referral_fraction": f, "balanced_accuracy": b, "mel_sensitivity_with_referral": m, "n_mel": 10,
             "mel_referred": round(f * 10)} for f, b, m in zip((0.0, 0.1, 0.2, 0.3), bal, mel)]


def test_referral_conclusion():
    aurc = {"aurc": 0.10, "optimal_aurc": 0.05, "error_rate": 0.25}
    text = c.referral_conclusion(aurc, _rows(), {"threshold": 0.42, "target_coverage": 0.8, "coverage": 0.77,
                                                 "balanced_accuracy": 0.61},
                                 mask={"aurc": 0.1, "optimal_aurc": 0.05, "error_rate": 0.2})
    assert "Ranking by entropy finds errors: AURC 0.100 against 0.250 at random and 0.050 for an oracle, 75%" in text
    assert "most uncertain 20% changes balanced accuracy of the rest from 0.50 to 0.60" in text
    assert "from 0.60 to 0.80 (2 of 10 melanomas referred)" in text
    assert "(entropy > 0.420, for 80% coverage) keeps 77%" in text and "finds the poor masks" in text
    useless = c.referral_conclusion({"aurc": 0.3, "optimal_aurc": 0.05, "error_rate": 0.25}, _rows(), None)
    assert "does not find the errors" in useless and "no referral threshold" in useless
    assert "no error on this split" in c.referral_conclusion({"aurc": 0, "optimal_aurc": 0, "error_rate": 0}, _rows())


def _op(sens, n_mel=40, target=0.9):
    at = {"threshold": 0.12, "sensitivity": sens, "specificity": 0.7, "tp": round(sens * n_mel)}
    return {"argmax": {"sensitivity": 0.5, "specificity": 0.95, "tp": n_mel // 2}, "n_mel": n_mel,
            "at_threshold": at, "target_sensitivity": target}


def test_operating_point_conclusion():
    text = c.operating_point_conclusion(_op(0.9))
    assert "P(MEL) >= 0.120 (chosen on validation for sensitivity 0.90) finds 36 of 40" in text
    assert "against 0.50 and 0.95 for the most probable class" in text and "falls short" not in text
    short = c.operating_point_conclusion(_op(0.7, n_mel=10))
    assert "falls short of the target" in short and "each one moves sensitivity by 0.10" in short
    none = c.operating_point_conclusion({**_op(0.9), "at_threshold": None})
    assert "holds no melanoma threshold" in none and "finds 20 of 40" in none
    assert "no melanoma in this split" in c.operating_point_conclusion(None)


def _cam_part(energy, area, per_class, mostly_outside=0.2, above=0.8):
    return {"overall": {"energy_inside": energy, "area_share": area, "above_baseline": above,
                        "mostly_outside": mostly_outside, "n_images": 50},
            "per_class": {k: {"energy_inside": e, "area_share": a, "n_images": n} for k, (e, a, n) in per_class.items()}}


def test_cam_conclusion():
    cam = {"true_mask": _cam_part(0.6, 0.3, {"NV": (0.7, 0.3, 30), "MEL": (0.4, 0.35, 10), "DF": (0.05, 0.3, 2)}),
           "pred_mask": _cam_part(0.55, 0.28, {}), "n_images": 50, "n_split": 80}
    text = c.cam_conclusion(cam)
    assert "60% of the Grad-CAM energy lies inside the true lesion, which covers 30%" in text
    assert "looks mostly at the lesion" in text and "80% of the maps" in text and "20% fall mostly outside" in text
    assert "Least on the lesion, among classes with at least 5 images: MEL" in text  # DF has too few images
    assert "Against the predicted mask: 55% inside (area 28%)" in text and "Checked on 50 of the 80 images" in text
    cam["true_mask"] = _cam_part(0.2, 0.3, {})
    assert "surrounding skin more than at the lesion" in c.cam_conclusion(cam)
    cam["true_mask"] = _cam_part(float("nan"), 0.3, {})
    assert "Every heat map was empty" in c.cam_conclusion(cam)
