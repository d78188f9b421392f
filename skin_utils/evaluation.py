"""Final evaluation with the ISIC definitions: masks scored at each image's original size,
classification with balanced accuracy as the headline beside chance and the majority class, and
melanoma versus the rest at the P(MEL) threshold chosen on validation.

Any data set can be scored for what it has (`evaluate_original_size`): an image with a mask for
segmentation, an image with a diagnosis for classification, over the classes present. An external
set's results are named after it (`result_tag`) and put beside the training data's test split
(`domain_shift`)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from skin_utils.config import resolve, slug
from skin_utils.data import make_loader
from skin_utils.transforms import Normalize
from skin_utils.engine import amp_dtype_for, predict
from skin_utils.layout import image_hw, read_mask
from skin_utils.metrics import (CLASSIFICATION_METRICS, MEL_THRESHOLD_METRICS, SEGMENTATION_KEYS, age_band, baselines,
                                bootstrap_ci, classification_report, melanoma_vs_rest, roc_curves, segmentation_scores,
                                subgroup_table)
from skin_utils.trust.numbers import mask_uncertainty_score

MELANOMA = "MEL"
HEADLINE = ("dice", "jaccard", "thresholded_jaccard", "accuracy", "balanced_accuracy", "macro_auc",
            "mel_auc", "mel_sensitivity", "mel_specificity")


def upsample_mask(mask_probs: torch.Tensor, size_hw, threshold: float = 0.5) -> np.ndarray:
    """A (h, w) probability map -> boolean mask at ``size_hw`` (bilinear, then threshold)."""
    up = F.interpolate(mask_probs.float()[None, None], size=tuple(size_hw), mode="bilinear",
                       align_corners=False)
    return (up[0, 0] >= threshold).numpy()


def original_size_scores(mask_probs, mask_paths, image_paths, threshold: float = 0.5,
                         threads: int = 4) -> dict[str, list[float]]:
    """The segmentation scores of each image (`skin_utils.metrics.SEGMENTATION_KEYS` -> one value
    per image), with the predicted mask (``mask_probs[i]``, at the model's size) enlarged to the
    original image's size and the true mask read at that size.

    One image at a time per thread: at most ``threads`` pairs of full-size masks exist at once,
    whatever the number or the size of the images (several thousand pixels a side)."""
    if not len(mask_paths) == len(image_paths) == len(mask_probs):
        raise ValueError(f"{len(mask_probs)} predicted masks, {len(mask_paths)} mask paths and "
                         f"{len(image_paths)} image paths: give one of each per image.")

    def one(i):
        hw = image_hw(image_paths[i])
        pred = upsample_mask(mask_probs[i], hw, threshold)
        true = read_mask(mask_paths[i], hw=hw).astype(bool)
        try:
            return {k: float(v[0]) for k, v in segmentation_scores(pred, true).items()}
        except ValueError as exc:
            raise ValueError(f"{image_paths[i]}: {exc}") from None

    threads = max(1, min(int(threads), os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        rows = list(pool.map(one, range(len(mask_paths))))
    return {k: [r[k] for r in rows] for k in SEGMENTATION_KEYS}


def label_and_mask_flags(index: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(has_label, has_mask)``: bool (N,) arrays over the rows of a data set's index: its
    ``has_label`` / ``has_mask`` columns (`skin_utils.data.load_data`), or where they are
    absent ``label >= 0`` and a mask path that is set."""
    n = len(index)
    if "has_label" in index:
        has_label = index["has_label"].to_numpy(bool)
    else:
        has_label = index["label"].to_numpy() >= 0 if "label" in index else np.zeros(n, bool)
    if "has_mask" in index:
        has_mask = index["has_mask"].to_numpy(bool)
    else:
        has_mask = (index["mask_path"].map(lambda p: isinstance(p, str) and p != "").to_numpy(bool)
                    if "mask_path" in index else np.zeros(n, bool))
    return has_label, has_mask


def normalizer(normalization: dict | None = None) -> Normalize:
    """The input normalisation of a checkpoint (``Checkpoint.normalization``: mean/std and
    colour constancy); None: ImageNet's, no colour constancy (`Normalize.from_config`)."""
    return Normalize.from_config(normalization)


@dataclass
class Evaluation:
    """What `evaluate_original_size` returns."""

    report: dict               # headline numbers, per-class detail, curves, baselines
    per_image: pd.DataFrame    # one row per image, in the order of ``mask_probs``
    mask_probs: torch.Tensor   # (N, h, w) float16 mask probabilities at the model's size
    threshold: float
    probs: np.ndarray | None = None       # (N, K) class probabilities (TTA-averaged with tta): the scores (calibrated when a calibration was given)
    labels: np.ndarray | None = None      # (N,) true class indices; -1 for an image without a diagnosis
    view_probs: np.ndarray | None = None  # (S, N, K) per-view probabilities (return_views; S = 1 without tta)
    mask_var: torch.Tensor | None = None  # (N, h, w) float16 variance of the mask across TTA views (return_views, tta)
    mc_probs: np.ndarray | None = None    # (S, N, K) Monte-Carlo dropout samples (mc_samples > 0)
    raw_probs: np.ndarray | None = None   # (N, K) the same before calibration; None when no calibration was given

    @property
    def has_label(self) -> np.ndarray:
        """Bool (N,): the image has a diagnosis (scored for classification)."""
        return self.per_image["true"].notna().to_numpy()

    @property
    def has_mask(self) -> np.ndarray:
        """Bool (N,): the image has a true mask (scored for segmentation)."""
        return self.per_image["dice"].notna().to_numpy()

    def subset(self, keep) -> "Evaluation":
        """The same evaluation restricted to the images where ``keep`` (bool (N,), or positions) is
        set, in the same order; ``per_image`` keeps its index, so that columns computed on the subset
        join back onto the full table. ``report`` is the full set's."""
        keep = np.asarray(keep)
        pos = np.flatnonzero(keep) if keep.dtype == bool else keep.astype(int)
        take = lambda a, axis=0: None if a is None else (a[pos] if axis == 0 else a[:, pos])  # noqa: E731
        return replace(self, per_image=self.per_image.iloc[pos], mask_probs=self.mask_probs[torch.as_tensor(pos)],
                       probs=take(self.probs), labels=take(self.labels), view_probs=take(self.view_probs, 1),
                       mask_var=None if self.mask_var is None else self.mask_var[torch.as_tensor(pos)],
                       mc_probs=take(self.mc_probs, 1), raw_probs=take(self.raw_probs))


def evaluate_original_size(model, data, split: str, device, class_names, *, batch_size: int = 32,
                           amp: str = "auto", threshold: float = 0.5, tta: bool = False,
                           progress: bool = True, return_views: bool = False, mc_samples: int = 0,
                           normalization: dict | None = None, threads: int = 4, calibration=None):
    """Score ``split`` ("train", "val", "test" or "all") of a `skin_utils.data.Data`.

    Each image is scored for what it has: segmentation where it has a mask, classification where
    it has a diagnosis (`label_and_mask_flags`); ``report["scored"]`` lists the tasks the data
    allow, and a task's keys are left out of ``report`` when no image allows it.
    ``tta`` averages the predictions over the 8 symmetries of each (square) model input, the
    4 flips when it is not square (`skin_utils.engine.forward_probs`).
    Returns an `Evaluation`: ``report`` holds the headline numbers (``dice``,
    ``jaccard``, ``thresholded_jaccard``, ``sensitivity``, ``specificity`` over the images with a
    mask, at each image's original size (`original_size_scores`, ``threads`` images at a time);
    ``accuracy``, ``balanced_accuracy``, ``macro_auc``, ``macro_average_precision`` over the
    images with a diagnosis, averaged over the classes present), per-class detail, confusion
    matrices, ROC curves, ``classes_present``, ``chance`` and ``majority_baseline`` (always
    answering the set's most frequent class; `skin_utils.metrics.baselines`), ``n_images``,
    ``n_lesions``, ``n_with_mask``, ``n_with_label``; ``per_image`` is a
    DataFrame with one row per image (true class (empty without a diagnosis) and predicted class,
    probabilities, Dice and Jaccard (empty without a mask), ``mask_uncertainty``:
    `skin_utils.trust.numbers.mask_uncertainty_score` of the mask at the
    model's size, the mean binary entropy in the band around the predicted border).
    ``return_views`` keeps each TTA view's class probabilities and the per-pixel variance of the
    mask across views (``Evaluation.view_probs``, ``mask_var``); ``mc_samples`` (0: off) adds
    that many Monte-Carlo dropout samples (``Evaluation.mc_probs``); see `skin_utils.engine.predict`.
    ``normalization``: the checkpoint's ``{"mean": ..., "std": ...}`` (None: ImageNet's).

    ``calibration`` (a `skin_utils.trust.calibrate.StoredCalibration`; None: none): the one rule
    for the class scores. With it, every classification number (accuracy, per-class and macro
    AUC, ROC curves, the ``p_<class>`` columns that melanoma AUC, subgroups and paired comparisons
    read) is computed on the calibrated probabilities, the ones the melanoma threshold applies to;
    ``raw_probs`` keeps the uncalibrated ones (for the reliability "before"), and
    ``report["scores"]`` says which were used.
    """
    device = torch.device(device)
    if split not in data.rows or len(data.rows[split]) == 0:
        raise ValueError(f"split={split!r} is empty or unknown; choose one of {sorted(data.rows)}.")
    loader = make_loader(data.dataset(split), batch_size, device)
    pred = predict(model, loader, device, amp_dtype=amp_dtype_for(device, amp), progress=progress,
                   desc=f"evaluate {split}", tta=tta, return_views=return_views, mc_samples=mc_samples,
                   normalize=normalizer(normalization))
    rows = pred["rows"]
    raw = pred["probs"]
    probs = raw if calibration is None else calibration.apply(raw)
    index = data.index.iloc[rows]
    has_label, has_mask = label_and_mask_flags(index)
    n = len(rows)
    report: dict = {"scored": [t for t, ok in (("segmentation", has_mask.any()), ("classification", has_label.any()))
                               if ok]}
    seg = {k: np.full(n, np.nan) for k in SEGMENTATION_KEYS}
    if has_mask.any():
        m = np.flatnonzero(has_mask)
        scores = original_size_scores(pred["mask_probs"][torch.as_tensor(m)], index["mask_path"].iloc[m].tolist(),
                                      index["image_path"].iloc[m].tolist(), threshold, threads=threads)
        for k in SEGMENTATION_KEYS:
            seg[k][m] = scores[k]
            report[k] = float(np.mean(scores[k]))
    labels = np.where(has_label, pred["labels"], -1)
    if has_label.any():
        lab = np.flatnonzero(has_label)
        report.update({k: v for k, v in classification_report(probs[lab], labels[lab], class_names).items()
                       if k != "n_images"})
        base = baselines(labels[lab], class_names)
        report["classes_present"] = base["classes_present"]
        report["chance"] = base["chance"]
        report["majority_baseline"] = base["majority"]
        report["roc_curves"] = roc_curves(probs[lab], labels[lab], class_names)
        report["scores"] = scores_rule(calibration)
    report["n_images"] = int(n)
    report["n_lesions"] = int(index["lesion_id"].nunique())
    report["n_with_mask"] = int(has_mask.sum())
    report["n_with_label"] = int(has_label.sum())
    report["split"] = split
    report["tta"] = bool(tta)
    report["threshold"] = float(threshold)
    predicted = probs.argmax(1)
    per_image = pd.DataFrame({
        "image_id": index["image_id"].to_numpy(), "lesion_id": index["lesion_id"].to_numpy(),
        "true": pd.array([class_names[i] if i >= 0 else None for i in labels], dtype=object),
        "pred": [class_names[i] for i in predicted],
        "prob_pred": probs.max(1), "dice": seg["dice"], "jaccard": seg["jaccard"], "row": rows,
    })
    for k, name in enumerate(class_names):
        per_image[f"p_{name}"] = probs[:, k]
    per_image["mask_uncertainty"] = mask_uncertainty_score(list(pred["mask_probs"].float().numpy()),
                                                           threshold=threshold)
    return Evaluation(report, per_image, pred["mask_probs"], threshold, probs=probs,
                      labels=labels, view_probs=pred.get("view_probs"), mask_var=pred.get("mask_var"),
                      mc_probs=pred.get("mc_probs"), raw_probs=None if calibration is None else raw)


def scores_rule(calibration) -> str:
    """The sentence that says which class scores an evaluation used (`evaluate_original_size`)."""
    if calibration is None:
        return "uncalibrated probabilities (no calibration given)"
    if not calibration.calibrated:
        return "uncalibrated probabilities (the checkpoint stores no temperature)"
    return (f"calibrated probabilities (temperature {calibration.temperature:.3f} of the {calibration.kind} outputs, "
            "fitted on the validation split), for every classification number: AUCs, melanoma versus the rest, "
            "subgroups and paired comparisons")


def calibrated_and_raw(evaluation: Evaluation, calibration) -> tuple[np.ndarray, np.ndarray]:
    """``(calibrated, raw)`` class probabilities of an evaluation: as made by
    `evaluate_original_size` with ``calibration``, or calibrated here when it was made without."""
    if evaluation.raw_probs is not None:
        return evaluation.probs, evaluation.raw_probs
    return calibration.apply(evaluation.probs), evaluation.probs


def melanoma_report(evaluation: Evaluation, calibration, class_names) -> dict | None:
    """Melanoma versus the rest on the images with a diagnosis (`skin_utils.metrics.melanoma_vs_rest`)
    on the **calibrated** P(MEL), at the threshold the checkpoint stores (``calibration``: a
    `skin_utils.trust.calibrate.StoredCalibration`; chosen on the training data's validation split
    for its target sensitivity), with ``calibrated``, ``target_sensitivity``, ``validation`` (what
    the threshold reached there) and ``kind``. None when no image has a diagnosis or there is no
    class named MEL."""
    names = list(class_names)
    keep = evaluation.has_label
    if not keep.any() or MELANOMA not in names or evaluation.probs is None:
        return None
    mel = names.index(MELANOMA)
    p_mel = calibrated_and_raw(evaluation.subset(keep), calibration)[0][:, mel]
    out = melanoma_vs_rest(evaluation.labels[keep] == mel, p_mel, calibration.mel_threshold)
    record = getattr(calibration, "record", {}) or {}
    if calibration.mel_threshold is None:
        out["notes"].append("the checkpoint holds no P(MEL) threshold: no sensitivity or specificity "
                            "(fit one with `python -m skin_utils.trust.calibrate <run or checkpoint>`)")
    return {**out, "scores": "calibrated P(MEL)" if calibration.calibrated else "P(MEL) (no temperature stored)",
            "calibrated": bool(calibration.calibrated), "kind": getattr(calibration, "kind", None),
            "target_sensitivity": record.get("target_sensitivity"), "validation": record.get("mel_at_threshold")}


def per_class_table(report: dict) -> pd.DataFrame:
    """One row per class: support, sensitivity, specificity, precision, F1, AUC, AP."""
    table = pd.DataFrame(report["per_class"]).T
    cols = [c for c in ("support", "sensitivity", "specificity", "precision", "f1", "auc", "average_precision")
            if c in table.columns]
    table = table[cols]
    table["support"] = table["support"].astype(int)
    return table


CLASSIFICATION_KEYS = ("accuracy", "balanced_accuracy", "macro_auc", "macro_average_precision", "per_class",
                       "confusion_matrix", "confusion_matrix_normalized", "roc_curves", "majority_baseline",
                       "classes_present", "chance", "mel_auc", "mel_sensitivity", "mel_specificity",
                       "melanoma_vs_rest", "scores")


def not_applicable(report: dict, tasks) -> dict:
    """``report`` with the metrics of an untrained head (loss weight 0) set to None, so that no
    number is shown for what the model never learnt; ``tasks`` is recorded."""
    out = dict(report, tasks=list(tasks))
    for task, keys in (("segmentation", SEGMENTATION_KEYS), ("classification", CLASSIFICATION_KEYS)):
        if task not in tasks:
            out.update({k: None for k in keys if k in out})
            out["ci95"] = {k: v for k, v in out.get("ci95", {}).items() if k not in keys}
    return out


def _majority_value(metric: str, base: dict):
    """What always answering the majority class scores on ``metric`` (NaN: no such number)."""
    if metric in ("accuracy", "balanced_accuracy"):
        return base.get(metric, np.nan)
    if metric in ("macro_auc", "mel_auc"):
        return 0.5  # a constant score separates nothing
    if metric in ("mel_sensitivity", "mel_specificity") and base.get("majority"):
        flags_all = base["majority"] == MELANOMA
        return float(flags_all if metric == "mel_sensitivity" else not flags_all)
    return np.nan


def headline_table(report: dict) -> pd.DataFrame:
    """The headline numbers that this set allows (`HEADLINE`: the segmentation ones with masks, the
    classification ones and melanoma versus the rest with diagnoses), with their lesion-level 95%
    intervals (when ``report["ci95"]`` has them), beside chance (``report["chance"]``) and always
    answering the set's most frequent class, so the real margin shows (those two columns only when
    the set has diagnoses); "n/a" for an untrained head."""
    base = report.get("majority_baseline") or {}
    chance = report.get("chance") or {}
    ci = report.get("ci95") or {}
    rows = []
    for k in HEADLINE:
        if k not in report:
            continue
        value = report.get(k)
        lo_hi = ci.get(k)
        trained = value is not None
        rows.append((k, value if trained else "n/a",
                     f"{lo_hi[0]:.3f}–{lo_hi[1]:.3f}" if trained and lo_hi and np.all(np.isfinite(lo_hi)) else "",
                     chance.get(k, np.nan) if trained else "n/a",
                     _majority_value(k, base) if trained else "n/a"))
    table = pd.DataFrame(rows, columns=["metric", "model", "95% CI", "chance", f"always {base.get('majority', 'NV')}"]
                         ).set_index("metric")
    if "chance" not in report and "majority_baseline" not in report:   # no diagnoses: nothing to compare with
        table = table[["model", "95% CI"]]
    return table


def subset_note(report: dict) -> str | None:
    """One sentence when the diagnoses of the set cover fewer than all classes: which ones, that the
    classification numbers are averaged over them (predictions of the others still count as
    errors), and chance; None when all classes occur or nothing was scored for classification."""
    present = report.get("classes_present")
    names = report.get("class_names") or []
    if not present or len(present) >= len(names):
        return None
    base = report.get("majority_baseline") or {}
    return (f"Only {len(present)} of the {len(names)} classes occur here ({', '.join(present)}): balanced accuracy "
            f"and macro AUC are averaged over those {len(present)} (a prediction of another class still counts as "
            f"an error), so they are not comparable with {len(names)}-class numbers. Chance balanced accuracy is "
            f"{1 / len(present):.3f} (any answer that ignores the image), macro AUC 0.5; always answering "
            f"{base.get('majority')} scores accuracy {base.get('accuracy', float('nan')):.3f}.")


def subgroup_tables(evaluation: "Evaluation", index: pd.DataFrame, class_names, tasks, *,
                    columns=("sex", "age_band", "localization"), n_resamples: int = 500, seed: int = 0,
                    min_lesions: int = 10) -> dict[str, pd.DataFrame]:
    """The headline metrics per subgroup of the metadata (sex, age band, body site), each with its
    lesion-level 95% interval; subgroups with fewer than ``min_lesions`` lesions are left out.
    ``index`` is the data set's index (`skin_utils.layout.load_index`)."""
    meta = index.iloc[evaluation.per_image["row"].to_numpy()].reset_index(drop=True)
    table = evaluation.per_image.reset_index(drop=True).copy()
    for col in ("sex", "localization"):
        if col in meta:
            table[col] = meta[col].to_numpy()
    if "age" in meta:
        table["age_band"] = age_band(meta["age"].to_numpy()).to_numpy()
    metrics = [m for m, t in (("dice", "segmentation"), ("balanced_accuracy", "classification"),
                              ("mel_auc", "classification")) if t in tasks]
    return {c: subgroup_table(table, c, class_names, metrics=metrics, min_lesions=min_lesions,
                              n_resamples=n_resamples, seed=seed, tasks=tasks)
            for c in columns if c in table and table[c].notna().any()}


RANKINGS = {"dice": "Dice of the mask", "p_true": "probability given to the true diagnosis"}


def case_scores(per_image: pd.DataFrame, by: str = "dice") -> pd.Series:
    """The score each image is ranked by in `best_and_worst` (NaN where it does not apply):
    ``"dice"`` (images with a mask) or ``"p_true"``, the (uncalibrated) probability of the true
    class (images with a diagnosis)."""
    if by == "dice":
        return per_image["dice"].astype(float)
    if by == "p_true":
        return pd.Series([row[f"p_{row['true']}"] if isinstance(row["true"], str) else np.nan
                          for _, row in per_image.iterrows()], index=per_image.index, dtype=float)
    raise ValueError(f"by={by!r}: rank by one of {sorted(RANKINGS)}.")


def best_and_worst(data, evaluation: Evaluation, n: int = 4, by: str = "dice") -> dict:
    """Keyword arguments for `skin_utils.plots.plot_cases`: the ``n`` images with the
    highest and the ``n`` with the lowest score (`case_scores`: ``"dice"`` or ``"p_true"``), among
    the images the score applies to, image and masks at the original size, one image at a time.
    ``true_masks`` is None when a picked image has no mask; a ``true_labels`` entry is None for an
    image without a diagnosis. ``scores`` holds the Dice (None without a mask)."""
    from skin_utils.layout import read_image

    per_image = evaluation.per_image.reset_index(drop=True)
    score = case_scores(per_image, by).dropna()
    if score.empty:
        raise ValueError(f"best_and_worst: no image has a {RANKINGS.get(by, by)} to rank by.")
    order = score.sort_values(ascending=False, kind="stable").index
    picks = list(dict.fromkeys(list(order[:n]) + list(order[-n:])))
    out = {k: [] for k in ("images", "true_masks", "pred_masks", "true_labels", "pred_labels",
                           "pred_probs", "scores", "row_titles")}
    for rank, i in enumerate(picks):
        row = per_image.loc[i]
        item = data.index.iloc[int(row["row"])]
        image = read_image(item["image_path"])
        h, w = image.shape[:2]
        has_mask = pd.notna(row["dice"])
        out["images"].append(image)
        out["true_masks"].append(read_mask(item["mask_path"], hw=(h, w)) if has_mask else None)
        out["pred_masks"].append(upsample_mask(evaluation.mask_probs[i], (h, w), evaluation.threshold))
        out["true_labels"].append(row["true"] if isinstance(row["true"], str) else None)
        out["pred_labels"].append(row["pred"])
        out["pred_probs"].append(float(row["prob_pred"]))
        out["scores"].append(float(row["dice"]) if has_mask else None)
        what = f"\n{by} {score[i]:.2f}" if by != "dice" else ""
        out["row_titles"].append(f"{'best' if rank < n else 'worst'} · {row['image_id']}{what}")
    if any(m is None for m in out["true_masks"]):
        out["true_masks"] = None
        out["scores"] = None
    return out


# --------------------------------------------------------------------------------------------
# an external data set: file names, and the domain shift beside the training data's test split
# --------------------------------------------------------------------------------------------

def is_external(described: dict, trained_on: dict) -> bool:
    """Whether the data set ``described`` (`skin_utils.data.Data.describe`) is not the one
    a checkpoint was trained on (``trained_on``: `skin_utils.checkpoint.Checkpoint.data`): another
    folder, unless its fingerprint is the training data's."""
    if described.get("fingerprint") and described.get("fingerprint") == trained_on.get("fingerprint"):
        return False
    here, there = described.get("data_dir"), trained_on.get("data_dir")
    if not here or not there:
        return True
    return resolve(here).resolve() != resolve(there).resolve()


def result_tag(split: str, data_dir=None, external: bool = False) -> str:
    """The stem of a 03_evaluate run's files (``metrics/<tag>.json``, ``<tag>_per_image.csv``,
    ``figures/<tag>_*.png``, the report section ``03_<tag>``): ``evaluate`` for the test split,
    ``evaluate_<split>`` for another split of the training data, and
    ``evaluate_external_<folder name>`` for another data set, so that scoring an external set
    never overwrites the run's test results."""
    if external:
        if not data_dir:
            raise ValueError("result_tag: an external data set needs its data_dir to name its files.")
        return f"evaluate_external_{slug(Path(str(data_dir)).name)}"
    return "evaluate" if split == "test" else f"evaluate_{split}"


def restrict_to_classes(per_image: pd.DataFrame, classes) -> pd.DataFrame:
    """The rows of a per-image table whose true class is one of ``classes`` (unlabelled rows and
    the other classes dropped): what the training data's test split scores on the classes that an
    external set has. Predictions of any class still count."""
    return per_image[per_image["true"].isin(list(classes))].reset_index(drop=True)


def _fmt_ci(lo_hi) -> str:
    return f"{lo_hi[0]:.3f}–{lo_hi[1]:.3f}" if lo_hi and all(v is not None and np.isfinite(v) for v in lo_hi) else ""


def domain_shift_table(internal: dict, external: dict, metrics=HEADLINE) -> pd.DataFrame:
    """The same metrics side by side: the training data's test split (``internal``: its
    ``evaluate.json``, or a dict of the same keys with ``ci95``) and the external set
    (``external``: this evaluation's result), each with its 95% interval, and the difference
    external - test. One row per metric the external set has a number for."""
    rows = []
    for k in metrics:
        ext = external.get(k)
        if ext is None:
            continue
        inn = internal.get(k)
        inn = np.nan if inn is None else float(inn)
        rows.append({"metric": k, "test split": inn, "test 95% CI": _fmt_ci((internal.get("ci95") or {}).get(k)),
                     "external": float(ext), "external 95% CI": _fmt_ci((external.get("ci95") or {}).get(k)),
                     "external − test": float(ext) - inn})
    columns = ["metric", "test split", "test 95% CI", "external", "external 95% CI", "external − test"]
    return pd.DataFrame(rows, columns=columns).set_index("metric")


def domain_shift(external: dict, internal: dict | None, internal_per_image: pd.DataFrame | None = None,
                 class_names=None, *, n_resamples: int = 1000, seed: int = 0) -> dict:
    """The domain shift between the training data's test split and an external set, with the same
    metrics and the same thresholds.

    ``external``: this evaluation's result (`evaluate_original_size`'s report with ``ci95``,
    ``mel_*``, ``tasks``, ``calibration_used``); ``internal``: the run's test ``evaluate.json``
    (None: not made yet); ``internal_per_image``: its per-image table. When the external set has
    fewer classes, the test split's classification numbers are recomputed over those classes from
    the per-image table (with the external run's P(MEL) threshold), so that the two columns average
    over the same classes. Returns ``table`` (`domain_shift_table`), ``notes`` (what differs between
    the two columns, in sentences) and ``restricted_to`` (the classes, or None)."""
    if internal is None:
        return {"table": None, "notes": [], "restricted_to": None}
    notes, restricted = [], None
    inside = dict(internal, ci95=dict(internal.get("ci95") or {}))
    if internal.get("split", "test") != "test":
        notes.append(f"The training data's column is its {internal.get('split')} split, not the test split.")
    for key, what in (("threshold", "mask threshold"), ("tta", "test-time augmentation")):
        a, b = internal.get(key, (internal.get("params") or {}).get(key)), external.get(key)
        if a is not None and b is not None and a != b:
            notes.append(f"The {what} differs: {a} on the test split, {b} here.")
    mel = external.get("melanoma_vs_rest") or {}
    mel_t = mel.get("threshold")
    mel_t_test = (internal.get("melanoma_vs_rest") or {}).get("threshold",
                                                             (internal.get("calibration_used") or {}).get("mel_threshold"))
    present, names = external.get("classes_present"), list(class_names or internal.get("class_names") or [])
    fewer = bool(present) and len(present) < len(names)
    if fewer and internal_per_image is not None and "classification" in (external.get("tasks") or ()):
        table = restrict_to_classes(internal_per_image, present)
        if len(table):
            ci = bootstrap_ci(table, names, n_resamples=n_resamples, seed=seed, tasks=("classification",),
                              mel_threshold=mel_t)
            for k in CLASSIFICATION_METRICS + MEL_THRESHOLD_METRICS:
                inside[k] = ci["estimate"].get(k)
                inside["ci95"][k] = ci["ci95"].get(k)
            restricted = list(present)
            notes.append(f"The test split's classification numbers are recomputed on its {len(table)} images of "
                         f"{', '.join(present)} (the classes this set has), so both columns average over the same "
                         "classes.")
    elif fewer:
        notes.append(f"This set has only {', '.join(present)}, the test split all {len(names)} classes: balanced "
                     "accuracy and macro AUC average over different classes (the test split's per-image table, "
                     "which would allow the same classes, was not found).")
    if (restricted is None and mel_t is not None and mel_t_test is not None
            and abs(float(mel_t) - float(mel_t_test)) > 1e-9):
        notes.append(f"The P(MEL) threshold differs: {mel_t_test:.3f} on the test split, {mel_t:.3f} here.")
    return {"table": domain_shift_table(inside, external), "notes": notes, "restricted_to": restricted}
