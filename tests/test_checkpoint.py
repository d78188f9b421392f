import os
import pickle

import pytest
import torch

from skin_utils.checkpoint import CheckpointError, load_checkpoint, load_model, load_weights, save_checkpoint
from skin_utils.model import MultiTaskNet


def _save(model, path, **extra):
    return save_checkpoint(path, model=model.state_dict(), model_config=model.config,
                           class_names=["A"] * model.config["num_classes"], **extra)


def test_crafted_pickle_with_code_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"model": Payload(), "model_config": {}}, fh)
    with pytest.raises(CheckpointError, match="could execute code"):
        load_checkpoint(path)
    assert not marker.exists()


def test_mismatched_model_says_what_differs(tmp_path):
    _save(MultiTaskNet(num_classes=5), tmp_path / "five.pt")
    ckpt = load_checkpoint(tmp_path / "five.pt")
    with pytest.raises(CheckpointError, match="number of classes: checkpoint 5, model 7"):
        load_weights(MultiTaskNet(num_classes=7), ckpt["model"])
    narrow = MultiTaskNet(decoder_channels=(128, 64, 32, 16, 8))
    with pytest.raises(CheckpointError, match="decoder"):
        load_weights(narrow, ckpt["model"])
    # load_model builds the right model from the checkpoint's own configuration
    model, _ = load_model(tmp_path / "five.pt")
    assert model.config["num_classes"] == 5


def test_other_encoder_is_named(tmp_path):
    model = MultiTaskNet()
    _save(model, tmp_path / "x.pt")
    ckpt = load_checkpoint(tmp_path / "x.pt")
    ckpt["model_config"]["encoder"] = "resnet50"
    with pytest.raises(ValueError, match="encoder='resnet50'"):
        MultiTaskNet.from_config(ckpt["model_config"])


def test_truncated_or_foreign_files_get_a_clear_error(tmp_path):
    model = MultiTaskNet()
    path = _save(model, tmp_path / "ok.pt")
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a skin_utils checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="02_train"):
        load_checkpoint(tmp_path / "missing.pt")


def test_atomic_write_leaves_the_old_checkpoint_when_saving_fails(tmp_path, monkeypatch):
    model = MultiTaskNet()
    path = _save(model, tmp_path / "last.pt", epoch=1)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        _save(model, path, epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind
