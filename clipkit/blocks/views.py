"""Image views shared by the self-training methods (microCLIP, DPA, ...): uint8 tensors out of the loader workers,
normalised on the device by ``PixelNormalizer``.

* ``view_transform``: short side resized, then a random or centre crop (MUST/DPA/microCLIP weak view and test view);
* ``strong_transform``: timm's RandomResizedCrop + flip + RandAugment (MUST/DPA/microCLIP strong view), with the
  posterize behaviour of the Pillow the official codes ran with;
* ``simsiam_transform``: RandomResizedCrop + flip + colour jitter + grayscale + Gaussian blur (LaFTer's strong view, the
  SimSiam/MoCo-v2 recipe).
"""

from __future__ import annotations

import random

import torch
from torch import nn
from torchvision import transforms as T

from clipkit.dassl import INTERPOLATION_MODES

CROP_MODES = ("random", "center")


def view_transform(size, interpolation: str, crop: str):
    """PIL -> (3, H, W) uint8: short side resized to max(size), then a random or centre crop of ``size``."""
    if crop not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
    cropper = T.RandomCrop(size) if crop == "random" else T.CenterCrop(size)
    return T.Compose([T.Resize(max(size), interpolation=INTERPOLATION_MODES[interpolation]), cropper, T.PILToTensor()])


def posterize_keeping_zero_bits(img, bits_to_keep, **_):
    """timm's posterize with Pillow < 11 semantics: 0 bits kept gives a black image.

    timm's "PosterizeIncreasing" asks for 0 bits at magnitude 10 (reached by m9 + mstd0.5 in ~2% of draws); recent
    Pillow rejects that with ValueError, the Pillow the official code ran with returned zeros.
    """
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def strong_transform(size, rrc_scale, hflip: float, randaugment: str):
    """PIL -> (3, H, W) uint8: timm RandomResizedCrop(scale) + flip + RandAugment, bicubic, fill 0 (official)."""
    from timm.data import auto_augment
    from timm.data.transforms_factory import transforms_imagenet_train

    transform = transforms_imagenet_train(
        tuple(size), scale=tuple(rrc_scale), hflip=hflip, color_jitter=0.0, auto_augment=randaugment,
        interpolation="bicubic", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), use_prefetcher=True,
    )
    for stage in transform.transforms:
        for op in getattr(stage, "ops", ()):
            if op.aug_fn is auto_augment.posterize:
                op.aug_fn = posterize_keeping_zero_bits
    return transform


class RandomPILGaussianBlur:
    """PIL ``ImageFilter.GaussianBlur(radius=sigma)``, sigma ~ U(sigma_range) from Python's ``random``, applied with
    probability ``p`` (SimCLR/MoCo-v2's blur; LaFTer applies it to every strong view: p = 1)."""

    def __init__(self, sigma_range=(0.1, 2.0), p: float = 1.0):
        self.sigma_range, self.p = tuple(sigma_range), p

    def __call__(self, image):
        from PIL import ImageFilter

        if self.p < 1.0 and random.random() >= self.p:
            return image
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma_range)))

    def __repr__(self):
        return f"RandomPILGaussianBlur(sigma_range={self.sigma_range}, p={self.p})"


def simsiam_transform(size, rrc_scale, hflip: float = 0.5, color_jitter=(0.4, 0.4, 0.4, 0.1),
                      color_jitter_p: float = 0.8, grayscale_p: float = 0.2, blur_sigma=(0.1, 2.0),
                      blur_p: float = 1.0, interpolation: str = "bilinear"):
    """PIL -> (3, H, W) uint8: RandomResizedCrop(size, rrc_scale) + h-flip + ColorJitter(b, c, s, h) with probability
    ``color_jitter_p`` + RandomGrayscale + PIL Gaussian blur (LaFTer ``utils/model_utils.py`` get_random_transform:
    scale (0.2, 1), torchvision's default bilinear crop, jitter (0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2, blur
    sigma U(0.1, 2) on every image)."""
    return T.Compose([
        T.RandomResizedCrop(tuple(size), scale=tuple(rrc_scale), interpolation=INTERPOLATION_MODES[interpolation]),
        T.RandomHorizontalFlip(hflip),
        T.RandomApply([T.ColorJitter(*color_jitter)], p=color_jitter_p),
        T.RandomGrayscale(p=grayscale_p),
        RandomPILGaussianBlur(blur_sigma, blur_p),
        T.PILToTensor(),
    ])


class PixelNormalizer(nn.Module):
    """(B, 3, H, W) uint8 (or float in [0, 255]) -> ``(x - 255 mean) / (255 std)`` float, on the device."""

    def __init__(self, pixel_mean, pixel_std):
        super().__init__()
        self.register_buffer("pixel_mean", 255.0 * torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("pixel_std", 255.0 * torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.pixel_mean) / self.pixel_std


__all__ = [
    "CROP_MODES",
    "PixelNormalizer",
    "RandomPILGaussianBlur",
    "posterize_keeping_zero_bits",
    "simsiam_transform",
    "strong_transform",
    "view_transform",
]
