"""Are the predicted probabilities honest? Calibration metrics and temperature scaling.

The layout follows `skin_utils.metrics`: functions of one set of predictions, and a class
(`CalibrationMetrics`) that accumulates batches with ``update()`` and reports with
``aggregate()``. Metric inputs are **probabilities** (N, K) with rows summing to 1 and integer
labels (N,); numpy arrays and torch tensors (any device) are both accepted. The temperature
functions take **logits**.

Definitions (N images, K classes, ``conf_i = max_k p_ik``, ``pred_i = argmax_k p_ik``):

* **Bins**: ``n_bins`` equal-width bins on [0, 1]; bin b holds the values in
  ``(b / n_bins, (b + 1) / n_bins]``, and a value of exactly 0 goes to the first bin.
* **ECE** (top-label, Guo et al. 2017): ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|`` over the
  bins of ``conf``, where ``acc`` is the share of correct predictions in the bin and ``conf`` the
  mean confidence. Empty bins contribute 0. 15 bins by default, as in Guo et al.
* **Class-wise ECE** (Kull et al. 2019): for each class k, the same sum over the bins of
  ``p_ik`` (all N images, not only those predicted k) with ``acc`` replaced by the share of
  images whose label is k; the classes' values are averaged (``reduction="mean"``) or returned
  one per class (``reduction="none"``). It catches miscalibration of the rare classes that the
  top-label ECE, dominated by confident nevi, hides.
* **NLL**: ``-mean_i log p_i,y_i``, probabilities clipped below at 1e-15 (the result is finite).
  Equal to ``sklearn.metrics.log_loss`` away from that clip.
* **Brier score** (multiclass, Brier 1950): ``mean_i sum_k (p_ik - [y_i == k])^2``, between 0
  (perfect) and 2; ``sklearn.metrics.brier_score_loss(..., scale_by_half=False)``.

Temperature scaling (Guo et al. 2017) divides every logit by one scalar T > 0 fitted on the
validation set by minimising the NLL: T > 1 softens over-confident predictions, T < 1 sharpens;
it never changes the argmax, so accuracy and balanced accuracy are unchanged. The fit is a
bounded 1-D search on log T (deterministic). To calibrate probabilities that are already averaged
(test-time augmentation), pass ``probs_to_logits(mean_probs)``: ``softmax(log p / T)`` is
``p^(1/T)`` renormalised, a valid temperature on the averaged prediction; fit T on the same kind
of output that it will be applied to.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from skin_utils.metrics import as_labels, as_numpy, as_probabilities

__all__ = [
    "probs_to_logits",
    "expected_calibration_error",
    "classwise_ece",
    "negative_log_likelihood",
    "brier_score",
    "reliability_diagram",
    "calibration_report",
    "CalibrationMetrics",
    "fit_temperature",
    "apply_temperature",
    "DEFAULT_N_BINS",
    "TEMPERATURE_BOUNDS",
]

#: Number of equal-width confidence bins (Guo et al. 2017).
DEFAULT_N_BINS = 15
#: The search interval of `fit_temperature`. A fitted value on either end means the optimum
#: lies outside it (and a warning says so).
TEMPERATURE_BOUNDS = (0.05, 20.0)
#: Probabilities are clipped below at this value in the NLL, so that a confident mistake costs
#: log(1e15) ~ 34.5 instead of infinity.
NLL_EPS = 1e-15


def _rows_match(x: np.ndarray, y: np.ndarray, name: str) -> None:
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name} has {x.shape[0]} rows but labels has {y.shape[0]} entries.")
    if x.shape[0] == 0:
        raise ValueError(f"No samples: {name} and labels are empty.")


def _pair(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = as_probabilities(probs)
    y = as_labels(labels, p.shape[1])
    _rows_match(p, y, "probs")
    return p, y


def _logits(logits: Any) -> np.ndarray:
    z = as_numpy(logits)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with K >= 2; got {z.shape}.")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or infinite values.")
    return z


def _check_bins(n_bins: int) -> int:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}.")
    return int(n_bins)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def probs_to_logits(probs: Any) -> np.ndarray:
    """``log p`` (clipped below at 1e-15), float64 (N, K): logits whose softmax is ``probs``.
    Use it to temperature-scale probabilities that were averaged over TTA views."""
    return np.log(np.clip(as_probabilities(probs), NLL_EPS, None))


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------

def _bin_index(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin of each value in [0, 1]: (b/n, (b+1)/n] -> b, and 0 -> 0."""
    return np.clip(np.ceil(values * n_bins).astype(np.int64) - 1, 0, n_bins - 1)


def _binned(values: np.ndarray, hits: np.ndarray, n_bins: int):
    """Per bin: count, mean value (NaN when empty), mean hit rate (NaN when empty)."""
    b = _bin_index(values, n_bins)
    count = np.bincount(b, minlength=n_bins)
    sum_v = np.bincount(b, weights=values, minlength=n_bins)
    sum_h = np.bincount(b, weights=hits.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return count, sum_v / count, sum_h / count


def _ece_from_bins(count, mean_v, mean_h) -> float:
    n = count.sum()
    filled = count > 0
    return float(np.sum(count[filled] / n * np.abs(mean_h[filled] - mean_v[filled])))


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> float:
    """Top-label ECE (see the module docstring), a float in [0, 1]."""
    p, y = _pair(probs, labels)
    n_bins = _check_bins(n_bins)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    return _ece_from_bins(*_binned(conf, correct, n_bins))


def classwise_ece(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS,
                  reduction: str = "mean") -> float | np.ndarray:
    """Class-wise ECE (see the module docstring): the mean over classes (``reduction="mean"``)
    or a float64 array (K,) with one value per class (``reduction="none"``). Every class is
    included, present in ``labels`` or not (an absent class scores its mean predicted mass)."""
    p, y = _pair(probs, labels)
    n_bins = _check_bins(n_bins)
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction={reduction!r}: choose 'mean' or 'none'.")
    per_class = np.array([_ece_from_bins(*_binned(p[:, k], y == k, n_bins))
                          for k in range(p.shape[1])])
    return float(per_class.mean()) if reduction == "mean" else per_class


def negative_log_likelihood(probs: Any, labels: Any) -> float:
    """Mean negative log-likelihood of the true class (natural log; see the module docstring)."""
    p, y = _pair(probs, labels)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], NLL_EPS, None))))


def brier_score(probs: Any, labels: Any) -> float:
    """Multiclass Brier score ``mean_i sum_k (p_ik - onehot_ik)^2``, in [0, 2]."""
    p, y = _pair(probs, labels)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def reliability_diagram(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> dict[str, Any]:
    """What a reliability diagram draws, for the top label.

    Returns ``bin_edges`` (n_bins + 1 floats), and per bin ``confidence`` (mean top-label
    probability), ``accuracy`` (share correct) — both NaN for an empty bin — and ``count``;
    plus ``ece``, ``accuracy_overall``, ``confidence_overall`` and ``n_images``. Plain lists and
    floats (``json.dump``-able after `skin_utils.metrics.to_jsonable`, which turns NaN into null).
    """
    p, y = _pair(probs, labels)
    n_bins = _check_bins(n_bins)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    count, mean_conf, acc = _binned(conf, correct, n_bins)
    return {
        "bin_edges": np.linspace(0.0, 1.0, n_bins + 1).tolist(),
        "confidence": [float(v) for v in mean_conf],
        "accuracy": [float(v) for v in acc],
        "count": [int(c) for c in count],
        "ece": _ece_from_bins(count, mean_conf, acc),
        "accuracy_overall": float(correct.mean()),
        "confidence_overall": float(conf.mean()),
        "n_images": int(len(y)),
    }


def calibration_report(probs: Any, labels: Any, n_bins: int = DEFAULT_N_BINS) -> dict[str, Any]:
    """``ece``, ``classwise_ece``, ``nll``, ``brier``, ``n_bins``, ``n_images`` of one set of
    predictions (what ``CalibrationMetrics.aggregate()`` returns), plain floats."""
    p, y = _pair(probs, labels)
    return {
        "ece": expected_calibration_error(p, y, n_bins),
        "classwise_ece": classwise_ece(p, y, n_bins),
        "nll": negative_log_likelihood(p, y),
        "brier": brier_score(p, y),
        "n_bins": int(n_bins),
        "n_images": int(len(y)),
    }


class CalibrationMetrics:
    """Accumulates (probabilities, labels) over batches for `calibration_report`.

    >>> m = CalibrationMetrics()
    >>> m.update(torch.softmax(logits, dim=1), labels)   # per batch
    >>> m.aggregate()   # {'ece': ..., 'classwise_ece': ..., 'nll': ..., 'brier': ..., ...}
    """

    def __init__(self, n_bins: int = DEFAULT_N_BINS) -> None:
        self.n_bins = _check_bins(n_bins)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []

    @property
    def n_images(self) -> int:
        return int(sum(len(y) for y in self._labels))

    def __len__(self) -> int:
        return self.n_images

    def update(self, probs: Any, labels: Any) -> None:
        """Add a batch of probabilities (N, K) and integer labels (N,)."""
        p = as_probabilities(probs)
        y = as_labels(labels, p.shape[1])
        if p.shape[0] != y.shape[0]:
            raise ValueError(f"probs has {p.shape[0]} rows but labels has {y.shape[0]} entries.")
        if self._probs and p.shape[1] != self._probs[0].shape[1]:
            raise ValueError(f"probs has {p.shape[1]} classes; earlier batches had "
                             f"{self._probs[0].shape[1]}.")
        self._probs.append(p)
        self._labels.append(y)

    def aggregate(self) -> dict[str, Any]:
        """The report over everything seen since the last ``reset()``."""
        if self.n_images == 0:
            raise ValueError("CalibrationMetrics.aggregate() called before any sample was added "
                             "with update().")
        return calibration_report(np.concatenate(self._probs), np.concatenate(self._labels),
                                  self.n_bins)


# --------------------------------------------------------------------------------------------
# temperature scaling
# --------------------------------------------------------------------------------------------

def _nll_at(z: np.ndarray, y: np.ndarray, temperature: float) -> float:
    logp = _log_softmax(z / temperature)
    return float(-np.mean(logp[np.arange(len(y)), y]))


def fit_temperature(logits: Any, labels: Any, bounds: tuple[float, float] = TEMPERATURE_BOUNDS,
                    tol: float = 1e-6) -> float:
    """The temperature T minimising the NLL of ``softmax(logits / T)`` on (validation) labels.

    ``logits`` (N, K) numpy or torch, any device; ``labels`` (N,) integers. A bounded Brent
    search on log T over ``bounds`` (the NLL is unimodal in log T: it is convex in 1/T), in
    float64, deterministic. Fit on validation data only, never on the test set. Returns a Python
    float; warns when the optimum sits on a bound (then the model is pathologically over- or
    under-confident, or the labels do not match the logits).
    """
    from scipy.optimize import minimize_scalar

    z = _logits(logits)
    y = as_labels(labels, z.shape[1])
    _rows_match(z, y, "logits")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not 0.0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high; got {bounds!r}.")
    res = minimize_scalar(lambda log_t: _nll_at(z, y, math.exp(log_t)),
                          bounds=(math.log(lo), math.log(hi)), method="bounded",
                          options={"xatol": tol})
    temperature = math.exp(float(res.x))
    if min(abs(res.x - math.log(lo)), abs(res.x - math.log(hi))) < 1e-3:
        warnings.warn(f"fit_temperature: the optimum T={temperature:.4g} is at the edge of the "
                      f"search interval {bounds}; check that labels match logits.", stacklevel=2)
    return temperature


def apply_temperature(logits: Any, temperature: float):
    """Calibrated probabilities ``softmax(logits / temperature)`` over the last axis.

    A torch tensor gives a float32 torch tensor on the same device (usable inside inference
    code); anything else gives a float64 numpy array. ``temperature=1`` is the plain softmax.
    """
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}.")
    if hasattr(logits, "detach") and hasattr(logits, "softmax"):  # torch.Tensor
        return (logits.float() / t).softmax(-1)
    z = as_numpy(logits)
    if z.ndim < 1:
        raise ValueError("logits must have a class axis (the last one).")
    z = z / t
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
