"""Figures of an experiment (``05_experiments``): every seed as a point with the mean ± sd of each
grid cell, and a forest plot of the paired differences against the reference cell."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

METRIC_LABELS = {"dice": "Dice", "jaccard": "Jaccard", "thresholded_jaccard": "thresholded Jaccard",
                 "accuracy": "accuracy", "balanced_accuracy": "balanced accuracy", "macro_auc": "macro AUC",
                 "mel_auc": "melanoma AUC"}


def plot_experiment(table: pd.DataFrame, metrics=("dice", "balanced_accuracy", "macro_auc"), split: str = "val",
                    title: str = "Experiment") -> Figure:
    """One panel per metric: each finished run of ``split`` as a dot (one per seed), the mean over
    seeds as a bar with ± 1 sd. ``table`` is `skin_utils.experiments.gather`'s tidy table; cells are
    labelled by their run names without the seed."""
    done = table[(table["status"] == "finished") & (table["split"] == split)]
    if done.empty:
        raise ValueError(f"no finished run has {split!r} results to plot.")
    done = done.assign(cell=done["run"].str.replace(r"_seed\d+$", "", regex=True))
    cells = list(dict.fromkeys(done["cell"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.5 + 0.45 * len(cells) + 1.2),
                             squeeze=False, constrained_layout=True)
    for ax, metric in zip(axes[0], metrics):
        rows = done[done["metric"] == metric]
        for y, cell in enumerate(cells):
            values = rows.loc[rows["cell"] == cell, "value"].to_numpy(float)
            if len(values) == 0:
                ax.text(0.5, y, "not applicable", va="center", ha="center", color="0.5", fontsize=8,
                        transform=ax.get_yaxis_transform())
                continue
            mean, sd = values.mean(), values.std(ddof=1) if len(values) > 1 else 0.0
            ax.barh(y, mean, xerr=sd, color="#9ecae1", edgecolor="#3182bd", height=0.6, capsize=3)
            ax.scatter(values, np.full(len(values), y), color="#08306b", s=14, zorder=3)
        ax.set_yticks(range(len(cells)), cells if ax is axes[0][0] else [""] * len(cells), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(METRIC_LABELS.get(metric, metric))
        lo = rows["value"].min() if not rows.empty else 0
        ax.set_xlim(max(0.0, lo - 0.1) if np.isfinite(lo) else 0.0, 1.0)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"{title} · {split} split (dots: seeds; bars: mean ± sd)")
    return fig


def plot_paired_differences(diff: pd.DataFrame, title: str = "Paired differences against the reference") -> Figure:
    """A forest plot: per metric and cell, the seed-averaged difference (cell - reference) with its
    paired lesion-level 95% interval; intervals that exclude 0 are drawn dark. ``diff`` is
    `skin_utils.experiments.compare`'s table."""
    if diff.empty:
        raise ValueError("nothing to plot: the comparison table is empty.")
    metrics = list(dict.fromkeys(diff["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 0.6 + 0.45 * diff["cell"].nunique() + 1),
                             squeeze=False, constrained_layout=True)
    cells = list(dict.fromkeys(diff["cell"]))
    for ax, metric in zip(axes[0], metrics):
        rows = diff[diff["metric"] == metric].set_index("cell")
        for y, cell in enumerate(cells):
            if cell not in rows.index:
                continue
            r = rows.loc[cell]
            color = "#08306b" if r["excludes_zero"] else "#9ecae1"
            ax.errorbar(r["difference"], y, xerr=[[r["difference"] - r["ci_low"]], [r["ci_high"] - r["difference"]]],
                        fmt="o", color=color, capsize=3)
        ax.axvline(0, color="0.3", lw=1)
        ax.set_yticks(range(len(cells)), cells if ax is axes[0][0] else [""] * len(cells), fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(f"Δ {METRIC_LABELS.get(metric, metric)}")
        ax.grid(axis="x", alpha=0.3)
    reference = diff["reference"].iloc[0]
    fig.suptitle(f"{title} ({reference}); dark: the 95% CI excludes 0")
    return fig
