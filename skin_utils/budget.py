"""Train for the minutes a user has instead of a number of epochs.

`plan_training` times a few training and validation batches on the machine at hand (on a copy
of the model, so the run itself is untouched), then `plan_epochs` buys as many epochs as fit in
what is left of the budget once the time already spent (data loading) and the work after
training (calibration on the validation split) are set aside. The learning-rate schedule is then
built for exactly those epochs, so the run ends annealed. `fit(deadline=...)` shows the time
left and stops early, with a message, if the machine turns out slower than measured.

The plan is saved with the run (``metrics/budget.json``); a resumed run keeps it. Training for a
budget is as reproducible as training for the epochs it bought: the measurement draws from the
random streams, but every epoch reseeds them (`skin_utils.engine`), so ``epochs=<plan.epochs>``
gives the same model.
"""
from __future__ import annotations

import copy
import itertools
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

MAX_EPOCHS = 1000          # a budget never buys more than this (tiny data sets on fast machines)
RESERVE = 0.05             # share of the remaining budget kept free for what the estimate misses
CHECKPOINT_SECONDS = 1.0   # writing last.pt (and best.pt) after each epoch, a generous estimate
REPORT_SECONDS = 15.0      # figures, json and report after training
PLAN_TOLERANCE = 1.25      # a measurement this many times off the epochs' own pace is reported as wrong
CHECK_MIN_BATCHES = 20     # shorter epochs are mostly fixed costs: their pace says nothing about the measurement


class BudgetError(ValueError):
    """The time budget cannot buy a single epoch."""


@dataclass
class BudgetPlan:
    """What a time budget bought, and the estimates it was bought with (seconds)."""

    budget_s: float               # the whole budget
    spent_before_s: float         # already used when planning (data loading, the measurement itself)
    train_batch_s: float          # one training batch, measured
    val_batch_s: float            # one validation batch, measured
    train_batches: int            # per epoch
    val_batches: int              # per epoch
    epoch_s: float                # one epoch: training, validation and checkpoints
    after_s: float                # after the last epoch: calibration and the report
    epochs: int                   # what the budget bought
    planned_total_s: float        # spent_before_s + epochs * epoch_s + after_s
    resumed: bool = False         # read back from budget.json to resume the run (its first start's spent_before_s is spent)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BudgetPlan":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def describe(self) -> str:
        return (f"Time budget {self.budget_s / 60:g} min: {self.epochs} epoch(s) of ~{self.epoch_s:.0f} s "
                f"({self.train_batches} training batches at {self.train_batch_s:.3f} s, {self.val_batches} validation "
                f"batches at {self.val_batch_s:.3f} s), {self.spent_before_s:.0f} s spent before, ~{self.after_s:.0f} s "
                f"after; planned {self.planned_total_s / 60:.1f} min in all.")

    def deadline(self, started_at: float) -> float:
        """The clock reading by which training and validation must be over (calibration and the
        report still to come), for a run that began (or, resumed, began again) at ``started_at``.
        A resumed run has already spent its first start's ``spent_before_s``; `skin_utils.engine.fit`
        also takes off the seconds of the epochs it resumes after."""
        return started_at + self.budget_s - self.after_s - (self.spent_before_s if self.resumed else 0.0)

    def save(self, path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**self.as_dict(), "resumed": False}, indent=2))

    @classmethod
    def load(cls, path) -> "BudgetPlan":
        return cls.from_dict(json.loads(Path(path).read_text()))


def plan_epochs(budget_s: float, *, spent_before_s: float, train_batch_s: float, val_batch_s: float,
                train_batches: int, val_batches: int, after_val_passes: float = 9.0,
                checkpoint_s: float = CHECKPOINT_SECONDS, report_s: float = REPORT_SECONDS,
                reserve: float = RESERVE, max_epochs: int = MAX_EPOCHS) -> BudgetPlan:
    """The number of whole epochs that fit in ``budget_s``. An epoch costs ``train_batches``
    training batches, ``val_batches`` validation batches and a checkpoint; after the last one come
    ``after_val_passes`` passes over the validation split (calibration: 8 TTA views and a plain
    pass = 9; 0 when the classification head is not trained) and the report. ``reserve`` of what
    is left is kept free. Raises `BudgetError` when not even one epoch fits."""
    if budget_s <= 0:
        raise BudgetError(f"time_budget must be positive, got {budget_s / 60:g} min.")
    epoch_s = train_batches * train_batch_s + val_batches * val_batch_s + checkpoint_s
    after_s = after_val_passes * val_batches * val_batch_s + report_s
    left = (budget_s - spent_before_s - after_s) * (1.0 - reserve)
    epochs = min(max_epochs, int(math.floor(left / epoch_s))) if left > 0 else 0
    if epochs < 1:
        need = (spent_before_s + epoch_s + after_s) / (1.0 - reserve)
        raise BudgetError(
            f"A time budget of {budget_s / 60:.1f} min buys no epoch on this machine: {spent_before_s:.0f} s went "
            f"to loading and measuring, one epoch takes ~{epoch_s:.0f} s and calibration and the report ~{after_s:.0f} s. "
            f"Give time_budget >= {math.ceil(need / 60 * 10) / 10:.1f} (minutes), or make the run cheaper "
            "(smaller image_size, max_samples, or a GPU).")
    return BudgetPlan(budget_s=float(budget_s), spent_before_s=float(spent_before_s),
                      train_batch_s=float(train_batch_s), val_batch_s=float(val_batch_s),
                      train_batches=int(train_batches), val_batches=int(val_batches), epoch_s=float(epoch_s),
                      after_s=float(after_s), epochs=int(epochs),
                      planned_total_s=float(spent_before_s + epochs * epoch_s + after_s))


def seconds_per_batch(run_batches, n: int, clock=time.perf_counter, warmup: int = 2) -> float:
    """Seconds per batch of ``run_batches(k)`` (which processes k batches): one warm-up call of
    ``warmup`` batches (first-call costs: allocation, worker start-up), then ``n`` batches timed."""
    run_batches(warmup)
    t0 = clock()
    run_batches(n)
    return max(clock() - t0, 0.0) / n


def measure_batch_seconds(model, train_loader, val_loader, loss_fn, device, *, amp_dtype=None,
                          batch_transform=None, normalization: dict | None = None,
                          channels_last: bool = True, compile: bool = False,
                          train_batches: int = 20, val_batches: int = 6, clock=time.perf_counter,
                          ema_decay: float | None = None) -> tuple[float, float]:
    """(seconds per training batch, seconds per validation batch) on this machine, measured on a
    copy of ``model`` with a throw-away optimiser (the model and its BatchNorm statistics are
    not touched). With ``compile`` the copy is compiled too and the warm-up pays the compilation;
    with ``ema_decay`` each step also updates a weight average, as `skin_utils.engine.fit` does.
    Twenty training batches: with six, the estimate of a 96 px epoch on a 2-core CPU was off by
    up to 14% (one epoch bought too few in a 10-minute budget)."""
    from skin_utils.transforms import Normalize
    from skin_utils.engine import predict, train_one_epoch, unwrap_model, weight_average

    probe = copy.deepcopy(unwrap_model(model)).to(device)
    if channels_last:
        probe.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=0.0)
    runner = torch.compile(probe) if compile else probe
    ema = weight_average(probe, ema_decay)
    loss_fn = copy.deepcopy(loss_fn).to(device)
    n_train = max(1, min(train_batches, len(train_loader) - 1))
    n_val = max(1, min(val_batches, len(val_loader) - 1))

    def train(k):
        train_one_epoch(runner, train_loader, loss_fn, optimizer, device, amp_dtype=amp_dtype,
                        channels_last=channels_last, batch_transform=batch_transform, normalization=normalization,
                        progress=False, max_batches=k, ema=ema)

    def validate(k):
        predict(runner, itertools.islice(val_loader, k), device, amp_dtype=amp_dtype, channels_last=channels_last,
                loss_fn=loss_fn, progress=False, with_masks=True, normalize=Normalize.from_config(normalization))

    return seconds_per_batch(train, n_train, clock), seconds_per_batch(validate, n_val, clock)


def plan_training(budget_minutes: float, started_at: float, model, train_loader, val_loader, loss_fn, device, *,
                  calibrate: bool = True, calibrate_tta: bool = True, amp: str = "auto", batch_transform=None,
                  normalization: dict | None = None, compile: bool = False, saved=None, resume: bool = False, clock=time.perf_counter,
                  measure=measure_batch_seconds, ema_decay: float | None = None) -> BudgetPlan:
    """Measure this machine and plan the epochs for ``budget_minutes`` counted from ``started_at``
    (a ``clock()`` reading taken when the run began). ``calibrate``: whether calibration follows
    training (it does when the classification head is trained), with 8-view TTA when
    ``calibrate_tta``; ``normalization`` and ``ema_decay`` as given to `fit` (colour constancy and the weight average run in every step). The plan is written to ``saved`` (a json path); with ``resume`` a plan
    found there is kept as it is (same epochs, same schedule) and nothing is measured."""
    from skin_utils.engine import amp_dtype_for

    if resume and saved is not None and Path(saved).is_file():
        plan = BudgetPlan.load(saved)
        if abs(plan.budget_s - budget_minutes * 60.0) > 1e-6:
            raise BudgetError(f"This run was planned for a time budget of {plan.budget_s / 60:g} min ({saved}); "
                              f"resume it with time_budget={plan.budget_s / 60:g}, or start a new run.")
        print(f"Resuming with the saved plan ({saved}): {plan.epochs} epoch(s), the time already spent counted.")
        return replace(plan, resumed=True)
    train_s, val_s = measure(model, train_loader, val_loader, loss_fn, device,
                             amp_dtype=amp_dtype_for(torch.device(device), amp),
                             batch_transform=batch_transform, normalization=normalization, compile=compile, clock=clock,
                             ema_decay=ema_decay)
    passes = (9.0 if calibrate_tta else 1.0) if calibrate else 0.0
    plan = plan_epochs(budget_minutes * 60.0, spent_before_s=clock() - started_at, train_batch_s=train_s,
                       val_batch_s=val_s, train_batches=len(train_loader), val_batches=len(val_loader),
                       after_val_passes=passes)
    if saved is not None:
        plan.save(saved)
    return plan


def plan_check(plan: BudgetPlan | None, history: list[dict], tolerance: float = PLAN_TOLERANCE) -> dict | None:
    """How well the measurement foretold the epochs: ``measured_train_batch_s`` (the plan's),
    ``epoch_train_batch_s`` (the median over the epochs run of ``train_seconds / train_batches``),
    their ``ratio`` (measured / real: above 1, the measurement was slow and too few epochs were
    bought) and a ``warning`` (None when the ratio is within ``tolerance`` either way). None without
    a plan, without an epoch with its ``train_seconds``, or when an epoch has fewer than
    `CHECK_MIN_BATCHES` batches (tiny data: fixed costs dominate an epoch)."""
    seconds = sorted(row["train_seconds"] for row in history if row.get("train_seconds"))
    if plan is None or not seconds or plan.train_batches < CHECK_MIN_BATCHES:
        return None
    real = seconds[len(seconds) // 2] / plan.train_batches
    ratio = plan.train_batch_s / real
    warning = None
    if ratio > tolerance:
        warning = (f"The measurement before training ran {ratio:.1f}x slower than the epochs themselves "
                   f"({plan.train_batch_s:.3f} s per training batch measured, {real:.3f} s in the epochs): the machine "
                   f"was probably busy with something else while it measured, so the budget bought too few epochs. "
                   f"Run again on a quiet machine, or train `epochs` yourself.")
    elif ratio < 1 / tolerance:
        warning = (f"The epochs ran {1 / ratio:.1f}x slower than measured ({plan.train_batch_s:.3f} s per training "
                   f"batch measured, {real:.3f} s in the epochs): the machine got busier after the measurement, and "
                   f"the budget may have been overrun or the schedule cut short.")
    return {"measured_train_batch_s": plan.train_batch_s, "epoch_train_batch_s": real, "ratio": ratio,
            "warning": warning}


def budget_summary(plan: BudgetPlan | None, epochs_run: int, minutes_taken: float,
                   history: list[dict] | None = None) -> str:
    """One sentence for the report: the budget, the epochs it bought and the time it took, and,
    given the ``history``, a warning when the measurement was far off the epochs' pace
    (`plan_check`)."""
    if plan is None:
        return f"No time budget: {epochs_run} epoch(s) as asked; {minutes_taken:.1f} min in all."
    ran = "" if epochs_run == plan.epochs else f" (stopped after {epochs_run}: the machine ran slower than measured)"
    verdict = "within" if minutes_taken * 60 <= plan.budget_s else "over"
    line = (f"Time budget **{plan.budget_s / 60:g} min** bought **{plan.epochs} epoch(s)**{ran}; the run took "
            f"{minutes_taken:.1f} min to the end of calibration ({verdict} the budget).")
    check = plan_check(plan, history or [])
    return line if check is None or check["warning"] is None else f"{line} **Warning:** {check['warning']}"


def format_seconds(seconds: float) -> str:
    """``m:ss`` (``-m:ss`` when past)."""
    sign, s = ("-" if seconds < 0 else ""), int(round(abs(seconds)))
    return f"{sign}{s // 60}:{s % 60:02d}"
