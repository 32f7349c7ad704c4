"""microCLIP's fast-prior mode (TRAINER.MICROCLIP.PL.PRIOR_CACHE): the cached pool equals the frozen encoder on the
same crops, a step draws N distinct pool crops per image, the loader makes no crops, and the cache key misses when
the pool, the backbone or the checkpoint changes."""

import os

import pytest
import torch

from tests.test_microclip_trainer import CONFIG_DIR, make_trainer

FAST_PRIOR = os.path.join(CONFIG_DIR, "variants", "fast_prior_cache.yaml")
SMALL_POOL = ["TRAINER.MICROCLIP.PL.PRIOR_CACHE_POOL", "10", "TRAINER.MICROCLIP.N_CROPS", "4"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pool_equals_the_frozen_encoder_and_steps_draw_from_it(image_root, tiny_clip_path, tmp_path):
    from clipkit.feature_cache import SquareCropDataset

    trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path), [FAST_PRIOR], SMALL_POOL)
    model, node = trainer.model, trainer.node
    train = list(trainer.dm.dataset.train_x)
    assert trainer.prior_pool_crops.shape == (len(train), 10, model.w_star.shape[1])
    # the pool of image 0 is the frozen encoder on the same seeded crops
    crops = SquareCropDataset([item.impath for item in train], 10, node.CROP_SIDE_RANGE, 64, 0)[0]
    with torch.no_grad():
        expected = model.encode_cls(crops.unsqueeze(0), model.prior_visual)[0]  # (10, D)
    assert torch.allclose(trainer.prior_pool_crops[0], expected, atol=1e-4)
    batch = next(iter(trainer.train_loader_x))
    assert "img3" not in batch  # the loader makes no crops in this mode
    drawn = trainer.draw_cached_prior(batch["index"])
    assert drawn.crops.shape == (len(batch["index"]), 4, expected.shape[-1])
    for row, index in zip(drawn.crops, batch["index"].tolist()):
        pool = trainer.prior_pool_crops[index]
        matches = [(pool - crop).abs().sum(dim=1).argmin().item() for crop in row]
        assert len(set(matches)) == 4  # distinct pool entries
        assert all(torch.equal(pool[m], crop) for m, crop in zip(matches, row))
    summary = trainer.forward_backward(batch)
    assert torch.isfinite(summary["loss"])


def test_cache_key_misses_for_another_pool_seed_backbone_or_checkpoint():
    from clipkit.feature_cache import cache_file, feature_cache_key

    base = dict(backbone="ViT-B/32", checkpoint_digest="abc", dataset="dtd", split="train", transform="crops",
                image_paths=["/a.jpg", "/b.jpg"], num_crops=32, crop_seed=0)
    reference = cache_file(feature_cache_key(**base))
    for change in (dict(num_crops=16), dict(crop_seed=1), dict(backbone="ViT-B/16"), dict(checkpoint_digest="abd")):
        assert cache_file(feature_cache_key(**dict(base, **change))) != reference, change


def test_fast_prior_needs_the_frozen_encoder_and_a_large_enough_pool(image_root, tiny_clip_path, tmp_path):
    with pytest.raises(ValueError, match="PRIOR_ENCODER frozen"):
        make_trainer(image_root, tiny_clip_path, str(tmp_path), [], ["TRAINER.MICROCLIP.PL.PRIOR_CACHE", "True"])
    with pytest.raises(ValueError, match="PRIOR_CACHE_POOL"):
        make_trainer(image_root, tiny_clip_path, str(tmp_path), [FAST_PRIOR],
                     ["TRAINER.MICROCLIP.PL.PRIOR_CACHE_POOL", "4"])
