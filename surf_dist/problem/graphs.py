"""Graph families of ``n`` agents: generators of symmetric boolean CSR adjacencies (n, n),
without self-loops and always connected (a random family redraws until it is), and the checks
of counts and numbers they share. Randomness only through an explicit ``numpy.random.Generator``;
everything is sparse and scales to ~10,000 agents. The operators built on them: ``shift_operators.py``.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


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
