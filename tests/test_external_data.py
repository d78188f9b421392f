"""Data sets that are not in the one layout (issue 9), converted by skin_utils.prepare.convert_folder
(load_data does it by itself, once): masks only, labels only, neither, other label files, column
names and diagnosis names (label_map, synonyms), masks named _lesion/_mask in bmp/jpg of other
sizes, the official part folders, one-hot ground truth (ISIC 2017, 2018 and 2019), and large images cached
without holding them at full size."""

from __future__ import annotations

import json
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skin_utils import prepare
from skin_utils.data import build_cache, lesion_area_fractions, load_data, resize_pair
from skin_utils.labels import CLASS_NAMES, SYNONYMS, map_labels, normalise_name, parse_label_map
from skin_utils.layout import (DataLayoutError, DataQualityWarning, DataValidationError, LesionLeakageWarning,
                               clean_image_id, load_index, read_image, read_mask, validate_dataset)
from skin_utils.prepare import convert_folder

W, H = 48, 36


# ------------------------------------------------------------------------------ builders
def _img(path: Path, size=(W, H), seed=0, fmt=None):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, fmt)
    return path


def _disk(size=(W, H)) -> np.ndarray:
    """A 0/255 disk in the middle, radius a quarter of the height."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    return np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (h / 4) ** 2, 255, 0).astype(np.uint8)


def _mask(path: Path, size=(W, H), mode="L", **save):
    path.parent.mkdir(parents=True, exist_ok=True)
    m = Image.fromarray(_disk(size))
    (m.convert(mode) if mode != "L" else m).save(path, **save)
    return path


def _images(root: Path, n: int, prefix="IMG", ext=".jpg", folder="images") -> list[str]:
    ids = [f"{prefix}_{i:03d}" for i in range(n)]
    for k, i in enumerate(ids):
        _img(root / folder / f"{i}{ext}", seed=k)
    return ids


def _quiet_load(root, partial=False, **kw):
    """The index of a folder as load_data reads it (converted once when it is not in the layout)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LesionLeakageWarning)
        return load_data(root, 32, need_split=False, partial=partial, cache=False, progress=False, **kw).index


def _cache(folder: Path) -> Path:
    """A cache folder beside a data folder (never inside it: the converter reads the whole folder)."""
    return folder.parent / f"{folder.name}_cache"


def _record(index) -> dict:
    """What the conversion of an index's folder recorded."""
    return json.loads((Path(index.attrs["converted"]) / "conversion.json").read_text())


# ------------------------------------------------------------------------------ label names
def test_synonyms_and_normalisation():
    assert normalise_name("  Common_Nevus ") == normalise_name("COMMON-NEVUS") == "common nevus"
    assert normalise_name("Melanoma (in situ)") == "melanoma in situ"
    names = ["melanoma", "Common Nevus", "atypical_nevus", "naevus", "nevi", "BCC", "basal cell carcinoma",
             "AK", "akiec", "Bowen's disease", "intraepithelial carcinoma", "seborrheic keratosis",
             "solar lentigo", "lichen planus-like keratosis", "bkl", "dermatofibroma", "df", "vascular lesion",
             "angioma", "hemangioma", "vasc", "SCC", "UNK", "", None]
    mapped, unknown = map_labels(names)
    assert mapped == ["MEL", "NV", "NV", "NV", "NV", "BCC", "BCC", "AKIEC", "AKIEC", "AKIEC", "AKIEC", "BKL",
                      "BKL", "BKL", "BKL", "DF", "DF", "VASC", "VASC", "VASC", "VASC", None, None, None, None]
    assert unknown == ["SCC", "UNK"]  # SCC deliberately unmapped; empty names are "no diagnosis", not unknown
    assert set(SYNONYMS.values()) == set(CLASS_NAMES)


def test_label_map_as_dict_or_json_and_its_errors():
    as_dict = parse_label_map({"Lesion A": "mel", "lesion_b": "NV", "junk": None})
    assert as_dict == parse_label_map('{"lesion-a": "MEL", "LESION B": "nv", "junk": null}')
    assert as_dict == {"lesion a": "MEL", "lesion b": "NV", "junk": None}
    assert parse_label_map(None) == parse_label_map("") == parse_label_map("  ") == {}
    mapped, unknown = map_labels(["lesion A", "Lesion_B", "junk", "melanoma", "SCC"], '{"SCC": "AKIEC", "lesion a": "BCC"}')
    assert mapped == ["BCC", None, None, "MEL", "AKIEC"] and unknown == ["Lesion_B", "junk"]
    with pytest.raises(ValueError, match="not one of our classes"):
        parse_label_map({"melanoma": "melanoma"})
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_label_map("{melanoma: MEL}")
    with pytest.raises(ValueError, match="must be a dict"):
        parse_label_map('["MEL"]')


def test_clean_image_id_drops_folders_and_image_extensions():
    assert clean_image_id("NEL/Nel026.jpg") == "Nel026"
    assert clean_image_id("PAT_1516_1765_530.PNG") == "PAT_1516_1765_530"
    assert clean_image_id("C:\\sets\\IMD002.bmp") == "IMD002"
    assert clean_image_id("ISIC_0024306") == "ISIC_0024306"
    assert clean_image_id("scan.001") == "scan.001"  # not an image extension: kept


# ------------------------------------------------------------------------------ folder shapes
def test_masks_only(tmp_path):
    ids = _images(tmp_path, 5)
    for i in ids:
        _mask(tmp_path / "masks" / f"{i}_segmentation.png")
    df = load_index(tmp_path)
    assert df["image_id"].tolist() == ids
    assert (df["label"] == -1).all() and df["dx"].isna().all() and not df["has_label"].any()
    assert df["has_mask"].all() and df["mask_path"].notna().all()
    a = df.attrs
    assert a["has_labels"] is False and a["has_masks"] is True and a["label_file"] is None
    assert (df["lesion_id"] == df["image_id"]).all()
    assert "masks only" in str(validate_dataset(tmp_path))
    data = load_data(tmp_path, 32, need_split=False, cache_dir=_cache(tmp_path), progress=False)
    assert not data.has_labels and data.has_masks and len(data.rows["all"]) == 5
    frac = data.cache.masks.mean(axis=(1, 2))
    assert np.allclose(frac, np.pi * (H / 4) ** 2 / (W * H), atol=0.02)  # the disk survives caching


def test_labels_only_with_other_column_names_and_extensions_in_ids(tmp_path):
    ids = _images(tmp_path, 6, ext=".png", folder=".")  # images directly in the data folder
    pd.DataFrame({
        "isic_id": [i + ".png" for i in ids],
        "diagnosis": ["melanoma", "nevus", "Basal cell carcinoma", "actinic keratosis", "seborrheic keratosis",
                      "vascular lesion"],
    }).to_csv(tmp_path / "my_labels.csv", index=False)
    df = _quiet_load(tmp_path)
    assert df["image_id"].tolist() == ids
    assert df["dx"].tolist() == ["MEL", "NV", "BCC", "AKIEC", "BKL", "VASC"]
    assert df["label"].tolist() == [0, 1, 2, 3, 4, 6]
    assert df["mask_path"].isna().all() and not df["has_mask"].any() and df["has_label"].all()
    record = _record(df)
    assert (df.attrs["label_file"], record["id_column"], record["label_column"]) == ("my_labels.csv", "isic_id", "diagnosis")
    assert df.attrs["label_mapping"]["melanoma"] == "MEL" and df.attrs["has_masks"] is False
    assert df.attrs["data_dir"] == str(tmp_path) and record["source"] == str(tmp_path)
    data = load_data(tmp_path, 24, need_split=False, cache_dir=_cache(tmp_path), progress=False)
    assert data.has_labels and not data.has_masks
    assert data.cache.masks.shape == (6, 24, 24) and not data.cache.masks.any()  # no mask: all zeros
    assert data.cache.images.reshape(6, -1).std(axis=1).min() > 10  # the images themselves are there
    areas, labels = lesion_area_fractions(df)  # 01_eda's lesion sizes: none here, not a crash
    assert areas.shape == labels.shape == (0,)


def test_neither_labels_nor_masks_points_to_inference(tmp_path):
    _images(tmp_path, 3)
    pd.DataFrame({"case": ["a"], "notes": ["b"]}).to_csv(tmp_path / "notes.csv", index=False)
    with pytest.raises(DataLayoutError) as ei:
        convert_folder(tmp_path, tmp_path.parent / "converted")
    msg = str(ei.value)
    assert "nothing to score these 3 images against" in msg and "notebooks/04_inference" in msg
    assert f"papermill notebooks/04_inference.ipynb reports/inference.ipynb -p input_dir {tmp_path}" in msg
    assert "notes.csv has no column image_id, dx" in msg and "id_column=" in msg
    with pytest.raises(DataLayoutError, match="04_inference"):
        load_data(tmp_path, 32, need_split=False, cache=False, progress=False)


def test_explicit_columns(tmp_path):
    ids = _images(tmp_path, 3)
    pd.DataFrame({"picture": ids, "finding": ["MEL", "nv", "df"]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataLayoutError, match="04_inference"):  # not detected: neither
        _quiet_load(tmp_path)
    df = _quiet_load(tmp_path, id_column="Picture", label_column="FINDING")
    assert df["dx"].tolist() == ["MEL", "NV", "DF"]
    with pytest.raises(DataLayoutError) as ei:  # a wrong name is a bad labels file, not "no labels"
        _quiet_load(tmp_path, id_column="picture", label_column="verdict")
    assert "[bad_label_file]" in str(ei.value) and "has no column verdict" in str(ei.value)


def test_mixed_masks_and_labels_need_partial(tmp_path):
    ids = _images(tmp_path, 6)
    for i in ids[:4]:
        _mask(tmp_path / "masks" / f"{i}_mask.png")
    pd.DataFrame({"image_id": ids[1:], "dx": ["mel", "nv", "bcc", "nv", "mel"]}).to_csv(
        tmp_path / "labels.csv", index=False)
    # ids[0]: mask, no labels row; ids[4]: labels row, no mask; ids[5]: labels row, no mask
    with pytest.raises(DataValidationError) as ei, pytest.warns(DataQualityWarning, match="1 of 6 images have no row"):
        _quiet_load(tmp_path)
    assert "[missing_mask] 2 problems" in str(ei.value) and "[missing_label] 1 problem" in str(ei.value)
    with pytest.warns(DataQualityWarning):  # said each time the converted copy is read
        df = _quiet_load(tmp_path, partial=True)
    assert df["image_id"].tolist() == ids
    assert df["has_mask"].tolist() == [True, True, True, True, False, False]
    assert df["has_label"].tolist() == [False, True, True, True, True, True]
    assert df["label"].tolist() == [-1, 0, 1, 2, 1, 0]
    assert df.attrs["problems"] == [] and df.attrs["partial"] is True
    # load_data scores whole folders partially by default; a split (training) needs every image complete
    with pytest.warns(DataQualityWarning):
        data = load_data(tmp_path, 16, need_split=False, cache=False, progress=False)
        assert len(data.index) == 6 and data.has_labels and data.has_masks
        with pytest.raises(DataValidationError, match="missing_mask"):
            load_data(tmp_path, 16, split_path=tmp_path.parent / "split.csv", cache=False, progress=False)


def test_image_with_neither_diagnosis_nor_mask_is_left_out_when_partial(tmp_path):
    ids = _images(tmp_path, 4)
    for i in ids[:3]:
        _mask(tmp_path / "masks" / f"{i}_segmentation.png")
    pd.DataFrame({"image_id": ids[:2], "dx": ["mel", "nv"]}).to_csv(tmp_path / "labels.csv", index=False)
    with pytest.warns(DataQualityWarning, match="2 of 4 images have no row"):
        df = _quiet_load(tmp_path, partial=True)
    assert df["image_id"].tolist() == ids[:3] and df["label"].tolist() == [0, 1, -1]
    assert "1 images have neither a diagnosis nor a mask" in str(validate_dataset(df.attrs["converted"], partial=True))


# ------------------------------------------------------------------------------ diagnosis names
def _named_set(root: Path, names: list[str]) -> list[str]:
    ids = _images(root, len(names))
    pd.DataFrame({"image_id": ids, "dx": names}).to_csv(root / "labels.csv", index=False)
    return ids


def test_label_map_as_dict_and_as_json_text(tmp_path):
    _named_set(tmp_path, ["Lesion A", "lesion_b", "lesion-b", "melanoma", "Common Nevus"])
    with pytest.raises(DataValidationError):
        _quiet_load(tmp_path)
    by_dict = _quiet_load(tmp_path, label_map={"lesion a": "BCC", "Lesion B": "df"})
    by_json = _quiet_load(tmp_path, label_map='{"LESION_A": "BCC", "lesion b": "DF"}')
    assert by_dict["dx"].tolist() == by_json["dx"].tolist() == ["BCC", "DF", "DF", "MEL", "NV"]
    assert by_dict.attrs["label_mapping"] == {"Common Nevus": "NV", "Lesion A": "BCC", "lesion-b": "DF",
                                             "lesion_b": "DF", "melanoma": "MEL"}
    assert by_dict.attrs["fingerprint"] == by_json.attrs["fingerprint"]


def test_synonyms_need_no_map(tmp_path):
    _named_set(tmp_path, ["common nevus", "atypical nevus", "melanoma", "naevus", "Seborrheic Keratosis", "bowen"])
    df = _quiet_load(tmp_path)
    assert df["dx"].tolist() == ["NV", "NV", "MEL", "NV", "BKL", "AKIEC"]
    assert df["label"].value_counts().to_dict() == {1: 3, 0: 1, 4: 1, 3: 1}


def test_unknown_names_raise_with_a_map_to_start_from_or_are_skipped_with_a_count(tmp_path):
    ids = _named_set(tmp_path, ["melanoma", "SCC", "nevus", "SCC", "freckle", "melanomma", "SCC"])
    with pytest.raises(DataValidationError) as ei:
        _quiet_load(tmp_path)
    msg = str(ei.value)
    assert "'SCC': 3 images" in msg and "'freckle': 1 image\n" in msg and "'melanomma': 1 image" in msg
    start = next(ln.strip() for ln in msg.splitlines() if ln.strip().startswith("{"))
    assert json.loads(start) == {"SCC": "?", "freckle": "?", "melanomma": "MEL"}  # a typo gets its class
    assert "[bad_label] 5 problems" in msg
    with pytest.warns(DataQualityWarning, match=r"Skipped 5 image\(s\).*5 of them because their diagnosis maps "
                                                r"to none of our classes \(SCC 3, freckle 1, melanomma 1\)"):
        df = _quiet_load(tmp_path, on_bad_data="skip")
    assert df["image_id"].tolist() == [ids[0], ids[2]] and df["dx"].tolist() == ["MEL", "NV"]
    assert df.attrs["unknown_labels"] == {"SCC": 3, "freckle": 1, "melanomma": 1}
    # the suggested map, filled in, is accepted as it is; null leaves those images out quietly
    filled = {"SCC": None, "freckle": "NV", "melanomma": "MEL"}
    df = _quiet_load(tmp_path, label_map=json.dumps(filled))
    assert df["image_id"].tolist() == [ids[i] for i in (0, 2, 4, 5)]
    assert df["dx"].tolist() == ["MEL", "NV", "NV", "MEL"] and df.attrs["dropped_labels"] == {"SCC": 3}
    # SCC mapped on purpose (an approximation the user takes responsibility for)
    assert (_quiet_load(tmp_path, label_map={"SCC": "AKIEC", "freckle": "NV", "melanomma": "MEL"})["dx"]
            == "AKIEC").sum() == 3


def test_unknown_names_of_rows_without_an_image_do_not_count(tmp_path):
    ids = _images(tmp_path, 2)
    pd.DataFrame({"image_id": ids + ["ELSEWHERE"], "dx": ["mel", "nv", "SCC"]}).to_csv(
        tmp_path / "labels.csv", index=False)
    assert _quiet_load(tmp_path)["dx"].tolist() == ["MEL", "NV"]


# ------------------------------------------------------------------------------ one-hot ground truth
def test_isic2019_one_hot_with_extra_columns(tmp_path):
    ids = _images(tmp_path, 6, prefix="ISIC")
    cols = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
    truth = ["MEL", "NV", "AK", "SCC", "VASC", "BKL"]
    rows = [[1.0 if c == t else 0.0 for c in cols] for t in truth]
    pd.DataFrame(rows, columns=cols).assign(image=ids)[["image"] + cols].to_csv(
        tmp_path / "ISIC_2019_Training_GroundTruth.csv", index=False, float_format="%.1f")
    pd.DataFrame({"image": ids, "age_approx": [55.0] * 6, "anatom_site_general": "back",
                  "lesion_id": [f"L{i}" for i in range(6)], "sex": "male"}).to_csv(
        tmp_path / "ISIC_2019_Metadata.csv", index=False)  # sorts first; lesion ids but no diagnosis
    with pytest.raises(DataValidationError) as ei:
        _quiet_load(tmp_path)
    assert "'SCC': 1 image" in str(ei.value)
    with pytest.warns(DataQualityWarning, match="SCC 1"):
        df = _quiet_load(tmp_path, on_bad_data="skip")
    assert df["dx"].tolist() == ["MEL", "NV", "AKIEC", "VASC", "BKL"]  # AK -> AKIEC by synonym
    a, record = df.attrs, _record(df)
    assert a["label_file"] == "ISIC_2019_Training_GroundTruth.csv" and a["has_lesion_ids"] is False
    assert record["label_column"] == "mel,nv,bcc,ak,bkl,df,vasc,scc,unk"
    assert any(n.startswith("ISIC_2019_Metadata.csv is not read as labels: it has no column dx") for n in record["notes"])


def test_isic2017_ground_truth_reads_a_row_of_zeros_as_a_nevus(tmp_path):
    # ISIC 2017 task 3 writes melanoma and seborrheic keratosis only: most of the set, the nevi, are 0,0
    ids = _images(tmp_path, 4, prefix="ISIC")
    (tmp_path / "ISIC-2017_Training_Part3_GroundTruth.csv").write_text(
        "image_id,melanoma,seborrheic_keratosis\n" + "".join(
            f"{i},{m},{k}\n" for i, (m, k) in zip(ids, ["1.0,0.0".split(","), ["0.0", "1.0"], ["0.0", "0.0"], ["1", "1"]])))
    msg = str(pytest.raises(DataValidationError, _quiet_load, tmp_path).value)
    assert f"{ids[3]}: row is not exactly one-hot (MELANOMA=1, SEBORRHEIC_KERATOSIS=1)" in msg
    with pytest.warns(DataQualityWarning):
        assert _quiet_load(tmp_path, on_bad_data="skip")["dx"].tolist() == ["MEL", "BKL", "NV"]


def test_one_hot_row_that_is_not_one_hot(tmp_path):
    ids = _images(tmp_path, 2, prefix="ISIC")
    (tmp_path / "truth.csv").write_text(
        "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK\n"
        f"{ids[0]},0,0,0,0,0,0,0,0,0\n{ids[1]},0,1,0,0,0,0,0,0,0\n")
    msg = str(pytest.raises(DataValidationError, _quiet_load, tmp_path).value)
    assert f"{ids[0]}: row is not exactly one-hot (MEL=0, NV=0" in msg


# ------------------------------------------------------------------------------ masks
def test_bmp_images_and_bmp_masks_named_lesion(tmp_path):
    """PH2-like: .bmp images, 1-bit .bmp masks named <id>_lesion, beside the images."""
    ids = _images(tmp_path, 4, prefix="IMD", ext=".bmp")
    for i in ids:
        _mask(tmp_path / "images" / f"{i}_lesion.bmp", mode="1")
    pd.DataFrame({"Image Name": ids, "Clinical Diagnosis": ["Common Nevus", "Atypical Nevus", "Melanoma",
                                                            "Common Nevus"]}).to_csv(tmp_path / "ph2.csv", index=False)
    df = _quiet_load(tmp_path, id_column="image name", label_column="clinical diagnosis", partial=True)
    assert df["dx"].tolist() == ["NV", "NV", "MEL", "NV"] and df["has_mask"].all()
    assert all(p.endswith("_segmentation.png") for p in df["mask_path"])  # written as binary PNG
    cache = build_cache(df, (18, 24), cache_dir=_cache(tmp_path), progress=False)
    expected = np.pi * (H / 4) ** 2 / (W * H)
    assert np.allclose(cache.masks.mean(axis=(1, 2)), expected, atol=0.03)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_masks_of_another_size_are_binarised_robustly(tmp_path, mode):
    ids = _images(tmp_path, 3)
    for i in ids:  # twice the image's size, same aspect, lossy
        _mask(tmp_path / "masks" / f"{i}_segmentation.jpg", size=(2 * W, 2 * H), mode=mode, quality=70)
    df = _quiet_load(tmp_path)  # not in the layout (the masks are JPEGs): converted
    assert validate_dataset(df.attrs["converted"]).ok
    cache = build_cache(df, (H, W), cache_dir=_cache(tmp_path), progress=False)
    truth = _disk((W, H)) > 0
    for m in cache.masks:
        iou = (m.astype(bool) & truth).sum() / (m.astype(bool) | truth).sum()
        assert iou > 0.9


# ------------------------------------------------------------------------------ a generic CSV
def test_generic_csv_pad_ufes_style(tmp_path):
    ids = [f"PAT_{k}_{k + 10}_{k + 500}" for k in range(5)]
    for k, i in enumerate(ids):
        _img(tmp_path / "images" / f"{i}.png", seed=k)
    pd.DataFrame({
        "patient_id": [f"PAT_{k}" for k in range(5)], "lesion_id": [7, 7, 8, 9, 10], "age": [50, 50, 61, "", 30],
        "gender": ["FEMALE", "FEMALE", "MALE", "", "MALE"], "region": ["FACE", "FACE", "ARM", "NECK", "BACK"],
        "diagnostic": ["ACK", "NEV", "SEK", "BCC", "MEL"], "img_id": [i + ".png" for i in ids],
    }).to_csv(tmp_path / "metadata.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LesionLeakageWarning)  # lesion ids found: no leakage warning
        df = load_data(tmp_path, 32, split_path=tmp_path.parent / "split.csv", cache=False, progress=False).index
    assert df["dx"].tolist() == ["AKIEC", "NV", "BKL", "BCC", "MEL"]
    assert df["lesion_id"].tolist() == ["7", "7", "8", "9", "10"] and df.attrs["has_lesion_ids"] is True
    assert df["age"].tolist()[:3] == [50.0, 50.0, 61.0] and np.isnan(df["age"].iat[3])
    assert df["sex"].tolist() == ["FEMALE", "FEMALE", "MALE", "unknown", "MALE"]
    assert df["localization"].tolist()[0] == "FACE"
    assert (_record(df)["id_column"], _record(df)["label_column"]) == ("img_id", "diagnostic")


def test_a_table_whose_ids_match_no_image_is_not_the_labels(tmp_path):
    ids = _images(tmp_path, 3)
    for i in ids:
        _mask(tmp_path / "masks" / f"{i}_segmentation.png")
    pd.DataFrame({"image_id": ["X1", "X2"], "dx": ["mel", "nv"]}).to_csv(tmp_path / "a_other.csv", index=False)
    pd.DataFrame({"image_id": ids, "dx": ["mel", "nv", "df"]}).to_csv(tmp_path / "b_mine.csv", index=False)
    df = _quiet_load(tmp_path)
    assert df.attrs["label_file"] == "b_mine.csv" and df["dx"].tolist() == ["MEL", "NV", "DF"]


# ------------------------------------------------------------------------------ large images
def _large_set(root: Path, w=4000, h=3000) -> tuple[list[str], int]:
    yy, xx = np.mgrid[0:h, 0:w]
    disk = (xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (h / 4) ** 2
    base = np.stack([xx * 255 // w, yy * 255 // h, np.full((h, w), 128)], -1).astype(np.uint8)
    base[disk] //= 3
    del yy, xx
    ids = [f"BIG_{k}" for k in range(4)]
    for k, i in enumerate(ids):
        (root / "images").mkdir(parents=True, exist_ok=True)
        if k < 3:
            Image.fromarray(base).save(root / "images" / f"{i}.jpg", quality=90)
        else:  # no DCT scaling for a PNG: reduced right after decoding
            Image.fromarray(base).resize((w * 2 // 3, h * 2 // 3)).save(root / "images" / f"{i}.png",
                                                                        compress_level=1)
        (root / "masks").mkdir(exist_ok=True)
        Image.fromarray((disk * 255).astype(np.uint8)).resize((w // 4, h // 4), Image.NEAREST).save(
            root / "masks" / f"{i}_mask.png")
    pd.DataFrame({"image": ids, "diagnosis": ["melanoma", "nevus", "bcc", "df"]}).to_csv(
        root / "labels.csv", index=False)
    return ids, w * h * 3


def test_large_images_are_cached_without_holding_them_at_full_size(tmp_path):
    ids, full_bytes = _large_set(tmp_path)  # 4000 x 3000 JPEGs (36 MB each as RGB), a 2666 x 2000 PNG
    df = _quiet_load(tmp_path)
    assert df["dx"].tolist() == ["MEL", "NV", "BCC", "DF"] and df["has_mask"].all()
    # the measurement sees image arrays: reading one at full size traces a full-size array
    tracemalloc.start()
    full = read_image(df["image_path"].iat[0])
    full_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert full.shape == (3000, 4000, 3) and full_peak >= full_bytes
    del full
    tracemalloc.start()
    cache = build_cache(df, 64, cache_dir=_cache(tmp_path), num_threads=2, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < full_bytes / 4, f"{peak / 1e6:.1f} MB traced while caching 4 large images"
    assert cache.images.shape == (4, 64, 64, 3)
    # the reduced reads give what a full-size read would (within JPEG rounding)
    for k in (0, 3):
        image, mask = resize_pair(read_image(df["image_path"].iat[k]), read_mask(df["mask_path"].iat[k]), 64)
        assert np.abs(image.astype(int) - cache.images[k]).mean() < 1.0
        assert (mask != cache.masks[k]).mean() < 0.01
    assert np.allclose(cache.masks.mean(axis=(1, 2)), np.pi * 750 ** 2 / (4000 * 3000), atol=0.01)


# ------------------------------------------------------------------------------ shapes the converter reads
def test_official_folder_names_tab_metadata_and_images_beside_their_masks(tmp_path):
    ids = [f"ISIC_{i:07d}" for i in range(6)]
    for k, i in enumerate(ids):
        _img(tmp_path / ("HAM10000_images_part_1" if k < 3 else "HAM10000_images_part_2") / f"{i}.jpg", seed=k)
        _mask(tmp_path / "HAM10000_segmentations_lesion_tschandl" / f"{i}_segmentation.png")
    pd.DataFrame({"lesion_id": ["HAM_1", "HAM_1", "HAM_2", "HAM_3", "HAM_3", "HAM_4"], "image_id": ids,
                  "dx": ["nv", "nv", "mel", "bkl", "bkl", "df"]}).to_csv(tmp_path / "HAM10000_metadata.tab", sep="\t",
                                                                        index=False)
    df = _quiet_load(tmp_path)
    assert df["image_id"].tolist() == ids and df.attrs["has_lesion_ids"] and df["has_mask"].all()
    assert df["lesion_id"].nunique() == 4 and (df["dx"] == ["NV", "NV", "MEL", "BKL", "BKL", "DF"]).all()
    flat = tmp_path.parent / "flat"  # images and masks side by side in the folder itself
    for k, i in enumerate(ids[:4]):
        _img(flat / f"{i}.png", seed=k, fmt="PNG")
        _mask(flat / f"{i}_segmentation.png")
    pd.DataFrame({"image_id": ids[:4], "dx": ["nv", "mel", "nv", "bcc"]}).to_csv(flat / "HAM10000_metadata.csv",
                                                                                 index=False)
    df = _quiet_load(flat)
    assert df["image_id"].tolist() == ids[:4] and df["mask_path"].notna().all()


def test_groundtruth_only_splits_by_image_with_a_loud_warning_and_bad_one_hot_rows(tmp_path):
    ids = _images(tmp_path, 4, prefix="ISIC")
    for i in ids:
        _mask(tmp_path / "masks" / f"{i}_segmentation.png")
    rows = [[1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0], [0.0, 0.7, 0.3, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]]
    (tmp_path / "GroundTruth.csv").write_text("image," + ",".join(CLASS_NAMES) + "\n" + "".join(
        f"{i}," + ",".join(f"{v:.1f}" for v in r) + "\n" for i, r in zip(ids, rows)))
    msg = str(pytest.raises(DataValidationError, _quiet_load, tmp_path).value)
    assert "[bad_label] 2 problems" in msg and "not exactly one-hot (MEL=1, NV=1" in msg
    with pytest.warns(DataQualityWarning), pytest.warns(LesionLeakageWarning) as leak:
        data = load_data(tmp_path, 32, split_path=tmp_path.parent / "split.csv", on_bad_data="skip", cache=False,
                         progress=False)
    assert any("LEAK ACROSS" in str(w.message) for w in leak)  # said when indexed, and when split
    df = data.index
    assert df["image_id"].tolist() == [ids[0], ids[3]] and df.attrs["has_lesion_ids"] is False
    assert (df["lesion_id"] == df["image_id"]).all() and df["age"].isna().all() and (df["sex"] == "unknown").all()


def test_duplicate_images_and_masks_across_folders(tmp_path):
    ids = [f"ISIC_{i:07d}" for i in range(3)]
    for k, i in enumerate(ids):
        _img(tmp_path / "HAM10000_images_part_1" / f"{i}.jpg", seed=k)
        _mask(tmp_path / "masks" / f"{i}_segmentation.png")
    _img(tmp_path / "HAM10000_images_part_2" / f"{ids[1]}.jpg")
    _mask(tmp_path / "masks" / f"{ids[2]}_mask.png")  # two masks for one image
    pd.DataFrame({"lesion_id": ids, "image_id": ids, "dx": ["nv", "mel", "df"]}).to_csv(
        tmp_path / "HAM10000_metadata.csv", index=False)
    msg = str(pytest.raises(DataValidationError, convert_folder, tmp_path, tmp_path.parent / "out").value)
    assert "[duplicate_id] 2 problems" in msg
    assert "HAM10000_images_part_1/ISIC_0000001.jpg, HAM10000_images_part_2/ISIC_0000001.jpg" in msg
    assert f"mask for {ids[2]} appears 2 times" in msg and not (tmp_path.parent / "out").exists()


def test_a_conversion_is_made_once_reused_while_the_folder_is_unchanged_and_named_after_the_folder(tmp_path, capsys):
    folder = tmp_path / "clinic"
    ids = _images(folder, 4)
    for i in ids:
        _mask(folder / "images" / f"{i}_lesion.png")
    pd.DataFrame({"image": ids, "diagnosis": ["melanoma", "nevus", "nevus", "bcc"]}).to_csv(folder / "labels.csv",
                                                                                          index=False)
    first = load_data(folder, 24, need_split=False, cache_dir=tmp_path / "cache", progress=False)
    line = capsys.readouterr().out
    assert "not in the layout" in line and "converting it once" in line
    assert f"python -m skin_utils.prepare folder {folder} --out DST" in line
    converted = Path(first.index.attrs["converted"])
    assert converted.parent == tmp_path / "cache" / "converted" and converted.name.startswith("clinic-")
    assert first.describe()["data_dir"] == str(folder) and first.name == "folder clinic"
    assert (converted / "images" / f"{ids[0]}.jpg").is_symlink()  # linked, never re-encoded
    again = load_data(folder, 24, need_split=False, cache_dir=tmp_path / "cache", progress=False)
    assert "reading" in capsys.readouterr().out and again.index.attrs["converted"] == str(converted)
    assert again.index.attrs["fingerprint"] == first.index.attrs["fingerprint"]
    _img(folder / "images" / f"{ids[0]}.jpg", seed=99, size=(W + 4, H + 3))  # the folder changed: converted again
    third = load_data(folder, 24, need_split=False, cache_dir=tmp_path / "cache", progress=False)
    assert third.index.attrs["converted"] != str(converted)
    assert third.index.attrs["fingerprint"] != first.index.attrs["fingerprint"]


def test_the_folder_command_writes_the_layout(tmp_path, capsys):
    ids = _named_set(tmp_path / "src", ["nevo comum", "melanoma", "nevo comum"])
    out = tmp_path / "dst"
    assert prepare.main(["folder", str(tmp_path / "src"), "--out", str(out), "--label-map", '{"nevo comum": "NV"}']) == 0
    assert "Wrote 3 images" in capsys.readouterr().out
    assert prepare.layout_mismatch(out) is None
    df = load_index(out, partial=True)
    assert df["image_id"].tolist() == ids and df["dx"].tolist() == ["NV", "MEL", "NV"]
    assert prepare.main(["folder", str(tmp_path / "src"), "--out", str(out)]) == 2  # not over a folder it wrote
    assert "--overwrite" in capsys.readouterr().err


def test_convert_folder_checks_on_bad_data_and_a_file_as_out(tmp_path):
    src = tmp_path / "src"
    ids = _images(src, 2)
    pd.DataFrame({"image_id": ids, "dx": ["mel", "nv"]}).to_csv(src / "labels.csv", index=False)
    with pytest.raises(ValueError, match="on_bad_data must be one of"):
        convert_folder(src, tmp_path / "out", on_bad_data="Skip")
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="a_file is a file, not a folder"):
        convert_folder(src, tmp_path / "a_file")
    assert (tmp_path / "a_file").read_text() == "x"
    assert prepare.main(["folder", str(src), "--out", str(tmp_path / "a_file")]) == 2
