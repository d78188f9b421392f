"""`MultiTaskLoss` (seg_weight x BCE of the mask + cls_weight x cross-entropy of the diagnosis) and
`build_loss`, which sets it up for one answer to class imbalance (`config.CLASS_BALANCE`)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from skin_utils.config import CLASS_BALANCE


def _counts(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        raise ValueError("all class counts are zero: no training image has a diagnosis")
    return counts


def logit_adjustment_from_counts(counts, tau: float = 1.0) -> torch.Tensor:
    """``tau * log(prior)`` per class (Menon et al., ICLR 2021): added to the logits in training
    only, it makes the plain ``argmax`` approximate the balanced-error-optimal decision (tau=1)
    without up-weighting rare-class gradients. A class with no sample gets the smallest prior seen."""
    counts = _counts(counts)
    prior = np.where(counts > 0, counts, counts[counts > 0].min()) / counts.sum()
    return torch.tensor(tau * np.log(prior), dtype=torch.float32)


def class_weights_from_counts(counts, power: float = 0.5) -> torch.Tensor:
    """Cross-entropy weights ``(N / (K * n_k)) ** power`` (0 for an absent class), mean 1 per training sample:
    1 is inverse frequency, 0.5 its square root (rare classes heard without wrecking NV), 0 none."""
    counts = _counts(counts)
    with np.errstate(divide="ignore"):
        w = np.where(counts > 0, (counts.sum() / (np.count_nonzero(counts) * counts)) ** power, 0.0)
    return torch.tensor(w * counts.sum() / (w * counts).sum(), dtype=torch.float32)


class MultiTaskLoss(nn.Module):
    """``seg_weight`` x BCE(mask) + ``cls_weight`` x cross-entropy(diagnosis); a ``logit_adjustment`` is
    added inside the cross-entropy only (predictions use the raw logits)."""

    def __init__(self, seg_weight: float = 1.0, cls_weight: float = 1.0, class_weights: torch.Tensor | None = None,
                 label_smoothing: float = 0.0, logit_adjustment: torch.Tensor | None = None):
        super().__init__()
        if seg_weight < 0 or cls_weight < 0 or seg_weight + cls_weight == 0:
            raise ValueError(f"seg_weight={seg_weight} and cls_weight={cls_weight}: both must be >= 0 and "
                             "at least one > 0.")
        self.seg_weight, self.cls_weight = float(seg_weight), float(cls_weight)
        self.label_smoothing = float(label_smoothing)
        for name, value in (("class_weights", class_weights), ("logit_adjustment", logit_adjustment)):
            self.register_buffer(name, None if value is None else torch.as_tensor(value, dtype=torch.float32))

    def forward(self, mask_logits, class_logits, masks, labels) -> dict[str, torch.Tensor]:
        seg = F.binary_cross_entropy_with_logits(mask_logits.float(), masks.float())
        logits = class_logits.float() if self.logit_adjustment is None else class_logits.float() + self.logit_adjustment
        # label -1 (no diagnosis: a masks-only folder) is left out; a batch with no diagnosis at all gives NaN
        cls = F.cross_entropy(logits, labels, weight=self.class_weights, label_smoothing=self.label_smoothing,
                              ignore_index=-1)
        # cls_weight 0: the head is not trained, its loss stays out, its gradient zero (DDP wants one)
        cls_term = self.cls_weight * cls if self.cls_weight else 0.0 * logits.sum()
        return {"loss": self.seg_weight * seg + cls_term, "seg_loss": seg.detach(), "cls_loss": cls.detach()}


def build_loss(class_counts, seg_weight: float = 1.0, cls_weight: float = 1.0, class_balance: str = "weighted_loss",
               balance_power: float = 0.5, label_smoothing: float = 0.0) -> MultiTaskLoss:
    """The loss for ``class_balance`` at strength ``balance_power`` (1: full correction of the training
    prior): "weighted_loss" and "both" weight the cross-entropy, "logit_adjusted" adjusts the logits
    (tau = power); "none" and "sampler" keep it plain (the sampler draws rare classes more often).
    ``class_counts`` may be None for "none" (a run that does not train the diagnosis head)."""
    if class_balance not in CLASS_BALANCE:
        raise ValueError(f"class_balance={class_balance!r}: choose one of {CLASS_BALANCE}.")
    weighted, adjusted = class_balance in ("weighted_loss", "both"), class_balance == "logit_adjusted"
    weights = class_weights_from_counts(class_counts, balance_power) if weighted else None
    adjust = logit_adjustment_from_counts(class_counts, balance_power) if adjusted else None
    return MultiTaskLoss(seg_weight, cls_weight, class_weights=weights, label_smoothing=label_smoothing,
                         logit_adjustment=adjust)
