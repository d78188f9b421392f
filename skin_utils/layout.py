"""The one layout the library reads, the one way its files are read, and its validation.

    <data_dir>/images/<image_id>.<jpg|jpeg|png|bmp|tif|tiff|webp>
    <data_dir>/masks/<image_id>_segmentation.png     optional: 0 = skin, 255 (or 1) = lesion, the image's aspect
    <data_dir>/HAM10000_metadata.csv                 optional: lesion_id,image_id,dx[,dx_type,age,sex,localization]
    <data_dir>/dataset_info.json                     optional: {"synthetic": true} marks the demo

`load_index` turns it into the index after finding every problem (each with what to do); `skin_utils.prepare`
converts other folder shapes into it. Every size is ``(height, width)`` (`as_hw`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import shutil
import warnings
from collections import Counter, defaultdict
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from skin_utils.config import ON_BAD_DATA
from skin_utils.labels import CLASS_NAMES, DX_TO_INDEX, map_labels, normalise_name

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
METADATA_NAME = "HAM10000_metadata.csv"
METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
MASK_SUFFIX = "_segmentation.png"
INFO_NAME = "dataset_info.json"
#: Lesion-id cells that mean "not known": such an image is its own lesion, never one pseudo-lesion.
MISSING_LESION_IDS = frozenset({"", "na", "n/a", "nan", "none", "null", "-", "--", "?", "unknown", "missing"})
IGNORED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "__macosx", ".ipynb_checkpoints"})
#: Images with more pixels than this may be read reduced (`read_image` ``shrink_to``), keeping at
#: least REDUCING_GAP times the requested size, so the resize that follows sees the same detail.
LARGE_IMAGE_PIXELS = 4_000_000
REDUCING_GAP = 3
MID_GREY_FRACTION = 0.05  # a mask with more pixels strictly between 10% and 90% of range is not binary
ASPECT_TOLERANCE = 0.01   # relative aspect-ratio difference allowed between a mask and its image
MAX_LISTED_PER_KIND = 20
#: Label-table columns `read_labels` detects, in order of preference (lower-case, spaces/hyphens as "_").
ID_COLUMNS = ("image_id", "image", "isic_id", "image_name", "img_id", "image_file", "filename", "file_name", "file",
              "id", "name")
DX_COLUMNS = ("dx", "diagnosis", "diagnostic", "label", "class", "class_name", "target")
#: One-hot tables whose all-zero row is a class of its own: ISIC 2017 task 3 (neither melanoma nor seborrheic
#: keratosis is a nevus).
ONEHOT_REST = {("melanoma", "seborrheic keratosis"): "NV"}
OTHER_COLUMNS = {"lesion_id": ("lesion_id", "lesion"), "age": ("age", "age_approx"), "sex": ("sex", "gender"),
                 "localization": ("localization", "anatom_site_general", "anatom_site_general_challenge",
                                  "anatom_site", "location", "region", "site")}

DATAVERSE = "Harvard Dataverse, doi:10.7910/DVN/DBW86T"
HAM10000_CMD = "python -m skin_utils.prepare ham10000 DOWNLOADS_DIR --out data"
FOLDER_CMD = "python -m skin_utils.prepare folder SRC --out DST [--label-map JSON] [--id-column C] [--label-column C]"
INFERENCE_CMD = "papermill notebooks/04_inference.ipynb reports/inference.ipynb -p input_dir {folder} -p run latest"
EXPECTED_LAYOUT = (
    "Expected layout:\n"
    "  <data_dir>/images/<image_id>.jpg               (.jpeg/.png/.bmp/.tif/.tiff/.webp)\n"
    "  <data_dir>/masks/<image_id>_segmentation.png   (0 = skin, 255 = lesion)\n"
    "  <data_dir>/HAM10000_metadata.csv               (lesion_id,image_id,dx,...)\n"
    "Labels and masks are each optional, but one of them is needed to score anything.\n"
    f"Build it from the official HAM10000 downloads ({DATAVERSE}) with\n  {HAM10000_CMD}\n"
    f"or from any other folder (load_data does this by itself) with\n  {FOLDER_CMD}\n(see data/README.md)."
)
#: Every kind of problem, with what to do about it.
KIND_FIXES: dict[str, str] = {
    "missing_folder": f"point data_dir at the folder that holds images/, masks/ and the labels, or build it with `{HAM10000_CMD}`",
    "no_images": f"put the images in <data_dir>/images/ (build it with `{HAM10000_CMD}`, or `{FOLDER_CMD}`)",
    "empty_folder": "put the files in it (re-extract the download), or remove the empty folder",
    "no_labels": f"add {METADATA_NAME} or masks; a folder of images alone can only be predicted on (notebooks/04_inference)",
    "bad_label_file": f"give {METADATA_NAME} the columns image_id and dx (and lesion_id), or convert the folder with `{FOLDER_CMD}`",
    "unreadable_image": "re-download or re-extract these images (they must open in an image viewer), or delete them",
    "unreadable_mask": "re-download or re-extract these masks (HAM10000_segmentations_lesion_tschandl.zip), or delete them",
    "not_an_image": f"move these files out of images/ and masks/ (only {'/'.join(IMAGE_EXTENSIONS)} are read)",
    "unexpected_folder": f"move the images in these sub-folders up into images/, or convert the folder with `{FOLDER_CMD}`",
    "bad_mask_name": f"name masks masks/<image_id>{MASK_SUFFIX}, or convert the folder with `{FOLDER_CMD}`",
    "missing_mask": f"add masks/<image_id>{MASK_SUFFIX} for these images, or remove them (partial=True keeps them, unscored for segmentation)",
    "missing_label": f"add a row for these images to {METADATA_NAME}, or remove them (partial=True keeps them, unscored for classification)",
    "orphan_mask": "remove these masks, or add the images they belong to",
    "not_binary_mask": "save masks as single-channel 8-bit PNG with 0 = skin and 255 = lesion (anti-aliased edges are fine)",
    "aspect_mismatch": "use the mask that belongs to this image: masks may differ in size but must have the image's aspect ratio",
    "bad_label": (f"write dx as one of {', '.join(DX_TO_INDEX)} (any case), convert the folder with `{FOLDER_CMD}` to map "
                  'other names (label_map), or leave these images out with on_bad_data="skip"'),
    "duplicate_id": "keep exactly one file (and one labels row) per image id; delete the other copies",
}
FATAL_KINDS = frozenset({"missing_folder", "no_images", "no_labels"})


# ----------------- reading images and masks: the one path training, validation and inference share
def as_hw(image_size) -> tuple[int, int]:
    """``128`` -> (128, 128); ``(h, w)`` stays."""
    h, w = (image_size, image_size) if isinstance(image_size, (int, np.integer)) else image_size
    return int(h), int(w)


class ImageReadError(ValueError):
    """An image or mask file that cannot be used; ``path``, ``reason`` and ``hint`` say why."""

    def __init__(self, path, reason: str,
                 hint: str = "re-download or re-export the file (it should open in any image viewer), or remove it"):
        self.path, self.reason, self.hint = str(path), reason, hint
        super().__init__(f"Cannot read {self.path}: {reason}. Fix: {hint}.")


class ColourMaskError(ImageReadError):
    """A readable image given as a mask that has real colours, so it is no binary mask."""


def _open(path) -> Image.Image:
    """``Image.open`` (the header only), with ImageReadError for a missing, empty or unknown file."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(p, "this is a folder, not an image file" if p.is_dir() else "the file does not exist",
                             "check the path")
    if p.stat().st_size == 0:
        raise ImageReadError(p, "the file is empty (0 bytes)")
    try:
        return Image.open(p)
    except UnidentifiedImageError:
        raise ImageReadError(p, "not an image PIL can identify (wrong extension, or not an image at all)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(p, f"too many pixels ({e})", "downscale the image, or raise PIL.Image.MAX_IMAGE_PIXELS "
                             "if you trust it") from None
    except (OSError, ValueError, SyntaxError) as e:  # SyntaxError: PIL's historic "broken header"
        raise ImageReadError(p, f"the header is broken ({e})") from None


def _decode(img: Image.Image, path, draft: bool = False) -> Image.Image:
    """The pixels, EXIF orientation applied. ``draft=True`` (checks only) decodes JPEGs at 1/8 scale: the
    whole stream is still read, so truncated files are caught, for 1/64 of the work."""
    if draft and img.format == "JPEG":
        img.draft("RGB", (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
    try:
        img.load()
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL plugins raise many types for corrupt data
        raise ImageReadError(path, "the file is truncated (incomplete download or copy)" if "truncated" in str(e)
                             else f"the pixel data cannot be decoded ({e})") from None
    with suppress(Exception):  # a malformed orientation tag: the pixels are fine
        ImageOps.exif_transpose(img, in_place=True)  # in place: no copy when there is nothing to turn
    return img


def _hw(img: Image.Image) -> tuple[int, int]:
    w, h = img.size
    with suppress(Exception):  # malformed EXIF: no rotation
        if img.getexif().get(0x0112) in (5, 6, 7, 8):  # those orientations swap the sides
            return w, h
    return h, w


def image_hw(path) -> tuple[int, int]:
    """``(H, W)`` of an image as `read_image` returns it (EXIF rotation applied), from the header."""
    with _open(path) as img:
        return _hw(img)


def _rgb(img: Image.Image, path) -> np.ndarray:
    """A decoded image as uint8 (H, W, 3): transparency composited on white; numbers scaled by the range of
    their storage type (16-bit: 65535; floats: 1, else 255), never clipped, else min-max."""
    mode = img.mode
    try:
        if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            return np.asarray(Image.alpha_composite(Image.new("RGBA", rgba.size, (255,) * 4), rgba).convert("RGB"))
        if mode not in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):  # RGB, L, 1, P, CMYK, YCbCr, ...
            return np.asarray(img if mode == "RGB" else img.convert("RGB"))
    except ValueError as e:  # "conversion from X to RGB not supported"
        raise ImageReadError(path, f"mode {mode} cannot be converted to RGB ({e})",
                             "save the image as an 8-bit RGB JPEG or PNG") from None
    a = np.asarray(img)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    full = 65535.0 if mode.startswith("I;16") else next(
        (f for f in ((1.0, 255.0) if mode == "F" else (255.0, 65535.0)) if lo >= 0 and hi <= f), None)
    a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if full is not None:
        a = a * (255.0 / full)
    elif a.size and a.max() > a.min():  # outside every storage range: min-max
        a = (a - a.min()) / (a.max() - a.min()) * 255.0
    else:
        a = np.zeros_like(a)
    return np.repeat(np.clip(np.rint(a), 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def read_image(path, shrink_to=None) -> np.ndarray:
    """Any PIL-readable image as uint8 (H, W, 3) RGB, EXIF orientation applied. ``shrink_to`` (an int or (H, W)),
    for callers that resize to it anyway: an image over LARGE_IMAGE_PIXELS may come back smaller, never under
    REDUCING_GAP x max(H, W) on its shorter side (JPEG DCT scaling, or an integer box reduction after decoding)."""
    with _open(path) as img:
        if shrink_to is None or img.size[0] * img.size[1] <= LARGE_IMAGE_PIXELS:
            return np.ascontiguousarray(_rgb(_decode(img, path), path))
        keep = REDUCING_GAP * max(as_hw(shrink_to))
        if img.format == "JPEG":
            img.draft(None, (keep, keep))  # a scale at which both sides stay >= keep
        out = _decode(img, path)
        factor = min(out.size) // keep
        if factor >= 2 and out.mode in ("L", "RGB", "CMYK"):  # box-averaging other modes mixes alpha or palettes
            out = out.reduce(factor)
        return np.ascontiguousarray(_rgb(out, path))


def mask_value_range(img: Image.Image, path="<mask>") -> tuple[np.ndarray, float]:
    """A decoded mask's values (2-D) and its full range (the value meaning "fully lesion"): the storage
    type's (1-bit 1, 8-bit 255, 16-bit 65535, float in [0, 1] 1.0), but 1 for values that are only 0
    and 1. Grey RGB(A)/palette masks are fine; real colours raise `ColourMaskError`."""
    mode = img.mode
    if mode in ("1", "L", "LA", "La"):
        values = np.asarray(img.getchannel(0) if mode in ("LA", "La") else img, dtype=np.uint8)
        full = 1.0 if mode == "1" else 255.0
    elif mode.startswith("I;16"):
        values, full = np.asarray(img).astype(np.uint16), 65535.0
    elif mode in ("I", "F"):
        values = np.asarray(img)
        hi = float(values.max()) if values.size else 0.0
        full = (1.0 if hi <= 1.0 else 255.0) if mode == "F" else next(
            (f for f in (255.0, 65535.0) if hi <= f), float(2**31 - 1))
    else:
        rgb = np.asarray(img.convert("RGB"), dtype=np.int16)
        spread = int((rgb.max(axis=2) - rgb.min(axis=2)).max()) if rgb.size else 0
        if spread > 8:  # a few levels of slack for JPEG chroma noise in grey masks
            raise ColourMaskError(path, f"a colour image ({mode}; channels differ by up to {spread} levels), not a "
                                  "binary mask", "save the mask as a single-channel 8-bit PNG with 0 = skin and 255 = lesion")
        values, full = rgb.mean(axis=2).round().astype(np.uint8), 255.0
    if full > 1 and values.size and values.max() <= 1 and np.isin(values, (0, 1)).all():
        return values, 1.0
    return values, full


def binarise_mask(values: np.ndarray, full_range: float) -> np.ndarray:
    """The one rule that makes a mask binary: 1 (lesion) at or above half of ``full_range``. The cache
    applies it to masks resized bilinearly as 0..255 grey, so their border follows the image's."""
    return (np.asarray(values) >= full_range / 2.0).view(np.uint8)  # bool -> 0/1 bytes without a copy


def read_mask(path, hw: tuple[int, int] | None = None) -> np.ndarray:
    """A lesion mask as uint8 (H, W) in {0, 1} (`binarise_mask`); ``hw`` resizes with nearest neighbour."""
    if hw is not None and not (isinstance(hw, (tuple, list)) and len(hw) == 2
                               and all(isinstance(s, (int, np.integer)) and s > 0 for s in hw)):
        raise ValueError(f"hw must be (H, W), two positive integers (height, width), got {hw!r}")
    with _open(path) as img:
        binary = binarise_mask(*mask_value_range(_decode(img, path), path))
    if hw is not None and binary.shape != tuple(hw):
        binary = np.asarray(Image.fromarray(binary).resize((int(hw[1]), int(hw[0])), Image.Resampling.NEAREST))
    return np.ascontiguousarray(binary, dtype=np.uint8)


# ------------------------------------------------------------------------------ folders and tables
def is_ignored(name: str) -> bool:
    """Hidden files and operating-system/archiver junk (.DS_Store, Thumbs.db, __MACOSX): skipped quietly."""
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def find_images(folder) -> list[Path]:
    """Image files (by extension, any case) in ``folder`` and below it, sorted, junk skipped."""
    p = Path(folder).expanduser()
    if p.is_file():
        if p.suffix.lower() in IMAGE_EXTENSIONS:
            return [p]
        raise ValueError(f"{p} is not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
    if not p.is_dir():
        raise FileNotFoundError(f"No such folder: {p}")
    found = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
        found += [Path(dirpath) / n for n in filenames if not is_ignored(n) and Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found)


def read_table(path) -> pd.DataFrame:
    """A labels table (CSV or TSV, told by its header line) as stripped text, column names lower-cased."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        header = f.readline()
    df = pd.read_csv(path, sep="\t" if header.count("\t") > header.count(",") else ",", dtype=str,
                     keep_default_na=False, encoding="utf-8-sig")
    df.columns = [str(c).strip().strip('"').lower() for c in df.columns]
    return df.apply(lambda s: s.str.strip())


def read_csv_with_ids(path) -> pd.DataFrame:
    """A CSV of ours (a split, a per-image table) with ``image_id`` and ``lesion_id`` read as text as
    written: a lesion called "NA" stays that lesion; only an empty id cell is missing."""
    ids = ("image_id", "lesion_id")
    missing = ["", "NA", "N/A", "NaN", "nan", "<NA>", "None", "null", "NULL", "-nan", "#N/A"]
    columns = pd.read_csv(path, nrows=0).columns
    return pd.read_csv(path, keep_default_na=False, na_values={c: [""] if c in ids else missing for c in columns},
                       dtype={c: str for c in ids if c in columns})


def describe_folder(folder: Path, limit: int = 10) -> str:
    """A sentence for messages: what ``folder`` contains (the first ``limit`` names)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        return f"(cannot list it: {e})"
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    more = f", ... ({len(entries)} entries in all)" if len(entries) > limit else ""
    return "It contains: " + ", ".join(names) + more if entries else "It is empty."


@contextmanager
def write_whole(out: Path, record: str, overwrite: bool, source: Path | None = None):
    """A temporary folder (with images/) beside ``out``, put at ``out`` when the block ends without an error:
    a data folder appears whole or not at all. A folder already at ``out`` is replaced only with ``overwrite``
    and only when its ``record`` file says this kind of writer made it; one that another process (a torchrun
    rank) wrote meanwhile is kept."""
    if source is not None and (out == source or source in out.parents or out in source.parents):
        raise ValueError(f"--out {out} must be outside the data folder {source} (and not hold it).")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder: choose another --out (a new or empty folder), or "
                              "remove that file.")
    replace = out.exists() and any(out.iterdir())
    if replace and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty: choose another folder, or pass --overwrite "
                              "(overwrite=True) to replace what this command wrote there before.")
    if replace and not (out / record).is_file():
        raise FileExistsError(f"{out} holds something this command did not write (no {record}); it is not "
                              "overwritten. Choose another folder.")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    try:
        yield tmp
        if replace:
            shutil.rmtree(out)
        with suppress(OSError):  # written by another process meanwhile: theirs is kept
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_synthetic(data_dir) -> bool:
    """True when ``data_dir/dataset_info.json`` marks the folder as the synthetic demo."""
    try:
        return json.loads((Path(data_dir) / INFO_NAME).read_text(encoding="utf-8")).get("synthetic") is True
    except (OSError, ValueError, AttributeError):
        return False


# ------------------------------------------------------------------------- problems and the report
class DataValidationError(ValueError):
    """The data set has problems; ``.report`` is the full `DataReport`."""

    def __init__(self, message: str, report: DataReport | None = None):
        super().__init__(message)
        self.report = report


class DataLayoutError(DataValidationError, FileNotFoundError):
    """No usable data set at all in the folder."""


class DataQualityWarning(UserWarning):
    """Bad items were left out (``on_bad_data="skip"``), or ids of a labels table matched no image."""


class LesionLeakageWarning(UserWarning):
    """Images without a lesion id: images of one lesion can end up in different splits."""


@dataclass
class Problem:
    """A ``kind`` of problem (its fix: KIND_FIXES), the file, what is wrong, and the image it makes unusable."""

    kind: str
    path: str
    message: str
    image_id: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class DataReport:
    """What `validate_dataset` found; ``str(report)`` is the readable report."""

    data_dir: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in Counter(p.kind for p in self.problems).most_common()) or "no problems"

    def format_problems(self) -> str:
        """Every problem grouped by kind, each kind's fix once."""
        lines = []
        for kind in dict.fromkeys(p.kind for p in self.problems):
            items = [p for p in self.problems if p.kind == kind]
            lines.append(f"[{kind}] {len(items)} problem{'s' if len(items) != 1 else ''}. Fix: {KIND_FIXES[kind]}")
            lines += [f"  - {os.path.relpath(p.path, self.data_dir) if p.path.startswith(self.data_dir) else p.path}: "
                      f"{p.message}" for p in items[:MAX_LISTED_PER_KIND]]
            if len(items) > MAX_LISTED_PER_KIND:
                lines.append(f"  ... and {len(items) - MAX_LISTED_PER_KIND} more of this kind")
        return "\n".join(lines)

    def __str__(self) -> str:
        c = self.counts
        lines = [f"Data set {self.data_dir}",
                 f"  {c.get('images', 0)} images, {c.get('masks', 0)} masks, {c.get('labels', 0)} label rows; usable: "
                 f"{c.get('usable', 0)} ({c.get('with_label', 0)} with a diagnosis, {c.get('with_mask', 0)} with a mask)"]
        if self.ignored:
            more = f" and {len(self.ignored) - 5} more" if len(self.ignored) > 5 else ""
            lines.append(f"  ignored (hidden/system files): {', '.join(Path(p).name for p in self.ignored[:5])}{more}")
        lines += [f"  note: {n}" for n in self.notes]
        lines += ["OK: no problems found."] if self.ok else [f"{len(self.problems)} PROBLEM(S) FOUND:", self.format_problems()]
        return "\n".join(lines)


def no_labels_problem(folder: Path, n_images: int, why: str = "") -> Problem:
    """The fatal problem of images with neither labels nor masks: they can only be predicted on."""
    return Problem("no_labels", str(folder), f"no labels file{why} and no masks: nothing to score "
                   f"these {n_images} images against. A folder of images alone can only be predicted on, with "
                   f"notebooks/04_inference:\n      {INFERENCE_CMD.format(folder=shlex.quote(str(folder)))}\n    "
                   + describe_folder(folder))


def duplicate_problems(files: dict, root, what: str = "image id") -> list[Problem]:
    """A duplicate_id problem for each id of ``files`` (id -> paths or DirEntries) with more than one file."""
    return [Problem("duplicate_id", str(Path(f[0])), f"{what} {i} appears {len(f)} times: "
                    f"{', '.join(os.path.relpath(x, root) for x in f)}", i) for i, f in files.items() if len(f) > 1]


def layout_error(report: DataReport) -> DataLayoutError:
    """The error of a folder with no usable data set: the fatal problems, the expected layout, the rest."""
    body = "\n".join(f"  - {p.message}" for p in report.problems if p.kind in FATAL_KINDS)
    hint = "\n(This looks like the images/ or masks/ folder itself: pass its parent folder as data_dir.)" \
        if Path(report.data_dir).name in ("images", "masks") else ""
    extra = f"\nOther problems:\n{report.format_problems()}" if any(
        p.kind not in FATAL_KINDS for p in report.problems) else ""
    return DataLayoutError(f"No usable data set in {report.data_dir}:\n{body}{hint}\n{EXPECTED_LAYOUT}{extra}", report)


# ------------------------------------------------------------------------------ checking the files
def check_mask(path: str) -> tuple[tuple[int, int] | None, Problem | None]:
    """``((H, W), problem or None)`` of a mask: readable, and binary by `binarise_mask`: not empty once
    binarised although not all zero (a label map, a wrongly scaled mask), few mid-grey pixels."""
    try:
        with _open(path) as img:
            hw = _hw(img)
            values, full = mask_value_range(_decode(img, path), path)
    except ColourMaskError as e:
        return None, Problem("not_binary_mask", path, e.reason)
    except ImageReadError as e:
        return None, Problem("unreadable_mask", path, e.reason)
    hi = values.max() if values.size else 0  # the rule is a threshold: the brightest pixel decides
    if hi > 0 and not binarise_mask(hi, full):
        distinct = np.unique(values)
        shown = ", ".join(f"{v:g}" for v in distinct[:8]) + (" ..." if len(distinct) > 8 else "")
        return hw, Problem("not_binary_mask", path, f"looks like a label map or wrongly scaled mask: max value {hi:g} "
                           f"of {full:g} (values {shown}); binarised at half range it would be empty")
    lo_grey, hi_grey = 0.1 * full, 0.9 * full
    if values.dtype.kind in "ui":  # the same test with integer bounds: 3x faster
        lo_grey, hi_grey = math.floor(lo_grey), math.ceil(hi_grey)
    mid = np.count_nonzero((values > lo_grey) & (values < hi_grey)) / max(values.size, 1)
    if mid > MID_GREY_FRACTION:
        return hw, Problem("not_binary_mask", path, f"not binary: {len(np.unique(values))} distinct values and "
                           f"{mid:.0%} of pixels are mid-grey (between 10% and 90% of range); a soft map or a photo?")
    return hw, None


def _check_files(image: os.DirEntry, mask: os.DirEntry | None, decode: bool) -> list[Problem]:
    """The problems of an image and its mask: empty files only (``decode=False``), else every pixel check."""
    if not decode:
        return [Problem(kind, f.path, "the file is empty (0 bytes)") for f, kind in
                ((image, "unreadable_image"), (mask, "unreadable_mask")) if f and f.stat().st_size == 0]
    try:
        with _open(image.path) as img:  # decoded as training does, at draft scale
            image_hw, found = _hw(img), []
            _rgb(_decode(img, image.path, draft=True), image.path)
    except ImageReadError as e:
        image_hw, found = None, [Problem("unreadable_image", image.path, e.reason)]
    if mask is not None:
        mask_hw, problem = check_mask(mask.path)
        found.append(problem)
        if image_hw and mask_hw:
            (ih, iw), (mh, mw) = image_hw, mask_hw
            if abs(mw / mh - iw / ih) / (iw / ih) > ASPECT_TOLERANCE:
                found.append(Problem("aspect_mismatch", mask.path, f"mask is {mw}x{mh} px (width x height, aspect "
                                     f"{mw / mh:.3f}) but its image is {iw}x{ih} px (aspect {iw / ih:.3f})"))
    return [p for p in found if p]


def _list(folder: Path, report: DataReport, is_mask_dir: bool) -> dict[str, list[os.DirEntry]]:
    """A folder's files by image id; sub-folders, other files and badly named masks reported."""
    if not folder.is_dir():
        return {}
    files: dict[str, list[os.DirEntry]] = defaultdict(list)
    entries = sorted(os.scandir(folder), key=lambda e: e.name)
    for e in entries:
        stem, ext = os.path.splitext(e.name)
        if is_ignored(e.name):
            report.ignored.append(e.path)
        elif e.is_dir():
            report.problems.append(Problem("unexpected_folder", e.path, "a sub-folder inside images/ or masks/"))
        elif ext.lower() not in IMAGE_EXTENSIONS:
            report.problems.append(Problem("not_an_image", e.path, f"not a {'/'.join(IMAGE_EXTENSIONS)} file "
                                           f"({ext or 'no extension'})"))
        elif not is_mask_dir:
            files[stem].append(e)
        elif e.name.lower().endswith(MASK_SUFFIX) and len(e.name) > len(MASK_SUFFIX):
            files[e.name[:-len(MASK_SUFFIX)]].append(e)
        else:
            report.problems.append(Problem("bad_mask_name", e.path, f"file name does not end in {MASK_SUFFIX}"))
    if all(is_ignored(e.name) for e in entries):
        report.problems.append(Problem("empty_folder", str(folder), f"the {'mask' if is_mask_dir else 'image'} folder "
                                       f"is empty. {describe_folder(folder)}"))
    return files


def clean_image_id(value: str) -> str:
    """An id as a labels file writes it -> the image's file stem (``"NEL/Nel026.jpg"`` -> ``"Nel026"``)."""
    name = str(value).strip().replace("\\", "/").rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS else name


def find_column(columns, wanted: str | None, candidates) -> str | None:
    """The column named ``wanted``, else the first of ``candidates``; lower-case, spaces and hyphens as "_"."""
    keys = {normalise_name(c).replace(" ", "_"): c for c in reversed(columns)}  # the first of equal names wins
    names = candidates if wanted is None else [normalise_name(wanted).replace(" ", "_")]
    return next((keys[k] for k in names if k in keys), None)


def read_labels(path: Path, images: set[str], report: DataReport, id_column: str | None = None,
                label_column: str | None = None, label_map=None) -> dict | str:
    """One table as labels, or why it holds none: ``rows`` (image_id -> diagnosis ``name``, lesion_id, age, sex,
    localization, "" when unknown), ``file``, ``id_column``, ``label_column``, ``has_lesion_ids``. Columns not
    named are detected (ids, then a diagnosis column, else one-hot class columns); ids are cleaned
    (`clean_image_id`) and matched ignoring case where unambiguous. Rows of ``images`` that are not one-hot or
    repeat an id with another diagnosis are reported."""
    try:
        df = read_table(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a reason, not a crash
        return f"cannot be parsed as CSV/TSV ({e})"
    cols = list(df.columns)
    id_col = find_column(cols, id_column, ID_COLUMNS)
    dx_col = find_column([c for c in cols if c != id_col], label_column, DX_COLUMNS)
    onehot = []
    if dx_col is None and label_column is None:  # columns of numbers in [0, 1] named like classes
        numeric = [c for c in cols if c != id_col and len(df[c][df[c] != ""])
                   and pd.to_numeric(df[c][df[c] != ""], errors="coerce").between(0, 1).all()]
        onehot = numeric if sum(m is not None for m in map_labels(numeric, label_map)[0]) >= 2 else []
    if id_col is None or (dx_col is None and not onehot):
        missing = [id_column or "image_id"] * (id_col is None) + [label_column or "dx"] * (dx_col is None)
        detected = "" if id_column or label_column else (
            f"nor any of {', '.join(ID_COLUMNS[1:])} for ids, {', '.join(DX_COLUMNS[1:])} or one-hot class columns "
            "MEL,NV,... for diagnoses; ")
        return f"has no column {', '.join(missing)} ({detected}columns: {', '.join(cols[:12]) or 'none'})"
    n_lower = Counter(i.lower() for i in images)
    by_lower = {i.lower(): i for i in images if n_lower[i.lower()] == 1}  # unambiguous ignoring case
    rest = [c for c in cols if c not in (id_col, dx_col, *onehot)]
    others = {k: find_column(rest, None, names) for k, names in OTHER_COLUMNS.items()}
    values = df[onehot].apply(pd.to_numeric, errors="coerce").to_numpy(float) if onehot else None
    all_zero_class = ONEHOT_REST.get(tuple(sorted(map(normalise_name, onehot))))
    rows: dict[str, dict] = {}
    for k, r in enumerate(df.to_dict("records")):
        written = clean_image_id(r[id_col])
        image_id = written if written in images else by_lower.get(written.lower(), written)
        if not image_id:
            continue
        name = r[dx_col] if dx_col else None
        if onehot and np.isin(values[k], (0.0, 1.0)).all() and values[k].sum() == 1.0:
            name = onehot[int(np.argmax(values[k]))].upper()
        elif all_zero_class and (values[k] == 0.0).all():
            name = all_zero_class
        elif onehot and image_id in images:
            shown = ", ".join(f"{c.upper()}={'?' if np.isnan(v) else f'{v:g}'}" for c, v in zip(onehot, values[k]))
            report.problems.append(Problem("bad_label", str(path), f"{image_id}: row is not exactly one-hot ({shown})",
                                           image_id))
        if image_id in rows:
            if normalise_name(rows[image_id]["name"] or "") != normalise_name(name or "") and image_id in images:
                report.problems.append(Problem("duplicate_id", str(path), f"{image_id} is listed more than once with "
                                               f"different diagnoses ({rows[image_id]['name']}, {name})", image_id))
            continue
        rows[image_id] = {"name": name, **{k: r[c] if c else "" for k, c in others.items()}}
    return {"rows": rows, "file": path.name, "id_column": id_col, "label_column": dx_col or ",".join(onehot),
            "has_lesion_ids": others["lesion_id"] is not None}


def _scan(data_dir, decode: bool, partial: bool) -> tuple[DataReport, list[dict], int, bool]:
    """The report, the usable index rows, how many rows a problem made unusable, and whether labels have
    lesion ids."""
    root = Path(os.path.abspath(Path(data_dir).expanduser()))
    report = DataReport(str(root))
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "does not exist"
        listing = describe_folder(root.parent) if root.parent.is_dir() else "Its parent folder does not exist either."
        report.problems.append(Problem("missing_folder", str(root), f"the data folder {what}. Parent {root.parent}: {listing}"))
        return report, [], 0, False
    images, masks = _list(root / "images", report, False), _list(root / "masks", report, True)
    has_masks = (root / "masks").is_dir()
    report.counts.update(images=sum(map(len, images.values())), masks=sum(map(len, masks.values())))
    report.problems += duplicate_problems(images, root)
    meta_path = root / METADATA_NAME
    labels = read_labels(meta_path, set(images), report, "image_id", "dx") if meta_path.is_file() else None
    if isinstance(labels, str):
        report.problems.append(Problem("bad_label_file", str(meta_path), labels))
        labels = None
    elif labels:
        report.counts["labels"] = len(labels["rows"])
        if not labels["has_lesion_ids"]:
            report.notes.append(f"{METADATA_NAME} has no lesion_id column: lesion_id = image_id, so near-duplicate "
                                "images of one lesion may leak across splits")
    has_lesion_ids = bool(labels and labels["has_lesion_ids"])
    if not images:
        report.problems.append(Problem("no_images", str(root), f"no {'/'.join(IMAGE_EXTENSIONS)} images in "
                                       f"{root / 'images'}. {describe_folder(root)}"))
    elif labels is None and meta_path.is_file():
        report.problems.append(Problem("no_labels", str(root), f"no usable labels file: {METADATA_NAME} cannot be read "
                                       "(see bad_label_file)"))
    elif labels is None and not masks:
        report.problems.append(no_labels_problem(root, len(images), f" ({METADATA_NAME})"))
    if not has_masks:
        report.notes.append("no masks found (masks/<image_id>_segmentation.png): mask_path is None, the "
                            "segmentation head cannot be trained or evaluated")
    if labels is None and masks:
        report.notes.append("no labels file: masks only, so every label is -1 and classification cannot be scored")
    for image_id in sorted(set(masks) - set(images)):
        report.problems += [Problem("orphan_mask", f.path, f"no image {image_id} for this mask") for f in masks[image_id]]
    rows, no_lesion_id, unscorable = [], [], []
    named = {p.image_id for p in report.problems if p.image_id}
    for image_id in sorted(images):
        image, mask = images[image_id][0], masks.get(image_id, [None])[0]
        row = labels["rows"].get(image_id) if labels else None
        dx = row["name"] if row else ""
        label = DX_TO_INDEX.get(dx.lower(), -1)
        found = []
        if has_masks and mask is None and not partial:
            found.append(Problem("missing_mask", image.path, f"no mask masks/{image_id}{MASK_SUFFIX}"))
        if labels is not None and row is None and not partial:
            found.append(Problem("missing_label", image.path, f"{image_id} has no row in {METADATA_NAME}"))
        if row and label < 0 and (dx or not partial):
            found.append(Problem("bad_label", str(meta_path), f"{image_id}: diagnosis {dx!r} is not one of the "
                                 "seven classes" if dx else f"{image_id}: no diagnosis (empty dx cell)"))
        found += _check_files(image, mask, decode)
        for p in found:
            p.image_id = image_id
        report.problems += found
        if label < 0 and mask is None and image_id not in named and not found:
            unscorable.append(image_id)
            continue
        row = row or {}
        lesion = row.get("lesion_id", "")
        if row and has_lesion_ids and lesion.lower() in MISSING_LESION_IDS:
            no_lesion_id.append(image_id)
            lesion = ""
        rows.append({"image_id": image_id, "image_path": image.path, "mask_path": mask.path if mask else None,
                     "label": label, "lesion_id": lesion or image_id, "age": row.get("age", ""),
                     "sex": row.get("sex") or "unknown", "localization": row.get("localization") or "unknown",
                     "_sizes": (image.stat().st_size, mask.stat().st_size if mask else -1)})
    if unscorable:
        report.notes.append(f"{len(unscorable)} images have neither a diagnosis nor a mask (e.g. {unscorable[0]}): "
                            "left out, there is nothing to score them against")
    if no_lesion_id:
        report.notes.append(f"{len(no_lesion_id)} images have no lesion id in {METADATA_NAME} (an empty cell or a "
                            f"placeholder such as NA, none, unknown, -; e.g. {no_lesion_id[0]}): each is taken as a "
                            "lesion of its own (lesion_id = image_id). If some of them show the same lesion, give them "
                            "one lesion_id, or near-duplicates may land on both sides of the split")
    bad = {p.image_id for p in report.problems if p.image_id}
    good = [r for r in rows if r["image_id"] not in bad]
    report.counts.update(usable=len(good), with_label=sum(r["label"] >= 0 for r in good),
                         with_mask=sum(r["mask_path"] is not None for r in good))
    return report, good, len(rows) - len(good), has_lesion_ids


def validate_dataset(data_dir, decode: bool = True, partial: bool = False) -> DataReport:
    """The `DataReport` of a data folder; ``decode=False`` checks names, pairing, labels and empty files only."""
    return _scan(data_dir, decode, partial)[0]


def load_index(data_dir, on_bad_data: str = "raise", decode: bool = True, *, partial: bool = False) -> pd.DataFrame:
    """The index of a folder in the layout, one row per usable image: ``image_id, image_path, mask_path`` (None
    without a mask), ``label`` (-1 without a diagnosis), ``dx, lesion_id, age, sex, localization, has_label,
    has_mask``; ``df.attrs``: ``data_dir, label_file, has_lesion_ids, has_labels, has_masks, partial, fingerprint,
    synthetic, problems`` (those skipped). Problems raise one `DataValidationError` listing them all, or with
    ``on_bad_data="skip"`` leave the affected images out with one `DataQualityWarning`; no images, or neither
    labels nor masks, raise `DataLayoutError`. ``partial=True`` (scoring a whole folder, never training) keeps
    images without a labels row or a mask; ``decode=False`` skips the pixel checks."""
    if on_bad_data not in ON_BAD_DATA:
        raise ValueError(f"on_bad_data must be one of {ON_BAD_DATA}, got {on_bad_data!r}")
    report, good, skipped, has_lesion_ids = _scan(data_dir, decode, partial)
    if any(p.kind in FATAL_KINDS for p in report.problems):
        raise layout_error(report)
    if report.problems and on_bad_data == "raise":
        raise DataValidationError(
            f"Data set {report.data_dir} has {len(report.problems)} problem(s) ({report.summary()}).\n"
            f"{report.format_problems()}\nFix them, or call load_index(..., on_bad_data=\"skip\") to leave the affected "
            "images out (python -m skin_utils.prepare check DATA_DIR prints the full report).", report)
    if not good:
        raise DataValidationError(f"No usable images left in {report.data_dir} ({report.summary()}).\n"
                                  f"{report.format_problems()}", report)
    if report.problems:
        warnings.warn(f"Skipped {skipped} image(s) of {report.data_dir} and ignored {len(report.problems)} "
                      f"problem(s) ({report.summary()}); kept {len(good)} images. See df.attrs[\"problems\"].",
                      DataQualityWarning, stacklevel=2)
    labelled = (Path(report.data_dir) / METADATA_NAME).is_file()
    if labelled and not has_lesion_ids and not partial:
        warnings.warn(f"{METADATA_NAME} has no lesion ids, so lesion_id = image_id. HAM10000 holds several images of "
                      "the same lesion: NEAR-DUPLICATE IMAGES OF ONE LESION MAY LEAK ACROSS TRAIN/VALIDATION/TEST "
                      "SPLITS and inflate every score. Give the labels a lesion_id column to split by lesion.",
                      LesionLeakageWarning, stacklevel=2)
    placeholder = next((n for n in report.notes if "have no lesion id in" in n), None)
    if placeholder:
        warnings.warn(placeholder + ".", LesionLeakageWarning, stacklevel=2)
    fingerprint = hashlib.sha256("".join(f"{r['image_id']}\t{r['_sizes'][0]}\t{r['_sizes'][1]}\t{r['label']}\n"
                                         for r in good).encode()).hexdigest()[:12]  # comparable across runs
    df = pd.DataFrame(good, columns=["image_id", "image_path", "mask_path", "label", "lesion_id", "age", "sex",
                                     "localization"])
    df.insert(4, "dx", [CLASS_NAMES[k] if k >= 0 else None for k in df["label"]])
    df["label"] = df["label"].astype(np.int64)
    df["age"] = pd.to_numeric(df["age"], errors="coerce").astype(float)
    df["has_label"], df["has_mask"] = df["label"].to_numpy() >= 0, df["mask_path"].notna().to_numpy()
    df.attrs.update(data_dir=report.data_dir, label_file=METADATA_NAME if labelled else None,
                    has_lesion_ids=has_lesion_ids, has_labels=bool(df["has_label"].any()),
                    has_masks=bool(df["has_mask"].any()), partial=bool(partial), fingerprint=fingerprint,
                    synthetic=is_synthetic(report.data_dir), problems=[str(p) for p in report.problems])
    return df
