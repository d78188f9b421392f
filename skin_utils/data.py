"""From a data folder to batches: `load_data` (index, lesion-level split, uint8 array cache), the datasets
and loaders, and the synthetic demo when there are no data (`resolve_data_dir`). Images stay uint8 up to the
training step, which normalises them on the device: four times less memory traffic than float32.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision import tv_tensors
from tqdm.auto import tqdm

from skin_utils import distributed, prepare
from skin_utils.config import SPLITS, resolve
from skin_utils.demo import SYNTHETIC_NOTE, make_synthetic_dataset
from skin_utils.labels import CLASS_NAMES
from skin_utils.layout import (LesionLeakageWarning, as_hw, binarise_mask, load_index, read_csv_with_ids, read_image,
                               read_mask)
from skin_utils.transforms import build_augmentation

#: data_dir values that fall back to the synthetic demo when the folder holds no data set.
DEMO_DATA_DIRS = ("data", "demo", "synthetic")
#: Bump when what is cached for the same files changes. 2: large images read reduced; masks of
#: another size resized once, straight to the cache size.
CACHE_VERSION = 2


# -------------------------------------------------------------------------- the lesion-level split
def make_split(index: pd.DataFrame, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> pd.DataFrame:
    """Each image to train/val/test by lesion (HAM10000 has 10,015 images of 7,470 lesions: an image split leaks
    near-duplicates into the test split): per diagnosis, the lesions shuffled with ``seed`` and cut at ``fractions``
    (train, val, test; `config` checks them), one in every split for a class of >= 3 lesions."""
    fractions = np.asarray(fractions, dtype=float)
    if fractions.shape != (3,) or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split fractions={tuple(fractions)} must be three numbers >= 0 summing to 1 "
                         "(train, val, test).")
    if not index.attrs.get("has_lesion_ids", True):
        warnings.warn("These labels carry no lesion ids: the split is by image, and near-duplicate images of one "
                      "lesion may leak between train and test. Give the labels a lesion_id column to split by lesion.",
                      LesionLeakageWarning, stacklevel=2)
    lesions = index.groupby("lesion_id", sort=True)["label"].agg(lambda s: s.mode().iat[0])
    rng = np.random.default_rng(seed)
    assignment = {}
    for label in sorted(lesions.unique()):
        ids = rng.permutation(lesions.index[lesions == label].to_numpy())
        n = len(ids)
        n_val, n_test = int(round(n * fractions[1])), int(round(n * fractions[2]))
        if n >= 3:
            n_val, n_test = max(n_val, int(fractions[1] > 0)), max(n_test, int(fractions[2] > 0))
        assignment.update(zip(ids, ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test))
    out = index[["image_id", "lesion_id", "dx", "label"]].copy()
    out["split"] = out["lesion_id"].map(assignment)
    return out.reset_index(drop=True)


def load_or_make_split(index: pd.DataFrame, path, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> pd.DataFrame:
    """The split stored at ``path`` (described by ``<path>.json``) when it was made for the same data,
    fractions and seed, else a new one written there: every notebook shares one split."""
    path, meta_path = Path(path), Path(path).with_suffix(".json")
    want = {"data_fingerprint": index.attrs.get("fingerprint"), "fractions": [float(f) for f in fractions],
            "seed": int(seed), "n_images": int(len(index))}
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if all(meta.get(k) == v for k, v in want.items()):
            split = read_csv_with_ids(path)
            # the fingerprint does not see lesion ids: a split made before they were added or corrected would leak
            if dict(zip(split["image_id"], split["lesion_id"])) == dict(zip(index["image_id"], index["lesion_id"])):
                return split
    split = make_split(index, fractions, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    split.to_csv(path, index=False)
    meta_path.write_text(json.dumps({**want, "data_dir": index.attrs.get("data_dir"),
                                     "images_per_split": split["split"].value_counts().to_dict(),
                                     "lesions_per_split": split.groupby("split")["lesion_id"].nunique().to_dict()},
                                    indent=2))
    return split


def split_summary(split: pd.DataFrame, class_names) -> pd.DataFrame:
    """Images and lesions per class and split, with a total row."""
    def counts(part):
        parts = [part[part["split"] == s] for s in SPLITS]
        return [n for p in parts for n in (len(p), p["lesion_id"].nunique())]
    rows = {name: counts(split[split["label"] == i]) for i, name in enumerate(class_names)}
    return pd.DataFrame.from_dict({**rows, "total": counts(split)}, orient="index", dtype=int, columns=[
        f"{s}_{what}" for s in SPLITS for what in ("images", "lesions")]).rename_axis("class")


def subsample_by_lesion(index: pd.DataFrame, max_samples: int | None, seed: int = 0) -> pd.DataFrame:
    """At most ``max_samples`` images, whole lesions, each class in proportion (at least one lesion)."""
    if max_samples is None or max_samples >= len(index):
        return index
    rng = np.random.default_rng(seed)
    keep = []
    for _, group in index.groupby("label"):
        lesions = rng.permutation(group["lesion_id"].unique())
        quota = max(1, int(round(max_samples * len(group) / len(index))))
        taken = group.groupby("lesion_id").size()[lesions].cumsum().to_numpy()  # images, lesion after lesion
        keep += list(lesions[:int((taken < quota).sum()) + 1])  # up to the first that reaches the quota
    out = index[index["lesion_id"].isin(set(keep))].reset_index(drop=True)
    out.attrs = dict(index.attrs)
    h = hashlib.sha256((index.attrs.get("fingerprint", "") + "|" + ",".join(out["image_id"])).encode())
    out.attrs.update(fingerprint=h.hexdigest()[:12],
                     subsample={"max_samples": int(max_samples), "seed": int(seed), "of": int(len(index))})
    return out


# ---------------------------- the uint8 array cache: every image and mask decoded and resized once
def default_cache_dir() -> Path:
    """``$SKIN_UTILS_CACHE``, else ``~/.cache/skin_utils`` (delete it at any time)."""
    return Path(os.environ.get("SKIN_UTILS_CACHE", Path.home() / ".cache" / "skin_utils"))


def resize_pair(image: np.ndarray, mask: np.ndarray | None, hw) -> tuple[np.ndarray, np.ndarray | None]:
    """An RGB uint8 image resized bilinearly to ``hw``, and its {0, 1} mask resized as 0/255 grey with the
    same filter and cut at half range, so that its border follows the image's (no nearest-neighbour steps)."""
    h, w = as_hw(hw)
    img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if mask is None:
        return img, None
    grey = Image.fromarray(np.multiply(mask, 255, dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    return img, binarise_mask(np.asarray(grey), 255.0)


@dataclass
class ArrayCache:
    """``images[i]`` (uint8 (N, H, W, 3), memory-mapped) and ``masks[i]`` (uint8 (N, H, W) in {0, 1};
    all 0 for an image without a mask: never score those) of ``image_ids[i]``."""

    path: Path
    images: np.ndarray
    masks: np.ndarray
    image_ids: list[str]

    @classmethod
    def open(cls, path: Path) -> ArrayCache:
        return cls(path, np.load(path / "images.npy", mmap_mode="r"), np.load(path / "masks.npy", mmap_mode="r"),
                   json.loads((path / "info.json").read_text())["image_ids"])

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes + self.masks.nbytes)


def build_cache(index: pd.DataFrame, image_size, cache_dir=None, num_threads: int | None = None,
                progress: bool = True) -> ArrayCache:
    """The cache of ``index`` at ``image_size`` in ``cache_dir/<key>`` (the key hashes the cache version, the data
    fingerprint, (H, W), and each image's and mask's path and modification time: the fingerprint sees file sizes,
    and an edited BMP or TIFF keeps its size), built if needed on a few threads into a temporary folder renamed
    into place. N x H x W x 4 bytes: 8,512 images at 128 px take 558 MB."""
    hw = as_hw(image_size)
    key = hashlib.sha256(f"v{CACHE_VERSION}|{index.attrs.get('fingerprint', '')}|{hw[0]}x{hw[1]}|".encode())
    for files in zip(index["image_path"], index["mask_path"]):
        key.update("".join(f"{f}\t{os.stat(f).st_mtime_ns}\n" for f in files if pd.notna(f)).encode())
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / key.hexdigest()[:16]
    if (final / "info.json").is_file():
        return ArrayCache.open(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        n = len(index)
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, *hw, 3))
        masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (n, *hw))

        def work(i):  # an image read reduced when large, and its mask (None or NaN: none, cached as zeros)
            mask_path = index["mask_path"].iat[i]
            mask = read_mask(mask_path) if pd.notna(mask_path) else None
            images[i], mask = resize_pair(read_image(index["image_path"].iat[i], shrink_to=hw), mask, hw)
            masks[i] = 0 if mask is None else mask

        t0 = time.perf_counter()
        with ThreadPoolExecutor(num_threads or min(8, os.cpu_count() or 1)) as pool:  # PIL releases the GIL
            list(tqdm(pool.map(work, range(n)), total=n, disable=not progress,
                      desc=f"caching {n} images at (H, W) = {hw}", mininterval=1.0))
        images.flush(), masks.flush()
        del images, masks
        (tmp / "info.json").write_text(json.dumps({
            "version": CACHE_VERSION, "image_size": list(hw), "n_images": n, "data_dir": index.attrs.get("data_dir"),
            "fingerprint": index.attrs.get("fingerprint"), "seconds_to_build": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "image_ids": list(index["image_id"])}))
        os.replace(tmp, final)
    except OSError:
        if not (final / "info.json").is_file():  # not just another process finishing the same entry first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ArrayCache.open(final)


# ---------------------------------------------------------------------------- datasets and loaders
class CachedLesionDataset(Dataset):
    """``(image uint8 (3, H, W), mask uint8 (1, H, W), label, row)`` from an `ArrayCache`; ``rows``
    selects the split. Only the geometry of ``augment`` runs here; its colour part runs per batch."""

    def __init__(self, cache: ArrayCache, labels, rows=None, augment: str = "none"):
        self.images, self.masks = cache.images, cache.masks
        self.labels = np.asarray(labels, dtype=np.int64)
        self.rows = np.arange(len(self.labels)) if rows is None else np.asarray(rows)
        self.transform = build_augmentation(augment)[0]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        r = int(self.rows[i])
        image = tv_tensors.Image(torch.from_numpy(np.array(self.images[r])).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(np.array(self.masks[r]))[None])
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor), int(self.labels[r]), r


def make_loader(dataset, batch_size: int, device, shuffle: bool = False, sampler=None, num_workers: int | None = None,
                seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A seeded DataLoader for the device: on CUDA pinned memory and most cores as workers; on a CPU none
    with 2 cores or fewer (the model needs them), else a quarter. Under torchrun a shuffling or balanced
    loader gets this process's share and the workers are divided among the machine's processes. Workers are
    kept between epochs only for a loader that neither shuffles nor augments: a random one's are started anew
    each epoch, seeded from ``generator`` (which `engine.fit` reseeds per epoch, so resume repeats the draws)."""
    device = torch.device(device)
    in_order = not shuffle and sampler is None and getattr(dataset, "transform", None) is None
    sampler = distributed.shard_sampler(dataset, sampler, shuffle=shuffle, seed=seed, drop_last=drop_last)
    workers = num_workers
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        workers = max(1, min(8, cores - 1)) if device.type == "cuda" else 0 if cores <= 2 else max(1, cores // 4)
        workers = max(1, workers // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) if workers else 0  # torchrun's
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
                      num_workers=int(workers), pin_memory=device.type == "cuda",
                      persistent_workers=workers > 0 and in_order, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(seed), prefetch_factor=4 if workers > 0 else None)


# -------------------------------------------------------------------------- the data of a notebook
def resolve_data_dir(data_dir="data", synthetic_dir="data/synthetic_demo", n_demo_images: int = 400,
                     demo_image_size=(120, 160), root: Path | None = None) -> Path:
    """``data_dir`` (relative: to the repository root) when it holds a data set, else, for "data" and the
    demo names, the synthetic demo (generated once into ``synthetic_dir``)."""
    path = resolve(data_dir, root)
    markers = ("images", "HAM10000_images_part_1", "HAM10000_metadata.csv", "GroundTruth.csv")
    if path.is_dir() and any((path / m).exists() for m in markers):
        return path
    if str(data_dir) not in (*DEMO_DATA_DIRS, str(resolve("data", root))):
        raise FileNotFoundError(f"data_dir={str(data_dir)!r} (resolved to {path}) holds no data set: expected "
                                "images/, masks/ and HAM10000_metadata.csv (see data/README.md, or run "
                                "`python -m skin_utils.prepare ham10000 DOWNLOADS_DIR --out data`). Use "
                                "data_dir='data' for the demo.")
    # overwrite=True: a demo of other settings is regenerated; the generator never overwrites other data
    return make_synthetic_dataset(resolve(synthetic_dir, root), n_images=n_demo_images,
                                  image_size=as_hw(demo_image_size), overwrite=True)


@dataclass
class Data:
    """A data set ready to train on or score: its index, the lesion-level split, the array cache."""

    index: pd.DataFrame
    split: pd.DataFrame
    cache: ArrayCache | None
    image_size: tuple[int, int]  # (H, W)
    rows: dict = field(default_factory=dict)  # split name -> positions in index / cache

    # the folder given (a converted folder's copy is index.attrs["converted"])
    data_dir = property(lambda self: self.index.attrs.get("data_dir", ""))
    synthetic = property(lambda self: bool(self.index.attrs.get("synthetic", False)))
    labels = property(lambda self: self.index["label"].to_numpy())  # class index per image, -1 without a diagnosis
    has_labels = property(lambda self: bool((self.index["label"] >= 0).any()))
    # at least one image has a mask (the cache holds zeros for the others)
    has_masks = property(lambda self: bool(self.index["mask_path"].notna().any()))

    @property
    def name(self) -> str:  # what titles call the data set
        if self.synthetic:
            return SYNTHETIC_NOTE
        return f"{'folder' if self.index.attrs.get('converted') else 'HAM10000 layout:'} {Path(self.data_dir).name}"

    def describe(self) -> dict:
        a = self.index.attrs
        return {"data_dir": self.data_dir, "converted": a.get("converted"), "synthetic": self.synthetic,
                "fingerprint": a.get("fingerprint"), "n_images": int(len(self.index)),
                "n_lesions": int(self.index["lesion_id"].nunique()), "label_file": a.get("label_file"),
                "has_lesion_ids": bool(a.get("has_lesion_ids", True)), "has_labels": self.has_labels,
                "has_masks": self.has_masks, "n_with_label": int((self.index["label"] >= 0).sum()),
                "n_with_mask": int(self.index["mask_path"].notna().sum()),
                "label_mapping": a.get("label_mapping") or {}, "image_size": list(self.image_size),
                "images_per_split": {k: int(len(v)) for k, v in self.rows.items()},
                "skipped_problems": len(a.get("problems", []) or []), "subsample": a.get("subsample")}

    def dataset(self, split: str, augment: str = "none") -> CachedLesionDataset:  # "train", "val", "test", "all"
        return CachedLesionDataset(self.cache, self.labels, self.rows[split], augment=augment)


def load_data(data_dir="data", image_size=128, *, split_path="reports/split.csv", split_fractions=(0.7, 0.15, 0.15),
              seed: int = 0, max_samples: int | None = None, on_bad_data: str = "raise", cache_dir=None,
              need_split: bool = True, cache: bool = True, progress: bool = True, label_map=None,
              label_column: str | None = None, id_column: str | None = None, partial: bool | None = None) -> Data:
    """Index ``data_dir`` (the demo for "data" when it holds no data set), validate it, take the lesion-level
    split at ``split_path`` (made there the first time) and build the cache at ``image_size`` (``cache=False``:
    none, to look without training). A folder not in the layout (``_lesion`` masks, a ``labels.csv``, nested
    images, ...) is converted once by `skin_utils.prepare.convert_folder` into ``<cache_dir>/converted/``.
    ``partial`` (default: ``not need_split``, scoring a whole folder) keeps images without a mask or labels row."""
    path = resolve(data_dir)
    explicit = str(data_dir) not in DEMO_DATA_DIRS and path != resolve("data")
    folder = path if explicit and path.is_dir() else resolve_data_dir(data_dir)
    reason = prepare.layout_mismatch(folder, label_map, id_column, label_column)
    converted = reason and prepare.converted_copy(
        folder, Path(cache_dir or default_cache_dir()) / "converted", reason, label_map=label_map,
        id_column=id_column, label_column=label_column, on_bad_data=on_bad_data)
    partial = not need_split if partial is None else partial
    index = load_index(converted or folder, on_bad_data=on_bad_data, partial=partial)
    if converted:
        record = json.loads((converted / prepare.CONVERSION_RECORD).read_text())
        kept = ("label_file", "label_mapping", "unknown_labels", "dropped_labels")
        index.attrs.update(data_dir=str(folder), converted=str(converted), **{k: record[k] for k in kept})
    index = subsample_by_lesion(index, max_samples, seed)
    if need_split:
        split = load_or_make_split(index, resolve(split_path), split_fractions, seed)
        names = index["image_id"].map(split.set_index("image_id")["split"]).to_numpy()
        rows = {s: np.flatnonzero(names == s) for s in SPLITS}
    else:
        split, rows = index[["image_id", "lesion_id", "dx", "label"]].assign(split="all"), {}
    rows["all"] = np.arange(len(index))
    arrays = build_cache(index, image_size, cache_dir=cache_dir, progress=progress) if cache else None
    return Data(index=index, split=split, cache=arrays, image_size=as_hw(image_size), rows=rows)


def train_val_loaders(data: Data, batch_size: int, device, *, augment: str = "standard",
                      class_balance: str = "weighted_loss", balance_power: float = 0.5, seed: int = 0,
                      num_workers: int | None = None) -> tuple[DataLoader, DataLoader, torch.nn.Module | None]:
    """Training (shuffled, augmented) and validation (in order) loaders, and the colour augmentation the training
    step applies to each batch (or None). ``class_balance`` "sampler" and "both" draw training images with
    probability ~ (1 / class count) ** ``balance_power`` (1: classes equally often)."""
    train_set = data.dataset("train", augment=augment)
    sampler = None
    if class_balance in ("sampler", "both"):
        labels = data.labels[data.rows["train"]]
        sampler = WeightedRandomSampler(torch.as_tensor((1.0 / np.bincount(labels)[labels]) ** balance_power),
                                        len(labels), generator=torch.Generator().manual_seed(seed))
    train = make_loader(train_set, batch_size, device, shuffle=True, sampler=sampler, num_workers=num_workers,
                        seed=seed, drop_last=len(train_set) > batch_size)
    val = make_loader(data.dataset("val"), batch_size, device, num_workers=num_workers, seed=seed)
    return train, val, build_augmentation(augment)[1]


def check_trainable(data: Data, seg_weight: float, cls_weight: float) -> None:
    """Refuse the mask loss on training images without a mask: it would teach the decoder empty masks,
    and their validation Dice (1.0, empty on empty) would pick the checkpoint."""
    no_mask = ~data.index["has_mask"].to_numpy(bool)[data.rows["train"]]
    if seg_weight > 0 and no_mask.any():
        folder = data.data_dir
        what = ("has no lesion masks" if no_mask.all() else
                f"has {int(no_mask.sum())} of {len(no_mask)} training images without a lesion mask")
        raise ValueError(
            f"{folder} {what}: the mask loss would train the decoder on empty masks, and their validation Dice "
            "(1.0 for empty on empty) would choose the checkpoint. Train the diagnosis head alone with seg_weight 0:\n"
            f"  papermill notebooks/02_train.ipynb out.ipynb -p data_dir {folder} -p seg_weight 0\n"
            f"  python -m skin_utils.train --data-dir {folder} --seg-weight 0\n"
            "or add the masks (masks/<image_id>_segmentation.png).")


def train_class_counts(data: Data) -> np.ndarray:
    """Images per class in the training split; ValueError when training images have no diagnosis."""
    labels = data.labels[data.rows["train"]]
    if (labels < 0).any():
        raise ValueError(f"{int((labels < 0).sum())} of {len(labels)} training images of {data.data_dir} have no "
                         "diagnosis (label -1; a masks-only folder, or images without a labels row): train the "
                         "masks alone (cls_weight=0), train on a folder with a labels file, or score this one with "
                         "03_evaluate (split='all').")
    return np.bincount(labels, minlength=len(CLASS_NAMES))


def _sample(index: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return index if len(index) <= n else index.sample(n=n, random_state=seed)


def lesion_area_fractions(index: pd.DataFrame, max_images: int | None = 3000,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lesion pixels / image pixels of (at most ``max_images``) images with a mask, with their labels; empty
    arrays for a folder without masks."""
    part = _sample(index[index["mask_path"].notna()], max_images or len(index), seed)
    with ThreadPoolExecutor(4) as pool:
        areas = list(pool.map(lambda p: float(read_mask(p).mean()), part["mask_path"]))
    return np.asarray(areas), part["label"].to_numpy()


def sample_per_class(index: pd.DataFrame, per_class: int = 5, seed: int = 0):
    """Up to ``per_class`` random images of each class: (images, masks at their image's size or None, labels)."""
    rows = pd.concat([_sample(g, per_class, seed) for _, g in index.groupby("label")])
    images = [read_image(p) for p in rows["image_path"]]
    masks = [read_mask(m, hw=im.shape[:2]) if isinstance(m, str) else None for m, im in zip(rows["mask_path"], images)]
    return images, masks, rows["label"].tolist()
