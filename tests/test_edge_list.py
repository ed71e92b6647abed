"""A user's own graph: edge list files (format, weights as mixing weights, the hints) and the
examples shipped in surf_dist/problem/topologies/."""
import json

import numpy as np
import pytest

from surf_dist.problem import topology as topo
from surf_dist.problem.edge_list import read_edge_list
from surf_dist.problem.topology import PRESET_DIR, load_topology_preset


def write(tmp_path, text, name="g.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_weights_are_the_mixing_weights_and_self_weights_fill_the_rest(tmp_path):
    path = write(tmp_path, "# a weighted triangle plus a tail\n0 1 0.5\n1,2,0.25\n2 0 0.25\n2 3 0.5\n")
    spec = load_topology_preset(path)
    assert spec.normalization == "weights" and topo.edge_list_nodes(spec) == 4
    S = spec.sample(4).toarray()
    expected = np.array([[0.25, 0.5, 0.25, 0], [0.5, 0.25, 0.25, 0], [0.25, 0.25, 0, 0.5], [0, 0, 0.5, 0.5]])
    np.testing.assert_allclose(S, expected)
    np.testing.assert_allclose(S.sum(1), 1) and np.testing.assert_allclose(S, S.T)


def test_unweighted_file_gets_metropolis_weights(tmp_path):
    spec = load_topology_preset(write(tmp_path, "0 1\n1 2\n2 0\n"))
    assert spec.normalization == "metropolis"
    np.testing.assert_allclose(spec.sample(3).toarray(), np.full((3, 3), 1 / 3))


@pytest.mark.parametrize("text, match", [
    ("1 2\n2 3\n3 1\n", "ids run 1..3 with no 0, as if counted from 1"),
    ("3 4\n4 5\n", "lowest node id is 3"),
    ("0 1 0.5\n1 2\n", "line 1 has a weight but line 2 has none"),
    ("0 1 -0.5\n", "must be a number > 0"),
    ("0 1 0.5\n1 0 0.25\n", "edge 0-1 has two weights"),
    ("0 0 0.5\n0 1 0.5\n", "self-loop with a weight"),
    ("# nothing\n", "holds no edges"),
    ("0 one\n", "line 1: expected 'i j' or 'i j weight'"),
])
def test_bad_files_name_the_line_and_the_fix(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        read_edge_list(write(tmp_path, text))


def test_weights_that_leave_a_negative_self_weight_are_refused(tmp_path):
    spec = load_topology_preset(write(tmp_path, "0 1 0.7\n1 2 0.7\n2 0 0.2\n"))
    with pytest.raises(ValueError, match="agent 1's edge weights sum to 1.4 > 1"):
        spec.sample(3)


def test_json_spec_with_weights_must_say_so(tmp_path):
    write(tmp_path, "0 1 0.5\n1 2 0.5\n2 0 0.5\n")
    path = write(tmp_path, json.dumps({"family": "edge_list", "edge_list": "g.txt"}), "g.json")
    with pytest.raises(ValueError, match="has edge weights, which normalization 'metropolis' would ignore"):
        load_topology_preset(path).sample(3)
    path.write_text(json.dumps({"family": "edge_list", "edge_list": "g.txt", "normalization": "weights"}))
    np.testing.assert_allclose(load_topology_preset(path).sample(3).toarray(), 0.5 * (1 - np.eye(3)))
    with pytest.raises(ValueError, match="edge lists only"):
        topo.TopologySpec("ring", normalization="weights")


def test_shipped_examples_load_and_agree(tmp_path):
    """The preset my_graph.json names my_graph.edges beside it; both give the same operator."""
    from_json = load_topology_preset("my_graph")
    from_file = load_topology_preset(PRESET_DIR / "my_graph.edges")
    n = topo.edge_list_nodes(from_json)
    assert n == topo.edge_list_nodes(from_file) == 12
    S = from_json.sample(n).toarray()
    np.testing.assert_allclose(S, from_file.sample(n).toarray())
    np.testing.assert_allclose(S.sum(1), 1) and np.testing.assert_allclose(S, S.T)
