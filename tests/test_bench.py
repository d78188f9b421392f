"""The benchmark runs and reports what it promises (no test asserts a time)."""

import json

from skin_utils import benchmark as bench


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


def test_naive_dataset_matches_the_cached_one_in_content(synthetic_dir):
    """Both pipelines see the same images: the naive float sample, de-normalised, is close to
    the cached uint8 sample (both bilinear-resized from the same JPEG)."""
    import torch

    from skin_utils.data.cache import build_cache
    from skin_utils.data.datasets import CachedLesionDataset, Normalize
    from skin_utils.data.layout import load_index

    index = load_index(synthetic_dir, decode=False).iloc[:4]
    naive = bench.NaiveDataset(index, (64, 64), augment=False)
    cached = CachedLesionDataset(build_cache(index, 64, progress=False), index["label"])
    for i in range(4):
        x_naive = naive[i][0]
        x_ours = Normalize()(cached[i][0][None])[0]
        assert torch.mean(torch.abs(x_naive - x_ours)) < 0.1
        assert (naive[i][1] != cached[i][1].float()).float().mean() < 0.05
