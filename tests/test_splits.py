import json
import numpy as np
import pandas as pd
import pytest

from skin_utils.data import load_or_make_split, make_split, split_summary
from skin_utils.layout import load_index
from skin_utils import CLASS_NAMES


def _check_no_leak(split):
    sides = split.groupby("lesion_id")["split"].nunique()
    assert (sides == 1).all(), f"lesions in several splits: {list(sides[sides > 1].index[:5])}"


def test_synthetic_split_is_lesion_level_stratified_and_deterministic(synthetic_dir):
    index = load_index(synthetic_dir)
    a, b = make_split(index, seed=3), make_split(index, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(make_split(index, seed=4))
    _check_no_leak(a)
    # every class with >= 3 lesions appears in every split
    lesions = index.groupby("label")["lesion_id"].nunique()
    for label, n in lesions.items():
        if n >= 3:
            assert set(a.loc[a["label"] == label, "split"]) == {"train", "val", "test"}
    fractions = a.drop_duplicates("lesion_id")["split"].value_counts(normalize=True)
    assert fractions["train"] == pytest.approx(0.7, abs=0.05)


def test_split_is_stored_and_reused_and_remade_for_other_data(synthetic_dir, tmp_path):
    index = load_index(synthetic_dir)
    path = tmp_path / "split.csv"
    first = load_or_make_split(index, path, seed=0)
    path_mtime = path.stat().st_mtime_ns
    again = load_or_make_split(index, path, seed=0)
    assert path.stat().st_mtime_ns == path_mtime
    pd.testing.assert_frame_equal(first[again.columns].reset_index(drop=True), again)
    other = load_or_make_split(index, path, seed=1)
    assert not other["split"].equals(first["split"])
    smaller = index.iloc[:200].copy()
    smaller.attrs = {**index.attrs, "fingerprint": "000000000000"}
    remade = load_or_make_split(smaller, path, seed=1)
    assert set(remade["image_id"]) == set(smaller["image_id"])
    assert json.loads(path.with_suffix(".json").read_text())["data_fingerprint"] == "000000000000"


def test_a_stored_split_is_remade_when_the_lesion_ids_change(synthetic_dir, tmp_path):
    # the fingerprint does not see lesion ids: labels handed over without them, then given them (as the leakage
    # warning asks), must not reuse the split by image, which puts images of one lesion in several splits
    index = load_index(synthetic_dir)
    by_image = index.assign(lesion_id=index["image_id"])
    by_image.attrs = dict(index.attrs)
    path = tmp_path / "split.csv"
    load_or_make_split(by_image, path)
    split = load_or_make_split(index, path)
    assert split["lesion_id"].tolist() == index["lesion_id"].tolist()
    _check_no_leak(split)


def test_bad_fractions_are_refused(synthetic_dir):
    with pytest.raises(ValueError, match="summing to 1"):
        make_split(load_index(synthetic_dir), (0.5, 0.2, 0.2))


def test_groundtruth_only_labels_warn_about_leakage(synthetic_dir):
    index = load_index(synthetic_dir)
    index.attrs["has_lesion_ids"] = False
    with pytest.warns(UserWarning, match="leak"):
        make_split(index)


def test_real_ham10000_split_has_no_lesion_in_two_splits(real_data_dir):
    index = load_index(real_data_dir, decode=False)
    split = make_split(index, seed=0)
    _check_no_leak(split)
    summary = split_summary(split, CLASS_NAMES)
    assert summary.loc["total", "train_images"] + summary.loc["total", "val_images"] \
        + summary.loc["total", "test_images"] == len(index) == 8512
    # stratified at lesion level: each class's share of test lesions within 2 points of its share overall
    lesion_class = split.drop_duplicates("lesion_id")
    overall = lesion_class["label"].value_counts(normalize=True)
    test = lesion_class[lesion_class["split"] == "test"]["label"].value_counts(normalize=True)
    assert np.allclose(overall.sort_index(), test.reindex(overall.index).sort_index(), atol=0.02)
