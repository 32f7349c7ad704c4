"""TokenFusion (microCLIP Sec. 3.3, Eqs. 6-8): combine the [CLS] (global) and [FG] (local) predictions.

* Loss and test: LOGIT average, ``w * s(CLS, W*) + (1 - w) * s(FG, W*)`` with ``w = 0.5`` (Eq. 8; the official
  ``--fusion_ratio``). ``w = 1`` is Table 7's "global logits only", ``w = 0`` "local logits only".
* Pseudo-labeler (official code): FEATURE average then renormalise, ``normalize(w g + (1 - w) l) . W*`` with a
  hard-coded ``w = 0.5``. The paper's Eqs. 8/13 use the logit average there too (``mode="logit"``).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

PL_FUSION_MODES = ("feature", "logit")


def cosine_scores(features: torch.Tensor, classifier: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """(B, D) unit features, (C, D) classifier -> (B, C) ``scale * cos`` (the classifier rows are normalised here)."""
    return scale * features @ F.normalize(classifier, dim=-1).to(features.dtype).t()


def fuse_logits(cls_logits: torch.Tensor, fg_logits: Optional[torch.Tensor], cls_weight: float = 0.5) -> torch.Tensor:
    """Eq. 8: ``cls_weight * cls_logits + (1 - cls_weight) * fg_logits`` (B, C); ``fg_logits`` may be None iff w = 1."""
    if cls_weight == 1.0:
        return cls_logits
    if fg_logits is None:
        raise ValueError(f"TokenFusion with CLS weight {cls_weight} needs [FG] logits")
    if cls_weight == 0.0:
        return fg_logits
    return cls_weight * cls_logits + (1.0 - cls_weight) * fg_logits


def fuse_features(
    cls_feature: torch.Tensor, fg_feature: Optional[torch.Tensor], cls_weight: float = 0.5
) -> torch.Tensor:
    """Official pseudo-labeler fusion: ``normalize(w * cls + (1 - w) * fg)`` (B, D); fg may be None iff w = 1."""
    if cls_weight == 1.0:
        return cls_feature
    if fg_feature is None:
        raise ValueError(f"feature fusion with CLS weight {cls_weight} needs the [FG] feature")
    return F.normalize(cls_weight * cls_feature + (1.0 - cls_weight) * fg_feature, dim=-1)


def token_fusion_scores(
    cls_feature: torch.Tensor,
    fg_feature: Optional[torch.Tensor],
    classifier: torch.Tensor,
    cls_weight: float = 0.5,
    scale: float = 1.0,
    mode: str = "logit",
) -> torch.Tensor:
    """TokenFusion(x, W*) (B, C) from unit features: ``mode="logit"`` Eq. 8, ``mode="feature"`` the official PL term."""
    if mode == "logit":
        fg_scores = None if fg_feature is None else cosine_scores(fg_feature, classifier, scale)
        return fuse_logits(cosine_scores(cls_feature, classifier, scale), fg_scores, cls_weight)
    if mode == "feature":
        return cosine_scores(fuse_features(cls_feature, fg_feature, cls_weight), classifier, scale)
    raise ValueError(f"TokenFusion mode must be one of {PL_FUSION_MODES}, got {mode!r} (TRAINER.MICROCLIP.PL.FUSION)")


__all__ = ["PL_FUSION_MODES", "cosine_scores", "fuse_features", "fuse_logits", "token_fusion_scores"]
