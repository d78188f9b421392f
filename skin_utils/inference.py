"""Predictions on new images, one at a time or a folder in batches, each with how far to trust it. A
folder may hold anything: the good images get a prediction, the rest a reason in ``failures``; nothing
stops half-way. `infer(cfg)` is the whole job of notebooks/04_inference.
"""

from __future__ import annotations

import os
import shutil
import timeit
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from skin_utils import plots, report
from skin_utils.report import Section
from skin_utils.checkpoint import CONFIG_FILE, load_model
from skin_utils.config import InferConfig, resolve
from skin_utils.transforms import Normalize
from skin_utils.layout import find_images, image_hw, read_image
from skin_utils.demo import SYNTHETIC_NOTE, render_lesion
from skin_utils.engine import amp_dtype_for, image_batch, predict, resolve_device, upsample_mask
from skin_utils.labels import CLASS_NAMES
from skin_utils.runs import Run, find_run, run_to_score
from skin_utils.trust import (COMMAND, StoredCalibration, binary_entropy, familiarity_columns, mask_uncertainty_score,
                              stored_feature_reference, trust_columns)

MIN_SIDE = 8  # pixels: below this there is no lesion to see
FLAGS = ("unfamiliar", "refer", "mel_flag")  # True or False; None without the checkpoint's reference or threshold


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
    mask_uncertainty: float = float("nan")  # mean binary entropy (bits) in the band around the predicted border
    mask_uncertainty_map: np.ndarray | None = None  # per-pixel binary entropy of the mask, model resolution, float16
    feature_distance: float = float("nan")  # how far its features lie from the validation images' (trust)
    unfamiliar: bool | None = None          # beyond the 95% of validation images; None: the checkpoint has no reference
    refer: bool | None = None               # entropy above the checkpoint's referral threshold; None: no threshold
    mel_flag: bool | None = None            # calibrated P(MEL) >= the checkpoint's operating threshold; None: none
    cam: np.ndarray | None = None           # Grad-CAM of ``pred`` in [0, 1], model resolution (cam=True only)


class Predictor:
    """A trained model ready for new images: ``Predictor("reports/runs/<run>/checkpoints/best.pt")``.
    Images go in at the checkpoint's size and normalization; masks come back at their own size.
    ``tta``: the 8 symmetries of a square input (4 flips otherwise); ``cam``: the Grad-CAM of the predicted
    class. ``self.calibration`` is the checkpoint's for this kind of output (``self.calibration.describe()`` says what is missing: a missing threshold leaves its flag None)."""

    def __init__(self, checkpoint, device: str = "auto", amp: str = "auto", threshold: float = 0.5,
                 tta: bool = False, cam: bool = False):
        self.device = resolve_device(device)
        self.model, self.checkpoint = load_model(checkpoint, map_location="cpu")
        self.model.to(self.device).to(memory_format=torch.channels_last).eval()
        self.class_names, self.image_size = self.checkpoint.class_names, self.checkpoint.image_size
        self.normalize = Normalize.from_config(self.checkpoint.normalization).to(self.device)
        self.amp_dtype, self.threshold, self.tta, self.cam = amp_dtype_for(self.device, amp), threshold, tta, cam
        self.calibration = StoredCalibration.from_checkpoint(self.checkpoint, tta)
        self.features = stored_feature_reference(self.checkpoint)  # familiarity: None without a reference

    @classmethod
    def from_folder(cls, folder, **kwargs) -> Predictor:
        """The model of an export folder (``python -m skin_utils.export``): no pickle, no run folder."""
        return cls(folder, **kwargs)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 (3, h, w) at the model's size."""
        h, w = self.image_size
        return torch.from_numpy(np.array(Image.fromarray(image).resize((w, h), Image.BILINEAR))).permute(2, 0, 1)

    def _predict(self, batches, cam: bool | None = None) -> list[Prediction]:
        """One `Prediction` per image of ``batches``: (uint8 images at the model's size, their
        ``(image_id, path, original (H, W))``)."""
        items = []

        def feed():
            for images, meta in batches:
                items.extend(meta)
                yield image_batch(torch.stack(images))

        out = predict(self.model, feed(), self.device, amp_dtype=self.amp_dtype, normalize=self.normalize,
                      progress=False, tta=self.tta, return_views=True,
                      cam=self.cam if cam is None else cam, features=self.features is not None)
        if not items:
            return []
        cal, masks, probs = self.calibration.apply(out["probs"]), out["mask_probs"].float().numpy(), out["probs"]
        trust = trust_columns(cal, self.calibration, self.class_names, out["view_probs"]).assign(
            mask_uncertainty=mask_uncertainty_score(list(masks), threshold=self.threshold),
            **({} if self.features is None else familiarity_columns(out["features"], self.features))).astype(object)
        predictions = []
        for i, ((image_id, path, original_hw), row) in enumerate(zip(items, trust.to_dict("records"))):
            mask, k = upsample_mask(out["mask_probs"][i], original_hw, self.threshold), int(probs[i].argmax())
            predictions.append(Prediction(
                image_id=image_id, path=str(path), pred=self.class_names[k], prob=float(probs[i, k]),
                probs=dict(zip(self.class_names, probs[i].tolist())), mask=mask, lesion_fraction=float(mask.mean()),
                probs_calibrated=dict(zip(self.class_names, cal[i].tolist())), prob_calibrated=float(cal[i, k]),
                mask_uncertainty_map=binary_entropy(masks[i]).astype(np.float16),
                cam=out["cams"][i] if "cams" in out else None,
                **{name: None if pd.isna(v) else bool(v) if name in FLAGS else float(v) for name, v in row.items()}))
        return predictions

    def predict_image(self, image, cam: bool | None = None) -> Prediction:
        """One image (a path or an RGB uint8 array); ``cam``: the Grad-CAM (None: as the predictor was built)."""
        if isinstance(image, (str, Path)):  # read as the evaluation cache reads it (a large image reduced first)
            path, array, hw = image, read_image(image, shrink_to=self.image_size), image_hw(image)
        else:
            path, array, hw = "<array>", np.asarray(image), np.shape(image)[:2]
        return self._predict([([self.preprocess(array)], [(Path(str(path)).stem, path, hw)])], cam)[0]

    def predict_folder(self, folder, batch_size: int = 16, progress: bool = True):
        """Every image under ``folder``, or the one image file ``folder``: ``(predictions, failures)``, the files
        skipped with the reason."""
        folder = Path(folder)
        if folder.is_file():
            return self.predict_paths([folder], batch_size, progress)
        images = set(find_images(folder))  # FileNotFoundError without the folder
        skipped = [{"path": str(p), "reason": "not an image file (by its extension); skipped"}
                   for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".") and p not in images]
        predictions, failures = self.predict_paths(sorted(images), batch_size, progress)
        return predictions, pd.concat([pd.DataFrame(skipped, columns=["path", "reason"]), failures], ignore_index=True)

    def predict_paths(self, paths, batch_size: int = 16, progress: bool = True):
        """Image files in batches, decoded on two threads: ``(predictions, failures)``, the unreadable, gigantic
        or tiny files with the reason."""
        def load(path):  # read as the evaluation cache reads it (an image over 4 MP reduced first), and its size
            try:
                array, hw = read_image(path, shrink_to=self.image_size), image_hw(path)
            except (Image.DecompressionBombError, OSError, ValueError) as err:  # layout.ImageReadError: a ValueError
                return path, None, f"{type(err).__name__}: {err}"
            if min(hw) < MIN_SIDE:
                return path, None, f"image is {hw[1]}x{hw[0]} px, smaller than {MIN_SIDE} px a side"
            return path, (array, hw), None

        paths, failures = [Path(p) for p in paths], []
        ids = dict(zip(paths, image_ids(paths)))

        def batches():
            with ThreadPoolExecutor(2) as pool, tqdm(total=len(paths), desc="predict", disable=not progress,
                                                     mininterval=1.0) as bar:
                for start in range(0, len(paths), batch_size):
                    loaded = list(pool.map(load, paths[start:start + batch_size]))
                    failures.extend({"path": str(p), "reason": err} for p, _, err in loaded if err is not None)
                    bar.update(len(loaded))
                    if ok := [(p, a) for p, a, err in loaded if err is None]:
                        yield [self.preprocess(a) for _, (a, _) in ok], [(ids[p], p, hw) for p, (_, hw) in ok]

        return self._predict(batches()), pd.DataFrame(failures, columns=["path", "reason"])


def image_ids(paths) -> list[str]:
    """The id of each image: its file-name stem, or where stems collide (``a/IMG_1.jpg``, ``b/IMG_1.jpg``), its
    path without the extension below the folder all the images share, "/" written "__" (``a__IMG_1``), and where
    those still collide (``lesion.jpg``, ``lesion.png``), the extension too, "." written "_" (``lesion_jpg``)."""
    paths = [Path(os.path.abspath(p)) for p in paths]
    stems = Counter(p.stem for p in paths)
    root = os.path.commonpath([p.parent for p in paths]) if len(stems) < len(paths) else None
    ids = [p.stem if stems[p.stem] == 1 else "__".join(p.relative_to(root).with_suffix("").parts) for p in paths]
    counts = Counter(ids)
    return [f"{i}_{p.suffix[1:]}" if counts[i] > 1 else i for i, p in zip(ids, paths)]


def model_path(source, runs_dir="reports/runs") -> Path:
    """What a predictor loads for ``source``: a checkpoint file or an export folder as given, else the
    ``best.pt`` of the run it names (a run name under ``runs_dir``, a run folder, or "latest")."""
    path = resolve(source)
    return path if path.is_file() or (path / CONFIG_FILE).is_file() else find_run(source, runs_dir).best


def load_predictor(source, runs_dir="reports/runs", **kwargs) -> Predictor:
    """`Predictor` of a run, a checkpoint or an export folder (`model_path`); ``kwargs`` go to `Predictor`."""
    return Predictor(model_path(source, runs_dir), **kwargs)


def predictions_table(predictions, overlays=None) -> pd.DataFrame:
    """One row per image, numbers to 4 decimals: the fields of `Prediction` (``p_<class>``, ``p_cal_<class>``; the
    TTA columns when made; the flags empty without a threshold) and ``overlay``, its overlay's path."""
    table = pd.DataFrame([
        {"image_id": p.image_id, "path": p.path, "pred": p.pred, "prob": p.prob,
         **{f"p_{k}": v for k, v in p.probs.items()}, "lesion_fraction": p.lesion_fraction,
         "prob_calibrated": p.prob_calibrated,
         **{f"p_cal_{k}": v for k, v in p.probs_calibrated.items()}, "entropy": p.entropy,
         **{k: getattr(p, k) for k in ("tta_disagreement", "tta_mutual_info")
            if getattr(p, k) is not None},
         "mask_uncertainty": p.mask_uncertainty, "feature_distance": p.feature_distance,
         **{k: getattr(p, k) for k in FLAGS}} for p in predictions]).round(4)
    if overlays is not None:
        table["overlay"] = [str(path) for path in overlays]
    return table.astype({k: "boolean" for k in FLAGS if k in table})


ISIC_TASK3 = "ISIC_task3.csv"  # ISIC 2018 Task 3 submission: image,MEL,NV,BCC,AKIEC,BKL,DF,VASC
OUTPUT_FOLDERS = ("masks", "overlays", "isic")  # the folders of per-image files save_predictions writes


def check_out_dir(out_dir, image_ids, overlays: bool = False, isic: bool = False) -> None:
    """FileExistsError (saying why) when ``masks/``, ``overlays/`` or ``isic/`` under ``out_dir`` hold files that
    `save_predictions` of ``image_ids`` would not write. Nothing is deleted; they may be the user's."""
    out_dir, ids = Path(out_dir), set(image_ids)
    written = {"masks": {f"{i}.png" for i in ids}, "overlays": {f"{i}.png" for i in ids} if overlays else set(),
               "isic": {f"{i}_segmentation.png" for i in ids} | {ISIC_TASK3} if isic else set()}
    other = {name: sorted(p.name for p in (out_dir / name).iterdir() if p.name not in written[name]
                          and not p.name.startswith(".")) for name in OUTPUT_FOLDERS if (out_dir / name).is_dir()}
    if found := [f"{out_dir / name} holds {len(names)} file(s) this call would not write (e.g. {names[0]})"
                 for name, names in other.items() if names]:
        raise FileExistsError("; ".join(found) + ", left by an earlier call (other images or options): they would "
                              "sit beside this call's predictions.csv as if they were its. Write to an empty folder "
                              "(predict: another --out), or delete those files first.")


def save_masks(predictions, out_dir: Path, suffix: str = "") -> None:
    """``<out_dir>/<image_id><suffix>.png``: each mask at its image's size, one channel, 0 or 255."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in predictions:
        Image.fromarray(p.mask.astype(np.uint8) * 255, mode="L").save(out_dir / f"{p.image_id}{suffix}.png")


def save_predictions(predictions, failures, out_dir, overlays: bool = False, isic: bool = False) -> pd.DataFrame:
    """Everything a folder's predictions leave in ``out_dir``, once `check_out_dir` allows: ``predictions.csv``,
    ``skipped.csv``, ``masks/``, on request ``overlays/`` and ``isic/``, the ISIC 2018 submission files (Task 1
    masks ``<image_id>_segmentation.png``, the Task 3 CSV of calibrated probabilities in ISIC's column order; it
    needs the seven HAM10000 classes). Returns the predictions table."""
    out_dir = Path(out_dir)
    counts = Counter(p.image_id for p in predictions)
    if same := sorted(p.path for p in predictions if counts[p.image_id] > 1):
        raise ValueError(f"{same} would share an image_id, so their masks and rows would overwrite each other: give "
                         "them distinct file names, or predict each image once in one call.")
    if isic and predictions and sorted(predictions[0].probs) != sorted(CLASS_NAMES):
        raise ValueError(f"ISIC Task 3 needs the classes {list(CLASS_NAMES)}; this model predicts "
                         f"{list(predictions[0].probs)}. Leave isic off.")
    check_out_dir(out_dir, [p.image_id for p in predictions], overlays=overlays, isic=isic)
    save_masks(predictions, out_dir / "masks")
    table = predictions_table(predictions, save_overlays(predictions, out_dir / "overlays") if overlays else None)
    table.to_csv(out_dir / "predictions.csv", index=False)
    failures.to_csv(out_dir / "skipped.csv", index=False)
    if isic:
        save_masks(predictions, out_dir / "isic", suffix="_segmentation")
        pd.DataFrame([{"image": p.image_id, **p.probs_calibrated} for p in predictions], columns=["image", *CLASS_NAMES]
                     ).to_csv(out_dir / "isic" / ISIC_TASK3, index=False, float_format="%.6f")
    return table


def flags_caption(p: Prediction) -> str:
    """The class with its calibrated probability, the entropy, and the flags (REFER, MELANOMA FLAG, UNFAMILIAR)."""
    mel = f"MELANOMA FLAG (P(MEL) {p.probs_calibrated.get('MEL', float('nan')):.2f})"
    flags = [text for text, on in (("REFER", p.refer), (mel, p.mel_flag), ("UNFAMILIAR", p.unfamiliar)) if on]
    if p.refer is None and p.mel_flag is None:
        flags.append("no flags: checkpoint not calibrated")
    return f"{p.pred} {p.prob_calibrated:.2f} · entropy {p.entropy:.2f}\n" + (" · ".join(flags) or "no flag")


def time_single_image(predictor: Predictor, image: np.ndarray, repeats: int = 10) -> float:
    """Median seconds for one image, preprocessing included, Grad-CAM not (after one warm-up call); timed like
    scripts/benchmark.py's naive pipeline (perf_counter, garbage collection on)."""
    predictor.predict_image(image, cam=False)
    return float(np.median(timeit.repeat(lambda: predictor.predict_image(image, cam=False), "gc.enable()",
                                         repeat=repeats, number=1)))


def write_demo_images(folder, n: int = 6, seed: int = 12345, hw=(120, 160)) -> Path:
    """A few new synthetic lesions (none of them in the demo training set) to try inference on."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, _ = render_lesion(rng, CLASS_NAMES[i % len(CLASS_NAMES)].lower(), hw)
        if not (path := folder / f"demo_{i:02d}.jpg").exists():
            Image.fromarray(image).save(path, quality=92)
    return folder


def save_overlays(predictions, out_dir) -> list[Path]:
    """``<out_dir>/<image_id>.png``: the image with the predicted border, beside its Grad-CAM and under
    `flags_caption` when it has one."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{p.image_id}.png" for p in predictions]
    for p, path in zip(predictions, paths):
        if p.cam is None:
            Image.fromarray(plots.overlay_mask(read_image(p.path), p.mask)).save(path)
        else:
            plots.save_figure(plots.plot_cam_overlay(read_image(p.path), p.cam, pred_mask=p.mask, title=p.image_id,
                                                     caption=flags_caption(p)), path, dpi=90)
    return paths


def summary(predictions, n_skipped: int, demo: bool = False, skipped_file="inference/skipped.csv") -> str:
    """The predictions in a few sentences: classes, uncertain ones, flags, skipped files."""
    n, counts = len(predictions), {flag: sum(bool(getattr(p, flag)) for p in predictions) for flag in FLAGS}
    out = [f"{n} image(s) predicted: " + ", ".join(f"{k} {v}" for k, v in Counter(p.pred for p in predictions)
                                                   .most_common()) + "." if n else "No image could be predicted."]
    if unsure := sum(p.prob_calibrated < 0.5 for p in predictions):
        out.append(f"{unsure} of {n} have a calibrated top probability below 0.5: treat them as uncertain.")
    if n and all(p.refer is None and p.mel_flag is None for p in predictions):
        out.append(f"The checkpoint holds no referral or melanoma threshold, so no image is flagged; calibrate it "
                   f"with `{COMMAND} <run or checkpoint>`.")
    elif n:
        out.append(f"{counts['refer']} of {n} should be referred to a dermatologist (uncertainty above the threshold "
                   f"chosen on validation); {counts['mel_flag']} {'raises' if counts['mel_flag'] == 1 else 'raise'} "
                   "the melanoma flag.")
    if counts["unfamiliar"]:
        out.append(f"{counts['unfamiliar']} of {n} {'is' if counts['unfamiliar'] == 1 else 'are'} unfamiliar: their "
                   "features lie farther from the validation images' than 95% of those do, so the model has seen few "
                   "images like them and its probabilities and flags may not hold (another dermoscope or clinic, or "
                   "not a dermoscopic image).")
    if n_skipped:
        out.append(f"{n_skipped} file(s) were skipped, with the reason, in `{skipped_file}`.")
    return " ".join(out + (["The input was new synthetic demo images."] if demo else []))


@dataclass
class Inferred:
    """What `infer` returns: where the results went, what they are and the ``sections`` to show."""

    run: Run
    folder: Path
    predictor: Predictor
    predictions: list
    table: pd.DataFrame
    failures: pd.DataFrame
    latency: float
    sections: dict[str, Section]

    def show(self, name: str) -> None:
        self.sections[name].show()


def infer(cfg: InferConfig, progress: bool = True) -> Inferred:
    """THE inference of notebooks/04_inference: ``inference/predictions.csv``, ``skipped.csv``, ``masks/`` and
    ``overlays/`` (and ``isic/``), the figures, ``metrics/inference.json`` and the report section, in the run folder.
    The run's ``inference/`` is this function's own: its ``masks/``, ``overlays/`` and ``isic/`` are emptied before
    the new predictions are written, so they hold this input's images only."""
    run, path = run_to_score(cfg.run, cfg.checkpoint and resolve(cfg.checkpoint), resolve(cfg.reports_dir) / "runs")
    out_dir = run.root / "inference"
    folder = resolve(cfg.input_dir) if cfg.input_dir else write_demo_images(out_dir / "demo_input", cfg.n_demo_images)
    predictor = Predictor(path, device=cfg.device, amp=cfg.amp, threshold=cfg.threshold, tta=cfg.tta, cam=cfg.cam)
    if progress:
        print(f"{folder}: predicting at {predictor.image_size} px on {predictor.device}\n"
              f"{predictor.calibration.describe()}")
    predictions, failures = predictor.predict_folder(folder, batch_size=cfg.batch_size, progress=progress)
    for name in OUTPUT_FOLDERS:  # the last input's files, not this one's
        shutil.rmtree(out_dir / name, ignore_errors=True)
    table = save_predictions(predictions, failures, out_dir, overlays=True, isic=cfg.isic)
    shown, title = predictions[:8], folder.name + ("" if cfg.input_dir else f" · {SYNTHETIC_NOTE}")
    none = "" if shown else "No image was predicted."
    sections = {"predictions": Section("Predictions", {"": table}), "skipped": Section("Skipped files", {"": failures}),
                "overlays": Section("Overlays", text=none), "trust": Section(
                    "Heat maps and flags", text=none or ("" if cfg.cam else "Grad-CAM is off (cam=False)."))}
    if shown:
        images, masks = [read_image(p.path) for p in shown], [p.mask for p in shown]
        sections["overlays"].figures.append(plots.save_figure(plots.plot_cases(
            images=images, true_masks=None, pred_masks=masks, true_labels=None, pred_labels=[p.pred for p in shown],
            pred_probs=[p.prob_calibrated for p in shown], row_titles=[p.image_id for p in shown],
            title=f"Predictions · {title}"), run.figures / "inference_examples.png"))
        if cfg.cam:
            sections["trust"].figures.append(plots.save_figure(plots.plot_cam_grid(
                images, [p.cam for p in shown], pred_masks=masks, captions=[flags_caption(p) for p in shown],
                title=f"Heat maps and flags · {title}"), run.figures / "inference_trust.png"))
    latency = time_single_image(predictor, read_image(predictions[0].path)) if predictions else float("nan")
    sections["latency"] = Section("Latency", text=f"Single-image latency {latency * 1000:.1f} ms on "
                                  f"`{predictor.device}` (median of 10, preprocessing included, Grad-CAM not).")
    sections["conclusion"] = Section("Conclusion", text=summary(predictions, len(failures), demo=cfg.input_dir is None))
    report.write_json(run.metrics / "inference.json", {
        "checkpoint": str(path), "checkpoint_epoch": None if (e := predictor.checkpoint.epoch) is None else e + 1,
        "input_dir": str(folder), "n_predicted": len(predictions), "n_skipped": len(failures),
        "single_image_latency_s": latency, "class_counts": dict(Counter(p.pred for p in predictions).most_common()),
        "calibration_used": predictor.calibration.as_dict(), "n_referred": sum(bool(p.refer) for p in predictions),
        "n_melanoma_flags": sum(bool(p.mel_flag) for p in predictions),
        "n_unfamiliar": sum(bool(p.unfamiliar) for p in predictions), "params": cfg.to_dict()})
    columns = [c for c in ("image_id", "pred", "prob", "prob_calibrated", "p_cal_MEL", "entropy", "tta_disagreement",
                           "mask_uncertainty", *FLAGS) if c in table]
    report.write_section(run.root, "04_inference", "Inference", "\n\n".join([
        f"`{path.name}` of run `{run.name}` on `{folder}`: {len(predictions)} images predicted, {len(failures)} "
        "skipped (listed in `inference/skipped.csv`). Predictions: `inference/predictions.csv`; overlays: "
        f"`inference/overlays/`. {sections['latency'].text}", predictor.calibration.describe(),
        report.markdown_table(table[columns].astype(object).fillna("–").set_index("image_id").head(20))
        if len(table) else "(no predictions)",
        *(f"![{p.stem}](figures/{p.name})" for k in ("overlays", "trust") for p in sections[k].figures),
        f"**Conclusion.** {sections['conclusion'].text}"]), params=cfg.to_dict())
    return Inferred(run, folder, predictor, predictions, table, failures, latency, sections)
