"""Converters INTO the one layout (`skin_utils.layout`), and their command line::

    python -m skin_utils.prepare ham10000 DOWNLOADS_DIR --out data          # the official downloads
    python -m skin_utils.prepare folder SRC --out DST [--label-map JSON] [--id-column C] [--label-column C]
    python -m skin_utils.prepare shift DATA --out DST --split-path reports/split.csv --split test
    python -m skin_utils.prepare demo OUT_DIR [--n-images N]                  # the synthetic demo
    python -m skin_utils.prepare check DATA                                   # the validation report

Images are linked or copied, never re-encoded; masks are written as binary PNG. `skin_utils.data.load_data`
converts a folder that is not in the layout by itself, once (`converted_copy`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shlex
import shutil
import stat
import sys
import warnings
import zipfile
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from skin_utils import transforms
from skin_utils.config import ON_BAD_DATA
from skin_utils.demo import SYNTHETIC_NOTE, class_image_counts, make_synthetic_dataset
from skin_utils.labels import CLASS_NAMES, map_labels, parse_label_map, suggest_label_map
from skin_utils.layout import (DATAVERSE, ID_COLUMNS, IMAGE_EXTENSIONS, INFO_NAME, MASK_SUFFIX, METADATA_COLUMNS,
                               METADATA_NAME, DataQualityWarning, DataReport, DataValidationError, Problem, check_mask,
                               clean_image_id, describe_folder, duplicate_problems, find_column, find_images,
                               is_ignored, layout_error, load_index, no_labels_problem, read_csv_with_ids, read_image,
                               read_labels, read_mask, read_table, validate_dataset, write_whole)

DATAVERSE_URL = "https://doi.org/10.7910/DVN/DBW86T"
EXPECTED_COUNT = 10015  # images, masks and metadata rows of the full HAM10000 release
MASK_SUFFIXES = ("_segmentation", "_mask", "_lesion")
TABLE_EXTENSIONS = (".csv", ".tsv", ".tab")
GROUNDTRUTH_NAMES = ("groundtruth.csv", "isic2018_task3_training_groundtruth.csv")
CONVERSION_RECORD = "conversion.json"
SHIFT_RECORD = "shift.json"


# -------------------------------------------------------------------------------- any other folder
def split_mask_name(name: str) -> str | None:
    """The image id of a mask file name (``ISIC_1_lesion.bmp`` -> ``ISIC_1``, any case), else None."""
    stem, ext = os.path.splitext(name)
    if ext.lower() not in IMAGE_EXTENSIONS:
        return None
    return next((stem[:-len(s)] for s in MASK_SUFFIXES if stem.lower().endswith(s) and len(stem) > len(s)), None)


def layout_mismatch(folder, label_map=None, id_column=None, label_column=None) -> str | None:
    """Why ``folder`` must be converted before it is read; None when it is in the layout."""
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
    for e in os.scandir(folder / "masks") if (folder / "masks").is_dir() else ():
        if not is_ignored(e.name) and split_mask_name(e.name) and not e.name.lower().endswith(MASK_SUFFIX):
            return f"masks named like {e.name}"
    return None


def _find_labels(src: Path, images: set[str], opts: dict, report: DataReport) -> tuple[dict | None, list[str]]:
    """The labels of the first table of ``src`` that has them (HAM10000_metadata.*, GroundTruth.csv, then any
    other), and why the tables before it are none: a problem when columns were named or for the first two."""
    explicit = opts["id_column"] is not None or opts["label_column"] is not None
    rank = {p: 0 if p.name.lower().startswith("ham10000_metadata") else 1 if p.name.lower() in GROUNDTRUTH_NAMES else 2
            for p in src.iterdir() if p.is_file() and not is_ignored(p.name)
            and (p.suffix.lower() in TABLE_EXTENSIONS or p.name.lower() == "ham10000_metadata")}
    rejected = []
    for path in sorted(rank, key=lambda p: (rank[p], p.name)):
        named = rank[path] < 2
        found = read_labels(path, images, report, opts["id_column"], opts["label_column"], opts["label_map"])
        if isinstance(found, dict) and not (named or explicit or not images or images & set(found["rows"])):
            found = f"looks like labels, but none of its {len(found['rows'])} ids names an image here"
        if isinstance(found, dict):
            return found, rejected
        rejected.append(f"{path.name} {found}")
        if named or explicit:
            report.problems.append(Problem("bad_label_file", str(path), found))
        else:
            report.notes.append(f"{path.name} is not read as labels: it {found}")
    return None, rejected


def _say(record: dict) -> None:
    """The warnings of a conversion (also when a converted copy is reused)."""
    for category, message in record.get("warnings", []):
        warnings.warn(message, DataQualityWarning if category == "quality" else UserWarning, stacklevel=3)


def convert_folder(src, out, *, label_map=None, id_column: str | None = None, label_column: str | None = None,
                   on_bad_data: str = "raise", overwrite: bool = False) -> Path:
    """Write ``src`` (images and masks ``<id>_segmentation|_mask|_lesion`` of any format, size and folder; a labels
    table with an id and a diagnosis column, or one-hot class columns) in the layout at ``out``, with
    ``conversion.json`` (source, options, counts, how names were mapped). Unknown diagnosis names (listed with a
    ``label_map`` to start from), rows not one-hot, ids listed twice and masks not binary raise one
    `DataValidationError`; ``on_bad_data="skip"`` leaves those images out with a warning. Names mapped to null
    are left out; unmatched ids are warned about with examples."""
    if on_bad_data not in ON_BAD_DATA:
        raise ValueError(f"on_bad_data must be one of {ON_BAD_DATA}, got {on_bad_data!r}")
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    opts = {"label_map": parse_label_map(label_map), "id_column": id_column, "label_column": label_column}
    with write_whole(out, CONVERSION_RECORD, overwrite, source=src) as tmp:
        report = DataReport(str(src))
        images, masks = defaultdict(list), defaultdict(list)
        for path in find_images(src):
            image_id = split_mask_name(path.name)
            (masks if image_id else images)[image_id or path.stem].append(path)
        report.problems += duplicate_problems(images, src) + duplicate_problems(masks, src, "mask for")
        labels, rejected = _find_labels(src, set(images), opts, report)
        if not images or (labels is None and not masks):
            why = (" that can be used (see bad_label_file)" if any(p.kind == "bad_label_file" for p in report.problems)
                   else f"; tables that are not labels: {'; '.join(rejected)} (if one holds the labels, name its "
                   "columns with id_column= and label_column=)" if rejected else " (no .csv/.tsv/.tab table)")
            report.problems.append(no_labels_problem(src, len(images), why) if images else Problem(
                "no_images", str(src), f"no {'/'.join(IMAGE_EXTENSIONS)} images in {src} or below it. {describe_folder(src)}"))
            raise layout_error(report)
        rows = labels["rows"] if labels else {}
        names = {i: rows[i]["name"] for i in images if i in rows and rows[i]["name"]}  # the images' diagnoses
        mapped, unknown = map_labels(sorted(set(names.values())), opts["label_map"])
        mapping = dict(zip(sorted(set(names.values())), mapped))
        unknown_counts = Counter(n for n in names.values() if n in unknown)
        dropped = Counter(n for n in names.values() if mapping[n] is None and n not in unknown)
        for image_id in sorted(i for i, n in names.items() if n in unknown):
            report.problems.append(Problem("bad_label", labels["file"], f"{image_id}: diagnosis {names[image_id]!r} is "
                                           "not one of the seven classes, and no synonym or label_map entry maps it",
                                           image_id))
        for image_id, paths in sorted(masks.items()):
            if image_id not in images:
                report.problems += [Problem("orphan_mask", str(p), f"no image {image_id} for this mask") for p in paths]
            elif problem := check_mask(str(paths[0]))[1]:
                report.problems.append(Problem(problem.kind, problem.path, problem.message, image_id))
        if report.problems and on_bad_data == "raise":
            help_unknown = "" if not unknown_counts else (
                f"Diagnoses in {labels['file']} that map to none of our classes ({', '.join(CLASS_NAMES)}):\n"
                + "\n".join(f"  {k!r}: {n} image{'s' if n != 1 else ''}" for k, n in sorted(unknown_counts.items()))
                + "\nMap them with label_map (a dict, or the same as JSON text: papermill -p label_map '...'), starting "
                f"from\n  {suggest_label_map(sorted(unknown_counts), label_map)}\nreplacing each \"?\" with one of "
                f"{', '.join(CLASS_NAMES)} (or null to leave those images out), or leave them out with "
                'on_bad_data="skip". SCC is deliberately not mapped (see data/README.md).\n')
            raise DataValidationError(f"{src} has {len(report.problems)} problem(s) ({report.summary()}).\n"
                                      f"{report.format_problems()}\n{help_unknown}"
                                      'Fix them, or pass on_bad_data="skip" to leave the affected images out.', report)
        bad = {p.image_id for p in report.problems if p.image_id}
        said = []
        if report.problems:
            because = (f" {sum(unknown_counts.values())} of them because their diagnosis maps to none of our classes ("
                       + ", ".join(f"{k} {v}" for k, v in sorted(unknown_counts.items())) + "): a label_map can map them."
                       if unknown_counts else "")
            said.append(["quality", f"Skipped {len(bad & set(images))} image(s) of {src} and ignored "
                         f"{len(report.problems)} problem(s) ({report.summary()}).{because}"])
        no_row, no_image = sorted(set(images) - set(rows)), sorted(set(rows) - set(images))
        if labels and no_row:
            said.append(["quality", f"{len(no_row)} of {len(images)} images have no row in {labels['file']} (e.g. "
                         f"{', '.join(no_row[:3])}) and {len(no_image)} of its {len(rows)} rows name no image (e.g. "
                         f"{', '.join(no_image[:3]) or 'none'}): those images are not scored for classification. Ids are "
                         "compared with the image file names without folder and extension (column "
                         f"{labels['id_column']!r}), ignoring case where that is unambiguous: check that column "
                         "(id_column= names another) and the file names."])
        if masks:
            (tmp / "masks").mkdir()
        table = []
        for image_id, (path, *_) in sorted(images.items()):
            if image_id in bad or names.get(image_id) in dropped:
                continue
            try:
                os.symlink(path, tmp / "images" / f"{image_id}{path.suffix}")
            except OSError:  # some file systems have no links
                shutil.copyfile(path, tmp / "images" / f"{image_id}{path.suffix}")
            if image_id in masks:
                Image.fromarray(read_mask(masks[image_id][0]) * np.uint8(255)).save(tmp / "masks" / f"{image_id}{MASK_SUFFIX}")
            if image_id in rows:
                table.append({**rows[image_id], "image_id": image_id, "dx": (mapping.get(names.get(image_id)) or "").lower()})
        if labels:
            columns = [c for c in METADATA_COLUMNS if c != "dx_type" and (c != "lesion_id" or labels["has_lesion_ids"])]
            pd.DataFrame(table, columns=columns).to_csv(tmp / METADATA_NAME, index=False)
        if (src / INFO_NAME).is_file():
            shutil.copyfile(src / INFO_NAME, tmp / INFO_NAME)
        record = {"tool": "skin_utils.prepare.convert_folder", "source": str(src),
                  "options": {**opts, "on_bad_data": on_bad_data},
                  "counts": {"images": len(images), "masks": len(masks), "label_rows": len(rows),
                             "written": len(list((tmp / "images").iterdir()))},
                  "label_file": labels and labels["file"], "id_column": labels and labels["id_column"],
                  "label_column": labels and labels["label_column"],
                  "label_mapping": {k: v for k, v in mapping.items() if v}, "unknown_labels": dict(unknown_counts),
                  "dropped_labels": dict(dropped), "problems": [str(p) for p in report.problems], "notes": report.notes,
                  "warnings": said}
        (tmp / CONVERSION_RECORD).write_text(json.dumps(record, indent=1))
    _say(record)
    return out


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
    command = ["python -m skin_utils.prepare folder", shlex.quote(str(src)), "--out DST"]
    for flag, value in (("--label-map", label_map and json.dumps(parse_label_map(label_map))),
                        ("--id-column", id_column), ("--label-column", label_column)):
        command += [flag, shlex.quote(value)] if value else []
    print(f"{src} is not in the layout ({reason}): {'reading' if done else 'converting it once into'} {out} (reused "
          f"while it is unchanged). By hand: {' '.join(command)}", flush=True)
    if done:
        _say(json.loads((out / CONVERSION_RECORD).read_text()))
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    return convert_folder(src, out, label_map=label_map, id_column=id_column, label_column=label_column,
                          on_bad_data=on_bad_data, overwrite=out.exists())


# ----------------------------------------------------------------- the official HAM10000 downloads
ARCHIVES = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_segmentations_lesion_tschandl")
METADATA_DOWNLOADS = ("HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata", "HAM10000_metadata.txt")


def _find(downloads: Path, names, want_dir: bool) -> Path | None:
    """The first of ``names`` (any case) in ``downloads`` or one folder below it, a folder or a file as asked."""
    for folder in [downloads] + sorted(p for p in downloads.iterdir() if p.is_dir() and not is_ignored(p.name)):
        entries = {p.name.lower(): p for p in folder.iterdir()}
        for p in (entries.get(n.lower()) for n in names):
            if p is not None and (p.is_dir() if want_dir else p.is_file()):
                return p
    return None


def _files(src: Path, s: dict):
    """``(name, size, open_source, origin)`` of each image of one download, a zip or its extracted folder; zip
    members whose names could escape the output folder are refused, other files skipped."""
    if src.is_dir():
        for p in find_images(src):
            yield p.name, p.stat().st_size, partial(open, p, "rb"), str(p)
        return
    try:
        zf = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as e:
        s["errors"].append(f"{src.name} is not a readable zip ({e}): the download is probably incomplete, download "
                           f"it again from {DATAVERSE_URL}")
        return
    with zf:
        for info in (i for i in zf.infolist() if not i.is_dir()):
            parts, origin = info.filename.replace("\\", "/").split("/"), f"{src.name}:{info.filename}"
            if info.filename.startswith("/") or ".." in parts or ":" in parts[0] or stat.S_ISLNK(info.external_attr >> 16):
                s["unsafe_members"].append(origin)
            elif any(map(is_ignored, parts)):  # __MACOSX/, .DS_Store: skipped quietly
                continue
            elif Path(parts[-1]).suffix.lower() in IMAGE_EXTENSIONS:
                yield parts[-1], info.file_size, partial(zf.open, info), origin
            else:
                s["skipped_members"].append(origin)


def _place(dest: Path, size: int, open_source, s: dict, overwrite: bool) -> None:
    """Copy ``open_source()`` to ``dest`` (through a renamed temporary), unless a file of that size is there."""
    if dest.exists() and dest.stat().st_size == size:
        s["kept"] += 1
    elif dest.exists() and not overwrite:
        s["conflicts"].append(str(dest))
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with open_source() as source, open(tmp, "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        s["written"] += 1


def _metadata(src: Path, out: Path, s: dict, overwrite: bool) -> None:
    """The metadata as comma-separated HAM10000_metadata.csv, official columns first."""
    try:
        df = read_table(src)
    except Exception as e:  # noqa: BLE001
        s["errors"].append(f"{src.name} cannot be parsed ({e}); download it again")
        return
    if not {"image_id", "dx"} <= set(df.columns):
        s["errors"].append(f"{src.name} has no column {', '.join(c for c in ('image_id', 'dx') if c not in df.columns)} "
                           f"(columns: {', '.join(df.columns)}); expected the official {','.join(METADATA_COLUMNS)}")
        return
    cols = [c for c in METADATA_COLUMNS if c in df.columns] + [c for c in df.columns if c not in METADATA_COLUMNS]
    text = df[cols].to_csv(index=False, lineterminator="\n").encode("utf-8")
    _place(out / METADATA_NAME, len(text), lambda: io.BytesIO(text), s, overwrite)
    s["ids"]["label"] = {i for i in df["image_id"] if i}


def _some(names: list[str]) -> str:
    return ", ".join(names[:10]) + (f", ... ({len(names) - 10} more)" if len(names) > 10 else "")


def prepare_ham10000(downloads_dir, out_dir="data", overwrite: bool = False, verbose: bool = True) -> dict:
    """Build ``out_dir`` in the layout from the official downloads of the Harvard Dataverse record (zipped or
    extracted, in ``downloads_dir`` or one folder below; nothing is downloaded). Files already in place with the
    same size are kept (``overwrite`` replaces files that differ); the result is validated. Returns ``ids``
    (image/mask/label ids of the downloads), ``lacking`` (the ids without each), ``written``, ``kept``,
    ``conflicts``, ``unsafe_members``, ``skipped_members``, ``errors``, ``missing_downloads``, ``problems`` (all
    of those), ``report`` (the layout's), ``ok`` and ``text`` (printed when ``verbose``)."""
    downloads, out = Path(downloads_dir).expanduser().absolute(), Path(out_dir).expanduser().absolute()
    wanted = (f"Download HAM10000_images_part_1.zip, HAM10000_images_part_2.zip, {ARCHIVES[2]}.zip and "
              f"HAM10000_metadata.tab (or .csv) from the {DATAVERSE} ({DATAVERSE_URL})")
    if not downloads.is_dir():
        raise FileNotFoundError(f"Downloads folder {downloads} does not exist. {wanted} into one folder and pass it.")
    sources = {base: _find(downloads, (base + ".zip",), False) or _find(downloads, (base,), True) for base in ARCHIVES}
    sources["metadata"] = _find(downloads, METADATA_DOWNLOADS, False)
    if not any(sources.values()):
        hint = (" There is a dataverse_files.zip: unzip it first (it holds the zips above)."
                if _find(downloads, ("dataverse_files.zip",), False) else "")
        raise FileNotFoundError(f"No HAM10000 downloads in {downloads}. {describe_folder(downloads)}\n{wanted}.{hint}")
    s = {"ids": {"image": set(), "mask": set(), "label": set()}, "written": 0, "kept": 0, "conflicts": [],
         "unsafe_members": [], "skipped_members": [], "errors": [],
         "missing_downloads": [f"{k}.zip" if k in ARCHIVES else "HAM10000_metadata.tab (or .csv)"
                               for k, v in sources.items() if v is None]}
    out.mkdir(parents=True, exist_ok=True)
    for base, src in sources.items():
        if src is None or base == "metadata":
            continue
        if verbose:
            print(f"[prepare] {base}: {'extracting' if src.is_file() else 'copying'} {src}", flush=True)
        for name, size, write, origin in _files(src, s):
            image_id = split_mask_name(name)  # masks and images go by their names, not by their download
            s["ids"]["mask" if image_id else "image"].add(image_id or Path(name).stem)
            try:
                _place(out / ("masks" if image_id else "images") / name, size, write, s, overwrite)
            except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC error, truncated archive
                s["errors"].append(f"{origin} cannot be extracted ({e}); download it again")
    if sources["metadata"]:
        _metadata(sources["metadata"], out, s, overwrite)
    every = set().union(*s["ids"].values())
    s["lacking"] = {w: [] if w == "label" and not sources["metadata"] else sorted(every - ids)
                    for w, ids in s["ids"].items()}
    problems = list(s["errors"])
    if s["missing_downloads"]:
        problems.append(f"MISSING: {', '.join(s['missing_downloads'])}. Download them from the {DATAVERSE} "
                        f"({DATAVERSE_URL}) into {downloads} and run this again.")
    if s["unsafe_members"]:
        problems.append(f"REFUSED {len(s['unsafe_members'])} zip member(s) with unsafe names (absolute, '..' or "
                        f"symlink): {_some(s['unsafe_members'])}")
    if s["conflicts"]:
        problems.append(f"{len(s['conflicts'])} file(s) in {out} differ from the downloads and were kept: "
                        f"{_some(s['conflicts'])}. Rerun with --overwrite to replace them.")
    problems += [f"{len(ids)} id(s) lack {'an' if w == 'image' else 'a'} {w}: {_some(ids)}"
                 for w, ids in s["lacking"].items() if ids]
    s.update(problems=problems, report=validate_dataset(out, decode=True))
    s["ok"] = not problems and s["report"].ok
    n = {k: len(v) for k, v in s["ids"].items()}
    lines = [f"HAM10000 from {downloads} -> {out}"] + [f"  {k:40s} {v or 'NOT FOUND'}" for k, v in sources.items()]
    lines.append(f"  found {n['image']} images, {n['mask']} masks, {n['label']} labels"
                 + (" (the full release has 10,015 of each)" if set(n.values()) != {EXPECTED_COUNT} else ""))
    lines.append(f"  files written {s['written']}, already in place {s['kept']}")
    if s["skipped_members"]:
        lines.append(f"  skipped {len(s['skipped_members'])} non-image entries (e.g. {s['skipped_members'][0]})")
    s["text"] = "\n".join(lines + [f"  {p}" for p in problems] + ["", str(s["report"])])
    if verbose:
        print(s["text"], flush=True)
    return s


# -------- the shifted copy of a split: the same lesions as another clinic's camera would show them
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
        direction = rng.normal(size=3) if kind == "cast" else None  # the cast's direction, then its strength
        shift = {"kind": kind}
        for key, bounds in SHIFT_RANGES[kind].items():
            if isinstance(bounds[0], tuple):  # two ranges: draw which one first
                bounds = bounds[int(rng.integers(2))]
            if kind == "jpeg":
                shift[key] = int(rng.integers(bounds[0], bounds[1] + 1))
            elif key == "degrees":  # turned either way
                shift[key] = round(float(rng.uniform(*bounds) * rng.choice([-1, 1])), 4)
            else:
                shift[key] = float(rng.uniform(*bounds))
        if kind == "cast":
            direction -= direction.mean()
            direction /= np.linalg.norm(direction)
            shift = {"kind": kind, "gains": np.exp(shift["strength"] * direction).round(6).tolist(), **shift}
        if kind == "noise":
            shift["seed"] = int(rng.integers(2**31))
        shifts.append({k: round(v, 6) if isinstance(v, float) and k != "degrees" else v for k, v in shift.items()})
    return shifts


#: What each kind does to a float (1, 3, H, W) image in [0, 1]; "jpeg" only sets the quality it is saved with.
_APPLY = {
    "vignette": lambda x, s: transforms.vignette(x, s["strength"]),
    "blur": lambda x, s: transforms.gaussian_blur(x, s["sigma"] * min(x.shape[-2:])),
    "resolution": lambda x, s: transforms.downscale_upscale(x, s["scale"]),
    "noise": lambda x, s: (x + s["sigma"] * torch.randn(
        x.shape, generator=torch.Generator().manual_seed(s["seed"]))).clamp(0, 1),
    "cast": lambda x, s: transforms.colour_cast(x, s["gains"]),
    "hue": lambda x, s: transforms.colour_matrix(x, transforms.hue_saturation_matrix(s["degrees"], s["saturation"])),
    "gamma": lambda x, s: transforms.adjust_gamma(x, s["gamma"]),
    "jpeg": lambda x, s: x,
}


def apply_shifts(image: np.ndarray, shifts: list[dict]) -> tuple[np.ndarray, int]:
    """``image`` (uint8 (H, W, 3)) with ``shifts`` applied, and the JPEG quality to save it with."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    for s in shifts:
        if s["kind"] not in _APPLY:
            raise ValueError(f"Unknown shift kind {s['kind']!r}; the kinds are {SHIFT_KINDS}.")
        x = _APPLY[s["kind"]](x, s)
    quality = next((int(s["quality"]) for s in shifts if s["kind"] == "jpeg"), DEFAULT_JPEG_QUALITY)
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
    """Write ``split`` of ``data_dir``, every image changed as another camera would (`draw_shifts`,
    `apply_shifts`), to ``out`` in the layout: the shifted images at their size, masks and metadata rows
    copied, ``shift.json`` saying what was done to each image. Score it with 03_evaluate ``-p split all``.
    An existing ``out`` is replaced only with ``overwrite`` and only when it is a shifted copy itself."""
    data_dir, out = Path(data_dir).expanduser().resolve(), Path(out).expanduser().resolve()
    kinds = check_kinds(kinds)
    index = load_index(data_dir, on_bad_data=on_bad_data, decode=False)
    rows = index.set_index("image_id", drop=False).loc[_split_ids(index, split_path, split)]
    with write_whole(out, SHIFT_RECORD, overwrite, source=data_dir) as tmp:
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
        if (data_dir / METADATA_NAME).is_file():  # its rows, matched on ids as load_index reads them
            meta = read_table(data_dir / METADATA_NAME)
            ids = meta[find_column(meta.columns, None, ID_COLUMNS)].map(clean_image_id)
            meta[ids.isin(set(rows["image_id"]))].assign(image_id=ids).to_csv(tmp / METADATA_NAME, index=False)
        if index.attrs.get("synthetic"):  # titles and reports keep saying these are synthetic images
            (tmp / INFO_NAME).write_text(json.dumps({"synthetic": True, "shifted_copy_of": str(data_dir)}, indent=2))
        counts = {k: sum(any(s["kind"] == k for s in r["shifts"]) for r in record.values()) for k in kinds}
        (tmp / SHIFT_RECORD).write_text(json.dumps({
            "tool": "skin_utils.prepare.build_shifted_split", "data_dir": str(data_dir),
            "split_path": None if split_path is None else str(Path(split_path).resolve()), "split": split,
            "seed": int(seed), "kinds": kinds, "max_per_image": int(max_per_image), "ranges": SHIFT_RANGES,
            "training_ranges": transforms.CAMERA_AUGMENT, "default_jpeg_quality": DEFAULT_JPEG_QUALITY,
            "n_images": len(record), "images_per_kind": counts, "images": record}, indent=1))
    return out


# ------------------------------------------------------------------------------------ command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m skin_utils.prepare", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    rewrite = argparse.ArgumentParser(add_help=False)
    rewrite.add_argument("--overwrite", action="store_true", help="replace what this command wrote at --out before")
    bad = argparse.ArgumentParser(add_help=False)
    bad.add_argument("--on-bad-data", default="raise", choices=("raise", "skip"))
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ham10000", parents=[rewrite], help="the official HAM10000 downloads (zips or folders) -> the layout")
    p.add_argument("downloads_dir", help="the folder with the HAM10000 zips/folders and HAM10000_metadata")
    p.add_argument("--out", default="data", help="the data folder to write (default: data)")
    p = sub.add_parser("folder", parents=[rewrite, bad], help="any other folder of images, masks and labels -> the layout")
    p.add_argument("src")
    p.add_argument("--out", required=True, help="the folder to write (outside SRC)")
    p.add_argument("--label-map", help='JSON object, e.g. \'{"melanoma": "MEL", "common nevus": "NV"}\'')
    p.add_argument("--id-column", help="the labels table's image-id column (default: detected)")
    p.add_argument("--label-column", help="the labels table's diagnosis column (default: detected)")
    p = sub.add_parser("shift", parents=[rewrite, bad], help="a copy of a split, as another clinic's camera would show it")
    p.add_argument("data_dir", help="the data folder (in the layout) the split belongs to")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--split-path", default=None, help="the split CSV (reports/split.csv); not needed with --split all")
    p.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    p.add_argument("--seed", type=int, default=0, help="with the image id, decides each image's shifts")
    p.add_argument("--kinds", default=",".join(SHIFT_KINDS), help=f"comma-separated, of: {','.join(SHIFT_KINDS)}")
    p.add_argument("--max-per-image", type=int, default=3, help="each image gets 1 to this many shifts")
    p = sub.add_parser("demo", parents=[rewrite], help="the synthetic demo data set")
    p.add_argument("out_dir")
    for flag, default in (("--n-images", 400), ("--height", 120), ("--width", 160), ("--seed", 0)):
        p.add_argument(flag, type=int, default=default)
    p = sub.add_parser("check", help="print what a data folder holds and everything wrong with it")
    p.add_argument("data_dir")
    p.add_argument("--fast", action="store_true", help="names, labels and pairing only, no pixel checks")
    p.add_argument("--partial", action="store_true", help="images may lack a mask or a labels row")
    ap.epilog = "commands:\n" + "\n".join("  " + c.format_usage().split(": ", 1)[1].strip() for c in sub.choices.values())
    a = ap.parse_args(argv)
    try:
        if a.command == "ham10000":
            return 0 if prepare_ham10000(a.downloads_dir, a.out, overwrite=a.overwrite)["ok"] else 1
        if a.command == "check":
            report = validate_dataset(a.data_dir, decode=not a.fast, partial=a.partial)
            print(report)
            return 0 if report.ok else 1
        if a.command == "demo":
            path = make_synthetic_dataset(a.out_dir, a.n_images, (a.height, a.width), a.seed, a.overwrite)
            print(f"{SYNTHETIC_NOTE}: {a.n_images} images ({a.width}x{a.height}, seed {a.seed}) in {path}\n  "
                  + ", ".join(f"{c} {n}" for c, n in class_image_counts(a.n_images).items()))
        elif a.command == "folder":
            out = convert_folder(a.src, a.out, label_map=a.label_map, id_column=a.id_column,
                                 label_column=a.label_column, on_bad_data=a.on_bad_data, overwrite=a.overwrite)
            record = json.loads((out / CONVERSION_RECORD).read_text())
            print(f"Wrote {record['counts']['written']} images of {a.src} in the layout to {out}; check it with "
                  f"python -m skin_utils.prepare check {out}")
        else:
            out = build_shifted_split(a.data_dir, a.out, split_path=a.split_path, split=a.split, seed=a.seed,
                                      kinds=a.kinds, max_per_image=a.max_per_image, overwrite=a.overwrite,
                                      on_bad_data=a.on_bad_data)
            record = json.loads((out / SHIFT_RECORD).read_text())
            print(f"Wrote {record['n_images']} shifted images of split {a.split!r} to {out}; images per kind: "
                  f"{record['images_per_kind']}. Score them with:\n  papermill notebooks/03_evaluate.ipynb "
                  f"shifted.ipynb -p data_dir {out} -p split all -p run <the run to score>")
        return 0
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
