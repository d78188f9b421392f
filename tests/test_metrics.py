"""skin_utils.metrics: hand-computed values, the empty-mask rules, agreement with scikit-learn on
random data, and the lesion-level bootstrap intervals, paired differences and subgroups."""

from __future__ import annotations

import json
import math
import warnings
from fractions import Fraction as F

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import (PER_CLASS_KEYS, age_band, auc, balanced_accuracy, baselines, bootstrap_ci,
                                classification_report, confusion_matrix, lesion_resamples, mean_sd, paired_bootstrap,
                                roc_curves, scores, segmentation_scores, sens_spec, sens_spec_at, subgroup_table,
                                thresholded_jaccard, to_jsonable)

PIXEL_KEYS = ("dice", "jaccard", "sensitivity", "specificity")


def seg(pred, target, key):
    return segmentation_scores(pred, target)[key]


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
    assert seg(PRED_A, TARGET_A, "dice").tolist() == [approx(F(4, 7))]     # 2*2 / (3 + 4)
    assert seg(PRED_A, TARGET_A, "jaccard").tolist() == [approx(F(2, 5))]  # 2 / 5
    assert seg(PRED_A, TARGET_A, "sensitivity").tolist() == [approx(F(1, 2))]
    assert seg(PRED_A, TARGET_A, "specificity").tolist() == [approx(F(11, 12))]


def test_hand_computed_batch_and_dice_jaccard_relation():
    # image 2: pred covers the target and 2 more pixels: TP 4, FP 2, FN 0, TN 10
    pred_b = mask((4, 4), (0, 0), (0, 1), (1, 0), (1, 1), (3, 3), (3, 2))
    pred = np.stack([PRED_A, pred_b, TARGET_A])
    target = np.stack([TARGET_A, TARGET_A, TARGET_A])
    dice = seg(pred, target, "dice")
    jac = seg(pred, target, "jaccard")
    assert dice.shape == (3,)
    np.testing.assert_allclose(dice, [4 / 7, 8 / 10, 1.0])
    np.testing.assert_allclose(jac, [2 / 5, 4 / 6, 1.0])
    np.testing.assert_allclose(seg(pred, target, "sensitivity"), [1 / 2, 1, 1])
    np.testing.assert_allclose(seg(pred, target, "specificity"), [11 / 12, 10 / 12, 1])
    np.testing.assert_allclose(dice, 2 * jac / (1 + jac))


def test_mask_encodings_and_shapes():
    expected = seg(PRED_A, TARGET_A, "dice")
    assert seg(PRED_A * 255, TARGET_A.astype(bool), "dice").tolist() == expected.tolist()
    assert seg(PRED_A[None, None], TARGET_A[None, None], "dice").tolist() == expected.tolist()
    with pytest.raises(ValueError, match="shapes differ"):
        segmentation_scores(PRED_A, np.zeros((5, 4)))
    with pytest.raises(ValueError, match="shape"):
        seg(np.zeros(4), np.zeros(4), "dice")


def test_torch_tensors_accepted():
    torch = pytest.importorskip("torch")
    d = seg(torch.from_numpy(PRED_A), torch.from_numpy(TARGET_A), "dice")
    assert d.tolist() == [approx(F(4, 7))]


# --- segmentation: empty masks ------------------------------------------------------------

def test_empty_pred_on_empty_target_is_perfect():
    empty = np.zeros((5, 6), dtype=np.uint8)
    for key in PIXEL_KEYS + ("thresholded_jaccard",):
        assert seg(empty, empty, key).tolist() == [1.0], key


def test_nonempty_pred_on_empty_target():
    empty = np.zeros((4, 4), dtype=np.uint8)
    pred = mask((4, 4), (0, 0), (3, 3))
    assert seg(pred, empty, "dice").tolist() == [0.0]
    assert seg(pred, empty, "jaccard").tolist() == [0.0]
    assert seg(pred, empty, "sensitivity").tolist() == [1.0]   # nothing to find
    assert seg(pred, empty, "specificity").tolist() == [approx(F(14, 16))]


def test_empty_pred_on_nonempty_target():
    empty = np.zeros((4, 4), dtype=np.uint8)
    assert seg(empty, TARGET_A, "dice").tolist() == [0.0]
    assert seg(empty, TARGET_A, "jaccard").tolist() == [0.0]
    assert seg(empty, TARGET_A, "sensitivity").tolist() == [0.0]
    assert seg(empty, TARGET_A, "specificity").tolist() == [1.0]


def test_target_without_negatives():
    full = np.ones((3, 3), dtype=np.uint8)
    assert seg(full, full, "specificity").tolist() == [1.0]
    assert seg(np.zeros((3, 3)), full, "specificity").tolist() == [1.0]
    assert seg(np.zeros((3, 3)), full, "sensitivity").tolist() == [0.0]
    assert seg(full, full, "dice").tolist() == [1.0]


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
    r = segmentation_scores([pred13.reshape(5, 5), pred12.reshape(5, 5)], [target, target])
    assert r["jaccard"].tolist() == [approx(F(13, 20)), approx(F(12, 20))]
    assert r["thresholded_jaccard"].tolist() == [approx(F(13, 20)), 0.0]
    assert r["thresholded_jaccard"].mean() == approx(F(13, 40))


# --- segmentation_scores over a set --------------------------------------------------------------

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


def test_list_of_different_sizes_equals_per_image_scores():
    pairs = _random_pairs(0, [(8, 9), (17, 5), (30, 31), (4, 4), (12, 20)])
    r = segmentation_scores([p for p, _ in pairs], [t for _, t in pairs])
    assert all(len(v) == len(pairs) and v.dtype == np.float64 for v in r.values())
    for key in PIXEL_KEYS:
        per = [float(seg(p, t, key)[0]) for p, t in pairs]
        assert r[key].tolist() == pytest.approx(per)
    tj = [thresholded_jaccard(float(seg(p, t, "jaccard")[0])) for p, t in pairs]
    assert r["thresholded_jaccard"].tolist() == pytest.approx(tj)
    # the pixel pool over all images would differ: the set's score is the mean over images
    assert r["dice"][-2:].tolist() == [1.0, 0.0]


def test_a_batch_equals_its_images_one_by_one_and_as_a_list():
    rng = np.random.default_rng(1)
    pred = rng.random((10, 16, 16)) < 0.4
    true = rng.random((10, 16, 16)) < 0.4
    one = segmentation_scores(pred, true)
    single = [segmentation_scores(pred[i], true[i]) for i in range(10)]   # (H, W) images
    listed = segmentation_scores(list(pred), list(true))
    for k in one:
        assert one[k].tolist() == [s[k][0] for s in single] == listed[k].tolist()


def test_segmentation_errors():
    with pytest.raises(ValueError, match="2 predicted masks but 1"):
        segmentation_scores([TARGET_A, TARGET_A], [TARGET_A])
    with pytest.raises(ValueError, match="mask pair 0"):
        segmentation_scores([TARGET_A], [np.zeros((3, 3))])
    with pytest.raises(ValueError):
        segmentation_scores(TARGET_A, TARGET_A, threshold=-0.1)


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
    r = classification_report(_probs_for(Y_PRED, 3), Y_TRUE, ["a", "b", "c"])
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
    r = classification_report(_probs_for(np.array([0, 1]), 3), [0, 0], ["a", "b", "c"])
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

    r = classification_report(probs, targets, CLASS_NAMES)
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

    r = classification_report(probs, targets, CLASS_NAMES)
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
    r = classification_report(_probs_for(np.array([0, 1, 0]), 3), [2, 2, 2], "abc")
    assert math.isnan(r["macro_auc"])
    assert math.isnan(r["per_class"]["c"]["specificity"])   # no negatives for c
    assert r["per_class"]["c"]["average_precision"] == 1.0  # all positives
    assert r["balanced_accuracy"] == 0.0


# --- input checks, torch inputs ---------------------------------------------------------

def test_classification_input_errors():
    k = len(CLASS_NAMES)
    rng, probs = _random_probs(3, 90, k)
    targets = rng.integers(0, k, size=90)
    logits = np.log(probs) * 3
    with pytest.raises(ValueError, match="softmax"):
        classification_report(logits, targets)
    with pytest.raises(ValueError, match="sum to 1"):
        classification_report(probs * 0.5, targets)
    with pytest.raises(ValueError, match="shape"):
        classification_report(probs[:, :3], targets)
    with pytest.raises(ValueError, match="rows"):
        classification_report(probs, targets[:-1])
    with pytest.raises(ValueError, match="lie in"):
        classification_report(probs[:1], [7])
    with pytest.raises(ValueError, match="No samples"):
        classification_report(probs[:0], targets[:0])


def test_classification_torch_inputs():
    torch = pytest.importorskip("torch")
    rng, probs = _random_probs(5, 40, 7)
    targets = rng.integers(0, 7, size=40)
    r = classification_report(torch.softmax(torch.log(torch.tensor(probs, dtype=torch.float32)), dim=1),
                              torch.tensor(targets))
    assert r["accuracy"] == pytest.approx(skm.accuracy_score(targets, probs.argmax(1)))


# --- the one sensitivity / specificity, the one AUC --------------------------------------

def test_sens_spec_counts_rates_and_axes():
    r = sens_spec([1, 1, 0, 0, 0], [1, 1, 0, 0, 1])
    assert (r["tp"], r["fn"], r["tn"], r["fp"]) == (2, 0, 2, 1) and type(r["tp"]) is int
    assert r["sensitivity"] == 1.0 and r["specificity"] == pytest.approx(2 / 3) and r["ppv"] == pytest.approx(2 / 3)
    assert math.isnan(sens_spec([0], [0])["sensitivity"]) and sens_spec([0], [0], undefined=1.0)["sensitivity"] == 1.0
    # per column of one-hot classes = the per-class values of the report
    t, p = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2])
    cols = sens_spec(t[:, None] == np.arange(3), p[:, None] == np.arange(3), axis=0)
    np.testing.assert_allclose(cols["sensitivity"], [2 / 3, 1 / 2, 1])
    np.testing.assert_allclose(cols["specificity"], [1, 3 / 4, 4 / 5])
    with pytest.raises(ValueError, match="shape"):
        sens_spec([1, 0], [1])


def test_sens_spec_at_counts():
    r = sens_spec_at([0.9, 0.6, 0.4, 0.1, 0.7], [1, 1, 0, 0, 0], 0.5)
    assert (r["tp"], r["fn"], r["tn"], r["fp"]) == (2, 0, 2, 1)
    assert r["sensitivity"] == 1.0 and r["specificity"] == pytest.approx(2 / 3)
    assert r["ppv"] == pytest.approx(2 / 3) and r["threshold"] == 0.5
    assert math.isnan(sens_spec_at([0.2], [0], 0.5)["sensitivity"])
    with pytest.raises(ValueError, match="binary"):
        sens_spec_at([0.2, 0.3], [0, 3], 0.5)


def test_auc_is_sklearn_with_ties_and_nan_with_one_class():
    rng = np.random.default_rng(0)
    y = rng.random(200) < 0.3
    s = np.round(rng.random(200) + 0.3 * y, 1)     # many ties
    assert auc(s, y) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(auc(s, np.zeros(200, bool))) and math.isnan(auc(s, np.ones(200, bool)))


# --- majority baseline ------------------------------------------------------------------

def test_majority_baseline():
    nv, mel, bcc = (CLASS_NAMES.index(c) for c in ("NV", "MEL", "BCC"))
    b = baselines([nv, nv, nv, mel, bcc, nv], CLASS_NAMES)["majority"]
    assert b["majority"] == "NV"
    assert b["accuracy"] == approx(F(4, 6))
    assert b["balanced_accuracy"] == approx(F(1, 3))   # recall 1 for NV, 0 for MEL and BCC
    assert b["n_images"] == 6
    b = baselines([mel, mel, bcc], CLASS_NAMES)["majority"]
    assert (b["majority"], b["accuracy"], b["balanced_accuracy"]) == ("MEL", approx(F(2, 3)), 0.5)


# --- JSON --------------------------------------------------------------------------------

def test_json_round_trip():
    k = len(CLASS_NAMES)
    rng, probs = _random_probs(11, 60, k)
    targets = rng.choice([0, 1, 2, 3, 4, 6], size=60)       # DF absent -> NaN values
    r = classification_report(probs, targets, CLASS_NAMES)
    json.dumps(r)                                            # plain types already (NaN allowed)
    j = to_jsonable(r)
    assert j["per_class"]["DF"]["auc"] is None
    text = json.dumps(j, allow_nan=False)
    assert json.loads(text) == j
    assert json.loads(text)["balanced_accuracy"] == pytest.approx(r["balanced_accuracy"])

    sj = to_jsonable(segmentation_scores(*zip(*_random_pairs(2, [(5, 5), (9, 4)]))))
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


# --- lesion-level bootstrap over a per-image table ------------------------------------

def _table(n_lesions=60, images_per_lesion=2, seed=0, skill=2.0):
    rng = np.random.default_rng(seed)
    rows = []
    for lesion in range(n_lesions):
        label = lesion % len(CLASS_NAMES)
        for i in range(images_per_lesion):
            logits = rng.normal(size=len(CLASS_NAMES))
            logits[label] += skill
            p = np.exp(logits) / np.exp(logits).sum()
            dice = float(np.clip(rng.normal(0.85, 0.1), 0, 1))
            rows.append({"image_id": f"img{lesion}_{i}", "lesion_id": f"les{lesion}", "true": CLASS_NAMES[label],
                         "dice": dice, "jaccard": dice / (2 - dice), "sex": "male" if lesion % 2 else "female",
                         **{f"p_{c}": p[k] for k, c in enumerate(CLASS_NAMES)}})
    return pd.DataFrame(rows)


def test_scores_agree_with_sklearn():
    t = _table()
    s = scores(t)
    y = t["true"].map(CLASS_NAMES.index).to_numpy()
    probs = t[[f"p_{c}" for c in CLASS_NAMES]].to_numpy()
    assert s["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, probs.argmax(1)))
    assert s["macro_auc"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert s["mel_auc"] == pytest.approx(skm.roc_auc_score(y == 0, probs[:, 0]))
    assert s["dice"] == pytest.approx(t["dice"].mean())
    jac = t["jaccard"].to_numpy()
    assert s["thresholded_jaccard"] == pytest.approx(np.where(jac >= 0.65, jac, 0).mean())


def test_bootstrap_matches_a_direct_computation():
    """The interval equals percentiles of the mean Dice over lesions drawn with the same generator."""
    t = _table(n_lesions=12, images_per_lesion=3)
    ci = bootstrap_ci(t, n_resamples=200, seed=7, tasks=("segmentation",))
    groups = [np.flatnonzero(t["lesion_id"].to_numpy() == f"les{i}") for i in sorted(range(12), key=lambda i: f"les{i}")]
    rng = np.random.default_rng(7)
    means = []
    for _ in range(200):
        pick = rng.integers(0, 12, 12)
        means.append(t["dice"].to_numpy()[np.concatenate([groups[g] for g in pick])].mean())
    assert ci["ci95"]["dice"] == pytest.approx(list(np.percentile(means, [2.5, 97.5])))
    assert ci["estimate"]["dice"] == pytest.approx(t["dice"].mean())
    assert ci["n_lesions"] == 12 and ci["n_images"] == 36


def test_resampling_is_by_lesion_not_by_image():
    # two lesions of ten images each: Dice 1 for every image of one, 0 for the other. Drawing
    # lesions can only give means 0, 0.5 or 1; drawing images would give many other values.
    t = pd.DataFrame({"image_id": [f"i{k}" for k in range(20)], "lesion_id": ["a"] * 10 + ["b"] * 10,
                      "dice": [1.0] * 10 + [0.0] * 10})
    resamples = lesion_resamples(t["lesion_id"].to_numpy(), 300, seed=0)
    seen = {round(t["dice"].to_numpy()[idx].mean(), 6) for idx in resamples}
    assert seen <= {0.0, 0.5, 1.0} and len(seen) == 3


def test_bootstrap_width_shrinks_like_one_over_sqrt_n():
    small = bootstrap_ci(_table(n_lesions=40, images_per_lesion=1), n_resamples=400, tasks=("segmentation",))
    large = bootstrap_ci(_table(n_lesions=640, images_per_lesion=1), n_resamples=400, tasks=("segmentation",))
    w_small = np.diff(small["ci95"]["dice"])[0]
    w_large = np.diff(large["ci95"]["dice"])[0]
    assert 2.5 < w_small / w_large < 6.5  # sqrt(16) = 4


def test_paired_bootstrap_of_identical_and_shifted_models():
    a = _table()
    same = paired_bootstrap(a, a.copy(), n_resamples=100)
    assert (same["difference"] == 0).all() and not same["excludes_zero"].any()
    b = a.copy()
    b["dice"] = a["dice"] + 0.05
    b = b.sample(frac=1, random_state=0)  # order must not matter: rows are matched on image_id
    diff = paired_bootstrap(a, b, n_resamples=100, tasks=("segmentation",))
    assert diff.loc["dice", "difference"] == pytest.approx(0.05)
    assert diff.loc["dice", "ci_low"] == pytest.approx(0.05) and diff.loc["dice", "excludes_zero"]


def test_paired_bootstrap_refuses_other_images():
    a = _table()
    b = a.assign(image_id=a["image_id"] + "_other")
    with pytest.raises(ValueError, match="share no image_id"):
        paired_bootstrap(a, b)


def test_paired_bootstrap_refuses_a_table_that_repeats_an_image():
    # a repeated image_id made .loc[common] return more rows than images: numpy's broadcast error when one
    # table repeats it, and when both do a silent estimate over the first len(common) rows
    a = _table()
    b = pd.concat([a, a.iloc[:1]], ignore_index=True)
    for pair in ((a, b), (b, b.copy())):
        with pytest.raises(ValueError, match=rf"repeat.*{a['image_id'].iloc[0]}"):
            paired_bootstrap(*pair)


def test_metrics_of_an_untrained_head_are_absent():
    t = _table().drop(columns=["dice", "jaccard"])
    ci = bootstrap_ci(t, n_resamples=20)
    assert "dice" not in ci["estimate"] and "balanced_accuracy" in ci["estimate"]


def test_subgroups_age_bands_and_seeds():
    t = _table(n_lesions=80)
    sub = subgroup_table(t, "sex", n_resamples=50)
    assert set(sub["sex"]) == {"male", "female"} and (sub["n_lesions"] == 40).all()
    lo, hi = sub.loc[0, "dice_ci"]
    assert lo <= sub.loc[0, "dice"] <= hi
    assert list(age_band([5, 30, 44.9, 60, 80, np.nan])[:5]) == ["<30", "30-44", "30-44", "60-74", "75+"]
    assert mean_sd([0.5, 0.7]) == pytest.approx((0.6, np.std([0.5, 0.7], ddof=1), 2))
    assert np.isnan(mean_sd([0.5])[1])


def test_paired_bootstrap_over_seeds_averages_the_runs():
    a1, a2 = _table(seed=1), _table(seed=1)
    a2["dice"] = a1["dice"] - 0.02
    b1, b2 = a1.copy(), a1.copy()
    b1["dice"] = a1["dice"] + 0.04
    b2["dice"] = a1["dice"] + 0.02
    diff = paired_bootstrap([a1, a2], [b1, b2], n_resamples=50, tasks=("segmentation",))
    # mean(b) - mean(a) = (0.04 + 0.02) / 2 - (0 - 0.02) / 2 = 0.04, the same in every resample
    assert diff.loc["dice", "difference"] == pytest.approx(0.04)
    assert diff.loc["dice", "ci_low"] == pytest.approx(0.04) and diff.loc["dice", "runs_a"] == 2
