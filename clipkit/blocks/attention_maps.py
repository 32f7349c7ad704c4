"""Attention maps of a CLIP ViT for figures (microCLIP Figs. 1 and 9): the last block's [CLS] attention over the patches.

The last block's attention ``softmax(q_cls k^T / sqrt(d_head))`` is recomputed from its input (after ``ln_1``) with the
block's own ``in_proj`` weights, averaged over heads; the [CLS] row restricted to the n patch tokens and renormalised
to sum to one (the [CLS]-to-itself weight is dropped). Works for any width and head count read from the model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from clipkit.blocks.patch_tap import embed_patches
from clipkit.clip.vit import check_class_token_vit, run_blocks


@torch.no_grad()
def last_block_cls_attention(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (B, n) [CLS]-to-patch attention of the last block, rows summing to 1."""
    check_class_token_vit(visual)
    blocks = visual.transformer.resblocks
    x = run_blocks(visual.transformer, blocks[:-1], embed_patches(visual, images))  # (1+n, B, W)
    last = blocks[-1]
    attn: nn.MultiheadAttention = last.attn
    h = last.ln_1(x)  # (1+n, B, W)
    width, heads = h.shape[-1], attn.num_heads
    head_dim = width // heads
    q_weight, k_weight, _ = attn.in_proj_weight.chunk(3)
    q_bias, k_bias, _ = attn.in_proj_bias.chunk(3)
    q = (h[0] @ q_weight.t() + q_bias).view(-1, heads, head_dim)  # (B, heads, d) for [CLS] only
    k = (h @ k_weight.t() + k_bias).view(h.shape[0], -1, heads, head_dim)  # (1+n, B, heads, d)
    logits = torch.einsum("bhd,tbhd->bht", q, k) / math.sqrt(head_dim)
    weights = torch.softmax(logits.float(), dim=-1).mean(dim=1)  # (B, 1+n), mean over heads
    patches = weights[:, 1:]
    return patches / patches.sum(dim=1, keepdim=True)


__all__ = ["last_block_cls_attention"]
