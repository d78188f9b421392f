"""Figure of notebooks/02_train: the learning curves of one training run."""

from __future__ import annotations

import matplotlib.ticker
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skin_utils.viz.common import new_figure, require, suptitle

__all__ = ["HISTORY_PANELS", "plot_learning_curves"]

#: The panels of the learning curves: (title, y label, the history keys drawn in it). Every key
#: is one that ``engine.fit`` writes into each epoch's row.
HISTORY_PANELS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("losses", "loss", ("train_loss", "val_loss", "train_seg_loss", "val_seg_loss",
                        "train_cls_loss", "val_cls_loss")),
    ("segmentation (lesion mask)", "score", ("val_dice", "val_jaccard", "val_thresholded_jaccard")),
    ("classification (diagnosis)", "score", ("val_accuracy", "val_balanced_accuracy", "val_macro_auc")),
    ("learning rate", "learning rate", ("lr",)),
)
# one colour per quantity; train solid, validation dashed
_COLORS = {
    "loss": "#000000", "seg_loss": "#009E73", "cls_loss": "#D55E00",
    "dice": "#009E73", "jaccard": "#0072B2", "thresholded_jaccard": "#56B4E9",
    "accuracy": "#0072B2", "balanced_accuracy": "#D55E00", "macro_auc": "#CC79A7", "lr": "#000000",
}
_STYLES = {"train": "-", "val": "--"}


def plot_learning_curves(history, title: str = "Training") -> Figure:
    """2x2 panels: losses (train solid, validation dashed; total, segmentation and
    classification parts), validation segmentation scores, validation classification scores,
    learning rate (log scale when it spans more than 10x). The best epoch (the last row whose
    ``best`` flag is true) is marked with a dotted line in every panel.

    ``history``: what ``engine.fit`` returns, one dict per epoch with ``epoch``, ``best`` and
    the keys of :data:`HISTORY_PANELS`. NaN values (e.g. an undefined AUC) leave a gap.
    """
    frame = pd.DataFrame(list(history))
    takes = "plot_learning_curves takes the history that engine.fit returns"
    if frame.empty:
        raise ValueError(f"{takes}; it is empty (no epoch was run).")
    require(frame, ("epoch", "best", *(k for _, _, keys in HISTORY_PANELS for k in keys)), takes)
    best = frame.loc[frame["best"].astype(bool), "epoch"]
    best_epoch = best.iloc[-1] if len(best) else None

    fig, axes = new_figure(2, 2, figsize=(12, 7.5))
    for ax, (panel, ylabel, keys) in zip(axes.ravel(), HISTORY_PANELS):
        for key in keys:
            split, name = key.split("_", 1) if key != "lr" else ("", key)
            ax.plot(frame["epoch"], frame[key].astype(float), _STYLES.get(split, "-"), marker="o",
                    ms=3.5, lw=1.6, color=_COLORS[name], label=key.replace("_", " "))
        if best_epoch is not None:
            ax.axvline(best_epoch, color="0.4", lw=1, ls=":", zorder=0)
        if ylabel == "score":
            ax.set_ylim(-0.02, 1.02)
        lr = frame["lr"].to_numpy(float)
        if keys == ("lr",) and (lr > 0).all() and lr.max() / lr.min() > 10:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        if len(frame) == 1:
            ax.set_xlim(frame["epoch"].iloc[0] - 1, frame["epoch"].iloc[0] + 1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(panel, fontsize=10)
        ax.grid(color="0.92")
        ax.spines[["top", "right"]].set_visible(False)
        ax.legend(fontsize=7.5, frameon=False, ncols=2 if len(keys) > 3 else 1)
    if best_epoch is not None:
        fig.legend(handles=[Line2D([], [], color="0.4", ls=":", lw=1,
                                   label=f"best epoch ({best_epoch})")],
                   loc="outside lower center", fontsize=8, frameon=False)
    n = len(frame)
    return suptitle(fig, f"{title} ({n} epoch{'s' if n != 1 else ''})" if title else title)
