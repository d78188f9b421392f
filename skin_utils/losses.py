"""`MultiTaskLoss`: seg_weight * BCE-with-logits(mask) + cls_weight * cross-entropy(diagnosis),
and `build_loss`, which sets it up for one of the answers to class imbalance (`CLASS_BALANCE`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: The answers to class imbalance that training offers (see `build_loss`; "sampler" and "both"
#: also make the training loader draw rare classes more often).
CLASS_BALANCE = ("none", "weighted_loss", "sampler", "both", "logit_adjusted")


def logit_adjustment_from_counts(counts, tau: float = 1.0) -> torch.Tensor:
    """``tau * log(prior)`` per class, for the logit-adjusted cross-entropy of Menon et al.
    (ICLR 2021, "Long-tail learning via logit adjustment"): adding it to the logits during
    training only makes the plain ``argmax`` of the trained model approximate the
    balanced-error-optimal decision (``tau=1``), without up-weighting rare-class gradients.
    Classes with no training sample get the smallest prior seen."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("logit_adjustment_from_counts: all class counts are zero")
    prior = np.where(counts > 0, counts, counts[counts > 0].min()) / counts.sum()
    return torch.tensor(tau * np.log(prior), dtype=torch.float32)


def class_weights_from_counts(counts, power: float = 0.5) -> torch.Tensor:
    """Cross-entropy class weights ``(N / (K * n_k)) ** power``, renormalised to mean 1 over
    the training samples. ``power=1`` is inverse frequency, ``0.5`` its square root (what we
    recommend: rare classes get heard without wrecking NV), ``0`` no weighting.
    Classes with no training sample get weight 0."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("class_weights_from_counts: all class counts are zero")
    k = np.count_nonzero(counts)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, (counts.sum() / (k * counts)) ** power, 0.0)
    w = w * counts.sum() / (w * counts).sum()  # expected weight per sample = 1
    return torch.tensor(w, dtype=torch.float32)


class MultiTaskLoss(nn.Module):
    """Weighted sum of the two task losses; ``forward`` returns the total and each part.

    Parameters
    ----------
    seg_weight, cls_weight: weights of the mask BCE and the diagnosis cross-entropy.
    class_weights: optional per-class cross-entropy weights (see `class_weights_from_counts`).
    logit_adjustment: optional per-class offsets added to the logits inside the cross-entropy
        only (see `logit_adjustment_from_counts`); predictions use the raw logits.
    label_smoothing: cross-entropy label smoothing.
    """

    def __init__(self, seg_weight: float = 1.0, cls_weight: float = 1.0,
                 class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 logit_adjustment: torch.Tensor | None = None):
        super().__init__()
        if seg_weight < 0 or cls_weight < 0 or seg_weight + cls_weight == 0:
            raise ValueError(
                f"seg_weight={seg_weight} and cls_weight={cls_weight}: both must be >= 0 and "
                "at least one > 0."
            )
        self.seg_weight = float(seg_weight)
        self.cls_weight = float(cls_weight)
        self.label_smoothing = float(label_smoothing)
        self.register_buffer(
            "class_weights",
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32),
        )
        self.register_buffer(
            "logit_adjustment",
            None if logit_adjustment is None else torch.as_tensor(logit_adjustment, dtype=torch.float32),
        )

    def forward(self, mask_logits, class_logits, masks, labels) -> dict[str, torch.Tensor]:
        seg = F.binary_cross_entropy_with_logits(mask_logits.float(), masks.float())
        logits = class_logits.float()
        if self.logit_adjustment is not None:
            logits = logits + self.logit_adjustment
        cls = F.cross_entropy(logits, labels, weight=self.class_weights,
                              label_smoothing=self.label_smoothing)
        total = self.seg_weight * seg + self.cls_weight * cls
        return {"loss": total, "seg_loss": seg.detach(), "cls_loss": cls.detach()}


TASKS = ("segmentation", "classification")


def trained_tasks(seg_weight: float = 1.0, cls_weight: float = 1.0) -> list[str]:
    """The heads a run trains: a loss weight of 0 leaves that head untrained, and its metrics
    are not applicable (reported as such, never as numbers)."""
    return [task for task, weight in zip(TASKS, (seg_weight, cls_weight)) if float(weight) > 0]


def build_loss(class_counts, seg_weight: float = 1.0, cls_weight: float = 1.0,
               class_balance: str = "weighted_loss", balance_power: float = 0.5,
               label_smoothing: float = 0.0) -> MultiTaskLoss:
    """The multi-task loss with the chosen answer to class imbalance, at strength
    ``balance_power`` (0 = none, 1 = full correction of the training prior), from the training
    set's ``class_counts``:
    ``weighted_loss`` / ``both``: cross-entropy weights ~ (1 / count) ** power;
    ``logit_adjusted``: logit-adjusted cross-entropy with tau = power;
    ``none`` / ``sampler``: plain cross-entropy (with ``sampler`` the loader draws rare classes
    more often instead)."""
    if class_balance not in CLASS_BALANCE:
        raise ValueError(f"class_balance={class_balance!r}: choose one of {CLASS_BALANCE}.")
    weights = adjust = None
    if class_balance in ("weighted_loss", "both"):
        weights = class_weights_from_counts(class_counts, balance_power)
    if class_balance == "logit_adjusted":
        adjust = logit_adjustment_from_counts(class_counts, balance_power)
    return MultiTaskLoss(seg_weight, cls_weight, class_weights=weights, label_smoothing=label_smoothing,
                         logit_adjustment=adjust)
