"""Tests of skin_utils.plots: every figure builds (and renders) from what the function it is
documented to take returns, and anything else is refused with a clear error."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import inspect  # noqa: E402
import io  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from skin_utils import plots  # noqa: E402
from skin_utils.data import make_split  # noqa: E402
from skin_utils.labels import CLASS_NAMES  # noqa: E402
from skin_utils.metrics import classification_report, roc_curves  # noqa: E402

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
    """An image as read_image gives it and a 0/1 mask as read_mask gives it."""
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return img, _disc(h, w, h // 2, w // 2, min(h, w) // 4).astype(np.uint8)


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


def _index(n=60, seed=1):
    """A table with the columns of layout.load_index that the EDA figures read."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "image_id": [f"ISIC_{i:07d}" for i in range(n)],
        "lesion_id": [f"HAM_{i // 2:07d}" for i in range(n)],  # two images per lesion
        "label": rng.integers(0, K - 1, n),  # VASC absent
        "age": np.where(rng.random(n) < 0.2, np.nan, rng.integers(5, 85, n)).astype(float),
        "sex": rng.choice(["male", "female", "unknown"], n),
        "localization": rng.choice(["back", "face", "unknown", "trunk"], n),
    }).assign(dx=lambda d: np.asarray(CLASS_NAMES)[d["label"]])


# ------------------------------------------------------------------------------ the package


def test_every_plot_function_takes_title():
    names = [n for n in dir(plots) if n.startswith("plot_")]
    assert len(names) == 20, names
    for n in names:
        assert "title" in inspect.signature(getattr(plots, n)).parameters, n
    for n in ("publish", "save_figure", "overlay_mask", "class_color", "CLASS_COLORS"):
        assert hasattr(plots, n), n


def test_class_colors_fixed_distinct_and_complete():
    assert list(plots.CLASS_COLORS) == list(CLASS_NAMES)
    assert len(set(plots.CLASS_COLORS.values())) == K
    assert plots.class_color("MEL") == plots.CLASS_COLORS["MEL"]
    with pytest.raises(ValueError, match="No colour for class 'mel'"):
        plots.class_color("mel")


def test_save_figure_writes_png_and_closes(tmp_path):
    fig = plots.plot_class_distribution([0, 1, 1, 2], title="synthetic demo data")
    assert fig.number in plt.get_fignums()
    path = plots.save_figure(fig, tmp_path / "a" / "b" / "dist.png", dpi=40)
    assert path == tmp_path / "a" / "b" / "dist.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()
    assert plots.save_figure(plots.plot_images_per_lesion(["a", "a", "b"]), str(tmp_path / "x.png"), dpi=30).is_file()


def test_publish_saves_and_closes_outside_a_notebook(tmp_path):
    fig = plots.plot_class_distribution([0, 1, 1, 2])
    path = plots.publish(fig, tmp_path / "f.png")
    assert path.stat().st_size > 1000
    assert fig.number not in plt.get_fignums()


# ------------------------------------------------------------------------------ 01_eda


def test_class_distribution():
    fig = _render(plots.plot_class_distribution(np.array([0, 1, 1, 1, 6]), title="synthetic demo data"))
    assert len(fig.axes) == 1
    text = _texts(fig)
    assert "synthetic demo data" in text
    assert "3\n(60.0%)" in text and "0\n(0.0%)" in text  # classes without images get a 0 bar
    assert [p.get_height() for p in fig.axes[0].patches] == [1, 3, 0, 0, 0, 0, 1]
    assert _render(plots.plot_class_distribution(_index()["label"]))
    for bad, match in [(["MEL", "NV"], "integer class indices"), ([0, 7], r"lie in \[0, 7\)"),
                       (np.array([], dtype=int), "no labels")]:
        with pytest.raises(ValueError, match=match):
            plots.plot_class_distribution(bad)


def test_split_counts_images_and_lesions():
    df = pd.DataFrame({"label": [0, 0, 0, 1, 1, 2],
                       "split": ["train", "train", "val", "train", "test", "val"],
                       "lesion_id": ["L1", "L1", "L2", "L3", "L4", "L5"]})
    fig = _render(plots.plot_split_counts(df, title="synthetic demo data"))
    img_ax, les_ax = fig.axes
    # the first container holds the train bars, one per class: MEL has 2 images but 1 lesion
    assert [b.get_height() for b in img_ax.containers[0]] == [2, 1, 0, 0, 0, 0, 0]
    assert [b.get_height() for b in les_ax.containers[0]] == [1, 1, 0, 0, 0, 0, 0]
    assert "train (n=3)" in _texts(fig) and "test (n=1)" in _texts(fig)
    # the real split table
    _render(plots.plot_split_counts(make_split(_index())))
    with pytest.raises(ValueError, match=r"load_or_make_split; columns \['lesion_id'\] are missing"):
        plots.plot_split_counts(df.drop(columns="lesion_id"))
    with pytest.raises(ValueError, match="not among"):
        plots.plot_split_counts(df.assign(split="validation"))


def test_images_per_lesion():
    fig = _render(plots.plot_images_per_lesion(["a", "a", "a", "b", "c", "c"]))
    assert [p.get_height() for p in fig.axes[0].patches] == [1, 1, 1]  # 1, 2 and 3 images
    assert "3 lesions" in _texts(fig)
    for bad in ([], ["a", None]):
        with pytest.raises(ValueError, match="one lesion id per image"):
            plots.plot_images_per_lesion(bad)


def test_metadata():
    index = _index()
    fig = _render(plots.plot_metadata(index, title="synthetic demo data"))
    ax_age, ax_sex, ax_loc = fig.axes
    text = _texts(fig)
    assert "unknown" in text and "back" in text
    assert f"age (unknown: {index['age'].isna().sum()})" in text
    # the age histogram is stacked by class, in the class colours
    assert sum(p.get_height() for p in ax_age.patches) == index["age"].notna().sum()
    # "unknown" comes last (at the bottom of the body sites)
    assert [t.get_text() for t in ax_sex.get_xticklabels()][-1] == "unknown"
    assert [t.get_text() for t in ax_loc.get_yticklabels()][0] == "unknown"
    assert "no known ages" in _texts(_render(plots.plot_metadata(index.assign(age=np.nan))))
    with pytest.raises(ValueError, match=r"load_index; columns \['age'\] are missing"):
        plots.plot_metadata(index.drop(columns="age"))


def test_mask_area_with_empty_class():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 5, 40)  # DF and VASC absent
    fig = _render(plots.plot_mask_area(rng.random(40), labels, title="synthetic demo data"))
    assert len(fig.axes) == 1
    text = _texts(fig)
    assert "DF\nn=0" in text and "no images" in text
    assert f"MEL\nn={(labels == 0).sum()}" in text
    with pytest.raises(ValueError, match="area fractions"):
        plots.plot_mask_area(np.zeros(5), labels)


def test_sample_grid_sizes_masks_and_empty_class():
    rng = np.random.default_rng(3)
    images, masks, labels = [], [], []
    for k in range(9):
        img, m = _image_and_mask(rng, 20 + 4 * k, 30 + 2 * k)
        images.append(img)
        masks.append(m)
        labels.append(k % 3)  # only MEL, NV, BCC
    masks[1] = None
    fig = _render(plots.plot_sample_grid(images, labels, masks=masks, per_class=2,
                                       title="synthetic demo data"))
    assert len(fig.axes) == K * 2
    assert sum(len(ax.images) for ax in fig.axes) == 6  # 2 per present class
    assert "no VASC images in this set" in _texts(fig)
    assert "NV\nn=3" in _texts(fig)
    fig2 = _render(plots.plot_sample_grid(images, labels, per_class=5))
    assert sum(len(ax.images) for ax in fig2.axes) == 9
    masks[0] = masks[0][::2, ::2]
    with pytest.raises(ValueError, match="mask 0: the mask has shape"):
        plots.plot_sample_grid(images, labels, masks=masks)
    with pytest.raises(ValueError, match="uint8"):
        plots.plot_sample_grid([images[0].astype(float)], [0])


# ------------------------------------------------------------------------------ 02_train


def _history(n):
    """Rows with the keys engine.fit writes."""
    rows = []
    for e in range(1, n + 1):
        rows.append({
            "epoch": e, "lr": 1e-3 / e, "train_loss": 1 / e, "train_seg_loss": 0.4 / e,
            "train_cls_loss": 0.6 / e, "train_images_per_s": 100.0, "train_seconds": 3.0,
            "val_dice": 1 - 0.5 / e, "val_jaccard": 1 - 0.6 / e, "val_thresholded_jaccard": 0.5,
            "val_accuracy": 0.5, "val_balanced_accuracy": 0.4, "val_macro_auc": float("nan"),
            "val_loss": 1.1 / e, "val_seg_loss": 0.5 / e, "val_cls_loss": 0.6 / e,
            "score": 0.9, "best": e == max(1, n - 1),
        })
    return rows


def test_learning_curves():
    fig = _render(plots.plot_learning_curves(_history(6), title="synthetic demo data"))
    losses, seg, cls, lr = fig.axes
    assert len(losses.lines) == 6 + 1  # six loss curves + best-epoch marker
    assert len(seg.lines) == len(cls.lines) == 3 + 1
    assert "best epoch (5)" in _texts(fig)
    assert [t.get_text() for t in lr.get_legend().get_texts()] == ["lr"]
    assert "(6 epochs)" in fig.get_suptitle()
    assert plots.plot_learning_curves(_history(20)).axes[3].get_yscale() == "log"  # lr spans > 10x
    one = _render(plots.plot_learning_curves(_history(1)))
    assert "(1 epoch)" in one.get_suptitle()
    no_best = [dict(row, best=False) for row in _history(3)]
    assert "best epoch" not in _texts(plots.plot_learning_curves(no_best))


def test_learning_curves_refuse_other_histories():
    with pytest.raises(ValueError, match=r"engine.fit returns; columns \['epoch'"):
        plots.plot_learning_curves([])
    with pytest.raises(ValueError, match=r"columns \['val_dice'\] are missing"):
        plots.plot_learning_curves([{k: v for k, v in r.items() if k != "val_dice"}
                                  for r in _history(2)])


# ------------------------------------------------------------------------------ 03_evaluate


def _predictions(n=120, seed=4, absent=("VASC",)):
    rng = np.random.default_rng(seed)
    classes = [i for i, c in enumerate(CLASS_NAMES) if c not in absent]
    targets = rng.choice(classes, n)
    logits = rng.normal(size=(n, K))
    logits[np.arange(n), targets] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probs, targets


def test_confusion_matrix_from_the_report():
    probs, targets = _predictions()
    report = classification_report(probs, targets)
    fig = _render(plots.plot_confusion_matrix(report, title="synthetic demo data"))
    counts_ax, norm_ax = fig.axes
    assert counts_ax.get_xlabel() == "predicted diagnosis"
    assert counts_ax.get_ylabel() == "true diagnosis"
    cm = np.array(report["confusion_matrix"])
    counts_texts = [t.get_text() for t in counts_ax.texts]
    assert counts_texts[:K] == [str(v) for v in cm[0]]  # row-major, one per cell
    norm_texts = [t.get_text() for t in norm_ax.texts]
    assert f"{report['confusion_matrix_normalized'][0][0]:.2f}" == norm_texts[0]
    assert norm_texts.count("–") == K  # VASC has no true sample: its row is undefined
    assert "VASC (n=0)" in _texts(fig)
    assert f"accuracy {report['accuracy']:.2f}" in fig.get_suptitle()
    # 03's report counts every image scored in n_images, with a diagnosis or not: the title counts the matrix's
    partly_labelled = _render(plots.plot_confusion_matrix({**report, "n_images": cm.sum() + 14}, title="set"))
    assert f"(n={cm.sum():,}," in partly_labelled.get_suptitle()
    assert [t.get_fontweight() for t in counts_ax.texts[:2]] == ["bold", "normal"]
    with pytest.raises(ValueError, match=r"classification_report.*\['confusion_matrix'\]"):
        plots.plot_confusion_matrix({"class_names": CLASS_NAMES, "confusion_matrix_normalized": [],
                                   "n_images": 1, "accuracy": 1.0})


def test_roc_curves_from_metrics():
    probs, targets = _predictions()
    curves = roc_curves(probs, targets)
    fig = _render(plots.plot_roc_curves(curves, title="synthetic demo data"))
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "chance (AUC 0.50)"
    assert legend[1] == f"MEL: AUC {curves['MEL']['auc']:.2f}"
    assert not any(t.startswith("VASC") for t in legend)  # absent class: no curve
    assert ax.lines[1].get_color() == plots.class_color("MEL")
    with pytest.raises(ValueError, match=r"metrics.roc_curves \(class 'MEL'\)"):
        plots.plot_roc_curves({"MEL": (curves["MEL"]["fpr"], curves["MEL"]["tpr"], 0.7)})


def test_per_class_metrics_from_the_report():
    probs, targets = _predictions()
    report = classification_report(probs, targets)
    fig = _render(plots.plot_per_class_metrics(report, title="synthetic demo data"))
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["sensitivity", "specificity", "precision", "f1", "auc", "average precision"]
    text = _texts(fig)
    assert text.count("n/a") == 3  # VASC: sensitivity, AUC and AP undefined
    assert "VASC\n(n=0)" in text
    assert f"{report['per_class']['MEL']['sensitivity']:.2f}" in text
    assert ax.containers[3][0].get_hatch() == "///"
    with pytest.raises(ValueError, match="classification_report"):
        plots.plot_per_class_metrics(report["per_class"])


# ------------------------------------------------------------------------------ overlays


def _overlay_inputs(n=3):
    rng = np.random.default_rng(5)
    images, tms, pms = [], [], []
    for i in range(n):
        h, w = 24 + 8 * i, 32 + 4 * i
        img, m = _image_and_mask(rng, h, w)
        images.append(img)
        tms.append(m)
        pms.append(_disc(h, w, h // 2 + 2, w // 2, 5))
    return images, tms, pms


def test_cases_with_truth():
    images, tms, pms = _overlay_inputs(3)
    fig = _render(plots.plot_cases(
        images, tms, pms, true_labels=["NV", "MEL", "NV"], pred_labels=["NV", "NV", "NV"],
        pred_probs=[0.7, 0.55, 0.9], scores=[0.91, 0.2, 0.5], title="synthetic demo data",
        row_titles=["a", "b", "c"]))
    assert len(fig.axes) == 3 * 4
    text = _texts(fig)
    assert "✓ true: NV · pred: NV (0.70)" in text and "✗ true: MEL · pred: NV (0.55)" in text
    assert "Dice 0.91" in text
    labels = [fig.axes[4 * i].xaxis.label for i in range(3)]
    assert to_rgb(labels[0].get_color()) == to_rgb(plots.CORRECT_COLOR)
    assert to_rgb(labels[1].get_color()) == to_rgb(plots.WRONG_COLOR)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "true lesion outline", "predicted lesion outline"]


def test_cases_inference_without_truth():
    images, _, pms = _overlay_inputs(2)
    fig = _render(plots.plot_cases(images, None, pms, None, ["MEL", "AKIEC"], [0.82, 0.4],
                                        title="inference"))
    assert len(fig.axes) == 2 * 3
    text = _texts(fig)
    assert "pred: MEL (0.82)" in text and "true:" not in text
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["predicted lesion outline"]


def test_cases_refuses_other_inputs():
    images, tms, pms = _overlay_inputs(2)
    # true masks without true labels (a masks-only set): the truth columns, captions without a diagnosis
    fig = _render(plots.plot_cases(images, tms, pms, None, ["MEL", "NV"], [0.5, 0.5]))
    assert len(fig.axes) == 2 * 4 and fig.axes[0].get_xlabel() == "pred: MEL (0.50)"
    with pytest.raises(ValueError, match=r"pred_masks\[0\]: the mask has shape"):
        plots.plot_cases(images, None, [pms[0][::2], pms[1]], None, ["MEL", "NV"], [0.5, 0.5])


def test_overlay_mask_changes_only_mask_pixels():
    rng = np.random.default_rng(6)
    img, mask = _image_and_mask(rng, 40, 50)
    m = mask.astype(bool)
    out = plots.overlay_mask(img, mask)
    assert out.dtype == np.uint8 and out.shape == img.shape
    changed = np.any(out != img, axis=-1)
    assert changed.any() and not (changed & ~m).any()
    # contour pixels are painted in full colour, inner pixels blended
    assert (out[m & changed] == (255, 0, 255)).all(axis=-1).any()
    assert np.array_equal(out[20, 25], np.rint(0.6 * img[20, 25] + 0.4 * np.array([255, 0, 255])))
    assert np.array_equal(img, _image_and_mask(np.random.default_rng(6), 40, 50)[0])  # no in-place
    green = plots.overlay_mask(img, m, color=plots.TRUE_MASK_COLOR, alpha=1.0)
    assert (green[m] == (0, 200, 0)).all()
    assert np.array_equal(plots.overlay_mask(img, np.zeros((40, 50), bool)), img)
    only = plots.overlay_mask(img, mask, alpha=0.0, contour=True)
    only_changed = np.any(only != img, axis=-1)
    assert only_changed.any() and only_changed.sum() < m.sum() and not (only_changed & ~m).any()
    assert np.array_equal(plots.overlay_mask(img, mask, alpha=0.0, contour=False), img)
    with pytest.raises(ValueError, match="the mask has shape"):
        plots.overlay_mask(img, mask[::2, ::2])
    with pytest.raises(ValueError, match="0/1"):
        plots.overlay_mask(img, mask * 255)


# ------------------------------------------------------------------------------ benchmark


def test_benchmark():
    table = pd.DataFrame({
        "stage": ["decode", "decode", "augment", "augment", "augment", "collate"],
        "pipeline": ["naive", "ours", "naive", "ours", "ours", "ours"],
        "images_per_s": [100.0, 350.0, 200.0, 700.0, 900.0, 5000.0],
    })
    fig = _render(plots.plot_benchmark(table, title="synthetic demo data"))
    ax = fig.axes[0]
    text = _texts(fig)
    assert "×3.5" in text and "×4.0" in text  # augment: mean(700, 900) / 200
    assert text.count("×") == 2  # no ratio for a stage without a naive run
    assert [t.get_text() for t in ax.get_yticklabels()] == ["decode", "augment", "collate"]
    assert [b.get_width() for b in ax.containers[1]][:2] == [350.0, 800.0]  # ours, averaged
    assert ax.get_xscale() == "linear"
    assert plots.plot_benchmark(table.assign(images_per_s=[1.0, 100, 2, 3, 4, 5])).axes[0] \
        .get_xscale() == "log"
    with pytest.raises(ValueError, match=r"scripts/benchmark.py run"):
        plots.plot_benchmark(table.drop(columns="stage"))
