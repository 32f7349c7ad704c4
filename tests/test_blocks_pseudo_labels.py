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


# ------------------------------------------------------------------------------------------- DPA's pseudo-labeller
def test_distribution_alignment_matches_a_hand_loop():
    from clipkit.blocks.pseudo_labels import distribution_alignment

    probs = torch.softmax(torch.randn(4, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    marginal = torch.tensor([0.5, 0.2, 0.3])
    got = distribution_alignment(probs, marginal)
    for b in range(4):
        row = [float(probs[b, c]) / float(marginal[c]) for c in range(3)]
        total = sum(row)
        for c in range(3):
            assert abs(float(got[b, c]) - row[c] / total) < 1e-6


def test_mixture_and_ranking_weights_match_the_official_formulas():
    from clipkit.blocks.pseudo_labels import mix_probabilities, ranking_weights

    p_img = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    p_txt = torch.tensor([[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    mixed = mix_probabilities(p_img, p_txt, 0.25)
    assert torch.allclose(mixed[0], torch.tensor([0.25 * 0.7 + 0.75 * 0.2, 0.25 * 0.2 + 0.75 * 0.5,
                                                  0.25 * 0.1 + 0.75 * 0.3]))
    labels = torch.tensor([0, 2])
    # official get_weights: p[y] / (max p + eps), row by row
    weights = ranking_weights(p_txt, labels, 1e-7)
    assert abs(float(weights[0]) - 0.2 / (0.5 + 1e-7)) < 1e-7 and abs(float(weights[1]) - 0.4 / (0.4 + 1e-7)) < 1e-7
    with pytest.raises(ValueError, match="mixing weight"):
        mix_probabilities(p_img, p_txt, 1.5)


def test_marginal_queue_keeps_the_last_batch_means():
    from clipkit.blocks.pseudo_labels import MarginalQueue

    queue = MarginalQueue(length=3, num_classes=2)
    with pytest.raises(RuntimeError):
        queue.mean()
    pushed = [torch.tensor([float(i), 1.0 - i / 10]) for i in range(7)]
    reference = []
    for i, mean in enumerate(pushed):
        queue.push(mean)
        reference.append(mean)  # the official list: append, then pop the oldest beyond the length
        if len(reference) > 3:
            reference.pop(0)
        assert torch.allclose(queue.mean(), sum(reference) / len(reference)), i
    restored = MarginalQueue(length=3, num_classes=2)
    restored.load_state_dict(queue.state_dict())
    assert torch.equal(restored.mean(), queue.mean())
