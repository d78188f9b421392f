"""Finding, checking and indexing a HAM10000-style data set on disk.

* :func:`validate_dataset` walks a data folder once, collects **every** problem (with the file,
  what is wrong and what to do) and returns a :class:`DataReport`.
* :func:`load_index` turns a valid folder into the index ``DataFrame`` of docs/CONTRACTS.md, and
  either raises :class:`DataValidationError` listing all problems (default) or, with
  ``on_bad_data="skip"``, drops the affected images and records them in ``df.attrs["problems"]``.
* :func:`find_images` lists the images of an unlabelled folder (for inference).
* :func:`is_ignored`, :func:`split_mask_name`, :func:`read_table` and :func:`describe_folder`
  are the naming, labels-file and message rules that `skin_utils.data.prepare` shares.

With ``decode=True`` every image and mask is read with the functions of
`skin_utils.data.imageio` that training reads them with (JPEGs decoded at 1/8 scale, which still
reads the whole stream), and masks are judged by the same binarisation rule,
`imageio.binarise_mask`.

Layouts understood (auto-detected)::

    <data_dir>/images/<image_id>.jpg|.jpeg|.png        also HAM10000_images_part_1/ and _part_2/,
                                                       or the images directly in <data_dir>
    <data_dir>/masks/<image_id>_segmentation.png       also <image_id>_mask.png, and the folder
                                                       HAM10000_segmentations_lesion_tschandl/
    <data_dir>/HAM10000_metadata.csv                   (.tab / no extension: tab-separated ok)
       or <data_dir>/GroundTruth.csv                   ISIC 2018 Task 3 one-hot (no lesion ids)
    <data_dir>/dataset_info.json                       optional, {"synthetic": true} for the demo
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from skin_utils.data.imageio import (
    ColourMaskError,
    ImageReadError,
    binarise_mask,
    decode_image,
    mask_value_range,
    open_image,
    oriented_hw,
    to_rgb_array,
)
from skin_utils.labels import CLASS_NAMES, DX_TO_INDEX

__all__ = [
    "DataLayoutError",
    "DataQualityWarning",
    "DataReport",
    "DataValidationError",
    "LesionLeakageWarning",
    "Problem",
    "describe_folder",
    "find_images",
    "is_ignored",
    "load_index",
    "read_table",
    "split_mask_name",
    "validate_dataset",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: find_images also accepts these (inference on arbitrary folders).
INFERENCE_EXTENSIONS = IMAGE_EXTENSIONS + (".bmp", ".tif", ".tiff", ".webp")
MASK_SUFFIXES = ("_segmentation", "_mask")
ON_BAD_DATA = ("raise", "skip")  # stop with a report of every problem, or leave the bad items out
IMAGE_DIR_NAMES = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2")
MASK_DIR_NAMES = ("masks", "HAM10000_segmentations_lesion_tschandl")
METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
GROUNDTRUTH_NAMES = ("GroundTruth.csv", "ISIC2018_Task3_Training_GroundTruth.csv")
#: Junk that operating systems and archivers leave behind: listed as ignored, never an error.
IGNORED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "__macosx", ".ipynb_checkpoints"})

DATAVERSE = "Harvard Dataverse, doi:10.7910/DVN/DBW86T"
PREPARE_CMD = "python -m skin_utils.data.prepare DOWNLOADS_DIR --out data"
EXPECTED_LAYOUT = (
    "Expected layout:\n"
    "  <data_dir>/images/<image_id>.jpg               (.jpg/.jpeg/.png)\n"
    "  <data_dir>/masks/<image_id>_segmentation.png   (or <image_id>_mask.png; 0 = skin, 255 = lesion)\n"
    "  <data_dir>/HAM10000_metadata.csv               (lesion_id,image_id,dx,...; or GroundTruth.csv)\n"
    f"Build it from the official HAM10000 downloads ({DATAVERSE}) with\n"
    f"  {PREPARE_CMD}\n"
    "(see data/README.md)."
)

#: Mask pixel statistics that make a mask "not binary" (anti-aliased edges are fine).
MID_GREY_FRACTION = 0.05  # more than 5 % of pixels strictly between 10 % and 90 % of range
ASPECT_TOLERANCE = 0.01  # relative aspect-ratio difference allowed between mask and image
MAX_LISTED_PER_KIND = 20

# Every kind of problem, with the fix printed once per kind.
KIND_FIXES: dict[str, str] = {
    "missing_folder": f"point data_dir at the folder that holds images/, masks/ and the labels, or build it with `{PREPARE_CMD}`",
    "empty_folder": "put the files in it (re-extract the download), or remove the empty folder",
    "no_images": f"put the images in <data_dir>/images/ (build it with `{PREPARE_CMD}`)",
    "no_labels": "add HAM10000_metadata.csv (lesion_id,image_id,dx,...) or GroundTruth.csv (image,MEL,...,VASC) to data_dir",
    "bad_label_file": "use the official HAM10000_metadata.csv (columns lesion_id,image_id,dx,dx_type,age,sex,localization) or the ISIC 2018 GroundTruth.csv",
    "unreadable_image": "re-download or re-extract these images (they must open in an image viewer), or delete them",
    "unreadable_mask": "re-download or re-extract these masks (HAM10000_segmentations_lesion_tschandl.zip), or delete them",
    "not_an_image": "move these files out of the image/mask folders (only .jpg, .jpeg and .png are read); convert other image formats to .png",
    "unexpected_folder": "move the images inside these sub-folders up into the images/ (or masks/) folder itself; sub-folders are not read",
    "bad_mask_name": "rename masks to <image_id>_segmentation.png (or <image_id>_mask.png)",
    "missing_mask": "add masks/<image_id>_segmentation.png for these images, or remove the images",
    "missing_label": "add a row for these images to the labels file, or remove the images",
    "orphan_mask": "remove these masks, or add the images they belong to",
    "not_binary_mask": "save masks as single-channel 8-bit PNG with 0 = skin and 255 = lesion (anti-aliased edges are fine)",
    "aspect_mismatch": "use the mask that belongs to this image: masks may differ in size but must have the image's aspect ratio",
    "bad_label": f"use one of the seven classes {', '.join(CLASS_NAMES)} (GroundTruth.csv: exactly one 1 per row), or remove the row and its image",
    "duplicate_id": "keep exactly one file (and one labels row) per image id; delete the other copies",
}
FATAL_KINDS = frozenset({"missing_folder", "no_images", "no_labels"})


# --------------------------------------------------------------------------------------------
# errors, warnings, report
# --------------------------------------------------------------------------------------------
class DataValidationError(ValueError):
    """The data set has problems; ``.report`` is the full :class:`DataReport`."""

    def __init__(self, message: str, report: DataReport | None = None):
        super().__init__(message)
        self.report = report


class DataLayoutError(DataValidationError, FileNotFoundError):
    """No usable data set at all in the folder (nothing to index)."""


class DataQualityWarning(UserWarning):
    """Bad items were skipped (``on_bad_data="skip"``)."""


class LesionLeakageWarning(UserWarning):
    """The labels have no lesion ids: images of one lesion can end up in different splits."""


@dataclass
class Problem:
    """One problem: the ``path`` concerned, its ``kind`` (a key of KIND_FIXES), what is wrong
    (``message``) and what to do (``hint``). ``image_id`` names the image that cannot be used
    because of it (None for problems that do not make any image unusable, e.g. orphan masks)."""

    path: str
    kind: str
    message: str
    hint: str = ""
    image_id: str | None = None

    def __post_init__(self):
        if not self.hint:
            self.hint = KIND_FIXES.get(self.kind, "")

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"


@dataclass
class DataReport:
    """Everything :func:`validate_dataset` found. ``str(report)`` is the readable report."""

    data_dir: str
    problems: list[Problem] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    layout: dict[str, object] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    decoded: bool = True

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def fatal(self) -> list[Problem]:
        return [p for p in self.problems if p.kind in FATAL_KINDS]

    def by_kind(self) -> dict[str, list[Problem]]:
        groups: dict[str, list[Problem]] = defaultdict(list)
        for p in self.problems:
            groups[p.kind].append(p)
        return dict(groups)

    def _rel(self, path: str) -> str:
        try:
            rel = os.path.relpath(path, self.data_dir)
        except ValueError:  # other drive on Windows
            return path
        return path if rel.startswith("..") else rel

    def format_problems(self, max_per_kind: int = MAX_LISTED_PER_KIND) -> str:
        lines: list[str] = []
        for kind, items in self.by_kind().items():
            fix = KIND_FIXES.get(kind, items[0].hint)
            lines.append(f"[{kind}] {len(items)} problem{'s' if len(items) != 1 else ''}. Fix: {fix}")
            for p in items[:max_per_kind]:
                extra = f" ({p.hint})" if p.hint and p.hint != fix else ""
                lines.append(f"  - {self._rel(p.path)}: {p.message}{extra}")
            if len(items) > max_per_kind:
                lines.append(f"  ... and {len(items) - max_per_kind} more of this kind")
        return "\n".join(lines)

    def summary(self) -> str:
        kinds = Counter(p.kind for p in self.problems)
        return ", ".join(f"{n} {k}" for k, n in kinds.most_common()) or "no problems"

    def __str__(self) -> str:
        c = self.counts
        lines = [f"Data set {self.data_dir}"]
        if self.layout:
            lay = self.layout
            lines.append(
                f"  images: {c.get('images', 0)} files in {', '.join(lay.get('image_dirs') or ['-'])}"
            )
            lines.append(
                f"  masks:  {c.get('masks', 0)} files in {', '.join(lay.get('mask_dirs') or ['-'])}"
                + (f" (*{lay['mask_suffix']})" if lay.get("mask_suffix") else "")
            )
            lines.append(
                f"  labels: {c.get('labels', 0)} rows from {lay.get('label_file') or '-'}"
                + (f" ({lay.get('label_source')}, lesion ids: {'yes' if lay.get('has_lesion_ids') else 'NO'})"
                   if lay.get("label_source") else "")
            )
        if self.class_counts:
            lines.append("  classes: " + ", ".join(f"{k} {v}" for k, v in self.class_counts.items()))
        lines.append(f"  usable images: {c.get('usable', 0)}")
        if self.ignored:
            shown = ", ".join(self._rel(p) for p in self.ignored[:5])
            more = f" and {len(self.ignored) - 5} more" if len(self.ignored) > 5 else ""
            lines.append(f"  ignored (hidden/system files): {shown}{more}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        how = "headers + pixel checks" if self.decoded else "file names and sizes only, decode=False"
        lines.append(f"  checked in {self.seconds:.2f} s ({how})")
        if self.ok:
            lines.append("OK: no problems found.")
        else:
            lines.append(f"{len(self.problems)} PROBLEM(S) FOUND:")
            lines.append(self.format_problems())
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# scanning
# --------------------------------------------------------------------------------------------
def is_ignored(name: str) -> bool:
    """True for hidden files and operating-system/archiver junk (.DS_Store, Thumbs.db, __MACOSX, ...),
    which every reader here skips without complaint."""
    return name.startswith(".") or name.lower() in IGNORED_NAMES


def split_mask_name(stem: str) -> tuple[str, str] | None:
    """``("ISIC_1", "_segmentation")`` for the file stem ``ISIC_1_segmentation`` (any case of
    the suffixes in MASK_SUFFIXES); None for a stem that is not a mask name."""
    low = stem.lower()
    for suffix in MASK_SUFFIXES:
        if low.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)], stem[-len(suffix):]
    return None


def describe_folder(folder: Path, limit: int = 10) -> str:
    """A sentence for error messages: what ``folder`` contains (the first ``limit`` names)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as e:
        return f"(cannot list it: {e})"
    if not entries:
        return "It is empty."
    names = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    more = f", ... ({len(entries)} entries in all)" if len(entries) > limit else ""
    return "It contains: " + ", ".join(names) + more


def read_table(path: Path) -> pd.DataFrame:
    """A labels file as text: CSV or TSV (sniffed from the header line), every cell a stripped
    str, column names lower-cased."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        header = f.readline()
    sep = "\t" if header.count("\t") > header.count(",") else ","
    df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    df.columns = [str(c).strip().strip('"').lower() for c in df.columns]
    return df.apply(lambda s: s.str.strip())


def _parse_metadata(path: Path, problems: list[Problem]) -> tuple[dict[str, dict], bool] | None:
    """``(image_id -> {label, lesion_id, age, sex, localization}, has_lesion_ids)`` from
    HAM10000_metadata; None (and a bad_label_file problem) when it cannot be used. ``label`` is
    None for a diagnosis that is not one of the seven classes (reported as bad_label)."""
    try:
        df = read_table(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is reported, not raised
        problems.append(Problem(str(path), "bad_label_file", f"cannot be parsed as CSV/TSV ({e})"))
        return None
    missing = [c for c in ("image_id", "dx") if c not in df.columns]
    if missing:
        problems.append(Problem(
            str(path), "bad_label_file",
            f"has no column {', '.join(missing)} (columns: {', '.join(df.columns[:10]) or 'none'})",
        ))
        return None
    has_lesion = "lesion_id" in df.columns
    out: dict[str, dict] = {}
    conflicts: dict[str, set] = defaultdict(set)
    for r in df.to_dict("records"):
        image_id = r.get("image_id", "")
        if not image_id:
            continue
        dx = r.get("dx", "")
        entry = {
            "dx_raw": dx,
            "lesion_id": (r.get("lesion_id") or image_id) if has_lesion else image_id,
            "age": r.get("age", ""),
            "sex": r.get("sex", "") or "unknown",
            "localization": r.get("localization", "") or "unknown",
        }
        if image_id in out:
            conflicts[image_id].update({out[image_id]["dx_raw"], dx})
            if out[image_id]["dx_raw"] == dx:
                continue
        out[image_id] = entry
    for image_id, dxs in conflicts.items():
        if len(dxs) > 1:
            problems.append(Problem(
                str(path), "duplicate_id",
                f"{image_id} is listed more than once with different diagnoses ({', '.join(sorted(dxs))})",
                image_id=image_id,
            ))
    for image_id, e in out.items():
        dx = e.pop("dx_raw")
        idx = DX_TO_INDEX.get(dx.lower())
        if idx is None:
            problems.append(Problem(
                str(path), "bad_label",
                f"{image_id}: diagnosis {dx!r} is not one of the seven classes", image_id=image_id,
            ))
            e["label"] = None
        else:
            e["label"] = idx
    return out, has_lesion


def _parse_groundtruth(path: Path, problems: list[Problem]) -> tuple[dict[str, dict], bool] | None:
    """Like :func:`_parse_metadata` for the ISIC 2018 one-hot GroundTruth.csv (no lesion ids:
    ``lesion_id`` = image_id); rows that are not exactly one-hot get ``label`` None."""
    try:
        df = read_table(path)
    except Exception as e:  # noqa: BLE001
        problems.append(Problem(str(path), "bad_label_file", f"cannot be parsed as CSV ({e})"))
        return None
    id_col = next((c for c in ("image", "image_id") if c in df.columns), None)
    class_cols = [n.lower() for n in CLASS_NAMES]
    missing = ([] if id_col else ["image"]) + [n for n, c in zip(CLASS_NAMES, class_cols) if c not in df.columns]
    if missing:
        problems.append(Problem(
            str(path), "bad_label_file",
            f"has no column {', '.join(missing)} (columns: {', '.join(df.columns[:10]) or 'none'}); "
            "expected image,MEL,NV,BCC,AKIEC,BKL,DF,VASC",
        ))
        return None
    values = df[class_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    ids = df[id_col].tolist()
    out: dict[str, dict] = {}
    for image_id, row in zip(ids, values):
        if not image_id:
            continue
        one_hot = bool(np.isin(row, (0.0, 1.0)).all() and row.sum() == 1.0)
        if image_id in out:
            if out[image_id].get("_row") != tuple(row) and out[image_id]["label"] is not None:
                problems.append(Problem(
                    str(path), "duplicate_id", f"{image_id} is listed more than once with different labels",
                    image_id=image_id,
                ))
                out[image_id]["label"] = None
            continue
        entry = {"lesion_id": image_id, "age": "", "sex": "unknown", "localization": "unknown",
                 "_row": tuple(row), "label": int(np.argmax(row)) if one_hot else None}
        if not one_hot:
            shown = ", ".join(f"{n}={'?' if np.isnan(v) else f'{v:g}'}" for n, v in zip(CLASS_NAMES, row))
            problems.append(Problem(
                str(path), "bad_label", f"{image_id}: row is not exactly one-hot ({shown})", image_id=image_id,
            ))
        out[image_id] = entry
    for e in out.values():
        e.pop("_row", None)
    return out, False


# --------------------------------------------------------------------------------------------
# the phases of a scan
# --------------------------------------------------------------------------------------------
@dataclass
class _File:
    path: str
    size: int  # bytes
    suffix: str = ""  # masks: "_segmentation.png" etc.


@dataclass
class _Found:
    """What :func:`_find_files` found: the folders, and the files by image id."""

    root: Path
    entries: dict[str, os.DirEntry]  # the data folder's entries, by lower-case name
    image_dirs: list[Path]
    mask_dirs: list[Path]
    images: dict[str, list[_File]] = field(default_factory=lambda: defaultdict(list))
    masks: dict[str, list[_File]] = field(default_factory=lambda: defaultdict(list))

    def image(self, image_id: str) -> _File:
        return self.images[image_id][0]

    def mask(self, image_id: str) -> _File | None:
        return self.masks[image_id][0] if image_id in self.masks else None

    @property
    def has_masks(self) -> bool:
        """A mask folder or any mask file: then every image needs a mask."""
        return bool(self.mask_dirs or self.masks)


@dataclass
class _Labels:
    """What :func:`_read_labels` found: image_id -> label entry, and where it came from."""

    rows: dict[str, dict]
    source: str | None = None  # "metadata" | "groundtruth"
    file: str | None = None
    has_lesion_ids: bool = False


def _missing_folder(root: Path) -> Problem:
    """The problem of a data folder that is not there, with what its parent holds."""
    what = "is a file, not a folder" if root.exists() else "does not exist"
    parent = root.parent
    listing = describe_folder(parent) if parent.is_dir() else "Its parent folder does not exist either."
    return Problem(str(root), "missing_folder", f"the data folder {what}. Parent {parent}: {listing}")


def _find_files(root: Path, report: DataReport) -> _Found:
    """List the image and mask folders (or the data folder itself when there is no image
    folder) into a :class:`_Found`; report empty folders, stray files and no images at all, and
    note a data set without masks."""
    entries = {e.name.lower(): e for e in os.scandir(root)}

    def subdirs(names):
        return [Path(entries[n.lower()].path) for n in names
                if n.lower() in entries and entries[n.lower()].is_dir()]

    found = _Found(root, entries, image_dirs=subdirs(IMAGE_DIR_NAMES), mask_dirs=subdirs(MASK_DIR_NAMES))
    for folder in (found.image_dirs or [root]) + found.mask_dirs:
        _list_folder(folder, found, report)
    report.layout["image_dirs"] = [
        (os.path.relpath(d, root) + "/") if d != root else "./" for d in (found.image_dirs or [root])
    ]
    report.layout["mask_dirs"] = [os.path.relpath(d, root) + "/" for d in found.mask_dirs] or (
        ["./"] if found.masks else []
    )
    report.counts["images"] = sum(len(v) for v in found.images.values())
    report.counts["masks"] = sum(len(v) for v in found.masks.values())
    if not found.images:
        looked = ", ".join(n + "/" for n in IMAGE_DIR_NAMES) + " and the folder itself"
        report.problems.append(Problem(
            str(root), "no_images",
            f"no .jpg/.jpeg/.png images found (looked in {looked}). {describe_folder(root)}",
        ))
    if not found.has_masks:
        report.notes.append(
            "no masks found (looked for masks/ and HAM10000_segmentations_lesion_tschandl/): "
            "mask_path is None, the segmentation head cannot be trained or evaluated"
        )
    return found


def _list_folder(folder: Path, found: _Found, report: DataReport) -> None:
    """Sort one folder's files into ``found.images`` / ``found.masks`` (by the mask suffix of the
    name). In the data folder itself other files and sub-folders are fine; in an image or mask
    folder they are reported."""
    is_mask_dir, is_root = folder in found.mask_dirs, folder == found.root
    problems = report.problems
    n_files = 0
    for e in sorted(os.scandir(folder), key=lambda e: e.name):
        if is_ignored(e.name):
            report.ignored.append(e.path + ("/" if e.is_dir() else ""))
            continue
        if e.is_dir():
            if not is_root:
                problems.append(Problem(e.path, "unexpected_folder", "a sub-folder inside an image/mask folder"))
            continue
        n_files += 1
        stem, ext = os.path.splitext(e.name)
        if ext.lower() not in IMAGE_EXTENSIONS:
            if not is_root:
                problems.append(Problem(e.path, "not_an_image",
                                        f"not a .jpg/.jpeg/.png file ({ext or 'no extension'})"))
            continue
        split = split_mask_name(stem)
        if split is not None:
            found.masks[split[0]].append(_File(e.path, e.stat().st_size, split[1] + ext))
        elif is_mask_dir:
            problems.append(Problem(e.path, "bad_mask_name",
                                    "file name does not end in _segmentation.png or _mask.png"))
        else:
            found.images[stem].append(_File(e.path, e.stat().st_size))
    if n_files == 0 and not is_root:
        what = "mask" if is_mask_dir else "image"
        problems.append(Problem(str(folder), "empty_folder",
                                f"the {what} folder is empty. {describe_folder(folder)}"))


def _report_duplicates(found: _Found, problems: list[Problem]) -> None:
    """One duplicate_id problem per image id with more than one image file or mask file."""
    for what, files_by_id in (("image id", found.images), ("mask for", found.masks)):
        for image_id, files in files_by_id.items():
            if len(files) > 1:
                problems.append(Problem(
                    files[0].path, "duplicate_id",
                    f"{what} {image_id} appears {len(files)} times: "
                    + ", ".join(os.path.relpath(f.path, found.root) for f in files),
                    image_id=image_id if image_id in found.images else None,
                ))


def _read_labels(found: _Found, report: DataReport) -> _Labels:
    """Parse the first labels file found (HAM10000_metadata before GroundTruth.csv); no usable
    one is a no_labels problem. Labels without lesion ids get a note (and a warning in load_index)."""
    labels = None
    for names, parser, source in ((METADATA_NAMES, _parse_metadata, "metadata"),
                                  (GROUNDTRUTH_NAMES, _parse_groundtruth, "groundtruth")):
        e = next((found.entries[n.lower()] for n in names
                  if n.lower() in found.entries and found.entries[n.lower()].is_file()), None)
        if e is not None:
            parsed = parser(Path(e.path), report.problems)
            if parsed is not None:
                labels = _Labels(parsed[0], source, e.name, parsed[1])
                break
    if labels is None:
        labels = _Labels({})
        report.problems.append(_no_labels(found, report.problems))
    report.layout.update(label_file=labels.file, label_source=labels.source,
                         has_lesion_ids=labels.has_lesion_ids)
    report.counts["labels"] = len(labels.rows)
    if labels.source and not labels.has_lesion_ids:
        report.notes.append(
            f"{labels.file} has no lesion ids: lesion_id = image_id, so near-duplicate images of one "
            "lesion may leak across splits (add HAM10000_metadata.csv to split by lesion)"
        )
    return labels


def _no_labels(found: _Found, problems: list[Problem]) -> Problem:
    if any(p.kind == "bad_label_file" for p in problems):
        return Problem(str(found.root), "no_labels", "no usable labels file (see bad_label_file)")
    return Problem(
        str(found.root), "no_labels",
        f"no labels file ({', '.join(METADATA_NAMES + GROUNDTRUTH_NAMES)})."
        + (f" {describe_folder(found.root)}" if found.images else ""),
    )


def _pair_files_and_labels(found: _Found, labels: _Labels, report: DataReport) -> None:
    """Every image needs a mask (when the data set has masks) and a labels row; every mask an
    image. Label rows without an image are only a note (a subset of HAM10000 is fine)."""
    for image_id in sorted(found.images):
        path = found.image(image_id).path
        if found.has_masks and image_id not in found.masks:
            report.problems.append(Problem(
                path, "missing_mask", f"no mask {image_id}_segmentation.png (or {image_id}_mask.png)",
                image_id=image_id,
            ))
        if (labels.rows or labels.source) and image_id not in labels.rows:
            report.problems.append(Problem(
                path, "missing_label", f"{image_id} has no row in {labels.file or 'the labels'}",
                image_id=image_id,
            ))
    for image_id in sorted(found.masks):
        if image_id not in found.images:
            for f in found.masks[image_id]:
                report.problems.append(Problem(f.path, "orphan_mask",
                                               f"no image {image_id}.jpg/.png for this mask"))
    unlabelled_rows = [i for i in labels.rows if i not in found.images]
    if unlabelled_rows and found.images:
        report.notes.append(
            f"{len(unlabelled_rows)} of {len(labels.rows)} label rows have no image "
            f"(e.g. {unlabelled_rows[0]}); fine for a subset of HAM10000"
        )


def _check_pixels(found: _Found, problems: list[Problem]) -> None:
    """Read every image and mask as training reads them (:func:`_check_image`,
    :func:`_check_mask`) and compare their aspect ratios. Serial on purpose: decoding small
    files is GIL-bound, threads measured slower."""
    for image_id in sorted(found.images):
        image, mask = found.image(image_id), found.mask(image_id)
        image_hw, image_problem = _check_image(image.path)
        mask_hw, mask_problem = _check_mask(mask.path) if mask else (None, None)
        found_problems = [image_problem, mask_problem]
        if image_hw and mask_hw:
            found_problems.append(_aspect_problem(mask.path, image_hw, mask_hw))
        for prob in found_problems:
            if prob is not None:
                prob.image_id = image_id
                problems.append(prob)


def _check_file_sizes(found: _Found, problems: list[Problem]) -> None:
    """``decode=False``: only what a stat() shows, empty files."""
    for image_id in sorted(found.images):
        pairs = [(found.image(image_id), "unreadable_image"), (found.mask(image_id), "unreadable_mask")]
        for f, kind in pairs:
            if f is not None and f.size == 0:
                problems.append(Problem(f.path, kind, "the file is empty (0 bytes)", image_id=image_id))


def _check_image(path: str) -> tuple[tuple[int, int] | None, Problem | None]:
    """Read an image with the steps of `imageio.read_image` (JPEGs decoded at draft scale, which
    still reads the whole stream). Returns ((H, W) after EXIF rotation, None) or (None, problem)."""
    try:
        with open_image(path) as img:
            hw = oriented_hw(img)
            to_rgb_array(decode_image(img, path, draft=True), path)
    except ImageReadError as e:
        return None, Problem(path, "unreadable_image", e.reason)
    return hw, None


def _check_mask(path: str) -> tuple[tuple[int, int] | None, Problem | None]:
    """Read a mask with the steps of `imageio.read_mask` and judge its values
    (:func:`_mask_verdict`). Returns ((H, W) after EXIF rotation or None, problem or None)."""
    try:
        with open_image(path) as img:
            hw = oriented_hw(img)
            values, full_range = mask_value_range(decode_image(img, path), path)
    except ColourMaskError as e:
        return None, Problem(path, "not_binary_mask", e.reason)
    except ImageReadError as e:
        return None, Problem(path, "unreadable_mask", e.reason)
    verdict = _mask_verdict(values, full_range)
    return hw, (Problem(path, "not_binary_mask", verdict) if verdict else None)


def _mask_verdict(values: np.ndarray, full_range: float) -> str | None:
    """Why these mask values are not a usable binary mask, or None when they are fine: empty
    once binarised by `imageio.binarise_mask` (the rule that reads it) although not all zero (a
    label map, or a mask scaled wrongly), or too many mid-grey pixels (a soft map, a photo)."""
    if values.size == 0:
        return "the mask has no pixels"
    hi = values.max()  # the rule is a threshold: the brightest pixel decides whether any is lesion
    if hi > 0 and not binarise_mask(hi, full_range):
        distinct = np.unique(values)
        shown = ", ".join(f"{v:g}" for v in distinct[:8]) + (" ..." if len(distinct) > 8 else "")
        return (f"looks like a label map or wrongly scaled mask: max value {hi:g} of {full_range:g} "
                f"(values {shown}); binarised at half range it would be empty")
    lo_grey, hi_grey = 0.1 * full_range, 0.9 * full_range
    if values.dtype.kind in "ui":  # the same test with integer bounds: 3x faster than against floats
        lo_grey, hi_grey = math.floor(lo_grey), math.ceil(hi_grey)
    mid = np.count_nonzero((values > lo_grey) & (values < hi_grey)) / values.size
    if mid > MID_GREY_FRACTION:
        return (f"not binary: {len(np.unique(values))} distinct values and {mid:.0%} of pixels are "
                f"mid-grey (between 10% and 90% of range); a soft/probability map or a photo?")
    return None


def _aspect_problem(mask_path: str, image_hw: tuple[int, int], mask_hw: tuple[int, int]) -> Problem | None:
    """aspect_mismatch when the mask's width/height differs from the image's by more than
    ASPECT_TOLERANCE (masks may have another size, never another shape)."""
    (ih, iw), (mh, mw) = image_hw, mask_hw
    ai, am = iw / ih, mw / mh
    if abs(am - ai) / ai <= ASPECT_TOLERANCE:
        return None
    return Problem(mask_path, "aspect_mismatch",
                   f"mask is {mw}x{mh} px (width x height, aspect {am:.3f}) but its image is "
                   f"{iw}x{ih} px (aspect {ai:.3f})")


def _index_rows(found: _Found, labels: _Labels, problems: list[Problem]) -> list[dict]:
    """One row per labelled image (``_bad`` when a problem names it), with the file sizes and mask
    suffix that the fingerprint and the report need."""
    bad_ids = {p.image_id for p in problems if p.image_id is not None}
    rows: list[dict] = []
    for image_id in sorted(found.images):
        e = labels.rows.get(image_id)
        if e is None or e.get("label") is None:
            continue
        f, m = found.image(image_id), found.mask(image_id)
        rows.append({
            "image_id": image_id,
            "image_path": f.path,
            "mask_path": m.path if m else None,
            "label": int(e["label"]),
            "dx": CLASS_NAMES[e["label"]],
            "lesion_id": e["lesion_id"] or image_id,
            "age": e["age"],
            "sex": e["sex"],
            "localization": e["localization"],
            "_image_size": f.size,
            "_mask_size": m.size if m else -1,
            "_mask_suffix": m.suffix if m else None,
            "_bad": image_id in bad_ids,
        })
    return rows


def _summarise(report: DataReport, rows: list[dict]) -> None:
    """Counts, class counts and the usual mask suffix of the usable rows."""
    good = [r for r in rows if not r["_bad"]]
    suffixes = Counter(r["_mask_suffix"] for r in good if r["_mask_suffix"])
    report.layout["mask_suffix"] = suffixes.most_common(1)[0][0] if suffixes else None
    report.counts["usable"] = len(good)
    report.counts["problems"] = len(report.problems)
    report.counts["ignored"] = len(report.ignored)
    cc = Counter(r["dx"] for r in good)
    report.class_counts = {n: cc[n] for n in CLASS_NAMES if cc[n]}


def _scan(data_dir: str | os.PathLike, decode: bool = True) -> tuple[DataReport, list[dict]]:
    """Check a data folder, phase by phase; returns the report and the index rows."""
    t0 = time.perf_counter()
    root = Path(os.path.abspath(Path(data_dir).expanduser()))
    report = DataReport(data_dir=str(root), decoded=decode)
    rows: list[dict] = []
    if not root.is_dir():
        report.problems.append(_missing_folder(root))
    else:
        found = _find_files(root, report)
        _report_duplicates(found, report.problems)
        labels = _read_labels(found, report)
        _pair_files_and_labels(found, labels, report)
        (_check_pixels if decode else _check_file_sizes)(found, report.problems)
        rows = _index_rows(found, labels, report.problems)
        _summarise(report, rows)
    report.seconds = time.perf_counter() - t0
    return report, rows


def validate_dataset(data_dir: str | os.PathLike, decode: bool = True) -> DataReport:
    """Check a data folder and return a :class:`DataReport` listing every problem found.

    ``decode=True`` also reads every image and mask as training does (`skin_utils.data.imageio`):
    each image must decode to the end (JPEGs with a fast DCT-scaled decode) and convert to RGB,
    each mask must be binary by `imageio.binarise_mask` without being empty or mostly mid-grey,
    and mask and image must have the same aspect ratio after EXIF rotation. ``decode=False``
    checks names, pairing, labels and file sizes only.
    Never raises for bad data (a missing folder is reported as a ``missing_folder`` problem).
    """
    return _scan(data_dir, decode)[0]


# --------------------------------------------------------------------------------------------
# the index
# --------------------------------------------------------------------------------------------
def _fingerprint(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in sorted(rows, key=lambda r: r["image_id"]):
        h.update(f"{r['image_id']}\t{r['_image_size']}\t{r['_mask_size']}\t{r['label']}\n".encode())
    return h.hexdigest()[:12]


def _is_synthetic(root: Path) -> bool:
    info = root / "dataset_info.json"
    if not info.is_file():
        return False
    try:
        return bool(json.loads(info.read_text(encoding="utf-8")).get("synthetic", False))
    except (OSError, ValueError, AttributeError):
        return False


def _layout_error(report: DataReport) -> DataLayoutError:
    fatal = report.fatal
    head = f"No usable data set in {report.data_dir}:"
    body = "\n".join(f"  - {p.message}" for p in fatal)
    hint = ""
    name = Path(report.data_dir).name
    if name in IMAGE_DIR_NAMES + MASK_DIR_NAMES:
        hint = f"\n(This looks like the {name}/ folder itself: pass its parent folder as data_dir.)"
    others = [p for p in report.problems if p.kind not in FATAL_KINDS]
    extra = f"\nOther problems:\n{report.format_problems()}" if others else ""
    return DataLayoutError(f"{head}\n{body}{hint}\n{EXPECTED_LAYOUT}{extra}", report)


def load_index(
    data_dir: str | os.PathLike, on_bad_data: str = "raise", decode: bool = True
) -> pd.DataFrame:
    """The index of a data set (see docs/CONTRACTS.md): one row per usable image, by image_id.

    ``on_bad_data="raise"`` (default) raises :class:`DataValidationError` listing every problem;
    ``"skip"`` drops the affected images, warns once (:class:`DataQualityWarning`) and keeps the
    list in ``df.attrs["problems"]``. A folder without any usable images or labels always raises
    :class:`DataLayoutError`. ``decode=False`` skips the pixel checks (fast, names/labels only).
    """
    if on_bad_data not in ON_BAD_DATA:
        raise ValueError(f"on_bad_data must be one of {ON_BAD_DATA}, got {on_bad_data!r}")
    report, rows = _scan(data_dir, decode)
    if report.fatal:
        raise _layout_error(report)
    if report.problems and on_bad_data == "raise":
        raise DataValidationError(
            f"Data set {report.data_dir} has {len(report.problems)} problem(s) ({report.summary()}).\n"
            f"{report.format_problems()}\n"
            'Fix them, or call load_index(..., on_bad_data="skip") to drop the affected images '
            "(python -m skin_utils.data.layout DATA_DIR prints the full report).",
            report,
        )
    good = [r for r in rows if not r["_bad"]]
    if not good:
        raise DataValidationError(
            f"No usable images left in {report.data_dir} ({report.summary()}).\n{report.format_problems()}",
            report,
        )
    if report.problems:
        warnings.warn(
            f"Skipped {len(rows) - len(good)} image(s) of {report.data_dir} and ignored "
            f"{len(report.problems)} problem(s) ({report.summary()}); kept {len(good)} images. "
            'See df.attrs["problems"].',
            DataQualityWarning,
            stacklevel=2,
        )
    lay = report.layout
    if not lay.get("has_lesion_ids"):
        warnings.warn(
            f"{lay.get('label_file')} has no lesion ids, so lesion_id = image_id. HAM10000 holds several "
            "images of the same lesion: NEAR-DUPLICATE IMAGES OF ONE LESION MAY LEAK ACROSS "
            "TRAIN/VALIDATION/TEST SPLITS and inflate every score. Put HAM10000_metadata.csv "
            "(with lesion_id) in the data folder to split by lesion.",
            LesionLeakageWarning,
            stacklevel=2,
        )
    df = pd.DataFrame({
        "image_id": [r["image_id"] for r in good],
        "image_path": [r["image_path"] for r in good],
        "mask_path": pd.Series([r["mask_path"] for r in good], dtype=object),
        "label": np.array([r["label"] for r in good], dtype=np.int64),
        "dx": [r["dx"] for r in good],
        "lesion_id": [r["lesion_id"] for r in good],
        "age": pd.to_numeric(pd.Series([r["age"] for r in good], dtype=object), errors="coerce").astype(float),
        "sex": [r["sex"] or "unknown" for r in good],
        "localization": [r["localization"] or "unknown" for r in good],
    })
    df.attrs.update(
        data_dir=report.data_dir,
        label_source=lay.get("label_source"),
        mask_suffix=lay.get("mask_suffix"),
        has_lesion_ids=bool(lay.get("has_lesion_ids")),
        fingerprint=_fingerprint(good),
        synthetic=_is_synthetic(Path(report.data_dir)),
        problems=[str(p) for p in report.problems],
    )
    return df


def find_images(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Image files (by extension, case-insensitive: .jpg .jpeg .png .bmp .tif .tiff .webp) in
    ``folder`` and, when ``recursive``, its sub-folders; sorted by path. Hidden files and folders
    and system junk (.DS_Store, Thumbs.db, __MACOSX/) are skipped. A single image path gives
    ``[path]``. For inference on unlabelled folders."""
    p = Path(folder).expanduser()
    if p.is_file():
        if p.suffix.lower() in INFERENCE_EXTENSIONS:
            return [p]
        raise ValueError(f"{p} is not an image file (expected {', '.join(INFERENCE_EXTENSIONS)})")
    if not p.is_dir():
        raise FileNotFoundError(f"No such folder: {p}")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(p):
        dirnames[:] = [d for d in dirnames if not is_ignored(d)] if recursive else []
        found.extend(
            Path(dirpath) / name for name in filenames
            if not is_ignored(name) and os.path.splitext(name)[1].lower() in INFERENCE_EXTENSIONS
        )
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    """``python -m skin_utils.data.layout DATA_DIR [--fast]``: print the validation report."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m skin_utils.data.layout", description=main.__doc__)
    ap.add_argument("data_dir")
    ap.add_argument("--fast", action="store_true", help="names/labels only, no pixel checks")
    args = ap.parse_args(argv)
    report = validate_dataset(args.data_dir, decode=not args.fast)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
