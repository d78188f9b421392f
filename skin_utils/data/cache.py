"""Preprocessing cache: every image and mask decoded and resized once, stored as uint8 arrays.

Files are read with `skin_utils.data.imageio` (the same functions the validator checks them
with) and resized by :func:`resize_pair`. Layout (one folder per data set fingerprint, image
selection and size)::

    <cache_dir>/<key>/images.npy   uint8 (N, H, W, 3)   memory-mapped when read
    <cache_dir>/<key>/masks.npy    uint8 (N, H, W)      0 = skin, 1 = lesion; all 0 for an image
                                                        without a mask (``mask_path`` None: never
                                                        score those, see the index's ``has_mask``)
    <cache_dir>/<key>/info.json    image ids, (H, W), data fingerprint, when and how it was made

``key`` hashes CACHE_VERSION, the data fingerprint (image ids, labels and file sizes, see
`skin_utils.data.layout`), the list of image ids and the size (H, W), so a change of labels,
files (by their size), selection, size or preprocessing makes a new entry instead of reading a
stale one. Size on disk: N x H x W x 4 bytes, e.g. 8,512 images at 128 x 128 take 558 MB, at
256 x 256 2.2 GB. The default folder is ``$SKIN_UTILS_CACHE`` or ``~/.cache/skin_utils``;
delete it at any time to reclaim the space.

Memory while building is bounded by design, whatever the image sizes: each of the few threads
holds one image at a time, and an image of more than `imageio.LARGE_IMAGE_PIXELS` is decoded
reduced (`imageio.read_image(..., shrink_to=...)`: JPEG DCT scaling, else an integer box
reduction) to about `imageio.REDUCING_GAP` times the cache size before it becomes an array; the
results go straight into the memory-mapped files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from skin_utils.data.imageio import as_hw, binarise_mask, read_image, read_mask

#: Bump when what is stored for the same files changes (reading, resizing, binarising).
#: 2: large images read reduced; masks of another size resized once, straight to the cache size.
CACHE_VERSION = 2


def default_cache_dir() -> Path:
    """``$SKIN_UTILS_CACHE``, else ``~/.cache/skin_utils``."""
    return Path(os.environ.get("SKIN_UTILS_CACHE", Path.home() / ".cache" / "skin_utils"))


def resize_pair(image: np.ndarray, mask: np.ndarray | None, hw) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize an RGB uint8 image (bilinear, antialiased when shrinking) and a {0, 1} mask to
    ``hw=(H, W)``.

    The mask is resized as 0/255 grey levels with the same filter, then made binary by the
    package's one rule, `skin_utils.data.imageio.binarise_mask` at half range (>= 128), so that
    its border follows the image's instead of the staircase of nearest neighbour."""
    h, w = as_hw(hw)
    img = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    if mask is None:
        return img, None
    grey = Image.fromarray(np.multiply(mask, 255, dtype=np.uint8)).resize((w, h), Image.BILINEAR)
    return img, binarise_mask(np.asarray(grey), 255.0)


def load_resized(image_path, mask_path, hw) -> tuple[np.ndarray, np.ndarray | None]:
    """An image and its mask (None or NaN: no mask, None comes back) read as for training and
    resized to ``hw=(H, W)`` by :func:`resize_pair`. A large image is read reduced
    (`imageio.read_image` with ``shrink_to``); a mask of another size than its image (same
    aspect: the validator checks it) is resized from its own size, in one step."""
    hw = as_hw(hw)
    image = read_image(image_path, shrink_to=hw)
    has_mask = mask_path is not None and not (isinstance(mask_path, float) and mask_path != mask_path)
    mask = read_mask(mask_path) if has_mask else None
    return resize_pair(image, mask, hw)


def cache_key(index, hw) -> str:
    """16 hex chars from the cache version, the data fingerprint, ``hw=(H, W)`` and the image ids."""
    h = hashlib.sha256()
    h.update(f"v{CACHE_VERSION}|{index.attrs.get('fingerprint', '')}|{hw[0]}x{hw[1]}|".encode())
    h.update("\n".join(index["image_id"]).encode())
    return h.hexdigest()[:16]


@dataclass
class ArrayCache:
    """Read side of the cache: ``images[i]`` and ``masks[i]`` for ``image_ids[i]``."""

    path: Path
    images: np.ndarray
    masks: np.ndarray
    image_ids: list[str]

    @classmethod
    def open(cls, path: Path) -> "ArrayCache":
        info = json.loads((path / "info.json").read_text())
        return cls(
            path=path,
            images=np.load(path / "images.npy", mmap_mode="r"),
            masks=np.load(path / "masks.npy", mmap_mode="r"),
            image_ids=info["image_ids"],
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes + self.masks.nbytes)


def build_cache(index, image_size, cache_dir=None, num_threads: int | None = None,
                progress: bool = True) -> ArrayCache:
    """Return the cache for ``index`` (a `skin_utils.data.layout.load_index` frame) at
    ``image_size`` (an int, or ``(H, W)``), building it first if needed. Building decodes each
    file once (:func:`load_resized`), on a few threads (``num_threads``, default up to 8; PIL
    releases the GIL while decoding and resizing; each thread holds one image at a time), into a
    temporary folder that is renamed into place when complete, so an interrupted build never
    leaves a half-written entry behind. An image without a mask (``mask_path`` None) gets an
    all-zero mask: use the index's ``has_mask`` to leave it out of any segmentation score."""
    hw = as_hw(image_size)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / cache_key(index, hw)
    if (final / "info.json").is_file():
        return ArrayCache.open(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        n = len(index)
        images = np.lib.format.open_memmap(tmp / "images.npy", "w+", np.uint8, (n, *hw, 3))
        masks = np.lib.format.open_memmap(tmp / "masks.npy", "w+", np.uint8, (n, *hw))

        def work(i):
            image, mask = load_resized(index["image_path"].iat[i], index["mask_path"].iat[i], hw)
            images[i] = image
            masks[i] = 0 if mask is None else mask

        threads = num_threads or min(8, os.cpu_count() or 1)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(tqdm(pool.map(work, range(n)), total=n, disable=not progress,
                      desc=f"caching {n} images at (H, W) = {hw}", mininterval=1.0))
        images.flush(), masks.flush()
        del images, masks
        info = {
            "version": CACHE_VERSION, "image_size": list(hw), "n_images": n,
            "data_dir": index.attrs.get("data_dir"), "fingerprint": index.attrs.get("fingerprint"),
            "seconds_to_build": round(time.perf_counter() - t0, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "image_ids": list(index["image_id"]),
        }
        (tmp / "info.json").write_text(json.dumps(info))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished the same entry first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ArrayCache.open(final)
