"""skin_utils.layout: the one layout, its index, and every kind of bad input, reported together."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skin_utils.labels import CLASS_NAMES
from skin_utils.layout import (KIND_FIXES, DataLayoutError, DataQualityWarning, DataValidationError,
                               LesionLeakageWarning, find_images, load_index, read_mask, validate_dataset)

W, H = 40, 30
DXS = ["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"]


# ------------------------------------------------------------------------------ builders
def _img(path: Path, size=(W, H), seed=0, fmt=None):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt)
    return path


def _mask(path: Path, size=(W, H), values=(0, 255)):
    m = np.full((size[1], size[0]), values[0], np.uint8)
    m[size[1] // 4: 3 * size[1] // 4, size[0] // 4: 3 * size[0] // 4] = values[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(m).save(path)
    return path


def _ids(n):
    return [f"ISIC_{i:07d}" for i in range(n)]


def _metadata(root: Path, ids, dxs=None, name="HAM10000_metadata.csv", sep=","):
    dxs = dxs or [DXS[i % len(DXS)] for i in range(len(ids))]
    df = pd.DataFrame({
        "lesion_id": [f"HAM_{i // 2:07d}" for i in range(len(ids))],  # two images per lesion
        "image_id": ids,
        "dx": dxs,
        "dx_type": "histo",
        "age": [40.0 + i for i in range(len(ids))],
        "sex": "female",
        "localization": "back",
    })
    df.to_csv(root / name, index=False, sep=sep)
    return df


def _groundtruth(root: Path, ids, dxs=None, rows=None):
    dxs = dxs or [DXS[i % len(DXS)] for i in range(len(ids))]
    lines = ["image," + ",".join(CLASS_NAMES)]
    for k, (i, dx) in enumerate(zip(ids, dxs)):
        row = rows[k] if rows and rows[k] is not None else [
            1.0 if c == dx.upper() else 0.0 for c in CLASS_NAMES
        ]
        lines.append(i + "," + ",".join(f"{v:.1f}" for v in row))
    (root / "GroundTruth.csv").write_text("\n".join(lines) + "\n")


def make_dataset(root: Path, n=6, labels="metadata") -> list[str]:
    ids = _ids(n)
    for k, i in enumerate(ids):
        _img(root / "images" / f"{i}.jpg", seed=k)
        _mask(root / "masks" / f"{i}_segmentation.png")
    if labels == "metadata":
        _metadata(root, ids)
    elif labels == "groundtruth":
        _groundtruth(root, ids)
    return ids


def _raise_msg(root, **kw) -> str:
    with pytest.raises(DataValidationError) as ei:
        load_index(root, **kw)
    return str(ei.value)


# ------------------------------------------------------------------------------ good data
def test_index_of_a_valid_dataset(tmp_path):
    ids = make_dataset(tmp_path, n=7)
    df = load_index(tmp_path)
    assert list(df.columns) == ["image_id", "image_path", "mask_path", "label", "dx", "lesion_id",
                                "age", "sex", "localization", "has_label", "has_mask"]
    assert df["has_label"].all() and df["has_mask"].all()
    assert df["image_id"].tolist() == ids
    assert df["label"].dtype == np.int64 and df["age"].dtype == np.float64
    assert sorted(df["dx"]) == sorted(d.upper() for d in DXS)
    assert all(CLASS_NAMES[lab] == dx for lab, dx in zip(df["label"], df["dx"]))
    assert all(Path(p).is_absolute() and Path(p).exists() for p in df["image_path"])
    assert all(p.endswith("_segmentation.png") for p in df["mask_path"])
    assert df["lesion_id"].nunique() == 4
    a = df.attrs
    assert a["label_file"] == "HAM10000_metadata.csv" and a["has_lesion_ids"] is True and a["synthetic"] is False
    assert re.fullmatch(r"[0-9a-f]{12}", a["fingerprint"]) and a["problems"] == []
    assert a["data_dir"] == str(tmp_path)
    report = validate_dataset(tmp_path)
    assert report.ok and "OK: no problems found" in str(report)


def test_fingerprint_tracks_files_and_labels(tmp_path):
    ids = make_dataset(tmp_path)
    fp = load_index(tmp_path, decode=False).attrs["fingerprint"]
    assert load_index(tmp_path, decode=False).attrs["fingerprint"] == fp
    _img(tmp_path / "images" / f"{ids[0]}.jpg", size=(80, 60), seed=9)  # file changed
    _mask(tmp_path / "masks" / f"{ids[0]}_segmentation.png", size=(80, 60))
    fp2 = load_index(tmp_path, decode=False).attrs["fingerprint"]
    assert fp2 != fp
    _metadata(tmp_path, ids, dxs=["mel"] * len(ids))  # labels changed
    assert load_index(tmp_path, decode=False).attrs["fingerprint"] not in (fp, fp2)


def test_synthetic_flag(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "dataset_info.json").write_text(json.dumps({"synthetic": True, "n": 6}))
    assert load_index(tmp_path).attrs["synthetic"] is True


def test_case_insensitive_extensions_and_other_files_beside_the_data(tmp_path):
    ids = make_dataset(tmp_path)
    (tmp_path / "images" / f"{ids[0]}.jpg").rename(tmp_path / "images" / f"{ids[0]}.JPG")
    (tmp_path / "README.txt").write_text("not an image, but fine next to the data")
    df = load_index(tmp_path)
    assert len(df) == len(ids) and df["image_path"].iloc[0].endswith(".JPG")


def test_no_masks_folder_gives_mask_path_none(tmp_path):
    ids = make_dataset(tmp_path)
    shutil.rmtree(tmp_path / "masks")
    df = load_index(tmp_path)
    assert df["mask_path"].isna().all() and not df.attrs["has_masks"] and len(df) == len(ids)
    assert "no masks found" in str(validate_dataset(tmp_path))


def test_metadata_without_lesion_ids_warns_about_leakage_and_other_tables_are_not_read(tmp_path):
    ids = make_dataset(tmp_path, labels="groundtruth")  # GroundTruth.csv beside the metadata is not read
    pd.DataFrame({"image_id": ids, "dx": ["MEL"] * len(ids)}).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    with pytest.warns(LesionLeakageWarning, match="LEAK ACROSS"):  # metadata without lesion_id column
        df = load_index(tmp_path)
    assert df.attrs["has_lesion_ids"] is False and (df["lesion_id"] == df["image_id"]).all()
    assert (df["dx"] == "MEL").all() and df["age"].isna().all() and (df["localization"] == "unknown").all()
    assert "no lesion_id column" in str(validate_dataset(tmp_path))


def test_hidden_and_system_files_are_ignored_not_errors(tmp_path):
    ids = make_dataset(tmp_path)
    (tmp_path / "images" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (tmp_path / "images" / "Thumbs.db").write_bytes(b"junk")
    (tmp_path / "masks" / "._ISIC_0000000_segmentation.png").write_bytes(b"junk")
    (tmp_path / "images" / "__MACOSX").mkdir()
    (tmp_path / "images" / "__MACOSX" / "._x.jpg").write_bytes(b"junk")
    df = load_index(tmp_path)
    assert len(df) == len(ids)
    report = validate_dataset(tmp_path)
    assert report.ok and len(report.ignored) == 4
    assert ".DS_Store" in str(report) and "ignored" in str(report)


def test_mask_of_other_size_same_aspect_is_fine_and_resized(tmp_path):
    ids = make_dataset(tmp_path)
    big = _mask(tmp_path / "masks" / f"{ids[0]}_segmentation.png", size=(80, 60))
    _mask(tmp_path / "masks" / f"{ids[1]}_segmentation.png", size=(41, 30))  # 2.5 % off: not fine
    report = validate_dataset(tmp_path)
    assert [p.kind for p in report.problems] == ["aspect_mismatch"]
    assert ids[1] in report.problems[0].path
    m = read_mask(big, hw=(H, W))
    assert m.shape == (H, W) and set(np.unique(m)) == {0, 1}


def test_exif_rotated_image_is_compared_in_display_orientation(tmp_path):
    ids = make_dataset(tmp_path, n=2)
    arr = np.zeros((H, W, 3), np.uint8)
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # displayed as 30x40 (portrait)
    im.save(tmp_path / "images" / f"{ids[0]}.jpg", exif=exif.tobytes())
    _mask(tmp_path / "masks" / f"{ids[0]}_segmentation.png", size=(H, W))  # portrait mask
    assert validate_dataset(tmp_path).ok


def test_antialiased_and_01_masks_are_accepted(tmp_path):
    ids = make_dataset(tmp_path, n=3)
    m = np.zeros((H, W), np.uint8)
    m[8:22, 10:30] = 255
    m[7, 10:30] = m[22, 10:30] = 128  # anti-aliased border (~7 % of the lesion, 3 % of pixels)
    Image.fromarray(m).save(tmp_path / "masks" / f"{ids[0]}_segmentation.png")
    _mask(tmp_path / "masks" / f"{ids[1]}_segmentation.png", values=(0, 1))
    assert validate_dataset(tmp_path).ok
    assert load_index(tmp_path).shape[0] == 3


def test_validator_and_read_mask_share_the_binarisation_rule(tmp_path):
    ids = make_dataset(tmp_path, n=3)
    quarter = np.zeros((H, W), np.uint16)
    quarter[5:25, 5:35] = 16384  # a quarter of the 16-bit range: read as empty
    Image.fromarray(quarter).save(tmp_path / "masks" / f"{ids[0]}_segmentation.png")
    ones = np.zeros((H, W), np.uint16)
    ones[5:25, 5:35] = 1  # 0/1-valued: already binary, read as it is
    Image.fromarray(ones).save(tmp_path / "masks" / f"{ids[1]}_segmentation.png")
    report = validate_dataset(tmp_path)
    assert [(p.kind, p.image_id) for p in report.problems] == [("not_binary_mask", ids[0])]
    assert "max value 16384 of 65535" in report.problems[0].message
    assert not read_mask(tmp_path / "masks" / f"{ids[0]}_segmentation.png").any()
    assert read_mask(tmp_path / "masks" / f"{ids[1]}_segmentation.png").sum() == 600


# ------------------------------------------------------------------------------ bad data
def _everything_wrong(root: Path) -> list[str]:
    """One data set with (at least) one item of every per-item problem kind."""
    ids = make_dataset(root, n=16)
    img, msk = root / "images", root / "masks"
    (img / f"{ids[0]}.jpg").write_bytes(b"definitely not a jpeg")  # unreadable_image
    good = (img / f"{ids[1]}.jpg").read_bytes()
    (img / f"{ids[1]}.jpg").write_bytes(good[: len(good) // 2])  # truncated -> unreadable_image
    (img / "notes.txt").write_text("hello")  # not_an_image
    (msk / f"{ids[2]}_segmentation.png").unlink()  # missing_mask
    _img(img / "ISIC_9999999.jpg")  # missing_label (with mask)
    _mask(msk / "ISIC_9999999_segmentation.png")
    _mask(msk / "ISIC_8888888_segmentation.png")  # orphan_mask
    col = np.zeros((H, W, 3), np.uint8)
    col[5:15, 5:15] = (255, 0, 0)
    Image.fromarray(col).save(msk / f"{ids[3]}_segmentation.png")  # not_binary_mask (colour)
    _mask(msk / f"{ids[4]}_segmentation.png", values=(0, 2))  # not_binary_mask (label map 0/2)
    ramp = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    Image.fromarray(ramp).save(msk / f"{ids[5]}_segmentation.png")  # not_binary_mask (soft)
    _mask(msk / f"{ids[6]}_segmentation.png", size=(40, 40))  # aspect_mismatch
    _img(img / f"{ids[7]}.png", fmt="PNG")  # duplicate_id (.jpg and .png)
    (msk / f"{ids[8]}_segmentation.png").write_bytes(b"\x89PNG broken")  # unreadable_mask
    (img / "subfolder").mkdir()  # unexpected_folder
    _mask(msk / "lesion_outline.png")  # bad_mask_name
    dxs = [DXS[i % len(DXS)] for i in range(len(ids))]
    dxs[9] = "freckle"  # bad_label
    _metadata(root, ids, dxs=dxs)
    return ids


ITEM_KINDS = ["unreadable_image", "not_an_image", "missing_mask", "missing_label", "orphan_mask",
              "not_binary_mask", "aspect_mismatch", "duplicate_id", "unreadable_mask",
              "unexpected_folder", "bad_mask_name", "bad_label"]


def test_every_problem_is_reported_together_with_fixes(tmp_path):
    ids = _everything_wrong(tmp_path)
    msg = _raise_msg(tmp_path)
    for kind in ITEM_KINDS:
        assert f"[{kind}]" in msg, kind
    assert msg.count("Fix:") == len(ITEM_KINDS)  # one fix per kind
    expect = {
        ids[0]: "not an image PIL can identify", ids[1]: "truncated", "notes.txt": "not a .jpg/.jpeg/.png",
        ids[2]: "no mask", "ISIC_9999999": "has no row in HAM10000_metadata.csv",
        "ISIC_8888888": "no image ISIC_8888888", ids[3]: "colour image", ids[4]: "label map",
        ids[5]: "mid-grey", ids[6]: "aspect", ids[7]: "appears 2 times", ids[8]: "not an image PIL can",
        "subfolder": "sub-folder", "lesion_outline.png": "does not end in _segmentation.png",
        ids[9]: "'freckle' is not one of the seven classes",
    }
    lines = msg.splitlines()
    for name, text in expect.items():
        assert any(name in ln and text in ln for ln in lines), (name, text)
    assert "on_bad_data=\"skip\"" in msg
    report = validate_dataset(tmp_path)
    assert not report.ok and set(ITEM_KINDS) <= {p.kind for p in report.problems}
    assert all(p.path and p.message and KIND_FIXES[p.kind] for p in report.problems)
    assert "PROBLEM(S) FOUND" in str(report)


def test_skip_mode_keeps_the_good_rows_and_lists_problems(tmp_path):
    ids = _everything_wrong(tmp_path)
    with pytest.warns(DataQualityWarning, match="Skipped"):
        df = load_index(tmp_path, on_bad_data="skip")
    assert df["image_id"].tolist() == ids[10:]  # ids 0..9 all had a problem
    problems = df.attrs["problems"]
    assert all(isinstance(p, str) for p in problems)
    for kind in ITEM_KINDS:
        assert any(p.startswith(kind + ":") for p in problems), kind


def test_skip_warns_only_once(tmp_path):
    make_dataset(tmp_path)
    (tmp_path / "images" / "extra.txt").write_text("x")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        load_index(tmp_path, on_bad_data="skip")
    assert sum(issubclass(w.category, DataQualityWarning) for w in rec) == 1


def test_bad_on_bad_data_value(tmp_path):
    make_dataset(tmp_path)
    with pytest.raises(ValueError, match="on_bad_data"):
        load_index(tmp_path, on_bad_data="ignore")


def test_an_image_in_two_formats_is_a_duplicate(tmp_path):
    ids = make_dataset(tmp_path, n=3)
    _img(tmp_path / "images" / f"{ids[1]}.png", fmt="PNG")
    msg = _raise_msg(tmp_path)
    assert "[duplicate_id] 1 problem" in msg and "images/ISIC_0000001.jpg, images/ISIC_0000001.png" in msg


def test_an_unknown_or_empty_diagnosis_is_a_bad_label(tmp_path):
    ids = make_dataset(tmp_path, n=3)
    _metadata(tmp_path, ids, dxs=["nv", "melanoma", ""])
    msg = _raise_msg(tmp_path)
    assert "[bad_label] 2 problems" in msg and "'melanoma' is not one of the seven classes" in msg
    assert "no diagnosis (empty dx cell)" in msg and "python -m skin_utils.prepare folder" in msg
    with pytest.warns(DataQualityWarning, match="Skipped 1 image"):  # partial: an empty cell is "no diagnosis"
        df = load_index(tmp_path, partial=True, on_bad_data="skip")
    assert df["image_id"].tolist() == [ids[0], ids[2]] and df["label"].tolist() == [1, -1]


def test_duplicate_label_rows_with_conflicting_diagnoses(tmp_path):
    ids = make_dataset(tmp_path, n=3)
    meta = pd.read_csv(tmp_path / "HAM10000_metadata.csv")
    extra = meta.iloc[[0]].assign(dx="mel" if meta.dx[0] != "mel" else "nv")
    pd.concat([meta, extra, meta.iloc[[1]]]).to_csv(tmp_path / "HAM10000_metadata.csv", index=False)
    report = validate_dataset(tmp_path)
    assert [(p.kind, p.image_id) for p in report.problems] == [("duplicate_id", ids[0])]


def test_bad_label_file_is_reported(tmp_path):
    make_dataset(tmp_path, labels=None)
    (tmp_path / "HAM10000_metadata.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(DataLayoutError) as ei:
        load_index(tmp_path)
    assert "no usable labels file" in str(ei.value) and "[bad_label_file]" in str(ei.value)
    assert "has no column image_id, dx" in str(ei.value)


def test_listing_is_capped_per_kind(tmp_path):
    ids = make_dataset(tmp_path, n=3)
    for k in range(25):
        _img(tmp_path / "images" / f"ISIC_77{k:05d}.jpg", seed=k)
        _mask(tmp_path / "masks" / f"ISIC_77{k:05d}_segmentation.png")
    msg = _raise_msg(tmp_path, decode=False)
    assert "[missing_label] 25 problems" in msg and "... and 5 more of this kind" in msg
    assert len(ids) == 3


def test_decode_false_checks_names_not_pixels(tmp_path):
    ids = make_dataset(tmp_path)
    good = (tmp_path / "images" / f"{ids[0]}.jpg").read_bytes()
    (tmp_path / "images" / f"{ids[0]}.jpg").write_bytes(good[: len(good) // 2])
    (tmp_path / "images" / f"{ids[1]}.jpg").write_bytes(b"")
    report = validate_dataset(tmp_path, decode=False)
    assert [(p.kind, p.image_id) for p in report.problems] == [("unreadable_image", ids[1])]
    kinds = {p.kind for p in validate_dataset(tmp_path, decode=True).problems}
    assert kinds == {"unreadable_image"} and len(validate_dataset(tmp_path).problems) == 2


# ------------------------------------------------------------------------------ no data set
def test_missing_folder(tmp_path):
    (tmp_path / "something_else").mkdir()
    with pytest.raises(DataLayoutError) as ei:
        load_index(tmp_path / "data")
    msg = str(ei.value)
    assert str(tmp_path / "data") in msg and "does not exist" in msg and "something_else/" in msg
    assert "python -m skin_utils.prepare ham10000" in msg and "data/README.md" in msg
    assert isinstance(ei.value, FileNotFoundError) and isinstance(ei.value, ValueError)
    report = validate_dataset(tmp_path / "data")
    assert [p.kind for p in report.problems] == ["missing_folder"]


def test_folder_without_a_data_set_lists_its_contents(tmp_path):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "HAM10000_images_part_1.zip").write_bytes(b"PK")
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(DataLayoutError) as ei:
        load_index(tmp_path)
    msg = str(ei.value)
    assert str(tmp_path) in msg and "no .jpg/.jpeg/.png/.bmp/.tif/.tiff/.webp images in" in msg
    assert "HAM10000_images_part_1.zip, downloads/, notes.md" in msg
    assert "Expected layout" in msg and "<data_dir>/images/<image_id>.jpg" in msg
    assert "python -m skin_utils.prepare ham10000" in msg and "doi:10.7910/DVN/DBW86T" in msg
    assert "python -m skin_utils.prepare folder" in msg


def test_empty_images_folder(tmp_path):
    make_dataset(tmp_path, n=2)
    shutil.rmtree(tmp_path / "images")
    (tmp_path / "images").mkdir()
    with pytest.raises(DataLayoutError) as ei:
        load_index(tmp_path)
    assert "[empty_folder]" in str(ei.value) and "the image folder is empty" in str(ei.value)


def test_empty_masks_folder_and_no_labels(tmp_path):
    make_dataset(tmp_path, n=2, labels=None)
    shutil.rmtree(tmp_path / "masks")
    (tmp_path / "masks").mkdir()
    report = validate_dataset(tmp_path)
    kinds = {p.kind for p in report.problems}
    assert {"empty_folder", "no_labels"} <= kinds
    with pytest.raises(DataLayoutError, match="no labels file"):
        load_index(tmp_path)


def test_passing_the_images_folder_itself_gets_a_hint(tmp_path):
    make_dataset(tmp_path, n=2)
    with pytest.raises(DataLayoutError, match="pass its parent folder"):
        load_index(tmp_path / "images")


# ------------------------------------------------------------------------------ find_images
def test_find_images(tmp_path):
    for name in ["b.jpg", "a.PNG", "c.jpeg", ".hidden.jpg", "notes.txt", "Thumbs.db", "d.tif", "e.webp"]:
        (tmp_path / name).write_bytes(b"x")
    for sub in ("sub", "__MACOSX", ".git"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "e.jpg").write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == [
        "a.PNG", "b.jpg", "c.jpeg", "d.tif", "e.webp", "sub/e.jpg"]
    assert find_images(tmp_path / "b.jpg") == [tmp_path / "b.jpg"]
    with pytest.raises(FileNotFoundError):
        find_images(tmp_path / "missing")


# ------------------------------------------------------------------------------ shipped data
def test_synthetic_demo_data_set_is_valid(synthetic_dir):
    report = validate_dataset(synthetic_dir)
    assert report.ok, str(report)
    df = load_index(synthetic_dir)
    assert df.attrs["synthetic"] is True and len(df) == 400 and df["mask_path"].notna().all()


def test_real_ham10000_subset(real_data_dir):
    """The 8,512-image real subset (conftest skips with the reason when it is absent)."""
    df = load_index(real_data_dir, decode=False)
    assert len(df) == 8512 and df["lesion_id"].nunique() == 6352
    assert df["dx"].str.lower().value_counts().to_dict() == {
        "nv": 5694, "mel": 959, "bkl": 925, "bcc": 440, "akiec": 279, "vasc": 110, "df": 105,
    }
    assert df.attrs["has_lesion_ids"] and df.attrs["label_file"] == "HAM10000_metadata.csv"
    assert df["mask_path"].notna().all() and df.attrs["problems"] == []
    # every real image and mask passes the pixel checks that read them as training does
    report = validate_dataset(real_data_dir)
    assert report.ok and report.counts["usable"] == 8512, report.format_problems()
