"""A shifted copy of a split: the same lesions as if photographed by another clinic's camera.

A model validated only on images from the cameras it was trained on has not been validated
(issue 9). This module writes a copy of one split of a data folder in which every image has
been changed as another camera would change it, so that ``03_evaluate`` scores the same
lesions under a domain shift and the drop can be read off side by side::

    python -m skin_utils.data.shift --data-dir ../shared/data/ham10000_200x150 \\
        --split-path reports/split.csv --split test --out data/shifted_test [--seed 0] \\
        [--kinds cast,gamma,resolution,blur,vignette,noise,jpeg] [--max-per-image 3]
    papermill notebooks/03_evaluate.ipynb out.ipynb -p data_dir data/shifted_test -p split all ...

The copy has the HAM10000 layout: ``images/<image_id>.jpg`` (the shifted image, the size of
the original), ``masks/`` (the original mask files, byte for byte: every shift keeps the
geometry), ``HAM10000_metadata.csv`` (the source's rows for those images; written from the
index when the source has no such file) and ``shift.json`` (what was done to each image, and
with which settings). Keep it out of the repository (``data/`` is not tracked).

Each image gets 1 to ``max_per_image`` of the ``kinds`` (`SHIFT_KINDS`), chosen and
parameterised by a generator seeded with ``(seed, image_id)`` alone: the same image always
gets the same shifts, whatever else is in the split. The parameters are drawn from
`SHIFT_RANGES`, outside what the "camera" augmentation trains on
(`skin_utils.data.datasets.CAMERA_AUGMENT`); JPEG re-compression, sensor noise and turns of
hue (a colour matrix: what a sensor with other spectral sensitivities gives, and what colour
constancy cannot undo) are not trained on at all. So the measurement is not circular. The
shifts are applied in the order a camera would (`SHIFT_KINDS`: optics, sensor, colour
processing, compression) with the functions of `skin_utils.data.colour`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from skin_utils.data import colour
from skin_utils.data.datasets import CAMERA_AUGMENT
from skin_utils.data.imageio import read_image
from skin_utils.data.splits import read_csv_with_ids

#: The kinds of shift, in the order they are applied.
SHIFT_KINDS = ("vignette", "blur", "resolution", "noise", "cast", "hue", "gamma", "jpeg")
#: Where each shift's parameter is drawn from (uniformly, from one of the ranges when there are two).
SHIFT_RANGES = {
    "vignette": {"strength": (0.5, 0.75)},        # 1 - strength * r**2, r = 1 in the corners (training: 0.1-0.4)
    "blur": {"sigma": (0.015, 0.025)},            # Gaussian sigma, fraction of the shorter side (training: 0.004-0.01)
    "resolution": {"scale": (0.2, 0.4)},          # down to this fraction of the size and back (training: 0.5-0.8)
    "noise": {"sigma": (0.02, 0.05)},             # Gaussian sensor noise, fraction of full range (training: none)
    "cast": {"strength": (0.3, 0.5)},             # |centred log channel gains|: a pure colour change (training: <= 0.25)
    "hue": {"degrees": (8.0, 20.0), "saturation": ((0.55, 0.75), (1.3, 1.6))},  # turn (either way), scale chroma (training: no turn, 0.8-1.2)
    "gamma": {"gamma": ((0.45, 0.65), (1.5, 2.0))},  # x ** gamma, below or above (training: 0.8-1.25)
    "jpeg": {"quality": (10, 30)},                # re-compression quality (training: none)
}
DEFAULT_JPEG_QUALITY = 95  # the images without a "jpeg" shift: close to lossless
RECORD_NAME = "shift.json"
METADATA_NAME = "HAM10000_metadata.csv"
METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")


def training_cast_limit() -> float:
    """The largest cast strength (norm of the centred log gains) the "camera" augmentation can
    draw: the shifted casts start above it."""
    lo, hi = (np.log(g) for g in CAMERA_AUGMENT["cast"]["gain"])
    corners = np.array(np.meshgrid([lo, hi], [lo, hi], [lo, hi])).reshape(3, -1).T
    return float(np.linalg.norm(corners - corners.mean(axis=1, keepdims=True), axis=1).max())


def image_rng(image_id: str, seed: int = 0) -> np.random.Generator:
    """The generator of one image's shifts: from ``seed`` and the image id alone."""
    digest = int.from_bytes(hashlib.sha256(str(image_id).encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest])


def draw_shifts(image_id: str, seed: int = 0, kinds=SHIFT_KINDS, max_per_image: int = 3) -> list[dict]:
    """The shifts of one image, in the order they are applied: 1 to ``max_per_image`` distinct
    ``kinds``, each a dict ``{"kind": ..., <its parameters>}`` (see `SHIFT_RANGES`)."""
    kinds = check_kinds(kinds)
    if int(max_per_image) < 1:
        raise ValueError(f"max_per_image={max_per_image!r}: each image needs at least one shift.")
    rng = image_rng(image_id, seed)
    n = int(rng.integers(1, min(int(max_per_image), len(kinds)) + 1))
    chosen = set(rng.choice(kinds, size=n, replace=False).tolist())
    shifts = []
    for kind in SHIFT_KINDS:
        if kind not in chosen:
            continue
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


def check_kinds(kinds) -> list[str]:
    """``kinds`` (a list, or text "cast,blur") as a list of known kinds, in `SHIFT_KINDS` order."""
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    kinds = list(kinds)
    unknown = sorted(set(kinds) - set(SHIFT_KINDS))
    if unknown or not kinds:
        raise ValueError(f"kinds={kinds!r}: choose one or more of {', '.join(SHIFT_KINDS)}"
                         + (f" (unknown: {unknown})." if unknown else "."))
    return [k for k in SHIFT_KINDS if k in kinds]


def apply_shifts(image: np.ndarray, shifts: list[dict]) -> tuple[np.ndarray, int]:
    """``image`` (uint8 (H, W, 3)) with ``shifts`` applied (but for the JPEG compression),
    and the JPEG quality to save it with (that of a "jpeg" shift, else `DEFAULT_JPEG_QUALITY`)."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
    h, w = x.shape[-2:]
    quality = DEFAULT_JPEG_QUALITY
    for s in shifts:
        kind = s["kind"]
        if kind == "vignette":
            x = colour.vignette(x, s["strength"])
        elif kind == "blur":
            x = colour.gaussian_blur(x, s["sigma"] * min(h, w))
        elif kind == "resolution":
            x = colour.downscale_upscale(x, s["scale"])
        elif kind == "noise":
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(s["seed"]))
            x = (x + s["sigma"] * noise).clamp(0, 1)
        elif kind == "cast":
            x = colour.colour_cast(x, s["gains"])
        elif kind == "hue":
            x = colour.colour_matrix(x, colour.hue_saturation_matrix(s["degrees"], s["saturation"]))
        elif kind == "gamma":
            x = colour.adjust_gamma(x, s["gamma"])
        elif kind == "jpeg":
            quality = int(s["quality"])
        else:
            raise ValueError(f"Unknown shift kind {kind!r}; the kinds are {SHIFT_KINDS}.")
    out = (x[0].permute(1, 2, 0).clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()
    return out, quality


def split_image_ids(index: pd.DataFrame, split_path, split: str) -> list[str]:
    """The image ids of ``split`` in the split file ``split_path`` (``split="all"``: every image
    of ``index``), each checked to be in ``index``."""
    if split == "all":
        return index["image_id"].tolist()
    if split_path is None:
        raise ValueError(f"split={split!r} needs --split-path (the split CSV that training wrote, e.g. "
                         "reports/split.csv); use --split all to shift every image.")
    path = Path(split_path)
    if not path.is_file():
        raise FileNotFoundError(f"No split file at {path}: pass the split.csv the training run used "
                                "(notebook 02 writes it), or --split all.")
    table = read_csv_with_ids(path)
    if not {"image_id", "split"} <= set(table.columns):
        raise ValueError(f"{path} is not a split file: it needs the columns image_id and split "
                         f"(it has {list(table.columns)}).")
    ids = table.loc[table["split"] == split, "image_id"].tolist()
    if not ids:
        raise ValueError(f"{path} has no image in split {split!r} (its splits: {sorted(table['split'].unique())}).")
    missing = sorted(set(ids) - set(index["image_id"]))
    if missing:
        raise ValueError(f"{len(missing)} image(s) of split {split!r} in {path} are not in the data folder "
                         f"(first: {missing[:3]}): the split was made for other data.")
    return ids


def _metadata(data_dir: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """The labels of ``rows``: the source's HAM10000_metadata.csv rows when it has one, else
    written from the index (dx as the lower-case class name)."""
    source = data_dir / METADATA_NAME
    if source.is_file():
        table = pd.read_csv(source, dtype=str, keep_default_na=False)
        if "image_id" in table.columns:
            return table[table["image_id"].isin(set(rows["image_id"]))]
    return pd.DataFrame({
        "lesion_id": rows["lesion_id"], "image_id": rows["image_id"],
        "dx": [str(d).lower() if isinstance(d, str) else "" for d in rows["dx"]],
        "dx_type": "unknown", "age": rows["age"], "sex": rows["sex"], "localization": rows["localization"],
    })[list(METADATA_COLUMNS)]


def _prepare_out(out: Path, data_dir: Path, overwrite: bool) -> Path:
    """Check ``out`` can be written and return the temporary folder to write into."""
    if out == data_dir or data_dir in out.parents or out in data_dir.parents:
        raise ValueError(f"--out {out} must be outside the data folder {data_dir} (and not hold it).")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty; choose another --out, or pass --overwrite "
                                  "to replace a shifted copy written there before.")
        if not (out / RECORD_NAME).is_file():
            raise FileExistsError(f"{out} holds something other than a shifted copy (no {RECORD_NAME}); "
                                  "it is not overwritten. Choose another --out.")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    return tmp


def build_shifted_split(data_dir, out, *, split_path=None, split: str = "test", seed: int = 0,
                        kinds=SHIFT_KINDS, max_per_image: int = 3, overwrite: bool = False,
                        on_bad_data: str = "raise", progress: bool = True) -> Path:
    """Write the shifted copy of ``split`` of ``data_dir`` (see the module's description) to
    ``out`` and return its path. The folder appears whole or not at all (written beside it,
    then renamed); an existing one is replaced only with ``overwrite`` and only when it is a
    shifted copy itself."""
    from tqdm.auto import tqdm

    from skin_utils.data.layout import load_index

    data_dir, out = Path(data_dir).expanduser().resolve(), Path(out).expanduser().resolve()
    kinds = check_kinds(kinds)
    index = load_index(data_dir, on_bad_data=on_bad_data, decode=False)
    ids = split_image_ids(index, split_path, split)
    rows = index.set_index("image_id", drop=False).loc[ids]
    tmp = _prepare_out(out, data_dir, overwrite)
    try:
        record = {}
        for image_id, image_path, mask_path in tqdm(
                zip(rows["image_id"], rows["image_path"], rows["mask_path"]), total=len(rows),
                desc=f"shifting {split}", disable=not progress):
            shifts = draw_shifts(image_id, seed, kinds, max_per_image)
            image, quality = apply_shifts(read_image(image_path), shifts)
            Image.fromarray(image).save(tmp / "images" / f"{image_id}.jpg", quality=quality)
            has_mask = isinstance(mask_path, str) and bool(mask_path)
            if has_mask:
                shutil.copyfile(mask_path, tmp / "masks" / Path(mask_path).name)
            record[image_id] = {"shifts": shifts, "jpeg_quality": quality, "source_image": str(image_path),
                                "mask": Path(mask_path).name if has_mask else None}
        _metadata(data_dir, rows).to_csv(tmp / METADATA_NAME, index=False)
        synthetic = bool(index.attrs.get("synthetic"))
        if synthetic:  # titles and reports keep saying these are synthetic images
            (tmp / "dataset_info.json").write_text(json.dumps(
                {"synthetic": True, "shifted_copy_of": str(data_dir)}, indent=2))
        counts = {k: sum(any(s["kind"] == k for s in r["shifts"]) for r in record.values()) for k in kinds}
        (tmp / RECORD_NAME).write_text(json.dumps({
            "tool": "skin_utils.data.shift", "data_dir": str(data_dir),
            "split_path": None if split_path is None else str(Path(split_path).resolve()), "split": split,
            "seed": int(seed), "kinds": kinds, "max_per_image": int(max_per_image), "ranges": SHIFT_RANGES,
            "training_ranges": CAMERA_AUGMENT, "default_jpeg_quality": DEFAULT_JPEG_QUALITY,
            "n_images": len(record), "images_per_kind": counts, "images": record}, indent=1))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_record(folder) -> dict:
    """The ``shift.json`` of a shifted copy."""
    path = Path(folder) / RECORD_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {folder} is not a shifted copy "
                                "(python -m skin_utils.data.shift writes one).")
    return json.loads(path.read_text())


def shift_table(folder) -> pd.DataFrame:
    """One row per image of a shifted copy: ``image_id``, ``shifts`` (the kinds, "+"-joined),
    ``jpeg_quality`` and one bool column per kind, to join with ``evaluate_per_image.csv`` and
    see which shift costs what."""
    record = read_record(folder)
    rows = []
    for image_id, r in record["images"].items():
        kinds = [s["kind"] for s in r["shifts"]]
        rows.append({"image_id": image_id, "shifts": "+".join(kinds), "jpeg_quality": r["jpeg_quality"],
                     **{k: k in kinds for k in SHIFT_KINDS}})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    """``python -m skin_utils.data.shift --data-dir DIR --split-path SPLIT.csv --split test --out OUT``."""
    ap = argparse.ArgumentParser(prog="python -m skin_utils.data.shift", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", required=True, help="the data folder the split belongs to")
    ap.add_argument("--split-path", default=None, help="the split CSV (reports/split.csv); not needed with --split all")
    ap.add_argument("--split", default="test", choices=("train", "val", "test", "all"))
    ap.add_argument("--out", required=True, help="the folder to write (outside the repository's tracked files)")
    ap.add_argument("--seed", type=int, default=0, help="with the image id, decides each image's shifts")
    ap.add_argument("--kinds", default=",".join(SHIFT_KINDS), help=f"comma-separated, of: {','.join(SHIFT_KINDS)}")
    ap.add_argument("--max-per-image", type=int, default=3, help="each image gets 1 to this many shifts")
    ap.add_argument("--on-bad-data", default="raise", choices=("raise", "skip"))
    ap.add_argument("--overwrite", action="store_true", help="replace a shifted copy already at --out")
    args = ap.parse_args(argv)
    try:
        out = build_shifted_split(args.data_dir, args.out, split_path=args.split_path, split=args.split,
                                  seed=args.seed, kinds=args.kinds, max_per_image=args.max_per_image,
                                  overwrite=args.overwrite, on_bad_data=args.on_bad_data)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    record = read_record(out)
    print(f"Wrote {record['n_images']} shifted images of split {args.split!r} to {out}; images per kind: "
          f"{record['images_per_kind']}. Score them with:\n  papermill notebooks/03_evaluate.ipynb "
          f"shifted.ipynb -p data_dir {out} -p split all -p run <the run to score>")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
