"""Figure of predictions on images, with or without the truth: the best and worst cases of
notebooks/03_evaluate and the predictions of notebooks/04_inference."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from skin_utils.labels import CLASS_NAMES
from skin_utils.viz.common import (
    CORRECT_COLOR,
    PRED_MASK_COLOR,
    TRUE_MASK_COLOR,
    WRONG_COLOR,
    cell_aspect,
    check_image,
    check_mask,
    draw_contour,
    image_axes,
    new_figure,
    no_data,
    show_image,
    suptitle,
)

__all__ = ["plot_overlay_grid"]


def _check_names(labels: Sequence[str], what: str) -> None:
    unknown = sorted({str(v) for v in labels if v not in CLASS_NAMES})
    if unknown:
        raise ValueError(f"plot_overlay_grid: {what} must be class names {CLASS_NAMES}; "
                         f"got {unknown}.")


def plot_overlay_grid(
    images,
    true_masks,
    pred_masks,
    true_labels,
    pred_labels,
    pred_probs,
    scores=None,
    title: str = "Predictions",
    row_titles: Sequence[str] | None = None,
) -> Figure:
    """N rows x 4 columns: image | true mask | predicted mask | overlay (true contour green,
    predicted contour magenta). Without the truth (``true_masks`` and ``true_labels`` None, as
    for inference) 3 columns: image | predicted mask | overlay.

    Takes ``evaluation.best_and_worst(...)`` as keyword arguments, or for new images the
    predictions' fields: ``images`` uint8 (H, W, 3) (``read_image``); masks bool or 0/1 at each
    image's size; labels class names (``Prediction.pred``, the per-image table's ``true`` and
    ``pred``); ``pred_probs`` the probability of the predicted class; ``scores`` the Dice shown
    under the predicted mask; ``row_titles`` (e.g. image ids) left of each row.

    Under each image: "✓ true: MEL · pred: MEL (0.82)" in green when right, "✗ ..." in red when
    wrong; "pred: NV (0.82)" in black without the truth.
    """
    images = [check_image(im, f"plot_overlay_grid image {i}") for i, im in enumerate(images)]
    n = len(images)
    has_truth = true_masks is not None
    if (true_labels is not None) != has_truth:
        raise ValueError("plot_overlay_grid: give true_masks and true_labels together (evaluation), "
                         "or neither (inference).")
    columns = {"pred_masks": pred_masks, "pred_labels": pred_labels, "pred_probs": pred_probs,
               "true_masks": true_masks, "true_labels": true_labels, "scores": scores,
               "row_titles": row_titles}
    wrong = {k: len(v) for k, v in columns.items() if v is not None and len(v) != n}
    if wrong:
        raise ValueError(f"plot_overlay_grid: {n} images but {wrong}; give one entry per image.")
    _check_names(pred_labels, "pred_labels")
    if has_truth:
        _check_names(true_labels, "true_labels")

    ncols = 4 if has_truth else 3
    cell_w = 2.9
    cell_h = cell_w * cell_aspect(images) + 0.45
    fig, axes = new_figure(max(n, 1), ncols, figsize=(cell_w * ncols + 0.4, cell_h * max(n, 1) + 0.9))
    headers = ["image", "true mask", "predicted mask", "overlay"] if has_truth else \
        ["image", "predicted mask", "overlay"]
    for ax, header in zip(axes[0], headers):
        ax.set_title(header, fontsize=10, fontweight="bold")
    if n == 0:
        for ax in axes.ravel():
            no_data(ax, "no images")
        return suptitle(fig, title)

    true_cmap = ListedColormap(["black", TRUE_MASK_COLOR])
    pred_cmap = ListedColormap(["black", PRED_MASK_COLOR])
    for i, (row, img) in enumerate(zip(axes, images)):
        for ax in row:
            image_axes(ax)
        show_image(row[0], img, fill_cell=False)
        pm = check_mask(pred_masks[i], img.shape[:2], f"plot_overlay_grid pred_masks[{i}]")
        masks = [(pm, pred_cmap, PRED_MASK_COLOR)]
        if has_truth:
            tm = check_mask(true_masks[i], img.shape[:2], f"plot_overlay_grid true_masks[{i}]")
            masks.insert(0, (tm, true_cmap, TRUE_MASK_COLOR))
        show_image(row[-1], img, fill_cell=False)
        for ax, (mask, cmap, color) in zip(row[1:-1], masks):
            show_image(ax, mask, cmap=cmap, fill_cell=False)
            draw_contour(row[-1], mask, color, 1.8)
        if scores is not None:
            row[-2].set_xlabel(f"Dice {scores[i]:.2f}", fontsize=9)

        text, color = f"pred: {pred_labels[i]} ({pred_probs[i]:.2f})", "black"
        if has_truth:
            ok = true_labels[i] == pred_labels[i]
            text = f"{'✓' if ok else '✗'} true: {true_labels[i]} · {text}"
            color = CORRECT_COLOR if ok else WRONG_COLOR
        row[0].set_xlabel(text, fontsize=9, color=color,
                          fontweight="normal" if color == "black" else "bold")
        if row_titles is not None:
            row[0].set_ylabel(str(row_titles[i]), fontsize=8.5)
    handles = [Line2D([], [], color=PRED_MASK_COLOR, lw=2, label="predicted lesion outline")]
    if has_truth:
        handles.insert(0, Line2D([], [], color=TRUE_MASK_COLOR, lw=2, label="true lesion outline"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=9,
               frameon=False)
    return suptitle(fig, title)
