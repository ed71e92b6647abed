"""The graph of every round: time-varying graph families and link failures.

Legend: n: agents of a task, T: tasks of a bound batch, N = T n nodes, r: round (one call of
``Communicator.shift``), p: link-failure probability.

A task's graph is either static (``Task.shift`` in every round) or a sequence
``Task.rounds = (S_0, ..., S_{P-1})`` used cyclically: round r mixes with ``S_{r mod P}``.
With link failures each undirected edge {i, j} of that round's graph fails independently
with probability p (``draw(task_seed, r, num_edges, p)``: the survivors, drawn by the
coordinator's link stream), and the round mixes with Metropolis weights on the surviving
graph: ``s_ij = 1 / (1 + max(deg_i, deg_j))`` on surviving edges, ``s_ii = 1 - sum_j s_ij``
(an agent whose every link failed keeps its own row). A failed link sends nothing.

Dropped agents (``dropped(r)``: (N,) bool, the asynchronous agents of round r, whose message is
zeros) send nothing either: their columns of S_r lose every off-diagonal weight (the receivers'
own weights stay as they are: the paper's zeros), so no row of theirs is exchanged or counted.

Time-varying families (one graph per round, each doubly stochastic, their union connected):
  one_peer_exponential  round k pairs i with i XOR 2^(k mod tau), tau = ceil(log2 n) (an agent
                        whose partner id is >= n idles); exact averaging in tau rounds when n
                        is a power of two (the undirected one-peer exponential graph)
  random_matching       a uniformly random maximal matching per round (randomized gossip)
  random_regular        a random ``degree``-regular graph per round (pairing model)
The random ones draw ``period`` graphs per task and cycle them.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from .graphs import _from_edges
from .shift_operators import shift_operator

LinkDraw = Callable[[int, int, int, float], np.ndarray]   # (task seed, round, edges, p) -> (edges,) bool survives


def one_peer_exponential(n: int) -> list[sp.csr_matrix]:
    """The tau = ceil(log2 n) adjacencies (n, n) of the one-peer exponential sequence."""
    tau = max(1, int(np.ceil(np.log2(n))))
    ids = np.arange(n)
    graphs = []
    for k in range(tau):
        partner = ids ^ (1 << k)
        keep = (partner < n) & (ids < partner)
        graphs.append(_from_edges(n, ids[keep], partner[keep]))
    return graphs


def random_matching(n: int, rng: np.random.Generator) -> sp.csr_matrix:
    """A random maximal matching of n agents: a random permutation paired off two by two."""
    order = rng.permutation(n)
    pairs = order[: n - n % 2].reshape(-1, 2)
    return _from_edges(n, pairs[:, 0], pairs[:, 1])


def random_regular(n: int, degree: int, rng: np.random.Generator, max_tries: int = 1000) -> sp.csr_matrix:
    """A random ``degree``-regular simple graph on n agents (pairing model, redrawn until simple)."""
    if degree >= n or (n * degree) % 2:
        raise ValueError(f"random_regular needs degree < n and n * degree even, got n={n}, degree={degree}")
    for _ in range(max_tries):
        stubs = rng.permutation(np.repeat(np.arange(n), degree)).reshape(-1, 2)
        heads, tails = stubs.min(1), stubs.max(1)
        if (heads != tails).all() and len(np.unique(heads * n + tails)) == len(heads):
            return _from_edges(n, heads, tails)
    raise ValueError(f"no simple {degree}-regular graph on {n} agents in {max_tries} draws; use a smaller degree")


def union_adjacency(shifts) -> sp.csr_matrix:
    """The boolean adjacency (n, n) of the union of the graphs of ``shifts`` (self-loops dropped)."""
    total = sum(abs(sp.csr_matrix(s)) for s in shifts)
    total = sp.csr_matrix(total - sp.diags(total.diagonal()))
    total.eliminate_zeros()
    return total != 0


def surviving_shift(shift: sp.csr_matrix, survives: np.ndarray) -> sp.csr_matrix:
    """Metropolis weights (n, n) on the graph of ``shift`` keeping only the undirected edges
    {i < j} (in CSR order of the upper triangle) where ``survives`` (E,) is True."""
    upper = sp.triu(sp.csr_matrix(shift), 1).tocoo()
    keep = np.asarray(survives, dtype=bool)
    assert keep.shape == upper.row.shape, "one draw per undirected edge"
    n = shift.shape[0]
    return shift_operator(_from_edges(n, upper.row[keep], upper.col[keep]), "metropolis")


def num_edges(shift: sp.csr_matrix) -> int:
    """Undirected edges {i < j} of a shift's graph."""
    return int(sp.triu(sp.csr_matrix(shift), 1).nnz)


class RoundShifts:
    """S_r (N, N) of a batch of tasks for every round r: the block diagonal of each task's
    round-r graph (module doc). ``period``: S_r repeats with it (None under link failures)."""

    def __init__(self, tasks, link_failure: float, draw: LinkDraw, dropped: Callable[[int], np.ndarray] | None = None):
        self.tasks, self.p, self.draw, self.dropped = list(tasks), float(link_failure), draw, dropped
        lengths = [len(t.rounds) or 1 for t in self.tasks]
        self.period = None if self.p > 0 or dropped is not None else int(np.lcm.reduce(lengths))
        self._cache: dict[int, sp.csr_matrix] = {}

    def graph_of(self, task, r: int) -> sp.csr_matrix:
        """One task's shift (n, n) in round r."""
        base = task.rounds[r % len(task.rounds)] if task.rounds else task.shift
        if self.p == 0:
            return base
        return surviving_shift(base, self.draw(task.seed, r, num_edges(base), self.p))

    def __call__(self, r: int) -> sp.csr_matrix:
        key = r if self.period is None else r % self.period
        if key not in self._cache:
            shift = sp.block_diag([self.graph_of(t, r) for t in self.tasks], format="csr")
            self._cache[key] = shift if self.dropped is None else silence(shift, self.dropped(r))
        return self._cache[key]


def silence(shift: sp.csr_matrix, dropped_n: np.ndarray) -> sp.csr_matrix:
    """``shift`` (N, N) without the off-diagonal entries of the columns of ``dropped_n`` (N,) bool."""
    dropped_n = np.asarray(dropped_n, dtype=bool)
    if not dropped_n.any():
        return shift
    kept = shift @ sp.diags((~dropped_n).astype(np.float64)) + sp.diags(shift.diagonal() * dropped_n)
    kept = sp.csr_matrix(kept)
    kept.eliminate_zeros()
    kept.sort_indices()
    return kept


def round_shifts(tasks, link_failure: float, draw: LinkDraw,
                 dropped: Callable[[int], np.ndarray] | None = None) -> RoundShifts | None:
    """The per-round graphs of a batch, or None when every round uses the tasks' own ``shift``."""
    if link_failure == 0 and not any(t.rounds for t in tasks) and dropped is None:
        return None
    return RoundShifts(tasks, link_failure, draw, dropped)
