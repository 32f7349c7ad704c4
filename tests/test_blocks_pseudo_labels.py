"""Dynamic Knowledge Aggregation (Eq. 13): gamma-blend of raw cosine scores, hard argmax."""

import pytest
import torch

from clipkit.blocks.pseudo_labels import aggregate_scores, dynamic_knowledge_aggregation


def test_gamma_blend_and_argmax():
    prior = torch.tensor([[0.30, 0.20, 0.10], [0.10, 0.25, 0.20]])
    tf = torch.tensor([[0.10, 0.28, 0.10], [0.30, 0.10, 0.20]])
    labels, conf = dynamic_knowledge_aggregation(prior, tf, 0.5)
    torch.testing.assert_close(conf, torch.tensor([0.24, 0.20]))
    assert labels.tolist() == [1, 0]
    assert dynamic_knowledge_aggregation(prior, tf, 1.0)[0].tolist() == [0, 1]
    assert dynamic_knowledge_aggregation(prior, tf, 0.0)[0].tolist() == [1, 0]


def test_unused_term_may_be_missing_but_needed_terms_may_not():
    scores = torch.randn(2, 4)
    torch.testing.assert_close(aggregate_scores(scores, None, 1.0), scores)
    torch.testing.assert_close(aggregate_scores(None, scores, 0.0), scores)
    with pytest.raises(ValueError, match="TokenFusion"):
        aggregate_scores(scores, None, 0.5)
    with pytest.raises(ValueError, match="GAMMA"):
        aggregate_scores(scores, scores, 1.5)
