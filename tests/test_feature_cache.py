"""On-disk image-feature cache: hits, misses on a changed key, rebuild of corrupt files, crop extraction."""

import glob
import os
import warnings

import pytest
import torch

from clipkit import feature_cache as fc


def _key(**overrides):
    fields = dict(
        backbone="tiny",
        checkpoint_digest="0123456789abcdef",
        dataset="test_folder",
        split="test",
        transform="Resize(64, bicubic) CenterCrop(64) Normalize(clip)",
        image_paths=[f"/data/img{i}.jpg" for i in range(5)],
        num_crops=0,
        crop_seed=None,
    )
    fields.update(overrides)
    return fc.feature_cache_key(**fields)


class CountingCompute:
    """A feature extractor that records how often it ran; its output depends on ``seed``."""

    def __init__(self, rows=5, seed=0):
        self.calls, self.rows, self.seed = 0, rows, seed

    def __call__(self):
        self.calls += 1
        generator = torch.Generator().manual_seed(self.seed)
        return {"features": torch.randn(self.rows, 8, generator=generator),
                "crop_features": torch.randn(self.rows, 3, 8, generator=generator)}


def _quiet(*args, **kwargs):
    return fc.load_or_compute(*args, log=lambda message: None, **kwargs)


def test_hit_returns_identical_tensors_without_recomputing(tmp_path):
    compute = CountingCompute()
    first = _quiet(_key(), compute, root=str(tmp_path))
    second = _quiet(_key(), compute, root=str(tmp_path))
    assert compute.calls == 1
    for name in first:
        assert torch.equal(first[name], second[name])
    assert torch.equal(second["features"], CountingCompute()()["features"])
    assert not glob.glob(str(tmp_path / "**" / "*.tmp*"), recursive=True)  # atomic write left no temporary file


def _drawing_compute():
    """An extractor that draws from every global generator, as iterating a DataLoader draws torch's base seed."""
    import random

    import numpy as np

    list(torch.utils.data.DataLoader(list(range(4)), batch_size=2, shuffle=True))
    random.random()
    np.random.rand()
    return {"features": torch.ones(5, 8)}


@pytest.mark.parametrize("enabled", [True, False])
def test_a_miss_leaves_the_global_generators_as_a_hit_does(tmp_path, enabled):
    """What a run draws after reading its features does not depend on the cache's state (DPA's result did)."""
    import random

    import numpy as np

    def draws_after(load):
        torch.manual_seed(7)
        random.seed(7)
        np.random.seed(7)
        load()
        return torch.rand(3), random.random(), float(np.random.rand())

    def load():
        return _quiet(_key(), _drawing_compute, root=str(tmp_path), enabled=enabled)

    undisturbed = draws_after(lambda: None)
    miss = draws_after(load)  # computes (and, when enabled, writes the file)
    hit = draws_after(load)  # reads the file when enabled
    for after in (miss, hit):
        assert torch.equal(after[0], undisturbed[0]) and after[1:] == undisturbed[1:]


@pytest.mark.parametrize(
    "change",
    [
        dict(backbone="other"),
        dict(checkpoint_digest="fedcba9876543210"),
        dict(dataset="other"),
        dict(split="train"),
        dict(transform="Resize(72)"),
        dict(image_paths=[f"/data/img{i}.jpg" for i in (0, 1, 2, 4, 3)]),  # same files, other order
        dict(num_crops=3, crop_seed=0),
    ],
)
def test_changed_key_misses(tmp_path, change):
    compute = CountingCompute()
    _quiet(_key(), compute, root=str(tmp_path))
    assert fc.cache_file(_key(**change), str(tmp_path)) != fc.cache_file(_key(), str(tmp_path))
    _quiet(_key(**change), compute, root=str(tmp_path))
    assert compute.calls == 2


def test_crop_seed_is_part_of_the_key(tmp_path):
    compute = CountingCompute()
    _quiet(_key(num_crops=3, crop_seed=0), compute, root=str(tmp_path))
    _quiet(_key(num_crops=3, crop_seed=1), compute, root=str(tmp_path))
    _quiet(_key(num_crops=3, crop_seed=0), compute, root=str(tmp_path))
    assert compute.calls == 2


def _corrupt_truncate(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size // 2)


def _corrupt_flip_payload_byte(path):
    payload = torch.load(path, weights_only=True)
    payload["tensors"]["features"][2, 3] += 1.0  # silently altered numbers: only the checksum can tell
    torch.save(payload, path)


def _corrupt_foreign_key(path):
    payload = torch.load(path, weights_only=True)
    payload["key"]["split"] = "train"
    torch.save(payload, path)


def _corrupt_wrong_rows(path):
    payload = torch.load(path, weights_only=True)
    payload["tensors"] = {name: tensor[:-1] for name, tensor in payload["tensors"].items()}
    payload["checksum"] = fc._checksum(payload["tensors"])
    torch.save(payload, path)


def _corrupt_garbage(path):
    with open(path, "wb") as handle:
        handle.write(b"not a torch file")


@pytest.mark.parametrize(
    "corrupt", [_corrupt_truncate, _corrupt_flip_payload_byte, _corrupt_foreign_key, _corrupt_wrong_rows, _corrupt_garbage]
)
def test_corrupt_file_is_rebuilt_with_a_warning(tmp_path, corrupt):
    compute = CountingCompute()
    fresh = _quiet(_key(), compute, root=str(tmp_path))
    path = fc.cache_file(_key(), str(tmp_path))
    corrupt(path)
    with pytest.warns(fc.FeatureCacheWarning, match="unusable"):
        rebuilt = _quiet(_key(), compute, root=str(tmp_path))
    assert compute.calls == 2
    assert torch.equal(rebuilt["features"], fresh["features"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt file is healthy again
        _quiet(_key(), compute, root=str(tmp_path))
    assert compute.calls == 2


def test_disabled_cache_neither_reads_nor_writes(tmp_path):
    compute = CountingCompute()
    _quiet(_key(), compute, enabled=False, root=str(tmp_path))
    _quiet(_key(), compute, enabled=False, root=str(tmp_path))
    assert compute.calls == 2
    assert not os.path.exists(tmp_path / "features")


def test_extractor_with_wrong_row_count_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="for 5 images"):
        _quiet(_key(), CountingCompute(rows=4), root=str(tmp_path))


def test_empty_split_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        _key(image_paths=[])


def test_default_root_is_the_clipkit_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPKIT_CACHE", str(tmp_path))
    assert fc.cache_file(_key()).startswith(os.path.join(str(tmp_path), "features", "test_folder", "tiny"))


# --------------------------------------------------------------------------------------------- real feature extraction


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_path):
    from clipkit.clip import load_clip

    return load_clip(tiny_clip_path)


def _image_paths(root):
    return sorted(glob.glob(os.path.join(root, "images", "*", "*.jpg")))


CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def test_crop_dataset_matches_the_block_and_is_seeded_per_image(tiny_image_folder):
    from clipkit.blocks.multicrop import sample_square_crops

    paths = _image_paths(tiny_image_folder[0])[:4]
    dataset = fc.SquareCropDataset(paths, num_crops=3, side_range=(0.5, 0.9), out_size=32, crop_seed=5)
    expected = sample_square_crops(fc.read_image_uint8(paths[2]), 3, (0.5, 0.9), 32, fc.crop_generator(5, 2))
    assert torch.equal(dataset[2], expected)
    assert torch.equal(dataset[2], dataset[2])
    other_seed = fc.SquareCropDataset(paths, num_crops=3, side_range=(0.5, 0.9), out_size=32, crop_seed=6)
    assert not torch.equal(dataset[2], other_seed[2])


def test_crop_features_do_not_depend_on_batch_size(tiny_clip, tiny_image_folder):
    paths = _image_paths(tiny_image_folder[0])[:5]
    dataset = fc.SquareCropDataset(paths, num_crops=2, side_range=(0.5, 0.9), out_size=64, crop_seed=0)
    by_one = fc.encode_square_crops(tiny_clip, dataset, CLIP_MEAN, CLIP_STD, "cpu", batch_size=1)["crop_features"]
    by_four = fc.encode_square_crops(tiny_clip, dataset, CLIP_MEAN, CLIP_STD, "cpu", batch_size=4)["crop_features"]
    assert by_one.shape == (5, 2, 64)
    torch.testing.assert_close(by_one, by_four, rtol=1e-5, atol=1e-5)
    # reference: normalise one image's crops by hand and encode them
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        reference = tiny_clip.encode_image((dataset[3].float() / 255 - mean) / std)
    torch.testing.assert_close(by_one[3], reference, rtol=1e-5, atol=1e-5)


def test_cached_crop_features_give_identical_logits(tiny_clip, tiny_image_folder, tmp_path):
    paths = _image_paths(tiny_image_folder[0])
    dataset = fc.SquareCropDataset(paths, num_crops=2, side_range=(0.5, 0.9), out_size=64, crop_seed=1)
    key = _key(image_paths=paths, num_crops=2, crop_seed=1, checkpoint_digest=fc.model_digest(tiny_clip))

    def compute():
        return fc.encode_square_crops(tiny_clip, dataset, CLIP_MEAN, CLIP_STD, "cpu", batch_size=8)

    classifier = torch.nn.functional.normalize(torch.randn(3, 64, generator=torch.Generator().manual_seed(0)), dim=-1)
    fresh = compute()["crop_features"]
    _quiet(key, compute, root=str(tmp_path))
    cached = _quiet(key, lambda: pytest.fail("cache hit expected"), root=str(tmp_path))["crop_features"]
    assert torch.equal(cached @ classifier.T, fresh @ classifier.T)


def test_model_digest_requires_a_checkpoint_path():
    from clipkit.clip import build_tiny_clip

    with pytest.raises(ValueError, match="FEATURE_CACHE"):
        fc.model_digest(build_tiny_clip())


def test_unreadable_image_names_its_path(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"no image here")
    with pytest.raises(OSError, match="broken.jpg"):
        fc.read_image_uint8(str(bad))
