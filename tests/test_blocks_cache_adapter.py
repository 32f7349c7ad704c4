"""Key-value cache adapter (Tip-Adapter / NtUA) against hand loops on small tensors."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipkit.blocks.cache_adapter import (
    KeyValueCache,
    cache_affinity,
    cache_logits,
    keys_from_views,
    pseudo_label_entries,
    tip_adapter_logits,
)

B, M, C, D = 3, 5, 4, 6


def _unit(*shape, seed):
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=generator, dtype=torch.float64), dim=-1)


def _hand_cache_logits(features, keys, values, beta, weights):
    """sum_i w_i exp(-beta (1 - <f, k_i>)) v_ic, one scalar at a time."""
    out = torch.zeros(features.shape[0], values.shape[1], dtype=torch.float64)
    for b in range(features.shape[0]):
        for c in range(values.shape[1]):
            total = 0.0
            for i in range(keys.shape[0]):
                cosine = sum(float(features[b, d]) * float(keys[i, d]) for d in range(keys.shape[1]))
                total += float(weights[i]) * math.exp(-beta * (1.0 - cosine)) * float(values[i, c])
            out[b, c] = total
    return out


@pytest.fixture
def cache():
    features, keys, classifier = _unit(B, D, seed=0), _unit(M, D, seed=1), _unit(C, D, seed=2)
    labels = torch.tensor([0, 2, 1, 2, 3])
    values = F.one_hot(labels, C).double()
    weights = torch.tensor([0.9, 0.2, 1.0, 0.55, 0.7], dtype=torch.float64)
    return features, keys, values, weights, classifier


def test_affinity_is_one_for_an_identical_key_and_decays_with_the_cosine(cache):
    features, keys, *_ = cache
    affinity = cache_affinity(keys, keys, beta=3.0)
    torch.testing.assert_close(affinity.diagonal(), torch.ones(M, dtype=torch.float64))
    b, i = 1, 3
    expected = math.exp(-3.0 * (1.0 - float((features[b] * keys[i]).sum())))
    assert abs(float(cache_affinity(features, keys, 3.0)[b, i]) - expected) < 1e-12


def test_alpha_zero_is_zero_shot_clip(cache):
    features, keys, values, weights, classifier = cache
    logits = tip_adapter_logits(features, classifier, keys, values, alpha=0.0, beta=5.0, logit_scale=100.0,
                                weights=weights)
    expected = torch.tensor([[100.0 * sum(float(features[b, d] * classifier[c, d]) for d in range(D))
                              for c in range(C)] for b in range(B)], dtype=torch.float64)
    torch.testing.assert_close(logits, expected)


def test_unit_weights_are_tip_adapter(cache):
    """w = 1 (or None) gives Tip-Adapter's ((-1) * (beta - beta * f K^T)).exp() @ V + the zero-shot term."""
    features, keys, values, _, classifier = cache
    beta, alpha = 2.5, 1.7
    hand = _hand_cache_logits(features, keys, values, beta, torch.ones(M))
    torch.testing.assert_close(cache_logits(features, keys, values, beta), hand)
    torch.testing.assert_close(cache_logits(features, keys, values, beta, torch.ones(M, dtype=torch.float64)), hand)
    tip = ((-1) * (beta - beta * features @ keys.t())).exp() @ values  # Tip-Adapter's expression
    torch.testing.assert_close(tip, hand)
    total = tip_adapter_logits(features, classifier, keys, values, alpha, beta, 100.0)
    torch.testing.assert_close(total, 100.0 * features @ classifier.t() + alpha * hand)


def test_confidence_weights_scale_each_entry_vote(cache):
    features, keys, values, weights, classifier = cache
    beta = 1.0
    torch.testing.assert_close(cache_logits(features, keys, values, beta, weights),
                               _hand_cache_logits(features, keys, values, beta, weights))
    # one entry's weight moves only its own class column, linearly
    bumped = weights.clone()
    bumped[1] += 0.5
    delta = cache_logits(features, keys, values, beta, bumped) - cache_logits(features, keys, values, beta, weights)
    expected = torch.zeros(B, C, dtype=torch.float64)
    for b in range(B):
        expected[b, 2] = 0.5 * math.exp(-beta * (1.0 - float((features[b] * keys[1]).sum())))
    torch.testing.assert_close(delta, expected)


def test_keys_are_the_normalised_mean_of_raw_view_features():
    views = torch.randn(M, 3, D, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 5.0
    keys = keys_from_views(views)
    for i in range(M):
        mean = [sum(float(views[i, a, d]) for a in range(3)) / 3 for d in range(D)]
        norm = math.sqrt(sum(v * v for v in mean))
        torch.testing.assert_close(keys[i], torch.tensor([v / norm for v in mean], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(M, A, D\)"):
        keys_from_views(views[0])


def test_pseudo_label_entries_hard_and_soft():
    probabilities = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.05, 0.05, 0.9]])
    values, weights = pseudo_label_entries(probabilities, "hard")
    torch.testing.assert_close(values, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    torch.testing.assert_close(weights, torch.tensor([0.7, 0.5, 0.9]))
    values, weights = pseudo_label_entries(probabilities, "soft")
    torch.testing.assert_close(values, probabilities)
    torch.testing.assert_close(weights, torch.tensor([0.7, 0.5, 0.9]))
    with pytest.raises(ValueError, match="value form"):
        pseudo_label_entries(probabilities, "sharp")


@pytest.mark.parametrize("learnable", [True, False])
def test_module_matches_the_function_and_only_keys_can_learn(cache, learnable):
    features, keys, values, weights, classifier = (t.float() for t in cache)
    module = KeyValueCache(keys, values, weights, classifier, alpha=1.5, beta=2.0, logit_scale=100.0,
                           learnable_keys=learnable)
    torch.testing.assert_close(module(features),
                               tip_adapter_logits(features, classifier, keys, values, 1.5, 2.0, 100.0, weights))
    assert [name for name, p in module.named_parameters() if p.requires_grad] == (["keys"] if learnable else [])
    assert set(module.state_dict()) == {"keys", "values", "weights", "classifier"}
    if learnable:
        module(features).logsumexp(dim=1).sum().backward()
        assert module.keys.grad is not None and module.keys.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cache entries disagree"):
        KeyValueCache(keys, values[:-1], weights, classifier, 1.0, 1.0, 100.0)
