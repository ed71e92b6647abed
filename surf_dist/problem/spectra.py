"""Spectra of mixing matrices, and whether one reaches consensus (issue 25's one check for
every matrix a run mixes with). Matrices are (n, n) scipy.sparse CSR, float64.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, eigs, eigsh

TOLERANCE = 1e-8
DENSE_EIG_LIMIT = 500


def _is_symmetric(matrix: sp.csr_matrix, tol: float = TOLERANCE) -> bool:
    """True if ``max |M - M^T| <= tol``."""
    difference = sp.csr_matrix(matrix - matrix.T)
    return difference.nnz == 0 or float(abs(difference).max()) <= tol


def _leading_moduli(matrix: sp.csr_matrix, k: int) -> np.ndarray:
    """The k largest ``|lambda|`` of an (n, n) matrix M, descending.

    Dense for n <= 500; else ARPACK, and if that stalls on a clustered spectrum (long rings,
    grids), shift-invert on ``M^2`` at ``sigma = b^2 (1 + 1e-6)``, ``b = min(||M||_inf, ||M||_1)
    >= rho(M)``: the eigenvalues of ``M^2`` nearest sigma are the ``lambda^2`` of largest modulus
    whenever the leading spectrum is real (symmetric or reversible M, e.g. every normalisation here).
    """
    symmetric = _is_symmetric(matrix)
    if matrix.shape[0] <= DENSE_EIG_LIMIT:
        values = (np.linalg.eigvalsh if symmetric else np.linalg.eigvals)(matrix.toarray())
        return np.sort(np.abs(values))[::-1][:k]
    solver = eigsh if symmetric else eigs
    try:
        values = solver(matrix, k=k, which="LM", maxiter=100, return_eigenvectors=False)
    except ArpackNoConvergence:
        bound = min(abs(matrix).sum(axis=1).max(), abs(matrix).sum(axis=0).max())
        values = np.sqrt(np.abs(solver((matrix @ matrix).tocsc(), k=k, which="LM",
                                       sigma=bound ** 2 * (1 + 1e-6), return_eigenvectors=False)))
    return np.sort(np.abs(values))[::-1]


def spectral_radius(matrix) -> float:
    """``rho(M) = max_k |lambda_k(M)|`` of an (n, n) matrix (the common row sum if M >= 0 is regular)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    row_sums = np.asarray(matrix.sum(axis=1)).ravel()
    if matrix.nnz and matrix.data.min() >= 0 and np.ptp(row_sums) == 0:
        return float(row_sums[0])
    return float(_leading_moduli(matrix, 1)[0]) if matrix.shape[0] else 0.0


def spectral_gap(shift) -> float:
    """``1 - |lambda_2(S)|`` for eigenvalues sorted by modulus, ``|lambda_1| >= |lambda_2| >= ...``."""
    matrix = sp.csr_matrix(shift, dtype=np.float64)
    if matrix.shape[0] < 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"spectral_gap needs a square matrix with n >= 2, got shape {matrix.shape}")
    gap = 1.0 - float(_leading_moduli(matrix, 2)[1])
    return 0.0 if abs(gap) <= TOLERANCE else gap


FLOAT32_TINY = float(np.finfo(np.float32).smallest_subnormal)   # a weight below it is 0 in float32


def _is_bipartite(matrix: sp.csr_matrix) -> bool:
    """True if the (connected) graph of ``matrix``'s off-diagonal pattern has no odd cycle."""
    from scipy.sparse.csgraph import breadth_first_order
    pattern = sp.csr_matrix(matrix - sp.diags(matrix.diagonal()))
    pattern.eliminate_zeros()
    order, parent = breadth_first_order(pattern, 0, directed=False, return_predecessors=True)
    side = np.zeros(matrix.shape[0], dtype=np.int8)
    for node in order[1:]:
        side[node] = 1 - side[parent[node]]
    rows, cols = pattern.nonzero()
    return bool(np.all(side[rows] != side[cols]))


def check_consensus(matrix: sp.csr_matrix) -> None:
    """A row-stochastic mixing matrix S (n, n) of a connected graph reaches consensus (S^k ->
    1 pi^T) iff it is aperiodic: second-largest eigenvalue modulus < 1, a spectral gap > 0.
    The one check of issue 25 for every matrix a run mixes with (presets, edge lists, weights):

    - every weight is a number in float32, the default dtype (a weight below 1.4e-45 is 0 there,
      and the graph it connects falls apart);
    - aperiodic: some agent keeps a weight of its own, or the graph has an odd cycle (zero own
      weights on a bipartite graph, e.g. two agents swapping models, oscillate forever);
    - numerically (n <= 500, dense): ``1 - |lambda_2| > 1e-8``; weights so small that mixing
      would take longer than any run are refused with the gap.
    ValueError saying which, and the fix."""
    off = sp.csr_matrix(matrix - sp.diags(matrix.diagonal()))
    off.eliminate_zeros()
    vanishing = int(np.count_nonzero(off.data < FLOAT32_TINY))
    if vanishing:
        raise ValueError(f"{vanishing // 2 or vanishing} mixing weight(s) (smallest {off.data.min():.3g}) are 0 in "
                         f"float32 (below {FLOAT32_TINY:.3g}), so the agents they join never mix: mixing cannot "
                         "reach consensus; use weights of at least 1e-6 (or drop the edges)")
    if not np.any(matrix.diagonal() > 0) and _is_bipartite(matrix):
        raise ValueError("mixing cannot reach consensus: every agent's own weight is 0 and the graph is bipartite, "
                         "so the models swap between its two halves forever (second-largest eigenvalue modulus 1, "
                         "spectral gap 0); let some agent keep a weight of its own (edge weights summing to less "
                         "than 1 at that agent), or add an edge that closes an odd cycle")
    if matrix.shape[0] <= DENSE_EIG_LIMIT:
        gap = spectral_gap(matrix)
        if gap <= TOLERANCE:
            second = 1 - gap
            raise ValueError(f"mixing cannot reach consensus: the second-largest eigenvalue modulus is {second:.12g} "
                             f"(spectral gap {gap:.3g} <= {TOLERANCE:g}); use larger mixing weights")
