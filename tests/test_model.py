import numpy as np
import pytest
import torch

from skin_utils.export import OPSET
from skin_utils.losses import MultiTaskLoss, class_weights_from_counts
from skin_utils.model import EncoderWeightsUnavailable, MultiTaskNet, build_resnet18, lesion_weighted


@pytest.mark.parametrize("hw", [(128, 128), (150, 200), (97, 131), (64, 64)])
def test_output_shapes_follow_the_input(hw):
    model = MultiTaskNet(num_classes=7).eval()
    with torch.no_grad():
        mask_logits, class_logits = model(torch.randn(2, 3, *hw))
    assert mask_logits.shape == (2, 1, *hw)
    assert class_logits.shape == (2, 7)


def test_channels_last_gives_the_same_result():
    torch.manual_seed(0)
    model = MultiTaskNet().eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a = model(x)
        b = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)


def test_one_optimisation_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = MultiTaskNet()
    loss_fn = MultiTaskLoss(1.0, 1.0)
    x = torch.randn(8, 3, 64, 64)
    masks = (torch.rand(8, 1, 64, 64) > 0.5).float()
    labels = torch.randint(0, 7, (8,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    before = loss_fn(*model(x), masks, labels)["loss"]
    opt.zero_grad()
    before.backward()
    opt.step()
    model.eval()  # compare without the BN batch-statistics noise of train mode
    with torch.no_grad():
        after_eval = loss_fn(*model(x), masks, labels)["loss"]
        model.train()
        after = loss_fn(*model(x), masks, labels)["loss"]
    assert after.item() < before.item(), (before.item(), after.item(), after_eval.item())


def test_loss_is_the_weighted_sum_of_its_parts():
    torch.manual_seed(0)
    m, c = torch.randn(4, 1, 8, 8), torch.randn(4, 7)
    masks, labels = (torch.rand(4, 1, 8, 8) > 0.5).float(), torch.tensor([0, 1, 2, 3])
    out = MultiTaskLoss(0.3, 2.0)(m, c, masks, labels)
    expected = 0.3 * torch.nn.functional.binary_cross_entropy_with_logits(m, masks) \
        + 2.0 * torch.nn.functional.cross_entropy(c, labels)
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(0.3 * out["seg_loss"] + 2.0 * out["cls_loss"], expected)
    with pytest.raises(ValueError, match="at least one > 0"):
        MultiTaskLoss(0, 0)


def test_class_weights_favour_rare_classes_and_average_one_per_sample():
    counts = [100, 1000, 10, 0, 50, 5, 5]
    w = class_weights_from_counts(counts, power=1.0)
    assert w[3] == 0  # absent class
    assert w[5] > w[2] > w[0] > w[1]
    assert float((w * torch.tensor(counts, dtype=torch.float)).sum() / sum(counts)) == pytest.approx(1.0)
    assert torch.allclose(class_weights_from_counts(counts, power=0.0)[[0, 1, 2]], torch.ones(3))


def test_imagenet_weights_offline_fail_with_advice(monkeypatch):
    import torchvision.models as tvm

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(tvm.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline, raising=False)
    with pytest.raises(EncoderWeightsUnavailable, match="encoder_weights=None to train from scratch"):
        build_resnet18("imagenet")
    with pytest.warns(UserWarning, match="FROM SCRATCH"):
        _, used = build_resnet18("auto")
    assert "from scratch" in used


def test_local_encoder_weights_are_loaded(tmp_path):
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model = MultiTaskNet(encoder_weights=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(model.encoder.stem[0].weight, net.conv1.weight)
    with pytest.raises(FileNotFoundError, match="neither 'imagenet'"):
        MultiTaskNet(encoder_weights=str(tmp_path / "missing.pth"))


def test_logit_adjustment_shifts_the_cross_entropy_by_the_log_prior():
    from skin_utils.losses import logit_adjustment_from_counts

    counts = [10, 70, 5, 3, 10, 1, 1]
    adj = logit_adjustment_from_counts(counts, tau=1.0)
    torch.testing.assert_close(adj.exp().sum(), torch.tensor(1.0))  # log of a distribution
    logits, labels = torch.zeros(2, 7), torch.tensor([1, 5])
    out = MultiTaskLoss(0.0, 1.0, logit_adjustment=adj)(torch.zeros(2, 1, 4, 4), logits, torch.zeros(2, 1, 4, 4), labels)
    # with all-zero logits the adjusted softmax is the prior itself
    expected = -(torch.log(torch.tensor([70 / 100, 1 / 100]))).mean()
    torch.testing.assert_close(out["cls_loss"], expected)


def test_tta_views_are_undone_exactly():
    from skin_utils.engine import forward_probs, tta_views

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    for square, n in ((True, 8), (False, 4)):
        views = tta_views(square)
        assert len(views) == n
        for fwd, inv in views:
            assert torch.equal(inv(fwd(x)), x)
    # an equivariant "model" (identity mask, constant class) gives the plain result back
    class Echo(torch.nn.Module):
        def forward(self, images):
            return images[:, :1], torch.zeros(len(images), 7)

    plain = forward_probs(Echo(), x, tta=False)
    averaged = forward_probs(Echo(), x, tta=True)
    torch.testing.assert_close(plain[0], averaged[0])
    torch.testing.assert_close(averaged[1].sum(1), torch.ones(2))


def test_lesion_pooling_reads_the_predicted_lesion_and_falls_back_to_the_frame():
    features = torch.arange(2 * 4 * 9, dtype=torch.float32).reshape(2, 4, 3, 3)
    lesion = torch.full((2, 1, 96, 96), -30.0)
    lesion[0, :, 32:64, 64:96] = 30.0  # sample 0: the lesion fills the cell (1, 2); sample 1: no lesion at all
    pooled = lesion_weighted(features, lesion).mean((2, 3))
    torch.testing.assert_close(pooled[0], features[0, :, 1, 2], atol=0.1, rtol=0)  # LESION_FLOOR's share: < 0.1
    torch.testing.assert_close(pooled[1], features[1].mean((1, 2)))
    x = torch.randn(2, 3, 97, 131)
    for pooling in ("average", "lesion"):  # another mask moves the diagnosis only under lesion pooling
        torch.manual_seed(0)
        model = MultiTaskNet(pooling=pooling).eval()
        with torch.no_grad():
            before = model(x)[1]
            model.segmentation_head.bias.add_(5.0)
            assert torch.allclose(model(x)[1], before) == (pooling == "average")
    assert MultiTaskNet.from_config(model.config).config["pooling"] == "lesion"
    old = {k: v for k, v in model.config.items() if k != "pooling"}  # a checkpoint from before the option
    assert MultiTaskNet.from_config(old).config["pooling"] == "average"
    with pytest.raises(ValueError, match="pooling='lesions'"):
        MultiTaskNet(pooling="lesions")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, as skin_utils.export uses
def test_lesion_pooling_exports_to_onnx_at_any_image_size(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[dev]'")
    torch.manual_seed(0)
    model = MultiTaskNet(pooling="lesion").eval()
    path = tmp_path / "lesion.onnx"
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(1, 3, 64, 64),), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["image"], output_names=["mask", "logits"],
                          dynamic_axes={"image": {0: "n", 2: "h", 3: "w"}, "mask": {0: "n", 2: "h", 3: "w"}})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 64, 64), (2, 3, 97, 131), (1, 3, 150, 200)]:
        x = torch.randn(shape)
        with torch.no_grad():
            mask, logits = model(x)
        got_mask, got_logits = session.run(None, {"image": x.numpy()})
        np.testing.assert_allclose(got_logits, logits.numpy(), atol=1e-3)
        np.testing.assert_allclose(got_mask, mask.numpy(), atol=1e-3)
