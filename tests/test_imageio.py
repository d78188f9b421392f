"""skin_utils.layout, reading files: every image mode to uint8 RGB, masks to {0, 1}, clear read errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from skin_utils.layout import (ColourMaskError, ImageReadError, binarise_mask, image_hw, mask_value_range, read_image,
                               read_mask)

W, H = 40, 30


def _two_halves() -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : W // 2] = (255, 0, 0)  # left half red
    rgb[:, W // 2:] = (0, 0, 255)  # right half blue
    return rgb


def _levels16() -> np.ndarray:
    a = np.zeros((H, W), np.uint16)
    a[:, 0:10], a[:, 10:20], a[:, 20:30] = 65535, 32896, 1000
    return a  # columns 30..39 stay 0


# ------------------------------------------------------------------------------------ images
def test_rgb_jpeg(tmp_path):
    p = tmp_path / "a.jpg"
    Image.fromarray(_two_halves()).save(p, quality=95)
    img = read_image(p)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert img[5, 5, 0] > 240 and img[5, 35, 2] > 240
    assert image_hw(p) == (H, W) == img.shape[:2]


@pytest.mark.parametrize("fmt", ["jpg", "png"])
def test_exif_orientation_is_applied(tmp_path, fmt):
    p = tmp_path / f"rot.{fmt}"
    im = Image.fromarray(_two_halves())
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(p, exif=exif.tobytes())
    img = read_image(p)
    assert img.shape == (W, H, 3)  # portrait now
    assert image_hw(p) == (W, H) == img.shape[:2]  # header-only size agrees with the pixels
    # rotating clockwise moves the left (red) half to the top
    assert img[2, H // 2, 0] > 200 and img[2, H // 2, 2] < 50
    assert img[-3, H // 2, 2] > 200 and img[-3, H // 2, 0] < 50


def test_grayscale_and_1bit_become_rgb(tmp_path):
    g = np.tile(np.arange(W, dtype=np.uint8) * 6, (H, 1))
    Image.fromarray(g).save(tmp_path / "l.png")
    img = read_image(tmp_path / "l.png")
    assert img.shape == (H, W, 3)
    assert (img[..., 0] == g).all() and (img[..., 1] == g).all() and (img[..., 2] == g).all()
    Image.fromarray(g > 100).save(tmp_path / "b.png")
    b = read_image(tmp_path / "b.png")
    assert set(np.unique(b)) <= {0, 255} and b.shape == (H, W, 3)


def test_rgba_la_and_palette_transparency_composited_on_white(tmp_path):
    rgba = np.zeros((H, W, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[:, :10, 3] = 0  # transparent -> white
    rgba[:, 10:20, 3] = 255  # opaque -> unchanged
    rgba[:, 20:, 3] = 128  # half -> halfway to white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (H, W, 3)
    assert tuple(img[0, 0]) == (255, 255, 255)
    assert tuple(img[0, 15]) == (10, 20, 30)
    assert abs(int(img[0, 30, 0]) - 133) <= 2

    la = np.zeros((H, W, 2), np.uint8)
    la[..., 0] = 50
    la[:, :10, 1] = 0
    la[:, 10:, 1] = 255
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    img = read_image(tmp_path / "la.png")
    assert tuple(img[0, 0]) == (255, 255, 255) and tuple(img[0, 20]) == (50, 50, 50)

    p = Image.new("P", (W, H), 0)
    p.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    p.paste(1, (0, 0, 20, H))
    p.info["transparency"] = 0
    p.save(tmp_path / "p.png", transparency=0)
    img = read_image(tmp_path / "p.png")
    assert tuple(img[0, 0]) == (200, 100, 50) and tuple(img[0, 30]) == (255, 255, 255)


def test_palette_without_transparency(tmp_path):
    Image.fromarray(_two_halves()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    img = read_image(tmp_path / "p.png")
    assert img.shape == (H, W, 3) and img[5, 5, 0] > 240 and img[5, 35, 2] > 240


def test_cmyk_jpeg(tmp_path):
    c = Image.new("CMYK", (W, H), (0, 0, 0, 0))  # white
    c.paste((255, 0, 0, 0), (0, 0, 20, H))  # cyan
    c.save(tmp_path / "c.jpg", quality=95)
    img = read_image(tmp_path / "c.jpg")
    assert img.shape == (H, W, 3)
    assert img[5, 5, 0] < 30 and img[5, 5, 1] > 220 and img[5, 5, 2] > 220
    assert (img[5, 35] > 220).all()


@pytest.mark.parametrize("mode,fmt", [("I;16", "png"), ("I;16B", "tif"), ("I", "tif")])
def test_16bit_scaled_by_full_range_not_clipped(tmp_path, mode, fmt):
    a = _levels16()
    if mode == "I;16B":
        im = Image.frombytes("I;16B", (W, H), a.astype(">u2").tobytes())
    elif mode == "I":
        im = Image.fromarray(a.astype(np.int32))
    else:
        im = Image.fromarray(a)
    assert im.mode == mode
    p = tmp_path / f"x.{fmt}"
    im.save(p)
    img = read_image(p)
    assert img.dtype == np.uint8 and img.shape == (H, W, 3)
    # 65535 -> 255, 32896 -> 128, 1000 -> 4 (a clipping conversion would give 255), 0 -> 0
    assert list(img[0, ::10, 0]) == [255, 128, 4, 0]


def test_float_image_scaled(tmp_path):
    f = (_levels16() / 65535.0).astype(np.float32)
    Image.fromarray(f).save(tmp_path / "f.tif")
    assert list(read_image(tmp_path / "f.tif")[0, ::10, 0]) == [255, 128, 4, 0]


def test_truncated_jpeg_raises_clear_error(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.jpg"
    Image.fromarray(rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageReadError) as ei:
        read_image(bad)
    msg = str(ei.value)
    assert "bad.jpg" in msg and "truncated" in msg and "Fix:" in msg
    assert isinstance(ei.value, ValueError)
    assert ei.value.path.endswith("bad.jpg") and ei.value.hint


@pytest.mark.parametrize("content,reason", [(b"this is not an image", "not an image"), (b"", "empty")])
def test_garbage_and_empty_files(tmp_path, content, reason):
    p = tmp_path / "x.jpg"
    p.write_bytes(content)
    for fn in (read_image, read_mask, image_hw):
        with pytest.raises(ImageReadError, match=reason):
            fn(p)


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.png")


# ------------------------------------------------------------------------------------- masks
def _mask(values: np.ndarray, path, mode=None):
    Image.fromarray(values, mode).save(path) if mode else Image.fromarray(values).save(path)
    return path


def _square() -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[10:20, 10:30] = 255
    return m


def test_mask_8bit_0_255(tmp_path):
    m = read_mask(_mask(_square(), tmp_path / "m.png"))
    assert m.dtype == np.uint8 and m.shape == (H, W)
    assert set(np.unique(m)) == {0, 1} and m.sum() == 200


def test_mask_0_1_valued_and_1bit(tmp_path):
    m01 = (_square() // 255).astype(np.uint8)
    assert read_mask(_mask(m01, tmp_path / "m01.png")).sum() == 200
    assert read_mask(_mask(m01 > 0, tmp_path / "m1.png")).sum() == 200  # mode "1"


def test_mask_antialiased_edges_binarised_at_half_range(tmp_path):
    m = _square()
    m[9, 10:30] = 100  # below half -> 0
    m[20, 10:30] = 200  # above half -> 1
    assert read_mask(_mask(m, tmp_path / "aa.png")).sum() == 220


def test_mask_16bit(tmp_path):
    m16 = _square().astype(np.uint16) * 257
    m16[0, 0] = 30000  # below half of 65535
    out = read_mask(_mask(m16, tmp_path / "m16.png"))
    assert out.sum() == 200 and out[0, 0] == 0


def test_mask_rgb_with_equal_channels(tmp_path):
    rgb = np.repeat(_square()[:, :, None], 3, axis=2)
    assert read_mask(_mask(rgb, tmp_path / "rgb.png")).sum() == 200


def test_colour_mask_rejected(tmp_path):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[10:20, 10:30] = (255, 0, 0)
    with pytest.raises(ColourMaskError, match="colour image") as ei:
        read_mask(_mask(rgb, tmp_path / "col.png"))
    assert isinstance(ei.value, ImageReadError)
    assert "col.png" in str(ei.value) and "0 = skin" in str(ei.value)


def test_mask_resized_with_nearest_to_height_width(tmp_path):
    p = _mask(_square(), tmp_path / "m.png")
    big = read_mask(p, hw=(60, 80))
    assert big.shape == (60, 80) and set(np.unique(big)) == {0, 1} and big.sum() == 800
    assert read_mask(p, hw=(H, W)).sum() == 200  # already that size: unchanged
    with pytest.raises(ValueError, match=r"hw must be \(H, W\)"):
        read_mask(p, hw=(80,))


def test_one_binarisation_rule_at_half_range():
    assert binarise_mask(np.array([0, 127, 128, 255], np.uint8), 255.0).tolist() == [0, 0, 1, 1]
    assert binarise_mask(np.array([0, 32767, 32768, 65535]), 65535.0).tolist() == [0, 0, 1, 1]
    assert binarise_mask(np.array([0.0, 0.49, 0.5, 1.0]), 1.0).tolist() == [0, 0, 1, 1]
    assert binarise_mask(np.zeros((3, 4), np.uint8), 255.0).dtype == np.uint8


@pytest.mark.parametrize("values,full_range", [((0, 255), 255.0), ((0, 1), 1.0), ((0, 2), 255.0), ((0, 0), 1.0)])
def test_mask_full_range_is_the_storage_range_unless_the_values_are_only_0_and_1(tmp_path, values, full_range):
    m = np.full((H, W), values[0], np.uint8)
    m[10:20, 10:30] = values[1]
    with Image.open(_mask(m, tmp_path / "m.png")) as img:
        img.load()
        got, rng = mask_value_range(img)
    assert rng == full_range and got.shape == (H, W)
    # read_mask is exactly the rule applied to those values: a 0/2 label map reads as empty
    assert np.array_equal(read_mask(tmp_path / "m.png"), binarise_mask(got, rng))
