"""Where does the classifier look? Grad-CAM, and a check of the heat maps against the lesion mask.

Grad-CAM (Selvaraju et al. 2017) of the classification head: the activations A (N, C, h, w) of a
target layer — by default ``model.encoder.layer4``, the deepest ResNet18 block, which the head
pools — are weighted by the spatial mean of the gradient of the chosen class logit,
``cam = ReLU(sum_c w_c A_c)``, upsampled bilinearly to the input size and divided by its maximum
(so the map lies in [0, 1], 0 stays "no evidence", and ratios between pixels are kept; an
all-zero map stays all zero). Grad-CAM++ (Chattopadhay et al. 2018) weights each location's
positive gradient instead, which spreads the map over several instances of a pattern.

Why our own code instead of ``grad-cam`` (pytorch-grad-cam 1.5.7) or Captum: the former
requires ``opencv-python-headless`` and ``ttach`` (two new binary dependencies for a resize), puts
the model in eval mode and leaves it there, and needs a wrapper for a model that returns
``(mask_logits, class_logits)``; Captum (0.9, ``LayerGradCam``) is light but has no Grad-CAM++ and
would be a new dependency for what is here a forward hook and one ``torch.autograd.grad`` call.
`grad_cam` registers one hook and removes it, computes gradients with ``torch.autograd.grad``
(nothing is accumulated into the parameters' ``.grad``), runs in eval mode and restores each
module's mode, also on error.

The quantitative check (the "energy-based pointing game" of Wang et al. 2020, Score-CAM):

* `cam_energy_inside(cam, mask)`: the share of the map's total value inside the lesion mask,
  ``sum(cam * mask) / sum(cam)``; NaN for an all-zero map.
* its baseline `mask_area_share(mask)`: the share of the image the mask covers — what a uniform
  map would score. A map that looks at the lesion scores well above it; ``lift`` is the ratio.
* `cam_peak_inside`: whether the hottest pixel lies in the lesion (the pointing game).
* `CamLocalizationMetrics` / `cam_localization_report`: these per image, means overall and per
  class, and the images whose map falls mostly outside the lesion (energy inside < 0.5), which are
  the ones to look at (ruler marks, hair, vignetting, ink).

Check against the **true** mask when evaluating; at inference only the predicted mask exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from skin_utils.metrics import as_numpy
from skin_utils.labels import CLASS_NAMES

__all__ = [
    "CAM_METHODS",
    "default_cam_layer",
    "grad_cam",
    "cam_energy_inside",
    "mask_area_share",
    "cam_peak_inside",
    "CamLocalizationMetrics",
    "cam_localization_report",
    "MOSTLY_OUTSIDE_BELOW",
]

CAM_METHODS = ("gradcam", "gradcam++")
#: A map with less than this share of its energy inside the lesion falls "mostly outside" it.
MOSTLY_OUTSIDE_BELOW = 0.5


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------

def default_cam_layer(model):
    """``model.encoder.layer4`` (MultiTaskNet's deepest encoder block), or an error saying to
    pass ``layer=``."""
    layer = getattr(getattr(model, "encoder", None), "layer4", None)
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no encoder.layer4; pass layer= (the module "
                         "whose output feeds the classification head).")
    return layer


def grad_cam(model, images, target: int | Sequence[int] | None = None, *, layer=None,
             method: str = "gradcam") -> tuple[np.ndarray, np.ndarray]:
    """Class activation maps of a batch, and the class each map explains.

    ``images``: a normalised float batch (N, 3, H, W) on the model's device (inference tensors
    and callers inside ``torch.inference_mode`` are fine). ``model(images)`` returns
    ``(mask_logits, class_logits)`` (MultiTaskNet) or class logits alone. ``target``: None for
    the predicted class of each image, one class index for all, or one per image. ``layer``:
    default `default_cam_layer`. ``method``: "gradcam" or "gradcam++".

    Returns ``cams`` float32 (N, H, W) in [0, 1] (see the module docstring) and ``classes``
    int64 (N,). The model's modes, hooks and parameter gradients are as they were before.
    """
    import torch
    import torch.nn.functional as F

    if method not in CAM_METHODS:
        raise ValueError(f"method={method!r}: choose one of {CAM_METHODS}.")
    if not (hasattr(images, "ndim") and images.ndim == 4):
        raise ValueError("images must be a tensor (N, 3, H, W); got "
                         f"{getattr(images, 'shape', type(images).__name__)}.")
    layer = default_cam_layer(model) if layer is None else layer
    store: dict[str, Any] = {}
    handle = layer.register_forward_hook(lambda module, inputs, output: store.__setitem__("a", output))
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.inference_mode(False), torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # activations need a grad path even
            output = model(x)                                  # when the weights are frozen
            logits = (output[1] if isinstance(output, (tuple, list)) else output).float()
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
            acts = store["a"]
            (grads,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), acts)
        a, g = acts.detach().float(), grads.detach().float()
        if method == "gradcam":
            weights = g.mean(dim=(2, 3), keepdim=True)
        else:  # Grad-CAM++, closed form with the exponential of the score (Chattopadhay et al., eq. 19)
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


# --------------------------------------------------------------------------------------------
# heat map vs lesion mask
# --------------------------------------------------------------------------------------------

def _maps(x: Any, name: str) -> list[np.ndarray]:
    """List of 2-D arrays from (H, W), (N, H, W), (N, 1, H, W) or a list of 2-D arrays."""
    if isinstance(x, (list, tuple)):
        maps = [as_numpy(m, dtype=None) for m in x]
    else:
        a = as_numpy(x, dtype=None)
        if a.ndim == 4 and a.shape[1] == 1:
            a = a[:, 0]
        maps = [a] if a.ndim == 2 else list(a) if a.ndim == 3 else None
        if maps is None:
            raise ValueError(f"{name} must have shape (H, W), (N, H, W) or (N, 1, H, W), or be a "
                             f"list of 2-D arrays; got {a.shape}.")
    for i, m in enumerate(maps):
        if m.ndim != 2:
            raise ValueError(f"{name}[{i}] must be 2-D (H, W); got shape {m.shape}.")
    return maps


def _one_or_many(values: list[float], single: bool):
    return values[0] if single else np.asarray(values, dtype=np.float64)


def _is_single(x: Any) -> bool:
    return not isinstance(x, (list, tuple)) and as_numpy(x, dtype=None).ndim == 2


def _checked_pairs(cam: Any, mask: Any):
    cams, masks = _maps(cam, "cam"), _maps(mask, "mask")
    if len(cams) != len(masks):
        raise ValueError(f"{len(cams)} maps but {len(masks)} masks.")
    pairs = []
    for i, (c, m) in enumerate(zip(cams, masks)):
        if c.shape != m.shape:
            raise ValueError(f"image {i}: cam {c.shape} and mask {m.shape} differ; resize the mask "
                             "to the map (nearest neighbour) or the map to the mask (bilinear).")
        c = np.asarray(c, dtype=np.float64)
        if not np.all(np.isfinite(c)) or (c.size and c.min() < 0):
            raise ValueError(f"image {i}: cam must be finite and non-negative.")
        pairs.append((c, m != 0))
    return pairs


def cam_energy_inside(cam: Any, mask: Any):
    """``sum(cam * mask) / sum(cam)``: the share of the heat map inside the mask (non-zero =
    lesion). A 2-D pair gives a float, a batch or a list a float64 array (N,). NaN where the map
    is all zero."""
    values = []
    for c, m in _checked_pairs(cam, mask):
        total = c.sum()
        values.append(float(c[m].sum() / total) if total > 0 else float("nan"))
    return _one_or_many(values, _is_single(cam))


def mask_area_share(mask: Any):
    """Share of the image the mask covers: what a uniform heat map scores in
    `cam_energy_inside`. Float for a 2-D mask, float64 (N,) for a batch or list."""
    values = [float(np.mean(m != 0)) if m.size else float("nan") for m in _maps(mask, "mask")]
    return _one_or_many(values, _is_single(mask))


def cam_peak_inside(cam: Any, mask: Any):
    """Whether the map's maximum (the first one on ties) lies inside the mask: a bool for a 2-D
    pair, a bool array (N,) for a batch. An all-zero map counts as a miss."""
    values = [bool(c.max() > 0 and m.flat[int(np.argmax(c))]) for c, m in _checked_pairs(cam, mask)]
    return values[0] if _is_single(cam) else np.asarray(values, dtype=bool)


class CamLocalizationMetrics:
    """Accumulates per-image heat-map-vs-mask scores over batches; the maps are not kept.

    >>> m = CamLocalizationMetrics()
    >>> m.update(cams, true_masks, labels, image_ids)     # per batch
    >>> report = m.aggregate()

    ``aggregate()`` returns

    * ``overall`` and ``per_class`` (class name -> the same keys, classes seen only):
      ``n_images``, ``energy_inside`` (mean), ``area_share`` (mean baseline), ``lift`` (mean of
      the per-image ratios energy / area), ``above_baseline`` (share of images whose energy
      inside exceeds the area share), ``peak_inside`` (share), ``mostly_outside`` (share below
      ``outside_below``), ``n_empty_cam``; means leave out the NaNs of all-zero maps;
    * ``per_image``: one dict per image (``index``, ``image_id``, ``label``, ``class_name``,
      ``energy_inside``, ``area_share``, ``lift``, ``peak_inside``), in the order added;
    * ``mostly_outside``: the per-image dicts with ``energy_inside < outside_below``, lowest first.
    """

    def __init__(self, class_names: Sequence[str] = CLASS_NAMES,
                 outside_below: float = MOSTLY_OUTSIDE_BELOW) -> None:
        if not 0.0 < float(outside_below) <= 1.0:
            raise ValueError(f"outside_below must be in (0, 1]; got {outside_below!r}.")
        self.class_names = [str(c) for c in class_names]
        self.outside_below = float(outside_below)
        self.reset()

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        self._rows: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def update(self, cams: Any, masks: Any, labels: Any = None, image_ids: Sequence | None = None) -> None:
        """Add a batch: maps and masks as (N, H, W) arrays/tensors or lists of 2-D arrays of
        matching shapes; ``labels`` (N,) class indices (None: per-class results are skipped);
        ``image_ids`` (N,) names for the listing (None: the running index)."""
        pairs = _checked_pairs(cams, masks)
        n = len(pairs)
        y = None if labels is None else as_numpy(labels, dtype=None).reshape(-1)
        if y is not None and len(y) != n:
            raise ValueError(f"{n} maps but {len(y)} labels.")
        if image_ids is not None and len(image_ids) != n:
            raise ValueError(f"{n} maps but {len(image_ids)} image_ids.")
        for i, (c, m) in enumerate(pairs):
            total, area = c.sum(), float(m.mean()) if m.size else float("nan")
            energy = float(c[m].sum() / total) if total > 0 else float("nan")
            label = None if y is None else int(y[i])
            if label is not None and not 0 <= label < len(self.class_names):
                raise ValueError(f"label {label} out of range [0, {len(self.class_names)}).")
            index = len(self._rows)
            self._rows.append({
                "index": index,
                "image_id": str(image_ids[i]) if image_ids is not None else str(index),
                "label": label,
                "class_name": None if label is None else self.class_names[label],
                "energy_inside": energy,
                "area_share": area,
                "lift": energy / area if area > 0 else float("nan"),
                "peak_inside": bool(total > 0 and m.flat[int(np.argmax(c))]),
            })

    def _summary(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        def nanmean(key):
            v = [r[key] for r in rows if not math.isnan(r[key])]
            return float(np.mean(v)) if v else float("nan")
        scored = [r for r in rows if not math.isnan(r["energy_inside"])]
        share = (lambda pred: float(np.mean([pred(r) for r in scored])) if scored else float("nan"))
        return {
            "n_images": len(rows),
            "energy_inside": nanmean("energy_inside"),
            "area_share": nanmean("area_share"),
            "lift": nanmean("lift"),
            "above_baseline": share(lambda r: r["energy_inside"] > r["area_share"]),
            "peak_inside": float(np.mean([r["peak_inside"] for r in rows])) if rows else float("nan"),
            "mostly_outside": share(lambda r: r["energy_inside"] < self.outside_below),
            "n_empty_cam": len(rows) - len(scored),
        }

    def aggregate(self) -> dict[str, Any]:
        """The report over everything added since the last ``reset()`` (see the class docstring)."""
        if not self._rows:
            raise ValueError("CamLocalizationMetrics.aggregate() called before any map was added "
                             "with update().")
        per_class = {}
        for k, name in enumerate(self.class_names):
            rows = [r for r in self._rows if r["label"] == k]
            if rows:
                per_class[name] = self._summary(rows)
        outside = sorted((r for r in self._rows
                          if not math.isnan(r["energy_inside"]) and r["energy_inside"] < self.outside_below),
                         key=lambda r: r["energy_inside"])
        return {
            "overall": self._summary(self._rows),
            "per_class": per_class,
            "per_image": [dict(r) for r in self._rows],
            "mostly_outside": [dict(r) for r in outside],
            "outside_below": self.outside_below,
        }


def cam_localization_report(cams: Any, masks: Any, labels: Any = None, image_ids: Sequence | None = None,
                            class_names: Sequence[str] = CLASS_NAMES,
                            outside_below: float = MOSTLY_OUTSIDE_BELOW) -> dict[str, Any]:
    """`CamLocalizationMetrics` of one set of maps in one call (see its docstring)."""
    metrics = CamLocalizationMetrics(class_names, outside_below)
    metrics.update(cams, masks, labels, image_ids)
    return metrics.aggregate()
