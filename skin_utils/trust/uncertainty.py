"""How sure is the model about each image, and what happens if the least sure are referred?

Inputs are numpy arrays or torch tensors (any device). Several stochastic predictions of the same
images — the test-time-augmentation views, or Monte-Carlo dropout samples — are passed
**samples first**: class probabilities ``(S, N, K)``, mask probabilities ``(S, N, H, W)``, as
``torch.stack`` of S passes gives them.

Classification uncertainty, per image (natural logarithm, nats; ``normalize=True`` divides by
``log K`` so that 1 is the uniform prediction):

* `predictive_entropy` ``H(p_mean) = -sum_k p_k log p_k`` of the (mean) probabilities: total
  uncertainty; defined for a single prediction too.
* `expected_entropy` ``mean_s H(p_s)``: what each pass is unsure about by itself.
* `mutual_information` ``H(p_mean) - mean_s H(p_s)`` = ``mean_s KL(p_s || p_mean)`` (the BALD
  score, Houlsby et al. 2011): how much the passes disagree; 0 when all passes are identical.
* `vote_disagreement`: the share of passes whose argmax differs from the consensus (the argmax
  of ``p_mean``), in [0, 1 - 1/S]; 0 when every pass agrees.

Monte-Carlo dropout (Gal & Ghahramani 2016): `mc_dropout_probs` runs S forward passes with the
dropout layers in train mode and everything else — BatchNorm above all — in eval mode, so that
only the dropout masks vary. `MultiTaskNet` has one dropout layer (``dropout=0.2`` by default),
in the classification head before the linear layer, and none in the encoder or decoder; its
samples therefore vary the diagnosis only (the mask is the same in every pass), and the encoder
runs once for all S samples. A model built with ``dropout=0`` has nothing to sample.

Mask uncertainty: per pixel, `binary_entropy` of the mask probability (bits, 1 at p = 0.5) or
`sample_variance` of the mask probability across TTA views; per image, `mask_uncertainty_score`
averages the pixel map over the **border band** of the predicted lesion (default) or over the
whole image. The band is where segmentation is uncertain; an image mean mostly measures how much
easy background the image has, so it ranks small lesions as certain whatever their border looks
like. An image with no predicted lesion (or one covering the whole image) has no band and scores
1.0, the maximum: every HAM10000 image shows a lesion, so an empty mask is a failure to refer.

Selective prediction (refer the most uncertain images to a dermatologist):

* `risk_coverage_curve`: keep the k least uncertain images, k = 1..N; coverage k/N and risk =
  error rate of the kept set. Tied uncertainties are handled by the expected risk over their
  orderings, so the curve does not depend on how ties are sorted. AURC (Geifman et al. 2018) is
  the mean risk over the N coverages; lower is better; ``optimal_aurc`` is the AURC of an oracle
  that ranks every error last, and ``error_rate`` that of a random ranking.
* `referral_threshold` (chosen on validation): keep images with ``uncertainty <= threshold``.
* `selective_report`: accuracy, balanced accuracy and melanoma sensitivity when the most
  uncertain 10 / 20 / 30 % are referred.
* `operating_threshold`: the threshold on P(MEL) for a target melanoma sensitivity (chosen on
  validation); `sens_spec_at` reports sensitivity and specificity at a threshold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from skin_utils.metrics import as_labels, as_numpy, as_probabilities
from skin_utils.labels import CLASS_NAMES
from skin_utils.metrics import balanced_accuracy

__all__ = [
    "predictive_entropy",
    "expected_entropy",
    "mutual_information",
    "vote_disagreement",
    "sample_uncertainty",
    "dropout_modules",
    "mc_dropout_probs",
    "binary_entropy",
    "sample_variance",
    "border_band",
    "mask_uncertainty_score",
    "risk_coverage_curve",
    "referral_threshold",
    "selective_metrics",
    "selective_report",
    "operating_threshold",
    "sens_spec_at",
    "MELANOMA_INDEX",
    "DEFAULT_REFERRAL_FRACTIONS",
    "BORDER_WIDTH_FRACTION",
]

#: Index of melanoma in `skin_utils.labels.CLASS_NAMES`.
MELANOMA_INDEX = CLASS_NAMES.index("MEL")
#: The shares of most uncertain images referred in `selective_report` (0: nobody referred).
DEFAULT_REFERRAL_FRACTIONS = (0.0, 0.1, 0.2, 0.3)
#: Default half-width of the border band, as a share of the image's shorter side.
BORDER_WIDTH_FRACTION = 0.03
#: Tolerance when turning a share into a count (0.9 * 10 is 9.000000000000002).
_COUNT_EPS = 1e-9


# --------------------------------------------------------------------------------------------
# classification uncertainty
# --------------------------------------------------------------------------------------------

def _entropy(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) over the last axis; 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=-1)


def _samples(sample_probs: Any) -> np.ndarray:
    """float64 (S, N, K), each pass checked to be probabilities."""
    p = as_numpy(sample_probs)
    if p.ndim != 3:
        raise ValueError(
            f"sample_probs must have shape (S, N, K): S passes (TTA views or MC-dropout samples) "
            f"stacked first; got {p.shape}."
        )
    if p.shape[0] == 0:
        raise ValueError("sample_probs holds no passes (S = 0).")
    as_probabilities(p.reshape(-1, p.shape[-1]), name="sample_probs")
    return p


def predictive_entropy(probs: Any, normalize: bool = False) -> np.ndarray:
    """Entropy of each row of ``probs`` (N, K) — or of the mean over passes of (S, N, K) —,
    float64 (N,), in nats, or in [0, 1] with ``normalize`` (divided by log K)."""
    p = as_numpy(probs)
    p = _samples(p).mean(axis=0) if p.ndim == 3 else as_probabilities(p)
    h = _entropy(p)
    return h / math.log(p.shape[1]) if normalize else h


def expected_entropy(sample_probs: Any, normalize: bool = False) -> np.ndarray:
    """Mean over passes of each pass's entropy, float64 (N,)."""
    p = _samples(sample_probs)
    h = _entropy(p).mean(axis=0)
    return h / math.log(p.shape[2]) if normalize else h


def mutual_information(sample_probs: Any, normalize: bool = False) -> np.ndarray:
    """``H(mean_s p_s) - mean_s H(p_s)`` per image, float64 (N,), >= 0 (rounding clipped)."""
    p = _samples(sample_probs)
    mi = np.clip(_entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0), 0.0, None)
    return mi / math.log(p.shape[2]) if normalize else mi


def vote_disagreement(sample_probs: Any) -> np.ndarray:
    """Share of passes whose argmax differs from the argmax of the mean, float64 (N,)."""
    p = _samples(sample_probs)
    consensus = p.mean(axis=0).argmax(axis=1)
    return np.mean(p.argmax(axis=2) != consensus[None], axis=0)


def sample_uncertainty(sample_probs: Any, normalize: bool = False) -> dict[str, np.ndarray]:
    """All per-image measures of several passes at once: ``mean_probs`` (N, K) and
    ``predictive_entropy``, ``expected_entropy``, ``mutual_information``, ``vote_disagreement``
    (each (N,))."""
    p = _samples(sample_probs)
    return {
        "mean_probs": p.mean(axis=0),
        "predictive_entropy": predictive_entropy(p, normalize),
        "expected_entropy": expected_entropy(p, normalize),
        "mutual_information": mutual_information(p, normalize),
        "vote_disagreement": vote_disagreement(p),
    }


# --------------------------------------------------------------------------------------------
# Monte-Carlo dropout
# --------------------------------------------------------------------------------------------

def dropout_modules(model) -> list:
    """The model's dropout layers (``torch.nn`` Dropout / Dropout1d-3d / AlphaDropout /
    FeatureAlphaDropout) with p > 0. Functional ``F.dropout`` calls are not modules and are not
    found."""
    from torch import nn

    kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
             nn.FeatureAlphaDropout)
    return [m for m in model.modules() if isinstance(m, kinds) and m.p > 0]


def _class_logits(output):
    """Class logits from ``(mask_logits, class_logits)`` (MultiTaskNet) or from logits alone."""
    return output[1] if isinstance(output, (tuple, list)) else output


def mc_dropout_probs(model, images, n_samples: int = 20, *, seed: int | None = 0):
    """Class probabilities of ``n_samples`` stochastic passes, float32 tensor (S, N, K).

    ``images``: a normalised batch (N, 3, H, W) on the model's device. Dropout layers run in
    train mode, every other layer (BatchNorm) in eval mode; each module's mode is restored
    afterwards, also on error. ``seed`` (None: the global RNG) makes the samples repeatable
    without touching the caller's random state. When every dropout layer sits inside
    ``model.classification_head`` (MultiTaskNet), the encoder runs once and only the head is
    sampled; otherwise the whole model runs S times. Raises ``ValueError`` when the model has no
    dropout (a MultiTaskNet built with ``dropout=0``).
    """
    import torch

    if int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2; got {n_samples!r}.")
    drops = dropout_modules(model)
    if not drops:
        raise ValueError(
            "mc_dropout_probs: the model has no dropout layer with p > 0, so every pass would be "
            "identical. Build MultiTaskNet with dropout > 0 (0.2 is the default; it is stored in "
            "the checkpoint's model_config) and train it that way, or use TTA views instead."
        )
    head = getattr(model, "classification_head", None)
    encoder = getattr(model, "encoder", None)
    head_only = (head is not None and encoder is not None
                 and all(any(d is m for m in head.modules()) for d in drops))
    modes = [(m, m.training) for m in model.modules()]
    devices = [images.device] if images.device.type == "cuda" else []
    try:
        model.eval()
        for d in drops:
            d.train()
        with torch.no_grad(), torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            if head_only:
                features = encoder(images)[-1]
                samples = [head(features).float().softmax(1) for _ in range(int(n_samples))]
            else:
                samples = [_class_logits(model(images)).float().softmax(1)
                           for _ in range(int(n_samples))]
    finally:
        for m, was_training in modes:
            m.training = was_training
    return torch.stack(samples)


# --------------------------------------------------------------------------------------------
# mask uncertainty
# --------------------------------------------------------------------------------------------

def _mask_stack(x: Any, name: str) -> list[np.ndarray]:
    """A list of 2-D maps from (H, W), (N, H, W), (N, 1, H, W) or a list of 2-D maps, in their
    own dtype (float16 predictions are converted one image at a time, not all at once)."""
    if isinstance(x, (list, tuple)):
        maps = [as_numpy(m, dtype=None) for m in x]
    else:
        a = as_numpy(x, dtype=None)
        if a.ndim == 2:
            a = a[None]
        elif a.ndim == 4 and a.shape[1] == 1:
            a = a[:, 0]
        if a.ndim != 3:
            raise ValueError(f"{name} must have shape (H, W), (N, H, W) or (N, 1, H, W), or be "
                             f"a list of 2-D maps; got {a.shape}.")
        maps = list(a)
    for i, m in enumerate(maps):
        if m.ndim != 2:
            raise ValueError(f"{name}[{i}] must be 2-D (H, W); got shape {m.shape}.")
    return maps


def binary_entropy(mask_probs: Any) -> np.ndarray:
    """Per-pixel entropy (bits) of a lesion probability: 0 at p in {0, 1}, 1 at p = 0.5. Same
    shape as the input, float64. Values outside [0, 1] raise."""
    p = as_numpy(mask_probs)
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ValueError("mask_probs must be probabilities in [0, 1] (apply sigmoid to logits).")
    q = 1.0 - p
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)
              + np.where(q > 0, q * np.log2(np.where(q > 0, q, 1.0)), 0.0))
    return h


def sample_variance(sample_mask_probs: Any) -> np.ndarray:
    """Per-pixel variance of the mask probability across passes: (S, N, H, W) -> (N, H, W)
    float64, in [0, 0.25]."""
    p = as_numpy(sample_mask_probs)
    if p.ndim != 4:
        raise ValueError(f"sample_mask_probs must have shape (S, N, H, W); got {p.shape}.")
    return p.var(axis=0)


def border_band(mask: Any, width: int) -> np.ndarray:
    """Bool (H, W): pixels within ``width`` pixels (chessboard distance) of the boundary of
    ``mask`` (non-zero = lesion), on both sides. The image frame is not a boundary: a lesion
    cut off by the image edge has no band along that edge. Empty for an empty or full mask."""
    from scipy import ndimage

    m = as_numpy(mask, dtype=None) != 0
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W); got shape {m.shape}.")
    if int(width) != width or width < 1:
        raise ValueError(f"width must be a positive integer (pixels); got {width!r}.")
    square = np.ones((2 * int(width) + 1,) * 2, dtype=bool)
    outer = ndimage.binary_dilation(m, structure=square)
    inner = ndimage.binary_erosion(m, structure=square, border_value=1)
    return outer & ~inner


def mask_uncertainty_score(mask_probs: Any, pixel_uncertainty: Any = None, *,
                           region: str = "border", threshold: float = 0.5,
                           width: int | None = None) -> np.ndarray:
    """One uncertainty number per image, float64 (N,) (see the module docstring).

    ``mask_probs``: (H, W), (N, H, W), (N, 1, H, W) or a list of 2-D maps (sizes may differ).
    ``pixel_uncertainty``: a per-pixel map of the same shape(s) (e.g. `sample_variance` across
    TTA views); default the `binary_entropy` of ``mask_probs``. ``region="border"`` averages it
    over the `border_band` of the predicted lesion ``mask_probs >= threshold`` with half-width
    ``width`` pixels (default 3 % of the shorter side, at least 1); no band -> 1.0.
    ``region="image"`` averages over every pixel.
    """
    if region not in ("border", "image"):
        raise ValueError(f"region={region!r}: choose 'border' or 'image'.")
    probs = _mask_stack(mask_probs, "mask_probs")
    maps = ([binary_entropy(p) for p in probs] if pixel_uncertainty is None
            else _mask_stack(pixel_uncertainty, "pixel_uncertainty"))
    if len(maps) != len(probs):
        raise ValueError(f"{len(probs)} masks but {len(maps)} pixel-uncertainty maps.")
    scores = []
    for i, (p, u) in enumerate(zip(probs, maps)):
        if p.shape != u.shape:
            raise ValueError(f"image {i}: mask_probs {p.shape} and pixel_uncertainty {u.shape} differ.")
        if region == "image":
            scores.append(float(u.mean(dtype=np.float64)))
            continue
        w = width if width is not None else max(1, round(BORDER_WIDTH_FRACTION * min(p.shape)))
        band = border_band(p >= threshold, w)
        scores.append(float(u[band].mean(dtype=np.float64)) if band.any() else 1.0)
    return np.asarray(scores, dtype=np.float64)


# --------------------------------------------------------------------------------------------
# selective prediction
# --------------------------------------------------------------------------------------------

def _uncertainty(u: Any, name: str = "uncertainty") -> np.ndarray:
    a = as_numpy(u)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,); got shape {a.shape}.")
    if a.size == 0:
        raise ValueError(f"{name} is empty.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values.")
    return a


def _expected_risks(u: np.ndarray, err: np.ndarray) -> np.ndarray:
    """Risk of the k least uncertain images, k = 1..N, averaged over the orders of ties."""
    order = np.argsort(u, kind="stable")
    u_s, e_s = u[order], err[order]
    _, start, counts = np.unique(u_s, return_index=True, return_counts=True)
    group_err = np.add.reduceat(e_s, start)
    before_n = np.repeat(start, counts)
    before_e = np.repeat(np.concatenate([[0.0], np.cumsum(group_err)[:-1]]), counts)
    rate = np.repeat(group_err / counts, counts)
    k = np.arange(1, len(u) + 1)
    return (before_e + (k - before_n) * rate) / k


def risk_coverage_curve(uncertainty: Any, errors: Any) -> dict[str, Any]:
    """Risk-coverage curve and its area (see the module docstring).

    ``uncertainty`` (N,): higher = less sure. ``errors`` (N,): 1/True for a wrong prediction
    (or any per-image loss in [0, 1], e.g. ``1 - dice``). Returns ``coverage`` and ``risk``
    (float64 (N,), coverage k/N ascending), ``optimal_risk`` (the oracle's risk, (N,)),
    ``aurc``, ``optimal_aurc``, ``excess_aurc`` (``aurc - optimal_aurc``), ``error_rate`` and
    ``n_images``.
    """
    u = _uncertainty(uncertainty)
    e = as_numpy(errors)
    if e.shape != u.shape:
        raise ValueError(f"errors has shape {e.shape}; uncertainty has {u.shape}.")
    if not np.all(np.isfinite(e)) or e.min() < 0 or e.max() > 1:
        raise ValueError("errors must lie in [0, 1] (1 or True = wrong).")
    risk = _expected_risks(u, e)
    optimal = _expected_risks(e, e)
    n = len(u)
    return {
        "coverage": np.arange(1, n + 1) / n,
        "risk": risk,
        "optimal_risk": optimal,
        "aurc": float(risk.mean()),
        "optimal_aurc": float(optimal.mean()),
        "excess_aurc": float(risk.mean() - optimal.mean()),
        "error_rate": float(e.mean()),
        "n_images": int(n),
    }


def referral_threshold(uncertainty_val: Any, target_coverage: float) -> float:
    """The smallest threshold t with ``mean(uncertainty_val <= t) >= target_coverage``.

    Choose it on validation; then keep (decide automatically) images with ``uncertainty <= t``
    and refer the rest. On the validation set the kept share is ``target_coverage`` up to ties
    (ties can only raise it); ``target_coverage=1`` refers nobody.
    """
    u = np.sort(_uncertainty(uncertainty_val, "uncertainty_val"))
    c = float(target_coverage)
    if not 0.0 < c <= 1.0:
        raise ValueError(f"target_coverage must be in (0, 1]; got {target_coverage!r}.")
    k = max(1, math.ceil(c * len(u) - _COUNT_EPS))
    return float(u[k - 1])


def _mel_predicted(probs: np.ndarray, melanoma_index: int, mel_threshold: float | None) -> np.ndarray:
    if mel_threshold is None:
        return probs.argmax(axis=1) == melanoma_index
    return probs[:, melanoma_index] >= mel_threshold


def selective_metrics(probs: Any, labels: Any, keep: Any, *, melanoma_index: int = MELANOMA_INDEX,
                      mel_threshold: float | None = None) -> dict[str, Any]:
    """Scores of the images the model keeps (``keep`` True), the others being referred.

    ``n_kept``, ``coverage``, ``accuracy`` and ``balanced_accuracy`` of the kept images (NaN if
    none is kept; balanced accuracy over the classes present among them); melanoma:
    ``n_mel``, ``mel_referred``, ``mel_sensitivity_kept`` (kept melanomas called melanoma; NaN
    when none is kept) and ``mel_sensitivity_with_referral`` (a melanoma counts as found when it
    is called melanoma or referred to a dermatologist; NaN without melanomas). A melanoma call
    is the argmax, or ``P(MEL) >= mel_threshold`` when given (see `operating_threshold`).
    """
    p = as_probabilities(probs)
    y = as_labels(labels, p.shape[1])
    k = as_numpy(keep, dtype=None).astype(bool)
    if not (len(p) == len(y) == len(k)) or k.ndim != 1:
        raise ValueError(f"probs ({len(p)}), labels ({len(y)}) and keep {k.shape} must have one "
                         "entry per image.")
    if not 0 <= melanoma_index < p.shape[1]:
        raise ValueError(f"melanoma_index {melanoma_index} out of range [0, {p.shape[1]}).")
    nan = float("nan")
    pred = p.argmax(axis=1)
    is_mel = y == melanoma_index
    called_mel = _mel_predicted(p, melanoma_index, mel_threshold)
    n_kept = int(k.sum())
    kept_mel = is_mel & k
    return {
        "n_kept": n_kept,
        "n_referred": int(len(k) - n_kept),
        "coverage": float(n_kept / len(k)) if len(k) else nan,
        "accuracy": float(np.mean(pred[k] == y[k])) if n_kept else nan,
        "balanced_accuracy": balanced_accuracy(y[k], pred[k], p.shape[1]) if n_kept else nan,
        "n_mel": int(is_mel.sum()),
        "mel_referred": int((is_mel & ~k).sum()),
        "mel_sensitivity_kept": float(called_mel[kept_mel].mean()) if kept_mel.any() else nan,
        "mel_sensitivity_with_referral":
            float(np.mean(called_mel[is_mel] | ~k[is_mel])) if is_mel.any() else nan,
    }


def selective_report(probs: Any, labels: Any, uncertainty: Any,
                     referral_fractions: Sequence[float] = DEFAULT_REFERRAL_FRACTIONS, *,
                     melanoma_index: int = MELANOMA_INDEX,
                     mel_threshold: float | None = None) -> list[dict[str, Any]]:
    """`selective_metrics` when the most uncertain ``round(f * N)`` images are referred, for each
    f in ``referral_fractions``: one dict per f, with ``referral_fraction`` added. Ties in
    ``uncertainty`` are broken by position (the earlier image is referred first), so exactly
    that many are referred; use `referral_threshold` for a rule chosen on validation."""
    u = _uncertainty(uncertainty)
    n = len(u)
    most_uncertain_first = np.argsort(-u, kind="stable")
    rows = []
    for f in referral_fractions:
        if not 0.0 <= float(f) < 1.0:
            raise ValueError(f"referral fraction {f!r} must be in [0, 1).")
        keep = np.ones(n, dtype=bool)
        keep[most_uncertain_first[:int(round(float(f) * n))]] = False
        rows.append({"referral_fraction": float(f),
                     **selective_metrics(probs, labels, keep, melanoma_index=melanoma_index,
                                         mel_threshold=mel_threshold)})
    return rows


# --------------------------------------------------------------------------------------------
# melanoma operating point
# --------------------------------------------------------------------------------------------

def _scores_and_truth(p: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_numpy(p)
    t = as_numpy(y, dtype=None)
    if s.ndim != 1 or t.shape != s.shape:
        raise ValueError(f"scores and labels must be 1-D of the same length; got {s.shape} and "
                         f"{t.shape}.")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values.")
    if t.size and not np.all(np.isin(t, (0, 1))):
        raise ValueError("labels must be binary (1/True = melanoma); for class indices pass "
                         "labels == MELANOMA_INDEX.")
    return s, t.astype(bool)


def operating_threshold(p_mel_val: Any, is_mel_val: Any, target_sensitivity: float) -> float:
    """The highest threshold t such that calling melanoma when ``P(MEL) >= t`` reaches at least
    ``target_sensitivity`` on the validation melanomas.

    It is the ``ceil(target * n_mel)``-th largest P(MEL) among the melanomas, so the validation
    sensitivity is the smallest achievable value >= target (more only with ties); the highest
    such t keeps the most specificity. Report the test sensitivity it gives, which will differ.
    """
    s, t = _scores_and_truth(p_mel_val, is_mel_val)
    target = float(target_sensitivity)
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target_sensitivity must be in (0, 1]; got {target_sensitivity!r}.")
    positives = np.sort(s[t])[::-1]
    if positives.size == 0:
        raise ValueError("operating_threshold: no melanoma in the validation labels.")
    k = max(1, math.ceil(target * positives.size - _COUNT_EPS))
    return float(positives[k - 1])


def sens_spec_at(p: Any, y: Any, threshold: float) -> dict[str, Any]:
    """Sensitivity and specificity of calling positive when ``p >= threshold``.

    ``p`` (N,) scores (e.g. P(MEL)), ``y`` (N,) binary truth. Returns ``sensitivity``,
    ``specificity`` (NaN when there are no positives / no negatives), ``ppv`` (NaN when nothing
    is called positive), ``tp``, ``fn``, ``tn``, ``fp`` and ``threshold``.
    """
    s, t = _scores_and_truth(p, y)
    called = s >= float(threshold)
    tp, fn = int((called & t).sum()), int((~called & t).sum())
    tn, fp = int((~called & ~t).sum()), int((called & ~t).sum())
    nan = float("nan")
    return {
        "sensitivity": tp / (tp + fn) if tp + fn else nan,
        "specificity": tn / (tn + fp) if tn + fp else nan,
        "ppv": tp / (tp + fp) if tp + fp else nan,
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
        "threshold": float(threshold),
    }
