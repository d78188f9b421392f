"""How far to trust each prediction: calibration (temperature scaling), uncertainty, referral, the melanoma
operating point, heat maps on the lesion, familiarity; and `calibrate_checkpoint`, THE post-training step that
fits these on the validation split into the checkpoint (an older model: ``python -m skin_utils.trust <run>``).

Passes over the same images (TTA views) are stacked first, (S, N, K); entropies in nats. ECE (Guo et al. 2017):
equal-width bins ``(b / n, (b + 1) / n]``; the class-wise one (Kull et al. 2019) sees rare classes a top-label hides.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import minimize_scalar
from scipy.special import entr, log_softmax, softmax
from sklearn.covariance import LedoitWolf

from skin_utils.checkpoint import FEATURE_ARRAYS, load_model
from skin_utils.config import resolve, trained_tasks
from skin_utils.data import load_data, make_loader
from skin_utils.transforms import Normalize
from skin_utils.engine import amp_dtype_for, predict, resolve_device
from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import (MELANOMA, as_binary, as_labels, as_maps, as_numpy, as_probabilities, balanced_accuracy,
                                map_pairs, nanmean, probs_and_labels, sens_spec, sens_spec_at, to_jsonable)
from skin_utils.report import write_json
from skin_utils.runs import find_run, run_of_checkpoint

DEFAULT_N_BINS = 15  # equal-width confidence bins
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the search interval of `fit_temperature` (an optimum on its edge is warned about)
NLL_EPS = 1e-15  # a confident mistake costs log(1e15) ~ 34.5, not infinity
MELANOMA_INDEX = CLASS_NAMES.index(MELANOMA)
DEFAULT_REFERRAL_FRACTIONS = (0.0, 0.1, 0.2, 0.3)  # shares of the most uncertain images referred
BORDER_WIDTH_FRACTION = 0.03  # default half-width of the border band, a share of the shorter side
MOSTLY_OUTSIDE_BELOW = 0.5  # a heat map with less of its energy inside the lesion falls "mostly outside"
_COUNT_EPS = 1e-9  # a share times a count: 0.9 * 10 is 9.000000000000002


# --- calibration and temperature scaling ----------------------------------------------------------

def probs_to_logits(probs: Any) -> np.ndarray:
    """``log p`` (clipped at 1e-15), float64 (N, K): logits whose softmax is ``probs``."""
    return np.log(np.clip(as_probabilities(probs), NLL_EPS, None))


def _ece(values: np.ndarray, hits: np.ndarray, n_bins: int):
    """The ECE of ``values`` against 0/1 ``hits``, and per bin: count, mean value, mean hit rate (NaN when empty)."""
    b = np.clip(np.ceil(values * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore"):  # an empty bin: 0 / 0
        mean_v, mean_h = [np.bincount(b, weights=w, minlength=n_bins) / count for w in (values, hits.astype(float))]
    return float(np.nansum(count / len(values) * np.abs(mean_h - mean_v))), count, mean_v, mean_h


def classwise_ece(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS, reduction: str = "mean"):
    """Class-wise ECE: the mean over all classes (``"mean"``), or float64 (K,) (``"none"``)."""
    p, y = probs_and_labels(probs, labels)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r}: choose 'mean' or 'none'.")
    per_class = np.array([_ece(p[:, k], y == k, n_bins)[0] for k in range(p.shape[1])])
    return float(per_class.mean()) if reduction == "mean" else per_class


def reliability_diagram(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> dict[str, Any]:
    """What a (top-label) reliability diagram draws, as plain lists and floats; empty bins are NaN."""
    p, y = probs_and_labels(probs, labels)
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y
    ece, count, mean_conf, acc = _ece(conf, correct, n_bins)
    return {"bin_edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(), "confidence": mean_conf.tolist(),
            "accuracy": acc.tolist(), "count": count.tolist(), "ece": ece,
            "accuracy_overall": float(correct.mean()), "confidence_overall": float(conf.mean()),
            "n_images": int(len(y))}


def calibration_report(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> dict[str, Any]:
    """``ece`` (top-label, in [0, 1]), ``classwise_ece``, ``nll`` (the mean negative log-likelihood of the true
    class, natural log), ``brier`` (multiclass, in [0, 2]), ``n_bins``, ``n_images``."""
    p, y = probs_and_labels(probs, labels)
    return {"ece": _ece(p.max(axis=1), p.argmax(axis=1) == y, n_bins)[0], "classwise_ece": classwise_ece(p, y, n_bins),
            "nll": float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], NLL_EPS, None)))),
            "brier": float(np.mean(np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1))), "n_bins": int(n_bins),
            "n_images": int(len(y))}


def fit_temperature(logits: Any, labels: Any, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """The T minimising the NLL of ``softmax(logits / T)`` (N, K): a bounded, deterministic search on log T
    (the NLL is convex in 1/T). An optimum on a bound is warned about: labels not matching the logits?"""
    z = as_numpy(logits)
    if z.ndim != 2 or z.shape[1] < 2 or not len(z) or not np.all(np.isfinite(z)):
        raise ValueError(f"logits must be finite values of shape (N >= 1, K >= 2); got shape {z.shape}.")
    y = as_labels(labels, z.shape[1])
    if len(y) != len(z):
        raise ValueError(f"logits has {len(z)} rows but labels has {len(y)} entries (need one per row).")

    def nll(log_t):
        return float(-np.mean(log_softmax(z / math.exp(log_t), axis=1)[np.arange(len(y)), y]))

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    temperature = math.exp(float(res.x))
    if min(abs(res.x - lo), abs(res.x - hi)) < 1e-3:
        warnings.warn(f"fit_temperature: the optimum T={temperature:.4g} is at the edge of the search interval "
                      f"{bounds}; check that labels match logits.", stacklevel=2)
    return temperature


def apply_temperature(logits: Any, temperature: float) -> np.ndarray:
    """``softmax(logits / T)`` over the last axis, float64 (the argmax never changes)."""
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}.")
    return softmax(as_numpy(logits) / t, axis=-1)


# --- uncertainty of the diagnosis -----------------------------------------------------------------

def _samples(sample_probs: Any) -> np.ndarray:
    p = as_numpy(sample_probs)
    if p.ndim != 3 or p.shape[0] == 0:
        raise ValueError(f"sample_probs must have shape (S, N, K), S >= 1 passes (TTA views) stacked "
                         f"first; got {p.shape}.")
    as_probabilities(p.reshape(-1, p.shape[-1]), name="sample_probs")
    return p


def predictive_entropy(probs: Any, normalize: bool = False) -> np.ndarray:
    """Entropy of each row of ``probs`` (N, K), or of the mean of passes (S, N, K): total uncertainty."""
    p = as_numpy(probs)
    p = _samples(p).mean(axis=0) if p.ndim == 3 else as_probabilities(p)
    return entr(p).sum(axis=-1) / (math.log(p.shape[1]) if normalize else 1.0)


def mutual_information(sample_probs: Any, normalize: bool = False) -> np.ndarray:
    """``H(mean_s p_s) - mean_s H(p_s)`` (BALD, Houlsby et al. 2011), (N,) >= 0: how much the passes
    disagree, beyond what each is unsure about by itself."""
    p = _samples(sample_probs)
    mi = np.clip(entr(p.mean(axis=0)).sum(axis=-1) - entr(p).sum(axis=-1).mean(axis=0), 0.0, None)
    return mi / (math.log(p.shape[2]) if normalize else 1.0)


def vote_disagreement(sample_probs: Any) -> np.ndarray:
    """Share of passes whose argmax differs from the argmax of the mean, (N,) in [0, 1 - 1/S]."""
    p = _samples(sample_probs)
    return np.mean(p.argmax(axis=2) != p.mean(axis=0).argmax(axis=1)[None], axis=0)


# --- uncertainty of the mask ----------------------------------------------------------------------

def binary_entropy(mask_probs: Any) -> np.ndarray:
    """Per-pixel entropy in bits of a lesion probability: 0 at 0 and 1, 1 at 0.5; same shape, float64."""
    p = as_numpy(mask_probs)
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError("mask_probs must be probabilities in [0, 1] (apply sigmoid to logits).")
    return (entr(p) + entr(1.0 - p)) / math.log(2)


def border_band(mask: Any, width: int) -> np.ndarray:
    """Bool (H, W): pixels within ``width`` (chessboard distance) of the boundary of ``mask``, on both
    sides. The image frame is no boundary; an empty or full mask has no band."""
    m = as_numpy(mask, dtype=None) != 0
    square = np.ones((2 * width + 1, 2 * width + 1), dtype=bool)
    return ndimage.binary_dilation(m, structure=square) & ~ndimage.binary_erosion(m, structure=square, border_value=1)


def mask_uncertainty_score(mask_probs: Any, *, threshold: float = 0.5, width: int | None = None) -> np.ndarray:
    """(N,): the mean `binary_entropy` over the `border_band` (default 3% of the shorter side) of each predicted
    lesion. An empty mask scores 1.0, the maximum: every image shows a lesion, so it is to be referred; a lesion
    filling the frame has no border, and scores the mean entropy over the whole map."""
    scores = []
    for p in as_maps(mask_probs, "mask_probs"):
        lesion = p >= threshold
        band = border_band(lesion, width or max(1, round(BORDER_WIDTH_FRACTION * min(p.shape))))
        scores.append(float(binary_entropy(p)[band if band.any() else lesion].mean()) if lesion.any() else 1.0)
    return np.asarray(scores, dtype=np.float64)


# --- referral and the melanoma operating point ----------------------------------------------------

def _uncertainty(u: Any, name: str = "uncertainty") -> np.ndarray:
    a = as_numpy(u)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a non-empty 1-D (N,) array of finite values; got shape {a.shape}.")
    return a


def _expected_risks(u: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Risk of the k least uncertain images, k = 1..N, averaged over the orders of tied uncertainties: the
    errors summed up to the end of each group of ties, interpolated within the group."""
    order = np.argsort(u, kind="stable")
    ends = np.r_[np.flatnonzero(np.diff(u[order])), len(u) - 1] + 1  # images kept up to each group's end
    k = np.arange(1, len(u) + 1)
    return np.interp(k, np.r_[0, ends], np.r_[0.0, np.cumsum(err[order])[ends - 1]]) / k


def risk_coverage_curve(uncertainty: Any, errors: Any) -> dict[str, Any]:
    """Keep the k least uncertain images, k = 1..N: ``coverage`` k/N, ``risk`` of the kept (ties averaged), the
    oracle's, ``aurc`` (Geifman et al. 2018), ``error_rate``. ``errors``: 1/True = wrong, or a loss in [0, 1]."""
    u, e = _uncertainty(uncertainty), as_numpy(errors)
    if e.shape != u.shape or not np.all((e >= 0) & (e <= 1)):
        raise ValueError(f"errors must be one value in [0, 1] per image (1 or True = wrong); got shape {e.shape} "
                         f"for uncertainty of shape {u.shape}.")
    risk, optimal = _expected_risks(u, e), _expected_risks(e, e)
    return {"coverage": np.arange(1, len(u) + 1) / len(u), "risk": risk, "optimal_risk": optimal,
            "aurc": float(risk.mean()), "optimal_aurc": float(optimal.mean()),
            "excess_aurc": float(risk.mean() - optimal.mean()), "error_rate": float(e.mean()), "n_images": len(u)}


def referral_threshold(uncertainty_val: Any, target_coverage: float) -> float:
    """The smallest t with ``mean(uncertainty_val <= t) >= target_coverage``: keep uncertainty <= t, refer the rest."""
    u = np.sort(_uncertainty(uncertainty_val, "uncertainty_val"))
    if not 0.0 < float(target_coverage) <= 1.0:
        raise ValueError(f"target_coverage must be in (0, 1]; got {target_coverage!r}.")
    return float(u[max(1, math.ceil(float(target_coverage) * len(u) - _COUNT_EPS)) - 1])


def selective_metrics(probs: Any, labels: Any, keep: Any, *, melanoma_index: int | None = MELANOMA_INDEX,
                      mel_threshold: float | None = None) -> dict[str, Any]:
    """Scores when the images with ``keep`` False are referred: a melanoma called (argmax, or ``P(MEL) >=
    mel_threshold``) or referred counts as found in ``mel_sensitivity_with_referral``; NaN: none kept.
    ``melanoma_index`` None (no melanoma class): no melanoma keys."""
    p, y = probs_and_labels(probs, labels)
    k = as_numpy(keep, dtype=None).astype(bool)
    pred, n_kept = p.argmax(axis=1), int(k.sum())
    out = {"n_kept": n_kept, "n_referred": int(len(k) - n_kept), "coverage": n_kept / len(k),
           "accuracy": float(np.mean(pred[k] == y[k])) if n_kept else math.nan,
           "balanced_accuracy": balanced_accuracy(y[k], pred[k], p.shape[1]) if n_kept else math.nan}
    if melanoma_index is None:
        return out
    is_mel = y == melanoma_index
    called = pred == melanoma_index if mel_threshold is None else p[:, melanoma_index] >= mel_threshold
    return {**out, "n_mel": int(is_mel.sum()), "mel_referred": int((is_mel & ~k).sum()),
            "mel_sensitivity_kept": sens_spec(is_mel[k], called[k])["sensitivity"],
            "mel_sensitivity_with_referral": sens_spec(is_mel, called | ~k)["sensitivity"]}


def selective_report(probs: Any, labels: Any, uncertainty: Any,
                     referral_fractions: Sequence[float] = DEFAULT_REFERRAL_FRACTIONS, *,
                     melanoma_index: int | None = MELANOMA_INDEX, mel_threshold: float | None = None) -> list[dict]:
    """`selective_metrics` when the most uncertain ``round(f * N)`` images are referred, for each f in [0, 1)
    (ties: the earlier image first)."""
    u = _uncertainty(uncertainty)
    rank = np.argsort(np.argsort(-u, kind="stable"))  # 0 = the most uncertain
    return [{"referral_fraction": float(f), **selective_metrics(
        probs, labels, rank >= round(float(f) * len(u)), melanoma_index=melanoma_index, mel_threshold=mel_threshold)}
            for f in referral_fractions]


def operating_threshold(p_mel_val: Any, is_mel_val: Any, target_sensitivity: float) -> float:
    """The highest t at which ``P(MEL) >= t`` reaches ``target_sensitivity`` on the validation melanomas
    (their ``ceil(target * n_mel)``-th largest P(MEL)); the test sensitivity will differ: report it."""
    s, t = as_binary(p_mel_val, is_mel_val)
    if not 0.0 < float(target_sensitivity) <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1]; got {target_sensitivity!r}.")
    positives = np.sort(s[t])[::-1]
    if positives.size == 0:
        raise ValueError("operating_threshold: no melanoma in the validation labels.")
    return float(positives[max(1, math.ceil(float(target_sensitivity) * positives.size - _COUNT_EPS)) - 1])


# --- where the classifier looks: the heat map (`skin_utils.engine.grad_cam`) against the lesion mask

def cam_localization(cams: Any, masks: Any, labels: Any = None, image_ids: Sequence | None = None,
                     class_names: Sequence[str] = CLASS_NAMES) -> list[dict[str, Any]]:
    """Per image, is the heat map on the lesion (energy pointing game, Wang et al. 2020)? ``energy_inside``
    ``sum(cam * mask) / sum(cam)`` (NaN: all-zero map), ``area_share`` (a uniform map's), ``lift``, ``peak_inside``."""
    pairs = map_pairs(cams, masks, ("cam", "mask"), ("maps", "masks"),
                      "resize the mask to the map (nearest neighbour) or the map to the mask (bilinear)")
    y = None if labels is None else as_labels(as_numpy(labels, dtype=None).reshape(-1), len(class_names))
    for what, given in (("labels", y), ("image_ids", image_ids)):
        if given is not None and len(given) != len(pairs):
            raise ValueError(f"{len(pairs)} maps but {len(given)} {what}.")
    rows = []
    for i, (c, m) in enumerate(pairs):
        c, m = np.asarray(c, dtype=np.float64), m != 0
        if not np.all(np.isfinite(c)) or (c.size and c.min() < 0):
            raise ValueError(f"image {i}: cam must be finite and non-negative.")
        label = None if y is None else int(y[i])
        total, area = c.sum(), float(m.mean()) if m.size else math.nan
        energy = float(c[m].sum() / total) if total > 0 else math.nan
        rows.append({"image_id": None if image_ids is None else str(image_ids[i]), "label": label,
                     "class_name": None if label is None else str(class_names[label]), "energy_inside": energy,
                     "area_share": area, "lift": energy / area if area > 0 else math.nan,
                     "peak_inside": bool(total > 0 and m.flat[int(np.argmax(c))])})
    return rows


def cam_localization_report(rows: Sequence[dict], class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """`cam_localization` rows summed up ``overall`` and ``per_class`` (all-zero maps counted in
    ``n_empty_cam``, left out of the means), and the ``mostly_outside`` rows, lowest energy first."""
    if not rows:
        raise ValueError("cam_localization_report: no heat maps (an empty list of rows).")
    rows = [{"index": i, **r, "image_id": str(i) if r["image_id"] is None else r["image_id"]}
            for i, r in enumerate(rows)]

    def summary(t):  # an all-zero map (NaN energy) is left out of every mean: energy and area of the same maps
        scored = t[t["energy_inside"].notna()]
        e = scored["energy_inside"]
        return {"n_images": len(t), **{k: nanmean(scored[k]) for k in ("energy_inside", "area_share", "lift")},
                "above_baseline": nanmean(e > scored["area_share"]), "peak_inside": nanmean(scored["peak_inside"]),
                "mostly_outside": nanmean(e < MOSTLY_OUTSIDE_BELOW), "n_empty_cam": len(t) - len(scored)}

    table = pd.DataFrame(rows)
    per_class = {class_names[k]: summary(t) for k, t in table.groupby("label")}  # as_labels checked the range
    outside = [r for r in rows if r["energy_inside"] < MOSTLY_OUTSIDE_BELOW]  # NaN (an all-zero map) is not below
    return {"overall": summary(table), "per_class": per_class, "per_image": rows,
            "mostly_outside": sorted(outside, key=lambda r: r["energy_inside"]), "outside_below": MOSTLY_OUTSIDE_BELOW}


def trust_columns(probs, calibration: "StoredCalibration", class_names, view_probs=None, index=None) -> pd.DataFrame:
    """Per image of calibrated ``probs``: ``entropy``, the TTA columns when given, ``refer`` (entropy
    above the referral threshold) and ``mel_flag`` (P(MEL) at or above the operating threshold): NA without one."""
    cols = {"entropy": referral_uncertainty(probs)}
    if view_probs is not None and len(view_probs) > 1:
        cols.update(tta_disagreement=vote_disagreement(view_probs),
                    tta_mutual_info=mutual_information(view_probs, normalize=True))
    names, mel_t, refer_t = list(class_names), calibration.mel_threshold, calibration.referral_threshold
    mel_flag = None if mel_t is None or MELANOMA not in names else as_numpy(probs)[:, names.index(MELANOMA)] >= mel_t
    for name, flag in (("refer", None if refer_t is None else cols["entropy"] > refer_t), ("mel_flag", mel_flag)):
        cols[name] = pd.array([pd.NA] * len(probs) if flag is None else flag, dtype="boolean")
    return pd.DataFrame(cols, index=index)


# --- familiarity: how far an image's features lie from the validation split's -------------------------

FAMILIAR_QUANTILE = 0.95  # beyond this quantile of the validation split's own distances an image is "unfamiliar"
FEATURE_FOLDS = 5  # the threshold comes from distances of validation images left out of the fit
FEATURE_MEASURE = ("Mahalanobis distance of the average-pooled encoder features (Ledoit-Wolf covariance) over the "
                   "square root of their number")


def _fit_gaussian(f: np.ndarray) -> dict:
    mean = f.mean(0)
    return {"mean": mean, "precision": LedoitWolf().fit(f - mean).precision_}


def feature_reference(features: Any) -> dict:
    """A Gaussian of the validation split's pooled encoder features (N, D), in plain Python types: ``mean``,
    ``precision`` (Ledoit-Wolf, as N is often below D), ``threshold``: the `FAMILIAR_QUANTILE` of the split's own
    `feature_distance`s, each from a fit without its fold (in-sample would call too many new images unfamiliar)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2 * FEATURE_FOLDS:
        raise ValueError(f"feature_reference needs features of shape (N >= {2 * FEATURE_FOLDS}, D); got {f.shape}.")
    held_out = np.empty(len(f))
    for fold in np.array_split(np.random.default_rng(0).permutation(len(f)), FEATURE_FOLDS):
        held_out[fold] = feature_distance(f[fold], _fit_gaussian(np.delete(f, fold, axis=0)))
    return to_jsonable({**_fit_gaussian(f), "threshold": float(np.quantile(held_out, FAMILIAR_QUANTILE)),
                        "quantile": FAMILIAR_QUANTILE, "median": float(np.median(held_out)), "split": "val",
                        "n_images": int(len(f)), "measure": FEATURE_MEASURE})


def feature_distance(features: Any, reference: dict) -> np.ndarray:
    """Per image (N,): the Mahalanobis distance of `feature_reference` over sqrt(D), of order 1 for images
    like the reference split and larger for images unlike anything in it."""
    f, mean = np.asarray(features, dtype=np.float64), np.asarray(reference["mean"], dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != len(mean):
        raise ValueError(f"features of shape {f.shape} against a reference of {len(mean)} dimensions.")
    z = f - mean
    d2 = np.einsum("ni,ij,nj->n", z, np.asarray(reference["precision"], dtype=np.float64), z)
    return np.sqrt(np.maximum(d2, 0.0) / z.shape[1])


def familiarity_columns(features: Any, reference: dict) -> dict:
    """Per image: ``feature_distance`` and ``unfamiliar``, beyond the reference's threshold."""
    distance = feature_distance(features, reference)
    return {"feature_distance": distance, "unfamiliar": distance > reference["threshold"]}


def stored_feature_reference(checkpoint) -> dict | None:
    """The checkpoint's `feature_reference` with its arrays (None when it was calibrated without one)."""
    reference = (checkpoint.calibration or {}).get("features")
    return reference if reference and all(k in reference for k in FEATURE_ARRAYS) else None


def feature_summary(reference: dict) -> dict:
    """`feature_reference` without its arrays: what the JSON files and summaries show."""
    return {k: v for k, v in reference.items() if k not in FEATURE_ARRAYS}


# --- the calibration a checkpoint stores: fitted on validation after training ---------------------

REFERRAL_MEASURE = "entropy"  # normalised predictive entropy of the calibrated probabilities
DEFAULT_TARGET_SENSITIVITY, DEFAULT_TARGET_COVERAGE = 0.90, 0.80
COMMAND = "python -m skin_utils.trust"


def calibrated_probs(probs: Any, temperature: float) -> np.ndarray:
    """``softmax(log p / T)`` of probabilities (N, K), averaged over views or not: float64 (N, K)."""
    return apply_temperature(probs_to_logits(probs), temperature)


def referral_uncertainty(probs: Any) -> np.ndarray:
    """What referral thresholds: the entropy of calibrated ``probs`` over log K, (N,) in [0, 1]."""
    return predictive_entropy(probs, normalize=True)


def calibration_record(probs: Any, labels: Any, class_names, *, target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
                       target_coverage: float = DEFAULT_TARGET_COVERAGE) -> dict:
    """The temperature and both thresholds fitted on the validation split's uncalibrated outputs of one kind, with
    what they reach there (``notes``: why a threshold is None), in plain Python types (checkpoint and JSON)."""
    p, y = probs_and_labels(probs, labels)
    names = list(class_names)
    if len(names) != p.shape[1]:
        raise ValueError(f"{len(names)} class names for {p.shape[1]} probability columns.")
    temperature = fit_temperature(probs_to_logits(p), y)
    cal = calibrated_probs(p, temperature)
    u = referral_uncertainty(cal)
    referral = referral_threshold(u, target_coverage)
    mel = names.index(MELANOMA) if MELANOMA in names else None
    n_mel = 0 if mel is None else int(np.sum(y == mel))
    mel_threshold = operating_threshold(cal[:, mel], y == mel, target_sensitivity) if n_mel else None
    why = f"no class named {MELANOMA}" if mel is None else "no melanoma in the val split"
    return to_jsonable({
        "temperature": temperature, "mel_threshold": mel_threshold, "referral_threshold": referral,
        "uncertainty": REFERRAL_MEASURE, "target_sensitivity": float(target_sensitivity),
        "target_coverage": float(target_coverage), "split": "val", "n_images": int(len(y)), "n_mel": n_mel,
        "before": calibration_report(p, y), "after": calibration_report(cal, y),
        "mel_at_threshold": sens_spec_at(cal[:, mel], y == mel, mel_threshold) if n_mel else None,
        "coverage_at_threshold": float(np.mean(u <= referral)),
        "notes": [] if n_mel else [f"{why}: no melanoma operating point"]})


@dataclass
class StoredCalibration:
    """A checkpoint's calibration of one ``kind`` of output ("tta" or "plain"); without one, temperature 1 and
    no flags (``missing`` names what is absent)."""

    kind: str
    temperature: float = 1.0
    mel_threshold: float | None = None
    referral_threshold: float | None = None
    uncertainty: str = REFERRAL_MEASURE
    record: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, checkpoint, tta: bool) -> "StoredCalibration":
        kind = "tta" if tta else "plain"
        record = dict((checkpoint.calibration or {}).get(kind) or {})
        return cls(kind=kind, temperature=float(record.get("temperature") or 1.0),
                   mel_threshold=record.get("mel_threshold"), referral_threshold=record.get("referral_threshold"),
                   uncertainty=record.get("uncertainty", REFERRAL_MEASURE), record=record,
                   missing=[k for k in ("temperature", "mel_threshold", "referral_threshold") if record.get(k) is None])

    @property
    def calibrated(self) -> bool:
        """Whether a fitted temperature is used (False: temperature 1)."""
        return "temperature" not in self.missing

    def apply(self, probs: Any) -> np.ndarray:
        return calibrated_probs(probs, self.temperature)

    def describe(self) -> str:
        """What is used, and what is missing and what to do about it."""
        r = self.record
        if not self.missing:
            return (f"Calibration of the {self.kind} outputs, fitted on the {r.get('split', 'val')} split "
                    f"({r.get('n_images')} images): temperature {self.temperature:.3f}; melanoma flag at calibrated "
                    f"P(MEL) >= {self.mel_threshold:.3f} (target sensitivity {r.get('target_sensitivity')}); "
                    f"referral when the normalised entropy exceeds {self.referral_threshold:.3f} "
                    f"(target coverage {r.get('target_coverage')}).")
        if not r:
            return (f"The checkpoint holds no calibration for {self.kind} outputs: temperature 1 is used, and there is "
                    f"no melanoma flag and no referral. Fit them on the validation split with `{COMMAND} <run or "
                    "checkpoint>`" + (" (add --no-tta for plain outputs)." if self.kind == "plain" else "."))
        notes = "; ".join(r.get("notes", []))
        return (f"The checkpoint's calibration of {self.kind} outputs lacks {', '.join(self.missing)}"
                + (f" ({notes})" if notes else "") + f"; temperature {self.temperature:.3f} is used, and "
                "what is missing raises no flag.")

    def as_dict(self) -> dict:
        """The values used, for the metrics files."""
        return {"kind": self.kind, "temperature": self.temperature, "mel_threshold": self.mel_threshold,
                "referral_threshold": self.referral_threshold, "uncertainty": self.uncertainty,
                "missing": list(self.missing), "fitted": self.record}


def data_for_checkpoint(checkpoint, data_dir=None, split_path=None, *, whole: bool = False, **load_kw):
    """The data a checkpoint was trained on, split as in training; raises for other data (its splits would
    not be held out). ``whole=True``: any folder, every image (``split="all"``), no split needed."""
    params = checkpoint.params or {}
    data_dir, split_path = data_dir or checkpoint.data.get("data_dir"), split_path or checkpoint.split_path
    if not data_dir or not split_path:
        raise ValueError("The checkpoint does not record its data folder or split file; pass data_dir= and "
                         "split_path= (the ones it was trained with).")
    data = load_data(data_dir, checkpoint.image_size, split_path=split_path,
                     split_fractions=params.get("split_fractions", (0.7, 0.15, 0.15)),
                     seed=params.get("split_seed", params.get("seed", 0)),
                     max_samples=None if whole else params.get("max_samples"), need_split=not whole, **load_kw)
    expected, found = checkpoint.data.get("fingerprint"), data.index.attrs.get("fingerprint")
    if not whole and expected and found != expected:
        raise ValueError(f"{data.data_dir} is not the data this model was trained on (fingerprint {found} != "
                         f"{expected}): its splits would not be held out. Pass the training data_dir, or score "
                         "another data set with split='all'.")
    return data


def calibrate_checkpoint(checkpoint, data=None, *, data_dir=None, split_path=None, tta: bool = True,
                         target_sensitivity: float | None = None, target_coverage: float | None = None,
                         batch_size: int = 32, device="auto", amp: str = "auto", on_bad_data: str = "raise",
                         progress: bool = True) -> dict:
    """THE post-training step: fit `calibration_record` on the validation split into the checkpoint, and return
    kind -> record. ``tta=True`` fits both kinds from one 8-view pass ("plain": the first view); also stored:
    ``"features"``, the `feature_reference` (returned as its `feature_summary`). The targets (None: those it was last
    calibrated at, else the run's parameters, else the defaults) set the melanoma and referral thresholds."""
    path, device = Path(checkpoint), resolve_device(device)
    model, ckpt = load_model(path, map_location="cpu")
    params = ckpt.params or {}
    last = {**params, **((ckpt.calibration or {}).get("tta" if tta else "plain") or {})}  # calibrated at, else trained
    if target_sensitivity is None:
        target_sensitivity = last.get("target_sensitivity", DEFAULT_TARGET_SENSITIVITY)
    if target_coverage is None:
        target_coverage = last.get("target_coverage", DEFAULT_TARGET_COVERAGE)
    if "classification" not in trained_tasks(params.get("seg_weight", 1.0), params.get("cls_weight", 1.0)):
        raise ValueError(f"{path}: the classification head was not trained (cls_weight=0), so there are no "
                         "probabilities to calibrate.")
    if data is None:
        if not (split_file := resolve(split_path or ckpt.split_path or "")).is_file():
            raise FileNotFoundError(f"No split file at {split_file}: calibrating needs the validation split the "
                                    "model was trained with (a new split would not be held out). Pass split_path=.")
        data = data_for_checkpoint(ckpt, data_dir, split_path, on_bad_data=on_bad_data, progress=progress)
    if len(data.rows.get("val", ())) == 0:
        raise ValueError("The validation split is empty: nothing to calibrate on.")
    pred = predict(model.to(device), make_loader(data.dataset("val"), batch_size, device), device,
                   amp_dtype=amp_dtype_for(device, amp), progress=progress, desc="calibrate on val", tta=tta,
                   return_views=True, normalize=Normalize.from_config(ckpt.normalization), features=True)
    outputs = {"tta": pred["probs"], "plain": pred["view_probs"][0]} if tta else {"plain": pred["probs"]}
    records = {kind: calibration_record(p, pred["labels"], ckpt.class_names, target_sensitivity=target_sensitivity,
                                        target_coverage=target_coverage) for kind, p in outputs.items()}
    # too few validation images for a covariance: no reference, and evaluation says so
    if len(pred["features"]) >= 2 * FEATURE_FOLDS:
        records["features"] = feature_reference(pred["features"])
    # merged: a plain-only pass keeps the stored TTA record, and the other way round
    ckpt.calibration = {**(ckpt.calibration or {}), **records}
    ckpt.save(path)
    return {k: feature_summary(v) if k == "features" else v for k, v in records.items()}


def summary_lines(records: dict) -> list[str]:
    """One line per output kind: temperature, validation ECE and NLL before and after, both thresholds."""
    def num(x, fmt=".3f"):
        return "n/a" if x is None or x != x else format(x, fmt)

    lines = []
    for kind, r in records.items():
        if kind == "features":
            lines.append(f"features: reference of {r['n_images']} {r['split']} images; an image is unfamiliar "
                         f"beyond distance {num(r['threshold'])} (their {r['quantile']:.0%} quantile; median "
                         f"{num(r['median'])}).")
            continue
        mel = r.get("mel_at_threshold") or {}
        flag = (f"P(MEL) >= {num(r['mel_threshold'])} (val sensitivity {num(mel.get('sensitivity'), '.2f')}, "
                f"specificity {num(mel.get('specificity'), '.2f')})" if r.get("mel_threshold") is not None
                else "none (" + "; ".join(r.get("notes", [])) + ")")
        lines.append(f"{kind}: T = {num(r['temperature'])}; val ECE {num(r['before']['ece'])} -> "
                     f"{num(r['after']['ece'])}, NLL {num(r['before']['nll'])} -> {num(r['after']['nll'])}; "
                     f"melanoma flag: {flag}; refer when entropy > {num(r['referral_threshold'])} "
                     f"(val coverage {num(r['coverage_at_threshold'], '.2f')}).")
    return lines


def main(argv=None) -> int:
    """``python -m skin_utils.trust latest | <run folder or name> | <checkpoint.pt> [options]``."""
    p = argparse.ArgumentParser(prog=COMMAND, description="Fit the calibration of a model trained earlier on its "
                                "validation split, into its checkpoint (e.g. `latest`, a run folder or name, a .pt).")
    p.add_argument("target", help='a checkpoint file, a run folder or run name, or "latest"')
    p.add_argument("--reports-dir", default="reports", help="holds runs/ (to find a run name or latest)")
    p.add_argument("--data-dir", help="the training data; default: what the checkpoint records")
    p.add_argument("--split-path", help="the training split file; default: what the checkpoint records")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=True,
                   help="fit on 8-view TTA outputs (and the plain ones); --no-tta: plain outputs only")
    p.add_argument("--target-sensitivity", type=float, help="melanoma sensitivity the P(MEL) threshold reaches "
                   f"(default: the run's own, else {DEFAULT_TARGET_SENSITIVITY})")
    p.add_argument("--target-coverage", type=float, help="share of validation images kept, not referred "
                   f"(default: the run's own, else {DEFAULT_TARGET_COVERAGE})")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="auto", help="auto, bf16, fp16 or off")
    p.add_argument("--on-bad-data", default="raise", help="raise or skip")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    options = vars(p.parse_args(argv))  # the rest are calibrate_checkpoint's keyword arguments
    name, reports_dir = options.pop("target"), options.pop("reports_dir")
    if (target := resolve(name)).is_file():
        path, run = target, run_of_checkpoint(target)
    else:  # a run folder, or a run name or "latest" under reports-dir/runs
        run = find_run(target if target.is_dir() else name, resolve(reports_dir) / "runs")
        path = run.best
    records = calibrate_checkpoint(path, **options)
    print(f"Calibrated {path} on its validation split:", *("  " + line for line in summary_lines(records)), sep="\n")
    if run is not None:
        print(f"-> {write_json(run.metrics / 'calibration.json', records)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
