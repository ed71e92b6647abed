"""Tests for surf_dist.problem.topology: generators, normalisations, validation, loaders, placement."""
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from surf_dist.problem import spectra
from surf_dist.problem import topology as topo

SIZES = (6, 11, 40)
FAMILY_KWARGS = {
    "circulant": {"degree_offsets": (1, 3)},
    "erdos_renyi": {"edge_prob": 0.5},
    "random_geometric": {"radius": 0.6},
    "small_world": {"neighbours": 4, "rewire_prob": 0.3},
    "random_regular": {"degree": 4},
    "sequence": {"sequence": (topo.TopologySpec("ring"), topo.TopologySpec("star"))},
}
GENERATED_FAMILIES = [f for f in topo.FAMILIES if f != "edge_list"]


def degrees(adjacency):
    return np.asarray(adjacency.sum(axis=1)).ravel()


def dense_spectral_radius(matrix):
    return np.max(np.abs(np.linalg.eigvals(matrix.toarray())))


@pytest.mark.parametrize("family", GENERATED_FAMILIES)
@pytest.mark.parametrize("n", SIZES)
def test_every_family_is_connected_symmetric_boolean_without_self_loops(family, n):
    spec = topo.TopologySpec(family, **FAMILY_KWARGS.get(family, {}))
    adjacency = spec.adjacency(n, np.random.default_rng(n))
    assert sp.isspmatrix_csr(adjacency) and adjacency.dtype == bool
    assert adjacency.shape == (n, n)
    assert (adjacency != adjacency.T).nnz == 0
    assert adjacency.diagonal().sum() == 0
    assert topo.is_connected(adjacency)


@pytest.mark.parametrize("family", GENERATED_FAMILIES)
@pytest.mark.parametrize("normalization", topo.NORMALIZATIONS)
def test_every_family_and_normalization_passes_validation(family, normalization):
    spec = topo.TopologySpec(family, normalization, **FAMILY_KWARGS.get(family, {}))
    shift = spec.sample(12, np.random.default_rng(0))
    assert sp.isspmatrix_csr(shift) and shift.dtype == np.float64 and shift.shape == (12, 12)
    topo.validate_shift_operator(shift, normalization, n=12)
    adjacency = spec.adjacency(12, np.random.default_rng(0))
    off_support = sp.csr_matrix(shift - shift.multiply(adjacency + sp.identity(12, format="csr")))
    assert off_support.nnz == 0 or np.abs(off_support.data).max() == 0


@pytest.mark.parametrize("n", (3, 4, 9, 100))
def test_ring_has_degree_two(n):
    assert np.all(degrees(topo.ring(n)) == 2)
    assert topo.ring(n).nnz == 2 * n


@pytest.mark.parametrize("n", (4, 6, 10, 64))
def test_paper_circulant_is_three_regular_for_even_n(n):
    adjacency = topo.paper_circulant(n)
    assert np.all(degrees(adjacency) == 3)
    assert adjacency[0, n // 2] and adjacency[0, 1] and adjacency[0, n - 1]


@pytest.mark.parametrize("n", (5, 7, 13))
def test_paper_circulant_is_four_regular_for_odd_n(n):
    assert np.all(degrees(topo.paper_circulant(n)) == 4)


def test_star_degrees():
    d = degrees(topo.star(7))
    assert d[0] == 6 and np.all(d[1:] == 1)


def test_grid_and_torus_shapes_and_degrees():
    assert topo.grid_shape(12) == (3, 4) and topo.grid_shape(13) == (1, 13)
    assert topo.grid(12).nnz // 2 == 3 * 3 + 2 * 4  # horizontal + vertical edges
    assert np.all(degrees(topo.torus(20)) == 4)
    assert sorted(degrees(topo.grid(9))) == [2] * 4 + [3] * 4 + [4]


def test_exponential_neighbours():
    adjacency = topo.exponential(16)
    assert set(adjacency[0].indices) == {1, 2, 4, 8, 15, 14, 12}


def test_circulant_rejects_disconnected_offsets():
    with pytest.raises(ValueError, match="disconnected"):
        topo.circulant(8, (2, 4))


@pytest.mark.parametrize("call, match", [
    (lambda: topo.ring(2), "ring n must be >= 3"),
    (lambda: topo.erdos_renyi(10, 0.0, np.random.default_rng(0)), "edge probability"),
    (lambda: topo.random_geometric(10, -1.0, np.random.default_rng(0)), "radius"),
    (lambda: topo.small_world(10, 3, 0.1, np.random.default_rng(0)), "even neighbours"),
    (lambda: topo.star(1.5), "integer"),
])
def test_impossible_generator_parameters(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_random_family_gives_clear_error_after_max_tries():
    with pytest.raises(ValueError, match="no connected graph in 3 draws"):
        topo.erdos_renyi(50, 0.001, np.random.default_rng(0), max_tries=3)


@pytest.mark.parametrize("family", topo.RANDOM_FAMILIES)
def test_same_seed_same_graph_and_fresh_draws_differ(family):
    spec = topo.TopologySpec(family, **FAMILY_KWARGS.get(family, {}))
    first = spec.sample(30, np.random.default_rng(7))
    again = spec.sample(30, np.random.default_rng(7))
    assert (first != again).nnz == 0
    rng = np.random.default_rng(7)
    assert (spec.sample(30, rng) != spec.sample(30, rng)).nnz > 0


def test_a_tiny_edge_probability_ends_in_an_error_not_a_hang():
    """Issue 25: numpy's geometric saturates at 2^63 - 1 for p = 1e-300; its sum wrapped
    negative and the edge sampler looped forever. Now: no edge, and the bounded draws end."""
    heads, tails = topo._upper_pairs(1000, 1e-300, np.random.default_rng(0))
    assert heads.size == tails.size == 0
    with pytest.raises(ValueError, match=r"no connected graph in 100 draws \(edge_prob 1e-300 with 8 agents"):
        topo.erdos_renyi(8, 1e-300, np.random.default_rng(0))


def test_erdos_renyi_edge_density_matches_p():
    adjacency = topo.erdos_renyi(200, 0.3, np.random.default_rng(1))
    density = adjacency.nnz / (200 * 199)
    assert abs(density - 0.3) < 0.015  # about 4.5 standard deviations


def test_random_family_requires_rng():
    with pytest.raises(ValueError, match="default_rng"):
        topo.TopologySpec("erdos_renyi").sample(10)


def test_row_stochastic_rows_sum_to_one_with_self_loops():
    shift = topo.shift_operator(topo.star(9), "row_stochastic")
    np.testing.assert_allclose(np.asarray(shift.sum(axis=1)).ravel(), 1.0, atol=1e-12)
    np.testing.assert_allclose(shift.diagonal(), [1 / 9] + [1 / 2] * 8)


def test_metropolis_is_symmetric_doubly_stochastic_with_mh_weights():
    adjacency = topo.star(5)
    shift = topo.shift_operator(adjacency, "metropolis").toarray()
    np.testing.assert_allclose(shift, shift.T)
    np.testing.assert_allclose(shift.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(shift.sum(axis=1), 1.0, atol=1e-12)
    assert shift[0, 1] == pytest.approx(1 / 5) and shift[1, 1] == pytest.approx(4 / 5)


@pytest.mark.parametrize("adjacency", [topo.star(10), topo.grid(12), topo.ring(7)])
def test_spectral_normalization_has_unit_spectral_radius(adjacency):
    shift = topo.shift_operator(adjacency, "spectral")
    assert dense_spectral_radius(shift) == pytest.approx(1.0, abs=1e-10)
    assert shift.diagonal().sum() == 0


def test_unknown_normalization_lists_choices():
    with pytest.raises(ValueError, match="metropolis"):
        topo.shift_operator(topo.ring(5), "laplacian")


def test_validation_rejects_disconnected_graph():
    two_rings = sp.block_diag([topo.ring(4), topo.ring(3)]).astype(bool)
    shift = topo.shift_operator(two_rings, "metropolis")
    with pytest.raises(ValueError, match="disconnected: 2 connected components"):
        topo.validate_shift_operator(shift, "metropolis")


def test_validation_rejects_negative_weight():
    shift = topo.shift_operator(topo.ring(5), "metropolis").toarray()
    shift[0, 1] = -0.1
    with pytest.raises(ValueError, match="negative"):
        topo.validate_shift_operator(shift)


def test_validation_rejects_nan():
    shift = topo.shift_operator(topo.ring(5), "metropolis").toarray()
    shift[2, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        topo.validate_shift_operator(shift)


def test_validation_rejects_wrong_size_and_non_square():
    shift = topo.shift_operator(topo.ring(5), "metropolis")
    with pytest.raises(ValueError, match="size 5 but there are n=6 agents"):
        topo.validate_shift_operator(shift, n=6)
    with pytest.raises(ValueError, match="square"):
        topo.validate_shift_operator(np.ones((3, 4)) / 4)


@pytest.mark.parametrize("normalization", [None, "metropolis", "row_stochastic", "spectral"])
def test_validation_rejects_non_mixing_matrix(normalization):
    doubled = 2 * topo.shift_operator(topo.ring(6), "metropolis")
    with pytest.raises(ValueError, match="not a mixing matrix"):
        topo.validate_shift_operator(doubled, normalization)


def test_validation_accepts_user_matrices():
    lazy_walk = topo.shift_operator(topo.star(6), "row_stochastic").toarray()
    assert topo.validate_shift_operator(lazy_walk).shape == (6, 6)
    substochastic = 0.5 * topo.shift_operator(topo.ring(6), "spectral")
    topo.validate_shift_operator(substochastic)


def test_spectral_gap_matches_closed_form_for_ring():
    n = 10
    # Metropolis ring: S = (I + A) / 3, eigenvalues (1 + 2 cos(2 pi k / n)) / 3.
    expected = 1 - (1 + 2 * np.cos(2 * np.pi / n)) / 3
    shift = topo.shift_operator(topo.ring(n), "metropolis")
    assert topo.spectral_gap(shift) == pytest.approx(expected)


def test_spectral_gap_sparse_path_agrees_with_dense(monkeypatch):
    shift = topo.shift_operator(topo.torus(120), "metropolis")
    dense = topo.spectral_gap(shift)
    monkeypatch.setattr(spectra, "DENSE_EIG_LIMIT", 10)   # where _leading_moduli reads it
    assert topo.spectral_gap(shift) == pytest.approx(dense, rel=1e-6)
    assert topo.spectral_radius(topo.grid(120)) == pytest.approx(dense_spectral_radius(topo.grid(120)))


def test_load_edge_list_good_file(tmp_path):
    path = tmp_path / "edges.txt"
    path.write_text("# a 4-cycle, commas or spaces\n0 1\n1,2\n\n2 3  # trailing comment\n3 0\n3 3\n")
    adjacency = topo.load_edge_list(path)
    assert adjacency.shape == (4, 4) and np.all(degrees(adjacency) == 2)
    assert (adjacency != topo.ring(4)).nnz == 0
    assert topo.load_edge_list(path, n=6).shape == (6, 6)


@pytest.mark.parametrize("text, match", [
    ("0 1\n1 x\n", "line 2"),
    ("0 1\n1 2 3 4\n", "line 2"),
    ("0 1\n1 -2\n", "line 2: node ids must be >= 0"),
    ("0 1\n1 5\n", r"line 2: node id 5 >= n=3"),
])
def test_load_edge_list_bad_lines(tmp_path, text, match):
    path = tmp_path / "edges.txt"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        topo.load_edge_list(path, n=3 if "5" in text else None)


def test_load_edge_list_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        topo.load_edge_list(tmp_path / "nope.txt")


def test_edge_list_family_samples_validated_operator(tmp_path):
    path = tmp_path / "edges.txt"
    path.write_text("0 1\n1 2\n2 0\n")
    shift = topo.TopologySpec("edge_list", edge_list=str(path)).sample(3)
    np.testing.assert_allclose(shift.toarray(), np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="has 3 agents .* but num_agents is 4; set --agents 3"):
        topo.TopologySpec("edge_list", edge_list=str(path)).sample(4)
    path.write_text("0 1\n1 2\n3 4\n")
    with pytest.raises(ValueError, match="disconnected"):
        topo.TopologySpec("edge_list", edge_list=str(path)).sample(5)


def test_spec_rejects_unknown_family_and_normalization_and_bad_values():
    with pytest.raises(ValueError, match="choose one of .*paper_circulant"):
        topo.TopologySpec("hypercube")
    with pytest.raises(ValueError, match="choose one of .*row_stochastic"):
        topo.TopologySpec("ring", normalization="laplacian")
    with pytest.raises(ValueError, match="edge_prob"):
        topo.TopologySpec("erdos_renyi", edge_prob=1.5)
    with pytest.raises(ValueError, match="degree_offsets"):
        topo.TopologySpec("circulant")


def test_deterministic_family_is_same_every_call():
    spec = topo.TopologySpec("paper_circulant")
    assert (spec.sample(10) != spec.sample(10)).nnz == 0


PRESETS = ("erdos_renyi", "exponential", "grid", "my_graph", "one_peer_exponential", "paper_circulant",
           "random_geometric", "random_matching", "random_regular", "ring", "ring_star_sequence", "small_world",
           "star", "torus")


def test_presets_are_the_package_json_files_and_each_samples():
    assert topo.available_presets() == PRESETS            # the names the CLI and configs use
    for name in PRESETS:
        spec = topo.load_topology_preset(name)
        config = json.loads((topo.PRESET_DIR / f"{name}.json").read_text())
        if spec.family != "edge_list":
            assert spec == topo.spec_from_dict(config), name
        n = 12 if spec.family == "edge_list" else 16
        assert spec.sample(n, np.random.default_rng(0)).shape == (n, n), name
    assert topo.load_topology_preset("paper_circulant").family == "paper_circulant"


def test_preset_files_are_package_data():
    """Every file of the presets' folder is matched by pyproject's package-data (an installed
    package has its presets) and sits inside the package."""
    import fnmatch
    import tomllib
    pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["surf_dist.problem"]
    files = sorted(p.name for p in topo.PRESET_DIR.iterdir())
    assert topo.PRESET_DIR.parent == Path(topo.__file__).parent and files
    assert [f for f in files if not any(fnmatch.fnmatch(f"topologies/{f}", pat) for pat in patterns)] == []


def test_unknown_preset_and_unknown_keys(tmp_path):
    with pytest.raises(ValueError, match="available: .*paper_circulant"):
        topo.load_topology_preset("no_such_graph")
    path = tmp_path / "custom.json"
    path.write_text(json.dumps({"family": "ring", "colour": "red"}))
    with pytest.raises(ValueError, match="unknown keys \\['colour'\\]"):
        topo.load_topology_preset(path)
    path.write_text(json.dumps({"family": "circulant", "degree_offsets": [1, 2], "description": "x"}))
    assert topo.load_topology_preset(str(path)).degree_offsets == (1, 2)


@pytest.mark.parametrize("n_agents, n_workers", [(10, 3), (7, 7), (100, 8), (5, 1)])
def test_place_agents_balanced_contiguous_blocks(n_agents, n_workers):
    placement = topo.place_agents(n_agents, n_workers)
    sizes = np.bincount(placement, minlength=n_workers)
    assert placement.shape == (n_agents,) and sizes.max() - sizes.min() <= 1 and sizes.min() >= 1
    assert np.all(np.diff(placement) >= 0)  # contiguous ranges in worker order


def test_place_agents_errors():
    with pytest.raises(ValueError, match="cannot place 3 agents on 4 workers"):
        topo.place_agents(3, 4)
    with pytest.raises(ValueError, match="n_workers must be >= 1"):
        topo.place_agents(3, 0)


def test_cut_edges_hand_count_on_ring():
    ring = topo.ring(6)
    assert topo.cut_edges(ring, np.array([0, 0, 0, 1, 1, 1])) == 2
    assert topo.cut_edges(ring, np.array([0, 1, 0, 1, 0, 1])) == 6
    assert topo.cut_edges(ring, topo.place_agents(6, 2, ring)) == 2


def test_graph_aware_placement_is_balanced_and_never_worse():
    rng = np.random.default_rng(3)
    order = rng.permutation(60)
    shuffled = topo.ring(60)[order][:, order]  # ring with scrambled ids: contiguous ids cut badly
    placement = topo.place_agents(60, 4, shuffled)
    sizes = np.bincount(placement)
    assert sizes.max() - sizes.min() <= 1
    assert topo.cut_edges(shuffled, placement) < topo.cut_edges(shuffled, topo.place_agents(60, 4))
    assert topo.cut_edges(shuffled, placement) <= 8
    np.testing.assert_array_equal(placement, topo.place_agents(60, 4, shuffled))
