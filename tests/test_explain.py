"""Grad-CAM (a known answer on a linear model; shape, range and side effects on MultiTaskNet) and
the heat-map-vs-mask check."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from skin_utils.trust.explain import (
    CamLocalizationMetrics,
    cam_energy_inside,
    cam_localization_report,
    cam_peak_inside,
    grad_cam,
    mask_area_share,
)
from skin_utils.model import MultiTaskNet


# ----------------------------------------------------------------------------- energy inside
def _square_mask(h=20, w=30, box=(5, 15, 10, 25)):
    m = np.zeros((h, w), dtype=bool)
    m[box[0]:box[1], box[2]:box[3]] = True
    return m


def test_energy_inside_known_answers():
    mask = _square_mask()
    assert cam_energy_inside(mask.astype(float), mask) == 1.0          # the map is the mask
    assert cam_energy_inside(np.ones(mask.shape), mask) == pytest.approx(mask_area_share(mask))
    assert mask_area_share(mask) == pytest.approx(10 * 15 / 600)        # the uniform-map baseline
    assert cam_energy_inside((~mask).astype(float), mask) == 0.0        # all outside
    assert math.isnan(cam_energy_inside(np.zeros(mask.shape), mask))    # no map at all
    half = np.where(mask, 1.0, 0.0) + np.where(~mask, 150 / 450, 0.0)   # equal mass in and out
    assert cam_energy_inside(half, mask) == pytest.approx(0.5)
    # batches and lists give arrays
    np.testing.assert_allclose(cam_energy_inside(np.stack([mask, np.ones(mask.shape)]).astype(float),
                                                 np.stack([mask, mask])), [1.0, 0.25])
    assert cam_energy_inside([mask.astype(float)], [mask]).shape == (1,)
    with pytest.raises(ValueError, match="differ"):
        cam_energy_inside(np.ones((4, 4)), np.ones((4, 5)))
    with pytest.raises(ValueError, match="non-negative"):
        cam_energy_inside(-np.ones((4, 4)), np.ones((4, 4)))


def test_peak_inside():
    mask = _square_mask()
    cam = np.zeros(mask.shape)
    cam[10, 12] = 1.0
    assert cam_peak_inside(cam, mask)
    cam[0, 0] = 2.0
    assert not cam_peak_inside(cam, mask)
    assert not cam_peak_inside(np.zeros(mask.shape), mask)


def test_localization_report_per_class_and_outside_list():
    mask = _square_mask()
    inside, uniform, outside = mask.astype(float), np.ones(mask.shape), (~mask).astype(float)
    report = cam_localization_report(
        [inside, uniform, outside, np.zeros(mask.shape)], [mask] * 4, labels=[0, 0, 1, 1],
        image_ids=["a", "b", "c", "d"])
    o = report["overall"]
    assert o["n_images"] == 4 and o["n_empty_cam"] == 1
    assert o["energy_inside"] == pytest.approx((1 + 0.25 + 0) / 3)
    assert o["area_share"] == pytest.approx(0.25)
    assert o["above_baseline"] == pytest.approx(1 / 3)     # only "a" beats the area share
    assert o["mostly_outside"] == pytest.approx(2 / 3)     # "b" (0.25) and "c" (0)
    assert o["peak_inside"] == pytest.approx(1 / 4)        # "a" only: the uniform map peaks at (0, 0)
    mel = report["per_class"]["MEL"]
    assert mel["n_images"] == 2 and mel["energy_inside"] == pytest.approx(0.625)
    assert mel["lift"] == pytest.approx((4 + 1) / 2)
    assert set(report["per_class"]) == {"MEL", "NV"}
    assert [r["image_id"] for r in report["mostly_outside"]] == ["c", "b"]  # lowest first
    # accumulating in batches gives the same report
    m = CamLocalizationMetrics()
    m.update([inside, uniform], [mask, mask], [0, 0], ["a", "b"])
    m.update(np.stack([outside, np.zeros(mask.shape)]), np.stack([mask, mask]), [1, 1], ["c", "d"])
    assert m.aggregate()["overall"] == pytest.approx(o, nan_ok=True)


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


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_grad_cam_on_multitasknet(net, method):
    net.train()
    x = torch.randn(2, 3, 64, 64)
    running = net.encoder.stem[1].running_mean.clone()
    with torch.inference_mode():  # as inference code calls it
        x_inf = x.clone()
    cams, classes = grad_cam(net, x_inf, method=method)
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
    cams2, classes2 = grad_cam(net, x, method=method)
    assert not net.training
    with torch.no_grad():
        np.testing.assert_array_equal(classes2, net(x)[1].argmax(1).numpy())
    np.testing.assert_allclose(cams2, cams, atol=1e-5)


def test_grad_cam_errors(net):
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="method"):
        grad_cam(net, x, method="scorecam")
    with pytest.raises(ValueError, match="target"):
        grad_cam(net, x, target=[0, 1])
    with pytest.raises(ValueError, match="layer"):
        grad_cam(nn.Linear(3, 2), x)
    assert all(not m._forward_hooks for m in net.modules())  # removed on error too


def test_cam_figures():
    import matplotlib.pyplot as plt

    from skin_utils.plots import plot_cam_grid, plot_cam_overlay

    image = np.zeros((20, 30, 3), np.uint8)
    mask = _square_mask()
    cam = np.random.default_rng(0).random((10, 15))  # a map at a lower resolution is resized
    fig = plot_cam_overlay(image, cam, mask, mask, caption="MEL")
    assert fig.axes[1].get_title() == "MEL"
    plt.close(fig)
    fig = plot_cam_grid([image] * 3, [cam] * 3, [mask] * 3, ncols=2)
    assert len(fig.axes) == 4 and not fig.axes[3].axison
    plt.close(fig)
    with pytest.raises(ValueError, match="image is"):
        plot_cam_overlay(image, cam, mask[:10])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        plot_cam_overlay(image, cam * 3)
