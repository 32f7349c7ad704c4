"""Pseudo-labelers: microCLIP's Dynamic Knowledge Aggregation (Sec. 3.4, Eqs. 12-13) and UPL's top-K per class.

Dynamic Knowledge Aggregation:

``scores = gamma * s(f_agg(x), W_LLM) + (1 - gamma) * TokenFusion(x, W*)`` on RAW cosines (no logit scale, no
softmax), as in the official code; ``y_hat = argmax`` with no confidence threshold and no per-class selection.
gamma = 1 is "multi-view alignment only", gamma = 0 "TokenFusion logits only" (Table 4).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch


def aggregate_scores(
    prior_scores: Optional[torch.Tensor], token_fusion_scores: Optional[torch.Tensor], gamma: float
) -> torch.Tensor:
    """Eq. 13 inside the argmax: (B, C) ``gamma * prior + (1 - gamma) * token_fusion``.

    A term whose weight is 0 may be None (the trainer skips computing it).
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma} (TRAINER.MICROCLIP.GAMMA)")
    if gamma == 1.0:
        return _required(prior_scores, "prior (multi-view) scores", gamma)
    if gamma == 0.0:
        return _required(token_fusion_scores, "TokenFusion scores", gamma)
    return gamma * _required(prior_scores, "prior (multi-view) scores", gamma) + (1.0 - gamma) * _required(
        token_fusion_scores, "TokenFusion scores", gamma
    )


def _required(scores: Optional[torch.Tensor], what: str, gamma: float) -> torch.Tensor:
    if scores is None:
        raise ValueError(f"gamma={gamma} needs the {what}")
    return scores


def hard_pseudo_labels(scores: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, C) scores -> (labels (B,) long, confidences (B,) = the max score, same units as ``scores``)."""
    confidences, labels = scores.max(dim=-1)
    return labels, confidences


def dynamic_knowledge_aggregation(
    prior_scores: Optional[torch.Tensor], token_fusion_scores: Optional[torch.Tensor], gamma: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Eq. 13: hard pseudo-labels and their confidences (raw aggregated cosine) from the two score sources."""
    return hard_pseudo_labels(aggregate_scores(prior_scores, token_fusion_scores, gamma))


def top_k_per_class(probabilities: torch.Tensor, k: int) -> torch.Tensor:
    """UPL's class-balanced confident subset: (N, C) class probabilities -> (M,) ascending indices of the kept samples.

    For every class, the ``k`` samples predicted as that class (argmax) with the highest probability; a class predicted
    fewer than ``k`` times keeps all of its samples, a class never predicted none. Ties keep the lower index.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k} (TRAINER.UPL.NUM_PSEUDO_PER_CLASS)")
    labels, confidences = hard_pseudo_labels(probabilities)
    by_confidence = torch.sort(confidences, descending=True, stable=True).indices
    order = by_confidence[torch.sort(labels[by_confidence], stable=True).indices]  # by class, then confidence
    grouped = labels[order]  # ascending class ids
    rank_in_class = torch.arange(len(order), device=order.device) - torch.searchsorted(grouped, grouped)
    return torch.sort(order[rank_in_class < k]).values


__all__ = ["aggregate_scores", "dynamic_knowledge_aggregation", "hard_pseudo_labels", "top_k_per_class"]
