"""Segmentation and classification metrics with the ISIC 2018 challenge definitions.

The layout follows MONAI's metrics: a functional form (a plain function of one batch) beside a
class that accumulates batches with ``update()``, returns the result with ``aggregate()`` and
starts over with ``reset()``. Nothing here imports torch: torch tensors are accepted anywhere an
array is (they are moved to the CPU and converted with ``.detach().cpu().numpy()``).

The segmentation scores are computed here (scikit-learn has no per-image ISIC scores); the
classification numbers come from ``sklearn.metrics`` (confusion matrix, accuracy, balanced
accuracy, per-class precision / recall / F1, ROC AUC, average precision, ROC curves), with the
input checks and the NaN rules below applied around it; specificity, which scikit-learn does not
provide, is read off the confusion matrix.

Segmentation (ISIC 2018 Task 1)
-------------------------------
Every score is computed **per image**, at the image's own size, and then averaged over images
(it is not a pixel pool over the whole set). Masks are boolean-like: any non-zero value is
lesion, so ``{0, 1}``, ``{0, 255}`` and ``bool`` masks all work; threshold probabilities first.
With P the predicted lesion pixels and T the true ones:

* Dice ``2|P & T| / (|P| + |T|)``; Jaccard ``|P & T| / |P | T|``;
* thresholded Jaccard (the Task 1 ranking metric): ``J`` if ``J >= 0.65`` else ``0``;
* pixel sensitivity ``TP / (TP + FN)``; pixel specificity ``TN / (TN + FP)``.

Rules for empty masks (where a ratio would be 0/0):

* empty prediction on an empty target: Dice = 1, Jaccard = 1 (a perfect answer);
* non-empty prediction on an empty target: Dice = 0, Jaccard = 0 (the ordinary formulas);
* empty target (no lesion pixels), whatever the prediction: sensitivity = 1, since there is
  nothing to find; false positives are charged to Dice, Jaccard and specificity instead;
* target with no negatives (lesion covers the whole image): specificity = 1.

Classification (ISIC 2018 Task 3)
---------------------------------
Inputs are **probabilities**, shape (N, K), rows summing to 1 (apply ``softmax`` to logits
first: the check rejects anything outside [0, 1] or with row sums off 1 by more than 1e-3),
and integer targets, shape (N,). The predicted class is the ``argmax`` (first index on ties).

* ``balanced_accuracy`` (the Task 3 headline) is the mean per-class recall over the classes
  that occur in the targets; classes absent from the targets are left out
  (``sklearn.metrics.balanced_accuracy_score``; NaN when there are no targets).
* ``macro_auc`` is the mean one-vs-rest ROC AUC over the classes that have both positives and
  negatives in the targets (NaN if there are none); ``macro_average_precision`` is the mean
  one-vs-rest average precision over the classes that have positives.
* Per-class values that are undefined (0/0) are NaN: sensitivity and AUC/AP of a class absent
  from the targets, specificity when every target is that class, precision when the class is
  never predicted, F1 (``2TP / (2TP + FP + FN)``) when the class is neither true nor predicted.
  The macro means leave NaN values out.
* :func:`roc_curves` returns one ``{"fpr", "tpr", "auc"}`` dict per class that has both
  positives and negatives; ``skin_utils.plots.plot_roc_curves`` takes that value as it is.

On a set where only some of the classes occur (an external data set, a small split), the
numbers above are therefore averages over the classes present, while a prediction of an absent
class still counts as an error (it lowers the recall of the true class). :func:`baselines` names
the classes present and gives what chance and always answering the set's most frequent class
score on that set; :func:`melanoma_vs_rest` is the binary question (melanoma or not) that such
sets ask: ROC AUC of P(MEL) and sensitivity / specificity at a threshold.

Everything returned by ``aggregate()`` is built from plain Python floats, ints, lists and dicts,
so it can be ``json.dump``-ed; NaN is kept as ``float('nan')``, and :func:`to_jsonable` turns it
(and any numpy / torch value) into strict-JSON values (NaN -> None).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

from skin_utils.labels import CLASS_NAMES

__all__ = [
    "dice_per_image",
    "jaccard_per_image",
    "thresholded_jaccard",
    "pixel_sensitivity_per_image",
    "pixel_specificity_per_image",
    "SegmentationMetrics",
    "confusion_matrix",
    "balanced_accuracy",
    "classification_report_dict",
    "ClassificationMetrics",
    "majority_baseline",
    "classes_present",
    "baselines",
    "melanoma_vs_rest",
    "roc_curves",
    "to_jsonable",
    "ISIC_JACCARD_THRESHOLD",
    "SEGMENTATION_KEYS",
    "PER_CLASS_KEYS",
    "PROB_SUM_ATOL",
    "as_numpy",
    "as_labels",
    "as_probabilities",
]

#: ISIC 2018 Task 1: a Jaccard index below this counts as 0.
ISIC_JACCARD_THRESHOLD = 0.65

#: The per-image segmentation scores, in the order they are reported.
SEGMENTATION_KEYS: tuple[str, ...] = (
    "dice", "jaccard", "thresholded_jaccard", "sensitivity", "specificity",
)

#: The per-class classification values, in the order ``classification_report_dict`` gives them.
PER_CLASS_KEYS: tuple[str, ...] = (
    "support", "sensitivity", "specificity", "precision", "f1", "auc", "average_precision",
)

#: Tolerance on the row sums of a probability matrix.
PROB_SUM_ATOL = 1e-3


# --------------------------------------------------------------------------------------------
# conversion helpers
# --------------------------------------------------------------------------------------------

def as_numpy(x: Any, dtype=np.float64) -> np.ndarray:
    """numpy array (of ``dtype``; None keeps the input's) from a numpy array, a torch tensor on
    any device (bfloat16 included), or anything array-like."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()  # numpy has no bfloat16
        x = x.numpy()
    return np.asarray(x) if dtype is None else np.asarray(x, dtype=dtype)


def _mask_batch(x: Any, name: str) -> np.ndarray:
    """Boolean (N, H, W) from a mask of shape (H, W), (N, H, W) or (N, 1, H, W)."""
    arr = as_numpy(x, dtype=None)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim != 3:
        raise ValueError(
            f"{name} must have shape (H, W), (N, H, W) or (N, 1, H, W); got {arr.shape}."
        )
    return arr != 0


def _mask_pair(pred: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _mask_batch(pred, "pred")
    t = _mask_batch(target, "target")
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target shapes differ: {p.shape} vs {t.shape} "
            "(score each image at its own size, or pass lists of 2-D masks)."
        )
    return p, t


def _counts(pred: Any, target: Any) -> tuple[np.ndarray, ...]:
    """Per-image TP, FP, FN, TN as int64 arrays of shape (N,)."""
    p, t = _mask_pair(pred, target)
    axes = (1, 2)
    tp = np.sum(p & t, axis=axes, dtype=np.int64)
    fp = np.sum(p & ~t, axis=axes, dtype=np.int64)
    fn = np.sum(~p & t, axis=axes, dtype=np.int64)
    tn = np.sum(~p & ~t, axis=axes, dtype=np.int64)
    return tp, fp, fn, tn


def _ratio(num: np.ndarray, den: np.ndarray, when_zero: float) -> np.ndarray:
    """num / den as float64, with ``when_zero`` where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, when_zero, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


# --------------------------------------------------------------------------------------------
# segmentation: functional
# --------------------------------------------------------------------------------------------

def dice_per_image(pred: Any, target: Any) -> np.ndarray:
    """Dice ``2|P & T| / (|P| + |T|)`` of each image, float64 array of shape (N,).

    ``pred`` and ``target`` have shape (H, W) (then N = 1), (N, H, W) or (N, 1, H, W); non-zero
    is lesion. Both empty -> 1.0; prediction non-empty on an empty target -> 0.0.
    """
    tp, fp, fn, _ = _counts(pred, target)
    return _ratio(2 * tp, 2 * tp + fp + fn, when_zero=1.0)


def jaccard_per_image(pred: Any, target: Any) -> np.ndarray:
    """Jaccard index (IoU) ``|P & T| / |P | T|`` of each image, float64 array of shape (N,).

    Both empty -> 1.0; prediction non-empty on an empty target -> 0.0.
    """
    tp, fp, fn, _ = _counts(pred, target)
    return _ratio(tp, tp + fp + fn, when_zero=1.0)


def thresholded_jaccard(jaccard: Any, threshold: float = ISIC_JACCARD_THRESHOLD) -> Any:
    """ISIC 2018 Task 1 score of Jaccard value(s): ``J if J >= threshold else 0``.

    A scalar gives a float, an array (or list) a float64 array of the same shape.
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1]; got {threshold!r}.")
    j = as_numpy(jaccard)
    out = np.where(j >= threshold, j, 0.0)
    return float(out) if out.ndim == 0 else out


def pixel_sensitivity_per_image(pred: Any, target: Any) -> np.ndarray:
    """Pixel sensitivity (recall) ``TP / (TP + FN)`` of each image, shape (N,).

    Empty target -> 1.0 whatever the prediction (nothing to find).
    """
    tp, _, fn, _ = _counts(pred, target)
    return _ratio(tp, tp + fn, when_zero=1.0)


def pixel_specificity_per_image(pred: Any, target: Any) -> np.ndarray:
    """Pixel specificity ``TN / (TN + FP)`` of each image, shape (N,).

    Target with no background pixels (no negatives) -> 1.0.
    """
    _, fp, _, tn = _counts(pred, target)
    return _ratio(tn, tn + fp, when_zero=1.0)


def _segmentation_scores(pred: Any, target: Any, threshold: float) -> dict[str, np.ndarray]:
    """All per-image scores of one batch from a single pass over the pixels."""
    tp, fp, fn, tn = _counts(pred, target)
    jac = _ratio(tp, tp + fp + fn, when_zero=1.0)
    return {
        "dice": _ratio(2 * tp, 2 * tp + fp + fn, when_zero=1.0),
        "jaccard": jac,
        "thresholded_jaccard": np.asarray(thresholded_jaccard(jac, threshold)),
        "sensitivity": _ratio(tp, tp + fn, when_zero=1.0),
        "specificity": _ratio(tn, tn + fp, when_zero=1.0),
    }


# --------------------------------------------------------------------------------------------
# segmentation: accumulating class
# --------------------------------------------------------------------------------------------

class SegmentationMetrics:
    """Accumulates per-image ISIC 2018 Task 1 scores over batches.

    >>> m = SegmentationMetrics()
    >>> m.update(pred_batch, true_batch)          # (N, H, W) arrays / tensors
    >>> m.update([pred_a, pred_b], [true_a, true_b])  # 2-D masks of different sizes
    >>> result = m.aggregate()

    ``aggregate()`` returns ``dice``, ``jaccard``, ``thresholded_jaccard``, ``sensitivity``,
    ``specificity`` (means over images, floats), ``n_images``, ``jaccard_threshold`` and
    ``per_image``: a dict of lists, one value per image in the order the images were passed to
    ``update()`` (use it to pick the best and worst cases). See the module docstring for the
    empty-mask rules.
    """

    def __init__(self, threshold: float = ISIC_JACCARD_THRESHOLD) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1]; got {threshold!r}.")
        self.threshold = float(threshold)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._scores: dict[str, list[float]] = {k: [] for k in SEGMENTATION_KEYS}

    @property
    def n_images(self) -> int:
        return len(self._scores["dice"])

    def __len__(self) -> int:
        return self.n_images

    def update(self, pred_masks: Any, true_masks: Any) -> None:
        """Add a batch: arrays/tensors (N, H, W) (or (H, W), (N, 1, H, W)), or two equally long
        lists/tuples of masks, each scored at its own size (sizes may differ between images)."""
        if isinstance(pred_masks, (list, tuple)) or isinstance(true_masks, (list, tuple)):
            if len(pred_masks) != len(true_masks):
                raise ValueError(
                    f"{len(pred_masks)} predicted masks but {len(true_masks)} true masks."
                )
            for i, (p, t) in enumerate(zip(pred_masks, true_masks)):
                try:
                    self._add(_segmentation_scores(p, t, self.threshold))
                except ValueError as exc:
                    raise ValueError(f"mask pair {i}: {exc}") from None
        else:
            self._add(_segmentation_scores(pred_masks, true_masks, self.threshold))

    def _add(self, scores: Mapping[str, np.ndarray]) -> None:
        for key in SEGMENTATION_KEYS:
            self._scores[key].extend(float(v) for v in np.ravel(scores[key]))

    def aggregate(self) -> dict[str, Any]:
        """Means over all images seen since the last ``reset()``, plus the per-image lists."""
        if self.n_images == 0:
            raise ValueError(
                "SegmentationMetrics.aggregate() called before any image was added with update()."
            )
        result: dict[str, Any] = {k: float(np.mean(self._scores[k])) for k in SEGMENTATION_KEYS}
        result["n_images"] = self.n_images
        result["jaccard_threshold"] = self.threshold
        result["per_image"] = {k: list(self._scores[k]) for k in SEGMENTATION_KEYS}
        return result


# --------------------------------------------------------------------------------------------
# classification: functional
# --------------------------------------------------------------------------------------------

def as_labels(labels: Any, num_classes: int, name: str = "labels") -> np.ndarray:
    """int64 (N,) class indices, checked to be whole numbers in [0, num_classes)."""
    y = as_numpy(labels, dtype=None)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,); got shape {y.shape}.")
    if y.size and (y.dtype == bool or not np.issubdtype(y.dtype, np.number)):
        raise ValueError(f"{name} must hold integer class indices; got dtype {y.dtype}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"{name} must hold integer class indices; got non-integer values.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}); got values in [{y.min()}, {y.max()}].")
    return y


def _class_names(class_names: Sequence[str]) -> list[str]:
    names = [str(c) for c in class_names]
    if not names:
        raise ValueError("class_names is empty.")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names has duplicates: {names}.")
    return names


def as_probabilities(probs: Any, num_classes: int | None = None, name: str = "probs") -> np.ndarray:
    """float64 (N, K) probabilities, checked: K == ``num_classes`` (when given, else K >= 2),
    finite, in [0, 1], rows summing to 1 within `PROB_SUM_ATOL`."""
    p = as_numpy(probs)
    if p.ndim != 2 or (num_classes is not None and p.shape[1] != num_classes) or p.shape[1] < 2:
        expected = f"(N, {num_classes})" if num_classes is not None else "(N, K) with K >= 2 classes"
        raise ValueError(f"{name} must have shape {expected}; got {p.shape}.")
    if p.size:
        if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
            raise ValueError(
                f"{name} must be probabilities in [0, 1] (got values outside it: logits? "
                "apply torch.softmax(logits, dim=1) first).")
        sums = p.sum(axis=1)
        if not np.allclose(sums, 1.0, rtol=0.0, atol=PROB_SUM_ATOL):
            raise ValueError(
                f"{name} rows must sum to 1 (softmax probabilities); row sums range over "
                f"[{sums.min():.4g}, {sums.max():.4g}].")
    return p


def _label_pair(y_true: Any, y_pred: Any, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked int64 (N,) true and predicted labels in [0, num_classes)."""
    if int(num_classes) < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes!r}.")
    t = as_labels(y_true, int(num_classes), "y_true")
    p = as_labels(y_pred, int(num_classes), "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred lengths differ: {t.shape[0]} vs {p.shape[0]}.")
    return t, p


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """(K, K) int64 confusion matrix: rows = true class, columns = predicted class (all zeros
    when there are no samples)."""
    t, p = _label_pair(y_true, y_pred, num_classes)
    k = int(num_classes)
    if t.size == 0:  # scikit-learn refuses empty input
        return np.zeros((k, k), dtype=np.int64)
    return skm.confusion_matrix(t, p, labels=np.arange(k)).astype(np.int64)


def balanced_accuracy(y_true: Any, y_pred: Any, num_classes: int) -> float:
    """Mean per-class recall over the classes that occur in ``y_true`` (NaN if it is empty)."""
    t, p = _label_pair(y_true, y_pred, num_classes)
    if t.size == 0:
        return float("nan")
    with warnings.catch_warnings():  # predicted classes absent from y_true are left out: documented
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        return float(skm.balanced_accuracy_score(t, p))


def _nan_mean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def classification_report_dict(
    probs: Any, targets: Any, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, Any]:
    """The ISIC 2018 Task 3 report of one set of predictions (what
    ``ClassificationMetrics.aggregate()`` returns); see the module docstring for definitions.

    Keys: ``accuracy``, ``balanced_accuracy``, ``macro_auc``, ``macro_average_precision``,
    ``n_images``, ``class_names``, ``confusion_matrix`` (K x K list of ints, rows = true),
    ``confusion_matrix_normalized`` (rows divided by their sums, empty rows all 0) and
    ``per_class``: name -> {support, sensitivity, specificity, precision, f1, auc,
    average_precision} (the keys of :data:`PER_CLASS_KEYS`, in that order).
    """
    names = _class_names(class_names)
    k = len(names)
    p = as_probabilities(probs, k)
    t = as_labels(targets, k, "targets")
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but targets has {t.shape[0]} entries.")
    n = int(t.shape[0])
    if n == 0:
        raise ValueError("No samples: probs and targets are empty.")

    labels = np.arange(k)
    pred = np.argmax(p, axis=1)
    cm = confusion_matrix(t, pred, k)
    # zero_division=nan: precision of a class never predicted, recall of a class never true and
    # F1 of a class neither true nor predicted are NaN (the module docstring's rules)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        t, pred, labels=labels, zero_division=np.nan)
    negatives = n - support                       # TN + FP of each class
    fp = cm.sum(axis=0) - np.diag(cm)

    nan = float("nan")
    per_class: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        positives = t == i
        per_class[name] = {
            "support": int(support[i]),
            "sensitivity": float(recall[i]),
            "specificity": float((negatives[i] - fp[i]) / negatives[i]) if negatives[i] else nan,
            "precision": float(precision[i]),
            "f1": float(f1[i]),
            "auc": float(skm.roc_auc_score(positives, p[:, i])) if 0 < support[i] < n else nan,
            "average_precision": (float(skm.average_precision_score(positives, p[:, i]))
                                  if support[i] else nan),
        }

    return {
        "accuracy": float(skm.accuracy_score(t, pred)),
        "balanced_accuracy": balanced_accuracy(t, pred, k),
        "macro_auc": _nan_mean([v["auc"] for v in per_class.values()]),
        "macro_average_precision": _nan_mean([v["average_precision"] for v in per_class.values()]),
        "n_images": n,
        "class_names": list(names),
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": skm.confusion_matrix(
            t, pred, labels=labels, normalize="true").tolist(),
        "per_class": per_class,
    }


# --------------------------------------------------------------------------------------------
# classification: accumulating class
# --------------------------------------------------------------------------------------------

class ClassificationMetrics:
    """Accumulates (probabilities, targets) over batches for the ISIC 2018 Task 3 report.

    >>> m = ClassificationMetrics(CLASS_NAMES)
    >>> m.update(torch.softmax(logits, dim=1), labels)   # per batch
    >>> report = m.aggregate()                           # see classification_report_dict

    ``update`` takes **probabilities** (N, K), not logits, and integer targets (N,).
    """

    def __init__(self, class_names: Sequence[str] = CLASS_NAMES) -> None:
        self.class_names = _class_names(class_names)
        self.reset()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._probs: list[np.ndarray] = []
        self._targets: list[np.ndarray] = []

    @property
    def n_images(self) -> int:
        return int(sum(t.shape[0] for t in self._targets))

    def __len__(self) -> int:
        return self.n_images

    def update(self, probs: Any, targets: Any) -> None:
        """Add a batch of probabilities (N, K) and integer targets (N,)."""
        p = as_probabilities(probs, self.num_classes)
        t = as_labels(targets, self.num_classes, "targets")
        if p.shape[0] != t.shape[0]:
            raise ValueError(f"probs has {p.shape[0]} rows but targets has {t.shape[0]} entries.")
        self._probs.append(p)
        self._targets.append(t)

    def aggregate(self) -> dict[str, Any]:
        """The report over everything seen since the last ``reset()``."""
        if self.n_images == 0:
            raise ValueError(
                "ClassificationMetrics.aggregate() called before any sample was added with "
                "update()."
            )
        return classification_report_dict(
            np.concatenate(self._probs), np.concatenate(self._targets), self.class_names
        )


# --------------------------------------------------------------------------------------------
# baselines, curves, JSON
# --------------------------------------------------------------------------------------------

def majority_baseline(
    targets: Any, class_names: Sequence[str] = CLASS_NAMES, majority: str | int | None = "NV"
) -> dict[str, Any]:
    """Accuracy and balanced accuracy of always answering ``majority``.

    ``majority`` is a class name (case-insensitive) or index; ``None`` uses the most frequent
    class in ``targets`` (the lowest index on ties). Returns ``majority`` (the class name),
    ``accuracy``, ``balanced_accuracy`` and ``n_images``.
    """
    names = _class_names(class_names)
    k = len(names)
    t = as_labels(targets, k, "targets")
    if t.size == 0:
        raise ValueError("No targets.")
    if majority is None:
        idx = int(np.argmax(np.bincount(t, minlength=k)))
    elif isinstance(majority, (int, np.integer)) and not isinstance(majority, bool):
        idx = int(majority)
        if not 0 <= idx < k:
            raise ValueError(f"majority index {idx} out of range [0, {k}).")
    else:
        lookup = {n.lower(): i for i, n in enumerate(names)}
        try:
            idx = lookup[str(majority).strip().lower()]
        except KeyError:
            raise ValueError(
                f"majority {majority!r} is not one of the class names {names}."
            ) from None
    pred = np.full_like(t, idx)
    return {
        "majority": names[idx],
        "accuracy": float(np.mean(t == idx)),
        "balanced_accuracy": balanced_accuracy(t, pred, k),
        "n_images": int(t.size),
    }


def classes_present(targets: Any, class_names: Sequence[str] = CLASS_NAMES) -> list[str]:
    """The names of the classes that occur in ``targets`` (integer indices), in class order."""
    names = _class_names(class_names)
    t = as_labels(targets, len(names), "targets")
    counts = np.bincount(t, minlength=len(names))
    return [name for name, n in zip(names, counts) if n > 0]


def baselines(targets: Any, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, Any]:
    """What the classes of this set allow without looking at the images, so that a score on a
    set with only some of the classes can be read.

    Returns ``classes_present`` (`classes_present`), ``n_classes_present``, ``n_classes``,
    ``all_classes_present``, ``chance`` and ``majority``:

    * ``chance["balanced_accuracy"]`` is ``1 / n_classes_present``: the most that any answer
      independent of the image can expect (a constant answer, or guessing among the classes
      present; guessing among all classes expects less); ``chance["macro_auc"]`` and
      ``chance["mel_auc"]`` are 0.5 (scores independent of the truth);
    * ``majority`` is `majority_baseline` of the set's most frequent class (lowest index on ties):
      its accuracy is that class's share, its balanced accuracy ``1 / n_classes_present``.
    """
    names = _class_names(class_names)
    t = as_labels(targets, len(names), "targets")
    if t.size == 0:
        raise ValueError("No targets: there is nothing to compare with chance.")
    present = classes_present(t, names)
    return {
        "classes_present": present,
        "n_classes_present": len(present),
        "n_classes": len(names),
        "all_classes_present": len(present) == len(names),
        "chance": {"balanced_accuracy": 1.0 / len(present), "macro_auc": 0.5, "mel_auc": 0.5},
        "majority": majority_baseline(t, names, None),
    }


def melanoma_vs_rest(y_true: Any, p_mel: Any, threshold: float | None = None) -> dict[str, Any]:
    """Melanoma versus every other diagnosis, from one score per image.

    ``y_true`` (N,): 1 / True for a melanoma, 0 / False otherwise; ``p_mel`` (N,): P(MEL) in
    [0, 1] (calibrated or not: the threshold must be for the same kind); ``threshold``: call
    melanoma when ``p_mel >= threshold`` (None: no operating point).

    Returns ``auc`` (``sklearn.metrics.roc_auc_score``; NaN when the set has no melanoma or only
    melanomas, with the reason in ``notes``), ``n_images``, ``n_mel``, ``n_other``,
    ``threshold`` and at the threshold ``sensitivity`` (TP / (TP + FN), NaN without melanomas),
    ``specificity`` (TN / (TN + FP), NaN without other lesions), ``ppv`` (TP / (TP + FP), NaN when
    nothing is called melanoma) and the counts ``tp``, ``fn``, ``tn``, ``fp`` (None, and the rates
    NaN, when ``threshold`` is None).
    """
    y = as_numpy(y_true, dtype=None)
    p = as_numpy(p_mel)
    if y.ndim != 1 or p.ndim != 1 or y.shape != p.shape:
        raise ValueError(f"y_true and p_mel must be 1-D and equally long; got shapes {y.shape} and {p.shape}.")
    if y.size == 0:
        raise ValueError("No images: y_true and p_mel are empty.")
    if y.dtype != bool:
        if not np.issubdtype(y.dtype, np.number) or not np.isin(y, (0, 1)).all():
            raise ValueError("y_true must be 1 / True for melanoma and 0 / False otherwise; got other values "
                             f"({sorted(set(np.unique(y).tolist()) - {0, 1})[:5]}).")
        y = y.astype(bool)
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("p_mel must be probabilities in [0, 1] (P(MEL) of each image).")
    n_mel, n = int(y.sum()), int(y.size)
    nan = float("nan")
    notes = []
    if n_mel == 0:
        notes.append("no melanoma in this set: the AUC and the sensitivity are undefined")
    elif n_mel == n:
        notes.append("only melanomas in this set: the AUC and the specificity are undefined")
    out: dict[str, Any] = {
        "auc": float(skm.roc_auc_score(y, p)) if 0 < n_mel < n else nan,
        "n_images": n, "n_mel": n_mel, "n_other": n - n_mel,
        "threshold": None if threshold is None else float(threshold),
        "sensitivity": nan, "specificity": nan, "ppv": nan, "tp": None, "fn": None, "tn": None, "fp": None,
        "notes": notes,
    }
    if threshold is not None:
        called = p >= float(threshold)
        tp, fn = int((called & y).sum()), int((~called & y).sum())
        tn, fp = int((~called & ~y).sum()), int((called & ~y).sum())
        out.update(tp=tp, fn=fn, tn=tn, fp=fp,
                   sensitivity=tp / (tp + fn) if tp + fn else nan,
                   specificity=tn / (tn + fp) if tn + fp else nan,
                   ppv=tp / (tp + fp) if tp + fp else nan)
    return out


def roc_curves(
    probs: Any, targets: Any, class_names: Sequence[str] = CLASS_NAMES
) -> dict[str, dict[str, Any]]:
    """One-vs-rest ROC curve of each class, for plotting and for JSON:
    name -> ``{"fpr": [...], "tpr": [...], "auc": float}`` (plain lists and floats).

    Classes whose curve is undefined (no positives or no negatives in ``targets``) are left out.
    """
    names = _class_names(class_names)
    k = len(names)
    p = as_probabilities(probs, k)
    t = as_labels(targets, k, "targets")
    if p.shape[0] != t.shape[0]:
        raise ValueError(f"probs has {p.shape[0]} rows but targets has {t.shape[0]} entries.")
    curves: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        positives = t == i
        if 0 < int(positives.sum()) < t.size:
            fpr, tpr, _ = skm.roc_curve(positives, p[:, i])
            curves[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(),
                            "auc": float(skm.roc_auc_score(positives, p[:, i]))}
    return curves


def to_jsonable(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts.

    Recurses into dicts (keys made ``str`` unless already str/int/float/bool/None), lists,
    tuples and arrays; numpy scalars and arrays and torch tensors become Python values and
    lists; NaN and +-inf become ``None``.
    """
    if obj is None or isinstance(obj, (str, bool)):
        return obj
    if hasattr(obj, "detach") and hasattr(obj, "cpu"):  # torch.Tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, int):
        return obj
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if isinstance(key, np.generic):
                key = key.item()
            if not (key is None or isinstance(key, (str, int, float, bool))):
                key = str(key)
            out[key] = to_jsonable(value)
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    return obj
