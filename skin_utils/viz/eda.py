"""Figures of notebooks/01_eda: the data set before any model sees it.

Labels are the integer class indices of the index (``load_index``'s ``label`` column, 0..6 in
:data:`~skin_utils.labels.CLASS_NAMES` order).
"""

from __future__ import annotations

import math

import matplotlib.colors
import matplotlib.ticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skin_utils.data import SPLITS
from skin_utils.labels import CLASS_DESCRIPTIONS, CLASS_NAMES
from skin_utils.viz.common import (
    CLASS_COLORS,
    TRUE_MASK_COLOR,
    cell_aspect,
    check_image,
    check_mask,
    class_color,
    color_class_ticks,
    draw_contour,
    image_axes,
    new_figure,
    no_data,
    require,
    show_image,
    suptitle,
)

__all__ = [
    "SPLIT_COLORS",
    "plot_class_distribution",
    "plot_split_counts",
    "plot_images_per_lesion",
    "plot_metadata",
    "plot_mask_area",
    "plot_sample_grid",
]

#: Splits are told apart by neutral shades, so that they never look like a class.
SPLIT_COLORS = {"train": "0.3", "val": "0.6", "test": "0.85"}
_KNOWN, _UNKNOWN = "0.4", "0.8"  # bars of known / "unknown" metadata values


def _class_names_of(labels, where: str) -> np.ndarray:
    """The class names of integer labels 0..K-1 (``load_index``'s ``label`` column)."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}: labels must be a 1-D sequence of integer class indices (the "
                         f"index's 'label' column); got dtype {arr.dtype}, shape {arr.shape}.")
    if arr.size and (arr.min() < 0 or arr.max() >= len(CLASS_NAMES)):
        raise ValueError(f"{where}: labels must lie in [0, {len(CLASS_NAMES)}); "
                         f"got values in [{arr.min()}, {arr.max()}].")
    return np.asarray(CLASS_NAMES, dtype=object)[arr]


def _bar_axes(ax, ylabel: str) -> None:
    ax.set_ylabel(ylabel)
    ax.margins(y=0.15)
    ax.spines[["top", "right"]].set_visible(False)


def plot_class_distribution(labels, title: str = "Diagnoses") -> Figure:
    """Bar chart of the number of images per diagnosis, annotated with count and percentage.

    ``labels``: the index's ``label`` column (integer class indices). Classes without images
    get an empty bar labelled 0.
    """
    names = _class_names_of(labels, "plot_class_distribution")
    if names.size == 0:
        raise ValueError("plot_class_distribution: no labels.")
    counts = pd.Series(names).value_counts().reindex(CLASS_NAMES, fill_value=0)
    fig, axes = new_figure(1, 1, figsize=(7.5, 4.6))
    ax = axes[0, 0]
    bars = ax.bar(CLASS_NAMES, counts, color=[CLASS_COLORS[c] for c in CLASS_NAMES],
                  edgecolor="0.25", linewidth=0.6)
    total = int(counts.sum())
    ax.bar_label(bars, [f"{c:,}\n({100 * c / total:.1f}%)" for c in counts], fontsize=8,
                 padding=2)
    color_class_ticks(ax.get_xticklabels(), CLASS_NAMES)
    _bar_axes(ax, "images")
    ax.set_title(f"all images (n={total:,})", fontsize=10)
    return suptitle(fig, title)


def plot_split_counts(split: pd.DataFrame, title: str = "Images and lesions per split") -> Figure:
    """Two panels of bars per class, one bar per split: images, and distinct lesions.

    ``split``: the split table (``Data.split``, from ``data.splits.load_or_make_split``) with
    columns ``label``, ``lesion_id`` and ``split`` (values in ``SPLITS``).
    """
    require(split, ("label", "lesion_id", "split"),
            "plot_split_counts takes the split table of data.splits.load_or_make_split")
    unknown = sorted(set(split["split"]) - set(SPLITS))
    if unknown:
        raise ValueError(f"plot_split_counts: split values {unknown} are not among {SPLITS}.")
    splits = [s for s in SPLITS if s in set(split["split"])]
    frame = split.assign(dx=_class_names_of(split["label"].to_numpy(), "plot_split_counts"))
    grid = pd.MultiIndex.from_product([CLASS_NAMES, splits], names=["dx", "split"])
    groups = frame.groupby(["dx", "split"])
    panels = [("images", groups.size()), ("distinct lesions", groups["lesion_id"].nunique())]
    fig, axes = new_figure(1, 2, figsize=(15, 4.8))
    for ax, (what, counts) in zip(axes[0], panels):
        tidy = counts.reindex(grid, fill_value=0).rename("n").reset_index()
        totals = tidy.groupby("split")["n"].sum()
        tidy["split"] = tidy["split"].map(lambda s: f"{s} (n={totals[s]:,})")
        sns.barplot(data=tidy, x="dx", y="n", hue="split", order=CLASS_NAMES,
                    palette=[SPLIT_COLORS[s] for s in splits], edgecolor="0.25", linewidth=0.6,
                    ax=ax)
        for bars in ax.containers:
            ax.bar_label(bars, fontsize=7, padding=1)
        color_class_ticks(ax.get_xticklabels(), CLASS_NAMES)
        ax.set_xlabel("")
        _bar_axes(ax, what)
        ax.legend(fontsize=8, frameon=False, loc="upper right")
        ax.set_title(what, fontsize=10)
    return suptitle(fig, title)


def plot_images_per_lesion(lesion_ids, title: str = "Images per lesion") -> Figure:
    """Bar histogram of how many images each lesion has (1, 2, 3, ...).

    ``lesion_ids``: the index's ``lesion_id`` column (one entry per image).
    """
    ids = pd.Series(lesion_ids)
    if ids.empty or ids.isna().any():
        raise ValueError("plot_images_per_lesion: expected one lesion id per image (the index's "
                         f"'lesion_id' column); got {len(ids)} ids, {int(ids.isna().sum())} missing.")
    per_lesion = ids.value_counts()
    ks = np.arange(1, int(per_lesion.max()) + 1)
    hist = per_lesion.value_counts().reindex(ks, fill_value=0)
    fig, axes = new_figure(1, 1, figsize=(7, 4.2))
    ax = axes[0, 0]
    bars = ax.bar(ks, hist, color="#0072B2", edgecolor="0.25", linewidth=0.6, width=0.7)
    ax.bar_label(bars, [f"{v:,}" if v else "" for v in hist], fontsize=8, padding=2)
    ax.set_xticks(ks)
    ax.set_xlabel("images of the same lesion")
    _bar_axes(ax, "lesions")
    multi = int((per_lesion > 1).sum())
    ax.set_title(f"{len(ids):,} images of {len(per_lesion):,} lesions; "
                 f"{multi:,} lesions have more than one image", fontsize=10)
    return suptitle(fig, title)


def _category_counts(values: pd.Series) -> pd.Series:
    """Counts, largest first, with "unknown" (``load_index``'s missing value) last."""
    counts = values.value_counts()
    return pd.concat([counts.drop("unknown", errors="ignore"),
                      counts.reindex(["unknown"]).dropna().astype(int)])


def plot_metadata(index: pd.DataFrame, title: str = "Patient metadata") -> Figure:
    """1x3 panel: age histogram stacked by diagnosis, sex counts, body-site counts.

    ``index``: ``layout.load_index``'s table, columns ``label``, ``age`` (NaN when
    unknown), ``sex`` and ``localization`` ("unknown" when unknown).
    """
    require(index, ("label", "age", "sex", "localization"),
            "plot_metadata takes the index of skin_utils.layout.load_index")
    fig, axes = new_figure(1, 3, figsize=(17, 5), width_ratios=[1.3, 0.7, 1.1])
    ax_age, ax_sex, ax_loc = axes[0]

    ages = index.assign(dx=_class_names_of(index["label"].to_numpy(), "plot_metadata"))
    ages = ages[ages["age"].notna()]
    if len(ages):
        lo = 5 * math.floor(ages["age"].min() / 5)
        hi = 5 * math.floor(ages["age"].max() / 5) + 5
        sns.histplot(data=ages, x="age", hue="dx", multiple="stack", binwidth=5,
                     binrange=(lo, hi), hue_order=[c for c in CLASS_NAMES if c in set(ages["dx"])],
                     palette=CLASS_COLORS, edgecolor="white", linewidth=0.4, ax=ax_age)
        ax_age.set_xlabel("age (years)")
        ax_age.set_ylabel("images")
        ax_age.spines[["top", "right"]].set_visible(False)
    else:
        no_data(ax_age, "no known ages")
    ax_age.set_title(f"age (unknown: {len(index) - len(ages):,})", fontsize=10)

    sex = _category_counts(index["sex"])
    bars = ax_sex.bar(sex.index, sex, edgecolor="0.25", linewidth=0.6,
                      color=[_UNKNOWN if s == "unknown" else _KNOWN for s in sex.index])
    ax_sex.bar_label(bars, [f"{v:,}\n({100 * v / sex.sum():.0f}%)" for v in sex], fontsize=8,
                     padding=2)
    _bar_axes(ax_sex, "images")
    ax_sex.set_title("sex", fontsize=10)

    site = _category_counts(index["localization"])[::-1]  # largest at the top
    bars = ax_loc.barh(site.index, site, edgecolor="0.25", linewidth=0.5,
                       color=[_UNKNOWN if s == "unknown" else _KNOWN for s in site.index])
    ax_loc.bar_label(bars, [f"{v:,}" for v in site], fontsize=8, padding=3)
    ax_loc.tick_params(axis="y", labelsize=8)
    ax_loc.margins(x=0.12)
    ax_loc.set_xlabel("images")
    ax_loc.spines[["top", "right"]].set_visible(False)
    ax_loc.set_title("body site", fontsize=10)
    return suptitle(fig, title)


def plot_mask_area(area_fraction, labels, title: str = "Lesion size") -> Figure:
    """Box plot plus jittered points of the lesion's share of the image, per diagnosis.

    ``area_fraction, labels``: what ``data.eda.lesion_area_fractions`` returns (mask pixels /
    image pixels per image, and the integer label of each image). Classes without images are
    shown with "n=0".
    """
    area = np.asarray(area_fraction, dtype=float)
    names = _class_names_of(labels, "plot_mask_area")
    if area.shape != names.shape:
        raise ValueError(f"plot_mask_area: {area.shape} area fractions but {names.shape} labels.")
    groups = [area[names == name] for name in CLASS_NAMES]
    fig, axes = new_figure(1, 1, figsize=(9, 4.6))
    ax = axes[0, 0]
    present = [i for i, values in enumerate(groups) if len(values)]
    boxes = ax.boxplot([groups[i] for i in present], positions=present, widths=0.55,
                       patch_artist=True, showfliers=False,
                       medianprops={"color": "black", "linewidth": 1.4},
                       whiskerprops={"color": "0.3"}, capprops={"color": "0.3"})["boxes"]
    rng = np.random.default_rng(0)  # the same jitter every time
    for i, box in zip(present, boxes):
        color = CLASS_COLORS[CLASS_NAMES[i]]
        box.set_facecolor(matplotlib.colors.to_rgba(color, 0.35))
        box.set_edgecolor(color)
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(groups[i])), groups[i], s=9, color=color,
                   alpha=0.7, linewidths=0, zorder=3)
    n = {name: len(values) for name, values in zip(CLASS_NAMES, groups)}
    for i, name in enumerate(CLASS_NAMES):
        if not n[name]:
            ax.text(i, 0.5, "no images", ha="center", va="center", rotation=90,
                    color="0.5", fontsize=9, style="italic")
    ax.set_xticks(range(len(CLASS_NAMES)), [f"{c}\nn={n[c]}" for c in CLASS_NAMES])
    color_class_ticks(ax.get_xticklabels(), CLASS_NAMES)
    ax.set_xlim(-0.6, len(CLASS_NAMES) - 0.4)
    ax.set_ylim(0, 1)
    ax.set_ylabel("lesion area / image area")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="y", color="0.9")
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    return suptitle(fig, title)


def plot_sample_grid(
    images,
    labels,
    masks=None,
    per_class: int = 4,
    title: str = "Example images per diagnosis",
) -> Figure:
    """One row per class with its first ``per_class`` images, framed in the class colour, with
    the ground-truth mask contour in green when ``masks`` is given.

    ``images, masks, labels``: what ``data.eda.sample_per_class`` returns (uint8 (H, W, 3)
    images of any sizes; 0/1 masks at each image's size, None where an image has no mask;
    integer labels). A class without images is an empty row with a note. The figure has
    ``len(CLASS_NAMES) * per_class`` axes.
    """
    images = [check_image(im, f"plot_sample_grid image {i}") for i, im in enumerate(images)]
    names = _class_names_of(labels, "plot_sample_grid")
    if len(images) != len(names) or (masks is not None and len(masks) != len(images)):
        raise ValueError(f"plot_sample_grid: {len(images)} images, {len(names)} labels and "
                         f"{'no' if masks is None else len(masks)} masks; give one of each per image.")
    cell_w = 2.1
    cell_h = cell_w * cell_aspect(images) + 0.3
    fig, axes = new_figure(len(CLASS_NAMES), per_class,
                           figsize=(cell_w * per_class + 1.2, cell_h * len(CLASS_NAMES) + 0.8))
    for row, name in zip(axes, CLASS_NAMES):
        members = np.flatnonzero(names == name)
        color = class_color(name)
        for ax in row:
            image_axes(ax)
        for ax, k in zip(row, members[:per_class]):
            show_image(ax, images[k], frame_color=color)
            if masks is not None and masks[k] is not None:
                mask = check_mask(masks[k], images[k].shape[:2], f"plot_sample_grid mask {k}")
                draw_contour(ax, mask, TRUE_MASK_COLOR, 1.4)
        row[0].set_ylabel(f"{name}\nn={len(members)}", color=color, fontsize=10,
                          fontweight="bold", rotation=0, ha="right", va="center", labelpad=8)
        row[0].set_title(CLASS_DESCRIPTIONS[name], loc="left", fontsize=8, color="0.3")
        if not len(members):
            row[0].text(0.05, 0.5, f"no {name} images in this set", transform=row[0].transAxes,
                        ha="left", va="center", color="0.45", fontsize=9, style="italic")
    if masks is not None:
        fig.legend(handles=[Line2D([], [], color=TRUE_MASK_COLOR, lw=2,
                                   label="lesion mask (ground truth)")],
                   loc="outside lower center", fontsize=8, frameon=False)
    return suptitle(fig, title)
