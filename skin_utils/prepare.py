"""Converters INTO the one layout (`skin_utils.layout`), and their command line::

    python -m skin_utils.prepare ham10000 DOWNLOADS_DIR --out data          # the official downloads
    python -m skin_utils.prepare folder SRC --out DST [--label-map JSON] [--id-column C] [--label-column C]
    python -m skin_utils.prepare shift DATA --out DST --split-path reports/split.csv --split test
    python -m skin_utils.prepare check DATA                                   # the validation report

`convert_folder` reads any other folder: labels from any CSV/TSV with an image-id column and a
diagnosis column (or one-hot class columns: GroundTruth.csv, ISIC 2019), diagnosis names mapped by
`skin_utils.labels` (synonyms, ``label_map``), masks ``<id>_segmentation|_mask|_lesion`` in any
format and size, images in nested folders. Images are linked, never re-encoded; masks are written
as binary PNG. `skin_utils.data.load_data` does this by itself (once, into the cache folder) for a
folder that is not in the layout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import stat
import sys
import warnings
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from skin_utils import transforms
from skin_utils.labels import CLASS_NAMES, map_labels, normalise_name, parse_label_map, suggest_label_map
from skin_utils.layout import (DATAVERSE, IMAGE_EXTENSIONS, INFO_NAME, MASK_SUFFIX, METADATA_COLUMNS, METADATA_NAME,
                               DataQualityWarning, DataReport, DataValidationError, Problem,
                               check_mask, describe_folder, find_images, is_ignored, layout_error, load_index,
                               no_labels_problem, read_csv_with_ids, read_image, read_mask, read_table, validate_dataset)

DATAVERSE_URL = "https://doi.org/10.7910/DVN/DBW86T"
EXPECTED_COUNT = 10015  # images, masks and metadata rows of the full HAM10000 release
MASK_SUFFIXES = ("_segmentation", "_mask", "_lesion")
TABLE_EXTENSIONS = (".csv", ".tsv", ".tab")
#: Column names detected, in order of preference (compared lower-case, spaces/hyphens as "_").
ID_COLUMNS = ("image_id", "image", "isic_id", "image_name", "img_id", "image_file", "filename", "file_name", "file",
              "id", "name")
DX_COLUMNS = ("dx", "diagnosis", "diagnostic", "label", "class", "class_name", "target")
OTHER_COLUMNS = {"lesion_id": ("lesion_id", "lesion"), "age": ("age", "age_approx"), "sex": ("sex", "gender"),
                 "localization": ("localization", "anatom_site_general", "anatom_site_general_challenge",
                                  "anatom_site", "location", "region", "site")}
GROUNDTRUTH_NAMES = ("groundtruth.csv", "isic2018_task3_training_groundtruth.csv")
CONVERSION_RECORD = "conversion.json"
SHIFT_RECORD = "shift.json"


# --------------------------------------------------------------------------------------------
# names in other folders
# --------------------------------------------------------------------------------------------
def split_mask_name(name: str) -> str | None:
    """The image id of a mask file name (``ISIC_1_lesion.bmp`` -> ``ISIC_1``, any case), else None."""
    stem, ext = os.path.splitext(name)
    if ext.lower() not in IMAGE_EXTENSIONS:
        return None
    return next((stem[:-len(s)] for s in MASK_SUFFIXES if stem.lower().endswith(s) and len(stem) > len(s)), None)


def clean_image_id(value: str) -> str:
    """An id as a labels file writes it -> the image's file stem (``"NEL/Nel026.jpg"`` -> ``"Nel026"``)."""
    name = str(value).strip().replace("\\", "/").rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS else name


def _column(columns, wanted: str | None, candidates) -> str | None:
    """The column named ``wanted`` (when given), else the first of ``candidates`` present; names
    compared lower-case with spaces and hyphens as "_"."""
    keys = {}
    for c in columns:
        keys.setdefault(normalise_name(c).replace(" ", "_"), c)
    if wanted is not None:
        return keys.get(normalise_name(wanted).replace(" ", "_"))
    return next((keys[k] for k in candidates if k in keys), None)


def layout_mismatch(folder, label_map=None, id_column=None, label_column=None) -> str | None:
    """Why ``folder`` is not read as it is (it must be converted first), or None when it is in the layout."""
    folder = Path(folder)
    if label_map or id_column or label_column:
        return "label_map / id_column / label_column describe another labels table"
    if not (folder / "images").is_dir():
        return "no images/ folder"
    tables = [e.name for e in os.scandir(folder) if e.is_file() and Path(e.name).suffix.lower() in TABLE_EXTENSIONS]
    if tables and not (folder / METADATA_NAME).is_file():
        return f"labels in {sorted(tables)[0]}, not {METADATA_NAME}"
    for e in os.scandir(folder / "images"):
        if not is_ignored(e.name) and (e.is_dir() or split_mask_name(e.name)):
            return f"{e.name} in images/"
    if (folder / "masks").is_dir():
        for e in os.scandir(folder / "masks"):
            if not is_ignored(e.name) and split_mask_name(e.name) and not e.name.lower().endswith(MASK_SUFFIX):
                return f"masks named like {e.name}"
    return None


# --------------------------------------------------------------------------------------------
# any other folder
# --------------------------------------------------------------------------------------------
@dataclass
class _Labels:
    """The labels read from one table: image_id -> row, and where they came from."""

    rows: dict[str, dict]
    file: str
    id_column: str
    label_column: str
    has_lesion_ids: bool


def _read_labels_table(path: Path, images: set[str], opts: dict, report: DataReport) -> _Labels | str:
    """One table as labels, or why it is none (a sentence). Ids cleaned and matched ignoring case where
    unambiguous; one-hot rows that are not, and ids listed twice with different names, reported."""
    try:
        df = read_table(path)
    except Exception as e:  # noqa: BLE001 - any parse failure is a reason, not a crash
        return f"cannot be parsed as CSV/TSV ({e})"
    cols = list(df.columns)
    id_col = _column(cols, opts["id_column"], ID_COLUMNS)
    dx_col = _column([c for c in cols if c != id_col], opts["label_column"], DX_COLUMNS)
    onehot = []
    if dx_col is None and opts["label_column"] is None:  # columns of numbers in [0, 1] named like classes
        numeric = [c for c in cols if c != id_col and len(df[c][df[c] != ""])
                   and pd.to_numeric(df[c][df[c] != ""], errors="coerce").between(0, 1).all()]
        onehot = numeric if sum(m is not None for m in map_labels(numeric, opts["label_map"])[0]) >= 2 else []
    if id_col is None or (dx_col is None and not onehot):
        missing = [opts["id_column"] or "image_id"] * (id_col is None) + [opts["label_column"] or "dx"] * (dx_col is None)
        return (f"has no column {', '.join(missing)} (nor any of {', '.join(ID_COLUMNS[1:])} for ids, "
                f"{', '.join(DX_COLUMNS[1:])} or one-hot class columns MEL,NV,... for diagnoses; columns: "
                f"{', '.join(cols[:12]) or 'none'})")
    lower = defaultdict(list)
    for i in images:
        lower[i.lower()].append(i)
    others = {k: _column([c for c in cols if c not in (id_col, dx_col, *onehot)], None, v) for k, v in OTHER_COLUMNS.items()}
    values = df[onehot].apply(pd.to_numeric, errors="coerce").to_numpy(float) if onehot else None
    rows: dict[str, dict] = {}
    for k, r in enumerate(df.to_dict("records")):
        written = clean_image_id(r[id_col])
        same = lower.get(written.lower(), [])
        image_id = written if written in images or len(same) != 1 else same[0]
        if not image_id:
            continue
        if onehot:
            one_hot = bool(np.isin(values[k], (0.0, 1.0)).all() and values[k].sum() == 1.0)
            name = onehot[int(np.argmax(values[k]))].upper() if one_hot else None
            if not one_hot and image_id in images:
                shown = ", ".join(f"{c.upper()}={'?' if np.isnan(v) else f'{v:g}'}" for c, v in zip(onehot, values[k]))
                report.problems.append(Problem("bad_label", str(path), f"{image_id}: row is not exactly one-hot ({shown})",
                                               image_id))
        else:
            name = r[dx_col]
        if image_id in rows:
            if rows[image_id]["name"] != name and image_id in images:
                report.problems.append(Problem("duplicate_id", str(path), f"{image_id} is listed more than once with "
                                               f"different diagnoses ({rows[image_id]['name']}, {name})", image_id))
            continue
        rows[image_id] = {"name": name, **{k: r[c] if c else "" for k, c in others.items()}}
    return _Labels(rows, path.name, id_col, dx_col or ",".join(onehot), others["lesion_id"] is not None)


def _labels(src: Path, images: set[str], opts: dict, report: DataReport) -> _Labels | None:
    """Labels from the first table of ``src`` that has them: HAM10000_metadata.*, GroundTruth.csv, then
    any other .csv/.tsv/.tab by name. An unusable table is a problem when it is one of the first two or
    when columns were named; otherwise a note (so is a table none of whose ids names an image)."""
    explicit = opts["id_column"] is not None or opts["label_column"] is not None
    def rank(p: Path) -> int:  # 0: HAM10000_metadata.*, 1: ISIC 2018's GroundTruth.csv, 2: any other table
        name = p.name.lower()
        return 0 if name.startswith("ham10000_metadata") else int(name not in GROUNDTRUTH_NAMES) + 1

    tables = sorted((p for p in src.iterdir() if p.is_file() and not is_ignored(p.name) and (
        p.suffix.lower() in TABLE_EXTENSIONS or p.name.lower() == "ham10000_metadata")), key=lambda p: (rank(p), p.name))
    rejected = []
    for path in tables:
        named = rank(path) < 2
        found = _read_labels_table(path, images, opts, report)
        if isinstance(found, _Labels) and not (named or explicit or not images or images & set(found.rows)):
            found = f"looks like labels, but none of its {len(found.rows)} ids names an image here"
        if isinstance(found, _Labels):
            return found
        rejected.append(f"{path.name} {found}")
        if named or explicit:
            report.problems.append(Problem("bad_label_file", str(path), found))
        else:
            report.notes.append(f"{path.name} is not read as labels: it {found}")
    if rejected:
        report.counts["rejected"] = len(rejected)
        report.notes.append("tables that are not labels: " + "; ".join(rejected)
                            + " (if one holds the labels, name its columns with id_column= and label_column=)")
    return None


def _link(source: Path, dest: Path) -> None:
    """A symbolic link to ``source``; a copy where links fail (some file systems)."""
    try:
        os.symlink(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def _output(out: Path, src: Path, record: str, overwrite: bool) -> Path:
    """Check that ``out`` can be written and return the temporary folder to write into beside it (made
    later, by `_start`)."""
    if out == src or src in out.parents or out in src.parents:
        raise ValueError(f"--out {out} must be outside the data folder {src} (and not hold it).")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; choose another --out, or pass --overwrite to "
                                  "replace what this command wrote there before.")
        if not (out / record).is_file():
            raise FileExistsError(f"{out} holds something this command did not write (no {record}); it is not "
                                  "overwritten. Choose another --out.")
    return out.parent / f".{out.name}.partial-{os.getpid()}"


def _start(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)


def _replace(tmp: Path, out: Path, overwrite: bool) -> Path:
    """Put the finished ``tmp`` at ``out``: the result appears whole or not at all. When another process
    (a torchrun rank) wrote ``out`` meanwhile, theirs is kept."""
    if overwrite and out.exists():
        shutil.rmtree(out)
    try:
        tmp.rename(out)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _say(record: dict) -> None:
    """The warnings of a conversion (also when a converted copy is reused)."""
    for category, message in record.get("warnings", []):
        warnings.warn(message, DataQualityWarning if category == "quality" else UserWarning, stacklevel=3)


def convert_folder(src, out, *, label_map=None, id_column: str | None = None, label_column: str | None = None,
                   on_bad_data: str = "raise", overwrite: bool = False) -> Path:
    """Write ``src`` (any folder of images, masks and a labels table) in the one layout at ``out``, with a
    record of the conversion (``conversion.json``: source, options, counts, how names were mapped).

    Problems the conversion meets (unknown diagnosis names, rows that are not one-hot, ids listed twice,
    masks that are not binary) raise one `DataValidationError`, unknown names listed with a ``label_map``
    to start from; ``on_bad_data="skip"`` leaves those images out with one warning. Images whose name
    ``label_map`` maps to null are left out on purpose. Ids of the labels table that match no image (and
    images without a row) are warned about with examples."""
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    opts = {"label_map": parse_label_map(label_map), "id_column": id_column, "label_column": label_column}
    tmp = _output(out, src, CONVERSION_RECORD, overwrite)
    report = DataReport(str(src))
    images, masks = defaultdict(list), defaultdict(list)
    for path in find_images(src):
        image_id = split_mask_name(path.name)
        (masks if image_id else images)[image_id or path.stem].append(path)
    for what, files in (("image id", images), ("mask for", masks)):
        for image_id, paths in files.items():
            if len(paths) > 1:
                report.problems.append(Problem("duplicate_id", str(paths[0]), f"{what} {image_id} appears {len(paths)} "
                                               f"times: {', '.join(str(p.relative_to(src)) for p in paths)}", image_id))
    labels = _labels(src, set(images), opts, report)
    if not images or (labels is None and not masks):
        why = (" that can be used (see bad_label_file)" if any(p.kind == "bad_label_file" for p in report.problems)
               else next(("; " + n for n in report.notes if n.startswith("tables that")), " (no .csv/.tsv/.tab table)"))
        report.problems.append(no_labels_problem(src, len(images), why) if images else Problem(
            "no_images", str(src), f"no {'/'.join(IMAGE_EXTENSIONS)} images in {src} or below it. {describe_folder(src)}"))
        raise layout_error(report)
    rows = labels.rows if labels else {}
    names = sorted({r["name"] for i, r in rows.items() if r["name"] and i in images})
    mapped, unknown = map_labels(names, opts["label_map"])
    mapping = dict(zip(names, mapped))
    unknown_counts = Counter(rows[i]["name"] for i in images if i in rows and rows[i]["name"] in unknown)
    dropped = Counter(rows[i]["name"] for i in images if i in rows and rows[i]["name"] in mapping
                      and mapping[rows[i]["name"]] is None and rows[i]["name"] not in unknown)
    for image_id in sorted(i for i in images if i in rows and rows[i]["name"] in unknown):
        report.problems.append(Problem("bad_label", labels.file, f"{image_id}: diagnosis {rows[image_id]['name']!r} is "
                                       "not one of the seven classes, and no synonym or label_map entry maps it", image_id))
    for image_id, paths in sorted(masks.items()):
        if image_id not in images:
            report.problems += [Problem("orphan_mask", str(p), f"no image {image_id} for this mask") for p in paths]
        else:
            problem = check_mask(str(paths[0]))[1]
            if problem:
                report.problems.append(Problem(problem.kind, problem.path, problem.message, image_id))
    help_unknown = "" if not unknown_counts else (
        f"Diagnoses in {labels.file} that map to none of our classes ({', '.join(CLASS_NAMES)}):\n"
        + "\n".join(f"  {k!r}: {n} image{'s' if n != 1 else ''}" for k, n in sorted(unknown_counts.items()))
        + f"\nMap them with label_map (a dict, or the same as JSON text: papermill -p label_map '...'), starting from\n"
        f"  {suggest_label_map(sorted(unknown_counts), label_map)}\nreplacing each \"?\" with one of "
        f"{', '.join(CLASS_NAMES)} (or null to leave those images out), or leave them out with on_bad_data=\"skip\". "
        "SCC is deliberately not mapped (see data/README.md).\n")
    if report.problems and on_bad_data == "raise":
        raise DataValidationError(f"{src} has {len(report.problems)} problem(s) ({report.summary()}).\n"
                                  f"{report.format_problems()}\n{help_unknown}"
                                  'Fix them, or pass on_bad_data="skip" to leave the affected images out.', report)
    bad = {p.image_id for p in report.problems if p.image_id}
    said = []
    if report.problems:
        unknown_text = (f" {sum(unknown_counts.values())} of them because their diagnosis maps to none of our classes ("
                        + ", ".join(f"{k} {v}" for k, v in sorted(unknown_counts.items())) + "): a label_map can map them."
                        if unknown_counts else "")
        said.append(["quality", f"Skipped {len(bad & set(images))} image(s) of {src} and ignored {len(report.problems)} "
                     f"problem(s) ({report.summary()}).{unknown_text}"])
    if labels:
        no_row = sorted(i for i in images if i not in rows)
        no_image = sorted(i for i in rows if i not in images)
        if no_row:
            said.append(["quality", f"{len(no_row)} of {len(images)} images have no row in {labels.file} (e.g. "
                         f"{', '.join(no_row[:3])}) and {len(no_image)} of its {len(rows)} rows name no image (e.g. "
                         f"{', '.join(no_image[:3]) or 'none'}): those images are not scored for classification. Ids are "
                         "compared with the image file names without folder and extension (column "
                         f"{labels.id_column!r}), ignoring case where that is unambiguous: check that column (id_column= "
                         "names another) and the file names."])
    try:
        _start(tmp)
        if masks:
            (tmp / "masks").mkdir()
        table = []
        for image_id, (path, *_) in sorted(images.items()):
            row = rows.get(image_id)
            dx = mapping.get(row["name"]) if row and row["name"] else None
            if image_id in bad or (row and row["name"] in dropped):
                continue
            _link(path, tmp / "images" / f"{image_id}{path.suffix}")
            if image_id in masks:
                Image.fromarray(read_mask(masks[image_id][0]) * np.uint8(255)).save(tmp / "masks" / f"{image_id}{MASK_SUFFIX}")
            if row is not None:
                table.append({"lesion_id": row["lesion_id"], "image_id": image_id, "dx": (dx or "").lower(),
                              "age": row["age"], "sex": row["sex"], "localization": row["localization"]})
        if labels:
            columns = [c for c in METADATA_COLUMNS if c != "dx_type" and (c != "lesion_id" or labels.has_lesion_ids)]
            pd.DataFrame(table, columns=[c for c in METADATA_COLUMNS if c != "dx_type"])[columns].to_csv(
                tmp / METADATA_NAME, index=False)
        if (src / INFO_NAME).is_file():
            shutil.copyfile(src / INFO_NAME, tmp / INFO_NAME)
        record = {"tool": "skin_utils.prepare.convert_folder", "source": str(src),
                  "options": {**opts, "on_bad_data": on_bad_data},
                  "counts": {"images": len(images), "masks": len(masks), "label_rows": len(rows),
                             "written": len(list((tmp / "images").iterdir()))},
                  "label_file": labels and labels.file, "id_column": labels and labels.id_column,
                  "label_column": labels and labels.label_column,
                  "label_mapping": {k: v for k, v in mapping.items() if v}, "unknown_labels": dict(unknown_counts),
                  "dropped_labels": dict(dropped), "problems": [str(p) for p in report.problems], "notes": report.notes,
                  "warnings": said}
        (tmp / CONVERSION_RECORD).write_text(json.dumps(record, indent=1))
        _replace(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _say(record)
    return out


def folder_command(src, label_map=None, id_column=None, label_column=None, out="DST") -> str:
    """The command line that converts ``src`` with these options."""
    parts = ["python -m skin_utils.prepare folder", shlex.quote(str(src)), "--out", str(out)]
    for flag, value in (("--label-map", label_map and json.dumps(parse_label_map(label_map))),
                        ("--id-column", id_column), ("--label-column", label_column)):
        parts += [flag, shlex.quote(value)] if value else []
    return " ".join(parts)


def converted_copy(src, cache_dir, reason: str, *, label_map=None, id_column=None, label_column=None,
                   on_bad_data: str = "raise") -> Path:
    """``src`` converted once into ``cache_dir/<name>-<hash of its file listing and the options>`` and
    reused while the folder is unchanged; one line says so, with the equivalent command."""
    src = Path(src).expanduser().resolve()
    h = hashlib.sha256(json.dumps([parse_label_map(label_map), id_column, label_column, on_bad_data]).encode())
    for dirpath, dirnames, files in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
        for name in sorted(n for n in files if not is_ignored(n)):
            st = os.stat(os.path.join(dirpath, name))
            h.update(f"{os.path.relpath(os.path.join(dirpath, name), src)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    out = Path(cache_dir) / f"{src.name}-{h.hexdigest()[:12]}"
    done = (out / CONVERSION_RECORD).is_file()
    print(f"{src} is not in the layout ({reason}): {'reading' if done else 'converting it once into'} {out} (reused "
          f"while it is unchanged). By hand: {folder_command(src, label_map, id_column, label_column)}", flush=True)
    if done:
        _say(json.loads((out / CONVERSION_RECORD).read_text()))
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    return convert_folder(src, out, label_map=label_map, id_column=id_column, label_column=label_column,
                          on_bad_data=on_bad_data, overwrite=out.exists())


# --------------------------------------------------------------------------------------------
# the official HAM10000 downloads
# --------------------------------------------------------------------------------------------
ARCHIVES = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_segmentations_lesion_tschandl")
METADATA_DOWNLOADS = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata", "HAM10000_metadata.txt")


@dataclass
class PrepareSummary:
    """What `prepare_ham10000` did and found (``ids``: the image, mask and label ids of the downloads)."""

    downloads_dir: str
    out_dir: str
    sources: dict[str, str | None] = field(default_factory=dict)
    ids: dict[str, set[str]] = field(default_factory=lambda: {"image": set(), "mask": set(), "label": set()})
    written: int = 0
    kept: int = 0
    conflicts: list[str] = field(default_factory=list)
    unsafe_members: list[str] = field(default_factory=list)
    skipped_members: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    missing_downloads: list[str] = field(default_factory=list)
    report: DataReport | None = None

    def without(self, what: str) -> list[str]:
        """The ids of the downloads that have no ``what`` ("image", "mask" or "label")."""
        return [] if what == "label" and not self.sources.get("metadata") else \
            sorted(set().union(*self.ids.values()) - self.ids[what])

    @property
    def problems(self) -> list[str]:
        out = self.errors + [f"missing download: {m}" for m in self.missing_downloads]
        out += [f"unsafe zip member refused: {m}" for m in self.unsafe_members]
        out += [f"differs from the download, kept (use --overwrite): {c}" for c in self.conflicts]
        out += [f"{len(self.without(w))} id(s) without {w}" for w in self.ids if self.without(w)]
        return out + [str(p) for p in (self.report.problems if self.report else [])]

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        def ids(xs):
            return ", ".join(xs[:10]) + (f", ... ({len(xs) - 10} more)" if len(xs) > 10 else "")

        n = {k: len(v) for k, v in self.ids.items()}
        lines = [f"HAM10000 from {self.downloads_dir} -> {self.out_dir}"]
        lines += [f"  {key:40s} {src or 'NOT FOUND'}" for key, src in self.sources.items()]
        lines.append(f"  found {n['image']} images, {n['mask']} masks, {n['label']} labels"
                     + (" (the full release has 10,015 of each)" if set(n.values()) != {EXPECTED_COUNT} else ""))
        lines.append(f"  files written {self.written}, already in place {self.kept}")
        if self.skipped_members:
            lines.append(f"  skipped {len(self.skipped_members)} non-image entries (e.g. {self.skipped_members[0]})")
        lines += [f"  {len(self.without(w))} id(s) lack {'an' if w == 'image' else 'a'} {w}: {ids(self.without(w))}"
                  for w in self.ids if self.without(w)]
        lines += [f"  ERROR: {e}" for e in self.errors]
        if self.unsafe_members:
            lines.append(f"  REFUSED {len(self.unsafe_members)} zip member(s) with unsafe names (absolute, '..' or "
                         f"symlink): {ids(self.unsafe_members)}")
        if self.conflicts:
            lines.append(f"  {len(self.conflicts)} file(s) in {self.out_dir} differ from the downloads and were kept: "
                         f"{ids(self.conflicts)}. Rerun with --overwrite to replace them.")
        if self.missing_downloads:
            lines.append(f"  MISSING: {', '.join(self.missing_downloads)}. Download them from the {DATAVERSE} "
                         f"({DATAVERSE_URL}) into {self.downloads_dir} and run this again.")
        return "\n".join(lines + (["", str(self.report)] if self.report else []))


def _find(downloads: Path, names, want_dir: bool) -> Path | None:
    """The first of ``names`` (any case) in ``downloads`` or one folder below it."""
    for folder in [downloads] + sorted(p for p in downloads.iterdir() if p.is_dir() and not is_ignored(p.name)):
        entries = {p.name.lower(): p for p in folder.iterdir()}
        found = [entries[n.lower()] for n in names if n.lower() in entries]
        found = [p for p in found if (p.is_dir() if want_dir else p.is_file())]
        if found:
            return found[0]
    return None


def _place(dest: Path, size: int, write, s: PrepareSummary, overwrite: bool) -> None:
    """Write a file at ``dest`` with ``write(tmp)`` (then renamed), unless one of the same size is there."""
    if dest.exists() and (dest.stat().st_size == size or not overwrite):
        s.kept += dest.stat().st_size == size
        s.conflicts += [str(dest)] if dest.stat().st_size != size else []
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    s.written += 1


def _route(out: Path, name: str, s: PrepareSummary, origin: str) -> Path | None:
    """Where a download file called ``name`` goes (images/ or masks/, by its name); None: skipped."""
    if is_ignored(name) or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
        s.skipped_members += [] if is_ignored(name) else [origin]
        return None
    image_id = split_mask_name(name)
    s.ids["mask" if image_id else "image"].add(image_id or Path(name).stem)
    return out / ("masks" if image_id else "images") / name


def _from_zip(zpath: Path, out: Path, s: PrepareSummary, overwrite: bool) -> None:
    """The images and masks of one zip, by their base names; members that could escape are refused."""
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as e:
        s.errors.append(f"{zpath.name} is not a readable zip ({e}): the download is probably incomplete, download it "
                        f"again from {DATAVERSE_URL}")
        return
    with zf:
        for info in zf.infolist():
            parts = info.filename.replace("\\", "/").split("/")
            if info.is_dir():
                continue
            if info.filename.startswith("/") or ".." in parts or ":" in parts[0] or stat.S_ISLNK(info.external_attr >> 16):
                s.unsafe_members.append(f"{zpath.name}:{info.filename}")
                continue
            dest = None if any(is_ignored(p) for p in parts[:-1]) else _route(out, parts[-1], s, f"{zpath.name}:{info.filename}")
            if dest is None:
                continue

            def write(tmp, info=info):
                with zf.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            try:
                _place(dest, info.file_size, write, s, overwrite)
            except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC error, truncated archive
                s.errors.append(f"{zpath.name}:{info.filename} cannot be extracted ({e}); download the zip again")


def _write_metadata(src: Path, out: Path, s: PrepareSummary, overwrite: bool) -> None:
    """The metadata as comma-separated HAM10000_metadata.csv, official columns first."""
    try:
        df = read_table(src)
    except Exception as e:  # noqa: BLE001
        s.errors.append(f"{src.name} cannot be parsed ({e}); download it again")
        return
    if not {"image_id", "dx"} <= set(df.columns):
        s.errors.append(f"{src.name} has no column {', '.join(c for c in ('image_id', 'dx') if c not in df.columns)} "
                        f"(columns: {', '.join(df.columns)}); expected the official {','.join(METADATA_COLUMNS)}")
        return
    cols = [c for c in METADATA_COLUMNS if c in df.columns] + [c for c in df.columns if c not in METADATA_COLUMNS]
    text = df[cols].to_csv(index=False, lineterminator="\n").encode("utf-8")
    _place(out / METADATA_NAME, len(text), lambda tmp: tmp.write_bytes(text), s, overwrite)
    s.ids["label"] = {i for i in df["image_id"] if i}


def prepare_ham10000(downloads_dir, out_dir="data", overwrite: bool = False, verbose: bool = True) -> PrepareSummary:
    """Build ``out_dir`` in the layout from the official downloads of the Harvard Dataverse record (zipped
    or extracted, in ``downloads_dir`` or one folder below; nothing is downloaded). Files already in place
    with the same size are kept (``overwrite`` replaces files that differ); the result is validated.
    Returns the `PrepareSummary` (printed when ``verbose``); FileNotFoundError when nothing is there."""
    downloads, out = Path(downloads_dir).expanduser().absolute(), Path(out_dir).expanduser().absolute()
    wanted = (f"Download HAM10000_images_part_1.zip, HAM10000_images_part_2.zip, {ARCHIVES[2]}.zip and "
              f"HAM10000_metadata.tab (or .csv) from the {DATAVERSE} ({DATAVERSE_URL})")
    if not downloads.is_dir():
        raise FileNotFoundError(f"Downloads folder {downloads} does not exist. {wanted} into one folder and pass it.")
    s = PrepareSummary(str(downloads), str(out))
    for base in ARCHIVES:
        s.sources[base] = _find(downloads, (base + ".zip",), False) or _find(downloads, (base,), True)
        if s.sources[base] is None:
            s.missing_downloads.append(base + ".zip")
    s.sources["metadata"] = _find(downloads, METADATA_DOWNLOADS, False)
    if s.sources["metadata"] is None:
        s.missing_downloads.append("HAM10000_metadata.tab (or .csv)")
    if not any(s.sources.values()):
        hint = (" There is a dataverse_files.zip: unzip it first (it holds the zips above)."
                if _find(downloads, ("dataverse_files.zip",), False) else "")
        raise FileNotFoundError(f"No HAM10000 downloads in {downloads}. {describe_folder(downloads)}\n{wanted}.{hint}")
    for src in s.sources.values():
        if src is not None and src.is_dir() and src.parent == out and src.name != "images":
            raise ValueError(f"{src} is inside the output folder {out}, where it would be read as a second copy of "
                             "the data: use a different --out (e.g. data).")
    out.mkdir(parents=True, exist_ok=True)
    for base in ARCHIVES:
        src = s.sources[base]
        if src is None:
            continue
        if verbose:
            print(f"[prepare] {base}: {'extracting' if src.is_file() else 'copying'} {src}", flush=True)
        if src.is_file():
            _from_zip(src, out, s, overwrite)
        else:
            for path in find_images(src):
                dest = _route(out, path.name, s, str(path))
                if dest:
                    _place(dest, path.stat().st_size, lambda tmp, p=path: shutil.copyfile(p, tmp), s, overwrite)
    if s.sources["metadata"] is not None:
        _write_metadata(s.sources["metadata"], out, s, overwrite)
    s.sources = {k: v and str(v) for k, v in s.sources.items()}
    s.report = validate_dataset(out, decode=True)
    if verbose:
        print(s, flush=True)
    return s


# --------------------------------------------------------------------------------------------
# the shifted copy of a split: the same lesions as another clinic's camera would show them
# --------------------------------------------------------------------------------------------
SHIFT_KINDS = ("vignette", "blur", "resolution", "noise", "cast", "hue", "gamma", "jpeg")  # in the order applied
#: Where each shift's parameter is drawn from (uniformly; from one of the ranges where there are two),
#: outside what the "camera" augmentation trains on (`transforms.CAMERA_AUGMENT`), so the test is not circular.
SHIFT_RANGES = {
    "vignette": {"strength": (0.5, 0.75)},        # 1 - strength * r**2 (training: 0.1-0.4)
    "blur": {"sigma": (0.015, 0.025)},            # fraction of the shorter side (training: 0.004-0.01)
    "resolution": {"scale": (0.2, 0.4)},          # down to this fraction and back (training: 0.5-0.8)
    "noise": {"sigma": (0.02, 0.05)},             # Gaussian sensor noise, fraction of full range (training: none)
    "cast": {"strength": (0.3, 0.5)},             # |centred log channel gains|: a pure colour change (training: <= 0.25)
    "hue": {"degrees": (8.0, 20.0), "saturation": ((0.55, 0.75), (1.3, 1.6))},  # turn either way, scale chroma (training: none)
    "gamma": {"gamma": ((0.45, 0.65), (1.5, 2.0))},  # x ** gamma, below or above (training: 0.8-1.25)
    "jpeg": {"quality": (10, 30)},                # re-compression quality (training: none)
}
DEFAULT_JPEG_QUALITY = 95  # images without a "jpeg" shift: close to lossless


def training_cast_limit() -> float:
    """The largest cast strength (norm of the centred log gains) the "camera" augmentation can draw."""
    lo, hi = (np.log(g) for g in transforms.CAMERA_AUGMENT["cast"]["gain"])
    corners = np.array(np.meshgrid([lo, hi], [lo, hi], [lo, hi])).reshape(3, -1).T
    return float(np.linalg.norm(corners - corners.mean(axis=1, keepdims=True), axis=1).max())


def check_kinds(kinds) -> list[str]:
    """``kinds`` (a list, or text "cast,blur") as known kinds in `SHIFT_KINDS` order."""
    kinds = [k.strip() for k in kinds.split(",") if k.strip()] if isinstance(kinds, str) else list(kinds)
    unknown = sorted(set(kinds) - set(SHIFT_KINDS))
    if unknown or not kinds:
        raise ValueError(f"kinds={kinds!r}: choose one or more of {', '.join(SHIFT_KINDS)}"
                         + (f" (unknown: {unknown})." if unknown else "."))
    return [k for k in SHIFT_KINDS if k in kinds]


def draw_shifts(image_id: str, seed: int = 0, kinds=SHIFT_KINDS, max_per_image: int = 3) -> list[dict]:
    """1 to ``max_per_image`` distinct ``kinds`` for one image, in the order applied, each
    ``{"kind": ..., <parameters>}``, drawn from ``(seed, image_id)`` alone."""
    kinds = check_kinds(kinds)
    if int(max_per_image) < 1:
        raise ValueError(f"max_per_image={max_per_image!r}: each image needs at least one shift.")
    digest = int.from_bytes(hashlib.sha256(str(image_id).encode()).digest()[:8], "little")
    rng = np.random.default_rng([int(seed), digest])
    chosen = set(rng.choice(kinds, size=int(rng.integers(1, min(int(max_per_image), len(kinds)) + 1)),
                            replace=False).tolist())
    shifts = []
    for kind in (k for k in SHIFT_KINDS if k in chosen):
        r = SHIFT_RANGES[kind]
        if kind == "cast":
            direction = rng.normal(size=3)
            direction -= direction.mean()
            direction /= np.linalg.norm(direction)
            strength = rng.uniform(*r["strength"])
            shift = {"gains": np.exp(strength * direction).round(6).tolist(), "strength": round(float(strength), 6)}
        elif kind == "hue":
            degrees = float(rng.uniform(*r["degrees"]) * rng.choice([-1, 1]))
            shift = {"degrees": round(degrees, 4),
                     "saturation": round(float(rng.uniform(*r["saturation"][int(rng.integers(2))])), 6)}
        elif kind == "gamma":
            shift = {"gamma": round(float(rng.uniform(*r["gamma"][int(rng.integers(2))])), 6)}
        elif kind == "jpeg":
            shift = {"quality": int(rng.integers(r["quality"][0], r["quality"][1] + 1))}
        elif kind == "noise":
            shift = {"sigma": round(float(rng.uniform(*r["sigma"])), 6), "seed": int(rng.integers(2**31))}
        else:
            (key, bounds), = r.items()
            shift = {key: round(float(rng.uniform(*bounds)), 6)}
        shifts.append({"kind": kind, **shift})
    return shifts


def apply_shifts(image: np.ndarray, shifts: list[dict]) -> tuple[np.ndarray, int]:
    """``image`` (uint8 (H, W, 3)) with ``shifts`` applied, and the JPEG quality to save it with."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    quality = DEFAULT_JPEG_QUALITY
    for s in shifts:
        kind = s["kind"]
        if kind == "vignette":
            x = transforms.vignette(x, s["strength"])
        elif kind == "blur":
            x = transforms.gaussian_blur(x, s["sigma"] * min(x.shape[-2:]))
        elif kind == "resolution":
            x = transforms.downscale_upscale(x, s["scale"])
        elif kind == "noise":
            x = (x + s["sigma"] * torch.randn(x.shape, generator=torch.Generator().manual_seed(s["seed"]))).clamp(0, 1)
        elif kind == "cast":
            x = transforms.colour_cast(x, s["gains"])
        elif kind == "hue":
            x = transforms.colour_matrix(x, transforms.hue_saturation_matrix(s["degrees"], s["saturation"]))
        elif kind == "gamma":
            x = transforms.adjust_gamma(x, s["gamma"])
        elif kind == "jpeg":
            quality = int(s["quality"])
        else:
            raise ValueError(f"Unknown shift kind {kind!r}; the kinds are {SHIFT_KINDS}.")
    return (x[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy(), quality


def _split_ids(index: pd.DataFrame, split_path, split: str) -> list[str]:
    """The image ids of ``split`` in the split file (``"all"``: every image), each checked to be in ``index``."""
    if split == "all":
        return index["image_id"].tolist()
    if split_path is None:
        raise ValueError(f"split={split!r} needs --split-path (the split CSV that training wrote, e.g. "
                         "reports/split.csv); use --split all to shift every image.")
    if not Path(split_path).is_file():
        raise FileNotFoundError(f"No split file at {split_path}: pass the split.csv the training run used "
                                "(notebook 02 writes it), or --split all.")
    table = read_csv_with_ids(split_path)
    if not {"image_id", "split"} <= set(table.columns):
        raise ValueError(f"{split_path} is not a split file: it needs the columns image_id and split "
                         f"(it has {list(table.columns)}).")
    ids = table.loc[table["split"] == split, "image_id"].tolist()
    if not ids:
        raise ValueError(f"{split_path} has no image in split {split!r} (its splits: {sorted(table['split'].unique())}).")
    missing = sorted(set(ids) - set(index["image_id"]))
    if missing:
        raise ValueError(f"{len(missing)} image(s) of split {split!r} in {split_path} are not in the data folder "
                         f"(first: {missing[:3]}): the split was made for other data.")
    return ids


def build_shifted_split(data_dir, out, *, split_path=None, split: str = "test", seed: int = 0, kinds=SHIFT_KINDS,
                        max_per_image: int = 3, overwrite: bool = False, on_bad_data: str = "raise",
                        progress: bool = True) -> Path:
    """Write ``split`` of ``data_dir`` (in the layout), every image changed as another camera would
    (`draw_shifts`, `apply_shifts`), to ``out`` in the layout: the shifted images at their size, the masks
    and metadata rows copied, and ``shift.json`` saying what was done to each image. Score it with
    03_evaluate ``-p split all``. The folder appears whole or not at all; an existing one is replaced only
    with ``overwrite`` and only when it is a shifted copy itself."""
    data_dir, out = Path(data_dir).expanduser().resolve(), Path(out).expanduser().resolve()
    kinds = check_kinds(kinds)
    index = load_index(data_dir, on_bad_data=on_bad_data, decode=False)
    rows = index.set_index("image_id", drop=False).loc[_split_ids(index, split_path, split)]
    tmp = _output(out, data_dir, SHIFT_RECORD, overwrite)
    try:
        _start(tmp)
        (tmp / "masks").mkdir()
        record = {}
        for image_id, image_path, mask_path in tqdm(zip(rows["image_id"], rows["image_path"], rows["mask_path"]),
                                                    total=len(rows), desc=f"shifting {split}", disable=not progress):
            shifts = draw_shifts(image_id, seed, kinds, max_per_image)
            image, quality = apply_shifts(read_image(image_path), shifts)
            Image.fromarray(image).save(tmp / "images" / f"{image_id}.jpg", quality=quality)
            if isinstance(mask_path, str):
                shutil.copyfile(mask_path, tmp / "masks" / Path(mask_path).name)
            record[image_id] = {"shifts": shifts, "jpeg_quality": quality, "source_image": str(image_path),
                                "mask": Path(mask_path).name if isinstance(mask_path, str) else None}
        if (data_dir / METADATA_NAME).is_file():
            meta = pd.read_csv(data_dir / METADATA_NAME, dtype=str, keep_default_na=False)
            meta[meta["image_id"].isin(set(rows["image_id"]))].to_csv(tmp / METADATA_NAME, index=False)
        if index.attrs.get("synthetic"):  # titles and reports keep saying these are synthetic images
            (tmp / INFO_NAME).write_text(json.dumps({"synthetic": True, "shifted_copy_of": str(data_dir)}, indent=2))
        counts = {k: sum(any(s["kind"] == k for s in r["shifts"]) for r in record.values()) for k in kinds}
        (tmp / SHIFT_RECORD).write_text(json.dumps({
            "tool": "skin_utils.prepare.build_shifted_split", "data_dir": str(data_dir),
            "split_path": None if split_path is None else str(Path(split_path).resolve()), "split": split,
            "seed": int(seed), "kinds": kinds, "max_per_image": int(max_per_image), "ranges": SHIFT_RANGES,
            "training_ranges": transforms.CAMERA_AUGMENT, "default_jpeg_quality": DEFAULT_JPEG_QUALITY,
            "n_images": len(record), "images_per_kind": counts, "images": record}, indent=1))
        _replace(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_record(folder) -> dict:
    """The ``shift.json`` of a shifted copy."""
    path = Path(folder) / SHIFT_RECORD
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {folder} is not a shifted copy "
                                "(python -m skin_utils.prepare shift writes one).")
    return json.loads(path.read_text())


def shift_table(folder) -> pd.DataFrame:
    """One row per image of a shifted copy: ``image_id``, ``shifts`` ("+"-joined), ``jpeg_quality`` and a
    bool column per kind, to join with ``evaluate_per_image.csv`` and see which shift costs what."""
    rows = []
    for image_id, r in read_record(folder)["images"].items():
        kinds = [s["kind"] for s in r["shifts"]]
        rows.append({"image_id": image_id, "shifts": "+".join(kinds), "jpeg_quality": r["jpeg_quality"],
                     **{k: k in kinds for k in SHIFT_KINDS}})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m skin_utils.prepare", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ham10000", help="the official HAM10000 downloads (zips or extracted folders) -> the layout")
    p.add_argument("downloads_dir", help="the folder with the HAM10000 zips/folders and HAM10000_metadata")
    p.add_argument("--out", default="data", help="the data folder to write (default: data)")
    p.add_argument("--overwrite", action="store_true", help="replace output files that differ from the downloads")
    p = sub.add_parser("folder", help="any other folder of images, masks and a labels table -> the layout")
    p.add_argument("src")
    p.add_argument("--out", required=True, help="the folder to write (outside SRC)")
    p.add_argument("--label-map", help='JSON object, e.g. \'{"melanoma": "MEL", "common nevus": "NV"}\'')
    p.add_argument("--id-column", help="the labels table's image-id column (default: detected)")
    p.add_argument("--label-column", help="the labels table's diagnosis column (default: detected)")
    p.add_argument("--on-bad-data", default="raise", choices=("raise", "skip"))
    p.add_argument("--overwrite", action="store_true", help="replace a conversion written at --out before")
    p = sub.add_parser("shift", help="a copy of a split, each image changed as another clinic's camera would")
    p.add_argument("data_dir", help="the data folder (in the layout) the split belongs to")
    p.add_argument("--out", required=True, help="the folder to write (outside the repository's tracked files)")
    p.add_argument("--split-path", default=None, help="the split CSV (reports/split.csv); not needed with --split all")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--seed", type=int, default=0, help="with the image id, decides each image's shifts")
    p.add_argument("--kinds", default=",".join(SHIFT_KINDS), help=f"comma-separated, of: {','.join(SHIFT_KINDS)}")
    p.add_argument("--max-per-image", type=int, default=3, help="each image gets 1 to this many shifts")
    p.add_argument("--on-bad-data", default="raise", choices=("raise", "skip"))
    p.add_argument("--overwrite", action="store_true", help="replace a shifted copy already at --out")
    p = sub.add_parser("check", help="print what a data folder holds and everything wrong with it")
    p.add_argument("data_dir")
    p.add_argument("--fast", action="store_true", help="names, labels and pairing only, no pixel checks")
    p.add_argument("--partial", action="store_true", help="images may lack a mask or a labels row")
    ap.epilog = "commands:\n" + "\n".join("  " + c.format_usage().split(": ", 1)[1].strip() for c in sub.choices.values())
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "ham10000":
            return 0 if prepare_ham10000(args.downloads_dir, args.out, overwrite=args.overwrite).ok else 1
        if args.command == "check":
            report = validate_dataset(args.data_dir, decode=not args.fast, partial=args.partial)
            print(report)
            return 0 if report.ok else 1
        if args.command == "folder":
            out = convert_folder(args.src, args.out, label_map=args.label_map, id_column=args.id_column,
                                 label_column=args.label_column, on_bad_data=args.on_bad_data, overwrite=args.overwrite)
            record = json.loads((out / CONVERSION_RECORD).read_text())
            print(f"Wrote {record['counts']['written']} images of {args.src} in the layout to {out}; check it with "
                  f"python -m skin_utils.prepare check {out}")
            return 0
        out = build_shifted_split(args.data_dir, args.out, split_path=args.split_path, split=args.split, seed=args.seed,
                                  kinds=args.kinds, max_per_image=args.max_per_image, overwrite=args.overwrite,
                                  on_bad_data=args.on_bad_data)
        record = read_record(out)
        print(f"Wrote {record['n_images']} shifted images of split {args.split!r} to {out}; images per kind: "
              f"{record['images_per_kind']}. Score them with:\n  papermill notebooks/03_evaluate.ipynb shifted.ipynb "
              f"-p data_dir {out} -p split all -p run <the run to score>")
        return 0
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
