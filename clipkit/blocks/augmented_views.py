"""Random resized crop + horizontal flip views with an explicit generator (Tip-Adapter's cache augmentation).

``RandomResizedCrop(size, scale, ratio)`` + ``RandomHorizontalFlip(p)`` as torchvision samples them (area fraction
U(scale), log aspect ratio U(log ratio), 10 attempts, then a centre crop clamped to the ratio range), but drawn from a
``torch.Generator`` so that each image's views depend only on (seed, image index): the views, and hence their cached
features, do not depend on batch size, workers or evaluation order. Produced as uint8 tensors on the CPU and
normalised on the device (``feature_cache.encode_square_crops`` encodes any dataset of (N, 3, S, S) uint8 items).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

# Bump when the sampler's algorithm changes (the views of a given seed would differ); part of the cache key.
VIEW_SAMPLER_VERSION = 1
RRC_ATTEMPTS = 10  # torchvision's number of rejection-sampling attempts


def _uniform(low: float, high: float, generator: Optional[torch.Generator]) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(high_exclusive: int, generator: Optional[torch.Generator]) -> int:
    return int(torch.randint(0, high_exclusive, (), generator=generator))


def sample_resized_crop_box(height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                            generator: Optional[torch.Generator] = None) -> Tuple[int, int, int, int]:
    """(top, left, h, w) of one random resized crop of an (height, width) image (torchvision's algorithm)."""
    low, high = float(scale[0]), float(scale[1])
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop area range must satisfy 0 < a <= b <= 1, got {tuple(scale)}")
    if not 0.0 < ratio[0] <= ratio[1]:
        raise ValueError(f"aspect ratio range must satisfy 0 < r0 <= r1, got {tuple(ratio)}")
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(RRC_ATTEMPTS):
        target_area = area * _uniform(low, high, generator)
        aspect = math.exp(_uniform(log_low, log_high, generator))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def resized_crop_views(image: torch.Tensor, num_views: int, out_size: int, scale: Sequence[float] = (0.5, 1.0),
                       ratio: Sequence[float] = (3.0 / 4.0, 4.0 / 3.0), hflip: float = 0.5,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(V, 3, S, S) uint8 views of a (3, H, W) uint8 image: random resized crop (bicubic, antialiased), then a
    horizontal flip with probability ``hflip``."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
    views = []
    for _ in range(num_views):
        top, left, h, w = sample_resized_crop_box(image.shape[1], image.shape[2], scale, ratio, generator)
        view = TF.resize(image[:, top : top + h, left : left + w], [out_size, out_size],
                         interpolation=InterpolationMode.BICUBIC, antialias=True)
        if float(torch.rand((), generator=generator)) < hflip:
            view = view.flip(-1)
        views.append(view)
    return torch.stack(views)


def describe_resized_crop_views(out_size: int, scale: Sequence[float], ratio: Sequence[float], hflip: float,
                                pixel_mean: Sequence[float], pixel_std: Sequence[float]) -> str:
    """The transform description that keys the views' features in the feature cache."""
    return (f"resized_crop_views/v{VIEW_SAMPLER_VERSION}(area=U{tuple(float(v) for v in scale)}, "
            f"ratio=logU{tuple(float(v) for v in ratio)}, size={int(out_size)}, bicubic, antialias) -> "
            f"hflip(p={float(hflip)}) -> normalize(mean={list(pixel_mean)}, std={list(pixel_std)})")


class ResizedCropViewsDataset(torch.utils.data.Dataset):
    """Item i = (num_views, 3, S, S) uint8 views of image i, from the generator of (seed, i)."""

    def __init__(self, image_paths: Sequence[str], num_views: int, out_size: int, scale: Sequence[float],
                 ratio: Sequence[float], hflip: float, seed: int):
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        self.image_paths = list(image_paths)
        self.num_views, self.out_size, self.seed = int(num_views), int(out_size), int(seed)
        self.scale, self.ratio, self.hflip = tuple(scale), tuple(ratio), float(hflip)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from clipkit.feature_cache import crop_generator, read_image_uint8

        return resized_crop_views(read_image_uint8(self.image_paths[index]), self.num_views, self.out_size,
                                  self.scale, self.ratio, self.hflip, crop_generator(self.seed, index))


__all__ = ["ResizedCropViewsDataset", "VIEW_SAMPLER_VERSION", "describe_resized_crop_views", "resized_crop_views",
           "sample_resized_crop_box"]
