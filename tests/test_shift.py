"""The shifted copy of a split (python -m skin_utils.prepare shift): layout, masks, record, determinism."""

import json
import math

import numpy as np
import pytest

from skin_utils import prepare as shift
from skin_utils.data import load_or_make_split
from skin_utils.layout import image_hw, load_index, read_image
from skin_utils.transforms import CAMERA_AUGMENT


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny synthetic data folder and its split file."""
    from skin_utils.demo import make_synthetic_dataset

    root = tmp_path_factory.mktemp("shift")
    folder = make_synthetic_dataset(root / "demo", n_images=40, image_size=(48, 64), seed=0)
    split = load_or_make_split(load_index(folder), root / "split.csv")
    return folder, root / "split.csv", split


def test_the_cli_writes_a_folder_that_loads_like_the_source(source, tmp_path, capsys):
    folder, split_path, split = source
    out = tmp_path / "shifted"
    assert shift.main(["shift", str(folder), "--split-path", str(split_path), "--split", "test",
                       "--out", str(out), "--seed", "1"]) == 0
    assert "-p data_dir" in capsys.readouterr().out
    test_ids = sorted(split.loc[split["split"] == "test", "image_id"])
    original = load_index(folder).set_index("image_id")
    shifted = load_index(out)
    assert sorted(shifted["image_id"]) == test_ids
    assert shifted.attrs["synthetic"] is True
    record = json.loads((out / "shift.json").read_text())
    assert record["n_images"] == len(test_ids) and sorted(record["images"]) == test_ids
    assert record["seed"] == 1 and record["split"] == "test" and record["kinds"] == list(shift.SHIFT_KINDS)
    for row in shifted.itertuples():
        src = original.loc[row.image_id]
        assert (row.label, row.lesion_id) == (src["label"], src["lesion_id"])
        with open(row.mask_path, "rb") as a, open(src["mask_path"], "rb") as b:
            assert a.read() == b.read()                                 # masks copied byte for byte
        assert image_hw(row.image_path) == image_hw(src["image_path"])  # same size: the masks still fit
        shifts = record["images"][row.image_id]["shifts"]
        assert 1 <= len(shifts) <= 3 and len({s["kind"] for s in shifts}) == len(shifts)
        assert [s["kind"] for s in shifts] == [k for k in shift.SHIFT_KINDS if k in {s["kind"] for s in shifts}]
        assert shifts == shift.draw_shifts(row.image_id, seed=1)
        diff = np.abs(read_image(row.image_path).astype(int) - read_image(src["image_path"]).astype(int)).mean()
        assert diff > 1, (row.image_id, shifts)


def test_the_copy_keeps_the_labels_of_ids_written_as_file_names(source, tmp_path):
    # load_index reads a metadata id "ISIC_1.jpg" (any header case) as image ISIC_1: so must the shifted copy
    import pandas as pd
    import shutil
    folder = tmp_path / "named"
    shutil.copytree(source[0], folder)
    meta = pd.read_csv(folder / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    meta.assign(image_id=meta["image_id"] + ".jpg").rename(columns={"image_id": "Image_ID"}).to_csv(
        folder / "HAM10000_metadata.csv", index=False)
    out = shift.build_shifted_split(folder, tmp_path / "shifted", split="all", progress=False)
    original, shifted = load_index(folder), load_index(out)
    assert shifted["label"].tolist() == original["label"].tolist()
    assert shifted["lesion_id"].tolist() == original["lesion_id"].tolist()


def test_the_copy_is_deterministic_and_each_image_is_seeded_by_its_id(source, tmp_path):
    folder, split_path, _ = source
    a = shift.build_shifted_split(folder, tmp_path / "a", split_path=split_path, split="val", progress=False)
    b = shift.build_shifted_split(folder, tmp_path / "b", split_path=split_path, split="val", progress=False)
    assert json.loads((a / "shift.json").read_text())["images"] == json.loads((b / "shift.json").read_text())["images"]
    for image in sorted((a / "images").iterdir()):
        assert image.read_bytes() == (b / "images" / image.name).read_bytes()
    # an image's shifts depend on the seed and its id, not on the other images of the split
    every = shift.build_shifted_split(folder, tmp_path / "all", split="all", kinds="cast,jpeg", max_per_image=1,
                                      progress=False)
    record = json.loads((every / "shift.json").read_text())
    assert record["n_images"] == 40 and record["split_path"] is None
    assert all(len(r["shifts"]) == 1 and r["shifts"][0]["kind"] in ("cast", "jpeg") for r in record["images"].values())
    assert sum(shift.draw_shifts(f"IMG_{i}", seed=0) != shift.draw_shifts(f"IMG_{i}", seed=1) for i in range(10)) >= 8


def test_shifts_are_drawn_outside_the_training_augmentation():
    r, t = shift.SHIFT_RANGES, CAMERA_AUGMENT
    # the largest cast (norm of the centred log gains) the "camera" augmentation can draw
    corners = np.log(np.array(np.meshgrid(*[t["cast"]["gain"]] * 3)).reshape(3, -1).T)
    assert r["cast"]["strength"][0] > np.linalg.norm(corners - corners.mean(axis=1, keepdims=True), axis=1).max() > 0.2
    assert all(hi < t["gamma"]["gamma"][0] or lo > t["gamma"]["gamma"][1] for lo, hi in r["gamma"]["gamma"])
    assert r["resolution"]["scale"][1] < t["resolution"]["scale"][0]
    assert r["blur"]["sigma"][0] > t["blur"]["sigma"][1]
    assert r["vignette"]["strength"][0] > t["vignette"]["strength"][1]
    assert "jpeg" not in t and "noise" not in t and "hue" not in t
    assert all(hi < 1 - t["jitter"]["strength"] or lo > 1 + t["jitter"]["strength"] for lo, hi in r["hue"]["saturation"])
    for i in range(200):  # and the drawn values respect the ranges
        for s in shift.draw_shifts(f"IMG_{i}", seed=0, max_per_image=7):
            if s["kind"] == "cast":
                log = np.log(s["gains"])
                assert math.isclose(np.linalg.norm(log - log.mean()), s["strength"], abs_tol=1e-4)
                assert r["cast"]["strength"][0] <= s["strength"] <= r["cast"]["strength"][1]
            elif s["kind"] == "gamma":
                assert any(lo <= s["gamma"] <= hi for lo, hi in r["gamma"]["gamma"])
            elif s["kind"] == "hue":
                assert r["hue"]["degrees"][0] <= abs(s["degrees"]) <= r["hue"]["degrees"][1]
            elif s["kind"] == "jpeg":
                assert r["jpeg"]["quality"][0] <= s["quality"] <= r["jpeg"]["quality"][1]


def test_apply_shifts_does_what_each_kind_says():
    rng = np.random.default_rng(0)
    image = (rng.random((30, 40, 3)) * 120 + 60).astype(np.uint8)
    same, quality = shift.apply_shifts(image, [])
    assert np.array_equal(same, image) and quality == shift.DEFAULT_JPEG_QUALITY
    cast, _ = shift.apply_shifts(image, [{"kind": "cast", "gains": [1.3, 1.0, 0.75]}])
    assert cast[..., 0].mean() > image[..., 0].mean() + 20 and cast[..., 2].mean() < image[..., 2].mean() - 15
    grey = np.repeat(image[..., :1], 3, axis=2)
    turned, _ = shift.apply_shifts(grey, [{"kind": "hue", "degrees": 20.0, "saturation": 1.5}])
    assert np.abs(turned.astype(int) - grey).max() <= 1                  # greys stay grey
    turned, _ = shift.apply_shifts(image, [{"kind": "hue", "degrees": 20.0, "saturation": 1.0}])
    assert np.abs(turned.astype(int) - image).mean() > 3
    assert np.abs(turned.mean(axis=2) - image.mean(axis=2)).max() < 1.5  # a turn keeps each pixel's mean
    blurred, _ = shift.apply_shifts(image, [{"kind": "blur", "sigma": 0.05}])
    assert blurred.std() < image.std() * 0.7
    _, quality = shift.apply_shifts(image, [{"kind": "jpeg", "quality": 17}])
    assert quality == 17
    with pytest.raises(ValueError, match="Unknown shift kind 'fog'"):
        shift.apply_shifts(image, [{"kind": "fog"}])


def test_refusals_say_what_to_do(source, tmp_path):
    folder, split_path, _ = source
    with pytest.raises(ValueError, match="unknown: \\['fog'\\]"):
        shift.build_shifted_split(folder, tmp_path / "x", split_path=split_path, kinds="cast,fog")
    with pytest.raises(ValueError, match="needs --split-path"):
        shift.build_shifted_split(folder, tmp_path / "x", split="test")
    with pytest.raises(ValueError, match="outside the data folder"):
        shift.build_shifted_split(folder, folder / "shifted", split_path=split_path)
    other = tmp_path / "other.csv"
    other.write_text("image_id,lesion_id,dx,label,split\nNOT_THERE,L1,nv,1,test\n")
    with pytest.raises(ValueError, match="not in the data folder"):
        shift.build_shifted_split(folder, tmp_path / "x", split_path=other)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        shift.build_shifted_split(folder, busy, split_path=split_path, progress=False)
    with pytest.raises(FileExistsError, match="not overwritten"):
        shift.build_shifted_split(folder, busy, split_path=split_path, overwrite=True, progress=False)
    assert (busy / "notes.txt").read_text() == "mine"
    out = shift.build_shifted_split(folder, tmp_path / "again", split_path=split_path, progress=False)
    shift.build_shifted_split(folder, out, split_path=split_path, kinds="blur", overwrite=True, progress=False)
    assert json.loads((out / "shift.json").read_text())["kinds"] == ["blur"]
    assert not list(tmp_path.glob(".*partial*"))                      # no half-written folder left
    assert shift.main(["shift", str(folder), "--out", str(tmp_path / "y"), "--split", "test"]) == 2
