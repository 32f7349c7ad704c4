"""Label propagation over a k-nearest-neighbour graph that scales to ~100k nodes, and ReCLIP's text projection.

Zhou et al.'s diffusion as ReCLIP uses it (official ``models.py`` ``LabelPropagationCluster``; shared/research/
baselines.md Sec. 8), for n nodes = C class seeds followed by N image features:

1. projected, L2-normalised nodes ``z_i = normalize(P x_i)`` (``P`` from ``projection_without_first_direction`` or
   the identity);
2. affinity ``a_ij = (z_i . z_j + 1) / 2`` with the diagonal removed, only the top-k entries of each row kept
   (``topA``), symmetrised ``W = (topA + topA^T) / 2`` and normalised ``Wn = D^-1/2 W D^-1/2``, ``D = diag(W 1)``;
3. per class c, ``(I - alpha Wn) f_c = e_c`` (e_c = indicator of seed node c), solved by conjugate gradients with
   scipy's stopping rule (``||r|| < tol * ||b||`` checked before each iteration, at most ``maxiter`` iterations);
   the label of node i is ``argmax_c f_c[i]``.

What makes it scale: the top-k is exact but computed a block of rows at a time (``chunked_topk_affinity``), so the
n x n affinity never exists; the graph is a sparse CSR matrix with at most 2 k n entries; the C systems are solved
together by one batched CG (``batched_conjugate_gradient``: one sparse (n, n) x (n, C) product per iteration, every
column with its own step sizes and its own stopping test, i.e. C independent scipy CG runs). Memory: O(n k + n C)
plus one (chunk, n) block; SUN397 (76k images, 397 classes) fits in a few GB on a GPU or a CPU.
"""

from __future__ import annotations

import time
import warnings
from typing import Dict, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F

# Bytes one (rows, n) similarity block may take when ``chunk_rows`` is not given (the top-k works block by block).
DEFAULT_BLOCK_BYTES = 256 * 2**20


def projection_without_first_direction(text_features: torch.Tensor, cut_dim: int) -> torch.Tensor:
    """ReCLIP's projection space: (C, D) class text embeddings -> (D, D) projector ``U' U'^T``.

    ``T = U S V^T`` is the reduced SVD of the (D, C) text matrix and ``U' = U[:, 1:cut_dim]``: the span of the text
    embeddings without its first (class-agnostic) singular direction, at most ``cut_dim - 1`` directions (official
    ``update_projection``; ``cut_dim`` 768, 250 for more than 500 classes).
    """
    if text_features.dim() != 2:
        raise ValueError(f"text_features must be (C, D), got {tuple(text_features.shape)}")
    if cut_dim < 2:
        raise ValueError(f"cut_dim must be >= 2 (it keeps singular directions 1 .. cut_dim - 1), got {cut_dim}")
    u, _, _ = torch.linalg.svd(text_features.t().float(), full_matrices=False)  # u: (D, min(D, C))
    kept = u[:, 1:cut_dim]
    return kept @ kept.t()


def project_and_normalize(features: torch.Tensor, projection: Optional[torch.Tensor]) -> torch.Tensor:
    """(n, D) -> (n, D) ``normalize(x P)`` (P symmetric), or ``normalize(x)`` when ``projection`` is None."""
    features = features.float()
    if projection is not None:
        features = features @ projection.to(features)
    return F.normalize(features, dim=-1)


def _rows_per_block(num_nodes: int, chunk_rows: Optional[int]) -> int:
    if chunk_rows is not None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        return chunk_rows
    return max(1, min(num_nodes, DEFAULT_BLOCK_BYTES // (4 * max(1, num_nodes))))


@torch.no_grad()
def chunked_topk_affinity(nodes: torch.Tensor, k: int,
                          chunk_rows: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of each row of ``A = (nodes nodes^T + 1) / 2`` without the diagonal, a block of rows at a time.

    ``nodes``: (n, D) unit rows (on any device; the work happens there). Returns (values (n, k), indices (n, k)),
    values in descending order. Peak extra memory: one (chunk_rows, n) block.
    """
    n = nodes.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"the number of neighbours k must satisfy 1 <= k < number of nodes ({n}), got {k}")
    rows = _rows_per_block(n, chunk_rows)
    values, indices = [], []
    for start in range(0, n, rows):
        block = nodes[start:start + rows]
        cosine = block @ nodes.t()
        own = torch.arange(start, start + block.shape[0], device=nodes.device)
        cosine[torch.arange(block.shape[0], device=nodes.device), own] = float("-inf")  # no self-loops
        top = torch.topk(cosine, k, dim=1)  # (cos + 1) / 2 is increasing: the same neighbours, on k values only
        values.append((top.values + 1.0) / 2.0)
        indices.append(top.indices)
        del cosine
    return torch.cat(values), torch.cat(indices)


def symmetric_knn_graph(values: torch.Tensor, indices: torch.Tensor,
                        dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n, k) top-k values / column indices -> sparse CSR ``W = (topA + topA^T) / 2`` (n, n) in ``dtype``."""
    n, k = indices.shape
    rows = torch.arange(n, device=indices.device).repeat_interleave(k)
    cols = indices.reshape(-1)
    both = torch.stack([torch.cat([rows, cols]), torch.cat([cols, rows])])
    half = values.reshape(-1).to(dtype) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: "sparse CSR support is in beta"
        graph = torch.sparse_coo_tensor(both, torch.cat([half, half]), (n, n)).coalesce()  # duplicates are summed
        return graph.to_sparse_csr()


def normalize_graph(graph: torch.Tensor) -> torch.Tensor:
    """Sparse CSR ``W`` -> ``D^-1/2 W D^-1/2`` with ``D = diag(W 1)`` (an isolated node keeps an all-zero row)."""
    crow, col, val = graph.crow_indices(), graph.col_indices(), graph.values()
    n = graph.shape[0]
    row = torch.repeat_interleave(torch.arange(n, device=val.device), crow[1:] - crow[:-1])
    degree = torch.zeros(n, dtype=val.dtype, device=val.device).index_add_(0, row, val)
    inv_sqrt = torch.where(degree > 0, degree.clamp(min=torch.finfo(val.dtype).tiny).rsqrt(), torch.zeros_like(degree))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val * inv_sqrt[row] * inv_sqrt[col], graph.shape)


class CGResult(NamedTuple):
    solution: torch.Tensor  # (n, C)
    iterations: torch.Tensor  # (C,) iterations each column ran
    residual_norm: torch.Tensor  # (C,) final ||b - A x||_2 (recursive residual)


@torch.no_grad()
def batched_conjugate_gradient(matvec, rhs: torch.Tensor, maxiter: int, tol: float) -> CGResult:
    """Solve ``A x_c = b_c`` for every column of ``rhs`` (n, C) at once (A symmetric positive definite, given as
    ``matvec(X) = A X``), starting from 0. Each column follows scipy's ``cg`` exactly: before each iteration it stops
    if ``||r_c|| < tol * ||b_c||``; at most ``maxiter`` iterations (a stopped column is no longer updated)."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = torch.zeros_like(rhs)
    threshold = tol * rhs.norm(dim=0)
    rho_prev = torch.ones(rhs.shape[1], dtype=rhs.dtype, device=rhs.device)
    iterations = torch.zeros(rhs.shape[1], dtype=torch.long, device=rhs.device)
    for step in range(maxiter):
        norm = r.norm(dim=0)
        active = (norm >= threshold) & (norm > 0)  # scipy: `if norm(r) < atol: return` (and b = 0 returns 0)
        if not bool(active.any()):
            break
        rho = (r * r).sum(dim=0)
        beta = rho / rho_prev if step > 0 else torch.zeros_like(rho)
        p = torch.where(active, r + beta * p, p)
        q = matvec(p)
        denominator = (p * q).sum(dim=0)
        alpha = torch.where(active, rho / torch.where(active, denominator, torch.ones_like(denominator)),
                            torch.zeros_like(rho))
        x += alpha * p
        r -= alpha * q
        rho_prev = torch.where(active, rho, rho_prev)
        iterations += active.long()
    return CGResult(x, iterations, r.norm(dim=0))


class _PhaseClock:
    """Seconds between ``lap`` calls (device-synchronised) into ``timings``; a no-op when ``timings`` is None."""

    def __init__(self, device: torch.device, timings: Optional[Dict[str, float]]):
        self.device, self.timings = device, timings
        self.last = time.perf_counter() if timings is not None else 0.0

    def lap(self, name: str) -> None:
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[name] = now - self.last
        self.last = now


class PropagationResult(NamedTuple):
    scores: torch.Tensor  # (C + N, C) diffusion scores f of every node (seeds first)
    labels: torch.Tensor  # (C + N,) argmax_c f_c[i]
    cg_iterations: torch.Tensor  # (C,)


@torch.no_grad()
def label_propagation(seeds: torch.Tensor, features: torch.Tensor, projection: Optional[torch.Tensor] = None,
                      k: int = 20, alpha: float = 0.99, maxiter: int = 20, tol: float = 1e-6,
                      chunk_rows: Optional[int] = None, cg_dtype: torch.dtype = torch.float64,
                      timings: Optional[Dict[str, float]] = None) -> PropagationResult:
    """Labels of C seeds (C, D) + N features (N, D) by diffusion on their kNN graph (module docstring).

    Everything runs on ``features.device``; the CG in ``cg_dtype`` (float64: scipy's precision in the official code).
    ``timings``: if a dict is given, it receives the seconds of each phase (``knn``: projection and chunked top-k;
    ``graph``; ``cg``).
    """
    clock = _PhaseClock(features.device, timings)
    if seeds.dim() != 2 or features.dim() != 2 or seeds.shape[1] != features.shape[1]:
        raise ValueError(f"seeds (C, D) and features (N, D) must share D, got {tuple(seeds.shape)} and "
                         f"{tuple(features.shape)}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1) so that I - alpha Wn is positive definite, got {alpha}")
    num_classes = seeds.shape[0]
    nodes = project_and_normalize(torch.cat([seeds.to(features), features]), projection)
    values, indices = chunked_topk_affinity(nodes, k, chunk_rows)
    del nodes
    clock.lap("knn")
    graph = normalize_graph(symmetric_knn_graph(values, indices, cg_dtype))
    del values, indices
    clock.lap("graph")
    rhs = torch.zeros(graph.shape[0], num_classes, dtype=cg_dtype, device=features.device)
    seed_rows = torch.arange(num_classes, device=features.device)
    rhs[seed_rows, seed_rows] = 1.0
    result = batched_conjugate_gradient(lambda x: x - alpha * (graph @ x), rhs, maxiter, tol)
    clock.lap("cg")
    return PropagationResult(result.solution, result.solution.argmax(dim=1), result.iterations)


__all__ = [
    "CGResult",
    "PropagationResult",
    "batched_conjugate_gradient",
    "chunked_topk_affinity",
    "label_propagation",
    "normalize_graph",
    "project_and_normalize",
    "projection_without_first_direction",
    "symmetric_knn_graph",
]
