"""Tests of skin_utils.metrics: hand-computed values, the empty-mask rules, accumulation, and
agreement with scikit-learn on random data."""

from __future__ import annotations

import json
import math
import warnings
from fractions import Fraction as F

import numpy as np
import pytest
from sklearn import metrics as skm

from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import (
    PER_CLASS_KEYS,
    ClassificationMetrics,
    SegmentationMetrics,
    balanced_accuracy,
    classification_report_dict,
    confusion_matrix,
    dice_per_image,
    jaccard_per_image,
    majority_baseline,
    pixel_sensitivity_per_image,
    pixel_specificity_per_image,
    roc_curves,
    thresholded_jaccard,
    to_jsonable,
)

ALL_SEG = (dice_per_image, jaccard_per_image, pixel_sensitivity_per_image,
           pixel_specificity_per_image)


def mask(shape, *pixels):
    m = np.zeros(shape, dtype=np.uint8)
    for r, c in pixels:
        m[r, c] = 1
    return m


def approx(x):
    return pytest.approx(float(x), abs=1e-12)


# --- segmentation: hand-computed ---------------------------------------------------------

# 4x4 image; target = top-left 2x2 block (4 px); pred = 2 of them + 1 outside.
# TP = 2, FP = 1, FN = 2, TN = 11.
TARGET_A = mask((4, 4), (0, 0), (0, 1), (1, 0), (1, 1))
PRED_A = mask((4, 4), (0, 0), (0, 1), (2, 2))


def test_hand_computed_single_image():
    assert dice_per_image(PRED_A, TARGET_A).tolist() == [approx(F(4, 7))]     # 2*2 / (3 + 4)
    assert jaccard_per_image(PRED_A, TARGET_A).tolist() == [approx(F(2, 5))]  # 2 / 5
    assert pixel_sensitivity_per_image(PRED_A, TARGET_A).tolist() == [approx(F(1, 2))]
    assert pixel_specificity_per_image(PRED_A, TARGET_A).tolist() == [approx(F(11, 12))]


def test_hand_computed_batch_and_dice_jaccard_relation():
    # image 2: pred covers the target and 2 more pixels: TP 4, FP 2, FN 0, TN 10
    pred_b = mask((4, 4), (0, 0), (0, 1), (1, 0), (1, 1), (3, 3), (3, 2))
    pred = np.stack([PRED_A, pred_b, TARGET_A])
    target = np.stack([TARGET_A, TARGET_A, TARGET_A])
    dice = dice_per_image(pred, target)
    jac = jaccard_per_image(pred, target)
    assert dice.shape == (3,)
    np.testing.assert_allclose(dice, [4 / 7, 8 / 10, 1.0])
    np.testing.assert_allclose(jac, [2 / 5, 4 / 6, 1.0])
    np.testing.assert_allclose(pixel_sensitivity_per_image(pred, target), [1 / 2, 1, 1])
    np.testing.assert_allclose(pixel_specificity_per_image(pred, target), [11 / 12, 10 / 12, 1])
    np.testing.assert_allclose(dice, 2 * jac / (1 + jac))


def test_mask_encodings_and_shapes():
    expected = dice_per_image(PRED_A, TARGET_A)
    assert dice_per_image(PRED_A * 255, TARGET_A.astype(bool)).tolist() == expected.tolist()
    assert dice_per_image(PRED_A[None, None], TARGET_A[None, None]).tolist() == expected.tolist()
    with pytest.raises(ValueError, match="shapes differ"):
        dice_per_image(PRED_A, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="shape"):
        dice_per_image(np.zeros(4), np.zeros(4))


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    d = dice_per_image(torch.from_numpy(PRED_A), torch.from_numpy(TARGET_A))
    assert d.tolist() == [approx(F(4, 7))]


# --- segmentation: empty masks ------------------------------------------------------------

def test_empty_pred_on_empty_target_is_perfect():
    empty = np.zeros((5, 6), dtype=np.uint8)
    for fn in ALL_SEG:
        assert fn(empty, empty).tolist() == [1.0], fn.__name__


def test_nonempty_pred_on_empty_target():
    empty = np.zeros((4, 4), dtype=np.uint8)
    pred = mask((4, 4), (0, 0), (3, 3))
    assert dice_per_image(pred, empty).tolist() == [0.0]
    assert jaccard_per_image(pred, empty).tolist() == [0.0]
    assert pixel_sensitivity_per_image(pred, empty).tolist() == [1.0]   # nothing to find
    assert pixel_specificity_per_image(pred, empty).tolist() == [approx(F(14, 16))]


def test_empty_pred_on_nonempty_target():
    empty = np.zeros((4, 4), dtype=np.uint8)
    assert dice_per_image(empty, TARGET_A).tolist() == [0.0]
    assert jaccard_per_image(empty, TARGET_A).tolist() == [0.0]
    assert pixel_sensitivity_per_image(empty, TARGET_A).tolist() == [0.0]
    assert pixel_specificity_per_image(empty, TARGET_A).tolist() == [1.0]


def test_target_without_negatives():
    full = np.ones((3, 3), dtype=np.uint8)
    assert pixel_specificity_per_image(full, full).tolist() == [1.0]
    assert pixel_specificity_per_image(np.zeros((3, 3)), full).tolist() == [1.0]
    assert pixel_sensitivity_per_image(np.zeros((3, 3)), full).tolist() == [0.0]
    assert dice_per_image(full, full).tolist() == [1.0]


# --- thresholded Jaccard ------------------------------------------------------------------

def test_thresholded_jaccard_at_below_above():
    assert thresholded_jaccard(0.65) == 0.65
    assert thresholded_jaccard(0.6499) == 0.0
    assert thresholded_jaccard(0.7) == 0.7
    assert thresholded_jaccard(1.0) == 1.0
    assert thresholded_jaccard(0.0) == 0.0
    assert isinstance(thresholded_jaccard(0.7), float)
    np.testing.assert_array_equal(
        thresholded_jaccard(np.array([0.2, 0.65, 0.9])), [0.0, 0.65, 0.9]
    )
    assert thresholded_jaccard(0.55, threshold=0.5) == 0.55
    with pytest.raises(ValueError):
        thresholded_jaccard(0.5, threshold=1.5)


def test_thresholded_jaccard_from_masks():
    # 5x5, target = 20 px (rows 0..3); pred = first 13 of them -> J = 13/20 = 0.65 exactly
    target = np.zeros((5, 5), dtype=np.uint8)
    target[:4] = 1
    pred13 = target.copy().reshape(-1)
    pred13[13:] = 0
    pred12 = pred13.copy()
    pred12[12] = 0
    m = SegmentationMetrics()
    m.update([pred13.reshape(5, 5), pred12.reshape(5, 5)], [target, target])
    r = m.aggregate()
    assert r["per_image"]["jaccard"] == [approx(F(13, 20)), approx(F(12, 20))]
    assert r["per_image"]["thresholded_jaccard"] == [approx(F(13, 20)), 0.0]
    assert r["thresholded_jaccard"] == approx(F(13, 40))


# --- SegmentationMetrics -----------------------------------------------------------------

def _random_pairs(seed, sizes):
    rng = np.random.default_rng(seed)
    pairs = []
    for h, w in sizes:
        t = rng.random((h, w)) < rng.uniform(0.05, 0.6)
        p = t ^ (rng.random((h, w)) < 0.15)
        pairs.append((p, t))
    pairs.append((np.zeros((3, 7), bool), np.zeros((3, 7), bool)))   # empty / empty
    pairs.append((np.ones((6, 2), bool), np.zeros((6, 2), bool)))    # FP on empty target
    return pairs


def test_list_of_different_sizes_equals_per_image_average():
    pairs = _random_pairs(0, [(8, 9), (17, 5), (30, 31), (4, 4), (12, 20)])
    m = SegmentationMetrics()
    m.update([p for p, _ in pairs], [t for _, t in pairs])
    r = m.aggregate()
    assert r["n_images"] == len(pairs) == len(m)
    for key, fn in [("dice", dice_per_image), ("jaccard", jaccard_per_image),
                    ("sensitivity", pixel_sensitivity_per_image),
                    ("specificity", pixel_specificity_per_image)]:
        per = [float(fn(p, t)[0]) for p, t in pairs]
        assert r["per_image"][key] == pytest.approx(per)
        assert r[key] == pytest.approx(np.mean(per))
        assert isinstance(r[key], float)
    tj = [thresholded_jaccard(float(jaccard_per_image(p, t)[0])) for p, t in pairs]
    assert r["thresholded_jaccard"] == pytest.approx(np.mean(tj))
    # the pixel pool over all images would differ: the average is per image
    assert r["per_image"]["dice"][-2:] == [1.0, 0.0]


def test_accumulate_over_updates_equals_one_call_and_reset():
    rng = np.random.default_rng(1)
    pred = rng.random((10, 16, 16)) < 0.4
    true = rng.random((10, 16, 16)) < 0.4
    one = SegmentationMetrics()
    one.update(pred, true)
    several = SegmentationMetrics()
    several.update(pred[:3], true[:3])
    several.update(pred[3], true[3])                       # a single (H, W) image
    several.update(list(pred[4:7]), list(true[4:7]))       # a list
    several.update(pred[7:], true[7:])
    assert several.aggregate() == one.aggregate()
    several.reset()
    assert len(several) == 0
    with pytest.raises(ValueError, match="update"):
        several.aggregate()
    several.update(pred[:2], true[:2])
    assert several.aggregate()["n_images"] == 2


def test_segmentation_update_errors():
    m = SegmentationMetrics()
    with pytest.raises(ValueError, match="2 predicted masks but 1"):
        m.update([TARGET_A, TARGET_A], [TARGET_A])
    with pytest.raises(ValueError, match="mask pair 0"):
        m.update([TARGET_A], [np.zeros((3, 3))])
    with pytest.raises(ValueError):
        SegmentationMetrics(threshold=-0.1)


# --- classification: hand-computed --------------------------------------------------------

Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2])


def _probs_for(pred, k):
    p = np.full((len(pred), k), 0.1 / (k - 1))
    p[np.arange(len(pred)), pred] = 0.9
    return p


def test_confusion_matrix_and_balanced_accuracy_by_hand():
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # recalls 2/3, 1/2, 1/1
    assert balanced_accuracy(Y_TRUE, Y_PRED, 3) == approx((F(2, 3) + F(1, 2) + 1) / 3)  # 13/18
    r = classification_report_dict(_probs_for(Y_PRED, 3), Y_TRUE, ["a", "b", "c"])
    assert r["accuracy"] == approx(F(4, 6))
    assert r["balanced_accuracy"] == approx(F(13, 18))
    assert r["n_images"] == 6
    assert r["confusion_matrix"] == cm.tolist()
    assert r["confusion_matrix_normalized"] == [
        [approx(F(2, 3)), approx(F(1, 3)), 0.0], [0.0, 0.5, 0.5], [0.0, 0.0, 1.0]]
    assert set(r) == {"accuracy", "balanced_accuracy", "macro_auc", "macro_average_precision",
                      "n_images", "class_names", "confusion_matrix",
                      "confusion_matrix_normalized", "per_class"}
    assert list(r["per_class"]) == ["a", "b", "c"]
    a, b, c = r["per_class"]["a"], r["per_class"]["b"], r["per_class"]["c"]
    assert tuple(a) == PER_CLASS_KEYS
    # a: TP 2 FN 1 FP 0 TN 3; b: TP 1 FN 1 FP 1 TN 3; c: TP 1 FN 0 FP 1 TN 4
    assert (a["support"], b["support"], c["support"]) == (3, 2, 1)
    assert [a["sensitivity"], b["sensitivity"], c["sensitivity"]] == \
        [approx(F(2, 3)), approx(F(1, 2)), 1.0]
    assert [a["specificity"], b["specificity"], c["specificity"]] == \
        [1.0, approx(F(3, 4)), approx(F(4, 5))]
    assert [a["precision"], b["precision"], c["precision"]] == [1.0, 0.5, 0.5]
    assert [a["f1"], b["f1"], c["f1"]] == [approx(F(4, 5)), 0.5, approx(F(2, 3))]


def test_confusion_matrix_validation():
    with pytest.raises(ValueError, match="lie in"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="lengths differ"):
        confusion_matrix([0, 1], [0], 3)
    assert confusion_matrix(np.array([0.0, 2.0]), [0, 2], 3).tolist() == \
        [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    assert math.isnan(balanced_accuracy([], [], 3))


def test_empty_row_of_normalized_confusion_matrix_is_zero():
    r = classification_report_dict(_probs_for(np.array([0, 1]), 3), [0, 0], ["a", "b", "c"])
    assert r["confusion_matrix_normalized"][1] == [0.0, 0.0, 0.0]
    assert r["confusion_matrix_normalized"][2] == [0.0, 0.0, 0.0]
    # b never true but predicted once: precision 0, F1 0, sensitivity undefined
    assert r["per_class"]["b"]["precision"] == 0.0
    assert r["per_class"]["b"]["f1"] == 0.0
    assert math.isnan(r["per_class"]["b"]["sensitivity"])
    # c neither true nor predicted: precision and f1 undefined
    assert math.isnan(r["per_class"]["c"]["precision"])
    assert math.isnan(r["per_class"]["c"]["f1"])


# --- classification: agreement with scikit-learn ------------------------------------------

def _random_probs(seed, n, k):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return rng, probs


def test_agrees_with_sklearn_on_random_data():
    k = len(CLASS_NAMES)
    rng, probs = _random_probs(42, 300, k)
    targets = rng.integers(0, k, size=300)
    # make the predictions informative so that the numbers are not all ~chance
    probs[np.arange(150), targets[:150]] += 1.0
    probs /= probs.sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)

    r = classification_report_dict(probs, targets, CLASS_NAMES)
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(targets, pred))
    assert r["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(targets, pred))
    assert r["confusion_matrix"] == skm.confusion_matrix(targets, pred, labels=range(k)).tolist()
    assert r["macro_auc"] == pytest.approx(
        skm.roc_auc_score(targets, probs, multi_class="ovr", average="macro"))
    prec, rec, f1, support = skm.precision_recall_fscore_support(
        targets, pred, labels=range(k), zero_division=0)
    aps = []
    for i, name in enumerate(CLASS_NAMES):
        pc = r["per_class"][name]
        assert pc["auc"] == pytest.approx(skm.roc_auc_score(targets == i, probs[:, i]))
        ap = skm.average_precision_score(targets == i, probs[:, i])
        aps.append(ap)
        assert pc["average_precision"] == pytest.approx(ap)
        assert pc["support"] == support[i]
        assert pc["sensitivity"] == pytest.approx(rec[i])
        assert pc["precision"] == pytest.approx(prec[i])
        assert pc["f1"] == pytest.approx(f1[i])
        assert pc["specificity"] == pytest.approx(
            skm.recall_score(targets != i, pred != i))
    assert r["macro_average_precision"] == pytest.approx(np.mean(aps))

    curves = roc_curves(probs, targets, CLASS_NAMES)
    assert list(curves) == list(CLASS_NAMES)
    for i, name in enumerate(CLASS_NAMES):
        c = curves[name]
        assert set(c) == {"fpr", "tpr", "auc"}
        assert c["auc"] == pytest.approx(r["per_class"][name]["auc"])
        assert skm.auc(c["fpr"], c["tpr"]) == pytest.approx(c["auc"])
        fpr, tpr, _ = skm.roc_curve(targets == i, probs[:, i])
        assert c["fpr"] == pytest.approx(fpr.tolist()) and c["tpr"] == pytest.approx(tpr.tolist())
    # plain lists and floats: JSON as they are
    assert json.loads(json.dumps(curves, allow_nan=False)) == curves


def test_class_absent_from_targets():
    k = len(CLASS_NAMES)
    df = CLASS_NAMES.index("DF")
    rng, probs = _random_probs(7, 200, k)
    targets = rng.choice([i for i in range(k) if i != df], size=200)
    probs[:5, df] += 5.0                 # DF is predicted a few times, never true
    probs /= probs.sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    assert (pred == df).any()

    r = classification_report_dict(probs, targets, CLASS_NAMES)
    d = r["per_class"]["DF"]
    assert d["support"] == 0
    assert math.isnan(d["auc"]) and math.isnan(d["average_precision"])
    assert math.isnan(d["sensitivity"])
    assert d["precision"] == 0.0
    present = [i for i in range(k) if i != df]
    assert r["macro_auc"] == pytest.approx(
        np.mean([skm.roc_auc_score(targets == i, probs[:, i]) for i in present]))
    assert r["macro_average_precision"] == pytest.approx(
        np.mean([skm.average_precision_score(targets == i, probs[:, i]) for i in present]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # sklearn warns that y_pred has a class not in y_true
        expected_ba = skm.balanced_accuracy_score(targets, pred)
    assert r["balanced_accuracy"] == pytest.approx(expected_ba)
    recalls = [r["per_class"][CLASS_NAMES[i]]["sensitivity"] for i in present]
    assert r["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert "DF" not in roc_curves(probs, targets, CLASS_NAMES)


def test_macro_auc_nan_when_no_class_has_both():
    r = classification_report_dict(_probs_for(np.array([0, 1, 0]), 3), [2, 2, 2], "abc")
    assert math.isnan(r["macro_auc"])
    assert math.isnan(r["per_class"]["c"]["specificity"])   # no negatives for c
    assert r["per_class"]["c"]["average_precision"] == 1.0  # all positives
    assert r["balanced_accuracy"] == 0.0


# --- ClassificationMetrics ---------------------------------------------------------------

def test_classification_accumulation_reset_and_errors():
    k = len(CLASS_NAMES)
    rng, probs = _random_probs(3, 90, k)
    targets = rng.integers(0, k, size=90)
    one = ClassificationMetrics(CLASS_NAMES)
    one.update(probs, targets)
    several = ClassificationMetrics(CLASS_NAMES)
    for s in (slice(0, 10), slice(10, 11), slice(11, 11), slice(11, 90)):
        several.update(probs[s], targets[s])
    assert len(several) == 90
    # to_jsonable so that NaN (None after it) compares equal to itself
    assert to_jsonable(several.aggregate()) == to_jsonable(one.aggregate())
    assert to_jsonable(one.aggregate()) == \
        to_jsonable(classification_report_dict(probs, targets, CLASS_NAMES))
    several.reset()
    with pytest.raises(ValueError, match="update"):
        several.aggregate()

    logits = np.log(probs) * 3
    with pytest.raises(ValueError, match="softmax"):
        one.update(logits, targets)
    with pytest.raises(ValueError, match="sum to 1"):
        one.update(probs * 0.5, targets)
    with pytest.raises(ValueError, match="shape"):
        one.update(probs[:, :3], targets)
    with pytest.raises(ValueError, match="rows"):
        one.update(probs, targets[:-1])
    with pytest.raises(ValueError, match="lie in"):
        one.update(probs[:1], [7])
    assert one.n_images == 90


def test_classification_torch_inputs():
    torch = pytest.importorskip("torch")
    rng, probs = _random_probs(5, 40, 7)
    targets = rng.integers(0, 7, size=40)
    m = ClassificationMetrics()
    m.update(torch.softmax(torch.log(torch.tensor(probs, dtype=torch.float32)), dim=1),
             torch.tensor(targets))
    r = m.aggregate()
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(targets, probs.argmax(1)))


# --- majority baseline ------------------------------------------------------------------

def test_majority_baseline():
    nv, mel, bcc = (CLASS_NAMES.index(c) for c in ("NV", "MEL", "BCC"))
    targets = [nv, nv, nv, mel, bcc, nv]
    b = majority_baseline(targets, CLASS_NAMES)
    assert b["majority"] == "NV"
    assert b["accuracy"] == approx(F(4, 6))
    assert b["balanced_accuracy"] == approx(F(1, 3))   # recall 1 for NV, 0 for MEL and BCC
    assert b["n_images"] == 6

    targets = [mel, mel, bcc]
    b = majority_baseline(targets, CLASS_NAMES, majority=None)
    assert (b["majority"], b["accuracy"], b["balanced_accuracy"]) == \
        ("MEL", approx(F(2, 3)), 0.5)
    assert majority_baseline(targets, CLASS_NAMES, majority="mel") == b
    assert majority_baseline(targets, CLASS_NAMES, majority=mel) == b
    b = majority_baseline(targets, CLASS_NAMES)          # NV, absent from targets
    assert (b["accuracy"], b["balanced_accuracy"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="not one of"):
        majority_baseline(targets, CLASS_NAMES, majority="XYZ")


# --- JSON --------------------------------------------------------------------------------

def test_json_round_trip():
    k = len(CLASS_NAMES)
    rng, probs = _random_probs(11, 60, k)
    targets = rng.choice([0, 1, 2, 3, 4, 6], size=60)       # DF absent -> NaN values
    m = ClassificationMetrics(CLASS_NAMES)
    m.update(probs, targets)
    r = m.aggregate()
    json.dumps(r)                                            # plain types already (NaN allowed)
    j = to_jsonable(r)
    assert j["per_class"]["DF"]["auc"] is None
    text = json.dumps(j, allow_nan=False)
    assert json.loads(text) == j
    assert json.loads(text)["balanced_accuracy"] == pytest.approx(r["balanced_accuracy"])

    s = SegmentationMetrics()
    s.update(*zip(*_random_pairs(2, [(5, 5), (9, 4)])))
    sj = to_jsonable(s.aggregate())
    assert json.loads(json.dumps(sj, allow_nan=False)) == sj


def test_to_jsonable_types():
    obj = {
        "a": np.float32(0.5), "b": np.int64(3), "c": np.array([[1, 2], [3, 4]]),
        "d": (float("nan"), float("inf"), np.nan), np.int64(4): np.bool_(True),
        "e": [np.float64("nan"), {"f": np.arange(2, dtype=np.uint8)}], "g": None, "h": "x",
    }
    out = to_jsonable(obj)
    assert out == {"a": 0.5, "b": 3, "c": [[1, 2], [3, 4]], "d": [None, None, None], 4: True,
                   "e": [None, {"f": [0, 1]}], "g": None, "h": "x"}
    assert type(out["b"]) is int and type(out["a"]) is float and type(out[4]) is bool
    json.dumps(out, allow_nan=False)
