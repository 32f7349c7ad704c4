"""SOAP attention pooling against plain softmax-weighted token averaging, and its Table 3 variants."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipkit.blocks.soap import SaliencyAttentionPool, masked_token_mean, project_fg_token, random_token


def test_identity_init_equals_softmax_weighted_token_average_with_zero_sink():
    torch.manual_seed(0)
    tokens = torch.randn(2, 9, 16)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :3] = True
    mask[1, 4:] = True
    pool = SaliencyAttentionPool(16)
    pooled, attention = pool(tokens, mask)
    for b in range(2):
        query = tokens[b, mask[b]].mean(0)
        logits = torch.cat([tokens[b] @ query / math.sqrt(16), torch.zeros(1)])  # zero sink: constant logit 0
        weights = torch.softmax(logits, 0)
        torch.testing.assert_close(pooled[b], weights[:-1] @ tokens[b])
        torch.testing.assert_close(attention[b], weights)
    assert attention.shape == (2, 10)


def test_without_sink_attention_sums_to_one_over_tokens_and_learnable_sink_is_a_parameter():
    tokens = torch.randn(3, 5, 8)
    pooled, attention = SaliencyAttentionPool(8, sink="none")(tokens, torch.ones(3, 5, dtype=torch.bool))
    assert attention.shape == (3, 5)
    torch.testing.assert_close(attention.sum(-1), torch.ones(3))
    learnable = SaliencyAttentionPool(8, sink="learnable")
    assert any(name == "sink_token" for name, _ in learnable.named_parameters())
    assert all(name != "sink_token" for name, _ in SaliencyAttentionPool(8).named_parameters())


def test_masked_mean_uses_max_one_denominator():
    tokens = torch.arange(12.0).view(1, 4, 3).repeat(2, 1, 1)
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    out = masked_token_mean(tokens, mask)
    torch.testing.assert_close(out[0], (tokens[0, 0] + tokens[0, 2]) / 2)
    torch.testing.assert_close(out[1], torch.zeros(3))
    torch.testing.assert_close(masked_token_mean(tokens, None), tokens.mean(1))


def test_query_and_fg_variants():
    torch.manual_seed(1)
    tokens = torch.randn(4, 6, 8)
    mask = torch.rand(4, 6) > 0.5
    naive_query = SaliencyAttentionPool(8, query="token_mean")
    torch.testing.assert_close(naive_query.build_query(tokens, None), tokens.mean(1))
    picked = random_token(tokens)
    assert all(any(torch.equal(picked[b], tokens[b, i]) for i in range(6)) for b in range(4))
    fg_ncut, attn = SaliencyAttentionPool(8, fg_token="ncut_mean")(tokens, mask)
    assert attn is None
    torch.testing.assert_close(fg_ncut, masked_token_mean(tokens, mask))
    fg_mean, _ = SaliencyAttentionPool(8, fg_token="token_mean")(tokens, None)
    torch.testing.assert_close(fg_mean, tokens.mean(1))
    assert not SaliencyAttentionPool(8, fg_token="token_mean").uses_mask
    assert not SaliencyAttentionPool(8, query="random_token").uses_mask
    with pytest.raises(ValueError, match="SOAP.QUERY"):
        SaliencyAttentionPool(8, query="cls")


def test_projection_and_gradients():
    torch.manual_seed(2)
    tokens = torch.randn(2, 5, 8, requires_grad=True)
    pool = SaliencyAttentionPool(8)
    pooled, _ = pool(tokens, torch.ones(2, 5, dtype=torch.bool))
    projection = torch.randn(8, 4)
    fg = project_fg_token(pooled, projection)
    torch.testing.assert_close(fg, F.normalize(pooled @ projection, dim=-1))
    fg[:, 0].sum().backward()
    for layer in (pool.query_proj, pool.key_proj, pool.value_proj):
        assert layer.bias is None and layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
    assert tokens.grad.abs().sum() > 0
