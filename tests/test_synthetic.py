"""The synthetic demo data set in the one layout (skin_utils.demo)."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from skin_utils.labels import CLASS_NAMES, HAM10000_CLASS_COUNTS
from skin_utils.demo import SYNTHETIC_NOTE, class_image_counts, make_synthetic_dataset, render_lesion
from skin_utils.prepare import main
from skin_utils.layout import is_synthetic

N_IMAGES = 300
SIZE = (120, 160)  # (H, W)
COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
LOCALIZATIONS = {
    "back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "foot",
    "unknown", "neck", "scalp", "hand", "ear", "genital", "acral",
}


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn") / "data", n_images=N_IMAGES,
                                  image_size=SIZE, seed=0)


def _rows(data_dir):
    with open(Path(data_dir) / "HAM10000_metadata.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def _hashes(data_dir):
    root = Path(data_dir)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _load(data_dir, image_id):
    img = np.asarray(Image.open(Path(data_dir) / "images" / f"{image_id}.jpg"))
    mask = Image.open(Path(data_dir) / "masks" / f"{image_id}_segmentation.png")
    return img, mask


def test_layout_columns_and_info(ds):
    header, rows = _rows(ds)
    assert header == COLUMNS
    assert len(rows) == N_IMAGES
    ids = [r["image_id"] for r in rows]
    assert len(set(ids)) == N_IMAGES
    assert all(i.startswith("SYN_") and len(i) == 11 for i in ids)
    assert all(r["lesion_id"].startswith("SYNL_") and len(r["lesion_id"]) == 12 for r in rows)
    assert not any("ISIC" in i for i in ids)
    assert sorted(p.stem for p in (ds / "images").iterdir()) == sorted(ids)
    masks = sorted(p.name for p in (ds / "masks").iterdir())
    assert masks == sorted(f"{i}_segmentation.png" for i in ids)
    for image_id in ids[:20]:
        img = Image.open(ds / "images" / f"{image_id}.jpg")
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == SIZE[::-1]  # PIL: (W, H)
        mask = Image.open(ds / "masks" / f"{image_id}_segmentation.png")
        assert mask.format == "PNG" and mask.mode == "L" and mask.size == SIZE[::-1]
    info = json.loads((ds / "dataset_info.json").read_text())
    assert info == {"synthetic": True, "generator": "skin_utils.demo", "version": 3,
                    "seed": 0, "n_images": N_IMAGES, "image_size": list(SIZE)}
    assert is_synthetic(ds)
    assert isinstance(SYNTHETIC_NOTE, str) and SYNTHETIC_NOTE


def test_is_synthetic_false_without_info(tmp_path):
    assert not is_synthetic(tmp_path)
    assert not is_synthetic(tmp_path / "missing")
    (tmp_path / "dataset_info.json").write_text("not json")
    assert not is_synthetic(tmp_path)


def test_metadata_values_plausible(ds):
    _, rows = _rows(ds)
    assert {r["dx"] for r in rows} <= {c.lower() for c in CLASS_NAMES}
    assert {r["sex"] for r in rows} <= {"male", "female", "unknown"}
    assert {r["localization"] for r in rows} <= LOCALIZATIONS
    assert {r["dx_type"] for r in rows} <= {"histo", "follow_up", "consensus", "confocal"}
    ages = [float(r["age"]) for r in rows if r["age"] != ""]
    assert len(ages) >= 0.95 * len(rows)
    assert all(5 <= a <= 85 and a % 5 == 0 for a in ages)
    assert len(set(ages)) >= 5 and len({r["localization"] for r in rows}) >= 5


def test_masks_binary_and_match_lesion(ds):
    _, rows = _rows(ds)
    diffs, ring_diffs = [], []
    for r in rows:
        img, mask_img = _load(ds, r["image_id"])
        mask = np.asarray(mask_img)
        assert set(np.unique(mask)) == {0, 255}, r["image_id"]
        m = mask > 0
        assert 0.01 < m.mean() < 0.6, (r["image_id"], m.mean())
        # the lesion lies inside the frame
        assert not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()), r["image_id"]
        img = img.astype(float)
        diffs.append(np.linalg.norm(img[m].mean(0) - img[~m].mean(0)))
        # colour changes right at the mask border: thin ring inside vs thin ring outside
        inner = np.asarray(mask_img.filter(ImageFilter.MinFilter(5))) > 0
        outer = np.asarray(mask_img.filter(ImageFilter.MaxFilter(5))) > 0
        ring_diffs.append(np.linalg.norm(img[m & ~inner].mean(0) - img[outer & ~m].mean(0)))
    diffs, ring_diffs = np.array(diffs), np.array(ring_diffs)
    assert diffs.min() > 8 and np.median(diffs) > 40, (diffs.min(), np.median(diffs))
    assert ring_diffs.min() > 5 and np.median(ring_diffs) > 30, (ring_diffs.min(),
                                                                 np.median(ring_diffs))


def test_class_counts_follow_ham_imbalance(ds):
    _, rows = _rows(ds)
    counts = Counter(r["dx"].upper() for r in rows)
    assert dict(counts) == class_image_counts(N_IMAGES)
    assert set(counts) == set(CLASS_NAMES)
    total = sum(HAM10000_CLASS_COUNTS.values())
    for c in CLASS_NAMES:
        expected = N_IMAGES * HAM10000_CLASS_COUNTS[c] / total
        assert abs(counts[c] - max(expected, 3)) <= 3, (c, counts[c], expected)
    assert counts.most_common(1)[0][0] == "NV"
    lesions = defaultdict(set)
    for r in rows:
        lesions[r["dx"]].add(r["lesion_id"])
    assert all(len(lesions[c.lower()]) >= 3 for c in CLASS_NAMES)


@pytest.mark.parametrize("n", [21, 50, 77, 400, 10015])
def test_class_image_counts_small_and_large(n):
    counts = class_image_counts(n)
    assert sum(counts.values()) == n
    assert all(counts[c] >= 3 for c in CLASS_NAMES)
    if n >= 400:
        assert counts["NV"] > counts["MEL"] > counts["BCC"] > counts["AKIEC"] > counts["DF"]


def test_too_few_images_raises(tmp_path):
    with pytest.raises(ValueError, match="n_images"):
        make_synthetic_dataset(tmp_path / "x", n_images=10)


def test_lesions_have_several_images_and_one_dx(ds):
    _, rows = _rows(ds)
    by_lesion = defaultdict(list)
    for r in rows:
        by_lesion[r["lesion_id"]].append(r)
    ratio = len(rows) / len(by_lesion)
    assert 1.15 < ratio < 1.6, ratio
    for lesion_id, group in by_lesion.items():
        assert len(group) <= 3
        for key in ("dx", "age", "sex", "localization", "dx_type"):
            assert len({g[key] for g in group}) == 1, (lesion_id, key)
    # views of one lesion are different photographs
    multi = [g for g in by_lesion.values() if len(g) > 1][:5]
    assert multi
    for group in multi:
        a, b = (_load(ds, g["image_id"])[0] for g in group[:2])
        assert not np.array_equal(a, b)


def test_small_dataset_every_class_has_three_lesions(tmp_path):
    d = make_synthetic_dataset(tmp_path / "small", n_images=50, image_size=(48, 64), seed=3)
    _, rows = _rows(d)
    assert len(rows) == 50
    lesions = defaultdict(set)
    for r in rows:
        lesions[r["dx"]].add(r["lesion_id"])
    assert all(len(lesions[c.lower()]) >= 3 for c in CLASS_NAMES), lesions
    assert len(rows) / len({r["lesion_id"] for r in rows}) > 1
    assert Image.open(d / "images" / f"{rows[0]['image_id']}.jpg").size == (64, 48)


def test_deterministic_by_seed(tmp_path):
    kw = dict(n_images=30, image_size=(48, 64))
    a = _hashes(make_synthetic_dataset(tmp_path / "a", seed=7, **kw))
    b = _hashes(make_synthetic_dataset(tmp_path / "b", seed=7, **kw))
    c = _hashes(make_synthetic_dataset(tmp_path / "c", seed=8, **kw))
    assert a == b
    assert len(a) == 2 * 30 + 2
    assert a.keys() == c.keys()
    differing = [k for k in a if a[k] != c[k] and k.startswith("images/")]
    assert len(differing) == 30


def test_idempotent(ds):
    before = {p: p.stat().st_mtime_ns for p in ds.rglob("*")}
    t0 = time.perf_counter()
    again = make_synthetic_dataset(ds, n_images=N_IMAGES, image_size=SIZE, seed=0)
    assert time.perf_counter() - t0 < 1.0
    assert again == ds
    assert {p: p.stat().st_mtime_ns for p in ds.rglob("*")} == before


def test_foreign_folder_raises(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        make_synthetic_dataset(foreign, n_images=21, image_size=(32, 32))
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_other_synthetic_params_need_overwrite(tmp_path):
    d = make_synthetic_dataset(tmp_path / "d", n_images=21, image_size=(32, 32), seed=1)
    with pytest.raises(FileExistsError, match="overwrite"):
        make_synthetic_dataset(d, n_images=21, image_size=(32, 32), seed=2)
    make_synthetic_dataset(d, n_images=28, image_size=(32, 32), seed=2, overwrite=True)
    assert json.loads((d / "dataset_info.json").read_text())["seed"] == 2
    assert len(list((d / "images").iterdir())) == 28
    assert len(_rows(d)[1]) == 28
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_overwrite_never_deletes_real_data(tmp_path):
    real = tmp_path / "real"
    (real / "images").mkdir(parents=True)
    (real / "images" / "ISIC_0000001.jpg").write_bytes(b"x")
    (real / "HAM10000_metadata.csv").write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(FileExistsError):
        make_synthetic_dataset(real, n_images=21, image_size=(32, 32), overwrite=True)
    assert (real / "images" / "ISIC_0000001.jpg").exists()


@pytest.mark.parametrize("dx", CLASS_NAMES)
def test_render_lesion(dx):
    img, mask = render_lesion(np.random.default_rng(5), dx, (72, 96))
    assert img.shape == (72, 96, 3) and img.dtype == np.uint8
    assert mask.shape == (72, 96) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    img2, mask2 = render_lesion(np.random.default_rng(5), dx.lower(), (72, 96))
    assert np.array_equal(img, img2) and np.array_equal(mask, mask2)
    img = img.astype(float)
    assert np.linalg.norm(img[mask == 1].mean(0) - img[mask == 0].mean(0)) > 10


def test_render_lesion_unknown_dx():
    with pytest.raises(ValueError, match="Unknown diagnosis"):
        render_lesion(np.random.default_rng(0), "XYZ", (64, 48))


def test_cli(tmp_path, capsys):
    assert main(["demo", str(tmp_path / "cli"), "--n-images", "21", "--width", "40", "--height", "30",
                 "--seed", "4"]) == 0
    assert "synthetic" in capsys.readouterr().out
    info = json.loads((tmp_path / "cli" / "dataset_info.json").read_text())
    assert info["image_size"] == [30, 40] and info["seed"] == 4 and info["n_images"] == 21


def test_classes_learnable_from_colour_histograms(ds):
    """Colour histograms + logistic regression (lesion-grouped CV) beat chance by far."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _, rows = _rows(ds)
    feats = []
    for r in rows:
        q = (_load(ds, r["image_id"])[0] // 64).reshape(-1, 3).astype(int)
        hist = np.bincount(q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2], minlength=64) / len(q)
        feats.append(np.sqrt(hist))
    x = np.array(feats)
    y = np.array([r["dx"] for r in rows])
    groups = np.array([r["lesion_id"] for r in rows])
    clf = make_pipeline(StandardScaler(),
                        LogisticRegression(max_iter=2000, class_weight="balanced"))
    pred = cross_val_predict(clf, x, y, groups=groups,
                             cv=StratifiedGroupKFold(3, shuffle=True, random_state=0))
    majority = balanced_accuracy_score(y, np.full_like(y, Counter(y).most_common(1)[0][0]))
    assert majority == pytest.approx(1 / 7)
    assert balanced_accuracy_score(y, pred) > majority + 0.3


def test_demo_found_by_resolve_data_dir_has_height_width_size(tmp_path):
    from skin_utils.data import resolve_data_dir

    d = resolve_data_dir("data", synthetic_dir="demo", n_demo_images=21, demo_image_size=(32, 48), root=tmp_path)
    assert d == tmp_path / "demo"
    with Image.open(next((d / "images").glob("*.jpg"))) as im:
        assert im.size == (48, 32)  # PIL's (W, H) for demo_image_size=(H, W) = (32, 48)
