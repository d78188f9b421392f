"""Reading dermoscopy images and lesion masks into plain numpy arrays: the one reading path.

Every size here is ``(height, width)`` (:func:`as_hw`), like numpy shapes.

* :func:`read_image` -> ``np.uint8 (H, W, 3)`` RGB, whatever the file's mode. EXIF orientation is
  applied. With ``shrink_to=(H, W)`` (for callers that resize anyway, e.g. the cache) an image of
  more than LARGE_IMAGE_PIXELS is decoded at a reduced scale (JPEG DCT scaling) or reduced right
  after decoding, keeping at least REDUCING_GAP times that size, so that a 6000 x 4000 photo is
  never held as a full-size array. Transparent images (RGBA, LA, PA, palette with transparency) are **composited on
  white**, so that transparent areas get a defined colour instead of whatever RGB values happen
  to sit under alpha = 0. 16-bit images are scaled to 8 bit by their full range (``v / 257``),
  never clipped; float images are scaled from [0, 1] (or [0, 255], else min-max).
* :func:`read_mask` -> ``np.uint8 (H, W)`` in {0, 1} by :func:`binarise_mask` (at or above half
  of the mask's value range is lesion; 0/1-valued masks are taken as they are), optionally
  resized with nearest neighbour to ``hw=(H, W)``.
* :func:`image_hw` -> ``(H, W)`` after EXIF rotation, from the file header only.

The steps are public so that the data-set validator (`skin_utils.data.layout`) checks files with
exactly the functions that read them for training: :func:`open_image` (header),
:func:`decode_image` (pixels + EXIF orientation; ``draft=True`` decodes JPEGs at 1/8 scale, which
still reads the whole stream), :func:`to_rgb_array` (the colour conversion rules),
:func:`mask_value_range` and :func:`binarise_mask` (the mask rules).

Every failure to read a file raises :class:`ImageReadError` (a ``ValueError``) naming the file,
what is wrong and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ColourMaskError",
    "ImageReadError",
    "as_hw",
    "binarise_mask",
    "decode_image",
    "image_hw",
    "mask_value_range",
    "open_image",
    "oriented_hw",
    "read_image",
    "read_mask",
    "to_rgb_array",
]

#: Images with more pixels than this may be read reduced (``read_image(..., shrink_to=...)``);
#: HAM10000's 600 x 450 images never are.
LARGE_IMAGE_PIXELS = 4_000_000
#: A reduced read keeps at least this many times the requested size on each side, so that the
#: antialiased resize that follows sees the same detail as from the full image.
REDUCING_GAP = 3
_REDUCIBLE_MODES = ("L", "RGB", "CMYK")  # box-averaging other modes would mix alpha, palettes or ranges

PathLike = str | os.PathLike

#: EXIF orientation values that swap width and height (transpose / rotate 90 / 270).
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112
_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}

_HINT_REPLACE = "re-download or re-export the file (it should open in any image viewer), or remove it"


def as_hw(image_size) -> tuple[int, int]:
    """Every size in this package is (height, width): ``128`` -> (128, 128); ``(h, w)`` stays."""
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    h, w = image_size
    return int(h), int(w)


class ImageReadError(ValueError):
    """An image or mask file that cannot be used; ``path``, ``reason`` and ``hint`` say why."""

    def __init__(self, path: PathLike, reason: str, hint: str = _HINT_REPLACE):
        self.path = str(path)
        self.reason = reason
        self.hint = hint
        super().__init__(f"Cannot read {self.path}: {reason}. Fix: {hint}.")


class ColourMaskError(ImageReadError):
    """A readable image given as a mask that has real colours, so it is no binary mask."""


# --------------------------------------------------------------------------------------------
# opening and decoding
# --------------------------------------------------------------------------------------------
def open_image(path: PathLike) -> Image.Image:
    """``Image.open`` (reads the header only) with :class:`ImageReadError` for a missing, empty,
    unidentifiable or oversized file. Use it as a context manager."""
    p = Path(path)
    if not p.exists():
        raise ImageReadError(p, "the file does not exist", "check the path")
    if p.is_dir():
        raise ImageReadError(p, "this is a folder, not an image file", "pass the path of an image file")
    try:
        if p.stat().st_size == 0:
            raise ImageReadError(p, "the file is empty (0 bytes)", _HINT_REPLACE)
        return Image.open(p)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(
            p, "not an image PIL can identify (wrong extension, or not an image at all)", _HINT_REPLACE
        ) from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(
            p, f"too many pixels ({e})", "downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS if you trust it"
        ) from None
    except (OSError, ValueError, SyntaxError) as e:  # SyntaxError: PIL's historic "broken header"
        raise ImageReadError(p, f"the header is broken ({e})", _HINT_REPLACE) from None


def decode_image(img: Image.Image, path: PathLike, draft: bool = False) -> Image.Image:
    """Decode the pixels of an opened image and apply its EXIF orientation.

    ``draft=True`` decodes JPEGs at 1/8 of their size (DCT scaling): the whole stream is still
    read, so truncated and corrupt files are still caught, for about 1/64 of the work. It is for
    checking files (the validator), never for pixels that are used. Any decoding failure raises
    :class:`ImageReadError`; a malformed EXIF orientation tag is ignored (the pixels are fine).
    """
    if draft and img.format == "JPEG":
        img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
    try:
        img.load()
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL plugins raise many types for corrupt data
        msg = str(e)
        reason = "the file is truncated (incomplete download or copy)" if "truncated" in msg else (
            f"the pixel data cannot be decoded ({msg})"
        )
        raise ImageReadError(path, reason, _HINT_REPLACE) from None
    if _orientation(img) == 1:
        return img
    try:
        out = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF: the pixels are fine, the orientation tag is not usable
        out = img
    return out if out is not None else img


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION_TAG, 1) or 1)
    except Exception:
        return 1


def oriented_hw(img: Image.Image) -> tuple[int, int]:
    """``(H, W)`` of an opened image after its EXIF rotation (header only)."""
    w, h = img.size
    return (int(w), int(h)) if _orientation(img) in _SWAPPING_ORIENTATIONS else (int(h), int(w))


def image_hw(path: PathLike) -> tuple[int, int]:
    """``(H, W)`` of an image as :func:`read_image` returns it (EXIF rotation applied).

    Only the header is read, so this is cheap even for large files.
    """
    with open_image(path) as img:
        return oriented_hw(img)


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------
def _on_white(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _scale_to_uint8(a: np.ndarray, full_range: float | None) -> np.ndarray:
    """Scale numbers to 0..255; ``full_range`` is the value that maps to 255 (None: min-max)."""
    a = np.asarray(a, dtype=np.float64)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    if full_range is None:
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
    else:
        a = a * (255.0 / full_range)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _gray_to_uint8(img: Image.Image) -> np.ndarray:
    """Single-channel images with more than 8 bits (I;16*, I, F) -> uint8 (H, W)."""
    a = np.asarray(img)
    if img.mode in _SIXTEEN_BIT_MODES:
        return _scale_to_uint8(a, 65535.0)  # 65535 / 257 = 255: the full 16-bit range
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if img.mode == "F":
        if lo >= 0.0 and hi <= 1.0:
            return _scale_to_uint8(a, 1.0)
        if lo >= 0.0 and hi <= 255.0:
            return _scale_to_uint8(a, 255.0)
        return _scale_to_uint8(a, None)
    # mode "I" (32-bit signed): most often 16-bit data (older PNG readers, TIFF)
    if lo >= 0 and hi <= 255:
        return a.astype(np.uint8)
    if lo >= 0 and hi <= 65535:
        return _scale_to_uint8(a, 65535.0)
    return _scale_to_uint8(a, None)


def to_rgb_array(img: Image.Image, path: PathLike = "<image>") -> np.ndarray:
    """A decoded image as ``np.uint8 (H, W, 3)`` RGB: the conversion rules of :func:`read_image`.

    L/1/P/CMYK/YCbCr -> RGB; RGBA/LA/PA (and palettes with transparency) are composited on
    white; I;16/I;16B are divided by 257 (full 16-bit range -> 0..255); I is treated as 8-bit if
    its values fit 0..255, else as 16-bit if they fit 0..65535, else min-max scaled; F is scaled
    from [0, 1] (or taken as 0..255, else min-max scaled). A mode PIL cannot convert raises
    :class:`ImageReadError`.
    """
    mode = img.mode
    try:
        if mode == "RGB":
            out = np.asarray(img)
        elif mode in ("RGBA", "LA", "PA", "La", "RGBa"):
            out = np.asarray(_on_white(img))
        elif mode == "P":
            out = np.asarray(_on_white(img) if "transparency" in img.info else img.convert("RGB"))
        elif mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
            g = _gray_to_uint8(img)
            out = np.repeat(g[:, :, None], 3, axis=2)
        else:  # L, 1, CMYK, YCbCr, LAB, HSV, RGBX, ...
            out = np.asarray(img.convert("RGB"))
    except ValueError as e:  # "conversion from X to RGB not supported"
        raise ImageReadError(path, f"mode {mode} cannot be converted to RGB ({e})",
                             "save the image as an 8-bit RGB JPEG or PNG") from None
    out = np.ascontiguousarray(out, dtype=np.uint8)
    if out.ndim != 3 or out.shape[2] != 3:  # pragma: no cover - defensive
        raise ValueError(f"internal error: RGB conversion of mode {mode} gave shape {out.shape}")
    return out


def read_image(path: PathLike, shrink_to=None) -> np.ndarray:
    """Read any PIL-readable image as ``np.uint8 (H, W, 3)`` RGB, EXIF orientation applied
    (:func:`open_image`, :func:`decode_image`, then the rules of :func:`to_rgb_array`).

    ``shrink_to`` (an int or ``(H, W)``), for callers that resize the result to that size anyway:
    an image of more than LARGE_IMAGE_PIXELS pixels may come back smaller than its file, though
    never under REDUCING_GAP times ``max(H, W)`` on its shorter side (JPEGs are decoded at 1/2,
    1/4 or 1/8 scale by DCT scaling; L, RGB and CMYK images are box-reduced by an integer factor
    right after decoding). Smaller images are read exactly as without it.
    """
    with open_image(path) as img:
        if shrink_to is None or img.size[0] * img.size[1] <= LARGE_IMAGE_PIXELS:
            return to_rgb_array(decode_image(img, path), path)
        keep = REDUCING_GAP * max(as_hw(shrink_to))
        if img.format == "JPEG":
            img.draft(None, (keep, keep))  # a scale at which both sides stay >= keep
        out = decode_image(img, path)
        factor = min(out.size) // keep
        if factor >= 2 and out.mode in _REDUCIBLE_MODES:
            out = out.reduce(factor)
        return to_rgb_array(out, path)


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------
def mask_value_range(img: Image.Image, path: PathLike = "<mask>") -> tuple[np.ndarray, float]:
    """Pixel values of a decoded mask image as a 2-D array, and its full range: the value that
    means "fully lesion", for :func:`binarise_mask`.

    The full range is the storage type's (1 for 1-bit, 255 for 8-bit, 65535 for 16-bit, 1.0 for
    float masks in [0, 1], else 255), except that a mask whose values are only 0 and 1 has full
    range 1: it is already binary (a 0/1 mask saved as 8 bit). RGB(A) and palette masks are
    accepted when their colour channels are equal (grey); a mask with real colours raises
    :class:`ColourMaskError` (an :class:`ImageReadError`). Alpha is ignored.
    """
    values, storage_range = _mask_values(img, path)
    if storage_range > 1 and values.size and values.max() <= 1 and np.isin(values, (0, 1)).all():
        return values, 1.0
    return values, storage_range


def _mask_values(img: Image.Image, path: PathLike) -> tuple[np.ndarray, float]:
    """A mask image's values (2-D) and the full range of its storage type."""
    mode = img.mode
    if mode == "1":
        return np.asarray(img, dtype=np.uint8), 1.0
    if mode == "L":
        return np.asarray(img), 255.0
    if mode in ("LA", "La"):
        return np.asarray(img.getchannel(0)), 255.0
    if mode in _SIXTEEN_BIT_MODES:
        return np.asarray(img).astype(np.uint16), 65535.0
    if mode == "I":
        a = np.asarray(img)
        hi = int(a.max()) if a.size else 0
        return a, 255.0 if hi <= 255 else (65535.0 if hi <= 65535 else float(2**31 - 1))
    if mode == "F":
        a = np.asarray(img)
        hi = float(a.max()) if a.size else 0.0
        return a, 1.0 if hi <= 1.0 else 255.0
    rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
    spread = int((rgb.max(axis=2) - rgb.min(axis=2)).max()) if rgb.size else 0
    if spread > 8:  # a few levels of slack for JPEG chroma noise in grey masks
        raise ColourMaskError(
            path,
            f"a colour image ({mode}; channels differ by up to {spread} levels), not a binary mask",
            "save the mask as a single-channel 8-bit PNG with 0 = skin and 255 = lesion",
        )
    return rgb.mean(axis=2).round().astype(np.uint8), 255.0


def binarise_mask(values: np.ndarray, full_range: float) -> np.ndarray:
    """The one rule that makes a mask binary: ``1`` (lesion) where a value is at or above half of
    ``full_range`` (the value that means "fully lesion", see :func:`mask_value_range`), else 0.

    :func:`read_mask` applies it to a mask file's values, the validator to the distinct values it
    finds (to tell label maps from masks), and `skin_utils.data.cache.resize_pair` to a {0, 1}
    mask resized bilinearly as 0..255 grey levels (``full_range=255``): cutting the interpolated
    levels at half range puts the border where the image's own interpolation puts it, instead of
    the staircase of nearest neighbour.
    """
    return (np.asarray(values) >= full_range / 2.0).view(np.uint8)  # bool -> 0/1 bytes without a copy


def _check_hw(hw) -> tuple[int, int]:
    if (
        not isinstance(hw, (tuple, list))
        or len(hw) != 2
        or not all(isinstance(s, (int, np.integer)) and s > 0 for s in hw)
    ):
        raise ValueError(f"hw must be (H, W), two positive integers (height, width), got {hw!r}")
    return int(hw[0]), int(hw[1])


def read_mask(path: PathLike, hw: tuple[int, int] | None = None) -> np.ndarray:
    """Read a lesion mask as ``np.uint8 (H, W)`` in {0, 1} (1 = lesion).

    Accepted: 1-bit, 8-bit L (0/255, or 0/1), 16-bit, float, and RGB/RGBA/palette masks whose
    colour channels are equal (:func:`mask_value_range`). Values at or above half of the storage
    range are lesion (:func:`binarise_mask`); a mask whose values are only 0 and 1 is taken as
    already binary. ``hw=(H, W)`` resizes with nearest neighbour (masks are never interpolated
    here).
    """
    if hw is not None:
        hw = _check_hw(hw)
    with open_image(path) as img:
        values, full_range = mask_value_range(decode_image(img, path), path)
    binary = binarise_mask(values, full_range)
    if hw is not None and binary.shape != hw:
        binary = np.asarray(Image.fromarray(binary).resize((hw[1], hw[0]), Image.Resampling.NEAREST))
    return np.ascontiguousarray(binary, dtype=np.uint8)
