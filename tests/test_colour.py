"""Colour constancy (Shades of Gray) as a stored preprocessing option, and the "camera" augmentation."""

import numpy as np
import pytest
import torch
from PIL import Image

from skin_utils import CLASS_NAMES
from skin_utils.checkpoint import Checkpoint, CheckpointError
from skin_utils import transforms as colour
from skin_utils.transforms import (AUGMENTATIONS, CAMERA_AUGMENT, IMAGENET_MEAN, IMAGENET_STD, BatchCameraAugment,
                                      Normalize, build_augmentation, normalization_config, resolve_normalization)
from skin_utils.model import MultiTaskNet


def _texture(seed=0, n=1, hw=(24, 32)):
    """Grey texture (the three channels equal) in [0.1, 0.8]: a neutral illuminant."""
    g = torch.Generator().manual_seed(seed)
    grey = 0.1 + 0.7 * torch.rand(n, 1, *hw, generator=g)
    return grey.expand(n, 3, *hw).clone()


def _spread(e):
    """How far an illuminant estimate is from grey: max over min channel."""
    return float((e.max(dim=1).values / e.min(dim=1).values).max())


# ----------------------------------------------------------------------------- Shades of Gray
def test_a_grey_image_is_left_unchanged():
    x = _texture()
    torch.testing.assert_close(colour.shades_of_gray(x), x, rtol=1e-5, atol=1e-6)


def test_a_colour_cast_is_corrected_towards_neutral():
    x = _texture(1, n=2)
    cast = colour.colour_cast(x, torch.tensor([[1.2, 0.9, 0.7], [0.75, 1.0, 1.25]]))
    assert _spread(colour.illuminant(cast)) > 1.5
    fixed = colour.shades_of_gray(cast)
    assert _spread(colour.illuminant(fixed)) < 1.001
    # the cast is undone up to one brightness factor per image (no clipping here)
    ratio = fixed / x
    assert float(ratio.std(dim=(1, 2, 3)).max()) < 1e-4


def test_a_second_pass_changes_little():
    rng = np.random.default_rng(0)
    image = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
    image[..., 2] = (image[..., 2] * 0.5).astype(np.uint8)             # a blue-poor camera
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    once = colour.shades_of_gray(batch)
    assert not torch.allclose(once, batch, atol=0.02)
    torch.testing.assert_close(colour.shades_of_gray(once), once, rtol=0, atol=0.02)  # only clipping moves it


def test_black_channels_and_bad_inputs():
    x = _texture()
    x[:, 2] = 0                                                       # no blue at all: gain 1, no NaN
    y = colour.shades_of_gray(x)
    assert torch.isfinite(y).all() and (y[:, 2] == 0).all()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        colour.shades_of_gray(x[0])
    with pytest.raises(ValueError, match="p=0.5"):
        colour.shades_of_gray(x, p=0.5)


# ----------------------------------------------------------------------------- the stored option
def test_normalization_config_and_old_dicts():
    full = normalization_config("shades_of_gray")
    assert full == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "colour_constancy": "shades_of_gray", "p": 6}
    assert normalization_config("none")["colour_constancy"] is None
    assert resolve_normalization(None) == normalization_config()
    old = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}                # a checkpoint from before the key
    assert resolve_normalization(old) == {**old, "colour_constancy": None, "p": 6}
    with pytest.raises(ValueError, match="colour_constancy='grey_world'"):
        resolve_normalization({**old, "colour_constancy": "grey_world"})
    with pytest.raises(ValueError, match=r"unknown keys \['gamma'\]"):
        resolve_normalization({**old, "gamma": 2})
    with pytest.raises(ValueError, match="p=0"):
        normalization_config("shades_of_gray", p=0)


def test_normalize_applies_colour_constancy_after_the_jitter_and_before_mean_std():
    u8 = (torch.rand(3, 3, 16, 20) * 255).to(torch.uint8)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    plain = Normalize.from_config(None)
    torch.testing.assert_close(plain(u8), Normalize()(u8))
    torch.testing.assert_close(Normalize.from_config({"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)})(u8),
                               plain(u8))
    sog = Normalize.from_config(normalization_config("shades_of_gray"))
    expected = (colour.shades_of_gray(u8.float() / 255) - mean) / std
    torch.testing.assert_close(sog(u8), expected, rtol=1e-5, atol=1e-5)

    class Darken(torch.nn.Module):
        def forward(self, x):
            return x * 0.5

    jittered = Normalize.from_config(normalization_config("shades_of_gray"), jitter=Darken())
    expected = (colour.shades_of_gray(u8.float() / 255 * 0.5) - mean) / std
    torch.testing.assert_close(jittered(u8), expected, rtol=1e-5, atol=1e-5)


def test_checkpoint_round_trip_with_colour_constancy_and_old_files(tmp_path):
    model = MultiTaskNet(num_classes=3)
    base = dict(model_config=model.config, model=model.state_dict(), class_names=["MEL", "NV", "BCC"], image_size=32)
    path = Checkpoint(**base, normalization=normalization_config("shades_of_gray", p=4)).save(tmp_path / "new.pt")
    loaded = Checkpoint.load(path)
    assert loaded.normalization == normalization_config("shades_of_gray", p=4)
    assert Normalize.from_config(loaded.normalization).colour_constancy == "shades_of_gray"
    # a checkpoint written before the key existed: no colour constancy
    raw = torch.load(path, weights_only=True)
    raw["normalization"] = {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}
    torch.save(raw, tmp_path / "old.pt")
    old = Checkpoint.load(tmp_path / "old.pt")
    assert Normalize.from_config(old.normalization).colour_constancy is None
    assert Checkpoint(**base).normalization == {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    raw["normalization"] = {**raw["normalization"], "colour_constancy": "retinex"}
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="retinex"):
        Checkpoint.load(tmp_path / "bad.pt")


def test_every_reader_of_a_checkpoint_builds_the_same_normalize():
    normalizer = Normalize.from_config  # what training, validation, calibration, evaluation and inference call

    assert normalizer(normalization_config("shades_of_gray")).colour_constancy == "shades_of_gray"
    assert normalizer(None).colour_constancy is None
    assert normalizer({"mean": [0.5] * 3, "std": [0.5] * 3}).config["mean"] == [0.5] * 3


def test_predictor_applies_the_checkpoints_colour_constancy(tmp_path):
    from skin_utils.inference import Predictor, write_demo_images

    torch.manual_seed(0)
    model = MultiTaskNet(encoder_weights=None).eval()
    norm = normalization_config("shades_of_gray")
    path = Checkpoint(model_config=model.config, model=model.state_dict(), class_names=list(CLASS_NAMES),
                      image_size=64, normalization=norm).save(tmp_path / "sog.pt")
    image = np.asarray(Image.open(write_demo_images(tmp_path / "in", n=1) / "demo_00.jpg"))
    image = (image * np.array([1.0, 0.8, 0.6])).astype(np.uint8)      # a warm camera
    predictor = Predictor(path, device="cpu", amp="off")
    got = predictor.predict_image(image)
    # by hand: the predictor's resize, then Shades of Gray, ImageNet mean/std, the model
    x = predictor.preprocess(image)[None].float() / 255
    x = (colour.shades_of_gray(x) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(x)[1].softmax(1)[0].numpy()
    assert np.allclose([got.probs[c] for c in CLASS_NAMES], expected, atol=1e-4)
    ckpt = Checkpoint.load(path)
    ckpt.normalization = normalization_config(None)
    plain = Predictor(ckpt.save(tmp_path / "plain.pt"), device="cpu", amp="off").predict_image(image)
    assert not np.allclose([plain.probs[c] for c in CLASS_NAMES], expected, atol=1e-4)


def test_fit_records_the_normalization_and_trains_and_validates_with_it(tmp_path, monkeypatch):
    from skin_utils.data import load_data, train_val_loaders
    from skin_utils.demo import make_synthetic_dataset
    from skin_utils.engine import build_optimizer_and_schedule, fit
    from skin_utils.losses import MultiTaskLoss

    folder = make_synthetic_dataset(tmp_path / "demo", n_images=40, image_size=(48, 64), seed=0)
    data = load_data(folder, 64, split_path=tmp_path / "split.csv", cache_dir=tmp_path / "cache", progress=False)
    train, val, jitter = train_val_loaders(data, 8, "cpu", augment="camera", num_workers=0)
    assert isinstance(jitter, BatchCameraAugment)
    calls = []
    real = colour.shades_of_gray
    monkeypatch.setattr(colour, "shades_of_gray", lambda x, p=6: calls.append(p) or real(x, p))
    torch.manual_seed(0)
    model = MultiTaskNet(encoder_weights=None)
    opt, sched = build_optimizer_and_schedule(model, 1e-3, 1e-4, 1, len(train))
    kwargs = dict(loss_fn=MultiTaskLoss(1.0, 1.0), optimizer=opt, scheduler=sched, epochs=1, device="cpu",
                  checkpoint_dir=tmp_path / "ckpt", class_names=CLASS_NAMES, image_size=64, amp="off",
                  batch_transform=jitter, progress=False)
    fit(model, train, val, normalization=normalization_config("shades_of_gray", p=5), **kwargs)
    assert calls == [5] * (len(train) + len(val))                      # every training and validation batch
    for name in ("best.pt", "last.pt"):
        assert Checkpoint.load(tmp_path / "ckpt" / name).normalization == normalization_config("shades_of_gray", p=5)
    with pytest.raises(CheckpointError, match="input normalization"):  # resuming with another one is refused
        fit(model, train, val, normalization=None, resume=True, **{**kwargs, "epochs": 2})


# ----------------------------------------------------------------------------- camera augmentation
ALL_ON = {name: {"p": 1.0} for name in CAMERA_AUGMENT}


def test_camera_augmentation_is_registered_with_the_standard_geometry():
    assert "camera" in AUGMENTATIONS
    geometry, batch = build_augmentation("camera")
    standard, _ = build_augmentation("standard")
    assert [type(t) for t in geometry.transforms] == [type(t) for t in standard.transforms]
    assert isinstance(batch, BatchCameraAugment)
    with pytest.raises(ValueError, match="unknown effect 'lens'"):
        BatchCameraAugment({"lens": {"p": 1}})


def test_camera_augmentation_is_seeded_by_torch_and_keeps_the_range():
    x = torch.rand(6, 3, 40, 52)
    aug = BatchCameraAugment(ALL_ON)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    torch.manual_seed(4)
    c = aug(x)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == torch.float32 and a.min() >= 0 and a.max() <= 1
    assert ((a - x).abs().mean(dim=(1, 2, 3)) > 0.01).all()          # every image changed
    assert torch.equal(x, x.clone()) and not torch.equal(a, x)        # input left as it was
    off = BatchCameraAugment({name: {"p": 0.0} for name in CAMERA_AUGMENT})
    assert torch.equal(off(x), x)


@pytest.mark.parametrize("effect", [e for e in CAMERA_AUGMENT if e != "jitter"])
def test_each_camera_effect_on_its_own_changes_only_the_chosen_images(effect):
    ranges = {name: {"p": 0.0} for name in CAMERA_AUGMENT}
    ranges[effect] = {"p": 0.5}
    x = torch.rand(32, 3, 64, 64) * 0.8 + 0.1
    torch.manual_seed(0)
    y = BatchCameraAugment(ranges)(x)
    changed = (y - x).abs().amax(dim=(1, 2, 3)) > 1e-6
    assert 4 <= int(changed.sum()) <= 28, effect


def test_camera_effect_functions():
    x = torch.rand(2, 3, 20, 30)
    torch.testing.assert_close(colour.gaussian_blur(x, torch.zeros(2), radius=3), x)
    flat = torch.full((1, 3, 20, 30), 0.4)
    torch.testing.assert_close(colour.gaussian_blur(flat, torch.tensor([2.0])), flat)
    assert colour.gaussian_blur(x, torch.tensor([0.0, 2.0]))[1].std() < x[1].std()
    torch.testing.assert_close(colour.downscale_upscale(flat, 0.3), flat)
    v = colour.vignette(torch.ones(1, 3, 21, 31), torch.tensor([0.5]))
    assert v[0, 0, 10, 15] > 0.99 and 0.5 <= v[0, 0, 0, 0] < 0.55
    g = torch.Generator().manual_seed(0)
    m = colour.hair_mask(3, (40, 50), torch.tensor([0, 2, 4]), generator=g)
    assert m.shape == (3, 1, 40, 50) and m[0].sum() == 0 and 0 < m[1].sum() < m[2].sum() < 0.3 * 40 * 50
    again = colour.hair_mask(3, (40, 50), torch.tensor([0, 2, 4]), generator=torch.Generator().manual_seed(0))
    assert torch.equal(m, again)
    torch.testing.assert_close(colour.brightness_contrast_saturation(x, 1.0, 1.0, 1.0), x.clamp(0, 1))
