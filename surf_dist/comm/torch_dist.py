"""The torch.distributed communicator: each rank hosts a block of nodes; a shift is a local
sparse product plus a halo exchange of exactly the neighbour rows hosted elsewhere.

Legend: N: nodes of the bound graph (all ranks), N_loc: nodes hosted here, H: halo rows
(neighbours of hosted nodes that live on other ranks), d: columns of the shifted tensor.

The plan of a bound graph: every rank knows the global shift S and every rank's node list
(from the placement, which every worker computes alike; an ``all_gather_object`` only where the
caller gives no lists), so each rank derives both sides of every
exchange on its own, in the same order (global node id, ascending), with no further agreement:
- for every other rank q, ``recv_from[q]`` = the nodes of q that are columns of S[my nodes];
- for every other rank q, ``send_to[q]``  = my nodes that are columns of S[q's nodes];
- the local block ``S[my nodes][:, my nodes ++ halo]``, halo = concat_q recv_from[q].
Each row crosses a worker boundary once per round, however many of q's nodes need it. Two
ranks with no edge between them exchange zero rows inside the same all-to-all; a graph with no
edge across ranks skips the collective on every rank (each of them knows it from the plan).

A time-varying graph (or link failures) re-plans every round from that round's global shift
(``_bind_round``): the halo rows of the bound union graph that the round's live links need.

Silent senders (``shift(..., hold=k)``, the stale asynchronous agents): a round exchanges only
the rows of the senders that send (a plan of the bound graph without the silent columns; the
silent set is global, ``bind(silent=)``, so every rank derives the same sizes). Each rank keeps,
per stream k, the last halo rows it received (H, d, aligned with the bound plan's halo): a
silent sender's row is taken from there, the received rows are scattered in. Autograd flows
through the cache: the backward exchange of the round that delivered a row sends back its
gradient summed over every round that used it. The stream's first round starts the
cache with the rows of the senders silent then, which are their first messages unsent (W_0 in
the learned optimizer): a one-off exchange standing for what each receiver computes from the
task's seed, detached and counted neither in the ledger's messages nor in ``physical_bytes``.

Ledger (physical): ``physical_bytes`` counts the bytes of the halo rows this rank sends, in the
forward exchange and in the backward (gradient) exchange alike (all but the one-off first rows of
silent senders, above). Coordination collectives
(all-reduces of meta-gradients and metrics, broadcasts, the plan's node-list gather) are left
out: their wire bytes depend on gloo's / nccl's algorithm. ``comm_seconds`` is the wall time in
every collective, halo exchanges and coordination alike.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from .base import Communicator
from .local import to_torch_sparse


def gloo_reason(err: Exception) -> str:
    """The first sentence of a backend error, without its source location."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(err).strip().splitlines()[0] if str(err).strip() else "")
    return text.split(". ")[0][:200] or type(err).__name__


class PeerLostError(RuntimeError):
    """A collective failed or timed out: some other rank is gone or stuck."""


@dataclass
class HaloPlan:
    """Both sides of this rank's halo exchange for one bound graph (module doc)."""
    send_index: torch.Tensor       # (sum send_sizes,) local rows to send, grouped by rank
    send_sizes: list[int]          # (world_size,) rows sent to each rank (0 to myself)
    recv_sizes: list[int]          # (world_size,) rows received from each rank (0 from myself)
    block: sp.csr_matrix           # (N_loc, N_loc + H) S[nodes][:, nodes ++ halo]
    any_cut: bool                  # some edge of S crosses ranks (the same on every rank)
    halo: np.ndarray               # (H,) global ids of the halo rows, in the order received


def build_plan(shift: sp.csr_matrix, node_lists: list[np.ndarray], rank: int,
               senders_n: np.ndarray | None = None) -> HaloPlan:
    """The exchange plan of ``rank`` from the global shift (N, N) and every rank's nodes;
    ``senders_n`` (N,) bool: only the rows of these nodes cross (default: every node's)."""
    N = shift.shape[0]
    owner = np.full(N, -1, dtype=np.int64)
    position = np.zeros(N, dtype=np.int64)
    for q, nodes in enumerate(node_lists):
        if (owner[nodes] != -1).any():
            raise ValueError(f"rank {q} hosts nodes that another rank hosts too")
        owner[nodes] = q
        position[nodes] = np.arange(len(nodes))
    if (owner == -1).any():
        raise ValueError(f"{int((owner == -1).sum())} node(s) of the graph are hosted by no rank")
    pattern = sp.csr_matrix(shift, copy=True)
    pattern.eliminate_zeros()
    rows, cols = pattern.nonzero()
    crossing = owner[rows] != owner[cols]
    if senders_n is not None:
        crossing &= np.asarray(senders_n, dtype=bool)[cols]
    rows, cols = rows[crossing], cols[crossing]
    world = len(node_lists)
    recv_from = [np.unique(cols[(owner[rows] == rank) & (owner[cols] == q)]) for q in range(world)]
    send_to = [np.unique(cols[(owner[rows] == q) & (owner[cols] == rank)]) for q in range(world)]
    halo = np.concatenate(recv_from).astype(np.int64)
    nodes = node_lists[rank]
    return HaloPlan(
        send_index=torch.as_tensor(position[np.concatenate(send_to).astype(np.int64)]),
        send_sizes=[len(s) for s in send_to],
        recv_sizes=[len(r) for r in recv_from],
        block=sp.csr_matrix(shift[nodes][:, np.concatenate([nodes, halo])]),
        any_cut=bool(crossing.any()), halo=halo)


class HaloExchange(torch.autograd.Function):
    """The halo rows of ``Z_nd`` (N_loc, d) -> (H, d), through a real all-to-all.

    Forward: each rank sends the rows ``plan.send_index`` of its Z to the ranks that need them
    (``send_sizes`` rows to each) and receives its halo rows from their owners (``recv_sizes``).
    Backward: the gradient of every received halo row goes back to the row's owner along the
    reversed edge (send and receive sizes swapped); each owner index_adds the gradients it
    receives into the rows it sent, which sums the contributions of every rank that used them.
    Every rank must run the same sequence of forwards and backwards (they are collectives).
    """

    @staticmethod
    def forward(ctx, Z_nd, comm, plan, send_index):
        ctx.comm, ctx.plan, ctx.num_rows, ctx.round = comm, plan, Z_nd.shape[0], comm.round
        ctx.send_index = send_index       # on Z's device
        send = Z_nd[send_index].contiguous()
        return comm.exchange(send, plan.recv_sizes, plan.send_sizes, "halo exchange")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_halo_hd):
        plan = ctx.plan
        received = ctx.comm.exchange(grad_halo_hd.contiguous(), plan.send_sizes, plan.recv_sizes,
                                     "gradient exchange", ctx.round)
        grad_nd = grad_halo_hd.new_zeros(ctx.num_rows, grad_halo_hd.shape[1])
        grad_nd.index_add_(0, ctx.send_index, received)
        return grad_nd, None, None, None


class TorchCommunicator(Communicator):
    """A rank of an initialised default process group (gloo on CPU, nccl on CUDA tensors).

    Builds its own group of all ranks with ``timeout_s``, so every collective of this
    communicator fails within that time with a ``PeerLostError`` naming this rank, what it was
    doing and the round (the number of halo exchanges since the last ``bind``).
    """

    def __init__(self, timeout_s: float = 60.0, stage_through_host: bool = False):
        super().__init__()
        if not dist.is_initialized():
            raise RuntimeError("TorchCommunicator needs an initialised default process group "
                               "(torch.distributed.init_process_group) first")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = timeout_s
        self.group = dist.new_group(timeout=timedelta(seconds=timeout_s))
        self.rank, self.world_size = dist.get_rank(self.group), dist.get_world_size(self.group)
        nccl = dist.get_backend(self.group) == dist.Backend.NCCL
        self.device = torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")
        self._nccl = nccl
        self.round = 0
        self._plan: HaloPlan | None = None
        self._blocks: dict = {}
        self._send_index: dict = {}
        self._staging: dict = {}       # host buffers of the shared-GPU path, per plan (module doc)
        self._held_halo: dict = {}     # stream -> (H, d) the last halo rows received (module doc)
        self._sender_plans: dict = {}  # senders' mask -> (its plan, where its halo sits in the bound one)
        self.stage_through_host = stage_through_host

    def _bind(self, shift, nodes, node_lists=None):
        if node_lists is None:
            node_lists = [None] * self.world_size
            self._collective("node-list gather of the plan", dist.all_gather_object,
                             node_lists, np.asarray(nodes, dtype=np.int64), group=self.group)
        elif len(node_lists) != self.world_size or not np.array_equal(node_lists[self.rank], nodes):
            raise ValueError(f"rank {self.rank}: node_lists disagree with the nodes this rank hosts")
        self._node_lists, self._bound_shift = node_lists, shift
        self._plan = build_plan(shift, node_lists, self.rank)
        self._blocks, self._send_index, self._staging = {}, {}, {}
        self._held_halo, self._sender_plans = {}, {}
        self.round = 0

    def _bind_round(self, r, shift_r):
        """Round r's own plan: only the rows of live links cross (a failed link sends nothing);
        every rank derives it from the same global ``shift_r``, so the sizes agree."""
        self._plan = build_plan(shift_r, self._node_lists, self.rank)
        self._blocks, self._send_index = {}, {}

    def _shift(self, Z_nd, hold=None):
        plan = self._plan
        assert plan is not None, "bind a graph before shifting"
        self.round += 1
        key = (Z_nd.dtype, Z_nd.device)
        if key not in self._blocks:     # the block and the send index live where the rows do
            self._blocks[key] = to_torch_sparse(plan.block, Z_nd.dtype).to(Z_nd.device)
            self._send_index[Z_nd.device] = plan.send_index.to(Z_nd.device)
        if not plan.any_cut:    # nothing crosses ranks, on any rank: no collective at all
            return torch.sparse.mm(self._blocks[key], Z_nd)
        if hold is None:
            halo_hd = HaloExchange.apply(Z_nd, self, plan, self._send_index[Z_nd.device])
        else:
            halo_hd = self._held_halo_rows(Z_nd, hold)
        return torch.sparse.mm(self._blocks[key], torch.cat([Z_nd, halo_hd]))

    def _held_halo_rows(self, Z_nd: torch.Tensor, hold) -> torch.Tensor:
        """The halo rows (H, d) of stream ``hold`` this round: the senders that send this round
        cross ranks, the silent ones' rows are the last this rank received from them (module
        doc); the stream's first round starts the cache with the silent senders' rows."""
        silent_n = (np.zeros(self._bound_shift.shape[0], dtype=bool) if self._silent is None
                    else np.asarray(self._silent(self.ledger.rounds - 1), dtype=bool))
        held = self._held_halo.get(hold)
        if held is None:
            held = Z_nd.new_zeros(len(self._plan.halo), Z_nd.shape[1])
            first, at = self._plan_of(silent_n)
            if first.any_cut:    # their first messages, unsent: what a receiver computes from the task's seed
                rows = self.exchange(Z_nd.detach()[first.send_index.to(Z_nd.device)].contiguous(),
                                     first.recv_sizes, first.send_sizes, "first rows of silent senders", counted=False)
                held = held.index_copy(0, at.to(Z_nd.device), rows)
        live, at = self._plan_of(~silent_n)
        if live.any_cut:
            received = HaloExchange.apply(Z_nd, self, live, live.send_index.to(Z_nd.device))
            held = held.index_copy(0, at.to(Z_nd.device), received)
        self._held_halo[hold] = held
        return held

    def _plan_of(self, senders_n: np.ndarray) -> tuple[HaloPlan, torch.Tensor]:
        """The bound graph's plan with only ``senders_n`` (N,) bool sending, and where its halo
        rows sit in the bound plan's halo (its halo is a subsequence of that one)."""
        key = senders_n.tobytes()
        if key not in self._sender_plans:
            plan = build_plan(self._bound_shift, self._node_lists, self.rank, senders_n)
            at = torch.as_tensor(np.flatnonzero(np.isin(self._plan.halo, plan.halo)))
            self._sender_plans[key] = (plan, at)
        return self._sender_plans[key]

    def exchange(self, send_rd: torch.Tensor, recv_sizes: list[int], send_sizes: list[int],
                 what: str, round_: int | None = None, counted: bool = True) -> torch.Tensor:
        """All-to-all of rows: ``send_sizes[q]`` rows of ``send_rd`` to rank q (in order), and
        ``recv_sizes[q]`` rows from rank q; returns the received rows (sum recv_sizes, d) on
        ``send_rd``'s device. Rows on another device than the group's (GPU rows in a gloo
        group: ranks sharing a GPU) are staged through host buffers made once per plan
        (``staging_buffers``). ``counted``: the rows sent add to ``physical_bytes``."""
        label = f"{what} of round {self.round if round_ is None else round_}"
        staged = self.device.type == "cpu" and (send_rd.device.type != "cpu" or self.stage_through_host)
        if not staged:         # rows where the group works (nccl: the GPU; gloo: the CPU)
            out = torch.empty(sum(recv_sizes), send_rd.shape[1], dtype=send_rd.dtype, device=self.device)
            self._collective(label, dist.all_to_all_single, out, send_rd.to(self.device), recv_sizes, send_sizes,
                             group=self.group)
            out = out.to(send_rd.device)
        else:
            send_host, recv_host = self.staging_buffers(send_sizes, recv_sizes, send_rd.shape[1], send_rd.dtype,
                                                        pinned=send_rd.is_cuda)
            send_host.copy_(send_rd, non_blocking=True)
            if send_rd.is_cuda:        # gloo reads host memory: the copy must have landed
                torch.cuda.current_stream(send_rd.device).synchronize()
            self._collective(label, dist.all_to_all_single, recv_host, send_host, recv_sizes, send_sizes,
                             group=self.group)
            # a new tensor on the rows' device; the next exchange into recv_host starts after a
            # synchronize of the same stream, so this (asynchronous) copy has read it by then
            out = recv_host.to(send_rd.device, non_blocking=True, copy=True)
        if counted:
            self.ledger.physical_bytes += send_rd.numel() * send_rd.element_size()
        return out

    def staging_buffers(self, send_sizes: list[int], recv_sizes: list[int], columns: int, dtype: torch.dtype,
                        pinned: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Host buffers (sum send_sizes, d) and (sum recv_sizes, d) for one direction of the
        bound plan's exchange, made on first use and reused at every hop until the next
        ``bind``; page-locked where rows come from a GPU (so copies run asynchronously)."""
        key = (tuple(send_sizes), tuple(recv_sizes), columns, dtype)
        if key not in self._staging:
            pin = pinned and torch.cuda.is_available()
            self._staging[key] = tuple(torch.empty(sum(sizes), columns, dtype=dtype, pin_memory=pin)
                                       for sizes in (send_sizes, recv_sizes))
        return self._staging[key]

    def all_reduce(self, x):
        y = x.detach().to(self.device, copy=True)
        self._collective(f"all-reduce after round {self.round}", dist.all_reduce, y, group=self.group)
        return y.to(x.device)

    def broadcast(self, x, src=0):
        y = x.detach().to(self.device, copy=True)
        self._collective(f"broadcast from rank {src} after round {self.round}", dist.broadcast,
                         y, src, group=self.group)
        return y.to(x.device)

    def _collective(self, label: str, op, *args, **kwargs):
        """Run collective ``op``; a failure or a timeout is a ``PeerLostError`` naming this rank,
        ``label`` and the round. nccl collectives are asynchronous: each is waited for with the
        timeout, so it fails here with that message (not in nccl's watchdog) and
        ``comm_seconds`` holds the time to completion, not the time to launch."""
        start = time.perf_counter()
        try:
            if self._nccl and op is not dist.all_gather_object:
                op(*args, async_op=True, **kwargs).wait(timedelta(seconds=self.timeout_s))
            else:
                op(*args, **kwargs)
        except RuntimeError as err:
            elapsed = time.perf_counter() - start
            how = (f"timed out after {self.timeout_s:g} s" if elapsed >= 0.9 * self.timeout_s
                   else f"failed after {elapsed:.1f} s")
            detail = gloo_reason(err)
            raise PeerLostError(f"rank {self.rank}: {label} {how}: a peer is gone or stuck "
                                f"({detail})") from err
        finally:
            self.ledger.comm_seconds += time.perf_counter() - start
