"""Train for the minutes a user has instead of a number of epochs: the plan's arithmetic.

`plan_training` measures seconds per batch, then buys the whole epochs that fit once the time spent
and the work after training are set aside; the schedule is built for exactly those epochs, and
`fit(deadline=...)` stops early if the machine turns out slower. The plan is saved with the run
(``metrics/budget.json``) and kept on resume: a budgeted run equals the run of the epochs it bought.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

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

    def describe(self) -> str:
        return (f"Time budget {self.budget_s / 60:g} min: {self.epochs} epoch(s) of ~{self.epoch_s:.0f} s "
                f"({self.train_batches} training batches at {self.train_batch_s:.3f} s, {self.val_batches} validation "
                f"batches at {self.val_batch_s:.3f} s), {self.spent_before_s:.0f} s spent before, ~{self.after_s:.0f} s "
                f"after; planned {self.planned_total_s / 60:.1f} min in all.")

    def deadline(self, started_at: float) -> float:
        """The clock reading by which training and validation must be over for a run (re)started at
        ``started_at``; a resumed run has spent its first start's ``spent_before_s`` already."""
        return started_at + self.budget_s - self.after_s - (self.spent_before_s if self.resumed else 0.0)

    @classmethod
    def load(cls, path) -> BudgetPlan:
        return cls(**json.loads(Path(path).read_text()))


def plan_epochs(budget_s: float, *, spent_before_s: float, train_batch_s: float, val_batch_s: float,
                train_batches: int, val_batches: int, after_val_passes: float = 9.0) -> BudgetPlan:
    """The whole epochs (batches, validation, a checkpoint) that fit in ``budget_s`` before
    ``after_val_passes`` validation passes (calibration: 8 TTA views + a plain one = 9) and the report,
    `RESERVE` of what is left kept free. `BudgetError` when not one epoch fits."""
    epoch_s = train_batches * train_batch_s + val_batches * val_batch_s + CHECKPOINT_SECONDS
    after_s = after_val_passes * val_batches * val_batch_s + REPORT_SECONDS
    epochs = min(MAX_EPOCHS, math.floor(max(budget_s - spent_before_s - after_s, 0.0) * (1.0 - RESERVE) / epoch_s))
    if epochs < 1:
        need = (spent_before_s + epoch_s + after_s) / (1.0 - RESERVE)
        raise BudgetError(
            f"A time budget of {budget_s / 60:.1f} min buys no epoch on this machine: {spent_before_s:.0f} s went "
            f"to loading and measuring, one epoch takes ~{epoch_s:.0f} s and calibration and the report ~{after_s:.0f} s. "
            f"Give time_budget >= {math.ceil(need / 60 * 10) / 10:.1f} (minutes), or make the run cheaper "
            "(smaller image_size, max_samples, or a GPU).")
    return BudgetPlan(budget_s, spent_before_s, train_batch_s, val_batch_s, train_batches, val_batches, epoch_s,
                      after_s, epochs, spent_before_s + epochs * epoch_s + after_s)


def seconds_per_batch(run_batches, n: int, clock=time.perf_counter) -> float:
    """Seconds per batch of ``run_batches(n)``, after two warm-up batches (allocation, worker start-up)."""
    run_batches(2)
    t0 = clock()
    run_batches(n)
    return max(clock() - t0, 0.0) / n


def plan_training(budget_minutes: float, started_at: float, measure, train_batches: int, val_batches: int, *, saved,
                  calibrate: bool = True, calibrate_tta: bool = True, resume: bool = False,
                  clock=time.perf_counter) -> BudgetPlan:
    """The plan for ``budget_minutes`` from ``started_at``, ``measure()`` giving seconds per training and
    validation batch; written to ``saved``, where ``resume`` finds it again (the same epochs)."""
    if resume and Path(saved).is_file():
        plan = BudgetPlan.load(saved)
        if abs(plan.budget_s - budget_minutes * 60.0) > 1e-6:
            raise BudgetError(f"This run was planned for a time budget of {plan.budget_s / 60:g} min ({saved}); "
                              f"resume it with time_budget={plan.budget_s / 60:g}, or start a new run.")
        print(f"Resuming with the saved plan ({saved}): {plan.epochs} epoch(s), the time already spent counted.")
        return replace(plan, resumed=True)
    train_s, val_s = measure()
    plan = plan_epochs(budget_minutes * 60.0, spent_before_s=clock() - started_at, train_batch_s=train_s,
                       val_batch_s=val_s, train_batches=train_batches, val_batches=val_batches,
                       after_val_passes=(9.0 if calibrate_tta else 1.0) if calibrate else 0.0)
    Path(saved).parent.mkdir(parents=True, exist_ok=True)
    Path(saved).write_text(json.dumps(asdict(plan), indent=2))
    return plan


def plan_check(plan: BudgetPlan | None, history: list[dict]) -> dict | None:
    """How well the measurement foretold the epochs (seconds per training batch measured and median
    real, their ``ratio``), with a ``warning`` beyond `PLAN_TOLERANCE`. None without a plan or timed
    epochs, or for epochs under `CHECK_MIN_BATCHES` batches."""
    seconds = sorted(row["train_seconds"] for row in history if row.get("train_seconds"))
    if plan is None or not seconds or plan.train_batches < CHECK_MIN_BATCHES:
        return None
    real = seconds[len(seconds) // 2] / plan.train_batches
    ratio = plan.train_batch_s / real
    pace = f"{plan.train_batch_s:.3f} s per training batch measured, {real:.3f} s in the epochs"
    warning = None  # within PLAN_TOLERANCE either way
    if ratio > PLAN_TOLERANCE:
        warning = (f"The measurement before training ran {ratio:.1f}x slower than the epochs themselves ({pace}): "
                   "the machine was probably busy with something else while it measured, so the budget bought too "
                   "few epochs. Run again on a quiet machine, or train `epochs` yourself.")
    elif ratio < 1 / PLAN_TOLERANCE:
        warning = (f"The epochs ran {1 / ratio:.1f}x slower than measured ({pace}): the machine got busier after the "
                   "measurement, and the budget may have been overrun or the schedule cut short.")
    return {"measured_train_batch_s": plan.train_batch_s, "epoch_train_batch_s": real, "ratio": ratio,
            "warning": warning}


def budget_summary(plan: BudgetPlan | None, epochs_run: int, minutes_taken: float,
                   history: list[dict] | None = None, stopped_by: str | None = None) -> str:
    """One sentence for the report: the budget, the epochs it bought, the time taken, any `plan_check` warning.
    ``stopped_by``: why fewer epochs ran than asked, "patience" or "time" (the budget's deadline)."""
    patience = " by patience: the validation score had stopped improving"
    if plan is None:
        ran = f" (stopped early{patience})" if stopped_by == "patience" else " as asked"
        return f"No time budget: {epochs_run} epoch(s){ran}; {minutes_taken:.1f} min in all."
    why = patience if stopped_by == "patience" else ": the machine ran slower than measured"
    ran = "" if epochs_run == plan.epochs else f" (stopped after {epochs_run}{why})"
    verdict = "within" if minutes_taken * 60 <= plan.budget_s else "over"
    line = (f"Time budget **{plan.budget_s / 60:g} min** bought **{plan.epochs} epoch(s)**{ran}; the run took "
            f"{minutes_taken:.1f} min to the end of calibration ({verdict} the budget).")
    check = plan_check(plan, history or [])
    return line if check is None or check["warning"] is None else f"{line} **Warning:** {check['warning']}"


def format_seconds(seconds: float) -> str:
    """``m:ss`` (``-m:ss`` when past)."""
    sign, s = ("-" if seconds < 0 else ""), int(round(abs(seconds)))
    return f"{sign}{s // 60}:{s % 60:02d}"
