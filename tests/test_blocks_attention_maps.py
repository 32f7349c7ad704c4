"""The last block's [CLS] attention map against torch's own MultiheadAttention weights."""

import torch

from clipkit.blocks.attention_maps import last_block_cls_attention


def test_cls_attention_equals_torch_attention_weights_restricted_to_patches():
    from clipkit.clip import build_tiny_clip

    visual = build_tiny_clip(seed=3).visual.eval()
    side = visual.input_resolution
    images = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    got = last_block_cls_attention(visual, images)
    # reference: run the blocks, then ask the last block's nn.MultiheadAttention for its (head-averaged) weights
    with torch.no_grad():
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.expand(2, 1, -1)
        x = visual.ln_pre(torch.cat([cls, x], dim=1) + visual.positional_embedding).permute(1, 0, 2)
        for block in visual.transformer.resblocks[:-1]:
            x = block(x)
        last = visual.transformer.resblocks[-1]
        h = last.ln_1(x)
        _, weights = last.attn(h, h, h, need_weights=True, average_attn_weights=True)  # (B, 1+n, 1+n)
    reference = weights[:, 0, 1:] / weights[:, 0, 1:].sum(dim=1, keepdim=True)
    assert got.shape == (2, (side // visual.conv1.kernel_size[0]) ** 2)
    assert torch.allclose(got, reference, atol=1e-5)
    assert torch.allclose(got.sum(dim=1), torch.ones(2), atol=1e-5)
