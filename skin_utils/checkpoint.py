"""Checkpoints that are safe to open and survive a crash.

* Written atomically: to a temporary file in the same folder, flushed and fsync'ed, then
  ``os.replace``d over the target. Killing the process at any moment leaves either the old or
  the new checkpoint, never half of one.
* Read with ``torch.load(..., weights_only=True)``: only tensors and plain Python types are
  unpickled, so a crafted checkpoint cannot run code. Everything we store is plain types.
* Loading into a model of another shape says what differs instead of a wall of key names.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import torch

from skin_utils.model import MultiTaskNet

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with the reason and what to do."""


def save_checkpoint(path, **content) -> Path:
    """Atomically write ``content`` (tensors, state dicts and plain types) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {"format_version": FORMAT_VERSION, **content}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(content, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by `save_checkpoint`, refusing anything that is not plain data."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"No checkpoint at {path}. Train one first with notebooks/02_train.ipynb "
            "(it writes checkpoints/best.pt), or pass the right path."
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"Refused to load {path}: it contains objects other than tensors and plain Python "
            f"types, which could execute code when unpickled ({str(err).splitlines()[0]}). "
            "Only load checkpoints written by skin_utils, from a source you trust."
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(err).__name__}: {err}). "
            "It may be truncated; use the previous checkpoint or retrain."
        ) from err
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_config" not in ckpt:
        raise CheckpointError(
            f"{path} is not a skin_utils checkpoint (expected a dict with 'model' and "
            f"'model_config', found {type(ckpt).__name__}"
            + (f" with keys {sorted(ckpt)[:8]}" if isinstance(ckpt, dict) else "") + ")."
        )
    return ckpt


def describe_mismatch(model: torch.nn.Module, state_dict: dict) -> list[str]:
    """Human-readable differences between a model and a state dict (empty list: they match)."""
    own = model.state_dict()
    lines = []
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [(k, tuple(state_dict[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    for key, theirs, ours in shapes:
        if key.startswith("classification_head") and key.endswith("weight"):
            lines.append(f"number of classes: checkpoint {theirs[0]}, model {ours[0]}")
        else:
            lines.append(f"{key}: checkpoint {theirs}, model {ours}")
    if missing:
        lines.append(f"{len(missing)} tensors the model needs are not in the checkpoint "
                     f"(first: {', '.join(missing[:3])})")
    if unexpected:
        lines.append(f"{len(unexpected)} tensors in the checkpoint do not belong to the model "
                     f"(first: {', '.join(unexpected[:3])})")
    return lines


def load_weights(model: torch.nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """``model.load_state_dict`` with an error that says what differs."""
    problems = describe_mismatch(model, state_dict)
    if problems:
        raise CheckpointError(
            f"The {source} does not fit this model:\n  - " + "\n  - ".join(problems)
            + "\nBuild the model from the checkpoint's own configuration "
            "(skin_utils.checkpoint.load_model) or use a checkpoint made for this model."
        )
    model.load_state_dict(state_dict)


def load_model(path, map_location="cpu") -> tuple[MultiTaskNet, dict]:
    """Build a `MultiTaskNet` from a checkpoint's configuration, load its weights, eval mode."""
    ckpt = load_checkpoint(path, map_location=map_location)
    model = MultiTaskNet.from_config(ckpt["model_config"])
    load_weights(model, ckpt["model"], source=f"checkpoint {path}")
    model.eval()
    return model, ckpt
