"""Train the multi-task model from the command line, on one process or on several.

One process (notebooks/02_train's steps, with its defaults: the same trained model)::

    python -m skin_utils.train --data-dir data --epochs 5 --image-size 128

Several GPUs of one machine, with DistributedDataParallel (one process per GPU)::

    torchrun --nproc_per_node 4 -m skin_utils.train --data-dir data --epochs 5 --batch-size 32

``--batch-size`` is per process: the global batch is batch_size x processes (128 above); the
learning rate is not scaled for you. Several machines, CPU training with gloo, and how the work
is shared: see `skin_utils.distributed`.

Each run gets a run folder (`skin_utils.runs`), ``<reports-dir>/runs/<run-name>/`` (as notebook 02) with
``checkpoints/best.pt`` and ``last.pt``, ``metrics/train.json`` (the history and the best
epoch) and ``figures/train_learning_curves.png``; ``<reports-dir>/runs/LATEST`` then names it.
``--resume`` continues the run folder's ``last.pt``. Only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from skin_utils import distributed, runs
from skin_utils.budget import BudgetPlan, plan_check, plan_training
from skin_utils.engine import build_optimizer_and_schedule, fit, resolve_device, seed_everything, selection_metrics
from skin_utils.labels import CLASS_NAMES
from skin_utils.data import check_trainable, load_data, train_class_counts, train_val_loaders
from skin_utils.transforms import normalization_config
from skin_utils.losses import build_loss, trained_tasks
from skin_utils.model import MultiTaskNet
from skin_utils.nb.params import check_params
from skin_utils.nb.paths import resolve


def get_args_parser() -> argparse.ArgumentParser:
    """The options: notebooks/02_train's parameters (same names with dashes, same defaults),
    plus the run folder, ``--compile`` and ``--sync-bn``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    none_or_int = lambda s: None if s.lower() == "none" else int(s)  # noqa: E731
    p.add_argument("--data-dir", default="data", help="HAM10000 layout (see data/README.md); the synthetic demo if empty")
    p.add_argument("--image-size", type=int, default=96, help="training size in pixels (square)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                   help="minutes for training, validation and calibration: the epochs are fitted to it (instead of --epochs)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="images per step and per process: the global batch is batch-size x processes")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the schedule (AdamW)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--lr-schedule", default="onecycle", help="onecycle, cosine or constant")
    p.add_argument("--seg-weight", type=float, default=1.0, help="weight of the mask loss (BCE)")
    p.add_argument("--cls-weight", type=float, default=1.0, help="weight of the diagnosis loss (cross-entropy)")
    p.add_argument("--class-balance", default="weighted_loss",
                   help="none, weighted_loss, sampler, both or logit_adjusted")
    p.add_argument("--balance-power", type=float, default=0.4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--ema-decay", type=float, default=None,
                   help="validate and keep a moving average of the weights (e.g. 0.999); default: none")
    p.add_argument("--augment", default="camera", help="none, flips, standard, strong or camera")
    p.add_argument("--colour-constancy", default="shades_of_gray", help="none or shades_of_gray (training, evaluation and inference alike)")
    p.add_argument("--encoder-weights", default="auto",
                   help="imagenet, auto (ImageNet if obtainable), none, or a .pth path")
    p.add_argument("--selection", default="balanced_accuracy+dice", help="validation score that picks best.pt")
    p.add_argument("--patience", type=none_or_int, default=None, help="early stopping (epochs); none: never")
    p.add_argument("--seed", type=int, default=0, help="training randomness")
    p.add_argument("--split-seed", type=int, default=0, help="which lesions go to train/val/test")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: GPU LOCAL_RANK)")
    p.add_argument("--amp", default="auto", help="mixed precision: auto, bf16, fp16 or off")
    p.add_argument("--num-workers", type=none_or_int, default=None, help="DataLoader workers per process")
    p.add_argument("--max-samples", type=none_or_int, default=None, help="at most this many images (whole lesions)")
    p.add_argument("--split-fractions", type=float, nargs=3, default=[0.7, 0.15, 0.15], metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--split-path", default="reports/split.csv", help="the lesion-level split (made on first use)")
    p.add_argument("--on-bad-data", default="raise", help="raise or skip")
    p.add_argument("--cache-dir", default=None, help="preprocessing cache; default $SKIN_UTILS_CACHE or ~/.cache/skin_utils")
    p.add_argument("--reports-dir", default="reports", help="run folders go to <reports-dir>/runs/")
    p.add_argument("--run-name", default=None, help="default: time, size, epochs, loss weights and seed")
    p.add_argument("--resume", action="store_true", help="continue the run folder's last.pt")
    p.add_argument("--overwrite", action="store_true", help="replace the results of an existing run folder")
    p.add_argument("--compile", action="store_true", help="train through torch.compile (slower first epoch)")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm over all processes (CUDA, several processes)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars and epoch lines")
    return p


def main(argv=None) -> int:
    args = get_args_parser().parse_args(argv)
    params = check_params(dict(
        data_dir=args.data_dir, image_size=args.image_size, epochs=args.epochs, time_budget=args.time_budget,
        batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, lr_schedule=args.lr_schedule, seg_weight=args.seg_weight,
        cls_weight=args.cls_weight, class_balance=args.class_balance, balance_power=args.balance_power,
        label_smoothing=args.label_smoothing, ema_decay=args.ema_decay, augment=args.augment, colour_constancy=args.colour_constancy, encoder_weights=args.encoder_weights,
        selection=args.selection, patience=args.patience, seed=args.seed, split_seed=args.split_seed, device=args.device, amp=args.amp,
        num_workers=args.num_workers, max_samples=args.max_samples, split_fractions=list(args.split_fractions),
        split_path=args.split_path, on_bad_data=args.on_bad_data, resume=args.resume, cache_dir=args.cache_dir,
        compile=args.compile, sync_bn=args.sync_bn))
    ctx = distributed.init_distributed(resolve_device(args.device))
    params["world_size"] = ctx.world_size
    finished = False
    try:
        train(args, params, ctx)
        finished = True
    finally:
        distributed.cleanup(wait=finished)
    return 0


def train(args, params: dict, ctx: distributed.Context) -> list[dict]:
    started_at = time.perf_counter()  # a time budget counts from here
    device, say = ctx.device, (print if ctx.is_main else (lambda *a, **k: None))
    say(f"Training on {device} x {ctx.world_size} process(es): global batch {args.batch_size * ctx.world_size} "
        f"({args.batch_size} per process), {torch.get_num_threads()} CPU threads per process")
    seed_everything(args.seed)

    # Data: rank 0 first (it may write the demo data, the split and the cache), the others reuse it.
    with distributed.main_process_first():
        data = load_data(args.data_dir, args.image_size, split_path=args.split_path,
                         split_fractions=args.split_fractions, seed=args.split_seed, max_samples=args.max_samples,
                         on_bad_data=args.on_bad_data, cache_dir=args.cache_dir, progress=ctx.is_main and args.progress)
    check_trainable(data, args.seg_weight, args.cls_weight)

    # The run folder: made by rank 0, its path sent to the others.
    run = None
    if ctx.is_main:
        run = runs.start_run((resolve(args.reports_dir) / "runs"), args.run_name, params, resume=args.resume,
                             overwrite=args.overwrite)
    run = runs.Run(Path(distributed.broadcast_object(str(run.root) if run else None)))

    # Model, loss, loaders, optimiser (rank 0 first: it may download the ImageNet weights).
    with distributed.main_process_first():
        model = MultiTaskNet(num_classes=len(CLASS_NAMES), encoder_weights=args.encoder_weights)
    counts = train_class_counts(data)
    loss_fn = build_loss(counts, args.seg_weight, args.cls_weight, args.class_balance, args.balance_power,
                         args.label_smoothing)
    loaders = train_val_loaders(data, args.batch_size, device, augment=args.augment,
                                class_balance=args.class_balance, balance_power=args.balance_power,
                                seed=args.seed, num_workers=args.num_workers)
    plan, epochs = None, args.epochs
    if args.time_budget is not None:  # measured on rank 0, the same epochs for every process
        if ctx.is_main:
            plan = plan_training(args.time_budget, started_at, model, loaders.train, loaders.val, loss_fn, device,
                                 calibrate=args.cls_weight > 0, amp=args.amp, batch_transform=loaders.batch_transform,
                                 normalization=normalization_config(args.colour_constancy),
                                 compile=args.compile, saved=run.metrics / "budget.json", resume=args.resume,
                                 ema_decay=args.ema_decay)
            say(plan.describe())
        plan = BudgetPlan.from_dict(distributed.broadcast_object(plan and plan.as_dict()))
        epochs = plan.epochs
    optimizer, scheduler = build_optimizer_and_schedule(model, args.lr, args.weight_decay, epochs,
                                                        len(loaders.train), args.lr_schedule)
    say(f"encoder weights: {model.encoder_weights_used}; training images per class: "
        f"{dict(zip(CLASS_NAMES, counts.tolist()))}; run folder: {run.root}")

    history = fit(model, loaders.train, loaders.val, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
                  epochs=epochs, device=device, checkpoint_dir=run.checkpoints, class_names=CLASS_NAMES,
                  image_size=data.image_size, batch_transform=loaders.batch_transform,
                  normalization=normalization_config(args.colour_constancy), params={**params, "epochs": epochs},
                  data=data.describe(), split_path=resolve(args.split_path), selection=args.selection,
                  patience=args.patience, amp=args.amp, resume=args.resume, seed=args.seed,
                  progress=args.progress, compile=args.compile, sync_bn=args.sync_bn, ema_decay=args.ema_decay,
                  deadline=plan.deadline(started_at) if plan else None)

    # Results (rank 0): the history and best epoch, the learning curves, LATEST -> this run.
    if ctx.is_main:
        from skin_utils import viz
        from skin_utils.nb import report

        best = max(history, key=lambda row: row["score"])
        viz.save_figure(viz.plot_learning_curves(history, title=f"Learning curves · {data.name}"),
                        run.figures / "train_learning_curves.png")
        if args.cls_weight > 0:  # as notebook 02: temperature and thresholds fitted on validation, into best.pt
            from skin_utils.trust.calibrate import calibrate_checkpoint

            calibrate_checkpoint(run.best, data, tta=True, batch_size=args.batch_size, device=device, amp=args.amp,
                                 progress=args.progress)
        check = plan_check(plan, history)
        if check and check["warning"]:
            say("Warning: " + check["warning"])
        report.write_json(run.metrics / "train.json", {
            "best_epoch": best["epoch"], "selection": args.selection,
            "selection_used": "+".join(selection_metrics(args.selection, trained_tasks(args.seg_weight, args.cls_weight))),
            "best_val": {k[4:]: v for k, v in best.items() if k.startswith("val_")},
            "epochs_run": len(history), "checkpoint": str(run.best), "world_size": ctx.world_size,
            "global_batch_size": args.batch_size * ctx.world_size,
            "encoder_weights_used": model.encoder_weights_used, "history": history,
            "data": data.describe(), "params": params, "time_budget_min": args.time_budget,
            "budget_plan": plan and plan.as_dict(), "budget_check": check,
            "minutes_taken": (time.perf_counter() - started_at) / 60})
        runs.set_latest((resolve(args.reports_dir) / "runs"), run)
        say(f"best epoch {best['epoch']} by {args.selection}: {run.best}")
    return history


if __name__ == "__main__":
    sys.exit(main())
