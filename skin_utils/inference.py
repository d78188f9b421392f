"""Predictions on new images: one at a time with low latency, or a whole folder in batches.

A folder may hold anything: non-images, corrupt files, gigantic or tiny images. The good ones
get a prediction, the rest a reason in the ``failures`` list; nothing stops half-way.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from skin_utils.checkpoint import load_model
from skin_utils.data.datasets import Normalize
from skin_utils.engine import amp_dtype_for, autocast, forward_probs, resolve_device
from skin_utils.evaluation import upsample_mask
from skin_utils.data.imageio import ImageReadError, read_image
from skin_utils.data.layout import find_images

MIN_SIDE = 8  # pixels: below this there is no lesion to see


@dataclass
class Prediction:
    image_id: str
    path: str
    pred: str
    prob: float
    probs: dict
    mask: np.ndarray  # bool, original size
    lesion_fraction: float


class Predictor:
    """A trained model ready for new images. ``Predictor("checkpoints/best.pt")``.

    Images are resized to the checkpoint's ``image_size`` and normalised with its
    ``normalization``; masks come back at each image's own size, thresholded at ``threshold``.
    ``tta`` averages over the 8 symmetries of a square input (4 flips otherwise). The loaded
    `skin_utils.checkpoint.Checkpoint` is kept as ``self.checkpoint``."""

    def __init__(self, checkpoint, device: str = "auto", amp: str = "auto", threshold: float = 0.5,
                 tta: bool = False):
        self.device = resolve_device(device)
        self.model, self.checkpoint = load_model(checkpoint, map_location="cpu")
        self.model.to(self.device).to(memory_format=torch.channels_last).eval()
        self.class_names = self.checkpoint.class_names
        self.image_size = self.checkpoint.image_size
        norm = self.checkpoint.normalization
        self.normalize = Normalize(norm["mean"], norm["std"]).to(self.device)
        self.amp_dtype = amp_dtype_for(self.device, amp)
        self.threshold = threshold
        self.tta = tta

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        h, w = self.image_size
        small = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        return torch.from_numpy(small).permute(2, 0, 1)

    @torch.inference_mode()
    def _forward(self, batch_u8: torch.Tensor):
        x = self.normalize(batch_u8.to(self.device)).contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp_dtype):
            mask_probs, probs = forward_probs(self.model, x, self.tta)
        return mask_probs.cpu(), probs.cpu()

    def _prediction(self, image_id, path, original_hw, mask_probs, probs) -> Prediction:
        mask = upsample_mask(mask_probs, original_hw, self.threshold)
        k = int(probs.argmax())
        return Prediction(image_id=image_id, path=str(path), pred=self.class_names[k], prob=float(probs[k]),
                          probs={n: float(p) for n, p in zip(self.class_names, probs)}, mask=mask,
                          lesion_fraction=float(mask.mean()))

    def predict_image(self, image) -> Prediction:
        """One image (a path or an RGB uint8 array), with the mask at its original size."""
        path = image if isinstance(image, (str, Path)) else "<array>"
        array = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        mask_probs, probs = self._forward(self.preprocess(array)[None])
        return self._prediction(Path(str(path)).stem, path, array.shape[:2], mask_probs[0], probs[0].numpy())

    def predict_folder(self, folder, batch_size: int = 16, progress: bool = True, threads: int = 2):
        """Predict every image under ``folder``. Returns ``(predictions, failures)``: a list of
        `Prediction` and a DataFrame of the files that were skipped, with the reason."""
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"No folder {folder} to predict on.")
        candidates = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        images = set(find_images(folder))
        skipped = [{"path": str(p), "reason": "not an image file (by its extension); skipped"}
                   for p in candidates if p not in images]
        predictions, failures = self.predict_paths(sorted(images), batch_size, progress, threads)
        return predictions, pd.concat([pd.DataFrame(skipped, columns=["path", "reason"]), failures],
                                      ignore_index=True)

    def predict_paths(self, paths, batch_size: int = 16, progress: bool = True, threads: int = 2):
        """Predict a list of image files in batches, decoding the next files on ``threads``
        threads. Unreadable, gigantic or tiny files are returned in ``failures`` with the reason."""
        def load(path):
            try:
                array = read_image(path)
            except (ImageReadError, Image.DecompressionBombError, OSError, ValueError) as err:
                return path, None, f"{type(err).__name__}: {err}"
            if min(array.shape[:2]) < MIN_SIDE:
                return path, None, f"image is {array.shape[1]}x{array.shape[0]} px, smaller than {MIN_SIDE} px a side"
            return path, array, None

        predictions, failures = [], []
        paths = [Path(p) for p in paths]
        bar = tqdm(total=len(paths), desc="predict", disable=not progress, mininterval=1.0)
        with ThreadPoolExecutor(threads) as pool:
            for start in range(0, len(paths), batch_size):
                loaded = list(pool.map(load, paths[start:start + batch_size]))
                ok = [(p, a) for p, a, err in loaded if err is None]
                failures += [{"path": str(p), "reason": err} for p, _, err in loaded if err is not None]
                if ok:
                    batch = torch.stack([self.preprocess(a) for _, a in ok])
                    mask_probs, probs = self._forward(batch)
                    for (p, a), m, pr in zip(ok, mask_probs, probs.numpy()):
                        predictions.append(self._prediction(p.stem, p, a.shape[:2], m, pr))
                bar.update(len(loaded))
        bar.close()
        return predictions, pd.DataFrame(failures, columns=["path", "reason"])


def predictions_table(predictions) -> pd.DataFrame:
    """One row per image: predicted class, its probability, every class probability, lesion area."""
    return pd.DataFrame([{"image_id": p.image_id, "path": p.path, "pred": p.pred, "prob": round(p.prob, 4),
                          **{f"p_{k}": round(v, 4) for k, v in p.probs.items()},
                          "lesion_fraction": round(p.lesion_fraction, 4)} for p in predictions])


def time_single_image(predictor: Predictor, image: np.ndarray, repeats: int = 10) -> float:
    """Median seconds for one image, preprocessing included (after one warm-up call)."""
    predictor.predict_image(image)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict_image(image)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def write_demo_images(folder, n: int = 6, seed: int = 12345, size=(160, 120)) -> Path:
    """A few new synthetic lesions (none of them in the demo training set) to try inference on."""
    from skin_utils.labels import CLASS_NAMES
    from skin_utils.demo.synthetic import render_lesion

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        dx = CLASS_NAMES[i % len(CLASS_NAMES)].lower()
        image, _ = render_lesion(rng, dx, size)
        path = folder / f"demo_{i:02d}.jpg"
        if not path.exists():
            Image.fromarray(image).save(path, quality=92)
    return folder


def save_overlays(predictions, out_dir) -> list[Path]:
    """One PNG per prediction: the image with the predicted lesion border in magenta."""
    from skin_utils.viz import overlay_mask

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in predictions:
        path = out_dir / f"{p.image_id}.png"
        Image.fromarray(overlay_mask(read_image(p.path), p.mask)).save(path)
        paths.append(path)
    return paths
