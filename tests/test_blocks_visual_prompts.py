"""VPT-shallow prompt insertion (clipkit/blocks/visual_prompts.py) against a hand-written ViT forward."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipkit.blocks.visual_prompts import (
    VisualPrompts,
    encode_image_prompted,
    insert_prompts,
    prompt_init_bound,
    vision_patch_size,
)


def tiny_visual(width=64, patch=8, seed=0):
    from clipkit.clip import build_tiny_clip

    return build_tiny_clip(seed=seed, vision_width=width, vision_patch_size=patch).visual.eval()


def reference_prompted_forward(visual, images, prompts):
    """Independent re-derivation: patches as unfolded pixel blocks times the conv kernel, tokens in NLD, each block
    written out (pre-LN attention with per-head softmax, pre-LN MLP), prompts spliced after [CLS] after ln_pre."""
    batch = images.shape[0]
    p = visual.conv1.kernel_size[0]
    width = visual.conv1.out_channels
    blocks = F.unfold(images, kernel_size=p, stride=p).transpose(1, 2)  # (B, n, 3 p p)
    patches = blocks @ visual.conv1.weight.reshape(width, -1).t()  # (B, n, W)
    cls = visual.class_embedding.reshape(1, 1, width).repeat(batch, 1, 1)
    tokens = torch.cat([cls, patches], dim=1) + visual.positional_embedding
    tokens = visual.ln_pre(tokens)
    if prompts is not None and prompts.shape[0]:
        tokens = torch.cat([tokens[:, :1], prompts.unsqueeze(0).repeat(batch, 1, 1), tokens[:, 1:]], dim=1)
    for block in visual.transformer.resblocks:
        attn = block.attn
        heads = attn.num_heads
        h = block.ln_1(tokens)
        q, k, v = (h @ w.t() + b for w, b in zip(attn.in_proj_weight.chunk(3), attn.in_proj_bias.chunk(3)))
        split = lambda t: t.reshape(batch, -1, heads, width // heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(batch, -1, width)
        tokens = tokens + attn.out_proj(mixed)
        tokens = tokens + block.mlp(block.ln_2(tokens))
    return visual.ln_post(tokens[:, 0]) @ visual.proj


@pytest.mark.parametrize("width,patch", [(64, 8), (128, 16)])
def test_zero_prompts_is_the_plain_encoder(width, patch):
    visual = tiny_visual(width, patch)
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        plain = visual(images)
        assert torch.equal(encode_image_prompted(visual, images, None), plain)
        assert torch.equal(encode_image_prompted(visual, images, torch.zeros(0, width)), plain)
        module = VisualPrompts(visual, 0)
        assert module.prompts.shape == (0, width) and torch.equal(module(visual, images), plain)


@pytest.mark.parametrize("width,patch,num_tokens", [(64, 8, 5), (128, 16, 3)])
def test_prompted_forward_matches_a_hand_written_vit(width, patch, num_tokens):
    visual = tiny_visual(width, patch)
    images = torch.randn(2, 3, 64, 64)
    prompts = torch.randn(num_tokens, width)
    with torch.no_grad():
        ours = encode_image_prompted(visual, images, prompts)
        reference = reference_prompted_forward(visual, images, prompts)
        plain_reference = reference_prompted_forward(visual, images, None)
    assert ours.shape == (2, visual.proj.shape[1])
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(visual(images), plain_reference, rtol=1e-4, atol=1e-5)  # the reference is right
    assert not torch.allclose(ours, plain_reference, atol=1e-3)  # the prompts matter


def test_insert_prompts_places_tokens_after_cls_and_checks_the_width():
    tokens = torch.arange(3 * 2 * 4, dtype=torch.float32).reshape(3, 2, 4)  # (1+n, B, W), n = 2
    prompts = -torch.ones(2, 4)
    out = insert_prompts(tokens, prompts)
    assert out.shape == (5, 2, 4)
    assert torch.equal(out[0], tokens[0]) and torch.equal(out[3:], tokens[1:])
    assert torch.equal(out[1:3], -torch.ones(2, 2, 4))
    with pytest.raises(ValueError, match=r"prompts must be \(N, 4\)"):
        insert_prompts(tokens, torch.zeros(2, 5))


def test_init_bound_uses_the_model_width_and_the_chosen_patch_side():
    visual = tiny_visual(128, 16)
    assert vision_patch_size(visual) == 16
    assert prompt_init_bound(16, 768) == pytest.approx(math.sqrt(6.0 / (3 * 256 + 768)))  # LaFTer's ViT-B value
    own = VisualPrompts(visual, 400, generator=torch.Generator().manual_seed(0))
    fixed = VisualPrompts(visual, 400, init_patch_size=4, generator=torch.Generator().manual_seed(0))
    assert own.init_bound == pytest.approx(math.sqrt(6.0 / (3 * 16 * 16 + 128)))
    assert fixed.init_bound == pytest.approx(math.sqrt(6.0 / (3 * 4 * 4 + 128)))
    for module in (own, fixed):
        values = module.prompts.detach()
        assert values.shape == (400, 128) and values.abs().max() <= module.init_bound
        assert values.abs().max() > 0.95 * module.init_bound  # uniform over the whole range
        assert values.mean().abs() < 0.05 * module.init_bound


def test_gradients_reach_the_prompts():
    visual = tiny_visual().requires_grad_(False)
    module = VisualPrompts(visual, 4)
    module(visual, torch.randn(2, 3, 64, 64)).sum().backward()
    assert module.prompts.grad is not None and module.prompts.grad.abs().sum() > 0
    assert all(p.grad is None for p in visual.parameters())
