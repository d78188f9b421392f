"""Figure of ``python -m skin_utils.benchmark``: input-pipeline throughput, ours against naive."""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from skin_utils.viz.common import CORRECT_COLOR, WRONG_COLOR, new_figure, require, suptitle

__all__ = ["plot_benchmark"]


def plot_benchmark(
    table: pd.DataFrame,
    title: str = "Input pipeline throughput",
    baseline: str = "naive",
    candidate: str = "ours",
) -> Figure:
    """Grouped horizontal bars of the mean ``images_per_s`` per ``stage`` and ``pipeline``,
    with the speed-up ``candidate / baseline`` ("×3.4") right of each stage that has both.
    A log scale is used when throughputs span more than 50x.

    ``table``: ``pd.DataFrame(skin_utils.benchmark.run(...)["table"])``, one row per
    measurement with columns ``stage``, ``pipeline`` and ``images_per_s`` (repeated rows of a
    stage and pipeline are averaged).
    """
    require(table, ("stage", "pipeline", "images_per_s"),
            "plot_benchmark takes pd.DataFrame(skin_utils.benchmark.run(...)['table'])")
    if table.empty:
        raise ValueError("plot_benchmark: the table has no rows.")
    mean = table.groupby(["stage", "pipeline"], sort=False)["images_per_s"].mean()
    stages = list(pd.unique(table["stage"]))
    others = [p for p in pd.unique(table["pipeline"]) if p not in (baseline, candidate)]
    pipelines = [p for p in (baseline, candidate) if p in set(table["pipeline"])] + others
    palette = dict(zip(others, ["#E69F00", "#009E73", "#CC79A7", "#D55E00"]),
                   **{baseline: "0.65", candidate: "#0072B2"})

    fig, axes = new_figure(1, 1, figsize=(9, 1.6 + 0.75 * len(stages)))
    ax = axes[0, 0]
    sns.barplot(data=table, y="stage", x="images_per_s", hue="pipeline", order=stages,
                hue_order=pipelines, palette=palette, estimator="mean", errorbar=None,
                orient="h", edgecolor="0.25", linewidth=0.5, ax=ax)
    for bars in ax.containers:
        ax.bar_label(bars, fmt=" {:,.0f}", fontsize=8)
    for y, stage in enumerate(stages):
        if (stage, baseline) in mean and (stage, candidate) in mean:
            ratio = mean[stage, candidate] / mean[stage, baseline]
            ax.text(1.01, y, f"×{ratio:.1f}", transform=ax.get_yaxis_transform(), va="center",
                    ha="left", fontsize=10, fontweight="bold",
                    color=CORRECT_COLOR if ratio >= 1 else WRONG_COLOR)
    values = mean.to_numpy(float)
    if values.min() > 0 and values.max() / values.min() > 50:
        ax.set_xscale("log")
        ax.set_xlim(values.min() / 2, values.max() * 4)
    else:
        ax.set_xlim(0, values.max() * 1.2)
    ax.set_xlabel("images per second (higher is better)")
    ax.set_ylabel("")
    ax.grid(axis="x", color="0.92")
    ax.set_axisbelow(True)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.set_title(f"speed-up {candidate} / {baseline} at the right", fontsize=9, loc="right",
                 color="0.3")
    return suptitle(fig, title)
