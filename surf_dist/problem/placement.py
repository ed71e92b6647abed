"""Placement of agents on workers: contiguous blocks of ids, or blocks along a reverse
Cuthill–McKee order when that cuts fewer edges between workers."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee

from .graphs import _check_count
from .shift_operators import _checked_adjacency


def _contiguous_blocks(n_agents: int, n_workers: int) -> np.ndarray:
    """Worker per position (n_agents,): worker w gets a contiguous run of n // W (+1 if w < n % W)."""
    base, extra = divmod(n_agents, n_workers)
    return np.repeat(np.arange(n_workers), base + (np.arange(n_workers) < extra))


def cut_edges(adjacency, placement) -> int:
    """Number of undirected edges {i, j} with ``placement[i] != placement[j]``; placement (n,)."""
    pattern = _checked_adjacency(adjacency)
    placement = np.asarray(placement)
    if placement.shape != (pattern.shape[0],):
        raise ValueError(f"placement must have shape ({pattern.shape[0]},), got {placement.shape}")
    upper = sp.triu(pattern, k=1).tocoo()
    return int(np.count_nonzero(placement[upper.row] != placement[upper.col]))


def place_agents(n_agents: int, n_workers: int, adjacency=None) -> np.ndarray:
    """Worker id per agent, (n_agents,) int; block sizes differ by at most 1.

    Fallback: worker w gets a contiguous range of agent ids. With ``adjacency``, agents are also
    ordered by reverse Cuthill–McKee and cut into the same block sizes; that placement is kept if
    it cuts strictly fewer edges (deterministic, never worse than contiguous).
    """
    n_agents = _check_count(n_agents, "n_agents", 1)
    n_workers = _check_count(n_workers, "n_workers", 1)
    if n_workers > n_agents:
        raise ValueError(f"cannot place {n_agents} agents on {n_workers} workers: every worker "
                         "needs at least one agent (use n_workers <= n_agents)")
    blocks = _contiguous_blocks(n_agents, n_workers)
    if adjacency is None:
        return blocks
    pattern = _checked_adjacency(adjacency)
    if pattern.shape[0] != n_agents:
        raise ValueError(f"adjacency has {pattern.shape[0]} nodes but n_agents={n_agents}")
    reordered = np.empty_like(blocks)
    reordered[reverse_cuthill_mckee(pattern.astype(np.int8), symmetric_mode=True)] = blocks
    return reordered if cut_edges(pattern, reordered) < cut_edges(pattern, blocks) else blocks
