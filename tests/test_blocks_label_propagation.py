"""Scalable label propagation and ReCLIP's projection against dense reference computations written here."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipkit.blocks.label_propagation import (
    batched_conjugate_gradient,
    chunked_topk_affinity,
    label_propagation,
    normalize_graph,
    projection_without_first_direction,
    symmetric_knn_graph,
)


def dense_reference_operator(nodes: np.ndarray, k: int) -> np.ndarray:
    """The official construction, densely: A = (cos + 1) / 2, zero diagonal, top-k per row, (topA + topA^T) / 2,
    D^-1/2 W D^-1/2 (a hand loop for the top-k)."""
    n = nodes.shape[0]
    affinity = (nodes @ nodes.T + 1.0) / 2.0
    np.fill_diagonal(affinity, 0.0)
    top = np.zeros_like(affinity)
    for i in range(n):
        for j in np.argsort(-affinity[i])[:k]:
            top[i, j] = affinity[i, j]
    w = (top + top.T) / 2.0
    d = np.diag(w.sum(axis=1) ** -0.5)
    return d @ w @ d


def unit(x):
    return F.normalize(x, dim=-1)


def test_chunked_topk_equals_dense_topk():
    torch.manual_seed(0)
    nodes = unit(torch.randn(53, 8))
    dense = (nodes @ nodes.t() + 1) / 2
    dense.fill_diagonal_(-1.0)
    expected = torch.topk(dense, 5, dim=1)
    for chunk in (1, 7, 53, None):
        values, indices = chunked_topk_affinity(nodes, 5, chunk_rows=chunk)
        assert torch.equal(indices, expected.indices)
        assert torch.allclose(values, expected.values, atol=1e-6)
        assert not (indices == torch.arange(53)[:, None]).any()  # no self-loops


def test_sparse_graph_equals_dense_construction():
    torch.manual_seed(1)
    nodes = unit(torch.randn(30, 6)).double()
    values, indices = chunked_topk_affinity(nodes, 4, chunk_rows=8)
    sparse = normalize_graph(symmetric_knn_graph(values, indices)).to_dense().numpy()
    np.testing.assert_allclose(sparse, dense_reference_operator(nodes.numpy(), 4), atol=1e-12)
    np.testing.assert_allclose(sparse, sparse.T, atol=1e-15)


def test_batched_cg_equals_a_dense_solve_and_scipy_iteration_counts():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((12, 12))
    a = m @ m.T + 12 * np.eye(12)
    b = rng.standard_normal((12, 3))
    out = batched_conjugate_gradient(lambda x: torch.from_numpy(a) @ x, torch.from_numpy(b), maxiter=100, tol=1e-10)
    np.testing.assert_allclose(out.solution.numpy(), np.linalg.solve(a, b), atol=1e-8)
    assert (out.iterations <= 12 + 1).all()
    # truncated: two iterations of CG, by hand for each column separately
    two = batched_conjugate_gradient(lambda x: torch.from_numpy(a) @ x, torch.from_numpy(b), maxiter=2, tol=1e-10)
    for c in range(3):
        x, r = np.zeros(12), b[:, c].copy()
        p = r.copy()
        for it in range(2):
            if it:
                p = r + (r @ r) / rho * p
            rho = r @ r
            q = a @ p
            step = rho / (p @ q)
            x, r = x + step * p, r - step * q
        np.testing.assert_allclose(two.solution[:, c].numpy(), x, atol=1e-10)


def test_cg_stops_a_converged_column_only():
    a = torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)  # column 0 converges in one step
    out = batched_conjugate_gradient(lambda x: a @ x, b, maxiter=10, tol=1e-12)
    assert out.iterations.tolist()[0] == 1 and out.iterations.tolist()[1] == 3
    torch.testing.assert_close(out.solution, torch.linalg.solve(a, b))


def test_label_propagation_equals_numpy_dense_solve():
    torch.manual_seed(2)
    seeds, feats = torch.randn(3, 10), torch.randn(40, 10)
    out = label_propagation(seeds, feats, projection=None, k=5, alpha=0.99, maxiter=500, tol=1e-12, chunk_rows=9)
    nodes = unit(torch.cat([seeds, feats])).double().numpy()
    system = np.eye(43) - 0.99 * dense_reference_operator(nodes, 5)
    expected = np.linalg.solve(system, np.eye(43)[:, :3])
    np.testing.assert_allclose(out.scores.numpy(), expected, rtol=1e-7, atol=1e-9)
    assert torch.equal(out.labels, torch.from_numpy(expected.argmax(axis=1)))


def test_label_propagation_recovers_planted_clusters():
    generator = torch.Generator().manual_seed(3)
    means = unit(torch.randn(4, 32, generator=generator))
    truth = torch.arange(4).repeat_interleave(50)
    feats = means[truth] + 0.15 * torch.randn(200, 32, generator=generator)
    out = label_propagation(means, feats, k=10)  # the official settings (alpha 0.99, 20 CG iterations)
    assert torch.equal(out.labels[:4], torch.arange(4))
    assert (out.labels[4:] == truth).float().mean() == 1.0


def test_projection_removes_exactly_the_first_singular_direction():
    torch.manual_seed(4)
    text = torch.randn(6, 16) + 3.0  # a shared offset: a dominant class-agnostic direction
    p = projection_without_first_direction(text, cut_dim=768)
    u, s, _ = np.linalg.svd(text.numpy().T.astype(np.float64), full_matrices=False)
    expected = u[:, 1:] @ u[:, 1:].T
    np.testing.assert_allclose(p.numpy(), expected, atol=1e-5)
    torch.testing.assert_close(p @ p, p, atol=1e-5, rtol=0)  # idempotent
    assert (p @ torch.from_numpy(u[:, 0]).float()).abs().max() < 1e-5  # the top direction is removed
    for j in range(1, 6):  # the other directions of the text span are kept
        torch.testing.assert_close(p @ torch.from_numpy(u[:, j]).float(), torch.from_numpy(u[:, j]).float(),
                                   atol=1e-5, rtol=0)
    p3 = projection_without_first_direction(text, cut_dim=3)  # cut_dim keeps directions 1 .. cut_dim - 1
    np.testing.assert_allclose(p3.numpy(), u[:, 1:3] @ u[:, 1:3].T, atol=1e-5)


def test_bad_arguments_are_rejected():
    nodes = unit(torch.randn(5, 3))
    with pytest.raises(ValueError, match="1 <= k < number of nodes"):
        chunked_topk_affinity(nodes, 5)
    with pytest.raises(ValueError, match="cut_dim"):
        projection_without_first_direction(torch.randn(4, 3), 1)
    with pytest.raises(ValueError, match="alpha"):
        label_propagation(torch.randn(2, 3), torch.randn(6, 3), k=2, alpha=1.0)
