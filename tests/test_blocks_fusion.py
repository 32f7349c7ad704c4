"""TokenFusion: logit average (Eq. 8) and the official pseudo-labeler's feature average."""

import pytest
import torch
import torch.nn.functional as F

from clipkit.blocks.fusion import cosine_scores, fuse_features, fuse_logits, token_fusion_scores


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_logit_average_matches_mean_of_scaled_cosines():
    g, l, w = _unit(4, 8, seed=0), _unit(4, 8, seed=1), torch.randn(5, 8) * 3  # unnormalised classifier
    w_unit = F.normalize(w, dim=-1)
    expected = 0.5 * (100 * g @ w_unit.t()) + 0.5 * (100 * l @ w_unit.t())
    torch.testing.assert_close(token_fusion_scores(g, l, w, 0.5, 100.0, "logit"), expected)
    torch.testing.assert_close(cosine_scores(g, w, 100.0), 100 * g @ w_unit.t())


def test_feature_average_renormalises_and_differs_from_logit_average_by_the_norm():
    g, l, w = _unit(4, 8, seed=2), _unit(4, 8, seed=3), _unit(5, 8, seed=4)
    fused = fuse_features(g, l, 0.5)
    torch.testing.assert_close(fused, F.normalize(g + l, dim=-1))
    feature_scores = token_fusion_scores(g, l, w, 0.5, 1.0, "feature")
    logit_scores = token_fusion_scores(g, l, w, 0.5, 1.0, "logit")
    norm = ((g + l) / 2).norm(dim=-1, keepdim=True)
    torch.testing.assert_close(feature_scores, logit_scores / norm)


def test_one_sided_weights_and_errors():
    cls_logits, fg_logits = torch.randn(2, 3), torch.randn(2, 3)
    torch.testing.assert_close(fuse_logits(cls_logits, None, 1.0), cls_logits)
    torch.testing.assert_close(fuse_logits(cls_logits, fg_logits, 0.0), fg_logits)
    torch.testing.assert_close(fuse_logits(cls_logits, fg_logits, 0.25), 0.25 * cls_logits + 0.75 * fg_logits)
    with pytest.raises(ValueError):
        fuse_logits(cls_logits, None, 0.5)
    with pytest.raises(ValueError, match="PL.FUSION"):
        token_fusion_scores(_unit(2, 4), _unit(2, 4), _unit(3, 4), mode="max")
