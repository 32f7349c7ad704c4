"""Saliency-Oriented Attention Pooling (SOAP, microCLIP Sec. 3.3, Eqs. 4-5) and the [FG] token of Table 3.

As coded officially: one head; bias-free Q/K/V projections of the ViT width W, initialised to the identity; a fixed
zero "empty" token appended to keys and values (with bias-free projections its key and value stay 0, so it only adds a
constant logit 0 to the softmax: an attention sink); scale 1/sqrt(W); no output projection. The query is the mean of
the NCut-selected patch tokens (Eq. 4, denominator max(1, count)). The pooled token is projected with CLIP's frozen
``visual.proj`` and L2-normalised (Eq. 6's P_CLIP).

Table 3 variants: ``query`` = "ncut_mean" (SOAP) | "token_mean" (naive token average) | "random_token" (one random
patch per image); ``fg_token`` = "soap" | "ncut_mean" (NCut token average as [FG], no attention) | "token_mean"
(naive token average as [FG]).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

QUERY_MODES = ("ncut_mean", "token_mean", "random_token")
FG_TOKEN_MODES = ("soap", "ncut_mean", "token_mean")
SINK_MODES = ("zero", "learnable", "none")


def masked_token_mean(tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """(B, n, W) tokens, (B, n) bool mask or None -> (B, W) mean of the selected tokens (Eq. 4).

    Denominator max(1, count), as coded officially: an empty mask gives the zero vector. ``None`` = all tokens.
    """
    if mask is None:
        return tokens.mean(dim=1)
    weights = mask.to(tokens.dtype)
    return (weights[:, :, None] * tokens).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)


def random_token(tokens: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """(B, n, W) -> (B, W): one uniformly drawn patch token per image (Table 3, "random token selection")."""
    index = torch.randint(tokens.shape[1], (tokens.shape[0],), device=tokens.device, generator=generator)
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), index]


def identity_linear(width: int) -> nn.Linear:
    """Bias-free ``Linear(width, width)`` initialised to the identity (official SOAP projections)."""
    layer = nn.Linear(width, width, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(width))
    return layer


class SaliencyAttentionPool(nn.Module):
    """Single-head attention pooling of patch tokens with a query built from them (Eq. 5).

    ``forward(tokens (B, n, W), mask (B, n) bool | None) -> (pooled (B, W), attention (B, n [+1]))``.
    """

    def __init__(self, width: int, query: str = "ncut_mean", fg_token: str = "soap", sink: str = "zero"):
        super().__init__()
        for name, value, allowed in (("QUERY", query, QUERY_MODES), ("FG_TOKEN", fg_token, FG_TOKEN_MODES),
                                     ("SINK", sink, SINK_MODES)):
            if value not in allowed:
                raise ValueError(f"TRAINER.MICROCLIP.SOAP.{name} must be one of {allowed}, got {value!r}")
        self.width, self.query_mode, self.fg_token, self.sink_mode = width, query, fg_token, sink
        self.scale = 1.0 / math.sqrt(width)  # 1/sqrt(d), d = the ViT width (Eq. 5)
        self.query_proj = identity_linear(width)
        self.key_proj = identity_linear(width)
        self.value_proj = identity_linear(width)
        if sink == "learnable":  # official --use_unr_token: a learnable empty token, zero-initialised
            self.sink_token = nn.Parameter(torch.zeros(1, 1, width))
        else:
            self.register_buffer("sink_token", torch.zeros(1, 1, width), persistent=False)

    @property
    def uses_attention(self) -> bool:
        """False for the Table 3 rows that take a token average as [FG] directly (projections unused)."""
        return self.fg_token == "soap"

    @property
    def uses_mask(self) -> bool:
        """Whether the NCut mask is needed (as query or as [FG] token)."""
        return self.fg_token == "ncut_mean" or (self.fg_token == "soap" and self.query_mode == "ncut_mean")

    def build_query(self, tokens: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, n, W) -> (B, W) query: NCut-masked mean (q_sal, Eq. 4), plain mean, or one random token."""
        if self.query_mode == "ncut_mean":
            if mask is None:
                raise ValueError("SOAP query 'ncut_mean' needs the NCut mask")
            return masked_token_mean(tokens, mask)
        if self.query_mode == "token_mean":
            return tokens.mean(dim=1)
        return random_token(tokens)

    def attend(self, query: torch.Tensor, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Eq. 5: softmax(q W_Q (K W_K)^T / sqrt(W)) (K W_V) over the tokens (+ sink). -> ((B, W), (B, n [+1]))."""
        if self.sink_mode != "none":
            tokens = torch.cat([tokens, self.sink_token.to(tokens.dtype).expand(tokens.shape[0], 1, -1)], dim=1)
        q = self.query_proj(query)  # (B, W)
        k = self.key_proj(tokens)  # (B, n+1, W)
        v = self.value_proj(tokens)
        attention = torch.softmax(torch.einsum("bw,bnw->bn", q, k) * self.scale, dim=-1)
        return torch.einsum("bn,bnw->bw", attention, v), attention

    def forward(self, tokens: torch.Tensor, mask: Optional[torch.Tensor] = None):
        if self.fg_token == "ncut_mean":
            if mask is None:
                raise ValueError("FG_TOKEN 'ncut_mean' needs the NCut mask")
            return masked_token_mean(tokens, mask), None
        if self.fg_token == "token_mean":
            return tokens.mean(dim=1), None
        return self.attend(self.build_query(tokens, mask), tokens)


def project_fg_token(pooled: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
    """(B, W) pooled token -> (B, D) [FG] feature: ``normalize(pooled @ P_CLIP)`` (Eq. 6, CLIP's frozen visual.proj)."""
    return F.normalize(pooled @ projection.to(pooled.dtype), dim=-1)


__all__ = [
    "FG_TOKEN_MODES",
    "QUERY_MODES",
    "SINK_MODES",
    "SaliencyAttentionPool",
    "identity_linear",
    "masked_token_mean",
    "project_fg_token",
    "random_token",
]
