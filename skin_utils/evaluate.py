"""Scoring a trained model with the ISIC 2018 definitions, on a split of its training data or on another
data set. `evaluate(cfg)` is the whole job of notebooks/03_evaluate: one pass of the model (`score_split`;
every classification number reads the calibrated ``p_<class>`` columns), lesion-level 95% intervals beside
chance and the majority class, subgroups, best and worst cases, trust and, for an external set, the domain
shift. An external set's files are named apart (`result_tag`): it never overwrites the test results.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from skin_utils import plots, report
from skin_utils.report import Section
from skin_utils.checkpoint import Checkpoint, load_model
from skin_utils.config import EvaluateConfig, resolve, slug, trained_tasks
from skin_utils.data import CachedLesionDataset, make_loader
from skin_utils.transforms import Normalize
from skin_utils.layout import image_hw, read_csv_with_ids, read_image, read_mask
from skin_utils.engine import amp_dtype_for, image_batch, predict, resolve_device, upsample_mask
from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import (CLASSIFICATION_METRICS, HEADLINE_METRICS, ISIC_JACCARD_THRESHOLD,
                                MEL_THRESHOLD_METRICS, PER_CLASS_KEYS, SEGMENTATION_KEYS, age_band, baselines,
                                bootstrap_ci, classification_report, melanoma_vs_rest, read_per_image, roc_curves,
                                segmentation_scores, sens_spec_at, subgroup_table)
from skin_utils.runs import Run, run_to_score
from skin_utils.trust import (COMMAND, MELANOMA, StoredCalibration, calibrate_checkpoint, calibration_report,
                              cam_localization, cam_localization_report, classwise_ece, data_for_checkpoint,
                              familiarity_columns, mask_uncertainty_score, reliability_diagram, risk_coverage_curve,
                              selective_metrics, selective_report, stored_feature_reference, trust_columns)

CLASSIFICATION_KEYS = ("accuracy", "balanced_accuracy", "macro_auc", "macro_average_precision", "per_class",
                       "confusion_matrix", "confusion_matrix_normalized", "roc_curves", "majority_baseline",
                       "classes_present", "chance", "mel_auc", "mel_sensitivity", "mel_specificity",
                       "melanoma_vs_rest", "scores")
NOT_SCORED = {"classification": "This set has no diagnoses: classification is not scored (only the masks are).",
              "segmentation": "This set has no lesion masks: segmentation is not scored (only the diagnoses are)."}
SYNTHETIC_WARNING = ("These numbers come from the **synthetic demo data**: they show that the pipeline works, not "
                     "how the model would do on real lesions.")
SMALL_SET = 100  # fewer images than this: a few points of difference are noise
OPERATING_KEYS = ("sensitivity", "specificity", "ppv", "tp", "fn", "tn", "fp")


# --- one pass over a split: the per-image table ------------------------------------------------------

def original_size_scores(mask_probs, mask_paths, image_paths, threshold: float = 0.5,
                         threads: int = 4) -> dict[str, list[float]]:
    """`SEGMENTATION_KEYS` -> one value per image: the predicted mask enlarged to the original size
    against the true mask read at it, ``threads`` images at a time (so few full-size masks at once)."""
    if not len(mask_paths) == len(image_paths) == len(mask_probs):
        raise ValueError(f"{len(mask_probs)} predicted masks, {len(mask_paths)} mask paths and "
                         f"{len(image_paths)} image paths: give one of each per image.")

    def one(i):
        hw = image_hw(image_paths[i])
        try:
            scores = segmentation_scores(upsample_mask(mask_probs[i], hw, threshold), read_mask(mask_paths[i], hw=hw) > 0)
        except ValueError as exc:
            raise ValueError(f"{image_paths[i]}: {exc}") from None
        return {k: float(v[0]) for k, v in scores.items()}

    with ThreadPoolExecutor(max(1, min(int(threads), os.cpu_count() or 1))) as pool:
        rows = list(pool.map(one, range(len(mask_paths))))
    return {k: [r[k] for r in rows] for k in SEGMENTATION_KEYS}


@dataclass
class Evaluation:
    """What `score_split` returns: ``report``, ``per_image`` and the outputs (``mask_probs`` (N, h, w)
    float16; ``probs`` calibrated when a calibration was given, then ``raw_probs``; ``labels`` -1: none)."""

    report: dict
    per_image: pd.DataFrame
    mask_probs: torch.Tensor
    threshold: float
    probs: np.ndarray | None = None
    labels: np.ndarray | None = None
    view_probs: np.ndarray | None = None
    raw_probs: np.ndarray | None = None
    features: dict | None = None  # the checkpoint's feature_reference, when the familiarity columns were added

    @property
    def has_label(self) -> np.ndarray:
        return self.per_image["true"].notna().to_numpy()

    @property
    def has_mask(self) -> np.ndarray:
        return self.per_image["dice"].notna().to_numpy()

    def subset(self, keep) -> "Evaluation":
        """The images ``keep`` (bool (N,)) selects; ``per_image`` keeps its index (to join back)."""
        pos = np.flatnonzero(keep)
        take = lambda a, axis=0: None if a is None else a[(slice(None),) * axis + (pos,)]  # noqa: E731
        return replace(self, per_image=self.per_image.iloc[pos], mask_probs=self.mask_probs[torch.as_tensor(pos)],
                       probs=take(self.probs), labels=take(self.labels), view_probs=take(self.view_probs, 1),
                       raw_probs=take(self.raw_probs))


def score_split(model, data, split: str, device, class_names, *, batch_size: int = 32, amp: str = "auto",
                threshold: float = 0.5, tta: bool = False, progress: bool = True, return_views: bool = False,
                normalization: dict | None = None,
                calibration: StoredCalibration | None = None, features: dict | None = None) -> Evaluation:
    """Score ``split`` ("train", "val", "test" or "all") of a `Data`, each image for what it has (masks at
    the original size; classes over those present). The one rule for class scores: with ``calibration``
    every classification number and the ``p_<class>`` columns use the calibrated probabilities. ``features``
    (a checkpoint's `feature_reference`) adds the columns ``feature_distance`` and ``unfamiliar``."""
    device = torch.device(device)
    if split not in data.rows or len(data.rows[split]) == 0:
        raise ValueError(f"split={split!r} is empty or unknown; choose one of {sorted(data.rows)}.")
    pred = predict(model, make_loader(data.dataset(split), batch_size, device), device,
                   amp_dtype=amp_dtype_for(device, amp), progress=progress, desc=f"evaluate {split}", tta=tta,
                   return_views=return_views, normalize=Normalize.from_config(normalization),
                   features=features is not None)
    rows, raw = pred["rows"], pred["probs"]
    probs = raw if calibration is None else calibration.apply(raw)
    index = data.index.iloc[rows]
    has_label, has_mask = index["has_label"].to_numpy(bool), index["has_mask"].to_numpy(bool)
    report = {"scored": [t for t, ok in (("segmentation", has_mask), ("classification", has_label)) if ok.any()]}
    seg = {k: np.full(len(rows), np.nan) for k in SEGMENTATION_KEYS}
    if has_mask.any():
        m = np.flatnonzero(has_mask)
        scores = original_size_scores(pred["mask_probs"][torch.as_tensor(m)], index["mask_path"].iloc[m].tolist(),
                                      index["image_path"].iloc[m].tolist(), threshold)
        for k in SEGMENTATION_KEYS:
            seg[k][m] = scores[k]
            report[k] = float(np.mean(scores[k]))
    labels = np.where(has_label, pred["labels"], -1)
    if has_label.any():
        lab = labels[has_label]
        report.update({k: v for k, v in classification_report(probs[has_label], lab, class_names).items()
                       if k != "n_images"})
        base = baselines(lab, class_names)
        report.update(classes_present=base["classes_present"], chance=base["chance"], majority_baseline=base["majority"],
                      roc_curves=roc_curves(probs[has_label], lab, class_names), scores=scores_rule(calibration))
    report.update(n_images=len(rows), n_lesions=int(index["lesion_id"].nunique()), n_with_mask=int(has_mask.sum()),
                  n_with_label=int(has_label.sum()), split=split, tta=bool(tta), threshold=float(threshold))
    per_image = pd.DataFrame({
        "image_id": index["image_id"].to_numpy(), "lesion_id": index["lesion_id"].to_numpy(),
        "true": pd.array([class_names[i] if i >= 0 else None for i in labels], dtype=object),
        "pred": [class_names[i] for i in probs.argmax(1)], "prob_pred": probs.max(1), "dice": seg["dice"],
        "jaccard": seg["jaccard"], "row": rows, **{f"p_{name}": probs[:, k] for k, name in enumerate(class_names)},
        "mask_uncertainty": mask_uncertainty_score(list(pred["mask_probs"].float().numpy()), threshold=threshold)})
    if features is not None:
        per_image = per_image.assign(**familiarity_columns(pred["features"], features))
    return Evaluation(report, per_image, pred["mask_probs"], threshold, probs=probs, labels=labels,
                      view_probs=pred.get("view_probs"), raw_probs=None if calibration is None else raw,
                      features=features)


def scores_rule(calibration) -> str:
    """The sentence that says which class scores an evaluation used."""
    if calibration is None:
        return "uncalibrated probabilities (no calibration given)"
    if not calibration.calibrated:
        return "uncalibrated probabilities (the checkpoint stores no temperature)"
    return (f"calibrated probabilities (temperature {calibration.temperature:.3f} of the {calibration.kind} outputs, "
            "fitted on the validation split), for every classification number: AUCs, melanoma versus the rest, "
            "subgroups and paired comparisons")


# --- the tables ----------------------------------------------------------------------------------------

def melanoma_report(evaluation: Evaluation, calibration: StoredCalibration, class_names) -> dict | None:
    """`melanoma_vs_rest` of the (calibrated) P(MEL) at the stored threshold; None without diagnoses or MEL."""
    keep, names = evaluation.has_label, list(class_names)
    if not keep.any() or MELANOMA not in names:
        return None
    out = melanoma_vs_rest(evaluation.labels[keep] == names.index(MELANOMA),
                           evaluation.probs[keep, names.index(MELANOMA)], calibration.mel_threshold)
    if calibration.mel_threshold is None:
        out["notes"].append(f"the checkpoint holds no P(MEL) threshold: no sensitivity or specificity (fit one "
                            f"with `{COMMAND} <run or checkpoint>`)")
    return {**out, "scores": "calibrated P(MEL)" if calibration.calibrated else "P(MEL) (no temperature stored)",
            "calibrated": calibration.calibrated, "kind": calibration.kind,
            "target_sensitivity": calibration.record.get("target_sensitivity"),
            "validation": calibration.record.get("mel_at_threshold")}


def not_applicable(report: dict, tasks) -> dict:
    """``report`` with the metrics of an untrained head (loss weight 0) set to None, and ``tasks``."""
    out = dict(report, tasks=list(tasks))
    for task, keys in (("segmentation", SEGMENTATION_KEYS), ("classification", CLASSIFICATION_KEYS)):
        if task not in tasks:
            out.update({k: None for k in keys if k in out})
            out["ci95"] = {k: v for k, v in out.get("ci95", {}).items() if k not in keys}
    return out


def _fmt_ci(lo_hi) -> str:
    return f"{lo_hi[0]:.3f}–{lo_hi[1]:.3f}" if lo_hi and all(v is not None and np.isfinite(v) for v in lo_hi) else ""


def _readable_intervals(table: pd.DataFrame) -> pd.DataFrame:
    """``<metric>_ci`` columns ([lo, hi] lists) as "<metric> 95% CI" text, "lo–hi" (empty where undefined)."""
    cis = [c for c in table if c.endswith("_ci")]
    return table.assign(**{c: table[c].map(_fmt_ci) for c in cis}).rename(columns={c: f"{c[:-3]} 95% CI" for c in cis})


def headline_table(report: dict) -> pd.DataFrame:
    """The headline numbers with their 95% intervals, beside chance and the majority class; "n/a": untrained."""
    base, chance = report.get("majority_baseline") or {}, report.get("chance") or {}

    def majority(k):  # what always answering the majority class scores
        if k in ("accuracy", "balanced_accuracy"):
            return base.get(k, np.nan)
        if k in ("mel_sensitivity", "mel_specificity") and base.get("majority"):
            return float((base["majority"] == MELANOMA) == (k == "mel_sensitivity"))
        return 0.5 if k in ("macro_auc", "mel_auc") else np.nan

    rows = [(k, *((report[k], _fmt_ci((report.get("ci95") or {}).get(k)), chance.get(k, np.nan), majority(k))
                  if report[k] is not None else ("n/a", "", "n/a", "n/a"))) for k in HEADLINE_METRICS if k in report]
    table = pd.DataFrame(rows, columns=["metric", "model", "95% CI", "chance", f"always {base.get('majority', 'NV')}"])
    table = table.set_index("metric")
    return table if "chance" in report or "majority_baseline" in report else table[["model", "95% CI"]]


def subgroup_tables(evaluation: Evaluation, index: pd.DataFrame, class_names, tasks, *, n_resamples: int = 500,
                    seed: int = 0) -> dict[str, pd.DataFrame]:
    """`subgroup_table` of the headline metrics per sex, age band and body site (``index``: the data's)."""
    meta = index.iloc[evaluation.per_image["row"].to_numpy()].reset_index(drop=True)
    table = evaluation.per_image.reset_index(drop=True).assign(
        **{c: meta[c].to_numpy() for c in ("sex", "localization") if c in meta})
    if "age" in meta:
        table["age_band"] = age_band(meta["age"].to_numpy()).to_numpy()
    metrics = [m for m, t in (("dice", "segmentation"), ("balanced_accuracy", "classification"),
                              ("mel_auc", "classification")) if t in tasks]
    return {c: subgroup_table(table, c, class_names, metrics=metrics, n_resamples=n_resamples, seed=seed, tasks=tasks)
            for c in ("sex", "age_band", "localization") if c in table and table[c].notna().any()}


def subset_note(report: dict) -> str | None:
    """One sentence when the set's diagnoses cover fewer than all classes (None otherwise)."""
    present, names = report.get("classes_present"), report.get("class_names") or []
    if not present or len(present) >= len(names):
        return None
    return (f"Only {len(present)} of the {len(names)} classes occur here ({', '.join(present)}): balanced accuracy "
            f"and macro AUC are averaged over those {len(present)} (a prediction of another class still counts as "
            f"an error), so they are not comparable with {len(names)}-class numbers; the table gives chance and the "
            "majority class on this set.")


# --- pictures of single images: best and worst, Grad-CAM examples ----------------------------------------


def case_scores(per_image: pd.DataFrame, by: str = "dice") -> pd.Series:
    """What `best_and_worst` ranks by (NaN where it does not apply): ``"dice"`` or ``"p_true"``."""
    if by == "dice":
        return per_image["dice"].astype(float)
    if by == "p_true":
        return pd.Series([row[f"p_{row['true']}"] if isinstance(row["true"], str) else np.nan
                          for _, row in per_image.iterrows()], index=per_image.index, dtype=float)
    raise ValueError(f"by={by!r}: rank by 'dice' or 'p_true'.")


def _at_original_size(data, evaluation: Evaluation, positions) -> tuple[list, list, list]:
    """Images, true masks (None without one) and predicted masks at the original size, of positions."""
    rows = evaluation.per_image["row"].to_numpy()
    dice = evaluation.per_image.reindex(columns=["dice"])["dice"].to_numpy(float)  # NaN: no true mask
    images, masks, preds = [], [], []
    for pos in positions:
        item = data.index.iloc[int(rows[pos])]
        images.append(read_image(item["image_path"]))
        hw = images[-1].shape[:2]
        masks.append(read_mask(item["mask_path"], hw=hw) if np.isfinite(dice[pos]) else None)
        preds.append(upsample_mask(evaluation.mask_probs[pos], hw, evaluation.threshold))
    return images, masks, preds


def best_and_worst(data, evaluation: Evaluation, n: int = 4, by: str = "dice") -> dict:
    """`skin_utils.plots.plot_cases`'s arguments: the ``n`` best and ``n`` worst images by `case_scores`."""
    per_image = evaluation.per_image.reset_index(drop=True)
    score = case_scores(per_image, by).dropna()
    if score.empty:
        raise ValueError(f"best_and_worst: no image has a {'Dice' if by == 'dice' else 'diagnosis'} to rank by.")
    order = score.sort_values(ascending=False, kind="stable").index
    picks = list(dict.fromkeys(list(order[:n]) + list(order[-n:])))
    images, masks, preds = _at_original_size(data, evaluation, picks)
    rows = per_image.loc[picks]
    with_masks = all(m is not None for m in masks)
    return {"images": images, "true_masks": masks if with_masks else None, "pred_masks": preds,
            "true_labels": [t if isinstance(t, str) else None for t in rows["true"]], "pred_labels": list(rows["pred"]),
            "pred_probs": rows["prob_pred"].astype(float).tolist(),
            "scores": rows["dice"].astype(float).tolist() if with_masks else None,
            "row_titles": [f"{'best' if rank < n else 'worst'} · {i}" + (f"\n{by} {score[p]:.2f}" if by != "dice" else "")
                           for rank, (p, i) in enumerate(zip(picks, rows["image_id"]))]}


def choose_cam_examples(per_image: pd.DataFrame, n: int = 4) -> list[int]:
    """Up to ``n`` positions, one per true class (most frequent first): its surest, correct ones first."""
    table = per_image.reset_index(drop=True)
    table = table.assign(correct=table["true"] == table["pred"])
    picks = [int(table[table["true"] == name].sort_values(["correct", "prob_pred"], ascending=False,
                                                           kind="stable").index[0])
             for name in table["true"].value_counts().index]
    return picks[:n]


def cam_examples(model, data, evaluation: Evaluation, positions, device, *, normalization: dict | None = None,
                 energy: dict | None = None, class_names=CLASS_NAMES) -> dict:
    """`skin_utils.plots.plot_cam_grid`'s arguments: the Grad-CAM of the class the caption names (the
    table's prediction), with ``energy`` (image_id -> share inside) in the caption."""
    positions = [int(i) for i in positions]
    if not positions:
        raise ValueError("cam_examples: no positions given.")
    per_image = evaluation.per_image.reset_index(drop=True).loc[positions]
    batch = torch.from_numpy(np.stack([np.asarray(data.cache.images[int(r)]) for r in per_image["row"]]))
    cams = predict(model, [image_batch(batch.permute(0, 3, 1, 2))], device, progress=False, cam=[
        list(class_names).index(c) for c in per_image["pred"]], normalize=Normalize.from_config(normalization))
    images, masks, preds = _at_original_size(data, evaluation, positions)
    captions = []
    for _, row in per_image.iterrows():
        inside = (energy or {}).get(row["image_id"])
        captions.append(f"{row['image_id']}\ntrue {row['true']} · pred {row['pred']} ({row['prob_pred']:.2f})"
                        + (f"\n{inside:.0%} of the map in the lesion" if inside is not None and inside == inside else ""))
    return {"images": images, "cams": list(cams["cams"]), "masks": None if any(m is None for m in masks) else masks,
            "pred_masks": preds, "captions": captions}


# --- trust, assessed on the split ------------------------------------------------------------------------

@dataclass
class Trust:
    """What `assess_trust` returns (``referral["mask"]``: the mask uncertainty against 1 - Dice)."""

    calibration: dict
    referral: dict
    operating_point: dict | None
    per_image: pd.DataFrame
    stored: dict

    def report(self) -> dict:
        """For the metrics file (the curves, one point per image, left out)."""
        return {"calibration": self.calibration, "referral": {k: v for k, v in self.referral.items() if k != "curves"},
                "operating_point": self.operating_point, "stored_calibration": self.stored}


def assess_trust(evaluation: Evaluation, calibration: StoredCalibration, class_names, *,
                 segmented: bool = True) -> Trust:
    """Calibration, referral and the melanoma operating point on the images with a diagnosis; the mask's
    referral only for a trained mask head (``segmented``)."""
    labels, cal = evaluation.labels, evaluation.probs
    raw = cal if evaluation.raw_probs is None else evaluation.raw_probs
    columns = trust_columns(cal, calibration, class_names, evaluation.view_probs, evaluation.per_image.index)

    def report_of(p):
        per_class = classwise_ece(p, labels, reduction="none")
        return {**calibration_report(p, labels), "per_class_ece": dict(zip(class_names, per_class.tolist()))}

    done = calibration.calibrated
    calib = {"temperature": calibration.temperature, "calibrated": done, "kind": calibration.kind,
             "before": report_of(raw), "after": report_of(cal) if done else None,
             "reliability_before": reliability_diagram(raw, labels),
             "reliability_after": reliability_diagram(cal, labels) if done else None}
    errors = cal.argmax(1) != labels
    signals = columns.join(evaluation.per_image[["feature_distance"]]) if evaluation.features is not None else columns
    curves = {name: risk_coverage_curve(signals[name].to_numpy(), errors)  # feature_distance: how unlike validation
              for name in ("entropy", "tta_disagreement", "tta_mutual_info", "feature_distance")
              if name in signals}
    stats = ("aurc", "optimal_aurc", "excess_aurc", "error_rate")
    mask_u, seg_loss = evaluation.per_image["mask_uncertainty"].to_numpy(), 1.0 - evaluation.per_image["dice"].to_numpy(float)
    ok = np.isfinite(mask_u) & np.isfinite(seg_loss)
    mask = None
    if segmented and ok.any():
        c = risk_coverage_curve(mask_u[ok], np.clip(seg_loss[ok], 0.0, 1.0))
        mask = {"measure": "mask_uncertainty", "loss": "1 - Dice", **{k: c[k] for k in stats}}
    mel = list(class_names).index(MELANOMA) if MELANOMA in list(class_names) else None
    kw = {"melanoma_index": mel}  # None: no melanoma class, so no melanoma columns
    u = columns["entropy"].to_numpy()
    table = selective_report(cal, labels, u, **kw)
    if calibration.mel_threshold is not None and mel is not None:
        at_op = selective_report(cal, labels, u, mel_threshold=calibration.mel_threshold, **kw)
        for row, other in zip(table, at_op):
            row["mel_sensitivity_with_referral_at_operating_point"] = other["mel_sensitivity_with_referral"]
    at_threshold = None if calibration.referral_threshold is None else {
        "threshold": calibration.referral_threshold, "target_coverage": calibration.record.get("target_coverage"),
        **selective_metrics(cal, labels, ~columns["refer"].to_numpy(dtype=bool), **kw)}
    unfamiliar = None if evaluation.features is None else {"threshold": evaluation.features["threshold"],
        **selective_metrics(cal, labels, ~evaluation.per_image["unfamiliar"].to_numpy(dtype=bool), **kw)}
    referral = {"measure": calibration.uncertainty, "curves": curves, "mask": mask, "table": table,
                "aurc": {name: {k: c[k] for k in stats} for name, c in curves.items()}, "at_threshold": at_threshold,
                "unfamiliar": unfamiliar}
    op = None
    if mel is not None and (labels == mel).any():
        is_mel = labels == mel
        argmax = sens_spec_at((cal.argmax(1) == mel).astype(float), is_mel, 0.5)
        op = {"argmax": {k: argmax[k] for k in OPERATING_KEYS},
              "n_mel": int(is_mel.sum()), "n_images": int(len(labels))}
        if calibration.mel_threshold is not None:
            op.update(at_threshold=sens_spec_at(cal[:, mel], is_mel, calibration.mel_threshold),
                      target_sensitivity=calibration.record.get("target_sensitivity"),
                      validation=calibration.record.get("mel_at_threshold"))
    return Trust(calib, referral, op, columns, calibration.as_dict())


def calibration_table(calibration: dict) -> pd.DataFrame:
    """ECE, class-wise ECE, NLL and Brier before and after temperature scaling (``Trust.calibration``)."""
    names = {"ece": "ECE (top-label, 15 bins)", "classwise_ece": "class-wise ECE", "nll": "NLL", "brier": "Brier score"}
    table = pd.DataFrame({"uncalibrated": {names[k]: calibration["before"][k] for k in names}})
    if calibration.get("after") is not None:
        table[f"T = {calibration['temperature']:.2f}"] = [calibration["after"][k] for k in names]
    return table.rename_axis("metric")


REFERRAL_COLUMNS = {"coverage": "kept", "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy",
                    "mel_referred": "melanomas referred", "mel_sensitivity_kept": "MEL sensitivity (kept)",
                    "mel_sensitivity_with_referral": "MEL sensitivity (with referral)",
                    "mel_sensitivity_with_referral_at_operating_point": "MEL sensitivity (flag or referral)"}


def referral_table(trust: Trust) -> pd.DataFrame:
    """One row per share of most uncertain images referred, and one for the stored threshold."""
    rows = {f"refer {r['referral_fraction']:.0%}": r for r in trust.referral["table"]}
    if (at := trust.referral.get("at_threshold")) is not None:
        rows[f"refer entropy > {at['threshold']:.3f} (validation)"] = at
    if (at := trust.referral.get("unfamiliar")) is not None:
        rows[f"refer unfamiliar: feature distance > {at['threshold']:.2f} (validation)"] = at
    table = pd.DataFrame.from_dict(rows, orient="index")
    table = table[[c for c in REFERRAL_COLUMNS if c in table]]
    table = table.astype({"mel_referred": "Int64"}) if "mel_referred" in table else table
    return table.rename(columns=REFERRAL_COLUMNS).rename_axis("referral")


def operating_point_table(op: dict) -> pd.DataFrame:
    """The melanoma flag on the validation split and here, and the argmax (``Trust.operating_point``)."""
    rows = {name: op[k] for name, k in (("flag at threshold, validation split", "validation"),
                                        ("flag at threshold, this split", "at_threshold"),
                                        ("most probable class, this split", "argmax")) if op.get(k)}
    table = pd.DataFrame.from_dict({k: {c: v.get(c) for c in OPERATING_KEYS} for k, v in rows.items()}, orient="index")
    table = table.astype({c: "Int64" for c in ("tp", "fn", "tn", "fp")})
    if op.get("at_threshold"):
        table.insert(0, "threshold", [op["at_threshold"]["threshold"] if "threshold" in k else np.nan for k in rows])
    return table.rename_axis("melanoma call")


def cam_check(model, data, evaluation: Evaluation, device, class_names, *, batch_size: int = 32,
              max_images: int | None = None, normalization: dict | None = None,
              against=("true_mask", "pred_mask"), progress: bool = True) -> dict:
    """`cam_localization_report` of the predicted class's Grad-CAM against the masks ``against`` names,
    on the first ``max_images`` images (None: all)."""
    rows = evaluation.per_image["row"].to_numpy()
    n = len(rows) if max_images is None else min(int(max_images), len(rows))
    if n == 0:
        raise ValueError("cam_check: no images to explain.")
    table = evaluation.per_image.iloc[:n]
    loader = make_loader(CachedLesionDataset(data.cache, data.labels, rows[:n]), batch_size, torch.device(device))
    out = predict(model, loader, device, progress=progress, desc="Grad-CAM", with_masks=True,
                  cam=table["pred"].map(list(class_names).index).to_numpy(), normalize=Normalize.from_config(normalization))
    masks = {"true_mask": out["masks"], "pred_mask": evaluation.mask_probs[:n].float() >= evaluation.threshold}
    found = {name: cam_localization_report(cam_localization(out["cams"], masks[name].numpy(), out["labels"],
                                                            table["image_id"].tolist(), class_names), class_names)
             for name in against}
    return {**found, "method": "Grad-CAM, element-wise (HiResCAM)", "layer": "encoder.layer4",
            "target": "the evaluation's predicted class (TTA-averaged when it was)",
            "resolution": list(data.image_size), "n_images": n, "n_split": int(len(rows))}


def cam_reference(cam: dict) -> str:
    """The mask `cam_check` was judged by: the true one, else (a set without masks) the predicted one."""
    return "true_mask" if "true_mask" in cam else "pred_mask"


def cam_columns(cam: dict) -> pd.DataFrame:
    """Per-image columns of `cam_check` for joining on ``image_id``."""
    parts = {s: cam[k]["per_image"] for k, s in (("true_mask", "true"), ("pred_mask", "pred")) if k in cam}
    cols = {"image_id": [r["image_id"] for r in cam[cam_reference(cam)]["per_image"]]}
    cols |= {f"cam_energy_{s}": [r["energy_inside"] for r in rows] for s, rows in parts.items()}
    cols |= {f"cam_area_{s}": [r["area_share"] for r in rows] for s, rows in parts.items()}
    if "true" in parts:
        cols["cam_peak_inside_true"] = [r["peak_inside"] for r in parts["true"]]
    return pd.DataFrame(cols)


def cam_summary_table(cam: dict) -> pd.DataFrame:
    """Per true class and "all": heat inside the true and predicted lesion against a uniform map's share."""
    ref, rows = cam_reference(cam), []
    energy, area = (("energy in true lesion", "lesion area share") if ref == "true_mask"
                    else ("energy in predicted lesion", "predicted area share"))
    for name, t in [("all", cam[ref]["overall"]), *cam[ref]["per_class"].items()]:
        row = {"class": name, "images": t["n_images"], energy: t["energy_inside"], area: t["area_share"],
               "lift": t["lift"], "above uniform": t["above_baseline"], "mostly outside": t["mostly_outside"]}
        if ref == "true_mask" and "pred_mask" in cam:
            p = cam["pred_mask"]["overall"] if name == "all" else cam["pred_mask"]["per_class"].get(name, {})
            row.update({"energy in predicted lesion": p.get("energy_inside"), "predicted area share": p.get("area_share")})
        rows.append(row)
    return pd.DataFrame(rows).set_index("class").astype({"images": "Int64"})


def cam_report(cam: dict) -> dict:
    """`cam_check`'s result for a metrics file (the per-image rows go to the per-image CSV)."""
    return {**cam, **{k: {x: v for x, v in cam[k].items() if x != "per_image"}
                      for k in ("true_mask", "pred_mask") if k in cam}}


# --- another data set: its file names, and the domain shift beside the training data's test split ----------

def is_external(described: dict, trained_on: dict) -> bool:
    """Whether ``described`` (`Data.describe`) is another folder than ``trained_on`` with other data."""
    if described.get("fingerprint") and described.get("fingerprint") == trained_on.get("fingerprint"):
        return False
    here, there = described.get("data_dir"), trained_on.get("data_dir")
    return not here or not there or resolve(here).resolve() != resolve(there).resolve()


def seen_in_training(image_ids, split_path) -> list[str]:
    """The ``image_ids`` that the training split file names in train or val (a shifted copy of the wrong split, or
    a set that holds HAM10000 images, such as ISIC 2019): their scores are not held out. [] without the file."""
    if not split_path or not resolve(split_path).is_file():
        return []
    split = read_csv_with_ids(resolve(split_path))
    return sorted(set(image_ids) & set(split.loc[split["split"].isin(("train", "val")), "image_id"]))


def result_tag(split: str, data_dir=None, external: bool = False) -> str:
    """``evaluate`` (test split), ``evaluate_<split>`` or ``evaluate_external_<folder>``: the results' names."""
    if not external:
        return "evaluate" if split == "test" else f"evaluate_{split}"
    if not data_dir:
        raise ValueError("result_tag: an external data set needs its data_dir to name its files.")
    return f"evaluate_external_{slug(Path(str(data_dir)).name)}"


def domain_shift_table(internal: dict, external: dict) -> pd.DataFrame:
    """The external set's metrics beside the test split's (``evaluate.json``), with intervals and the difference."""
    rows = []
    for k in HEADLINE_METRICS:
        if external.get(k) is None:
            continue
        inn = np.nan if internal.get(k) is None else float(internal[k])
        rows.append({"metric": k, "test split": inn, "test 95% CI": _fmt_ci((internal.get("ci95") or {}).get(k)),
                     "external": float(external[k]), "external 95% CI": _fmt_ci((external.get("ci95") or {}).get(k)),
                     "external − test": float(external[k]) - inn})
    return pd.DataFrame(rows, columns=["metric", "test split", "test 95% CI", "external", "external 95% CI",
                                       "external − test"]).set_index("metric")


def domain_shift(external: dict, internal: dict, internal_per_image: pd.DataFrame | None, class_names, *,
                 n_resamples: int = 1000, seed: int = 0) -> dict:
    """From the test split (``internal``: its ``evaluate.json``) to an external set: ``table``, ``notes`` and
    ``restricted_to`` (with fewer classes here, the test split's numbers recomputed over them)."""
    notes, restricted, inside = [], None, dict(internal, ci95=dict(internal.get("ci95") or {}))
    for key, what in (("threshold", "mask threshold"), ("tta", "test-time augmentation")):
        a, b = internal.get(key), external.get(key)
        if a is not None and b is not None and a != b:
            notes.append(f"The {what} differs: {a} on the test split, {b} here.")
    mel_t = (external.get("melanoma_vs_rest") or {}).get("threshold")
    mel_t_test = (internal.get("melanoma_vs_rest") or {}).get("threshold")
    present, names = external.get("classes_present"), list(class_names)
    fewer = bool(present) and len(present) < len(names)
    if fewer and internal_per_image is not None and "classification" in (external.get("tasks") or ()):
        table = internal_per_image[internal_per_image["true"].isin(present)].reset_index(drop=True)
        if len(table):
            ci = bootstrap_ci(table, names, n_resamples=n_resamples, seed=seed, tasks=("classification",),
                              mel_threshold=mel_t)
            for k in CLASSIFICATION_METRICS + MEL_THRESHOLD_METRICS:
                inside[k], inside["ci95"][k] = ci["estimate"].get(k), ci["ci95"].get(k)
            restricted = list(present)
            notes.append(f"The test split's classification numbers are recomputed on its {len(table)} images of "
                         f"{', '.join(present)} (the classes this set has), so both columns average over the same "
                         "classes.")
    elif fewer:
        notes.append(f"This set has only {', '.join(present)}, the test split all {len(names)} classes: balanced "
                     "accuracy and macro AUC average over different classes (the test split's per-image table, "
                     "which would allow the same classes, was not found).")
    if restricted is None and None not in (mel_t, mel_t_test) and abs(float(mel_t) - float(mel_t_test)) > 1e-9:
        notes.append(f"The P(MEL) threshold differs: {mel_t_test:.3f} on the test split, {mel_t:.3f} here.")
    return {"table": domain_shift_table(inside, external), "notes": notes, "restricted_to": restricted}


# --- one sentence per section (its numbers are in the section's table) ---------------------------------------

def _with_ci(ci95: dict | None, metric: str) -> str:
    lo_hi = (ci95 or {}).get(metric)
    return f" (95% CI {lo_hi[0]:.2f}–{lo_hi[1]:.2f})" if _fmt_ci(lo_hi) else ""


def melanoma_sentence(mel: dict | None) -> str:
    """Where the headline's ``mel_`` rows come from (melanoma versus the rest)."""
    if not mel:
        return ""
    if not np.isfinite(mel.get("auc", np.nan)):
        return f"Melanoma versus the rest: the AUC is undefined here ({'; '.join(mel.get('notes') or [])})."
    at = ("the checkpoint holds no P(MEL) threshold, so no sensitivity or specificity" if mel.get("threshold") is None
          else f"sensitivity and specificity at the P(MEL) threshold {mel['threshold']:.3f} chosen on the training "
               "data's validation split")
    return f"Melanoma versus the rest ({mel['n_mel']} images of melanoma, {mel['n_other']} of other lesions): {at}."


def calibration_sentence(cal: dict) -> str:
    """Which way the uncalibrated probabilities err (``Trust.calibration``)."""
    rel = cal["reliability_before"]
    gap = rel["confidence_overall"] - rel["accuracy_overall"]
    how = "over-confident" if gap >= 0.02 else "under-confident" if gap <= -0.02 else "about right"
    return (f"Uncalibrated, the model is {how} (mean confidence {rel['confidence_overall']:.2f} against accuracy "
            f"{rel['accuracy_overall']:.2f})" + ("." if cal["after"] is None else
                                                 "; the temperature never changes the predicted class."))


def referral_sentence(referral: dict) -> str:
    """Whether the entropy finds the errors (``Trust.referral``)."""
    a = referral["aurc"]["entropy"]
    return (f"Ranking by entropy, AURC {a['aurc']:.3f} against {a['error_rate']:.3f} at random and "
            f"{a['optimal_aurc']:.3f} for an oracle (lower is better)."
            + (" The checkpoint holds no referral threshold." if referral["at_threshold"] is None else ""))


def operating_sentence(op: dict | None) -> str:
    """How many melanomas the flag finds here (``Trust.operating_point``)."""
    if op is None:
        return "There is no melanoma here, so the melanoma operating point cannot be checked."
    if op.get("at_threshold") is None:
        return (f"The checkpoint holds no melanoma threshold: the most probable class finds {op['argmax']['tp']} of "
                f"{op['n_mel']} melanomas.")
    at = op["at_threshold"]
    return f"Flagging melanoma at calibrated P(MEL) >= {at['threshold']:.3f} finds {at['tp']} of {op['n_mel']} here."


def cam_sentence(cam: dict) -> str:
    """How much of the heat lies on the lesion, against what a uniform map would score."""
    ref = cam_reference(cam)
    t = cam[ref]["overall"]
    if not np.isfinite(t["energy_inside"]):
        return "Every heat map was empty (all-zero gradients): Grad-CAM says nothing about this model."
    part = f" (checked on {cam['n_images']} of the {cam['n_split']} images)" if cam["n_images"] < cam["n_split"] else ""
    lesion = ("true lesion" if ref == "true_mask" else
              "predicted lesion (this set has no masks, so the check trusts the mask head)")
    return (f"On average {t['energy_inside']:.0%} of the Grad-CAM energy lies inside the {lesion}, which covers "
            f"{t['area_share']:.0%} of the image (what a uniform map scores){part}.")


def conclusion(result: dict, per_image: pd.DataFrame, tasks, shift: dict | None = None,
               synthetic: bool = False) -> str:
    """The margin over chance and the majority class, Dice, the shift, how far to trust the numbers."""
    out = [f"The {t} head was not trained (its loss weight was 0): its metrics are not applicable."
           for t in ("segmentation", "classification") if t not in tasks]
    ci, scored = result.get("ci95"), [t for t in tasks if t in result.get("scored", ())]
    if "classification" in scored:
        base = result["majority_baseline"]
        out.append(f"Balanced accuracy {result['balanced_accuracy']:.2f}{_with_ci(ci, 'balanced_accuracy')} against "
                   f"{result['chance']['balanced_accuracy']:.2f} by chance and {base['balanced_accuracy']:.2f} for "
                   f"always answering {base['majority']}.")
    if "segmentation" in scored:
        jaccard = per_image["jaccard"].dropna()
        out.append(f"Mean Dice {result['dice']:.2f}{_with_ci(ci, 'dice')}; {int((jaccard < ISIC_JACCARD_THRESHOLD).sum())} "
                   f"of {len(jaccard)} masks have Jaccard below {ISIC_JACCARD_THRESHOLD} (0 in the thresholded Jaccard).")
    if shift and len(shift["table"]):
        out.append("Against the training data's test split: " + ", ".join(
            f"{m.replace('_', ' ')} {d:+.2f}" for m, d in shift["table"]["external − test"].items() if d == d) + ".")
    if result.get("n_images", 0) < SMALL_SET:
        out.append(f"Only {result.get('n_images', 0)} images: differences of a few points are noise.")
    return " ".join(out + ([SYNTHETIC_WARNING] if synthetic else []))


# --- the whole job of notebooks/03_evaluate -------------------------------------------------------------

STORED_ELSEWHERE = ("**The temperature and the melanoma and referral thresholds were fitted on the validation split of "
                    "`{data}`, not on this set's clinic or device**: the calibration, sensitivity and specificity "
                    "below show what they do here; refit them on a labelled sample of this set before relying on "
                    "the flags.")


SHIFT_TITLE = "Domain shift: the training data's test split beside this set"
TRUST_TITLES = {"calibration": "Trust in each prediction: calibration", "referral": "Referral of the most uncertain",
                "operating_point": "The melanoma operating point", "grad_cam": "Grad-CAM: where the classifier looks",
                "cam_check": "Is the heat map on the lesion?"}


@dataclass
class Evaluated:
    """What `evaluate` returns: ``result`` is what ``metrics/<tag>.json`` holds."""

    run: Run
    tag: str
    result: dict
    per_image: pd.DataFrame
    sections: dict[str, Section]

    def show(self, name: str) -> None:
        self.sections[name].show()


def _domain_shift_section(run: Run, result: dict, external: bool, data, names, cfg, checkpoint: Path, figure):
    """``(Section, domain_shift's result)``; None for the training data or without the test split's results."""
    test_json, test_table = run.evaluation("test"), run.per_image("test")
    if not external:
        return Section(SHIFT_TITLE, text="This is the training data (not an external set): there is no domain "
                                         "shift to show."), None
    if not test_json.is_file():
        return Section(SHIFT_TITLE, text=(
            f"No test-split results of this run yet ({test_json} is missing), so the domain shift cannot be shown; "
            f"make them with `papermill notebooks/03_evaluate.ipynb reports/03_test.ipynb -p checkpoint {checkpoint}`, "
            "then run this evaluation again.")), None
    shift = domain_shift(result, json.loads(test_json.read_text()),
                         read_per_image(test_table) if test_table.is_file() else None, names,
                         n_resamples=cfg.n_bootstrap, seed=cfg.bootstrap_seed)
    fig = plots.plot_domain_shift(shift["table"], title=f"Domain shift · {data.name}", external_name=data.name)
    return Section(SHIFT_TITLE, {"": shift["table"]}, [figure(fig, "domain_shift")], " ".join(shift["notes"])), shift


FAMILIARITY_TITLE = "Familiarity: how far these images lie from the training data"


def _familiarity_section(ev: Evaluation, path: Path, title: str, figure) -> tuple[Section, dict | None]:
    """``(Section, its numbers for the metrics file)``: median feature distance and share of unfamiliar images,
    here and on the validation split (by design); None without a feature reference."""
    if ev.features is None:
        return Section(FAMILIARITY_TITLE, text=(
            f"The checkpoint holds no feature reference (it was calibrated before there was one, on fewer than 10 "
            f"validation images, or its classifier was not trained): fit one on the validation split with "
            f"`{COMMAND} {path}`.")), None
    ref, d = ev.features, ev.per_image["feature_distance"].astype(float)
    share, expected = float(ev.per_image["unfamiliar"].mean()), 1 - ref["quantile"]
    found = {"median_distance": float(d.median()), "unfamiliar": share,
             "reference": {k: ref[k] for k in ("threshold", "median", "quantile", "split", "n_images")}}
    table = pd.DataFrame.from_dict({
        f"validation split ({ref['n_images']} images)": {"median distance": ref["median"], "unfamiliar": expected},
        f"here ({len(d)} images)": {"median distance": found["median_distance"], "unfamiliar": share}},
        orient="index").rename_axis("images")
    text = (f"{share:.0%} of these images are unfamiliar (farther from the validation images' features than "
            f"{ref['quantile']:.0%} of those images themselves; images like the training data give {expected:.0%})"
            + (": the model has seen little like them, so its outputs deserve less trust here; the referral table "
               "refers them." if share > 2 * expected else ": they look like what the model was trained on."))
    fig = plots.plot_feature_distance(d, ref, title=f"Familiarity · {title}")
    return Section(FAMILIARITY_TITLE, {"": table}, [figure(fig, "familiarity")], text), found


def evaluate(cfg: EvaluateConfig, progress: bool = True) -> Evaluated:
    """THE evaluation of notebooks/03_evaluate: ``metrics/<tag>.json`` and ``<tag>_per_image.csv``,
    ``figures/<tag>_*.png`` and the report section; one `Section` per part for the notebook."""
    say = print if progress else (lambda *a: None)
    run, path = run_to_score(cfg.run, cfg.checkpoint and resolve(cfg.checkpoint), resolve(cfg.reports_dir) / "runs")
    device = resolve_device(cfg.device)
    model, ckpt = load_model(path, map_location=device)
    model.to(device)
    names, trained = ckpt.class_names, ckpt.params or {}
    tasks = trained_tasks(trained.get("seg_weight", 1.0), trained.get("cls_weight", 1.0))
    say(f"checkpoint {path}: epoch {ckpt.epoch + 1}, trained at {ckpt.image_size[0]}x{ckpt.image_size[1]} px on "
        f"{ckpt.data['data_dir']}; heads trained: {', '.join(tasks)}; results -> {run.root}")
    whole = cfg.split == "all"
    data = data_for_checkpoint(ckpt, cfg.data_dir, cfg.split_path, whole=whole, on_bad_data=cfg.on_bad_data,
                               label_map=cfg.label_map, label_column=cfg.label_column, id_column=cfg.id_column)
    external = whole and is_external(data.describe(), ckpt.data)
    tag = result_tag(cfg.split, data.data_dir, external)
    seen = seen_in_training(data.index["image_id"], ckpt.split_path) if whole else []
    not_held_out = (f"**{len(seen)} of these {len(data.index)} images carry the ids of images this model was trained "
                    f"or validated on** (e.g. {seen[0]}; `{ckpt.split_path}`): their scores are not held out, so "
                    "the numbers below flatter the model. Leave them out, or shift the run's own test split."
                    ) if seen else ""
    if seen:
        say(not_held_out.replace("**", ""))
    if cfg.recalibrate and "classification" in tasks:
        calibrate_checkpoint(path, None if whole else data, tta=cfg.tta, batch_size=cfg.batch_size, device=device,
                             amp=cfg.amp)
        ckpt = Checkpoint.load(path)
    calibration = StoredCalibration.from_checkpoint(ckpt, cfg.tta)
    say(calibration.describe())
    ev = score_split(model, data, cfg.split, device, names, batch_size=cfg.batch_size, amp=cfg.amp, progress=progress,
                     threshold=cfg.threshold, tta=cfg.tta, return_views=True,
                     normalization=ckpt.normalization, calibration=calibration if "classification" in tasks else None,
                     features=stored_feature_reference(ckpt))
    scored = ev.report["scored"]
    shown = [t for t in tasks if t in scored]  # trained, and the data allow it
    not_scored = [NOT_SCORED[t] for t in ("segmentation", "classification") if t not in scored]
    for line in not_scored:
        say(line)
    classified = "classification" in shown
    labelled = ev.subset(ev.has_label)
    trust = assess_trust(labelled, calibration, names, segmented="segmentation" in tasks) if classified else None
    per_image = ev.per_image
    if "classification" in tasks:  # every image gets its flags, with a diagnosis or not (as in 04)
        per_image = per_image.join(trust_columns(ev.probs, calibration, names, ev.view_probs, per_image.index))
    melanoma = melanoma_report(ev, calibration, names) if classified else None
    ci = bootstrap_ci(per_image, names, n_resamples=cfg.n_bootstrap, seed=cfg.bootstrap_seed, tasks=shown,
                      mel_threshold=calibration.mel_threshold)
    result = not_applicable({**ev.report, **{k: v for k, v in ci["estimate"].items() if k.startswith("mel_")},
                             "ci95": ci["ci95"], "melanoma_vs_rest": melanoma, "external": external,
                             "classes_present": ev.report.get("classes_present", []),
                             "bootstrap": {k: ci[k] for k in ("n_resamples", "level", "cluster", "n_lesions")}}, tasks)
    note = subset_note(result) if classified else None
    if note:
        say(note)

    title = f"external set · {data.name}" if external else f"{cfg.split} split · {data.name}"
    figure = lambda fig, name: plots.save_figure(fig, run.figures / f"{tag}_{name}.png")  # noqa: E731
    sections = {"headline": Section("Headline numbers with 95% intervals, beside chance and the majority class",
                                    {"": headline_table(result)},
                                    text=" ".join(x for x in (note, melanoma_sentence(melanoma)) if x))}
    sections["domain_shift"], shift = _domain_shift_section(run, result, external, data, names, cfg, path, figure)
    sections["familiarity"], familiarity = _familiarity_section(ev, path, title, figure)
    if classified:
        per_class = pd.DataFrame(result["per_class"]).T[list(PER_CLASS_KEYS)].astype({"support": int})
        sections["per_class"] = Section("Per class", {"": per_class}, [figure(
            plots.plot_per_class_metrics(result, title=f"Per-class performance · {title}"), "per_class")])
        sections["confusion"] = Section("Confusion matrix and ROC curves", figures=[
            figure(plots.plot_confusion_matrix(result, title=f"Confusion matrix · {title}"), "confusion_matrix"),
            figure(plots.plot_roc_curves(result["roc_curves"], title=f"ROC curves · {title}"), "roc_curves")])
    else:
        why = "No per-class numbers: " + ("this set has no diagnoses." if "classification" not in scored
                                          else "the classification head was not trained.")
        sections.update(per_class=Section("Per class", text=why), confusion=Section("Confusion matrix", text=why))
    subgroups = subgroup_tables(ev, data.index, names, shown, n_resamples=max(100, cfg.n_bootstrap // 2),
                                seed=cfg.bootstrap_seed)
    tables = {f"By {c}": _readable_intervals(t).set_index(c) for c, t in subgroups.items() if len(t)}
    sections["subgroups"] = Section("Subgroups", tables, text="" if tables else "No subgroup of the metadata (sex, "
                                    "age, body site) has enough lesions here.")
    rank_by = "dice" if "segmentation" in shown else "p_true" if classified else None
    sections["cases"] = Section("Best and worst cases", text="" if rank_by else "No trained head that this set scores.")
    if rank_by:
        fig = plots.plot_cases(**best_and_worst(data, ev, cfg.n_examples, by=rank_by),
                               title=f"Best and worst by {'Dice' if rank_by == 'dice' else 'P(true class)'} · {title}")
        sections["cases"].figures.append(figure(fig, "best_worst"))
    cam = None
    if trust is None:
        no_trust = ("This set has no diagnoses: nothing to calibrate, refer or explain." if "classification" not in
                    scored else "The classification head was not trained: there are no probabilities to calibrate.")
        sections.update({k: Section(t, text=no_trust) for k, t in TRUST_TITLES.items()})
    else:
        c, op = trust.calibration, trust.operating_point
        fig = plots.plot_reliability_diagram(c["reliability_before"], c["reliability_after"],
                                             title=f"Reliability · {title}",
                                             temperature=calibration.temperature if c["calibrated"] else None)
        sections["calibration"] = Section(TRUST_TITLES["calibration"], {"": calibration_table(c)},
                                          [figure(fig, "reliability")],
                                          calibration.describe() + " " + calibration_sentence(c))
        fig = plots.plot_risk_coverage(trust.referral["curves"], title=f"Risk–coverage · {title}")
        sections["referral"] = Section(TRUST_TITLES["referral"], {
            "": referral_table(trust), "AURC": pd.DataFrame(trust.referral["aurc"]).T.rename_axis("uncertainty")},
            [figure(fig, "risk_coverage")], referral_sentence(trust.referral))
        sections["operating_point"] = Section(TRUST_TITLES["operating_point"], {"": operating_point_table(op)}
                                              if op else {}, text=operating_sentence(op))
        # Grad-CAM, checked against the true masks; a set without masks against the predicted lesion, when
        # the mask head was trained (neither: no check)
        with_both = ev.subset(ev.has_label & ev.has_mask)
        predicted = ("pred_mask",) if "segmentation" in tasks else ()
        checked, against = ((with_both, ("true_mask", *predicted)) if len(with_both.per_image)
                            else (labelled, predicted))
        kw = {"normalization": ckpt.normalization}
        energy = None
        if against:
            cam = cam_check(model, data, checked, device, names, batch_size=cfg.batch_size, against=against,
                            max_images=cfg.cam_max_images, progress=progress, **kw)
            cols = cam_columns(cam)
            per_image = per_image.merge(cols, on="image_id", how="left")
            if "true_mask" in cam:
                energy = dict(zip(cols["image_id"], cols["cam_energy_true"]))
        picks = choose_cam_examples(labelled.per_image, cfg.n_examples)
        fig = plots.plot_cam_grid(**cam_examples(model, data, labelled, picks, device, energy=energy,
                                                 class_names=names, **kw), title=f"Grad-CAM · {title}")
        sections["grad_cam"] = Section(TRUST_TITLES["grad_cam"], figures=[figure(fig, "cam_examples")], text=(
            "Grad-CAM of the predicted class at encoder.layer4, element-wise (HiResCAM: each location's exact "
            "share of the class logit, with lesion pooling's weights), at the model's resolution "
            f"({ckpt.image_size[0]}x{ckpt.image_size[1]} px)."))
        if cam is None:
            sections["cam_check"] = Section(TRUST_TITLES["cam_check"], text="No image has both a diagnosis and a "
                                            "mask, and the mask head was not trained: the heat maps cannot be "
                                            "checked against the lesions.")
        else:
            outside = [r["index"] for r in cam[cam_reference(cam)]["mostly_outside"][:2 * cfg.n_examples]]
            text = cam_sentence(cam) + ("" if outside else " No heat map falls mostly outside the lesion.")
            sections["cam_check"] = Section(TRUST_TITLES["cam_check"], {"": cam_summary_table(cam)}, text=text)
            if outside:
                fig = plots.plot_cam_grid(**cam_examples(model, data, checked, outside, device, energy=energy,
                                                         class_names=names, **kw),
                                          title=f"Heat maps mostly outside the lesion · {title}")
                sections["cam_check"].figures.append(figure(fig, "cam_outside"))
    sections["conclusion"] = Section("Conclusion", text=conclusion(result, per_image, tasks, shift, data.synthetic))

    saved = {**{k: v for k, v in result.items() if k != "roc_curves"}, "checkpoint": str(path),
             "checkpoint_epoch": ckpt.epoch + 1, "seen_in_training": seen, "data": data.describe(),
             "params": cfg.to_dict(),
             "environment": report.environment_info(),
             "subgroups": {c: t.to_dict(orient="records") for c, t in subgroups.items()},
             "calibration_used": calibration.as_dict(), "trust": trust.report() if trust else None,
             "cam": cam_report(cam) if cam else None,
             "familiarity": familiarity,
             "domain_shift": None if shift is None else {
                 "test_results": str(run.evaluation("test")), "notes": shift["notes"],
                 "restricted_to": shift["restricted_to"],
                 "table": shift["table"].reset_index().to_dict(orient="records")}}
    report.write_json(run.metrics / f"{tag}.json", saved)
    per_image.to_csv(run.metrics / f"{tag}_per_image.csv", index=False)
    what = (f"the external set **{data.name}** (`{data.data_dir}`, all images)" if external
            else f"the **{cfg.split}** split of **{data.name}**")
    header = " ".join(x for x in [
        f"Checkpoint `{path.name}` of run `{run.name}` (epoch {ckpt.epoch + 1}, {ckpt.image_size[0]}x"
        f"{ckpt.image_size[1]} px; heads trained: {', '.join(tasks)}) on {what}: {result['n_images']} images of "
        f"{result['n_lesions']} lesions ({result['n_with_mask']} with a mask, {result['n_with_label']} with a diagnosis).",
        f"Masks scored at each image's original size{' (averaged over the TTA views)' if cfg.tta else ''}."
        if "segmentation" in shown else "", f"95% intervals from {cfg.n_bootstrap} bootstrap resamples of lesions.",
        STORED_ELSEWHERE.format(data=Path(str(ckpt.data.get("data_dir", "the training data"))).name)
        if external and classified else "",
        not_held_out, *not_scored, f"Class scores: {result['scores']}." if result.get("scores") else ""] if x)
    body = "\n\n".join([header, *(s.markdown() for k, s in sections.items() if k != "conclusion"),
                        f"**Conclusion.** {sections['conclusion'].text}"])
    report.write_section(run.root, f"03_{tag}", f"External evaluation: {data.name}" if external
                         else f"Evaluation ({cfg.split} split)", body, params=cfg.to_dict(), data=data.describe())
    say(f"results: {run.metrics / f'{tag}.json'}, {run.metrics / f'{tag}_per_image.csv'}, figures/{tag}_*.png")
    return Evaluated(run, tag, saved, per_image, sections)
