"""surf_dist.comm.ledger and the communicator's accounting: messages and bytes per agent by hand."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from surf_dist.comm.ledger import Ledger
from surf_dist.comm.local import LocalCommunicator


def test_ledger_record_round_arithmetic():
    ledger = Ledger()
    ledger.reset(3)
    ledger.record_round(np.array([2, 0, 1]), 16)
    ledger.record_round(np.array([1, 1, 1]), 4)
    assert ledger.rounds == 2
    assert ledger.messages.tolist() == [3, 1, 2]
    assert ledger.bytes.tolist() == [36, 4, 20]
    assert ledger.history == [(3, 48), (3, 12)]
    assert ledger.local_totals().tolist() == [6.0, 60.0, 3.0]
    ledger.reset(2)
    assert ledger.rounds == 0 and ledger.history == [] and ledger.messages.tolist() == [0, 0]


def test_ring_one_shift_two_messages_per_agent(ring_shift, bound_comm):
    n, d = 6, 5
    comm = bound_comm(ring_shift(n))
    comm.shift(torch.zeros(n, d, dtype=torch.float64))
    assert comm.ledger.rounds == 1
    assert comm.ledger.messages.tolist() == [2] * n
    assert comm.ledger.bytes.tolist() == [2 * d * 8] * n
    assert comm.ledger_per_agent() == {"rounds": 1, "messages_per_agent": 2.0, "bytes_per_agent": 2.0 * d * 8}


def test_itemsize_follows_the_dtype(ring_shift, bound_comm):
    n, d = 6, 7
    comm = bound_comm(ring_shift(n))
    comm.shift(torch.zeros(n, d, dtype=torch.float32))
    assert comm.ledger.bytes.tolist() == [2 * d * 4] * n


def test_senders_mask_excludes_silent_agent(ring_shift, bound_comm):
    n, d = 6, 3
    comm = bound_comm(ring_shift(n))
    senders = torch.ones(n, dtype=torch.bool)
    senders[4] = False
    comm.shift(torch.ones(n, d, dtype=torch.float64), senders=senders)
    assert comm.ledger.messages.tolist() == [2, 2, 2, 2, 0, 2]
    assert comm.ledger.bytes.tolist() == [48, 48, 48, 48, 0, 48]
    assert comm.ledger.history == [(10, 10 * d * 8)]


def test_bytes_curve_is_cumulative(ring_shift, bound_comm):
    n = 6
    comm = bound_comm(ring_shift(n))
    comm.shift(torch.zeros(n, 2, dtype=torch.float64))              # 2 msgs x 16 B per agent
    comm.shift(torch.zeros(n, 4, dtype=torch.float64))              # 2 msgs x 32 B
    senders = torch.tensor([True, False, True, False, True, False])
    comm.shift(torch.zeros(n, 1, dtype=torch.float64), senders)     # half the agents: 2 x 8 B
    curve = comm.bytes_curve()
    per_round = [32.0, 64.0, 8.0]                                   # mean over the 6 agents
    assert curve == pytest.approx(list(np.cumsum(per_round)))
    assert curve[-1] == pytest.approx(comm.ledger_per_agent()["bytes_per_agent"])


def test_bind_resets_counts(ring_shift, bound_comm):
    n = 6
    S = ring_shift(n)
    comm = bound_comm(S)
    comm.shift(torch.zeros(n, 3, dtype=torch.float64))
    comm.shift(torch.zeros(n, 3, dtype=torch.float64))
    assert comm.ledger.rounds == 2
    comm.bind(S, np.arange(n))
    assert comm.ledger.rounds == 0
    assert comm.ledger.messages.tolist() == [0] * n and comm.ledger.bytes.tolist() == [0] * n
    assert comm.bytes_curve() == []
    comm.shift(torch.zeros(n, 3, dtype=torch.float64))
    assert comm.ledger.messages.tolist() == [2] * n


@pytest.mark.parametrize("normalization", ["metropolis", "row_stochastic", "spectral"])
def test_star_graph_hand_counts(star_shift, bound_comm, normalization):
    """Hub 0 sends to n - 1 leaves, each leaf to the hub only: whatever the normalisation
    (spectral has no self-loops; self-loops are never messages)."""
    n, d = 5, 4
    comm = bound_comm(star_shift(n, normalization))
    comm.shift(torch.zeros(n, d, dtype=torch.float64))
    comm.shift(torch.zeros(n, d, dtype=torch.float64))
    assert comm.ledger.messages.tolist() == [2 * (n - 1)] + [2] * (n - 1)
    assert comm.ledger.bytes.tolist() == [2 * (n - 1) * d * 8] + [2 * d * 8] * (n - 1)
    per_agent = comm.ledger_per_agent()
    assert per_agent["messages_per_agent"] == pytest.approx(2 * 2 * (n - 1) / n)   # 2 rounds x 2|E| / n


def test_out_degree_follows_columns_of_a_directed_shift(bound_comm):
    """Agent i sends to j when S[j, i] != 0 (j receives i): counts are column counts."""
    S = sp.csr_matrix(np.array([[0.5, 0.5, 0.0],
                                [0.0, 0.5, 0.5],
                                [0.5, 0.25, 0.25]]))
    comm = bound_comm(S)
    out = comm.shift(torch.eye(3, dtype=torch.float64))
    assert torch.allclose(out, torch.as_tensor(S.toarray()))
    # column 0: row 2; column 1: rows 0, 2; column 2: row 1
    assert comm.ledger.messages.tolist() == [1, 2, 1]


def test_shift_is_s_times_z_and_differentiable(ring_shift, bound_comm):
    S = ring_shift(6, "row_stochastic")
    comm = bound_comm(S)
    Z = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    V = torch.randn(6, 3, dtype=torch.float64)
    out = comm.shift(Z)
    dense = torch.as_tensor(S.toarray())
    assert torch.allclose(out, dense @ Z)
    (out * V).sum().backward()
    assert torch.allclose(Z.grad, dense.T @ V)                    # backward runs on reversed edges


def test_local_backend_refuses_partial_hosting(ring_shift):
    comm = LocalCommunicator()
    with pytest.raises(ValueError, match="every node"):
        comm.bind(ring_shift(6), np.arange(3))


def test_group_mean_per_group_by_hand_on_the_cpu():
    from surf_dist.comm.local import LocalCommunicator
    means = LocalCommunicator().group_mean(torch.tensor([1.0, 3.0, 10.0]), torch.tensor([1, 1, 0]), 3)
    assert means.device.type == "cpu" and means[:2].tolist() == [10.0, 2.0] and torch.isnan(means[2])
