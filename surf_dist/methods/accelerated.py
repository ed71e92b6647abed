"""The accelerated baselines of ``surf_dist.methods.registry``: momentum and Chebyshev multi-gossip.

Legend: N: nodes, d: params per agent, S: the shift (one ``shift`` call = one round), a: step
(N, 1), b: momentum (N, 1), K: gossip rounds, lambda: the second largest absolute eigenvalue
of S (N, 1), T_K: the Chebyshev polynomial of the first kind, g(x): each agent's local gradient.

  dgd_heavy_ball  w_{k+1} = S w_k - a g(w_k) + b (w_k - w_{k-1})
  dgd_nesterov    v_k = w_k + b (w_k - w_{k-1});  w_{k+1} = S~ v_k - a g(v_k),  S~ = (I + S) / 2
  gt_heavy_ball   x_{k+1} = S x_k - a y_k + b (x_k - x_{k-1});  y_{k+1} = S y_k + g(x_{k+1}) - g(x_k)
  gt_nesterov     v_k = x_k + b (x_k - x_{k-1});  x_{k+1} = S~ v_k - a y_k;
                  y_{k+1} = S y_k + g(v_{k+1}) - g(v_k),  y_0 = g(v_0), v_0 = x_0
  chebyshev_dgd   w_{k+1} = P_K(S) (w_k - a g(w_k))
  chebyshev_gt    x_{k+1} = P_K(S) (x_k - a y_k);  y_{k+1} = P_K(S) y_k + g(x_{k+1}) - g(x_k)
  with  P_K(S) = T_K(S / lambda) / T_K(1 / lambda),  w_{-1} = w_0,  x_{-1} = x_0.

The Nesterov forms mix the extrapolated point through the lazy S~ = (I + S) / 2 (one round, the
same message as S): on a consensus mode of S with eigenvalue lambda the iteration is
z^2 - mu (1 + b) z + mu b = 0 with mu = (1 + lambda) / 2. With S itself (mu = lambda) a negative
lambda below about -1 / (1 + 2 b) puts a root outside the unit circle and the method diverges
(the degree-3 circulant of the digits tasks has lambda_min = -0.499); with S~, mu lies in [0, 1]
for every doubly stochastic S, where both roots lie inside the unit circle for any b in [0, 1).

Each ``*_rounds`` function is an endless generator over communication rounds: it calls
``shift`` once per step and then yields the model after that round (a K-round Chebyshev
iteration yields the last completed iterate until its K-th round). ``grad`` counts its own
evaluations; ``surf_dist.methods.registry`` pairs each yield with that count and stops the generator.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp
import torch

Shift = Callable[[torch.Tensor], torch.Tensor]      # (N, k) -> (S Z) (N, k), one round
Grad = Callable[[torch.Tensor], torch.Tensor]       # (N, d) -> local gradients (N, d)
LAMBDA_FLOOR = 1e-6        # a complete graph has lambda = 0: P_K(S) is then averaging already


def spectral_lambda2(shift) -> float:
    """The mixing rate lambda of a shift operator S (n, n): the bound on its non-unit spectrum.

    Symmetric S: the second largest |eigenvalue| (dense ``eigvalsh``; fine for n up to a few
    thousand). Non-symmetric S: ``||S - 11^T / n||_2``, the largest singular value after the
    average is removed, i.e. the worst one-round contraction of disagreement in the 2-norm (the
    second largest singular value of S when S is doubly stochastic); eigenvalues of a non-normal S
    can understate that contraction. For a symmetric doubly stochastic S both choices agree.
    """
    matrix = sp.csr_matrix(shift, dtype=np.float64)
    n = matrix.shape[0]
    if n < 2 or matrix.shape[1] != n:
        raise ValueError(f"spectral_lambda2 needs a square matrix with n >= 2, got shape {matrix.shape}")
    dense = matrix.toarray()
    if np.allclose(dense, dense.T, rtol=0, atol=1e-12):
        return float(np.sort(np.abs(np.linalg.eigvalsh(dense)))[-2])
    return float(np.linalg.norm(dense - 1.0 / n, 2))


def chebyshev_rounds(Z_nk: torch.Tensor, shift: Shift, lambda_n1: torch.Tensor, K: int
                     ) -> Iterator[torch.Tensor]:
    """Yield Z_k = T_k(S / lambda) Z / T_k(1 / lambda) after round k = 1..K; the last is P_K(S) Z.

    Three-term recurrence with one shift per round, written with rho_k = T_{k-1}(c) / T_k(c),
    c = 1 / lambda (so nothing overflows as lambda -> 0):
        Z_1 = S Z_0,   rho_1 = lambda,   rho_{k+1} = 1 / (2 c - rho_k),
        Z_{k+1} = 2 c rho_{k+1} S Z_k - rho_k rho_{k+1} Z_{k-1}.
    lambda (N, 1) is per node and must be constant on each connected component of S (one task's
    graph); it is clamped to [1e-6, 1]. If S is doubly stochastic, P_K(S) keeps the average, and
    if lambda bounds the non-unit spectrum of a symmetric S it shrinks disagreement by
    1 / T_K(1 / lambda) at least.
    """
    if K < 1:
        raise ValueError(f"Chebyshev mixing needs at least one gossip round, got K={K}")
    lam = lambda_n1.to(Z_nk).clamp(LAMBDA_FLOOR, 1.0)        # the dtype and device of Z
    c = 1.0 / lam
    previous, current, rho = Z_nk, shift(Z_nk), lam
    yield current
    for _ in range(K - 1):
        rho_next = 1.0 / (2 * c - rho)
        previous, current = current, 2 * c * rho_next * shift(current) - rho * rho_next * previous
        rho = rho_next
        yield current


def chebyshev_mix(Z_nk: torch.Tensor, shift: Shift, lambda_n1: torch.Tensor, K: int) -> torch.Tensor:
    """P_K(S) Z (N, k) in K rounds."""
    for mixed in chebyshev_rounds(Z_nk, shift, lambda_n1, K):
        pass
    return mixed


def dgd_heavy_ball_rounds(w: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a, b = hyper["step"], hyper["momentum"]
    w_prev = w
    while True:
        w_prev, w = w, shift(w) - a * grad(w) + b * (w - w_prev)
        yield w


def dgd_nesterov_rounds(w: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a, b = hyper["step"], hyper["momentum"]
    w_prev = w
    while True:
        v = w + b * (w - w_prev)
        w_prev, w = w, 0.5 * (v + shift(v)) - a * grad(v)
        yield w


def gt_heavy_ball_rounds(x: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a, b = hyper["step"], hyper["momentum"]
    x_prev, g = x, grad(x)
    y = g
    while True:
        Sx, Sy = shift(torch.cat([x, y], 1)).chunk(2, dim=1)
        x_prev, x = x, Sx - a * y + b * (x - x_prev)
        g_new = grad(x)
        y, g = Sy + g_new - g, g_new
        yield x


def gt_nesterov_rounds(x: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a, b = hyper["step"], hyper["momentum"]
    v, g = x, grad(x)
    y = g
    while True:
        Sv, Sy = shift(torch.cat([v, y], 1)).chunk(2, dim=1)
        x_new = 0.5 * (v + Sv) - a * y
        v = x_new + b * (x_new - x)
        g_new = grad(v)
        x, y, g = x_new, Sy + g_new - g, g_new
        yield x


def chebyshev_dgd_rounds(w: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a, K = hyper["step"], hyper["gossip_rounds"]
    while True:
        u = w - a * grad(w)
        for k, mixed in enumerate(chebyshev_rounds(u, shift, hyper["lambda2"], K), 1):
            if k == K:
                w = mixed
            yield w


def chebyshev_gt_rounds(x: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a, K = hyper["step"], hyper["gossip_rounds"]
    g = grad(x)
    y = g
    while True:
        for k, mixed in enumerate(chebyshev_rounds(torch.cat([x - a * y, y], 1), shift, hyper["lambda2"], K), 1):
            if k == K:
                x, Py = mixed.chunk(2, dim=1)
                g_new = grad(x)
                y, g = Py + g_new - g, g_new
            yield x
