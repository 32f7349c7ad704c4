"""Visual prompt tokens for OpenAI CLIP ViTs (VPT-shallow, Jia et al. ECCV'22), as LaFTer inserts them.

LaFTer (NeurIPS'23; official ``trainers/LaFTer.py`` ``incorporate_prompt`` + ``clip/model.py``
``embeddings_patch`` / ``forward_after_patch_embeddings``) splits the ViT forward after ``ln_pre`` and puts N learnable
tokens between [CLS] and the patch tokens::

    x   = ln_pre([cls; conv1(img)] + pos)            # (1+n, B, W), the ordinary token sequence
    x'  = [x_cls; P; x_patches]                      # (1+N+n, B, W); P: (N, W), no positional embedding, no ln_pre
    f   = ln_post(Transformer(x')[0]) @ proj         # (B, D), NOT L2-normalised

The prompts see every block (the sequence just gets longer; CLIP's vision tower has no attention mask). With N = 0
this is exactly ``visual(images)``. Widths come from the model (``vision_width``), never from constants.

Initialisation (VPT's Xavier-uniform over a patch): ``P ~ U(-v, v)``, ``v = sqrt(6 / (3 p^2 + W))``, p the patch side.
The official LaFTer code hard-codes p = 16 and W = 768 for every ViT-B (also ViT-B/32, whose patches are 32 px); the
caller chooses p (``init_patch_size``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from clipkit.clip.vit import check_class_token_vit, run_transformer

from .patch_tap import embed_patches, vision_width


def vision_patch_size(visual: nn.Module) -> int:
    """Patch side p of the ViT (32 for ViT-B/32), read from its patch-embedding convolution."""
    return int(visual.conv1.kernel_size[0])


def prompt_init_bound(patch_size: int, width: int) -> float:
    """VPT's uniform bound ``sqrt(6 / (3 p^2 + W))`` (Xavier fan-in 3 p^2 of a patch, fan-out W)."""
    return math.sqrt(6.0 / float(3 * patch_size * patch_size + width))


def insert_prompts(tokens: torch.Tensor, prompts: Optional[torch.Tensor]) -> torch.Tensor:
    """(1+n, B, W) token sequence (LND) and (N, W) prompts -> (1+N+n, B, W) with the prompts after [CLS]."""
    if prompts is None or prompts.shape[0] == 0:
        return tokens
    if prompts.dim() != 2 or prompts.shape[1] != tokens.shape[-1]:
        raise ValueError(f"prompts must be (N, {tokens.shape[-1]}) for this ViT, got {tuple(prompts.shape)}")
    batch = tokens.shape[1]
    expanded = prompts.to(tokens.dtype)[:, None, :].expand(-1, batch, -1)
    return torch.cat([tokens[:1], expanded, tokens[1:]], dim=0)


def encode_image_prompted(visual: nn.Module, images: torch.Tensor, prompts: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, 3, H, W) normalised images -> (B, D) projected [CLS] of the prompted ViT (un-normalised, like
    ``visual(images)``). ``prompts`` (N, W) or None; N = 0 / None gives ``visual(images)``."""
    check_class_token_vit(visual)
    x = insert_prompts(embed_patches(visual, images), prompts)
    x = run_transformer(visual.transformer, x)
    cls = visual.ln_post(x[0])
    return cls @ visual.proj if visual.proj is not None else cls


class VisualPrompts(nn.Module):
    """N learnable prompt tokens of the ViT's width, VPT-uniform initialised (``prompts``: (N, W) parameter)."""

    def __init__(self, visual: nn.Module, num_tokens: int, init_patch_size: int = 0,
                 generator: Optional[torch.Generator] = None):
        super().__init__()
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        width = vision_width(visual)
        patch = init_patch_size if init_patch_size > 0 else vision_patch_size(visual)
        self.init_bound = prompt_init_bound(patch, width)
        weight = torch.empty(num_tokens, width, dtype=visual.conv1.weight.dtype)
        weight.uniform_(-self.init_bound, self.init_bound, generator=generator)
        self.prompts = nn.Parameter(weight)

    @property
    def num_tokens(self) -> int:
        return self.prompts.shape[0]

    def forward(self, visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, D) un-normalised projected [CLS] with the prompts inserted."""
        return encode_image_prompted(visual, images, self.prompts)


__all__ = [
    "VisualPrompts",
    "encode_image_prompted",
    "insert_prompts",
    "prompt_init_bound",
    "vision_patch_size",
]
