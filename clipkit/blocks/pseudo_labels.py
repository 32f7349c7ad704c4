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


# ---------------------------------------------------------------------------------------------- DPA's pseudo-labeller
# Dual prototypes alignment (Ali et al., WACV'25): text-head probabilities corrected by distribution alignment, mixed
# with the image-prototype head, and per-sample "ranking" weights from both heads.


def distribution_alignment(probabilities: torch.Tensor, reference_marginal: torch.Tensor) -> torch.Tensor:
    """(B, C) probabilities divided by the (C,) running class marginal, rows renormalised to sum to 1 (DPA)."""
    aligned = probabilities / reference_marginal.unsqueeze(0)
    return aligned / aligned.sum(dim=1, keepdim=True)


def mix_probabilities(primary: torch.Tensor, secondary: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight * primary + (1 - weight) * secondary`` for (B, C) probabilities (DPA: a p_img + (1 - a) p_da)."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"mixing weight must lie in [0, 1], got {weight}")
    return weight * primary + (1.0 - weight) * secondary


def ranking_weights(probabilities: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """(B,) ``p[y] / (max p + eps)``: 1 (up to eps) when ``labels`` is the head's own top-1 (DPA ``get_weights``)."""
    top = probabilities.max(dim=1).values
    return probabilities.gather(1, labels.long().unsqueeze(1)).squeeze(1) / (top + eps)


class MarginalQueue(torch.nn.Module):
    """The last ``length`` batch means of the text-head probabilities (DPA's distribution-alignment queue), as a ring
    buffer of buffers so that it is checkpointed; it persists across epochs."""

    def __init__(self, length: int, num_classes: int):
        super().__init__()
        if length < 1:
            raise ValueError(f"queue length must be >= 1, got {length}")
        self.register_buffer("entries", torch.zeros(length, num_classes))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))  # pushes so far

    @torch.no_grad()
    def push(self, batch_mean: torch.Tensor) -> None:
        """Append a (C,) batch mean, dropping the oldest once ``length`` are held."""
        slot = int(self.count) % self.entries.shape[0]
        self.entries[slot] = batch_mean.detach().to(self.entries)
        self.count += 1

    def mean(self) -> torch.Tensor:
        """(C,) mean of the held entries (at least one push required)."""
        held = min(int(self.count), self.entries.shape[0])
        if held == 0:
            raise RuntimeError("MarginalQueue.mean() before any push")
        return self.entries[:held].mean(dim=0)


__all__ += ["MarginalQueue", "distribution_alignment", "mix_probabilities", "ranking_weights"]
