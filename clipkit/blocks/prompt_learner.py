"""CoOp's learnable text context (Zhou et al., IJCV'22), for prompt-learning methods (UPL; POUF's prompt variant).

The prompt of class c is ``[SOS] ctx_1 ... ctx_M <class name> . [EOS]``: M learnable context vectors (one set shared by
all classes, or one per class with ``class_specific``) take the place of M placeholder words, everything else keeps
CLIP's frozen token embeddings, and the frozen text tower runs on the result exactly as ``CLIP.encode_text`` does. The
class name is at the end (CoOp's ``CLASS_TOKEN_POSITION "end"``, the setting UPL uses).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .text_classifier import prompt_ready

PLACEHOLDER_WORD = "X"  # CoOp's placeholder: one BPE token per context position


class ContextPromptLearner(nn.Module):
    """Learnable context vectors and the frozen rest of every class prompt.

    ``forward() -> (C, L, W)`` prompt token embeddings (L = the longest prompt's token count, W = text width); pass them
    with ``self.tokens`` to :func:`encode_prompted_text`. ``ctx_init`` (e.g. "a photo of a") starts the context from
    those words' token embeddings (M = its word count, one BPE token per word as in CoOp); otherwise M = ``n_ctx``
    vectors are drawn from N(0, ``init_std``^2).
    """

    def __init__(self, clip_model, classnames: Sequence[str], n_ctx: int, ctx_init: str = "",
                 class_specific: bool = False, init_std: float = 0.02, generator: Optional[torch.Generator] = None):
        super().__init__()
        from clipkit.clip import tokenize

        embedding = clip_model.token_embedding
        width = embedding.weight.shape[1]
        ctx_init = ctx_init.replace("_", " ").strip()
        if ctx_init:
            n_ctx = len(ctx_init.split())
            context_words = ctx_init
        elif n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1 without a ctx_init, got {n_ctx} (TRAINER.<METHOD>.N_CTX)")
        else:
            context_words = " ".join([PLACEHOLDER_WORD] * n_ctx)
        prompts = [f"{context_words} {prompt_ready(name)}." for name in classnames]
        tokens = tokenize(prompts).to(embedding.weight.device)
        # Trailing positions that are padding in every prompt are dropped: exact, since the causal mask keeps a token
        # from seeing later ones and the feature is read at the end-of-text token.
        tokens = tokens[:, : int((tokens != 0).sum(dim=1).max())]
        with torch.no_grad():
            frozen = embedding(tokens).float()
        if ctx_init:  # the init words' embeddings, read from the prompts, which start with them
            init = frozen[:, 1 : 1 + n_ctx] if class_specific else frozen[0, 1 : 1 + n_ctx]
        else:
            shape = (len(classnames), n_ctx, width) if class_specific else (n_ctx, width)
            init = torch.randn(shape, generator=generator) * init_std
        self.n_ctx, self.class_specific = n_ctx, class_specific
        self.ctx = nn.Parameter(init.clone().to(embedding.weight.device))
        self.register_buffer("tokens", tokens, persistent=False)  # (C, L) token ids of the prompts
        self.register_buffer("token_prefix", frozen[:, :1], persistent=False)  # (C, 1, W) start-of-text
        self.register_buffer("token_suffix", frozen[:, 1 + n_ctx :], persistent=False)  # (C, L-1-M, W) name . EOS pad

    def forward(self) -> torch.Tensor:
        ctx = self.ctx if self.class_specific else self.ctx.unsqueeze(0).expand(len(self.tokens), -1, -1)
        return torch.cat([self.token_prefix, ctx.to(self.token_prefix.dtype), self.token_suffix], dim=1)


def encode_prompted_text(clip_model, prompt_embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """``CLIP.encode_text`` from token embeddings: (C, L, W) embeddings, (C, L) token ids -> (C, D) raw features
    (OpenAI or open_clip text tower, ``clipkit.clip.vit.encode_text_embeddings``)."""
    from clipkit.clip.vit import encode_text_embeddings

    return encode_text_embeddings(clip_model, prompt_embeddings, tokens)


__all__ = ["ContextPromptLearner", "PLACEHOLDER_WORD", "encode_prompted_text"]
