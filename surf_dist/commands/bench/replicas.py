"""A whole hyperparameter grid in one run: replicas of the softmax problem side by side.

Legend: N: hosted nodes, m: seen samples per agent, h: held-out samples, s: pooled samples of
a task, p: features + bias, C: classes, R: replicas (grid points), D = p * R * C.

Replica r of node i is the classifier ``W[i].view(p, R, C)[:, r, :]``. All replicas of a node
share its data, so one ``(m, p) @ (p, R C)`` product serves the whole grid: the data is read
once, not R times, and the products are large enough to run near the CPU's peak. A shift
``S W`` acts on every column alike, so a baseline runs unchanged on the replicated rows; each
replica's message is d = p C floats (the ledger counts R d, so byte counts divide by R).
Hyperparameters become per-column tensors (1, D) that broadcast over the nodes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...comm.base import Communicator
from ...problem.tasks import Shards


class ReplicaProblem:
    """Gradients and metrics of R replicas of each hosted node's softmax classifier."""

    def __init__(self, shards: Shards, num_classes: int, replicas: int, batches=None, pool_cap: int | None = None,
                 comm: Communicator | None = None):
        self.shards, self.C, self.R, self.batches = shards, num_classes, replicas, batches
        self.p = shards.X_seen.shape[-1]
        self.pool_cap, self.comm = pool_cap, comm

    @property
    def width(self) -> int:
        return self.p * self.R * self.C

    def columns(self, values_r: torch.Tensor) -> torch.Tensor:
        """One value per replica (R,) -> a (1, D) column tensor."""
        return values_r.reshape(1, 1, self.R, 1).expand(1, self.p, self.R, self.C).reshape(1, -1)

    def stack(self, W_rnd: list[torch.Tensor]) -> torch.Tensor:
        """R per-replica iterates (N, p C) -> the replicated rows (N, D)."""
        N = W_rnd[0].shape[0]
        return torch.stack([W.reshape(N, self.p, self.C) for W in W_rnd], dim=2).reshape(N, -1)

    def replica(self, W_nD: torch.Tensor, r: int) -> torch.Tensor:
        """Replica ``r`` of every node: (N, p C)."""
        return W_nD.reshape(W_nD.shape[0], self.p, self.R, self.C)[:, :, r].reshape(W_nD.shape[0], -1)

    def _logits(self, W_nD: torch.Tensor, X_nmp: torch.Tensor) -> torch.Tensor:
        N, m, _ = X_nmp.shape
        return torch.bmm(X_nmp, W_nD.reshape(N, self.p, -1)).reshape(N, m, self.R, self.C)

    def _grad(self, W_nD, X_nmp, Y_nm):
        """grad f_i of every replica: X_i^T (softmax(X_i W_i) - onehot(y_i)) / m, (N, D)."""
        N, m, _ = X_nmp.shape
        E = torch.softmax(self._logits(W_nD, X_nmp), dim=-1)
        E.sub_(F.one_hot(Y_nm, self.C).to(E.dtype)[:, :, None, :])
        return torch.bmm(X_nmp.transpose(1, 2), E.reshape(N, m, -1)).reshape(N, -1) / m

    def full(self, W_nD: torch.Tensor) -> torch.Tensor:
        """Full local gradients on the seen samples."""
        return self._grad(W_nD, self.shards.X_seen, self.shards.Y_seen)

    def batch(self, W_nD: torch.Tensor, index: int) -> torch.Tensor:
        """Gradients on mini-batch ``index`` of the schedule (the same batch for every replica)."""
        X, Y = self.shards.minibatch(self.batches(index))
        return self._grad(W_nD, X, Y)

    def metrics(self, W_nD: torch.Tensor, pooled_replicas: list[int] | None = None) -> dict[str, torch.Tensor]:
        """Per node and replica (N, R): held-out ``loss`` and ``local_accuracy`` on the agent's
        own held-out samples, and pooled ``accuracy`` on its task's pooled held-out samples
        (only for ``pooled_replicas`` when given, the most expensive of the three; NaN elsewhere)."""
        sh = self.shards
        N = W_nD.shape[0]
        Z = self._logits(W_nD, sh.X_held)                                       # (N, h, R, C)
        Y = sh.Y_held[:, :, None].expand(-1, -1, self.R)
        loss = -torch.log_softmax(Z, -1).gather(-1, Y[..., None])[..., 0].mean(1)
        local = (Z.argmax(-1) == Y).to(W_nD.dtype).mean(1)
        pooled = torch.full_like(loss, float("nan"))
        keep = list(range(self.R)) if pooled_replicas is None else list(pooled_replicas)
        if keep:
            W_kept = W_nD.reshape(N, self.p, self.R, self.C)[:, :, keep].reshape(N, -1)   # (N, p k C)
            k, C = len(keep), self.C

            def correct(W, X, Yp):           # (n, p k C) on (s, p) samples -> (n, k) counts
                Zp = torch.matmul(X, W.reshape(W.shape[0], self.p, -1)).reshape(W.shape[0], X.shape[0], k, C)
                return (Zp.argmax(-1) == Yp[None, :, None]).to(W.dtype).sum(1)

            pooled[:, keep] = sh.on_pools(correct, W_kept, self.pool_cap)
        return {"loss": loss, "accuracy": pooled, "local_accuracy": local}


def task_means(comm: Communicator, values_nR: torch.Tensor, task_of_node: torch.Tensor, num_tasks: int) -> torch.Tensor:
    """Mean over each task's nodes, on every worker: (N, R) -> (T, R) float64 on the CPU. The
    sums are made on the values' device (the task index moves there) and cross to the host
    once, after the all-reduce."""
    values = values_nR.detach().double()
    groups = task_of_node.to(values.device)
    sums = torch.zeros(num_tasks, values.shape[1], dtype=torch.float64, device=values.device).index_add_(0, groups, values)
    counts = torch.bincount(groups, minlength=num_tasks).double()
    totals = comm.all_reduce(torch.cat([sums.reshape(-1), counts]))
    return (totals[:-num_tasks].reshape(num_tasks, -1) / totals[-num_tasks:, None]).cpu()
