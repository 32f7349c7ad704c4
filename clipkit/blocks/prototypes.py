"""Class prototypes from pseudo-labelled features: class means with a fallback (DPA's image prototypes Z, ReCLIP-V's
centroid classifier) and a per-sample memory bank that keeps the latest feature and pseudo-label of every train image
(DPA), saved in checkpoints as buffers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def class_mean_prototypes(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                          fallback: torch.Tensor) -> torch.Tensor:
    """(N, D) features, (N,) labels in [0, C) (negative = not yet labelled, ignored) -> (C, D) unit rows.

    Row c = normalize(mean of the features labelled c); a class with no sample takes normalize(fallback[c])
    (DPA ``get_center``: the text prototype). Features are averaged as given (DPA stores unit features).
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"features must be (N, D) and labels (N,), got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    if fallback.shape != (num_classes, features.shape[1]):
        raise ValueError(f"fallback must be ({num_classes}, {features.shape[1]}), got {tuple(fallback.shape)}")
    valid = labels >= 0
    feats, labs = features[valid].float(), labels[valid].long()
    sums = torch.zeros(num_classes, features.shape[1], dtype=feats.dtype, device=features.device)
    sums.index_add_(0, labs, feats)
    counts = torch.bincount(labs, minlength=num_classes)
    means = sums / counts.clamp(min=1).unsqueeze(1).to(sums.dtype)
    rows = torch.where((counts > 0).unsqueeze(1), means, fallback.to(means))
    return F.normalize(rows, dim=-1)


class FeatureMemoryBank(nn.Module):
    """Latest (D,) feature and pseudo-label of each of N samples (labels -1 until written); buffers, so they travel
    in ``state_dict`` and resume exactly."""

    def __init__(self, num_samples: int, dim: int):
        super().__init__()
        self.register_buffer("features", torch.zeros(num_samples, dim))
        self.register_buffer("labels", torch.full((num_samples,), -1, dtype=torch.long))

    @torch.no_grad()
    def write(self, indices: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Overwrite the rows ``indices`` (B,) with (B, D) features and (B,) labels."""
        indices = indices.to(self.features.device).long()
        self.features[indices] = features.detach().to(self.features)
        self.labels[indices] = labels.detach().to(self.labels)

    def prototypes(self, num_classes: int, fallback: torch.Tensor) -> torch.Tensor:
        """``class_mean_prototypes`` of the bank's content (C, D)."""
        return class_mean_prototypes(self.features, self.labels, num_classes, fallback)


__all__ = ["FeatureMemoryBank", "class_mean_prototypes"]
