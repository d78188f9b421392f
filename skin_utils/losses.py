"""`MultiTaskLoss`: seg_weight * BCE-with-logits(mask) + cls_weight * cross-entropy(diagnosis)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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
    label_smoothing: cross-entropy label smoothing.
    """

    def __init__(self, seg_weight: float = 1.0, cls_weight: float = 1.0,
                 class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0):
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

    def forward(self, mask_logits, class_logits, masks, labels) -> dict[str, torch.Tensor]:
        seg = F.binary_cross_entropy_with_logits(mask_logits.float(), masks.float())
        cls = F.cross_entropy(class_logits.float(), labels, weight=self.class_weights,
                              label_smoothing=self.label_smoothing)
        total = self.seg_weight * seg + self.cls_weight * cls
        return {"loss": total, "seg_loss": seg.detach(), "cls_loss": cls.detach()}
