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
