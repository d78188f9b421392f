"""The synthetic demo data set, generated deterministically so that every notebook runs without the real
data: lesion-like images with masks and HAM10000's class imbalance, in the one layout. Each lesion is a blob
with a Fourier-harmonic border whose size, irregularity, colours and texture follow its diagnosis (`_STYLE`),
photographed 1-3 times (about 1.34 images per lesion, like HAM10000); the mask is the lesion's support.
``python -m skin_utils.prepare demo OUT_DIR`` writes one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from skin_utils.labels import CLASS_NAMES, HAM10000_CLASS_COUNTS
from skin_utils.layout import INFO_NAME, METADATA_COLUMNS, METADATA_NAME, MASK_SUFFIX, write_whole

SYNTHETIC_NOTE = "synthetic demo data"  # what figure titles say when the data are synthetic
VERSION = 3  # 3: the short generator of skin_utils.demo
MIN_LESIONS_PER_CLASS = 3
MIN_IMAGES = MIN_LESIONS_PER_CLASS * len(CLASS_NAMES)
#: diagnosis: radius range (fraction of the shorter side), border irregularity, rim and centre colours, texture
_STYLE = {
    "MEL": ((0.25, 0.38), 0.14, (0.45, 0.28, 0.18), (0.14, 0.09, 0.08), "blotches"),
    "NV": ((0.17, 0.29), 0.03, (0.58, 0.38, 0.25), (0.44, 0.27, 0.16), "network"),
    "BCC": ((0.19, 0.33), 0.07, (0.88, 0.58, 0.62), (0.96, 0.86, 0.88), "vessels"),
    "AKIEC": ((0.19, 0.33), 0.09, (0.80, 0.38, 0.36), (0.68, 0.26, 0.27), "scales"),
    "BKL": ((0.21, 0.36), 0.06, (0.66, 0.47, 0.31), (0.52, 0.36, 0.22), "fissures"),
    "DF": ((0.11, 0.18), 0.03, (0.50, 0.33, 0.23), (0.94, 0.88, 0.84), "ring"),
    "VASC": ((0.13, 0.25), 0.07, (0.62, 0.20, 0.30), (0.42, 0.08, 0.30), "lacunae"),
}
_AGE = {"MEL": 61, "NV": 47, "BCC": 67, "AKIEC": 67, "BKL": 64, "DF": 52, "VASC": 50}  # mean age, sd 15
_HISTO = {"MEL": 0.97, "NV": 0.32, "BCC": 0.98, "AKIEC": 0.96, "BKL": 0.6, "DF": 0.45, "VASC": 0.52}  # P(dx_type histo)
_SITES = {"back": 22, "lower extremity": 21, "trunk": 14, "upper extremity": 11, "abdomen": 10, "face": 7,
          "chest": 4, "foot": 3, "unknown": 2, "neck": 2, "scalp": 1, "hand": 1, "ear": 1, "genital": 0.5, "acral": 0.1}
_SKIN_LIGHT, _SKIN_DARK = np.array([0.95, 0.80, 0.70]), np.array([0.72, 0.52, 0.40])


def class_image_counts(n_images) -> dict[str, int]:
    """Images per class: HAM10000's proportions, at least 3 (one lesion in each split) per class."""
    n = int(n_images)
    if n < MIN_IMAGES:
        raise ValueError(f"n_images must be >= {MIN_IMAGES} (3 lesions for each of the {len(CLASS_NAMES)} classes), got {n}")
    total = sum(HAM10000_CLASS_COUNTS.values())
    counts = {c: max(MIN_LESIONS_PER_CLASS, round(n * HAM10000_CLASS_COUNTS[c] / total)) for c in CLASS_NAMES}
    counts["NV"] += n - sum(counts.values())
    return counts


def _waves(rng, n: int, fmin: float, fmax: float):
    """A smooth random field of lesion coordinates: a normalised sum of ``n`` plane waves."""
    angle, freq, phase = rng.uniform(0, 2 * np.pi, n), rng.uniform(fmin, fmax, n), rng.uniform(0, 2 * np.pi, n)
    return lambda u, v: sum(np.sin(f * (np.cos(a) * u + np.sin(a) * v) + p) for a, f, p in zip(angle, freq, phase)) \
        * math.sqrt(2 / n)


def _lesion(rng, dx: str) -> dict:
    """What stays the same in every photograph of one lesion."""
    if dx.upper() not in _STYLE:
        raise ValueError(f"Unknown diagnosis {dx!r}: expected one of {', '.join(CLASS_NAMES)}.")
    dx = dx.upper()
    (r_lo, r_hi), irregular, rim, centre, texture = _STYLE[dx]
    k = np.arange(1, 10)
    amp = irregular * np.abs(rng.normal(0.6, 0.5, len(k))) / k ** 0.6
    amp[1] += rng.uniform(0.0, 0.12)  # elongation
    jitter = 1 + rng.normal(0, 0.04, (2, 3))
    return {"dx": dx, "radius": rng.uniform(r_lo, r_hi), "amp": amp, "k": k, "phase": rng.uniform(0, 2 * np.pi, len(k)),
            "rim": np.clip(np.array(rim) * jitter[0], 0, 1), "centre": np.clip(np.array(centre) * jitter[1], 0, 1),
            "skin": _SKIN_LIGHT + (_SKIN_DARK - _SKIN_LIGHT) * rng.uniform() ** 1.3, "texture": texture,
            "coarse": _waves(rng, 8, 1.0, 3.0), "fine": _waves(rng, 10, 8.0, 16.0), "f": rng.uniform(10, 16)}


def _border(p, theta):
    return np.maximum(1 + sum(a * np.cos(k * theta + ph) for a, k, ph in zip(p["amp"], p["k"], p["phase"])), 0.45)


def _view(rng, p, hw) -> dict:
    """One photograph: where the lesion lies, how it is turned and lit, and the hairs over it."""
    h, w = hw
    side = min(h, w)
    extent = p["radius"] * float(_border(p, np.linspace(0, 2 * np.pi, 360)).max()) * side
    scale = min(rng.uniform(0.85, 1.15), (side / 2 - 3) / extent)
    half = extent * scale + 3
    hairs = [(rng.uniform((0, 0), (w, h)), rng.uniform((0, 0), (w, h)), rng.uniform(0.7, 1.6))
             for _ in range(rng.choice([0, 1, 2, 3, 5]))]
    return {"cx": float(np.clip(rng.normal(w / 2, 0.09 * w), half, w - half)),
            "cy": float(np.clip(rng.normal(h / 2, 0.09 * h), half, h - half)),
            "angle": rng.uniform(0, 2 * np.pi), "scale": scale, "gain": rng.uniform(0.9, 1.08) * rng.normal(1, 0.025, 3),
            "vignette": rng.uniform(0.35, 0.9), "hairs": hairs, "noise": rng.uniform(0.008, 0.02),
            "blur": rng.uniform(0.3, 0.8), "seed": int(rng.integers(2**31))}


def _texture(p, u, v, d):
    """How dark (0..1) the texture makes each point, and the colour it draws with."""
    coarse, fine, f = p["coarse"](u, v), p["fine"](u, v), p["f"]
    t = p["texture"]
    if t == "network":
        return 0.25 * np.exp(-(np.minimum(abs(np.sin(f * u + fine)), abs(np.sin(f * v - fine))) / 0.3) ** 2), (0.2, 0.12, 0.07)
    if t == "blotches":
        return 0.8 * np.clip(coarse - 0.3, 0, 1), (0.40, 0.45, 0.56)
    if t == "vessels":
        return 0.9 * np.exp(-(np.sin(f * (u + 0.3 * coarse)) / 0.12) ** 2) * (d < 0.85), (0.70, 0.08, 0.14)
    if t == "scales":
        return 0.8 * np.clip(fine + 0.5 * coarse - 0.8, 0, 1), (0.94, 0.89, 0.80)
    if t == "fissures":
        return 0.6 * np.exp(-(np.sin(0.5 * f * (u + 0.35 * coarse)) / 0.4) ** 2), (0.36, 0.25, 0.15)
    if t == "lacunae":
        return 0.9 * (np.cos(f * u + fine) * np.cos(f * v) > 0.3), (0.30, 0.05, 0.16)
    return 0.0, p["rim"]  # ring: the colours alone (rim to pale centre)


def _render(p, view, hw) -> tuple[np.ndarray, np.ndarray]:
    h, w = hw
    side = min(h, w)
    rng = np.random.default_rng(view["seed"])
    k = p["radius"] * view["scale"] * side
    reach = int(k * p["amp"].sum() + k + 4)  # the lesion's box: everything lesion-shaped is computed inside it
    y0, x0 = max(0, int(view["cy"]) - reach), max(0, int(view["cx"]) - reach)
    ys, xs = np.mgrid[y0:min(h, int(view["cy"]) + reach), x0:min(w, int(view["cx"]) + reach)].astype(np.float32) + 0.5
    c, s = math.cos(view["angle"]) / k, math.sin(view["angle"]) / k
    u, v = c * (xs - view["cx"]) + s * (ys - view["cy"]), c * (ys - view["cy"]) - s * (xs - view["cx"])
    rho, border = np.hypot(u, v), _border(p, np.arctan2(v, u))
    box = (slice(y0, y0 + ys.shape[0]), slice(x0, x0 + ys.shape[1]))
    mask = np.zeros((h, w), np.uint8)
    mask[box] = rho < border
    alpha = np.clip((border - rho) * k / (2.0 * side / 120) + 0.5, 0, 1)[..., None]  # a soft edge of ~2 px at 120 px
    d = np.clip(rho / border, 0, 1)
    mix = np.clip(((0.6 - d) / 0.25 if p["texture"] == "ring" else 1 - d ** 2) + 0.25 * p["coarse"](u, v), 0, 1)[..., None]
    lesion = p["rim"] + (p["centre"] - p["rim"]) * mix
    amount, colour = _texture(p, u, v, d)
    lesion = lesion + (np.array(colour) - lesion) * np.asarray(amount, np.float32)[..., None]
    blotch = np.asarray(Image.fromarray(rng.normal(0, 1, (4, 5)).astype(np.float32)).resize((w, h), Image.BICUBIC))
    img = p["skin"] * (1 + 0.04 * blotch)[..., None]
    img[box] += (lesion - img[box]) * alpha
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    rr = np.hypot(xx - w / 2, yy - h / 2) / (w / 2)
    img *= ((1 - view["vignette"] * np.clip((rr - 0.85) / 0.3, 0, 1)) * (1 - 0.12 * rr ** 2))[..., None] * view["gain"]
    img += view["noise"] * rng.standard_normal((h, w, 3))
    out = Image.fromarray(np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    t = np.linspace(0, 1, 16)[:, None]
    for a, b, width in view["hairs"]:  # curved hairs cross the lesion but never change its mask
        bend = (a + b) / 2 + rng.normal(0, 0.1 * w, 2)
        curve = (1 - t) ** 2 * a + 2 * (1 - t) * t * bend + t ** 2 * b
        draw.line([tuple(q) for q in curve], fill=(30, 22, 16), width=max(1, round(width * side / 120)), joint="curve")
    return np.asarray(out.filter(ImageFilter.GaussianBlur(view["blur"] * side / 120))), mask


def render_lesion(rng, dx: str, hw=(120, 160)) -> tuple[np.ndarray, np.ndarray]:
    """One random lesion of diagnosis ``dx`` (any case) on an image of ``hw=(H, W)``: (uint8 (H, W, 3),
    mask uint8 (H, W) in {0, 1}). ``rng``: a numpy Generator or a seed."""
    rng = np.random.default_rng(rng)
    if min(hw) < 16:
        raise ValueError(f"image size must be at least 16x16, got {hw[1]}x{hw[0]}")
    p = _lesion(rng, str(dx))
    return _render(p, _view(rng, p, hw), hw)


def _plan(n_images: int, seed: int) -> pd.DataFrame:
    """One row per image: its lesion, the lesion's diagnosis and metadata, which view of it it is."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED]))
    lesions = []
    for dx, n in class_image_counts(n_images).items():
        n_les = min(n, max(round(n / 1.34), MIN_LESIONS_PER_CLASS, -(-n // 3)))
        views = np.ones(n_les, int)
        for _ in range(n - n_les):  # extra photographs: mostly of lesions that have one, at most 3 each
            weight = np.where(views == 1, 4.0, np.where(views < 3, 1.0, 0.0))
            views[rng.choice(n_les, p=weight / weight.sum())] += 1
        lesions += [(dx, int(m)) for m in views]
    sites, p_site = list(_SITES), np.array(list(_SITES.values())) / sum(_SITES.values())
    rows = []
    for n, i in enumerate(rng.permutation(len(lesions))):
        dx, m = lesions[i]
        age = "" if rng.random() < 0.005 else f"{np.clip(5 * round(rng.normal(_AGE[dx], 15) / 5), 5, 85):.1f}"
        meta = {"lesion_id": f"SYNL_{n:07d}", "dx": dx.lower(),
                "dx_type": "histo" if rng.random() < _HISTO[dx] else ("follow_up" if dx == "NV" else "consensus"),
                "age": age, "sex": rng.choice(["male", "female", "unknown"], p=[0.54, 0.455, 0.005]),
                "localization": sites[rng.choice(len(sites), p=p_site)]}
        rows += [{**meta, "view": k} for k in range(m)]
    plan = pd.DataFrame(rows).iloc[rng.permutation(len(rows))].reset_index(drop=True)  # views of a lesion apart
    plan["image_id"] = [f"SYN_{i:07d}" for i in range(len(plan))]
    return plan


def _complete(out_dir: Path, info: dict) -> bool:
    try:
        meta = pd.read_csv(out_dir / METADATA_NAME, dtype=str)
        images, masks = set(os.listdir(out_dir / "images")), set(os.listdir(out_dir / "masks"))
        return json.loads((out_dir / INFO_NAME).read_text()) == info and len(meta) == info["n_images"] and all(
            f"{i}.jpg" in images and f"{i}{MASK_SUFFIX}" in masks for i in meta["image_id"])
    except (OSError, ValueError, KeyError):
        return False


def make_synthetic_dataset(out_dir, n_images: int = 400, image_size=(120, 160), seed: int = 0,
                           overwrite: bool = False) -> Path:
    """Write (or reuse) the demo in ``out_dir``; ``image_size`` is (H, W). The same arguments give
    byte-identical files. A folder holding anything else is replaced only with ``overwrite`` and only when
    it is a synthetic data set itself (never real data)."""
    out_dir, hw = Path(out_dir).expanduser().resolve(), (int(image_size[0]), int(image_size[1]))
    if min(hw) < 16:
        raise ValueError(f"image_size must be at least (16, 16), got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    plan = _plan(n_images, seed)
    info = {"synthetic": True, "generator": "skin_utils.demo", "version": VERSION, "seed": int(seed),
            "n_images": int(n_images), "image_size": list(hw)}
    if _complete(out_dir, info):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with write_whole(out_dir, INFO_NAME, overwrite) as tmp:
        (tmp / "masks").mkdir()
        lesions, views = {}, {}
        children = np.random.SeedSequence([int(seed), 0x1E5]).spawn(plan["lesion_id"].nunique())
        for (lid, rows), child in zip(plan.sort_values("view").groupby("lesion_id"), children):
            rng = np.random.default_rng(child)  # each lesion's generator draws the lesion, then its views in order
            lesions[lid] = _lesion(rng, rows["dx"].iat[0])
            views.update({(lid, k): _view(rng, lesions[lid], hw) for k in rows["view"]})
        for r in plan.itertuples():
            image, mask = _render(lesions[r.lesion_id], views[(r.lesion_id, r.view)], hw)
            Image.fromarray(image).save(tmp / "images" / f"{r.image_id}.jpg", quality=92)
            Image.fromarray(mask * np.uint8(255)).save(tmp / "masks" / f"{r.image_id}{MASK_SUFFIX}")
        plan[list(METADATA_COLUMNS)].to_csv(tmp / METADATA_NAME, index=False)
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=2) + "\n")
    return out_dir
