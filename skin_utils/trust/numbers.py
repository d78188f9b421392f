"""The numbers of trust: are the probabilities honest (calibration, temperature scaling), how sure
is the model about each image (uncertainty; referral of the least sure; the melanoma operating
point), and where does it look (Grad-CAM, checked against the lesion mask).

Inputs as in `skin_utils.metrics`, whose `sens_spec` gives every sensitivity here. Several passes
of the same images (TTA views, MC-dropout samples) are stacked **samples first**: (S, N, K).
Entropies are in nats (``normalize`` divides by log K: 1 is the uniform prediction).

Calibration (Guo et al. 2017): ``n_bins`` equal-width bins ``(b / n, (b + 1) / n]`` (0 in the first).
Top-label ECE ``sum_b |B_b| / N |acc_b - conf_b|``; class-wise ECE (Kull et al. 2019) the same per
class on ``p_ik`` against ``[y_i == k]``, averaged over every class: it sees the rare classes that a
top-label ECE dominated by confident nevi hides. NLL clips probabilities at 1e-15; Brier is
``mean_i sum_k (p_ik - [y_i == k])^2`` in [0, 2]. Temperature scaling divides the logits by the
T > 0 minimising the validation NLL, never changing the argmax; for TTA-averaged probabilities use
``probs_to_logits`` (``softmax(log p / T)``), and fit T on the kind of output it will be applied to.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.optimize import minimize_scalar
from torch import nn

from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import (as_binary, as_labels, as_maps, as_numpy, as_probabilities, balanced_accuracy, nanmean,
                                sens_spec)

#: Equal-width confidence bins (Guo et al. 2017).
DEFAULT_N_BINS = 15
#: The search interval of `fit_temperature`; an optimum on its edge is warned about.
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: NLL clip: a confident mistake costs log(1e15) ~ 34.5, not infinity.
NLL_EPS = 1e-15
MELANOMA_INDEX = CLASS_NAMES.index("MEL")
#: The shares of most uncertain images referred in `selective_report` (0: nobody).
DEFAULT_REFERRAL_FRACTIONS = (0.0, 0.1, 0.2, 0.3)
#: Default half-width of the border band, as a share of the image's shorter side.
BORDER_WIDTH_FRACTION = 0.03
CAM_METHODS = ("gradcam", "gradcam++")
#: A heat map with less of its energy than this inside the lesion falls "mostly outside" it.
MOSTLY_OUTSIDE_BELOW = 0.5
_COUNT_EPS = 1e-9  # a share times a count: 0.9 * 10 is 9.000000000000002


def _pair(probs: Any, labels: Any, logits: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Checked probabilities (or logits) (N, K) and labels (N,), N >= 1."""
    p, name = (_logits(probs), "logits") if logits else (as_probabilities(probs), "probs")
    y = as_labels(labels, p.shape[1])
    if p.shape[0] != y.shape[0]:
        raise ValueError(f"{name} has {p.shape[0]} rows but labels has {y.shape[0]} entries.")
    if p.shape[0] == 0:
        raise ValueError(f"No samples: {name} and labels are empty.")
    return p, y


# --- calibration and temperature scaling ----------------------------------------------------------

def probs_to_logits(probs: Any) -> np.ndarray:
    """``log p`` (clipped at 1e-15), float64 (N, K): logits whose softmax is ``probs``."""
    return np.log(np.clip(as_probabilities(probs), NLL_EPS, None))


def _binned(values: np.ndarray, hits: np.ndarray, n_bins: int):
    """Per bin: count, mean value and mean hit rate (NaN when empty)."""
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}.")
    b = np.clip(np.ceil(values * n_bins).astype(np.int64) - 1, 0, int(n_bins) - 1)
    count = np.bincount(b, minlength=int(n_bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (count, np.bincount(b, weights=values, minlength=int(n_bins)) / count,
                np.bincount(b, weights=hits.astype(np.float64), minlength=int(n_bins)) / count)


def _ece(count, mean_v, mean_h) -> float:
    filled = count > 0
    return float(np.sum(count[filled] / count.sum() * np.abs(mean_h[filled] - mean_v[filled])))


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """Top-label ECE, in [0, 1]."""
    p, y = _pair(probs, labels)
    return _ece(*_binned(p.max(axis=1), p.argmax(axis=1) == y, n_bins))


def classwise_ece(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS, reduction: str = "mean"):
    """Class-wise ECE: the mean over all classes (``"mean"``), or float64 (K,) (``"none"``)."""
    p, y = _pair(probs, labels)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r}: choose 'mean' or 'none'.")
    per_class = np.array([_ece(*_binned(p[:, k], y == k, n_bins)) for k in range(p.shape[1])])
    return float(per_class.mean()) if reduction == "mean" else per_class


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood (natural log) of the true class."""
    p, y = _pair(probs, labels)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], NLL_EPS, None))))


def brier_score(probs: Any, labels: Any) -> float:
    """Multiclass Brier score, in [0, 2]."""
    p, y = _pair(probs, labels)
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1)))


def reliability_diagram(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> dict[str, Any]:
    """What a reliability diagram draws (top label): ``bin_edges``, per bin ``confidence``,
    ``accuracy`` (NaN when empty) and ``count``; ``ece``, ``accuracy_overall``,
    ``confidence_overall``, ``n_images``. Plain lists and floats."""
    p, y = _pair(probs, labels)
    conf, correct = p.max(axis=1), p.argmax(axis=1) == y
    count, mean_conf, acc = _binned(conf, correct, n_bins)
    return {"bin_edges": np.linspace(0.0, 1.0, int(n_bins) + 1).tolist(), "confidence": mean_conf.tolist(),
            "accuracy": acc.tolist(), "count": count.tolist(), "ece": _ece(count, mean_conf, acc),
            "accuracy_overall": float(correct.mean()), "confidence_overall": float(conf.mean()),
            "n_images": int(len(y))}


def calibration_report(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> dict[str, Any]:
    """``ece``, ``classwise_ece``, ``nll``, ``brier``, ``n_bins``, ``n_images``."""
    p, y = _pair(probs, labels)
    return {"ece": expected_calibration_error(p, y, n_bins), "classwise_ece": classwise_ece(p, y, n_bins),
            "nll": negative_log_likelihood(p, y), "brier": brier_score(p, y), "n_bins": int(n_bins),
            "n_images": int(len(y))}


def _logits(logits: Any) -> np.ndarray:
    z = as_numpy(logits)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with K >= 2; got {z.shape}.")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinite values.")
    return z


def fit_temperature(logits: Any, labels: Any, bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
                    tol: float = 1e-6) -> float:
    """The temperature T minimising the NLL of ``softmax(logits / T)`` on (validation) labels: a
    bounded, deterministic 1-D search on log T in float64 (the NLL is convex in 1/T). Warns when the
    optimum sits on a bound (labels that do not match the logits, or a pathological model)."""
    z, y = _pair(logits, labels, logits=True)
    lo, hi = float(bounds[0]), float(bounds[1])
    if not 0.0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high; got {bounds!r}.")

    def nll(log_t):
        zt = z / math.exp(log_t)
        zt = zt - zt.max(axis=1, keepdims=True)
        return float(-np.mean(zt[np.arange(len(y)), y] - np.log(np.exp(zt).sum(axis=1))))

    res = minimize_scalar(nll, bounds=(math.log(lo), math.log(hi)), method="bounded", options={"xatol": tol})
    temperature = math.exp(float(res.x))
    if min(abs(res.x - math.log(lo)), abs(res.x - math.log(hi))) < 1e-3:
        warnings.warn(f"fit_temperature: the optimum T={temperature:.4g} is at the edge of the search interval "
                      f"{bounds}; check that labels match logits.", stacklevel=2)
    return temperature


def apply_temperature(logits: Any, temperature: float):
    """``softmax(logits / temperature)`` over the last axis: a float32 tensor on the same device
    for a torch tensor, float64 numpy otherwise."""
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}.")
    if isinstance(logits, torch.Tensor):
        return (logits.float() / t).softmax(-1)
    z = as_numpy(logits) / t
    if z.ndim < 1:
        raise ValueError("logits must have a class axis (the last one).")
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- uncertainty of the diagnosis -----------------------------------------------------------------

def _entropy(p: np.ndarray, log=np.log) -> np.ndarray:
    """Entropy over the last axis, 0 log 0 = 0."""
    return -np.sum(np.where(p > 0, p * log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def _samples(sample_probs: Any) -> np.ndarray:
    p = as_numpy(sample_probs)
    if p.ndim != 3 or p.shape[0] == 0:
        raise ValueError(f"sample_probs must have shape (S, N, K), S >= 1 passes (TTA views or MC-dropout "
                         f"samples) stacked first; got {p.shape}.")
    as_probabilities(p.reshape(-1, p.shape[-1]), name="sample_probs")
    return p


def predictive_entropy(probs: Any, normalize: bool = False) -> np.ndarray:
    """Entropy of each row of ``probs`` (N, K), or of the mean of passes (S, N, K): total uncertainty."""
    p = as_numpy(probs)
    p = _samples(p).mean(axis=0) if p.ndim == 3 else as_probabilities(p)
    return _entropy(p) / (math.log(p.shape[1]) if normalize else 1.0)


def mutual_information(sample_probs: Any, normalize: bool = False) -> np.ndarray:
    """``H(mean_s p_s) - mean_s H(p_s)`` = ``mean_s KL(p_s || p_mean)`` (BALD, Houlsby et al. 2011),
    (N,) >= 0: how much the passes disagree, beyond what each is unsure about by itself."""
    p = _samples(sample_probs)
    mi = np.clip(_entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0), 0.0, None)
    return mi / (math.log(p.shape[2]) if normalize else 1.0)


def vote_disagreement(sample_probs: Any) -> np.ndarray:
    """Share of passes whose argmax differs from the argmax of the mean, (N,) in [0, 1 - 1/S]."""
    p = _samples(sample_probs)
    return np.mean(p.argmax(axis=2) != p.mean(axis=0).argmax(axis=1)[None], axis=0)


_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def dropout_modules(model) -> list:
    """The model's dropout layers with p > 0 (functional ``F.dropout`` calls are not found)."""
    return [m for m in model.modules() if isinstance(m, _DROPOUTS) and m.p > 0]


def mc_dropout_probs(model, images, n_samples: int = 20, *, seed: int | None = 0) -> torch.Tensor:
    """Class probabilities float32 (S, N, K) of ``n_samples`` Monte-Carlo dropout passes (Gal &
    Ghahramani 2016) over a normalised batch: dropout in train mode, everything else (BatchNorm
    above all) in eval mode, every module's mode restored, also on error. ``seed`` (None: the global
    RNG) repeats the samples without touching the caller's random state. MultiTaskNet's only dropout
    is in its head, so the encoder runs once (the mask is the same in every pass)."""
    if int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2; got {n_samples!r}.")
    drops = dropout_modules(model)
    if not drops:
        raise ValueError("mc_dropout_probs: the model has no dropout layer with p > 0, so every pass would be "
                         "identical. Build MultiTaskNet with dropout > 0 (0.2 is the default; it is stored in the "
                         "checkpoint's model_config) and train it that way, or use TTA views instead.")
    head, encoder = getattr(model, "classification_head", None), getattr(model, "encoder", None)
    head_only = head is not None and encoder is not None and all(any(d is m for m in head.modules()) for d in drops)
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        for d in drops:
            d.train()
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            if head_only:
                features = encoder(images)[-1]
                samples = [head(features).float().softmax(1) for _ in range(int(n_samples))]
            else:
                samples = [_class_logits(model(images)).float().softmax(1) for _ in range(int(n_samples))]
    finally:
        for m, was_training in modes:
            m.training = was_training
    return torch.stack(samples)


def _class_logits(output):
    """Class logits from ``(mask_logits, class_logits)`` (MultiTaskNet) or from logits alone."""
    return output[1] if isinstance(output, (tuple, list)) else output


# --- uncertainty of the mask ----------------------------------------------------------------------

def _maps(x: Any, name: str) -> list[np.ndarray]:
    """2-D maps, each in its own dtype, from (H, W), (N, H, W), (N, 1, H, W) or a list of 2-D maps."""
    maps = [as_numpy(m, dtype=None) for m in x] if isinstance(x, (list, tuple)) else list(as_maps(x, name))
    for i, m in enumerate(maps):
        if m.ndim != 2:
            raise ValueError(f"{name}[{i}] must be 2-D (H, W); got shape {m.shape}.")
    return maps


def binary_entropy(mask_probs: Any) -> np.ndarray:
    """Per-pixel entropy in bits of a lesion probability: 0 at 0 and 1, 1 at 0.5; same shape, float64."""
    p = as_numpy(mask_probs)
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError("mask_probs must be probabilities in [0, 1] (apply sigmoid to logits).")
    return _entropy(np.stack([p, 1.0 - p], axis=-1), log=np.log2)


def border_band(mask: Any, width: int) -> np.ndarray:
    """Bool (H, W): the pixels within ``width`` pixels (chessboard distance) of the boundary of
    ``mask``, on both sides. The image frame is no boundary; an empty or full mask has no band."""
    m = as_numpy(mask, dtype=None) != 0
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W); got shape {m.shape}.")
    if int(width) != width or width < 1:
        raise ValueError(f"width must be a positive integer (pixels); got {width!r}.")
    square = np.ones((2 * int(width) + 1,) * 2, dtype=bool)
    return ndimage.binary_dilation(m, structure=square) & ~ndimage.binary_erosion(m, structure=square, border_value=1)


def mask_uncertainty_score(mask_probs: Any, pixel_uncertainty: Any = None, *, region: str = "border",
                           threshold: float = 0.5, width: int | None = None) -> np.ndarray:
    """One uncertainty per image, float64 (N,), of masks (H, W), (N, H, W), (N, 1, H, W) or a list
    of 2-D maps of any sizes: a per-pixel map (default the `binary_entropy` of ``mask_probs``; or
    e.g. the variance across TTA views) averaged over the `border_band` of the predicted lesion
    ``mask_probs >= threshold`` (half-width ``width`` px, default 3 % of the shorter side), or over
    the whole image (``region="image"``).

    The band is where segmentation is uncertain; an image mean mostly measures how much easy
    background there is. No band (no lesion predicted, or one covering the image) scores 1.0, the
    maximum: every image here shows a lesion, so an empty mask is a failure to refer."""
    if region not in ("border", "image"):
        raise ValueError(f"region={region!r}: choose 'border' or 'image'.")
    probs = _maps(mask_probs, "mask_probs")
    maps = [binary_entropy(p) for p in probs] if pixel_uncertainty is None else _maps(pixel_uncertainty,
                                                                                       "pixel_uncertainty")
    if len(maps) != len(probs):
        raise ValueError(f"{len(probs)} masks but {len(maps)} pixel-uncertainty maps.")
    scores = []
    for i, (p, u) in enumerate(zip(probs, maps)):
        if p.shape != u.shape:
            raise ValueError(f"image {i}: mask_probs {p.shape} and pixel_uncertainty {u.shape} differ.")
        if region == "image":
            scores.append(float(u.mean(dtype=np.float64)))
            continue
        band = border_band(p >= threshold, width or max(1, round(BORDER_WIDTH_FRACTION * min(p.shape))))
        scores.append(float(u[band].mean(dtype=np.float64)) if band.any() else 1.0)
    return np.asarray(scores, dtype=np.float64)


# --- referral and the melanoma operating point ----------------------------------------------------

def _uncertainty(u: Any, name: str = "uncertainty") -> np.ndarray:
    a = as_numpy(u)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be a non-empty 1-D (N,) array of finite values; got shape {a.shape}.")
    return a


def _expected_risks(u: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Risk of the k least uncertain images, k = 1..N, averaged over the orders of tied uncertainties."""
    order = np.argsort(u, kind="stable")
    _, start, counts = np.unique(u[order], return_index=True, return_counts=True)
    group_err = np.add.reduceat(err[order], start)
    before_e = np.repeat(np.concatenate([[0.0], np.cumsum(group_err)[:-1]]), counts)
    k = np.arange(1, len(u) + 1)
    return (before_e + (k - np.repeat(start, counts)) * np.repeat(group_err / counts, counts)) / k


def risk_coverage_curve(uncertainty: Any, errors: Any) -> dict[str, Any]:
    """Keep the k least uncertain images, k = 1..N: ``coverage`` k/N and ``risk`` (the error rate
    of the kept images, ties averaged over their orders), the oracle's ``optimal_risk``, ``aurc``
    (mean risk, Geifman et al. 2018; lower is better), ``optimal_aurc``, ``excess_aurc``,
    ``error_rate`` (a random ranking's AURC) and ``n_images``. ``errors``: 1/True for a wrong
    prediction, or any per-image loss in [0, 1] (e.g. 1 - Dice)."""
    u, e = _uncertainty(uncertainty), as_numpy(errors)
    if e.shape != u.shape:
        raise ValueError(f"errors has shape {e.shape}; uncertainty has {u.shape}.")
    if not np.all(np.isfinite(e)) or e.min() < 0 or e.max() > 1:
        raise ValueError("errors must lie in [0, 1] (1 or True = wrong).")
    risk, optimal = _expected_risks(u, e), _expected_risks(e, e)
    return {"coverage": np.arange(1, len(u) + 1) / len(u), "risk": risk, "optimal_risk": optimal,
            "aurc": float(risk.mean()), "optimal_aurc": float(optimal.mean()),
            "excess_aurc": float(risk.mean() - optimal.mean()), "error_rate": float(e.mean()), "n_images": len(u)}


def referral_threshold(uncertainty_val: Any, target_coverage: float) -> float:
    """The smallest t with ``mean(uncertainty_val <= t) >= target_coverage`` (chosen on validation;
    then keep images with uncertainty <= t and refer the rest; ties can only keep more)."""
    u = np.sort(_uncertainty(uncertainty_val, "uncertainty_val"))
    if not 0.0 < float(target_coverage) <= 1.0:
        raise ValueError(f"target_coverage must be in (0, 1]; got {target_coverage!r}.")
    return float(u[max(1, math.ceil(float(target_coverage) * len(u) - _COUNT_EPS)) - 1])


def selective_metrics(probs: Any, labels: Any, keep: Any, *, melanoma_index: int = MELANOMA_INDEX,
                      mel_threshold: float | None = None) -> dict[str, Any]:
    """Scores when the images with ``keep`` False are referred: ``n_kept``, ``n_referred``,
    ``coverage``, ``accuracy`` and ``balanced_accuracy`` of the kept images (NaN when none is
    kept), ``n_mel``, ``mel_referred``, ``mel_sensitivity_kept`` and
    ``mel_sensitivity_with_referral`` (a melanoma counts as found when called or referred). A
    melanoma call is the argmax, or ``P(MEL) >= mel_threshold`` when given."""
    p, y = _pair(probs, labels)
    k = as_numpy(keep, dtype=None).astype(bool)
    if k.shape != y.shape:
        raise ValueError(f"probs ({len(p)}), labels ({len(y)}) and keep {k.shape} must have one entry per image.")
    if not 0 <= melanoma_index < p.shape[1]:
        raise ValueError(f"melanoma_index {melanoma_index} out of range [0, {p.shape[1]}).")
    pred, is_mel = p.argmax(axis=1), y == melanoma_index
    called = pred == melanoma_index if mel_threshold is None else p[:, melanoma_index] >= mel_threshold
    n_kept = int(k.sum())
    return {"n_kept": n_kept, "n_referred": int(len(k) - n_kept), "coverage": n_kept / len(k),
            "accuracy": float(np.mean(pred[k] == y[k])) if n_kept else math.nan,
            "balanced_accuracy": balanced_accuracy(y[k], pred[k], p.shape[1]) if n_kept else math.nan,
            "n_mel": int(is_mel.sum()), "mel_referred": int((is_mel & ~k).sum()),
            "mel_sensitivity_kept": sens_spec(is_mel[k], called[k])["sensitivity"],
            "mel_sensitivity_with_referral": sens_spec(is_mel, called | ~k)["sensitivity"]}


def selective_report(probs: Any, labels: Any, uncertainty: Any,
                     referral_fractions: Sequence[float] = DEFAULT_REFERRAL_FRACTIONS, *,
                     melanoma_index: int = MELANOMA_INDEX, mel_threshold: float | None = None) -> list[dict]:
    """`selective_metrics` (with ``referral_fraction``) when the most uncertain ``round(f * N)``
    images are referred, for each f; ties broken by position, the earlier image referred first."""
    u = _uncertainty(uncertainty)
    most_uncertain_first = np.argsort(-u, kind="stable")
    rows = []
    for f in referral_fractions:
        if not 0.0 <= float(f) < 1.0:
            raise ValueError(f"referral fraction {f!r} must be in [0, 1).")
        keep = np.ones(len(u), dtype=bool)
        keep[most_uncertain_first[:int(round(float(f) * len(u)))]] = False
        rows.append({"referral_fraction": float(f), **selective_metrics(
            probs, labels, keep, melanoma_index=melanoma_index, mel_threshold=mel_threshold)})
    return rows


def operating_threshold(p_mel_val: Any, is_mel_val: Any, target_sensitivity: float) -> float:
    """The highest t at which calling melanoma when ``P(MEL) >= t`` reaches ``target_sensitivity``
    on the validation melanomas: their ``ceil(target * n_mel)``-th largest P(MEL). The test
    sensitivity it gives will differ; report it."""
    s, t = as_binary(p_mel_val, is_mel_val)
    if not 0.0 < float(target_sensitivity) <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1]; got {target_sensitivity!r}.")
    positives = np.sort(s[t])[::-1]
    if positives.size == 0:
        raise ValueError("operating_threshold: no melanoma in the validation labels.")
    return float(positives[max(1, math.ceil(float(target_sensitivity) * positives.size - _COUNT_EPS)) - 1])


# --- where the classifier looks: Grad-CAM, and the heat map against the lesion mask ---------------

def grad_cam(model, images, target: int | Sequence[int] | None = None, *, layer=None,
             method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
    """Class activation maps of a normalised batch (N, 3, H, W), and the class each explains.

    Grad-CAM (Selvaraju et al. 2017) weights the activations of ``layer`` (default
    ``model.encoder.layer4``, which the head pools) by the spatial mean of the gradient of the class
    logit, ``ReLU(sum_c w_c A_c)``; Grad-CAM++ (Chattopadhay et al. 2018) weights each location's
    positive gradient. The map is upsampled bilinearly and divided by its maximum: float32
    (N, H, W) in [0, 1], an all-zero map stays zero. ``target``: None for the predicted class,
    one class index, or one per image. Returns ``(cams, classes)``; the model's modes, hooks and
    parameter gradients are left as they were (inference tensors are fine)."""
    if method not in CAM_METHODS:
        raise ValueError(f"method={method!r}: choose one of {CAM_METHODS}.")
    if not (hasattr(images, "ndim") and images.ndim == 4):
        raise ValueError("images must be a tensor (N, 3, H, W); got "
                         f"{getattr(images, 'shape', type(images).__name__)}.")
    if layer is None:
        layer = getattr(getattr(model, "encoder", None), "layer4", None)
        if layer is None:
            raise ValueError(f"{type(model).__name__} has no encoder.layer4; pass layer= (the module whose output "
                             "feeds the classification head).")
    store: dict[str, Any] = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: store.__setitem__("a", output))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # a grad path even when the weights are frozen
            logits = _class_logits(model(x)).float()
            n = logits.shape[0]
            if target is None:
                classes = logits.argmax(1)
            else:
                classes = torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
                classes = classes.expand(n) if classes.numel() == 1 else classes
                if classes.numel() != n or classes.min() < 0 or classes.max() >= logits.shape[1]:
                    raise ValueError(f"target must be one class index or {n} of them, each in "
                                     f"[0, {logits.shape[1]}); got {target!r}.")
            if "a" not in store:
                raise ValueError("the target layer was not run by model(images); pass another layer=.")
            (grads,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), store["a"])
        a, g = store["a"].detach().float(), grads.detach().float()
        if method == "gradcam":
            weights = g.mean(dim=(2, 3), keepdim=True)
        else:  # closed form with the exponential of the score (Chattopadhay et al., eq. 19)
            g2 = g.pow(2)
            denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g
            alpha = torch.where(g != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)),
                                torch.zeros_like(g))
            weights = (alpha * g.clamp_min(0)).sum(dim=(2, 3), keepdim=True)
        cam = (weights * a).sum(dim=1, keepdim=True).clamp_min(0)
        cam = F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        peak = cam.amax(dim=(1, 2), keepdim=True)
        cam = torch.where(peak > 0, cam / peak.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
    finally:
        handle.remove()
        for m, was_training in modes:
            m.training = was_training
    return cam.clamp(0, 1).cpu().numpy().astype(np.float32), classes.cpu().numpy().astype(np.int64)


def cam_localization(cams: Any, masks: Any, labels: Any = None, image_ids: Sequence | None = None,
                     class_names: Sequence[str] = CLASS_NAMES) -> list[dict[str, Any]]:
    """Per image, is the heat map on the lesion (the energy-based pointing game, Wang et al. 2020)?
    ``energy_inside`` ``sum(cam * mask) / sum(cam)`` (NaN for an all-zero map), its baseline
    ``area_share`` (the share of the image the mask covers: what a uniform map scores), ``lift``
    (their ratio), ``peak_inside`` (the hottest pixel, the first on ties, is in the lesion), with
    ``image_id``, ``label`` and ``class_name`` (None when not given). Maps and masks (non-zero =
    lesion) as in `mask_uncertainty_score`, of matching shapes."""
    cams, masks = _maps(cams, "cam"), _maps(masks, "mask")
    y = None if labels is None else as_numpy(labels, dtype=None).reshape(-1)
    for what, count in (("masks", len(masks)), ("labels", None if y is None else len(y)),
                        ("image_ids", None if image_ids is None else len(image_ids))):
        if count is not None and count != len(cams):
            raise ValueError(f"{len(cams)} maps but {count} {what}.")
    rows = []
    for i, (c, m) in enumerate(zip(cams, masks)):
        if c.shape != m.shape:
            raise ValueError(f"image {i}: cam {c.shape} and mask {m.shape} differ; resize the mask to the map "
                             "(nearest neighbour) or the map to the mask (bilinear).")
        c, m = np.asarray(c, dtype=np.float64), m != 0
        if not np.all(np.isfinite(c)) or (c.size and c.min() < 0):
            raise ValueError(f"image {i}: cam must be finite and non-negative.")
        label = None if y is None else int(y[i])
        if label is not None and not 0 <= label < len(class_names):
            raise ValueError(f"label {label} out of range [0, {len(class_names)}).")
        total, area = c.sum(), float(m.mean()) if m.size else math.nan
        energy = float(c[m].sum() / total) if total > 0 else math.nan
        rows.append({"image_id": None if image_ids is None else str(image_ids[i]), "label": label,
                     "class_name": None if label is None else str(class_names[label]), "energy_inside": energy,
                     "area_share": area, "lift": energy / area if area > 0 else math.nan,
                     "peak_inside": bool(total > 0 and m.flat[int(np.argmax(c))])})
    return rows


def cam_localization_report(rows: Sequence[dict], class_names: Sequence[str] = CLASS_NAMES,
                            outside_below: float = MOSTLY_OUTSIDE_BELOW) -> dict[str, Any]:
    """The summary of `cam_localization` rows (of one batch or several, concatenated).

    ``overall`` and ``per_class`` (classes seen only): ``n_images``, mean ``energy_inside``,
    ``area_share`` and ``lift``, ``above_baseline`` (share whose energy inside beats the area
    share), ``peak_inside``, ``mostly_outside`` (share below ``outside_below``), ``n_empty_cam``
    (means leave out all-zero maps); ``per_image`` (the rows with their position ``index``; an
    image without id is named by it); ``mostly_outside``: those rows, lowest energy first."""
    if not rows:
        raise ValueError("cam_localization_report: no heat maps (an empty list of rows).")
    if not 0.0 < float(outside_below) <= 1.0:
        raise ValueError(f"outside_below must be in (0, 1]; got {outside_below!r}.")
    rows = [{"index": i, **r, "image_id": str(i) if r["image_id"] is None else r["image_id"]}
            for i, r in enumerate(rows)]

    def summary(rs):
        scored = [r for r in rs if not math.isnan(r["energy_inside"])]
        return {"n_images": len(rs), **{k: nanmean([r[k] for r in rs]) for k in ("energy_inside", "area_share", "lift")},
                "above_baseline": nanmean([r["energy_inside"] > r["area_share"] for r in scored]),
                "peak_inside": nanmean([r["peak_inside"] for r in rs]),
                "mostly_outside": nanmean([r["energy_inside"] < outside_below for r in scored]),
                "n_empty_cam": len(rs) - len(scored)}

    per_class = {name: summary(rs) for k, name in enumerate(class_names)
                 if (rs := [r for r in rows if r["label"] == k])}
    outside = [r for r in rows if r["energy_inside"] < outside_below]  # NaN (an all-zero map) is not below
    return {"overall": summary(rows), "per_class": per_class, "per_image": rows,
            "mostly_outside": sorted(outside, key=lambda r: r["energy_inside"]), "outside_below": float(outside_below)}
