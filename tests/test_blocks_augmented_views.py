"""Seeded random-resized-crop + flip views (Tip-Adapter's cache augmentation)."""

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from clipkit.blocks.augmented_views import (
    ResizedCropViewsDataset,
    describe_resized_crop_views,
    resized_crop_views,
    sample_resized_crop_box,
)


def test_boxes_lie_inside_the_image_with_area_and_ratio_in_range():
    generator = torch.Generator().manual_seed(0)
    height, width = 40, 60
    for _ in range(200):
        top, left, h, w = sample_resized_crop_box(height, width, (0.5, 1.0), (0.75, 4 / 3), generator)
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
        # rounding of h and w moves area and ratio slightly off the sampled values
        assert 0.5 * height * width * 0.9 <= h * w <= height * width
        assert 0.75 * 0.9 <= w / h <= 4 / 3 * 1.1


def test_fallback_is_a_centre_crop_clamped_to_the_ratio_range():
    # area 1 with ratio 2..3 on a 10 x 10 image never fits: centre crop of width 10 and height round(10 / 2) = 5
    assert sample_resized_crop_box(10, 10, (1.0, 1.0), (2.0, 3.0), torch.Generator().manual_seed(0)) == (2, 0, 5, 10)
    # image wider than the largest ratio: full height, width round(8 * 0.6) = 5, centred
    assert sample_resized_crop_box(8, 8, (1.0, 1.0), (0.5, 0.6), torch.Generator().manual_seed(0)) == (0, 1, 8, 5)
    with pytest.raises(ValueError, match="area range"):
        sample_resized_crop_box(8, 8, (0.0, 1.0), (1.0, 1.0))


def test_full_view_with_flip_is_the_resized_image_mirrored():
    image = torch.randint(0, 256, (3, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    views = resized_crop_views(image, 2, 6, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0,
                               generator=torch.Generator().manual_seed(0))
    resized = TF.resize(image, [6, 6], interpolation=InterpolationMode.BICUBIC, antialias=True)
    assert views.shape == (2, 3, 6, 6) and views.dtype == torch.uint8
    for view in views:
        assert torch.equal(view, resized.flip(-1))
    unflipped = resized_crop_views(image, 1, 6, (1.0, 1.0), (1.0, 1.0), hflip=0.0,
                                   generator=torch.Generator().manual_seed(0))
    assert torch.equal(unflipped[0], resized)


def test_views_depend_only_on_seed_and_image_index(tmp_path):
    from PIL import Image

    paths = []
    for i in range(3):
        array = torch.randint(0, 256, (20, 30, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(i))
        path = str(tmp_path / f"{i}.png")
        Image.fromarray(array.numpy()).save(path)
        paths.append(path)
    first = ResizedCropViewsDataset(paths, 4, 8, (0.5, 1.0), (0.75, 4 / 3), 0.5, seed=7)
    again = ResizedCropViewsDataset(paths, 4, 8, (0.5, 1.0), (0.75, 4 / 3), 0.5, seed=7)
    other = ResizedCropViewsDataset(paths, 4, 8, (0.5, 1.0), (0.75, 4 / 3), 0.5, seed=8)
    assert len(first) == 3 and first[1].shape == (4, 3, 8, 8)
    assert torch.equal(first[2], again[2]) and torch.equal(first[0], again[0])  # any access order
    assert not torch.equal(first[1], other[1])
    assert not torch.equal(first[1][0], first[1][1])  # the views of one image differ


def test_description_names_every_setting():
    text = describe_resized_crop_views(224, (0.5, 1.0), (0.75, 4 / 3), 0.5, [0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    for part in ("v1", "(0.5, 1.0)", "size=224", "bicubic", "p=0.5", "[0.1, 0.2, 0.3]", "0.75"):
        assert part in text
