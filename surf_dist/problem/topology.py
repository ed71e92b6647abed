"""Communication graphs of ``n`` agents and their shift operators.

An adjacency ``A`` is a symmetric boolean ``scipy.sparse.csr_matrix`` (n, n) without
self-loops. A shift operator ``S`` is an (n, n) float64 CSR matrix with ``S[i, j] != 0``
only if ``j`` is a neighbour of ``i`` or ``j == i``; one mixing round is ``x <- S @ x``.
Randomness only through an explicit ``numpy.random.Generator``; everything is sparse and
scales to ~10,000 agents.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components, reverse_cuthill_mckee
from scipy.spatial import cKDTree

from ..io.config import parse_json
from ..io.file_checks import check_input_file, read_text_file
from .spectra import (  # noqa: F401 - spectral_gap, spectral_radius and the limits are read as topology.*
    DENSE_EIG_LIMIT,
    TOLERANCE,
    _is_symmetric,
    check_consensus,
    spectral_gap,
    spectral_radius,
)
from .edge_list import EdgeList, mixing_weights, read_edge_list

FAMILIES = ("ring", "circulant", "paper_circulant", "erdos_renyi", "random_geometric",
            "grid", "torus", "star", "exponential", "small_world", "edge_list")
RANDOM_FAMILIES = ("erdos_renyi", "random_geometric", "small_world")
NORMALIZATIONS = ("metropolis", "row_stochastic", "spectral")
STOCHASTIC_NORMALIZATIONS = ("metropolis", "row_stochastic")
EDGE_WEIGHTS = "weights"    # edge_list only: the file's weights are the mixing weights
EDGE_LIST_SUFFIXES = (".txt", ".csv", ".tsv", ".edges", ".edgelist", ".el")
PRESET_DIR = Path(__file__).resolve().parents[2] / "topologies"


def _check_count(value, name: str, minimum: int) -> int:
    """``value`` as an int; ValueError unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_number(value, name: str, low: float, high: float, low_open: bool) -> float:
    """``value`` as a float in ``(low, high]`` (``low_open``) or ``[low, high]``; else ValueError."""
    is_number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not is_number or not (low < value if low_open else low <= value) or not value <= high:
        raise ValueError(f"{name} must be a number in {'(' if low_open else '['}{low}, {high}], "
                         f"got {value!r}")
    return float(value)


def _from_edges(n: int, heads, tails) -> sp.csr_matrix:
    """Symmetric boolean (n, n) adjacency with edges ``heads[k] <-> tails[k]``; self-loops dropped."""
    heads, tails = np.asarray(heads, dtype=np.int64), np.asarray(tails, dtype=np.int64)
    keep = heads != tails
    rows = np.concatenate([heads[keep], tails[keep]])
    cols = np.concatenate([tails[keep], heads[keep]])
    counts = sp.csr_matrix((np.ones(rows.size, np.int32), (rows, cols)), shape=(n, n))
    adjacency = counts.astype(bool)
    adjacency.sort_indices()
    return adjacency


def number_of_components(matrix) -> int:
    """Strongly connected components of the graph of the nonzero pattern of an (n, n) matrix."""
    return int(connected_components(sp.csr_matrix(matrix), directed=True, connection="strong")[0])


def is_connected(matrix) -> bool:
    """True if the graph of the (n, n) matrix is (strongly) connected."""
    return number_of_components(matrix) == 1


def _resample_until_connected(draw, family: str, max_tries: int, hint: str = "") -> sp.csr_matrix:
    """First connected adjacency among up to ``max_tries`` calls of ``draw()`` (bounded: a
    family that cannot connect is a ValueError, never a loop; ``hint`` says what would)."""
    for _ in range(_check_count(max_tries, "max_tries", 1)):
        adjacency = draw()
        if is_connected(adjacency):
            return adjacency
    raise ValueError(f"{family}: no connected graph in {max_tries} draws{hint}; "
                     "increase the density parameter (edge_prob, radius, ...)")


# Generators: symmetric boolean CSR adjacency, no self-loops, always connected.
def circulant(n: int, offsets) -> sp.csr_matrix:
    """Circulant graph: ``i <-> (i + o) mod n`` for every ``o`` in ``offsets`` (regular).

    Degree ``2 m`` for ``m`` offset classes ``{o, n - o}``, minus 1 if ``n/2`` is an offset.
    Connected iff ``gcd(n, *offsets) == 1``; otherwise ValueError.
    """
    n = _check_count(n, "n", 2)
    offsets = tuple(_check_count(o, "circulant offset", 1) for o in offsets)
    if not offsets or any(o % n == 0 for o in offsets):
        raise ValueError(f"circulant needs offsets that are non-zero mod n={n}, got {offsets}")
    if math.gcd(n, *offsets) != 1:
        raise ValueError(f"circulant offsets {offsets} with n={n} give a disconnected graph "
                         f"(gcd(n, offsets) = {math.gcd(n, *offsets)}, must be 1)")
    nodes = np.arange(n)
    return _from_edges(n, np.tile(nodes, len(offsets)),
                       np.concatenate([(nodes + o) % n for o in offsets]))


def ring(n: int) -> sp.csr_matrix:
    """Cycle ``i <-> i + 1 mod n``; every node has degree 2 (n >= 3)."""
    return circulant(_check_count(n, "ring n", 3), (1,))


def paper_circulant(n: int) -> sp.csr_matrix:
    """The paper's "degree-3 circulant graph", defined here as a ring plus diametral chords.

    Even n >= 4: offsets (1, n/2), i.e. ``i <-> i +- 1`` and ``i <-> i + n/2``: degree exactly 3.
    Odd n >= 5: no 3-regular graph exists, so offsets (1, 2) are used: degree 4.
    """
    n = _check_count(n, "paper_circulant n", 4)
    return circulant(n, (1, n // 2) if n % 2 == 0 else (1, 2))


def exponential(n: int) -> sp.csr_matrix:
    """Exponential graph: ``i <-> i + 2^k mod n`` for every ``2^k < n`` (symmetrised)."""
    n = _check_count(n, "exponential n", 2)
    return circulant(n, tuple(2 ** k for k in range((n - 1).bit_length())))


def star(n: int) -> sp.csr_matrix:
    """Star with hub 0: ``0 <-> i`` for i = 1..n-1 (hub degree n-1, leaves degree 1)."""
    n = _check_count(n, "star n", 2)
    return _from_edges(n, np.zeros(n - 1, np.int64), np.arange(1, n))


def grid_shape(n: int) -> tuple[int, int]:
    """Most square factorisation ``n = rows * cols``, ``rows <= cols`` (prime n: 1 x n)."""
    n = _check_count(n, "n", 1)
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def _lattice(n: int, wrap: bool) -> sp.csr_matrix:
    """4-neighbour lattice on ``grid_shape(n)``, node id ``r * cols + c``; periodic if ``wrap``."""
    rows, cols = grid_shape(n)
    nodes = np.arange(n)
    r, c = np.divmod(nodes, cols)
    right_ok = np.full(n, True) if wrap else c + 1 < cols
    down_ok = np.full(n, True) if wrap else r + 1 < rows
    right, down = r * cols + (c + 1) % cols, ((r + 1) % rows) * cols + c
    return _from_edges(n, np.concatenate([nodes[right_ok], nodes[down_ok]]),
                       np.concatenate([right[right_ok], down[down_ok]]))


def grid(n: int) -> sp.csr_matrix:
    """2-D grid of ``grid_shape(n)`` without wrap-around (a path when n is prime)."""
    return _lattice(_check_count(n, "grid n", 2), wrap=False)


def torus(n: int) -> sp.csr_matrix:
    """2-D grid of ``grid_shape(n)`` with periodic boundaries (a ring when n is prime)."""
    return _lattice(_check_count(n, "torus n", 2), wrap=True)


def _upper_pairs(n: int, p: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pairs i < j, each kept with probability p, in O(n + edges) via geometric skips.

    Pair (i, j) has linear index ``start_i + j - i - 1`` with ``start_i = i (2n - i - 1) / 2``.
    """
    total = n * (n - 1) // 2
    if p >= 1.0:
        chosen = np.arange(total, dtype=np.int64)
    else:
        chunk = int(total * p + 6 * math.sqrt(total * p) + 16)
        pieces, last = [], -1
        while last < total:
            # a skip past the end ends the draw: clipped, the sum cannot overflow int64 (numpy's
            # geometric saturates at 2^63 - 1 for a tiny p; its sum wrapped negative, a hang)
            skips = np.minimum(rng.geometric(p, size=chunk), total + 1)
            positions = last + np.cumsum(skips, dtype=np.int64)
            pieces.append(positions[positions < total])
            last = int(positions[-1])
        chosen = np.concatenate(pieces)
    rows = np.arange(n, dtype=np.int64)
    starts = rows * (2 * n - rows - 1) // 2
    heads = np.searchsorted(starts, chosen, side="right") - 1
    return heads, chosen - starts[heads] + heads + 1


def erdos_renyi(n: int, p: float, rng: np.random.Generator, max_tries: int = 100) -> sp.csr_matrix:
    """Connected G(n, p): every edge present independently with probability p (redrawn until connected)."""
    n = _check_count(n, "erdos_renyi n", 2)
    p = _check_number(p, "erdos_renyi edge probability p", 0, 1, low_open=True)
    hint = f" (edge_prob {p:g} with {n} agents: about ln(n)/n = {min(1.0, math.log(n) / n):.3g} or more connects most draws)"
    return _resample_until_connected(lambda: _from_edges(n, *_upper_pairs(n, p, rng)),
                                     "erdos_renyi", max_tries, hint)


def random_geometric(n: int, radius: float, rng: np.random.Generator,
                     max_tries: int = 100) -> sp.csr_matrix:
    """Connected random geometric graph: points uniform in [0, 1]^2, edge iff distance <= radius."""
    n = _check_count(n, "random_geometric n", 2)
    radius = _check_number(radius, "random_geometric radius", 0, math.sqrt(2), low_open=True)

    def draw() -> sp.csr_matrix:
        pairs = cKDTree(rng.random((n, 2))).query_pairs(radius, output_type="ndarray")
        return _from_edges(n, pairs[:, 0], pairs[:, 1])

    hint = f" (radius {radius:g} with {n} agents: about sqrt(ln(n)/(pi n)) = {math.sqrt(math.log(n) / (math.pi * n)):.3g} or more connects most draws)"
    return _resample_until_connected(draw, "random_geometric", max_tries, hint)


def _watts_strogatz(n: int, k: int, p: float, rng: np.random.Generator) -> sp.csr_matrix:
    """One Watts–Strogatz draw: lattice ``u <-> u + j`` (1 <= j <= k/2); each lattice edge is
    rewired with probability p to ``u <-> w``, w uniform among the non-neighbours of u."""
    neighbours = [{(u + j) % n for j in range(-(k // 2), k // 2 + 1) if j} for u in range(n)]
    rewire = rng.random((k // 2, n)) < p
    for j, u in zip(*np.nonzero(rewire)):
        u, v = int(u), int((u + j + 1) % n)
        if v not in neighbours[u] or len(neighbours[u]) >= n - 1:
            continue
        w = int(rng.integers(n))
        while w == u or w in neighbours[u]:
            w = int(rng.integers(n))
        neighbours[u].remove(v), neighbours[v].remove(u)
        neighbours[u].add(w), neighbours[w].add(u)
    heads = np.repeat(np.arange(n), [len(s) for s in neighbours])
    tails = np.fromiter((v for s in neighbours for v in s), np.int64, count=heads.size)
    return _from_edges(n, heads, tails)


def small_world(n: int, k: int, p: float, rng: np.random.Generator,
                max_tries: int = 100) -> sp.csr_matrix:
    """Connected Watts–Strogatz small world: ring lattice of even degree k, rewiring probability p."""
    n = _check_count(n, "small_world n", 3)
    k = _check_count(k, "small_world neighbours k", 2)
    if k % 2 or k >= n:
        raise ValueError(f"small_world needs an even neighbours k < n, got k={k}, n={n}")
    p = _check_number(p, "small_world rewire probability p", 0, 1, low_open=False)
    return _resample_until_connected(lambda: _watts_strogatz(n, k, p, rng), "small_world", max_tries)


# Normalisations (the spectra: ``spectra.py``).
def _checked_adjacency(adjacency) -> sp.csr_matrix:
    """Boolean CSR pattern (n, n) of a square symmetric matrix: nonzero off-diagonal = edge."""
    matrix = sp.csr_matrix(adjacency)
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"adjacency must be a square matrix, got shape {matrix.shape}")
    pattern = sp.csr_matrix(sp.triu(matrix, 1) + sp.tril(matrix, -1)) != 0
    if not _is_symmetric(pattern.astype(np.int8)):
        raise ValueError("adjacency must be symmetric (an undirected graph)")
    return pattern


def shift_operator(adjacency, normalization: str = "metropolis") -> sp.csr_matrix:
    """Shift operator S (n, n, CSR float64) of a symmetric adjacency A (n, n), deg = A 1.

    - ``"row_stochastic"``: ``S = D^-1 (A + I)`` with ``D = diag(deg + 1)``; rows sum to 1.
    - ``"metropolis"``: ``s_ij = 1 / (1 + max(deg_i, deg_j))`` on edges,
      ``s_ii = 1 - sum_{j != i} s_ij``; symmetric and doubly stochastic.
    - ``"spectral"``: ``S = A / lambda_max(A)``; spectral radius 1, no self-loops, not stochastic.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")
    pattern = _checked_adjacency(adjacency)
    n = pattern.shape[0]
    weights = pattern.astype(np.float64).tocoo()
    degree = np.asarray(weights.sum(axis=1)).ravel()
    if normalization == "row_stochastic":
        operator = sp.diags(1.0 / (degree + 1.0)) @ (weights.tocsr() + sp.identity(n, format="csr"))
    elif normalization == "metropolis":
        weights.data = 1.0 / (1.0 + np.maximum(degree[weights.row], degree[weights.col]))
        off_diagonal = weights.tocsr()
        operator = off_diagonal + sp.diags(1.0 - np.asarray(off_diagonal.sum(axis=1)).ravel())
    else:
        if weights.nnz == 0:
            raise ValueError("spectral normalization needs a graph with at least one edge")
        operator = weights.tocsr() / spectral_radius(weights)
    operator = sp.csr_matrix(operator, dtype=np.float64)
    operator.sort_indices()
    return operator


def validate_shift_operator(shift, normalization: str | None = None,
                            n: int | None = None) -> sp.csr_matrix:
    """Check a shift operator S; return it as (n, n) CSR float64, else ValueError saying why.

    Always: square (of size ``n`` if given), finite, nonnegative, connected graph.
    ``"row_stochastic"``: ``|S 1 - 1| <= 1e-8``; ``"metropolis"``: also symmetric;
    ``"spectral"``: ``rho(S) <= 1 + 1e-8``; ``None`` (user matrix): row-stochastic or rho <= 1.
    """
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; choose one of {NORMALIZATIONS}")
    if not sp.issparse(shift) and np.ndim(shift) != 2:
        raise ValueError(f"shift operator must be a square matrix, got shape {np.shape(shift)}")
    matrix = sp.csr_matrix(shift, dtype=np.float64)
    if matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"shift operator must be square, got shape {matrix.shape}")
    if n is not None and matrix.shape[0] != n:
        raise ValueError(f"shift operator has size {matrix.shape[0]} but there are n={n} agents")
    if not np.all(np.isfinite(matrix.data)):
        bad = int(np.sum(~np.isfinite(matrix.data)))
        raise ValueError(f"shift operator has {bad} non-finite entries (NaN or inf)")
    if np.any(matrix.data < 0):
        raise ValueError(f"shift operator has {int(np.sum(matrix.data < 0))} negative entries "
                         f"(min {matrix.data.min():.3g}); weights must be nonnegative")
    matrix.eliminate_zeros()
    components = number_of_components(matrix)
    if components != 1:
        raise ValueError(f"graph is disconnected: {components} connected components "
                         "(mixing cannot reach consensus)")
    row_sums = np.asarray(matrix.sum(axis=1)).ravel()
    worst = int(np.argmax(np.abs(row_sums - 1.0)))
    rows_ok = abs(row_sums[worst] - 1.0) <= TOLERANCE
    rows_note = f"rows must sum to 1, row {worst} sums to {row_sums[worst]:.6g}"
    if normalization in STOCHASTIC_NORMALIZATIONS and not rows_ok:
        raise ValueError(f"not a mixing matrix for {normalization!r}: {rows_note}")
    if normalization == "metropolis" and not _is_symmetric(matrix):
        raise ValueError("not a mixing matrix for 'metropolis': weights must be symmetric")
    if normalization in STOCHASTIC_NORMALIZATIONS or (normalization is None and rows_ok):
        check_consensus(matrix)
        return matrix
    bound = min(matrix.sum(axis=1).max(), matrix.sum(axis=0).max())
    radius = float(bound) if bound <= 1 + TOLERANCE else spectral_radius(matrix)
    if radius > 1 + TOLERANCE:
        prefix = "" if normalization else rows_note + " or "
        raise ValueError(f"not a mixing matrix: {prefix}spectral radius {radius:.6g} must be <= 1")
    return matrix


def load_edge_list(path, n: int | None = None) -> sp.csr_matrix:
    """Adjacency (n, n) of an edge list file (format: ``edge_list.py``; weights are not part of
    an adjacency); self-loops dropped, duplicates merged; ``n`` defaults to ``max id + 1``."""
    edges = read_edge_list(path)
    n = edges.num_nodes if n is None else _check_count(n, "n", 1)
    too_big = np.flatnonzero(np.maximum(edges.heads, edges.tails) >= n)
    if too_big.size:
        k = too_big[0]
        raise ValueError(f"{edges.path}, line {edges.lines[k]}: node id {max(edges.heads[k], edges.tails[k])} "
                         f">= n={n} (ids are 0..n-1)")
    return _from_edges(n, edges.heads, edges.tails)


def weighted_shift(edges: EdgeList, n: int) -> sp.csr_matrix:
    """Shift operator (n, n) of a weighted edge list: ``s_ij = s_ji = w`` per edge, ``s_ii = 1 -
    sum_j s_ij``: doubly stochastic when each agent's weights sum to <= 1 (else a ValueError)."""
    path, (heads, tails, weights) = edges.path, mixing_weights(edges)
    off = sp.csr_matrix((np.concatenate([weights, weights]),
                         (np.concatenate([heads, tails]), np.concatenate([tails, heads]))), shape=(n, n))
    sums = np.asarray(off.sum(axis=1)).ravel()
    worst = int(np.argmax(sums))
    if sums[worst] > 1 + TOLERANCE:
        raise ValueError(f"{path}: agent {worst}'s edge weights sum to {sums[worst]:.6g} > 1, so its own "
                         f"weight 1 - {sums[worst]:.6g} would be negative; scale the weights so that every "
                         "agent's sum is at most 1 (or drop the weights for Metropolis weights)")
    operator = sp.csr_matrix(off + sp.diags(np.clip(1.0 - sums, 0.0, None)), dtype=np.float64)
    operator.sort_indices()
    return operator


def edge_list_nodes(spec: "TopologySpec") -> int | None:
    """Agents of an edge-list topology (``max id + 1`` of its file), None for the other families."""
    return read_edge_list(spec.edge_list).num_nodes if spec.family == "edge_list" else None


@dataclass(frozen=True)
class TopologySpec:
    """A graph family plus normalisation; ``sample(n, rng)`` draws a validated shift operator.

    Family parameters: ``degree_offsets`` (circulant), ``edge_prob`` (erdos_renyi), ``radius``
    (random_geometric), ``neighbours`` and ``rewire_prob`` (small_world), ``edge_list`` (path
    of the edge_list file). Random families draw a new graph per call, the others do not.
    """

    family: str
    normalization: str = "metropolis"
    degree_offsets: tuple[int, ...] = ()
    edge_prob: float = 0.1
    radius: float = 0.3
    rewire_prob: float = 0.1
    neighbours: int = 4
    edge_list: str = ""
    edges: EdgeList | None = field(default=None, compare=False, repr=False)   # the file's, read elsewhere

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"unknown topology family {self.family!r}; choose one of {FAMILIES}")
        allowed = NORMALIZATIONS + ((EDGE_WEIGHTS,) if self.family == "edge_list" else ())
        if self.normalization not in allowed:
            raise ValueError(f"unknown normalization {self.normalization!r}; choose one of {allowed}"
                             + ("" if self.family == "edge_list" else " ('weights': edge lists only)"))
        if not isinstance(self.degree_offsets, (tuple, list)):
            raise ValueError(f"degree_offsets must be a tuple of ints, got {self.degree_offsets!r}")
        offsets = tuple(_check_count(o, "degree_offsets entry", 1) for o in self.degree_offsets)
        object.__setattr__(self, "degree_offsets", offsets)
        _check_number(self.edge_prob, "edge_prob", 0, 1, low_open=True)
        _check_number(self.radius, "radius", 0, math.sqrt(2), low_open=True)
        _check_number(self.rewire_prob, "rewire_prob", 0, 1, low_open=False)
        if _check_count(self.neighbours, "neighbours", 2) % 2:
            raise ValueError(f"neighbours must be even (k/2 on each side), got {self.neighbours}")
        if not isinstance(self.edge_list, str):
            raise ValueError(f"edge_list must be a path string, got {self.edge_list!r}")
        if self.family == "circulant" and not offsets:
            raise ValueError("family 'circulant' needs degree_offsets, e.g. (1, 2)")
        if self.family == "edge_list" and not self.edge_list:
            raise ValueError("family 'edge_list' needs edge_list='path/to/edges.txt'")

    @property
    def is_random(self) -> bool:
        """True if every ``sample`` call draws a fresh graph."""
        return self.family in RANDOM_FAMILIES

    def adjacency(self, n: int, rng: np.random.Generator | None = None) -> sp.csr_matrix:
        """Boolean (n, n) adjacency of one draw (``rng`` is required by random families only)."""
        if self.is_random and not isinstance(rng, np.random.Generator):
            raise ValueError(f"family {self.family!r} is random: pass rng=np.random.default_rng(seed)")
        builders = {
            "ring": lambda: ring(n), "paper_circulant": lambda: paper_circulant(n),
            "circulant": lambda: circulant(n, self.degree_offsets), "grid": lambda: grid(n),
            "torus": lambda: torus(n), "star": lambda: star(n), "exponential": lambda: exponential(n),
            "erdos_renyi": lambda: erdos_renyi(n, self.edge_prob, rng),
            "random_geometric": lambda: random_geometric(n, self.radius, rng),
            "small_world": lambda: small_world(n, self.neighbours, self.rewire_prob, rng),
            "edge_list": lambda: self._edge_list_adjacency(n),
        }
        return builders[self.family]()

    def _edge_list_adjacency(self, n: int) -> sp.csr_matrix:
        """The file's graph; its agents must be exactly ``n``, and its weights used or absent."""
        edges = self.edges or read_edge_list(self.edge_list)
        if edges.num_nodes != n:
            raise ValueError(f"edge list {self.edge_list} has {edges.num_nodes} agents (ids 0.."
                             f"{edges.num_nodes - 1}) but num_agents is {n}; set --agents {edges.num_nodes} "
                             "or leave --agents out (it is read from the file)")
        if edges.weights is not None and self.normalization != EDGE_WEIGHTS:
            raise ValueError(f"edge list {self.edge_list} has edge weights, which normalization "
                             f"{self.normalization!r} would ignore: set \"normalization\": \"weights\" to use "
                             "them as mixing weights, or drop the weight column")
        if edges.weights is None and self.normalization == EDGE_WEIGHTS:
            raise ValueError(f"normalization 'weights' needs an edge list with a weight on every line; "
                             f"{self.edge_list} has none (use 'metropolis')")
        return _from_edges(n, edges.heads, edges.tails)

    def sample(self, n: int, rng: np.random.Generator | None = None) -> sp.csr_matrix:
        """Validated (n, n) CSR float64 shift operator of one draw of this topology. Normalisation
        ``weights`` (edge lists): the file's weights, checked to be symmetric, doubly stochastic."""
        adjacency = self.adjacency(n, rng)
        if self.normalization == EDGE_WEIGHTS:
            edges = self.edges or read_edge_list(self.edge_list)
            return validate_shift_operator(weighted_shift(edges, n), "metropolis", n=n)
        shift = shift_operator(adjacency, self.normalization)
        return validate_shift_operator(shift, self.normalization, n=n)


# Built-in presets; topologies/<name>.json in the repository mirrors each entry exactly.
BUILTIN_PRESETS: dict[str, dict] = {
    "paper_circulant": {"description": "The paper's degree-3 circulant graph: ring plus chords "
                        "i <-> i + n/2 (even n), Metropolis-Hastings weights.",
                        "family": "paper_circulant", "normalization": "metropolis"},
    "ring": {"description": "Cycle: every agent talks to its two ring neighbours.",
             "family": "ring", "normalization": "metropolis"},
    "erdos_renyi": {"description": "Connected Erdos-Renyi graph with edge probability 0.1, "
                    "redrawn per sample.",
                    "family": "erdos_renyi", "normalization": "metropolis", "edge_prob": 0.1},
    "random_geometric": {"description": "Connected random geometric graph in the unit square "
                         "with radius 0.3, redrawn per sample.",
                         "family": "random_geometric", "normalization": "metropolis", "radius": 0.3},
    "grid": {"description": "2-D grid on the most square rows x cols factorisation of n.",
             "family": "grid", "normalization": "metropolis"},
    "torus": {"description": "2-D grid with periodic boundaries.",
              "family": "torus", "normalization": "metropolis"},
    "small_world": {"description": "Connected Watts-Strogatz graph: 4 lattice neighbours, "
                    "rewiring probability 0.1, redrawn per sample.",
                    "family": "small_world", "normalization": "metropolis",
                    "neighbours": 4, "rewire_prob": 0.1},
    "exponential": {"description": "Exponential graph: i <-> i + 2^k mod n.",
                    "family": "exponential", "normalization": "metropolis"},
    "star": {"description": "Star with hub agent 0.", "family": "star", "normalization": "metropolis"},
}


def spec_from_dict(config: dict, source: str = "topology config") -> TopologySpec:
    """``TopologySpec`` from a mapping of its field names (a ``"description"`` key is ignored)."""
    if not isinstance(config, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(config).__name__}")
    allowed = [f.name for f in fields(TopologySpec) if f.name != "edges"]
    unknown = sorted(set(config) - set(allowed) - {"description"})
    if unknown:
        raise ValueError(f"{source}: unknown keys {unknown}; valid keys are {allowed + ['description']}")
    if "family" not in config:
        raise ValueError(f"{source}: missing required key 'family' (one of {FAMILIES})")
    values = {key: value for key, value in config.items() if key != "description"}
    if isinstance(values.get("degree_offsets"), list):
        values["degree_offsets"] = tuple(values["degree_offsets"])
    try:
        return TopologySpec(**values)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def available_presets() -> tuple[str, ...]:
    """Sorted names of the built-in presets and of the ``topologies/*.json`` files."""
    on_disk = {p.stem for p in PRESET_DIR.glob("*.json")} if PRESET_DIR.is_dir() else set()
    return tuple(sorted(set(BUILTIN_PRESETS) | on_disk))


def looks_like_a_path(text: str) -> bool:
    """True for ``dir/name``, ``name.json``, ``name.txt``, ...: a file, not a preset name."""
    return "/" in text or Path(text).suffix.lower() in (".json", *EDGE_LIST_SUFFIXES)


def _is_file(path) -> bool:
    """``Path.is_file`` that is False for a name the system cannot even look up (too long)."""
    try:
        return Path(path).is_file()
    except OSError:
        return False


def is_preset(text: str) -> bool:
    """True if ``text`` is a preset name (built in or ``topologies/<name>.json``); a preset
    name in a config is always the preset, never a file of that name."""
    return text in BUILTIN_PRESETS or _is_file(PRESET_DIR / f"{text}.json")


def topology_file(text: str) -> Path | None:
    """The file a topology flag names, or None for a preset name. A bare name that is both a
    preset and a file in the current folder (``--topology ring`` and ``./ring``) is a
    ValueError: say which (issue 25: the file used to win, silently)."""
    if not text or looks_like_a_path(text) or not _is_file(text):
        return Path(text) if text and _is_file(text) else None
    if is_preset(text):
        raise ValueError(f"{text!r} names both the preset {text!r} and the file ./{text} in the current "
                         f"folder; write ./{text} for the file, or move the file away for the preset")
    return Path(text)


def load_topology_preset(name_or_path) -> TopologySpec:
    """Spec of a preset name (``topologies/<name>.json``, else its built-in copy), a JSON file
    (a spec; a relative ``edge_list`` in it is resolved against the file's folder), or an edge
    list file (any other file; normalisation ``weights`` if its edges carry weights, else
    ``metropolis``)."""
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or looks_like_a_path(text)
    path = Path(text) if is_path else PRESET_DIR / f"{text}.json"
    if not is_path and not is_preset(text) and _is_file(text):
        path, is_path = Path(text), True          # a file in the working folder, named like no preset
    if not _is_file(path):
        if is_path and not os.path.lexists(path):
            raise FileNotFoundError(f"topology file not found: {path}")
        if is_path:
            check_input_file(path, "topology file")      # a folder, a FIFO, a loop of links: say which
        if text not in BUILTIN_PRESETS:
            raise ValueError(f"unknown topology preset {text!r}; available: {available_presets()} "
                             "(or a path to a JSON spec or an edge list file)")
        return spec_from_dict(dict(BUILTIN_PRESETS[text]), f"built-in preset {text!r}")
    if path.suffix.lower() != ".json":
        weighted = read_edge_list(path).weights is not None
        return TopologySpec("edge_list", EDGE_WEIGHTS if weighted else "metropolis", edge_list=str(path))
    config = parse_json(read_text_file(path, "topology file", hint="a JSON spec"), f"topology file {path}")
    if isinstance(config, dict) and isinstance(config.get("edge_list"), str) and config["edge_list"]:
        config["edge_list"] = str(path.parent / config["edge_list"])  # absolute paths stay as they are
    return spec_from_dict(config, str(path))


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
