"""Link failures and time-varying graphs against hand-made dense oracles (docs/NETWORKS.md).

The oracles are dense matrices written by hand, or Metropolis weights computed here from the
definition (s_ij = 1 / (1 + max(deg_i, deg_j)) on an edge, s_ii = 1 - the row's others), never by
the code under test. A 4-agent graph: the square 0-1-2-3-0 plus the chord 0-2 (5 edges; in CSR
order of the upper triangle: 01, 02, 03, 12, 23).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from surf_dist.comm.local import LocalCommunicator
from surf_dist.core.coordinator import draw_link_survival
from surf_dist.core.train import unroll
from surf_dist.io.config import preset, with_overrides
from surf_dist.methods.learned import UnrolledDGD
from surf_dist.methods.registry import METHODS
from surf_dist.problem.round_graphs import (RoundShifts, one_peer_exponential, random_matching, random_regular,
                                            round_shifts, surviving_shift)
from surf_dist.problem.tasks import Task
from surf_dist.problem.topology import load_topology_preset
from surf_dist.runtime.common import make_worker

EDGES = [(0, 1), (0, 2), (0, 3), (1, 2), (2, 3)]
# Metropolis weights of the whole graph (degrees 3, 2, 3, 2), by hand
FULL = np.array([[1 / 4, 1 / 4, 1 / 4, 1 / 4],
                 [1 / 4, 1 / 2, 1 / 4, 0],
                 [1 / 4, 1 / 4, 1 / 4, 1 / 4],
                 [1 / 4, 0, 1 / 4, 1 / 2]])
# link 01 failed: degrees 2, 1, 3, 2
NO_01 = np.array([[5 / 12, 0, 1 / 4, 1 / 3],
                  [0, 3 / 4, 1 / 4, 0],
                  [1 / 4, 1 / 4, 1 / 4, 1 / 4],
                  [1 / 3, 0, 1 / 4, 5 / 12]])
# links 02 and 23 failed: edges 01, 03, 12, degrees 2, 2, 1, 1
NO_02_23 = np.array([[1 / 3, 1 / 3, 0, 1 / 3],
                     [1 / 3, 1 / 3, 1 / 3, 0],
                     [0, 1 / 3, 2 / 3, 0],
                     [1 / 3, 0, 0, 2 / 3]])
HAND_DRAWS = {0: [False, True, True, True, True], 1: [True] * 5, 2: [True, False, True, True, False]}


def dense_metropolis(n, edges):
    """The oracle: Metropolis weights of an edge list, from the definition."""
    degree = np.zeros(n)
    for i, j in edges:
        degree[[i, j]] += 1
    S = np.zeros((n, n))
    for i, j in edges:
        S[i, j] = S[j, i] = 1 / (1 + max(degree[i], degree[j]))
    return S + np.diag(1 - S.sum(1))


def hand_task(rounds=(), seed=5):
    shift = sp.csr_matrix(FULL)
    return Task(shift, np.zeros((4, 1), int), np.zeros((4, 1), int), np.zeros((4, 1)), np.arange(2), seed, rounds)


def test_the_oracle_is_the_hand_matrices():
    assert np.allclose(dense_metropolis(4, EDGES), FULL) and np.allclose(dense_metropolis(4, [EDGES[i] for i in (1, 2, 3, 4)]), NO_01)


@pytest.mark.parametrize("survives, expected", [(HAND_DRAWS[0], NO_01), (HAND_DRAWS[2], NO_02_23), (HAND_DRAWS[1], FULL)])
def test_failed_links_are_reweighted_by_metropolis_on_the_surviving_graph(survives, expected):
    got = surviving_shift(sp.csr_matrix(FULL), np.array(survives)).toarray()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)


def test_failed_links_and_dropped_agents_send_nothing_and_the_ledger_counts_them_exactly():
    """Round 0: link 01 fails (8 messages); round 1: no failure, agent 2 dropped (10 - 3 = 7);
    round 2: links 02 and 23 fail (6). Each message: 3 float64 = 24 bytes."""
    comm = LocalCommunicator()
    schedule = RoundShifts([hand_task()], 0.5, lambda seed, r, E, p: np.array(HAND_DRAWS[r]))
    comm.bind(sp.csr_matrix(FULL), np.arange(4), rounds=schedule)
    Z = torch.arange(12, dtype=torch.float64).reshape(4, 3) ** 1.5
    out = [comm.shift(Z), comm.shift(Z, senders=torch.tensor([True, True, False, True])), comm.shift(Z)]
    for got, S in zip(out, (NO_01, FULL, NO_02_23)):
        np.testing.assert_allclose(got.numpy(), S @ Z.numpy(), rtol=0, atol=1e-12)
    assert comm.ledger.history == [(8, 192), (7, 168), (6, 144)]
    assert comm.ledger.messages.tolist() == [7, 5, 4, 5]
    assert comm.ledger_per_agent() == {"rounds": 3, "messages_per_agent": 21 / 4, "bytes_per_agent": 21 * 24 / 4}


def test_no_failure_and_a_static_graph_bind_no_schedule():
    assert round_shifts([hand_task()], 0.0, draw_link_survival) is None
    assert round_shifts([hand_task()], 0.1, draw_link_survival) is not None


def test_the_link_draws_are_seeded_and_fail_at_rate_p():
    a = draw_link_survival(7, 3, 20000, 0.3)
    assert np.array_equal(a, draw_link_survival(7, 3, 20000, 0.3))
    assert not np.array_equal(a, draw_link_survival(7, 4, 20000, 0.3))
    assert abs((~a).mean() - 0.3) < 0.015 and draw_link_survival(7, 3, 50, 0.0).all()


class DenseOracle:
    """A communicator reduced to its maths: round r multiplies by the dense matrix ``matrices(r)``."""

    def __init__(self, matrices):
        self.matrices, self.r = matrices, 0

    def shift(self, Z, senders=None, hold=None):
        S = torch.as_tensor(self.matrices(self.r), dtype=Z.dtype)
        self.r += 1
        return S @ Z


def four_agent_worker(link_failure=0.0):
    cfg = with_overrides(preset("quick"), {"train": {"dtype": "float64"},
                                           "task": {"num_agents": 4, "link_failure": link_failure}})
    return cfg, make_worker(cfg, LocalCommunicator())


SEQUENCE = (np.array([[.5, .5, 0, 0], [.5, .5, 0, 0], [0, 0, .5, .5], [0, 0, .5, .5]]),     # matching 01, 23
            np.array([[.5, 0, 0, .5], [0, .5, .5, 0], [0, .5, .5, 0], [.5, 0, 0, .5]]),     # matching 03, 12
            FULL)


@pytest.mark.parametrize("link_failure", [0.0, 0.5])
def test_learned_and_baselines_on_a_time_varying_sequence_equal_each_graph_by_hand(link_failure):
    """The unrolled network (4 layers of 2 hops: 8 rounds, the 3-graph sequence cycled) and two
    baselines, bound to the sequence, equal the same maths fed the dense matrix of each round;
    with failures the round's matrix is Metropolis on the graph's surviving edges (same draws)."""
    cfg, worker = four_agent_worker(link_failure)
    task = dataclasses.replace(worker.family.sample("train", 0), shift=sp.csr_matrix(FULL),
                               rounds=tuple(map(sp.csr_matrix, SEQUENCE)))

    def by_hand(r):
        S = SEQUENCE[r % 3]
        if link_failure == 0:
            return S
        edges = [(i, j) for i in range(4) for j in range(i + 1, 4) if S[i, j] != 0]
        keep = draw_link_survival(task.seed, r, len(edges), link_failure)
        return dense_metropolis(4, [e for e, k in zip(edges, keep) if k])

    assert link_failure == 0 or not all(np.allclose(by_hand(r), SEQUENCE[r % 3]) for r in range(8))
    fam = worker.family
    model = UnrolledDGD(cfg.model, fam.dataset.num_features + 1, fam.num_classes, seed=3).double()
    shards, Ws = unroll(model, worker, [task])
    positions = worker.positions([task], range(cfg.model.num_layers), cfg.model.batch_size, stream=0)
    oracle = model(shards.init_weights, shards, positions, DenseOracle(by_hand))
    assert worker.comm.ledger.rounds == 8
    for got, want in zip(Ws, oracle):
        np.testing.assert_allclose(got.detach().numpy(), want.detach().numpy(), rtol=0, atol=1e-12)
    for name in ("dgd", "gradient_tracking"):
        worker.load([task])
        method, hyper = METHODS[name], {"step": torch.full((4, 1), 0.3, dtype=torch.float64)}
        W0 = shards.init_weights
        got = [W for W, _ in method.run(W0, shards, worker.comm, hyper, 7)]
        want = [W for W, _ in method.run(W0, shards, DenseOracle(by_hand), hyper, 7)]
        np.testing.assert_allclose(torch.stack(got).numpy(), torch.stack(want).numpy(), rtol=0, atol=1e-12)


def test_one_peer_exponential_averages_exactly_in_log2_n_rounds():
    graphs = one_peer_exponential(8)
    assert len(graphs) == 3 and all((np.asarray(g.sum(1)).ravel() == 1).all() for g in graphs)
    spec = load_topology_preset("one_peer_exponential")
    shifts = spec.sample_rounds(8)
    product = shifts[2].toarray() @ shifts[1].toarray() @ shifts[0].toarray()
    np.testing.assert_allclose(product, np.full((8, 8), 1 / 8), atol=1e-15)


def test_random_families_are_matchings_and_regular_graphs_with_a_connected_union():
    rng = np.random.default_rng(0)
    assert (np.asarray(random_matching(9, rng).sum(1)).ravel() <= 1).all()
    assert (np.asarray(random_regular(10, 3, rng).sum(1)).ravel() == 3).all()
    for name in ("random_matching", "random_regular", "ring_star_sequence"):
        spec = load_topology_preset(name)
        shift, rounds = spec.sample_union(10, np.random.default_rng(1))
        assert len(rounds) == {"random_matching": 20, "random_regular": 20, "ring_star_sequence": 2}[name]
        for S in rounds:           # each round doubly stochastic, inside the union's pattern
            np.testing.assert_allclose(np.asarray(S.sum(0)).ravel(), 1, atol=1e-12)
            assert ((abs(S) > 0).toarray() <= (abs(shift) > 0).toarray()).all()


def test_a_sequence_task_is_drawn_with_its_rounds():
    cfg = with_overrides(preset("quick"), {"task": {"topology": "random_matching"}})
    fam = make_worker(cfg, LocalCommunicator()).family
    task = fam.sample("train", 0)
    assert len(task.rounds) == 20 and task.rounds[0].shape == (8, 8)
    assert all(np.array_equal(a.toarray(), b.toarray()) for a, b in zip(task.rounds, fam.sample("train", 0).rounds))


def test_stale_agents_under_link_failures_are_refused():
    """A receiver's last row from a dropped neighbour may predate a failed link: the communicator
    refuses to hold rows on a graph that changes per round (the command line refuses it first)."""
    cfg, worker = four_agent_worker(link_failure=0.5)
    fam = worker.family
    model = UnrolledDGD(cfg.model, fam.dataset.num_features + 1, fam.num_classes, seed=1).to(torch.float64)
    masks = np.ones((cfg.model.num_layers, 1, 4), dtype=bool)
    masks[1, 0, 2] = False
    with pytest.raises(ValueError, match="needs a static graph"):
        unroll(model, worker, [fam.sample("train", 0)], masks, stale=True)
    unroll(model, worker, [fam.sample("train", 0)], masks, stale=False)      # zeros: the column leaves the graph
