"""Pseudo-labelers: Dynamic Knowledge Aggregation (Eq. 13, gamma-blend of raw cosines, hard argmax) and UPL's top-K
per class."""

import pytest
import torch

from clipkit.blocks.pseudo_labels import aggregate_scores, dynamic_knowledge_aggregation, top_k_per_class


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


def _reference_top_k(probabilities, k):
    """UPL's select_top_k_similarity_per_class, written as a plain loop over classes."""
    kept = []
    confidences, labels = probabilities.max(dim=1)
    for c in range(probabilities.shape[1]):
        members = [i for i in range(len(labels)) if labels[i] == c]
        members.sort(key=lambda i: (-float(confidences[i]), i))
        kept += members[:k]
    return sorted(kept)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_per_class_matches_a_reference_loop(seed):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(200, 7, generator=generator) * 3
    logits[:, 6] -= 100  # class 6 is never predicted
    logits[3:, 5] -= 100  # class 5 is predicted for the first 3 samples only
    logits[:3, 5] += 100
    probabilities = torch.softmax(logits, dim=1)
    for k in (1, 4, 16, 500):
        kept = top_k_per_class(probabilities, k)
        assert kept.tolist() == _reference_top_k(probabilities, k)
    labels = probabilities.argmax(1)[top_k_per_class(probabilities, 16)]
    counts = torch.bincount(labels, minlength=7).tolist()
    assert counts[6] == 0 and counts[5] == 3 and all(n == 16 for n in counts[:5])


def test_top_k_per_class_keeps_the_lower_index_on_ties_and_rejects_k_0():
    probabilities = torch.tensor([[0.6, 0.4], [0.6, 0.4], [0.6, 0.4], [0.1, 0.9]])
    assert top_k_per_class(probabilities, 2).tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="NUM_PSEUDO_PER_CLASS"):
        top_k_per_class(probabilities, 0)
