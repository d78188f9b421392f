"""Tests for skin_utils.viz.plots: every figure builds (and renders) on small synthetic inputs."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import io  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from skin_utils.viz import plots  # noqa: E402
from skin_utils.labels import CLASS_NAMES, HAM10000_CLASS_COUNTS  # noqa: E402

K = len(CLASS_NAMES)


@pytest.fixture(autouse=True)
def _close_figures_and_forbid_show(monkeypatch):
    def _no_show(*args, **kwargs):
        raise AssertionError("plots must never call plt.show()")

    monkeypatch.setattr(plt, "show", _no_show)
    monkeypatch.setattr(Figure, "show", _no_show)
    yield
    plt.close("all")


def _render(fig: Figure) -> Figure:
    """Draw the figure once (cheaply) so layout/drawing errors surface, and keep it open."""
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=30)
    assert buf.getbuffer().nbytes > 0
    return fig


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def _image_and_mask(rng, h, w):
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return img, _disc(h, w, h // 2, w // 2, min(h, w) // 4)


def _texts(fig: Figure) -> str:
    out = [fig.get_suptitle()]
    for ax in fig.axes:
        out += [t.get_text() for t in ax.texts]
        out += [ax.get_title(loc) for loc in ("left", "center", "right")]
        out += [ax.get_xlabel(), ax.get_ylabel()]
        out += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        if ax.get_legend():
            out += [t.get_text() for t in ax.get_legend().get_texts()]
    for leg in fig.legends:
        out += [t.get_text() for t in leg.get_texts()]
    return "\n".join(out)


# ------------------------------------------------------------------------------ colours


def test_class_colors_fixed_distinct_and_complete():
    assert set(plots.CLASS_COLORS) == set(CLASS_NAMES)
    assert len({plots.CLASS_COLORS[c] for c in CLASS_NAMES}) == K
    for i, name in enumerate(CLASS_NAMES):
        assert plots.class_color(i) == plots.class_color(name) == plots.class_color(name.lower())
    assert plots.class_color("something else", ["something else"]).startswith("#")


# ------------------------------------------------------------------------------ save_figure


def test_save_figure_writes_png_and_closes(tmp_path):
    fig = plots.plot_class_distribution([0, 1, 1, 2], title="synthetic demo data")
    assert fig.number in plt.get_fignums()
    path = plots.save_figure(fig, tmp_path / "a" / "b" / "dist.png", dpi=40)
    assert path == tmp_path / "a" / "b" / "dist.png"
    assert path.exists() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()


def test_save_figure_can_keep_figure_open(tmp_path):
    fig = plots.plot_images_per_lesion(["a", "a", "b"])
    plots.save_figure(fig, str(tmp_path / "x.png"), dpi=30, close=False)
    assert fig.number in plt.get_fignums()


# ------------------------------------------------------------------------------ data set


def test_class_distribution_from_labels_and_from_counts():
    fig = _render(plots.plot_class_distribution([0, 1, 1, 1, 6], title="synthetic demo data"))
    assert len(fig.axes) == 1
    text = _texts(fig)
    assert "synthetic demo data" in text
    assert "3\n(60.0%)" in text and "0\n(0.0%)" in text  # classes without images get a 0 bar
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [1, 3, 0, 0, 0, 0, 1]
    # same result from a name -> count mapping (any case) and from names
    fig2 = plots.plot_class_distribution({"mel": 1, "NV": 3, "VASC": 1})
    assert [p.get_height() for p in fig2.axes[0].patches] == heights
    fig3 = plots.plot_class_distribution(["MEL", "nv", "NV", "NV", "VASC"])
    assert [p.get_height() for p in fig3.axes[0].patches] == heights
    fig4 = plots.plot_class_distribution(HAM10000_CLASS_COUNTS)
    assert sum(p.get_height() for p in fig4.axes[0].patches) == 10015


def test_class_distribution_rejects_unknown_class_in_counts():
    with pytest.raises(ValueError, match="Unknown class"):
        plots.plot_class_distribution({"XYZ": 3})


def test_class_distribution_by_split():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"label": rng.integers(0, 6, 60),
                       "split": rng.choice(["train", "val", "test"], 60)})
    fig = _render(plots.plot_class_distribution(df["label"].to_numpy(), by_split=df))
    assert len(fig.axes) == 2
    text = _texts(fig)
    assert "train (n=" in text and "test (n=" in text


def test_split_counts_images_and_lesions():
    df = pd.DataFrame({"label": [0, 0, 0, 1, 1, 2],
                       "split": ["train", "train", "val", "train", "test", "val"],
                       "lesion_id": ["L1", "L1", "L2", "L3", "L4", "L5"]})
    fig = _render(plots.plot_split_counts(df, title="synthetic demo data"))
    assert len(fig.axes) == 2
    img_ax, les_ax = fig.axes
    # first bars are the "train" bars of each class: MEL has 2 images but 1 lesion in train
    assert img_ax.patches[0].get_height() == 2
    assert les_ax.patches[0].get_height() == 1
    # missing lesion_id column and empty frame still work
    plots.plot_split_counts(df.drop(columns="lesion_id"))
    _render(plots.plot_split_counts(df.iloc[:0]))


def test_images_per_lesion():
    fig = _render(plots.plot_images_per_lesion(["a", "a", "a", "b", "c", "c", None]))
    assert len(fig.axes) == 1
    assert [p.get_height() for p in fig.axes[0].patches] == [1, 1, 1]  # 1, 2 and 3 images
    assert "3 lesions" in _texts(fig)
    assert len(_render(plots.plot_images_per_lesion([])).axes) == 1


def test_metadata_full_and_robust():
    rng = np.random.default_rng(1)
    n = 50
    df = pd.DataFrame({
        "label": rng.integers(0, K, n),
        "age": np.where(rng.random(n) < 0.2, np.nan, rng.integers(5, 85, n)).astype(float),
        "sex": rng.choice(["male", "female", "unknown", None], n),
        "localization": rng.choice(["back", "face", "", "unknown", None, "trunk"], n),
    })
    fig = _render(plots.plot_metadata(df, title="synthetic demo data"))
    assert len(fig.axes) == 3
    text = _texts(fig)
    assert "unknown" in text and "back" in text
    # missing columns, all-NaN ages, dx instead of label, no rows
    only_label = _render(plots.plot_metadata(df[["label"]]))
    assert len(only_label.axes) == 3
    assert "no 'age' column" in _texts(only_label)
    _render(plots.plot_metadata(df.assign(age=np.nan)))
    plots.plot_metadata(df.drop(columns="label").assign(dx="mel"))
    plots.plot_metadata(df.drop(columns="label"))
    _render(plots.plot_metadata(df.iloc[:0]))


def test_mask_area_with_empty_class_and_nan():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 40)  # DF and VASC absent
    area = rng.random(40)
    area[:3] = np.nan
    fig = _render(plots.plot_mask_area(area, labels, CLASS_NAMES, title="synthetic demo data"))
    assert len(fig.axes) == 1
    text = _texts(fig)
    assert "DF\nn=0" in text and "no images" in text
    with pytest.raises(ValueError):
        plots.plot_mask_area(area[:5], labels)


def test_sample_grid_sizes_masks_and_empty_class():
    rng = np.random.default_rng(3)
    images, masks, labels = [], [], []
    for k in range(9):
        img, m = _image_and_mask(rng, 20 + 4 * k, 30 + 2 * k)
        images.append(img)
        masks.append(m if k % 3 else m[::2, ::2])  # some masks at another resolution
        labels.append(k % 3)  # only MEL, NV, BCC
    masks[1] = None
    fig = _render(plots.plot_sample_grid(images, labels, CLASS_NAMES, masks=masks, per_class=2,
                                         title="synthetic demo data"))
    assert len(fig.axes) == K * 2
    assert sum(len(ax.images) for ax in fig.axes) == 6  # 2 per present class
    text = _texts(fig)
    assert "no VASC images in this set" in text
    fig2 = _render(plots.plot_sample_grid(images, labels, per_class=5, seed=0))
    assert len(fig2.axes) == K * 5
    assert sum(len(ax.images) for ax in fig2.axes) == 9


# ------------------------------------------------------------------------------ training


def _history(n):
    rows = []
    for e in range(1, n + 1):
        rows.append({
            "epoch": e, "train_loss": 1 / e, "train_seg_loss": 0.4 / e,
            "train_cls_loss": 0.6 / e, "val_loss": 1.1 / e, "val_seg_loss": 0.5 / e,
            "val_cls_loss": 0.6 / e, "val_dice": 1 - 0.5 / e, "val_jaccard": 1 - 0.6 / e,
            "val_accuracy": 0.5, "val_balanced_accuracy": 0.4, "val_macro_auc": float("nan"),
            "lr": 1e-3 / e, "best": e == max(1, n - 1),
        })
    return rows


def test_learning_curves_full():
    fig = _render(plots.plot_learning_curves(_history(6), title="synthetic demo data"))
    assert len(fig.axes) == 4
    losses, seg, cls, lr = fig.axes
    assert len(losses.lines) == 6 + 1  # six loss curves + best-epoch marker
    assert len(seg.lines) == 2 + 1
    assert "best epoch (5)" in _texts(fig)
    assert [t.get_text() for t in lr.get_legend().get_texts()] == ["lr"]
    # a learning rate spanning > 10x is drawn on a log scale
    hist = _history(20)
    assert plots.plot_learning_curves(hist).axes[3].get_yscale() == "log"


def test_learning_curves_single_epoch_and_missing_keys():
    fig = _render(plots.plot_learning_curves(_history(1)))
    assert len(fig.axes) == 4
    assert "(1 epoch)" in fig.get_suptitle()
    sparse = [{"train_loss": 1.0}, {"train_loss": 0.7, "val_dice": None}]
    fig2 = _render(plots.plot_learning_curves(sparse))
    assert len(fig2.axes) == 4
    assert _texts(fig2).count("not recorded") == 3
    fig3 = plots.plot_learning_curves(pd.DataFrame(_history(3)).drop(columns="best"))
    assert "best epoch" not in _texts(fig3)
    assert len(plots.plot_learning_curves([]).axes) == 4


# ------------------------------------------------------------------------------ evaluation


def test_confusion_matrix_counts_and_row_normalised():
    cm = np.arange(K * K).reshape(K, K)
    cm[-1] = 0  # a class without true samples -> NaN row in the normalised panel
    fig = _render(plots.plot_confusion_matrix(cm, CLASS_NAMES, title="synthetic demo data"))
    assert len(fig.axes) == 2
    counts_ax, norm_ax = fig.axes
    assert counts_ax.get_xlabel() == "predicted diagnosis"
    assert counts_ax.get_ylabel() == "true diagnosis"
    row0 = cm[0] / cm[0].sum()
    norm_texts = [t.get_text() for t in norm_ax.texts]
    assert f"{row0[0]:.2f}" in norm_texts
    assert "–" in norm_texts  # NaN cells
    assert str(cm[1, 2]) in [t.get_text() for t in counts_ax.texts]
    with pytest.raises(ValueError):
        plots.plot_confusion_matrix(np.zeros((2, 3)))
    # a smaller matrix with its own names
    _render(plots.plot_confusion_matrix([[3, 1], [0, 2]], ["a", "b"]))


def test_roc_curves():
    rng = np.random.default_rng(4)
    curves = {}
    for name in CLASS_NAMES[:-1]:
        fpr = np.r_[0, np.sort(rng.random(8)), 1]
        curves[name] = (fpr, np.sqrt(fpr), 0.71)
    curves["VASC"] = ([], [], float("nan"))
    curves["macro"] = {"fpr": [0, 1], "tpr": [0, 1], "auc": None}
    fig = _render(plots.plot_roc_curves(curves, title="synthetic demo data"))
    assert len(fig.axes) == 1
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "MEL: AUC 0.71" in legend
    assert any(t.startswith("VASC: AUC n/a") for t in legend)
    assert any("chance" in t for t in legend)
    assert "macro: AUC 0.50" in legend  # computed from the curve when not given
    # integer keys are class indices
    fig2 = plots.plot_roc_curves({0: ([0, 1], [0, 1], 0.5)})
    assert fig2.axes[0].lines[1].get_color() == plots.class_color("MEL")


def test_per_class_metrics_with_nan():
    per_class = {name: {"sensitivity": 0.5, "specificity": 0.9, "auc": 0.8, "support": 10}
                 for name in CLASS_NAMES}
    per_class["DF"] = {"sensitivity": float("nan"), "specificity": 1.0, "auc": None, "support": 0}
    fig = _render(plots.plot_per_class_metrics(per_class, title="synthetic demo data"))
    assert len(fig.axes) == 1
    text = _texts(fig)
    assert text.count("n/a") == 2
    assert "DF\n(n=0)" in text
    assert {"sensitivity", "specificity", "auc"} <= set(text.split("\n"))
    assert "support" not in fig.axes[0].get_legend().get_texts()[0].get_text()
    # DataFrame input and explicit metric list
    df = pd.DataFrame(per_class).T
    fig2 = _render(plots.plot_per_class_metrics(df, metrics=["sensitivity"]))
    assert len(fig2.axes[0].get_legend().get_texts()) == 1
    assert len(_render(plots.plot_per_class_metrics({})).axes) == 1


def _overlay_inputs(n=3):
    rng = np.random.default_rng(5)
    images, tms, pms = [], [], []
    for i in range(n):
        h, w = 24 + 8 * i, 32 + 4 * i
        img, m = _image_and_mask(rng, h, w)
        images.append(img)
        tms.append(m.astype(np.uint8))
        pms.append(_disc(h // 2, w // 2, h // 4, w // 4, 3))  # prediction at half resolution
    return images, tms, pms


def test_overlay_grid_with_truth():
    images, tms, pms = _overlay_inputs(3)
    probs = np.full((3, K), 0.05)
    probs[:, 1] = 0.7
    fig = _render(plots.plot_overlay_grid(
        images, tms, pms, true_labels=[1, 0, 1], pred_labels=[1, 1, 1], pred_probs=probs,
        class_names=CLASS_NAMES, scores=[0.91, float("nan"), 0.5],
        title="synthetic demo data", row_titles=["a", "b", "c"]))
    assert len(fig.axes) == 3 * 4
    text = _texts(fig)
    assert "true: NV · pred: NV (0.70)" in text
    assert "Dice 0.91" in text and "Dice n/a" in text
    labels = [fig.axes[4 * i].xaxis.label for i in range(3)]
    assert to_rgb(labels[0].get_color()) == to_rgb(plots.CORRECT_COLOR)
    assert to_rgb(labels[1].get_color()) == to_rgb(plots.WRONG_COLOR)
    assert len(fig.legends) == 1  # legend drawn once
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "true lesion outline", "predicted lesion outline"]


def test_overlay_grid_inference_without_truth():
    images, _, pms = _overlay_inputs(2)
    fig = _render(plots.plot_overlay_grid(images, None, pms, None, [0, 3], [0.82, 0.4],
                                          title="inference"))
    assert len(fig.axes) == 2 * 3
    text = _texts(fig)
    assert "pred: MEL (0.82)" in text and "true:" not in text
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["predicted lesion outline"]
    # an empty prediction mask and a single row
    fig2 = _render(plots.plot_overlay_grid(images[:1], None, [np.zeros((5, 5), bool)], None,
                                           None, None))
    assert len(fig2.axes) == 3


def test_overlay_mask_changes_only_mask_pixels():
    rng = np.random.default_rng(6)
    img, mask = _image_and_mask(rng, 40, 50)
    out = plots.overlay_mask(img, mask)
    assert out.dtype == np.uint8 and out.shape == img.shape
    changed = np.any(out != img, axis=-1)
    assert changed.any()
    assert not (changed & ~mask).any()
    # contour pixels are painted in full colour, inner pixels blended
    assert (out[mask & changed] == (255, 0, 255)).all(axis=-1).any()
    assert np.array_equal(out[20, 25], np.rint(0.6 * img[20, 25] + 0.4 * np.array([255, 0, 255])))
    assert np.array_equal(img, _image_and_mask(np.random.default_rng(6), 40, 50)[0])  # no in-place
    # mask at another size, 0/255 mask, empty mask, contour only
    small = plots.overlay_mask(img, mask[::2, ::2].astype(np.uint8) * 255, color=(0, 255, 0))
    assert not (np.any(small != img, axis=-1) & ~_disc(40, 50, 20, 25, 14)).any()
    assert np.array_equal(plots.overlay_mask(img, np.zeros((40, 50))), img)
    only = plots.overlay_mask(img, mask, alpha=0.0, contour=True)
    only_changed = np.any(only != img, axis=-1)
    assert only_changed.any() and only_changed.sum() < mask.sum()
    assert not (only_changed & ~mask).any()
    assert np.array_equal(plots.overlay_mask(img, mask, alpha=0.0, contour=False), img)


def test_benchmark():
    table = pd.DataFrame({
        "stage": ["decode", "decode", "augment", "augment", "augment", "collate"],
        "pipeline": ["naive", "ours", "naive", "ours", "ours", "ours"],
        "images_per_s": [100.0, 350.0, 200.0, 700.0, 900.0, 5000.0],
    })
    fig = _render(plots.plot_benchmark(table, title="synthetic demo data"))
    assert len(fig.axes) == 1
    text = _texts(fig)
    assert "×3.5" in text and "×4.0" in text  # augment: mean(700, 900) / 200
    assert text.count("×") == 2  # no ratio for a stage without a naive run
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["decode", "augment",
                                                                   "collate"]
    assert len(_render(plots.plot_benchmark(table.iloc[:0])).axes) == 1


def test_every_plot_function_returns_a_figure_and_takes_title():
    import inspect

    names = [n for n in plots.__all__ if n.startswith("plot_")]
    assert len(names) >= 12
    for n in names:
        assert "title" in inspect.signature(getattr(plots, n)).parameters, n


def test_publish_saves_and_closes_outside_a_notebook(tmp_path):
    from skin_utils.viz.plots import plot_class_distribution, publish

    fig = plot_class_distribution([0, 1, 1, 2])
    path = publish(fig, tmp_path / "f.png")
    assert path.stat().st_size > 1000
    assert fig.number not in plt.get_fignums()
