"""The one place that knows how OpenAI's and open_clip's CLIP ViTs differ, for the shared encoder functions
(``clipkit.blocks.patch_tap``, ``attention_maps``, ``visual_prompts``, ``prompt_learner``).

Both share the module names (``conv1``, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
``transformer.resblocks[i].{ln_1, attn, ln_2, mlp}``, ``ln_post``, ``proj``; text: ``token_embedding``,
``positional_embedding``, ``transformer``, ``ln_final``, ``text_projection``). They differ in:

* layout: OpenAI's transformers take and give (L, B, W); open_clip's ``Transformer.forward`` takes (B, L, W) and its
  blocks run batch-first (``transformer.batch_first``, the default) or sequence-first;
* layer scale: open_clip blocks apply ``ls_1`` / ``ls_2`` (Identity unless ``ls_init_value`` is set);
* the text causal mask: OpenAI's blocks hold it, open_clip passes ``attn_mask`` to the transformer; the text
  projection may be an ``nn.Linear``;
* pooling: some open_clip ViTs pool by attention or by averaging tokens instead of reading [CLS]; the methods here
  read [CLS] and the patch tokens, so such a tower is refused with a clear error.
"""

from __future__ import annotations

import torch
from torch import nn


def is_open_clip_module(module: nn.Module) -> bool:
    """True for modules defined by the ``open_clip`` package."""
    return type(module).__module__.split(".")[0] == "open_clip"


def check_class_token_vit(visual: nn.Module) -> None:
    """Raise NotImplementedError for a ViT that does not pool its output by the [CLS] token."""
    if not hasattr(visual, "conv1") or not hasattr(visual, "transformer"):
        raise NotImplementedError(f"{type(visual).__name__} is not a CLIP ViT (no conv1 / transformer): the methods "
                                  f"of this toolkit need a ViT image tower")
    if not is_open_clip_module(visual):
        return
    pool_type = getattr(visual, "pool_type", "tok")
    if getattr(visual, "attn_pool", None) is not None or pool_type != "tok" or getattr(visual, "final_ln_after_pool",
                                                                                      False):
        raise NotImplementedError(
            f"this open_clip ViT pools its tokens by {'attention' if getattr(visual, 'attn_pool', None) is not None else pool_type!r}"
            f" instead of the [CLS] token; the toolkit's encoders read [CLS] and the patch tokens, so pick a "
            f"class-token model (e.g. ViT-B-32-quickgelu, ViT-B-16)")


def _blocks_batch_first(transformer: nn.Module) -> bool:
    return is_open_clip_module(transformer) and bool(getattr(transformer, "batch_first", False))


def run_blocks(transformer: nn.Module, blocks, x: torch.Tensor) -> torch.Tensor:
    """Apply ``blocks`` (a slice of ``transformer.resblocks``) to a (L, B, W) sequence -> (L, B, W)."""
    if _blocks_batch_first(transformer):
        x = x.permute(1, 0, 2)
        for block in blocks:
            x = block(x)
        return x.permute(1, 0, 2)
    for block in blocks:
        x = block(x)
    return x


def run_transformer(transformer: nn.Module, x: torch.Tensor, attn_mask=None) -> torch.Tensor:
    """The whole transformer on a (L, B, W) sequence -> (L, B, W) (text: ``attn_mask`` is the causal mask)."""
    if is_open_clip_module(transformer):
        return transformer(x.permute(1, 0, 2), attn_mask=attn_mask).permute(1, 0, 2)
    return transformer(x)


def layer_scales(block: nn.Module):
    """(ls_1, ls_2) of a residual block: open_clip's LayerScale modules, or identities."""
    return getattr(block, "ls_1", nn.Identity()), getattr(block, "ls_2", nn.Identity())


def image_size(visual: nn.Module) -> int:
    """Input side of the ViT (OpenAI ``input_resolution``, open_clip ``image_size``)."""
    if hasattr(visual, "input_resolution"):
        return int(visual.input_resolution)
    size = visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def text_dtype(clip_model: nn.Module) -> torch.dtype:
    """Working dtype of the text tower."""
    return clip_model.token_embedding.weight.dtype


def encode_text_embeddings(clip_model: nn.Module, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``encode_text`` from (C, L, W) token embeddings and the (C, L) token ids (for the EOT position) -> (C, D)."""
    dtype = text_dtype(clip_model)
    length = embeddings.shape[1]
    x = embeddings.to(dtype) + clip_model.positional_embedding[:length].to(dtype)
    mask = getattr(clip_model, "attn_mask", None) if is_open_clip_module(clip_model) else None
    if mask is not None:
        mask = mask[:length, :length]  # causal: a sequence shortened to its longest prompt keeps the top-left block
    x = clip_model.ln_final(run_transformer(clip_model.transformer, x.permute(1, 0, 2), mask).permute(1, 0, 2))
    pool_type = getattr(clip_model, "text_pool_type", "argmax")
    if pool_type != "argmax":
        raise NotImplementedError(f"text pooling {pool_type!r}: the prompt learners need EOT (argmax) pooling")
    x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    projection = clip_model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, nn.Linear) else x @ projection


__all__ = ["check_class_token_vit", "encode_text_embeddings", "image_size", "is_open_clip_module", "layer_scales",
           "run_blocks", "run_transformer", "text_dtype"]
