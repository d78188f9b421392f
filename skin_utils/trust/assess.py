"""Trust in each prediction, assessed on an evaluated split: calibration before and after the
stored temperature, risk-coverage and referral, the melanoma operating point, and Grad-CAM
checked against the lesion masks. `03_evaluate` calls these after
`skin_utils.evaluation.evaluate_original_size`; the numbers come from `skin_utils.trust.numbers`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from skin_utils.data import make_loader
from skin_utils.layout import read_mask
from skin_utils.evaluation import Evaluation, calibrated_and_raw, normalizer, upsample_mask
from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import sens_spec_at
from skin_utils.trust.numbers import (DEFAULT_N_BINS, DEFAULT_REFERRAL_FRACTIONS, calibration_report, cam_localization,
                                      cam_localization_report, classwise_ece, grad_cam, mutual_information,
                                      reliability_diagram, risk_coverage_curve, selective_metrics, selective_report,
                                      vote_disagreement)


@dataclass
class Trust:
    """What `assess_trust` returns for one evaluated split (classification head trained).

    ``calibration``: ``temperature``, ``calibrated`` (False: the checkpoint has none and T = 1),
    ``before`` / ``after`` (`skin_utils.trust.numbers.calibration_report`, ``after`` None without
    a temperature; ``per_class_ece`` added), ``reliability_before`` / ``reliability_after``
    (`skin_utils.trust.numbers.reliability_diagram`). ``referral``: ``curves`` (measure name ->
    `skin_utils.trust.numbers.risk_coverage_curve`), ``aurc`` (measure -> AURC, oracle, random),
    ``table`` (`skin_utils.trust.numbers.selective_report` over the referral fractions, by the
    stored referral measure), ``at_threshold`` (the stored referral threshold applied here, or
    None), ``mask`` (AURC of the mask uncertainty against the per-image loss 1 - Dice: does it
    find the bad masks?). ``operating_point``: sensitivity and specificity of the stored melanoma threshold here
    and of the argmax, or None. ``per_image``: the columns to add to the per-image table.
    ``stored``: `skin_utils.trust.calibrate.StoredCalibration.as_dict` of what was used."""

    calibration: dict
    referral: dict
    operating_point: dict | None
    per_image: pd.DataFrame
    stored: dict

    def report(self) -> dict:
        """Everything for the metrics file (the curves' arrays left out: they are one point per image)."""
        referral = {k: v for k, v in self.referral.items() if k != "curves"}
        return {"calibration": self.calibration, "referral": referral, "operating_point": self.operating_point,
                "stored_calibration": self.stored}


def _melanoma(class_names) -> int | None:
    names = list(class_names)
    return names.index("MEL") if "MEL" in names else None


def trust_columns(evaluation: Evaluation, calibration, class_names) -> pd.DataFrame:
    """Per-image trust columns, in the order of ``evaluation.per_image``: ``entropy`` (the
    referral uncertainty: normalised predictive entropy of the calibrated probabilities), with
    TTA views ``tta_disagreement`` (share of views whose class differs from the consensus) and
    ``tta_mutual_info`` (normalised), with MC dropout ``mc_mutual_info``, then ``refer`` and
    ``mel_flag`` (empty, i.e. NA, where the checkpoint lacks the threshold). The calibrated
    probabilities themselves are the table's ``p_<class>`` columns (`evaluate_original_size` with
    the calibration). ``calibration``: a `skin_utils.trust.calibrate.StoredCalibration`."""
    if evaluation.probs is None:
        raise ValueError("This Evaluation has no probabilities (made by an older evaluate_original_size?).")
    cal, _ = calibrated_and_raw(evaluation, calibration)
    cols = {"entropy": calibration.uncertainty_of(cal)}
    if evaluation.view_probs is not None and len(evaluation.view_probs) > 1:
        cols["tta_disagreement"] = vote_disagreement(evaluation.view_probs)
        cols["tta_mutual_info"] = mutual_information(evaluation.view_probs, normalize=True)
    if evaluation.mc_probs is not None:
        cols["mc_mutual_info"] = mutual_information(evaluation.mc_probs, normalize=True)
    refer, flag = calibration.refer(cal), calibration.mel_flag(cal, class_names)
    cols["refer"] = pd.array(refer if refer is not None else [pd.NA] * len(cal), dtype="boolean")
    cols["mel_flag"] = pd.array(flag if flag is not None else [pd.NA] * len(cal), dtype="boolean")
    return pd.DataFrame(cols, index=evaluation.per_image.index)


def assess_trust(evaluation: Evaluation, calibration, class_names, *,
                 referral_fractions=None, n_bins: int | None = None) -> Trust:
    """Calibration before and after temperature scaling, selective prediction (risk-coverage
    curves, AURC, metrics when the most uncertain 10/20/30% are referred) and the melanoma
    operating point, on the evaluated split, with the checkpoint's stored ``calibration`` (a
    `skin_utils.trust.calibrate.StoredCalibration`: its temperature, thresholds and uncertainty)."""
    n_bins = DEFAULT_N_BINS if n_bins is None else n_bins
    fractions = DEFAULT_REFERRAL_FRACTIONS if referral_fractions is None else tuple(referral_fractions)
    labels = evaluation.labels
    cal, probs = calibrated_and_raw(evaluation, calibration)
    columns = trust_columns(evaluation, calibration, class_names)

    def report_of(p):
        return {**calibration_report(p, labels, n_bins),
                "per_class_ece": dict(zip(class_names, classwise_ece(p, labels, n_bins, reduction="none").tolist()))}

    calib = {"temperature": calibration.temperature, "calibrated": calibration.calibrated, "kind": calibration.kind,
             "before": report_of(probs), "after": report_of(cal) if calibration.calibrated else None,
             "reliability_before": reliability_diagram(probs, labels, n_bins),
             "reliability_after": reliability_diagram(cal, labels, n_bins) if calibration.calibrated else None}

    errors = cal.argmax(1) != labels
    measures = {"entropy": columns["entropy"].to_numpy()}
    for name in ("tta_disagreement", "tta_mutual_info", "mc_mutual_info"):
        if name in columns:
            measures[name] = columns[name].to_numpy()
    curves = {name: risk_coverage_curve(u, errors) for name, u in measures.items()}
    stats = ("aurc", "optimal_aurc", "excess_aurc", "error_rate")
    mask_u = evaluation.per_image["mask_uncertainty"].to_numpy()
    seg_loss = 1.0 - evaluation.per_image["dice"].to_numpy(dtype=float)
    ok = np.isfinite(mask_u) & np.isfinite(seg_loss)
    mask = None
    if ok.any():
        c = risk_coverage_curve(mask_u[ok], np.clip(seg_loss[ok], 0.0, 1.0))
        mask = {"measure": "mask_uncertainty", "loss": "1 - Dice", **{k: c[k] for k in stats}}
    mel = _melanoma(class_names)
    kw = {"melanoma_index": mel} if mel is not None else {}
    table = selective_report(cal, labels, measures["entropy"], fractions, **kw)
    if calibration.mel_threshold is not None and mel is not None:
        at_op = selective_report(cal, labels, measures["entropy"], fractions, melanoma_index=mel,
                                 mel_threshold=calibration.mel_threshold)
        for row, other in zip(table, at_op):
            row["mel_sensitivity_with_referral_at_operating_point"] = other["mel_sensitivity_with_referral"]
    at_threshold = None
    if calibration.referral_threshold is not None:
        keep = ~columns["refer"].to_numpy(dtype=bool)
        at_threshold = {"threshold": calibration.referral_threshold,
                        "target_coverage": calibration.record.get("target_coverage"),
                        **selective_metrics(cal, labels, keep, **kw)}
    referral = {"measure": calibration.uncertainty, "curves": curves,
                "aurc": {name: {k: c[k] for k in stats} for name, c in curves.items()}, "mask": mask,
                "table": table, "at_threshold": at_threshold,
                "baseline": selective_metrics(cal, labels, np.ones(len(labels), bool), **kw)}

    operating_point = None
    if mel is not None and (labels == mel).any():
        is_mel = labels == mel
        argmax = sens_spec_at((cal.argmax(1) == mel).astype(float), is_mel, 0.5)
        operating_point = {"argmax": {k: argmax[k] for k in ("sensitivity", "specificity", "ppv", "tp", "fn", "tn", "fp")},
                           "n_mel": int(is_mel.sum()), "n_images": int(len(labels))}
        if calibration.mel_threshold is not None:
            operating_point["at_threshold"] = sens_spec_at(cal[:, mel], is_mel, calibration.mel_threshold)
            operating_point["target_sensitivity"] = calibration.record.get("target_sensitivity")
            operating_point["validation"] = calibration.record.get("mel_at_threshold")
    return Trust(calibration=calib, referral=referral, operating_point=operating_point, per_image=columns,
                 stored=calibration.as_dict())


def cam_check(model, data, split: str, evaluation: Evaluation, device, class_names, *, batch_size: int = 32,
              method: str = "gradcam", max_images: int | None = None, normalization: dict | None = None,
              progress: bool = True) -> dict:
    """Grad-CAM of the evaluation's predicted class for each image of ``split`` (the first ``max_images``;
    None: all), at the model's resolution, checked against the true lesion mask and the
    predicted one (``evaluation.mask_probs >= evaluation.threshold``):
    `skin_utils.trust.numbers.cam_localization_report` for each (``true_mask``, ``pred_mask``: overall,
    per true class, per image, the maps mostly outside), with ``method``, ``layer``, ``target``,
    ``resolution`` and ``n_images``. The maps themselves are not kept (see `cam_examples`)."""
    from skin_utils.data import CachedLesionDataset

    device = torch.device(device)
    rows = evaluation.per_image["row"].to_numpy()
    n = len(rows) if max_images is None else min(int(max_images), len(rows))
    if n == 0:
        raise ValueError(f"cam_check: no images to explain in split {split!r}.")
    normalize = normalizer(normalization).to(device)
    loader = make_loader(CachedLesionDataset(data.cache, data.labels, rows[:n]), batch_size, device)
    true_rows, pred_rows = [], []
    ids = evaluation.per_image["image_id"].to_numpy()
    predicted = evaluation.per_image["pred"].map(list(class_names).index).to_numpy()
    start = 0
    for images, masks, labels, _ in tqdm(loader, desc=f"Grad-CAM {split}", disable=not progress, leave=False,
                                          mininterval=1.0):
        x = normalize(images.to(device))
        k = len(images)
        cams, _ = grad_cam(model, x, target=predicted[start:start + k].tolist(), method=method)
        pred = (evaluation.mask_probs[start:start + k].float() >= evaluation.threshold).numpy()
        true_m = (masks[:, 0] != 0).numpy()
        true_rows += cam_localization(cams, true_m, labels.numpy(), ids[start:start + k], class_names)
        pred_rows += cam_localization(cams, pred, labels.numpy(), ids[start:start + k], class_names)
        start += k
    return {"true_mask": cam_localization_report(true_rows, class_names),
            "pred_mask": cam_localization_report(pred_rows, class_names), "method": method,
            "layer": "encoder.layer4", "target": "the evaluation's predicted class (TTA-averaged when it was)",
            "resolution": list(data.image_size), "n_images": n, "n_split": int(len(rows))}


def cam_columns(cam: dict) -> pd.DataFrame:
    """Per-image columns of `cam_check` (``image_id``, ``cam_energy_true``, ``cam_energy_pred``,
    ``cam_area_true``, ``cam_area_pred``, ``cam_peak_inside_true``), for joining on image_id."""
    t, p = cam["true_mask"]["per_image"], cam["pred_mask"]["per_image"]
    return pd.DataFrame({"image_id": [r["image_id"] for r in t],
                         "cam_energy_true": [r["energy_inside"] for r in t],
                         "cam_energy_pred": [r["energy_inside"] for r in p],
                         "cam_area_true": [r["area_share"] for r in t],
                         "cam_area_pred": [r["area_share"] for r in p],
                         "cam_peak_inside_true": [r["peak_inside"] for r in t]})


def cam_summary_table(cam: dict) -> pd.DataFrame:
    """One row per true class and one "all": images, mean share of CAM energy inside the true
    lesion and the predicted one, the mean area share of the true lesion (what a uniform map
    scores), lift, share above that baseline, share of maps mostly outside the lesion."""
    rows = []
    for name, t in [("all", cam["true_mask"]["overall"]), *cam["true_mask"]["per_class"].items()]:
        p = cam["pred_mask"]["overall"] if name == "all" else cam["pred_mask"]["per_class"].get(name, {})
        rows.append({"class": name, "images": t["n_images"], "energy in true lesion": t["energy_inside"],
                     "lesion area share": t["area_share"], "lift": t["lift"], "above uniform": t["above_baseline"],
                     "mostly outside": t["mostly_outside"], "energy in predicted lesion": p.get("energy_inside"),
                     "predicted area share": p.get("area_share")})
    table = pd.DataFrame(rows).set_index("class")
    table["images"] = table["images"].astype("Int64")
    return table


def choose_cam_examples(per_image: pd.DataFrame, class_names, n: int = 4) -> list[int]:
    """Positions in ``per_image`` of up to ``n`` examples to explain: for as many classes as
    possible (most frequent first), the image of that true class predicted with the highest
    probability, correct ones first."""
    table = per_image.reset_index(drop=True)
    order = table["true"].value_counts().index.tolist()
    picks = []
    for name in order:
        rows = table[table["true"] == name]
        rows = rows.assign(correct=rows["true"] == rows["pred"]).sort_values(["correct", "prob_pred"],
                                                                             ascending=False, kind="stable")
        picks.append(int(rows.index[0]))
        if len(picks) == n:
            break
    return picks


def cam_examples(model, data, evaluation: Evaluation, positions, device, *, method: str = "gradcam",
                 normalization: dict | None = None, energy: dict | None = None, class_names=CLASS_NAMES) -> dict:
    """Keyword arguments for `skin_utils.plots.plot_cam_grid`: the images at ``positions`` of
    ``evaluation.per_image`` at their original size, their Grad-CAM (of the class the evaluation
    predicted, TTA-averaged when it was, which the caption names; model resolution, the plot
    resizes it), the true and predicted masks at the original size, and a
    caption (id, true and predicted class, and with ``energy`` (image_id -> share of the map
    inside the true lesion, from `cam_columns`) that share)."""
    from skin_utils.layout import read_image

    device = torch.device(device)
    positions = [int(i) for i in positions]
    if not positions:
        raise ValueError("cam_examples: no positions given.")
    per_image = evaluation.per_image.reset_index(drop=True)
    normalize = normalizer(normalization).to(device)
    rows = per_image.loc[positions, "row"].to_numpy()
    batch = torch.from_numpy(np.stack([np.asarray(data.cache.images[int(r)]) for r in rows])).permute(0, 3, 1, 2)
    shown = [list(class_names).index(c) for c in per_image.loc[positions, "pred"]]
    cams, _ = grad_cam(model, normalize(batch.to(device)), target=shown, method=method)  # the class the caption names
    out = {"images": [], "cams": list(cams), "masks": [], "pred_masks": [], "captions": []}
    for i, pos in enumerate(positions):
        row = per_image.loc[pos]
        item = data.index.iloc[int(row["row"])]
        image = read_image(item["image_path"])
        hw = image.shape[:2]
        out["images"].append(image)
        out["masks"].append(read_mask(item["mask_path"], hw=hw) if isinstance(item["mask_path"], str) else None)
        out["pred_masks"].append(upsample_mask(evaluation.mask_probs[pos], hw, evaluation.threshold))
        inside = (energy or {}).get(row["image_id"])
        out["captions"].append(f"{row['image_id']}\ntrue {row['true']} · pred {row['pred']} ({row['prob_pred']:.2f})"
                               + (f"\n{inside:.0%} of the map in the lesion" if inside is not None and inside == inside else ""))
    if any(m is None for m in out["masks"]):
        out["masks"] = None
    return out


def calibration_table(calibration: dict) -> pd.DataFrame:
    """ECE, class-wise ECE, NLL and Brier before and after temperature scaling (``Trust.calibration``),
    one row each; the "after" column only when the checkpoint has a temperature."""
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
    """One row per share of most uncertain images referred (``Trust.referral["table"]``), and one
    for the referral threshold chosen on validation when the checkpoint has it: share kept,
    accuracy and balanced accuracy of the kept images, melanomas referred, melanoma sensitivity."""
    rows = {f"refer {r['referral_fraction']:.0%}": r for r in trust.referral["table"]}
    at = trust.referral.get("at_threshold")
    if at is not None:
        rows[f"refer entropy > {at['threshold']:.3f} (validation)"] = at
    table = pd.DataFrame.from_dict(rows, orient="index")
    table = table[[c for c in REFERRAL_COLUMNS if c in table]]
    table["mel_referred"] = table["mel_referred"].astype("Int64")
    return table.rename(columns=REFERRAL_COLUMNS).rename_axis("referral")


def operating_point_table(op: dict) -> pd.DataFrame:
    """Sensitivity, specificity, PPV and counts of the melanoma flag on the validation split and
    on this split at the stored threshold, and of the argmax on this split (``Trust.operating_point``)."""
    keys = ("sensitivity", "specificity", "ppv", "tp", "fn", "tn", "fp")
    rows = {}
    if op.get("validation"):
        rows["flag at threshold, validation split"] = op["validation"]
    if op.get("at_threshold"):
        rows["flag at threshold, this split"] = op["at_threshold"]
    rows["most probable class, this split"] = op["argmax"]
    table = pd.DataFrame.from_dict({k: {c: v.get(c) for c in keys} for k, v in rows.items()}, orient="index")
    for c in ("tp", "fn", "tn", "fp"):
        table[c] = table[c].astype("Int64")
    if op.get("at_threshold"):
        table.insert(0, "threshold", [op["at_threshold"]["threshold"] if "threshold" in k else np.nan for k in rows])
    return table.rename_axis("melanoma call")


def cam_report(cam: dict) -> dict:
    """`cam_check`'s result for a metrics file: per-image lists left out (they go to the per-image CSV)."""
    strip = lambda part: {k: v for k, v in part.items() if k != "per_image"}  # noqa: E731
    return {**cam, "true_mask": strip(cam["true_mask"]), "pred_mask": strip(cam["pred_mask"])}


def trust_section(trust: Trust | None, cam: dict | None, calibration, tag: str, *texts: str) -> str:
    """The report's Markdown for the trust sections of notebooks/03_evaluate: what calibration the
    checkpoint holds (``calibration``: a `skin_utils.trust.calibrate.StoredCalibration`), the tables,
    links to the figures ``figures/<tag>_*.png`` and the sections' conclusions (``texts``)."""
    from skin_utils.nb.report import markdown_table

    if trust is None:
        return "### Trust in each prediction\n\nThe classification head was not trained: no calibration, referral or Grad-CAM."
    parts = ["### Trust in each prediction", calibration.describe(),
             "Calibration:", markdown_table(calibration_table(trust.calibration)),
             f"![reliability](figures/{tag}_reliability.png)", "Referral:", markdown_table(referral_table(trust)),
             markdown_table(pd.DataFrame(trust.referral["aurc"]).T.rename_axis("uncertainty")),
             f"![risk-coverage](figures/{tag}_risk_coverage.png)"]
    if trust.operating_point is not None:
        parts += ["Melanoma operating point:", markdown_table(operating_point_table(trust.operating_point))]
    if cam is not None:
        parts += [f"Grad-CAM ({cam['method']}, {cam['layer']}, {cam['target']}) against the lesion masks, "
                  f"{cam['n_images']} images at {cam['resolution'][0]}x{cam['resolution'][1]} px:",
                  markdown_table(cam_summary_table(cam)), f"![Grad-CAM examples](figures/{tag}_cam_examples.png)"]
        if cam["true_mask"]["mostly_outside"]:
            parts.append(f"![heat maps mostly outside the lesion](figures/{tag}_cam_outside.png)")
    parts += [t for t in texts if t]
    return "\n\n".join(parts)
