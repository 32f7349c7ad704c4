"""Patch-token tap for OpenAI CLIP ViTs: the [CLS] feature plus the last block's attention-bypassed patch tokens.

microCLIP (arXiv 2510.02270, Eqs. 1-2) reads patch tokens through the *value path* of the last transformer block:
the block with its attention matrix replaced by the identity (each token attends only to itself). The official code
(``clip/model.py`` of sathiiii/microCLIP) computes, from the output ``x`` of block L-1 (all 1+n tokens)::

    v~ = x + W_O (W_V LN1_L(x) + b_V) + b_O           # Eq. 1 (the paper leaves out LN1 and W_O)
    v  = v~ + MLP_L(LN2_L(v~))                        # Eq. 2 (the paper leaves out LN2)
    v_patch = LN_post(v)[:, 1:]                       # ln_post applied, CLS dropped, no projection

The official code computes this value path in *every* block and throws all but the last away; here it is computed only
for the last block and only when asked, and only on the patch tokens (the path does not mix tokens, so the CLS row is
never needed). Blocks 1..L-1 run once and are shared by the [CLS] output and the value path.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.clip.vit import check_class_token_vit, layer_scales, run_blocks


class VisualTap(NamedTuple):
    """Outputs of :func:`encode_image_tapped` (B = batch, D = joint embedding width, W = ViT width, n = patches)."""

    cls_feature: torch.Tensor  # (B, D) projected [CLS], L2-normalised
    patch_tokens: Optional[torch.Tensor]  # (B, n, W) ln_post'd last-block value-path patch tokens, or None
    cls_token: Optional[torch.Tensor]  # (B, W) ln_post'd [CLS] before the projection, or None


def embed_patches(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (1+n, B, W) token sequence after ln_pre (CLIP's LND layout)."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # (B, W, g, g)
    x = x.flatten(2).transpose(1, 2)  # (B, n, W)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    patch_dropout = getattr(visual, "patch_dropout", None)  # open_clip (identity at rate 0 and in eval mode)
    if patch_dropout is not None:
        x = patch_dropout(x)
    return visual.ln_pre(x).permute(1, 0, 2)


def value_path(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention-bypassed pass through one ``ResidualAttentionBlock`` (Eqs. 1-2 as coded officially).

    x: (L, B, W) block input -> (L, B, W): ``v~ = x + out_proj(W_V ln_1(x) + b_V)``, ``v~ + mlp(ln_2(v~))``
    (open_clip blocks: each residual branch through its layer scale ``ls_1`` / ``ls_2``).
    """
    attn = block.attn
    width = x.shape[-1]
    scale_attention, scale_mlp = layer_scales(block)
    w_v = attn.in_proj_weight[2 * width :]
    b_v = attn.in_proj_bias[2 * width :] if attn.in_proj_bias is not None else None
    v = x + scale_attention(attn.out_proj(F.linear(block.ln_1(x), w_v, b_v)))
    return v + scale_mlp(block.mlp(block.ln_2(v)))


def encode_image_tapped(
    visual: nn.Module,
    images: torch.Tensor,
    return_patch_tokens: bool = False,
    return_cls_token: bool = False,
) -> VisualTap:
    """Run a CLIP ViT (OpenAI ``clip.model.VisionTransformer`` or open_clip's) once; return the requested outputs.

    images: (B, 3, H, W) normalised. ``cls_feature`` equals ``normalize(visual(images))``. ``patch_tokens`` (B, n, W)
    are the value-path tokens of the LAST block (Eqs. 1-2), ``cls_token`` (B, W) the ln_post'd [CLS] (width W).
    """
    check_class_token_vit(visual)
    blocks = visual.transformer.resblocks
    x = run_blocks(visual.transformer, blocks[:-1], embed_patches(visual, images))
    last = blocks[-1]
    patch_tokens = None
    if return_patch_tokens:
        patch_tokens = visual.ln_post(value_path(last, x[1:]).permute(1, 0, 2))  # (B, n, W)
    cls_token = visual.ln_post(run_blocks(visual.transformer, [last], x)[0])  # (B, W)
    cls_feature = F.normalize(cls_token @ visual.proj, dim=-1)
    return VisualTap(cls_feature, patch_tokens, cls_token if return_cls_token else None)


def encode_image_normalized(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (B, D) L2-normalised projected [CLS] features (no patch tokens)."""
    return encode_image_tapped(visual, images).cls_feature


def vision_width(visual: nn.Module) -> int:
    """Width W of the ViT (768 for ViT-B), read from the model, never hard-coded."""
    return visual.conv1.out_channels


__all__ = [
    "VisualTap",
    "embed_patches",
    "encode_image_normalized",
    "encode_image_tapped",
    "value_path",
    "vision_width",
]
