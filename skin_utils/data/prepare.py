"""Turn the official HAM10000 downloads into the layout that :mod:`skin_utils.data.layout` reads.

Usage::

    python -m skin_utils.data.prepare DOWNLOADS_DIR [--out data] [--overwrite]

``DOWNLOADS_DIR`` holds, zipped or already extracted, the files of the Harvard Dataverse
record doi:10.7910/DVN/DBW86T (this tool never downloads anything)::

    HAM10000_images_part_1.zip                    (or the folder HAM10000_images_part_1/)
    HAM10000_images_part_2.zip                    (or HAM10000_images_part_2/)
    HAM10000_segmentations_lesion_tschandl.zip    (or HAM10000_segmentations_lesion_tschandl/)
    HAM10000_metadata.tab                         (or .csv, .txt, no extension; tab or comma separated)

and the result is::

    <out>/images/<image_id>.jpg
    <out>/masks/<image_id>_segmentation.png
    <out>/HAM10000_metadata.csv                   comma-separated, official columns

Zip members are extracted by their base name only; members with absolute paths, ``..``
components or symlinks are refused, ``__MACOSX/`` and hidden files are skipped. Running it
again is cheap: files already in place with the same size are kept (``--overwrite`` replaces
files that differ). It ends by validating the result and printing the report.
"""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from skin_utils.data.layout import (
    DATAVERSE,
    IMAGE_EXTENSIONS,
    DataReport,
    describe_folder,
    is_ignored,
    read_table,
    split_mask_name,
    validate_dataset,
)

__all__ = ["EXPECTED_COUNT", "PrepareSummary", "main", "prepare_ham10000"]

#: Images (and masks, and metadata rows) in the full HAM10000 release.
EXPECTED_COUNT = 10015
DATAVERSE_URL = "https://doi.org/10.7910/DVN/DBW86T"
METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")

#: (key, base name, what it holds) of the archives/folders we look for.
ARCHIVES = (
    ("images_part_1", "HAM10000_images_part_1", "images"),
    ("images_part_2", "HAM10000_images_part_2", "images"),
    ("segmentations", "HAM10000_segmentations_lesion_tschandl", "masks"),
)
METADATA_CANDIDATES = (
    "HAM10000_metadata.csv", "HAM10000_metadata.tab", "HAM10000_metadata", "HAM10000_metadata.txt",
)
MAX_LISTED = 10


@dataclass
class PrepareSummary:
    """What :func:`prepare_ham10000` did and found; ``str()`` gives the readable summary."""

    downloads_dir: str
    out_dir: str
    sources: dict[str, str | None] = field(default_factory=dict)
    n_images: int = 0
    n_masks: int = 0
    n_labels: int = 0
    written: int = 0
    kept: int = 0
    conflicts: list[str] = field(default_factory=list)
    unsafe_members: list[str] = field(default_factory=list)
    skipped_members: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    missing_downloads: list[str] = field(default_factory=list)
    ids_without_image: list[str] = field(default_factory=list)
    ids_without_mask: list[str] = field(default_factory=list)
    ids_without_label: list[str] = field(default_factory=list)
    report: DataReport | None = None

    @property
    def problems(self) -> list[str]:
        out = list(self.errors)
        out += [f"missing download: {m}" for m in self.missing_downloads]
        out += [f"unsafe zip member refused: {m}" for m in self.unsafe_members]
        out += [f"differs from the download, kept (use --overwrite): {c}" for c in self.conflicts]
        for what, ids in (("image", self.ids_without_image), ("mask", self.ids_without_mask),
                          ("label", self.ids_without_label)):
            if ids:
                out.append(f"{len(ids)} id(s) without {what}")
        if self.report is not None:
            out += [str(p) for p in self.report.problems]
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        def ids(xs: list[str]) -> str:
            shown = ", ".join(xs[:MAX_LISTED])
            return shown + (f", ... ({len(xs) - MAX_LISTED} more)" if len(xs) > MAX_LISTED else "")

        lines = [f"HAM10000 from {self.downloads_dir} -> {self.out_dir}"]
        for key, src in self.sources.items():
            lines.append(f"  {key:14s} {src or 'NOT FOUND'}")
        full = " (the full release has 10,015 of each)" if EXPECTED_COUNT not in (
            self.n_images, self.n_masks, self.n_labels) or len({self.n_images, self.n_masks, self.n_labels}) > 1 else ""
        lines.append(f"  found {self.n_images} images, {self.n_masks} masks, {self.n_labels} labels{full}")
        lines.append(f"  files written {self.written}, already in place {self.kept}")
        if self.skipped_members:
            lines.append(f"  skipped {len(self.skipped_members)} non-image entries (e.g. {self.skipped_members[0]})")
        for what, xs in (("an image", self.ids_without_image), ("a mask", self.ids_without_mask),
                         ("a label", self.ids_without_label)):
            if xs:
                lines.append(f"  {len(xs)} id(s) lack {what}: {ids(xs)}")
        for e in self.errors:
            lines.append(f"  ERROR: {e}")
        if self.unsafe_members:
            lines.append(f"  REFUSED {len(self.unsafe_members)} zip member(s) with unsafe names "
                         f"(absolute, '..' or symlink): {ids(self.unsafe_members)}")
        if self.conflicts:
            lines.append(f"  {len(self.conflicts)} file(s) in {self.out_dir} differ from the downloads and were "
                         f"kept: {ids(self.conflicts)}. Rerun with --overwrite to replace them.")
        if self.missing_downloads:
            lines.append(
                f"  MISSING: {', '.join(self.missing_downloads)}. Download them from the {DATAVERSE} "
                f"({DATAVERSE_URL}) into {self.downloads_dir} and run this again."
            )
        if self.report is not None:
            lines.append("")
            lines.append(str(self.report))
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
def _find(downloads: Path, names: tuple[str, ...], want_dir: bool) -> Path | None:
    """First of ``names`` (case-insensitive) in downloads/ or one folder below it."""
    folders = [downloads] + sorted(
        p for p in downloads.iterdir() if p.is_dir() and not is_ignored(p.name)
    )
    wanted = [n.lower() for n in names]
    for folder in folders:
        try:
            entries = {e.name.lower(): Path(e.path) for e in os.scandir(folder)}
        except OSError:
            continue
        for n in wanted:
            p = entries.get(n)
            if p is not None and (p.is_dir() if want_dir else p.is_file()):
                return p
    return None


def _unsafe_member(info: zipfile.ZipInfo) -> bool:
    """A zip member with an absolute path, a drive, a ``..`` component, or a symlink."""
    name = info.filename.replace("\\", "/")
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        return True
    return stat.S_ISLNK(info.external_attr >> 16)


class _Writer:
    """Puts each download file at its place in the output (images/ or masks/, by name), keeping
    files already there with the same size, and records what it did in the summary."""

    def __init__(self, out: Path, overwrite: bool, summary: PrepareSummary):
        self.images = out / "images"
        self.masks = out / "masks"
        # created on first use: no empty masks/ when the segmentations are not there
        self.overwrite = overwrite
        self.s = summary
        self.image_ids: set[str] = set()
        self.mask_ids: set[str] = set()

    def route(self, base: str, origin: str) -> Path | None:
        """Destination of a file called ``base`` (None: not an image, skipped)."""
        if is_ignored(base) or not base or base in (".", ".."):
            return None
        stem, ext = os.path.splitext(base)
        if ext.lower() not in IMAGE_EXTENSIONS:
            self.s.skipped_members.append(origin)
            return None
        split = split_mask_name(stem)
        if split is not None:
            self.mask_ids.add(split[0])
            return self.masks / base
        self.image_ids.add(stem)
        return self.images / base

    def place(self, dest: Path, size: int, write: Callable[[Path], None]) -> None:
        if dest.exists():
            if dest.stat().st_size == size:
                self.s.kept += 1
                return
            if not self.overwrite:
                self.s.conflicts.append(str(dest))
                return
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            write(tmp)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.s.written += 1


def _from_zip(zpath: Path, w: _Writer) -> None:
    """Extract the images and masks of one zip by their base names (unsafe members refused)."""
    try:
        zf = zipfile.ZipFile(zpath)
    except (zipfile.BadZipFile, OSError) as e:
        w.s.errors.append(f"{zpath.name} is not a readable zip ({e}): the download is probably incomplete, "
                          f"download it again from {DATAVERSE_URL}")
        return
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            if _unsafe_member(info):
                w.s.unsafe_members.append(f"{zpath.name}:{info.filename}")
                continue
            parts = info.filename.replace("\\", "/").split("/")
            if any(is_ignored(p) for p in parts):
                continue
            dest = w.route(parts[-1], f"{zpath.name}:{info.filename}")
            if dest is None:
                continue

            def write(tmp: Path, info=info) -> None:
                with zf.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)

            try:
                w.place(dest, info.file_size, write)
            except (zipfile.BadZipFile, OSError, EOFError) as e:  # CRC error, truncated archive
                w.s.errors.append(f"{zpath.name}:{info.filename} cannot be extracted ({e}); download the zip again")


def _from_folder(folder: Path, w: _Writer) -> None:
    """Copy the images and masks of an extracted download folder (any depth) by their names."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not is_ignored(d))
        for name in sorted(filenames):
            src = Path(dirpath) / name
            dest = w.route(name, str(src))
            if dest is None:
                continue
            w.place(dest, src.stat().st_size, lambda tmp, src=src: shutil.copyfile(src, tmp))


def _write_metadata(src: Path, out: Path, w: _Writer, summary: PrepareSummary) -> set[str]:
    """Write the metadata as ``out/HAM10000_metadata.csv`` (comma-separated, official columns
    first); returns its image ids (empty when it cannot be used, with the error in summary)."""
    try:
        df = read_table(src)
    except Exception as e:  # noqa: BLE001
        summary.errors.append(f"{src.name} cannot be parsed ({e}); download it again")
        return set()
    missing = [c for c in ("image_id", "dx") if c not in df.columns]
    if missing:
        summary.errors.append(
            f"{src.name} has no column {', '.join(missing)} (columns: {', '.join(df.columns)}); "
            f"expected the official {','.join(METADATA_COLUMNS)}"
        )
        return set()
    cols = [c for c in METADATA_COLUMNS if c in df.columns] + [c for c in df.columns if c not in METADATA_COLUMNS]
    text = df[cols].to_csv(index=False, lineterminator="\n").encode("utf-8")
    dest = out / "HAM10000_metadata.csv"
    if dest.exists() and dest.read_bytes() == text:
        summary.kept += 1
    elif dest.exists() and not w.overwrite:
        summary.conflicts.append(str(dest))
    else:
        tmp = dest.with_name(".HAM10000_metadata.csv.part")
        tmp.write_bytes(text)
        os.replace(tmp, dest)
        summary.written += 1
    return {i for i in df["image_id"].tolist() if i}


def prepare_ham10000(
    downloads_dir: str | os.PathLike,
    out_dir: str | os.PathLike = "data",
    overwrite: bool = False,
    verbose: bool = True,
) -> PrepareSummary:
    """Build ``out_dir/{images,masks,HAM10000_metadata.csv}`` from the official downloads.

    Returns a :class:`PrepareSummary` (``.ok``, ``.problems``, ``.report`` = the
    :class:`~skin_utils.data.layout.DataReport` of the result); prints it when ``verbose``.
    Raises FileNotFoundError when ``downloads_dir`` holds none of the expected downloads.
    """
    downloads = Path(downloads_dir).expanduser().absolute()
    out = Path(out_dir).expanduser().absolute()
    if not downloads.is_dir():
        raise FileNotFoundError(
            f"Downloads folder {downloads} does not exist. Download HAM10000_images_part_1.zip, "
            "HAM10000_images_part_2.zip, HAM10000_segmentations_lesion_tschandl.zip and "
            f"HAM10000_metadata.tab from the {DATAVERSE} ({DATAVERSE_URL}) into one folder and pass it."
        )
    summary = PrepareSummary(downloads_dir=str(downloads), out_dir=str(out))

    found: dict[str, Path | None] = {}
    for key, base, _ in ARCHIVES:
        src = _find(downloads, (base + ".zip",), want_dir=False) or _find(downloads, (base,), want_dir=True)
        found[key] = src
        if src is None:
            summary.missing_downloads.append(base + ".zip")
    meta = _find(downloads, METADATA_CANDIDATES, want_dir=False)
    found["metadata"] = meta
    if meta is None:
        summary.missing_downloads.append("HAM10000_metadata.tab (or .csv)")
    summary.sources = {k: (str(v) if v else None) for k, v in found.items()}

    if all(v is None for v in found.values()):
        hint = ""
        if _find(downloads, ("dataverse_files.zip",), want_dir=False):
            hint = " There is a dataverse_files.zip: unzip it first (it holds the zips above)."
        raise FileNotFoundError(
            f"No HAM10000 downloads in {downloads}. {describe_folder(downloads)}\n"
            "Expected (zipped or extracted): HAM10000_images_part_1.zip, HAM10000_images_part_2.zip, "
            "HAM10000_segmentations_lesion_tschandl.zip and HAM10000_metadata.tab (or .csv), from the "
            f"{DATAVERSE} ({DATAVERSE_URL}).{hint}"
        )
    for key, src in found.items():
        if src is not None and src.is_dir() and src.parent == out and src.name != "images":
            raise ValueError(
                f"{src} is inside the output folder {out}, where the data loader would read it as a "
                "second copy of the data: use a different --out (e.g. data)."
            )

    out.mkdir(parents=True, exist_ok=True)
    w = _Writer(out, overwrite, summary)
    for key, base, _ in ARCHIVES:
        src = found[key]
        if src is None:
            continue
        if verbose:
            print(f"[prepare] {base}: {'extracting' if src.is_file() else 'copying'} {src}", flush=True)
        (_from_zip if src.is_file() else _from_folder)(src, w)
    label_ids = _write_metadata(meta, out, w, summary) if meta is not None else set()

    summary.n_images, summary.n_masks, summary.n_labels = len(w.image_ids), len(w.mask_ids), len(label_ids)
    all_ids = w.image_ids | w.mask_ids | label_ids
    summary.ids_without_image = sorted(all_ids - w.image_ids)
    summary.ids_without_mask = sorted(all_ids - w.mask_ids)
    summary.ids_without_label = sorted(all_ids - label_ids) if meta is not None else []
    if verbose:
        print("[prepare] validating the result ...", flush=True)
    summary.report = validate_dataset(out, decode=True)
    if verbose:
        print(summary, flush=True)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m skin_utils.data.prepare",
        description="Build data/images, data/masks and data/HAM10000_metadata.csv from the official "
        f"HAM10000 downloads ({DATAVERSE}), zipped or extracted.",
    )
    ap.add_argument("downloads_dir", help="folder with the HAM10000 zips/folders and HAM10000_metadata")
    ap.add_argument("--out", default="data", help="output data folder (default: data)")
    ap.add_argument("--overwrite", action="store_true", help="replace output files that differ")
    args = ap.parse_args(argv)
    try:
        summary = prepare_ham10000(args.downloads_dir, args.out, overwrite=args.overwrite, verbose=True)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0 if summary.ok else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
