"""THE training recipe, `train(cfg)`: notebooks/02_train, this command line, torchrun and the
experiments all call it, so nothing a run does exists in only one of them.

    python -m skin_utils.train --data-dir data --epochs 5 --image-size 128
    torchrun --nproc_per_node 4 -m skin_utils.train --data-dir data --epochs 5 --batch-size 32

Every option is a field of `skin_utils.config.TrainConfig`; ``--batch-size`` is per process. A run
writes ``<reports-dir>/runs/<run-name>/`` (best.pt calibrated on validation), then ``runs/LATEST``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass

import pandas as pd
import torch

from skin_utils import distributed, plots, report, runs
from skin_utils.budget import budget_summary, plan_check, plan_training
from skin_utils.checkpoint import Checkpoint
from skin_utils.config import TrainConfig, resolve
from skin_utils.transforms import normalization_config
from skin_utils.data import Data, check_trainable, load_data, train_class_counts, train_val_loaders
from skin_utils.engine import (amp_dtype_for, build_optimizer_and_schedule, fit, measure_batch_seconds,
                               resolve_device, seed_everything, selection_metrics)
from skin_utils.labels import CLASS_NAMES
from skin_utils.losses import build_loss
from skin_utils.model import MultiTaskNet
from skin_utils.trust import calibrate_checkpoint, summary_lines


@dataclass
class Trained:
    """What `train` returns: the run, ``metrics/train.json``'s content, the data, the ``sections`` (rank 0 only)."""

    run: runs.Run
    summary: dict | None
    data: Data
    sections: dict

    def show(self, name: str) -> None:
        self.sections[name].show()


def train(cfg: TrainConfig, progress: bool = True) -> Trained:
    """Train one run as ``cfg`` says; under torchrun every process calls it and rank 0 writes the files."""
    started_at = time.perf_counter()  # a time budget counts from here
    device = distributed.init_distributed(resolve_device(cfg.device))
    main, world = distributed.is_main_process(), distributed.world_size()
    say = print if main and progress else (lambda *a, **k: None)
    say(f"Training on {device} x {world} process(es): global batch {cfg.batch_size * world} ({cfg.batch_size} per "
        f"process), {torch.get_num_threads()} CPU threads per process")
    seed_everything(cfg.seed)
    with distributed.main_process_first():  # rank 0 writes the demo data, the split and the cache first
        data = load_data(cfg.data_dir, cfg.image_size, split_path=cfg.split_path, split_fractions=cfg.split_fractions,
                         seed=cfg.split_seed, max_samples=cfg.max_samples, on_bad_data=cfg.on_bad_data,
                         cache_dir=cfg.cache_dir, progress=main and progress)
    check_trainable(data, cfg.seg_weight, cfg.cls_weight)
    params = cfg.to_dict()
    run = distributed.broadcast_object(runs.start_run(resolve(cfg.reports_dir) / "runs", cfg.run_name, params,
                                                      resume=cfg.resume, overwrite=cfg.overwrite) if main else None)
    with distributed.main_process_first():  # rank 0 may download the ImageNet weights
        model = MultiTaskNet(len(CLASS_NAMES), cfg.encoder_weights, pooling=cfg.class_pooling)
    # a segmentation-only run needs no diagnosis and balances no classes: a masks-only folder (labels -1) trains
    counts, balance = (train_class_counts(data), cfg.class_balance) if cfg.cls_weight > 0 else (None, "none")
    loss_fn = build_loss(counts, cfg.seg_weight, cfg.cls_weight, balance, cfg.balance_power, cfg.label_smoothing)
    train_loader, val_loader, batch_transform = train_val_loaders(
        data, cfg.batch_size, device, augment=cfg.augment, class_balance=balance,
        balance_power=cfg.balance_power, seed=cfg.seed, num_workers=cfg.num_workers)
    normalization = normalization_config(cfg.colour_constancy)
    per_class = "not used (cls_weight 0)" if counts is None else dict(zip(CLASS_NAMES, counts.tolist()))
    say(f"encoder weights: {model.encoder_weights_used}; training images per class: {per_class}; "
        f"run folder: {run.root}")

    plan = None
    if cfg.time_budget is not None and main:  # measured on rank 0, broadcast: the same epochs for every process
        plan = plan_training(
            cfg.time_budget, started_at, lambda: measure_batch_seconds(
                model, train_loader, val_loader, loss_fn, device, amp_dtype=amp_dtype_for(device, cfg.amp),
                batch_transform=batch_transform, normalization=normalization, compile=cfg.compile,
                ema_decay=cfg.ema_decay),
            len(train_loader), len(val_loader), calibrate="classification" in cfg.tasks,
            calibrate_tta=cfg.calibrate_tta, saved=run.metrics / "budget.json", resume=cfg.resume)
        say(plan.describe())
    plan = distributed.broadcast_object(plan)
    epochs = plan.epochs if plan else cfg.epochs
    optimizer, scheduler = build_optimizer_and_schedule(model, cfg.lr, cfg.weight_decay, epochs, len(train_loader),
                                                        cfg.lr_schedule)
    # a resumed run's earlier starts: their epochs' seconds (in last.pt) and the first start's loading and measuring
    earlier_s = 0.0
    if main and cfg.resume and run.last.is_file():
        earlier_s = sum(row["epoch_seconds"] for row in Checkpoint.load(run.last).history)
        earlier_s += plan.spent_before_s if plan and plan.resumed else 0.0
    history = fit(model, train_loader, val_loader, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler,
                  epochs=epochs, device=device, checkpoint_dir=run.checkpoints, class_names=CLASS_NAMES,
                  image_size=data.image_size, batch_transform=batch_transform, normalization=normalization,
                  params={**params, "epochs": epochs, "world_size": world}, data=data.describe(),
                  split_path=resolve(cfg.split_path), selection=cfg.selection, patience=cfg.patience, amp=cfg.amp,
                  resume=cfg.resume, seed=cfg.seed, progress=progress, compile=cfg.compile, sync_bn=cfg.sync_bn,
                  deadline=plan.deadline(started_at) if plan else None, ema_decay=cfg.ema_decay)
    summary, sections = None, {}
    if main:
        runs.set_latest(run.root.parent, run)
        calibration = {}
        if "classification" in cfg.tasks:  # temperature and thresholds fitted on validation, into best.pt
            calibration = calibrate_checkpoint(run.best, data, tta=cfg.calibrate_tta, batch_size=cfg.batch_size,
                                               target_sensitivity=cfg.target_sensitivity,
                                               target_coverage=cfg.target_coverage, device=device, amp=cfg.amp,
                                               progress=progress)
        best = max(history, key=lambda row: row["score"])
        summary = {  # metrics/train.json: the best epoch and how it was chosen, the history, calibration, data, budget
            "best_epoch": best["epoch"], "selection": cfg.selection,
            "selection_used": "+".join(selection_metrics(cfg.selection, cfg.tasks)),  # the trained heads only
            "best_val": {k[4:]: v for k, v in best.items() if k.startswith("val_")}, "epochs_run": len(history),
            "checkpoint": str(run.best), "encoder_weights_used": model.encoder_weights_used,
            "class_weights": None if loss_fn.class_weights is None else loss_fn.class_weights.tolist(),
            "logit_adjustment": None if loss_fn.logit_adjustment is None else loss_fn.logit_adjustment.tolist(),
            "history": history, "calibration": calibration, "data": data.describe(), "params": params,
            "environment": report.environment_info(),
            "world_size": world, "global_batch_size": cfg.batch_size * world, "time_budget_min": cfg.time_budget,
            "budget_plan": plan and asdict(plan), "budget_check": plan_check(plan, history),
            "stopped_by": stopped_by(history, epochs, cfg.patience),
            "minutes_taken": (time.perf_counter() - started_at + earlier_s) / 60}  # all starts (see earlier_s)
        report.write_json(run.metrics / "train.json", summary)
        plots.save_figure(plots.plot_learning_curves(history, title=f"Learning curves · {data.name}"),
                        run.figures / "train_learning_curves.png")
        sections = _sections(cfg, summary, run, data, device, plan)
        say(f"best epoch {summary['best_epoch']} by {summary['selection_used']}: {run.best}")
    distributed.barrier()
    return Trained(run, summary, data, sections)


def stopped_by(history: list[dict], epochs: int, patience: int | None) -> str | None:
    """Why `fit` ran fewer than ``epochs``: "patience" (that many epochs without a better score), else "time"
    (the budget's deadline); None when it ran them all."""
    if len(history) >= epochs:
        return None
    since_best = next((i for i, row in enumerate(reversed(history)) if row["best"]), len(history))
    return "patience" if patience is not None and since_best >= patience else "time"


def training_note(history: list[dict], selection: str) -> str:
    """One computed sentence on the run: where the best epoch fell."""
    best = max(range(len(history)), key=lambda i: history[i]["score"])
    if len(history) == 1:
        return "A single epoch was trained: enough to check the pipeline, not to judge the model."
    if best == len(history) - 1:
        return (f"The validation score (`{selection}`) was still improving at the last epoch: more epochs would "
                "probably help.")
    return (f"The best validation score (`{selection}`) came at epoch {history[best]['epoch']} of {len(history)}; "
            "the epochs after it did not improve it.")


def _sections(cfg, summary, run, data, device, plan) -> dict:
    """The parts of notebook 02 (learning curves, kept checkpoint, conclusion), also written into the report."""
    rows = summary["data"]["images_per_split"]
    calibration = "\n".join("- " + line for line in summary_lines(summary["calibration"]))
    n, selection = summary["epochs_run"], summary["selection_used"]
    note = training_note(summary["history"], selection)
    sections = {
        "curves": report.Section("Learning curves", figures=[run.figures / "train_learning_curves.png"]),
        "checkpoint": report.Section(
            "The kept checkpoint", tables={"Validation at the best epoch (model resolution)":
                                           pd.DataFrame({"value": summary["best_val"]}).rename_axis("metric")},
            text=f"Best epoch **{summary['best_epoch']}** of {n} by `{selection}`. "
                 "Calibration fitted on the validation split and stored in `best.pt`:\n"
                 + (calibration or "- none (the diagnosis head was not trained)")),
        "conclusion": report.Section("Conclusion", text=note)}
    weights = "raw weights" if cfg.ema_decay is None else f"a moving average of the weights (decay {cfg.ema_decay})"
    intro = (f"Trained on **{data.name}** ({rows.get('train', 0)} training / {rows.get('val', 0)} validation images, "
             f"split by lesion) for {n} epoch(s) at {cfg.image_size} px on `{device}`; encoder weights: "
             f"{summary['encoder_weights_used']}; heads trained: {', '.join(cfg.tasks)}; {weights}. "
             + budget_summary(plan, n, summary["minutes_taken"], summary["history"], summary["stopped_by"]))
    body = "\n\n".join([intro, *(sections[k].markdown() for k in ("checkpoint", "curves")), f"**Conclusion.** {note}"])
    report.write_section(run.root, "02_train", "Training", body, params=summary["params"], data=summary["data"])
    return sections


def main(argv=None) -> int:
    cfg = TrainConfig.from_args(argv, prog="python -m skin_utils.train", description=__doc__)
    try:
        train(cfg)
    finally:
        distributed.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
