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

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Ledger:
    rounds: int = 0
    messages: np.ndarray | None = None       # (N_local,) cumulative messages sent per node
    bytes: np.ndarray | None = None          # (N_local,) cumulative bytes sent per node
    history: list[tuple[int, int]] = field(default_factory=list)  # per round: (messages, bytes) summed over hosted nodes
    parts: np.ndarray | None = None          # (N_local, 3) cumulative bytes per node: payload, scales, indices
    physical_bytes: int = 0                  # bytes this worker sent to other workers
    comm_seconds: float = 0.0                # wall time inside collectives

    def reset(self, num_nodes: int) -> None:
        self.rounds = 0
        self.messages = np.zeros(num_nodes, dtype=np.int64)
        self.bytes = np.zeros(num_nodes, dtype=np.int64)
        self.history = []
        self.parts = np.zeros((num_nodes, 3), dtype=np.int64)
        self.physical_bytes = 0
        self.comm_seconds = 0.0

    def record_round(self, messages_n: np.ndarray, bytes_per_message: int,
                     parts: tuple[int, int, int] | None = None) -> None:
        """One round of neighbour exchange: ``messages_n[i]`` messages sent by hosted node i,
        each of ``bytes_per_message`` bytes, split into ``parts`` (payload, scales, indices;
        default: all payload)."""
        assert self.messages is not None and messages_n.shape == self.messages.shape
        parts = (bytes_per_message, 0, 0) if parts is None else parts
        assert sum(parts) == bytes_per_message, "the parts of a message add up to its bytes"
        self.rounds += 1
        self.messages += messages_n
        self.bytes += messages_n * bytes_per_message
        self.parts += messages_n[:, None] * np.asarray(parts, dtype=np.int64)[None, :]
        self.history.append((int(messages_n.sum()), int(messages_n.sum()) * bytes_per_message))

    def local_totals(self) -> np.ndarray:
        """[messages, bytes, hosted nodes] summed here, for an all-reduce across workers."""
        return np.array([self.messages.sum(), self.bytes.sum(), len(self.messages)], dtype=np.float64)
