"""Small helpers behind notebooks/01_eda: a stratified sample of images and lesion sizes."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from skin_utils.data.imageio import read_image, read_mask


def _sample(index: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return index if len(index) <= n else index.sample(n=n, random_state=seed)


def lesion_area_fractions(index: pd.DataFrame, max_images: int | None = 3000, seed: int = 0,
                          threads: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Lesion pixels / image pixels for (a random sample of at most ``max_images``) images,
    with their labels."""
    part = _sample(index, max_images or len(index), seed)
    with ThreadPoolExecutor(threads) as pool:
        areas = list(pool.map(lambda p: float(read_mask(p).mean()), part["mask_path"]))
    return np.asarray(areas), part["label"].to_numpy()


def sample_per_class(index: pd.DataFrame, per_class: int = 5, seed: int = 0):
    """Up to ``per_class`` random images of each class: (images, masks, labels) lists; each mask
    at its image's size (None where the image has no mask)."""
    rows = pd.concat([_sample(g, per_class, seed) for _, g in index.groupby("label")])
    images = [read_image(p) for p in rows["image_path"]]
    masks = [read_mask(m, hw=im.shape[:2]) if isinstance(m, str) else None
             for m, im in zip(rows["mask_path"], images)]
    return images, masks, rows["label"].tolist()
