"""Multi-view crops and their aggregation (WCA; microCLIP's multi-view pseudo-labeller, Eqs. 9-11).

Crops are square, of side ``U(a, b) * min(H, W)`` at a uniformly random position of the original image, then resized
to the model's input size. They are produced as uint8 tensors on the CPU (data-loader workers) and normalised later on
the device.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF


def sample_crop_boxes(
    height: int, width: int, num_crops: int, side_range: Sequence[float] = (0.5, 0.9),
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """(N, 3) integer boxes (top, left, side): side = U(a, b) * min(H, W), position uniform inside the image."""
    low, high = float(side_range[0]), float(side_range[1])
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop side range must satisfy 0 < a <= b <= 1, got {tuple(side_range)}")
    short = min(height, width)
    fractions = low + (high - low) * torch.rand(num_crops, generator=generator)
    sides = (fractions * short).long().clamp(min=1)
    tops = (torch.rand(num_crops, generator=generator) * (height - sides + 1)).long()
    lefts = (torch.rand(num_crops, generator=generator) * (width - sides + 1)).long()
    return torch.stack([tops, lefts, sides], dim=1)


def sample_square_crops(
    image: torch.Tensor, num_crops: int, side_range: Sequence[float] = (0.5, 0.9), out_size: int = 224,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """(N, 3, S, S) uint8 crops of a (3, H, W) uint8 image (Eq. 9), each resized bicubically (antialiased) to S."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image tensor, got shape {tuple(image.shape)}")
    boxes = sample_crop_boxes(image.shape[1], image.shape[2], num_crops, side_range, generator)
    return crops_from_boxes(image, boxes, out_size)


def crops_from_boxes(image: torch.Tensor, boxes: torch.Tensor, out_size: int) -> torch.Tensor:
    """(N, 3, S, S) crops of a (3, H, W) image (uint8 or float, any device) at (N, 3) boxes (top, left, side), each
    resized bicubically (antialiased) to S."""
    crops = [
        TF.resize(
            image[:, top : top + side, left : left + side], [out_size, out_size],
            interpolation=InterpolationMode.BICUBIC, antialias=True,
        )
        for top, left, side in boxes.tolist()
    ]
    return torch.stack(crops)


def aggregate_views(
    view_features: torch.Tensor, anchor: torch.Tensor, temperature: float = 1.0
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Softmax-weighted aggregation of view features (Eqs. 10-11).

    view_features: (B, N, D) unit rows; anchor: (B, D) unit rows (the global view).
    weights = softmax_i(temperature * <view_i, anchor>) (temperature 1 in microCLIP, e^4 in WCA);
    returns (normalize(sum_i weights_i view_i) (B, D), weights (B, N)).
    """
    similarity = torch.einsum("bnd,bd->bn", view_features, anchor)
    weights = torch.softmax(temperature * similarity, dim=1)
    aggregated = F.normalize(torch.einsum("bn,bnd->bd", weights, view_features), dim=-1)
    return aggregated, weights
