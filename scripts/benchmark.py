"""Benchmark: our pipeline against a naive one, side by side, on the same data and machine.

    python scripts/benchmark.py [--data-dir DIR] [--image-size 128] [--batch-size 32]
                                [--max-samples 512] [--device auto|cpu|cuda] [--compile]
                                [--out reports/metrics/bench.json]

*naive*: what a straightforward re-implementation does — every epoch decodes and resizes each
JPEG with PIL, converts it to a float32 tensor in the Dataset, runs the model in the default
memory format in float32, evaluates under ``no_grad`` one image's preprocessing at a time.
*ours*: the uint8 array cache (decode and resize once), augmentation on small uint8 tensors,
normalisation inside the step, channels_last, mixed precision where the hardware has it (bf16
on CPUs with AMX/AVX512-BF16 and on recent GPUs), ``inference_mode``.

Both train the same `MultiTaskNet` on the same images. Stages timed (images per second):
``loader`` (the data pipeline alone), ``train_step`` (a fixed batch, the model alone),
``train_epoch`` (loader + model, end to end), ``inference`` (a folder of JPEGs, batched, masks
back at original size) and ``latency`` (one image, preprocessing included). Results are
ratios measured in one run, because absolute seconds on shared machines mean little. With
``--quality-epochs N`` both pipelines also train N epochs on the same split and report the
validation Dice and balanced accuracy, to show that the speed costs no quality.

Both pipelines run on ``--device`` (default: the GPU when there is one). On CUDA every row of
the table also records ``peak_gpu_mb``, the most GPU memory held by tensors during that stage
(``torch.cuda.max_memory_allocated``), and ``peak_gpu_memory_mb`` their maximum (None on the
CPU). ``--compile`` also times the model-alone step of *ours* through ``torch.compile``
(result ``compile``: images/s, speed-up over the eager step, seconds spent compiling).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from skin_utils.checkpoint import Checkpoint
from skin_utils.config import resolve
from skin_utils.data import CachedLesionDataset, build_cache, make_loader, make_split, resolve_data_dir, subsample_by_lesion
from skin_utils.export import export_onnx, onnx_input
from skin_utils.inference import Predictor, time_single_image
from skin_utils.layout import as_hw, load_index
from skin_utils.metrics import to_jsonable
from skin_utils.transforms import IMAGENET_MEAN, IMAGENET_STD, build_augmentation
from skin_utils.engine import (amp_dtype_for, autocast, build_optimizer_and_schedule, evaluate,
                               resolve_device, train_one_epoch, upsample_mask)
from skin_utils.labels import CLASS_NAMES
from skin_utils.plots import plot_benchmark, save_figure
from skin_utils.losses import MultiTaskLoss
from skin_utils.model import MultiTaskNet

# ----------------------------------------------------------------------------- the naive side
class NaiveDataset(Dataset):
    """Decode + resize with PIL on every access, random flips, float32 tensors out."""

    def __init__(self, index: pd.DataFrame, hw, augment: bool = True):
        self.paths = list(zip(index["image_path"], index["mask_path"]))
        self.labels = index["label"].to_numpy()
        self.hw, self.augment = hw, augment
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        h, w = self.hw
        image = Image.open(self.paths[i][0]).convert("RGB").resize((w, h), Image.BILINEAR)
        mask = Image.open(self.paths[i][1]).convert("L").resize((w, h), Image.NEAREST)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        m = torch.from_numpy((np.asarray(mask) > 127).astype(np.float32))[None]
        if self.augment:
            if torch.rand(()) < 0.5:
                x, m = x.flip(-1), m.flip(-1)
            if torch.rand(()) < 0.5:
                x, m = x.flip(-2), m.flip(-2)
        return (x - self.mean) / self.std, m, int(self.labels[i]), i


def naive_train_epoch(model, loader, loss_fn, optimizer, device, scheduler=None) -> dict:
    """The textbook loop: float32 batches moved as they come, ``loss.item()`` every step."""
    model.train()
    n, t0 = 0, time.perf_counter()
    for x, m, y, _ in loader:
        mask_logits, class_logits = model(x.to(device))
        loss = loss_fn(mask_logits, class_logits, m.to(device), y.to(device))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        loss.item()  # the per-step sync a typical loop has for its progress print
        n += len(y)
    return {"images": n, "seconds": time.perf_counter() - t0}


def naive_predict_files(model, paths, hw, batch_size):
    """One PIL decode + resize per image, float32 model under no_grad (on the model's device),
    masks upsampled back; returns (bool mask, class probabilities) pairs on the CPU."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(paths), batch_size):
            batch, sizes = [], []
            for p in paths[s:s + batch_size]:
                image = Image.open(p).convert("RGB")
                sizes.append(image.size[::-1])
                small = image.resize((hw[1], hw[0]), Image.BILINEAR)
                batch.append((torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1) - mean) / std)
            mask_logits, class_logits = model(torch.stack(batch).to(device))
            probs = class_logits.softmax(1)
            for k, size in enumerate(sizes):
                mask = F.interpolate(mask_logits[k:k + 1].sigmoid(), size=size, mode="bilinear")[0, 0] > 0.5
                out.append((mask.cpu(), probs[k].cpu()))
    return out


# ----------------------------------------------------------------------------- timing helpers
def time_loader(loader, max_batches) -> float:
    n, t0 = 0, time.perf_counter()
    for b, batch in enumerate(loader):
        if b >= max_batches:
            break
        n += len(batch[2])
    return n / (time.perf_counter() - t0)


def time_train_step(model, batch_size, hw, channels_last, amp_dtype, device, repeats=5, warmup=1) -> float:
    """Model alone: forward + backward + AdamW step on one fixed batch; median images/s over
    ``repeats`` steps after ``warmup`` steps (kernels, allocator; compilation for a compiled
    model). ``model`` may be a ``torch.compile`` wrapper; the optimiser steps its parameters."""
    loss_fn = MultiTaskLoss().to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch_size, 3, *hw, device=device)
    m = (torch.rand(batch_size, 1, *hw, device=device) > 0.5).float()
    y = torch.randint(0, len(CLASS_NAMES), (batch_size,), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    times = []
    for i in range(warmup + repeats):
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device, amp_dtype):
            a, b = model(x)
        loss = loss_fn(a, b, m, y)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch_size / float(np.median(times))


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak_gpu_memory(device) -> None:
    """Start a new peak-memory measurement on a CUDA ``device`` (nothing elsewhere)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_gpu_memory_mb(device) -> float | None:
    """Most GPU memory held by tensors since the last `reset_peak_gpu_memory`
    (``torch.cuda.max_memory_allocated``), in MiB; None on a device that is not CUDA."""
    if torch.device(device).type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- the run
def run(data_dir="data", image_size=128, batch_size=32, max_samples=512, device="auto", amp="auto",
        num_workers=None, quality_epochs=0, seed=0, progress=True, compile=False) -> dict:

    device = resolve_device(device)
    hw = as_hw(image_size)
    folder = resolve_data_dir(data_dir)
    index = subsample_by_lesion(load_index(folder, decode=False), max_samples, seed)
    amp_dtype = amp_dtype_for(device, amp)
    n = len(index)
    batches = max(1, n // batch_size)
    say = print if progress else (lambda *a, **k: None)
    say(f"bench: {n} images from {folder} at {hw[0]}x{hw[1]}, batch {batch_size}, {device}, "
        f"amp {amp_dtype}, {torch.get_num_threads()} threads")
    rows = []

    def record(stage, pipeline, images_per_s, **extra):
        """One measurement, with the GPU memory peak since the previous one (None off CUDA)."""
        peak = peak_gpu_memory_mb(device)
        reset_peak_gpu_memory(device)
        rows.append({"stage": stage, "pipeline": pipeline, "images_per_s": float(images_per_s),
                     "peak_gpu_mb": peak, **extra})
        say(f"  {stage:<12} {pipeline:<6} {images_per_s:8.1f} images/s"
            + (f"  peak GPU memory {peak:,.0f} MiB" if peak is not None else ""))

    # cache: built once (timed; later runs and notebooks reuse it)
    t0 = time.perf_counter()
    cache = build_cache(index, hw, progress=False)
    cache_seconds = time.perf_counter() - t0

    torch.manual_seed(seed)
    naive_ds = NaiveDataset(index, hw)
    naive_loader = DataLoader(naive_ds, batch_size=batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
    ours_ds = CachedLesionDataset(cache, index["label"], augment="standard")
    ours_loader = make_loader(ours_ds, batch_size, device, shuffle=True, num_workers=num_workers, seed=seed)

    # 1. data loading alone
    reset_peak_gpu_memory(device)
    record("loader", "naive", time_loader(naive_loader, batches))
    record("loader", "ours", time_loader(ours_loader, batches))

    # 2. the model step alone
    torch.manual_seed(seed)
    naive_model = MultiTaskNet().to(device)
    ours_model = MultiTaskNet().to(device).to(memory_format=torch.channels_last)
    record("train_step", "naive", time_train_step(naive_model, batch_size, hw, False, None, device))
    record("train_step", "ours", time_train_step(ours_model, batch_size, hw, True, amp_dtype, device))
    del naive_model, ours_model
    compiled = None
    if compile:  # the same step through torch.compile (first steps compile; timed after them)
        torch.manual_seed(seed)
        compiled_model = torch.compile(MultiTaskNet().to(device).to(memory_format=torch.channels_last))
        t0 = time.perf_counter()
        time_train_step(compiled_model, batch_size, hw, True, amp_dtype, device, repeats=0, warmup=2)
        compile_seconds = time.perf_counter() - t0
        rate = time_train_step(compiled_model, batch_size, hw, True, amp_dtype, device, repeats=10, warmup=1)
        compiled = {"train_step_images_per_s": rate, "eager_train_step_images_per_s": rows[-1]["images_per_s"],
                    "speedup": rate / rows[-1]["images_per_s"], "compile_seconds": compile_seconds,
                    "peak_gpu_mb": peak_gpu_memory_mb(device)}
        reset_peak_gpu_memory(device)
        say(f"  train_step   compiled {rate:8.1f} images/s (compiling took {compile_seconds:.0f} s)")

    # 3. a training epoch end to end, same model, same images
    loss_fn = MultiTaskLoss().to(device)
    torch.manual_seed(seed)
    model = MultiTaskNet().to(device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    naive = naive_train_epoch(model, naive_loader, loss_fn, opt, device)
    record("train_epoch", "naive", naive["images"] / naive["seconds"])
    torch.manual_seed(seed)
    model = MultiTaskNet().to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    ours = train_one_epoch(model, ours_loader, loss_fn, opt, device, amp_dtype=amp_dtype,
                           batch_transform=build_augmentation("standard")[1], progress=False)
    record("train_epoch", "ours", ours["images_per_s"])
    rss_after_training = peak_rss_mb()

    # 4. inference on a folder of JPEGs, and 5. single-image latency
    tmp = Path(cache.path) / "bench_model.pt"
    Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES),
               image_size=hw).save(tmp)
    paths = index["image_path"].tolist()
    fp32 = MultiTaskNet().eval()
    fp32.load_state_dict(model.state_dict())
    fp32.to(device)
    t0 = time.perf_counter()
    naive_predict_files(fp32, paths, hw, batch_size)
    record("inference", "naive", len(paths) / (time.perf_counter() - t0))
    predictor = Predictor(tmp, device=str(device), amp=amp)
    t0 = time.perf_counter()
    predictor.predict_paths(paths, batch_size, progress=False)
    record("inference", "ours", len(paths) / (time.perf_counter() - t0))
    image = np.asarray(Image.open(paths[0]).convert("RGB"))
    naive_latency = _naive_latency(fp32, paths[0], hw)
    ours_latency = time_single_image(predictor, image)
    record("latency", "naive", 1 / naive_latency, seconds=naive_latency)
    record("latency", "ours", 1 / ours_latency, seconds=ours_latency)
    onnx = time_onnx(Checkpoint.load(tmp), fp32.cpu(), paths, hw, batch_size, Path(cache.path)) \
        if device.type == "cpu" else None
    if onnx:
        onnx["over_pytorch"] = onnx["inference_images_per_s"] / rows[-3]["images_per_s"]
        say(f"  inference    onnx   {onnx['inference_images_per_s']:8.1f} images/s (onnxruntime "
            f"{onnx['onnxruntime']}, {onnx['over_pytorch']:.2f}x our PyTorch path)")
    tmp.unlink(missing_ok=True)

    table = pd.DataFrame(rows)
    wide = table.pivot_table(index="stage", columns="pipeline", values="images_per_s", sort=False)
    wide["ours/naive"] = wide["ours"] / wide["naive"]
    ours_rate = table.set_index(["stage", "pipeline"])["images_per_s"]
    result = {
        "train_speedup": float(wide.loc["train_epoch", "ours/naive"]),
        "inference_speedup": float(wide.loc["inference", "ours/naive"]),
        "train_step_speedup": float(wide.loc["train_step", "ours/naive"]),
        "loader_speedup": float(wide.loc["loader", "ours/naive"]),
        "loader_over_step": float(ours_rate["loader", "ours"] / ours_rate["train_step", "ours"]),
        "latency_ms": {"naive": naive_latency * 1000, "ours": ours_latency * 1000},
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_mb_after_training": rss_after_training,
        "peak_gpu_memory_mb": (None if device.type != "cuda"
                               else max(r["peak_gpu_mb"] for r in rows if r["peak_gpu_mb"] is not None)),
        "compile": compiled,
        "onnx": onnx,
        "cache_build_seconds": cache_seconds, "cache_mb": cache.nbytes / 2**20,
        "table": rows,
        "setup": {"data_dir": str(folder), "n_images": n, "image_size": list(hw), "batch_size": batch_size,
                  "device": str(device), "amp": str(amp_dtype), "threads": torch.get_num_threads(),
                  "num_workers": ours_loader.num_workers, "torch": torch.__version__,
                  "cpu_bf16": bool(amp_dtype == torch.bfloat16 and device.type == "cpu")},
    }
    if quality_epochs:
        result["quality"] = compare_quality(index, hw, batch_size, device, amp, quality_epochs, seed, say)
    say("\n" + wide.round(2).to_string())
    say(f"loader/step {result['loader_over_step']:.1f}x, peak RSS {result['peak_rss_mb']:.0f} MB")
    return result


def time_onnx(ckpt, model, paths, hw, batch_size, folder) -> dict | None:
    """The exported model (skin_utils.export) in onnxruntime on the same JPEGs, masks back at each image's
    size; None without onnxruntime (pip install -e ".[export]")."""
    try:
        import onnxruntime as ort  # optional: the export extra
    except ImportError:
        return None
    path = folder / "bench_model.onnx"
    export_onnx(ckpt, model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    t0 = time.perf_counter()
    for start in range(0, len(paths), batch_size):
        images = [np.asarray(Image.open(p).convert("RGB")) for p in paths[start:start + batch_size]]
        _, masks = session.run(None, {"image": np.concatenate([onnx_input(im, hw) for im in images])})
        for mask, image in zip(masks, images):  # back at each image's size, as Predictor does
            upsample_mask(torch.from_numpy(mask[0]), image.shape[:2], 0.5)
    rate = len(paths) / (time.perf_counter() - t0)
    path.unlink(missing_ok=True)
    return {"inference_images_per_s": rate, "onnxruntime": ort.__version__}


def _naive_latency(model, path, hw, repeats=10) -> float:
    naive_predict_files(model, [path], hw, 1)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        naive_predict_files(model, [path], hw, 1)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def compare_quality(index, hw, batch_size, device, amp, epochs, seed, say) -> dict:
    """Train both pipelines ``epochs`` epochs on one lesion-level split (same model, same
    optimiser and schedule) and score both on the same validation images, at the model's size."""

    split = make_split(index, seed=seed)
    train_idx = index[split["split"].to_numpy() == "train"]
    val_rows = np.flatnonzero(split["split"].to_numpy() == "val")
    cache = build_cache(index, hw, progress=False)
    val_loader = make_loader(CachedLesionDataset(cache, index["label"], val_rows), batch_size, device)
    out = {}
    for name in ("naive", "ours"):
        torch.manual_seed(seed)
        model = MultiTaskNet().to(device)
        loss_fn = MultiTaskLoss().to(device)
        if name == "naive":
            loader = DataLoader(NaiveDataset(train_idx, hw), batch_size=batch_size, shuffle=True, drop_last=True,
                                generator=torch.Generator().manual_seed(seed))
        else:
            model.to(memory_format=torch.channels_last)
            rows = np.flatnonzero(split["split"].to_numpy() == "train")
            loader = make_loader(CachedLesionDataset(cache, index["label"], rows, augment="flips"), batch_size,
                                 device, shuffle=True, seed=seed, drop_last=True)
        opt, sched = build_optimizer_and_schedule(model, 3e-3, 1e-4, epochs, len(loader))
        t0 = time.perf_counter()
        for epoch in range(epochs):
            if name == "naive":
                naive_train_epoch(model, loader, loss_fn, opt, device, sched)
            else:
                train_one_epoch(model, loader, loss_fn, opt, device, epoch=epoch, scheduler=sched,
                                amp_dtype=amp_dtype_for(device, amp), progress=False)
        seconds = time.perf_counter() - t0
        metrics = evaluate(model, val_loader, device, CLASS_NAMES, amp_dtype=amp_dtype_for(device, amp)
                           if name == "ours" else None, channels_last=name == "ours", progress=False)
        out[name] = {**{k: metrics[k] for k in ("dice", "balanced_accuracy", "accuracy", "macro_auc")},
                     "train_seconds": seconds}
        say(f"  quality {name:<6} Dice {metrics['dice']:.3f}  bal.acc {metrics['balanced_accuracy']:.3f}  "
            f"acc {metrics['accuracy']:.3f}  AUC {metrics['macro_auc']:.3f}  ({seconds:.0f} s)")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python scripts/benchmark.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data",
                        help="a data set in the layout; \"data\" falls back to the synthetic demo when empty")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-samples", type=int, default=512, help="images per epoch (whole lesions)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--compile", action="store_true",
                        help="also time the model-alone training step through torch.compile")
    parser.add_argument("--quality-epochs", type=int, default=0,
                        help="also train both pipelines this many epochs and compare validation quality")
    parser.add_argument("--out", default="reports/metrics/bench.json")
    parser.add_argument("--figure", default="reports/figures/bench.png")
    args = parser.parse_args(argv)

    result = run(args.data_dir, args.image_size, args.batch_size, args.max_samples, args.device, args.amp,
                 args.num_workers, args.quality_epochs, compile=args.compile)
    out = resolve(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(to_jsonable(result), indent=2))
    fig = plot_benchmark(pd.DataFrame(result["table"]),
                         title=f"ours vs naive · {result['setup']['n_images']} images at {args.image_size} px · "
                               f"{result['setup']['device']}")
    save_figure(fig, resolve(args.figure))
    print(f"\nwritten: {out}, {resolve(args.figure)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
