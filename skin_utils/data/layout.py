"""Finding, checking and indexing a data set of dermoscopy images on disk (HAM10000 or any other).

* :func:`validate_dataset` walks a data folder once, collects **every** problem (with the file,
  what is wrong and what to do) and returns a :class:`DataReport`.
* :func:`load_index` turns a valid folder into the index ``DataFrame`` of docs/design.md, and
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

    <data_dir>/images/<image_id>.jpg                   .jpg .jpeg .png .bmp .tif .tiff; also
                                                       HAM10000_images_part_1/ and _part_2/, or
                                                       the images directly in <data_dir>
    <data_dir>/masks/<image_id>_segmentation.png       also <image_id>_mask.*, <image_id>_lesion.*
                                                       (any of those formats, any size with the
                                                       image's aspect), also next to the images
                                                       and in HAM10000_segmentations_lesion_tschandl/
    <data_dir>/HAM10000_metadata.csv                   (.tab / no extension: tab-separated ok)
       or <data_dir>/GroundTruth.csv                   ISIC 2018 Task 3 one-hot (no lesion ids)
       or any <data_dir>/*.csv|.tsv|.tab               an image-id column and a diagnosis column
                                                       (names detected, or id_column= and
                                                       label_column=), or one-hot class columns
                                                       (ISIC 2019: MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK)
    <data_dir>/dataset_info.json                       optional, {"synthetic": true} for the demo

Diagnosis names are mapped onto our seven classes by `skin_utils.data.label_map` (built-in
synonyms, plus a ``label_map``); a name that maps to nothing is a ``bad_label`` problem, and the
error lists every such name with a ``label_map`` to start from.

What a folder holds decides what can be scored: labels and masks, labels only (``mask_path``
None), masks only (``label`` -1, ``dx`` None: no labels file at all) or neither (a
:class:`DataLayoutError` that points to ``notebooks/04_inference``). By default every image must
have what the set has (a labels row when there is a labels file, a mask when there are masks);
``partial=True`` (for scoring a folder, not for training) keeps an image that lacks one of them,
with ``has_label`` / ``has_mask`` False.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
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
from skin_utils.data.label_map import map_labels, normalise_name, parse_label_map, suggest_label_map
from skin_utils.labels import CLASS_NAMES

__all__ = [
    "DataLayoutError",
    "DataQualityWarning",
    "DataReport",
    "DataValidationError",
    "LesionLeakageWarning",
    "Problem",
    "clean_image_id",
    "describe_folder",
    "find_images",
    "is_ignored",
    "load_index",
    "read_table",
    "split_mask_name",
    "unknown_labels_message",
    "validate_dataset",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")  # images and masks of a data set
#: find_images also accepts these (inference on arbitrary folders).
INFERENCE_EXTENSIONS = IMAGE_EXTENSIONS + (".webp",)
MASK_SUFFIXES = ("_segmentation", "_mask", "_lesion")
_EXTS = "/".join(IMAGE_EXTENSIONS)  # ".jpg/.jpeg/.png/..." for messages
ON_BAD_DATA = ("raise", "skip")  # stop with a report of every problem, or leave the bad items out
IMAGE_DIR_NAMES = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2")
MASK_DIR_NAMES = ("masks", "HAM10000_segmentations_lesion_tschandl")
METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata")
GROUNDTRUTH_NAMES = ("GroundTruth.csv", "ISIC2018_Task3_Training_GroundTruth.csv")
#: Any other table in the data folder with these extensions is read as labels when it has an
#: image-id column and a diagnosis column (or one-hot class columns).
LABEL_TABLE_EXTENSIONS = (".csv", ".tsv", ".tab")
#: Column names detected, in order of preference (compared lower-case, spaces/hyphens as "_").
ID_COLUMNS = ("image_id", "image", "isic_id", "image_name", "img_id", "image_file", "filename",
              "file_name", "file", "id", "name")
DX_COLUMNS = ("dx", "diagnosis", "diagnostic", "label", "class", "class_name", "target")
LESION_COLUMNS = ("lesion_id", "lesion")
#: Lesion-id cells that mean "not known" (compared lower-case): such an image is its own lesion
#: (lesion_id = image_id), never one pseudo-lesion shared by all of them.
MISSING_LESION_IDS = frozenset({"", "na", "n/a", "nan", "none", "null", "-", "--", "?", "unknown", "missing"})
AGE_COLUMNS = ("age", "age_approx")
SEX_COLUMNS = ("sex", "gender")
SITE_COLUMNS = ("localization", "anatom_site_general", "anatom_site_general_challenge", "anatom_site",
                "location", "region", "site")
#: Junk that operating systems and archivers leave behind: listed as ignored, never an error.
IGNORED_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini", "__macosx", ".ipynb_checkpoints"})

DATAVERSE = "Harvard Dataverse, doi:10.7910/DVN/DBW86T"
PREPARE_CMD = "python -m skin_utils.data.prepare DOWNLOADS_DIR --out data"
INFERENCE_CMD = "papermill notebooks/04_inference.ipynb reports/inference.ipynb -p input_dir {folder} -p run latest"
EXPECTED_LAYOUT = (
    "Expected layout:\n"
    "  <data_dir>/images/<image_id>.jpg               (.jpg/.jpeg/.png/.bmp/.tif)\n"
    "  <data_dir>/masks/<image_id>_segmentation.png   (or _mask / _lesion; 0 = skin, 255 = lesion)\n"
    "  <data_dir>/HAM10000_metadata.csv               (lesion_id,image_id,dx,...; or GroundTruth.csv,\n"
    "                                                  or any CSV with an image-id and a diagnosis column)\n"
    "Labels and masks are each optional, but one of them is needed to score anything.\n"
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
    "no_labels": ("add a labels CSV to data_dir (HAM10000_metadata.csv, GroundTruth.csv, or any CSV with an image-id "
                  "column and a diagnosis column; id_column= / label_column= name them) or masks; a folder of images "
                  "alone can only be predicted on (notebooks/04_inference)"),
    "bad_label_file": ("give the labels file an image-id column (image_id, image, isic_id, ...) and a diagnosis column "
                       "(dx, diagnosis, label, ...) or one-hot class columns (MEL,NV,...), or name its columns with "
                       "id_column= and label_column="),
    "unreadable_image": "re-download or re-extract these images (they must open in an image viewer), or delete them",
    "unreadable_mask": "re-download or re-extract these masks (HAM10000_segmentations_lesion_tschandl.zip), or delete them",
    "not_an_image": "move these files out of the image/mask folders (only .jpg, .jpeg, .png, .bmp and .tif are read); convert other image formats to .png",
    "unexpected_folder": "move the images inside these sub-folders up into the images/ (or masks/) folder itself; sub-folders are not read",
    "bad_mask_name": "rename masks to <image_id>_segmentation.png (or <image_id>_mask.png, <image_id>_lesion.png)",
    "missing_mask": "add masks/<image_id>_segmentation.png for these images, or remove the images (partial=True keeps them, unscored for segmentation)",
    "missing_label": "add a row for these images to the labels file, or remove the images (partial=True keeps them, unscored for classification)",
    "orphan_mask": "remove these masks, or add the images they belong to",
    "not_binary_mask": "save masks as single-channel 8-bit PNG with 0 = skin and 255 = lesion (anti-aliased edges are fine)",
    "aspect_mismatch": "use the mask that belongs to this image: masks may differ in size but must have the image's aspect ratio",
    "bad_label": (f"map every diagnosis onto one of the seven classes {', '.join(CLASS_NAMES)} with label_map "
                  "(the error and the report show one to start from; one-hot files: exactly one 1 per row), or leave these "
                  'images out with on_bad_data="skip"'),
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
    """The labels have no lesion ids (or some images lack one): images of one lesion can end up
    in different splits."""


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
                + (f" ({lay.get('label_source')}: columns {lay.get('id_column')} / {lay.get('label_column')}, "
                   f"lesion ids: {'yes' if lay.get('has_lesion_ids') else 'NO'})"
                   if lay.get("label_source") else "")
            )
        if self.class_counts:
            lines.append("  classes: " + ", ".join(f"{k} {v}" for k, v in self.class_counts.items()))
        mapped = {k: v for k, v in (self.layout.get("label_mapping") or {}).items()
                  if normalise_name(k) != normalise_name(v)}
        if mapped:
            lines.append("  diagnosis names mapped: " + ", ".join(f"{k} -> {v}" for k, v in mapped.items()))
        if self.layout.get("unknown_labels"):
            lines.append("  diagnosis names that map to no class: "
                         + ", ".join(f"{k} {v}" for k, v in self.layout["unknown_labels"].items())
                         + f"; label_map to start from: {self.layout.get('suggested_label_map')}")
        lines.append(f"  usable images: {c.get('usable', 0)} ({c.get('with_label', 0)} with a diagnosis, "
                     f"{c.get('with_mask', 0)} with a mask)")
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


def _column_key(name) -> str:
    """A column name as compared: lower case, spaces and hyphens as "_" ("Image ID" -> "image_id")."""
    return normalise_name(name).replace(" ", "_")


def _find_column(columns, wanted: str | None, candidates) -> str | None:
    """The column named ``wanted`` (when given), else the first of ``candidates`` present."""
    keys: dict[str, str] = {}
    for c in columns:
        keys.setdefault(_column_key(c), c)
    if wanted is not None:
        return keys.get(_column_key(wanted))
    return next((keys[k] for k in candidates if k in keys), None)


def clean_image_id(value: str) -> str:
    """An image id as a labels file writes it -> the image's file stem: folders and a known image
    extension dropped (``"NEL/Nel026.jpg"`` -> ``"Nel026"``, ``"ISIC_0024306"`` unchanged)."""
    name = str(value).strip().replace("\\", "/").rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in INFERENCE_EXTENSIONS else name


@dataclass
class _Options:
    """How to read labels: the parsed label_map, the column overrides, partial or not."""

    label_map: dict[str, str | None] = field(default_factory=dict)
    label_column: str | None = None
    id_column: str | None = None
    partial: bool = False


@dataclass
class _Table:
    """How one labels table is read: its columns."""

    id_col: str
    dx_col: str | None = None  # a column of diagnosis names, or
    onehot_cols: list[str] = field(default_factory=list)  # one column per diagnosis, 0/1
    lesion_col: str | None = None
    age_col: str | None = None
    sex_col: str | None = None
    site_col: str | None = None


def _onehot_columns(df: pd.DataFrame, columns: list[str], opts: _Options) -> list[str]:
    """Columns of numbers in [0, 1] (empty cells allowed), when at least two of their names map to
    our classes (ISIC 2018: MEL..VASC; ISIC 2019 also AK, SCC, UNK); else []."""
    numeric = []
    for c in columns:
        cells = df[c][df[c] != ""]
        values = pd.to_numeric(cells, errors="coerce")
        if len(cells) and values.notna().all() and values.between(0, 1).all():
            numeric.append(c)
    mapped, _ = map_labels(numeric, opts.label_map)
    return numeric if sum(m is not None for m in mapped) >= 2 else []


def _interpret(df: pd.DataFrame, opts: _Options) -> _Table | str:
    """How to read ``df`` as labels, or why it cannot be (a sentence)."""
    cols = list(df.columns)
    id_col = _find_column(cols, opts.id_column, ID_COLUMNS)
    rest = [c for c in cols if c != id_col]
    dx_col = _find_column(rest, opts.label_column, DX_COLUMNS)
    onehot = [] if dx_col or opts.label_column else _onehot_columns(df, rest, opts)
    missing = []
    if id_col is None:
        missing.append(opts.id_column or "image_id")
    if dx_col is None and not onehot:
        missing.append(opts.label_column or "dx")
    if missing:
        also = []
        if id_col is None and opts.id_column is None:
            also.append("an image-id column: " + ", ".join(ID_COLUMNS[1:]))
        if dx_col is None and opts.label_column is None:
            also.append("a diagnosis column: " + ", ".join(DX_COLUMNS[1:]) + "; or one-hot class columns MEL,NV,...")
        nor = f" (nor {'; nor '.join(also)})" if also else ""
        return f"has no column {', '.join(missing)}{nor} (columns: {', '.join(cols[:12]) or 'none'})"
    others = [c for c in rest if c != dx_col and c not in onehot]
    return _Table(
        id_col=id_col, dx_col=dx_col, onehot_cols=onehot,
        lesion_col=_find_column(others, None, LESION_COLUMNS), age_col=_find_column(others, None, AGE_COLUMNS),
        sex_col=_find_column(others, None, SEX_COLUMNS), site_col=_find_column(others, None, SITE_COLUMNS),
    )


def _diagnoses(df: pd.DataFrame, how: _Table, path: Path, problems: list[Problem],
               wanted: set[str]) -> dict[str, dict]:
    """``image_id -> {"name": the set's diagnosis name (None for a bad one-hot row), metadata}``;
    duplicate_id problems for ids listed twice with different diagnoses, bad_label problems for
    one-hot rows that are not exactly one-hot (both only for ids in ``wanted``)."""
    out: dict[str, dict] = {}
    conflicts: dict[str, set] = defaultdict(set)
    written = [clean_image_id(v) for v in df[how.id_col]]
    match = _case_matcher(wanted)
    ids = [match(i) for i in written]
    if how.onehot_cols:
        values = df[how.onehot_cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        shown_names = [c.upper() for c in how.onehot_cols]
    records = df.to_dict("records")
    for k, (image_id, r) in enumerate(zip(ids, records)):
        if not image_id:
            continue
        if how.onehot_cols:
            row = values[k]
            one_hot = bool(np.isin(row, (0.0, 1.0)).all() and row.sum() == 1.0)
            name = shown_names[int(np.argmax(row))] if one_hot else None
            key = tuple(row)
        else:
            name = key = r[how.dx_col]
        lesion = r[how.lesion_col] if how.lesion_col else ""
        entry = {
            "name": name, "_key": key,
            "lesion_id": image_id if lesion.strip().lower() in MISSING_LESION_IDS else lesion,
            "missing_lesion_id": bool(how.lesion_col) and lesion.strip().lower() in MISSING_LESION_IDS,
            "age": r[how.age_col] if how.age_col else "",
            "sex": (r[how.sex_col] if how.sex_col else "") or "unknown",
            "localization": (r[how.site_col] if how.site_col else "") or "unknown",
        }
        if image_id in out:
            if out[image_id]["_key"] != key:
                conflicts[image_id].update({str(out[image_id]["name"]), str(name)})
            continue
        out[image_id] = entry
        if how.onehot_cols and not one_hot and image_id in wanted:
            shown = ", ".join(f"{n}={'?' if np.isnan(v) else f'{v:g}'}" for n, v in zip(shown_names, row))
            problems.append(Problem(
                str(path), "bad_label", f"{image_id}: row is not exactly one-hot ({shown})", image_id=image_id,
            ))
    for image_id, names in conflicts.items():
        out[image_id]["conflict"] = True
        if image_id in wanted:
            problems.append(Problem(
                str(path), "duplicate_id",
                f"{image_id} is listed more than once with different diagnoses ({', '.join(sorted(names))})",
                image_id=image_id,
            ))
    for e in out.values():
        e.pop("_key")
    recased = {i for i, w in zip(ids, written) if i != w}
    for image_id in recased & set(out):
        out[image_id]["recased"] = True
    return out


def _parse_labels(path: Path, source: str, opts: _Options, problems: list[Problem],
                  wanted: set[str]) -> _Labels | str:
    """Read one labels table: each image's diagnosis mapped onto our classes (``label`` the class
    index, or None with a ``status`` saying why: "bad_row", "conflict", "empty", "unknown" or
    "dropped" (label_map maps it to null)). Returns a :class:`_Labels`, or why the table is not
    one (a sentence). Problems are reported only for ids in ``wanted`` (those with an image)."""
    try:
        df = read_table(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is reported, not raised
        return f"cannot be parsed as CSV/TSV ({e})"
    how = _interpret(df, opts)
    if isinstance(how, str):
        return how
    rows = _diagnoses(df, how, path, problems, wanted)
    names = sorted({e["name"] for e in rows.values() if e["name"]})
    classes, unknown = map_labels(names, opts.label_map)
    by_name = dict(zip(names, classes))
    unknown = set(unknown)
    for image_id, e in rows.items():
        name = e["name"]
        if e.pop("conflict", False) or name is None:
            e["label"], e["status"] = None, "bad_row"
        elif not name:
            e["label"], e["status"] = None, "empty"
            if not opts.partial and image_id in wanted:
                problems.append(Problem(str(path), "bad_label", f"{image_id}: no diagnosis (empty {how.dx_col} cell)",
                                        image_id=image_id))
        elif name in unknown:
            e["label"], e["status"] = None, "unknown"
            if image_id in wanted:
                problems.append(Problem(
                    str(path), "bad_label",
                    f"{image_id}: diagnosis {name!r} is not one of the seven classes, and no synonym or "
                    "label_map entry maps it", image_id=image_id))
        elif by_name[name] is None:
            e["label"], e["status"] = None, "dropped"
        else:
            e["label"], e["status"] = CLASS_NAMES.index(by_name[name]), "ok"
    return _Labels(
        rows, "groundtruth" if how.onehot_cols else source, path.name, how.lesion_col is not None,
        id_column=how.id_col, label_column=how.dx_col or ",".join(how.onehot_cols),
        recased=sum(bool(e.pop("recased", False)) for e in rows.values()),
    )


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
    source: str | None = None  # "metadata" | "groundtruth" (one-hot) | "csv" (a diagnosis column)
    file: str | None = None
    has_lesion_ids: bool = False
    id_column: str | None = None
    label_column: str | None = None  # the diagnosis column, or the one-hot columns joined by ","
    recased: int = 0  # rows whose id matched an image only when case is ignored


def _case_matcher(image_ids: set[str]):
    """``id -> the image id it names``: itself when an image has it, else the one image whose id
    differs only in case (``isic_0024306`` -> ``ISIC_0024306``), else itself (no image, or two
    images that differ only in case: ambiguous, so no guess)."""
    lower: dict[str, list[str]] = defaultdict(list)
    for i in image_ids:
        lower[i.lower()].append(i)

    def match(image_id: str) -> str:
        if image_id in image_ids:
            return image_id
        same = lower.get(image_id.lower(), [])
        return same[0] if len(same) == 1 else image_id
    return match


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
            f"no {_EXTS} images found (looked in {looked}). {describe_folder(root)}",
        ))
    if not found.has_masks:
        report.notes.append(
            "no masks found (looked for <image_id>_segmentation/_mask/_lesion files in masks/, "
            "HAM10000_segmentations_lesion_tschandl/ and next to the images): mask_path is None, the "
            "segmentation head cannot be trained or evaluated"
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
                                        f"not a {_EXTS} file ({ext or 'no extension'})"))
            continue
        split = split_mask_name(stem)
        if split is not None:
            found.masks[split[0]].append(_File(e.path, e.stat().st_size, split[1] + ext))
        elif is_mask_dir:
            problems.append(Problem(e.path, "bad_mask_name",
                                    "file name does not end in _segmentation.png, _mask.png or _lesion.png (or .jpg, .bmp, .tif)"))
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


def _label_tables(found: _Found) -> list[tuple[Path, str, bool]]:
    """``(path, source, named)`` of the tables to read labels from, in order: HAM10000_metadata,
    then GroundTruth.csv (the first name present of each), then every other .csv/.tsv/.tab of
    the data folder by name (``named`` False)."""
    out: list[tuple[Path, str, bool]] = []
    taken: set[str] = set()
    for names, source in ((METADATA_NAMES, "metadata"), (GROUNDTRUTH_NAMES, "groundtruth")):
        e = next((found.entries[n.lower()] for n in names
                  if n.lower() in found.entries and found.entries[n.lower()].is_file()), None)
        if e is not None:
            out.append((Path(e.path), source, True))
            taken.add(e.name.lower())
    for name, e in sorted(found.entries.items()):
        if (name not in taken and not is_ignored(e.name) and os.path.splitext(name)[1] in LABEL_TABLE_EXTENSIONS
                and e.is_file()):
            out.append((Path(e.path), "csv", False))
    return out


def _read_labels(found: _Found, report: DataReport, opts: _Options) -> _Labels:
    """Labels from the first table that has them (:func:`_label_tables`). An unusable
    HAM10000_metadata/GroundTruth file (or any table, when id_column/label_column are given) is
    a bad_label_file problem; another table without an id and a diagnosis column is only a note,
    as is one none of whose ids names an image. No labels at all is fine when there are masks
    (masks only: every label -1), else a fatal no_labels problem that points to 04_inference."""
    explicit = opts.label_column is not None or opts.id_column is not None
    wanted = set(found.images)
    labels: _Labels | None = None
    rejected: list[tuple[Path, str, bool]] = []
    for path, source, named in _label_tables(found):
        parsed = _parse_labels(path, source, opts, report.problems, wanted)
        if isinstance(parsed, _Labels) and not named and not explicit and wanted and not wanted & set(parsed.rows):
            parsed = (f"looks like labels (columns {parsed.id_column}, {parsed.label_column}) but none of its "
                      f"{len(parsed.rows)} ids names an image here")
        if isinstance(parsed, str):
            rejected.append((path, parsed, named))
            continue
        labels = parsed
        break
    for path, reason, named in rejected:
        if named or (explicit and labels is None):
            report.problems.append(Problem(str(path), "bad_label_file", reason))
        else:
            report.notes.append(f"{path.name} is not read as labels: it {reason}")
    if labels is None:
        labels = _Labels({})
        if found.masks and not any(p.kind == "bad_label_file" for p in report.problems):
            report.notes.append(
                "no labels file: masks only, so every label is -1 and classification cannot be scored "
                "(add a CSV with an image-id column and a diagnosis column to score it)"
            )
        else:
            report.problems.append(_no_labels(found, report.problems, rejected))
    report.layout.update(label_file=labels.file, label_source=labels.source, has_lesion_ids=labels.has_lesion_ids,
                         id_column=labels.id_column, label_column=labels.label_column)
    report.counts["labels"] = len(labels.rows)
    if labels.source and not labels.has_lesion_ids:
        report.notes.append(
            f"{labels.file} has no lesion ids: lesion_id = image_id, so near-duplicate images of one "
            "lesion may leak across splits (add HAM10000_metadata.csv to split by lesion)"
        )
    return labels


def _no_labels(found: _Found, problems: list[Problem], rejected: list[tuple[Path, str, bool]]) -> Problem:
    """The fatal no_labels problem: an unusable labels file, or neither labels nor masks (then
    the images can only be predicted on: the message gives the 04_inference command)."""
    if any(p.kind == "bad_label_file" for p in problems):
        return Problem(str(found.root), "no_labels", "no usable labels file (see bad_label_file)")
    message = (f"no labels file ({', '.join(METADATA_NAMES + GROUNDTRUTH_NAMES)}, or any CSV with an "
               "image-id column and a diagnosis column)")
    if rejected:
        message += ("; tables that are not labels: " + "; ".join(f"{p.name} {why}" for p, why, _ in rejected)
                    + " (if one holds the labels, name its columns with id_column= and label_column=)")
    if not found.images:
        return Problem(str(found.root), "no_labels", message + ".")
    folder = shlex.quote(str(found.root))
    return Problem(
        str(found.root), "no_labels",
        f"{message}, and no masks (<image_id>_segmentation, _mask or _lesion): nothing to score these "
        f"{len(found.images)} images against. A folder of images alone can only be predicted on, with "
        f"notebooks/04_inference:\n      {INFERENCE_CMD.format(folder=folder)}\n    {describe_folder(found.root)}",
    )


def _pair_files_and_labels(found: _Found, labels: _Labels, report: DataReport, partial: bool) -> None:
    """Every image needs a mask (when the data set has masks) and a labels row (when it has a
    labels file), unless ``partial``; every mask an image. Label rows without an image are only a
    note (a subset of HAM10000 is fine)."""
    no_mask, no_row = [], []
    for image_id in sorted(found.images):
        path = found.image(image_id).path
        if found.has_masks and image_id not in found.masks:
            if partial:
                no_mask.append(image_id)
            else:
                report.problems.append(Problem(
                    path, "missing_mask", f"no mask {image_id}_segmentation.png (or _mask, _lesion)",
                    image_id=image_id,
                ))
        if labels.source and image_id not in labels.rows:
            if partial:
                no_row.append(image_id)
            else:
                report.problems.append(Problem(
                    path, "missing_label", f"{image_id} has no row in {labels.file or 'the labels'}",
                    image_id=image_id,
                ))
    for image_id in sorted(found.masks):
        if image_id not in found.images:
            for f in found.masks[image_id]:
                report.problems.append(Problem(f.path, "orphan_mask",
                                               f"no image {image_id} ({_EXTS}) for this mask"))
    if no_mask:
        report.notes.append(f"{len(no_mask)} of {len(found.images)} images have no mask (e.g. {no_mask[0]}): "
                            "they are not scored for segmentation")
    if labels.recased:
        report.notes.append(f"{labels.recased} rows of {labels.file} name their image in another case "
                            "(e.g. isic_0024306 for ISIC_0024306): matched ignoring case")
    unlabelled_rows = sorted(i for i in labels.rows if i not in found.images)
    if no_row:
        report.layout["unmatched_ids_note"] = (
            f"{len(no_row)} of {len(found.images)} images have no row in {labels.file} "
            f"(e.g. {', '.join(no_row[:3])}) and {len(unlabelled_rows)} of its {len(labels.rows)} rows name no image "
            f"(e.g. {', '.join(unlabelled_rows[:3]) or 'none'}): those images are not scored for classification. "
            f"Ids are compared with the image file names without folder and extension (column "
            f"{labels.id_column!r}), ignoring case where that is unambiguous: check that column (id_column= names "
            "another) and the file names")
        report.notes.append(report.layout["unmatched_ids_note"])
    elif unlabelled_rows and found.images:
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


def _index_rows(found: _Found, labels: _Labels, report: DataReport) -> list[dict]:
    """One row per image (``_bad`` when a problem names it), with the file sizes and mask suffix
    that the fingerprint and the report need. ``label`` is -1 (``dx`` None) for an image without
    a diagnosis that no problem names (no labels file; with ``partial``, no row or an empty cell).
    Left out, and counted in the report: images whose diagnosis label_map maps to null, and
    images with neither a diagnosis nor a mask."""
    bad_ids = {p.image_id for p in report.problems if p.image_id is not None}
    rows: list[dict] = []
    dropped: Counter = Counter()
    unscorable, no_lesion_id = [], []
    for image_id in sorted(found.images):
        f, m = found.image(image_id), found.mask(image_id)
        e = labels.rows.get(image_id)
        status = "ok" if e is None and not labels.source else ("missing" if e is None else e["status"])
        if status == "dropped":
            dropped[e["name"]] += 1
            continue
        label = e["label"] if e is not None and e["label"] is not None else -1
        bad = image_id in bad_ids
        if label < 0 and m is None and not bad:
            unscorable.append(image_id)
            continue
        if e is not None and e["missing_lesion_id"]:
            no_lesion_id.append(image_id)
        rows.append({
            "image_id": image_id,
            "image_path": f.path,
            "mask_path": m.path if m else None,
            "label": int(label),
            "dx": CLASS_NAMES[label] if label >= 0 else None,
            "lesion_id": (e["lesion_id"] if e else "") or image_id,
            "age": e["age"] if e else "",
            "sex": e["sex"] if e else "unknown",
            "localization": e["localization"] if e else "unknown",
            "_name": e["name"] if e else None,
            "_status": status,
            "_image_size": f.size,
            "_mask_size": m.size if m else -1,
            "_mask_suffix": m.suffix if m else None,
            "_bad": bad,
        })
    if dropped:
        report.notes.append(f"{sum(dropped.values())} images left out because label_map maps their diagnosis to "
                            "null: " + ", ".join(f"{k} {v}" for k, v in sorted(dropped.items())))
    if unscorable:
        report.notes.append(f"{len(unscorable)} images have neither a diagnosis nor a mask (e.g. {unscorable[0]}): "
                            "left out, there is nothing to score them against")
    report.layout["dropped_labels"] = dict(sorted(dropped.items()))
    report.layout["missing_lesion_ids"] = len(no_lesion_id)
    if no_lesion_id:
        report.layout["missing_lesion_ids_note"] = (
            f"{len(no_lesion_id)} images have no lesion id in {labels.file} (an empty cell or a placeholder such as "
            f"NA, none, unknown, -; e.g. {no_lesion_id[0]}): each is taken as a lesion of its own (lesion_id = "
            "image_id). If some of them show the same lesion, give them one lesion_id, or near-duplicates may "
            "land on both sides of the split")
        report.notes.append(report.layout["missing_lesion_ids_note"])
    return rows


def _summarise(report: DataReport, rows: list[dict], opts: _Options) -> None:
    """Counts, class counts, the usual mask suffix of the usable rows, the diagnosis names that
    map to no class (with a label_map to start from) and how the set's names were mapped."""
    good = [r for r in rows if not r["_bad"]]
    suffixes = Counter(r["_mask_suffix"] for r in good if r["_mask_suffix"])
    report.layout["mask_suffix"] = suffixes.most_common(1)[0][0] if suffixes else None
    report.counts["usable"] = len(good)
    report.counts["with_label"] = sum(r["label"] >= 0 for r in good)
    report.counts["with_mask"] = sum(r["mask_path"] is not None for r in good)
    report.counts["problems"] = len(report.problems)
    report.counts["ignored"] = len(report.ignored)
    cc = Counter(r["dx"] for r in good if r["dx"])
    report.class_counts = {n: cc[n] for n in CLASS_NAMES if cc[n]}
    unknown = Counter(r["_name"] for r in rows if r["_status"] == "unknown")
    report.layout["unknown_labels"] = dict(sorted(unknown.items()))
    report.layout["suggested_label_map"] = suggest_label_map(unknown, opts.label_map) if unknown else None
    report.layout["label_mapping"] = dict(sorted({r["_name"]: r["dx"] for r in good if r["dx"]}.items()))


def unknown_labels_message(report: DataReport) -> str:
    """What to do about diagnosis names that map to none of our classes: each name with its
    number of images, and the JSON label_map to start from. "" when there are none."""
    unknown = report.layout.get("unknown_labels") or {}
    if not unknown:
        return ""
    listed = "\n".join(f"  {name!r}: {n} image{'s' if n != 1 else ''}" for name, n in unknown.items())
    return (
        f"Diagnoses in {report.layout.get('label_file')} that map to none of our classes "
        f"({', '.join(CLASS_NAMES)}):\n{listed}\n"
        "Map them with label_map (a dict, or the same as JSON text: papermill -p label_map '...'), "
        "starting from\n"
        f"  {report.layout.get('suggested_label_map')}\n"
        f'replacing each "?" with one of {", ".join(CLASS_NAMES)} (or null to leave those images out), '
        'or leave them out with on_bad_data="skip". SCC is deliberately not mapped (see data/README.md).'
    )


def _scan(data_dir: str | os.PathLike, decode: bool, opts: _Options) -> tuple[DataReport, list[dict]]:
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
        labels = _read_labels(found, report, opts)
        _pair_files_and_labels(found, labels, report, opts.partial)
        (_check_pixels if decode else _check_file_sizes)(found, report.problems)
        rows = _index_rows(found, labels, report)
        _summarise(report, rows, opts)
    report.seconds = time.perf_counter() - t0
    return report, rows


def validate_dataset(data_dir: str | os.PathLike, decode: bool = True, *, label_map=None,
                     label_column: str | None = None, id_column: str | None = None,
                     partial: bool = False) -> DataReport:
    """Check a data folder and return a :class:`DataReport` listing every problem found.

    ``decode=True`` also reads every image and mask as training does (`skin_utils.data.imageio`):
    each image must decode to the end (JPEGs with a fast DCT-scaled decode) and convert to RGB,
    each mask must be binary by `imageio.binarise_mask` without being empty or mostly mid-grey,
    and mask and image must have the same aspect ratio after EXIF rotation. ``decode=False``
    checks names, pairing, labels and file sizes only. ``label_map``, ``label_column``,
    ``id_column`` and ``partial`` are those of :func:`load_index`.
    Never raises for bad data (a missing folder is reported as a ``missing_folder`` problem);
    raises ValueError for a ``label_map`` that is not valid.
    """
    opts = _Options(parse_label_map(label_map), label_column, id_column, partial)
    return _scan(data_dir, decode, opts)[0]


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
    data_dir: str | os.PathLike, on_bad_data: str = "raise", decode: bool = True, *,
    label_map=None, label_column: str | None = None, id_column: str | None = None, partial: bool = False,
) -> pd.DataFrame:
    """The index of a data set (see docs/design.md): one row per usable image, by image_id.

    ``on_bad_data="raise"`` (default) raises :class:`DataValidationError` listing every problem
    (diagnosis names that map to no class are listed once more with a ``label_map`` to start
    from); ``"skip"`` drops the affected images, warns once (:class:`DataQualityWarning`, saying
    how many were left out and why) and keeps the list in ``df.attrs["problems"]``. A folder
    without any usable images, or with neither labels nor masks, always raises
    :class:`DataLayoutError` (the latter pointing to ``notebooks/04_inference``). ``decode=False``
    skips the pixel checks (fast, names/labels only).

    Labels come from HAM10000_metadata, GroundTruth.csv or any other CSV of the folder with an
    image-id column and a diagnosis column (``id_column`` / ``label_column`` name them; None:
    detected) or one-hot class columns. ``label_map`` (a dict, or the same as JSON text) maps the
    set's diagnosis names onto our classes before the built-in synonyms of
    `skin_utils.data.label_map`. ``partial=True`` keeps images without a labels row (``label``
    -1) or without a mask (``mask_path`` None) instead of reporting them: for scoring a folder,
    never for training.

    Columns: those of docs/design.md plus ``has_label`` and ``has_mask`` (bool); ``label`` is
    -1 and ``dx`` missing (None/NaN: test with ``isna``) for an image without a diagnosis. ``df.attrs`` adds ``label_file``,
    ``id_column``, ``label_column``, ``has_labels`` / ``has_masks`` (any usable image has one),
    ``label_mapping`` (the set's name -> our class, for the names used), ``unknown_labels`` and
    ``dropped_labels`` (name -> images left out: mapped to nothing / mapped to null), ``partial``.
    """
    if on_bad_data not in ON_BAD_DATA:
        raise ValueError(f"on_bad_data must be one of {ON_BAD_DATA}, got {on_bad_data!r}")
    opts = _Options(parse_label_map(label_map), label_column, id_column, partial)
    report, rows = _scan(data_dir, decode, opts)
    if report.fatal:
        raise _layout_error(report)
    unknown_help = unknown_labels_message(report)
    if report.problems and on_bad_data == "raise":
        raise DataValidationError(
            f"Data set {report.data_dir} has {len(report.problems)} problem(s) ({report.summary()}).\n"
            f"{report.format_problems()}\n"
            + (f"{unknown_help}\n" if unknown_help else "")
            + 'Fix them, or call load_index(..., on_bad_data="skip") to drop the affected images '
            "(python -m skin_utils.data.layout DATA_DIR prints the full report).",
            report,
        )
    good = [r for r in rows if not r["_bad"]]
    if not good:
        raise DataValidationError(
            f"No usable images left in {report.data_dir} ({report.summary()}).\n{report.format_problems()}",
            report,
        )
    lay = report.layout
    if report.problems:
        unknown = lay.get("unknown_labels") or {}
        why = (f" {sum(unknown.values())} of them because their diagnosis maps to none of our classes ("
               + ", ".join(f"{k} {v}" for k, v in unknown.items()) + "): a label_map can map them." if unknown else "")
        warnings.warn(
            f"Skipped {len(rows) - len(good)} image(s) of {report.data_dir} and ignored "
            f"{len(report.problems)} problem(s) ({report.summary()}); kept {len(good)} images.{why} "
            'See df.attrs["problems"].',
            DataQualityWarning,
            stacklevel=2,
        )
    if lay.get("label_source") and not lay.get("has_lesion_ids") and not partial:
        warnings.warn(
            f"{lay.get('label_file')} has no lesion ids, so lesion_id = image_id. HAM10000 holds several "
            "images of the same lesion: NEAR-DUPLICATE IMAGES OF ONE LESION MAY LEAK ACROSS "
            "TRAIN/VALIDATION/TEST SPLITS and inflate every score. Put HAM10000_metadata.csv "
            "(with lesion_id) in the data folder to split by lesion.",
            LesionLeakageWarning,
            stacklevel=2,
        )
    if lay.get("unmatched_ids_note"):
        warnings.warn(lay["unmatched_ids_note"] + ".", DataQualityWarning, stacklevel=2)
    if lay.get("missing_lesion_ids"):
        warnings.warn(lay["missing_lesion_ids_note"] + ".", LesionLeakageWarning, stacklevel=2)
    has_label = np.array([r["label"] >= 0 for r in good], dtype=bool)
    has_mask = np.array([r["mask_path"] is not None for r in good], dtype=bool)
    df = pd.DataFrame({
        "image_id": [r["image_id"] for r in good],
        "image_path": [r["image_path"] for r in good],
        "mask_path": pd.Series([r["mask_path"] for r in good], dtype=object),
        "label": np.array([r["label"] for r in good], dtype=np.int64),
        "dx": [r["dx"] for r in good],  # missing (isna) without a diagnosis
        "lesion_id": [r["lesion_id"] for r in good],
        "age": pd.to_numeric(pd.Series([r["age"] for r in good], dtype=object), errors="coerce").astype(float),
        "sex": [r["sex"] or "unknown" for r in good],
        "localization": [r["localization"] or "unknown" for r in good],
        "has_label": has_label,
        "has_mask": has_mask,
    })
    skipped_unknown = lay.get("unknown_labels") or {}
    df.attrs.update(
        data_dir=report.data_dir,
        label_source=lay.get("label_source"),
        label_file=lay.get("label_file"),
        id_column=lay.get("id_column"),
        label_column=lay.get("label_column"),
        mask_suffix=lay.get("mask_suffix"),
        has_lesion_ids=bool(lay.get("has_lesion_ids")),
        has_labels=bool(has_label.any()),
        has_masks=bool(has_mask.any()),
        label_mapping=dict(lay.get("label_mapping") or {}),
        unknown_labels=dict(skipped_unknown),
        dropped_labels=dict(lay.get("dropped_labels") or {}),
        partial=bool(partial),
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
    """``python -m skin_utils.data.layout DATA_DIR [--fast] [--label-map JSON] [--label-column C]
    [--id-column C] [--partial]``: print the validation report."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m skin_utils.data.layout", description=main.__doc__)
    ap.add_argument("data_dir")
    ap.add_argument("--fast", action="store_true", help="names/labels only, no pixel checks")
    ap.add_argument("--label-map", help='JSON object, e.g. \'{"melanoma": "MEL", "common nevus": "NV"}\'')
    ap.add_argument("--label-column", help="the labels table's diagnosis column (default: detected)")
    ap.add_argument("--id-column", help="the labels table's image-id column (default: detected)")
    ap.add_argument("--partial", action="store_true", help="images may lack a mask or a labels row")
    args = ap.parse_args(argv)
    report = validate_dataset(args.data_dir, decode=not args.fast, label_map=args.label_map,
                              label_column=args.label_column, id_column=args.id_column, partial=args.partial)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
