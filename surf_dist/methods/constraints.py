"""Descent constraints and the primal-dual step.

Legend: L: layers, N: nodes. ``g`` is the descent function evaluated per node and per layer
on the agent's seen data: ``loss`` = f_i(w_i), ``grad_norm`` = ||grad f_i(w_i)|| (the mean of
per-agent gradient norms: a per-node quantity, so no agent needs another's gradient).

  slack_l = E[ g(W_l) - (1 - eps) g(W_{l-1}) ],   l = 1..L
  Lagrangian = E[ f(W_L) ] + sum_l lambda_l slack_l
  dual step: lambda_l <- max(0, lambda_l + dual_lr * slack_l)

Every expectation is a mean over nodes (tasks x agents), so a worker's share of it is its
local sum divided by the global node count, and shares add up across workers.
"""
from __future__ import annotations

import torch

from ..problem.softmax import grad_per_agent, loss_per_agent


def descent_values(Ws: list[torch.Tensor], X_nmp, Y_nm, descent: str) -> torch.Tensor:
    """g(W_l) per node for l = 0..L: (L + 1, N)."""
    if descent == "loss":
        return torch.stack([loss_per_agent(W, X_nmp, Y_nm) for W in Ws])
    if descent == "grad_norm":
        return torch.stack([grad_per_agent(W, X_nmp, Y_nm).norm(dim=1) for W in Ws])
    raise ValueError(f"unknown descent function {descent!r}")


def slack_terms(g_ln: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-node slack contributions g(W_l) - (1 - eps) g(W_{l-1}): (L, N)."""
    return g_ln[1:] - (1.0 - eps) * g_ln[:-1]


def lagrangian_share(outer_n: torch.Tensor, slack_ln: torch.Tensor, duals_l: torch.Tensor,
                     num_nodes: int) -> torch.Tensor:
    """This worker's share of E f(W_L) + sum_l lambda_l slack_l (sums / global node count)."""
    return (outer_n.sum() + (duals_l[:, None] * slack_ln).sum()) / num_nodes


def dual_step(duals_l: torch.Tensor, slacks_l: torch.Tensor, dual_lr: float) -> torch.Tensor:
    """Projected dual ascent: max(0, lambda + dual_lr * slack)."""
    return (duals_l + dual_lr * slacks_l).clamp(min=0.0)
