"""Every figure of the notebooks and the benchmark.

Each ``plot_*`` takes what one function elsewhere returns (its docstring names it), refuses anything else
with a ValueError saying what it expected, and returns a Figure without showing it; ``title`` becomes the
bold suptitle. A class always has its colour; a true lesion contour is green, a predicted one magenta.
"""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt  # pyplot, so that notebooks show figures inline (Agg without a display)
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import ListedColormap, to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, PercentFormatter
from PIL import Image
from scipy import ndimage

from skin_utils.data import SPLITS
from skin_utils.labels import CLASS_DESCRIPTIONS, CLASS_NAMES
from skin_utils.metrics import PER_CLASS_KEYS

#: One colour per diagnosis (Okabe & Ito, colour-blind safe): melanoma vermillion, nevi blue.
CLASS_COLORS = {"MEL": "#D55E00", "NV": "#0072B2", "BCC": "#E69F00", "AKIEC": "#CC79A7", "BKL": "#56B4E9",
                "DF": "#009E73", "VASC": "#000000"}
TRUE_MASK_COLOR, PRED_MASK_COLOR = "#00C800", "#FF00FF"  # green / magenta: a colour-blind safe pair
CORRECT_COLOR, WRONG_COLOR = "#1A7F37", "#C62828"  # captions of right / wrong predictions (with ✓ / ✗)
_SPLIT_COLORS = {"train": "0.3", "val": "0.6", "test": "0.85"}  # neutral: a split never looks like a class
_BESIDE = {"loc": "center left", "bbox_to_anchor": (1.02, 0.5)}  # a legend to the right of the axes, off the data
_CAM_CMAP = "inferno"  # perceptually uniform, dark = no evidence


def class_color(name: str) -> str:
    """The fixed colour of a class by its name, e.g. ``"MEL"``."""
    if name not in CLASS_COLORS:
        raise ValueError(f"No colour for class {name!r}: the figures draw the HAM10000 classes {CLASS_NAMES}.")
    return CLASS_COLORS[name]


def save_figure(fig: Figure, path, dpi: int = 120) -> pathlib.Path:
    """Write ``fig`` to ``path`` (folders created, tight, on white) and close it."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def publish(fig: Figure, path) -> pathlib.Path:
    """What a notebook cell calls: show ``fig`` inline (inside IPython), then `save_figure` it."""
    from IPython import get_ipython  # lazily: only a notebook has somewhere to show it
    from IPython.display import display
    if get_ipython() is not None:
        display(fig)
    return save_figure(fig, path)


def overlay_mask(image, mask, color: str = PRED_MASK_COLOR, alpha: float = 0.4, contour: bool = True) -> np.ndarray:
    """A new uint8 image: ``image`` (read_image's) with ``mask`` (bool or 0/1, same size) blended in ``color``
    and, with ``contour``, its outline opaque (~1/200 of the shorter side). Only mask pixels change."""
    img = _image(image, "overlay_mask")
    m = _mask(mask, img.shape[:2], "overlay_mask")
    col = np.asarray(to_rgb(color)) * 255.0
    out = img.astype(float)
    out[m] = (1.0 - alpha) * out[m] + alpha * col
    if contour:  # outside the image counts as lesion: no outline along the border
        out[m & ~ndimage.binary_erosion(m, iterations=max(1, round(min(m.shape) / 200)), border_value=1)] = col
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------ shared pieces
def _figure(title: str | None, nrows: int = 1, ncols: int = 1, figsize=None, blank: bool = False, **kwargs):
    """``(fig, axes)``, constrained layout, ``title`` the bold suptitle; ``axes`` always 2-D (`_blank` if ``blank``)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, layout="constrained", squeeze=False, **kwargs)
    if title:
        fig.suptitle(title, fontsize=13, fontweight="bold")
    if blank:
        for ax in axes.flat:
            _blank(ax)
    return fig, axes


def _clean(ax, grid: str | None = None, title: str | None = None, legend: dict | None = None, **props) -> None:
    """No top/right frame, a light ``grid`` ("x", "y", "both"), ``props``, a small ``title``, a frameless ``legend``."""
    ax.spines[["top", "right"]].set_visible(False)
    if grid:
        ax.grid(axis=grid, color="0.92")
        ax.set_axisbelow(True)
    ax.set(**props)
    if title:
        ax.set_title(title, fontsize=10)
    if legend is not None:
        ax.legend(frameon=False, **legend)


def _outline_legend(fig, outlines) -> None:
    """Under the figure, what each drawn lesion outline is (``outlines``: (colour, "true"/"predicted") pairs)."""
    if outlines:
        fig.legend(handles=[Line2D([], [], color=c, lw=2, label=f"{what} lesion outline") for c, what in outlines],
                   loc="outside lower center", ncols=len(outlines), fontsize=9, frameon=False)


def _class_ticks(ticklabels, names: Sequence[str]) -> None:
    for tick, name in zip(ticklabels, names):
        tick.set(color=class_color(name), fontweight="bold")


def _blank(ax, note: str | None = None) -> None:
    """No ticks and no frame (an axes for an image); ``note`` says why a panel is empty."""
    ax.set(xticks=[], yticks=[])
    ax.spines[:].set_visible(False)
    if note:
        ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes, color="0.4", style="italic")


def _require(obj, keys, takes: str) -> None:
    """ValueError unless ``obj`` (a mapping, a DataFrame's columns) has every key; ``takes``: what the caller takes."""
    if not isinstance(obj, (pd.DataFrame, Mapping)):
        raise ValueError(f"{takes}; got a {type(obj).__name__}.")
    present, kind = (set(obj.columns), "columns") if isinstance(obj, pd.DataFrame) else (set(obj), "keys")
    missing = [k for k in keys if k not in present]
    if missing:
        raise ValueError(f"{takes}; {kind} {missing} are missing (got {sorted(map(str, present))}).")


def _image(image, where: str) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{where}: expected a uint8 (H, W, 3) image (read_image's); got {img.dtype} {img.shape}.")
    return img


def _mask(mask, shape, where: str) -> np.ndarray:
    """A bool mask of the image's ``shape`` from bool or 0/1 integers (read_mask's, the predictions')."""
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"{where}: the mask has shape {m.shape} but its image is {tuple(shape)}; "
                         "read or upsample masks at the image's size.")
    if m.dtype != bool and not (np.issubdtype(m.dtype, np.integer) and np.isin(m, (0, 1)).all()):
        raise ValueError(f"{where}: a mask must be bool or hold 0/1 integers (read_mask's values); "
                         f"got {m.dtype} with values in [{m.min()}, {m.max()}].")
    return m.astype(bool)


def _contour(ax, mask: np.ndarray, color: str, lw: float = 1.6) -> None:
    """Outline of a bool mask (padded: a lesion touching the border is closed); none if empty or full."""
    if mask.any() and not mask.all():
        ax.contour(np.arange(-1, mask.shape[1] + 1), np.arange(-1, mask.shape[0] + 1),
                   np.pad(mask.astype(float), 1), levels=[0.5], colors=[color], linewidths=lw)


def _cell_height(images, width: float, extra: float) -> float:
    """Height of a grid cell ``width`` wide: the images' median aspect, clamped to [0.5, 1.4], plus ``extra``."""
    ratios = [im.shape[0] / im.shape[1] for im in images]
    return width * (float(np.clip(np.median(ratios), 0.5, 1.4)) if ratios else 0.75) + extra


# ------------------------------------------------------------------------------ 01_eda
def _class_names_of(labels, where: str) -> np.ndarray:
    """Class names of integer labels 0..K-1 (load_index's ``label`` column)."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: labels must be a 1-D sequence of integer class indices (the index's "
                         f"'label' column); got dtype {arr.dtype}, shape {arr.shape}.")
    if arr.size and (arr.min() < 0 or arr.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{where}: labels must lie in [0, {len(CLASS_NAMES)}); got [{arr.min()}, {arr.max()}].")
    return np.asarray(CLASS_NAMES, dtype=object)[arr]


def _bars(ax, x, counts, labels, horizontal=False, **kwargs) -> None:
    bars = (ax.barh if horizontal else ax.bar)(x, counts, edgecolor="0.25", linewidth=0.6, **kwargs)
    ax.bar_label(bars, labels, fontsize=8, padding=2)
    ax.margins(**{"x" if horizontal else "y": 0.15})


def plot_class_distribution(labels, title: str = "Diagnoses") -> Figure:
    """Images per diagnosis with count and share; ``labels``: the index's ``label`` column."""
    names = _class_names_of(labels, "plot_class_distribution")
    if names.size == 0:
        raise ValueError("plot_class_distribution: no labels.")
    counts = pd.Series(names).value_counts().reindex(CLASS_NAMES, fill_value=0)
    fig, [[ax]] = _figure(title, figsize=(7.5, 4.6))
    _bars(ax, CLASS_NAMES, counts, [f"{c:,}\n({100 * c / counts.sum():.1f}%)" for c in counts],
          color=[CLASS_COLORS[c] for c in CLASS_NAMES])
    _class_ticks(ax.get_xticklabels(), CLASS_NAMES)
    _clean(ax, title=f"all images (n={counts.sum():,})", ylabel="images")
    return fig


def plot_split_counts(split: pd.DataFrame, title: str = "Images and lesions per split") -> Figure:
    """Images and distinct lesions per class, a bar per split; ``split``: data.load_or_make_split's."""
    _require(split, ("label", "lesion_id", "split"), "plot_split_counts takes the split table of "
             "data.load_or_make_split")
    unknown = sorted(set(split["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"plot_split_counts: split values {unknown} are not among {SPLITS}.")
    splits = [s for s in SPLITS if s in set(split["split"])]
    groups = split.assign(dx=_class_names_of(split["label"].to_numpy(), "plot_split_counts")).groupby(["dx", "split"])
    grid = pd.MultiIndex.from_product([CLASS_NAMES, splits], names=["dx", "split"])
    fig, axes = _figure(title, 1, 2, figsize=(15, 4.8))
    for ax, (what, n) in zip(axes[0], (("images", groups.size()), ("distinct lesions", groups["lesion_id"].nunique()))):
        tidy = n.reindex(grid, fill_value=0).rename("n").reset_index()
        totals = tidy.groupby("split")["n"].sum()
        tidy["split"] = tidy["split"].map(lambda s: f"{s} (n={totals[s]:,})")
        sns.barplot(data=tidy, x="dx", y="n", hue="split", order=CLASS_NAMES, edgecolor="0.25", linewidth=0.6, ax=ax,
                    palette=[_SPLIT_COLORS[s] for s in splits])
        for bars in ax.containers:
            ax.bar_label(bars, fontsize=7, padding=1)
        _class_ticks(ax.get_xticklabels(), CLASS_NAMES)
        ax.margins(y=0.15)
        _clean(ax, title=what, legend={"fontsize": 8, "loc": "upper right"}, xlabel="", ylabel=what)
    return fig


def plot_images_per_lesion(lesion_ids, title: str = "Images per lesion") -> Figure:
    """How many lesions have 1, 2, 3, ... images; ``lesion_ids``: the index's ``lesion_id`` column."""
    ids = pd.Series(lesion_ids)
    if ids.empty or ids.isna().any():
        raise ValueError("plot_images_per_lesion: expected one lesion id per image (the index's "
                         f"'lesion_id' column); got {len(ids)} ids, {int(ids.isna().sum())} missing.")
    per_lesion = ids.value_counts()
    ks = np.arange(1, int(per_lesion.max()) + 1)
    hist = per_lesion.value_counts().reindex(ks, fill_value=0)
    fig, [[ax]] = _figure(title, figsize=(7, 4.2))
    _bars(ax, ks, hist, [f"{v:,}" if v else "" for v in hist], color="#0072B2", width=0.7)
    _clean(ax, title=f"{len(ids):,} images of {len(per_lesion):,} lesions; {int((per_lesion > 1).sum()):,} lesions "
           "have more than one image", xticks=ks, xlabel="images of the same lesion", ylabel="lesions")
    return fig


def plot_metadata(index: pd.DataFrame, title: str = "Patient metadata") -> Figure:
    """Age stacked by diagnosis, sex, body site ("unknown" last, lighter); ``index``: layout.load_index's."""
    _require(index, ("label", "age", "sex", "localization"), "plot_metadata takes the index of layout.load_index")
    fig, [[ax_age, ax_sex, ax_site]] = _figure(title, 1, 3, figsize=(17, 5), width_ratios=[1.3, 0.7, 1.1])
    ages = index.assign(dx=_class_names_of(index["label"].to_numpy(), "plot_metadata")).dropna(subset=["age"])
    if len(ages):
        lo, hi = 5 * math.floor(ages["age"].min() / 5), 5 * math.floor(ages["age"].max() / 5) + 5
        sns.histplot(data=ages, x="age", hue="dx", multiple="stack", binwidth=5, binrange=(lo, hi),
                     hue_order=[c for c in CLASS_NAMES if c in set(ages["dx"])], palette=CLASS_COLORS,
                     edgecolor="white", linewidth=0.4, ax=ax_age)
        _clean(ax_age, xlabel="age (years)", ylabel="images")
    else:
        _blank(ax_age, "no known ages")
    ax_age.set_title(f"age (unknown: {len(index) - len(ages):,})", fontsize=10)
    for ax, column, name, across in ((ax_sex, "sex", "sex", False), (ax_site, "localization", "body site", True)):
        counts = index[column].value_counts()
        order = sorted(counts.index, key=lambda v: v == "unknown")  # stable: by count, "unknown" last
        counts = counts[order[::-1] if across else order]  # across: horizontal bars, the largest site at the top
        labels = [f"{v:,}" if across else f"{v:,}\n({100 * v / counts.sum():.0f}%)" for v in counts]
        _bars(ax, counts.index, counts, labels, across, color=["0.8" if v == "unknown" else "0.4" for v in counts.index])
        ax.tick_params(axis="y", labelsize=8 if across else "medium")
        _clean(ax, title=name, **{"xlabel" if across else "ylabel": "images"})
    return fig


def plot_mask_area(area_fraction, labels, title: str = "Lesion size") -> Figure:
    """The lesion's share of the image per diagnosis (box, jittered points); data.lesion_area_fractions's output."""
    area = np.asarray(area_fraction, dtype=float)
    names = _class_names_of(labels, "plot_mask_area")
    if area.shape != names.shape:
        raise ValueError(f"plot_mask_area: {area.shape} area fractions but {names.shape} labels.")
    groups = [area[names == name] for name in CLASS_NAMES]
    present = [i for i, g in enumerate(groups) if len(g)]
    fig, [[ax]] = _figure(title, figsize=(9, 4.6))
    boxes = ax.boxplot([groups[i] for i in present], positions=present, widths=0.55, patch_artist=True,
                       showfliers=False, medianprops={"color": "black", "linewidth": 1.4},
                       whiskerprops={"color": "0.3"}, capprops={"color": "0.3"})["boxes"]
    rng = np.random.default_rng(0)  # the same jitter every time
    for i, box in zip(present, boxes):
        color = CLASS_COLORS[CLASS_NAMES[i]]
        box.set(facecolor=to_rgba(color, 0.35), edgecolor=color)
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(groups[i])), groups[i], s=9, color=color, alpha=0.7, linewidths=0,
                   zorder=3)
    for i in sorted(set(range(len(CLASS_NAMES))) - set(present)):
        ax.text(i, 0.5, "no images", ha="center", va="center", rotation=90, color="0.5", fontsize=9, style="italic")
    ax.set_xticks(range(len(CLASS_NAMES)), [f"{c}\nn={len(g)}" for c, g in zip(CLASS_NAMES, groups)])
    _class_ticks(ax.get_xticklabels(), CLASS_NAMES)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    _clean(ax, "y", xlim=(-0.6, len(CLASS_NAMES) - 0.4), ylim=(0, 1), ylabel="lesion area / image area")
    return fig


def plot_sample_grid(images, labels, masks=None, per_class: int = 4, title: str = "Example images per diagnosis"):
    """A row per class, its first ``per_class`` images framed in its colour, the true contour green; takes
    data.sample_per_class's ``(images, masks, labels)`` (a mask None where an image has none)."""
    images = [_image(im, f"plot_sample_grid image {i}") for i, im in enumerate(images)]
    names = _class_names_of(labels, "plot_sample_grid")
    if len(images) != len(names) or (masks is not None and len(masks) != len(images)):
        raise ValueError(f"plot_sample_grid: {len(images)} images, {len(names)} labels and "
                         f"{'no' if masks is None else len(masks)} masks; give one of each per image.")
    height = _cell_height(images, 2.1, 0.3) * len(CLASS_NAMES) + 0.8
    fig, axes = _figure(title, len(CLASS_NAMES), per_class, figsize=(2.1 * per_class + 1.2, height), blank=True)
    for row, name in zip(axes, CLASS_NAMES):
        members = np.flatnonzero(names == name)
        for ax, k in zip(row, members[:per_class]):
            ax.imshow(images[k])
            ax.set_aspect("equal", adjustable="datalim")  # grow the data limits, not shrink the axes: rows stay aligned
            ax.add_patch(Rectangle((-0.5, -0.5), images[k].shape[1], images[k].shape[0], fill=False,
                                   edgecolor=class_color(name), lw=2.5))
            if masks is not None and masks[k] is not None:
                _contour(ax, _mask(masks[k], images[k].shape[:2], f"plot_sample_grid mask {k}"), TRUE_MASK_COLOR, 1.4)
        row[0].set_ylabel(f"{name}\nn={len(members)}", color=class_color(name), fontsize=10, fontweight="bold",
                          rotation=0, ha="right", va="center", labelpad=8)
        row[0].set_title(CLASS_DESCRIPTIONS[name], loc="left", fontsize=8, color="0.3")
        if not len(members):
            row[0].text(0.05, 0.5, f"no {name} images in this set", transform=row[0].transAxes, va="center",
                        color="0.45", fontsize=9, style="italic")
    if masks is not None:
        fig.legend(handles=[Line2D([], [], color=TRUE_MASK_COLOR, lw=2, label="lesion mask (ground truth)")],
                   loc="outside lower center", fontsize=8, frameon=False)
    return fig


# ------------------------------------------------------------------------------ 02_train
# (title, y label, the keys engine.fit writes into each epoch's row)
_PANELS = (("losses", "loss", ("train_loss", "val_loss", "train_seg_loss", "val_seg_loss", "train_cls_loss",
                               "val_cls_loss")),
           ("segmentation (lesion mask)", "score", ("val_dice", "val_jaccard", "val_thresholded_jaccard")),
           ("classification (diagnosis)", "score", ("val_accuracy", "val_balanced_accuracy", "val_macro_auc")),
           ("learning rate", "learning rate", ("lr",)))
# one colour per quantity; train solid, validation dashed
_CURVE_COLORS = {"loss": "#000000", "seg_loss": "#009E73", "cls_loss": "#D55E00", "dice": "#009E73", "lr": "#000000",
                 "jaccard": "#0072B2", "thresholded_jaccard": "#56B4E9", "accuracy": "#0072B2",
                 "balanced_accuracy": "#D55E00", "macro_auc": "#CC79A7"}


def plot_learning_curves(history, title: str = "Training") -> Figure:
    """Losses (train solid, validation dashed), validation scores, learning rate (log past 10x), the best
    epoch dotted; ``history``: engine.fit's (a NaN leaves a gap)."""
    frame = pd.DataFrame(list(history))
    _require(frame, ("epoch", "best", *(k for _, _, keys in _PANELS for k in keys)),
             "plot_learning_curves takes the history (one row per epoch) that engine.fit returns")
    best = frame.loc[frame["best"].astype(bool), "epoch"]
    best = best.iloc[-1] if len(best) else None
    lr, epochs, n = frame["lr"].to_numpy(float), frame["epoch"], len(frame)
    fig, axes = _figure(f"{title} ({n} epoch{'s' if n != 1 else ''})" if title else title, 2, 2, figsize=(12, 7.5))
    for ax, (panel, ylabel, keys) in zip(axes.ravel(), _PANELS):
        for key in keys:
            split, name = key.split("_", 1) if key != "lr" else ("", key)
            ax.plot(epochs, frame[key].astype(float), "--" if split == "val" else "-", marker="o", ms=3.5, lw=1.6,
                    color=_CURVE_COLORS[name], label=key.replace("_", " "))
        if best is not None:
            ax.axvline(best, color="0.4", lw=1, ls=":", zorder=0)
        if ylabel == "score":
            ax.set_ylim(-0.02, 1.02)
        if keys == ("lr",) and (lr > 0).all() and lr.max() / lr.min() > 10:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if n == 1:
            ax.set_xlim(epochs.iloc[0] - 1, epochs.iloc[0] + 1)
        _clean(ax, "both", title=panel, legend={"fontsize": 7.5, "ncols": 2 if len(keys) > 3 else 1}, xlabel="epoch",
               ylabel=ylabel)
    if best is not None:
        fig.legend(handles=[Line2D([], [], color="0.4", ls=":", lw=1, label=f"best epoch ({best})")],
                   loc="outside lower center", fontsize=8, frameon=False)
    return fig


# ------------------------------------------------------------------------------ 03_evaluate
_REPORT = "takes the report of metrics.classification_report"
_SCORES = tuple(k for k in PER_CLASS_KEYS if k != "support")  # support goes under the class name
# scores are told apart by neutral shades and hatches, so that they never look like a class
_SHADES = (("0.2", ""), ("0.5", ""), ("0.8", ""), ("white", "///"), ("0.5", "..."), ("white", "xx"))


def plot_confusion_matrix(report: Mapping, title: str = "Confusion matrix") -> Figure:
    """Counts and row-normalised (diagonal = sensitivity), true diagnosis on rows; a class without true samples
    has its normalised row greyed and marked "–". ``report``: metrics.classification_report's."""
    _require(report, ("class_names", "confusion_matrix", "confusion_matrix_normalized", "accuracy"),
             f"plot_confusion_matrix {_REPORT}")
    names, k = list(report["class_names"]), len(report["class_names"])
    counts = np.asarray(report["confusion_matrix"], dtype=np.int64)
    support = counts.sum(axis=1)
    size = max(4.5, 0.62 * k + 2.2)  # n: the images with a diagnosis, which the matrix counts
    fig, axes = _figure(f"{title}  (n={int(counts.sum()):,}, accuracy {report['accuracy']:.2f})" if title else title,
                        1, 2, figsize=(2 * size + 0.6, size + 0.5))
    no_truth = np.repeat(support[:, None] == 0, k, axis=1)
    panels = ((counts, ",", max(counts.max(), 1), None, "counts"),
              (np.asarray(report["confusion_matrix_normalized"]), ".2f", 1.0, no_truth,
               "row-normalised (diagonal = sensitivity)"))
    for ax, (values, fmt, vmax, mask, subtitle) in zip(axes[0], panels):
        sns.heatmap(values, mask=mask, annot=True, fmt=fmt, vmin=0, vmax=vmax, cmap="Blues", cbar=False, square=True,
                    linewidths=0.5, linecolor="white", ax=ax, xticklabels=names,
                    yticklabels=[f"{n} (n={s:,})" for n, s in zip(names, support)],
                    annot_kws={"fontsize": 8 if k <= 8 else 6})
        for text in ax.texts:  # the diagonal (the right answers) bold and framed
            x, y = text.get_position()
            text.set_fontweight("bold" if int(x) == int(y) else "normal")
        for i in range(k):
            ax.add_patch(Rectangle((i, i), 1, 1, fill=False, lw=1.2, edgecolor="0.2"))
        if mask is not None:
            ax.set_facecolor("0.92")
            for i, j in zip(*np.nonzero(mask)):
                ax.text(j + 0.5, i + 0.5, "–", ha="center", va="center", fontsize=8, color="0.45")
        ax.tick_params(axis="x", labelrotation=45 if k > 5 else 0)
        ax.tick_params(axis="y", labelrotation=0, length=0)
        _class_ticks(ax.get_xticklabels(), names)
        _class_ticks(ax.get_yticklabels(), names)
        _clean(ax, title=subtitle, xlabel="predicted diagnosis", ylabel="true diagnosis")
    return fig


def plot_roc_curves(curves: Mapping, title: str = "ROC curves (one class vs rest)") -> Figure:
    """A ROC line per class in its colour, its AUC in the legend, and chance. ``curves``: metrics.roc_curves's
    (a class without positives or negatives is absent from it, and so from the figure)."""
    takes = "plot_roc_curves takes the return value of metrics.roc_curves"
    _require(curves, (), takes)
    fig, [[ax]] = _figure(title, figsize=(6.4, 6.0))
    ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=1, label="chance (AUC 0.50)")
    for name, c in curves.items():
        _require(c, ("fpr", "tpr", "auc"), f"{takes} (class {name!r})")
        ax.plot(c["fpr"], c["tpr"], color=class_color(name), lw=1.8, label=f"{name}: AUC {c['auc']:.2f}")
    _clean(ax, "both", xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal",
           xlabel="false positive rate (1 − specificity)", ylabel="true positive rate (sensitivity)")
    ax.legend(loc="lower right", fontsize=8.5, frameon=True, framealpha=0.9)
    return fig


def plot_per_class_metrics(report: Mapping, title: str = "Per-class performance") -> Figure:
    """A group of labelled bars per class (support under its name), one per per-class score; an undefined
    (NaN) score has no bar and reads "n/a". ``report``: metrics.classification_report's."""
    _require(report, ("class_names", "per_class"), f"plot_per_class_metrics {_REPORT}")
    names, per_class = list(report["class_names"]), report["per_class"]
    _require(per_class, names, f"plot_per_class_metrics {_REPORT} (its 'per_class' entry)")
    tidy = pd.DataFrame([(name, m.replace("_", " "), float(per_class[name][m])) for name in names for m in _SCORES],
                        columns=["class", "metric", "value"])
    width = float(np.clip(1.5 + len(names) * (0.3 * len(_SCORES) + 0.45), 6.5, 16))
    fig, [[ax]] = _figure(title, figsize=(width, 4.6))
    sns.barplot(data=tidy.fillna({"value": 0.0}), x="class", y="value", hue="metric", palette=[c for c, _ in _SHADES],
                edgecolor="0.2", linewidth=0.6, ax=ax)
    metrics = tidy["metric"].unique()
    for bars, metric, (_, hatch) in zip(ax.containers, metrics, _SHADES):
        plt.setp(bars.patches, hatch=hatch)
        values = tidy.loc[tidy["metric"] == metric, "value"]
        ax.bar_label(bars, ["n/a" if math.isnan(v) else f"{v:.2f}" for v in values], rotation=90, fontsize=7, padding=2)
    ax.set_xticks(range(len(names)), [f"{n}\n(n={per_class[n]['support']:,})" for n in names])
    _class_ticks(ax.get_xticklabels(), names)
    _clean(ax, "y", xlabel="", ylim=(0, 1.18), yticks=np.linspace(0, 1, 6), ylabel="score")
    ax.legend(ax.containers, metrics, ncols=len(metrics), fontsize=8, frameon=False, loc="upper center",
              bbox_to_anchor=(0.5, 1.0))  # made from the bars, so that it shows the hatches
    return fig


def plot_cases(images, true_masks, pred_masks, true_labels, pred_labels, pred_probs, scores=None,
               row_titles: Sequence[str] | None = None, title: str = "Predictions") -> Figure:
    """A row per image: image | true mask (if ``true_masks``) | predicted mask | overlay; ``scores`` (Dice) under the
    predicted mask, ``row_titles`` left, the caption green with ✓ or red with ✗. Takes evaluate.best_and_worst(...)
    as keyword arguments, or new images' predictions with ``true_masks``, ``true_labels`` None."""
    images = [_image(im, f"plot_cases image {i}") for i, im in enumerate(images)]
    if not images or len(pred_masks) != len(images):
        raise ValueError(f"plot_cases: {len(images)} images and {len(pred_masks)} predicted masks; give one of "
                         "each, at least one.")
    outlines = [(TRUE_MASK_COLOR, "true")] * (true_masks is not None) + [(PRED_MASK_COLOR, "predicted")]
    headers = ["image", *(f"{what} mask" for _, what in outlines), "overlay"]
    fig, axes = _figure(title, len(images), len(headers), blank=True,
                        figsize=(2.9 * len(headers) + 0.4, _cell_height(images, 2.9, 0.45) * len(images) + 0.9))
    for ax, header in zip(axes[0], headers):
        ax.set_title(header, fontsize=10, fontweight="bold")
    for i, (row, img) in enumerate(zip(axes, images)):
        row[0].imshow(img)
        row[-1].imshow(img)
        masks = ([] if true_masks is None else [true_masks[i]]) + [pred_masks[i]]
        for ax, mask, (color, what) in zip(row[1:-1], masks, outlines):
            mask = _mask(mask, img.shape[:2], f"plot_cases {what[:4]}_masks[{i}]")
            ax.imshow(mask, cmap=ListedColormap(["black", color]), vmin=0, vmax=1, interpolation="nearest")
            _contour(row[-1], mask, color, 1.8)
        if scores is not None and scores[i] is not None:
            row[-2].set_xlabel(f"Dice {scores[i]:.2f}", fontsize=9)
        truth = None if true_labels is None else true_labels[i]
        text, color = f"pred: {pred_labels[i]} ({pred_probs[i]:.2f})", "black"
        if truth is not None:
            ok = truth == pred_labels[i]
            text, color = f"{'✓' if ok else '✗'} true: {truth} · {text}", CORRECT_COLOR if ok else WRONG_COLOR
        row[0].set_xlabel(text, fontsize=9, color=color, fontweight="normal" if truth is None else "bold")
        if row_titles is not None:
            row[0].set_ylabel(str(row_titles[i]), fontsize=8.5)
    _outline_legend(fig, outlines)
    return fig


def plot_domain_shift(table: pd.DataFrame, title: str = "Domain shift: training data's test split vs external set",
                      external_name: str = "external") -> Figure:
    """Per metric, the test split's value and the external set's with their 95% intervals, so the drop and
    whether the intervals overlap show at once. ``table``: evaluate.domain_shift_table's."""
    _require(table, ("test split", "test 95% CI", "external", "external 95% CI"),
             "plot_domain_shift takes the table of skin_utils.evaluate.domain_shift_table")
    metrics = list(table.index)
    fig, [[ax]] = _figure(title, figsize=(7.2, 0.5 * max(len(metrics), 1) + 1.9))
    for col, ci_col, label, color, dy in (("test split", "test 95% CI", "training data, test split", "0.35", -0.14),
                                          ("external", "external 95% CI", external_name, "#d95f02", 0.14)):
        known = table[col].notna().to_numpy()
        for y, ci in zip(np.flatnonzero(known) + dy, table.loc[known, ci_col]):
            if "–" in str(ci or ""):
                ax.plot([float(x) for x in ci.split("–")], [y, y], color=color, lw=2, alpha=0.7)
        ax.plot(table.loc[known, col].astype(float), np.flatnonzero(known) + dy, "o", color=color, ms=6, label=label)
    ax.set_yticks(range(len(metrics)), [m.replace("_", " ") for m in metrics])
    ax.invert_yaxis()
    _clean(ax, "x", xlim=(-0.02, 1.02), xlabel="score (higher is better), with 95% interval")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    return fig


def plot_feature_distance(distance, reference: Mapping, title: str = "Familiarity") -> Figure:
    """Histogram of each image's feature distance (trust.feature_distance) against the validation split's
    median and "unfamiliar" threshold (``reference``: trust.feature_reference's)."""
    _require(reference, ("threshold", "median", "quantile"), "plot_feature_distance takes trust.feature_reference's dict")
    d = np.asarray(distance, dtype=float)
    d = d[np.isfinite(d)]
    fig, [[ax]] = _figure(title, figsize=(9.6, 3.2))
    if not len(d):
        _blank(ax, "no image")
        return fig
    hi = max(float(np.quantile(d, 0.99)), reference["threshold"]) * 1.1
    ax.hist(np.clip(d, 0, hi), bins=40, range=(0, hi), color="#d95f02", alpha=0.75,
            label=f"these images ({(d > reference['threshold']).mean():.0%} unfamiliar)")
    ax.axvline(reference["median"], color="0.35", ls=":", lw=1.5, label="validation median")
    ax.axvline(reference["threshold"], color="0.1", ls="--", lw=1.5,
               label=f"unfamiliar beyond (validation {reference['quantile']:.0%} quantile)")
    _clean(ax, "y", legend={"fontsize": 8.5, **_BESIDE}, ylabel="images",
           xlabel="feature distance (Mahalanobis, per axis; images beyond the axis at its edge)")
    return fig


# ------------------------------------------------------------------------------ trust: calibration, referral, Grad-CAM
def plot_reliability_diagram(before: Mapping, after: Mapping | None = None, *, temperature: float | None = None,
                             title: str | None = None) -> Figure:
    """Accuracy per confidence bin against the diagonal, the gap to confidence hatched, the share of images per
    bin below; ``after`` (temperature-scaled) adds a column. Each: trust.reliability_diagram's."""
    diagrams = [before] + ([after] if after is not None else [])
    names = ["uncalibrated", "temperature-scaled" + (f" (T = {temperature:.2f})" if temperature is not None else "")]
    fig, axes = _figure(title, 2, len(diagrams), figsize=(4.6 * len(diagrams), 5.6), sharex=True,
                        gridspec_kw={"height_ratios": [3, 1]})
    for ax, hist_ax, d, name in zip(axes[0], axes[1], diagrams, names):
        _require(d, ("bin_edges", "confidence", "accuracy", "count", "ece", "accuracy_overall", "confidence_overall"),
                 "plot_reliability_diagram takes the return value of trust.reliability_diagram")
        edges, conf, acc, count = (np.asarray(d[k], float) for k in ("bin_edges", "confidence", "accuracy", "count"))
        left, width, filled = edges[:-1], np.diff(edges), count > 0
        ax.bar(left[filled], acc[filled], width[filled], align="edge", color="#0072B2", edgecolor="white",
               label="accuracy in bin")
        ax.bar(left[filled], conf[filled] - acc[filled], width[filled], bottom=acc[filled], align="edge",
               color=WRONG_COLOR, alpha=0.35, edgecolor=WRONG_COLOR, hatch="//", label="gap to confidence")
        ax.plot([0, 1], [0, 1], ls="--", color="0.3", lw=1, label="perfect calibration")
        _clean(ax, title=f"{name}\nECE {d['ece']:.3f} · accuracy {d['accuracy_overall']:.3f} · mean confidence "
               f"{d['confidence_overall']:.3f}", legend={"loc": "upper left", "fontsize": 8}, xlim=(0, 1), ylim=(0, 1),
               ylabel="accuracy")
        hist_ax.bar(left, count / max(count.sum(), 1), width, align="edge", color="0.5", edgecolor="white")
        hist_ax.set(xlim=(0, 1), xlabel="confidence (top-label probability)", ylabel="share of images")
    return fig


def plot_risk_coverage(curves: Mapping, *, title: str | None = None) -> Figure:
    """Risk (error rate of the images kept) against coverage (share kept), a line per uncertainty, the first one's
    oracle dashed, random referral dotted. ``curves``: trust.risk_coverage_curve's, or a dict of them by name."""
    curves = {"uncertainty": curves} if "risk" in curves else curves
    if not curves:
        raise ValueError("plot_risk_coverage: no curve given.")
    for c in curves.values():
        _require(c, ("coverage", "risk", "optimal_risk", "aurc", "optimal_aurc", "error_rate"), "plot_risk_coverage "
                 "takes the return value of trust.risk_coverage_curve (or a dict of them by name)")
    fig, [[ax]] = _figure(title, figsize=(8.4, 4.4))
    for name, c in curves.items():
        ax.plot(c["coverage"], c["risk"], lw=1.8, label=f"{name} (AURC {c['aurc']:.3f})")
    c = next(iter(curves.values()))
    ax.plot(c["coverage"], c["optimal_risk"], ls="--", color="0.35", lw=1.2,
            label=f"oracle (AURC {c['optimal_aurc']:.3f})")
    ax.axhline(c["error_rate"], ls=":", color="0.35", lw=1.2, label=f"random referral (AURC {c['error_rate']:.3f})")
    for coverage in (0.9, 0.8, 0.7):
        ax.axvline(coverage, color="0.8", lw=0.8, zorder=0)
    _clean(ax, legend={"fontsize": 8, **_BESIDE}, xlim=(0, 1), ylim=(0, None),
           xlabel="coverage (share of images decided automatically)", ylabel="risk (error rate of those images)")
    return fig


def _draw_cam(ax, image, cam, mask, pred_mask, caption: str | None, where: str) -> None:
    """The image, the heat map (finite, in [0, 1], any size: resized bilinearly) over it, both contours."""
    img = _image(image, where)
    ax.imshow(img)
    if cam is not None:
        c = np.asarray(cam, dtype=np.float32)
        if c.ndim != 2 or not np.all(np.isfinite(c)) or (c.size and (c.min() < 0 or c.max() > 1)):
            raise ValueError(f"{where}: a heat map is a finite 2-D array in [0, 1] as engine.grad_cam gives it; "
                             f"got shape {c.shape}.")
        if c.shape != img.shape[:2]:
            c = np.asarray(Image.fromarray(c, mode="F").resize(img.shape[1::-1], Image.BILINEAR))
        ax.imshow(np.clip(c, 0, 1), cmap=_CAM_CMAP, vmin=0, vmax=1, alpha=0.45)
    for m, color, what in ((mask, TRUE_MASK_COLOR, "true"), (pred_mask, PRED_MASK_COLOR, "predicted")):
        if m is not None:
            _contour(ax, _mask(m, img.shape[:2], f"{where} ({what} mask)"), color)
    ax.set_title(caption or "", fontsize=9)


def plot_cam_overlay(image, cam, mask=None, pred_mask=None, *, caption: str | None = None, title: str | None = None):
    """The image, and beside it engine.grad_cam's ``cam`` over it, the true (green) and predicted (magenta)
    contours on both; ``caption`` (class, probability, flags) above the overlay."""
    fig, axes = _figure(title, 1, 2, figsize=(8.4, 4.2), blank=True)
    _draw_cam(axes[0, 0], image, None, mask, pred_mask, "image", "plot_cam_overlay")
    _draw_cam(axes[0, 1], image, cam, mask, pred_mask, caption or "Grad-CAM", "plot_cam_overlay")
    fig.colorbar(plt.cm.ScalarMappable(cmap=_CAM_CMAP, norm=plt.Normalize(0, 1)), ax=axes[0, 1], fraction=0.046,
                 pad=0.02, label="relative evidence")
    return fig


def plot_cam_grid(images, cams, masks=None, pred_masks=None, captions: Sequence[str] | None = None, *,
                  ncols: int = 4, title: str | None = None) -> Figure:
    """A grid of heat maps drawn as in `plot_cam_overlay`; takes evaluate.cam_examples(...) as keyword arguments."""
    n = len(images)
    if not n or len(cams) != n:
        raise ValueError(f"plot_cam_grid: {n} images and {len(cams)} heat maps; give one of each, at least one.")
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = _figure(title, nrows, ncols, figsize=(3.2 * ncols, 2.8 * nrows), blank=True)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:n]):
        _draw_cam(ax, images[i], cams[i], *(None if s is None else s[i] for s in (masks, pred_masks, captions)),
                  f"plot_cam_grid image {i}")
    fig.colorbar(plt.cm.ScalarMappable(cmap=_CAM_CMAP, norm=plt.Normalize(0, 1)), ax=axes, fraction=0.02, pad=0.01,
                 label="relative evidence")
    _outline_legend(fig, [(c, w) for m, c, w in ((masks, TRUE_MASK_COLOR, "true"),
                                                  (pred_masks, PRED_MASK_COLOR, "predicted")) if m is not None])
    return fig


# ------------------------------------------------------------------------------ 05_experiments and the benchmark
_METRIC_LABELS = {"dice": "Dice", "jaccard": "Jaccard", "thresholded_jaccard": "thresholded Jaccard",
                  "balanced_accuracy": "balanced accuracy", "macro_auc": "macro AUC", "mel_auc": "melanoma AUC"}


def _per_cell(title: str, n_metrics: int, cells: list, width: float):
    """A panel per metric, a row per grid cell (named on the first panel only)."""
    fig, axes = _figure(title, 1, n_metrics, figsize=(width * n_metrics, 1.7 + 0.45 * len(cells)), sharey=True)
    axes[0, 0].set_yticks(range(len(cells)), cells, fontsize=8)
    axes[0, 0].set_ylim(len(cells) - 0.5, -0.5)
    for ax in axes[0]:
        ax.grid(axis="x", alpha=0.3)
    return fig, axes[0]


def plot_experiment(table: pd.DataFrame, metrics=("dice", "balanced_accuracy", "macro_auc"), split: str = "val",
                    title: str = "Experiment") -> Figure:
    """Per metric, each finished run of ``split`` as a dot (one per seed) and the mean over seeds as a bar ± 1 sd.
    ``table``: sweep.gather's tidy table; a cell is named by its runs' name without the seed."""
    done = table[(table["status"] == "finished") & (table["split"] == split)]
    if done.empty:
        raise ValueError(f"no finished run has {split!r} results to plot.")
    done = done.assign(cell=done["run"].str.replace(r"_seed\d+$", "", regex=True))
    cells = list(dict.fromkeys(done["cell"]))
    fig, axes = _per_cell(f"{title} · {split} split (dots: seeds; bars: mean ± sd)", len(metrics), cells, 4.2)
    for ax, metric in zip(axes, metrics):
        rows = done[done["metric"] == metric]
        for y, cell in enumerate(cells):
            values = rows.loc[rows["cell"] == cell, "value"].to_numpy(float)
            if len(values) == 0:
                ax.text(0.5, y, "not applicable", va="center", ha="center", color="0.5", fontsize=8,
                        transform=ax.get_yaxis_transform())
                continue
            ax.barh(y, values.mean(), xerr=values.std(ddof=1) if len(values) > 1 else 0.0, color="#9ecae1",
                    edgecolor="#3182bd", height=0.6, capsize=3)
            ax.scatter(values, np.full(len(values), y), color="#08306b", s=14, zorder=3)
        lo = rows["value"].min()  # NaN without a value
        ax.set_xlim(max(0.0, lo - 0.1) if np.isfinite(lo) else 0.0, 1.0)
        ax.set_xlabel(_METRIC_LABELS.get(metric, metric))
    return fig


def plot_paired_differences(diff: pd.DataFrame, title: str = "Paired differences against the reference") -> Figure:
    """A forest plot: per metric and cell, the seed-averaged difference to the reference with its paired
    lesion-level 95% interval, dark when it excludes 0. ``diff``: sweep.compare's table."""
    if diff.empty:
        raise ValueError("nothing to plot: the comparison table is empty.")
    metrics, cells = list(dict.fromkeys(diff["metric"])), list(dict.fromkeys(diff["cell"]))
    title = f"{title} ({diff['reference'].iloc[0]}); dark: the 95% CI excludes 0"
    fig, axes = _per_cell(title, len(metrics), cells, 3.6)
    for ax, metric in zip(axes, metrics):
        for _, r in diff[diff["metric"] == metric].iterrows():
            ax.errorbar(r["difference"], cells.index(r["cell"]), fmt="o", capsize=3,
                        xerr=[[r["difference"] - r["ci_low"]], [r["ci_high"] - r["difference"]]],
                        color="#08306b" if r["excludes_zero"] else "#9ecae1")
        ax.axvline(0, color="0.3", lw=1)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(f"Δ {_METRIC_LABELS.get(metric, metric)}")
    return fig


def plot_benchmark(table: pd.DataFrame, title: str = "Input pipeline throughput") -> Figure:
    """Mean images per second per stage, naive against ours, the speed-up ("×3.4") right of each stage with
    both, log scale past 50x. ``table``: pd.DataFrame(scripts/benchmark.py run(...)["table"]) (repeats averaged)."""
    _require(table, ("stage", "pipeline", "images_per_s"),
             "plot_benchmark takes pd.DataFrame(scripts/benchmark.py run(...)['table'])")
    if table.empty:
        raise ValueError("plot_benchmark: the table has no rows.")
    mean = table.groupby(["stage", "pipeline"], sort=False)["images_per_s"].mean()
    stages = list(pd.unique(table["stage"]))
    fig, [[ax]] = _figure(title, figsize=(9, 1.6 + 0.75 * len(stages)))
    sns.barplot(data=table, y="stage", x="images_per_s", hue="pipeline", order=stages, estimator="mean", errorbar=None,
                hue_order=[p for p in ("naive", "ours") if p in set(table["pipeline"])], orient="h",
                palette={"naive": "0.65", "ours": "#0072B2"}, edgecolor="0.25", linewidth=0.5, ax=ax)
    for bars in ax.containers:
        ax.bar_label(bars, fmt=" {:,.0f}", fontsize=8)
    for y, stage in enumerate(stages):
        if (stage, "naive") in mean and (stage, "ours") in mean:
            ratio = mean[stage, "ours"] / mean[stage, "naive"]
            ax.text(1.01, y, f"×{ratio:.1f}", transform=ax.get_yaxis_transform(), va="center", fontsize=10,
                    fontweight="bold", color=CORRECT_COLOR if ratio >= 1 else WRONG_COLOR)
    lo, hi = mean.min(), mean.max()
    if lo > 0 and hi / lo > 50:
        ax.set(xscale="log", xlim=(lo / 2, hi * 4))
    else:
        ax.set_xlim(0, hi * 1.2)
    _clean(ax, "x", legend={"fontsize": 8, "loc": "lower right"}, xlabel="images per second (higher is better)",
           ylabel="")
    ax.set_title("speed-up ours / naive at the right", fontsize=9, loc="right", color="0.3")
    return fig
