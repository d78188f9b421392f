"""Deterministic synthetic dermoscopy data in the HAM10000 layout (embedded demo + test fixture).

``make_synthetic_dataset(out_dir)`` writes::

    out_dir/images/SYN_0000000.jpg               RGB JPEG
    out_dir/masks/SYN_0000000_segmentation.png   8-bit L, 0 = skin, 255 = lesion
    out_dir/HAM10000_metadata.csv                lesion_id,image_id,dx,dx_type,age,sex,localization
    out_dir/dataset_info.json                    {"synthetic": true, ...}

Every image shows one lesion on skin-toned background with dermatoscope vignetting, a few hairs,
noise and blur.  Lesion shape (a polar radius ``r(theta)`` built from random Fourier harmonics),
colour and texture depend on the diagnosis, so that a small CNN can learn both the mask and the
class:

* MEL   large, asymmetric, irregular border; dark/multi-coloured with black areas, blue-grey veil
        blotches, whitish regression areas and peripheral dots.
* NV    round/oval, regular border; uniform brown with a regular network or globules.
* BCC   pinkish-pearly, translucent; thin red branching (arborising) vessels, blue-grey nests.
* AKIEC red-pink, ill-defined border; rough scaly texture with white-yellow scales.
* BKL   light-to-mid brown, waxy, sharp border; cerebriform fissures, bright milia-like dots.
* DF    small, brown ring with delicate network and a pale, scar-like centre.
* VASC  red-purple, well-defined lacunae separated by pale septa.

Class frequencies follow HAM10000 (``labels.HAM10000_CLASS_COUNTS``) with at least three lesions
per class, and about 1.34 images per lesion: some lesions are photographed two or three times
(shifted, rotated, rescaled, other lighting and hairs).  Everything is derived from ``seed`` with
``numpy.random.default_rng``; the same arguments give byte-identical files.  The mask is exactly
the lesion support (hairs never change it).  Only numpy and PIL are used.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from skin_utils.labels import CLASS_NAMES, HAM10000_CLASS_COUNTS

__all__ = [
    "SYNTHETIC_NOTE",
    "make_synthetic_dataset",
    "is_synthetic",
    "render_lesion",
    "class_image_counts",
    "main",
]

#: Short note other modules put into figure titles when the data are synthetic.
SYNTHETIC_NOTE = "synthetic demo data"

GENERATOR = "skin_utils.demo.synthetic"
VERSION = 2  # 2: dataset_info.json records image_size as (H, W)
INFO_NAME = "dataset_info.json"
METADATA_NAME = "HAM10000_metadata.csv"
METADATA_COLUMNS = ("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization")
JPEG_QUALITY = 92
#: HAM10000: 10015 images of 7470 lesions.
IMAGES_PER_LESION = 10015 / 7470
MIN_LESIONS_PER_CLASS = 3
MAX_IMAGES_PER_LESION = 3
MIN_IMAGES = MIN_LESIONS_PER_CLASS * len(CLASS_NAMES)

#: Entries of a data folder that the generator owns (and may replace with ``overwrite=True``).
_OWNED = ("images", "masks", METADATA_NAME, INFO_NAME)

# --------------------------------------------------------------------------------------------
# metadata distributions (approximately those of HAM10000)
# --------------------------------------------------------------------------------------------
_LOCALIZATIONS = {
    "back": 2192, "lower extremity": 2077, "trunk": 1404, "upper extremity": 1118,
    "abdomen": 1022, "face": 745, "chest": 407, "foot": 319, "unknown": 234, "neck": 168,
    "scalp": 128, "hand": 90, "ear": 56, "genital": 48, "acral": 7,
}
_SEX = {"male": 5406, "female": 4552, "unknown": 57}
#: dx_type weights per class (histo, follow_up, consensus, confocal).
_DX_TYPES = ("histo", "follow_up", "consensus", "confocal")
_DX_TYPE_WEIGHTS = {
    "MEL": (0.97, 0.0, 0.0, 0.03), "NV": (0.32, 0.55, 0.12, 0.01),
    "BCC": (0.98, 0.0, 0.0, 0.02), "AKIEC": (0.96, 0.0, 0.0, 0.04),
    "BKL": (0.60, 0.0, 0.35, 0.05), "DF": (0.45, 0.0, 0.55, 0.0),
    "VASC": (0.52, 0.0, 0.48, 0.0),
}
#: (mean, sd) of the age per class.
_AGE = {
    "MEL": (61, 15), "NV": (47, 16), "BCC": (67, 12), "AKIEC": (67, 12),
    "BKL": (64, 13), "DF": (52, 14), "VASC": (50, 20),
}

# --------------------------------------------------------------------------------------------
# per-class geometry: base radius range (fraction of min(W, H)), border irregularity,
# number of harmonics, extra elongation, edge softness in pixels (at 120 px), opacity
# --------------------------------------------------------------------------------------------
_GEOMETRY = {
    #        radius         irr   K   elong         edge        opacity
    "MEL":   ((0.25, 0.38), 0.10, 9, (0.00, 0.12), (1.2, 2.5), (0.97, 1.0)),
    "NV":    ((0.17, 0.29), 0.02, 3, (0.03, 0.14), (1.8, 3.5), (0.93, 1.0)),
    "BCC":   ((0.19, 0.33), 0.06, 6, (0.00, 0.15), (2.0, 3.5), (0.86, 0.95)),
    "AKIEC": ((0.19, 0.33), 0.07, 7, (0.00, 0.15), (2.5, 4.5), (0.86, 0.95)),
    "BKL":   ((0.21, 0.36), 0.05, 5, (0.00, 0.15), (1.0, 2.0), (0.95, 1.0)),
    "DF":    ((0.11, 0.18), 0.03, 3, (0.00, 0.10), (3.0, 5.0), (0.85, 0.95)),
    "VASC":  ((0.13, 0.25), 0.06, 5, (0.00, 0.12), (1.0, 1.8), (0.95, 1.0)),
}

_SKIN_LIGHT = np.array([0.95, 0.80, 0.70], np.float32)
_SKIN_DARK = np.array([0.70, 0.50, 0.38], np.float32)
_HAIR = np.array([0.10, 0.07, 0.05], np.float32)


# --------------------------------------------------------------------------------------------
# small numeric helpers
# --------------------------------------------------------------------------------------------
def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lerp(a, b, t):
    """Blend colour/field ``a`` -> ``b`` with weight ``t`` (HxW), broadcasting over channels."""
    t = np.asarray(t, np.float32)
    if t.ndim == 2 and (np.ndim(a) in (1, 3) or np.ndim(b) in (1, 3)):
        t = t[..., None]
    return a + (b - a) * t


def _luma(rgb):
    return float(np.dot(rgb, [0.299, 0.587, 0.114]))


#: Pigmented lesions (NV, BKL) are at most this bright relative to the skin around them.
_MAX_REL_LUMA = 0.8


def _col(rgb, rng, jitter=0.04):
    """A colour with a little per-lesion jitter."""
    c = np.asarray(rgb, np.float32) * (1.0 + rng.normal(0.0, jitter, 3)).astype(np.float32)
    return np.clip(c, 0.0, 1.0)


class _Waves:
    """Smooth random field: a normalised sum of plane waves, evaluated in lesion coordinates."""

    def __init__(self, rng, n, fmin, fmax):
        ang = rng.uniform(0, 2 * np.pi, n)
        freq = rng.uniform(fmin, fmax, n) * 2 * np.pi
        self.kx = (np.cos(ang) * freq).astype(np.float32)
        self.ky = (np.sin(ang) * freq).astype(np.float32)
        self.ph = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
        amp = 1.0 / np.sqrt(freq / freq.min())
        self.amp = (amp / np.sqrt(0.5 * np.sum(amp**2))).astype(np.float32)

    def __call__(self, u, v):
        out = np.zeros(u.shape, np.float32)
        for kx, ky, ph, a in zip(self.kx, self.ky, self.ph, self.amp):
            out += a * np.sin(kx * u + ky * v + ph)
        return out


def _random_points(rng, n, rfun, rmax=0.85, rmin=0.0):
    """``n`` points (lesion units, radius ~1) inside the lesion shape ``rfun(theta)``."""
    th = rng.uniform(0, 2 * np.pi, n)
    rr = np.sqrt(rng.uniform(rmin**2, rmax**2, n)) * rfun(th)
    return np.stack([rr * np.cos(th), rr * np.sin(th)], 1).astype(np.float32)


def _blob_field(u, v, centers, radii, sharp):
    """Max over discs: weight 1 inside a disc, smooth falloff of relative width ``sharp``."""
    if len(centers) == 0:
        return np.zeros(u.shape, np.float32), np.zeros(u.shape, np.int64)
    d = np.sqrt((u[None] - centers[:, 0, None, None]) ** 2
                + (v[None] - centers[:, 1, None, None]) ** 2) / radii[:, None, None]
    w = 1.0 - _smoothstep(1.0 - sharp, 1.0 + sharp, d)
    idx = np.argmax(w, axis=0)
    return np.take_along_axis(w, idx[None], 0)[0].astype(np.float32), idx


def _value_noise(rng, shape, cell):
    """Smooth noise in image coordinates: random grid upsampled bicubically, ~N(0, 1)."""
    h, w = shape
    gh, gw = max(2, int(math.ceil(h / cell)) + 1), max(2, int(math.ceil(w / cell)) + 1)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    out = np.asarray(Image.fromarray(g, "F").resize((w, h), Image.BICUBIC), np.float32)
    return out / max(float(out.std()), 1e-6)


def _branch(rng, x, y, ang, length, width, depth, out):
    """Random branching polyline tree (vessels), appended to ``out`` as (x0,y0,x1,y1,width)."""
    n_seg = 3
    for _ in range(n_seg):
        ang += rng.normal(0, 0.35)
        nx, ny = x + np.cos(ang) * length / n_seg, y + np.sin(ang) * length / n_seg
        out.append((x, y, nx, ny, width))
        x, y = nx, ny
    if depth > 0:
        for s in (-1, 1):
            if rng.random() < 0.85:
                _branch(rng, x, y, ang + s * rng.uniform(0.35, 0.9),
                        length * rng.uniform(0.5, 0.75),
                        max(width * 0.7, 0.45), depth - 1, out)


# --------------------------------------------------------------------------------------------
# lesion parameters (fixed per lesion) and views (per image)
# --------------------------------------------------------------------------------------------
def _lesion_params(rng, dx):
    dx = dx.upper()
    if dx not in _GEOMETRY:
        raise ValueError(f"Unknown diagnosis {dx!r}: expected one of {', '.join(CLASS_NAMES)}.")
    (r_lo, r_hi), irr, n_harm, (e_lo, e_hi), (ew_lo, ew_hi), (op_lo, op_hi) = _GEOMETRY[dx]
    k = np.arange(1, n_harm + 1, dtype=np.float32)
    amp = (irr * np.abs(rng.normal(0.6, 0.5, n_harm)) / k**0.6).astype(np.float32)
    if dx == "MEL":  # asymmetry and fine jaggedness
        amp[0] = rng.uniform(0.10, 0.20)
        k = np.concatenate([k, np.arange(11, 17, dtype=np.float32)])
        amp = np.concatenate([amp, rng.uniform(0.004, 0.016, 6).astype(np.float32)])
    if n_harm >= 2:
        amp[1] += rng.uniform(e_lo, e_hi)
    phase = rng.uniform(0, 2 * np.pi, len(k)).astype(np.float32)

    def rfun(theta):
        theta = np.asarray(theta, np.float32)
        r = np.ones(theta.shape, np.float32)
        for kk, aa, pp in zip(k, amp, phase):
            r += aa * np.cos(kk * theta + pp)
        return np.maximum(r, 0.45)

    rmax = float(rfun(np.linspace(0, 2 * np.pi, 720, endpoint=False)).max())
    p = {
        "dx": dx,
        "radius": rng.uniform(r_lo, r_hi),
        "rfun": rfun,
        "rmax": rmax,
        "edge": rng.uniform(ew_lo, ew_hi),
        "opacity": rng.uniform(op_lo, op_hi),
        "skin": _lerp(_SKIN_LIGHT, _SKIN_DARK, rng.uniform(0.0, 1.0) ** 1.3),
        "n1": _Waves(rng, 10, 0.3, 1.2),
        "n2": _Waves(rng, 12, 0.8, 2.5),
        "n3": _Waves(rng, 16, 2.0, 6.0),
    }
    p.update(_STYLE_PARAMS[dx](rng, rfun, p["skin"]))
    return p


def _mel_params(rng, rfun, skin):
    blue = _random_points(rng, rng.integers(1, 4), rfun, 0.7)
    dots = _random_points(rng, rng.integers(4, 14), rfun, 1.0, 0.65)
    return {
        "c_light": _col([0.55, 0.36, 0.24], rng), "c_dark": _col([0.26, 0.15, 0.09], rng),
        "c_black": _col([0.09, 0.06, 0.06], rng), "c_blue": _col([0.42, 0.47, 0.58], rng),
        "c_white": _col([0.86, 0.76, 0.76], rng), "grad": rng.uniform(0.8, 1.8),
        "grad_dir": rng.uniform(0, 2 * np.pi), "black_thr": rng.uniform(0.5, 1.1),
        "white_thr": rng.uniform(1.7, 2.4),
        "blue_c": blue, "blue_r": rng.uniform(0.22, 0.42, len(blue)).astype(np.float32),
        "blue_a": rng.uniform(0.55, 0.85),
        "dot_c": dots, "dot_r": rng.uniform(0.04, 0.08, len(dots)).astype(np.float32),
        "net_f": rng.uniform(11.0, 16.0), "net_a": rng.uniform(0.1, 0.4),
    }


def _nv_params(rng, rfun, skin):
    base = _col([0.54, 0.35, 0.22], rng, 0.03)
    tone = min(rng.uniform(0.72, 1.18), _MAX_REL_LUMA * _luma(skin) / _luma(base))
    pattern = rng.choice(["network", "globular", "homogeneous"], p=[0.55, 0.2, 0.25])
    glob = _random_points(rng, rng.integers(15, 30), rfun, 0.85)
    return {
        "c_base": np.clip(base * tone, 0, 1),
        "center": rng.uniform(-0.25, 0.2), "pattern": str(pattern),
        "net_f": rng.uniform(12.0, 17.0), "net_a": rng.uniform(0.15, 0.3),
        "glob_c": glob, "glob_r": rng.uniform(0.06, 0.09, len(glob)).astype(np.float32),
    }


def _bcc_params(rng, rfun, skin):
    vessels = []
    for _ in range(rng.integers(2, 5)):
        start = _random_points(rng, 1, rfun, 0.8)[0]
        _branch(rng, float(start[0]), float(start[1]), rng.uniform(0, 2 * np.pi),
                rng.uniform(0.5, 0.9), rng.uniform(1.2, 1.8), 2, vessels)
    nests = _random_points(rng, rng.integers(0, 4), rfun, 0.75)
    return {
        "c_base": _col([0.88, 0.58, 0.62], rng), "c_pearl": _col([0.96, 0.88, 0.90], rng, 0.02),
        "c_vessel": _col([0.70, 0.08, 0.14], rng), "c_nest": _col([0.40, 0.45, 0.56], rng),
        "vessels": np.asarray(vessels, np.float32).reshape(-1, 5),
        "nest_c": nests, "nest_r": rng.uniform(0.08, 0.16, len(nests)).astype(np.float32),
        "ulcer": bool(rng.random() < 0.3), "ulcer_c": _random_points(rng, 1, rfun, 0.4),
        "ulcer_r": np.array([rng.uniform(0.15, 0.3)], np.float32),
    }


def _akiec_params(rng, rfun, skin):
    return {
        "c_base": _col([0.80, 0.38, 0.36], rng), "c_deep": _col([0.68, 0.26, 0.27], rng),
        "c_scale": _col([0.94, 0.89, 0.80], rng, 0.02), "scale_thr": rng.uniform(0.5, 1.1),
        "dot_f": rng.uniform(10.0, 14.0), "grain": rng.uniform(0.05, 0.09),
        "n4": _Waves(rng, 20, 5.0, 10.0),
    }


def _bkl_params(rng, rfun, skin):
    base = _col([0.66, 0.47, 0.31], rng)
    tone = min(rng.uniform(0.7, 1.12), _MAX_REL_LUMA * _luma(skin) / _luma(base))
    milia = _random_points(rng, rng.integers(4, 14), rfun, 0.85)
    comedo = _random_points(rng, rng.integers(2, 8), rfun, 0.85)
    return {
        "c_base": np.clip(base * tone, 0, 1),
        "c_fissure": _col([0.36, 0.25, 0.15], rng), "c_milia": _col([0.97, 0.95, 0.86], rng, 0.01),
        "c_comedo": _col([0.22, 0.15, 0.09], rng), "fissure_f": rng.uniform(5.0, 8.0),
        "fissure_a": rng.uniform(0.35, 0.7),
        "milia_c": milia, "milia_r": rng.uniform(0.045, 0.08, len(milia)).astype(np.float32),
        "comedo_c": comedo, "comedo_r": rng.uniform(0.04, 0.07, len(comedo)).astype(np.float32),
    }


def _df_params(rng, rfun, skin):
    return {
        "c_ring": _col([0.56, 0.38, 0.27], rng), "c_center": _col([0.94, 0.88, 0.84], rng, 0.02),
        "pale_r": rng.uniform(0.4, 0.6), "net_f": rng.uniform(13.0, 18.0),
        "offset": rng.normal(0, 0.08, 2).astype(np.float32),
    }


def _vasc_params(rng, rfun, skin):
    n = int(rng.integers(8, 22))
    lac = _random_points(rng, n, rfun, 0.88)
    palette = np.array([[0.80, 0.10, 0.14], [0.55, 0.10, 0.30], [0.42, 0.08, 0.32],
                        [0.30, 0.05, 0.16]], np.float32)
    cols = palette[rng.integers(0, len(palette), n)] * rng.uniform(0.9, 1.1, (n, 1))
    return {
        "c_base": _col([0.62, 0.20, 0.30], rng), "c_septa": _col([0.86, 0.60, 0.64], rng),
        "lac_c": lac, "lac_r": rng.uniform(0.14, 0.30, n).astype(np.float32),
        "lac_col": np.clip(cols, 0, 1).astype(np.float32),
    }


_STYLE_PARAMS = {
    "MEL": _mel_params, "NV": _nv_params, "BCC": _bcc_params, "AKIEC": _akiec_params,
    "BKL": _bkl_params, "DF": _df_params, "VASC": _vasc_params,
}


def _random_view(rng, p, size, first=False):
    """Camera/lighting parameters for one photograph of lesion ``p`` on a ``(W, H)`` image."""
    w, h = size
    s = min(w, h)
    scale = rng.uniform(0.95, 1.05) if first else rng.uniform(0.82, 1.18)
    ext = p["radius"] * p["rmax"] * s  # max lesion radius in pixels at scale 1
    margin = 3.0
    scale = min(scale, (min(w, h) / 2 - margin) / ext)
    half = ext * scale + margin
    cx = float(np.clip(rng.normal(w / 2, 0.09 * w), half, w - half))
    cy = float(np.clip(rng.normal(h / 2, 0.09 * h), half, h - half))
    n_hair = int(rng.choice([0, 1, 2, 3, 4, 6], p=[0.2, 0.2, 0.2, 0.15, 0.15, 0.1]))
    hairs = []
    for _ in range(n_hair):
        mid = rng.uniform([0.0, 0.0], [w, h])
        ang = rng.uniform(0, np.pi)
        half_len = rng.uniform(0.3, 0.7) * w
        step = np.array([np.cos(ang), np.sin(ang)]) * half_len
        bend = np.array([-step[1], step[0]]) * rng.normal(0, 0.3)
        pts = np.stack([mid - step, mid + bend, mid + step])
        hairs.append((pts, rng.uniform(0.7, 1.0), rng.uniform(0.55, 0.9)))
    return {
        "cx": cx, "cy": cy, "angle": rng.uniform(0, 2 * np.pi), "scale": scale,
        "gain": rng.uniform(0.88, 1.08), "cast": rng.normal(1.0, 0.025, 3).astype(np.float32),
        "vig_strength": rng.uniform(0.35, 0.95), "vig_r0": rng.uniform(0.82, 1.02),
        "vig_w": rng.uniform(0.12, 0.35), "hairs": hairs, "noise": rng.uniform(0.008, 0.02),
        "blur": rng.uniform(0.35, 0.8), "seed": int(rng.integers(0, 2**31 - 1)),
    }


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def _network(u, v, f, warp):
    """Reticular pigment network: ~1 on the lines, 0 in the holes."""
    a = np.abs(np.sin(f * u + 0.6 * warp))
    b = np.abs(np.sin(f * v - 0.6 * warp))
    return np.exp(-((np.minimum(a, b) / 0.3) ** 2))


def _shade_mel(p, u, v, d, rfun):
    n1, n2, n3 = p["n1"](u, v), p["n2"](u, v), p["n3"](u, v)
    g = u * (p["grad"] * math.cos(p["grad_dir"])) + v * (p["grad"] * math.sin(p["grad_dir"]))
    t = 1.0 / (1.0 + np.exp(-(1.6 * n1 + g + 0.4 * n2)))
    col = _lerp(p["c_light"], p["c_dark"], t)
    col = _lerp(col, p["c_black"], _smoothstep(p["black_thr"], p["black_thr"] + 0.9, n2 + 0.4 * n1))
    white = _smoothstep(p["white_thr"], p["white_thr"] + 0.6, n2 - n1 + 0.3 * n3)
    col = _lerp(col, p["c_white"], 0.7 * white)
    net = _network(u, v, p["net_f"], n2) * p["net_a"] * _smoothstep(0.2, 1.2, n1 + 1)
    col = col * (1.0 - net[..., None])
    blue, _ = _blob_field(u + 0.12 * n3, v - 0.12 * n3, p["blue_c"], p["blue_r"], 0.5)
    col = _lerp(col, p["c_blue"], p["blue_a"] * blue)
    dots, _ = _blob_field(u, v, p["dot_c"], p["dot_r"], 0.35)
    return _lerp(col, p["c_black"], 0.85 * dots)


def _shade_nv(p, u, v, d, rfun):
    n1, n2 = p["n1"](u, v), p["n2"](u, v)
    col = p["c_base"] * (1.0 + p["center"] * (1.0 - d**2) + 0.05 * n1)[..., None]
    if p["pattern"] == "network":
        warp = 1.6 * n2 + 0.8 * p["n3"](u, v)
        net = _network(u, v, p["net_f"], warp) * p["net_a"] * (1.0 - _smoothstep(0.6, 1.0, d))
        col = col * (1.0 - net[..., None])
    elif p["pattern"] == "globular":
        glob, _ = _blob_field(u, v, p["glob_c"], p["glob_r"], 0.4)
        col = col * (1.0 - 0.3 * glob[..., None])
    col = col * (1.0 + 0.08 * _smoothstep(0.75, 1.0, d))[..., None]  # lighter rim
    return col


def _shade_bcc(p, u, v, d, rfun):
    n1, n2, n3 = p["n1"](u, v), p["n2"](u, v), p["n3"](u, v)
    col = _lerp(p["c_base"], p["c_pearl"], 0.4 * _smoothstep(-0.5, 2.0, n2 + 0.3 * n3))
    col = col * (1.0 + 0.04 * n1)[..., None]
    nest, _ = _blob_field(u + 0.08 * n3, v, p["nest_c"], p["nest_r"], 0.45)
    col = _lerp(col, p["c_nest"], 0.75 * nest)
    if p["ulcer"]:
        ulc, _ = _blob_field(u + 0.1 * n3, v + 0.1 * n2, p["ulcer_c"], p["ulcer_r"], 0.4)
        col = _lerp(col, np.array([0.45, 0.12, 0.10], np.float32), 0.85 * ulc)
    return col


def _shade_akiec(p, u, v, d, rfun):
    n1, n2, n3 = p["n1"](u, v), p["n2"](u, v), p["n3"](u, v)
    n4 = p["n4"](u, v)
    col = _lerp(p["c_base"], p["c_deep"], _smoothstep(-1.0, 1.5, n1 + 0.5 * n2))
    dots = np.exp(-(np.sin(p["dot_f"] * u + 0.5 * n2) ** 2 + np.sin(p["dot_f"] * v) ** 2) / 0.08)
    col = _lerp(col, p["c_scale"], 0.3 * dots)  # strawberry pattern: white follicular openings
    scale = _smoothstep(p["scale_thr"], p["scale_thr"] + 0.5, n2 + 0.6 * n4 + 0.3 * n3)
    col = _lerp(col, p["c_scale"], 0.8 * scale)
    return col * (1.0 + p["grain"] * n4 + 0.6 * p["grain"] * n3)[..., None]


def _shade_bkl(p, u, v, d, rfun):
    n1, n2, n3 = p["n1"](u, v), p["n2"](u, v), p["n3"](u, v)
    col = p["c_base"] * (1.0 + 0.1 * n1)[..., None]
    ridge = np.abs(np.sin(p["fissure_f"] * (u + 0.35 * n2) + 2.0 * n1 + 0.3 * n3))
    fiss = np.exp(-((ridge / 0.4) ** 2))
    col = _lerp(col, p["c_fissure"], p["fissure_a"] * fiss)
    com, _ = _blob_field(u, v, p["comedo_c"], p["comedo_r"], 0.3)
    col = _lerp(col, p["c_comedo"], 0.85 * com)
    mil, _ = _blob_field(u, v, p["milia_c"], p["milia_r"], 0.3)
    return _lerp(col, p["c_milia"], 0.95 * mil)


def _shade_df(p, u, v, d, rfun):
    n1, n2 = p["n1"](u, v), p["n2"](u, v)
    col = p["c_ring"] * (1.0 + 0.06 * n1)[..., None]
    net = _network(u, v, p["net_f"], 0.5 * n2) * 0.22 * _smoothstep(0.3, 0.8, d)
    col = col * (1.0 - net[..., None])
    du, dv = u - p["offset"][0], v - p["offset"][1]
    dc = np.sqrt(du**2 + dv**2) * (1.0 + 0.18 * n2)
    pale = 1.0 - _smoothstep(p["pale_r"] * 0.5, p["pale_r"], dc)
    return _lerp(col, p["c_center"], 0.9 * pale)


def _shade_vasc(p, u, v, d, rfun):
    n1 = p["n1"](u, v)
    col = p["c_base"] * (1.0 + 0.05 * n1)[..., None]
    col = _lerp(col, p["c_septa"], 0.25)
    w, idx = _blob_field(u, v, p["lac_c"], p["lac_r"], 0.12)
    return _lerp(col, p["lac_col"][idx], 0.95 * w)


_SHADERS = {
    "MEL": _shade_mel, "NV": _shade_nv, "BCC": _shade_bcc, "AKIEC": _shade_akiec,
    "BKL": _shade_bkl, "DF": _shade_df, "VASC": _shade_vasc,
}


def _to_image(p, view, x, y):
    """Lesion units (radius ~1) -> image pixel coordinates."""
    k = p["radius"] * view["scale"] * view["s"]
    c, s = math.cos(view["angle"]), math.sin(view["angle"])
    return view["cx"] + k * (c * x - s * y), view["cy"] + k * (s * x + c * y)


def _draw_lines(size, lines, ss=3):
    """Antialiased line layer in [0, 1]; ``lines`` = iterable of (xy list, width px, alpha)."""
    w, h = size
    layer = Image.new("L", (w * ss, h * ss), 0)
    draw = ImageDraw.Draw(layer)
    for xy, width, alpha in lines:
        draw.line([(px * ss, py * ss) for px, py in xy], fill=int(round(255 * alpha)),
                  width=max(1, int(round(width * ss))), joint="curve")
    layer = layer.resize((w, h), Image.BOX)
    return np.asarray(layer, np.float32) / 255.0


@functools.lru_cache(maxsize=8)
def _grid(w, h):
    """Pixel-centre coordinates and the normalised radius used for vignetting (read-only)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    xs += 0.5
    ys += 0.5
    rr = np.sqrt((xs - w / 2) ** 2 + (ys - h / 2) ** 2) / np.float32(w / 2)
    for a in (xs, ys, rr):
        a.setflags(write=False)
    return xs, ys, rr


def _render(p, view, size):
    w, h = size
    view = dict(view, s=float(min(w, h)))
    rng = np.random.default_rng(view["seed"])
    xs, ys, rr = _grid(w, h)
    # image -> lesion coordinates (lesion radius ~1)
    k = p["radius"] * view["scale"] * view["s"]
    c, s = math.cos(view["angle"]) / k, math.sin(view["angle"]) / k
    dx, dy = xs - view["cx"], ys - view["cy"]
    u = c * dx + s * dy
    v = c * dy - s * dx
    rho = np.sqrt(u**2 + v**2)
    rb = p["rfun"](np.arctan2(v, u))
    inside = rb - rho  # > 0 inside the lesion (lesion units)
    mask = (inside > 0).astype(np.uint8)
    edge_px = p["edge"] * view["s"] / 120.0
    alpha = np.clip(inside * (k / edge_px) + 0.5, 0.0, 1.0)

    # skin: tone, blotchy redness, fine texture
    blotch = _value_noise(rng, (h, w), max(8.0, w / 6))
    fine = _value_noise(rng, (h, w), 2.5)
    red = _smoothstep(0.5, 2.0, _value_noise(rng, (h, w), w / 5))
    img = p["skin"] * (1.0 + 0.035 * blotch + 0.02 * fine)[..., None] \
        + (0.03 * red)[..., None] * np.array([0.6, -0.5, -0.4], np.float32)

    # lesion, shaded only inside the bounding box of its (soft) support
    rows, cols = np.nonzero(alpha.any(axis=1))[0], np.nonzero(alpha.any(axis=0))[0]
    if len(rows):
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        ub, vb, ib = u[box], v[box], inside[box]
        d = np.clip(rho[box] / rb[box], 0.0, 1.0)
        lesion = np.clip(_SHADERS[p["dx"]](p, ub, vb, d, p["rfun"]), 0.0, 1.0)
        if p["dx"] == "BCC" and len(p["vessels"]):
            seg = p["vessels"]
            x0, y0 = _to_image(p, view, seg[:, 0], seg[:, 1])
            x1, y1 = _to_image(p, view, seg[:, 2], seg[:, 3])
            px_scale = view["s"] / 120.0
            lines = [([(a, b), (cc, dd)], wd * px_scale, 1.0)
                     for a, b, cc, dd, wd in zip(x0, y0, x1, y1, seg[:, 4])]
            ves = _draw_lines((w, h), lines)[box]
            lesion = _lerp(lesion, p["c_vessel"], 0.9 * ves * _smoothstep(0.0, 0.08, ib))
        img[box] = _lerp(img[box], lesion, alpha[box] * np.float32(p["opacity"]))

    # hairs (quadratic Bezier curves); they never touch the mask
    if view["hairs"]:
        t = np.linspace(0, 1, 24)[:, None]
        lines = []
        for pts, width, a in view["hairs"]:
            curve = (1 - t) ** 2 * pts[0] + 2 * (1 - t) * t * pts[1] + t**2 * pts[2]
            lines.append(([tuple(q) for q in curve], width * view["s"] / 120.0, a))
        img = _lerp(img, _HAIR, _draw_lines((w, h), lines))

    # lighting, vignetting (dark dermatoscope corners), noise
    r0 = view["vig_r0"]
    vig = 1.0 - view["vig_strength"] * _smoothstep(r0, r0 + view["vig_w"], rr)
    vig = vig * (1.0 - 0.12 * rr**2)
    img *= vig[..., None]
    img *= (view["gain"] * view["cast"]).astype(np.float32)
    noise = rng.standard_normal((h, w, 1), np.float32) * 0.7 \
        + rng.standard_normal((h, w, 3), np.float32) * 0.5
    img += np.float32(view["noise"]) * noise
    out = Image.fromarray(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), "RGB")
    out = out.filter(ImageFilter.GaussianBlur(view["blur"] * view["s"] / 120.0))
    return np.asarray(out), mask


def render_lesion(rng, dx, hw=(120, 160)):
    """Render one random lesion of diagnosis ``dx`` (any case) on an image of ``hw=(H, W)``.

    Returns ``(image uint8 (H, W, 3), mask uint8 (H, W) in {0, 1})``.  ``rng`` is a
    ``numpy.random.Generator`` (or an int seed)."""
    rng = np.random.default_rng(rng)
    h, w = int(hw[0]), int(hw[1])
    if w < 16 or h < 16:
        raise ValueError(f"image size must be at least 16x16, got {w}x{h}")
    p = _lesion_params(rng, str(dx))
    view = _random_view(rng, p, (w, h), first=True)
    return _render(p, view, (w, h))


# --------------------------------------------------------------------------------------------
# data-set planning
# --------------------------------------------------------------------------------------------
def class_image_counts(n_images):
    """Images per class (dict keyed by ``CLASS_NAMES``): HAM10000 proportions, >= 3 per class."""
    n = int(n_images)
    if n < MIN_IMAGES:
        raise ValueError(f"n_images must be >= {MIN_IMAGES} (3 lesions for each of the "
                         f"{len(CLASS_NAMES)} classes), got {n}")
    total = sum(HAM10000_CLASS_COUNTS.values())
    counts = {c: max(MIN_LESIONS_PER_CLASS, int(round(n * HAM10000_CLASS_COUNTS[c] / total)))
              for c in CLASS_NAMES}
    big = max(CLASS_NAMES, key=lambda c: HAM10000_CLASS_COUNTS[c])
    counts[big] += n - sum(counts.values())
    if counts[big] < MIN_LESIONS_PER_CLASS:  # pragma: no cover - cannot happen for n >= 21
        raise ValueError(f"cannot split {n} images over {len(CLASS_NAMES)} classes")
    return counts


def _images_per_lesion(rng, n_img):
    """Split ``n_img`` images of one class into lesions of 1..3 images (~1.34 per lesion)."""
    n_les = int(round(n_img / IMAGES_PER_LESION))
    n_les = max(n_les, min(MIN_LESIONS_PER_CLASS, n_img), -(-n_img // MAX_IMAGES_PER_LESION))
    n_les = min(n_les, n_img)
    mult = np.ones(n_les, np.int64)
    for _ in range(n_img - n_les):
        weight = np.where(mult == 1, 4.0, np.where(mult < MAX_IMAGES_PER_LESION, 1.0, 0.0))
        mult[rng.choice(n_les, p=weight / weight.sum())] += 1
    return mult


def _plan(n_images, seed):
    """Lesions (class, metadata, number of views) and image ids, all derived from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    lesions = []
    for dx, n_img in class_image_counts(n_images).items():
        for m in _images_per_lesion(rng, n_img):
            lesions.append({"dx": dx, "n_views": int(m)})
    order = rng.permutation(len(lesions))
    lesions = [lesions[i] for i in order]
    loc_names = list(_LOCALIZATIONS)
    loc_p = np.array(list(_LOCALIZATIONS.values()), float)
    sex_names = list(_SEX)
    sex_p = np.array(list(_SEX.values()), float)
    for i, les in enumerate(lesions):
        les["lesion_id"] = f"SYNL_{i:07d}"
        mean, sd = _AGE[les["dx"]]
        les["age"] = (None if rng.random() < 0.005
                      else float(np.clip(5 * round(rng.normal(mean, sd) / 5), 5, 85)))
        les["sex"] = sex_names[rng.choice(len(sex_names), p=sex_p / sex_p.sum())]
        les["localization"] = loc_names[rng.choice(len(loc_names), p=loc_p / loc_p.sum())]
        les["dx_type"] = _DX_TYPES[rng.choice(4, p=np.array(_DX_TYPE_WEIGHTS[les["dx"]]))]
    # image ids in random order so that views of one lesion are not adjacent
    slots = [(li, k) for li, les in enumerate(lesions) for k in range(les["n_views"])]
    perm = rng.permutation(len(slots))
    images = [None] * len(slots)
    for img_no, si in enumerate(perm):
        li, k = slots[si]
        images[img_no] = {"image_id": f"SYN_{img_no:07d}", "lesion": li, "view": k}
    return lesions, images


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------
def _expected_info(seed, n_images, image_size):
    return {"synthetic": True, "generator": GENERATOR, "version": VERSION, "seed": int(seed),
            "n_images": int(n_images), "image_size": [int(image_size[0]), int(image_size[1])]}


def _read_info(data_dir):
    try:
        with open(Path(data_dir) / INFO_NAME, encoding="utf-8") as fh:
            info = json.load(fh)
        return info if isinstance(info, dict) else None
    except (OSError, ValueError):
        return None


def is_synthetic(data_dir) -> bool:
    """True when ``data_dir/dataset_info.json`` marks the folder as synthetic demo data."""
    info = _read_info(data_dir)
    return bool(info and info.get("synthetic") is True)


def _is_complete(data_dir, info):
    data_dir = Path(data_dir)
    if _read_info(data_dir) != info:
        return False
    try:
        with open(data_dir / METADATA_NAME, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        images = set(os.listdir(data_dir / "images"))
        masks = set(os.listdir(data_dir / "masks"))
    except OSError:
        return False
    if len(rows) != info["n_images"]:
        return False
    return all(f"{r['image_id']}.jpg" in images and f"{r['image_id']}_segmentation.png" in masks
               for r in rows)


def _write_dataset(root, n_images, size, seed):
    root = Path(root)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    lesions, images = _plan(n_images, seed)
    # one lesion-parameter generator per lesion; views drawn from it in order
    ss = np.random.SeedSequence([int(seed), 0x1E5])
    lesion_rngs = [np.random.default_rng(c) for c in ss.spawn(len(lesions))]
    params = [_lesion_params(r, les["dx"]) for r, les in zip(lesion_rngs, lesions)]
    views = [[_random_view(r, p, size, first=(k == 0)) for k in range(les["n_views"])]
             for r, p, les in zip(lesion_rngs, params, lesions)]
    rows = []
    for rec in images:
        li = rec["lesion"]
        les = lesions[li]
        img, mask = _render(params[li], views[li][rec["view"]], size)
        Image.fromarray(img, "RGB").save(root / "images" / f"{rec['image_id']}.jpg", "JPEG",
                                         quality=JPEG_QUALITY)
        Image.fromarray(mask * np.uint8(255), "L").save(
            root / "masks" / f"{rec['image_id']}_segmentation.png", "PNG")
        rows.append((les["lesion_id"], rec["image_id"], les["dx"].lower(), les["dx_type"],
                     "" if les["age"] is None else f"{les['age']:.1f}", les["sex"],
                     les["localization"]))
    with open(root / METADATA_NAME, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(METADATA_COLUMNS)
        writer.writerows(rows)


def make_synthetic_dataset(out_dir, n_images=400, image_size=(120, 160), seed=0,
                           overwrite=False) -> Path:
    """Write (or reuse) a synthetic HAM10000-layout data set in ``out_dir``; return its path.

    ``image_size`` is ``(height, width)``, as every size in this package.  If ``out_dir`` already holds a complete data set
    with the same parameters it is returned unchanged.  If it holds anything else, a
    ``FileExistsError`` is raised unless ``overwrite=True``, which replaces a previous
    synthetic data set (it never deletes a folder that looks like real, non-synthetic data).
    """
    out_dir = Path(out_dir).expanduser().resolve()
    n_images = int(n_images)
    h, w = int(image_size[0]), int(image_size[1])
    if w < 16 or h < 16:
        raise ValueError(f"image_size must be at least (16, 16), got {image_size!r}")
    class_image_counts(n_images)  # validates n_images
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    info = _expected_info(seed, n_images, (h, w))
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a directory")
    if _is_complete(out_dir, info):
        return out_dir
    existing = sorted(os.listdir(out_dir)) if out_dir.is_dir() else []
    if existing:
        old = _read_info(out_dir)
        if not overwrite:
            listing = ", ".join(existing[:5]) + (", ..." if len(existing) > 5 else "")
            what = (f"a different synthetic data set ({old})" if is_synthetic(out_dir)
                    else f"other files ({listing})")
            raise FileExistsError(
                f"Refusing to write synthetic data into {out_dir}: it already holds {what}. "
                "Choose an empty/new folder or pass overwrite=True (--overwrite) to replace a "
                "previous synthetic data set.")
        looks_real = any(e in existing for e in ("images", "masks", METADATA_NAME))
        if looks_real and not is_synthetic(out_dir):
            raise FileExistsError(
                f"Refusing to overwrite {out_dir}: it holds images/labels that are not marked as "
                f"synthetic ({INFO_NAME} missing or not synthetic). Delete it yourself if you "
                "really mean it.")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _write_dataset(tmp, n_images, (w, h), seed)
        with open(tmp / INFO_NAME, "w", encoding="utf-8") as fh:
            json.dump(info, fh, indent=2)
            fh.write("\n")
        if not out_dir.exists() or not os.listdir(out_dir):
            try:
                os.replace(tmp, out_dir)  # atomic; fails if another process got there first
                return out_dir
            except OSError:
                if _is_complete(out_dir, info):
                    return out_dir
                if os.listdir(out_dir):
                    raise
        # overwrite: replace only the entries this generator owns, info file last
        (out_dir / INFO_NAME).unlink(missing_ok=True)
        for name in _OWNED:
            target = out_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
        for name in _OWNED:
            os.replace(tmp / name, out_dir / name)
        return out_dir
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="python -m skin_utils.demo.synthetic",
        description="Write a deterministic synthetic dermoscopy data set in the HAM10000 layout.")
    ap.add_argument("out_dir")
    ap.add_argument("--n-images", type=int, default=400)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overwrite", action="store_true",
                    help="replace a previous synthetic data set in OUT_DIR")
    args = ap.parse_args(argv)
    try:
        path = make_synthetic_dataset(args.out_dir, n_images=args.n_images,
                                      image_size=(args.height, args.width), seed=args.seed,
                                      overwrite=args.overwrite)
    except (ValueError, FileExistsError) as exc:
        ap.exit(2, f"error: {exc}\n")
    counts = class_image_counts(args.n_images)
    print(f"{SYNTHETIC_NOTE}: {args.n_images} images ({args.width}x{args.height}, seed "
          f"{args.seed}) in {path}")
    print("  " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
