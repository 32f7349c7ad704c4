"""NCut masks: planted two-cluster token sets, both eigenvector signs, against per-image reference computations."""

import numpy as np
import pytest
import torch

from clipkit.blocks.ncut import (
    asymmetric_sign_rule,
    canonical_sign,
    mask_size_statistics,
    ncut_mask,
    summarize_mask_statistics,
)


def planted_tokens(batch=3, n=49, dim=32, seed=0):
    """Tokens of a small salient cluster (size 6..12, random positions) and a large background cluster.

    Cluster centres are orthogonal unit vectors scaled so that within-cluster dot products are ~4 and cross-cluster
    ones ~0 (< tau = 0.2) both for raw dot products and cosines.
    """
    gen = torch.Generator().manual_seed(seed)
    tokens, masks = [], []
    for b in range(batch):
        centres = torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0][:2] * 2.0
        size = 6 + 3 * b
        fg = torch.zeros(n, dtype=torch.bool)
        fg[torch.randperm(n, generator=gen)[:size]] = True
        x = centres[1].expand(n, dim).clone()
        x[fg] = centres[0]
        tokens.append(x + 0.01 * torch.randn(n, dim, generator=gen))
        masks.append(fg)
    return torch.stack(tokens), torch.stack(masks)


def negated_eigh(matrix):
    values, vectors = torch.linalg.eigh(matrix)
    return values, -vectors


@pytest.mark.parametrize("solver", [torch.linalg.eigh, negated_eigh])
def test_tokencut_variant_recovers_planted_cluster_for_both_signs(solver):
    tokens, planted = planted_tokens()
    mask = ncut_mask(tokens, variant="tokencut", eigensolver=solver)
    assert mask.dtype == torch.bool and mask.shape == planted.shape
    assert torch.equal(mask, planted)


@pytest.mark.parametrize("solver", [torch.linalg.eigh, negated_eigh])
def test_canonical_sign_rule_makes_official_variant_sign_independent(solver):
    tokens, planted = planted_tokens()
    assert torch.equal(ncut_mask(tokens, variant="official", sign_rule="canonical", eigensolver=solver), planted)


def test_official_variant_is_asymmetric_in_the_eigenvector_sign():
    """As coded officially: one sign gives the salient cluster, the other (nearly) every token."""
    tokens, planted = planted_tokens()
    positive = ncut_mask(tokens, variant="official", eigensolver=lambda m: _signed_eigh(m, +1))
    negative = ncut_mask(tokens, variant="official", eigensolver=lambda m: _signed_eigh(m, -1))
    assert torch.equal(positive, planted)
    assert negative.all()


def _signed_eigh(matrix, sign):
    """eigh with each eigenvector's max-|entry| forced to have the given sign."""
    values, vectors = torch.linalg.eigh(matrix)
    seed = vectors.abs().argmax(dim=-2, keepdim=True)
    flip = torch.sign(vectors.gather(-2, seed)) * sign
    return values, vectors * flip


def _official_reference(tokens, tau=0.2, eps=1e-6):
    """Per-image transcription of the official get_foreground_mask_ncut (Python loop, in-place sign fix)."""
    out = []
    for x in tokens:
        a = (x @ x.t() > tau).float()
        a[a == 0] = eps
        d = a.sum(-1)
        d_inv = torch.diag(1.0 / (d.sqrt() + eps))
        lap = d_inv @ (torch.diag(d) - a) @ d_inv
        z = torch.linalg.eigh(lap)[1][:, 1]
        bip = z > z.std()
        seed = z.abs().argmax()
        if not bip[seed]:
            bip = ~bip
        out.append(bip)
    return torch.stack(out)


def _tokencut_reference(tokens, tau=0.2, eps=1e-6):
    """TokenCut with scipy's generalized solver eigh(D - A, D), mean threshold, seed rule."""
    from scipy.linalg import eigh

    out = []
    for x in torch.nn.functional.normalize(tokens, dim=-1).double().numpy():
        a = (x @ x.T > tau).astype(float)
        a[a == 0] = eps
        d = np.diag(a.sum(-1))
        _, vectors = eigh(d - a, d)
        y = vectors[:, 1]
        bip = y > y.mean()
        if not bip[np.abs(y).argmax()]:
            bip = ~bip
        out.append(torch.from_numpy(bip))
    return torch.stack(out)


def test_batched_official_matches_per_image_reference_on_random_tokens():
    torch.manual_seed(0)
    tokens = torch.randn(6, 16, 8) + 0.5 * torch.randn(6, 1, 8)
    assert torch.equal(ncut_mask(tokens, variant="official"), _official_reference(tokens))


def test_tokencut_matches_scipy_generalized_eigensolver():
    tokens, _ = planted_tokens(batch=2, seed=3)
    torch.manual_seed(1)
    noisy = tokens + 0.3 * torch.randn_like(tokens)
    assert torch.equal(ncut_mask(noisy, variant="tokencut"), _tokencut_reference(noisy))


def test_sign_rule_functions():
    z = torch.tensor([[3.0, -1.0, -1.0, -1.0], [-3.0, 1.0, 1.0, 1.0]])
    bip = z > z.std(dim=-1, keepdim=True)
    assert bip.tolist() == [[True, False, False, False], [False, False, False, False]]
    assert asymmetric_sign_rule(z, bip).tolist() == [[True, False, False, False], [True, True, True, True]]
    assert torch.equal(canonical_sign(z), torch.tensor([[3.0, -1.0, -1.0, -1.0]] * 2))


def test_mask_statistics_and_errors():
    mask = torch.tensor([[True, True, True], [False, False, False], [True, False, False], [True, True, False]])
    sums = mask_size_statistics(mask[:2]) + mask_size_statistics(mask[2:])
    stats = summarize_mask_statistics(sums, 4)
    assert stats["ncut_mask_fraction"] == pytest.approx((1 + 0 + 1 / 3 + 2 / 3) / 4)
    assert stats["ncut_full_mask_share"] == pytest.approx(0.25)
    assert stats["ncut_empty_mask_share"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="NCUT.VARIANT"):
        ncut_mask(torch.randn(1, 4, 2), variant="sparse")
    with pytest.raises(ValueError, match="shape"):
        ncut_mask(torch.randn(4, 2))
