"""Final evaluation with the ISIC definitions: masks scored at each image's original size,
classification with balanced accuracy as the headline and the always-NV baseline beside it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from skin_utils.data.datasets import Normalize, make_loader
from skin_utils.engine import amp_dtype_for, predict
from skin_utils.data.imageio import image_hw, read_mask
from skin_utils.metrics import ClassificationMetrics, SegmentationMetrics, majority_baseline, roc_curves
from skin_utils.trust.uncertainty import mask_uncertainty_score

HEADLINE = ("dice", "jaccard", "thresholded_jaccard", "accuracy", "balanced_accuracy", "macro_auc")


def upsample_mask(mask_probs: torch.Tensor, size_hw, threshold: float = 0.5) -> np.ndarray:
    """A (h, w) probability map -> boolean mask at ``size_hw`` (bilinear, then threshold)."""
    up = F.interpolate(mask_probs.float()[None, None], size=tuple(size_hw), mode="bilinear",
                       align_corners=False)
    return (up[0, 0] >= threshold).numpy()


def original_size_masks(mask_probs: torch.Tensor, mask_paths, image_paths, threshold: float = 0.5,
                        threads: int = 4):
    """Predicted and true masks, both at the size of each original image."""
    def one(i):
        hw = image_hw(image_paths[i])
        return upsample_mask(mask_probs[i], hw, threshold), read_mask(mask_paths[i], hw=hw).astype(bool)

    with ThreadPoolExecutor(threads) as pool:
        pairs = list(pool.map(one, range(len(mask_paths))))
    return [p for p, _ in pairs], [t for _, t in pairs]


def normalizer(normalization: dict | None = None) -> Normalize:
    """The input normalisation of a checkpoint (``Checkpoint.normalization``); None: ImageNet's."""
    return Normalize(normalization["mean"], normalization["std"]) if normalization else Normalize()


@dataclass
class Evaluation:
    """What `evaluate_original_size` returns."""

    report: dict               # headline numbers, per-class detail, curves, baseline
    per_image: pd.DataFrame    # one row per image, in the order of ``mask_probs``
    mask_probs: torch.Tensor   # (N, h, w) float16 mask probabilities at the model's size
    threshold: float
    probs: np.ndarray | None = None       # (N, K) class probabilities (TTA-averaged with tta), uncalibrated
    labels: np.ndarray | None = None      # (N,) true class indices
    view_probs: np.ndarray | None = None  # (S, N, K) per-view probabilities (return_views; S = 1 without tta)
    mask_var: torch.Tensor | None = None  # (N, h, w) float16 variance of the mask across TTA views (return_views, tta)
    mc_probs: np.ndarray | None = None    # (S, N, K) Monte-Carlo dropout samples (mc_samples > 0)


def evaluate_original_size(model, data, split: str, device, class_names, *, batch_size: int = 32,
                           amp: str = "auto", threshold: float = 0.5, tta: bool = False,
                           progress: bool = True, return_views: bool = False, mc_samples: int = 0,
                           normalization: dict | None = None):
    """Score ``split`` ("train", "val", "test" or "all") of a `skin_utils.data.loading.Data`.

    ``tta`` averages the predictions over the 8 symmetries of each (square) model input, the
    4 flips when it is not square (`skin_utils.engine.forward_probs`).
    Returns an `Evaluation`: ``report`` holds the headline numbers (``dice``,
    ``jaccard``, ``thresholded_jaccard``, ``sensitivity``, ``specificity``, ``accuracy``,
    ``balanced_accuracy``, ``macro_auc``, ``macro_average_precision``, ``n_images``), per-class
    detail, confusion matrices, ROC curves and the majority (NV) baseline; ``per_image`` is a
    DataFrame with one row per image (true and predicted class, probabilities, Dice, Jaccard,
    ``mask_uncertainty``: `skin_utils.trust.uncertainty.mask_uncertainty_score` of the mask at the
    model's size, the mean binary entropy in the band around the predicted border).
    ``return_views`` keeps each TTA view's class probabilities and the per-pixel variance of the
    mask across views (``Evaluation.view_probs``, ``mask_var``); ``mc_samples`` (0: off) adds
    that many Monte-Carlo dropout samples (``Evaluation.mc_probs``); see `skin_utils.engine.predict`.
    ``normalization``: the checkpoint's ``{"mean": ..., "std": ...}`` (None: ImageNet's).
    """
    device = torch.device(device)
    if split not in data.rows or len(data.rows[split]) == 0:
        raise ValueError(f"split={split!r} is empty or unknown; choose one of {sorted(data.rows)}.")
    loader = make_loader(data.dataset(split), batch_size, device)
    pred = predict(model, loader, device, amp_dtype=amp_dtype_for(device, amp), progress=progress,
                   desc=f"evaluate {split}", tta=tta, return_views=return_views, mc_samples=mc_samples,
                   normalize=normalizer(normalization))
    rows = pred["rows"]
    index = data.index.iloc[rows]
    pred_masks, true_masks = original_size_masks(
        pred["mask_probs"], index["mask_path"].tolist(), index["image_path"].tolist(), threshold)
    seg = SegmentationMetrics()
    seg.update(pred_masks, true_masks)
    cls = ClassificationMetrics(class_names)
    cls.update(pred["probs"], pred["labels"])
    s, c = seg.aggregate(), cls.aggregate()
    report = {k: s[k] for k in ("dice", "jaccard", "thresholded_jaccard", "sensitivity", "specificity")}
    report.update({k: v for k, v in c.items() if k != "n_images"})
    report["n_images"] = int(len(rows))
    report["n_lesions"] = int(index["lesion_id"].nunique())
    report["split"] = split
    report["tta"] = bool(tta)
    report["majority_baseline"] = majority_baseline(pred["labels"], class_names, "NV")
    report["roc_curves"] = roc_curves(pred["probs"], pred["labels"], class_names)
    predicted = pred["probs"].argmax(1)
    per_image = pd.DataFrame({
        "image_id": index["image_id"].to_numpy(), "lesion_id": index["lesion_id"].to_numpy(),
        "true": [class_names[i] for i in pred["labels"]], "pred": [class_names[i] for i in predicted],
        "prob_pred": pred["probs"].max(1), "dice": s["per_image"]["dice"],
        "jaccard": s["per_image"]["jaccard"], "row": rows,
    })
    for k, name in enumerate(class_names):
        per_image[f"p_{name}"] = pred["probs"][:, k]
    per_image["mask_uncertainty"] = mask_uncertainty_score(list(pred["mask_probs"].float().numpy()),
                                                           threshold=threshold)
    return Evaluation(report, per_image, pred["mask_probs"], threshold, probs=pred["probs"],
                      labels=pred["labels"], view_probs=pred.get("view_probs"), mask_var=pred.get("mask_var"),
                      mc_probs=pred.get("mc_probs"))


def per_class_table(report: dict) -> pd.DataFrame:
    """One row per class: support, sensitivity, specificity, precision, F1, AUC, AP."""
    table = pd.DataFrame(report["per_class"]).T
    cols = [c for c in ("support", "sensitivity", "specificity", "precision", "f1", "auc", "average_precision")
            if c in table.columns]
    table = table[cols]
    table["support"] = table["support"].astype(int)
    return table


SEGMENTATION_KEYS = ("dice", "jaccard", "thresholded_jaccard", "sensitivity", "specificity")
CLASSIFICATION_KEYS = ("accuracy", "balanced_accuracy", "macro_auc", "macro_average_precision", "per_class",
                       "confusion_matrix", "confusion_matrix_normalized", "roc_curves", "majority_baseline")


def not_applicable(report: dict, tasks) -> dict:
    """``report`` with the metrics of an untrained head (loss weight 0) set to None, so that no
    number is shown for what the model never learnt; ``tasks`` is recorded."""
    out = dict(report, tasks=list(tasks))
    for task, keys in (("segmentation", SEGMENTATION_KEYS), ("classification", CLASSIFICATION_KEYS)):
        if task not in tasks:
            out.update({k: None for k in keys if k in out})
            out["ci95"] = {k: v for k, v in out.get("ci95", {}).items() if k not in keys and
                           not (task == "classification" and k == "mel_auc")}
    return out


def headline_table(report: dict) -> pd.DataFrame:
    """The headline numbers with their lesion-level 95% intervals (when ``report["ci95"]`` has
    them) beside the always-NV baseline, so the real margin shows; "n/a" for an untrained head."""
    base = report.get("majority_baseline") or {}
    ci = report.get("ci95", {})
    rows = []
    for k in HEADLINE:
        value = report.get(k)
        lo_hi = ci.get(k)
        rows.append((k, "n/a" if value is None else value,
                     f"{lo_hi[0]:.3f}–{lo_hi[1]:.3f}" if lo_hi and np.all(np.isfinite(lo_hi)) else "",
                     base.get(k, np.nan) if value is not None else "n/a"))
    return pd.DataFrame(rows, columns=["metric", "model", "95% CI", f"always {base.get('majority', 'NV')}"]
                        ).set_index("metric")


def subgroup_tables(evaluation: "Evaluation", index: pd.DataFrame, class_names, tasks, *,
                    columns=("sex", "age_band", "localization"), n_resamples: int = 500, seed: int = 0,
                    min_lesions: int = 10) -> dict[str, pd.DataFrame]:
    """The headline metrics per subgroup of the metadata (sex, age band, body site), each with its
    lesion-level 95% interval; subgroups with fewer than ``min_lesions`` lesions are left out.
    ``index`` is the data set's index (`skin_utils.data.layout.load_index`)."""
    from skin_utils.stats import age_band, subgroup_table

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


def best_and_worst(data, evaluation: Evaluation, n: int = 4) -> dict:
    """Keyword arguments for `skin_utils.viz.plot_overlay_grid`: the ``n`` images with the
    highest and the ``n`` with the lowest Dice, image and masks at the original size."""
    from skin_utils.data.imageio import read_image

    per_image = evaluation.per_image.reset_index(drop=True)
    order = per_image["dice"].sort_values(ascending=False, kind="stable").index
    picks = list(dict.fromkeys(list(order[:n]) + list(order[-n:])))
    out = {k: [] for k in ("images", "true_masks", "pred_masks", "true_labels", "pred_labels",
                           "pred_probs", "scores", "row_titles")}
    for rank, i in enumerate(picks):
        row = per_image.loc[i]
        item = data.index.iloc[int(row["row"])]
        image = read_image(item["image_path"])
        h, w = image.shape[:2]
        out["images"].append(image)
        out["true_masks"].append(read_mask(item["mask_path"], hw=(h, w)))
        out["pred_masks"].append(upsample_mask(evaluation.mask_probs[i], (h, w), evaluation.threshold))
        out["true_labels"].append(row["true"])
        out["pred_labels"].append(row["pred"])
        out["pred_probs"].append(float(row["prob_pred"]))
        out["scores"].append(float(row["dice"]))
        out["row_titles"].append(f"{'best' if rank < n else 'worst'} · {row['image_id']}")
    return out
