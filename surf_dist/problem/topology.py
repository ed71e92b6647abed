"""A topology: a graph family plus a normalisation (``TopologySpec``), and the presets and files
that name one. ``--topology`` takes a preset name (a JSON file of ``topologies/`` in this
package, read as package data), a JSON spec, or an edge list file.

The pieces it is made of live beside it and are read here too, as ``topology.*``: the graph
families (``graphs.py``), the shift operators and their checks (``shift_operators.py``), the
spectra (``spectra.py``) and the placement of agents on workers (``placement.py``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..io.config import parse_json
from ..io.file_checks import check_input_file, read_text_file
from .edge_list import EdgeList, read_edge_list
from .graphs import (  # noqa: F401 - the graph families, read as topology.*
    _check_count, _check_number, _from_edges, _upper_pairs, circulant, erdos_renyi, exponential, grid,
    grid_shape, is_connected, number_of_components, paper_circulant, random_geometric, ring, small_world,
    star, torus,
)
from .round_graphs import one_peer_exponential, random_matching, random_regular, union_adjacency
from .placement import cut_edges, place_agents  # noqa: F401 - read as topology.*
from .shift_operators import (  # noqa: F401 - read as topology.*
    NORMALIZATIONS, STOCHASTIC_NORMALIZATIONS, load_edge_list, shift_operator, validate_shift_operator,
    weighted_shift,
)
from .spectra import (  # noqa: F401 - spectral_gap, spectral_radius and the limits are read as topology.*
    DENSE_EIG_LIMIT,
    TOLERANCE,
    check_consensus,
    spectral_gap,
    spectral_radius,
)

FAMILIES = ("ring", "circulant", "paper_circulant", "erdos_renyi", "random_geometric",
            "grid", "torus", "star", "exponential", "small_world", "edge_list",
            "one_peer_exponential", "random_matching", "random_regular", "sequence")
RANDOM_FAMILIES = ("erdos_renyi", "random_geometric", "small_world", "random_matching", "random_regular")
TIME_VARYING = ("one_peer_exponential", "random_matching", "random_regular", "sequence")
EDGE_WEIGHTS = "weights"    # edge_list only: the file's weights are the mixing weights
EDGE_LIST_SUFFIXES = (".txt", ".csv", ".tsv", ".edges", ".edgelist", ".el")
# The presets: one JSON file each (copy and edit one); package data, so an installed package has them.
PRESET_DIR = Path(str(resources.files(__package__) / "topologies"))


def edge_list_nodes(spec: "TopologySpec") -> int | None:
    """Agents of an edge-list topology (``max id + 1`` of its file; of a sequence's edge lists), None
    for the other families."""
    if spec.family == "sequence":
        counts = [c for c in map(edge_list_nodes, spec.sequence) if c is not None]
        return counts[0] if counts else None
    return (spec.edges or read_edge_list(spec.edge_list)).num_nodes if spec.family == "edge_list" else None


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
    degree: int = 3                        # random_regular: every agent's degree in every round
    period: int = 20                       # random time-varying families: graphs drawn per task, cycled
    sequence: tuple = ()                   # family sequence: one TopologySpec a round, cycled
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
        _check_count(self.degree, "degree", 1)
        _check_count(self.period, "period", 1)
        if self.family == "sequence":
            check_sequence(self.sequence)

    @property
    def is_random(self) -> bool:
        """True if every ``sample`` call draws a fresh graph."""
        return self.family in RANDOM_FAMILIES

    @property
    def is_time_varying(self) -> bool:
        """True if the graph changes from round to round (``sample_rounds``)."""
        return self.family in TIME_VARYING

    def sample_rounds(self, n: int, rng: np.random.Generator | None = None) -> tuple[sp.csr_matrix, ...]:
        """The shift operators (n, n) of the rounds, used cyclically (``round_graphs.py``); () for a
        static family. Each is doubly stochastic; their union must be connected."""
        if not self.is_time_varying:
            return ()
        if self.family == "sequence":
            shifts = tuple(s for spec in self.sequence for s in (spec.sample_rounds(n, rng) or (spec.sample(n, rng),)))
        else:
            draws = {"one_peer_exponential": lambda: one_peer_exponential(n),
                     "random_matching": lambda: [random_matching(n, rng) for _ in range(self.period)],
                     "random_regular": lambda: [random_regular(n, self.degree, rng) for _ in range(self.period)]}
            shifts = tuple(shift_operator(a, "metropolis" if self.normalization == EDGE_WEIGHTS else self.normalization)
                           for a in draws[self.family]())
        union = union_adjacency(shifts)
        if not is_connected(union):
            raise ValueError(f"topology {self.family}: the union of its {len(shifts)} graphs is disconnected "
                             f"({number_of_components(union)} components), so mixing cannot reach consensus")
        return shifts

    def adjacency(self, n: int, rng: np.random.Generator | None = None) -> sp.csr_matrix:
        """Boolean (n, n) adjacency of one draw (``rng`` is required by random families only)."""
        if self.is_random and not isinstance(rng, np.random.Generator):
            raise ValueError(f"family {self.family!r} is random: pass rng=np.random.default_rng(seed)")
        if self.is_time_varying:          # the union of the rounds' graphs
            return union_adjacency(self.sample_rounds(n, rng))
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
        if self.is_time_varying:       # the union of the rounds' graphs (the halo plan, the spectra)
            return self.sample_union(n, rng)[0]
        adjacency = self.adjacency(n, rng)
        if self.normalization == EDGE_WEIGHTS:
            edges = self.edges or read_edge_list(self.edge_list)
            return validate_shift_operator(weighted_shift(edges, n), "metropolis", n=n)
        shift = shift_operator(adjacency, self.normalization)
        return validate_shift_operator(shift, self.normalization, n=n)


    def sample_union(self, n: int, rng: np.random.Generator | None = None):
        """(S, rounds): the Metropolis shift of the union of the rounds' graphs and the rounds."""
        rounds = self.sample_rounds(n, rng)
        return validate_shift_operator(shift_operator(union_adjacency(rounds), "metropolis"), "metropolis", n=n), rounds


def check_sequence(sequence) -> None:
    """A sequence's graphs: at least one, each a ``TopologySpec``, edge lists of one agent count."""
    if not isinstance(sequence, tuple) or not sequence:
        raise ValueError("topology sequence is empty: list at least one graph in \"sequence\" (preset names, "
                         "edge list files or JSON specs), one a round")
    if not all(isinstance(s, TopologySpec) for s in sequence):
        raise ValueError("topology sequence: every entry must be a topology (a preset name, a file or a JSON spec)")
    counts = [(i, edge_list_nodes(s)) for i, s in enumerate(sequence)]
    counts = [(i, c) for i, c in counts if c is not None]
    if len({c for _, c in counts}) > 1:
        said = ", ".join(f"graph {i} has {c}" for i, c in counts)
        raise ValueError(f"topology sequence: its graphs have different agent counts ({said}); give every graph "
                         "of a sequence the same agents (ids 0..n-1)")


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
    if "sequence" in values:
        values["sequence"] = sequence_specs(values["sequence"], source)
    if isinstance(values.get("degree_offsets"), list):
        values["degree_offsets"] = tuple(values["degree_offsets"])
    try:
        return TopologySpec(**values)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None


def sequence_specs(entries, source: str) -> tuple:
    """The specs of a JSON ``sequence`` list: preset names, files (edge lists read now, so a rank
    that opens no file gets them with the spec) or JSON objects."""
    if not isinstance(entries, list):
        raise ValueError(f"{source}: \"sequence\" must be a list of topologies, got {type(entries).__name__}")
    specs = []
    for i, entry in enumerate(entries):
        spec = (spec_from_dict(entry, f"{source}, sequence entry {i}") if isinstance(entry, dict)
                else load_topology_preset(entry) if isinstance(entry, str)
                else None)
        if spec is None:
            raise ValueError(f"{source}: sequence entry {i} must be a preset name, a file or an object, got {entry!r}")
        if spec.family == "edge_list" and spec.edges is None:
            spec = TopologySpec(**{**{f.name: getattr(spec, f.name) for f in fields(spec)},
                                   "edges": read_edge_list(spec.edge_list)})
        specs.append(spec)
    return tuple(specs)


def available_presets() -> tuple[str, ...]:
    """Sorted names of the presets: the ``topologies/*.json`` files."""
    return tuple(sorted(p.stem for p in PRESET_DIR.glob("*.json")))


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
    """True if ``text`` is a preset name (``topologies/<name>.json``); a preset name in a config
    is always the preset, never a file of that name."""
    return "/" not in text and _is_file(PRESET_DIR / f"{text}.json")


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
    """Spec of a preset name (``topologies/<name>.json``), a JSON file
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
        raise ValueError(f"unknown topology preset {text!r}; available: {available_presets()} "
                         "(or a path to a JSON spec or an edge list file)")
    if path.suffix.lower() != ".json":
        weighted = read_edge_list(path).weights is not None
        return TopologySpec("edge_list", EDGE_WEIGHTS if weighted else "metropolis", edge_list=str(path))
    config = parse_json(read_text_file(path, "topology file", hint="a JSON spec"), f"topology file {path}")
    if isinstance(config, dict) and isinstance(config.get("edge_list"), str) and config["edge_list"]:
        config["edge_list"] = str(path.parent / config["edge_list"])  # absolute paths stay as they are
    if isinstance(config, dict) and isinstance(config.get("sequence"), list):   # its files: beside it too
        config["sequence"] = [str(path.parent / e) if isinstance(e, str) and looks_like_a_path(e) else e
                              for e in config["sequence"]]
    return spec_from_dict(config, str(path))
