"""Training on several processes (torchrun, gloo on the CPU), ``compile``, and the samplers.

The two-process run is compared with one process at the same global batch (8 = 2 x 4), fed the
same images in the same order (a one-replica `DistributedSampler`):

* exactly: the number of optimiser steps and the learning rate of every epoch (so the global
  batch, the sharding and the schedule are right);
* approximately: the final validation loss, within ``VAL_LOSS_RTOL`` = 3 %. The runs cannot
  match exactly: each process normalises its BatchNorm layers over its own 4 images instead
  of 8, and draws its own dropout masks, and after a few AdamW steps (whose first update is
  the sign of the gradient) those small differences are as large as the updates themselves,
  so the weights are no good for a comparison. Measured on this set-up (120 synthetic images,
  48 px, 3 epochs, seeds 0, 1, 2): 0.9 %, 2.0 % and 0.2 %, while two broken versions land
  further off: each process training alone on its half (no gradient averaging) 3.5-9.8 %, one
  process with batch 4 (the global batch not multiplied) 4.8-11 %. With 60 images and 1-2
  epochs the validation loss hardly moves from its starting value, so it would not tell them
  apart: hence the slightly larger set-up.
"""

import copy
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, WeightedRandomSampler

from skin_utils import CLASS_NAMES, distributed, runs
from skin_utils.checkpoint import Checkpoint, load_model
from skin_utils.data import load_data, make_loader, train_class_counts, train_val_loaders
from skin_utils.engine import build_optimizer_and_schedule, evaluate, fit, seed_everything, unwrap_model
from skin_utils.losses import build_loss
from skin_utils.model import MultiTaskNet

VAL_LOSS_RTOL = 0.03
SIZE, PER_PROCESS, PROCESSES, EPOCHS, LR = 48, 4, 2, 3, 2e-3


# ----------------------------------------------------------------------------- samplers, no processes
def test_weighted_sampler_shards_one_draw_that_depends_on_seed_and_epoch_only():
    weights = np.r_[np.full(30, 1.0), np.full(5, 6.0)]
    shards = [distributed.DistributedWeightedSampler(weights, 35, seed=7, num_replicas=3, rank=r) for r in range(3)]
    for s in shards:
        s.set_epoch(4)
    draws = [list(s) for s in shards]
    assert [len(d) for d in draws] == [len(s) for s in shards] == [12, 12, 12]  # ceil(35 / 3), padded
    again = distributed.DistributedWeightedSampler(weights, 35, seed=7, num_replicas=3, rank=1)
    again.set_epoch(4)
    assert list(again) == draws[1]  # a fresh sampler (a resumed run) draws the same
    interleaved = [draws[i % 3][i // 3] for i in range(36)]
    g = torch.Generator().manual_seed(7 + 4)
    assert interleaved == torch.multinomial(torch.as_tensor(weights), 36, True, generator=g).tolist()
    again.set_epoch(5)
    assert list(again) != draws[1]
    rare = np.isin(np.concatenate(draws), np.arange(30, 35)).mean()
    assert rare > 0.25  # 5 images with 6x the weight: half of the draws in expectation, 1/7 unweighted
    cut = distributed.DistributedWeightedSampler(weights, 35, seed=7, num_replicas=3, rank=0, drop_last=True)
    assert len(cut) == len(list(cut)) == 11


def test_a_single_process_keeps_its_own_samplers():
    """Outside a process group nothing changes: the notebook's loaders are today's."""
    dataset = list(range(10))
    loader = make_loader(dataset, 4, "cpu", shuffle=True, num_workers=0)
    assert isinstance(loader.sampler, RandomSampler)
    weighted = WeightedRandomSampler(torch.ones(10), 10)
    assert make_loader(dataset, 4, "cpu", sampler=weighted, num_workers=0).sampler is weighted
    assert distributed.shard_sampler(dataset, None, shuffle=True) is None
    assert distributed.init_distributed(torch.device("cpu")) == torch.device("cpu")  # no torchrun variables
    assert (distributed.world_size(), distributed.rank(), distributed.is_main_process()) == (1, 0, True)


# ----------------------------------------------------------------------------- compile and wrappers
def test_compiled_training_writes_plain_checkpoints(synthetic_dir, tmp_path, monkeypatch):
    """``compile=True`` trains through torch.compile, and best.pt/last.pt hold the plain
    model's keys (no ``_orig_mod.``). Inductor needs ~40 s to compile this model on 2 CPU
    cores, so torch.compile runs here with the "eager" backend: the same wrapper (TorchDynamo
    traces the model, the prefixed state dict), without generating kernels."""
    real_compile = torch.compile
    compiled = []

    def eager_compile(model, **kw):
        compiled.append(model)
        return real_compile(model, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    data = load_data(synthetic_dir, 32, split_path=tmp_path / "split.csv", max_samples=60, progress=False)
    torch.manual_seed(0)
    model = MultiTaskNet(encoder_weights=None)
    loss_fn = build_loss(train_class_counts(data), class_balance="none")
    train, val, _ = train_val_loaders(data, 8, "cpu", augment="none", num_workers=0)
    opt, sched = build_optimizer_and_schedule(model, 1e-3, 0.0, 1, len(train), "constant")
    fit(model, train, val, loss_fn=loss_fn, optimizer=opt, scheduler=sched, epochs=1, device="cpu",
        checkpoint_dir=tmp_path, class_names=CLASS_NAMES, image_size=32, amp="off", progress=False, compile=True)
    assert compiled == [model]
    assert "_orig_mod." in next(iter(real_compile(model, backend="eager").state_dict()))  # what we avoid
    for name in ("best.pt", "last.pt"):
        ckpt = Checkpoint.load(tmp_path / name)
        assert not [k for k in ckpt.model if k.startswith("_orig_mod.")]
        assert ckpt.model.keys() == model.state_dict().keys()
    loaded, _ = load_model(tmp_path / "last.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_unwrap_model_strips_compile_and_ddp(tmp_path):
    model = torch.nn.Linear(3, 2)
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        wrapped = torch.compile(torch.nn.parallel.DistributedDataParallel(model), backend="eager")
        assert unwrap_model(wrapped) is model and unwrap_model(model) is model
        assert distributed.world_size() == 1  # a group of one: fit keeps the plain model
        assert distributed.wrap_model(model, torch.device("cpu")) is model
    finally:
        torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------- two processes
@pytest.fixture(scope="module")
def demo120(tmp_path_factory):
    from skin_utils.demo import make_synthetic_dataset

    return make_synthetic_dataset(tmp_path_factory.mktemp("demo120") / "demo", n_images=120, image_size=(48, 64),
                                  seed=0)


def _train_args(data_dir, tmp_path, batch_size, run_name, *extra):
    return ["--data-dir", str(data_dir), "--image-size", str(SIZE), "--epochs", str(EPOCHS),
            "--batch-size", str(batch_size), "--lr", str(LR), "--encoder-weights", "none", "--augment", "none",
            "--amp", "off", "--num-workers", "0", "--split-path", str(tmp_path / "split.csv"),
            "--reports-dir", str(tmp_path), "--run-name", run_name, *extra]


def _torchrun(args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node", str(PROCESSES), "-m", "skin_utils.train", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _single_process_same_global_batch(data_dir, tmp_path):
    """What `skin_utils.train` does in one process, with batch 8 drawn by a one-replica
    DistributedSampler: the same images per step as the two processes together. Validation
    uses the per-process batch, as rank 0 does (the class-weighted loss of a batch depends on
    the batch)."""
    seed_everything(0)
    data = load_data(data_dir, SIZE, split_path=tmp_path / "split.csv", progress=False)
    model = MultiTaskNet(num_classes=len(CLASS_NAMES), encoder_weights="none")
    loss_fn = build_loss(train_class_counts(data), 1.0, 1.0, "weighted_loss", 0.4, 0.1)
    shuffled, val, _ = train_val_loaders(data, PER_PROCESS, "cpu", augment="none", num_workers=0)
    dataset = shuffled.dataset
    train = DataLoader(dataset, PER_PROCESS * PROCESSES, drop_last=True,
                       sampler=DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=0))
    initial = evaluate(copy.deepcopy(model), val, "cpu", CLASS_NAMES, loss_fn=loss_fn, progress=False)
    opt, sched = build_optimizer_and_schedule(model, LR, 1e-4, EPOCHS, len(train), "onecycle")
    history = fit(model, train, val, loss_fn=loss_fn, optimizer=opt, scheduler=sched, epochs=EPOCHS,
                  device="cpu", checkpoint_dir=tmp_path / "single", class_names=CLASS_NAMES, image_size=SIZE,
                  amp="off", progress=False)
    return history, Checkpoint.load(tmp_path / "single" / "last.pt"), initial


@pytest.fixture(scope="module")
def ddp_run(demo120, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    load_data(demo120, SIZE, split_path=tmp / "split.csv", progress=False)  # split and cache made once
    t0 = time.perf_counter()
    proc = _torchrun(_train_args(demo120, tmp, PER_PROCESS, "ddp"))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-4000:]
    return tmp, time.perf_counter() - t0, out


def test_two_processes_train_like_one_with_the_same_global_batch(demo120, ddp_run):
    tmp, seconds, out = ddp_run
    run = runs.find_run("latest", tmp / "runs")
    assert run.name == "ddp" and sorted(p.name for p in (tmp / "runs").iterdir()) == ["LATEST", "ddp"]
    # rank 0 alone wrote: one best.pt and one last.pt, no temporary or per-rank files
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["best.pt", "last.pt"]
    assert sorted(p.name for p in run.metrics.iterdir()) == ["train.json"]
    assert out.count("epoch 1/3 ") == 1 and "global batch 8 (4 per process)" in out  # rank 0 alone prints
    ddp = Checkpoint.load(run.last)
    assert ddp.epoch == EPOCHS - 1 and len(ddp.history) == EPOCHS and ddp.params["world_size"] == PROCESSES

    history, single, initial = _single_process_same_global_batch(demo120, tmp)
    # exactly: as many optimiser steps per epoch, the same learning rate at the end of each epoch
    steps = single.training.scheduler["last_epoch"]
    assert steps == EPOCHS * (ddp.data["images_per_split"]["train"] // (PER_PROCESS * PROCESSES))
    assert ddp.training.scheduler["last_epoch"] == steps
    assert ddp.training.optimizer["state"][0]["step"] == single.training.optimizer["state"][0]["step"] == steps
    assert [r["lr"] for r in ddp.history] == pytest.approx([r["lr"] for r in history], rel=1e-12)
    # approximately: the validation loss (see the module docstring for the tolerance)
    ddp_loss, single_loss = ddp.history[-1]["val_loss"], history[-1]["val_loss"]
    assert abs(single_loss - initial["loss"]) > 3 * VAL_LOSS_RTOL * single_loss  # training moved it (11 %): a real test
    assert ddp_loss == pytest.approx(single_loss, rel=VAL_LOSS_RTOL), (ddp_loss, single_loss, initial["loss"])


def test_an_interrupted_two_process_run_resumes_to_the_same_weights(demo120, ddp_run, tmp_path):
    """Stopped after an epoch (SIGTERM to torchrun, which stops its workers: what a cancelled
    cluster job gets), continued with --resume: the weights equal those of the uninterrupted
    two-process run bit for bit (each epoch's order and randomness depend on the seed, the
    epoch and the rank only)."""
    tmp, _, _ = ddp_run
    args = _train_args(demo120, tmp, PER_PROCESS, "cut")
    victim = _torchrun(args)
    last = tmp / "runs" / "cut" / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if last.is_file() and Checkpoint.load(last).epoch == 0:
            victim.terminate()
            break
        time.sleep(0.1)
    victim.communicate()
    assert victim.returncode != 0, "the run finished before it could be interrupted"
    assert Checkpoint.load(last).epoch < EPOCHS - 1
    resumed = _torchrun([*args, "--resume"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-4000:]
    assert "Resumed from" in out
    a, b = Checkpoint.load(tmp / "runs" / "ddp" / "checkpoints" / "last.pt"), Checkpoint.load(last)
    assert a.epoch == b.epoch == EPOCHS - 1
    for key, tensor in a.model.items():
        assert torch.equal(tensor, b.model[key]), key
    assert [r["val_loss"] for r in a.history] == [r["val_loss"] for r in b.history]



# ----------------------------------------------------------------------------- a time budget under torchrun
def test_train_one_epoch_waits_for_the_other_processes_only_with_a_ddp_model(tmp_path, monkeypatch):
    """The time budget is measured on rank 0 alone, on a plain copy of the model: that epoch must not call a
    collective, which the other processes (waiting for the plan) never join. A DDP model's epoch still
    averages its losses and stops on a non-finite loss together with the others, compiled or not."""
    from skin_utils.engine import train_one_epoch

    reductions = []
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda tensor, op=None: reductions.append(tensor.numel()))
    monkeypatch.setattr(distributed, "world_size", lambda: 2)  # as under torchrun
    class Tiny(torch.nn.Module):  # a mask and a diagnosis, as MultiTaskNet gives them
        def __init__(self):
            super().__init__()
            self.mask, self.cls = torch.nn.Conv2d(3, 1, 1), torch.nn.Linear(3, len(CLASS_NAMES))

        def forward(self, x):
            return self.mask(x), self.cls(x.mean((2, 3)))

    batches = [(torch.full((2, 3, 8, 8), 100, dtype=torch.uint8), torch.ones(2, 1, 8, 8, dtype=torch.uint8),
                torch.tensor([0, 1]), torch.arange(2))] * 2
    model = Tiny().to(memory_format=torch.channels_last)  # as fit wraps it
    loss_fn = build_loss([5, 3, 2, 1, 1, 1, 1], class_balance="none")

    def epoch(runner):
        reductions.clear()
        train_one_epoch(runner, batches, loss_fn, torch.optim.SGD(model.parameters(), lr=0.0), "cpu", progress=False)
        return list(reductions)

    assert epoch(model) == []  # plain: what measure_batch_seconds trains
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        assert epoch(ddp) == [1, 4]  # the first bad batch at the one refresh, then the loss sums and images
        assert epoch(torch.compile(ddp, backend="eager")) == [1, 4]
    finally:
        torch.distributed.destroy_process_group()


def test_a_two_process_run_with_a_time_budget_plans_and_trains(demo120, tmp_path):
    """torchrun + time_budget: rank 0 measures while the others wait for its plan. The measurement's epoch
    called a collective the others never joined, and the run hung. Here the budget is capped at one epoch
    (`budget.MAX_EPOCHS`), so the run costs its start, the measurement and one epoch."""
    from tests.conftest import ROOT

    script = tmp_path / "one_epoch_budget.py"
    script.write_text("import sys\nfrom skin_utils import budget\nbudget.MAX_EPOCHS = 1\n"
                      "from skin_utils.train import main\nsys.exit(main(sys.argv[1:]))\n")
    args = [*_train_args(demo120, tmp_path, PER_PROCESS, "budget"), "--time-budget", "5", "--no-calibrate-tta"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                             str(PROCESSES), str(script), *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        proc.terminate()  # torchrun stops its workers
        proc.communicate()
        pytest.fail("torchrun with a time budget did not finish in 180 s: the processes wait for each other")
    assert proc.returncode == 0, err[-4000:]
    assert "Time budget 5 min: 1 epoch(s)" in out
    ckpt = Checkpoint.load(tmp_path / "runs" / "budget" / "checkpoints" / "last.pt")
    assert ckpt.params["epochs"] == 1 and len(ckpt.history) == 1 and ckpt.params["world_size"] == PROCESSES
