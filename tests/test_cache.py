import numpy as np
import pytest

from skin_utils.data import CachedLesionDataset, build_cache, resize_pair, subsample_by_lesion
from skin_utils.layout import load_index, read_image, read_mask
from skin_utils.transforms import BatchColorJitter, Normalize


def test_cache_matches_direct_decoding_and_is_reused(synthetic_dir, tmp_path):
    index = load_index(synthetic_dir).iloc[:30].copy()
    index.attrs = load_index(synthetic_dir).attrs
    cache = build_cache(index, 64, cache_dir=tmp_path, progress=False)
    assert cache.images.shape == (30, 64, 64, 3) and cache.masks.shape == (30, 64, 64)
    assert isinstance(cache.images, np.memmap)
    image, mask = resize_pair(read_image(index["image_path"].iat[7], shrink_to=(64, 64)),
                              read_mask(index["mask_path"].iat[7]), (64, 64))
    assert np.array_equal(cache.images[7], image) and np.array_equal(cache.masks[7], mask)
    assert set(np.unique(cache.masks)) <= {0, 1}
    again = build_cache(index, 64, cache_dir=tmp_path, progress=False)
    assert again.path == cache.path
    # another size, or other data, is another entry
    other = build_cache(index, (48, 64), cache_dir=tmp_path, progress=False)
    assert other.path != cache.path and other.images.shape == (30, 48, 64, 3)  # (H, W)
    changed = index.copy()
    changed.attrs = {**index.attrs, "fingerprint": "ffffffffffff"}
    assert build_cache(changed, 64, cache_dir=tmp_path, progress=False).path != cache.path
    assert not list(tmp_path.glob(".building-*"))


def test_an_edited_image_of_the_same_file_size_gets_a_new_cache_entry(synthetic_dir, tmp_path):
    # an uncompressed BMP keeps its size when its pixels change (a hair-removed copy, a colour correction): the
    # fingerprint (ids, labels, file sizes) cannot tell, the cached pixels must
    from PIL import Image
    folder = tmp_path / "bmp"
    (folder / "images").mkdir(parents=True)
    index = load_index(synthetic_dir).iloc[:4].copy()
    paths = [folder / "images" / f"{i}.bmp" for i in index["image_id"]]
    for source, path in zip(index["image_path"], paths):
        Image.open(source).save(path)
    index["image_path"] = [str(p) for p in paths]
    index.attrs = {"fingerprint": "000000000000"}
    first = build_cache(index, 32, cache_dir=tmp_path / "cache", progress=False)
    size = paths[0].stat().st_size
    Image.fromarray(255 - read_image(paths[0])).save(paths[0])
    assert paths[0].stat().st_size == size
    edited = build_cache(index, 32, cache_dir=tmp_path / "cache", progress=False)
    assert edited.path != first.path
    assert np.array_equal(edited.images[0], resize_pair(read_image(paths[0]), None, 32)[0])


def test_resize_pair_takes_height_width_and_cuts_the_smoothed_mask_at_half_range():
    image = np.zeros((30, 40, 3), np.uint8)
    mask = np.zeros((30, 40), np.uint8)
    mask[:, :20] = 1  # left half lesion
    img, m = resize_pair(image, mask, (15, 20))
    assert img.shape == (15, 20, 3) and m.shape == (15, 20) and m.dtype == np.uint8
    assert m[:, :10].all() and not m[:, 10:].any()  # the border stays where it was
    # a lesion of one pixel in 16 fades below half range when shrunk 4x: gone, like the image's
    speck = np.zeros((40, 40), np.uint8)
    speck[20, 20] = 1
    assert not resize_pair(np.zeros((40, 40, 3), np.uint8), speck, 10)[1].any()
    assert resize_pair(image, None, 8)[1] is None


def test_augmented_samples_keep_image_and_mask_aligned(synthetic_dir, tmp_path):
    index = load_index(synthetic_dir)
    cache = build_cache(index, 64, cache_dir=tmp_path, progress=False)
    ds = CachedLesionDataset(cache, index["label"], augment="standard")
    import torch

    torch.manual_seed(0)
    for i in range(20):
        image, mask, label, row = ds[i]
        assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
        assert mask.shape == (1, 64, 64) and set(mask.unique().tolist()) <= {0, 1}
        # the lesion is darker or more saturated than skin in every synthetic class: the mean
        # brightness inside the (augmented) mask differs from the outside
        if 0 < mask.sum() < mask.numel():
            inside = image.float().mean(0)[mask[0].bool()].mean()
            outside = image.float().mean(0)[~mask[0].bool()].mean()
            assert abs(inside - outside) > 5, i
    with pytest.raises(ValueError, match="augment="):
        CachedLesionDataset(cache, index["label"], augment="heavy")


def test_normalize_matches_imagenet_statistics():
    import torch

    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = Normalize()(x)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(out[0, :, 0, 0], expected)


def test_subsample_takes_whole_lesions_from_every_class(synthetic_dir):
    index = load_index(synthetic_dir)
    sub = subsample_by_lesion(index, 120, seed=0)
    assert 100 <= len(sub) <= 140
    assert sub["label"].nunique() == 7
    full_counts = index.groupby("lesion_id").size()
    sub_counts = sub.groupby("lesion_id").size()
    assert (sub_counts == full_counts.loc[sub_counts.index]).all()
    assert sub.attrs["fingerprint"] != index.attrs["fingerprint"]


def test_batch_colour_jitter_keeps_range_and_changes_each_image_differently():
    import torch

    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16)
    y = BatchColorJitter(0.2)(x.clone())
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    change = (y - x).abs().mean(dim=(1, 2, 3))
    assert (change > 0).all() and change.std() > 0
    # normalisation with jitter off equals the plain path
    u8 = (x * 255).to(torch.uint8)
    torch.testing.assert_close(Normalize(jitter=BatchColorJitter(0.0))(u8), Normalize()(u8), rtol=1e-5, atol=1e-5)
