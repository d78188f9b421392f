"""Training behaviour on the synthetic demo: it learns, it resumes exactly, it stops on NaN; and the
one prediction loop (predict): TTA views and Grad-CAM on request."""

import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skin_utils import CLASS_NAMES
from skin_utils.checkpoint import Checkpoint, CheckpointError, TrainingState, load_model
from skin_utils.transforms import BatchColorJitter, Normalize
from skin_utils.engine import (NonFiniteLossError, build_optimizer_and_schedule, evaluate, fit, forward_probs,
                               grad_cam, image_batch, predict, train_one_epoch, weight_average)
from skin_utils.losses import MultiTaskLoss, class_weights_from_counts
from skin_utils.model import MultiTaskNet, lesion_weighted
from skin_utils.data import load_data, train_class_counts, train_val_loaders


def _setup(data, seed=0, epochs=2, lr=3e-3, batch_size=16, num_workers=0, augment="standard"):
    torch.manual_seed(seed)
    model = MultiTaskNet(encoder_weights=None)
    loss_fn = MultiTaskLoss(1.0, 1.0, class_weights=class_weights_from_counts(train_class_counts(data), 0.5))
    train, val, _ = train_val_loaders(data, batch_size, "cpu", seed=seed, num_workers=num_workers, augment=augment)
    opt, sched = build_optimizer_and_schedule(model, lr, 1e-4, epochs, len(train))
    return model, loss_fn, train, val, opt, sched


@pytest.fixture(scope="module")
def demo(synthetic_dir, tmp_path_factory):
    return load_data(synthetic_dir, 64, split_path=tmp_path_factory.mktemp("split") / "split.csv", progress=False)


def test_short_training_learns_both_tasks(demo, tmp_path):
    epochs = 6
    model, loss_fn, train, val, opt, sched = _setup(demo, epochs=epochs)
    history = fit(model, train, val, loss_fn=loss_fn, optimizer=opt, scheduler=sched, epochs=epochs,
                  device="cpu", checkpoint_dir=tmp_path, class_names=CLASS_NAMES, amp="off",
                  image_size=64, batch_transform=BatchColorJitter(0.1), progress=False)
    best = max(history, key=lambda r: r["score"])
    chance_balanced = 1 / len(CLASS_NAMES)
    assert best["val_dice"] > 0.6, history
    assert best["val_balanced_accuracy"] > chance_balanced + 0.1, history
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "last.pt").is_file()


class Counting(BatchColorJitter):
    calls = 0

    def forward(self, x):
        Counting.calls += 1
        return super().forward(x)


def test_checkpoint_round_trip_gives_identical_predictions(demo, tmp_path):
    model, loss_fn, train, val, opt, sched = _setup(demo, epochs=1)
    Counting.calls = 0
    fit(model, train, val, loss_fn=loss_fn, optimizer=opt, scheduler=sched, epochs=1, device="cpu",
        checkpoint_dir=tmp_path, class_names=CLASS_NAMES, amp="off", image_size=64, batch_transform=Counting(),
        params={"epochs": 1, "image_size": 64}, data=demo.describe(), split_path="split.csv", progress=False)
    assert Counting.calls == len(train)  # the transform fit was given augments every training batch
    loaded, ckpt = load_model(tmp_path / "best.pt")
    loaded.to(memory_format=torch.channels_last)  # as it was trained: same kernels, same bits
    model.eval()
    x = torch.randn(3, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x)):
            assert torch.equal(a, b)
    assert ckpt.class_names == list(CLASS_NAMES) and ckpt.image_size == (64, 64)
    assert ckpt.params == {"epochs": 1, "image_size": 64} and ckpt.data == demo.describe()
    assert (ckpt.epoch, ckpt.split_path, ckpt.selection) == (0, "split.csv", "balanced_accuracy+dice")
    assert ckpt.encoder_weights_used == model.encoder_weights_used
    assert ckpt.metrics == {k[4:]: v for k, v in ckpt.history[0].items() if k.startswith("val_")}
    assert ckpt.training is None and Checkpoint.load(tmp_path / "last.pt").training is not None


def test_weight_average_is_a_moving_average_of_weights_and_batchnorm_statistics():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    assert weight_average(model, None) is None
    with pytest.raises(ValueError, match="ema_decay=1.0"):
        weight_average(model, 1.0)
    ema = weight_average(model, 0.9)
    seen = []
    for _ in range(3):
        with torch.no_grad():
            for t in (*model.parameters(), model[1].running_mean):
                t.copy_(torch.randn_like(t))
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        ema.update_parameters(model)
    for key in ("0.weight", "0.bias", "1.running_mean"):
        expected = seen[0][key]  # the first update copies
        for later in seen[1:]:
            expected = 0.9 * expected + 0.1 * later[key]
        torch.testing.assert_close(ema.module.state_dict()[key], expected)
    assert int(ema.n_averaged) == 3


def test_a_run_with_a_weight_average_validates_keeps_and_resumes_the_average(demo, tmp_path):
    def run(folder, epochs, resume=False, ema_decay=0.9):
        model, loss_fn, train, val, opt, sched = _setup(demo, epochs=3)  # the schedule of a 3-epoch run
        history = fit(model, train, val, loss_fn=loss_fn, optimizer=opt, scheduler=sched, epochs=epochs,
                      device="cpu", checkpoint_dir=folder, class_names=CLASS_NAMES, amp="off", image_size=64,
                      resume=resume, progress=False, ema_decay=ema_decay)
        return model, loss_fn, train, val, history

    model, loss_fn, train, val, history = run(tmp_path / "whole", 3)
    last = Checkpoint.load(tmp_path / "whole" / "last.pt")
    assert all(torch.equal(last.training.weights[k], v) for k, v in model.state_dict().items())  # the optimiser's
    assert not all(torch.equal(last.model[k], last.training.weights[k]) for k in last.model)  # the average
    assert (last.training.ema_decay, last.training.ema_updates) == (0.9, 3 * len(train))
    # What was validated is the average: scoring last.pt's model again gives the last epoch's figures.
    averaged, _ = load_model(tmp_path / "whole" / "last.pt")
    again = evaluate(averaged.to(memory_format=torch.channels_last), val, "cpu", CLASS_NAMES, loss_fn=loss_fn,
                     progress=False)
    assert again["balanced_accuracy"] == history[-1]["val_balanced_accuracy"]
    assert again["dice"] == pytest.approx(history[-1]["val_dice"], abs=1e-6)
    assert again["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    # Stopped after 2 of 3 epochs and resumed: the same average and the same weights.
    run(tmp_path / "cut", 2)
    run(tmp_path / "cut", 3, resume=True)
    cut = Checkpoint.load(tmp_path / "cut" / "last.pt")
    for key in last.model:
        assert torch.equal(cut.model[key], last.model[key]), key
        assert torch.equal(cut.training.weights[key], last.training.weights[key]), key
    with pytest.raises(CheckpointError, match="ema_decay=0.9"):
        run(tmp_path / "cut", 3, resume=True, ema_decay=None)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    model = MultiTaskNet(encoder_weights=None)
    opt, sched = build_optimizer_and_schedule(model, 1e-3, 0.0, 2, 5)
    kw = dict(loss_fn=MultiTaskLoss(), optimizer=opt, scheduler=sched, epochs=2, device="cpu",
              checkpoint_dir=tmp_path, class_names=CLASS_NAMES, amp="off", resume=True, progress=False)
    ckpt = Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES),
                      image_size=64, epoch=0, best_score=1.0)
    ckpt.save(tmp_path / "last.pt")  # like best.pt: no training state
    with pytest.raises(CheckpointError, match="holds no training state"):
        fit(model, None, None, image_size=64, **kw)
    ckpt.training = TrainingState(optimizer=opt.state_dict(), scheduler=sched.state_dict())
    ckpt.save(tmp_path / "last.pt")
    with pytest.raises(CheckpointError, match=r"image size \(H, W\) \(64, 64\), this run has \(128, 128\)"):
        fit(model, None, None, image_size=128, **kw)


class MaskInImage(torch.utils.data.Dataset):
    """Images whose red channel is the mask (255 inside); no ``masks`` attribute, and rows that
    point nowhere: `evaluate` must take the true masks from the batches."""

    def __init__(self, n=14, size=32, wrong_masks=False):
        self.m = (torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(0)) > 0.5).to(torch.uint8)
        self.wrong_masks = wrong_masks

    def __len__(self):
        return len(self.m)

    def __getitem__(self, i):
        image = (self.m[i] * 255).expand(3, -1, -1).clone()
        mask = 1 - self.m[i] if self.wrong_masks else self.m[i]
        return image, mask, i % 7, 10_000 + i


class RedIsLesion(torch.nn.Module):
    """Mask logit = normalised red channel (> 0 exactly where the red channel is 255)."""

    def forward(self, images):
        return images[:, :1], torch.zeros(len(images), 7)


def test_evaluate_scores_against_the_masks_in_the_batches():
    right = torch.utils.data.DataLoader(MaskInImage(), batch_size=4)
    wrong = torch.utils.data.DataLoader(MaskInImage(wrong_masks=True), batch_size=4)
    assert evaluate(RedIsLesion(), right, "cpu", CLASS_NAMES, progress=False)["dice"] == pytest.approx(1.0)
    assert evaluate(RedIsLesion(), wrong, "cpu", CLASS_NAMES, progress=False)["dice"] == pytest.approx(0.0)


def test_train_one_epoch_uses_the_batch_transform_it_is_given(demo):
    model, loss_fn, train, val, opt, sched = _setup(demo)

    class Record(torch.nn.Module):
        seen = []

        def forward(self, x):
            Record.seen.append((x.dtype, float(x.min()), float(x.max())))
            return x

    train_one_epoch(model, train, loss_fn, opt, "cpu", batch_transform=Record(), max_batches=2, progress=False)
    assert len(Record.seen) == 2  # once per batch, on floats in [0, 1] (before normalisation)
    assert all(dtype == torch.float32 and lo >= 0 and hi <= 1 for dtype, lo, hi in Record.seen)
    # without one, the batches are only normalised
    train_one_epoch(model, train, loss_fn, opt, "cpu", max_batches=1, progress=False)


def test_non_finite_loss_stops_with_epoch_and_batch(demo):
    model, loss_fn, train, val, opt, sched = _setup(demo)

    class NaNAfter(MultiTaskLoss):
        calls = 0

        def forward(self, *args):
            out = super().forward(*args)
            NaNAfter.calls += 1
            if NaNAfter.calls == 3:
                out["loss"] = out["loss"] * float("nan")
            return out

    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 3 of"):
        train_one_epoch(model, train, NaNAfter(), opt, "cpu", epoch=1, progress=False, refresh_every=1)


RUN = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {root!r})
    from tests.test_engine import _setup
    from skin_utils import CLASS_NAMES
    from skin_utils.engine import fit
    from skin_utils.data import load_data
    from skin_utils.transforms import BatchColorJitter
    torch.set_num_threads(1)
    data = load_data({data!r}, 64, split_path={split!r}, max_samples=160, progress=False)
    # a loader worker (any CUDA machine has them) draws the flips: resume must reseed it too
    model, loss_fn, train, val, opt, sched = _setup(data, epochs=4, num_workers=1, augment="flips")
    fit(model, train, val, loss_fn=loss_fn, optimizer=opt, scheduler=sched, epochs=4, device="cpu",
        checkpoint_dir={ckpt!r}, class_names=CLASS_NAMES, amp="off", resume=True, progress=False,
        image_size=64, batch_transform=BatchColorJitter(0.1))
""")


def _run(script, **kw):
    return subprocess.Popen([sys.executable, "-c", RUN.format(**kw)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_killed_run_resumes_to_the_same_weights(synthetic_dir, tmp_path):
    from tests.conftest import ROOT

    kw = dict(root=str(ROOT), data=str(synthetic_dir), split=str(tmp_path / "split.csv"))
    # Uninterrupted reference run.
    ref = _run(RUN, ckpt=str(tmp_path / "ref"), **kw)
    assert ref.wait(timeout=600) == 0, ref.stderr.read().decode()[-2000:]
    # Interrupted run: killed (SIGKILL) once the second epoch's checkpoint appears.
    victim = _run(RUN, ckpt=str(tmp_path / "cut"), **kw)
    last = tmp_path / "cut" / "last.pt"
    deadline = time.time() + 600
    while time.time() < deadline and victim.poll() is None:
        if last.is_file() and Checkpoint.load(last).epoch >= 1:
            victim.kill()
            break
        time.sleep(0.2)
    victim.wait()
    assert victim.returncode != 0, "the run finished before it could be interrupted"
    assert Checkpoint.load(last).epoch < 3  # the killed run really stopped early, checkpoint readable
    # Resume to the end.
    resumed = _run(RUN, ckpt=str(tmp_path / "cut"), **kw)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-2000:]
    a, b = Checkpoint.load(tmp_path / "ref" / "last.pt"), Checkpoint.load(last)
    assert a.epoch == b.epoch == 3
    assert len(b.history) == 4
    for key, tensor in a.model.items():
        assert torch.equal(tensor, b.model[key]), key


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 6, 9, 10, 40])
def test_onecycle_schedule_works_for_very_short_runs(steps):
    """OneCycleLR divides by zero when its warm-up is under two steps (5 steps in all, say)."""
    model = torch.nn.Linear(2, 2)
    optimizer, scheduler = build_optimizer_and_schedule(model, 1e-2, 0.0, epochs=1, steps_per_epoch=steps)
    lrs = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert all(0 < lr <= 1e-2 + 1e-12 for lr in lrs)


# --------------------------------------------------------------------------------------------
# the prediction loop: per-view outputs and Grad-CAM on request
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return MultiTaskNet(num_classes=len(CLASS_NAMES), encoder_weights=None).eval()


@pytest.mark.parametrize("shape, views", [((32, 32), 8), ((32, 48), 4)])
def test_forward_probs_returns_the_views_it_averages(tiny_model, shape, views):
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        m, p = forward_probs(tiny_model, x, tta=True)
        m2, p2, vm, vp = forward_probs(tiny_model, x, tta=True, return_views=True)
        plain_m, plain_p = forward_probs(tiny_model, x)
        _, _, one_m, one_p = forward_probs(tiny_model, x, return_views=True)
    assert vm.shape == (views, 2, *shape) and vp.shape == (views, 2, len(CLASS_NAMES))
    assert torch.allclose(m, m2) and torch.allclose(p, p2)
    assert torch.allclose(vp.mean(0), p, atol=1e-6) and torch.allclose(vm.mean(0), m, atol=1e-6)
    assert torch.allclose(vp[0], plain_p, atol=1e-6) and torch.allclose(vm[0], plain_m, atol=1e-6)  # view 0: as is
    assert one_p.shape == (1, 2, len(CLASS_NAMES)) and torch.equal(one_p[0], plain_p) and torch.equal(one_m[0], plain_m)


def _batches(n=5, size=32, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch):
        b = min(batch, n - start)
        out.append((torch.randint(0, 256, (b, 3, size, size), generator=g, dtype=torch.uint8),
                    torch.randint(0, 2, (b, 1, size, size), generator=g, dtype=torch.uint8),
                    torch.randint(0, len(CLASS_NAMES), (b,), generator=g), torch.arange(start, start + b)))
    return out


def test_predict_keeps_its_default_and_adds_views_on_request(tiny_model):
    batches = _batches()
    plain = predict(tiny_model, batches, "cpu", progress=False, tta=True)
    assert set(plain) == {"probs", "mask_probs", "labels", "rows"}
    full = predict(tiny_model, batches, "cpu", progress=False, tta=True, return_views=True)
    assert np.allclose(full["probs"], plain["probs"]) and torch.equal(full["mask_probs"], plain["mask_probs"])
    assert full["view_probs"].shape == (8, 5, len(CLASS_NAMES))
    assert np.allclose(full["view_probs"].mean(0), full["probs"], atol=1e-5)
    assert full["mask_var"].shape == (5, 32, 32) and float(full["mask_var"].min()) >= 0
    no_tta = predict(tiny_model, batches, "cpu", progress=False, return_views=True)
    assert no_tta["view_probs"].shape == (1, 5, len(CLASS_NAMES)) and "mask_var" not in no_tta
    # features: what the classification head reads, pooled over the map (its linear layer gives the logits)
    feats = predict(tiny_model, batches, "cpu", progress=False, features=True)["features"]
    assert feats.shape == (5, 512)
    head = tiny_model.classification_head[-1]
    logits = head(torch.from_numpy(feats)).softmax(1).detach().numpy()
    assert np.allclose(logits, predict(tiny_model, batches, "cpu", progress=False)["probs"], atol=1e-5)
    with_tta = predict(tiny_model, batches, "cpu", progress=False, tta=True, features=True)
    assert np.allclose(with_tta["features"], feats, atol=1e-5)  # the plain view's, not another view's

def test_predict_gives_the_grad_cam_of_the_predicted_or_a_given_class(tiny_model):
    batches = _batches(n=3, batch=2)
    out = predict(tiny_model, batches, "cpu", progress=False, tta=True, cam=True)
    assert out["cams"].shape == (3, 32, 32) and out["cam_classes"].tolist() == out["probs"].argmax(1).tolist()
    given = predict(tiny_model, batches, "cpu", progress=False, cam=[6, 5, 4])
    assert given["cam_classes"].tolist() == [6, 5, 4]
    x = Normalize()(torch.cat([b[0] for b in batches]))
    expected, _ = grad_cam(tiny_model, x, target=[6, 5, 4])
    np.testing.assert_allclose(given["cams"], expected, atol=1e-5)
    # a batch from images alone: labels -1, no masks
    alone = predict(tiny_model, [image_batch(batches[0][0])], "cpu", progress=False)
    assert alone["labels"].tolist() == [-1, -1] and alone["rows"].tolist() == [0, 1]
    assert "cams" not in alone


# ----------------------------------------------------------------------------- Grad-CAM
class LinearCamNet(nn.Module):
    """Features = the input itself (at full resolution), global average pool, linear layer: its
    Grad-CAM is exactly the class activation map ``ReLU(sum_k W[c, k] x_k)`` (Zhou et al. 2016)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Identity()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def test_grad_cam_known_answer_on_a_linear_model():
    torch.manual_seed(0)
    model = LinearCamNet()
    x = torch.randn(2, 3, 6, 5)
    cams, classes = grad_cam(model, x, layer=model.features)
    np.testing.assert_array_equal(classes, model(x).argmax(1).numpy())
    w = model.fc.weight.detach()
    for i, c in enumerate(classes):
        expected = torch.einsum("k,khw->hw", w[c], x[i]).clamp_min(0)
        expected = (expected / expected.max()).numpy()
        np.testing.assert_allclose(cams[i], expected, rtol=1e-5, atol=1e-6)
    # an explicit target class
    cams1, classes1 = grad_cam(model, x, target=1, layer=model.features)
    assert (classes1 == 1).all()
    expected = torch.einsum("k,khw->hw", w[1], x[0]).clamp_min(0)
    np.testing.assert_allclose(cams1[0], (expected / expected.max()).numpy(), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return MultiTaskNet(num_classes=7, encoder_weights=None)


def test_grad_cam_on_multitasknet(net):
    net.train()
    x = torch.randn(2, 3, 64, 64)
    running = net.encoder.stem[1].running_mean.clone()
    with torch.inference_mode():  # as inference code calls it
        x_inf = x.clone()
    cams, classes = grad_cam(net, x_inf)
    assert cams.shape == (2, 64, 64) and cams.dtype == np.float32
    assert np.isfinite(cams).all() and cams.min() >= 0 and cams.max() <= 1
    assert classes.shape == (2,) and ((0 <= classes) & (classes < 7)).all()
    # no side effects: modes, hooks, gradients, BatchNorm statistics
    assert all(m.training for m in net.modules())
    assert all(not m._forward_hooks and not m._backward_hooks for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    torch.testing.assert_close(net.encoder.stem[1].running_mean, running)
    # eval mode stays eval mode; the explained class is the eval-mode prediction
    net.eval()
    cams2, classes2 = grad_cam(net, x)
    assert not net.training
    with torch.no_grad():
        np.testing.assert_array_equal(classes2, net(x)[1].argmax(1).numpy())
    np.testing.assert_allclose(cams2, cams, atol=1e-5)


def test_grad_cam_gives_each_location_its_exact_share_of_the_logit_with_lesion_pooling():
    """The head is linear in layer4's activations: the map is ReLU(sum_k W_ck A_k(x, y) w(x, y)), w the lesion
    pooling's detached weights (frame pooling, w = 1: the known answer above). Grad-CAM's averaged gradient
    dropped w, so a lesion-pooled model's heat spread over the frame."""
    class LeftHalfLesion(nn.Module):  # a sharp mask: the lesion's pool differs from the frame's
        def forward(self, x):
            out = torch.full_like(x[:, :1], -10.0)
            out[..., : x.shape[-1] // 2] = 10.0
            return out

    torch.manual_seed(0)
    model = MultiTaskNet(encoder_weights=None, pooling="lesion").eval()
    model.segmentation_head = LeftHalfLesion()
    x = torch.randn(2, 3, 64, 64)
    cams, classes = grad_cam(model, x)
    with torch.no_grad():
        features = model.encoder(x)
        weighted = lesion_weighted(features[-1], model.segmentation_head(model.decoder(features, out_size=(64, 64))))
        exact = torch.einsum("nc,nchw->nhw", model.classification_head[-1].weight[torch.as_tensor(classes)], weighted)
    exact = F.interpolate(exact.clamp_min(0)[:, None], size=(64, 64), mode="bilinear", align_corners=False)[:, 0]
    np.testing.assert_allclose(cams, (exact / exact.amax(dim=(1, 2), keepdim=True)).numpy(), atol=1e-4)


def test_grad_cam_errors(net):
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="target"):
        grad_cam(net, x, target=[0, 1])
    with pytest.raises(ValueError, match="layer"):
        grad_cam(nn.Linear(3, 2), x)
    assert all(not m._forward_hooks for m in net.modules())  # removed on error too


def test_predict_leaves_no_feature_hook_behind_when_the_loader_fails():
    from skin_utils.engine import image_batch, predict
    from skin_utils.model import MultiTaskNet

    model = MultiTaskNet(encoder_weights=None).eval()

    def broken():
        yield image_batch(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        predict(model, broken(), "cpu", progress=False, features=True)
    assert not model.classification_head._forward_pre_hooks


def test_resume_refuses_other_settings_and_names_them(tmp_path):
    """last.pt's optimiser and schedule are its run's: resuming with another lr (the old schedule went on, the new
    lr was recorded), more epochs (onecycle failed, cosine restarted) or other data is refused, naming the knob;
    where files go and what runs the training may change."""
    model = MultiTaskNet(encoder_weights=None)
    params = {"epochs": 2, "lr": 2e-3, "lr_schedule": "onecycle", "num_workers": 0, "resume": False}
    opt, sched = build_optimizer_and_schedule(model, 2e-3, 0.0, 2, 5)
    Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES), image_size=64,
               epoch=1, best_score=1.0, params=params, data={"fingerprint": "f00"},  # the finished run of 2 epochs
               training=TrainingState(optimizer=opt.state_dict(), scheduler=sched.state_dict())
               ).save(tmp_path / "last.pt")

    def resume(data=None, **changed):
        p = {**params, **changed}
        opt, sched = build_optimizer_and_schedule(model, p["lr"], 0.0, p["epochs"], 5)
        return fit(model, None, None, loss_fn=MultiTaskLoss(), optimizer=opt, scheduler=sched, epochs=p["epochs"],
                   device="cpu", checkpoint_dir=tmp_path, class_names=CLASS_NAMES, image_size=64, amp="off",
                   resume=True, progress=False, params=p, data=data or {"fingerprint": "f00"})

    with pytest.raises(CheckpointError, match=r"\(lr: 0\.002 in last\.pt, 0\.0002 now\)\. Resume with the run's own"):
        resume(lr=2e-4)
    with pytest.raises(CheckpointError, match=r"\(epochs: 2 in last\.pt, 3 now\)\. The learning-rate schedule .* "
                                              r"cannot be lengthened"):
        resume(epochs=3)
    with pytest.raises(CheckpointError, match=r"data fingerprint: 'f00' in last\.pt, 'bad' now; lr: 0\.002"):
        resume(data={"fingerprint": "bad"}, lr=1e-3)
    assert resume(num_workers=4, resume=True) == []  # accepted: last.pt had finished, nothing is left to train


def test_the_loss_leaves_out_images_without_a_diagnosis():
    """Label -1 (no diagnosis: a masks-only folder) is left out of the cross-entropy; with cls_weight 0 the loss is
    the mask's alone, finite even when no image of the batch has a diagnosis (it was an IndexError)."""
    torch.manual_seed(0)
    mask_logits, class_logits = torch.randn(2, 1, 4, 4), torch.randn(2, len(CLASS_NAMES), requires_grad=True)
    masks = (torch.rand(2, 1, 4, 4) > 0.5).float()
    both = MultiTaskLoss(1.0, 1.0)(mask_logits, class_logits, masks, torch.tensor([-1, 2]))
    assert both["cls_loss"] == pytest.approx(float(F.cross_entropy(class_logits[1:].detach(), torch.tensor([2]))))
    seg_only = MultiTaskLoss(1.0, 0.0)(mask_logits, class_logits, masks, torch.tensor([-1, -1]))
    assert float(seg_only["loss"]) == pytest.approx(float(F.binary_cross_entropy_with_logits(mask_logits, masks)))
    assert torch.isnan(seg_only["cls_loss"])  # no diagnosis in the batch: n/a
    seg_only["loss"].backward()
    assert torch.equal(class_logits.grad, torch.zeros_like(class_logits))  # in the graph (DDP), not trained


def test_a_segmentation_only_run_trains_on_a_masks_only_folder(synthetic_dir, tmp_path):
    """cls_weight 0 on a folder of images and masks alone (docs/data.md; labels -1): no class counts, no
    diagnosis loss, validation scores the masks. It was refused: '... training images have no diagnosis'."""
    from skin_utils.config import TrainConfig
    from skin_utils.train import train

    folder = tmp_path / "masks_only"
    for sub in ("images", "masks"):
        (folder / sub).mkdir(parents=True)
    for image in sorted((synthetic_dir / "images").iterdir())[:60]:
        mask = synthetic_dir / "masks" / f"{image.stem}_segmentation.png"
        (folder / "images" / image.name).symlink_to(image)
        (folder / "masks" / mask.name).symlink_to(mask)
    cfg = TrainConfig(data_dir=str(folder), image_size=32, epochs=1, batch_size=16, cls_weight=0.0,
                      class_balance="both",  # the sampler and the weights balance classes: none here
                      encoder_weights=None, augment="none", amp="off", device="cpu", num_workers=0,
                      split_path=str(tmp_path / "split.csv"), reports_dir=str(tmp_path / "reports"))
    summary = train(cfg, progress=False).summary
    assert summary["epochs_run"] == 1 and summary["class_weights"] is None and summary["selection_used"] == "dice"
    assert 0 < summary["best_val"]["dice"] <= 1 and np.isnan(summary["best_val"]["balanced_accuracy"])
    assert np.isfinite(summary["history"][0]["train_loss"]) and np.isnan(summary["history"][0]["train_cls_loss"])


def test_amp_auto_picks_bf16_only_where_the_hardware_computes_in_it(monkeypatch):
    # torch's own checks pass a T4 (bf16 emulated: slow, no cuDNN convolutions) and any AVX-512 CPU (oneDNN's bf16
    # then ~2x slower than fp32): "auto" must give fp16 and fp32 there
    from skin_utils.engine import amp_dtype_for

    def cuda_bf16(including_emulation=True):
        return including_emulation  # a T4: only emulated
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", cuda_bf16)
    assert amp_dtype_for(torch.device("cuda"), "auto") == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an A100
    assert amp_dtype_for(torch.device("cuda"), "auto") == torch.bfloat16
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)  # AVX-512
    for avx512_bf16, amx, expected in ((False, False, None), (True, False, torch.bfloat16),
                                       (False, True, torch.bfloat16)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert amp_dtype_for(torch.device("cpu"), "auto") == expected
