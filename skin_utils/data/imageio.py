"""Reading dermoscopy images and lesion masks into plain numpy arrays.

* :func:`read_image` -> ``np.uint8 (H, W, 3)`` RGB, whatever the file's mode. EXIF orientation is
  applied. Transparent images (RGBA, LA, PA, palette with transparency) are **composited on
  white**, so that transparent areas get a defined colour instead of whatever RGB values happen
  to sit under alpha = 0. 16-bit images are scaled to 8 bit by their full range (``v / 257``),
  never clipped; float images are scaled from [0, 1] (or [0, 255], else min-max).
* :func:`read_mask` -> ``np.uint8 (H, W)`` in {0, 1}, binarised at half of the file's value
  range (0/1-valued masks are taken as they are), optionally resized with nearest neighbour.
* :func:`image_size` -> ``(W, H)`` after EXIF rotation, from the file header only.

Every failure to read a file raises :class:`ImageReadError` (a ``ValueError``) naming the file,
what is wrong and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageReadError",
    "image_size",
    "mask_value_range",
    "read_image",
    "read_mask",
]

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


# --------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------
def _open(path: PathLike) -> Image.Image:
    """``Image.open`` with our error messages (reads the header only)."""
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


def _load_pixels(img: Image.Image, path: PathLike) -> Image.Image:
    """Decode the pixels; truncated or corrupt files raise ImageReadError."""
    try:
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        msg = str(e)
        reason = "the file is truncated (incomplete download or copy)" if "truncated" in msg else (
            f"the pixel data cannot be decoded ({msg})"
        )
        raise ImageReadError(path, reason, _HINT_REPLACE) from None
    return img


def _load(img: Image.Image, path: PathLike) -> Image.Image:
    """Decode the pixels and apply the EXIF orientation; truncated files raise ImageReadError."""
    _load_pixels(img, path)
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


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """``(W, H)`` of an opened image after its EXIF rotation (header only)."""
    w, h = img.size
    return (int(h), int(w)) if _orientation(img) in _SWAPPING_ORIENTATIONS else (int(w), int(h))


def image_size(path: PathLike) -> tuple[int, int]:
    """``(W, H)`` of an image as :func:`read_image` returns it (EXIF rotation applied).

    Only the header is read, so this is cheap even for large files.
    """
    with _open(path) as img:
        return oriented_size(img)


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


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
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
    out = np.ascontiguousarray(out, dtype=np.uint8)
    if out.ndim != 3 or out.shape[2] != 3:  # pragma: no cover - defensive
        raise ValueError(f"internal error: RGB conversion of mode {mode} gave shape {out.shape}")
    return out


def read_image(path: PathLike) -> np.ndarray:
    """Read any PIL-readable image as ``np.uint8 (H, W, 3)`` RGB, EXIF orientation applied.

    Conversions: L/1/P/CMYK/YCbCr -> RGB; RGBA/LA/PA (and palettes with transparency) are
    composited on white; I;16/I;16B are divided by 257 (full 16-bit range -> 0..255); I is
    treated as 8-bit if its values fit 0..255, else as 16-bit if they fit 0..65535, else
    min-max scaled; F is scaled from [0, 1] (or taken as 0..255, else min-max scaled).
    """
    with _open(path) as img:
        return _to_rgb_array(_load(img, path))


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------
def mask_value_range(img: Image.Image, path: PathLike = "<mask>") -> tuple[np.ndarray, float]:
    """Pixel values of a (loaded, oriented) mask image as a 2-D array and the value that means
    "fully on" for its storage type (1 for 1-bit, 255 for 8-bit, 65535 for 16-bit, 1.0 for F).

    RGB(A) and palette masks are accepted when their colour channels are equal (grey); a mask
    with real colours raises :class:`ImageReadError`. Alpha is ignored.
    """
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
        raise ImageReadError(
            path,
            f"a colour image ({mode}; channels differ by up to {spread} levels), not a binary mask",
            "save the mask as a single-channel 8-bit PNG with 0 = skin and 255 = lesion",
        )
    return rgb.mean(axis=2).round().astype(np.uint8), 255.0


def _binarise(values: np.ndarray, full_range: float) -> np.ndarray:
    hi = values.max() if values.size else 0
    if hi <= 1:  # 0/1-valued (also 1-bit and float masks in [0, 1] with only 0 and 1)
        if full_range == 1.0 or np.isin(values, (0, 1)).all():
            return (values >= 0.5).astype(np.uint8)
    return (values > full_range / 2.0).astype(np.uint8)


def read_mask(path: PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read a lesion mask as ``np.uint8 (H, W)`` in {0, 1} (1 = lesion).

    Accepted: 1-bit, 8-bit L (0/255, or 0/1), 16-bit, float, and RGB/RGBA/palette masks whose
    colour channels are equal. Values above half of the storage range are lesion; a mask whose
    values are only 0 and 1 is taken as already binary. ``size=(W, H)`` resizes with nearest
    neighbour (masks are never interpolated).
    """
    if size is not None:
        if (
            not isinstance(size, (tuple, list))
            or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size)
        ):
            raise ValueError(f"size must be (W, H) with two positive integers, got {size!r}")
    with _open(path) as img:
        values, full_range = mask_value_range(_load(img, path), path)
    binary = _binarise(values, full_range)
    if size is not None and (binary.shape[1], binary.shape[0]) != tuple(size):
        binary = np.asarray(
            Image.fromarray(binary).resize((int(size[0]), int(size[1])), Image.Resampling.NEAREST)
        )
    return np.ascontiguousarray(binary, dtype=np.uint8)
