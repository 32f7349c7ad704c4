"""Batched Normalized Cut (NCut) foreground masks over patch tokens, fully on the device.

Two variants (microCLIP Eq. 3, Supp. D):

* ``"official"``: what microCLIP's ``get_foreground_mask_ncut`` computes. Affinity from RAW dot products of the tokens,
  ``A = 1[S > tau]`` with ``eps`` for zeros (self-loops kept), ``L_sym = D^-1/2 (D - A) D^-1/2`` (with ``eps`` added to
  ``sqrt(d)``), dense batched ``eigh``, second eigenvector ``z`` of ``L_sym`` itself, threshold ``std(z)`` (unbiased),
  then TokenCut's sign rule applied to the *mask*: if the max-|z| token is not in the bipartition, invert the mask.
  With the std threshold this rule is asymmetric: one eigenvector sign gives the salient cluster, the other gives
  (nearly) all tokens. ``sign_rule="canonical"`` fixes the sign of ``z`` first (max-|z| entry positive) instead.
* ``"tokencut"``: TokenCut (Wang et al., 2022) as the paper describes it: cosine affinity of L2-normalised tokens,
  generalized problem ``(D - A) y = lambda D y`` solved through ``L_sym`` and ``y = D^-1/2 z``, mean threshold.

No Python loop over images and no host synchronisation: the sign rule is a ``torch.where``.
"""

from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F

NCUT_VARIANTS = ("official", "tokencut")
SIGN_RULES = ("official", "canonical")

Eigensolver = Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def thresholded_affinity(tokens: torch.Tensor, tau: float, eps: float, cosine: bool) -> torch.Tensor:
    """(B, n, d) tokens -> (B, n, n) affinity ``1[s_ij > tau]`` with ``eps`` where 0 (s = dot or cosine)."""
    if cosine:
        tokens = F.normalize(tokens, dim=-1)
    similarity = tokens @ tokens.transpose(1, 2)
    return torch.where(similarity > tau, torch.ones_like(similarity), torch.full_like(similarity, eps))


def normalized_laplacian(affinity: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """(B, n, n) affinity -> (L_sym (B, n, n), D^-1/2 (B, n)) with ``D^-1/2 = 1 / (sqrt(d) + eps)`` (Supp. D Eq. 18)."""
    degree = affinity.sum(dim=-1)
    inv_sqrt_degree = 1.0 / (degree.sqrt() + eps)
    laplacian = torch.diag_embed(degree) - affinity
    return inv_sqrt_degree[:, :, None] * laplacian * inv_sqrt_degree[:, None, :], inv_sqrt_degree


def fiedler_vector(laplacian: torch.Tensor, eigensolver: Eigensolver = torch.linalg.eigh) -> torch.Tensor:
    """(B, n, n) symmetric -> (B, n) eigenvector of the second-smallest eigenvalue (Supp. D Eq. 19), in fp32."""
    _, eigenvectors = eigensolver(laplacian.float())
    return eigenvectors[..., 1]


def max_magnitude_token(vector: torch.Tensor) -> torch.Tensor:
    """(B, n) -> (B, 1) index of the max-|entry| token (TokenCut's seed)."""
    return vector.abs().argmax(dim=-1, keepdim=True)


def asymmetric_sign_rule(vector: torch.Tensor, bipartition: torch.Tensor) -> torch.Tensor:
    """TokenCut's sign fix as applied by microCLIP: invert the mask where the seed token lies outside it.

    vector: (B, n) eigenvector, bipartition: (B, n) bool -> (B, n) bool.
    """
    seed_inside = bipartition.gather(-1, max_magnitude_token(vector))  # (B, 1)
    return torch.where(seed_inside, bipartition, ~bipartition)


def canonical_sign(vector: torch.Tensor) -> torch.Tensor:
    """Flip each row of (B, n) so that its max-|entry| is positive (removes the eigensolver's arbitrary sign)."""
    seed_value = vector.gather(-1, max_magnitude_token(vector))
    return torch.where(seed_value < 0, -vector, vector)


def ncut_mask(
    tokens: torch.Tensor,
    variant: str = "official",
    tau: float = 0.2,
    eps: float = 1e-6,
    sign_rule: str = "official",
    eigensolver: Eigensolver = torch.linalg.eigh,
) -> torch.Tensor:
    """(B, n, d) patch tokens -> (B, n) bool foreground mask (microCLIP Eq. 3, V_cut).

    ``variant``: "official" (raw dot affinity, L_sym eigenvector, std threshold) or "tokencut" (cosine affinity,
    generalized eigenvector D^-1/2 z, mean threshold). ``sign_rule``: "official" (invert the mask when the max-|z|
    token falls outside it) or "canonical" (make the max-|z| entry positive, then threshold). Computed in fp32 under
    no gradient (the mask is a hard threshold). ``eigensolver`` is injectable for tests.
    """
    if variant not in NCUT_VARIANTS:
        raise ValueError(
            f"NCut variant must be one of {NCUT_VARIANTS}, got {variant!r} (TRAINER.MICROCLIP.NCUT.VARIANT)"
        )
    if sign_rule not in SIGN_RULES:
        raise ValueError(
            f"NCut sign rule must be one of {SIGN_RULES}, got {sign_rule!r} (TRAINER.MICROCLIP.NCUT.SIGN_RULE)"
        )
    if tokens.dim() != 3 or tokens.shape[1] < 3:
        raise ValueError(f"ncut_mask expects (B, n, d) tokens with n >= 3, got shape {tuple(tokens.shape)}")
    with torch.no_grad(), torch.autocast(tokens.device.type, enabled=False):
        tokens = tokens.detach().float()
        affinity = thresholded_affinity(tokens, tau, eps, cosine=(variant == "tokencut"))
        laplacian, inv_sqrt_degree = normalized_laplacian(affinity, eps)
        vector = fiedler_vector(laplacian, eigensolver)
        if variant == "tokencut":
            vector = vector * inv_sqrt_degree  # y = D^-1/2 z: the generalized eigenvector
        if sign_rule == "canonical":
            vector = canonical_sign(vector)
        if variant == "official":
            threshold = vector.std(dim=-1, keepdim=True)  # unbiased, as coded (the comment there says "mean")
        else:
            threshold = vector.mean(dim=-1, keepdim=True)
        bipartition = vector > threshold
        return asymmetric_sign_rule(vector, bipartition)


MASK_STATISTICS = ("ncut_mask_fraction", "ncut_full_mask_share", "ncut_empty_mask_share")


def mask_size_statistics(mask: torch.Tensor) -> torch.Tensor:
    """(B, n) bool mask -> (3,) sums over the batch, kept on the device (add them over an epoch, read once).

    Entries (see ``MASK_STATISTICS``): sum of selected token fractions, number of masks selecting every token, number
    of masks selecting none.
    """
    return torch.stack(
        [mask.float().mean(dim=-1).sum(), mask.all(dim=-1).float().sum(), (~mask.any(dim=-1)).float().sum()]
    )


def summarize_mask_statistics(sums: torch.Tensor, num_images: int) -> Dict[str, float]:
    """Epoch means from summed :func:`mask_size_statistics`: selected fraction, share of full / of empty masks."""
    values = (sums.detach().float().cpu() / max(num_images, 1)).tolist()
    return dict(zip(MASK_STATISTICS, values))


__all__ = [
    "MASK_STATISTICS",
    "NCUT_VARIANTS",
    "SIGN_RULES",
    "asymmetric_sign_rule",
    "canonical_sign",
    "fiedler_vector",
    "mask_size_statistics",
    "ncut_mask",
    "normalized_laplacian",
    "summarize_mask_statistics",
    "thresholded_affinity",
]
