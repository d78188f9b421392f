"""Scoring another data set (issue 9, the evaluation half): metrics over the classes present with
chance and the majority class, melanoma versus the rest against scikit-learn, images scored for
what they have (mask and/or diagnosis), the domain-shift table, file names that never overwrite
the test results, and notebooks/03_evaluate end to end on a masks-only and a labels-only folder."""

from __future__ import annotations

import json
import math
import re
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

from skin_utils import CLASS_NAMES
from skin_utils.metrics import baselines, bootstrap_ci, classification_report, melanoma_vs_rest, scores

MEL, NV, BKL = (CLASS_NAMES.index(c) for c in ("MEL", "NV", "BKL"))


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _predictions(y, seed=0, signal=1.5):
    """(N, 7) probabilities that lean towards the true class ``y``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(len(y), len(CLASS_NAMES)))
    z[np.arange(len(y)), y] += signal
    return _softmax(z)


# --------------------------------------------------------------------------------------------
# melanoma versus the rest
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("threshold", [0.05, 0.2, 0.5])
def test_melanoma_vs_rest_matches_scikit_learn(threshold):
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.2
    p = np.clip(rng.normal(0.15 + 0.3 * y, 0.15), 0, 1)
    r = melanoma_vs_rest(y, p, threshold)
    assert r["auc"] == pytest.approx(roc_auc_score(y, p))
    tn, fp, fn, tp = confusion_matrix(y, p >= threshold, labels=[False, True]).ravel()
    assert (r["tp"], r["fn"], r["tn"], r["fp"]) == (tp, fn, tn, fp)
    assert r["sensitivity"] == pytest.approx(tp / (tp + fn))
    assert r["specificity"] == pytest.approx(tn / (tn + fp))
    assert r["n_mel"] == y.sum() and r["n_other"] == (~y).sum() and r["threshold"] == threshold
    assert r["notes"] == []
    # 0/1 integers are the same as booleans; no threshold: the AUC only
    assert melanoma_vs_rest(y.astype(int), p, threshold)["tp"] == tp
    bare = melanoma_vs_rest(y, p)
    assert bare["auc"] == r["auc"] and bare["tp"] is None and math.isnan(bare["sensitivity"])


def test_melanoma_vs_rest_says_the_auc_is_undefined_without_melanoma_or_with_only_melanoma():
    p = np.linspace(0.0, 1.0, 10)
    none = melanoma_vs_rest(np.zeros(10, bool), p, 0.5)
    assert math.isnan(none["auc"]) and math.isnan(none["sensitivity"]) and none["specificity"] == 0.5
    assert "no melanoma" in none["notes"][0] and "undefined" in none["notes"][0]
    only = melanoma_vs_rest(np.ones(10, bool), p, 0.5)
    assert math.isnan(only["auc"]) and math.isnan(only["specificity"]) and only["sensitivity"] == 0.5
    assert "only melanomas" in only["notes"][0]
    with pytest.raises(ValueError, match="1 / True for melanoma"):
        melanoma_vs_rest(np.array([0, 2, 1]), p[:3])
    with pytest.raises(ValueError, match="probabilities"):
        melanoma_vs_rest(np.array([0, 1]), np.array([0.2, 1.5]))
    with pytest.raises(ValueError, match="equally long"):
        melanoma_vs_rest(np.array([0, 1]), p)


# --------------------------------------------------------------------------------------------
# fewer than seven classes: the classes present, chance and the majority class
# --------------------------------------------------------------------------------------------

def test_baselines_of_a_set_with_three_classes():
    y = np.array([NV] * 6 + [MEL] * 3 + [BKL] * 1)
    b = baselines(y, CLASS_NAMES)
    assert b["classes_present"] == ["MEL", "NV", "BKL"]  # in class order
    assert b["n_classes_present"] == 3 and not b["all_classes_present"]
    assert b["chance"] == {"balanced_accuracy": pytest.approx(1 / 3), "macro_auc": 0.5, "mel_auc": 0.5}
    assert b["majority"]["majority"] == "NV" and b["majority"]["accuracy"] == pytest.approx(0.6)
    assert b["majority"]["balanced_accuracy"] == pytest.approx(1 / 3)   # a constant answer is chance
    # no NV at all: the majority is the set's, not NV
    assert baselines(np.array([MEL, MEL, BKL]))["majority"]["majority"] == "MEL"
    with pytest.raises(ValueError, match="No targets"):
        baselines(np.array([], int))


ABSENT_PREDICTED = pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")


@ABSENT_PREDICTED
def test_metrics_over_the_classes_present_count_predictions_of_absent_classes_as_errors():
    y = np.array([MEL] * 10 + [NV] * 20)
    probs = _predictions(y, seed=3)
    probs[:4] = np.eye(len(CLASS_NAMES))[CLASS_NAMES.index("DF")] * 0.9 + 0.1 / 7   # 4 melanomas called DF
    r = classification_report(probs, y, CLASS_NAMES)
    pred = probs.argmax(1)
    recall = [np.mean(pred[y == c] == c) for c in (MEL, NV)]
    assert r["balanced_accuracy"] == pytest.approx(np.mean(recall))
    assert r["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert r["per_class"]["MEL"]["sensitivity"] <= 0.6        # the DF calls are misses
    assert r["macro_auc"] == pytest.approx(np.mean([roc_auc_score(y == c, probs[:, c]) for c in (MEL, NV)]))
    assert r["confusion_matrix"][MEL][CLASS_NAMES.index("DF")] == 4


# --------------------------------------------------------------------------------------------
# the per-image table with images that lack a diagnosis or a mask
# --------------------------------------------------------------------------------------------

def _table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.choice([MEL, NV, BKL], n, p=[0.3, 0.5, 0.2])
    probs = _predictions(y, seed)
    t = pd.DataFrame({"image_id": [f"im{i}" for i in range(n)], "lesion_id": [f"l{i // 2}" for i in range(n)],
                      "true": [CLASS_NAMES[i] for i in y], "dice": rng.uniform(0.4, 1.0, n)})
    t["jaccard"] = t["dice"] / (2 - t["dice"])
    for k, c in enumerate(CLASS_NAMES):
        t[f"p_{c}"] = probs[:, k]
    return t, y, probs


@ABSENT_PREDICTED
def test_scores_leave_unlabelled_images_out_of_classification_and_unmasked_ones_out_of_segmentation():
    t, y, probs = _table()
    t.loc[::3, "true"] = None        # no diagnosis
    t.loc[1::4, ["dice", "jaccard"]] = np.nan   # no mask
    s = scores(t, CLASS_NAMES, mel_threshold=0.3)
    lab = t["true"].notna().to_numpy()
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[lab], probs[lab].argmax(1)))
    assert s["dice"] == pytest.approx(t["dice"].dropna().mean())
    mel = melanoma_vs_rest(y[lab] == MEL, probs[lab, MEL], 0.3)
    assert s["mel_auc"] == pytest.approx(mel["auc"])
    assert s["mel_sensitivity"] == pytest.approx(mel["sensitivity"])
    assert s["mel_specificity"] == pytest.approx(mel["specificity"])
    ci = bootstrap_ci(t, CLASS_NAMES, n_resamples=200, seed=1, mel_threshold=0.3)
    for k in ("dice", "balanced_accuracy", "mel_auc", "mel_sensitivity", "mel_specificity"):
        lo, hi = ci["ci95"][k]
        assert lo <= ci["estimate"][k] <= hi, k
    # one rule: melanoma versus the rest reads the p_MEL column, as the per-class numbers do
    assert scores(t.assign(p_MEL=1 - t["p_MEL"]), CLASS_NAMES)["mel_auc"] == pytest.approx(1 - s["mel_auc"])
    # a set with masks only has no classification numbers; one without masks no segmentation numbers
    assert set(scores(t.assign(true=None), CLASS_NAMES)) == {"dice", "jaccard", "thresholded_jaccard"}
    assert "dice" not in scores(t.assign(dice=np.nan, jaccard=np.nan), CLASS_NAMES)


# --------------------------------------------------------------------------------------------
# the headline table, the subset note, the domain shift
# --------------------------------------------------------------------------------------------

def _report(**kw):
    base = {"scored": ["segmentation", "classification"], "dice": 0.8, "jaccard": 0.7, "thresholded_jaccard": 0.6,
            "accuracy": 0.7, "balanced_accuracy": 0.6, "macro_auc": 0.75, "mel_auc": 0.7, "mel_sensitivity": 0.8,
            "mel_specificity": 0.5, "class_names": list(CLASS_NAMES), "classes_present": ["MEL", "NV"],
            "chance": {"balanced_accuracy": 0.5, "macro_auc": 0.5, "mel_auc": 0.5},
            "majority_baseline": {"majority": "NV", "accuracy": 0.8, "balanced_accuracy": 0.5},
            "ci95": {"dice": [0.75, 0.85], "balanced_accuracy": [0.5, 0.7], "mel_auc": [0.6, 0.8]}}
    base.update(kw)
    return base


def test_headline_table_shows_what_the_set_allows_beside_chance_and_the_majority_class():
    from skin_utils.evaluate import SEGMENTATION_KEYS, headline_table, not_applicable

    table = headline_table(_report())
    assert list(table.columns) == ["model", "95% CI", "chance", "always NV"]
    assert table.loc["balanced_accuracy", "chance"] == 0.5 and table.loc["balanced_accuracy", "always NV"] == 0.5
    assert table.loc["mel_sensitivity", "always NV"] == 0.0 and table.loc["mel_specificity", "always NV"] == 1.0
    assert table.loc["mel_auc", "always NV"] == 0.5 and table.loc["dice", "95% CI"] == "0.750–0.850"
    assert math.isnan(table.loc["dice", "chance"])
    masks_only = {k: v for k, v in _report().items() if k in SEGMENTATION_KEYS or k in ("ci95", "scored")}
    assert list(headline_table(masks_only).index) == ["dice", "jaccard", "thresholded_jaccard"]
    assert list(headline_table(masks_only).columns) == ["model", "95% CI"]
    labels_only = {k: v for k, v in _report().items() if k not in SEGMENTATION_KEYS}
    assert "dice" not in headline_table(labels_only).index and "mel_auc" in headline_table(labels_only).index
    untrained = headline_table(not_applicable(_report(), ["segmentation"]))
    assert untrained.loc["balanced_accuracy", ["model", "chance", "always NV"]].tolist() == ["n/a"] * 3
    assert untrained.loc["dice", "model"] == 0.8


def test_subset_note_names_the_classes():
    from skin_utils.evaluate import subset_note

    note = subset_note(_report())
    assert "Only 2 of the 7 classes occur here (MEL, NV)" in note and "still counts as an error" in note
    assert subset_note(_report(classes_present=list(CLASS_NAMES))) is None


def test_domain_shift_table_puts_the_same_metrics_side_by_side():
    from skin_utils.evaluate import domain_shift, domain_shift_table

    internal = _report(dice=0.9, balanced_accuracy=0.7, mel_auc=0.85, classes_present=list(CLASS_NAMES),
                       ci95={"dice": [0.88, 0.92]}, threshold=0.5, tta=True)
    external = _report(mel_sensitivity=None, tasks=["segmentation", "classification"], threshold=0.5, tta=True,
                       melanoma_vs_rest={"threshold": 0.3})
    table = domain_shift_table(internal, external)
    assert list(table.columns) == ["test split", "test 95% CI", "external", "external 95% CI", "external − test"]
    assert "mel_sensitivity" not in table.index          # the external set has no number for it
    assert table.loc["dice", "external − test"] == pytest.approx(0.8 - 0.9)
    assert table.loc["dice", "test 95% CI"] == "0.880–0.920"
    assert table.loc["dice", "external 95% CI"] == "0.750–0.850"
    # fewer classes on the external set: the test split's classification numbers over those classes
    t, y, probs = _table(n=80, seed=4)
    shift = domain_shift(external, internal, t, CLASS_NAMES, n_resamples=50)
    kept = t[t["true"].isin(["MEL", "NV"])]
    expected = scores(kept, CLASS_NAMES, ("classification",), mel_threshold=0.3)
    assert shift["restricted_to"] == ["MEL", "NV"] and "recomputed" in shift["notes"][0]
    assert shift["table"].loc["balanced_accuracy", "test split"] == pytest.approx(expected["balanced_accuracy"])
    assert shift["table"].loc["mel_auc", "test split"] == pytest.approx(expected["mel_auc"])
    assert shift["table"].loc["dice", "test split"] == 0.9          # segmentation: the test split as it is
    # without the per-image table it says the classes differ; other thresholds are named
    notes = domain_shift({**external, "threshold": 0.4}, internal, None, CLASS_NAMES)["notes"]
    assert any("mask threshold differs: 0.5 on the test split, 0.4 here" in n for n in notes)
    assert any("average over different classes" in n for n in notes)


def test_external_results_are_named_after_the_data_set(tmp_path):
    from skin_utils.evaluate import is_external, result_tag

    assert result_tag("test") == "evaluate" and result_tag("val") == "evaluate_val"
    assert result_tag("all", tmp_path / "PH2 Dataset", external=True) == "evaluate_external_PH2-Dataset"
    assert result_tag("all", tmp_path / "train", external=False) == "evaluate_all"
    trained_on = {"data_dir": str(tmp_path / "ham"), "fingerprint": "abc"}
    assert not is_external({"data_dir": str(tmp_path / "ham"), "fingerprint": "subsampled"}, trained_on)
    assert not is_external({"data_dir": str(tmp_path / "copy"), "fingerprint": "abc"}, trained_on)
    assert is_external({"data_dir": str(tmp_path / "ph2"), "fingerprint": "xyz"}, trained_on)


# --------------------------------------------------------------------------------------------
# score_split on a set where some images lack a mask or a diagnosis
# --------------------------------------------------------------------------------------------

def _write_set(folder, n=8, size=(30, 40), seed=0, big=None):
    """Images (and masks) of odd sizes on disk; ``big``: (H, W) of image 0."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        h, w = big if (big and i == 0) else (size[0] + 3 * i, size[1] + 2 * i)
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
        Image.fromarray(image).save(folder / f"im{i}.png")
        Image.fromarray(mask).save(folder / f"im{i}_segmentation.png")
        rows.append({"image_id": f"im{i}", "lesion_id": f"l{i // 2}", "image_path": str(folder / f"im{i}.png"),
                     "mask_path": str(folder / f"im{i}_segmentation.png")})
    return pd.DataFrame(rows)


def _data(index, hw=(32, 32)):
    """A `Data` built by hand (what load_data gives for a folder scored with split "all")."""
    from skin_utils.data import ArrayCache, Data

    n = len(index)
    rng = np.random.default_rng(0)
    cache = ArrayCache(path=None, images=rng.integers(0, 255, (n, *hw, 3), dtype=np.uint8),
                       masks=np.zeros((n, *hw), np.uint8), image_ids=list(index["image_id"]))
    return Data(index=index, split=index.assign(split="all"), cache=cache, image_size=hw,
                rows={"all": np.arange(n)})


@pytest.fixture(scope="module")
def tiny_model():
    from skin_utils.model import MultiTaskNet

    torch.manual_seed(0)
    return MultiTaskNet(num_classes=len(CLASS_NAMES), encoder_weights=None).eval()


def test_each_image_is_scored_for_what_it_has(tiny_model, tmp_path):
    from skin_utils.evaluate import original_size_scores, score_split

    index = _write_set(tmp_path / "set")
    labels = np.array([MEL, NV, NV, BKL, MEL, NV, -1, -1])
    index = index.assign(label=labels, dx=[CLASS_NAMES[i] if i >= 0 else None for i in labels],
                         has_label=labels >= 0, has_mask=[True, True, False, False, True, True, True, False])
    index.loc[~index["has_mask"], "mask_path"] = None
    has_label, has_mask = index["has_label"].to_numpy(bool), index["has_mask"].to_numpy(bool)

    ev = score_split(tiny_model, _data(index), "all", "cpu", CLASS_NAMES, amp="off", progress=False)
    r, pi = ev.report, ev.per_image
    assert r["scored"] == ["segmentation", "classification"]
    assert r["n_with_mask"] == 5 and r["n_with_label"] == 6 and r["n_images"] == 8
    assert pi["dice"].isna().tolist() == (~has_mask).tolist() and pi["true"].isna().tolist() == (~has_label).tolist()
    m = np.flatnonzero(has_mask)
    direct = original_size_scores(ev.mask_probs[m], index["mask_path"].iloc[m].tolist(),
                                  index["image_path"].iloc[m].tolist(), threads=1)
    assert r["dice"] == pytest.approx(np.mean(direct["dice"]))
    assert pi["dice"].dropna().tolist() == pytest.approx(direct["dice"])
    lab = has_label
    expected = classification_report(ev.probs[lab], labels[lab], CLASS_NAMES)
    assert r["balanced_accuracy"] == pytest.approx(expected["balanced_accuracy"])
    assert r["classes_present"] == ["MEL", "NV", "BKL"] and r["chance"]["balanced_accuracy"] == pytest.approx(1 / 3)
    assert r["majority_baseline"]["majority"] == "NV"
    assert ev.labels.tolist() == labels.tolist()
    sub = ev.subset(ev.has_label)
    assert len(sub.per_image) == 6 and sub.probs.shape == (6, 7) and sub.mask_probs.shape[0] == 6
    assert sub.per_image.index.tolist() == np.flatnonzero(lab).tolist()      # joins back onto the full table

    # masks only: no classification keys at all; labels only: no segmentation keys
    masks_only = index.assign(label=-1, dx=None, has_label=False, has_mask=True,
                              mask_path=_write_set(tmp_path / "set")["mask_path"])
    r = score_split(tiny_model, _data(masks_only), "all", "cpu", CLASS_NAMES, amp="off",
                               progress=False).report
    assert r["scored"] == ["segmentation"] and "balanced_accuracy" not in r and "classes_present" not in r
    labels_only = index.assign(has_label=True, label=[MEL, NV] * 4, has_mask=False, mask_path=None)
    r = score_split(tiny_model, _data(labels_only), "all", "cpu", CLASS_NAMES, amp="off",
                               progress=False).report
    assert r["scored"] == ["classification"] and "dice" not in r and r["classes_present"] == ["MEL", "NV"]


def test_melanoma_report_uses_the_calibrated_p_mel_and_the_stored_threshold(tiny_model, tmp_path):
    from skin_utils.evaluate import melanoma_report, score_split
    from skin_utils.trust import StoredCalibration, calibrated_probs

    index = _write_set(tmp_path / "set", n=6)
    labels = np.array([MEL, NV, MEL, NV, BKL, -1])
    index = index.assign(label=labels, has_label=labels >= 0, has_mask=True)
    cal = StoredCalibration(kind="plain", temperature=2.0, mel_threshold=0.14,
                            record={"target_sensitivity": 0.9, "temperature": 2.0})
    ev = score_split(tiny_model, _data(index), "all", "cpu", CLASS_NAMES, amp="off", progress=False, calibration=cal)
    r = melanoma_report(ev, cal, CLASS_NAMES)
    p = calibrated_probs(ev.raw_probs[:5], 2.0)[:, MEL]
    expected = melanoma_vs_rest(labels[:5] == MEL, p, 0.14)
    for k in ("auc", "tp", "fn", "tn", "fp", "threshold", "n_mel", "n_other"):
        assert r[k] == pytest.approx(expected[k]), k
    assert r["calibrated"] and r["target_sensitivity"] == 0.9 and r["n_images"] == 5
    bare = melanoma_report(ev, StoredCalibration(kind="plain", missing=["temperature", "mel_threshold"]), CLASS_NAMES)
    assert bare["threshold"] is None and "no P(MEL) threshold" in bare["notes"][-1]
    assert melanoma_report(ev.subset(~ev.has_label), cal, CLASS_NAMES) is None


def test_large_images_are_scored_at_their_size_a_few_at_a_time(monkeypatch, tmp_path):
    import skin_utils.evaluate as evaluation

    index = _write_set(tmp_path / "big", n=6, big=(2400, 3200))
    active, peak, lock = [0], [0], threading.Lock()
    real = evaluation.read_mask

    def counting_read_mask(path, hw=None):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            return real(path, hw=hw)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(evaluation, "read_mask", counting_read_mask)
    probs = torch.zeros(6, 16, 16, dtype=torch.float16)
    probs[:, 4:12, 4:12] = 1.0
    s = evaluation.original_size_scores(probs, index["mask_path"].tolist(), index["image_path"].tolist(), threads=2)
    assert peak[0] <= 2 and len(s["dice"]) == 6
    assert s["dice"][0] == pytest.approx(1.0, abs=0.01)   # the 2400x3200 mask, scored at that size
    with pytest.raises(ValueError, match="one of each per image"):
        evaluation.original_size_scores(probs[:2], index["mask_path"].tolist(), index["image_path"].tolist())


def test_best_and_worst_without_masks_ranks_by_the_true_class_and_plots(tiny_model, tmp_path):
    from skin_utils.evaluate import best_and_worst, case_scores, score_split
    from skin_utils.plots import plot_cases

    index = _write_set(tmp_path / "set", n=6)
    labels = np.array([MEL, NV, NV, BKL, MEL, NV])
    labels_only = index.assign(label=labels, has_label=True, has_mask=False, mask_path=None)
    data = _data(labels_only)
    ev = score_split(tiny_model, data, "all", "cpu", CLASS_NAMES, amp="off", progress=False)
    p_true = case_scores(ev.per_image, "p_true")
    assert p_true.tolist() == pytest.approx(ev.probs[np.arange(6), labels].tolist())
    cases = best_and_worst(data, ev, 2, by="p_true")
    assert cases["true_masks"] is None and cases["scores"] is None and len(cases["images"]) == 4
    assert cases["true_labels"][0] == ev.per_image.loc[p_true.idxmax(), "true"]
    assert plot_cases(**cases).axes[0].get_xlabel().startswith(("✓ true", "✗ true"))
    with pytest.raises(ValueError, match="no image has a Dice"):
        best_and_worst(data, ev, 2, by="dice")
    # masks only: ranked by Dice, captions without a true diagnosis
    masks_only = index.assign(label=-1, has_label=False, has_mask=True)
    ev = score_split(tiny_model, _data(masks_only), "all", "cpu", CLASS_NAMES, amp="off", progress=False)
    cases = best_and_worst(_data(masks_only), ev, 2)
    assert cases["true_labels"] == [None] * 4 and len(cases["true_masks"]) == 4
    fig = plot_cases(**cases)
    assert fig.axes[0].get_xlabel().startswith("pred: ")


def test_domain_shift_figure(tmp_path):
    from skin_utils.evaluate import domain_shift_table
    from skin_utils.plots import plot_domain_shift

    fig = plot_domain_shift(domain_shift_table(_report(dice=0.9), _report()), external_name="PH2")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["training data, test split", "PH2"]
    with pytest.raises(ValueError, match="domain_shift_table"):
        plot_domain_shift(pd.DataFrame({"x": [1]}))


# --------------------------------------------------------------------------------------------
# parameters: label_map from papermill's -p (JSON text) and -y (a dict)
# --------------------------------------------------------------------------------------------

def test_label_map_parameter_takes_json_text_or_a_dict():
    from skin_utils.config import ConfigError, EvaluateConfig

    for value in ('{"melanoma": "MEL", "common nevus": "NV"}', {"melanoma": "MEL", "common nevus": "NV"}, None):
        assert EvaluateConfig(label_map=value, label_column="diagnosis", id_column=None).label_map == value
    for bad in ('{"melanoma": "MELANOMA"}', "{not json", '["MEL"]'):
        with pytest.raises(ConfigError, match="label_map"):
            EvaluateConfig(label_map=bad)
    with pytest.raises(ConfigError, match="label_column"):
        EvaluateConfig(label_column=3)


# --------------------------------------------------------------------------------------------
# notebooks/03_evaluate end to end (papermill): the run's test split, then two external folders
# --------------------------------------------------------------------------------------------

def _external_folders(source, root):
    """From the demo set: a masks-only folder (masks named ``<id>_mask.png``, no labels file) and
    a labels-only folder (a CSV ``image,diagnosis`` with other names, one of them unknown)."""
    import shutil

    meta = pd.read_csv(source / "HAM10000_metadata.csv")
    names = {"mel": "melanoma", "nv": "nevo comum", "bkl": "seborrheic keratosis"}   # "nevo comum" needs a label_map
    picked = pd.concat([meta[meta["dx"] == dx].head(6) for dx in names]).reset_index(drop=True)
    masks_only, labels_only = root / "clinic_masks", root / "clinic_labels"
    for folder in (masks_only, labels_only):
        (folder / "images").mkdir(parents=True)
    (masks_only / "masks").mkdir()
    rows = []
    for i, r in picked.iterrows():
        shutil.copy(source / "images" / f"{r.image_id}.jpg", masks_only / "images" / f"case{i:02d}.jpg")
        shutil.copy(source / "masks" / f"{r.image_id}_segmentation.png", masks_only / "masks" / f"case{i:02d}_mask.png")
        shutil.copy(source / "images" / f"{r.image_id}.jpg", labels_only / "images" / f"p{i:02d}.jpg")
        rows.append({"image": f"p{i:02d}", "diagnosis": names[r.dx]})
    pd.DataFrame(rows).to_csv(labels_only / "labels.csv", index=False)
    return masks_only, labels_only


@pytest.fixture(scope="module")
def evaluated(synthetic_dir, tmp_path_factory):
    """A calibrated tiny checkpoint in a run folder, 03 on its test split, then 03 on a masks-only
    and a labels-only external folder (label_map as JSON text, as `-p` gives it)."""
    import papermill

    from skin_utils.checkpoint import Checkpoint
    from skin_utils.data import load_data
    from skin_utils.model import MultiTaskNet
    from skin_utils.trust import calibrate_checkpoint
    from tests.conftest import ROOT

    tmp = tmp_path_factory.mktemp("external")
    reports = tmp / "reports"
    run = reports / "runs" / "tiny"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    split = tmp / "split.csv"
    data = load_data(synthetic_dir, 32, split_path=split, max_samples=120, progress=False)
    torch.manual_seed(0)
    model = MultiTaskNet(num_classes=len(CLASS_NAMES), encoder_weights=None)
    path = Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES),
                      image_size=32, data=data.describe(), split_path=str(split), epoch=0,
                      params={"max_samples": 120, "seed": 0, "seg_weight": 1.0, "cls_weight": 1.0}
                      ).save(run / "checkpoints" / "best.pt")
    with warnings.catch_warnings():   # an untrained model's temperature may sit on a bound, and say so
        warnings.simplefilter("ignore", UserWarning)
        calibrate_checkpoint(path, data, device="cpu", amp="off", batch_size=32, progress=False)
    masks_only, labels_only = _external_folders(synthetic_dir, tmp)
    common = {"checkpoint": str(path), "reports_dir": str(reports), "device": "cpu", "amp": "off", "tta": False,
              "n_bootstrap": 50, "n_examples": 2, "cam_max_images": 8, "batch_size": 16}

    def evaluate(name, **params):
        papermill.execute_notebook(str(ROOT / "notebooks" / "03_evaluate.ipynb"), str(tmp / f"{name}.ipynb"),
                                   parameters={**common, **params}, kernel_name="python3", language="python",
                                   cwd=str(ROOT), progress_bar=False)
        return (tmp / f"{name}.ipynb").read_text()

    evaluate("test")
    test_json = run / "metrics" / "evaluate.json"
    before = test_json.stat().st_mtime_ns
    notebooks = {"masks": evaluate("masks", data_dir=str(masks_only), split="all"),
                 "labels": evaluate("labels", data_dir=str(labels_only), split="all",
                                    label_map='{"nevo comum": "NV"}')}
    return run, notebooks, before, evaluate


def test_an_external_evaluation_never_overwrites_the_test_results(evaluated):
    run, _, before, _ = evaluated
    assert (run / "metrics" / "evaluate.json").stat().st_mtime_ns == before
    for tag in ("evaluate_external_clinic_masks", "evaluate_external_clinic_labels"):
        assert (run / "metrics" / f"{tag}.json").is_file() and (run / "metrics" / f"{tag}_per_image.csv").is_file()
        assert (run / "sections" / f"03_{tag}.md").is_file()
        assert (run / "figures" / f"{tag}_best_worst.png").stat().st_size > 1000
        assert (run / "figures" / f"{tag}_domain_shift.png").stat().st_size > 1000
    assert (run / "figures" / "evaluate_best_worst.png").is_file()
    report = (run / "REPORT.md").read_text()
    assert "## Evaluation (test split)" in report and report.count("## External evaluation") == 2


def test_the_subgroup_tables_give_their_intervals_as_the_headline_does(evaluated):
    run = evaluated[0]
    section = (run / "sections" / "03_evaluate.md").read_text()
    subgroups = section.split("### Subgroups")[1].split("\n### ")[0]
    assert "By sex" in subgroups and "| dice 95% CI |" in subgroups, subgroups
    assert "_ci" not in subgroups and "[" not in subgroups and "nan" not in subgroups.lower(), subgroups
    assert re.search(r"\| \d\.\d{3}–\d\.\d{3} \|", subgroups), subgroups


def test_a_masks_only_folder_is_scored_for_segmentation_and_says_classification_is_not(evaluated):
    run, notebooks, _, _ = evaluated
    result = json.loads((run / "metrics" / "evaluate_external_clinic_masks.json").read_text())
    assert result["scored"] == ["segmentation"] and result["external"] is True
    assert result["environment"]["torch"] == torch.__version__ and result["data"]["fingerprint"]  # reproducible
    assert result["seen_in_training"] == []  # other ids than the training split's: held out
    assert 0 <= result["dice"] <= 1 and result["n_with_label"] == 0 and result["n_images"] == 18
    assert "balanced_accuracy" not in result and result["melanoma_vs_rest"] is None and result["trust"] is None
    assert "classification is not scored" in notebooks["masks"]
    assert not (run / "figures" / "evaluate_external_clinic_masks_per_class.png").exists()
    shift = result["domain_shift"]
    test = json.loads((run / "metrics" / "evaluate.json").read_text())
    rows = {r["metric"]: r for r in shift["table"]}
    assert set(rows) == {"dice", "jaccard", "thresholded_jaccard"}
    assert rows["dice"]["test split"] == pytest.approx(test["dice"]) and rows["dice"]["external"] == result["dice"]
    section = (run / "sections" / "03_evaluate_external_clinic_masks.md").read_text()
    assert "classification is not scored" in section and "Per-class" not in section
    # no diagnosis to score against, but every image still gets its flags, as 04 gives them
    per_image = pd.read_csv(run / "metrics" / "evaluate_external_clinic_masks_per_image.csv")
    stored = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["calibration"]["plain"]  # tta=False
    assert stored["referral_threshold"] is not None and stored["mel_threshold"] is not None
    assert per_image[["entropy", "refer", "mel_flag"]].notna().all().all()


def test_images_the_model_was_trained_or_validated_on_are_named(tmp_path):
    # a shifted copy of the wrong split, or ISIC 2019 (which holds HAM10000): those scores are not held out
    from skin_utils.evaluate import seen_in_training

    pd.DataFrame({"image_id": ["a", "b", "c", "NA"], "split": ["train", "val", "test", "train"]}).to_csv(
        tmp_path / "split.csv", index=False)
    assert seen_in_training(["c", "b", "NA", "x"], tmp_path / "split.csv") == ["NA", "b"]
    assert seen_in_training(["c", "x"], tmp_path / "split.csv") == []
    assert seen_in_training(["a"], tmp_path / "gone.csv") == [] and seen_in_training(["a"], None) == []


@ABSENT_PREDICTED
def test_a_labels_only_folder_is_scored_over_its_classes_with_melanoma_versus_the_rest(evaluated):
    run, notebooks, _, _ = evaluated
    result = json.loads((run / "metrics" / "evaluate_external_clinic_labels.json").read_text())
    assert result["scored"] == ["classification"] and "dice" not in result
    assert result["classes_present"] == ["MEL", "NV", "BKL"]
    assert result["chance"]["balanced_accuracy"] == pytest.approx(1 / 3)
    assert result["majority_baseline"]["balanced_accuracy"] == pytest.approx(1 / 3)
    per_image = pd.read_csv(run / "metrics" / "evaluate_external_clinic_labels_per_image.csv")
    assert per_image["dice"].isna().all() and sorted(per_image["true"].unique()) == ["BKL", "MEL", "NV"]
    assert result["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(per_image["true"], per_image["pred"]))
    mel = result["melanoma_vs_rest"]
    is_mel = per_image["true"] == "MEL"
    assert mel["auc"] == pytest.approx(roc_auc_score(is_mel, per_image["p_MEL"]))  # p_MEL: the calibrated P(MEL)
    assert result["mel_auc"] == pytest.approx(mel["auc"])
    stored = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["calibration"]["plain"]
    assert mel["threshold"] == stored["mel_threshold"]
    if mel["threshold"] is not None:
        flagged = per_image["p_MEL"] >= mel["threshold"]
        assert mel["sensitivity"] == pytest.approx(flagged[is_mel].mean())
        assert mel["specificity"] == pytest.approx((~flagged[~is_mel]).mean())
        lo, hi = result["ci95"]["mel_sensitivity"]
        assert lo <= result["mel_sensitivity"] <= hi
    assert "Only 3 of the 7 classes occur here (MEL, NV, BKL)" in notebooks["labels"]
    assert "segmentation is not scored" in notebooks["labels"]
    shift = result["domain_shift"]
    assert shift["restricted_to"] == ["MEL", "NV", "BKL"]
    assert {"balanced_accuracy", "mel_auc"} <= {r["metric"] for r in shift["table"]}
    assert not any(r["metric"] == "dice" for r in shift["table"])
    assert (run / "figures" / "evaluate_external_clinic_labels_per_class.png").is_file()
    section = (run / "sections" / "03_evaluate_external_clinic_labels.md").read_text()
    assert "Melanoma versus the rest" in section and "Domain shift" in section and "| dice |" not in section
    assert "not on this set's clinic or device" in section  # the stored thresholds come from elsewhere: said


def test_a_folder_without_masks_checks_the_heat_against_the_predicted_lesion(evaluated):
    run, _, _, _ = evaluated
    tag = "evaluate_external_clinic_labels"
    cam = json.loads((run / "metrics" / f"{tag}.json").read_text())["cam"]
    assert "true_mask" not in cam and cam["pred_mask"]["overall"]["n_images"] == cam["n_images"] == 8  # cam_max_images
    per_image = pd.read_csv(run / "metrics" / f"{tag}_per_image.csv")
    assert "cam_energy_true" not in per_image and per_image["cam_area_pred"].notna().sum() == 8
    assert per_image["cam_energy_pred"].dropna().between(0, 1).all()
    section = (run / "sections" / f"03_{tag}.md").read_text()
    assert "inside the predicted lesion (this set has no masks, so the check trusts the mask head)" in section
    masks_only = json.loads((run / "metrics" / "evaluate_external_clinic_masks.json").read_text())
    assert masks_only["cam"] is None  # no diagnoses: no predicted class to explain


def test_a_classification_only_checkpoint_reports_nothing_from_its_untrained_mask_head(evaluated, tmp_path):
    run, _, _, evaluate = evaluated
    checkpoint = torch.load(run / "checkpoints" / "best.pt", weights_only=True)
    checkpoint["params"] = {**checkpoint["params"], "seg_weight": 0.0}
    path = tmp_path / "reports" / "runs" / "cls_only" / "checkpoints" / "best.pt"
    path.parent.mkdir(parents=True)
    (path.parent.parent / "run.json").write_text("{}")
    torch.save(checkpoint, path)
    evaluate("cls_only", checkpoint=str(path), reports_dir=str(tmp_path / "reports"))
    result = json.loads((path.parent.parent / "metrics" / "evaluate.json").read_text())
    assert result["cam"] and set(result["cam"]) & {"true_mask", "pred_mask"} == {"true_mask"}
    assert result["trust"]["referral"]["mask"] is None  # the mask head's uncertainty against its Dice: not trained


def test_every_evaluation_says_how_familiar_its_images_are_and_refers_the_unfamiliar(evaluated):
    run, notebooks, _, _ = evaluated
    ref = torch.load(run / "checkpoints" / "best.pt", weights_only=True)["calibration"]["features"]
    for tag in ("evaluate", "evaluate_external_clinic_masks", "evaluate_external_clinic_labels"):
        result = json.loads((run / "metrics" / f"{tag}.json").read_text())
        per_image = pd.read_csv(run / "metrics" / f"{tag}_per_image.csv")
        fam = result["familiarity"]
        assert fam["reference"]["threshold"] == ref["threshold"] and fam["reference"]["quantile"] == 0.95
        assert (per_image["unfamiliar"] == (per_image["feature_distance"] > ref["threshold"])).all()
        assert fam["unfamiliar"] == pytest.approx(per_image["unfamiliar"].mean())
        assert fam["median_distance"] == pytest.approx(per_image["feature_distance"].median())
        assert (run / "figures" / f"{tag}_familiarity.png").stat().st_size > 1000
        assert "Familiarity: how far these images lie" in (run / "sections" / f"03_{tag}.md").read_text()
    labelled = json.loads((run / "metrics" / "evaluate_external_clinic_labels.json").read_text())["trust"]["referral"]
    per_image = pd.read_csv(run / "metrics" / "evaluate_external_clinic_labels_per_image.csv")
    assert labelled["unfamiliar"]["n_referred"] == per_image["unfamiliar"].sum()
    assert "feature_distance" in labelled["aurc"]
    assert "refer unfamiliar: feature distance" in notebooks["labels"]


def test_melanoma_auc_is_one_number_on_the_calibrated_scores_in_every_table(evaluated):
    """One rule for the class scores: the headline, the per-class MEL row, and the per-image table
    that paired comparisons, subgroups and the domain shift read all use the calibrated P(MEL)."""
    from skin_utils.metrics import paired_bootstrap, subgroup_table

    from skin_utils.checkpoint import Checkpoint

    source, _, _, evaluate = evaluated
    # logits spread far apart and a temperature far from 1, so that it changes the ranking of P(MEL)
    # (the untrained model's near-uniform outputs keep their ranking under any temperature)
    run = source.parent / "cold"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    ckpt = Checkpoint.load(source / "checkpoints" / "best.pt")
    ckpt.model = {k: v * 30 if k.startswith("classification_head") else v for k, v in ckpt.model.items()}
    temperature = 0.5
    ckpt.calibration = {**ckpt.calibration, "plain": {**ckpt.calibration["plain"], "temperature": temperature}}
    evaluate("cold", checkpoint=str(ckpt.save(run / "checkpoints" / "best.pt")))
    result = json.loads((run / "metrics" / "evaluate.json").read_text())
    per_image = pd.read_csv(run / "metrics" / "evaluate_per_image.csv")
    calibrated = per_image[[f"p_{c}" for c in CLASS_NAMES]].to_numpy()
    raw = _softmax(temperature * np.log(calibrated))          # undo softmax(log p / T)
    is_mel = (per_image["true"] == "MEL").to_numpy()
    headline = result["mel_auc"]
    assert headline == pytest.approx(roc_auc_score(is_mel, calibrated[:, MEL]))
    assert abs(roc_auc_score(is_mel, raw[:, MEL]) - headline) > 1e-3  # the temperature changed the ranking here
    assert result["per_class"]["MEL"]["auc"] == pytest.approx(headline)
    assert result["melanoma_vs_rest"]["auc"] == pytest.approx(headline)
    assert scores(per_image)["mel_auc"] == pytest.approx(headline)
    assert paired_bootstrap(per_image, per_image, n_resamples=5).loc["mel_auc", "a"] == pytest.approx(headline)
    whole = subgroup_table(per_image.assign(group="all"), "group", metrics=("mel_auc",), min_lesions=1, n_resamples=5)
    assert whole["mel_auc"].item() == pytest.approx(headline)
    assert result["scores"].startswith("calibrated probabilities")


def test_a_label_map_from_papermill_p_or_y_reads_the_same(evaluated, tmp_path):
    """``-p label_map '{...}'`` arrives as JSON text, ``-y`` as a dict: both load the same labels."""
    from skin_utils.data import load_data

    run, _, _, _ = evaluated
    folder = run.parent.parent.parent / "clinic_labels"
    as_text = load_data(folder, 32, need_split=False, label_map='{"nevo comum": "NV"}', cache=False, progress=False)
    as_dict = load_data(folder, 32, need_split=False, label_map={"nevo comum": "NV"}, cache=False, progress=False)
    assert as_text.index["label"].tolist() == as_dict.index["label"].tolist()
    assert (as_text.index["label"] >= 0).all()


def test_a_folder_with_neither_masks_nor_diagnoses_points_to_inference(evaluated, tmp_path):
    import papermill

    run, _, _, evaluate = evaluated
    images = tmp_path / "photos" / "images"
    images.mkdir(parents=True)
    for src in sorted((run.parent.parent.parent / "clinic_labels" / "images").glob("*.jpg"))[:3]:
        (images / src.name).write_bytes(src.read_bytes())
    with pytest.raises(papermill.PapermillExecutionError, match="04_inference"):
        evaluate("neither", data_dir=str(tmp_path / "photos"), split="all")
    assert not list((run / "metrics").glob("evaluate_external_photos*"))
