"""skin_utils.stats: lesion-level bootstrap intervals, paired differences, subgroups."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from skin_utils.labels import CLASS_NAMES
from skin_utils.stats import (age_band, bootstrap_ci, format_ci, lesion_resamples, mean_sd, paired_bootstrap,
                              scores, subgroup_table)


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
    assert s["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    assert s["macro_auc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    assert s["mel_auc"] == pytest.approx(roc_auc_score(y == 0, probs[:, 0]))
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
    groups = list(t.groupby("lesion_id").indices.values())
    seen = {round(t["dice"].to_numpy()[idx].mean(), 6) for idx in lesion_resamples(groups, 300, seed=0)}
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


def test_metrics_of_an_untrained_head_are_absent():
    t = _table().drop(columns=["dice", "jaccard"])
    ci = bootstrap_ci(t, n_resamples=20)
    assert "dice" not in ci["estimate"] and "balanced_accuracy" in ci["estimate"]
    assert format_ci(float("nan"), None) == "n/a"
    assert format_ci(0.91234, [0.9, 0.92]) == "0.912 (0.900–0.920)"


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
    from skin_utils.stats import paired_bootstrap_seeds

    a1, a2 = _table(seed=1), _table(seed=1)
    a2["dice"] = a1["dice"] - 0.02
    b1, b2 = a1.copy(), a1.copy()
    b1["dice"] = a1["dice"] + 0.04
    b2["dice"] = a1["dice"] + 0.02
    diff = paired_bootstrap_seeds([a1, a2], [b1, b2], n_resamples=50, tasks=("segmentation",))
    # mean(b) - mean(a) = (0.04 + 0.02) / 2 - (0 - 0.02) / 2 = 0.04, the same in every resample
    assert diff.loc["dice", "difference"] == pytest.approx(0.04)
    assert diff.loc["dice", "ci_low"] == pytest.approx(0.04) and diff.loc["dice", "runs_a"] == 2
