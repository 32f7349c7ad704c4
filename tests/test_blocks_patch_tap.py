"""The patch-token tap against a hand-written pass through the CLIP ViT blocks."""

import torch
import torch.nn.functional as F

from clipkit.blocks.patch_tap import encode_image_tapped, vision_width
from clipkit.clip import build_tiny_clip


def _layer_norm(module, x):
    return F.layer_norm(x, (x.shape[-1],), module.weight, module.bias, module.eps)


def _reference(visual, images):
    """Plain re-computation: every block by hand; the value path of the last block on ALL tokens (CLS included)."""
    width = visual.conv1.out_channels
    x = F.conv2d(images, visual.conv1.weight, stride=visual.conv1.stride)
    x = x.reshape(x.shape[0], width, -1).permute(0, 2, 1)
    cls = visual.class_embedding[None, None, :].repeat(x.shape[0], 1, 1)
    x = torch.cat([cls, x], 1) + visual.positional_embedding
    x = _layer_norm(visual.ln_pre, x)  # (B, 1+n, W)

    def mlp(block, h):
        h = F.linear(h, block.mlp.c_fc.weight, block.mlp.c_fc.bias)
        h = h * torch.sigmoid(1.702 * h)
        return F.linear(h, block.mlp.c_proj.weight, block.mlp.c_proj.bias)

    blocks = list(visual.transformer.resblocks)
    for block in blocks[:-1]:
        x = block(x.permute(1, 0, 2)).permute(1, 0, 2)
    last = blocks[-1]
    w_q, w_k, w_v = last.attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = last.attn.in_proj_bias.chunk(3)
    v = x + F.linear(F.linear(_layer_norm(last.ln_1, x), w_v, b_v), last.attn.out_proj.weight, last.attn.out_proj.bias)
    v = v + mlp(last, _layer_norm(last.ln_2, v))
    patches = _layer_norm(visual.ln_post, v)[:, 1:]
    # normal path of the last block, by hand (single head in the tiny CLIP)
    h = _layer_norm(last.ln_1, x)
    q, k, val = F.linear(h, w_q, b_q), F.linear(h, w_k, b_k), F.linear(h, w_v, b_v)
    heads = last.attn.num_heads
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
    attn = torch.softmax(split(q) @ split(k).transpose(-1, -2) / (width // heads) ** 0.5, dim=-1)
    out = (attn @ split(val)).transpose(1, 2).reshape(x.shape)
    x = x + F.linear(out, last.attn.out_proj.weight, last.attn.out_proj.bias)
    x = x + mlp(last, _layer_norm(last.ln_2, x))
    cls_token = _layer_norm(visual.ln_post, x[:, 0])
    return patches, cls_token


def test_tap_matches_hand_written_pass_and_encode_image():
    torch.manual_seed(0)
    model = build_tiny_clip(seed=1)
    images = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        tap = encode_image_tapped(model.visual, images, return_patch_tokens=True, return_cls_token=True)
        ref_patches, ref_cls = _reference(model.visual, images)
        expected = F.normalize(model.encode_image(images), dim=-1)
    grid = (64 // 8) ** 2
    assert tap.patch_tokens.shape == (3, grid, vision_width(model.visual))
    torch.testing.assert_close(tap.patch_tokens, ref_patches, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tap.cls_token, ref_cls, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(tap.cls_feature, expected, rtol=1e-4, atol=1e-6)
    assert torch.allclose(tap.cls_feature.norm(dim=-1), torch.ones(3))


def test_outputs_only_when_asked_and_patch_tokens_differ_from_final_tokens():
    model = build_tiny_clip(seed=2)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tap = encode_image_tapped(model.visual, images)
        assert tap.patch_tokens is None and tap.cls_token is None
        full = encode_image_tapped(model.visual, images, return_patch_tokens=True)
    torch.testing.assert_close(tap.cls_feature, full.cls_feature)


def test_gradients_reach_layer_norms_through_patch_tokens():
    model = build_tiny_clip(seed=3)
    model.requires_grad_(False)
    last = model.visual.transformer.resblocks[-1]
    for ln in (last.ln_1, last.ln_2, model.visual.ln_post, model.visual.ln_pre):
        ln.requires_grad_(True)
    tap = encode_image_tapped(model.visual, torch.randn(2, 3, 64, 64), return_patch_tokens=True)
    tap.patch_tokens.square().sum().backward()
    for ln in (last.ln_1, last.ln_2, model.visual.ln_post, model.visual.ln_pre):
        assert ln.weight.grad is not None and ln.weight.grad.abs().sum() > 0
