"""Confidence intervals a reviewer accepts: the bootstrap over **lesions**, not images.

HAM10000 holds several images of many lesions; images of one lesion are not independent, so a
bootstrap that resamples images makes intervals too narrow. Here every resample draws lesions
with replacement and takes all of their images (a cluster bootstrap), with a seeded generator.

* `scores(table)`: the headline metrics of a per-image table (what ``03_evaluate`` writes to
  ``evaluate_per_image.csv``: ``lesion_id``, ``true``, ``p_<class>`` and ``dice``/``jaccard``;
  an empty ``true`` or ``dice`` marks an image without diagnosis or without mask), and with a
  P(MEL) threshold melanoma sensitivity and specificity.
* `bootstrap_ci(table)`: the point estimates and percentile 95% intervals.
* `paired_bootstrap(table_a, table_b)`: two models scored on the same images; the interval of
  the difference ``b - a`` from the same lesion resamples, and whether it excludes 0.
  `paired_bootstrap_seeds` does the same for metrics averaged over several seeds per side.
* `subgroup_table(table, column)`: the metrics per subgroup (sex, age band, body site) with CIs.
* `mean_sd(values)`: across seeds.

Classification metrics follow `skin_utils.metrics`: balanced accuracy is the mean recall over the
classes present in the (resampled) targets; macro AUC the mean one-vs-rest AUC over the classes
with both positives and negatives; ``mel_auc`` melanoma versus the rest (`skin_utils.metrics
.melanoma_vs_rest`). A metric that cannot be computed is NaN, never a number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from skin_utils.layout import read_csv_with_ids
from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import ISIC_JACCARD_THRESHOLD

SEGMENTATION_METRICS = ("dice", "jaccard", "thresholded_jaccard")
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_auc", "mel_auc")
MEL_THRESHOLD_METRICS = ("mel_sensitivity", "mel_specificity")  # with a P(MEL) threshold
HEADLINE_METRICS = SEGMENTATION_METRICS + CLASSIFICATION_METRICS + MEL_THRESHOLD_METRICS
AGE_BANDS = (0, 30, 45, 60, 75, np.inf)


class _Arrays:
    """The columns a statistic needs, as numpy arrays, so that one resample costs microseconds.

    Images without a diagnosis (``true`` empty) count for the segmentation metrics only, images
    without a mask (``dice`` empty) for the classification metrics only. Every class score,
    melanoma versus the rest included, comes from the ``p_<class>`` columns (one rule: they hold
    the calibrated probabilities when `skin_utils.evaluation.evaluate_original_size` had a
    calibration)."""

    def __init__(self, table: pd.DataFrame, class_names: Sequence[str]):
        self.class_names = list(class_names)
        self.n = len(table)
        self.has_seg = "dice" in table and table["dice"].notna().any()
        self.labelled = table["true"].notna().to_numpy() if "true" in table else np.zeros(self.n, bool)
        self.has_cls = bool(self.labelled.any()) and all(f"p_{c}" in table for c in self.class_names)
        if self.has_seg:
            self.dice = table["dice"].to_numpy(float)
            self.jaccard = table["jaccard"].to_numpy(float) if "jaccard" in table else np.full(self.n, np.nan)
        if self.has_cls:
            index = {c: i for i, c in enumerate(self.class_names)}
            unknown = sorted(set(table["true"][self.labelled]) - set(index))
            if unknown:
                raise ValueError(f"per-image table has true labels {unknown} outside the classes {self.class_names}.")
            self.y = table["true"].map(index).fillna(-1).to_numpy(int)
            self.probs = table[[f"p_{c}" for c in self.class_names]].to_numpy(float)
            self.pred = self.probs.argmax(1)
            self.p_mel = self.probs[:, index["MEL"]] if "MEL" in index else np.zeros(self.n)


def _auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC by the rank-sum (Mann-Whitney) formula, ties counted half; NaN with one class only."""
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _scores(a: _Arrays, idx: np.ndarray, tasks: Sequence[str], mel_threshold: float | None = None) -> dict:
    out = {}
    if "segmentation" in tasks and a.has_seg:
        jac = a.jaccard[idx]
        with warnings.catch_warnings():  # a resample of only unmasked images: NaN, left out of the interval
            warnings.simplefilter("ignore", RuntimeWarning)
            out["dice"] = float(np.nanmean(a.dice[idx]))
            out["jaccard"] = float(np.nanmean(jac))
            out["thresholded_jaccard"] = float(np.nanmean(np.where(jac >= ISIC_JACCARD_THRESHOLD, jac,
                                                                   np.where(np.isnan(jac), np.nan, 0.0))))
    if "classification" in tasks and a.has_cls:
        idx = idx[a.labelled[idx]]
        if len(idx) == 0:
            return {**out, **dict.fromkeys(CLASSIFICATION_METRICS, math.nan),
                    **(dict.fromkeys(MEL_THRESHOLD_METRICS, math.nan) if mel_threshold is not None else {})}
        y, pred, probs = a.y[idx], a.pred[idx], a.probs[idx]
        k = len(a.class_names)
        support = np.bincount(y, minlength=k)
        hits = np.bincount(y[pred == y], minlength=k)
        present = support > 0
        out["accuracy"] = float((pred == y).mean())
        out["balanced_accuracy"] = float((hits[present] / support[present]).mean())
        aucs = [_auc(probs[:, c], y == c) for c in range(k) if 0 < support[c] < len(y)]
        out["macro_auc"] = float(np.mean(aucs)) if aucs else math.nan
        mel = a.class_names.index("MEL") if "MEL" in a.class_names else None
        is_mel = y == mel if mel is not None else np.zeros(len(y), bool)
        out["mel_auc"] = _auc(a.p_mel[idx], is_mel) if mel is not None else math.nan
        if mel_threshold is not None:
            called = a.p_mel[idx] >= mel_threshold
            n_mel = int(is_mel.sum())
            out["mel_sensitivity"] = float((called & is_mel).sum() / n_mel) if n_mel else math.nan
            out["mel_specificity"] = (float((~called & ~is_mel).sum() / (len(y) - n_mel)) if len(y) > n_mel
                                      else math.nan)
    return out


def scores(table: pd.DataFrame, class_names: Sequence[str] = CLASS_NAMES,
           tasks: Sequence[str] = ("segmentation", "classification"), *,
           mel_threshold: float | None = None) -> dict:
    """The headline metrics of a per-image table (`HEADLINE_METRICS`, those the columns allow);
    with ``mel_threshold``, ``mel_sensitivity`` and ``mel_specificity`` of calling melanoma when
    ``p_MEL`` reaches it."""
    return _scores(_Arrays(table, class_names), np.arange(len(table)), tasks, mel_threshold)


def cluster_ids(table: pd.DataFrame, cluster: str = "lesion_id") -> pd.Series:
    """The cluster of each image as text: its ``cluster`` id, and for an image whose id is missing
    (NaN, e.g. after a ``pd.read_csv`` that read "NA" as missing) its own cluster, named after
    its ``image_id`` (or its row): never dropped, never merged with other images."""
    if cluster not in table:
        raise ValueError(f"per-image table has no {cluster!r} column to resample by; columns: {list(table.columns)}.")
    ids = table[cluster]
    missing = ids.isna().to_numpy()
    own = (table["image_id"].astype(str) if "image_id" in table else pd.Series(np.arange(len(table)), index=table.index))
    return pd.Series(np.where(missing, "<no id> " + own.astype(str).to_numpy(), ids.astype(str).to_numpy()),
                     index=table.index)


def _lesion_groups(table: pd.DataFrame, cluster: str) -> list[np.ndarray]:
    ids = cluster_ids(table, cluster).to_numpy()
    return list(pd.Series(ids).groupby(ids, sort=True).indices.values())


def read_per_image(path) -> pd.DataFrame:
    """A per-image table written by 03_evaluate, ids read as text (`skin_utils.layout.read_csv_with_ids`)."""
    return read_csv_with_ids(path)


def lesion_resamples(groups: list[np.ndarray], n_resamples: int, seed: int):
    """Yield image indices of ``n_resamples`` lesion-level bootstrap samples."""
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        pick = rng.integers(0, len(groups), len(groups))
        yield np.concatenate([groups[g] for g in pick])


def _interval(values: list[float], level: float) -> list[float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return [math.nan, math.nan]
    lo, hi = np.percentile(v, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return [float(lo), float(hi)]


def bootstrap_ci(table: pd.DataFrame, class_names: Sequence[str] = CLASS_NAMES, *, n_resamples: int = 1000,
                 seed: int = 0, level: float = 0.95, cluster: str = "lesion_id",
                 tasks: Sequence[str] = ("segmentation", "classification"),
                 mel_threshold: float | None = None) -> dict:
    """``{"estimate": {metric: value}, "ci95": {metric: [lo, hi]}, "n_resamples", "level", "cluster"}``:
    percentile intervals from ``n_resamples`` resamples of whole lesions (``cluster`` column).
    ``mel_threshold`` as in `scores`. A metric undefined in a resample (e.g. no
    melanoma drawn) is left out of its interval; undefined in all: ``[nan, nan]``."""
    a = _Arrays(table, class_names)
    estimate = _scores(a, np.arange(len(table)), tasks, mel_threshold)
    draws = {k: [] for k in estimate}
    for idx in lesion_resamples(_lesion_groups(table, cluster), n_resamples, seed):
        for k, v in _scores(a, idx, tasks, mel_threshold).items():
            draws[k].append(v)
    return {"estimate": estimate, "ci95": {k: _interval(v, level) for k, v in draws.items()},
            "n_resamples": int(n_resamples), "level": level, "cluster": cluster,
            "n_images": int(len(table)), "n_lesions": int(cluster_ids(table, cluster).nunique())}


def paired_bootstrap(table_a: pd.DataFrame, table_b: pd.DataFrame, class_names: Sequence[str] = CLASS_NAMES, *,
                     n_resamples: int = 1000, seed: int = 0, level: float = 0.95, cluster: str = "lesion_id",
                     tasks: Sequence[str] = ("segmentation", "classification")) -> pd.DataFrame:
    """Two models scored on the same images: per metric, ``a``, ``b``, the difference ``b - a``,
    its interval from the same lesion resamples applied to both, and ``excludes_zero``.
    Only the images both tables hold are compared (matched on ``image_id``)."""
    return paired_bootstrap_seeds([table_a], [table_b], class_names, n_resamples=n_resamples, seed=seed,
                                  level=level, cluster=cluster, tasks=tasks)


def paired_bootstrap_seeds(tables_a: Sequence[pd.DataFrame], tables_b: Sequence[pd.DataFrame],
                           class_names: Sequence[str] = CLASS_NAMES, *, n_resamples: int = 1000, seed: int = 0,
                           level: float = 0.95, cluster: str = "lesion_id",
                           tasks: Sequence[str] = ("segmentation", "classification")) -> pd.DataFrame:
    """`paired_bootstrap` of seed-averaged metrics: ``a`` and ``b`` are the means over the runs
    (one table per seed, all scored on the same images), and each lesion resample is applied to
    every run of both sides, so the interval covers the choice of test lesions for the averaged
    difference."""
    if not tables_a or not tables_b:
        raise ValueError("paired_bootstrap_seeds needs at least one table on each side.")
    common = None
    for t in [*tables_a, *tables_b]:
        ids = pd.Index(t["image_id"])
        common = ids if common is None else common.intersection(ids, sort=False)
    if len(common) == 0:
        raise ValueError("the per-image tables share no image_id: a paired comparison needs the same images.")
    aligned = [t.set_index("image_id").loc[common].reset_index() for t in [*tables_a, *tables_b]]
    lesions = cluster_ids(aligned[0], cluster).to_numpy()
    for t in aligned[1:]:
        if not (cluster_ids(t, cluster).to_numpy() == lesions).all():
            raise ValueError(f"the tables disagree on {cluster!r} for the same images: they come from different data.")
    arrays = [_Arrays(t, class_names) for t in aligned]
    side_a, side_b = arrays[:len(tables_a)], arrays[len(tables_a):]

    def averaged(side, idx):
        runs = [_scores(x, idx, tasks) for x in side]
        return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}

    full = np.arange(len(common))
    est_a, est_b = averaged(side_a, full), averaged(side_b, full)
    keys = [k for k in est_a if k in est_b]
    draws = {k: [] for k in keys}
    for idx in lesion_resamples(_lesion_groups(aligned[0], cluster), n_resamples, seed):
        sa, sb = averaged(side_a, idx), averaged(side_b, idx)
        for k in keys:
            draws[k].append(sb[k] - sa[k])
    rows = []
    for k in keys:
        lo, hi = _interval(draws[k], level)
        rows.append({"metric": k, "a": est_a[k], "b": est_b[k], "difference": est_b[k] - est_a[k],
                     "ci_low": lo, "ci_high": hi, "excludes_zero": bool(lo > 0 or hi < 0),
                     "runs_a": len(side_a), "runs_b": len(side_b),
                     "n_images": int(len(common)), "n_lesions": int(len(set(lesions)))})
    return pd.DataFrame(rows).set_index("metric")


def age_band(age) -> pd.Series:
    """Ages in bands of `AGE_BANDS` ("<30", "30-44", "45-59", "60-74", "75+"); NaN stays unknown."""
    labels = ["<30", "30-44", "45-59", "60-74", "75+"]
    return pd.cut(pd.Series(age, dtype=float), AGE_BANDS, right=False, labels=labels).astype(object)


def subgroup_table(table: pd.DataFrame, column: str, class_names: Sequence[str] = CLASS_NAMES, *,
                   metrics: Sequence[str] = ("dice", "balanced_accuracy", "mel_auc"), min_lesions: int = 10,
                   n_resamples: int = 500, seed: int = 0,
                   tasks: Sequence[str] = ("segmentation", "classification")) -> pd.DataFrame:
    """The ``metrics`` per value of ``column`` (e.g. ``sex``, ``age_band``, ``localization``), each
    with its lesion-level 95% CI. Groups with fewer than ``min_lesions`` lesions or unknown values
    are left out (their intervals would say nothing)."""
    if column not in table:
        raise ValueError(f"per-image table has no {column!r} column; columns: {list(table.columns)}.")
    rows = []
    values = table[column].astype(object).where(table[column].notna(), None)
    for value in sorted(v for v in values.dropna().unique() if str(v).lower() not in ("unknown", "nan", "")):
        group = table[values == value]
        n_lesions = int(cluster_ids(group).nunique())
        if n_lesions < min_lesions:
            continue
        ci = bootstrap_ci(group, class_names, n_resamples=n_resamples, seed=seed, tasks=tasks)
        row = {column: value, "n_images": len(group), "n_lesions": n_lesions}
        for m in metrics:
            if m in ci["estimate"]:
                row[m] = ci["estimate"][m]
                row[f"{m}_ci"] = ci["ci95"][m]
        rows.append(row)
    return pd.DataFrame(rows)


def mean_sd(values) -> tuple[float, float, int]:
    """Mean and sample standard deviation over seeds (sd NaN with one seed), and the count."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, int(len(v))


def format_ci(value: float, ci: Sequence[float] | None, digits: int = 3) -> str:
    """``0.914 (0.905–0.922)``; ``n/a`` for a metric that does not apply."""
    if value is None or not np.isfinite(value):
        return "n/a"
    if ci is None or not all(np.isfinite(ci)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({ci[0]:.{digits}f}–{ci[1]:.{digits}f})"
