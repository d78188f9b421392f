"""Figures of notebooks/03_evaluate: the classification report of a trained model.

``report`` below is what ``metrics.classification_report_dict`` (= ``ClassificationMetrics
.aggregate()``) returns; ``evaluation.evaluate_original_size(...).report`` holds the same keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from skin_utils.metrics import PER_CLASS_KEYS
from skin_utils.viz.common import (CORRECT_COLOR, WRONG_COLOR, class_color, color_class_ticks, new_figure, require,
                                   suptitle)
from skin_utils.viz.inference import plot_overlay_grid

__all__ = ["plot_confusion_matrix", "plot_roc_curves", "plot_per_class_metrics", "plot_cases", "plot_domain_shift"]

_REPORT = "takes the report of metrics.classification_report_dict (ClassificationMetrics.aggregate())"
#: The per-class scores (every per-class key but ``support``, which goes under the class name).
_SCORES = tuple(k for k in PER_CLASS_KEYS if k != "support")
# scores are told apart by neutral shades and hatches, so that they never look like a class
_SHADES = (("0.2", ""), ("0.5", ""), ("0.8", ""), ("white", "///"), ("0.5", "..."), ("white", "xx"))


def plot_confusion_matrix(report: Mapping, title: str = "Confusion matrix") -> Figure:
    """Two heatmaps, true diagnosis on rows and predicted on columns: the counts
    (``report["confusion_matrix"]``) and the row-normalised matrix
    (``report["confusion_matrix_normalized"]``, whose diagonal is each class's sensitivity).
    A class without true samples has its normalised row greyed out and marked "–".
    """
    require(report, ("class_names", "confusion_matrix", "confusion_matrix_normalized",
                     "n_images", "accuracy"), f"plot_confusion_matrix {_REPORT}")
    names = list(report["class_names"])
    k = len(names)
    counts = np.asarray(report["confusion_matrix"], dtype=np.int64)
    norm = np.asarray(report["confusion_matrix_normalized"], dtype=float)
    if counts.shape != (k, k) or norm.shape != (k, k):
        raise ValueError(f"plot_confusion_matrix: expected {k} x {k} matrices for {k} classes; "
                         f"got {counts.shape} and {norm.shape}.")
    support = counts.sum(axis=1)
    no_truth = np.repeat(support[:, None] == 0, k, axis=1)
    size = max(4.5, 0.62 * k + 2.2)
    fig, axes = new_figure(1, 2, figsize=(2 * size + 0.6, size + 0.5))
    panels = (
        (axes[0, 0], counts, np.vectorize("{:,}".format)(counts), max(counts.max(), 1), None,
         "counts"),
        (axes[0, 1], norm, np.vectorize("{:.2f}".format)(norm), 1.0, no_truth,
         "row-normalised (diagonal = sensitivity)"),
    )
    for ax, values, annot, vmax, mask, subtitle in panels:
        sns.heatmap(values, mask=mask, annot=annot, fmt="", vmin=0, vmax=vmax, cmap="Blues",
                    cbar=False, square=True, linewidths=0.5, linecolor="white",
                    annot_kws={"fontsize": 8 if k <= 8 else 6}, ax=ax,
                    xticklabels=names, yticklabels=[f"{n} (n={s:,})" for n, s in zip(names, support)])
        for text in ax.texts:  # the diagonal (the correct answers) in bold, and framed
            x, y = text.get_position()
            if int(x) == int(y):
                text.set_fontweight("bold")
        for i in range(k):
            ax.add_patch(Rectangle((i, i), 1, 1, fill=False, lw=1.2, edgecolor="0.2"))
        if mask is not None:
            ax.set_facecolor("0.92")
            for i in np.flatnonzero(support == 0):
                for j in range(k):
                    ax.text(j + 0.5, i + 0.5, "–", ha="center", va="center", fontsize=8,
                            color="0.45")
        ax.tick_params(axis="x", labelrotation=45 if k > 5 else 0)
        ax.tick_params(axis="y", labelrotation=0, length=0)
        color_class_ticks(ax.get_xticklabels(), names)
        color_class_ticks(ax.get_yticklabels(), names)
        ax.set_xlabel("predicted diagnosis")
        ax.set_ylabel("true diagnosis")
        ax.set_title(subtitle, fontsize=10)
    n, acc = report["n_images"], report["accuracy"]
    return suptitle(fig, f"{title}  (n={n:,}, accuracy {acc:.2f})" if title else title)


def plot_roc_curves(curves: Mapping, title: str = "ROC curves (one class vs rest)") -> Figure:
    """One ROC line per class in its colour, its AUC in the legend, plus the chance diagonal.

    ``curves``: what ``metrics.roc_curves`` returns (class name -> ``{"fpr": [...], "tpr":
    [...], "auc": float}``; classes without positives or negatives are absent from it and so
    from the figure).
    """
    takes = "plot_roc_curves takes the return value of metrics.roc_curves"
    if not isinstance(curves, Mapping):
        raise ValueError(f"{takes}; got a {type(curves).__name__}.")
    fig, axes = new_figure(1, 1, figsize=(6.4, 6.0))
    ax = axes[0, 0]
    ax.plot([0, 1], [0, 1], ls=":", color="0.6", lw=1, label="chance (AUC 0.50)")
    for name, curve in curves.items():
        require(curve, ("fpr", "tpr", "auc"), f"{takes} (class {name!r})")
        if len(curve["fpr"]) != len(curve["tpr"]):
            raise ValueError(f"plot_roc_curves: class {name!r} has {len(curve['fpr'])} fpr but "
                             f"{len(curve['tpr'])} tpr values.")
        ax.plot(curve["fpr"], curve["tpr"], color=class_color(name), lw=1.8,
                label=f"{name}: AUC {curve['auc']:.2f}")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 − specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.grid(color="0.92")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="lower right", fontsize=8.5, frameon=True, framealpha=0.9)
    return suptitle(fig, title)


def plot_per_class_metrics(
    report: Mapping,
    title: str = "Per-class performance",
    metrics: Sequence[str] = _SCORES,
) -> Figure:
    """Grouped bars: one group per class (its support under the name), one bar per score in
    ``metrics`` (by default every per-class score: sensitivity, specificity, precision, F1,
    AUC, average precision), each labelled with its value; an undefined (NaN) score has no bar
    and reads "n/a".
    """
    require(report, ("class_names", "per_class"), f"plot_per_class_metrics {_REPORT}")
    unknown = [m for m in metrics if m not in _SCORES]
    if unknown or not metrics:
        raise ValueError(f"plot_per_class_metrics: metrics must be some of {_SCORES}; "
                         f"got {list(metrics)}.")
    names = list(report["class_names"])
    per_class = report["per_class"]
    require(per_class, names, f"plot_per_class_metrics {_REPORT} (its 'per_class' entry)")
    tidy = pd.DataFrame([(name, m.replace("_", " "), float(per_class[name][m]))
                         for name in names for m in metrics], columns=["class", "metric", "value"])
    width_in = 1.5 + len(names) * (0.3 * len(metrics) + 0.45)
    fig, axes = new_figure(1, 1, figsize=(float(np.clip(width_in, 6.5, 16)), 4.6))
    ax = axes[0, 0]
    sns.barplot(data=tidy.fillna({"value": 0.0}), x="class", y="value", hue="metric",
                palette=[_SHADES[j % len(_SHADES)][0] for j in range(len(metrics))],
                edgecolor="0.2", linewidth=0.6, ax=ax)
    for j, (bars, metric) in enumerate(zip(ax.containers, tidy["metric"].unique())):
        values = tidy.loc[tidy["metric"] == metric, "value"]
        for bar in bars:
            bar.set_hatch(_SHADES[j % len(_SHADES)][1])
        ax.bar_label(bars, ["n/a" if math.isnan(v) else f"{v:.2f}" for v in values],
                     rotation=90, fontsize=7, padding=2)
    ax.set_xticks(range(len(names)),
                  [f"{n}\n(n={per_class[n]['support']:,})" for n in names])
    color_class_ticks(ax.get_xticklabels(), names)
    ax.set_xlabel("")
    ax.set_ylim(0, 1.18)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("score")
    ax.grid(axis="y", color="0.92")
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(ax.containers, tidy["metric"].unique(), ncols=len(metrics), fontsize=8,
              frameon=False, loc="upper center", bbox_to_anchor=(0.5, 1.0))  # with the hatches
    return suptitle(fig, title)


def plot_cases(images, true_masks, pred_masks, true_labels, pred_labels, pred_probs, scores=None,
               title: str = "Best and worst cases", row_titles: Sequence[str] | None = None) -> Figure:
    """`skin_utils.viz.plot_overlay_grid` for an evaluated set that may lack masks or diagnoses
    (takes ``evaluation.best_and_worst(...)`` as keyword arguments): ``true_masks`` None for images
    without masks (3 columns, no true mask), and ``true_labels`` None, or None entries, for images
    without a diagnosis (the caption then gives the prediction only, in black)."""
    n = len(images)
    labels = list(true_labels) if true_labels is not None else [None] * n
    if len(labels) != n:
        raise ValueError(f"plot_cases: {n} images but {len(labels)} true labels.")
    has_masks = true_masks is not None
    if has_masks and all(t is not None for t in labels):
        return plot_overlay_grid(images, true_masks, pred_masks, labels, pred_labels, pred_probs, scores=scores,
                                 title=title, row_titles=row_titles)
    # the grid as evaluation (masks) or as inference (no masks), then each caption says what is known
    fig = plot_overlay_grid(images, true_masks, pred_masks, list(pred_labels) if has_masks else None, pred_labels,
                            pred_probs, scores=scores if has_masks else None, title=title, row_titles=row_titles)
    ncols = 4 if has_masks else 3
    for i, ax in enumerate(fig.axes[::ncols][:n]):
        text, color = f"pred: {pred_labels[i]} ({pred_probs[i]:.2f})", "black"
        if labels[i] is not None:
            ok = labels[i] == pred_labels[i]
            text = f"{'✓' if ok else '✗'} true: {labels[i]} · {text}"
            color = CORRECT_COLOR if ok else WRONG_COLOR
        ax.set_xlabel(text, fontsize=9, color=color, fontweight="normal" if color == "black" else "bold")
    return fig


def plot_domain_shift(table: pd.DataFrame, title: str = "Domain shift: training data's test split vs external set",
                      external_name: str = "external") -> Figure:
    """One row per metric: the test split's value and the external set's, each with its 95%
    interval as a line, so the drop and whether the intervals overlap show at a glance.

    ``table``: `skin_utils.evaluation.domain_shift_table` (columns ``test split``, ``test 95% CI``,
    ``external``, ``external 95% CI``)."""
    require(table, ("test split", "test 95% CI", "external", "external 95% CI"),
            "plot_domain_shift takes the table of skin_utils.evaluation.domain_shift_table")
    metrics = list(table.index)
    fig, axes = new_figure(1, 1, figsize=(7.2, 0.5 * max(len(metrics), 1) + 1.9))
    ax = axes[0, 0]
    for col, ci_col, label, color, dy in (("test split", "test 95% CI", "training data, test split", "0.35", -0.14),
                                          ("external", "external 95% CI", external_name, "#d95f02", 0.14)):
        for i, m in enumerate(metrics):
            v = float(table.loc[m, col]) if pd.notna(table.loc[m, col]) else math.nan
            if math.isnan(v):
                continue
            ci = str(table.loc[m, ci_col] or "")
            if "–" in ci:
                lo, hi = (float(x) for x in ci.split("–"))
                ax.plot([lo, hi], [i + dy] * 2, color=color, lw=2, alpha=0.7)
            ax.plot(v, i + dy, "o", color=color, ms=6,
                    label=label if label not in ax.get_legend_handles_labels()[1] else None)
    ax.set_yticks(range(len(metrics)), [m.replace("_", " ") for m in metrics])
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("score (higher is better), with 95% interval")
    ax.grid(axis="x", color="0.92")
    ax.spines[["top", "right"]].set_visible(False)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=8.5, frameon=False)
    return suptitle(fig, title)
