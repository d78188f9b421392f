"""Every number of a set of predictions, with the ISIC 2018 definitions, and its lesion-level 95% CI.

Class scores are probabilities (N, K). A 0/0 is NaN, never a guess; means leave NaN out (classification
averages over the classes present). Every sensitivity, specificity and ROC AUC, here and in `skin_utils.trust`,
comes from `sens_spec` and `auc`. Segmentation follows the ISIC empty-mask rule (an empty prediction of an empty
target: Dice = Jaccard = 1). The bootstrap draws whole lesions: images of one lesion are not independent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn import metrics as skm

from skin_utils.layout import read_csv_with_ids
from skin_utils.labels import CLASS_NAMES

ISIC_JACCARD_THRESHOLD = 0.65  # ISIC 2018 Task 1: a Jaccard index below this counts as 0
SEGMENTATION_KEYS = ("dice", "jaccard", "thresholded_jaccard", "sensitivity", "specificity")
PER_CLASS_KEYS = ("support", "sensitivity", "specificity", "precision", "f1", "auc", "average_precision")
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_auc", "mel_auc")
MEL_THRESHOLD_METRICS = ("mel_sensitivity", "mel_specificity")  # with a P(MEL) threshold
HEADLINE_METRICS = ("dice", "jaccard", "thresholded_jaccard") + CLASSIFICATION_METRICS + MEL_THRESHOLD_METRICS
MELANOMA = "MEL"
TASKS = ("segmentation", "classification")
NAN = float("nan")


# --- checked inputs -------------------------------------------------------------------------------

def as_numpy(x: Any, dtype=np.float64) -> np.ndarray:
    """numpy array (of ``dtype``; None keeps the input's) from anything array-like, torch tensors included."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        x = (x.float() if str(x.dtype) == "torch.bfloat16" else x).numpy()
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def as_labels(labels: Any, num_classes: int, name: str = "labels") -> np.ndarray:
    """int64 (N,) class indices, checked to be whole numbers in [0, num_classes)."""
    y = as_numpy(labels, dtype=None)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,); got shape {y.shape}.")
    if y.size and (y.dtype == bool or not np.issubdtype(y.dtype, np.number)
                   or not np.all(np.isfinite(y) & (y == np.round(y)))):
        raise ValueError(f"{name} must hold integer class indices; got {y.dtype} values.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}); got values in [{y.min()}, {y.max()}].")
    return y


def as_probabilities(probs: Any, num_classes: int | None = None, name: str = "probs") -> np.ndarray:
    """float64 (N, K) probabilities, checked: K == ``num_classes`` (or >= 2), rows summing to 1 (within 1e-3)."""
    p = as_numpy(probs)
    if p.ndim != 2 or p.shape[1] != (num_classes or p.shape[1]) or p.shape[1] < 2:
        expected = f"(N, {num_classes})" if num_classes else "(N, K) with K >= 2 classes"
        raise ValueError(f"{name} must have shape {expected}; got {p.shape}.")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"{name} must be probabilities in [0, 1] (got values outside it: logits? "
                         "apply torch.softmax(logits, dim=1) first).")
    sums = p.sum(axis=1)
    if not np.allclose(sums, 1.0, rtol=0.0, atol=1e-3):
        raise ValueError(f"{name} rows must sum to 1 (softmax probabilities); row sums range over "
                         f"[{sums.min():.4g}, {sums.max():.4g}].")
    return p


def as_binary(scores: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 scores (N,) and bool truth (N,) of a yes/no question (1 / True = yes)."""
    s, t = as_numpy(scores), as_numpy(truth, dtype=None)
    if s.ndim != 1 or t.shape != s.shape:
        raise ValueError(f"scores and truth must be 1-D and equally long; got shapes {s.shape} and {t.shape}.")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values.")
    if t.size and t.dtype != bool and not np.isin(t, (0, 1)).all():
        raise ValueError("the truth must be binary, 1 / True for melanoma (the positive class) and 0 / False "
                         f"otherwise; got other values ({sorted(set(np.unique(t).tolist()) - {0, 1})[:5]}); "
                         "for class indices pass labels == the class index.")
    return s, t.astype(bool)


def as_maps(x: Any, name: str = "masks") -> list[np.ndarray]:
    """2-D maps in the input's dtype from (H, W), (N, H, W), (N, 1, H, W) or a list of 2-D maps of any sizes."""
    if not isinstance(x, (list, tuple)):
        a = as_numpy(x, dtype=None)
        x = a[None] if a.ndim == 2 else a[:, 0] if a.ndim == 4 and a.shape[1] == 1 else a
        if x.ndim != 3:
            raise ValueError(f"{name} must have shape (H, W), (N, H, W) or (N, 1, H, W) (or be a list of 2-D "
                             f"maps); got {a.shape}.")
    maps = [as_numpy(m, dtype=None) for m in x]
    for i, m in enumerate(maps):
        if m.ndim != 2:
            raise ValueError(f"{name}[{i}] must be 2-D (H, W); got shape {m.shape}.")
    return maps


def probs_and_labels(probs: Any, labels: Any, num_classes: int | None = None, name: str = "labels"):
    """Checked probabilities (N, K) and labels (N,), N >= 1."""
    p = as_probabilities(probs, num_classes)
    y = as_labels(labels, p.shape[1], name)
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but {name} has {y.shape[0]} entries.")
    if p.shape[0] == 0:
        raise ValueError(f"No samples: probs and {name} are empty.")
    return p, y


def map_pairs(a: Any, b: Any, names=("pred", "target"), counted=("predicted masks", "true masks"),
              hint: str = "score each image at its own size, or pass lists of 2-D masks") -> list[tuple]:
    """`as_maps` of ``a`` and ``b`` as pairs, checked to be as many and of the same shape pair by pair."""
    ma, mb = as_maps(a, names[0]), as_maps(b, names[1])
    if len(ma) != len(mb):
        raise ValueError(f"{len(ma)} {counted[0]} but {len(mb)} {counted[1]}.")
    for i, (x, y) in enumerate(zip(ma, mb)):
        if x.shape != y.shape:
            raise ValueError(f"mask pair {i}: {names[0]} and {names[1]} shapes differ: {x.shape} vs {y.shape} "
                             f"({hint}).")
    return list(zip(ma, mb))


def _ratio(num, den, when_zero: float) -> np.ndarray:
    num, den = np.broadcast_arrays(np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64))
    return np.divide(num, den, out=np.full(num.shape, when_zero), where=den != 0)


def nanmean(values) -> float:
    """The mean of the values that are not NaN; NaN when none is (no warning)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else NAN


# --- the one sensitivity / specificity, the one AUC -----------------------------------------------

def sens_spec(truth: Any, called: Any, axis=None, undefined: float = NAN) -> dict[str, Any]:
    """Sensitivity, specificity, PPV and the counts ``tp``, ``fn``, ``tn``, ``fp`` of yes/no calls (non-zero = yes)
    over ``axis`` (None: everything, as Python numbers; 0: per column of one-hot classes); 0/0: ``undefined``."""
    t, c = as_numpy(truth, dtype=None) != 0, as_numpy(called, dtype=None) != 0
    if t.shape != c.shape:
        raise ValueError(f"truth and calls differ in shape: {t.shape} vs {c.shape}.")
    tp, fn = np.sum(t & c, axis=axis, dtype=np.int64), np.sum(t & ~c, axis=axis, dtype=np.int64)
    tn, fp = np.sum(~t & ~c, axis=axis, dtype=np.int64), np.sum(~t & c, axis=axis, dtype=np.int64)
    out = {"sensitivity": _ratio(tp, tp + fn, undefined), "specificity": _ratio(tn, tn + fp, undefined),
           "ppv": _ratio(tp, tp + fp, undefined), "tp": tp, "fn": fn, "tn": tn, "fp": fp}
    return {k: v.item() for k, v in out.items()} if axis is None else out


def sens_spec_at(scores: Any, truth: Any, threshold: float) -> dict[str, Any]:
    """`sens_spec` of calling yes when ``scores >= threshold``, with ``threshold``."""
    s, t = as_binary(scores, truth)
    return {**sens_spec(t, s >= float(threshold)), "threshold": float(threshold)}


def auc(scores: Any, positive: Any) -> float:
    """ROC AUC by the rank sum (ties count half, as in sklearn); NaN without positives or negatives."""
    s, pos = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return NAN
    return float((rankdata(s)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- segmentation ---------------------------------------------------------------------------------

def thresholded_jaccard(jaccard: Any, threshold: float = ISIC_JACCARD_THRESHOLD) -> Any:
    """ISIC 2018 Task 1 score of Jaccard value(s): ``J if J >= threshold else 0`` (NaN stays NaN)."""
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]; got {threshold!r}.")
    j = as_numpy(jaccard)
    out = np.where(j < threshold, 0.0, j)
    return float(out) if out.ndim == 0 else out


def segmentation_scores(pred: Any, target: Any, threshold: float = ISIC_JACCARD_THRESHOLD) -> dict[str, np.ndarray]:
    """The ISIC scores of each image, `SEGMENTATION_KEYS` -> (N,), from masks as `as_maps` takes them."""
    counts = [sens_spec(t, p, undefined=1.0) for p, t in map_pairs(pred, target)]  # the empty-mask rule: 0/0 -> 1
    jaccard = np.array([_ratio(c["tp"], c["tp"] + c["fp"] + c["fn"], 1.0) for c in counts], dtype=np.float64)
    return {"dice": 2 * jaccard / (1 + jaccard), "jaccard": jaccard,
            "thresholded_jaccard": thresholded_jaccard(jaccard, threshold),
            **{k: np.array([c[k] for c in counts], dtype=np.float64) for k in ("sensitivity", "specificity")}}


# --- classification -------------------------------------------------------------------------------

def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts: rows = true class, columns = predicted class."""
    t, p = as_labels(y_true, num_classes, "y_true"), as_labels(y_pred, num_classes, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred lengths differ: {t.shape[0]} vs {p.shape[0]}.")
    return np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def balanced_accuracy(y_true: Any, y_pred: Any, num_classes: int) -> float:
    """Mean sensitivity over the classes present in ``y_true`` (NaN when it is empty)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    return nanmean(_ratio(np.diag(cm), cm.sum(axis=1), NAN))


def classification_report(probs: Any, targets: Any, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """The ISIC 2018 Task 3 report as plain values (``confusion_matrix``: rows = true, ``_normalized`` by row;
    ``per_class``: name -> `PER_CLASS_KEYS`); NaN: undefined (an absent class's AUC, an unpredicted one's precision)."""
    names = [str(c) for c in class_names]
    p, t = probs_and_labels(probs, targets, len(names), "targets")
    n, k = len(t), len(names)
    pred = p.argmax(axis=1)
    cm = confusion_matrix(t, pred, k)
    c = sens_spec(t[:, None] == np.arange(k), pred[:, None] == np.arange(k), axis=0)
    f1 = _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"], NAN)
    per_class = {name: {
        "support": int(c["tp"][i] + c["fn"][i]), "sensitivity": float(c["sensitivity"][i]),
        "specificity": float(c["specificity"][i]), "precision": float(c["ppv"][i]), "f1": float(f1[i]),
        "auc": auc(p[:, i], t == i),
        "average_precision": float(skm.average_precision_score(t == i, p[:, i])) if (t == i).any() else NAN,
    } for i, name in enumerate(names)}
    return {
        "accuracy": float(np.mean(pred == t)), "balanced_accuracy": nanmean(c["sensitivity"]),
        "macro_auc": nanmean([v["auc"] for v in per_class.values()]),
        "macro_average_precision": nanmean([v["average_precision"] for v in per_class.values()]),
        "n_images": n, "class_names": names, "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": _ratio(cm, cm.sum(axis=1, keepdims=True), 0.0).tolist(),
        "per_class": per_class,
    }


def roc_curves(probs: Any, targets: Any, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, dict[str, Any]]:
    """One-vs-rest ROC curve of each class with positives and negatives: name -> ``{fpr, tpr, auc}`` (lists)."""
    names = [str(c) for c in class_names]
    p, t = probs_and_labels(probs, targets, len(names), "targets")
    curves = {}
    for i, name in enumerate(names):
        if 0 < int((t == i).sum()) < t.size:
            fpr, tpr, _ = skm.roc_curve(t == i, p[:, i])
            curves[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": auc(p[:, i], t == i)}
    return curves


def baselines(targets: Any, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """What a set allows without looking at the images: the classes present, ``chance`` (balanced accuracy
    1 / classes present, AUCs 0.5) and ``majority``: always answering the most frequent class (lowest on ties)."""
    names = list(class_names)
    t = as_labels(targets, len(names), "targets")
    if t.size == 0:
        raise ValueError("No targets: there is nothing to compare with.")
    counts = np.bincount(t, minlength=len(names))
    present, top = [name for name, n in zip(names, counts) if n > 0], int(np.argmax(counts))
    majority = {"majority": names[top], "accuracy": float(np.mean(t == top)),
                "balanced_accuracy": balanced_accuracy(t, np.full_like(t, top), len(names)), "n_images": int(t.size)}
    return {"classes_present": present, "n_classes_present": len(present), "n_classes": len(names),
            "all_classes_present": len(present) == len(names),
            "chance": {"balanced_accuracy": 1.0 / len(present), "macro_auc": 0.5, "mel_auc": 0.5},
            "majority": majority}


def melanoma_vs_rest(y_true: Any, p_mel: Any, threshold: float | None = None) -> dict[str, Any]:
    """Melanoma (``y_true`` True) versus the rest from P(MEL): ``auc``, the counts, `sens_spec_at` ``threshold``
    (None / NaN without one) and ``notes`` saying why the AUC is undefined."""
    p, y = as_binary(p_mel, y_true)
    if y.size == 0 or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("p_mel must be probabilities in [0, 1], P(MEL) of each image, for at least one image.")
    n_mel, n = int(y.sum()), int(y.size)
    notes = (["no melanoma in this set: the AUC and the sensitivity are undefined"] if n_mel == 0 else
             ["only melanomas in this set: the AUC and the specificity are undefined"] if n_mel == n else [])
    at = (sens_spec_at(p, y, threshold) if threshold is not None else
          {"sensitivity": NAN, "specificity": NAN, "ppv": NAN, "tp": None, "fn": None, "tn": None, "fp": None})
    return {"auc": auc(p, y), "n_images": n, "n_mel": n_mel, "n_other": n - n_mel,
            "threshold": None if threshold is None else float(threshold), **at, "notes": notes}


# --- lesion-level bootstrap over a per-image table ------------------------------------------------

def _scorer(table: pd.DataFrame, class_names: Sequence[str], tasks: Sequence[str], mel_threshold: float | None):
    """``score(idx)``: the `HEADLINE_METRICS` of the rows ``idx`` (columns read once: a resample costs microseconds).
    Images without a diagnosis count for segmentation only, images without a mask for classification only."""
    names, n = list(class_names), len(table)
    seg = "segmentation" in tasks and "dice" in table and table["dice"].notna().any()
    labelled = table["true"].notna().to_numpy() if "true" in table else np.zeros(n, bool)
    cls = "classification" in tasks and labelled.any() and all(f"p_{c}" in table for c in names)
    if seg:
        dice = table["dice"].to_numpy(float)
        jaccard = table["jaccard"].to_numpy(float) if "jaccard" in table else np.full(n, np.nan)
    if cls:
        index = {c: i for i, c in enumerate(names)}
        if unknown := sorted(set(table["true"][labelled]) - set(index)):
            raise ValueError(f"per-image table has true labels {unknown} outside the classes {names}.")
        y_all = table["true"].map(index).fillna(-1).to_numpy(int)
        probs_all = table[[f"p_{c}" for c in names]].to_numpy(float)
        mel = index.get(MELANOMA)
    keys = CLASSIFICATION_METRICS + (MEL_THRESHOLD_METRICS if mel_threshold is not None else ())

    def score(idx: np.ndarray) -> dict:
        out = {}
        if seg:  # a resample of unmasked images only: NaN, left out of the interval
            out.update(dice=nanmean(dice[idx]), jaccard=nanmean(jaccard[idx]),
                       thresholded_jaccard=nanmean(thresholded_jaccard(jaccard[idx])))
        if not cls:
            return out
        idx = idx[labelled[idx]]
        if len(idx) == 0:
            return {**out, **dict.fromkeys(keys, NAN)}
        y, probs = y_all[idx], probs_all[idx]
        pred = probs.argmax(1)
        out.update(accuracy=float(np.mean(pred == y)), balanced_accuracy=balanced_accuracy(y, pred, len(names)),
                   macro_auc=nanmean([auc(probs[:, c], y == c) for c in range(len(names))]))
        if mel is None:
            return {**out, **{k: NAN for k in keys if k.startswith("mel_")}}
        out["mel_auc"] = auc(probs[:, mel], y == mel)
        if mel_threshold is not None:
            at = sens_spec(y == mel, probs[:, mel] >= mel_threshold)
            out.update(mel_sensitivity=at["sensitivity"], mel_specificity=at["specificity"])
        return out

    return score


def scores(table: pd.DataFrame, class_names: Sequence[str] = CLASS_NAMES, tasks: Sequence[str] = TASKS, *,
           mel_threshold: float | None = None) -> dict:
    """The `HEADLINE_METRICS` a per-image table allows (the melanoma threshold ones need ``mel_threshold``)."""
    return _scorer(table, class_names, tasks, mel_threshold)(np.arange(len(table)))


def _clusters(table: pd.DataFrame, cluster: str = "lesion_id") -> np.ndarray:
    """Each image's cluster id as text; an image without one is a cluster of its own (never dropped or merged)."""
    if cluster not in table:
        raise ValueError(f"per-image table has no {cluster!r} column to resample by; columns: {list(table.columns)}.")
    own = table["image_id"] if "image_id" in table else pd.Series(range(len(table)), index=table.index)
    return table[cluster].astype(str).where(table[cluster].notna(), "<no id> " + own.astype(str)).to_numpy()


def lesion_resamples(clusters: np.ndarray, n_resamples: int, seed: int):
    """The image indices of ``n_resamples`` bootstrap samples of whole clusters (``clusters``: each image's)."""
    groups = list(pd.Series(clusters).groupby(clusters, sort=True).indices.values())
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        yield np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))])


def _interval(values: list[float], level: float) -> list[float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    return [float(x) for x in np.percentile(v, [50 * (1 - level), 50 * (1 + level)])] if len(v) else [NAN, NAN]


def bootstrap_ci(table: pd.DataFrame, class_names: Sequence[str] = CLASS_NAMES, *, n_resamples: int = 1000,
                 seed: int = 0, level: float = 0.95, cluster: str = "lesion_id", tasks: Sequence[str] = TASKS,
                 mel_threshold: float | None = None) -> dict:
    """`scores` (``estimate``) with percentile intervals (``ci95``: metric -> [lo, hi]) from resamples of
    whole lesions; a resample where a metric is undefined (no melanoma drawn) is left out of its interval."""
    score, clusters = _scorer(table, class_names, tasks, mel_threshold), _clusters(table, cluster)
    estimate = score(np.arange(len(table)))
    resamples = [score(idx) for idx in lesion_resamples(clusters, n_resamples, seed)]
    return {"estimate": estimate, "ci95": {k: _interval([r[k] for r in resamples], level) for k in estimate},
            "n_resamples": int(n_resamples), "level": level, "cluster": cluster, "n_images": int(len(table)),
            "n_lesions": len(set(clusters))}


def paired_bootstrap(a: pd.DataFrame | Sequence[pd.DataFrame], b: pd.DataFrame | Sequence[pd.DataFrame],
                     class_names: Sequence[str] = CLASS_NAMES, *, n_resamples: int = 1000, seed: int = 0,
                     level: float = 0.95, cluster: str = "lesion_id", tasks: Sequence[str] = TASKS) -> pd.DataFrame:
    """Two models on the same images (matched on ``image_id``): per metric, ``a``, ``b``, the ``difference``
    b - a and its interval from the same lesion resamples applied to both. A side may be a list of
    tables (one per seed): its metrics are then the means over the runs, every run resampled alike."""
    sides = [[a] if isinstance(a, pd.DataFrame) else list(a), [b] if isinstance(b, pd.DataFrame) else list(b)]
    if not sides[0] or not sides[1]:
        raise ValueError("paired_bootstrap needs at least one table on each side.")
    for t in sides[0] + sides[1]:
        if len(twice := t["image_id"][t["image_id"].duplicated()]):
            raise ValueError(f"a per-image table repeats the image_id(s) {sorted(set(twice))[:5]}: each image "
                             "once per table, or the pairing of images is not one to one.")
    common = reduce(pd.Index.intersection, [pd.Index(t["image_id"]) for t in sides[0] + sides[1]])
    if len(common) == 0:
        raise ValueError("the per-image tables share no image_id: a paired comparison needs the same images.")
    aligned = [[t.set_index("image_id").loc[common].reset_index() for t in side] for side in sides]
    lesions = _clusters(aligned[0][0], cluster)
    if any(not (_clusters(t, cluster) == lesions).all() for side in aligned for t in side):
        raise ValueError(f"the tables disagree on {cluster!r} for the same images: they come from different data.")
    scorers = [[_scorer(t, class_names, tasks, None) for t in side] for side in aligned]

    def both(idx):  # each side's metrics, averaged over its runs
        runs = [[score(idx) for score in side] for side in scorers]
        return [{k: float(np.mean([r[k] for r in side])) for k in side[0]} for side in runs]

    est_a, est_b = both(np.arange(len(common)))
    resamples = [both(idx) for idx in lesion_resamples(lesions, n_resamples, seed)]
    out = pd.DataFrame({"a": est_a, "b": est_b}).loc[[k for k in est_a if k in est_b]]
    out["difference"] = out["b"] - out["a"]
    out[["ci_low", "ci_high"]] = [_interval([sb[k] - sa[k] for sa, sb in resamples], level) for k in out.index]
    out["excludes_zero"] = (out["ci_low"] > 0) | (out["ci_high"] < 0)
    return out.assign(runs_a=len(sides[0]), runs_b=len(sides[1]), n_images=len(common),
                      n_lesions=len(set(lesions))).rename_axis("metric")


def age_band(age) -> pd.Series:
    """Ages in bands "<30", "30-44", "45-59", "60-74", "75+"; NaN stays unknown."""
    return pd.cut(pd.Series(age, dtype=float), (0, 30, 45, 60, 75, np.inf), right=False,
                  labels=["<30", "30-44", "45-59", "60-74", "75+"]).astype(object)


def subgroup_table(table: pd.DataFrame, column: str, class_names: Sequence[str] = CLASS_NAMES, *,
                   metrics: Sequence[str] = ("dice", "balanced_accuracy", "mel_auc"), min_lesions: int = 10,
                   n_resamples: int = 500, seed: int = 0, tasks: Sequence[str] = TASKS) -> pd.DataFrame:
    """The ``metrics`` (with ``<metric>_ci``) per value of ``column`` (sex, age_band, ...). Unknown values
    and groups of fewer than ``min_lesions`` lesions are left out: their intervals would say nothing."""
    if column not in table:
        raise ValueError(f"per-image table has no {column!r} column; columns: {list(table.columns)}.")
    rows = []
    for value in sorted(v for v in table[column].dropna().unique() if str(v).lower() not in ("unknown", "nan", "")):
        group = table[table[column] == value]
        n_lesions = len(set(_clusters(group)))
        if n_lesions < min_lesions:
            continue
        ci = bootstrap_ci(group, class_names, n_resamples=n_resamples, seed=seed, tasks=tasks)
        row = {column: value, "n_images": len(group), "n_lesions": n_lesions}
        for m in metrics:
            if m in ci["estimate"]:
                row[m], row[f"{m}_ci"] = ci["estimate"][m], ci["ci95"][m]
        rows.append(row)
    return pd.DataFrame(rows)


def mean_sd(values) -> tuple[float, float, int]:
    """Mean, sample standard deviation (NaN with one value) and count of the finite values (over seeds)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    return (float(v.mean()) if len(v) else NAN), (float(v.std(ddof=1)) if len(v) > 1 else NAN), len(v)


read_per_image = read_csv_with_ids  # a per-image table of 03_evaluate, its ids as text (lesion "NA" stays)


def to_jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts: numpy and torch values become
    Python ones, NaN and +-inf None, other dict keys str."""
    if isinstance(obj, (np.ndarray, np.generic)) or hasattr(obj, "detach") and hasattr(obj, "cpu"):  # or torch.Tensor
        obj = as_numpy(obj, dtype=None).tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        keys = [k.item() if isinstance(k, np.generic) else k for k in obj]
        return {k if k is None or isinstance(k, (str, int, float)) else str(k): to_jsonable(v)
                for k, v in zip(keys, obj.values())}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    return obj
