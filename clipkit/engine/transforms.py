"""``build_transform``: Dassl's augmentation names, pipeline order and printed ``+ ...`` lines.

Train pipeline order (fixed, independent of the order of INPUT.TRANSFORMS): resize (only without a random crop) ->
random_translation -> random_crop -> random_resized_crop -> random_flip -> randaugment_fixmatch -> colorjitter ->
randomgrayscale -> gaussian_blur -> ToTensor -> cutout -> normalize -> gaussian_noise -> instance_norm.
Test pipeline: resize the shorter side to max(SIZE) -> center crop SIZE -> ToTensor -> normalize -> instance_norm.
"""

from __future__ import annotations

import random

import numpy as np
import PIL.ImageEnhance
import PIL.ImageOps
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    GaussianBlur,
    InterpolationMode,
    Normalize,
    RandomApply,
    RandomCrop,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ToTensor,
)

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

SUPPORTED_CHOICES = (
    "random_flip",
    "random_resized_crop",
    "normalize",
    "instance_norm",
    "random_crop",
    "random_translation",
    "center_crop",  # accepted; a no-op in training (the test pipeline always center-crops)
    "cutout",
    "randaugment_fixmatch",
    "gaussian_noise",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
)
# Dassl names whose Dassl implementation no longer runs on NumPy >= 1.24 (np.int): rejected by both backends.
BROKEN_IN_DASSL = ("imagenet_policy", "cifar10_policy", "svhn_policy", "randaugment")
# Dassl names that work in Dassl but are not implemented by the internal engine.
NOT_IMPLEMENTED = ("randaugment2",)


def reject_broken_choices(choices) -> None:
    """Raise ValueError naming INPUT.TRANSFORMS for the Dassl augmentations broken on NumPy >= 1.24."""
    for choice in choices:
        if choice in BROKEN_IN_DASSL:
            raise ValueError(
                f"INPUT.TRANSFORMS: '{choice}' is not supported (Dassl's implementation uses np.int, removed in "
                f"NumPy 1.24). Use 'randaugment_fixmatch' or one of {list(SUPPORTED_CHOICES)}."
            )


def check_transform_choices(choices) -> None:
    """Raise ValueError naming INPUT.TRANSFORMS and the valid names for any unknown or unsupported choice."""
    reject_broken_choices(choices)
    for choice in choices:
        if choice in NOT_IMPLEMENTED:
            raise ValueError(
                f"INPUT.TRANSFORMS: '{choice}' is not implemented by clipkit's internal engine; use "
                f"CLIPKIT_ENGINE=dassl or one of {list(SUPPORTED_CHOICES)}."
            )
        if choice not in SUPPORTED_CHOICES:
            raise ValueError(f"INPUT.TRANSFORMS: unknown transform '{choice}'; valid names: {list(SUPPORTED_CHOICES)}")


class Random2DTranslation:
    """With probability ``p``: enlarge by 1/8 and random-crop back to (height, width); else plain resize."""

    def __init__(self, height, width, p=0.5, interpolation=InterpolationMode.BILINEAR):
        self.height, self.width, self.p, self.interpolation = height, width, p, interpolation

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return TF.resize(img, [self.height, self.width], interpolation=self.interpolation)
        new_w, new_h = int(round(self.width * 1.125)), int(round(self.height * 1.125))
        img = TF.resize(img, [new_h, new_w], interpolation=self.interpolation)
        left = int(round(random.uniform(0, new_w - self.width)))
        top = int(round(random.uniform(0, new_h - self.height)))
        return TF.crop(img, top, left, self.height, self.width)


class InstanceNormalization:
    """Per-channel standardisation of a (C, H, W) tensor over its own pixels."""

    def __init__(self, eps=1e-8):
        self.eps = eps

    def __call__(self, img):
        flat = img.reshape(img.shape[0], -1)
        mean = flat.mean(1).view(-1, 1, 1)
        std = flat.std(1).view(-1, 1, 1)
        return (img - mean) / (std + self.eps)


class Cutout:
    """Zero ``n_holes`` squares of side ``length`` (centres drawn with numpy) in a (C, H, W) tensor."""

    def __init__(self, n_holes=1, length=16):
        self.n_holes, self.length = n_holes, length

    def __call__(self, img):
        h, w = img.size(1), img.size(2)
        mask = np.ones((h, w), np.float32)
        half = self.length // 2
        for _ in range(self.n_holes):
            y, x = np.random.randint(h), np.random.randint(w)
            mask[np.clip(y - half, 0, h):np.clip(y + half, 0, h), np.clip(x - half, 0, w):np.clip(x + half, 0, w)] = 0.0
        return img * torch.from_numpy(mask).expand_as(img)


class GaussianNoise:
    """With probability ``p`` add N(mean, std) noise to a tensor image."""

    def __init__(self, mean=0.0, std=0.15, p=0.5):
        self.mean, self.std, self.p = mean, std, p

    def __call__(self, img):
        if random.uniform(0, 1) > self.p:
            return img
        return img + torch.randn(img.size()) * self.std + self.mean


# ------------------------------------------------------------------- FixMatch RandAugment (Sohn et al., 2020)


def _random_sign(v):
    return -v if random.random() > 0.5 else v


def _affine(img, coeffs):
    return img.transform(img.size, Image.AFFINE, coeffs)


def _shear_x(img, v):
    return _affine(img, (1, _random_sign(v), 0, 0, 1, 0))


def _shear_y(img, v):
    return _affine(img, (1, 0, 0, _random_sign(v), 1, 0))


def _translate_x(img, v):
    return _affine(img, (1, 0, _random_sign(v) * img.size[0], 0, 1, 0))


def _translate_y(img, v):
    return _affine(img, (1, 0, 0, 0, 1, _random_sign(v) * img.size[1]))


def _rotate(img, v):
    return img.rotate(_random_sign(v))


def _identity(img, _):
    return img


# (op, min magnitude, max magnitude): the FixMatch list, magnitude drawn uniformly per application.
FIXMATCH_OPS = (
    (lambda img, _: PIL.ImageOps.autocontrast(img), 0, 1),
    (lambda img, v: PIL.ImageEnhance.Brightness(img).enhance(v), 0.05, 0.95),
    (lambda img, v: PIL.ImageEnhance.Color(img).enhance(v), 0.05, 0.95),
    (lambda img, v: PIL.ImageEnhance.Contrast(img).enhance(v), 0.05, 0.95),
    (lambda img, _: PIL.ImageOps.equalize(img), 0, 1),
    (_identity, 0, 1),
    (lambda img, v: PIL.ImageOps.posterize(img, int(v)), 4, 8),
    (_rotate, -30, 30),
    (lambda img, v: PIL.ImageEnhance.Sharpness(img).enhance(v), 0.05, 0.95),
    (_shear_x, -0.3, 0.3),
    (_shear_y, -0.3, 0.3),
    (lambda img, v: PIL.ImageOps.solarize(img, v), 0, 256),
    (_translate_x, -0.3, 0.3),
    (_translate_y, -0.3, 0.3),
)


class RandAugmentFixMatch:
    """Apply ``n`` ops drawn with replacement from FIXMATCH_OPS, each at a uniformly random magnitude."""

    def __init__(self, n=2):
        self.n = n

    def __call__(self, img):
        for op, low, high in random.choices(FIXMATCH_OPS, k=self.n):
            img = op(img, random.random() * (high - low) + low)
        return img


# ------------------------------------------------------------------------------------------------------ builders


def build_transform(cfg, is_train=True, choices=None):
    """Compose of the INPUT.TRANSFORMS (or ``choices``) pipeline; None when INPUT.NO_TRANSFORM."""
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    choices = cfg.INPUT.TRANSFORMS if choices is None else choices
    check_transform_choices(choices)
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise ValueError(
            f"INPUT.INTERPOLATION='{cfg.INPUT.INTERPOLATION}' is not one of {list(INTERPOLATION_MODES)}"
        )
    target_size = f"{cfg.INPUT.SIZE[0]}x{cfg.INPUT.SIZE[1]}"
    normalize = Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    build = _build_transform_train if is_train else _build_transform_test
    return build(cfg, choices, target_size, normalize)


def _build_transform_train(cfg, choices, target_size, normalize):
    print("Building transform_train")
    inp = cfg.INPUT
    interp = INTERPOLATION_MODES[inp.INTERPOLATION]
    steps = []
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print(f"+ resize to {target_size}")
        steps.append(Resize(inp.SIZE, interpolation=interp))
    if "random_translation" in choices:
        print("+ random translation")
        steps.append(Random2DTranslation(inp.SIZE[0], inp.SIZE[1]))
    if "random_crop" in choices:
        print(f"+ random crop (padding = {inp.CROP_PADDING})")
        steps.append(RandomCrop(inp.SIZE, padding=inp.CROP_PADDING))
    if "random_resized_crop" in choices:
        print(f"+ random resized crop (size={inp.SIZE}, scale={inp.RRCROP_SCALE})")
        steps.append(RandomResizedCrop(inp.SIZE, scale=inp.RRCROP_SCALE, interpolation=interp))
    if "random_flip" in choices:
        print("+ random flip")
        steps.append(RandomHorizontalFlip())
    if "randaugment_fixmatch" in choices:
        print(f"+ randaugment_fixmatch (n={inp.RANDAUGMENT_N})")
        steps.append(RandAugmentFixMatch(inp.RANDAUGMENT_N))
    if "colorjitter" in choices:
        print(
            f"+ color jitter (brightness={inp.COLORJITTER_B}, contrast={inp.COLORJITTER_C}, "
            f"saturation={inp.COLORJITTER_S}, hue={inp.COLORJITTER_H})"
        )
        steps.append(ColorJitter(inp.COLORJITTER_B, inp.COLORJITTER_C, inp.COLORJITTER_S, inp.COLORJITTER_H))
    if "randomgrayscale" in choices:
        print("+ random gray scale")
        steps.append(RandomGrayscale(p=inp.RGS_P))
    if "gaussian_blur" in choices:
        print(f"+ gaussian blur (kernel={inp.GB_K})")
        steps.append(RandomApply([GaussianBlur(inp.GB_K)], p=inp.GB_P))
    print("+ to torch tensor of range [0, 1]")
    steps.append(ToTensor())
    if "cutout" in choices:
        print(f"+ cutout (n_holes={inp.CUTOUT_N}, length={inp.CUTOUT_LEN})")
        steps.append(Cutout(inp.CUTOUT_N, inp.CUTOUT_LEN))
    if "normalize" in choices:
        print(f"+ normalization (mean={inp.PIXEL_MEAN}, std={inp.PIXEL_STD})")
        steps.append(normalize)
    if "gaussian_noise" in choices:
        print(f"+ gaussian noise (mean={inp.GN_MEAN}, std={inp.GN_STD})")
        steps.append(GaussianNoise(inp.GN_MEAN, inp.GN_STD))
    if "instance_norm" in choices:
        print("+ instance normalization")
        steps.append(InstanceNormalization())
    return Compose(steps)


def _build_transform_test(cfg, choices, target_size, normalize):
    print("Building transform_test")
    inp = cfg.INPUT
    interp = INTERPOLATION_MODES[inp.INTERPOLATION]
    print(f"+ resize the smaller edge to {max(inp.SIZE)}")
    print(f"+ {target_size} center crop")
    print("+ to torch tensor of range [0, 1]")
    steps = [Resize(max(inp.SIZE), interpolation=interp), CenterCrop(inp.SIZE), ToTensor()]
    if "normalize" in choices:
        print(f"+ normalization (mean={inp.PIXEL_MEAN}, std={inp.PIXEL_STD})")
        steps.append(normalize)
    if "instance_norm" in choices:
        print("+ instance normalization")
        steps.append(InstanceNormalization())
    return Compose(steps)
