"""Training and evaluation loops: `train_one_epoch`, `predict` (the one prediction loop), `evaluate` and `fit`.

No host-device sync per step: losses are summed on the device and read when the progress bar refreshes. Batches
are ``(images uint8 (N, 3, H, W), masks uint8 (N, 1, H, W) in {0, 1}, labels (N,), rows (N,))`` at the model's
resolution, normalised (and in training colour-jittered) inside the step.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import math
import random
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from skin_utils import distributed
from skin_utils.budget import format_seconds, seconds_per_batch
from skin_utils.checkpoint import Checkpoint, CheckpointError, TrainingState, load_weights
from skin_utils.config import AMP_CHOICES, LR_SCHEDULES, RESUMABLE_CHANGES, SELECTION_CRITERIA, trained_tasks
from skin_utils.transforms import Normalize, resolve_normalization
from skin_utils.metrics import classification_report, segmentation_scores


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


# ----------------------------------------------------------------------------- device helpers
def resolve_device(device: str = "auto") -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={str(device)!r} but no CUDA GPU is visible; use device='cpu' or 'auto'.")
    return device


def amp_dtype_for(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """The autocast dtype for ``amp`` (`config.AMP_CHOICES`): "auto" is bf16 where the hardware has it (on a CPU:
    AVX512-BF16 / AMX, where oneDNN's bf16 convolutions beat fp32), fp16 on older GPUs; None for off."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp={amp!r}: choose one of {AMP_CHOICES}.")
    if amp != "auto":
        return {"off": None, "fp16": torch.float16, "bf16": torch.bfloat16}[amp]
    if device.type == "cuda":  # a T4 or V100 emulates bf16 (slow, no cuDNN convolutions): fp16 there
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    # oneDNN's own check passes any AVX-512 CPU; without bf16 instructions its bf16 is ~2x slower than fp32
    cpu_bf16 = torch.backends.mkldnn.is_available() and (torch.cpu._is_avx512_bf16_supported()
                                                         or torch.cpu._is_amx_tile_supported())
    return torch.bfloat16 if cpu_bf16 else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in ``dtype``; None: none (a plain context, so it also runs where autocast cannot)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside compile (``_orig_mod``) and DDP (``module``) wrappers: a checkpoint's state_dict."""
    ddp = torch.nn.parallel.DistributedDataParallel
    while isinstance(model, ddp) or isinstance(getattr(model, "_orig_mod", None), torch.nn.Module):
        model = model.module if isinstance(model, ddp) else model._orig_mod
    return model


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def weight_average(model: torch.nn.Module, decay: float | None) -> AveragedModel | None:
    """An EMA of ``model``'s weights and BatchNorm buffers (torch's ``AveragedModel``; ``.module`` is the average),
    or None. It spans about ``1 / (1 - decay)`` optimiser steps (0.999: under three 96 px epochs of HAM10000)."""
    if decay is None:
        return None
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"ema_decay={decay!r}: expected a number in [0, 1) (e.g. 0.999), or None for no average.")
    average = AveragedModel(unwrap_model(model), multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)
    average.decay = float(decay)
    return average


def _to_device(batch, device, normalize, channels_last):
    images, masks, labels, rows = batch
    non_blocking = device.type == "cuda"
    images = normalize(images.to(device, non_blocking=non_blocking))
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return (images, masks.to(device, non_blocking=non_blocking).float(),
            labels.to(device, non_blocking=non_blocking), rows)


# ----------------------------------------------------------------------------- one pass
def train_one_epoch(model, loader, loss_fn, optimizer, device, *, epoch: int = 0, scheduler=None, scaler=None,
                    amp_dtype=None, batch_transform=None, progress: bool = True, refresh_every: int = 10,
                    max_batches: int | None = None, deadline: float | None = None, normalization: dict | None = None,
                    ema=None) -> dict:
    """One epoch in channels_last; ``scheduler`` steps per batch, ``ema`` (a `weight_average`) after each optimiser
    step. ``batch_transform`` augments float batches in [0, 1] on the device before ``normalization`` (None:
    ImageNet's). Returns mean losses and images/s, over all processes for a DDP ``model`` (compiled or not): a
    plain one waits for no other process (the time budget's measurement runs on rank 0 alone); ``deadline`` (a
    ``time.perf_counter()`` reading) puts the time left on the progress bar."""
    device = torch.device(device)
    together = isinstance(getattr(model, "_orig_mod", model), torch.nn.parallel.DistributedDataParallel)
    scaler = torch.amp.GradScaler("cuda", enabled=False) if scaler is None else scaler  # disabled: plain steps
    model.train()
    normalize = Normalize.from_config(normalization, jitter=batch_transform).to(device)
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    first_bad = torch.full((), -1, device=device, dtype=torch.long)
    n_images, t0 = 0, time.perf_counter()
    total = len(loader) if max_batches is None else max_batches  # an iterator needs max_batches (<= its length)
    bar = tqdm(itertools.islice(loader, max_batches), total=total, desc=f"epoch {epoch + 1} train",
               disable=not progress, leave=False, mininterval=1.0)
    for b, batch in enumerate(bar):
        images, masks, labels, _ = _to_device(batch, device, normalize, channels_last=True)
        with autocast(device, amp_dtype):
            mask_logits, class_logits = model(images)
        parts = loss_fn(mask_logits, class_logits, masks, labels)
        loss = parts["loss"]
        first_bad.masked_fill_((first_bad < 0) & ~torch.isfinite(loss), b)  # a Python number: no copy to the device
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if ema is not None:
            ema.update_parameters(unwrap_model(model))
        if scheduler is not None:
            scheduler.step()
        n_images += len(images)
        sums += torch.stack([loss.detach(), parts["seg_loss"], parts["cls_loss"]]).double() * len(images)
        if (b + 1) % refresh_every == 0 or b + 1 == total:
            if together:  # every process stops at the same refresh, or none does
                earliest = torch.where(first_bad < 0, total, first_bad)
                dist.all_reduce(earliest, op=dist.ReduceOp.MIN)
                first_bad = torch.where(earliest < total, earliest, -1)
            bad = int(first_bad)  # the only synchronisation: once per refresh
            if bad >= 0:
                raise NonFiniteLossError(
                    f"Non-finite training loss at epoch {epoch + 1}, batch {bad + 1} of {total}. "
                    "The last good checkpoint is kept. Lower lr, check the data (a blank or corrupt "
                    "image?), or try amp='off'.")
            left = {} if deadline is None else {"left": format_seconds(deadline - time.perf_counter())}
            bar.set_postfix(loss=f"{sums[0].item() / n_images:.4f}", **left, refresh=False)
    seconds = time.perf_counter() - t0
    if together:  # losses and images of all processes
        totals = torch.cat([sums, sums.new_tensor([n_images])])
        dist.all_reduce(totals)
        sums, n_images = totals[:3], int(totals[3])
    means = (sums / max(n_images, 1)).tolist()
    return {"loss": means[0], "seg_loss": means[1], "cls_loss": means[2],
            "images": n_images, "seconds": seconds, "images_per_s": n_images / max(seconds, 1e-9)}


def tta_views(square: bool):
    """(transform, inverse) pairs, the identity first: a square's 8 flips and quarter turns, a rectangle's 4 flips."""
    views = []
    for dims in [(), (-1,), (-2,), (-2, -1)]:
        for k in ((0, 1) if square else (0,)):
            def fwd(t, dims=dims, k=k):
                t = t.flip(dims) if dims else t
                return torch.rot90(t, k, (-2, -1)) if k else t

            def inv(t, dims=dims, k=k):
                t = torch.rot90(t, -k, (-2, -1)) if k else t
                return t.flip(dims) if dims else t
            views.append((fwd, inv))
    return views


def forward_probs(model, images, tta: bool = False, return_views: bool = False):
    """Mask (N, H, W) and class (N, K) probabilities, float32, with ``tta`` averaged over `tta_views` (masks
    turned back first); ``return_views`` adds each view's: (S, N, H, W) and (S, N, K), S = 1 without ``tta``."""
    masks, probs = [], []
    for fwd, inv in tta_views(images.shape[-1] == images.shape[-2]) if tta else [(None, None)]:
        mask_logits, class_logits = model(fwd(images) if fwd else images)
        masks.append((inv(mask_logits.float().sigmoid()) if inv else mask_logits.float().sigmoid())[:, 0])
        probs.append(class_logits.float().softmax(1))
    mean = (sum(masks) / len(masks), sum(probs) / len(probs))
    return (*mean, torch.stack(masks), torch.stack(probs)) if return_views else mean


def grad_cam(model, images, target=None, *, layer=None) -> tuple[np.ndarray, np.ndarray]:
    """Class activation maps float32 (N, H, W) in [0, 1] of a normalised batch, and the class each explains
    (``target``: None for the predicted class, one index, or one per image): Grad-CAM computed element-wise
    (HiResCAM, Draelos & Carin 2020), the class logit's gradient times ``layer``'s activations (default
    ``model.encoder.layer4``, which the head pools), summed over channels. MultiTaskNet's head is linear in them
    (lesion pooling's weights are detached), so each location gets its exact share of the logit. Under frame
    pooling this is Grad-CAM (Selvaraju et al. 2017) itself; with lesion pooling Grad-CAM's spatially averaged
    gradient would drop the lesion weights. Works on inference tensors; modes, hooks and parameter gradients are
    left as they were."""
    layer = getattr(getattr(model, "encoder", None), "layer4", None) if layer is None else layer
    if layer is None:
        raise ValueError(f"{type(model).__name__} has no encoder.layer4; pass layer= (the module whose output "
                         "feeds the classification head).")
    store, modes = {}, [(m, m.training) for m in model.modules()]
    handle = layer.register_forward_hook(lambda module, inputs, output: store.__setitem__("a", output))
    try:
        with torch.inference_mode(False), torch.enable_grad():
            model.eval()
            x = images.detach().clone().requires_grad_(True)  # a grad path even when the weights are frozen
            output = model(x)  # MultiTaskNet's (mask_logits, class_logits), or class logits alone
            logits = (output[1] if isinstance(output, (tuple, list)) else output).float()
            n, k = logits.shape
            classes = logits.argmax(1) if target is None else \
                torch.as_tensor(target, dtype=torch.long, device=logits.device).reshape(-1)
            classes = classes.expand(n) if classes.numel() == 1 else classes
            if classes.numel() != n or classes.min() < 0 or classes.max() >= k:
                raise ValueError(f"target must be one class index or {n} of them, each in [0, {k}); got {target!r}.")
            if "a" not in store:
                raise ValueError("the target layer was not run by model(images); pass another layer=.")
            (g,) = torch.autograd.grad(logits.gather(1, classes[:, None]).sum(), store["a"])
        cam = (g.detach().float() * store["a"].detach().float()).sum(dim=1, keepdim=True).clamp_min(0)
        cam = F.interpolate(cam, size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]
        cam = cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(cam.dtype).tiny)  # all 0 stays 0
    finally:
        handle.remove()
        for m, was_training in modes:
            m.training = was_training
    return cam.clamp(0, 1).cpu().numpy().astype(np.float32), classes.cpu().numpy().astype(np.int64)


def upsample_mask(mask_probs: torch.Tensor, size_hw, threshold: float = 0.5) -> np.ndarray:
    """A (h, w) probability map -> boolean mask at ``size_hw`` (bilinear, then threshold)."""
    up = F.interpolate(mask_probs.float()[None, None], size=tuple(size_hw), mode="bilinear", align_corners=False)
    return (up[0, 0] >= threshold).numpy()


def image_batch(images) -> tuple:
    """`predict`'s batch from images alone (uint8 (N, 3, H, W)): no masks, labels -1, rows 0..N-1."""
    n = len(images)
    return images, torch.zeros(n, 1, 0, 0, dtype=torch.uint8), torch.full((n,), -1, dtype=torch.long), torch.arange(n)


@torch.inference_mode()
def predict(model, loader, device, *, amp_dtype=None, channels_last: bool = True, normalize=None,
            loss_fn=None, progress: bool = True, desc: str = "predict", tta: bool = False,
            with_masks: bool = False, return_views: bool = False, cam=False, features: bool = False) -> dict:
    """THE prediction loop. Returns ``probs`` (N, K), ``mask_probs`` (N, H, W) float16 at the model's resolution,
    ``labels``, ``rows``; ``with_masks`` adds the true ``masks`` bool, ``loss_fn`` the mean losses (plain pass).
    ``tta`` averages over `tta_views`; ``return_views`` adds ``view_probs`` (S, N, K) and, with ``tta``,
    ``mask_var`` float16 (per-pixel variance across views). ``cam``: True for the predicted class, or a class
    per image in loader order; adds `grad_cam`'s ``cams`` (N, H, W) float32 and ``cam_classes``. ``features``
    adds ``features`` (N, 512) float32: the encoder's last map, average-pooled (what the classifier reads)."""
    device = torch.device(device)
    model.eval()
    normalize = (normalize or Normalize()).to(device)
    given = None if cam is None or isinstance(cam, bool) else np.array(cam, dtype=np.int64).reshape(-1)
    keep = defaultdict(list)
    sums = torch.zeros(3, device=device, dtype=torch.float64)
    n_images, pooled = 0, []  # pooled: what the classification head read in this batch, its plain view first
    hook = unwrap_model(model).classification_head.register_forward_pre_hook(
        lambda _, args: pooled.append(args[0].float().mean((2, 3)))) if features else None
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, mininterval=1.0):
            pooled.clear()
            images, masks, y, r = _to_device(batch, device, normalize, channels_last)
            with autocast(device, amp_dtype):
                if loss_fn is not None:
                    mask_logits, class_logits = model(images)
                    parts = loss_fn(mask_logits, class_logits, masks, y)
                    sums += torch.stack([parts["loss"], parts["seg_loss"], parts["cls_loss"]]).double() * len(y)
                if loss_fn is not None and not (tta or return_views):
                    m, p = mask_logits.float().sigmoid()[:, 0], class_logits.float().softmax(1)
                else:
                    m, p, vm, vp = forward_probs(model, images, tta, return_views=True)
                if return_views:
                    keep["view_probs"].append(vp.float().cpu())
                    if tta:
                        keep["mask_var"].append(vm.float().var(dim=0, unbiased=False).to(torch.float16).cpu())
                if features:
                    keep["features"].append(pooled[0].cpu())
            if cam is not None and cam is not False:  # outside autocast, as a backward pass wants
                target = p.argmax(1).cpu().numpy() if given is None else given[n_images:n_images + len(y)]
                cams, classes = grad_cam(model, images, target)
                keep["cams"].append(torch.from_numpy(cams))
                keep["cam_classes"].append(torch.from_numpy(classes))
            n_images += len(y)
            if with_masks:
                keep["masks"].append(batch[1][:, 0] != 0)
            keep["probs"].append(p.cpu())
            keep["mask_probs"].append(m.to(torch.float16).cpu())
            keep["labels"].append(y.cpu())
            keep["rows"].append(torch.as_tensor(r))
    finally:  # a model that raised mid-loop keeps no hook
        if hook is not None:
            hook.remove()
    out = {k: torch.cat(v, dim=1 if k == "view_probs" else 0) for k, v in keep.items() if v}
    out = {k: v if k in ("mask_probs", "masks", "mask_var") else v.numpy() for k, v in out.items()}
    if loss_fn is not None:
        out.update(zip(("loss", "seg_loss", "cls_loss"), (sums / max(n_images, 1)).tolist()))
    return out


def evaluate(model, loader, device, class_names, *, loss_fn=None, amp_dtype=None, channels_last: bool = True,
             progress: bool = True, normalization: dict | None = None) -> dict:
    """Validation metrics at the model's resolution, masks cut at 0.5, for model selection (the final evaluation at
    each image's size is `skin_utils.evaluate.score_split`); with ``loss_fn`` also the losses. ``normalization`` None:
    ImageNet's."""
    pred = predict(model, loader, device, amp_dtype=amp_dtype, channels_last=channels_last,
                   loss_fn=loss_fn, progress=progress, desc="validate", with_masks=True,
                   normalize=Normalize.from_config(normalization))
    s = segmentation_scores(pred["mask_probs"].numpy() >= 0.5, pred["masks"].numpy())
    known = pred["labels"] >= 0  # label -1: no diagnosis (a masks-only folder), left out of the diagnosis metrics
    c = (classification_report(pred["probs"][known], pred["labels"][known], class_names) if known.any()
         else dict.fromkeys(("accuracy", "balanced_accuracy", "macro_auc"), math.nan))
    return {**{k: float(np.mean(s[k])) for k in ("dice", "jaccard", "thresholded_jaccard")},
            **{k: c[k] for k in ("accuracy", "balanced_accuracy", "macro_auc")},
            **{k: pred[k] for k in ("loss", "seg_loss", "cls_loss") if k in pred}}


#: The validation metrics of each head (what fit leaves out, as NaN, for a head the run does not train).
HEAD_METRICS = {"segmentation": ("dice", "jaccard", "thresholded_jaccard", "seg_loss"),
                "classification": ("accuracy", "balanced_accuracy", "macro_auc", "cls_loss")}


def selection_metrics(criterion: str, tasks=("segmentation", "classification")) -> tuple[str, ...]:
    """The validation metrics whose sum picks ``best.pt`` (for "loss", ``fit`` minimises it): those of ``criterion`` of a head
    the run trains, so an untrained head's noise never picks the epoch (``balanced_accuracy+dice`` is ``dice`` for a
    segmentation-only run)."""
    if criterion not in SELECTION_CRITERIA:
        raise ValueError(f"selection={criterion!r}: choose one of {SELECTION_CRITERIA}.")
    if criterion == "loss":
        return ("loss",)
    used = tuple(m for m in criterion.split("+") if any(m in HEAD_METRICS[t] for t in tasks))
    if not used:
        raise ValueError(f"selection={criterion!r} scores a head this run does not train (it trains: "
                         f"{', '.join(tasks)}); choose selection='loss' or one of {SELECTION_CRITERIA} that scores "
                         "a trained head.")
    return used


def measure_batch_seconds(model, train_loader, val_loader, loss_fn, device, *, amp_dtype=None, batch_transform=None,
                          normalization: dict | None = None, compile: bool = False, train_batches: int = 20,
                          val_batches: int = 6, clock=time.perf_counter,
                          ema_decay: float | None = None) -> tuple[float, float]:
    """(seconds per training batch, per validation batch) on this machine, for a time budget: timed on a copy of
    ``model`` (its BatchNorm statistics untouched) with a throw-away optimiser, compiled and averaging weights as
    `fit` would. Twenty training batches: with six, a 96 px epoch on a 2-core CPU was misjudged by up to 14%."""
    probe = copy.deepcopy(unwrap_model(model)).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=0.0)
    runner = torch.compile(probe) if compile else probe
    ema = weight_average(probe, ema_decay)
    loss_fn = copy.deepcopy(loss_fn).to(device)

    # the warm-up and the timed batches from one pass (each pass starts the training loader's workers anew)
    batches = (batch for _ in itertools.count() for batch in train_loader)

    def train(k):
        train_one_epoch(runner, batches, loss_fn, optimizer, device, amp_dtype=amp_dtype,
                        batch_transform=batch_transform, normalization=normalization, progress=False,
                        max_batches=k, ema=ema)

    def validate(k):
        predict(runner, itertools.islice(val_loader, k), device, amp_dtype=amp_dtype, loss_fn=loss_fn,
                progress=False, with_masks=True, normalize=Normalize.from_config(normalization))

    return (seconds_per_batch(train, max(1, min(train_batches, len(train_loader) - 1)), clock),
            seconds_per_batch(validate, max(1, min(val_batches, len(val_loader) - 1)), clock))


# ----------------------------------------------------------------------------- the whole run
def build_optimizer_and_schedule(model, lr: float, weight_decay: float, epochs: int, steps_per_epoch: int,
                                 schedule: str = "onecycle"):
    """AdamW and a per-batch schedule: ``onecycle`` (20% warm-up, then cosine; the default for short runs),
    ``cosine`` or ``constant``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    total = max(1, epochs * steps_per_epoch)
    # a onecycle of under 3 steps is too short for a warm-up and a decay: constant
    if schedule == "constant" or (schedule == "onecycle" and total < 3):
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    elif schedule == "onecycle":
        # 20% warm-up, but at least two steps: OneCycleLR divides by zero with fewer (e.g. 5 steps in all)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=total,
                                                        pct_start=min(max(0.2, 2.0 / total), 0.5),
                                                        div_factor=20, final_div_factor=200)
    elif schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=lr / 100)
    else:
        raise ValueError(f"lr_schedule={schedule!r}: choose one of {LR_SCHEDULES}.")
    return optimizer, scheduler


def _resume(path: Path, model, optimizer, scheduler, scaler, device, run: Checkpoint, ema=None) -> Checkpoint:
    """Restore weights, optimiser, scheduler, scaler and weight average from `fit`'s ``last.pt`` of ``run``
    (the random generators need no restoring: each epoch seeds them from ``(seed, epoch)``)."""
    ckpt = Checkpoint.load(path, map_location=device)
    if ckpt.training is None:
        raise CheckpointError(
            f"{path} holds no training state (optimizer, scheduler), so the run "
            "cannot continue exactly from it. Resume from the last.pt that fit wrote, or set resume=False.")
    ema_decay = None if ema is None else ema.decay
    if ckpt.training.ema_decay != ema_decay:
        raise CheckpointError(
            f"Cannot resume from {path}: it was trained with ema_decay={ckpt.training.ema_decay}, this run has "
            f"ema_decay={ema_decay}. Resume with the same ema_decay, or set resume=False to start afresh.")
    for what, theirs, ours in (("classes", ckpt.class_names, run.class_names),
                               ("image size (H, W)", ckpt.image_size, run.image_size),
                               ("input normalization", resolve_normalization(ckpt.normalization),
                                resolve_normalization(run.normalization))):
        if theirs != ours:
            raise CheckpointError(
                f"Cannot resume from {path}: it was trained with the {what} {theirs}, this run has {ours}. "
                "Use another checkpoint_dir, or set resume=False to start afresh.")
    _check_same_settings(path, ckpt, run)
    load_weights(model, ckpt.training.weights if ema is not None else ckpt.model, source=f"checkpoint {path}")
    if ema is not None:
        load_weights(ema.module, ckpt.model, source=f"checkpoint {path} (the weight average)")
        ema.n_averaged.fill_(ckpt.training.ema_updates)
    optimizer.load_state_dict(ckpt.training.optimizer)
    scheduler.load_state_dict(ckpt.training.scheduler)
    if ckpt.training.scaler:
        scaler.load_state_dict(ckpt.training.scaler)
    return ckpt


def _check_same_settings(path: Path, ckpt: Checkpoint, run: Checkpoint) -> None:
    """Refuse to continue ``ckpt`` with other parameters (but `RESUMABLE_CHANGES`) or other data: the optimiser
    and schedule in it are the old run's, so the run would be neither the old one nor the new one."""
    missing = "(not recorded)"
    old, new = dict(ckpt.params or {}), dict(run.params or {})
    old["data fingerprint"], new["data fingerprint"] = ckpt.data.get("fingerprint"), run.data.get("fingerprint")
    changed = [k for k in sorted((set(old) | set(new)) - RESUMABLE_CHANGES)
               if old.get(k, missing) != new.get(k, missing)]
    if not changed:
        return
    listed = "; ".join(f"{k}: {old.get(k, missing)!r} in last.pt, {new.get(k, missing)!r} now" for k in changed)
    longer = (" The learning-rate schedule was laid out over the planned epochs, so a resumed run cannot be "
              "lengthened (or shortened): train a new run for more epochs." if "epochs" in changed else "")
    raise CheckpointError(f"Cannot resume from {path}: this run's settings differ from the ones it was trained with "
                          f"({listed}).{longer} Resume with the run's own settings, or start a new run (another "
                          "run_name or checkpoint_dir, or resume=False / overwrite=True to replace this one).")


def _seed_epoch(train_loader, seed: int, epoch: int, rank: int, world: int) -> None:
    """Seed all an epoch draws from with (seed, epoch, rank), so that resume repeats it exactly."""
    epoch_seed = (seed * 1000 + epoch) * world + rank
    seed_everything(epoch_seed)
    sampler = getattr(train_loader, "sampler", None)
    for generator in (getattr(train_loader, "generator", None), getattr(sampler, "generator", None)):
        if generator is not None:
            generator.manual_seed(epoch_seed)
    if hasattr(sampler, "set_epoch"):  # the distributed samplers: seeded with their seed + epoch
        sampler.set_epoch(epoch)


def _out_of_time(deadline: float | None, epoch_seconds: list[float], epoch: int, epochs: int, say: bool) -> bool:
    """Whether the next epoch, as long as the longest so far, would end past ``deadline`` (rank 0 decides)."""
    if deadline is None or not epoch_seconds:
        return False
    end = time.perf_counter() + max(epoch_seconds)
    late = distributed.broadcast_object(end > deadline)
    if late and say:
        print(f"Time budget: stopping after {epoch} of {epochs} planned epochs: the next would end "
              f"{format_seconds(end - deadline)} past the deadline "
              "(the machine ran slower than measured at the start; the learning rate did not finish its schedule).")
    return late


def fit(model, train_loader, val_loader, *, loss_fn, optimizer, scheduler, epochs: int, device, checkpoint_dir,
        class_names, image_size, batch_transform=None, normalization: dict | None = None, params: dict | None = None,
        data: dict | None = None, split_path=None, selection: str = "balanced_accuracy+dice",
        patience: int | None = None, amp: str = "auto", resume: bool = False, seed: int = 0, progress: bool = True,
        compile: bool = False, sync_bn: bool = False, deadline: float | None = None,
        ema_decay: float | None = None) -> list[dict]:
    """Train for ``epochs`` (channels_last): ``last.pt`` after every epoch, ``best.pt`` whenever the validation
    ``selection`` score of the trained heads improves, stop after ``patience`` epochs without improvement (None:
    never); ``resume=True`` continues exactly from ``last.pt``: refused for other classes, size, normalization,
    ``ema_decay``, data fingerprint or ``params`` (bar `RESUMABLE_CHANGES`), so pass in ``params`` the ``epochs``
    and all that sets the optimiser, schedule and data. Returns the history, one dict per epoch (on resume
    including the earlier ones).
    ``normalization`` (None: ImageNet's) follows ``batch_transform``; it and the run's description go into every
    checkpoint, which holds plain weights (``compile`` and DDP unwrapped). Under torchrun: DDP, rank 0 alone
    validates, prints and writes. ``deadline`` (a ``time.perf_counter()`` reading for the whole run): stop when
    the next epoch would end past it. ``ema_decay``: validate and keep a `weight_average` (``last.pt`` also holds
    the optimiser's weights, which ``model`` ends with)."""
    device = torch.device(device)
    tasks = trained_tasks(loss_fn.seg_weight, loss_fn.cls_weight)
    selected = selection_metrics(selection, tasks)
    untrained = {m for t, names in HEAD_METRICS.items() if t not in tasks for m in names}  # noise: set to NaN
    amp_dtype = amp_dtype_for(device, amp)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16 and device.type == "cuda")
    model = unwrap_model(model).to(device, memory_format=torch.channels_last)
    loss_fn.to(device)
    rank, world, is_main = distributed.rank(), distributed.world_size(), distributed.is_main_process()
    progress = progress and is_main
    # What every checkpoint of this run says about it; each epoch adds weights and progress.
    run = Checkpoint(model_config=dict(model.config), model={}, class_names=list(class_names),
                     image_size=image_size, params=dict(params or {}), data=dict(data or {}),
                     split_path=None if split_path is None else str(split_path), selection="+".join(selected),
                     encoder_weights_used=model.encoder_weights_used,
                     normalization=resolve_normalization(normalization))
    ema = weight_average(model, ema_decay)  # a copy of the model as it is now: channels_last, on the device
    history, start_epoch, best_score, since_best = [], 0, -math.inf, 0
    last_path, best_path = Path(checkpoint_dir) / "last.pt", Path(checkpoint_dir) / "best.pt"
    if resume and last_path.is_file():
        ckpt = _resume(last_path, model, optimizer, scheduler, scaler, device, run, ema)
        history, start_epoch = list(ckpt.history), ckpt.epoch + 1
        best_score, since_best = ckpt.best_score, ckpt.epochs_since_best
        if progress:
            print(f"Resumed from {last_path}: {start_epoch} epoch(s) done, continuing to {epochs}.")
    epoch_seconds = [row["epoch_seconds"] for row in history]  # the epochs so far judge whether the next fits
    if deadline is not None:
        deadline -= sum(epoch_seconds)  # the budget is the whole run's: resumed epochs already spent part of it
    # What trains (DDP in a process group, compiled on request), what is validated (by rank 0 alone) and kept.
    train_model = distributed.wrap_model(model, device, sync_bn=sync_bn)
    if compile:
        train_model = torch.compile(train_model)
    kept_model = model if ema is None else ema.module
    if ema is None and world == 1:
        eval_model = train_model
    else:
        eval_model = torch.compile(kept_model) if compile else kept_model
    for epoch in range(start_epoch, epochs):
        if ((patience is not None and since_best >= patience)
                or _out_of_time(deadline, epoch_seconds, epoch, epochs, progress)):
            break
        t_epoch = time.perf_counter()
        _seed_epoch(train_loader, seed, epoch, rank, world)
        train = train_one_epoch(train_model, train_loader, loss_fn, optimizer, device, epoch=epoch, scheduler=scheduler,
                                scaler=scaler, amp_dtype=amp_dtype, batch_transform=batch_transform, progress=progress,
                                deadline=deadline, normalization=run.normalization, ema=ema)
        val = (evaluate(eval_model, val_loader, device, class_names, loss_fn=loss_fn, amp_dtype=amp_dtype,
                        progress=progress, normalization=run.normalization) if is_main else None)
        val = {k: math.nan if k in untrained else v for k, v in distributed.broadcast_object(val).items()}
        score = -val["loss"] if selection == "loss" else float(sum(val[m] for m in selected))
        improved = score > best_score
        best_score, since_best = (score, 0) if improved else (best_score, since_best + 1)
        history.append({"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                        **{f"train_{k}": v for k, v in train.items() if k != "images"},
                        **{f"val_{k}": v for k, v in val.items()}, "score": score, "best": improved,
                        "epoch_seconds": time.perf_counter() - t_epoch})  # training and validation
        if progress:
            shown = "  ".join(f"{name} {val[k]:.3f}" for name, k in (("Dice", "dice"), ("bal.acc", "balanced_accuracy"),
                                                                       ("acc", "accuracy"), ("AUC", "macro_auc"))
                              if math.isfinite(val[k]))
            print(f"epoch {epoch + 1}/{epochs}  train loss {train['loss']:.4f}  val loss {val['loss']:.4f}  "
                  f"{shown}  {train['images_per_s']:.1f} img/s" + ("  *best*" if improved else "")
                  + ("" if deadline is None else f"  time left {format_seconds(deadline - time.perf_counter())}"))
        if is_main:
            ckpt = replace(run, model=kept_model.state_dict(), epoch=epoch, metrics=dict(val),
                           history=list(history), best_score=best_score, epochs_since_best=since_best)
            if improved:
                ckpt.save(best_path)
            averaged = {} if ema is None else dict(weights=model.state_dict(), ema_decay=ema.decay,
                                                   ema_updates=int(ema.n_averaged))
            ckpt.training = TrainingState(optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                                          scaler=scaler.state_dict(), **averaged)
            ckpt.save(last_path)
        epoch_seconds.append(time.perf_counter() - t_epoch)
    distributed.barrier()  # every process returns once rank 0 has written the last checkpoint
    return history
