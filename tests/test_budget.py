"""Time budget: the planning arithmetic with a mocked clock and throughput (never real timings),
the measurement leaving the model untouched, the deadline stop, resume keeping the plan, and
02_train with `time_budget` end to end."""

import json
import math
import time
from dataclasses import asdict

import pytest
import torch

from skin_utils import CLASS_NAMES
from skin_utils.budget import (CHECK_MIN_BATCHES, MAX_EPOCHS, BudgetError, BudgetPlan, budget_summary, format_seconds,
                               plan_check, plan_epochs, plan_training, seconds_per_batch)
from skin_utils.data import load_data, train_class_counts, train_val_loaders
from skin_utils.engine import _out_of_time, build_optimizer_and_schedule, fit, measure_batch_seconds
from skin_utils.losses import MultiTaskLoss, class_weights_from_counts
from skin_utils.model import MultiTaskNet
from skin_utils.config import ConfigError, TrainConfig
from tests.conftest import ROOT


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


def test_plan_buys_the_whole_epochs_that_fit():
    # 100 training batches at 0.5 s + 20 validation batches at 0.2 s + 1 s checkpoint = 55 s per epoch;
    # after: 9 passes x 20 x 0.2 s + 15 s report = 51 s; 60 s spent before.
    plan = plan_epochs(15 * 60, spent_before_s=60, train_batch_s=0.5, val_batch_s=0.2, train_batches=100,
                       val_batches=20)
    assert plan.epoch_s == pytest.approx(55.0) and plan.after_s == pytest.approx(51.0)
    assert plan.epochs == math.floor((900 - 60 - 51) * 0.95 / 55.0) == 13
    assert plan.planned_total_s == pytest.approx(60 + 13 * 55 + 51) and plan.planned_total_s <= 900
    # without calibration (classification head not trained) the budget buys more
    no_cal = plan_epochs(15 * 60, spent_before_s=60, train_batch_s=0.5, val_batch_s=0.2, train_batches=100,
                         val_batches=20, after_val_passes=0)
    assert no_cal.epochs == math.floor((900 - 60 - 15) * 0.95 / 55.0) == 14


def test_plan_is_capped_and_refuses_a_budget_that_buys_nothing():
    assert plan_epochs(10**6, spent_before_s=0, train_batch_s=1e-4, val_batch_s=1e-4, train_batches=2,
                       val_batches=1).epochs == MAX_EPOCHS
    with pytest.raises(BudgetError, match=r"buys no epoch.*time_budget >= 2\.\d"):
        plan_epochs(60, spent_before_s=30, train_batch_s=1.0, val_batch_s=0.5, train_batches=60, val_batches=10)


def test_seconds_per_batch_warms_up_then_times_n_batches():
    clock, calls = FakeClock(), []

    def run(k):
        calls.append(k)
        clock.advance(10.0 if len(calls) == 1 else 0.25 * k)  # a slow first call, then 0.25 s a batch

    assert seconds_per_batch(run, 8, clock) == pytest.approx(0.25)
    assert calls == [2, 8]


@pytest.fixture(scope="module")
def demo(synthetic_dir, tmp_path_factory):
    return load_data(synthetic_dir, 48, split_path=tmp_path_factory.mktemp("split") / "split.csv", progress=False)


def _setup(data, epochs=2):
    torch.manual_seed(0)
    model = MultiTaskNet(encoder_weights=None)
    loss_fn = MultiTaskLoss(1.0, 1.0, class_weights=class_weights_from_counts(train_class_counts(data), 0.5))
    train, val, _ = train_val_loaders(data, 16, "cpu", seed=0, num_workers=0)
    return model, loss_fn, train, val


def test_plan_training_with_mocked_clock_and_throughput_saves_and_resumes(demo, tmp_path):
    model, loss_fn, train, val = _setup(demo)
    clock = FakeClock()
    started = clock()
    clock.advance(42.0)  # data loading

    def measure():
        clock.advance(3.0)  # the measurement costs time too
        return 0.5, 0.2

    saved = tmp_path / "metrics" / "budget.json"
    plan = plan_training(10, started, measure, len(train), len(val), calibrate_tta=False, saved=saved, clock=clock)
    expected = plan_epochs(600, spent_before_s=45.0, train_batch_s=0.5, val_batch_s=0.2, train_batches=len(train),
                           val_batches=len(val), after_val_passes=1)
    assert plan == expected and plan.spent_before_s == 45.0
    assert BudgetPlan.load(saved) == plan
    assert plan.deadline(started) == started + 600 - plan.after_s

    def must_not_measure():
        raise AssertionError("a resumed run keeps its plan")

    kept = plan_training(10, 0.0, must_not_measure, len(train), len(val), saved=saved, resume=True, clock=clock)
    assert kept.epochs == plan.epochs and kept.resumed  # the first start's time counts on resume
    assert kept.deadline(started) == plan.deadline(started) - plan.spent_before_s
    with pytest.raises(BudgetError, match="time_budget=10"):
        plan_training(20, 0.0, must_not_measure, len(train), len(val), saved=saved, resume=True)


class _Planned(Exception):
    pass


def test_the_recipe_measures_steps_with_the_weight_average_when_there_is_one(synthetic_dir, tmp_path, monkeypatch):
    import skin_utils.train as recipe
    from skin_utils.config import TrainConfig

    seen = {}
    monkeypatch.setattr(recipe, "measure_batch_seconds", lambda *a, **kw: seen.update(kw) or (0.5, 0.2))

    def plan_training(minutes, started, measure, *args, **kw):
        measure()
        raise _Planned

    monkeypatch.setattr(recipe, "plan_training", plan_training)
    cfg = TrainConfig(data_dir=str(synthetic_dir), image_size=32, max_samples=60, time_budget=5, ema_decay=0.999,
                      encoder_weights=None, device="cpu", num_workers=0, split_path=str(tmp_path / "split.csv"),
                      reports_dir=str(tmp_path / "reports"))
    with pytest.raises(_Planned):
        recipe.train(cfg, progress=False)
    assert seen["ema_decay"] == 0.999 and seen["normalization"]["colour_constancy"] == "shades_of_gray"


@pytest.mark.parametrize("ema_decay", [None, 0.99])
def test_measurement_leaves_the_model_untouched(demo, ema_decay):
    model, loss_fn, train, val = _setup(demo)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clock = FakeClock()

    train_s, val_s = measure_batch_seconds(model, train, val, loss_fn, "cpu", train_batches=2, val_batches=1,
                                           clock=clock, ema_decay=ema_decay)
    assert (train_s, val_s) == (0.0, 0.0)  # the fake clock never moved
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics


def test_the_measurement_times_batches_of_one_pass_over_the_training_loader(demo):
    # each pass over the training loader starts its workers anew (so that resume is exact): a second pass
    # for the timed batches would time the workers' start-up as training
    model, loss_fn, train, val = _setup(demo)

    class Passes(list):
        started = 0

        def __iter__(self):
            Passes.started += 1
            return super().__iter__()

    batches = Passes(train)
    assert len(batches) >= 4
    measure_batch_seconds(model, batches, val, loss_fn, "cpu", train_batches=len(batches) - 3, val_batches=1)
    assert Passes.started == 1


def test_a_budgeted_run_equals_a_run_of_the_epochs_it_bought(demo, tmp_path):
    """The measurement draws from the random streams, but each epoch reseeds them: training after
    a measurement gives exactly the weights of training without one."""
    weights = []
    for measure_first in (False, True):
        model, loss_fn, train, val = _setup(demo)
        if measure_first:
            measure_batch_seconds(model, train, val, loss_fn, "cpu", train_batches=2, val_batches=1)
        opt, sched = build_optimizer_and_schedule(model, 3e-3, 1e-4, 1, len(train))
        fit(model, train, val, loss_fn=loss_fn, optimizer=opt, scheduler=sched, epochs=1, device="cpu",
            checkpoint_dir=tmp_path / str(measure_first), class_names=CLASS_NAMES, image_size=48, amp="off",
            progress=False)
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_out_of_time_judges_the_next_epoch_by_the_longest_so_far(capsys):
    now = time.perf_counter()
    assert not _out_of_time(None, [100.0], 1, 5, True)
    assert not _out_of_time(now - 1, [], 0, 5, True)  # nothing to judge by before the first epoch
    assert not _out_of_time(now + 1000, [10.0, 20.0], 2, 5, True)
    assert _out_of_time(now + 15, [10.0, 20.0], 2, 5, True)
    assert "stopping after 2 of 5 planned epochs" in capsys.readouterr().out


def test_fit_stops_at_the_deadline(demo, tmp_path):
    model, loss_fn, train, val = _setup(demo)
    opt, sched = build_optimizer_and_schedule(model, 3e-3, 1e-4, 3, len(train))
    history = fit(model, train, val, loss_fn=loss_fn, optimizer=opt, scheduler=sched, epochs=3, device="cpu",
                  checkpoint_dir=tmp_path, class_names=CLASS_NAMES, image_size=48, amp="off", progress=False,
                  deadline=time.perf_counter())  # already due: one epoch runs, the next is not started
    assert len(history) == 1 and (tmp_path / "best.pt").is_file()


def test_time_budget_parameter_rule():
    for good in (None, 15, 0.5):
        assert TrainConfig(time_budget=good).time_budget == good
    for bad in (0, -3, "15", True):
        with pytest.raises(ConfigError, match="time_budget"):
            TrainConfig(time_budget=bad)


def test_format_and_summary():
    assert format_seconds(75.4) == "1:15" and format_seconds(-5) == "-0:05"
    assert "No time budget: 3 epoch(s)" in budget_summary(None, 3, 1.25)
    plan = plan_epochs(600, spent_before_s=10, train_batch_s=0.5, val_batch_s=0.2, train_batches=10, val_batches=2)
    line = budget_summary(plan, plan.epochs, 9.5)
    assert f"bought **{plan.epochs} epoch(s)**" in line and "within the budget" in line
    assert "stopped after 1" in budget_summary(plan, 1, 11.0) and "over the budget" in budget_summary(plan, 1, 11.0)


def test_plan_check_names_a_measurement_far_off_the_epochs_pace():
    """A busy machine while measuring (seen: 2.6x slower, 15 epochs bought where 40 fitted) is
    reported in the summary; a faithful measurement is not; epochs slower than measured are."""
    plan = plan_epochs(2700, spent_before_s=10, train_batch_s=0.42, val_batch_s=0.04, train_batches=369, val_batches=82)

    def history(batch_s):
        return [{"epoch": e, "train_seconds": batch_s * 369 * (1 + 0.01 * e)} for e in range(1, 6)]

    busy = plan_check(plan, history(0.16))
    assert busy["ratio"] == pytest.approx(0.42 / (0.16 * 1.03)) and "busy" in busy["warning"]
    assert "**Warning:**" in budget_summary(plan, plan.epochs, 20.0, history(0.16))
    fine = plan_check(plan, history(0.40))
    assert fine["warning"] is None and "Warning" not in budget_summary(plan, plan.epochs, 44.0, history(0.40))
    assert "slower than measured" in plan_check(plan, history(0.60))["warning"]
    assert plan_check(None, history(0.16)) is None and plan_check(plan, []) is None
    assert plan_check(plan, [{"epoch": 1}]) is None
    tiny = plan_epochs(60, spent_before_s=1, train_batch_s=0.4, val_batch_s=0.1, train_batches=3, val_batches=1)
    assert plan_check(tiny, [{"epoch": 1, "train_seconds": 3.0}]) is None  # 3 batches: nothing to compare


def test_02_train_with_a_time_budget(synthetic_dir, tmp_path):
    """papermill -p time_budget: the plan is in the run's metrics, train.json and the report; the run
    trained the epochs it bought (one minute: enough for an epoch even on a busy 2-core machine, where
    loading alone took 24 s and 0.75 min bought none)."""
    import papermill

    reports = tmp_path / "reports"
    papermill.execute_notebook(str(ROOT / "notebooks" / "02_train.ipynb"), str(tmp_path / "out.ipynb"),
                               parameters={"data_dir": str(synthetic_dir), "reports_dir": str(reports),
                                           "run_name": "budget", "time_budget": 1.0, "image_size": 48,
                                           "max_samples": 60, "calibrate_tta": False},
                               kernel_name="python3", language="python", cwd=str(ROOT), progress_bar=False)
    run = reports / "runs" / "budget"
    train = json.loads((run / "metrics" / "train.json").read_text())
    plan = BudgetPlan.load(run / "metrics" / "budget.json")
    assert train["budget_plan"] == asdict(plan) and train["time_budget_min"] == 1.0
    assert plan.train_batches < CHECK_MIN_BATCHES and train["budget_check"] is None  # too short to compare
    assert plan.epochs >= 1 and train["epochs_run"] <= plan.epochs and train["minutes_taken"] > 0
    assert train["params"]["time_budget"] == 1.0
    report = (run / "sections" / "02_train.md").read_text()
    assert "Time budget **1 min** bought" in report


def test_the_training_script_takes_a_time_budget(synthetic_dir, tmp_path):
    """`python -m skin_utils.train --time-budget`: the plan is saved and the epochs it bought are trained
    (in the checkpoint's parameters), with the time taken in train.json."""
    import subprocess
    import sys

    from skin_utils.checkpoint import Checkpoint

    args = ["--data-dir", str(synthetic_dir), "--image-size", "48", "--max-samples", "60", "--time-budget", "0.75",
            "--encoder-weights", "none", "--num-workers", "0", "--split-path", str(tmp_path / "split.csv"),
            "--reports-dir", str(tmp_path), "--run-name", "script"]
    proc = subprocess.run([sys.executable, "-m", "skin_utils.train", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "script"
    plan = BudgetPlan.load(run / "metrics" / "budget.json")
    train = json.loads((run / "metrics" / "train.json").read_text())
    assert "Time budget 0.75 min" in proc.stdout
    assert train["budget_plan"] == asdict(plan) and train["minutes_taken"] > 0
    assert Checkpoint.load(run / "checkpoints" / "last.pt").params["epochs"] == plan.epochs >= train["epochs_run"]


def test_a_run_stopped_by_patience_is_not_blamed_on_the_machine():
    """Fewer epochs than the budget bought, after `patience` epochs without a better score: the report said
    'the machine ran slower than measured'."""
    from skin_utils.train import stopped_by

    plan = plan_epochs(600, spent_before_s=30, train_batch_s=0.5, val_batch_s=0.2, train_batches=40, val_batches=10)
    history = [{"epoch": e, "best": e <= 2, "train_seconds": 20.0} for e in range(1, 5)]  # none better after 2
    assert plan.epochs == 22 and stopped_by(history, plan.epochs, patience=2) == "patience"
    assert stopped_by(history, plan.epochs, patience=3) == "time" and stopped_by(history, 4, 2) is None
    line = budget_summary(plan, 4, 3.0, history, stopped_by="patience")
    assert "(stopped after 4 by patience: the validation score had stopped improving)" in line
    assert "slower" not in line
    assert "(stopped after 4: the machine ran slower than measured)" in budget_summary(plan, 4, 3.0, history, "time")
    assert "No time budget: 4 epoch(s) (stopped early by patience" in budget_summary(None, 4, 3.0, history, "patience")


def test_a_resumed_run_counts_the_time_of_its_earlier_starts(synthetic_dir, tmp_path):
    """minutes_taken is the whole run's: this start's clock plus the earlier starts' epochs (their seconds are in
    last.pt's history), as the budget's deadline counts them. It counted this start alone."""
    from skin_utils.checkpoint import Checkpoint
    from skin_utils.train import train

    cfg = TrainConfig(data_dir=str(synthetic_dir), image_size=32, max_samples=60, epochs=1, encoder_weights=None,
                      cls_weight=0.0, augment="none", amp="off", device="cpu", num_workers=0,  # no calibration: cheap
                      split_path=str(tmp_path / "split.csv"), reports_dir=str(tmp_path / "reports"), run_name="r")
    first = train(cfg, progress=False)
    ckpt = Checkpoint.load(first.run.last)
    ckpt.history[0]["epoch_seconds"] = 600.0  # an earlier start's epoch of ten minutes
    ckpt.save(first.run.last)
    again = train(TrainConfig(**{**cfg.to_dict(), "resume": True}), progress=False)
    assert again.summary["epochs_run"] == 1  # all done before: nothing left to train
    assert 10.0 < again.summary["minutes_taken"] < 10.0 + first.summary["minutes_taken"] + 1.0
