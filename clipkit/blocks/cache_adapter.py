"""Key-value cache adapter (Tip-Adapter, Zhang et al., ECCV'22) with per-entry weights (NtUA's adaptive cache).

A cache holds M entries: unit keys K (M, D) (image features of the cached shots), values V (M, C) (one-hot labels, or
soft label distributions) and weights w (M,) (1 for Tip-Adapter; a pseudo-label confidence for NtUA). For unit query
features f (B, D):

    A(f)       = exp(-beta (1 - f K^T))                          (B, M)  affinity, 1 for an identical key
    cache(f)   = (A(f) * w) V                                    (B, C)  every entry's vote scaled by its weight
    logits(f)  = s f W^T + alpha cache(f)                        (B, C)  W (C, D): the zero-shot text classifier

With w = 1 this is Tip-Adapter's ``((-1) * (beta - beta * f K^T)).exp() @ V``; with alpha = 0 it is zero-shot CLIP.
The keys of Tip-Adapter are the mean of each shot's *raw* features over augmented views, L2-normalised afterwards
(``keys_from_views``). Tip-Adapter-F makes K learnable (initialised from the keys, never renormalised during
training): ``KeyValueCache(..., learnable_keys=True)``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

VALUE_FORMS = ("hard", "soft")


def cache_affinity(features: torch.Tensor, keys: torch.Tensor, beta: float) -> torch.Tensor:
    """(B, M) ``exp(-beta (1 - f K^T))`` for (B, D) features and (M, D) keys (both unit rows for cosines)."""
    return torch.exp(-beta * (1.0 - features @ keys.t()))


def cache_logits(features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, beta: float,
                 weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, C) ``(A(f) * w) V``: the affinity-weighted votes of the cache entries; ``weights=None`` is w = 1."""
    affinity = cache_affinity(features, keys, beta)
    if weights is not None:
        affinity = affinity * weights.unsqueeze(0)
    return affinity @ values


def tip_adapter_logits(features: torch.Tensor, classifier: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       alpha: float, beta: float, logit_scale: float,
                       weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(B, C) ``s f W^T + alpha (A(f) * w) V`` (Tip-Adapter's ``tip_logits``; s = 100 there)."""
    zero_shot = logit_scale * features @ classifier.t()
    if alpha == 0.0:
        return zero_shot
    return zero_shot + alpha * cache_logits(features, keys, values, beta, weights)


def keys_from_views(view_features: torch.Tensor) -> torch.Tensor:
    """(M, A, D) raw features of A augmented views per shot -> (M, D) unit keys: mean over views, then L2 (Tip-Adapter
    ``build_cache_model``)."""
    if view_features.dim() != 3:
        raise ValueError(f"expected (M, A, D) view features, got shape {tuple(view_features.shape)}")
    return F.normalize(view_features.mean(dim=1), dim=-1)


def pseudo_label_entries(probabilities: torch.Tensor, form: str = "hard") -> Tuple[torch.Tensor, torch.Tensor]:
    """Cache values and confidence weights from (M, C) class probabilities of the cached shots.

    form="hard": values = one-hot(argmax p) (Tip-Adapter's one-hot values, with pseudo-labels);
    form="soft": values = p itself (the distillation target of a teacher).
    Weights = max_c p (the confidence of the pseudo-label) in both forms. Returns (values (M, C), weights (M,)).
    """
    if form not in VALUE_FORMS:
        raise ValueError(f"value form must be one of {VALUE_FORMS}, got {form!r}")
    confidences, labels = probabilities.max(dim=-1)
    if form == "soft":
        return probabilities.clone(), confidences
    return F.one_hot(labels, probabilities.shape[-1]).to(probabilities.dtype), confidences


class KeyValueCache(nn.Module):
    """The cache as a module: keys (a parameter, trainable when ``learnable_keys``: Tip-Adapter-F), values, weights and
    the text classifier (buffers, so a checkpoint carries the whole adapter)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, weights: torch.Tensor, classifier: torch.Tensor,
                 alpha: float, beta: float, logit_scale: float, learnable_keys: bool = False):
        super().__init__()
        if not (keys.shape[0] == values.shape[0] == weights.shape[0]):
            raise ValueError(f"cache entries disagree: keys {tuple(keys.shape)}, values {tuple(values.shape)}, "
                             f"weights {tuple(weights.shape)}")
        if values.shape[1] != classifier.shape[0] or keys.shape[1] != classifier.shape[1]:
            raise ValueError(f"cache (keys {tuple(keys.shape)}, values {tuple(values.shape)}) does not match the "
                             f"classifier {tuple(classifier.shape)}")
        self.keys = nn.Parameter(keys.detach().clone().float(), requires_grad=learnable_keys)
        self.register_buffer("values", values.detach().clone().float())
        self.register_buffer("weights", weights.detach().clone().float())
        self.register_buffer("classifier", classifier.detach().clone().float())
        self.alpha, self.beta, self.logit_scale = float(alpha), float(beta), float(logit_scale)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) unit features -> (B, C) ``s f W^T + alpha (A(f) * w) V``."""
        return tip_adapter_logits(features, self.classifier, self.keys, self.values, self.alpha, self.beta,
                                  self.logit_scale, self.weights)


__all__ = ["KeyValueCache", "VALUE_FORMS", "cache_affinity", "cache_logits", "keys_from_views",
           "pseudo_label_entries", "tip_adapter_logits"]
