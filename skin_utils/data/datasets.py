"""Datasets, augmentation and loaders, and where the data is (`resolve_data_dir`).

Images travel as uint8 tensors from the cache to the training step, which converts them to
float and normalises them (on the GPU when there is one): four times less memory traffic than
float32 samples. Augmentation comes in two parts (`build_augmentation`): geometry per sample in
the loader, with ``torchvision.transforms.v2`` on an (Image, Mask) pair so that image and mask
move together; colour per batch in the training step (`BatchColorJitter`, or
`BatchCameraAugment` for ``augment="camera"``), image only.

`Normalize` turns the uint8 batch into the model's input: to [0, 1] floats, the batch
augmentation (training only), colour constancy (`skin_utils.data.colour.shades_of_gray`, when
the run uses it: the same in training, validation, evaluation, calibration and inference),
then the mean/std normalisation. `Normalize.from_config` builds it from a checkpoint's
``normalization`` (`normalization_config`), everywhere one is needed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler
from torchvision import tv_tensors
from torchvision.transforms import v2

from skin_utils import distributed
from skin_utils.data import colour
from skin_utils.data.imageio import as_hw

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
AUGMENTATIONS = ("none", "flips", "standard", "strong", "camera")


class RandomRot90(v2.Transform):
    """Rotate image and mask together by 0, 90, 180 or 270 degrees (0/180 when not square).
    With the flips this covers the eight lossless symmetries of a dermoscopic image, which has
    no natural "up"."""

    def make_params(self, flat_inputs):
        square = all(t.shape[-1] == t.shape[-2] for t in flat_inputs if isinstance(t, torch.Tensor))
        k = int(torch.randint(0, 4, ()))
        return {"k": k if square else 2 * (k % 2)}

    def transform(self, inpt, params):
        if params["k"] == 0 or not isinstance(inpt, torch.Tensor):
            return inpt
        return tv_tensors.wrap(torch.rot90(inpt, params["k"], dims=(-2, -1)), like=inpt) \
            if isinstance(inpt, tv_tensors.TVTensor) else torch.rot90(inpt, params["k"], dims=(-2, -1))


class BatchColorJitter(torch.nn.Module):
    """Brightness, contrast and saturation jitter of a whole float batch in [0, 1], one random
    factor per image and property, on the batch's device. Per sample in the loader the same
    jitter costs more than a millisecond an image (uint8 -> float -> uint8 three times); here it
    is a few vectorised operations per batch inside the training step."""

    def __init__(self, strength: float = 0.1):
        super().__init__()
        self.strength = float(strength)

    def _factors(self, x):
        return 1 + (torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 2 - 1) * self.strength

    @staticmethod
    def _gray(x):
        return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self._factors(x)                                        # brightness
        mean = self._gray(x).mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * self._factors(x) + mean                        # contrast
        gray = self._gray(x)
        x = (x - gray) * self._factors(x) + gray                        # saturation
        return x.clamp_(0, 1)


#: The ranges of ``augment="camera"`` (`BatchCameraAugment`): for each effect the probability
#: ``p`` that an image gets it and the range its parameter is drawn from (uniformly; gamma
#: log-uniformly). The shifted test sets (`skin_utils.data.shift.SHIFT_RANGES`) draw outside them.
CAMERA_AUGMENT = {
    "hair": {"p": 0.2, "count": (1, 4)},               # thin dark curves (1 px wide, 3 px in 30% of images)
    "vignette": {"p": 0.3, "strength": (0.1, 0.4)},    # 1 - strength * r**2, r = 1 in the corners
    "blur": {"p": 0.2, "sigma": (0.004, 0.01)},        # Gaussian sigma, fraction of the shorter side
    "resolution": {"p": 0.2, "scale": (0.5, 0.8)},     # down to this fraction of the size and back
    "cast": {"p": 0.5, "gain": (0.85, 1.15)},          # independent gain per channel
    "jitter": {"p": 1.0, "strength": 0.2},             # brightness, contrast, saturation factors in 1 +- strength
    "gamma": {"p": 0.3, "gamma": (0.8, 1.25)},         # x ** gamma
}


class BatchCameraAugment(torch.nn.Module):
    """What another clinic's camera changes, applied to a float batch in [0, 1] on its device:
    each effect of `CAMERA_AUGMENT` to each image with its own probability and parameters, in
    the order light meets them: hair on the skin, the optics (vignetting, blur), the sensor
    (lower resolution), then the colour processing (cast, brightness / contrast /
    saturation, gamma). Built from `skin_utils.data.colour`'s functions; only the images an
    effect was drawn for are processed.

    Randomness: which images get what, and with which parameters, is drawn on the CPU from
    torch's global generator (a few numbers a batch, copied to the device), so nothing waits
    for the device and a seed gives the same augmentation on every device.
    `skin_utils.engine.fit` seeds that generator every epoch from ``(seed, epoch)``: a run is
    repeatable and a resumed one identical. ``ranges`` overrides parts of `CAMERA_AUGMENT`,
    e.g. ``{"hair": {"p": 0}}``."""

    def __init__(self, ranges: dict | None = None):
        super().__init__()
        self.ranges = {k: dict(v) for k, v in CAMERA_AUGMENT.items()}
        for name, update in (ranges or {}).items():
            if name not in self.ranges:
                raise ValueError(f"BatchCameraAugment: unknown effect {name!r}; the effects are {list(CAMERA_AUGMENT)}.")
            self.ranges[name].update(update)

    def _draw(self, n: int, effect: str):
        """The (CPU) indices of the images that get ``effect``, and a uniform draw in its range
        (``key``) per chosen image: ``(idx, sample(key, *shape))``."""
        idx = torch.nonzero(torch.rand(n) < self.ranges[effect]["p"]).flatten()

        def sample(key, *shape):
            lo, hi = self.ranges[effect][key]
            return lo + (hi - lo) * torch.rand(len(idx), *shape)
        return idx, sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev = x.device
        x = x.float().clone()

        def update(idx, fn, *args):
            """``fn(images, *args)`` on the images ``idx`` (all of them without a copy)."""
            if len(idx) == n:
                return fn(x, *args)
            x[idx] = fn(x[idx], *args)
            return x

        idx, sample = self._draw(n, "hair")
        if len(idx):
            lo, hi = self.ranges["hair"]["count"]
            count = torch.randint(int(lo), int(hi) + 1, (len(idx),))
            mask = colour.hair_mask(len(idx), (h, w), count.to(dev), thick=(torch.rand(len(idx)) < 0.3).to(dev),
                                    max_hairs=int(hi), device=dev)
            shade = (0.02 + 0.23 * torch.rand(len(idx), 1)) * torch.tensor([1.0, 0.8, 0.7])
            x = update(idx, colour.add_hair, mask, shade.to(dev), (0.6 + 0.35 * torch.rand(len(idx))).to(dev))
        idx, sample = self._draw(n, "vignette")
        if len(idx):
            x = update(idx, colour.vignette, sample("strength").to(dev))
        idx, sample = self._draw(n, "blur")
        if len(idx):
            side = min(h, w)
            x = update(idx, colour.gaussian_blur, (sample("sigma") * side).to(dev),
                       math.ceil(3 * self.ranges["blur"]["sigma"][1] * side))
        idx, sample = self._draw(n, "resolution")
        for i, scale in zip(idx.tolist(), sample("scale").tolist()):
            x[i:i + 1] = colour.downscale_upscale(x[i:i + 1], scale)
        idx, sample = self._draw(n, "cast")
        if len(idx):
            x = update(idx, colour.colour_cast, sample("gain", 3).to(dev))
        idx, _ = self._draw(n, "jitter")
        if len(idx):
            s = self.ranges["jitter"]["strength"]
            b, c, sat = (1 + (torch.rand(3, len(idx)) * 2 - 1) * s).to(dev)
            x = update(idx, colour.brightness_contrast_saturation, b, c, sat)
        idx, sample = self._draw(n, "gamma")
        if len(idx):
            lo, hi = self.ranges["gamma"]["gamma"]
            gamma = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(len(idx)))
            x = update(idx, colour.adjust_gamma, gamma.to(dev))
        return x.clamp_(0, 1)


def build_augmentation(augment: str = "standard") -> tuple[v2.Transform | None, torch.nn.Module | None]:
    """``(per_sample, per_batch)`` augmentation. ``per_sample`` (geometry, moves image and mask
    together) runs in the loader on uint8 tensors; ``per_batch`` (colour, image only) runs in
    the training step on the float batch.

    ``"none"``; ``"flips"`` (horizontal and vertical flips, the original recipe);
    ``"standard"`` (recommended for short runs): flips and 90-degree rotations (lossless) and a
    mild colour jitter; ``"strong"``: adds free rotation, zoom and shift and a stronger colour
    jitter, for long runs where overfitting is the problem; ``"camera"``: the geometry of
    ``"standard"`` and, against the differences between clinics' cameras, colour casts,
    brightness / contrast / saturation, gamma, blur, lower resolution, vignetting and hair
    (`BatchCameraAugment`)."""
    flips = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if augment == "none":
        return None, None
    if augment == "flips":
        return v2.Compose(flips), None
    if augment == "standard":
        return v2.Compose([*flips, RandomRot90()]), BatchColorJitter(0.1)
    if augment == "strong":
        return v2.Compose([
            *flips,
            v2.RandomApply([v2.RandomAffine(degrees=180, translate=(0.05, 0.05), scale=(0.9, 1.15))], p=0.7),
        ]), BatchColorJitter(0.2)
    if augment == "camera":
        return v2.Compose([*flips, RandomRot90()]), BatchCameraAugment()
    raise ValueError(f"augment={augment!r}: choose one of {AUGMENTATIONS}.")


NORMALIZATION_KEYS = ("mean", "std", "colour_constancy", "p")


def normalization_config(colour_constancy: str | None = None, p: float = colour.DEFAULT_P,
                         mean=IMAGENET_MEAN, std=IMAGENET_STD) -> dict:
    """What a run records as ``Checkpoint.normalization``: ``{"mean": [r, g, b], "std": [r, g,
    b], "colour_constancy": None | "shades_of_gray", "p": p}``. ``colour_constancy`` is one of
    `skin_utils.data.colour.COLOUR_CONSTANCY` ("none" is stored as None); ``p`` is the norm of
    Shades of Gray."""
    if colour_constancy not in (None, *colour.COLOUR_CONSTANCY):
        raise ValueError(f"colour_constancy={colour_constancy!r}: choose one of {colour.COLOUR_CONSTANCY}.")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1 <= p <= 64:
        raise ValueError(f"colour constancy p={p!r}: expected a number from 1 to 64 (Shades of Gray uses 6).")
    values = {}
    for name, v in (("mean", mean), ("std", std)):
        v = [float(c) for c in v]
        if len(v) != 3 or (name == "std" and min(v) <= 0):
            raise ValueError(f"normalization {name}={v!r}: expected three numbers (r, g, b)"
                             + (", all > 0." if name == "std" else "."))
        values[name] = v
    return {**values, "colour_constancy": None if colour_constancy in (None, "none") else colour_constancy,
            "p": p}


def resolve_normalization(normalization: dict | None) -> dict:
    """A checkpoint's ``normalization`` with every key of `normalization_config`, checked. None
    means ImageNet's statistics without colour constancy; a dict without ``colour_constancy``
    (checkpoints written before it existed) means none. Raises ValueError naming what is wrong."""
    if normalization is None:
        return normalization_config()
    if not isinstance(normalization, dict):
        raise ValueError(f"normalization must be a dict with keys {NORMALIZATION_KEYS}; "
                         f"got {type(normalization).__name__}.")
    unknown = sorted(set(normalization) - set(NORMALIZATION_KEYS))
    if unknown:
        raise ValueError(f"normalization has unknown keys {unknown}; the keys are {NORMALIZATION_KEYS}. "
                         "It was written by other code: use the skin_utils that wrote it.")
    return normalization_config(normalization.get("colour_constancy"), normalization.get("p", colour.DEFAULT_P),
                                normalization.get("mean", IMAGENET_MEAN), normalization.get("std", IMAGENET_STD))


class Normalize(torch.nn.Module):
    """uint8 (N, 3, H, W) -> the model's float input: to [0, 1], then ``jitter`` (a module on
    floats in [0, 1], e.g. `BatchColorJitter`; training only), then colour constancy
    (``colour_constancy="shades_of_gray"``: `skin_utils.data.colour.shades_of_gray` with norm
    ``p``), then ``(x - mean) / std``. Build it from a checkpoint's ``normalization`` with
    `Normalize.from_config`, so that every path feeds the model the same way."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, jitter: torch.nn.Module | None = None,
                 colour_constancy: str | None = None, p: float = colour.DEFAULT_P):
        super().__init__()
        self.config = normalization_config(colour_constancy, p, mean, std)
        mean, std = torch.tensor(self.config["mean"]), torch.tensor(self.config["std"])
        self.register_buffer("scale", 1.0 / (255.0 * std.view(1, 3, 1, 1)))
        self.register_buffer("shift", (mean / std).view(1, 3, 1, 1))
        self.jitter = jitter
        self.colour_constancy, self.p = self.config["colour_constancy"], self.config["p"]

    @classmethod
    def from_config(cls, normalization: dict | None = None, jitter: torch.nn.Module | None = None) -> "Normalize":
        """The `Normalize` of a checkpoint's ``normalization`` (`resolve_normalization`: None is
        ImageNet's without colour constancy), with an optional training ``jitter``."""
        return cls(**resolve_normalization(normalization), jitter=jitter)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.jitter is None and self.colour_constancy is None:
            return images.float().mul_(self.scale).sub_(self.shift)
        x = images.float().div_(255.0)
        if self.jitter is not None:
            x = self.jitter(x)
        if self.colour_constancy == "shades_of_gray":
            x = colour.shades_of_gray(x, self.p)
        return x.mul_(self.scale * 255.0).sub_(self.shift)


class CachedLesionDataset(Dataset):
    """Samples ``(image uint8 (3,H,W), mask uint8 (1,H,W), label, row)`` read from an
    `skin_utils.data.cache.ArrayCache`; ``rows`` selects which cached images belong to this split.
    Only the geometric part of ``augment`` runs here, per sample; its colour part runs on the
    whole batch in the training step (`build_augmentation`'s second value, handed to
    `skin_utils.engine.fit` by `skin_utils.data.loading.train_val_loaders`)."""

    def __init__(self, cache, labels, rows=None, augment: str = "none"):
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


def default_num_workers(device: torch.device | str) -> int:
    """Loader processes: on CUDA, most of the cores; on CPU, none when there are 2 cores or
    fewer (the model needs them, and the cached loader is >10x faster than the step), else a
    quarter of them."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.device(device).type == "cuda":
        return max(1, min(8, cores - 1))
    return 0 if cores <= 2 else max(1, cores // 4)


def make_loader(dataset, batch_size: int, device, shuffle: bool = False, sampler=None,
                num_workers: int | None = None, seed: int = 0, drop_last: bool = False) -> DataLoader:
    """A DataLoader with defaults that suit the device: pinned memory and persistent workers on
    CUDA; a seeded generator so that an epoch's order depends only on the seed.

    Inside a torchrun process group (`skin_utils.distributed`) a shuffling or class-balanced
    loader gets only this process's share of each epoch (`skin_utils.distributed.shard_sampler`;
    ``batch_size`` is then per process), and the default number of workers is divided among the
    processes of the machine. An in-order loader (validation, test) always sees every sample."""
    device = torch.device(device)
    sampler = distributed.shard_sampler(dataset, sampler, shuffle=shuffle, seed=seed, drop_last=drop_last)
    workers = default_num_workers(device) if num_workers is None else int(num_workers)
    if num_workers is None and workers > 0:
        workers = max(1, workers // distributed.local_world_size())
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False,
        sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=workers > 0, drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if workers > 0 else None,
    )


def balanced_sampler(labels, power: float = 0.5, seed: int = 0) -> WeightedRandomSampler:
    """Draws images with probability ~ (1 / class count) ** power (1: classes equally often)."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=labels.max() + 1).astype(np.float64)
    weights = (1.0 / counts[labels]) ** power
    return WeightedRandomSampler(torch.as_tensor(weights, dtype=torch.double), num_samples=len(labels),
                                 replacement=True, generator=torch.Generator().manual_seed(seed))


def resolve_data_dir(data_dir="data", synthetic_dir="data/synthetic_demo", n_demo_images: int = 400,
                     demo_image_size=(120, 160), seed: int = 0, root: Path | None = None) -> Path:
    """Where the images are: ``data_dir`` when it holds a data set (images/, the official part
    folders or a labels file), else the synthetic demo of ``n_demo_images`` images of
    ``demo_image_size=(H, W)`` (generated once into ``synthetic_dir``). Relative paths are taken
    from the repository root, so notebooks work from papermill, Jupyter and nbval."""
    from skin_utils.nb.paths import resolve
    from skin_utils.demo.synthetic import make_synthetic_dataset

    path = resolve(data_dir, root)
    markers = ("images", "HAM10000_images_part_1", "HAM10000_metadata.csv", "GroundTruth.csv")
    if path.is_dir() and any((path / m).exists() for m in markers):
        return path
    if str(data_dir) not in ("data", "demo", "synthetic", str(resolve("data", root))):
        raise FileNotFoundError(
            f"data_dir={str(data_dir)!r} (resolved to {path}) holds no data set: expected "
            "images/, masks/ and HAM10000_metadata.csv (see data/README.md, or run "
            "`python -m skin_utils.data.prepare DOWNLOADS_DIR`). Use data_dir='data' for the demo."
        )
    # overwrite=True: a demo made with other settings (or an older generator) is regenerated; the
    # generator never overwrites a folder that is not its own synthetic data.
    return make_synthetic_dataset(resolve(synthetic_dir, root), n_images=n_demo_images,
                                  image_size=as_hw(demo_image_size), seed=seed, overwrite=True)
