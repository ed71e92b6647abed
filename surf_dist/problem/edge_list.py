"""A user's own graph as an edge list file: parsing and checking, nothing else.

The format (README, "Your own graph"): one edge ``i j`` or ``i j weight`` per line, the fields
separated by spaces, tabs or commas; ``#`` starts a comment; ids are 0-based, the agents are
``0 .. max id``, so the file says how many agents there are. Either every edge has a weight or
none does. Weights are the mixing weights ``s_ij = s_ji`` of the edge (normalisation
``weights``, the default when the file has them); agent i keeps ``s_ii = 1 - sum_j s_ij``.
"""
from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io.file_checks import check_input_file, read_text_file

SEPARATORS = re.compile(r"[,\s]+")
INTEGER = re.compile(r"^[+-]?[0-9]+$")


@dataclass(frozen=True)
class EdgeList:
    """The edges of a file: ``heads[k] <-> tails[k]`` (self-loops and repeats kept as written),
    ``weights`` (E,) or None, ``lines`` (E,) the line number of each edge."""
    path: Path
    heads: np.ndarray
    tails: np.ndarray
    weights: np.ndarray | None
    lines: np.ndarray

    @property
    def num_nodes(self) -> int:
        """``max id + 1``: ids are 0-based."""
        return int(max(self.heads.max(), self.tails.max())) + 1


def read_edge_list(path) -> EdgeList:
    """Parse and check an edge list file (cached while the file is unchanged); ValueError
    naming the line and the fix for anything malformed."""
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"edge list file not found: {path}")
    check_input_file(path, "edge list")          # a folder, a FIFO, a loop of links: say which
    stat = path.stat()
    return _read(str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _read(name: str, mtime_ns: int, size: int) -> EdgeList:
    path = Path(name)
    text = read_text_file(path, "edge list", hint="expected lines 'i j [weight]'")
    rows, weighted_line, plain_line = [], None, None
    for number, raw in enumerate(text.splitlines(), start=1):
        body = raw.split("#", 1)[0].strip()
        if not body:
            continue
        tokens = SEPARATORS.split(body)
        try:
            if len(tokens) not in (2, 3) or any("_" in t for t in tokens) or not all(
                    INTEGER.match(t) for t in tokens[:2]):
                raise ValueError      # Python reads 1_0 as 10 and ' 1' as 1: ids are digits only
            i, j = int(tokens[0]), int(tokens[1])
            weight = float(tokens[2]) if len(tokens) == 3 else None
        except ValueError:
            raise ValueError(f"{path}, line {number}: expected 'i j' or 'i j weight' with integer ids, "
                             f"got {raw.strip()!r}") from None
        if i < 0 or j < 0:
            raise ValueError(f"{path}, line {number}: node ids must be >= 0, got {raw.strip()!r}")
        if weight is None:
            plain_line = plain_line or number
        else:
            weighted_line = weighted_line or number
            if not math.isfinite(weight) or weight <= 0:
                raise ValueError(f"{path}, line {number}: an edge weight must be a number > 0, got "
                                 f"{tokens[2]!r} (drop the line to remove the edge)")
        rows.append((number, i, j, weight))
    if not rows:
        raise ValueError(f"{path} holds no edges; write one 'i j' per line (ids from 0)")
    if weighted_line and plain_line:
        raise ValueError(f"{path}: line {weighted_line} has a weight but line {plain_line} has none; "
                         "give every edge a weight or none")
    lines = np.array([r[0] for r in rows], dtype=np.int64)
    heads = np.array([r[1] for r in rows], dtype=np.int64)
    tails = np.array([r[2] for r in rows], dtype=np.int64)
    weights = np.array([r[3] for r in rows], dtype=np.float64) if weighted_line else None
    ids = np.concatenate([heads, tails])
    if ids.min() == 1:
        raise ValueError(f"{path}: node ids run 1..{ids.max()} with no 0, as if counted from 1; ids are "
                         "0-based (agents 0..n-1): subtract 1 from every id")
    if ids.min() > 1:
        raise ValueError(f"{path}: the lowest node id is {ids.min()}, so agents 0..{ids.min() - 1} would "
                         "have no edges; ids are 0-based (agents 0..n-1): renumber them from 0")
    edges = EdgeList(path, heads, tails, weights, lines)
    if weights is not None:
        _check_weighted(edges)
    return edges


def _check_weighted(edges: EdgeList) -> None:
    """Weighted files: no self-loops (``s_ii`` is implied) and one weight per undirected edge."""
    loops = np.flatnonzero(edges.heads == edges.tails)
    if loops.size:
        raise ValueError(f"{edges.path}, line {edges.lines[loops[0]]}: a self-loop with a weight; an "
                         "agent's own weight is implied (1 - the sum of its edge weights): drop the line")
    seen: dict[tuple[int, int], tuple[float, int]] = {}
    for line, i, j, w in zip(edges.lines, edges.heads, edges.tails, edges.weights):
        key = (min(i, j), max(i, j))
        if key in seen and seen[key][0] != w:
            raise ValueError(f"{edges.path}, lines {seen[key][1]} and {line}: edge {key[0]}-{key[1]} has two "
                             f"weights ({seen[key][0]:g} and {w:g}); mixing weights must be symmetric: "
                             "give each edge once")
        seen[key] = (float(w), int(line))


def mixing_weights(edges: EdgeList) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct undirected edges (i < j) of a weighted file and their weights, (E,) each."""
    pairs = np.stack([np.minimum(edges.heads, edges.tails), np.maximum(edges.heads, edges.tails)], 1)
    unique, first = np.unique(pairs, axis=0, return_index=True)
    return unique[:, 0], unique[:, 1], edges.weights[first]
