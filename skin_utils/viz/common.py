"""What every figure module shares: the colours, figure set-up, input checks, image and mask
drawing, and saving.

Conventions of every ``plot_*`` function in ``skin_utils.viz``:

* it takes exactly what one project function returns (each docstring names it) and raises a
  ``ValueError`` that says what was expected when given something else;
* it returns a :class:`matplotlib.figure.Figure` and never calls ``plt.show()``; its ``title``
  becomes the figure's suptitle (callers put e.g. "synthetic demo data" into it);
* the seven HAM10000 classes always get the same colour (:data:`CLASS_COLORS`, Okabe-Ito,
  colour-blind friendly), in the :data:`~skin_utils.labels.CLASS_NAMES` order;
* in mask figures the true (ground-truth) contour is green and the predicted one magenta.

:func:`publish` saves a figure and shows it in the notebook; :func:`save_figure` only saves it.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Figures are created through pyplot so that notebooks display them inline; pyplot only picks an
# interactive backend when one is available, otherwise Agg.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from skin_utils.labels import CLASS_NAMES

__all__ = [
    "CLASS_COLORS",
    "TRUE_MASK_COLOR",
    "PRED_MASK_COLOR",
    "CORRECT_COLOR",
    "WRONG_COLOR",
    "class_color",
    "color_class_ticks",
    "new_figure",
    "suptitle",
    "no_data",
    "require",
    "check_image",
    "check_mask",
    "image_axes",
    "show_image",
    "draw_contour",
    "cell_aspect",
    "overlay_mask",
    "save_figure",
    "publish",
]

#: One fixed colour per diagnosis (Okabe & Ito palette, distinguishable with the common forms of
#: colour blindness). Melanoma gets the warning-like vermillion, nevi the calm blue.
CLASS_COLORS: dict[str, str] = {
    "MEL": "#D55E00",  # vermillion
    "NV": "#0072B2",  # blue
    "BCC": "#E69F00",  # orange
    "AKIEC": "#CC79A7",  # reddish purple
    "BKL": "#56B4E9",  # sky blue
    "DF": "#009E73",  # bluish green
    "VASC": "#000000",  # black
}
#: Contour colours in mask overlays (green / magenta is a colour-blind safe pair).
TRUE_MASK_COLOR = "#00C800"
PRED_MASK_COLOR = "#FF00FF"
#: Text colours for a correct / wrong prediction (a check mark or cross is added as well).
CORRECT_COLOR = "#1A7F37"
WRONG_COLOR = "#C62828"


def class_color(name: str) -> str:
    """The fixed colour of a class, by its name in ``CLASS_NAMES`` (e.g. ``"MEL"``)."""
    try:
        return CLASS_COLORS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"No colour for class {name!r}: the figures draw the HAM10000 classes {CLASS_NAMES}."
        ) from None


def color_class_ticks(ticklabels, names: Sequence[str]) -> None:
    """Colour (and embolden) tick labels that stand for the classes ``names``, in order."""
    for tick, name in zip(ticklabels, names):
        tick.set_color(class_color(name))
        tick.set_fontweight("bold")


# --------------------------------------------------------------------------------------------
# figure set-up and input checks
# --------------------------------------------------------------------------------------------


def new_figure(nrows: int = 1, ncols: int = 1, figsize=None, **kwargs):
    """``(fig, axes)`` with constrained layout; ``axes`` is always a 2-D array."""
    return plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", squeeze=False,
                        **kwargs)


def suptitle(fig: Figure, title: str | None) -> Figure:
    """Set the figure's bold title (nothing when ``title`` is empty); returns ``fig``."""
    if title:
        fig.suptitle(title, fontsize=13, fontweight="bold")
    return fig


def no_data(ax, text: str) -> None:
    """An empty panel that says why it is empty."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            color="0.4", fontsize=10, style="italic")
    ax.set_xticks([])
    ax.set_yticks([])


def require(obj: Any, keys: Iterable[str], takes: str) -> None:
    """Raise ``ValueError`` unless ``obj`` (a mapping, or a DataFrame for columns) has every
    key of ``keys``; ``takes`` says what the plotting function takes, e.g.
    "plot_roc_curves takes the return value of metrics.roc_curves"."""
    if isinstance(obj, pd.DataFrame):
        present, kind = set(obj.columns), "columns"
    elif isinstance(obj, Mapping):
        present, kind = set(obj), "keys"
    else:
        raise ValueError(f"{takes}; got a {type(obj).__name__}.")
    missing = [k for k in keys if k not in present]
    if missing:
        raise ValueError(f"{takes}; {kind} {missing} are missing (got {sorted(map(str, present))}).")


def check_image(image: Any, where: str) -> np.ndarray:
    """``image`` as it comes from ``data.imageio.read_image``: a uint8 (H, W, 3) array."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{where}: expected a uint8 (H, W, 3) image as read_image returns; "
                         f"got {img.dtype} {img.shape}.")
    return img


def check_mask(mask: Any, shape: tuple[int, int], where: str) -> np.ndarray:
    """A boolean (H, W) mask from a bool or 0/1 integer array (what ``read_mask`` and the
    predictions give) of exactly the image's size ``shape``."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{where}: the mask has shape {m.shape} but its image is {tuple(shape)}; "
                         "read or upsample masks at the image's size.")
    if m.dtype == bool:
        return m
    if np.issubdtype(m.dtype, np.integer) and (m.size == 0 or (m.min() >= 0 and m.max() <= 1)):
        return m.astype(bool)
    raise ValueError(f"{where}: a mask must be bool or hold 0/1 integers (read_mask's values); "
                     f"got {m.dtype} with values in [{m.min()}, {m.max()}].")


# --------------------------------------------------------------------------------------------
# images and masks
# --------------------------------------------------------------------------------------------


def image_axes(ax) -> None:
    """No ticks and no frame: an axes that only shows an image."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def show_image(ax, img: np.ndarray, frame_color=None, cmap=None, fill_cell: bool = True) -> None:
    """imshow (a ``cmap`` is for 0/1 masks); with ``fill_cell`` the axes fill the whole grid
    cell (the data limits grow instead of the axes shrinking), so that images of different
    shapes keep the rows and columns of a grid aligned."""
    h, w = img.shape[:2]
    if cmap is None:
        ax.imshow(img, interpolation="antialiased")
    else:
        ax.imshow(img, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    if fill_cell:
        # limits stay on autoscale (the image extent): fixed limits would make "datalim" warn
        ax.set_aspect("equal", adjustable="datalim")
    if frame_color is not None:
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=frame_color, lw=2.5))


def draw_contour(ax, mask: np.ndarray, color: str, lw: float = 1.6) -> None:
    """Outline of a boolean mask on ``ax``; nothing for an empty or full mask."""
    if not mask.any() or mask.all():
        return
    # pad so that a lesion touching the border gets a closed contour
    padded = np.pad(mask.astype(float), 1)
    ys = np.arange(-1, mask.shape[0] + 1)
    xs = np.arange(-1, mask.shape[1] + 1)
    ax.contour(xs, ys, padded, levels=[0.5], colors=[color], linewidths=lw)


def cell_aspect(images: Sequence[np.ndarray]) -> float:
    """Median height/width of the images, clamped to [0.5, 1.4], to size grid cells."""
    ratios = [im.shape[0] / im.shape[1] for im in images]
    return float(np.clip(np.median(ratios), 0.5, 1.4)) if ratios else 0.75


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """4-neighbour binary erosion with numpy shifts; outside the image counts as "same as edge"
    so a lesion cut by the image border gets no contour along the border."""
    out = mask.copy()
    for _ in range(iterations):
        p = np.pad(out, 1, mode="edge")
        out = p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return out


def overlay_mask(
    image,
    mask,
    color: str = PRED_MASK_COLOR,
    alpha: float = 0.4,
    contour: bool = True,
    thickness: int | None = None,
) -> np.ndarray:
    """``image`` (uint8 (H, W, 3), as ``read_image`` gives) with ``mask`` (bool or 0/1, same
    (H, W)) blended in ``color`` (any matplotlib colour) at ``alpha`` and, with ``contour``,
    the mask outline drawn opaque (``thickness`` pixels, by default about 1/200 of the shorter
    side). Pure numpy; only pixels on or inside the mask change. Returns a new uint8 array."""
    img = check_image(image, "overlay_mask")
    m = check_mask(mask, img.shape[:2], "overlay_mask")
    col = np.asarray(to_rgb(color)) * 255.0
    out = img.astype(float)
    if alpha > 0:
        out[m] = (1.0 - alpha) * out[m] + alpha * col
    if contour and m.any():
        t = thickness if thickness is not None else max(1, round(min(m.shape) / 200))
        out[m & ~_erode(m, max(int(t), 1))] = col
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------


def save_figure(fig: Figure, path, dpi: int = 120, close: bool = True) -> pathlib.Path:
    """Write ``fig`` to ``path`` (parent folders created, ``bbox_inches="tight"``).

    The figure is closed afterwards (``close=False`` keeps it, e.g. to still display it inline
    in a notebook: a closed figure is not shown at the end of the cell). Returns the path.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    if close:
        plt.close(fig)
    return path


def publish(fig: Figure, path, dpi: int = 120) -> pathlib.Path:
    """Save ``fig`` like `save_figure`, show it in the notebook when there is one, then close
    it: what a notebook cell calls so that the figure is both in ``reports/`` and on screen."""
    path = save_figure(fig, path, dpi=dpi, close=False)
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(fig)
    except ImportError:
        pass
    plt.close(fig)
    return path
