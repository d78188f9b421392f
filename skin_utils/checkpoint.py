"""What a checkpoint holds (`Checkpoint`) and how it is written and read: the one place.

An optional field is one line in `Checkpoint` (older files load with its default); a change older code
could not read bumps `FORMAT_VERSION` and adds an upgrade to ``UPGRADES``. Written atomically (a killed
process leaves the old file or the new one), read with ``weights_only=True`` (a crafted file cannot run code).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from skin_utils.layout import as_hw
from skin_utils.metrics import to_jsonable
from skin_utils.transforms import IMAGENET_MEAN, IMAGENET_STD, resolve_normalization
from skin_utils.model import MultiTaskNet

FORMAT_VERSION = 2
WEIGHTS_FILE, CONFIG_FILE = "model.safetensors", "config.json"  # an export folder (Checkpoint.save_folder)
FEATURES_FILE = "features.safetensors"  # and the arrays of its familiarity reference (calibration["features"])
FEATURE_ARRAYS = ("mean", "precision")  # those arrays: kept in checkpoints, left out of JSON files


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the reason and what to do."""


@dataclass
class TrainingState:
    """What ``resume`` needs besides the weights; stored in ``last.pt`` only."""

    optimizer: dict            # optimizer.state_dict()
    scheduler: dict            # the learning-rate scheduler's state_dict()
    # generator states, in files of older versions only: fit now seeds each epoch from (seed, epoch)
    rng: dict = field(default_factory=dict)
    scaler: dict = field(default_factory=dict)  # fp16 GradScaler state_dict(); {} without one
    # With a weight average (fit's ema_decay): the checkpoint's ``model`` holds the averaged weights (the
    # ones validated and kept), these the optimiser's own; {} and None without one.
    weights: dict = field(default_factory=dict)
    ema_decay: float | None = None
    ema_updates: int = 0       # optimiser steps averaged so far (AveragedModel.n_averaged)


@dataclass
class Checkpoint:
    """Everything ``best.pt`` and ``last.pt`` hold. The first four fields are required; a checkpoint made
    outside `skin_utils.engine.fit` (a test, the benchmark) may leave the others at their defaults."""

    # --- the model and how to feed it
    model_config: dict         # MultiTaskNet.config: rebuilds the network (MultiTaskNet.from_config)
    model: dict                # model.state_dict(): the weights (trained with ema_decay: their moving average)
    class_names: list[str]     # output index -> class name, e.g. ["MEL", "NV", ...]
    image_size: tuple[int, int]  # (H, W) in pixels the model was trained at; inputs are resized to it
    # {"mean": [r, g, b], "std": [r, g, b]} of uint8/255 inputs, "colour_constancy": None | "shades_of_gray"
    # (absent in older files: None), "p": its norm (6); read it with transforms.Normalize.from_config.
    # Files without it (format 1) mean ImageNet's mean and std without colour constancy.
    normalization: dict = field(default_factory=lambda: {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})
    # --- how it was trained
    params: dict = field(default_factory=dict)   # the run's TrainConfig.to_dict(), the epochs bought, the world size
    encoder_weights_used: str | None = None      # what initialised the encoder (MultiTaskNet.encoder_weights_used)
    data: dict = field(default_factory=dict)     # the training data's Data.describe(): data_dir, fingerprint, ...
    split_path: str | None = None                # the lesion-level split file (absolute path) the run used
    selection: str | None = None                 # the metrics that picked best.pt (config.SELECTION_CRITERIA)
    # --- where training stood when it was written
    epoch: int | None = None                     # 0-based index of the epoch these weights finished; None: not from fit
    metrics: dict = field(default_factory=dict)  # validation metrics of that epoch (engine.evaluate)
    history: list = field(default_factory=list)  # one dict per epoch so far (train_* and val_* numbers, score, best)
    best_score: float | None = None              # best validation selection score so far (higher is better)
    epochs_since_best: int = 0                   # epochs since best_score last improved (early stopping)
    training: TrainingState | None = None        # optimizer/scheduler/scaler state, last.pt only
    # --- fitted on the validation split after training (skin_utils.trust.calibrate_checkpoint); {} before that:
    # output kind ("tta", "plain") -> temperature, P(MEL) and referral thresholds, how they were chosen
    calibration: dict = field(default_factory=dict)

    def __post_init__(self):
        self.class_names = list(self.class_names)
        self.image_size = as_hw(self.image_size)
        resolve_normalization(self.normalization)  # a ValueError that names what is wrong
        if isinstance(self.training, dict):
            self.training = TrainingState(**self.training)

    def to_dict(self) -> dict:
        """What is stored: every field as plain data, plus ``format_version``."""
        training = None if self.training is None else dict(vars(self.training))
        return {"format_version": FORMAT_VERSION, **{f.name: getattr(self, f.name) for f in fields(self)},
                "training": training}

    def save(self, path) -> Path:
        """Write this checkpoint to ``path`` atomically (folders are created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(self.to_dict(), fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def from_dict(cls, content: dict, source: str = "checkpoint") -> Checkpoint:
        """The inverse of `to_dict` for any known format version (older ones through ``UPGRADES``); unknown
        fields are refused."""
        version = content.get("format_version") if isinstance(content, dict) else None
        if not isinstance(version, int) or version < 1:
            found = f"keys {sorted(content)[:8]}" if isinstance(content, dict) else type(content).__name__
            raise CheckpointError(f"{source} is not a skin_utils checkpoint: no valid format_version ({version!r}; "
                                  f"found {found}). Load it with the code that wrote it.")
        if version > FORMAT_VERSION:
            raise CheckpointError(f"{source} has format version {version}, newer than this skin_utils reads "
                                  f"(up to {FORMAT_VERSION}). Update skin_utils.")
        for older in range(version, FORMAT_VERSION):
            content = UPGRADES[older](content, source)
        if unknown := sorted(set(content) - {f.name for f in fields(cls)} - {"format_version"}):
            raise CheckpointError(f"{source} has fields this version of skin_utils does not know: {unknown}. It was "
                                  "written by other code; load it with the skin_utils that wrote it.")
        if missing := sorted(f.name for f in fields(cls) if f.name not in content
                             and f.default is MISSING and f.default_factory is MISSING):
            raise CheckpointError(f"{source} lacks the required fields {missing}; it cannot be used.")
        try:
            return cls(**{k: v for k, v in content.items() if k != "format_version"})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source} holds a malformed field ({err}); it cannot be used.") from err

    @classmethod
    def load(cls, path, map_location="cpu") -> Checkpoint:
        """Read a checkpoint file of any known format version (``weights_only``: tensors and plain types only),
        or an export folder (`save_folder`); refuse anything else."""
        path = Path(path)
        if path.is_dir():
            if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
                raise CheckpointError(f"{path} is a folder but not an exported model: it needs {CONFIG_FILE} and "
                                      f"{WEIGHTS_FILE} (made by `python -m skin_utils.export`).")
            config = json.loads((path / CONFIG_FILE).read_text())
            config.pop("onnx", None)  # what the export says of model.onnx, for its other users
            if (path / FEATURES_FILE).is_file() and (config.get("calibration") or {}).get("features"):
                arrays = load_file(path / FEATURES_FILE)
                config["calibration"]["features"].update({k: arrays[k].tolist() for k in FEATURE_ARRAYS})
            return cls.from_dict({**config, "model": load_file(path / WEIGHTS_FILE)}, source=str(path))
        if not path.is_file():
            raise FileNotFoundError(f"No checkpoint at {path}. Train one first with notebooks/02_train.ipynb "
                                    "(it writes checkpoints/best.pt), or pass the right path.")
        try:
            content = torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            raise CheckpointError(
                f"Refused to load {path}: it contains objects other than tensors and plain Python types, which "
                f"could execute code when unpickled ({str(err).splitlines()[0]}). Only load checkpoints written by "
                "skin_utils, from a source you trust.") from err
        except (RuntimeError, EOFError, OSError) as err:
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err}). "
                                  "It may be truncated; use the previous checkpoint or retrain.") from err
        return cls.from_dict(content, source=str(path))

    def save_folder(self, folder) -> Path:
        """A plain, pickle-free copy for use outside training: ``model.safetensors`` (the weights),
        ``config.json`` (every other field but the training state) and, when calibrated with a familiarity
        reference, ``features.safetensors`` (its arrays). `load` reads it back."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.items()}, folder / WEIGHTS_FILE)
        content = {k: v for k, v in self.to_dict().items() if k not in ("model", "training")}
        reference = dict((content.get("calibration") or {}).get("features") or {})
        if all(k in reference for k in FEATURE_ARRAYS):  # 512 x 512 numbers: a tensor file, not JSON text
            save_file({k: torch.as_tensor(reference.pop(k), dtype=torch.float64) for k in FEATURE_ARRAYS},
                      folder / FEATURES_FILE)
            content["calibration"] = {**content["calibration"], "features": reference}
        (folder / CONFIG_FILE).write_text(json.dumps(to_jsonable(content), indent=2, allow_nan=True))
        return folder


def upgrade_v1(content: dict, source: str = "checkpoint") -> dict:
    """Format 1 (a flat dict: run parameters, ``image_size`` and ``encoder_weights_used`` under
    ``config``; the training state at the top level of ``last.pt``; ImageNet normalisation) -> 2."""
    old = {k: v for k, v in content.items() if k != "format_version"}
    config = dict(old.pop("config", None) or {})
    size = config.get("image_size", old.pop("image_size", None))
    if size is None:
        raise CheckpointError(f"{source} (format 1) does not record the image size it was trained at; "
                              "it cannot be used for prediction. Retrain with notebooks/02_train.ipynb.")
    if not old.get("normalization"):
        old.pop("normalization", None)  # the field's default: ImageNet's
    new = {"image_size": as_hw(size), "encoder_weights_used": config.pop("encoder_weights_used", None),
           "params": config}
    if training := {k: old.pop(k) for k in ("optimizer", "scheduler", "scaler", "rng") if k in old}:
        new["training"] = {"scaler": {}, **training}
    return {**old, **new, "format_version": 2}


UPGRADES = {1: upgrade_v1}  # format version -> the function that brings content one version up


def load_weights(model: torch.nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """``model.load_state_dict`` with an error that says what differs."""
    own = model.state_dict()
    problems = [f"number of classes: checkpoint {theirs.shape[0]}, model {ours.shape[0]}"
                if key.startswith("classification_head") and key.endswith("weight")
                else f"{key}: checkpoint {tuple(theirs.shape)}, model {tuple(ours.shape)}"
                for key, ours in own.items() if (theirs := state_dict.get(key, ours)).shape != ours.shape]
    for keys, what in (([k for k in own if k not in state_dict], "the model needs are not in the checkpoint"),
                       ([k for k in state_dict if k not in own], "in the checkpoint do not belong to the model")):
        if keys:
            problems.append(f"{len(keys)} tensors {what} (first: {', '.join(keys[:3])})")
    if problems:
        raise CheckpointError(f"The {source} does not fit this model:\n  - " + "\n  - ".join(problems)
                              + "\nBuild the model from the checkpoint's own configuration "
                              "(skin_utils.checkpoint.load_model) or use a checkpoint made for this model.")
    model.load_state_dict(state_dict)


def load_model(path, map_location="cpu") -> tuple[MultiTaskNet, Checkpoint]:
    """The `MultiTaskNet` a checkpoint describes, with its weights, in eval mode, and the checkpoint."""
    ckpt = Checkpoint.load(path, map_location=map_location)
    model = MultiTaskNet.from_config(ckpt.model_config)
    load_weights(model, ckpt.model, source=f"checkpoint {path}")
    return model.eval(), ckpt
