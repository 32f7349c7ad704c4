"""Views from the decoded image (DATALOADER.VIEWS tensor / device) against the present PIL pipeline, same seeds.

Identical: the random draws (weak-view crop offset, strong view, crop boxes, and the generator states after them),
the strong view and the N multi-view crops (pixel for pixel), and the "device" place's views to the "tensor" place's
on the CPU. The weak view's resize is torchvision's antialiased bicubic instead of Pillow's: its crop box is the same
(checked against the Pillow-resized image), its pixels differ by at most 1 grey level when downscaling, 2 when
upscaling, on under 2% of the pixels (measured at 500x375 -> 224: max 1, 0.43% of the pixels, mean |diff| 0.004).
"""

import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from clipkit.blocks.decoded_views import (
    DecodedViews,
    collate_decoded_views,
    draw_view_offset,
    short_side_resized_size,
    views_on_device,
)
from clipkit.blocks.views import strong_transform, view_transform

SIZE = (64, 64)
CROPS = 4
SIDE_RANGE = (0.5, 0.9)


def natural_image(height, width, seed):
    """A smooth random RGB image (low-frequency noise upsampled, plus grain), like a photo to a resize kernel."""
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    grain = rng.integers(-12, 13, (height, width, 3))
    return Image.fromarray(np.clip(np.asarray(low).astype(int) + grain, 0, 255).astype(np.uint8))


def seed_all(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def present_pipeline(image, weak_crop="random"):
    """The present microCLIP train transforms in DatasetWrapper's order (weak, strong, crops)."""
    from trainers.microclip import MultiCropTransform

    weak = view_transform(SIZE, "bicubic", weak_crop)(image)
    strong = strong_transform(SIZE, (0.3, 1.0), 0.5, "rand-m9-mstd0.5-inc1")(image)
    crops = MultiCropTransform(CROPS, SIDE_RANGE, max(SIZE))(image)
    return weak, torch.as_tensor(np.asarray(strong)), crops


def decoded(place, weak_crop="random"):
    strong = strong_transform(SIZE, (0.3, 1.0), 0.5, "rand-m9-mstd0.5-inc1")
    return DecodedViews(SIZE, InterpolationMode.BICUBIC, weak_crop, strong, CROPS, SIDE_RANGE, max(SIZE), place)


@pytest.mark.parametrize("height, width", [(75, 100), (100, 75), (64, 64), (64, 91), (201, 64)])
def test_resized_size_is_torchvision_resize(height, width):
    resized = T.Resize(max(SIZE), interpolation=InterpolationMode.BICUBIC)(natural_image(height, width, 0))
    assert short_side_resized_size(height, width, max(SIZE)) == (resized.height, resized.width)


@pytest.mark.parametrize("crop", ["random", "center"])
@pytest.mark.parametrize("height, width", [(64, 91), (64, 64), (120, 64)])
def test_view_offset_is_the_crop_transforms_box(crop, height, width):
    image = torch.arange(height * width, dtype=torch.int64).view(1, height, width)
    reference = (T.RandomCrop if crop == "random" else T.CenterCrop)(SIZE)
    torch.manual_seed(3)
    expected, reference_next = reference(image), torch.rand(1)
    torch.manual_seed(3)
    top, left = draw_view_offset(height, width, SIZE, crop)
    assert torch.equal(image[:, top : top + SIZE[0], left : left + SIZE[1]], expected)
    assert torch.equal(torch.rand(1), reference_next)  # the same draws (none for a centre crop or an exact fit)


@pytest.mark.parametrize("weak_crop", ["random", "center"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("height, width, tolerance", [(75, 100, 1), (40, 48, 2)])  # down- and upscaling
def test_tensor_place_matches_the_present_pipeline(seed, weak_crop, height, width, tolerance):
    image = natural_image(height, width, seed)
    seed_all(seed)
    old_weak, old_strong, old_crops = present_pipeline(image, weak_crop)
    old_after = (torch.rand(3), random.random(), np.random.rand())
    seed_all(seed)
    views = decoded("device", weak_crop).draw(image)
    new_after = (torch.rand(3), random.random(), np.random.rand())
    seed_all(seed)
    new = decoded("tensor", weak_crop)(image)

    # the same random stream is consumed: the generators end in the same state
    assert torch.equal(old_after[0], new_after[0]) and old_after[1:] == new_after[1:]
    # strong view (PIL, RandAugment) and the multi-view crops: identical pixels
    assert torch.equal(torch.as_tensor(np.asarray(new["img2"])), old_strong)
    assert torch.equal(new["img3"], old_crops)
    # weak view: the same crop box of the Pillow-resized image ...
    top, left, resized_h, resized_w = views["view_box"].tolist()
    pil_resized = torch.as_tensor(np.array(image.resize((resized_w, resized_h), Image.BICUBIC))).permute(2, 0, 1)
    assert torch.equal(pil_resized[:, top : top + SIZE[0], left : left + SIZE[1]], old_weak)
    # ... resized by torchvision instead of Pillow: at most 1 (downscaling) or 2 (upscaling) grey levels apart, on
    # under 2% of the pixels
    difference = (new["img"].int() - old_weak.int()).abs()
    assert new["img"].dtype == torch.uint8 and new["img"].shape == old_weak.shape
    assert difference.max() <= tolerance and (difference > 0).float().mean() < 0.02


def test_device_place_builds_the_tensor_place_views_from_a_collated_batch():
    images = [natural_image(75, 100, 0), natural_image(90, 70, 1)]
    seed_all(5)
    expected = [decoded("tensor")(image) for image in images]
    seed_all(5)
    samples = [{"img": decoded("device")(image), "label": i, "index": i} for i, image in enumerate(images)]
    batch = collate_decoded_views(samples)
    assert isinstance(batch["full"], list) and batch["full"][1].shape == (3, 90, 70)
    assert batch["crop_boxes"].shape == (2, CROPS, 3) and batch["label"].tolist() == [0, 1]
    weak, crops = views_on_device(batch, SIZE, InterpolationMode.BICUBIC, max(SIZE), torch.device("cpu"))
    assert torch.equal(weak, torch.stack([e["img"] for e in expected]))
    assert torch.equal(crops, torch.stack([e["img3"] for e in expected]))
    assert torch.equal(batch["img2"], torch.stack([torch.as_tensor(np.asarray(e["img2"])) for e in expected]))


@pytest.mark.usefixtures("one_torch_thread")
def test_microclip_views_on_device_give_the_present_batch_and_train(image_root, tiny_clip_path, tmp_path):
    """The trainer's first batch from the same seed in DATALOADER.VIEWS pil and device (CPU): the same images, strong
    views and crops, the weak views within the resize tolerance; a training step on it runs."""
    import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
    from tests.test_microclip_trainer import make_trainer

    batches = {}
    for place in ("pil", "device"):
        trainer = make_trainer(image_root, tiny_clip_path, str(tmp_path / place), opts=["DATALOADER.VIEWS", place])
        torch.manual_seed(7), random.seed(7), np.random.seed(7)
        batch = next(iter(trainer.train_loader_x))
        batches[place] = (batch["index"], *trainer.parse_batch_train(batch))
    (index, weak, strong, crops, labels), (index_d, weak_d, strong_d, crops_d, labels_d) = batches.values()
    assert torch.equal(index, index_d) and torch.equal(labels, labels_d) and torch.equal(strong, strong_d)
    assert torch.equal(crops, crops_d) and crops_d.shape[1:] == (8, 3, 64, 64)
    assert weak_d.shape == weak.shape and (weak_d.int() - weak.int()).abs().max() <= 2
    assert all(torch.isfinite(v) for v in trainer.forward_backward(batch).values())


def test_unsupported_views_place_names_the_key(image_root, tiny_clip_path, tmp_path):
    import tests.plugins.image_folder_dataset  # noqa: F401  (registers TestImageFolder)
    import train
    from clipkit.dassl import build_trainer

    argv = ["--root", image_root, "--trainer", "UPL", "--output-dir", str(tmp_path), "--views-on-device",
            "DATASET.NAME", "TestImageFolder", "MODEL.BACKBONE.NAME", tiny_clip_path, "USE_CUDA", "False"]
    cfg = train.setup_cfg(train.build_parser().parse_args(argv))
    assert cfg.DATALOADER.VIEWS == "device"
    with pytest.raises(ValueError, match="DATALOADER.VIEWS 'device' is not implemented by UPL"):
        build_trainer(cfg)
