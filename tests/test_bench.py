"""The benchmark runs and reports what it promises (no test asserts a time)."""

import json

import numpy as np
import torch

import importlib.util

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("benchmark", ROOT / "scripts" / "benchmark.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)  # scripts/benchmark.py: a script beside the package, not in it


def test_bench_writes_the_promised_numbers(synthetic_dir, tmp_path):
    out = tmp_path / "bench.json"
    assert bench.main(["--data-dir", str(synthetic_dir), "--image-size", "64", "--batch-size", "8",
                       "--max-samples", "48", "--out", str(out), "--figure", str(tmp_path / "bench.png")]) == 0
    result = json.loads(out.read_text())
    for key in ("train_speedup", "inference_speedup", "loader_over_step", "peak_rss_mb"):
        assert isinstance(result[key], float) and result[key] > 0, key
    stages = {(r["stage"], r["pipeline"]) for r in result["table"]}
    assert stages == {(s, p) for s in ("loader", "train_step", "train_epoch", "inference", "latency")
                      for p in ("naive", "ours")}
    assert (tmp_path / "bench.png").stat().st_size > 1000
    if result["setup"]["device"].startswith("cuda"):  # --device auto: the GPU when there is one
        assert result["peak_gpu_memory_mb"] > 0 and all(r["peak_gpu_mb"] >= 0 for r in result["table"])
    else:
        assert result["peak_gpu_memory_mb"] is None and {r["peak_gpu_mb"] for r in result["table"]} == {None}
    assert result["compile"] is None  # not asked for
    if result["setup"]["device"] == "cpu":  # the exported model in onnxruntime beside our PyTorch path
        assert result["onnx"]["inference_images_per_s"] > 0 and result["onnx"]["over_pytorch"] > 0


def test_naive_dataset_matches_the_cached_one_in_content(synthetic_dir):
    """Both pipelines see the same images: the naive float sample, de-normalised, is close to
    the cached uint8 sample (both bilinear-resized from the same JPEG)."""

    from skin_utils.data import CachedLesionDataset, build_cache
    from skin_utils.layout import load_index
    from skin_utils.transforms import Normalize

    index = load_index(synthetic_dir, decode=False).iloc[:4]
    naive = bench.NaiveDataset(index, (64, 64), augment=False)
    cached = CachedLesionDataset(build_cache(index, 64, progress=False), index["label"])
    for i in range(4):
        x_naive = naive[i][0]
        x_ours = Normalize()(cached[i][0][None])[0]
        assert torch.mean(torch.abs(x_naive - x_ours)) < 0.1
        assert (naive[i][1] != cached[i][1].float()).float().mean() < 0.05


# ----------------------------------------------------------------------------- devices, without a GPU
# The meta device has tensors without data: a model moved there computes shapes only, and any
# operation that mixes a meta tensor with a CPU one fails, as a CUDA model fed a CPU tensor
# does ("Input type (torch.FloatTensor) and weight type (torch.cuda.FloatTensor)"). A pipeline
# that moves everything to the model's device runs until it first reads a value (.item(),
# .cpu()), which meta tensors cannot give: that error, and only that one, is allowed.
NO_DATA_ON_META = ("cannot be called on meta tensors", "Cannot copy out of meta tensor")


def _runs_on_meta(fn, model):
    reached = []

    def inputs_on_the_model_device(module, args):
        for x in args:
            if isinstance(x, torch.Tensor):
                assert x.device.type == "meta", f"an input on {x.device} reached a model on the meta device"
        reached.append(True)

    handle = model.register_forward_pre_hook(inputs_on_the_model_device)
    try:
        fn()
    except (RuntimeError, NotImplementedError) as err:
        if not any(phrase in str(err) for phrase in NO_DATA_ON_META):
            raise
    finally:
        handle.remove()
    assert reached, "the model was never called"


def test_both_pipelines_put_every_tensor_on_the_model_device(synthetic_dir, tmp_path):

    from skin_utils import CLASS_NAMES
    from skin_utils.checkpoint import Checkpoint
    from skin_utils.data import CachedLesionDataset, build_cache, make_loader
    from skin_utils.layout import load_index
    from skin_utils.transforms import BatchColorJitter
    from skin_utils.engine import evaluate, train_one_epoch
    from skin_utils.inference import Predictor, time_single_image
    from skin_utils.losses import MultiTaskLoss
    from skin_utils.model import MultiTaskNet

    meta, hw = torch.device("meta"), (32, 32)
    index = load_index(synthetic_dir, decode=False).iloc[:8]
    paths = index["image_path"].tolist()
    ours = make_loader(CachedLesionDataset(build_cache(index, hw, progress=False), index["label"]), 4, meta,
                       shuffle=True, num_workers=0)
    naive = torch.utils.data.DataLoader(bench.NaiveDataset(index, hw), batch_size=4)

    def model_and_optimizer():
        model = MultiTaskNet(encoder_weights=None).to(meta)
        return model, torch.optim.AdamW(model.parameters(), 1e-3)

    loss_fn = MultiTaskLoss().to(meta)
    model, opt = model_and_optimizer()
    _runs_on_meta(lambda: bench.naive_train_epoch(model, naive, loss_fn, opt, meta), model)
    _runs_on_meta(lambda: bench.naive_predict_files(model, paths[:2], hw, 2), model)
    _runs_on_meta(lambda: bench.time_train_step(model, 2, hw, False, None, meta, repeats=1), model)
    model, opt = model_and_optimizer()
    _runs_on_meta(lambda: train_one_epoch(model, ours, loss_fn, opt, meta, batch_transform=BatchColorJitter(),
                                          progress=False), model)
    _runs_on_meta(lambda: bench.time_train_step(model, 2, hw, True, None, meta, repeats=1), model)
    _runs_on_meta(lambda: evaluate(model, ours, meta, CLASS_NAMES, loss_fn=loss_fn, progress=False), model)
    cpu_model = MultiTaskNet(encoder_weights=None)
    Checkpoint(model_config=cpu_model.config, model=cpu_model.state_dict(), class_names=list(CLASS_NAMES),
               image_size=hw).save(tmp_path / "model.pt")
    predictor = Predictor(tmp_path / "model.pt", device="meta", amp="off")
    _runs_on_meta(lambda: predictor.predict_paths(paths[:2], 2, progress=False), predictor.model)
    _runs_on_meta(lambda: time_single_image(predictor, np.zeros((40, 50, 3), np.uint8)), predictor.model)


def test_peak_gpu_memory_is_none_off_cuda():

    assert bench.peak_gpu_memory_mb(torch.device("cpu")) is None
    bench.reset_peak_gpu_memory(torch.device("cpu"))  # nothing to reset, no error
