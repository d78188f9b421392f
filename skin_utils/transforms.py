"""A uint8 batch between the cache and the model: geometry per sample in the loader (image and mask together),
colour per batch on the device (`BatchColorJitter`, `BatchCameraAugment`; the camera effects are functions of
a float batch in [0, 1] that `skin_utils.prepare`'s shifted copies also use), then `Normalize`, built from what a
checkpoint stores (`normalization_config`) so every path feeds the model alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import tv_tensors
from torchvision.transforms import v2

from skin_utils.config import AUGMENTATIONS, COLOUR_CONSTANCY  # COLOUR_CONSTANCY's "none" is stored as None

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_P = 6  # the Minkowski norm of Shades of Gray (p = 6 in the ISIC winners' pipelines)
_EPS = 1e-6    # below this an illuminant channel counts as black and keeps gain 1


# ----------------------------------------------------------------------------- colour constancy
def illuminant(x: torch.Tensor, p: float = DEFAULT_P) -> torch.Tensor:
    """The Shades of Gray illuminant (N, 3) of each image: ``mean(x_c ** p) ** (1/p)``."""
    x = x.float().clamp(0, 1)
    if float(p).is_integer() and p <= 16:  # repeated products: several times faster than pow on a CPU
        power = x.clone()
        for _ in range(int(p) - 1):
            power.mul_(x)
    else:
        power = x.pow(p)
    return power.mean(dim=(2, 3)).pow(1.0 / p)


def shades_of_gray(x: torch.Tensor, p: float = DEFAULT_P) -> torch.Tensor:
    """Shades of Gray colour constancy (Finlayson & Trezzi 2004) of a float batch in [0, 1]: each channel
    times ``|e| / (sqrt(3) e_c)`` (the `illuminant` mapped to the grey of its norm); a black channel keeps 1."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"shades_of_gray expects a batch of shape (N, 3, H, W); got {tuple(x.shape)}.")
    if p < 1:
        raise ValueError(f"shades_of_gray: p={p!r} must be >= 1 (1 is grey world, large p approaches max-RGB).")
    e = illuminant(x, p)
    norm = e.pow(2).sum(dim=1, keepdim=True).sqrt()
    gains = torch.where(e > _EPS, norm / (math.sqrt(3) * e.clamp_min(_EPS)), torch.ones_like(e))
    return (x.float() * gains[:, :, None, None]).clamp_(0, 1)


# ----------------------------------------------------------------------------- camera effects
def _per_image(value, x: torch.Tensor, shape=(1, 1, 1)) -> torch.Tensor:
    """A number, or one per image, as a float tensor (N, *shape) on ``x``'s device."""
    t = torch.as_tensor(value, dtype=torch.float32, device=x.device)
    return t.expand(x.shape[0], *shape) if t.ndim == 0 else t.reshape(x.shape[0], *shape)


def colour_cast(x: torch.Tensor, gains) -> torch.Tensor:
    """Each image's channels times ``gains`` (N, 3), or (3,) for all."""
    g = torch.as_tensor(gains, dtype=torch.float32, device=x.device)
    return (x * g.expand(x.shape[0], 3)[:, :, None, None]).clamp(0, 1)


def colour_matrix(x: torch.Tensor, matrix) -> torch.Tensor:
    """Each pixel's RGB times ``matrix`` (3, 3): another sensor's colours."""
    m = torch.as_tensor(matrix, dtype=torch.float32, device=x.device).expand(x.shape[0], 3, 3)
    return torch.einsum("nij,njhw->nihw", m, x).clamp(0, 1)


def hue_saturation_matrix(degrees: float, saturation: float) -> np.ndarray:
    """Turns colours by ``degrees`` around the grey axis and scales their distance from it; greys stay."""
    a = math.radians(degrees)
    k = np.ones((3, 3)) / 3                                               # projection onto the grey axis
    axis = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)  # cross product with (1,1,1)/sqrt(3)
    rotation = k + math.cos(a) * (np.eye(3) - k) + math.sin(a) * axis
    return k + saturation * (rotation - k)


def adjust_gamma(x: torch.Tensor, gamma) -> torch.Tensor:
    """``x ** gamma`` per image (> 1 darkens the mid-tones)."""
    return x.clamp(0, 1).pow(_per_image(gamma, x))


def gaussian_blur(x: torch.Tensor, sigma, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of ``sigma`` pixels per image, reflected at the borders; ``radius`` bounds
    the kernel (None: 3 x the largest sigma, which reads ``sigma`` on the host)."""
    n, c, h, w = x.shape
    s = _per_image(sigma, x, ()).clamp_min(1e-3)
    radius = max(0, min(int(math.ceil(3 * float(s.max())) if radius is None else radius), h - 1, w - 1))
    if radius == 0:
        return x
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * s[:, None] ** 2))
    kernel = (kernel / kernel.sum(dim=1, keepdim=True))[:, None, None, None, :]  # (N, 1, 1, 1, 2r+1)
    # shifted copies times their weight: faster than a grouped convolution on the CPU, as fast on a GPU
    y = x
    for dim, size in ((-1, w), (-2, h)):
        padded = F.pad(y, (radius, radius, 0, 0) if dim == -1 else (0, 0, radius, radius), mode="reflect")
        y = padded.narrow(dim, 0, size) * kernel[..., 0]
        for i in range(1, 2 * radius + 1):
            y.addcmul_(padded.narrow(dim, i, size), kernel[..., i])
    return y


def downscale_upscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """A camera of lower resolution: resized (antialiased) to ``scale`` of the size and back."""
    if not 0 < scale <= 1:
        raise ValueError(f"downscale_upscale: scale={scale!r} must be in (0, 1].")
    h, w = x.shape[-2:]
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    if small == (h, w):
        return x
    low = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def vignette(x: torch.Tensor, strength) -> torch.Tensor:
    """Dark corners: each pixel times ``1 - strength * r**2``, ``r`` = 1 in the corners."""
    h, w = x.shape[-2:]
    yy = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5 - h / 2)[:, None]
    xx = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5 - w / 2)[None, :]
    r2 = (yy ** 2 + xx ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    return x * (1 - _per_image(strength, x) * r2).clamp_min(0)


def _grey(t: torch.Tensor) -> torch.Tensor:
    return 0.299 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3]


def brightness_contrast_saturation(x: torch.Tensor, brightness, contrast, saturation) -> torch.Tensor:
    """Factors per image; contrast scales around the image's mean grey, saturation around each pixel's grey."""
    x = x * _per_image(brightness, x)  # a new tensor: the rest works in place
    mean = _grey(x).mean(dim=(2, 3), keepdim=True)
    x.sub_(mean).mul_(_per_image(contrast, x)).add_(mean)
    g = _grey(x)
    return x.sub_(g).mul_(_per_image(saturation, x)).add_(g).clamp_(0, 1)


def hair_mask(n: int, hw: tuple[int, int], count, *, thick=None, max_hairs: int = 4, device=None,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 1, H, W) in {0, 1}: ``count`` thin quadratic Bezier curves per image (at most ``max_hairs``,
    30-90% of the diagonal long), 1 px wide, 3 px where ``thick``. Drawn on the CPU from ``generator``
    (None: torch's global one): a seed gives the same hairs on every device."""
    h, w = hw
    k, m = int(max_hairs), 2 * (h + w)  # points per curve: under half a pixel apart
    u = torch.rand(n, k, 5, generator=generator).to(device)
    p0 = u[..., 0:2] * torch.tensor([h, w], device=device, dtype=torch.float32)
    angle = u[..., 2] * 2 * math.pi
    length = (0.3 + 0.6 * u[..., 3]) * math.hypot(h, w)
    bend = (u[..., 4] - 0.5) * 0.6 * length
    direction = torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)
    normal = torch.stack([direction[..., 1], -direction[..., 0]], dim=-1)
    p2 = p0 + length[..., None] * direction
    p1 = (p0 + p2) / 2 + bend[..., None] * normal
    t = torch.linspace(0, 1, m, device=device)[None, None, :, None]
    pts = (1 - t) ** 2 * p0[:, :, None] + 2 * (1 - t) * t * p1[:, :, None] + t ** 2 * p2[:, :, None]
    yi, xi = pts[..., 0].floor().long(), pts[..., 1].floor().long()          # (N, K, M)
    used = torch.arange(k, device=device)[None, :] < torch.as_tensor(count, device=device).reshape(n, 1)
    valid = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w) & used[..., None]
    flat = torch.arange(n, device=device)[:, None, None] * (h * w) + yi.clamp(0, h - 1) * w + xi.clamp(0, w - 1)
    mask = torch.zeros(n * h * w, device=device)
    mask.index_put_((flat.reshape(-1),), valid.reshape(-1).float(), accumulate=True)
    mask = mask.reshape(n, 1, h, w).clamp_(max=1)
    if thick is not None:
        wide = F.max_pool2d(mask, 3, stride=1, padding=1)
        mask = torch.where(torch.as_tensor(thick, device=device).reshape(n, 1, 1, 1), wide, mask)
    return mask


def add_hair(x: torch.Tensor, mask: torch.Tensor, colour, opacity) -> torch.Tensor:
    """Paint ``mask`` (N, 1, H, W) over ``x`` in ``colour`` (N, 3) with ``opacity`` (N,)."""
    alpha = mask * _per_image(opacity, x)
    return x * (1 - alpha) + alpha * torch.as_tensor(colour, dtype=x.dtype, device=x.device)[:, :, None, None]


# ----------------------------------------------------------------------------- augmentation
class RandomRot90(v2.Transform):
    """Image and mask turned together by 0/90/180/270 degrees (0/180 when not square): with the flips,
    the eight lossless symmetries of a dermoscopic image, which has no "up"."""

    def make_params(self, flat_inputs):
        square = all(t.shape[-1] == t.shape[-2] for t in flat_inputs if isinstance(t, torch.Tensor))
        k = int(torch.randint(0, 4, ()))
        return {"k": k if square else 2 * (k % 2)}

    def transform(self, inpt, params):
        if params["k"] == 0 or not isinstance(inpt, torch.Tensor):
            return inpt
        out = torch.rot90(inpt, params["k"], dims=(-2, -1))
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


class BatchColorJitter(torch.nn.Module):
    """Brightness, contrast and saturation factors in 1 +- ``strength`` per image, on the whole batch at once."""

    def __init__(self, strength: float = 0.1):
        super().__init__()
        self.strength = float(strength)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, s = (1 + (torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 2 - 1) * self.strength for _ in range(3))
        return brightness_contrast_saturation(x, b, c, s)


#: ``augment="camera"``: per effect the probability ``p`` that an image gets it and the range its
#: parameter is drawn from (uniformly; gamma log-uniformly). The shifted copies draw outside them.
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
    """Each effect of `CAMERA_AUGMENT` with its own probability, in the order light meets them: hair,
    optics, sensor, colour processing. Drawn on the CPU from torch's global generator (seeded by
    `engine.fit` every epoch): nothing waits for the device, and a seed gives the same on every device.
    ``ranges`` overrides parts of `CAMERA_AUGMENT`, e.g. ``{"hair": {"p": 0}}``."""

    def __init__(self, ranges: dict | None = None):
        super().__init__()
        self.ranges = {k: dict(v) for k, v in CAMERA_AUGMENT.items()}
        for name, update in (ranges or {}).items():
            if name not in self.ranges:
                raise ValueError(f"BatchCameraAugment: unknown effect {name!r}; the effects are {list(CAMERA_AUGMENT)}.")
            self.ranges[name].update(update)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        dev, side = x.device, min(h, w)
        x = x.float().clone()

        def chosen(effect):
            return torch.nonzero(torch.rand(n) < self.ranges[effect]["p"]).flatten()

        def draw(effect, key, idx, *shape):
            lo, hi = self.ranges[effect][key]
            return lo + (hi - lo) * torch.rand(len(idx), *shape)

        def update(idx, fn, *args):  # fn on the chosen images (all of them without a copy); none: x as it is
            if len(idx) == 0:
                return x
            if len(idx) == n:
                return fn(x, *args)
            x[idx] = fn(x[idx], *args)
            return x

        idx = chosen("hair")
        if len(idx):
            lo, hi = self.ranges["hair"]["count"]
            count = torch.randint(int(lo), int(hi) + 1, (len(idx),))
            mask = hair_mask(len(idx), (h, w), count.to(dev), thick=(torch.rand(len(idx)) < 0.3).to(dev),
                             max_hairs=int(hi), device=dev)
            shade = (0.02 + 0.23 * torch.rand(len(idx), 1)) * torch.tensor([1.0, 0.8, 0.7])
            x = update(idx, add_hair, mask, shade.to(dev), (0.6 + 0.35 * torch.rand(len(idx))).to(dev))
        # drawing for no image (torch.rand(0)) takes nothing from the generator: the same draws as skipping
        idx = chosen("vignette")
        x = update(idx, vignette, draw("vignette", "strength", idx).to(dev))
        idx = chosen("blur")
        x = update(idx, gaussian_blur, (draw("blur", "sigma", idx) * side).to(dev),
                   math.ceil(3 * self.ranges["blur"]["sigma"][1] * side))
        idx = chosen("resolution")
        for i, scale in zip(idx.tolist(), draw("resolution", "scale", idx).tolist()):
            x[i:i + 1] = downscale_upscale(x[i:i + 1], scale)
        idx = chosen("cast")
        x = update(idx, colour_cast, draw("cast", "gain", idx, 3).to(dev))
        idx = chosen("jitter")
        b, c, sat = (1 + (torch.rand(3, len(idx)) * 2 - 1) * self.ranges["jitter"]["strength"]).to(dev)
        x = update(idx, brightness_contrast_saturation, b, c, sat)
        idx = chosen("gamma")
        lo, hi = self.ranges["gamma"]["gamma"]
        gamma = torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(len(idx)))
        return update(idx, adjust_gamma, gamma.to(dev)).clamp_(0, 1)


def build_augmentation(augment: str = "standard") -> tuple[v2.Transform | None, torch.nn.Module | None]:
    """``(per_sample, per_batch)`` transforms: ``"flips"``; ``"standard"`` (short runs): flips, 90-degree
    turns, a mild jitter; ``"strong"`` (long runs): free rotation, zoom, shift, a stronger jitter;
    ``"camera"``: the standard geometry and `BatchCameraAugment`."""
    flips = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if augment == "none":
        return None, None
    if augment == "flips":
        return v2.Compose(flips), None
    if augment == "standard":
        return v2.Compose([*flips, RandomRot90()]), BatchColorJitter(0.1)
    if augment == "strong":
        affine = v2.RandomAffine(degrees=180, translate=(0.05, 0.05), scale=(0.9, 1.15))
        return v2.Compose([*flips, v2.RandomApply([affine], p=0.7)]), BatchColorJitter(0.2)
    if augment == "camera":
        return v2.Compose([*flips, RandomRot90()]), BatchCameraAugment()
    raise ValueError(f"augment={augment!r}: choose one of {AUGMENTATIONS}.")


# ----------------------------------------------------------------------------- normalisation
NORMALIZATION_KEYS = ("mean", "std", "colour_constancy", "p")


def normalization_config(colour_constancy: str | None = None, p: float = DEFAULT_P, mean=IMAGENET_MEAN,
                         std=IMAGENET_STD) -> dict:
    """What a checkpoint stores as ``normalization`` (checked); colour_constancy None or "shades_of_gray"."""
    if colour_constancy not in (None, *COLOUR_CONSTANCY):
        raise ValueError(f"colour_constancy={colour_constancy!r}: choose one of {COLOUR_CONSTANCY}.")
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1 <= p <= 64:
        raise ValueError(f"colour constancy p={p!r}: expected a number from 1 to 64 (Shades of Gray uses 6).")
    mean, std = [float(c) for c in mean], [float(c) for c in std]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"normalization mean={mean!r}, std={std!r}: expected three numbers (r, g, b) each, std > 0.")
    return {"mean": mean, "std": std, "colour_constancy": None if colour_constancy in (None, "none") else colour_constancy,
            "p": p}


def resolve_normalization(normalization: dict | None) -> dict:
    """A checkpoint's ``normalization`` with every key: None is ImageNet's; older dicts have no colour constancy."""
    if normalization is None:
        return normalization_config()
    if not isinstance(normalization, dict):
        raise ValueError(f"normalization must be a dict with keys {NORMALIZATION_KEYS}; "
                         f"got {type(normalization).__name__}.")
    unknown = sorted(set(normalization) - set(NORMALIZATION_KEYS))
    if unknown:
        raise ValueError(f"normalization has unknown keys {unknown}; the keys are {NORMALIZATION_KEYS}. "
                         "It was written by other code: use the skin_utils that wrote it.")
    return normalization_config(**normalization)


class Normalize(torch.nn.Module):
    """uint8 (N, 3, H, W) -> [0, 1], ``jitter`` (training only), colour constancy, then ``(x - mean) / std``."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD, jitter: torch.nn.Module | None = None,
                 colour_constancy: str | None = None, p: float = DEFAULT_P):
        super().__init__()
        self.config = normalization_config(colour_constancy, p, mean, std)
        mean, std = torch.tensor(self.config["mean"]), torch.tensor(self.config["std"])
        self.register_buffer("scale", 1.0 / (255.0 * std.view(1, 3, 1, 1)))
        self.register_buffer("shift", (mean / std).view(1, 3, 1, 1))
        self.jitter = jitter
        self.colour_constancy, self.p = self.config["colour_constancy"], self.config["p"]

    @classmethod
    def from_config(cls, normalization: dict | None = None, jitter: torch.nn.Module | None = None) -> "Normalize":
        return cls(**resolve_normalization(normalization), jitter=jitter)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.jitter is None and self.colour_constancy is None:
            return images.float().mul_(self.scale).sub_(self.shift)
        x = images.float().div_(255.0)
        if self.jitter is not None:
            x = self.jitter(x)
        if self.colour_constancy == "shades_of_gray":
            x = shades_of_gray(x, self.p)
        return x.mul_(self.scale * 255.0).sub_(self.shift)
