"""Split the ISIC archive's UDA-1 collection into a choice half and a report half (docs/data.md).

Input: a folder with ``images/<id>.jpg``, ``masks/<id>_segmentation.png`` (where there is one) and ``labels.csv``
(``image_id,diagnosis``: melanoma or nevus). The collection has no lesion or patient id, so each image is its own
unit, except byte-identical files (the same photograph under two ids), which stay in one half. Stratified by
diagnosis, seed 0. Writes ``uda1_split.csv`` (``image_id,diagnosis,half,sha256``) and, with ``--folders``, the two
halves as folders of links that ``python -m skin_utils.prepare folder`` converts.

    python docs/results/uda1_split.py uda1_all --out docs/results/uda1_split.csv --folders .
"""
import argparse
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

SEED = 0


def split(folder: Path) -> pd.DataFrame:
    labels = pd.read_csv(folder / "labels.csv", dtype=str)
    bad = sorted(set(labels["diagnosis"]) - {"melanoma", "nevus"})
    if bad:
        raise ValueError(f"{folder / 'labels.csv'}: diagnoses other than melanoma and nevus: {bad}")
    labels["sha256"] = [hashlib.sha256((folder / "images" / f"{i}.jpg").read_bytes()).hexdigest()
                        for i in labels["image_id"]]
    rng, labels["half"] = np.random.default_rng(SEED), ""
    for _, rows in labels.sort_values("image_id").groupby("diagnosis"):
        groups = rows["sha256"].drop_duplicates().to_numpy()
        rng.shuffle(groups)
        choice = set(groups[: (len(groups) + 1) // 2])
        labels.loc[rows.index, "half"] = np.where(rows["sha256"].isin(choice), "choice", "report")
    if labels.groupby("sha256")["half"].nunique().max() > 1:
        raise AssertionError("a duplicated image landed in both halves")
    return labels.sort_values("image_id")[["image_id", "diagnosis", "half", "sha256"]]


def write_folders(folder: Path, table: pd.DataFrame, out: Path) -> None:
    for half, rows in table.groupby("half"):
        dest = out / f"uda1_{half}"
        for sub in ("images", "masks"):
            (dest / sub).mkdir(parents=True, exist_ok=True)
        for i in rows["image_id"]:
            for src, link in ((folder / "images" / f"{i}.jpg", dest / "images" / f"{i}.jpg"),
                              (folder / "masks" / f"{i}_segmentation.png", dest / "masks" / f"{i}_segmentation.png")):
                if src.is_file() and not link.exists():
                    link.symlink_to(src.resolve())
        rows[["image_id", "diagnosis"]].to_csv(dest / "labels.csv", index=False)
        print(f"{dest}: {len(rows)} images", rows["diagnosis"].value_counts().to_dict())


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", type=Path, help="images/, masks/ and labels.csv of the whole collection")
    p.add_argument("--out", type=Path, default=Path("uda1_split.csv"), help="the split file to write")
    p.add_argument("--folders", type=Path, help="also write uda1_choice/ and uda1_report/ (links) under this folder")
    args = p.parse_args()
    table = split(args.folder)
    table.to_csv(args.out, index=False)
    print(f"{args.out}:", table.groupby(["half", "diagnosis"]).size().to_dict())
    if args.folders:
        write_folders(args.folder, table, args.folders)
