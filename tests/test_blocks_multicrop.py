"""Multi-crop blocks: square-crop sampling (WCA / microCLIP Eq. 9) and softmax view aggregation (Eqs. 10-11)."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipkit.blocks.multicrop import aggregate_views, sample_crop_boxes, sample_square_crops
from clipkit.blocks.text_classifier import mean_classifier, weighted_classifier


def _generator(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("side_range", [(0.5, 0.9), (0.1, 0.9), (0.3, 0.3)])
def test_crop_sides_stay_in_range_and_boxes_inside_image(side_range):
    height, width = 120, 200
    boxes = sample_crop_boxes(height, width, 2000, side_range, _generator(0))
    tops, lefts, sides = boxes.unbind(1)
    short = min(height, width)
    assert int(sides.min()) >= math.floor(side_range[0] * short)
    assert int(sides.max()) <= math.floor(side_range[1] * short)
    assert bool((tops >= 0).all() and (lefts >= 0).all())
    assert bool((tops + sides <= height).all() and (lefts + sides <= width).all())
    if side_range[0] < side_range[1]:  # the range is actually covered, not a constant side
        span = (side_range[1] - side_range[0]) * short
        assert float(sides.min()) < side_range[0] * short + 0.05 * span
        assert float(sides.max()) > side_range[1] * short - 0.05 * span
        # positions use the whole free range (both image borders are reached)
        assert int(lefts.min()) == 0 and bool(((lefts + sides) == width).any())


def test_crops_are_deterministic_per_generator_seed():
    image = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=_generator(1))
    first = sample_square_crops(image, 8, (0.5, 0.9), 32, _generator(7))
    again = sample_square_crops(image, 8, (0.5, 0.9), 32, _generator(7))
    other = sample_square_crops(image, 8, (0.5, 0.9), 32, _generator(8))
    assert first.shape == (8, 3, 32, 32) and first.dtype == torch.uint8
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_crop_content_is_the_boxed_region():
    """With side == output size the resize is the identity, so each crop is exactly the image region of its box."""
    image = torch.randint(0, 256, (3, 40, 60), dtype=torch.uint8, generator=_generator(2))
    side_fraction = 20 / 40
    crops = sample_square_crops(image, 5, (side_fraction, side_fraction), 20, _generator(3))
    boxes = sample_crop_boxes(40, 60, 5, (side_fraction, side_fraction), _generator(3))
    for crop, (top, left, side) in zip(crops, boxes.tolist()):
        assert side == 20
        assert torch.equal(crop, image[:, top : top + side, left : left + side])


def test_bad_crop_arguments_are_rejected():
    image = torch.zeros(3, 10, 10, dtype=torch.uint8)
    with pytest.raises(ValueError, match="0 < a <= b <= 1"):
        sample_square_crops(image, 2, (0.9, 0.5), 8)
    with pytest.raises(ValueError, match="0 < a <= b <= 1"):
        sample_square_crops(image, 2, (0.0, 0.5), 8)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        sample_square_crops(torch.zeros(10, 10, 3, dtype=torch.uint8), 2, (0.5, 0.9), 8)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=_generator(seed)), dim=-1)


def test_view_weights_sum_to_one_and_follow_the_softmax():
    views, anchor = _unit(4, 6, 16, seed=0), _unit(4, 16, seed=1)
    temperature = math.e ** 4
    aggregated, weights = aggregate_views(views, anchor, temperature)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(4))
    for b in range(4):
        similarity = torch.tensor([float(views[b, i] @ anchor[b]) for i in range(6)])
        torch.testing.assert_close(weights[b], torch.softmax(temperature * similarity, dim=0))
        expected = F.normalize((weights[b][:, None] * views[b]).sum(0), dim=0)
        torch.testing.assert_close(aggregated[b], expected)
    torch.testing.assert_close(aggregated.norm(dim=1), torch.ones(4))


def test_uniform_weights_equal_the_mean_crop_classifier():
    """WCA with uniform image and text weights = CLIP on the mean crop feature against the CuPL classifier."""
    views, anchor = _unit(3, 5, 16, seed=2), _unit(3, 16, seed=3)
    descriptions = [_unit(n, 16, seed=10 + n) for n in (2, 4, 3, 6)]
    text_anchors = _unit(4, 16, seed=4)
    aggregated, weights = aggregate_views(views, anchor, temperature=0.0)
    torch.testing.assert_close(weights, torch.full((3, 5), 1 / 5))
    text = weighted_classifier(descriptions, text_anchors, "softmax", scale=0.0)
    wca_scores = aggregated @ text.T
    mean_crop = views.mean(dim=1)
    mean_crop_scores = (mean_crop @ mean_classifier(descriptions).T) / mean_crop.norm(dim=1, keepdim=True)
    torch.testing.assert_close(wca_scores, mean_crop_scores)
    assert torch.equal(wca_scores.argmax(1), (views @ mean_classifier(descriptions).T).mean(1).argmax(1))


def test_bilinear_score_factorises():
    """sum_i sum_j w_i v_cj <f_i, d_cj> = <sum_i w_i f_i, sum_j v_cj d_cj> (WCA Eq. 6), and the blocks are its
    normalised form."""
    views, anchor = _unit(2, 7, 16, seed=5), _unit(2, 16, seed=6)
    descriptions = [_unit(n, 16, seed=20 + n) for n in (3, 5)]
    text_anchors = _unit(2, 16, seed=7)
    image_scale, text_scale = math.e ** 4, math.e ** 2
    aggregated, image_weights = aggregate_views(views, anchor, image_scale)
    text = weighted_classifier(descriptions, text_anchors, "softmax", scale=text_scale)
    for b in range(2):
        image_side = (image_weights[b][:, None] * views[b]).sum(0)
        for c, desc in enumerate(descriptions):
            text_weights = torch.softmax(text_scale * (desc @ text_anchors[c]), dim=0)
            double_sum = sum(
                image_weights[b, i] * text_weights[j] * (views[b, i] @ desc[j])
                for i in range(views.shape[1])
                for j in range(desc.shape[0])
            )
            text_side = (text_weights[:, None] * desc).sum(0)
            torch.testing.assert_close(double_sum, image_side @ text_side, rtol=1e-5, atol=1e-6)
            normalised = double_sum / (image_side.norm() * text_side.norm())
            torch.testing.assert_close(aggregated[b] @ text[c], normalised, rtol=1e-5, atol=1e-6)


def test_sharp_temperature_selects_the_most_similar_view():
    views, anchor = _unit(1, 4, 16, seed=8), _unit(1, 16, seed=9)
    best = int((views[0] @ anchor[0]).argmax())
    aggregated, weights = aggregate_views(views, anchor, temperature=1e4)
    assert int(weights.argmax()) == best
    torch.testing.assert_close(aggregated[0], views[0, best], rtol=1e-4, atol=1e-4)
