import dataclasses
import os
import pickle
import re

import pytest
import torch

from skin_utils.checkpoint import (FORMAT_VERSION, Checkpoint, CheckpointError, TrainingState, load_model,
                                   load_weights)
from skin_utils.model import MultiTaskNet
from tests.conftest import ROOT


def _ckpt(model, **fields):
    return Checkpoint(model_config=model.config, model=model.state_dict(),
                      class_names=["A"] * model.config["num_classes"], image_size=64, **fields)


def _same(a, b) -> bool:
    """Deep equality that understands tensors and dataclasses."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if dataclasses.is_dataclass(a) or dataclasses.is_dataclass(b):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name))
                                          for f in dataclasses.fields(a))
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _full_checkpoint() -> Checkpoint:
    """A checkpoint with every field set to something other than its default."""
    torch.manual_seed(0)
    model = MultiTaskNet(num_classes=3)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    model(torch.randn(2, 3, 32, 32))[1].sum().backward()
    opt.step()  # optimizer state with tensors in it
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    training = TrainingState(optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                             rng={"torch": torch.get_rng_state(), "python": [1, 2, 3]},
                             scaler={"scale": 1024.0, "growth_factor": 2.0})
    return Checkpoint(
        model_config=model.config, model=model.state_dict(), class_names=["MEL", "NV", "BCC"],
        image_size=(64, 48), normalization={"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        params={"epochs": 3, "lr": 2e-3, "split_fractions": [0.7, 0.15, 0.15]},
        encoder_weights_used="none (random init)", data={"data_dir": "/d", "fingerprint": "abc123"},
        split_path="/r/split.csv", selection="dice", epoch=2, metrics={"dice": 0.8, "loss": 0.3},
        history=[{"epoch": 1, "score": 0.5}, {"epoch": 2, "score": 0.7}, {"epoch": 3, "score": 0.6}],
        best_score=0.7, epochs_since_best=1, training=training,
        calibration={"tta": {"temperature": 1.4, "mel_threshold": 0.21, "referral_threshold": 0.6,
                             "uncertainty": "entropy", "notes": []}})


def test_round_trip_keeps_every_field(tmp_path):
    full = _full_checkpoint()
    bare = Checkpoint(model_config=full.model_config, model=full.model, class_names=full.class_names,
                      image_size=full.image_size)
    for f in dataclasses.fields(Checkpoint):  # a new field must be added to _full_checkpoint too
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            assert not _same(getattr(full, f.name), getattr(bare, f.name)), f"_full_checkpoint leaves {f.name} at its default"
    loaded = Checkpoint.load(full.save(tmp_path / "last.pt"))
    for f in dataclasses.fields(Checkpoint):
        assert _same(getattr(loaded, f.name), getattr(full, f.name)), f.name
    assert loaded.image_size == (64, 48) and isinstance(loaded.training, TrainingState)
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION == 2


def test_a_file_without_an_optional_field_loads_with_its_default(tmp_path):
    path = _full_checkpoint().save(tmp_path / "c.pt")
    raw = torch.load(path, weights_only=True)
    del raw["history"], raw["training"], raw["normalization"], raw["calibration"]
    torch.save(raw, path)
    ckpt = Checkpoint.load(path)
    assert ckpt.history == [] and ckpt.training is None and ckpt.calibration == {}
    assert ckpt.normalization == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert ckpt.epoch == 2

    # A field added later (one line with a default) reads older files with that default ...
    @dataclasses.dataclass
    class Later(Checkpoint):
        ensemble_size: int = 1

    assert Later.load(path).ensemble_size == 1
    # ... and a file that has a field this version does not know is refused, by name.
    Later(**{f.name: getattr(ckpt, f.name) for f in dataclasses.fields(Checkpoint)}, ensemble_size=5).save(path)
    with pytest.raises(CheckpointError, match=r"does not know: \['ensemble_size'\]"):
        Checkpoint.load(path)


def _v1(model, **extra):
    """What format 1 (``save_checkpoint(path, **content)`` of the first release) wrote for best.pt."""
    return {"format_version": 1, "model_config": dict(model.config), "class_names": ["MEL", "NV", "BCC"],
            "normalization": {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]},
            "config": {"epochs": 4, "image_size": 64, "seed": 1, "encoder_weights_used": "none (random init)"},
            "selection": "balanced_accuracy+dice", "data": {"fingerprint": "f00"}, "split_path": "/r/split.csv",
            "model": model.state_dict(), "epoch": 3, "history": [{"epoch": 4}], "metrics": {"dice": 0.9},
            "best_score": 1.2, "epochs_since_best": 0, **extra}


def test_version_1_files_still_load(tmp_path):
    model = MultiTaskNet(num_classes=3)
    torch.save(_v1(model), tmp_path / "best.pt")
    ckpt = Checkpoint.load(tmp_path / "best.pt")
    assert ckpt.image_size == (64, 64) and ckpt.class_names == ["MEL", "NV", "BCC"]
    assert ckpt.params == {"epochs": 4, "image_size": 64, "seed": 1}
    assert ckpt.encoder_weights_used == "none (random init)"
    assert ckpt.normalization == {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}
    assert (ckpt.epoch, ckpt.best_score, ckpt.metrics, ckpt.data) == (3, 1.2, {"dice": 0.9}, {"fingerprint": "f00"})
    assert ckpt.split_path == "/r/split.csv" and ckpt.training is None
    assert ckpt.calibration == {}  # calibrated later with python -m skin_utils.trust
    loaded, _ = load_model(tmp_path / "best.pt")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())

    opt, rng = torch.optim.AdamW(model.parameters()), torch.get_rng_state()
    torch.save(_v1(model, optimizer=opt.state_dict(), scheduler={"last_epoch": 5}, scaler={},
                   rng={"torch": rng}), tmp_path / "last.pt")
    training = Checkpoint.load(tmp_path / "last.pt").training
    assert training.scheduler == {"last_epoch": 5} and training.scaler == {}
    assert training.optimizer["param_groups"] == opt.state_dict()["param_groups"]
    assert torch.equal(training.rng["torch"], rng)

    # the minimal format-1 files of the first release: image size on its own, no normalisation
    minimal = {"format_version": 1, "model": model.state_dict(), "model_config": model.config,
               "class_names": ["MEL", "NV", "BCC"], "image_size": [96, 128]}
    torch.save(minimal, tmp_path / "minimal.pt")
    ckpt = Checkpoint.load(tmp_path / "minimal.pt")
    assert ckpt.image_size == (96, 128) and ckpt.normalization["mean"] == [0.485, 0.456, 0.406]
    del minimal["image_size"]
    torch.save(minimal, tmp_path / "minimal.pt")
    with pytest.raises(CheckpointError, match="does not record the image size"):
        Checkpoint.load(tmp_path / "minimal.pt")


def test_unknown_versions_are_refused(tmp_path):
    raw = _full_checkpoint().to_dict()
    torch.save({**raw, "format_version": FORMAT_VERSION + 1}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="newer than this skin_utils reads"):
        Checkpoint.load(tmp_path / "new.pt")
    del raw["format_version"]
    torch.save(raw, tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match="no valid format_version"):
        Checkpoint.load(tmp_path / "none.pt")
    raw = _full_checkpoint().to_dict()
    del raw["class_names"]
    torch.save(raw, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match=r"lacks the required fields \['class_names'\]"):
        Checkpoint.load(tmp_path / "partial.pt")


def test_crafted_pickle_with_code_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"model": Payload(), "model_config": {}}, fh)
    with pytest.raises(CheckpointError, match="could execute code"):
        Checkpoint.load(path)
    assert not marker.exists()


def test_mismatched_model_says_what_differs(tmp_path):
    _ckpt(MultiTaskNet(num_classes=5)).save(tmp_path / "five.pt")
    ckpt = Checkpoint.load(tmp_path / "five.pt")
    with pytest.raises(CheckpointError, match="number of classes: checkpoint 5, model 7"):
        load_weights(MultiTaskNet(num_classes=7), ckpt.model)
    narrow = MultiTaskNet(decoder_channels=(128, 64, 32, 16, 8))
    with pytest.raises(CheckpointError, match="decoder"):
        load_weights(narrow, ckpt.model)
    # load_model builds the right model from the checkpoint's own configuration
    model, loaded = load_model(tmp_path / "five.pt")
    assert model.config["num_classes"] == 5 and isinstance(loaded, Checkpoint)


def test_other_encoder_is_named(tmp_path):
    _ckpt(MultiTaskNet()).save(tmp_path / "x.pt")
    ckpt = Checkpoint.load(tmp_path / "x.pt")
    ckpt.model_config["encoder"] = "resnet50"
    with pytest.raises(ValueError, match="encoder='resnet50'"):
        MultiTaskNet.from_config(ckpt.model_config)


def test_truncated_or_foreign_files_get_a_clear_error(tmp_path):
    path = _ckpt(MultiTaskNet()).save(tmp_path / "ok.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        Checkpoint.load(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a skin_utils checkpoint"):
        Checkpoint.load(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="02_train"):
        Checkpoint.load(tmp_path / "missing.pt")


def test_atomic_write_leaves_the_old_checkpoint_when_saving_fails(tmp_path, monkeypatch):
    model = MultiTaskNet()
    path = _ckpt(model, epoch=1).save(tmp_path / "last.pt")

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        _ckpt(model, epoch=2).save(path)
    monkeypatch.undo()
    assert Checkpoint.load(path).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_contracts_document_every_field():
    text = (ROOT / "docs" / "design.md").read_text()
    section = re.search(r"^## Checkpoints\b[^\n]*\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "docs/design.md has no '## Checkpoints' section"
    for cls in (Checkpoint, TrainingState):
        for f in dataclasses.fields(cls):
            assert f"`{f.name}`" in section.group(1), f"docs/design.md does not describe {cls.__name__}.{f.name}"
