"""Self-training losses: microCLIP's CE on pseudo-labels (Eq. 14) and fairness regulariser L_reg (Sec. 3.4); DPA's and
POUF's losses below their own headers.

L_reg = -(1/C) sum_c log p_bar_c pushes the mean prediction towards uniform. Paper: p_bar = batch mean of the softmax.
Official code: a running mean across the steps of an epoch, ``p_bar_t = m * sg(p_bar_{t-1}) + (1 - m) * batch_mean``
with m = 0.5, restarted at the first step of every epoch, and the loss divided by 0.5 (x2). ``momentum=0, scale=1``
is the paper's form.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def self_training_loss(logits: torch.Tensor, pseudo_labels: torch.Tensor) -> torch.Tensor:
    """Eq. 14: mean cross-entropy of (B, C) logits against (B,) hard pseudo-labels."""
    return F.cross_entropy(logits, pseudo_labels)


def running_class_marginal(
    probabilities: torch.Tensor, previous: Optional[torch.Tensor], momentum: float
) -> torch.Tensor:
    """(B, C) softmax outputs -> (C,) p_bar: the batch mean, blended with the detached ``previous`` (C,) when given.

    ``p_bar = momentum * sg(previous) + (1 - momentum) * mean_b p_b``; ``previous=None`` (first step of an epoch) or
    ``momentum=0`` gives the plain batch mean.
    """
    batch_mean = probabilities.mean(dim=0)
    if previous is None or momentum == 0.0:
        return batch_mean
    return momentum * previous.detach() + (1.0 - momentum) * batch_mean


def fairness_loss(marginal: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """L_reg = ``scale * -(1/C) sum_c log p_bar_c`` for a (C,) marginal (official scale = 1/0.5 = 2)."""
    return -scale * marginal.log().mean()


def microclip_loss(
    logits: torch.Tensor,
    pseudo_labels: torch.Tensor,
    previous_marginal: Optional[torch.Tensor],
    fairness_momentum: float,
    fairness_scale: float,
    ce_weight: float = 1.0,
    fairness_weight: float = 1.0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """L = ce_weight * L_st + fairness_weight * L_reg from (B, C) fused logits of the strong view.

    Returns (total, L_st, L_reg, marginal (C,) detached, to pass as ``previous_marginal`` on the next step).
    """
    ce = self_training_loss(logits, pseudo_labels)
    marginal = running_class_marginal(logits.float().softmax(dim=-1), previous_marginal, fairness_momentum)
    reg = fairness_loss(marginal, fairness_scale)
    return ce_weight * ce + fairness_weight * reg, ce, reg, marginal.detach()


__all__ = ["fairness_loss", "microclip_loss", "running_class_marginal", "self_training_loss"]


# ------------------------------------------------------------------------------------------------------ DPA's losses
def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``mean_b w_b CE(logits_b, y_b)`` for (B, C) logits, (B,) labels and (B,) weights (DPA's self-training term)."""
    return (weights * F.cross_entropy(logits, labels, reduction="none")).mean()


def prototype_alignment_loss(image_prototypes: torch.Tensor, text_prototypes: torch.Tensor,
                             temperature: float) -> torch.Tensor:
    """DPA's alignment: ``CE(t * Z W^T, arange(C))`` for (C, D) unit image prototypes Z and text prototypes W: each
    image prototype is classified as its own class by the text prototypes."""
    logits = temperature * image_prototypes @ text_prototypes.t()
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


__all__ += ["prototype_alignment_loss", "weighted_cross_entropy"]


# ------------------------------------------------------------------------------------------------------------ POUF
# POUF (Tanwisuth et al., ICML'23; shared/research/baselines.md Sec. 6): per target batch, with cosine similarities
# sim (B, C) of the image features to the class text features and logits = s * sim (s = exp(logit_scale)):
#   L_transport = mean_b sum_c (1 - sim) P_row  +  mean_c sum_b (1 - sim) P_col,
#       P_row = softmax over the classes (sample -> class), P_col = softmax over the batch (class -> sample);
#   L_IM = mean_b H(P_row[b]) - H(mean_b P_row[b])   (confident per sample, diverse over the batch).
# The eps inside the logs are the official code's (1e-5 per sample, 1e-6 for the marginal).


def transport_costs(logits: torch.Tensor, similarities: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """POUF's two transport directions from (B, C) ``logits`` and cosine ``similarities`` (cost ``1 - sim``).

    Returns (sample -> class: ``mean_b sum_c cost * softmax_c(logits)``, class -> sample:
    ``mean_c sum_b cost * softmax_b(logits)``); the second normalises each class column over the batch.
    """
    if logits.dim() != 2 or logits.shape != similarities.shape:
        raise ValueError(f"transport_costs needs (B, C) logits and similarities of one shape, got "
                         f"{tuple(logits.shape)} and {tuple(similarities.shape)}")
    cost = 1.0 - similarities
    sample_to_class = (cost * logits.softmax(dim=1)).sum(dim=1).mean()
    class_to_sample = (cost * logits.softmax(dim=0)).sum(dim=0).mean()
    return sample_to_class, class_to_sample


def transport_loss(logits: torch.Tensor, similarities: torch.Tensor) -> torch.Tensor:
    """L_transport = the sum of both :func:`transport_costs` directions (official ``compute_transport_loss``)."""
    sample_to_class, class_to_sample = transport_costs(logits, similarities)
    return sample_to_class + class_to_sample


def information_maximization_terms(logits: torch.Tensor, entropy_eps: float = 1e-5,
                                   marginal_eps: float = 1e-6) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean_b H(p_b), H(mean_b p_b)) of p = softmax_c(logits) for (B, C) logits, with ``H(q) = -sum q log(q + eps)``
    (``entropy_eps`` per sample, ``marginal_eps`` for the marginal, as the official code)."""
    probabilities = logits.softmax(dim=1)
    conditional = -(probabilities * (probabilities + entropy_eps).log()).sum(dim=1).mean()
    marginal = probabilities.mean(dim=0)
    marginal_entropy = -(marginal * (marginal + marginal_eps).log()).sum()
    return conditional, marginal_entropy


def information_maximization_loss(logits: torch.Tensor, entropy_eps: float = 1e-5,
                                  marginal_eps: float = 1e-6) -> torch.Tensor:
    """L_IM = mean_b H(p_b) - H(mean_b p_b) (official ``compute_im_loss``); see ``information_maximization_terms``."""
    conditional, marginal_entropy = information_maximization_terms(logits, entropy_eps, marginal_eps)
    return conditional - marginal_entropy


__all__ += ["information_maximization_loss", "information_maximization_terms", "transport_costs", "transport_loss"]
