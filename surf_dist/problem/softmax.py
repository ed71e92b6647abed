"""The downstream problem: one softmax classifier per agent, batched over agents.

Legend: N: agents (nodes) in the block, m: samples per agent, p: features (bias column
included), C: classes, d = p * C: parameters per agent.

Each agent's flat weight vector ``w_i`` (d,) is the matrix ``(p, C)`` read row-major; the
last feature column of every input is the constant 1 (the bias). All functions are pure and
batched over the leading agent dimension, so one call evaluates every hosted agent.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# What every method is scored by, on held-out data: ``accuracy`` pooled over the task's agents (the
# headline), ``local_accuracy`` each agent on its own, ``loss`` the cross-entropy. The bench breaks
# ties between configurations in this order.
METRICS = ("accuracy", "local_accuracy", "loss")


def num_params(num_features: int, num_classes: int) -> int:
    """d = (p + 1) * C for p raw features (the bias column is added by ``add_bias``)."""
    return (num_features + 1) * num_classes


def add_bias(X_nmp: torch.Tensor) -> torch.Tensor:
    """Append the constant-1 column: (..., m, p) -> (..., m, p + 1)."""
    ones = torch.ones(*X_nmp.shape[:-1], 1, dtype=X_nmp.dtype, device=X_nmp.device)
    return torch.cat([X_nmp, ones], dim=-1)


def logits(W_nd: torch.Tensor, X_nmp: torch.Tensor) -> torch.Tensor:
    """z_i = X_i W_i:  W (N, d), X (N, m, p) with bias column -> (N, m, C)."""
    N, _, p = X_nmp.shape
    return torch.bmm(X_nmp, W_nd.reshape(N, p, -1))


def loss_per_agent(W_nd: torch.Tensor, X_nmp: torch.Tensor, Y_nm: torch.Tensor) -> torch.Tensor:
    """f_i(w_i) = mean_s CE(softmax(x_s W_i), y_s)  ->  (N,)."""
    Z = logits(W_nd, X_nmp)
    ce = F.cross_entropy(Z.reshape(-1, Z.shape[-1]), Y_nm.reshape(-1), reduction="none")
    return ce.reshape(Y_nm.shape).mean(dim=1)


def grad_per_agent(W_nd: torch.Tensor, X_nmp: torch.Tensor, Y_nm: torch.Tensor) -> torch.Tensor:
    """grad f_i(w_i) = X_i^T (softmax(X_i W_i) - onehot(y_i)) / m  ->  (N, d).

    Closed form (differentiable in W, so meta-gradients flow through it).
    """
    Z = logits(W_nd, X_nmp)
    E = torch.softmax(Z, dim=-1) - F.one_hot(Y_nm, Z.shape[-1]).to(Z.dtype)
    G = torch.bmm(X_nmp.transpose(1, 2), E) / X_nmp.shape[1]
    return G.reshape(W_nd.shape)


def correct_per_agent(W_nd: torch.Tensor, X_nmp: torch.Tensor, Y_nm: torch.Tensor) -> torch.Tensor:
    """Fraction of agent i's samples that its own model classifies right  ->  (N,)."""
    return (logits(W_nd, X_nmp).argmax(-1) == Y_nm).to(W_nd.dtype).mean(dim=1)


def pooled_loss_sum(W_nd: torch.Tensor, X_sp: torch.Tensor, Y_s: torch.Tensor) -> torch.Tensor:
    """Each agent's cross-entropy summed over one shared sample set: X (s, p), Y (s,) -> (N,)."""
    N, d = W_nd.shape
    Z = X_sp @ W_nd.reshape(N, X_sp.shape[1], d // X_sp.shape[1])           # (N, s, C)
    ce = F.cross_entropy(Z.reshape(-1, Z.shape[-1]), Y_s.repeat(N), reduction="none")
    return ce.reshape(N, -1).sum(dim=1)


def pooled_correct(W_nd: torch.Tensor, X_sp: torch.Tensor, Y_s: torch.Tensor) -> torch.Tensor:
    """How many of one shared sample set each agent's model classifies right: -> (N,)."""
    N, d = W_nd.shape
    p = X_sp.shape[1]
    Z = torch.einsum("sp,npc->nsc", X_sp, W_nd.reshape(N, p, d // p))
    return (Z.argmax(-1) == Y_s).to(W_nd.dtype).sum(dim=1)


def pooled_loss(W_nd: torch.Tensor, X_sp: torch.Tensor, Y_s: torch.Tensor) -> torch.Tensor:
    """Each agent's mean cross-entropy on one shared sample set: X (s, p), Y (s,) -> (N,)."""
    return pooled_loss_sum(W_nd, X_sp, Y_s) / X_sp.shape[0]


def pooled_accuracy(W_nd: torch.Tensor, X_sp: torch.Tensor, Y_s: torch.Tensor) -> torch.Tensor:
    """Each agent's model on one shared sample set: X (s, p), Y (s,) -> (N,)."""
    return pooled_correct(W_nd, X_sp, Y_s) / X_sp.shape[0]


def solve_centralized(X_sp: torch.Tensor, Y_s: torch.Tensor, num_classes: int,
                      l2: float = 1e-4, max_iter: int = 500, w0: torch.Tensor | None = None) -> torch.Tensor:
    """The centralized reference: argmin_w CE(pooled seen data) + l2/2 ||w||^2, by L-BFGS
    from ``w0`` (default zeros).

    A tiny ``l2`` keeps the optimum finite on separable data. Returns w (d,) in float64.
    """
    X = X_sp.double()
    w = (torch.zeros(X.shape[1] * num_classes, dtype=torch.float64) if w0 is None
         else w0.detach().double().clone()).requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = loss_per_agent(w[None], X[None], Y_s[None])[0] + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()
