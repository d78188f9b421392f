"""Figures for the data, the training run and the evaluation, meant to be looked at by a clinician.

Conventions shared by every function here:

* inputs are plain numpy arrays, pandas objects, lists and dicts (no torch);
* every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` and never calls
  ``plt.show()``; a ``title`` argument is always accepted (callers put e.g.
  "synthetic demo data" into it) and becomes the figure's suptitle;
* the seven HAM10000 classes always get the same colour (:data:`CLASS_COLORS`, Okabe-Ito,
  colour-blind friendly), in the :data:`~skin_utils.labels.CLASS_NAMES` order;
* in mask figures the true (ground-truth) contour is green and the predicted one magenta;
* :func:`save_figure` writes a PNG (or any format matplotlib knows) and closes the figure.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib
import matplotlib.colors
import matplotlib.ticker

# Figures are created through pyplot so that notebooks display them inline; pyplot only picks an
# interactive backend when one is available, otherwise Agg.
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap, to_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from skin_utils.labels import CLASS_DESCRIPTIONS, CLASS_NAMES

__all__ = [
    "CLASS_COLORS",
    "TRUE_MASK_COLOR",
    "PRED_MASK_COLOR",
    "CORRECT_COLOR",
    "WRONG_COLOR",
    "class_color",
    "save_figure",
    "publish",
    "plot_class_distribution",
    "plot_split_counts",
    "plot_images_per_lesion",
    "plot_metadata",
    "plot_mask_area",
    "plot_sample_grid",
    "plot_learning_curves",
    "plot_confusion_matrix",
    "plot_roc_curves",
    "plot_per_class_metrics",
    "plot_overlay_grid",
    "overlay_mask",
    "plot_benchmark",
]

# --------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------

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

_FALLBACK_COLORS = plt.get_cmap("tab10").colors
_SPLIT_ORDER = ("train", "val", "validation", "valid", "test")
_SPLIT_HATCH = {"train": "", "val": "///", "validation": "///", "valid": "///", "test": "..."}
_SPLIT_ALPHA = {"train": 1.0, "val": 0.65, "validation": 0.65, "valid": 0.65, "test": 0.4}


def class_color(name_or_index: str | int, class_names: Sequence[str] = CLASS_NAMES) -> str:
    """The fixed colour of a class, by name (any case) or by index into ``class_names``."""
    name = _class_name(name_or_index, class_names)
    key = name.upper()
    if key in CLASS_COLORS:
        return CLASS_COLORS[key]
    names = [str(c) for c in class_names]
    pos = names.index(name) if name in names else sum(map(ord, name))
    return matplotlib.colors.to_hex(_FALLBACK_COLORS[pos % len(_FALLBACK_COLORS)])


def _class_name(key: Any, class_names: Sequence[str] = CLASS_NAMES) -> str:
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        idx = int(key)
        if 0 <= idx < len(class_names):
            return str(class_names[idx])
        return str(idx)
    text = str(key)
    for c in class_names:
        if str(c).lower() == text.strip().lower():
            return str(c)
    return text


def _label_index(key: Any, class_names: Sequence[str]) -> int | None:
    """Index of a label given as int or as a class name; None when unknown/missing."""
    if key is None:
        return None
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return int(key)
    if isinstance(key, (float, np.floating)):
        return None if math.isnan(key) else int(key)
    lowered = [str(c).lower() for c in class_names]
    text = str(key).strip().lower()
    return lowered.index(text) if text in lowered else None


def _text_color_on(color) -> str:
    r, g, b = to_rgb(color)
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.55 else "white"


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _new_figure(nrows: int = 1, ncols: int = 1, figsize=None, **kwargs):
    fig, axes = plt.subplots(
        nrows, ncols, figsize=figsize, layout="constrained", squeeze=False, **kwargs
    )
    return fig, axes


def _suptitle(fig: Figure, title: str | None) -> None:
    if title:
        fig.suptitle(title, fontsize=13, fontweight="bold")


def _no_data(ax, text: str = "no data") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            color="0.4", fontsize=10, style="italic")
    ax.set_xticks([])
    ax.set_yticks([])


def _fmt_num(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if abs(x) >= 10:
        return f"{x:,.0f}"
    return f"{x:.2g}" if abs(x) < 1 else f"{x:.1f}"


def _to_float(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return float("nan")
    return f


def _split_order(values) -> list[str]:
    present = [str(v) for v in pd.unique(pd.Series(list(values)).dropna())]
    known = [s for s in _SPLIT_ORDER if s in present]
    return known + sorted(s for s in present if s not in known)


def _binary(mask, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A 2-D bool mask; resized with nearest neighbour to ``shape`` (H, W) when it differs."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    if m.dtype == bool:
        b = m
    elif np.issubdtype(m.dtype, np.integer) and m.size and m.max() > 1:
        b = m > 127  # 0/255 masks
    else:
        b = m > 0.5
    if shape is not None and b.shape != tuple(shape):
        h, w = shape
        rows = (np.arange(h) * b.shape[0] / h).astype(int)
        cols = (np.arange(w) * b.shape[1] / w).astype(int)
        b = b[rows][:, cols]
    return b


def _rgb(image) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.ndim == 3 and img.shape[-1] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and np.nanmax(img) <= 1.0:
            img = img * 255.0
        img = np.clip(img, 0, 255).astype(np.uint8)
    return img


def _draw_contour(ax, mask: np.ndarray, color: str, lw: float = 1.6) -> bool:
    """Contour of a bool mask on ``ax``; False (nothing drawn) for an empty or full mask."""
    if mask.size == 0 or mask.all() or not mask.any():
        return False
    # pad so that a lesion touching the border gets a closed contour
    padded = np.pad(mask.astype(float), 1)
    ys = np.arange(-1, mask.shape[0] + 1)
    xs = np.arange(-1, mask.shape[1] + 1)
    ax.contour(xs, ys, padded, levels=[0.5], colors=[color], linewidths=lw)
    return True


def _image_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _show_image(ax, img: np.ndarray, frame_color=None, cmap=None, fill_cell: bool = True) -> None:
    """imshow; with ``fill_cell`` the axes fill the whole grid cell (the data limits grow
    instead of the axes shrinking), so that images of different shapes keep the rows and
    columns of a grid aligned."""
    h, w = img.shape[:2]
    ax.imshow(img, cmap=cmap, vmin=0 if cmap is not None else None,
              vmax=1 if cmap is not None else None,
              interpolation="nearest" if cmap is not None else "antialiased")
    if fill_cell:
        # limits stay on autoscale (the image extent): fixed limits would make "datalim" warn
        ax.set_aspect("equal", adjustable="datalim")
    if frame_color is not None:
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, edgecolor=frame_color, lw=2.5))


def _cell_aspect(images) -> float:
    """Median height/width of the images, clamped, to size grid cells."""
    ratios = [np.asarray(im).shape[0] / max(np.asarray(im).shape[1], 1) for im in images
              if im is not None and np.asarray(im).ndim >= 2]
    return float(np.clip(np.median(ratios), 0.5, 1.4)) if ratios else 0.75


# --------------------------------------------------------------------------------------------
# Saving
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


# --------------------------------------------------------------------------------------------
# Data set figures
# --------------------------------------------------------------------------------------------


def _counts_from(labels_or_counts, class_names: Sequence[str]) -> np.ndarray:
    counts = np.zeros(len(class_names), dtype=float)
    if isinstance(labels_or_counts, Mapping):
        for key, value in labels_or_counts.items():
            idx = _label_index(key, class_names)
            if idx is None or not 0 <= idx < len(class_names):
                raise ValueError(f"Unknown class {key!r}: expected one of {list(class_names)}")
            counts[idx] += _to_float(value)
        return counts
    for lab in list(np.asarray(labels_or_counts, dtype=object).ravel()):
        idx = _label_index(lab, class_names)
        if idx is not None and 0 <= idx < len(class_names):
            counts[idx] += 1
    return counts


def _bar_labels(ax, bars, texts, fontsize=8, inside_color=None) -> None:
    for bar, text in zip(bars, texts):
        h = bar.get_height()
        if not np.isfinite(h):
            continue
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, h), xytext=(0, 2),
                    textcoords="offset points", ha="center", va="bottom", fontsize=fontsize)


def _grouped_class_split_bars(ax, table: pd.DataFrame, class_names, ylabel: str) -> None:
    """``table``: index = class index, columns = splits, values = counts."""
    splits = list(table.columns)
    n = len(splits)
    x = np.arange(len(class_names))
    width = 0.8 / max(n, 1)
    colors = [class_color(i, class_names) for i in range(len(class_names))]
    ymax = float(np.nanmax(table.to_numpy())) if table.size else 0.0
    for j, split in enumerate(splits):
        vals = table[split].reindex(range(len(class_names)), fill_value=0).to_numpy(float)
        bars = ax.bar(x - 0.4 + width * (j + 0.5), vals, width, color=colors,
                      alpha=_SPLIT_ALPHA.get(split, 0.8), hatch=_SPLIT_HATCH.get(split, "xx"),
                      edgecolor="0.25", linewidth=0.6)
        _bar_labels(ax, bars, [f"{int(v)}" for v in vals], fontsize=7)
        for bar, c in zip(bars, colors):  # hatches must stay visible on dark bars
            if _text_color_on(c) == "white" and hasattr(bar, "set_hatchcolor"):
                bar.set_hatchcolor("0.85")
    ax.set_xticks(x, [str(c) for c in class_names])
    for tick, c in zip(ax.get_xticklabels(), colors):
        tick.set_color(c if c != "#000000" else "black")
        tick.set_fontweight("bold")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, max(ymax, 1) * 1.15)
    ax.spines[["top", "right"]].set_visible(False)
    totals = table.sum(axis=0)
    handles = [Patch(facecolor="0.55", alpha=_SPLIT_ALPHA.get(s, 0.8),
                     hatch=_SPLIT_HATCH.get(s, "xx"), edgecolor="0.25",
                     label=f"{s} (n={int(totals[s])})") for s in splits]
    ax.legend(handles=handles, fontsize=8, frameon=False, loc="upper right")


def plot_class_distribution(
    labels_or_counts,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "Diagnoses",
    by_split: pd.DataFrame | None = None,
) -> Figure:
    """Bar chart of the number of images per diagnosis, annotated with count and percentage.

    ``labels_or_counts``: a sequence of labels (int indices or class names) or a mapping
    ``class -> count`` (keys names in any case, or indices). With ``by_split`` (a DataFrame with
    columns ``label`` and ``split``) a second panel shows grouped bars per split.
    """
    counts = _counts_from(labels_or_counts, class_names)
    ncols = 2 if by_split is not None else 1
    fig, axes = _new_figure(1, ncols, figsize=(7.5 * ncols, 4.6))
    ax = axes[0, 0]
    x = np.arange(len(class_names))
    colors = [class_color(i, class_names) for i in range(len(class_names))]
    bars = ax.bar(x, counts, color=colors, edgecolor="0.25", linewidth=0.6)
    total = counts.sum()
    texts = [f"{int(c):,}\n({100 * c / total:.1f}%)" if total else "0" for c in counts]
    _bar_labels(ax, bars, texts, fontsize=8)
    ax.set_xticks(x, [str(c) for c in class_names])
    ax.set_ylabel("images")
    ax.set_ylim(0, max(counts.max(initial=0), 1) * 1.22)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(f"all images (n={int(total):,})", fontsize=10)
    ax.tick_params(axis="x", labelsize=9)
    for tick, c in zip(ax.get_xticklabels(), colors):
        tick.set_color(c)
        tick.set_fontweight("bold")
    if by_split is not None:
        ax2 = axes[0, 1]
        df = by_split
        if not {"label", "split"} <= set(df.columns):
            _no_data(ax2, "by_split needs columns 'label' and 'split'")
        else:
            splits = _split_order(df["split"])
            idx = df["label"].map(lambda v: _label_index(v, class_names))
            table = (pd.crosstab(idx, df["split"]).reindex(columns=splits, fill_value=0)
                     if len(df) else pd.DataFrame(columns=splits))
            _grouped_class_split_bars(ax2, table, class_names, "images")
            ax2.set_title("images per split", fontsize=10)
    _suptitle(fig, title)
    return fig


def plot_split_counts(
    df: pd.DataFrame,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "Images and lesions per split",
) -> Figure:
    """Two panels of grouped bars per class and split: images, and distinct lesions.

    ``df`` has columns ``label`` (int or class name), ``split`` and ``lesion_id`` (when
    ``lesion_id`` is missing, every image counts as its own lesion).
    """
    fig, axes = _new_figure(1, 2, figsize=(15, 4.8))
    if not {"label", "split"} <= set(df.columns) or len(df) == 0:
        for ax in axes.ravel():
            _no_data(ax, "no rows with 'label' and 'split'")
        _suptitle(fig, title)
        return fig
    data = df.copy()
    data["_idx"] = data["label"].map(lambda v: _label_index(v, class_names))
    if "lesion_id" not in data.columns:
        data["lesion_id"] = np.arange(len(data)).astype(str)
    splits = _split_order(data["split"])
    images = pd.crosstab(data["_idx"], data["split"]).reindex(columns=splits, fill_value=0)
    lesions = (data.groupby(["_idx", "split"])["lesion_id"].nunique().unstack(fill_value=0)
               .reindex(columns=splits, fill_value=0))
    _grouped_class_split_bars(axes[0, 0], images, class_names, "images")
    axes[0, 0].set_title("images", fontsize=10)
    _grouped_class_split_bars(axes[0, 1], lesions, class_names, "distinct lesions")
    axes[0, 1].set_title("lesions (lesion_id)", fontsize=10)
    _suptitle(fig, title)
    return fig


def plot_images_per_lesion(lesion_ids, title: str = "Images per lesion") -> Figure:
    """Bar histogram of how many images each lesion has (1, 2, 3, ...)."""
    ids = pd.Series(list(lesion_ids), dtype=object).dropna()
    fig, axes = _new_figure(1, 1, figsize=(7, 4.2))
    ax = axes[0, 0]
    if ids.empty:
        _no_data(ax, "no lesion ids")
        _suptitle(fig, title)
        return fig
    per_lesion = ids.value_counts()
    hist = per_lesion.value_counts().sort_index()
    ks = np.arange(1, int(hist.index.max()) + 1)
    vals = hist.reindex(ks, fill_value=0).to_numpy()
    bars = ax.bar(ks, vals, color="#0072B2", edgecolor="0.25", linewidth=0.6, width=0.7)
    _bar_labels(ax, bars, [f"{v:,}" if v else "" for v in vals], fontsize=8)
    ax.set_xticks(ks)
    ax.set_xlabel("images of the same lesion")
    ax.set_ylabel("lesions")
    ax.set_ylim(0, vals.max() * 1.15)
    ax.spines[["top", "right"]].set_visible(False)
    multi = int((per_lesion > 1).sum())
    ax.set_title(f"{len(ids):,} images of {len(per_lesion):,} lesions; "
                 f"{multi:,} lesions have more than one image", fontsize=10)
    _suptitle(fig, title)
    return fig


def _clean_category(series: pd.Series) -> pd.Series:
    s = series.astype(object).where(series.notna(), "unknown")
    s = s.map(lambda v: str(v).strip() or "unknown")
    return s.map(lambda v: "unknown" if v.lower() in {"nan", "none", "unknown", "?"} else v)


def plot_metadata(
    df: pd.DataFrame,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "Patient metadata",
) -> Figure:
    """1x3 panel: age histogram stacked by diagnosis, sex counts, localization counts.

    Uses the columns ``age``, ``sex``, ``localization`` and ``label`` (or ``dx``) when present;
    NaN, empty and "unknown" values are counted as "unknown"; missing columns give a note.
    """
    fig, axes = _new_figure(1, 3, figsize=(17, 5), width_ratios=[1.3, 0.7, 1.1])
    ax_age, ax_sex, ax_loc = axes[0]
    if "label" in df.columns:
        cls = df["label"].map(lambda v: _label_index(v, class_names))
    elif "dx" in df.columns:
        cls = df["dx"].map(lambda v: _label_index(v, class_names))
    else:
        cls = None

    # age
    if "age" in df.columns:
        age = pd.to_numeric(df["age"], errors="coerce")
        known = age.notna()
        if known.any():
            lo = 5 * math.floor(age[known].min() / 5)
            hi = 5 * math.ceil(age[known].max() / 5 + 1e-9)
            bins = np.arange(lo, max(hi, lo + 5) + 5, 5)
            if cls is not None:
                data, colors, names = [], [], []
                for i, name in enumerate(class_names):
                    sel = known & (cls == i)
                    if sel.any():
                        data.append(age[sel].to_numpy(float))
                        colors.append(class_color(i, class_names))
                        names.append(str(name))
                other = known & ~cls.isin(range(len(class_names)))
                if other.any():
                    data.append(age[other].to_numpy(float))
                    colors.append("0.7")
                    names.append("other")
                ax_age.hist(data, bins=bins, stacked=True, color=colors, label=names,
                            edgecolor="white", linewidth=0.4)
                ax_age.legend(fontsize=8, frameon=False, ncols=2 if len(names) > 4 else 1)
            else:
                ax_age.hist(age[known], bins=bins, color="#0072B2", edgecolor="white")
            ax_age.set_xlabel("age (years)")
            ax_age.set_ylabel("images")
            ax_age.spines[["top", "right"]].set_visible(False)
        else:
            _no_data(ax_age, "no known ages")
        ax_age.set_title(f"age (unknown: {int((~known).sum()):,})", fontsize=10)
    else:
        _no_data(ax_age, "no 'age' column")
        ax_age.set_title("age", fontsize=10)

    # sex
    if "sex" in df.columns and len(df):
        counts = _clean_category(df["sex"]).str.lower().value_counts()
        order = [s for s in ("female", "male") if s in counts.index]
        order += sorted(s for s in counts.index if s not in order and s != "unknown")
        order += ["unknown"] if "unknown" in counts.index else []
        counts = counts.reindex(order)
        palette = {"female": "#CC79A7", "male": "#56B4E9", "unknown": "0.75"}
        bars = ax_sex.bar(range(len(counts)), counts.to_numpy(),
                          color=[palette.get(s, "#009E73") for s in counts.index],
                          edgecolor="0.25", linewidth=0.6)
        total = counts.sum()
        _bar_labels(ax_sex, bars, [f"{v:,}\n({100 * v / total:.0f}%)" for v in counts], 8)
        ax_sex.set_xticks(range(len(counts)), list(counts.index))
        ax_sex.set_ylim(0, counts.max() * 1.25)
        ax_sex.set_ylabel("images")
        ax_sex.spines[["top", "right"]].set_visible(False)
    else:
        _no_data(ax_sex, "no 'sex' column" if "sex" not in df.columns else "no rows")
    ax_sex.set_title("sex", fontsize=10)

    # localization
    if "localization" in df.columns and len(df):
        counts = _clean_category(df["localization"]).value_counts().sort_values()
        if "unknown" in counts.index:  # keep "unknown" at the bottom
            counts = pd.concat([counts[["unknown"]], counts.drop("unknown")])
        y = np.arange(len(counts))
        colors = ["0.75" if s == "unknown" else "#0072B2" for s in counts.index]
        bars = ax_loc.barh(y, counts.to_numpy(), color=colors, edgecolor="0.25", linewidth=0.5)
        for bar, v in zip(bars, counts):
            ax_loc.annotate(f"{v:,}", (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                            xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
        ax_loc.set_yticks(y, list(counts.index), fontsize=8)
        ax_loc.set_xlim(0, counts.max() * 1.15)
        ax_loc.set_xlabel("images")
        ax_loc.spines[["top", "right"]].set_visible(False)
    else:
        _no_data(ax_loc, "no 'localization' column" if "localization" not in df.columns
                 else "no rows")
    ax_loc.set_title("body site", fontsize=10)
    _suptitle(fig, title)
    return fig


def plot_mask_area(
    area_fraction,
    labels,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "Lesion size",
) -> Figure:
    """Box plot plus jittered points of the lesion's share of the image, per diagnosis.

    ``area_fraction``: mask pixels / image pixels per image (NaN ignored); ``labels``: class per
    image (int or name). Classes without images are shown with "n=0".
    """
    area = np.asarray(area_fraction, dtype=float).ravel()
    idx = np.array([_label_index(v, class_names) for v in list(np.asarray(labels, dtype=object)
                                                               .ravel())], dtype=object)
    if len(area) != len(idx):
        raise ValueError(f"area_fraction has {len(area)} values but labels has {len(idx)}")
    fig, axes = _new_figure(1, 1, figsize=(9, 4.6))
    ax = axes[0, 0]
    rng = np.random.default_rng(0)
    ticklabels = []
    for i, name in enumerate(class_names):
        vals = area[(idx == i) & np.isfinite(area)]
        color = class_color(i, class_names)
        if len(vals):
            bp = ax.boxplot([vals], positions=[i], widths=0.55, patch_artist=True,
                            showfliers=False, medianprops={"color": "black", "linewidth": 1.4},
                            whiskerprops={"color": "0.3"}, capprops={"color": "0.3"})
            for box in bp["boxes"]:
                box.set_facecolor(matplotlib.colors.to_rgba(color, 0.35))
                box.set_edgecolor(color)
            jitter = rng.uniform(-0.18, 0.18, len(vals))
            ax.scatter(i + jitter, vals, s=9, color=color, alpha=0.7, linewidths=0, zorder=3)
        else:
            ax.text(i, 0.5, "no images", ha="center", va="center", rotation=90,
                    color="0.5", fontsize=9, style="italic")
        ticklabels.append(f"{name}\nn={len(vals)}")
    ax.set_xticks(range(len(class_names)), ticklabels)
    for tick, i in zip(ax.get_xticklabels(), range(len(class_names))):
        tick.set_color(class_color(i, class_names))
        tick.set_fontweight("bold")
    ax.set_xlim(-0.6, len(class_names) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("lesion area / image area")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    _suptitle(fig, title)
    return fig


def plot_sample_grid(
    images,
    labels,
    class_names: Sequence[str] = CLASS_NAMES,
    masks=None,
    per_class: int = 4,
    title: str = "Example images per diagnosis",
    seed: int | None = None,
) -> Figure:
    """One row per class with up to ``per_class`` images (the first ones, or a random draw
    with ``seed``), the ground-truth mask contour in green when ``masks`` is given.

    ``images``: sequence of uint8 HxWx3 arrays (sizes may differ); ``labels``: class per image;
    ``masks``: None or a sequence of HxW masks (None entries allowed). A class without images
    is an empty row with a note. The figure has ``len(class_names) * per_class`` axes.
    """
    images = list(images)
    label_idx = [_label_index(v, class_names) for v in list(np.asarray(labels, dtype=object)
                                                            .ravel())]
    if len(images) != len(label_idx):
        raise ValueError(f"{len(images)} images but {len(label_idx)} labels")
    masks = list(masks) if masks is not None else None
    per_class = max(int(per_class), 1)
    n_rows = len(class_names)
    cell_w = 2.1
    cell_h = cell_w * _cell_aspect(images) + 0.3
    fig, axes = _new_figure(n_rows, per_class, figsize=(cell_w * per_class + 1.2,
                                                       cell_h * n_rows + 0.8))
    rng = np.random.default_rng(seed) if seed is not None else None
    for r, name in enumerate(class_names):
        members = [k for k, lab in enumerate(label_idx) if lab == r]
        if rng is not None and len(members) > per_class:
            members = sorted(rng.choice(members, per_class, replace=False).tolist())
        members = members[:per_class]
        color = class_color(r, class_names)
        for c in range(per_class):
            ax = axes[r, c]
            _image_axes(ax)
            if c < len(members):
                k = members[c]
                img = _rgb(images[k])
                _show_image(ax, img, frame_color=color)
                if masks is not None and masks[k] is not None:
                    _draw_contour(ax, _binary(masks[k], img.shape[:2]), TRUE_MASK_COLOR, 1.4)
        first = axes[r, 0]
        desc = CLASS_DESCRIPTIONS.get(str(name).upper(), "")
        first.set_ylabel(f"{name}\nn={sum(1 for k in label_idx if k == r)}", color=color,
                         fontsize=10, fontweight="bold", rotation=0, ha="right", va="center",
                         labelpad=8)
        if desc:
            first.set_title(desc, loc="left", fontsize=8, color="0.3")
        if not members:
            first.text(0.05, 0.5, f"no {name} images in this set", transform=first.transAxes,
                       ha="left", va="center", color="0.45", fontsize=9, style="italic")
    if masks is not None:
        fig.legend(handles=[Line2D([], [], color=TRUE_MASK_COLOR, lw=2,
                                   label="lesion mask (ground truth)")],
                   loc="outside lower center", fontsize=8, frameon=False)
    _suptitle(fig, title)
    return fig


# --------------------------------------------------------------------------------------------
# Training figures
# --------------------------------------------------------------------------------------------

_SEG_KEYS = ("dice", "jaccard", "iou")
_CLS_KEYS = ("acc", "auc", "f1", "sensitivity", "specificity", "precision", "recall", "kappa")
_LR_KEYS = ("lr", "learning_rate")
_METRIC_COLORS = {
    "loss": "#000000", "seg_loss": "#009E73", "cls_loss": "#D55E00",
    "dice": "#009E73", "jaccard": "#0072B2", "iou": "#0072B2",
    "accuracy": "#0072B2", "balanced_accuracy": "#D55E00", "macro_auc": "#CC79A7",
    "auc": "#CC79A7", "f1": "#E69F00",
}


def _history_frame(history) -> pd.DataFrame:
    if isinstance(history, pd.DataFrame):
        frame = history.copy()
    else:
        frame = pd.DataFrame(list(history))
    if "epoch" in frame.columns:
        frame["epoch"] = pd.to_numeric(frame["epoch"], errors="coerce")
        if frame["epoch"].isna().any():
            frame["epoch"] = np.arange(1, len(frame) + 1)
    else:
        frame["epoch"] = np.arange(1, len(frame) + 1)
    return frame


def _metric_panel(ax, frame: pd.DataFrame, keys: list[str], best_epoch, ylabel: str,
                  unit_range: bool = False, logy: bool = False) -> bool:
    plotted = False
    for key in keys:
        y = pd.to_numeric(frame[key], errors="coerce").to_numpy(float)
        if not np.isfinite(y).any():
            continue
        prefix, _, base = key.partition("_")
        if prefix not in ("train", "val", "test"):
            prefix, base = "", key
        style = {"train": "-", "val": "--", "test": ":"}.get(prefix, "-")
        color = _METRIC_COLORS.get(base, None)
        label = key.replace("_", " ")
        ax.plot(frame["epoch"], y, style, marker="o", ms=3.5, lw=1.6, color=color, label=label)
        plotted = True
    if not plotted:
        _no_data(ax, "not recorded")
        return False
    if best_epoch is not None:
        ax.axvline(best_epoch, color="0.4", lw=1, ls=":", zorder=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if unit_range:
        ax.set_ylim(-0.02, 1.02)
    if logy:
        ax.set_yscale("log")
    epochs = pd.unique(frame["epoch"].dropna())
    if len(epochs) == 1:
        ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        ax.set_xticks([epochs[0]])
    else:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(color="0.92")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=7.5, frameon=False, ncols=2 if len(keys) > 3 else 1)
    return True


def plot_learning_curves(history, title: str = "Training") -> Figure:
    """2x2 panels: losses (train solid, val dashed; total and parts), segmentation
    (Dice/Jaccard), classification (accuracy, balanced accuracy, AUC, ...), learning rate.

    ``history``: list of per-epoch dicts (or a DataFrame); any key may be missing, panels
    without data say "not recorded". When a boolean ``best`` key is present the (last) best
    epoch is marked with a dotted vertical line in every panel.
    """
    frame = _history_frame(history)
    cols = [c for c in frame.columns if c not in ("epoch", "best")]
    numeric = [c for c in cols if pd.to_numeric(frame[c], errors="coerce").notna().any()]
    losses = [c for c in numeric if "loss" in c]
    seg = [c for c in numeric if c not in losses and any(k in c for k in _SEG_KEYS)]
    lr = [c for c in numeric if c in _LR_KEYS or c.endswith("_lr") or c.startswith("lr_")]
    cls = [c for c in numeric if c not in losses + seg + lr
           and any(k in c for k in _CLS_KEYS)]

    def order(keys):  # train before val; total loss, then segmentation, then classification
        split_rank = {"train": 0, "val": 1, "test": 2}
        part_rank = {"loss": 0, "seg_loss": 1, "cls_loss": 2}

        def rank(k):
            prefix, _, base = k.partition("_")
            if prefix not in split_rank:
                prefix, base = "", k
            return (split_rank.get(prefix, 3), part_rank.get(base, 3), k)
        return sorted(keys, key=rank)

    best_epoch = None
    if "best" in frame.columns:
        flags = np.array([bool(v) if isinstance(v, (bool, np.bool_, int, np.integer))
                          else False for v in frame["best"]])
        if flags.any():
            best_epoch = float(frame["epoch"].to_numpy()[np.flatnonzero(flags)[-1]])

    fig, axes = _new_figure(2, 2, figsize=(12, 7.5))
    _metric_panel(axes[0, 0], frame, order(losses), best_epoch, "loss")
    axes[0, 0].set_title("losses", fontsize=10)
    _metric_panel(axes[0, 1], frame, order(seg), best_epoch, "score", unit_range=True)
    axes[0, 1].set_title("segmentation (lesion mask)", fontsize=10)
    _metric_panel(axes[1, 0], frame, order(cls), best_epoch, "score", unit_range=True)
    axes[1, 0].set_title("classification (diagnosis)", fontsize=10)
    lr_vals = (pd.to_numeric(frame[lr[0]], errors="coerce").dropna() if lr else pd.Series())
    logy = bool(len(lr_vals) and (lr_vals > 0).all() and lr_vals.max() / lr_vals.min() > 10)
    _metric_panel(axes[1, 1], frame, lr, best_epoch, "learning rate", logy=logy)
    axes[1, 1].set_title("learning rate", fontsize=10)
    if best_epoch is not None:
        fig.legend(handles=[Line2D([], [], color="0.4", ls=":", lw=1,
                                   label=f"best epoch ({best_epoch:g})")],
                   loc="outside lower center", fontsize=8, frameon=False)
    n = len(frame)
    _suptitle(fig, f"{title} ({n} epoch{'s' if n != 1 else ''})" if title else title)
    return fig


# --------------------------------------------------------------------------------------------
# Evaluation figures
# --------------------------------------------------------------------------------------------


def plot_confusion_matrix(
    cm,
    class_names: Sequence[str] = CLASS_NAMES,
    title: str = "Confusion matrix",
) -> Figure:
    """Two panels: counts, and row-normalised (each row sums to 1; the diagonal is the
    recall/sensitivity of that class). True diagnosis on rows, predicted on columns."""
    cm = np.asarray(cm, dtype=float)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    k = cm.shape[0]
    names = [str(c) for c in class_names][:k]
    if len(names) < k:
        names += [str(i) for i in range(len(names), k)]
    row_sum = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(row_sum > 0, cm / np.where(row_sum > 0, row_sum, 1), np.nan)
    size = max(4.5, 0.62 * k + 2.2)
    fig, axes = _new_figure(1, 2, figsize=(2 * size + 0.6, size + 0.5))
    cmap = plt.get_cmap("Blues").with_extremes(bad="0.92")
    panels = [
        (axes[0, 0], cm, "counts", lambda v: f"{int(round(v)):,}", None),
        (axes[0, 1], norm, "row-normalised (diagonal = sensitivity)",
         lambda v: f"{v:.2f}", (0.0, 1.0)),
    ]
    for ax, mat, subtitle, fmt, lim in panels:
        vmax = lim[1] if lim else max(np.nanmax(mat) if np.isfinite(mat).any() else 1, 1)
        masked = np.ma.masked_invalid(mat)
        ax.imshow(masked, cmap=cmap, vmin=0, vmax=vmax, aspect="equal")
        for i in range(k):
            for j in range(k):
                v = mat[i, j]
                if not np.isfinite(v):
                    ax.text(j, i, "–", ha="center", va="center", fontsize=8, color="0.45")
                    continue
                shade = cmap(v / vmax if vmax else 0)
                ax.text(j, i, fmt(v), ha="center", va="center",
                        fontsize=8 if k <= 8 else 6,
                        fontweight="bold" if i == j else "normal", color=_text_color_on(shade))
            ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, lw=1.2,
                                   edgecolor="0.2"))
        ax.set_xticks(range(k), names, rotation=45 if k > 5 else 0,
                      ha="right" if k > 5 else "center", rotation_mode="anchor")
        ax.set_yticks(range(k), [f"{n} (n={int(s)})" for n, s in zip(names, row_sum[:, 0])])
        for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
            for tick, i in zip(ticks, range(k)):
                tick.set_color(class_color(i, names))
        ax.set_xlabel("predicted diagnosis")
        ax.set_ylabel("true diagnosis")
        ax.set_title(subtitle, fontsize=10)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
    total = cm.sum()
    acc = np.trace(cm) / total if total else float("nan")
    _suptitle(fig, f"{title}  (n={int(total):,}, accuracy {acc:.2f})" if title else title)
    return fig


def _curve_parts(value) -> tuple[np.ndarray, np.ndarray, float]:
    if isinstance(value, Mapping):
        fpr, tpr, auc = value.get("fpr"), value.get("tpr"), value.get("auc")
    else:
        parts = list(value)
        fpr, tpr = parts[0], parts[1]
        auc = parts[2] if len(parts) > 2 else None
    fpr = np.asarray(fpr if fpr is not None else [], dtype=float).ravel()
    tpr = np.asarray(tpr if tpr is not None else [], dtype=float).ravel()
    if auc is None and len(fpr) > 1 and len(fpr) == len(tpr):
        auc = float(np.trapezoid(tpr, fpr))
    return fpr, tpr, _to_float(auc)


def plot_roc_curves(curves: Mapping, title: str = "ROC curves (one class vs rest)",
                    class_names: Sequence[str] = CLASS_NAMES) -> Figure:
    """One ROC line per class with its AUC in the legend, plus the chance diagonal.

    ``curves``: ``class -> (fpr, tpr, auc)`` (or ``{"fpr":..., "tpr":..., "auc":...}``);
    class keys are names or indices. A class whose curve is undefined (no positives) may be
    given with empty arrays / NaN AUC and is listed as "n/a". Keys such as "macro"/"micro"
    are drawn as grey dashed lines.
    """
    fig, axes = _new_figure(1, 1, figsize=(6.4, 6.0))
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=1, label="chance (AUC 0.50)")

    def sort_key(item):
        idx = _label_index(item[0], class_names)
        return (idx is None, idx if idx is not None else 0, str(item[0]))

    for key, value in sorted(curves.items(), key=sort_key):
        fpr, tpr, auc = _curve_parts(value)
        name = _class_name(key, class_names)
        is_class = _label_index(key, class_names) is not None
        auc_text = f"AUC {auc:.2f}" if np.isfinite(auc) else "AUC n/a"
        label = f"{name}: {auc_text}"
        kwargs = ({"color": class_color(key, class_names), "lw": 1.8} if is_class
                  else {"color": "0.35", "lw": 1.6, "ls": "--"})
        if len(fpr) and len(fpr) == len(tpr):
            ax.plot(fpr, tpr, label=label, drawstyle="default", **kwargs)
        else:
            ax.plot([], [], label=label + " (no positives)", **kwargs)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.grid(color="0.92")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="lower right", fontsize=8.5, frameon=True, framealpha=0.9)
    _suptitle(fig, title)
    return fig


# metrics are told apart by neutral shades (and hatches) so that they never look like a class
_METRIC_SHADES = [("#3B3B3B", ""), ("#8C8C8C", ""), ("#D0D0D0", ""), ("#FFFFFF", "///"),
                  ("#8C8C8C", "..."), ("#FFFFFF", "xx")]
_COUNT_KEYS = ("support", "n", "count", "n_true", "positives")


def plot_per_class_metrics(
    per_class,
    title: str = "Per-class performance",
    metrics: Sequence[str] | None = None,
    class_names: Sequence[str] = CLASS_NAMES,
) -> Figure:
    """Grouped bars: one group per class, one bar per metric (e.g. sensitivity, specificity,
    AUC), each bar labelled with its value. NaN/None values are shown as "n/a" (no bar).

    ``per_class``: ``class -> {metric: value}`` or a DataFrame indexed by class. Metrics
    default to every key whose values lie in [0, 1]; a ``support``/``n`` key is shown under
    the class name instead.
    """
    if isinstance(per_class, pd.DataFrame):
        per_class = per_class.to_dict(orient="index")
    items = list(per_class.items())

    def sort_key(item):
        idx = _label_index(item[0], class_names)
        return (idx is None, idx if idx is not None else 0, str(item[0]))

    items.sort(key=sort_key)
    if metrics is None:
        metrics = []
        for _, vals in items:
            for m, v in vals.items():
                if m in metrics or m in _COUNT_KEYS:
                    continue
                if isinstance(v, (bool, np.bool_)) or isinstance(v, str):
                    continue
                metrics.append(m)
        metrics = [m for m in metrics if all(
            not np.isfinite(_to_float(vals.get(m))) or -1e-9 <= _to_float(vals.get(m)) <= 1 + 1e-9
            for _, vals in items)]
    metrics = list(metrics)
    width_in = 1.5 + len(items) * (0.3 * max(len(metrics), 1) + 0.45)
    fig, axes = _new_figure(1, 1, figsize=(float(np.clip(width_in, 6.5, 16)), 4.6))
    ax = axes[0, 0]
    if not items or not metrics:
        _no_data(ax, "no per-class metrics")
        _suptitle(fig, title)
        return fig
    n_m = len(metrics)
    width = 0.82 / n_m
    x = np.arange(len(items))
    for j, m in enumerate(metrics):
        vals = np.array([_to_float(v.get(m)) for _, v in items])
        pos = x - 0.41 + width * (j + 0.5)
        color, hatch = _METRIC_SHADES[j % len(_METRIC_SHADES)]
        bars = ax.bar(pos, np.where(np.isfinite(vals), vals, 0), width * 0.92, color=color,
                      hatch=hatch, edgecolor="0.2", linewidth=0.6, label=m.replace("_", " "))
        for p, v, bar in zip(pos, vals, bars):
            if np.isfinite(v):
                ax.text(p, v + 0.015, f"{v:.2f}", ha="center", va="bottom", rotation=90,
                        fontsize=7)
            else:
                bar.set_visible(False)
                ax.text(p, 0.015, "n/a", ha="center", va="bottom", rotation=90, fontsize=8,
                        color="0.3", style="italic")
    labels = []
    for key, vals in items:
        name = _class_name(key, class_names)
        support = next((vals[k] for k in _COUNT_KEYS if k in vals), None)
        labels.append(f"{name}\n(n={int(_to_float(support))})"
                      if support is not None and np.isfinite(_to_float(support)) else name)
    ax.set_xticks(x, labels)
    for tick, (key, _) in zip(ax.get_xticklabels(), items):
        tick.set_color(class_color(key, class_names))
        tick.set_fontweight("bold")
    ax.set_ylim(0, 1.18)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score")
    ax.grid(axis="y", color="0.92")
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(ncols=min(n_m, 6), fontsize=8, frameon=False, loc="upper center",
              bbox_to_anchor=(0.5, 1.0))
    _suptitle(fig, title)
    return fig


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def _erode(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """4-neighbour binary erosion with numpy shifts; outside the image counts as "same as edge"
    so a lesion cut by the image border gets no contour along the border."""
    out = mask.copy()
    for _ in range(iterations):
        p = np.pad(out, 1, mode="edge")
        out = (p[1:-1, 1:-1] & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:])
    return out


def overlay_mask(
    image,
    mask,
    color=(255, 0, 255),
    alpha: float = 0.4,
    contour: bool = True,
    thickness: int | None = None,
) -> np.ndarray:
    """``image`` (uint8 HxWx3) with ``mask`` blended in ``color`` at ``alpha`` and, with
    ``contour``, the mask outline drawn opaque (``thickness`` pixels, by default about 1/200 of
    the shorter side). Pure numpy; only pixels on or inside the mask change. A mask of another
    size is resized with nearest neighbour. Returns a new uint8 array."""
    img = _rgb(image)
    m = _binary(mask, img.shape[:2])
    col = np.asarray(to_rgb(color) if isinstance(color, str) else color, dtype=float)
    if isinstance(color, str):
        col = col * 255.0
    out = img.astype(float)
    if alpha > 0:
        out[m] = (1.0 - alpha) * out[m] + alpha * col
    if contour and m.any():
        t = thickness if thickness is not None else max(1, round(min(m.shape) / 200))
        edge = m & ~_erode(m, max(int(t), 1))
        out[edge] = col
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _prob_of(pred_probs, i: int, pred: int | None) -> float:
    if pred_probs is None:
        return float("nan")
    p = np.asarray(pred_probs[i], dtype=float).ravel()
    if p.size == 1:
        return float(p[0])
    if pred is not None and 0 <= pred < p.size:
        return float(p[pred])
    return float(np.nanmax(p)) if p.size else float("nan")


def plot_overlay_grid(
    images,
    true_masks,
    pred_masks,
    true_labels,
    pred_labels,
    pred_probs,
    class_names: Sequence[str] = CLASS_NAMES,
    scores=None,
    title: str = "Predictions",
    row_titles: Sequence[str] | None = None,
) -> Figure:
    """N rows x 4 columns: image | true mask | predicted mask | overlay (true contour green,
    predicted contour magenta). With ``true_masks=None`` (inference) 3 columns:
    image | predicted mask | overlay.

    Under each image: "true: MEL · pred: NV (0.82)" in green (✓) when right, red (✗) when
    wrong; "pred: NV (0.82)" in black when ``true_labels`` is None. ``pred_probs``: per row the
    probability of the predicted class, or the full probability vector. ``scores``: per-row Dice
    shown under the predicted mask. ``row_titles`` (e.g. image ids) go left of each row.
    Masks: HxW bool/0-1 (or 0-255), any size (resized to the row's image).
    """
    images = list(images)
    n = len(images)
    has_true = true_masks is not None
    ncols = 4 if has_true else 3
    cell_w = 2.9
    cell_h = cell_w * _cell_aspect(images) + 0.45
    fig, axes = _new_figure(max(n, 1), ncols, figsize=(cell_w * ncols + 0.4,
                                                      cell_h * max(n, 1) + 0.9))
    headers = (["image", "true mask", "predicted mask", "overlay"] if has_true
               else ["image", "predicted mask", "overlay"])
    for c, h in enumerate(headers):
        axes[0, c].set_title(h, fontsize=10, fontweight="bold")
    if n == 0:
        for ax in axes.ravel():
            _no_data(ax, "no images")
        _suptitle(fig, title)
        return fig
    true_cmap = ListedColormap(["black", TRUE_MASK_COLOR])
    pred_cmap = ListedColormap(["black", PRED_MASK_COLOR])
    for i in range(n):
        img = _rgb(images[i])
        hw = img.shape[:2]
        row = axes[i]
        for ax in row:
            _image_axes(ax)
        _show_image(row[0], img, fill_cell=False)
        tm = (_binary(true_masks[i], hw) if has_true and true_masks[i] is not None else None)
        pm = _binary(pred_masks[i], hw) if pred_masks is not None and pred_masks[i] is not None \
            else None
        c = 1
        if has_true:
            if tm is not None:
                _show_image(row[c], tm, cmap=true_cmap, fill_cell=False)
            else:
                _no_data(row[c], "no mask")
            c += 1
        if pm is not None:
            _show_image(row[c], pm, cmap=pred_cmap, fill_cell=False)
        else:
            _no_data(row[c], "no prediction")
        if scores is not None:
            s = _to_float(scores[i])
            row[c].set_xlabel(f"Dice {s:.2f}" if np.isfinite(s) else "Dice n/a", fontsize=9)
        ov = row[c + 1]
        _show_image(ov, img, fill_cell=False)
        if tm is not None:
            _draw_contour(ov, tm, TRUE_MASK_COLOR, 1.8)
        if pm is not None:
            _draw_contour(ov, pm, PRED_MASK_COLOR, 1.8)
        # classification text under the image
        pred = (_label_index(pred_labels[i], class_names) if pred_labels is not None else None)
        true = (_label_index(true_labels[i], class_names) if true_labels is not None else None)
        parts = []
        if true is not None:
            parts.append(f"true: {_class_name(true, class_names)}")
        if pred is not None:
            p = _prob_of(pred_probs, i, pred)
            parts.append(f"pred: {_class_name(pred, class_names)}"
                         + (f" ({p:.2f})" if np.isfinite(p) else ""))
        text = " · ".join(parts)
        color = "black"
        if true is not None and pred is not None:
            ok = true == pred
            color = CORRECT_COLOR if ok else WRONG_COLOR
            text = f"{'✓' if ok else '✗'} {text}"
        if text:
            row[0].set_xlabel(text, fontsize=9, color=color,
                              fontweight="bold" if color != "black" else "normal")
        if row_titles is not None and i < len(row_titles) and row_titles[i] is not None:
            row[0].set_ylabel(str(row_titles[i]), fontsize=8.5)
    handles = []
    if has_true:
        handles.append(Line2D([], [], color=TRUE_MASK_COLOR, lw=2, label="true lesion outline"))
    handles.append(Line2D([], [], color=PRED_MASK_COLOR, lw=2, label="predicted lesion outline"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9,
               frameon=False)
    _suptitle(fig, title)
    return fig


# --------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------


def plot_benchmark(
    table: pd.DataFrame,
    title: str = "Input pipeline throughput",
    baseline: str = "naive",
    candidate: str = "ours",
) -> Figure:
    """Grouped horizontal bars of ``images_per_s`` per ``stage`` and ``pipeline``, with the
    speed-up ``candidate / baseline`` ("×3.4") written next to each stage. Repeated rows for a
    stage/pipeline are averaged. A log scale is used when throughputs span > 50x."""
    fig, axes = _new_figure(1, 1, figsize=(9, 1.6 + 0.75 * max(table["stage"].nunique()
                                                                if "stage" in table else 1, 1)))
    ax = axes[0, 0]
    need = {"stage", "pipeline", "images_per_s"}
    if not need <= set(table.columns) or table.empty:
        _no_data(ax, f"need columns {sorted(need)}")
        _suptitle(fig, title)
        return fig
    data = table.assign(images_per_s=pd.to_numeric(table["images_per_s"], errors="coerce"))
    stages = list(pd.unique(data["stage"].astype(str)))
    pipes = list(pd.unique(data["pipeline"].astype(str)))
    pipes = ([p for p in (baseline, candidate) if p in pipes]
             + [p for p in pipes if p not in (baseline, candidate)])
    mean = (data.assign(stage=data["stage"].astype(str), pipeline=data["pipeline"].astype(str))
            .groupby(["stage", "pipeline"])["images_per_s"].mean())
    colors = {baseline: "0.65", candidate: "#0072B2"}
    extra = iter(["#E69F00", "#009E73", "#CC79A7", "#D55E00"])
    height = 0.8 / len(pipes)
    y = np.arange(len(stages))
    allvals = mean.to_numpy(float)
    finite = allvals[np.isfinite(allvals) & (allvals > 0)]
    logx = bool(len(finite) and finite.max() / finite.min() > 50)
    xmax = float(finite.max()) if len(finite) else 1.0
    for j, p in enumerate(pipes):
        vals = np.array([mean.get((s, p), np.nan) for s in stages], dtype=float)
        pos = y - 0.4 + height * (j + 0.5)
        color = colors.get(p) or next(extra, "0.3")
        ax.barh(pos, np.where(np.isfinite(vals), vals, 0), height * 0.9, color=color,
                edgecolor="0.25", linewidth=0.5, label=p)
        for yy, v in zip(pos, vals):
            if np.isfinite(v):
                ax.text(v, yy, f" {_fmt_num(v)}", va="center", ha="left", fontsize=8)
    for s, yy in zip(stages, y):
        b, c = mean.get((s, baseline), np.nan), mean.get((s, candidate), np.nan)
        if np.isfinite(b) and np.isfinite(c) and b > 0:
            ratio = c / b
            ax.text(1.01, yy, f"×{ratio:.1f}", transform=ax.get_yaxis_transform(),
                    va="center", ha="left", fontsize=10, fontweight="bold",
                    color=CORRECT_COLOR if ratio >= 1 else WRONG_COLOR)
    ax.set_yticks(y, stages)
    ax.invert_yaxis()
    if logx:
        ax.set_xscale("log")
        ax.set_xlim(finite.min() / 2, xmax * 4)
    else:
        ax.set_xlim(0, xmax * 1.2)
    ax.set_xlabel("images per second (higher is better)")
    ax.grid(axis="x", color="0.92")
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    if baseline in pipes and candidate in pipes:
        ax.set_title(f"speed-up {candidate} / {baseline} at the right", fontsize=9,
                     loc="right", color="0.3")
    _suptitle(fig, title)
    return fig
