"""LaFTer's SimSiam-style strong view (clipkit/blocks/views.py ``simsiam_transform``, ``RandomPILGaussianBlur``)."""

import random

import numpy as np
import torch
from PIL import Image, ImageFilter

from clipkit.blocks.views import RandomPILGaussianBlur, simsiam_transform


def colourful_image(size=(48, 40), seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8))


def test_output_is_a_uint8_tensor_of_the_crop_size():
    transform = simsiam_transform((32, 32), (0.2, 1.0))
    torch.manual_seed(0)
    random.seed(0)
    out = transform(colourful_image())
    assert out.dtype == torch.uint8 and out.shape == (3, 32, 32)


def test_grayscale_with_probability_one_gives_equal_channels():
    transform = simsiam_transform((32, 32), (0.5, 1.0), color_jitter_p=0.0, grayscale_p=1.0, blur_p=0.0)
    out = transform(colourful_image())
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])


def test_identity_settings_reduce_to_the_crop():
    """No flip, no jitter, no grayscale, no blur, full-area square crop of a square image = a plain resize."""
    image = colourful_image((40, 40))
    transform = simsiam_transform((20, 20), (1.0, 1.0), hflip=0.0, color_jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    torch.manual_seed(0)
    out = transform(image)
    # RandomResizedCrop with area 1 needs aspect ratio 1 on a square image; other draws fall back to the centre crop
    reference = torch.from_numpy(np.array(image.resize((20, 20), Image.BILINEAR))).permute(2, 0, 1)
    assert (out.int() - reference.int()).abs().max() <= 1


def test_blur_draws_its_radius_from_pythons_random_and_matches_pil():
    image = colourful_image()
    random.seed(3)
    blurred = RandomPILGaussianBlur((0.1, 2.0), p=1.0)(image)
    random.seed(3)
    radius = random.uniform(0.1, 2.0)
    assert np.array_equal(np.asarray(blurred), np.asarray(image.filter(ImageFilter.GaussianBlur(radius=radius))))
    assert RandomPILGaussianBlur((0.1, 2.0), p=0.0)(image) is image
