"""The steps the notebooks share, so that each notebook cell reads like a sentence:
find the data, split it by lesion, cache it at the training size, build loaders."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from skin_utils.config import CLASS_BALANCE
from skin_utils.data.cache import ArrayCache, build_cache
from skin_utils.data.datasets import (CachedLesionDataset, balanced_sampler, build_augmentation, make_loader,
                                      resolve_data_dir)
from skin_utils.data.imageio import as_hw
from skin_utils.data.layout import load_index
from skin_utils.data.splits import load_or_make_split
from skin_utils.demo.synthetic import SYNTHETIC_NOTE
from skin_utils.labels import CLASS_NAMES


#: data_dir values that fall back to the synthetic demo when the folder holds no data set.
DEMO_DATA_DIRS = ("data", "demo", "synthetic")


def subsample_by_lesion(index: pd.DataFrame, max_samples: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``max_samples`` images, taking whole lesions, class by class in proportion to the
    data (every class keeps at least one lesion). ``None`` keeps everything."""
    if max_samples is None or max_samples >= len(index):
        return index
    rng = np.random.default_rng(seed)
    keep = []
    for _, group in index.groupby("label"):
        lesions = group["lesion_id"].unique()
        lesions = lesions[rng.permutation(len(lesions))]
        quota = max(1, int(round(max_samples * len(group) / len(index))))
        sizes = group.groupby("lesion_id").size()
        total = 0
        for lesion in lesions:
            if total >= quota and total > 0:
                break
            keep.append(lesion)
            total += sizes[lesion]
    out = index[index["lesion_id"].isin(set(keep))].reset_index(drop=True)
    out.attrs = dict(index.attrs)
    h = hashlib.sha256((index.attrs.get("fingerprint", "") + "|" + ",".join(out["image_id"])).encode())
    out.attrs["fingerprint"] = h.hexdigest()[:12]
    out.attrs["subsample"] = {"max_samples": int(max_samples), "seed": int(seed), "of": int(len(index))}
    return out


@dataclass
class Data:
    """A data set ready to train on: its index, the lesion-level split, the array cache."""

    index: pd.DataFrame
    split: pd.DataFrame
    cache: ArrayCache | None
    image_size: tuple[int, int]  # (H, W)
    rows: dict = field(default_factory=dict)  # split name -> positions in index / cache

    @property
    def data_dir(self) -> str:
        return self.index.attrs.get("data_dir", "")

    @property
    def synthetic(self) -> bool:
        return bool(self.index.attrs.get("synthetic", False))

    @property
    def name(self) -> str:
        """What to write in titles: the data set, flagged when it is synthetic."""
        if self.synthetic:
            return SYNTHETIC_NOTE
        folder = Path(self.data_dir).name
        if self.index.attrs.get("label_source") in ("metadata", "groundtruth"):
            return f"HAM10000 layout: {folder}"
        return f"folder {folder}"

    @property
    def labels(self) -> np.ndarray:
        """Class index per image, -1 for an image without a diagnosis."""
        return self.index["label"].to_numpy()

    @property
    def has_labels(self) -> bool:
        """At least one usable image has a diagnosis (classification can be scored)."""
        return bool((self.index["label"] >= 0).any())

    @property
    def has_masks(self) -> bool:
        """At least one usable image has a mask (segmentation can be scored; the cache holds
        all-zero masks for the others, see ``index["has_mask"]``)."""
        return bool(self.index["mask_path"].notna().any())

    def describe(self) -> dict:
        return {
            "data_dir": self.data_dir, "synthetic": self.synthetic,
            "fingerprint": self.index.attrs.get("fingerprint"),
            "n_images": int(len(self.index)), "n_lesions": int(self.index["lesion_id"].nunique()),
            "label_source": self.index.attrs.get("label_source"),
            "label_file": self.index.attrs.get("label_file"),
            "has_lesion_ids": bool(self.index.attrs.get("has_lesion_ids", True)),
            "has_labels": self.has_labels, "has_masks": self.has_masks,
            "n_with_label": int((self.index["label"] >= 0).sum()),
            "n_with_mask": int(self.index["mask_path"].notna().sum()),
            "label_mapping": self.index.attrs.get("label_mapping") or {},
            "image_size": list(self.image_size),
            "images_per_split": {k: int(len(v)) for k, v in self.rows.items()},
            "skipped_problems": len(self.index.attrs.get("problems", []) or []),
            "subsample": self.index.attrs.get("subsample"),
        }

    def dataset(self, split: str, augment: str = "none") -> CachedLesionDataset:
        """The cached samples of one split ("train", "val", "test" or "all")."""
        return CachedLesionDataset(self.cache, self.labels, self.rows[split], augment=augment)


def load_data(data_dir="data", image_size=128, *, split_path="reports/split.csv",
              split_fractions=(0.7, 0.15, 0.15), seed: int = 0, max_samples: int | None = None,
              on_bad_data: str = "raise", cache_dir=None, need_split: bool = True,
              cache: bool = True, progress: bool = True, label_map=None, label_column: str | None = None,
              id_column: str | None = None, partial: bool | None = None) -> Data:
    """Index ``data_dir`` (the synthetic demo when it holds no data set), validate it, take the
    lesion-level split stored at ``split_path`` (made there the first time) and build the cache
    at ``image_size`` (an int, or ``(H, W)``; ``cache=False``: skip it, for looking at the data
    without training).

    Any folder shape works (`skin_utils.data.layout.load_index`): labels and masks, labels only
    (no masks: ``mask_path`` None, all-zero masks in the cache), masks only (``label`` -1); a
    folder with neither raises ``DataLayoutError`` pointing to ``notebooks/04_inference``.
    ``label_map`` (dict or JSON text), ``label_column`` and ``id_column`` say how to read the
    labels (None: detected). ``partial`` (default: ``not need_split``, i.e. when a whole folder is
    scored rather than split for training) keeps images that lack a mask or a labels row."""
    from skin_utils.nb.paths import resolve

    # An existing folder named explicitly is read as it is (any layout; load_index says what is
    # wrong with it); "data" and the demo names go through resolve_data_dir (the demo fallback).
    path = resolve(data_dir)
    explicit = str(data_dir) not in DEMO_DATA_DIRS and path != resolve("data")
    folder = path if explicit and path.is_dir() else resolve_data_dir(data_dir)
    index = load_index(folder, on_bad_data=on_bad_data, label_map=label_map, label_column=label_column,
                       id_column=id_column, partial=(not need_split) if partial is None else partial)
    index = subsample_by_lesion(index, max_samples, seed)
    hw = as_hw(image_size)
    if need_split:
        split = load_or_make_split(index, resolve(split_path), split_fractions, seed)
        by_id = split.set_index("image_id")["split"]
        names = index["image_id"].map(by_id).to_numpy()
        rows = {s: np.flatnonzero(names == s) for s in ("train", "val", "test")}
    else:
        split = index[["image_id", "lesion_id", "dx", "label"]].assign(split="all")
        rows = {}
    rows["all"] = np.arange(len(index))
    arrays = build_cache(index, hw, cache_dir=cache_dir, progress=progress) if cache else None
    return Data(index=index, split=split, cache=arrays, image_size=hw, rows=rows)


class Loaders(NamedTuple):
    """What `train_val_loaders` returns: the two loaders and the colour augmentation that the
    training step applies to each batch on the device (None: no colour augmentation)."""

    train: DataLoader
    val: DataLoader
    batch_transform: torch.nn.Module | None


def train_val_loaders(data: Data, batch_size: int, device, *, augment: str = "standard",
                      class_balance: str = "weighted_loss", balance_power: float = 0.5,
                      seed: int = 0, num_workers: int | None = None) -> Loaders:
    """Loaders for training (shuffled, augmented, optionally class-balanced sampling) and
    validation (in order, no augmentation), and the batch colour augmentation for `fit`."""
    if class_balance not in CLASS_BALANCE:
        raise ValueError(f"class_balance={class_balance!r}: choose one of {CLASS_BALANCE}.")
    train_set = data.dataset("train", augment=augment)
    sampler = None
    if class_balance in ("sampler", "both"):
        sampler = balanced_sampler(data.labels[data.rows["train"]], power=balance_power, seed=seed)
    train = make_loader(train_set, batch_size, device, shuffle=True, sampler=sampler,
                        num_workers=num_workers, seed=seed, drop_last=len(train_set) > batch_size)
    val = make_loader(data.dataset("val"), batch_size, device, num_workers=num_workers, seed=seed)
    return Loaders(train, val, build_augmentation(augment)[1])


def check_trainable(data: Data, seg_weight: float, cls_weight: float) -> None:
    """Refuse to train a head on images that cannot teach it: the mask loss (``seg_weight > 0``)
    on training images without a mask would teach the decoder to draw empty masks, and their
    validation Dice (1.0 for an empty mask on an empty mask) would pick the checkpoint. The
    message gives the command that trains the classification head alone."""
    train = data.rows["train"]
    no_mask = ~data.index["has_mask"].to_numpy(bool)[train]
    if seg_weight > 0 and no_mask.any():
        folder = data.data_dir
        what = ("has no lesion masks" if no_mask.all() else
                f"has {int(no_mask.sum())} of {len(train)} training images without a lesion mask")
        raise ValueError(
            f"{folder} {what}: the mask loss would train the decoder on empty masks, and their validation Dice "
            "(1.0 for empty on empty) would choose the checkpoint. Train the diagnosis head alone with seg_weight 0:\n"
            f"  papermill notebooks/02_train.ipynb out.ipynb -p data_dir {folder} -p seg_weight 0\n"
            f"  python -m skin_utils.train --data-dir {folder} --seg-weight 0\n"
            "or add the masks (<image_id>_segmentation.png in masks/).")


def train_class_counts(data: Data) -> np.ndarray:
    """Images per class in the training split (for `skin_utils.losses.build_loss`). Raises
    ValueError when training images have no diagnosis (label -1): such a set cannot be trained on."""
    labels = data.labels[data.rows["train"]]
    if (labels < 0).any():
        raise ValueError(f"{int((labels < 0).sum())} of {len(labels)} training images of {data.data_dir} have no "
                         "diagnosis (label -1; a masks-only folder, or images without a labels row): train on a "
                         "folder with a labels file, or score this one with 03_evaluate (split='all').")
    return np.bincount(labels, minlength=len(CLASS_NAMES))
