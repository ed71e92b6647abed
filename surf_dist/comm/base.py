"""The one narrow interface between the maths and the transport.

The model and the baselines call ``bind`` once per graph, then ``shift`` (one hop of S over
the hosted rows) and ``all_reduce`` (sums across workers). They never see a process group.

Compression (``compress.py``) happens here, in the one place every backend sends rows: a
shift sends Q(z_j) for every row, so a neighbour on the same worker sees what a remote one
does, and ``(S Z)_i = s_ii z_i + sum_{j != i} s_ij Q(z_j)`` (an agent's own row never travels).
Error-feedback methods (CHOCO) use ``shift_sent``, which also returns the rows as sent.

A graph may change from round to round (``bind(..., rounds=)``: time-varying graphs, link
failures): round r mixes with ``rounds(r)`` (N, N), whose pattern lies inside the bound
``shift``'s; each round's messages, self weights and exchange follow that round's graph, so a
failed link sends nothing and the ledger counts nothing for it.

Silent senders (``shift(..., senders, hold=k)``: the stale asynchronous agents): a sender not in
``senders`` sends nothing, and its neighbours use the last row they received from it on stream
k (the first hop, the second, ...). Here each worker keeps the rows its hosted senders last
sent on each stream (what a neighbour on the same worker last received: under a compressor,
the compressed row, not a fresh draw); the torch backend keeps the remote ones on the
receiving side (``torch_dist``), which needs the silent set of every round on every worker
(``bind(silent=)``). On a static graph only: a failed link or another round's graph would
leave a receiver's last row older than the sender's last message.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod

import numpy as np
import scipy.sparse as sp
import torch

from .compress import Compressor
from .ledger import Ledger


class Communicator(ABC):
    rank: int = 0
    world_size: int = 1

    def __init__(self):
        self.ledger = Ledger()
        self._out_degree: np.ndarray | None = None
        self._out_degree_on: dict = {}      # device -> the out-degrees as a tensor there
        self.compressor = Compressor()
        self._keys: np.ndarray | None = None
        self._self_weight: np.ndarray | None = None
        self._layout = (1, 1)
        self._diagonal: dict = {}
        self._silent = None                 # r -> (N,) bool: the silent senders of round r (``bind``)
        self._held: dict = {}               # stream -> (N_local, d) the rows as last sent on it

    def bind(self, shift: sp.csr_matrix, nodes: np.ndarray, node_lists: list[np.ndarray] | None = None,
             keys: np.ndarray | None = None, compressor: Compressor | None = None, rounds=None,
             silent=None) -> None:
        """Use graph ``shift`` (N, N, global) for the next shifts; this worker hosts ``nodes``.
        ``node_lists``: every worker's nodes, where the caller knows them (a worker derives them
        from the placement), so that no worker has to ask the others. ``compressor``: what every
        shift of this graph sends (default: full rows); ``keys`` (N_local,) name the hosted
        senders for its random draws (default: the global node ids).

        ``rounds``: a callable r -> the shift (N, N, global) of round r (counted from 0 at this bind),
        each within the pattern of ``shift``; None: ``shift`` in every round.

        ``silent``: a callable r -> (N,) bool, the senders silent in round r of the shifts that
        hold (module doc), global; what each worker's ``senders`` say for its own nodes.

        Resets the ledger: its counts are per bound graph (one evaluation or training batch).
        Each row is one message until ``replicas`` says otherwise.
        """
        self.ledger.reset(len(nodes))
        self.compressor = compressor or Compressor()
        self._keys = np.asarray(nodes if keys is None else keys, dtype=np.uint64)
        self._layout = (1, 1)
        self._nodes, self._rounds, self._round_bound = np.asarray(nodes), rounds, None
        self._silent, self._held = silent, {}
        self._use_graph(shift)
        self._bind(shift, np.asarray(nodes), node_lists)

    def _use_graph(self, shift: sp.csr_matrix) -> None:
        """Out-degrees and self weights of the hosted nodes in graph ``shift`` (N, N)."""
        adjacency = shift.tocsc(copy=True)
        adjacency.setdiag(0)
        adjacency.eliminate_zeros()
        # out-degree of node i = number of j != i with S[j, i] != 0 (column counts)
        self._out_degree = np.diff(adjacency.indptr)[self._nodes]
        self._out_degree_on, self._diagonal = {}, {}
        self._self_weight = np.asarray(shift.diagonal())[self._nodes]

    def _enter_round(self) -> None:
        """Before a round's messages: switch to that round's graph (time-varying graphs)."""
        r = self.ledger.rounds
        if self._rounds is None or self._round_bound == r:
            return
        shift_r = self._rounds(r)
        self._use_graph(shift_r)
        self._bind_round(r, shift_r)
        self._round_bound = r

    def _bind_round(self, r: int, shift_r: sp.csr_matrix) -> None:
        """Mix with ``shift_r`` (N, N) in round r (a backend's own part of ``_enter_round``)."""
        raise NotImplementedError(f"{type(self).__name__} does not support time-varying graphs")

    def replicas(self, count: int, inner: int) -> None:
        """Each row holds ``count`` messages side by side, interleaved in blocks of ``inner``
        columns (a row viewed as (..., count, inner): ``bench.replicas``' grid); a compressor
        then acts on each message alone, and the ledger counts ``count`` messages' bytes."""
        self._layout = (count, inner)

    def _messages(self, Z_nd: torch.Tensor) -> torch.Tensor:
        """(N, D) -> (N, R, m): every row's messages (``replicas``)."""
        R, inner = self._layout
        N, D = Z_nd.shape
        if R == 1:
            return Z_nd.reshape(N, 1, D)
        return Z_nd.reshape(N, D // (R * inner), R, inner).transpose(1, 2).reshape(N, R, -1)

    def _rows(self, Q_nrm: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The inverse of ``_messages``."""
        R, inner = self._layout
        N, D = like.shape
        if R == 1:
            return Q_nrm.reshape(N, D)
        return Q_nrm.reshape(N, R, D // (R * inner), inner).transpose(1, 2).reshape(N, D)

    def _record(self, Z_nd: torch.Tensor, senders: torch.Tensor | None) -> None:
        """Count this round's messages; the senders' count stays on its device (no wait for the
        host at any hop: the ledger reads it later)."""
        if senders is None:
            sending = self._out_degree
        else:
            if senders.device not in self._out_degree_on:
                self._out_degree_on[senders.device] = torch.as_tensor(self._out_degree, device=senders.device)
            sending = self._out_degree_on[senders.device] * senders
        R = self._layout[0]
        if Z_nd.shape[1] % (R * self._layout[1]):
            raise ValueError(f"rows of {Z_nd.shape[1]} columns do not hold {R} messages in blocks of {self._layout[1]}")
        cost = self.compressor.cost(Z_nd.shape[1] // R, Z_nd.element_size())
        self.ledger.record_round(sending, R * cost.total, (R * cost.payload, R * cost.scales, R * cost.indices))

    def _sent(self, Z_nd: torch.Tensor) -> torch.Tensor:
        """The rows as sent this round (straight-through gradient); the round just recorded."""
        Q = self.compressor.apply(self._messages(Z_nd), self._keys, self.ledger.rounds - 1)
        return self._rows(Q, Z_nd)

    def shift(self, Z_nd: torch.Tensor, senders: torch.Tensor | None = None, hold=None) -> torch.Tensor:
        """(S Z) for the hosted rows; differentiable. ``senders`` (N_local,) bool marks the
        nodes that send this round (the caller has already replaced the others' rows: zeros,
        or their last message). ``hold``: a stream key (the hop); the senders not marked are
        silent and their neighbours use the last row received from them on that stream
        (module doc; their rows in Z stand for it in their own term).

        Under a compressor every row sent is Q(z_j) and each agent keeps its own row exact:
        s_ii z_i + sum_{j != i} s_ij Q(z_j). The gradient is straight-through: that of S Z."""
        self._enter_round()
        if hold is not None and self._rounds is not None:
            raise ValueError("a silent sender's last row needs a static graph: under link failures or a changing "
                             "graph a receiver's last row from it may be older than its last message")
        assert hold is None or senders is None or self.world_size == 1 or self._silent is not None, \
            "bind(silent=) names the silent senders of every round to every worker"
        self._record(Z_nd, senders)
        Q = Z_nd if self.compressor.identity else self._sent(Z_nd)
        if hold is not None:
            Q = self._held_rows(Q, senders, hold)
        if self.compressor.identity:
            return self._shift(Q, hold)
        return self._shift(Q, hold) + self._own_weight(Z_nd) * (Z_nd - Q)

    def _held_rows(self, Q_nd: torch.Tensor, senders: torch.Tensor | None, hold) -> torch.Tensor:
        """The rows (N_local, d) as sent on stream ``hold``: those of ``senders`` this round,
        the others' last (their row this round, before the stream's first round)."""
        last = self._held.get(hold)
        if last is not None and senders is not None:
            Q_nd = torch.where(senders[:, None], Q_nd, last)
        self._held[hold] = Q_nd
        return Q_nd

    def shift_sent(self, Z_nd: torch.Tensor, senders: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(S Q, Q): Q the rows as sent this round (Q(Z) under a compressor, else Z), and S
        applied to the sent rows, an agent's own included (what error feedback keeps). One round."""
        self._enter_round()
        self._record(Z_nd, senders)
        Q = Z_nd if self.compressor.identity else self._sent(Z_nd)
        return self._shift(Q), Q

    def _own_weight(self, Z_nd: torch.Tensor) -> torch.Tensor:
        """s_ii of the hosted nodes, (N_local, 1) at Z's dtype and device."""
        key = (Z_nd.dtype, Z_nd.device)
        if key not in self._diagonal:
            self._diagonal[key] = torch.as_tensor(self._self_weight, dtype=Z_nd.dtype, device=Z_nd.device)[:, None]
        return self._diagonal[key]

    def wire_per_agent(self) -> dict:
        """Cumulative logical bytes per agent of the bound graph, by part: payload (values or
        quantised levels), scales and indices (``compress``); they add up to ``bytes_per_agent``."""
        totals = self.all_reduce(torch.as_tensor(np.append(self.ledger.parts.sum(0), len(self.ledger.messages)),
                                                 dtype=torch.float64)).tolist()
        return {f"{part}_bytes_per_agent": value / totals[-1]
                for part, value in zip(("payload", "scales", "indices"), totals[:-1])}

    @abstractmethod
    def _bind(self, shift: sp.csr_matrix, nodes: np.ndarray, node_lists: list[np.ndarray] | None) -> None: ...

    @abstractmethod
    def _shift(self, Z_nd: torch.Tensor, hold=None) -> torch.Tensor:
        """(S Z) for the hosted rows; ``hold``: the stream whose silent senders' remote rows
        the backend takes from what it last received (rows hosted here come held already)."""

    @abstractmethod
    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of ``x`` over workers (a new tensor; not differentiable)."""

    def sum_across(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of ``x`` over workers, differentiable: the gradient each worker gets is the sum of
        every worker's gradient of the result (another sum across; every worker must run the
        same backward)."""
        return x if self.world_size == 1 else _SumAcross.apply(x, self)

    def broadcast(self, x: torch.Tensor, src: int = 0) -> torch.Tensor:
        """Rank ``src``'s ``x`` on every worker (the coordinator's decisions: duals, dropouts)."""
        return x

    def check_replicated(self, tensors, what: str) -> None:
        """Every worker holds the same ``tensors`` (replicated parameters), checked before they
        are used: a hash of their bytes, all-gathered (one all-reduce of a slot per rank).
        ValueError naming the ranks that differ (a stale copy of a file on some node)."""
        if self.world_size == 1:
            return
        digest = hashlib.sha256()
        for t in tensors:
            digest.update(t.detach().cpu().contiguous().numpy().tobytes())
        slots = torch.zeros(self.world_size, dtype=torch.int64)
        slots[self.rank] = int.from_bytes(digest.digest()[:7], "little")
        hashes = self.all_reduce(slots).tolist()
        differ = [r for r, h in enumerate(hashes) if h != hashes[0]]
        if differ:
            raise ValueError(f"rank(s) {differ} hold other {what} than rank 0 (a stale or different copy of a file "
                             "on their node?): give every node the same files, or let the driver send them (--backend "
                             "ray; torchrun: rank 0 sends them)")

    def all_reduce_grads(self, params) -> None:
        """Sum the gradients of replicated parameters over workers, in place."""
        grads = [p.grad for p in params if p.grad is not None]
        if self.world_size == 1 or not grads:
            return
        flat = self.all_reduce(torch.cat([g.reshape(-1) for g in grads]))
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def group_mean(self, values_n: torch.Tensor, group_n: torch.Tensor, num_groups: int) -> torch.Tensor:
        """Mean of per-node values within each group (e.g. task), over all workers: (G,) on the
        CPU. The sums are made on the values' device (the group index moves there: under nccl
        both live on the GPU), so nothing crosses to the host before the all-reduce."""
        device = values_n.device
        group = group_n.to(device)
        sums = torch.zeros(2, num_groups, dtype=torch.float64, device=device)
        sums[0].index_add_(0, group, values_n.detach().double())
        sums[1].index_add_(0, group, torch.ones_like(group, dtype=torch.float64))
        sums = self.all_reduce(sums)
        return (sums[0] / sums[1]).cpu()

    def ledger_per_agent(self) -> dict:
        """Cumulative logical cost of the bound graph: rounds, messages and bytes per agent."""
        messages, nbytes, nodes = self.all_reduce(torch.as_tensor(self.ledger.local_totals())).tolist()
        return {"rounds": self.ledger.rounds, "messages_per_agent": messages / nodes,
                "bytes_per_agent": nbytes / nodes}

    def bytes_curve(self) -> list[float]:
        """Cumulative logical bytes per agent after each round of the bound graph."""
        nodes = self.all_reduce(torch.tensor([float(len(self.ledger.messages))]))
        per_round = self.all_reduce(torch.tensor([b for _, b in self.ledger.history], dtype=torch.float64))
        return (per_round.cumsum(0) / nodes).tolist()


class _SumAcross(torch.autograd.Function):
    """y = sum over workers of x; the adjoint of a sum across is a sum across."""

    @staticmethod
    def forward(ctx, x, comm):
        ctx.comm = comm
        return comm.all_reduce(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        return ctx.comm.all_reduce(grad_y.contiguous()), None
