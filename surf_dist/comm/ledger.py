"""The communication ledger: what the federation sent, logically and physically.

Logical cost: in every round each sending agent sends its row (``d`` floats at the dtype in
use) to each out-neighbour ``j != i`` (``S[j, i] != 0``). The ledger keeps, for the nodes this
worker hosts, the cumulative messages and bytes per node, and one history entry per round.
Physical cost: bytes that crossed worker boundaries through collectives, and wall time spent
in communication (zero for the single-process backend).

Under a compressor (``compress.py``) a message's logical bytes are what it puts on the wire:
payload (quantised levels or kept values), scales and indices, each counted per node in
``parts`` (N_local, 3). Physical bytes stay the rows the simulator really exchanges (dense, at
the dtype in use), whatever the compressor.
"""
from __future__ import annotations

import numpy as np
import torch


class Ledger:
    """Per bound graph: rounds, cumulative messages and bytes per hosted node (and their parts),
    one history entry per round (messages, bytes summed over hosted nodes); physical bytes and
    seconds.

    A round's message counts may be a tensor on the rows' device (a GPU): it is kept there
    and read back to the host only when the counts are read, all pending rounds in one copy,
    so a neighbour exchange never waits for the host."""

    def __init__(self):
        self.rounds = 0
        self.physical_bytes = 0                  # bytes this worker sent to other workers
        self.comm_seconds = 0.0                  # wall time inside collectives
        self._messages: np.ndarray | None = None  # (N_local,) cumulative messages sent per node
        self._bytes: np.ndarray | None = None     # (N_local,) cumulative bytes sent per node
        self._parts: np.ndarray | None = None     # (N_local, 3) cumulative bytes: payload, scales, indices
        self._history: list[tuple[int, int]] = []
        self._pending: list[tuple[torch.Tensor, int, tuple[int, int, int]]] = []   # rounds not yet read back

    def reset(self, num_nodes: int) -> None:
        self.rounds = 0
        self._messages = np.zeros(num_nodes, dtype=np.int64)
        self._bytes = np.zeros(num_nodes, dtype=np.int64)
        self._parts = np.zeros((num_nodes, 3), dtype=np.int64)
        self._history = []
        self._pending = []
        self.physical_bytes = 0
        self.comm_seconds = 0.0

    def record_round(self, messages_n, bytes_per_message: int, parts: tuple[int, int, int] | None = None) -> None:
        """One round of neighbour exchange: ``messages_n[i]`` messages sent by hosted node i
        (an array, or a tensor on any device, read back later), each of ``bytes_per_message``
        bytes, split into ``parts`` (payload, scales, indices; default: all payload)."""
        assert self._messages is not None and tuple(messages_n.shape) == self._messages.shape
        parts = (bytes_per_message, 0, 0) if parts is None else tuple(parts)
        assert sum(parts) == bytes_per_message, "the parts of a message add up to its bytes"
        self.rounds += 1
        if isinstance(messages_n, torch.Tensor) or self._pending:     # after pending rounds: in order
            self._pending.append((torch.as_tensor(messages_n).detach().to(torch.int64), bytes_per_message, parts))
        else:
            self._add(np.asarray(messages_n, dtype=np.int64), bytes_per_message, parts)

    def _add(self, messages_n: np.ndarray, bytes_per_message: int, parts: tuple[int, int, int]) -> None:
        self._messages += messages_n
        self._bytes += messages_n * bytes_per_message
        self._parts += messages_n[:, None] * np.asarray(parts, dtype=np.int64)[None, :]
        self._history.append((int(messages_n.sum()), int(messages_n.sum()) * bytes_per_message))

    def _settle(self) -> None:
        """Read every pending round back to the host, in one copy, in round order."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        device = pending[0][0].device
        counts = torch.stack([m.to(device) for m, _, _ in pending]).cpu().numpy()
        for row, (_, bytes_per_message, parts) in zip(counts, pending):
            self._add(row, bytes_per_message, parts)

    @property
    def messages(self) -> np.ndarray | None:
        self._settle()
        return self._messages

    @property
    def bytes(self) -> np.ndarray | None:
        self._settle()
        return self._bytes

    @property
    def parts(self) -> np.ndarray | None:
        self._settle()
        return self._parts

    @property
    def history(self) -> list[tuple[int, int]]:
        self._settle()
        return self._history

    def local_totals(self) -> np.ndarray:
        """[messages, bytes, hosted nodes] summed here, for an all-reduce across workers."""
        return np.array([self.messages.sum(), self.bytes.sum(), len(self.messages)], dtype=np.float64)
