"""Shift operators: an (n, n) float64 CSR matrix ``S`` with ``S[i, j] != 0`` only if ``j`` is a
neighbour of ``i`` or ``j == i``; one mixing round is ``x <- S @ x``. The normalisations of an
adjacency, the checks of a user's matrix, and the operators of edge list files (the spectra:
``spectra.py``; the graphs: ``graphs.py``).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .edge_list import EdgeList, mixing_weights, read_edge_list
from .graphs import _check_count, _from_edges, number_of_components
from .spectra import TOLERANCE, _is_symmetric, check_consensus, spectral_radius

NORMALIZATIONS = ("metropolis", "row_stochastic", "spectral")
STOCHASTIC_NORMALIZATIONS = ("metropolis", "row_stochastic")


def _checked_adjacency(adjacency) -> sp.csr_matrix:
    """Boolean CSR pattern (n, n) of a square symmetric matrix: nonzero off-diagonal = edge."""
    matrix = sp.csr_matrix(adjacency)
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"adjacency must be a square matrix, got shape {matrix.shape}")
    pattern = sp.csr_matrix(sp.triu(matrix, 1) + sp.tril(matrix, -1)) != 0
    if not _is_symmetric(pattern.astype(np.int8)):
        raise ValueError("adjacency must be symmetric (an undirected graph)")
    return pattern


def shift_operator(adjacency, normalization: str = "metropolis") -> sp.csr_matrix:
    """Shift operator S (n, n, CSR float64) of a symmetric adjacency A (n, n), deg = A 1.

    - ``"row_stochastic"``: ``S = D^-1 (A + I)`` with ``D = diag(deg + 1)``; rows sum to 1.
    - ``"metropolis"``: ``s_ij = 1 / (1 + max(deg_i, deg_j))`` on edges,
      ``s_ii = 1 - sum_{j != i} s_ij``; symmetric and doubly stochastic.
    - ``"spectral"``: ``S = A / lambda_max(A)``; spectral radius 1, no self-loops, not stochastic.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")
    pattern = _checked_adjacency(adjacency)
    n = pattern.shape[0]
    weights = pattern.astype(np.float64).tocoo()
    degree = np.asarray(weights.sum(axis=1)).ravel()
    if normalization == "row_stochastic":
        operator = sp.diags(1.0 / (degree + 1.0)) @ (weights.tocsr() + sp.identity(n, format="csr"))
    elif normalization == "metropolis":
        weights.data = 1.0 / (1.0 + np.maximum(degree[weights.row], degree[weights.col]))
        off_diagonal = weights.tocsr()
        operator = off_diagonal + sp.diags(1.0 - np.asarray(off_diagonal.sum(axis=1)).ravel())
    else:
        if weights.nnz == 0:
            raise ValueError("spectral normalization needs a graph with at least one edge")
        operator = weights.tocsr() / spectral_radius(weights)
    operator = sp.csr_matrix(operator, dtype=np.float64)
    operator.sort_indices()
    return operator


def validate_shift_operator(shift, normalization: str | None = None,
                            n: int | None = None) -> sp.csr_matrix:
    """Check a shift operator S; return it as (n, n) CSR float64, else ValueError saying why.

    Always: square (of size ``n`` if given), finite, nonnegative, connected graph.
    ``"row_stochastic"``: ``|S 1 - 1| <= 1e-8``; ``"metropolis"``: also symmetric;
    ``"spectral"``: ``rho(S) <= 1 + 1e-8``; ``None`` (user matrix): row-stochastic or rho <= 1.
    """
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")
    if not sp.issparse(shift) and np.ndim(shift) != 2:
        raise ValueError(f"shift operator must be a square matrix, got shape {np.shape(shift)}")
    matrix = sp.csr_matrix(shift, dtype=np.float64)
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"shift operator must be square, got shape {matrix.shape}")
    if n is not None and matrix.shape[0] != n:
        raise ValueError(f"shift operator has size {matrix.shape[0]} but there are n={n} agents")
    if not np.all(np.isfinite(matrix.data)):
        bad = int(np.sum(~np.isfinite(matrix.data)))
        raise ValueError(f"shift operator has {bad} non-finite entries (NaN or inf)")
    if np.any(matrix.data < 0):
        raise ValueError(f"shift operator has {int(np.sum(matrix.data < 0))} negative entries "
                         f"(min {matrix.data.min():.3g}); weights must be nonnegative")
    matrix.eliminate_zeros()
    components = number_of_components(matrix)
    if components != 1:
        raise ValueError(f"graph is disconnected: {components} connected components "
                         "(mixing cannot reach consensus)")
    row_sums = np.asarray(matrix.sum(axis=1)).ravel()
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    rows_ok = abs(row_sums[worst] - 1.0) <= TOLERANCE
    rows_note = f"rows must sum to 1, row {worst} sums to {row_sums[worst]:.6g}"
    if normalization in STOCHASTIC_NORMALIZATIONS and not rows_ok:
        raise ValueError(f"not a mixing matrix for {normalization!r}: {rows_note}")
    if normalization == "metropolis" and not _is_symmetric(matrix):
        raise ValueError("not a mixing matrix for 'metropolis': weights must be symmetric")
    if normalization in STOCHASTIC_NORMALIZATIONS or (normalization is None and rows_ok):
        check_consensus(matrix)
        return matrix
    bound = min(matrix.sum(axis=1).max(), matrix.sum(axis=0).max())
    radius = float(bound) if bound <= 1 + TOLERANCE else spectral_radius(matrix)
    if radius > 1 + TOLERANCE:
        prefix = "" if normalization else rows_note + " or "
        raise ValueError(f"not a mixing matrix: {prefix}spectral radius {radius:.6g} must be <= 1")
    return matrix


def load_edge_list(path, n: int | None = None) -> sp.csr_matrix:
    """Adjacency (n, n) of an edge list file (format: ``edge_list.py``; weights are not part of
    an adjacency); self-loops dropped, duplicates merged; ``n`` defaults to ``max id + 1``."""
    edges = read_edge_list(path)
    n = edges.num_nodes if n is None else _check_count(n, "n", 1)
    too_big = np.flatnonzero(np.maximum(edges.heads, edges.tails) >= n)
    if too_big.size:
        k = too_big[0]
        raise ValueError(f"{edges.path}, line {edges.lines[k]}: node id {max(edges.heads[k], edges.tails[k])} "
                         f">= n={n} (ids are 0..n-1)")
    return _from_edges(n, edges.heads, edges.tails)


def weighted_shift(edges: EdgeList, n: int) -> sp.csr_matrix:
    """Shift operator (n, n) of a weighted edge list: ``s_ij = s_ji = w`` per edge, ``s_ii = 1 -
    sum_j s_ij``: doubly stochastic when each agent's weights sum to <= 1 (else a ValueError)."""
    path, (heads, tails, weights) = edges.path, mixing_weights(edges)
    off = sp.csr_matrix((np.concatenate([weights, weights]),
                         (np.concatenate([heads, tails]), np.concatenate([tails, heads]))), shape=(n, n))
    sums = np.asarray(off.sum(axis=1)).ravel()
    worst = int(np.argmax(sums))
    if sums[worst] > 1 + TOLERANCE:
        raise ValueError(f"{path}: agent {worst}'s edge weights sum to {sums[worst]:.6g} > 1, so its own "
                         f"weight 1 - {sums[worst]:.6g} would be negative; scale the weights so that every "
                         "agent's sum is at most 1 (or drop the weights for Metropolis weights)")
    operator = sp.csr_matrix(off + sp.diags(np.clip(1.0 - sums, 0.0, None)), dtype=np.float64)
    operator.sort_indices()
    return operator
