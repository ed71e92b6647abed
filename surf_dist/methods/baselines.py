"""Decentralized baselines on the same communicator as the unrolled network.

Legend: N: nodes, d: params per agent, b: mini-batch, alpha_i: step size of node i (a column
(N, 1), so one run can hold a whole step-size grid as replicas of the same tasks).

  DGD        w_i <- sum_j s_ij w_j - alpha grad f_i(w_i)                  1 round, d floats
  DSGD       the same with a mini-batch gradient                          1 round, d floats
  GT (DIGing) x <- S x - alpha y;  y <- S y + grad f(x_new) - grad f(x)   1 round, 2d floats
             (x and y are sent together in one message)
  DFedAvgM   E local steps of heavy-ball SGD (momentum reset each round),
             then w <- S w                                                1 round, d floats

Each ``run_*`` is a generator that yields (rounds, W) whenever the round count reaches one of
``eval_points`` (round 0 is W_0).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ..comm.base import Communicator
from ..problem.softmax import grad_per_agent
from ..problem.tasks import Shards

BASELINES = ("dgd", "dsgd", "gradient_tracking", "dfedavgm")

Batches = Callable[[int], torch.Tensor]   # iteration -> mini-batch positions (N, b)


def run_dgd(W, shards: Shards, comm: Communicator, alpha_n1, eval_points, batches: Batches | None = None
            ) -> Iterator[tuple[int, torch.Tensor]]:
    """DGD with full local gradients, or DSGD when ``batches`` gives mini-batch positions."""
    for r in range(eval_points[-1] + 1):
        if r in eval_points:
            yield r, W
        if r == eval_points[-1]:
            return
        X, Y = (shards.X_seen, shards.Y_seen) if batches is None else shards.minibatch(batches(r))
        W = comm.shift(W) - alpha_n1 * grad_per_agent(W, X, Y)


def run_gradient_tracking(W, shards: Shards, comm: Communicator, alpha_n1, eval_points
                          ) -> Iterator[tuple[int, torch.Tensor]]:
    """DIGing: track the network-average gradient so a constant step converges exactly."""
    d = W.shape[1]
    grad = grad_per_agent(W, shards.X_seen, shards.Y_seen)
    Y = grad
    for r in range(eval_points[-1] + 1):
        if r in eval_points:
            yield r, W
        if r == eval_points[-1]:
            return
        mixed = comm.shift(torch.cat([W, Y], dim=1))
        W = mixed[:, :d] - alpha_n1 * Y
        new_grad = grad_per_agent(W, shards.X_seen, shards.Y_seen)
        Y = mixed[:, d:] + new_grad - grad
        grad = new_grad


def run_dfedavgm(W, shards: Shards, comm: Communicator, alpha_n1, eval_points, batches: Batches,
                 local_steps: int, momentum: float) -> Iterator[tuple[int, torch.Tensor]]:
    """DFedAvgM: local heavy-ball SGD steps on each agent, then one gossip round."""
    for r in range(eval_points[-1] + 1):
        if r in eval_points:
            yield r, W
        if r == eval_points[-1]:
            return
        velocity = torch.zeros_like(W)
        for e in range(local_steps):
            X, Y = shards.minibatch(batches(r * local_steps + e))
            velocity = momentum * velocity + grad_per_agent(W, X, Y)
            W = W - alpha_n1 * velocity
        W = comm.shift(W)
