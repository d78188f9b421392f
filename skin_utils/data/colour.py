"""What a camera does to an image, and how to undo its colour: functions on float batches.

The functions take a float batch ``x`` of shape (N, 3, H, W) with values in [0, 1] (on any
device) and per-image parameters as tensors of length N (or one number for all), so one call
treats a whole batch with a few vectorised operations, and none waits for the device (but
`gaussian_blur` without a ``radius``, which reads the largest sigma).

* `shades_of_gray`: colour constancy (Finlayson & Trezzi, "Shades of Gray and Colour
  Constancy", 2004), the preprocessing of the ISIC 2018/2019 winning pipelines. Per image and
  channel the illuminant is estimated as the Minkowski p-norm mean ``e_c = mean(x_c ** p) **
  (1 / p)`` (p = 6); each channel is multiplied by ``|e| / (sqrt(3) * e_c)`` (the illuminant
  is mapped to the grey of the same Euclidean norm, the sqrt(3)-normalised variant of the
  reference implementation those pipelines used) and the result clipped to [0, 1]. A grey
  image is left unchanged; the gains do not depend on the scale of the values, so uint8
  images give the same result (`shades_of_gray_uint8`, numpy, one HWC image).
* Camera effects, used by the "camera" augmentation (`skin_utils.data.datasets.BatchCameraAugment`)
  and by the shifted test sets (`skin_utils.data.shift`) with other parameter ranges:
  `colour_cast` (per-channel gains), `colour_matrix` (`hue_saturation_matrix`),
  `brightness_contrast_saturation`, `adjust_gamma`,
  `gaussian_blur`, `downscale_upscale` (lower resolution), `vignette` (dark corners),
  `hair_mask` / `add_hair` (thin dark curves).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

COLOUR_CONSTANCY = ("none", "shades_of_gray")  # the choices of the notebook parameter; "none" is stored as None
DEFAULT_P = 6  # the Minkowski norm of Shades of Gray (p = 6 in the ISIC winners' pipelines)
_EPS = 1e-6    # below this an illuminant channel counts as black and keeps gain 1


# ----------------------------------------------------------------------------- colour constancy
def illuminant(x: torch.Tensor, p: float = DEFAULT_P) -> torch.Tensor:
    """The Shades of Gray illuminant estimate of each image: (N, 3), ``mean(x_c ** p) ** (1/p)``."""
    x = x.float().clamp(0, 1)
    if float(p).is_integer() and p <= 16:  # repeated products: several times faster than pow on a CPU
        power = x.clone()
        for _ in range(int(p) - 1):
            power.mul_(x)
    else:
        power = x.pow(p)
    return power.mean(dim=(2, 3)).pow(1.0 / p)


def shades_of_gray(x: torch.Tensor, p: float = DEFAULT_P) -> torch.Tensor:
    """Shades of Gray colour constancy of a float batch (N, 3, H, W) in [0, 1]: each image's
    channels multiplied by ``|e| / (sqrt(3) * e_c)`` (``e`` = `illuminant`), clipped to [0, 1].
    Returns a new float32 tensor. A channel that is black (``e_c`` < 1e-6) keeps gain 1."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"shades_of_gray expects a batch of shape (N, 3, H, W); got {tuple(x.shape)}.")
    if p < 1:
        raise ValueError(f"shades_of_gray: p={p!r} must be >= 1 (1 is grey world, large p approaches max-RGB).")
    e = illuminant(x, p)
    norm = e.pow(2).sum(dim=1, keepdim=True).sqrt()
    gains = torch.where(e > _EPS, norm / (math.sqrt(3) * e.clamp_min(_EPS)), torch.ones_like(e))
    return (x.float() * gains[:, :, None, None]).clamp_(0, 1)


def shades_of_gray_uint8(image: np.ndarray, p: float = DEFAULT_P) -> np.ndarray:
    """`shades_of_gray` of one uint8 (H, W, 3) image with numpy (float64), rounded back to uint8.
    The same gains as the batch version (they are scale-free); the two agree to within one
    grey level (the rounding of float32 against float64)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"shades_of_gray_uint8 expects a uint8 (H, W, 3) image; got {image.dtype} {image.shape}.")
    x = image.astype(np.float64) / 255.0
    e = np.power(np.power(x, p).mean(axis=(0, 1)), 1.0 / p)
    norm = np.sqrt(np.sum(e ** 2))
    gains = np.where(e > _EPS, norm / (math.sqrt(3) * np.maximum(e, _EPS)), 1.0)
    return np.rint(np.clip(x * gains, 0, 1) * 255.0).astype(np.uint8)


# ----------------------------------------------------------------------------- camera effects
def _per_image(value, x: torch.Tensor, shape=()) -> torch.Tensor:
    """A per-image parameter as a float tensor of shape (N, *shape) on ``x``'s device."""
    t = torch.as_tensor(value, dtype=torch.float32, device=x.device)
    return t.expand(x.shape[0], *shape) if t.ndim == 0 else t.reshape(x.shape[0], *shape)


def colour_cast(x: torch.Tensor, gains) -> torch.Tensor:
    """Multiply each image's channels by ``gains`` (N, 3) (or one (3,) for all), clipped to [0, 1]."""
    g = torch.as_tensor(gains, dtype=torch.float32, device=x.device)
    g = g.expand(x.shape[0], 3) if g.ndim == 1 else g
    return (x * g[:, :, None, None]).clamp(0, 1)


def colour_matrix(x: torch.Tensor, matrix) -> torch.Tensor:
    """Each pixel's RGB times ``matrix`` (N, 3, 3) (or one (3, 3) for all): what a sensor with
    other spectral sensitivities, or another colour processing, does; clipped to [0, 1]."""
    m = torch.as_tensor(matrix, dtype=torch.float32, device=x.device)
    m = m.expand(x.shape[0], 3, 3) if m.ndim == 2 else m
    return torch.einsum("nij,njhw->nihw", m, x).clamp(0, 1)


def hue_saturation_matrix(degrees: float, saturation: float) -> np.ndarray:
    """The (3, 3) RGB matrix that turns colours by ``degrees`` around the grey axis and scales
    their distance from it by ``saturation``; greys stay as they are."""
    a = math.radians(degrees)
    k = np.ones((3, 3)) / 3                                       # projection onto the grey axis
    axis = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]]) / math.sqrt(3)  # cross product with (1,1,1)/sqrt(3)
    rotation = k + math.cos(a) * (np.eye(3) - k) + math.sin(a) * axis
    return k + saturation * (rotation - k)


def adjust_gamma(x: torch.Tensor, gamma) -> torch.Tensor:
    """``x ** gamma`` per image (``gamma`` (N,) or a number; > 1 darkens the mid-tones)."""
    return x.clamp(0, 1).pow(_per_image(gamma, x, (1, 1, 1)))


def gaussian_blur(x: torch.Tensor, sigma, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur with a standard deviation of ``sigma`` pixels per image (N,)
    (0: unchanged), reflected at the borders. ``radius`` (pixels) bounds the kernel; None:
    3 x the largest sigma (this reads ``sigma`` on the host: pass it inside a training step)."""
    n, c, h, w = x.shape
    s = _per_image(sigma, x).clamp_min(1e-3)
    if radius is None:
        radius = int(math.ceil(3 * float(s.max())))
    radius = max(0, min(int(radius), h - 1, w - 1))
    if radius == 0:
        return x
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * s[:, None] ** 2))   # s ~ 0: a delta
    kernel = (kernel / kernel.sum(dim=1, keepdim=True))[:, None, None, None, :]  # (N, 1, 1, 1, 2r+1)
    # shifted copies times their weight (faster than a grouped convolution on the CPU, as fast on a GPU)
    padded = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = padded[..., :w] * kernel[..., 0]
    for i in range(1, 2 * radius + 1):
        y.addcmul_(padded[..., i:i + w], kernel[..., i])
    padded = F.pad(y, (0, 0, radius, radius), mode="reflect")
    y = padded[..., :h, :] * kernel[..., 0]
    for i in range(1, 2 * radius + 1):
        y.addcmul_(padded[..., i:i + h, :], kernel[..., i])
    return y


def downscale_upscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """What a camera of lower resolution gives: the batch resized (antialiased bilinear) to
    ``scale`` (0 < scale <= 1) times its size and back. One scale for the whole batch."""
    if not 0 < scale <= 1:
        raise ValueError(f"downscale_upscale: scale={scale!r} must be in (0, 1].")
    h, w = x.shape[-2:]
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    if small == (h, w):
        return x
    low = F.interpolate(x, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def vignette(x: torch.Tensor, strength) -> torch.Tensor:
    """Darken towards the corners: each pixel times ``1 - strength * r ** 2``, ``r`` the distance
    from the centre over the half-diagonal (1 in the corners); ``strength`` (N,) in [0, 1]."""
    h, w = x.shape[-2:]
    yy = (torch.arange(h, device=x.device, dtype=torch.float32) + 0.5 - h / 2)[:, None]
    xx = (torch.arange(w, device=x.device, dtype=torch.float32) + 0.5 - w / 2)[None, :]
    r2 = (yy ** 2 + xx ** 2) / ((h / 2) ** 2 + (w / 2) ** 2)
    return x * (1 - _per_image(strength, x, (1, 1, 1)) * r2).clamp_min(0)


def brightness_contrast_saturation(x: torch.Tensor, brightness, contrast, saturation) -> torch.Tensor:
    """Multiply each image's brightness, contrast (around its mean grey) and saturation
    (around each pixel's grey) by the factors (N,) given (1: unchanged), clipped to [0, 1]."""
    def grey(t):
        return 0.299 * t[:, 0:1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3]

    x = x * _per_image(brightness, x, (1, 1, 1))  # a new tensor: the rest works in place (fewer allocations)
    mean = grey(x).mean(dim=(2, 3), keepdim=True)
    x.sub_(mean).mul_(_per_image(contrast, x, (1, 1, 1))).add_(mean)
    g = grey(x)
    return x.sub_(g).mul_(_per_image(saturation, x, (1, 1, 1))).add_(g).clamp_(0, 1)


def hair_mask(n: int, hw: tuple[int, int], count, *, thick=None, max_hairs: int = 4,
              device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(N, 1, H, W) in {0, 1} on ``device``: ``count`` (N,) thin curves (quadratic Bezier:
    random start, direction, length 30-90% of the diagonal and bend) per image, at most
    ``max_hairs``; 1 pixel wide, 3 where ``thick`` (N,) bool is true. The curves' random
    numbers are drawn on the CPU from ``generator`` (None: torch's global CPU generator), so a
    seed gives the same hairs on every device."""
    h, w = hw
    k, m = int(max_hairs), 2 * (h + w)  # points per curve: under half a pixel apart
    u = torch.rand(n, k, 5, generator=generator).to(device)
    diag = math.hypot(h, w)
    p0 = u[..., 0:2] * torch.tensor([h, w], device=device, dtype=torch.float32)
    angle = u[..., 2] * 2 * math.pi
    length = (0.3 + 0.6 * u[..., 3]) * diag
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
    alpha = mask * _per_image(opacity, x, (1, 1, 1))
    return x * (1 - alpha) + alpha * torch.as_tensor(colour, dtype=x.dtype, device=x.device)[:, :, None, None]
