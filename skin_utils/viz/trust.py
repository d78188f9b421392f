"""Figures for trusting a prediction: reliability diagrams, risk-coverage curves, Grad-CAM overlays.

The conventions of `skin_utils.viz.common` hold: each ``plot_*`` takes what one function of
`skin_utils.trust.calibration`, `skin_utils.trust.uncertainty` or `skin_utils.trust.explain` returns (its docstring
names it) and raises a ``ValueError`` saying what it expected otherwise, returns a Figure and
never calls ``plt.show()``, ``title`` becomes the suptitle, the true lesion contour is green and
the predicted one magenta. Images are uint8 (H, W, 3) as ``read_image`` gives them, masks bool or
0/1 at the image's size; a heat map may have any size (it is resized bilinearly to the image).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from skin_utils.viz.common import (
    PRED_MASK_COLOR,
    TRUE_MASK_COLOR,
    check_image,
    check_mask,
    draw_contour,
    image_axes,
    new_figure,
    require,
    suptitle,
)

__all__ = [
    "plot_reliability_diagram",
    "plot_risk_coverage",
    "plot_cam_overlay",
    "plot_cam_grid",
    "CAM_CMAP",
]

#: Colour map of the heat maps (perceptually uniform, dark = no evidence).
CAM_CMAP = "inferno"
_GAP_COLOR = "#C62828"
_BAR_COLOR = "#0072B2"
_RELIABILITY_KEYS = ("bin_edges", "confidence", "accuracy", "count", "ece", "accuracy_overall",
                     "confidence_overall")
_RISK_KEYS = ("coverage", "risk", "optimal_risk", "aurc", "optimal_aurc", "error_rate")


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------

def _reliability_panel(ax, hist_ax, diagram: Mapping[str, Any], name: str) -> None:
    edges = np.asarray(diagram["bin_edges"], dtype=float)
    conf = np.asarray(diagram["confidence"], dtype=float)
    acc = np.asarray(diagram["accuracy"], dtype=float)
    count = np.asarray(diagram["count"], dtype=float)
    left, width = edges[:-1], np.diff(edges)
    filled = count > 0
    ax.bar(left[filled], acc[filled], width[filled], align="edge", color=_BAR_COLOR,
           edgecolor="white", label="accuracy in bin")
    # the gap between the bin's mean confidence and its accuracy
    ax.bar(left[filled], conf[filled] - acc[filled], width[filled], bottom=acc[filled], align="edge",
           color=_GAP_COLOR, alpha=0.35, edgecolor=_GAP_COLOR, hatch="//", label="gap to confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="0.3", lw=1, label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy")
    ax.set_title(f"{name}\nECE {diagram['ece']:.3f} · accuracy {diagram['accuracy_overall']:.3f} · "
                 f"mean confidence {diagram['confidence_overall']:.3f}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    hist_ax.bar(left, count / max(count.sum(), 1), width, align="edge", color="0.5", edgecolor="white")
    hist_ax.set(xlim=(0, 1), xlabel="confidence (top-label probability)", ylabel="share of images")


def plot_reliability_diagram(before: Mapping[str, Any], after: Mapping[str, Any] | None = None, *,
                             names: Sequence[str] = ("uncalibrated", "temperature-scaled"),
                             temperature: float | None = None, title: str | None = None) -> Figure:
    """Reliability diagram(s) from `skin_utils.trust.calibration.reliability_diagram`: accuracy per
    confidence bin against the diagonal, the gap hatched, and below it the share of images per
    bin. ``after`` (e.g. after temperature scaling) adds a second column; ``temperature`` is
    written into its name."""
    diagrams = [before] + ([after] if after is not None else [])
    for d in diagrams:
        require(d, _RELIABILITY_KEYS,
                "plot_reliability_diagram takes the return value of calibration.reliability_diagram")
    labels = list(names[: len(diagrams)])
    if after is not None and temperature is not None:
        labels[1] = f"{labels[1]} (T = {temperature:.2f})"
    fig, axes = new_figure(2, len(diagrams), figsize=(4.6 * len(diagrams), 5.6),
                           gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for j, (d, name) in enumerate(zip(diagrams, labels)):
        _reliability_panel(axes[0, j], axes[1, j], d, name)
    return suptitle(fig, title)


# --------------------------------------------------------------------------------------------
# selective prediction
# --------------------------------------------------------------------------------------------

def plot_risk_coverage(curves: Mapping[str, Mapping[str, Any]] | Mapping[str, Any], *,
                       mark_coverages: Sequence[float] = (0.9, 0.8, 0.7),
                       title: str | None = None) -> Figure:
    """Risk (error rate of the kept images) against coverage (share kept), one line per
    uncertainty measure, from `skin_utils.trust.uncertainty.risk_coverage_curve` (a dict of them by
    name, or one). The oracle (every error referred first) of the first curve is dashed, a
    random referral is the flat dotted line; dotted verticals mark ``mark_coverages``."""
    if isinstance(curves, Mapping) and "risk" in curves:  # a single curve
        curves = {"uncertainty": curves}
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("plot_risk_coverage takes uncertainty.risk_coverage_curve's return value, "
                         "or a non-empty dict of them by name.")
    for c in curves.values():
        require(c, _RISK_KEYS, "plot_risk_coverage takes the return value of "
                "uncertainty.risk_coverage_curve (or a dict of them by name)")
    fig, axes = new_figure(figsize=(6.2, 4.4))
    ax = axes[0, 0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, c) in enumerate(curves.items()):
        ax.plot(c["coverage"], c["risk"], color=colors[i % len(colors)], lw=1.8,
                label=f"{name} (AURC {c['aurc']:.3f})")
    first = next(iter(curves.values()))
    ax.plot(first["coverage"], first["optimal_risk"], ls="--", color="0.35", lw=1.2,
            label=f"oracle (AURC {first['optimal_aurc']:.3f})")
    ax.axhline(first["error_rate"], ls=":", color="0.35", lw=1.2,
               label=f"random referral (AURC {first['error_rate']:.3f})")
    for c in mark_coverages:
        ax.axvline(c, color="0.8", lw=0.8, zorder=0)
    ax.set(xlim=(0, 1), ylim=(0, None), xlabel="coverage (share of images decided automatically)",
           ylabel="risk (error rate of those images)")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    return suptitle(fig, title)


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------

def _cam_at(cam: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    """The heat map as float32 in [0, 1], resized bilinearly to ``shape`` (H, W)."""
    from PIL import Image

    c = np.asarray(cam, dtype=np.float32)
    if c.ndim != 2 or not np.all(np.isfinite(c)) or (c.size and (c.min() < 0 or c.max() > 1)):
        raise ValueError(f"{where}: a heat map is a finite 2-D array in [0, 1] as explain.grad_cam "
                         f"gives it; got shape {c.shape}.")
    if c.shape != tuple(shape):
        c = np.asarray(Image.fromarray(c, mode="F").resize(shape[::-1], Image.BILINEAR))
    return np.clip(c, 0, 1)


def _draw_cam(ax, image, cam, mask=None, pred_mask=None, caption: str | None = None,
              alpha: float = 0.45, where: str = "plot_cam_overlay") -> None:
    img = check_image(image, where)
    shape = img.shape[:2]
    ax.imshow(img)
    if cam is not None:
        ax.imshow(_cam_at(cam, shape, where), cmap=CAM_CMAP, vmin=0, vmax=1, alpha=alpha)
    if mask is not None:
        draw_contour(ax, check_mask(mask, shape, f"{where} (true mask)"), TRUE_MASK_COLOR)
    if pred_mask is not None:
        draw_contour(ax, check_mask(pred_mask, shape, f"{where} (predicted mask)"), PRED_MASK_COLOR)
    image_axes(ax)
    if caption:
        ax.set_title(caption, fontsize=9)


def plot_cam_overlay(image, cam, mask=None, pred_mask=None, *, caption: str | None = None,
                     alpha: float = 0.45, title: str | None = None) -> Figure:
    """The image, beside it the image with the heat map ``cam`` (in [0, 1], any size: resized
    bilinearly to the image) blended at ``alpha``, and the true (green) and predicted (magenta)
    lesion contours on both. ``caption`` goes above the overlay (e.g. the predicted class, its
    probability and `cam_energy_inside`)."""
    fig, axes = new_figure(1, 2, figsize=(8.4, 4.2))
    axes = axes[0]
    _draw_cam(axes[0], image, None, mask, pred_mask, "image")
    _draw_cam(axes[1], image, cam, mask, pred_mask, caption or "Grad-CAM", alpha)
    sm = plt.cm.ScalarMappable(cmap=CAM_CMAP, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=axes[1], fraction=0.046, pad=0.02, label="relative evidence")
    return suptitle(fig, title)


def plot_cam_grid(images, cams, masks=None, pred_masks=None, captions: Sequence[str] | None = None, *,
                  ncols: int = 4, alpha: float = 0.45, title: str | None = None) -> Figure:
    """A grid of heat-map overlays (e.g. the ``mostly_outside`` cases of
    `skin_utils.trust.explain.cam_localization_report`), contours as in `plot_cam_overlay`."""
    n = len(images)
    if n == 0:
        raise ValueError("plot_cam_grid: no images given.")
    if len(cams) != n:
        raise ValueError(f"{n} images but {len(cams)} heat maps.")
    for name, seq in (("masks", masks), ("pred_masks", pred_masks), ("captions", captions)):
        if seq is not None and len(seq) != n:
            raise ValueError(f"{n} images but {len(seq)} {name}.")
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows))
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        _draw_cam(ax, images[i], cams[i], None if masks is None else masks[i],
                  None if pred_masks is None else pred_masks[i],
                  None if captions is None else captions[i], alpha, where=f"plot_cam_grid image {i}")
    return suptitle(fig, title)
