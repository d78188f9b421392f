"""Predictions on new images: one at a time with low latency, or a whole folder in batches.

A folder may hold anything: non-images, corrupt files, gigantic or tiny images. The good ones
get a prediction, the rest a reason in the ``failures`` list; nothing stops half-way.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from skin_utils.trust.calibrate import StoredCalibration
from skin_utils.checkpoint import load_model
from skin_utils.transforms import Normalize
from skin_utils.plots import overlay_mask, plot_cam_overlay, save_figure
from skin_utils.engine import amp_dtype_for, autocast, forward_probs, resolve_device
from skin_utils.evaluation import upsample_mask
from skin_utils.layout import ImageReadError, read_image
from skin_utils.layout import find_images
from skin_utils.trust.numbers import (binary_entropy, grad_cam, mask_uncertainty_score, mc_dropout_probs,
                                     mutual_information, vote_disagreement)

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
    # --- trust (see Predictor): calibrated with the checkpoint's temperature (1 when it has none)
    probs_calibrated: dict = field(default_factory=dict)  # class -> calibrated probability
    prob_calibrated: float = float("nan")   # calibrated probability of ``pred``
    entropy: float = float("nan")           # normalised predictive entropy of the calibrated probabilities, in [0, 1]
    tta_disagreement: float | None = None   # share of TTA views whose class differs from the consensus (tta only)
    tta_mutual_info: float | None = None    # normalised mutual information across the TTA views (tta only)
    mc_mutual_info: float | None = None     # the same across Monte-Carlo dropout samples (mc_samples > 0 only)
    mask_uncertainty: float = float("nan")  # mean binary entropy (bits) in the band around the predicted border
    mask_uncertainty_map: np.ndarray | None = None  # per-pixel binary entropy of the mask, model resolution, float16
    refer: bool | None = None               # entropy above the checkpoint's referral threshold; None: no threshold
    mel_flag: bool | None = None            # calibrated P(MEL) >= the checkpoint's operating threshold; None: none
    cam: np.ndarray | None = None           # Grad-CAM of ``pred`` in [0, 1], model resolution (cam=True only)


class Predictor:
    """A trained model ready for new images: ``Predictor("reports/runs/<run>/checkpoints/best.pt")``
    (the best checkpoint of a run folder, as 02_train writes it).

    Images are resized to the checkpoint's ``image_size`` and normalised with its
    ``normalization``; masks come back at each image's own size, thresholded at ``threshold``.
    ``tta`` averages over the 8 symmetries of a square input (4 flips otherwise). The loaded
    `skin_utils.checkpoint.Checkpoint` is kept as ``self.checkpoint``.

    Trust: ``self.calibration`` (`skin_utils.trust.calibrate.StoredCalibration`) is the checkpoint's
    calibration for this kind of output (TTA or plain): every `Prediction` gets calibrated
    probabilities, the entropy, with ``tta`` the disagreement of the views, the mask
    uncertainty, and the ``refer`` and ``mel_flag`` flags (None where the checkpoint has no
    threshold; ``self.calibration.describe()`` says what is missing). ``mc_samples`` (0: off)
    adds Monte-Carlo dropout; ``cam=True`` adds the Grad-CAM of the predicted class
    (``cam_method``: "gradcam" or "gradcam++")."""

    def __init__(self, checkpoint, device: str = "auto", amp: str = "auto", threshold: float = 0.5,
                 tta: bool = False, cam: bool = False, mc_samples: int = 0, cam_method: str = "gradcam"):
        self.device = resolve_device(device)
        self.model, self.checkpoint = load_model(checkpoint, map_location="cpu")
        self.model.to(self.device).to(memory_format=torch.channels_last).eval()
        self.class_names = self.checkpoint.class_names
        self.image_size = self.checkpoint.image_size
        self.normalize = Normalize.from_config(self.checkpoint.normalization).to(self.device)
        self.amp_dtype = amp_dtype_for(self.device, amp)
        self.threshold = threshold
        self.tta = tta
        self.cam = cam
        self.cam_method = cam_method
        if mc_samples and (int(mc_samples) != mc_samples or mc_samples < 2):
            raise ValueError(f"mc_samples must be 0 (off) or an integer >= 2; got {mc_samples!r}.")
        self.mc_samples = int(mc_samples)
        self.calibration = StoredCalibration.from_checkpoint(self.checkpoint, tta)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        h, w = self.image_size
        small = np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        return torch.from_numpy(small).permute(2, 0, 1)

    @torch.inference_mode()
    def _outputs(self, x: torch.Tensor) -> dict:
        with autocast(self.device, self.amp_dtype):
            mask_probs, probs, _, view_probs = forward_probs(self.model, x, self.tta, return_views=True)
            mc = (mc_dropout_probs(self.model, x, self.mc_samples, seed=0).cpu().numpy()
                  if self.mc_samples else None)
        return {"mask_probs": mask_probs.float().cpu(), "probs": probs.float().cpu().numpy(),
                "view_probs": view_probs.float().cpu().numpy(), "mc_probs": mc}

    def _forward(self, batch_u8: torch.Tensor, cam: bool | None = None) -> dict:
        """Everything the model says about a batch of uint8 images at the model's size:
        ``mask_probs`` (N, h, w), ``probs`` (N, K), ``view_probs`` (S, N, K), ``mc_probs``
        (None or (S, N, K)) and ``cams`` (None or (N, h, w))."""
        x = self.normalize(batch_u8.to(self.device)).contiguous(memory_format=torch.channels_last)
        out = self._outputs(x)
        out["cams"] = None
        if self.cam if cam is None else cam:
            out["cams"], _ = grad_cam(self.model, x, method=self.cam_method)
        return out

    def _predictions(self, items, out: dict) -> list[Prediction]:
        """One `Prediction` per ``(image_id, path, original (H, W))`` of a batch."""
        cal = self.calibration.apply(out["probs"])
        entropy = self.calibration.uncertainty_of(cal)
        refer, flag = self.calibration.refer(cal), self.calibration.mel_flag(cal, self.class_names)
        views = out["view_probs"]
        tta_dis = vote_disagreement(views) if len(views) > 1 else None
        tta_mi = mutual_information(views, normalize=True) if len(views) > 1 else None
        mc_mi = mutual_information(out["mc_probs"], normalize=True) if out["mc_probs"] is not None else None
        masks = list(out["mask_probs"].numpy())
        mask_u = mask_uncertainty_score(masks, threshold=self.threshold)
        predictions = []
        for i, (image_id, path, original_hw) in enumerate(items):
            mask = upsample_mask(out["mask_probs"][i], original_hw, self.threshold)
            probs = out["probs"][i]
            k = int(probs.argmax())
            predictions.append(Prediction(
                image_id=image_id, path=str(path), pred=self.class_names[k], prob=float(probs[k]),
                probs={n: float(p) for n, p in zip(self.class_names, probs)}, mask=mask,
                lesion_fraction=float(mask.mean()),
                probs_calibrated={n: float(p) for n, p in zip(self.class_names, cal[i])},
                prob_calibrated=float(cal[i, k]), entropy=float(entropy[i]),
                tta_disagreement=None if tta_dis is None else float(tta_dis[i]),
                tta_mutual_info=None if tta_mi is None else float(tta_mi[i]),
                mc_mutual_info=None if mc_mi is None else float(mc_mi[i]),
                mask_uncertainty=float(mask_u[i]),
                mask_uncertainty_map=binary_entropy(masks[i]).astype(np.float16),
                refer=None if refer is None else bool(refer[i]), mel_flag=None if flag is None else bool(flag[i]),
                cam=None if out["cams"] is None else out["cams"][i]))
        return predictions

    def predict_image(self, image, cam: bool | None = None) -> Prediction:
        """One image (a path or an RGB uint8 array), with the mask at its original size.
        ``cam``: compute the Grad-CAM (None: as the predictor was built)."""
        path = image if isinstance(image, (str, Path)) else "<array>"
        array = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        out = self._forward(self.preprocess(array)[None], cam)
        return self._predictions([(Path(str(path)).stem, path, array.shape[:2])], out)[0]

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
                    predictions += self._predictions([(p.stem, p, a.shape[:2]) for p, a in ok], self._forward(batch))
                bar.update(len(loaded))
        bar.close()
        return predictions, pd.DataFrame(failures, columns=["path", "reason"])


def _flag(value) -> object:
    return pd.NA if value is None else bool(value)


def predictions_table(predictions, overlays=None) -> pd.DataFrame:
    """One row per image: predicted class, its probability, every class probability, lesion
    area; then the trust columns of `Prediction`: ``prob_calibrated``, ``p_cal_<class>``,
    ``entropy``, ``tta_disagreement`` / ``tta_mutual_info`` (with TTA), ``mc_mutual_info`` (with
    MC dropout), ``mask_uncertainty``, ``refer`` and ``mel_flag`` (empty where the checkpoint
    has no threshold), and ``overlay``: the path of each image's overlay (``overlays``, one per
    prediction, e.g. what `save_overlays` returns; the column is left out without them)."""
    if overlays is not None and len(overlays) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions but {len(overlays)} overlays.")
    rows = []
    for i, p in enumerate(predictions):
        row = {"image_id": p.image_id, "path": p.path, "pred": p.pred, "prob": round(p.prob, 4),
               **{f"p_{k}": round(v, 4) for k, v in p.probs.items()},
               "lesion_fraction": round(p.lesion_fraction, 4), "prob_calibrated": round(p.prob_calibrated, 4),
               **{f"p_cal_{k}": round(v, 4) for k, v in p.probs_calibrated.items()},
               "entropy": round(p.entropy, 4)}
        for name in ("tta_disagreement", "tta_mutual_info", "mc_mutual_info"):
            if getattr(p, name) is not None:
                row[name] = round(getattr(p, name), 4)
        row.update(mask_uncertainty=round(p.mask_uncertainty, 4), refer=_flag(p.refer), mel_flag=_flag(p.mel_flag))
        if overlays is not None:
            row["overlay"] = str(overlays[i])
        rows.append(row)
    table = pd.DataFrame(rows)
    for name in ("refer", "mel_flag"):
        if name in table:
            table[name] = table[name].astype("boolean")
    return table


def flags_caption(p: Prediction) -> str:
    """What an overlay says about a prediction: the class with its calibrated probability, the
    entropy, and the flags (REFER, MELANOMA FLAG), or that the checkpoint has no thresholds."""
    parts = [f"{p.pred} {p.prob_calibrated:.2f} · entropy {p.entropy:.2f}"]
    flags = []
    if p.refer:
        flags.append("REFER")
    if p.mel_flag:
        flags.append(f"MELANOMA FLAG (P(MEL) {p.probs_calibrated.get('MEL', float('nan')):.2f})")
    if p.refer is None and p.mel_flag is None:
        flags.append("no flags: checkpoint not calibrated")
    return "\n".join(parts + [" · ".join(flags) if flags else "no flag"])


def time_single_image(predictor: Predictor, image: np.ndarray, repeats: int = 10) -> float:
    """Median seconds for one image, preprocessing included, Grad-CAM not (after one warm-up call)."""
    predictor.predict_image(image, cam=False)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predictor.predict_image(image, cam=False)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def write_demo_images(folder, n: int = 6, seed: int = 12345, hw=(120, 160)) -> Path:
    """A few new synthetic lesions (none of them in the demo training set) to try inference on."""
    from skin_utils.labels import CLASS_NAMES
    from skin_utils.demo import render_lesion

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        dx = CLASS_NAMES[i % len(CLASS_NAMES)].lower()
        image, _ = render_lesion(rng, dx, hw)
        path = folder / f"demo_{i:02d}.jpg"
        if not path.exists():
            Image.fromarray(image).save(path, quality=92)
    return folder


def save_overlays(predictions, out_dir) -> list[Path]:
    """One PNG per prediction, ``<out_dir>/<image_id>.png``. With a Grad-CAM (``Predictor(cam=True)``):
    the image beside the heat map, the predicted lesion border in magenta on both, and the
    class, calibrated probability, entropy and flags above it (`flags_caption`). Without: the
    image with the predicted lesion border in magenta."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for p in predictions:
        path = out_dir / f"{p.image_id}.png"
        if p.cam is not None:
            fig = plot_cam_overlay(read_image(p.path), p.cam, pred_mask=p.mask, caption=flags_caption(p),
                                   title=p.image_id)
            save_figure(fig, path, dpi=90)
        else:
            Image.fromarray(overlay_mask(read_image(p.path), p.mask)).save(path)
        paths.append(path)
    return paths
