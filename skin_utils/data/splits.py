"""Lesion-level, diagnosis-stratified train / validation / test splits.

HAM10000 has several images of many lesions (10,015 images of 7,470 lesions). Splitting images
at random puts near-identical pictures of one lesion on both sides and inflates every number;
here whole lesions go to one split. Within each diagnosis the lesions are shuffled with the seed
and cut at the given fractions, so every split keeps the class mix (at lesion level).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ["image_id", "lesion_id", "dx", "label", "split"]
ID_COLUMNS = ("image_id", "lesion_id")
_MISSING = ("", "NA", "N/A", "NaN", "nan", "<NA>", "None", "null", "NULL", "-nan", "#N/A")


def read_csv_with_ids(path) -> pd.DataFrame:
    """A CSV of ours (a split, a per-image table) with ``image_id`` and ``lesion_id`` read as text
    exactly as written: a lesion called "NA" or "None" stays that lesion (pandas' default would
    make it missing and drop it from every group-by). Only an empty id cell is missing; the other
    columns read missing values as pandas does."""
    columns = pd.read_csv(path, nrows=0).columns
    na = {c: [""] if c in ID_COLUMNS else list(_MISSING) for c in columns}
    return pd.read_csv(path, keep_default_na=False, na_values=na, dtype={c: str for c in ID_COLUMNS if c in columns})


def make_split(index: pd.DataFrame, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> pd.DataFrame:
    """Assign each image to train/val/test by lesion. Returns ``index``'s image_id, lesion_id,
    dx, label plus a ``split`` column. Each class with at least 3 lesions gets at least one
    lesion in each split."""
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split fractions={tuple(fractions)} must be three numbers >= 0 summing to 1 "
                         "(train, val, test).")
    if not index.attrs.get("has_lesion_ids", True):
        warnings.warn(
            "These labels carry no lesion ids (GroundTruth.csv only): the split is by image, and "
            "near-duplicate images of one lesion may leak between train and test. Add "
            "HAM10000_metadata.csv to split by lesion.", stacklevel=2)
    lesions = index.groupby("lesion_id", sort=True)["label"].agg(lambda s: s.mode().iat[0])
    rng = np.random.default_rng(seed)
    assignment = {}
    for label in sorted(lesions.unique()):
        ids = lesions.index[lesions == label].to_numpy()
        ids = ids[rng.permutation(len(ids))]
        n = len(ids)
        n_val = int(round(n * fractions[1]))
        n_test = int(round(n * fractions[2]))
        if n >= 3:
            n_val = max(n_val, 1 if fractions[1] > 0 else 0)
            n_test = max(n_test, 1 if fractions[2] > 0 else 0)
        n_train = n - n_val - n_test
        for lesion, split in zip(ids, ["train"] * n_train + ["val"] * n_val + ["test"] * n_test):
            assignment[lesion] = split
    out = index[["image_id", "lesion_id", "dx", "label"]].copy()
    out["split"] = out["lesion_id"].map(assignment)
    return out.reset_index(drop=True)


def load_or_make_split(index: pd.DataFrame, path, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> pd.DataFrame:
    """The split stored at ``path`` (a CSV, with ``<path>.json`` describing it) when it was made
    for the same data, fractions and seed; otherwise a new one, written there. Every notebook
    calls this, so training, evaluation and EDA always share one split."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    want = {"data_fingerprint": index.attrs.get("fingerprint"), "fractions": [float(f) for f in fractions],
            "seed": int(seed), "n_images": int(len(index))}
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in want.items()):
            split = read_csv_with_ids(path)
            if set(split["image_id"]) == set(index["image_id"]):
                return split
    split = make_split(index, fractions, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    split[SPLIT_COLUMNS].to_csv(path, index=False)
    counts = split["split"].value_counts().to_dict()
    meta_path.write_text(json.dumps({**want, "data_dir": index.attrs.get("data_dir"),
                                     "images_per_split": counts,
                                     "lesions_per_split": split.groupby("split")["lesion_id"].nunique().to_dict()},
                                    indent=2))
    return split


def read_split(path, index: pd.DataFrame) -> pd.DataFrame:
    """A stored split, checked against the data it is applied to."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No split at {path}. Run notebooks/02_train.ipynb first (it writes it), "
                                "or evaluate with split='all'.")
    meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
    if meta.get("data_fingerprint") not in (None, index.attrs.get("fingerprint")):
        raise ValueError(
            f"The split {path} was made for other data (fingerprint {meta.get('data_fingerprint')}, "
            f"data_dir {meta.get('data_dir')}); {index.attrs.get('data_dir')} has fingerprint "
            f"{index.attrs.get('fingerprint')}. To score an external data set use split='all'.")
    return read_csv_with_ids(path)


def split_summary(split: pd.DataFrame, class_names) -> pd.DataFrame:
    """Images and lesions per class and split, as a table for reports."""
    rows = []
    for name_i, name in enumerate(class_names):
        row = {"class": name}
        for s in SPLITS:
            part = split[(split["split"] == s) & (split["label"] == name_i)]
            row[f"{s}_images"] = len(part)
            row[f"{s}_lesions"] = part["lesion_id"].nunique()
        rows.append(row)
    table = pd.DataFrame(rows).set_index("class")
    table.loc["total"] = [len(split[split["split"] == s]) if c.endswith("images")
                          else split.loc[split["split"] == s, "lesion_id"].nunique()
                          for c in table.columns for s in [c.split("_")[0]]]
    return table
