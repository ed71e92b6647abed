"""The GPU paths' code on the CPU (issue 26; tests/test_gpu.py runs it on a GPU where there is
one): a hop reads nothing back to the host (the ledger keeps a round's counts on their device),
tensors are made on their inputs' device (checked on the "meta" device, which fails on any
mix with the CPU as a GPU would), and the shared-GPU path stages rows through host buffers made
once per plan, in a real gloo group of one rank."""
import pytest
import torch


def test_the_ledger_keeps_a_rounds_counts_on_their_device_until_read():
    """A round's message counts on another device are not read back at the hop: "meta"
    tensors (which can never be copied to the host) record fine, and only reading fails;
    counts on the CPU read back equal to the counts given as arrays."""
    import numpy as np
    from surf_dist.comm.ledger import Ledger
    ledger = Ledger()
    ledger.reset(3)
    ledger.record_round(torch.ones(3, dtype=torch.int64, device="meta"), 8)
    assert ledger.rounds == 1
    with pytest.raises(NotImplementedError):
        ledger.history
    lazy, eager = Ledger(), Ledger()
    for ledger, as_given in ((lazy, torch.as_tensor), (eager, np.asarray)):
        ledger.reset(3)
        ledger.record_round(as_given([2, 0, 1]), 16)
        ledger.record_round(np.array([1, 1, 1]), 4)
        ledger.record_round(as_given([0, 2, 0]), 8)
    assert lazy.history == eager.history == [(3, 48), (3, 12), (2, 16)]
    assert lazy.messages.tolist() == eager.messages.tolist() == [3, 3, 2]
    assert lazy.bytes.tolist() == eager.bytes.tolist() == [36, 20, 20]


def test_shift_with_senders_on_the_rows_device_counts_without_reading_them(bound_comm):
    import numpy as np
    from surf_dist.problem.topology import ring, shift_operator
    comm = bound_comm(shift_operator(ring(6), "metropolis"))
    senders = torch.tensor([True, True, False, True, True, True])
    comm.shift(torch.ones(6, 2, dtype=torch.float64), senders=senders)
    assert len(comm.ledger._pending) == 1, "the counts were read back at the hop"
    assert comm.ledger.messages.tolist() == [2, 2, 0, 2, 2, 2] and not comm.ledger._pending
    np.testing.assert_array_equal(comm.ledger.bytes, np.array([2, 2, 0, 2, 2, 2]) * 16)


def test_shards_move_every_tensor_to_the_device(digits_family):
    """``Shards.to`` leaves nothing behind on the CPU (the pool positions included), so no
    later index mixes devices: on the "meta" device every tensor is there."""
    import numpy as np
    from surf_dist.problem.tasks import materialize
    fam = digits_family
    shards = materialize(fam.dataset, fam.batch("test", range(2)), np.arange(3)).to(torch.device("meta"))
    tensors = [v for v in vars(shards).values() if isinstance(v, torch.Tensor)]
    tensors += [t for v in vars(shards).values() if isinstance(v, list) for t in v if isinstance(t, torch.Tensor)]
    assert len(tensors) >= 8 + 2 and shards.pool_at is not None
    assert all(t.is_meta for t in tensors), [t.device for t in tensors]


@pytest.mark.timeout(60)
def test_host_staging_buffers_are_made_once_per_plan_and_reused_across_hops(tmp_path):
    """The shared-GPU path's exchange (rows staged through host buffers) in a real one-rank
    gloo group: it returns what the direct exchange returns, from buffers allocated at the
    first hop and reused at every later one, made anew after ``bind``; pinned only where a
    GPU's rows are staged (never here)."""
    import scipy.sparse as sp
    import numpy as np
    import torch.distributed as dist
    from surf_dist.comm.torch_dist import TorchCommunicator
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        staged, direct = TorchCommunicator(5.0, stage_through_host=True), TorchCommunicator(5.0)
        for comm in (staged, direct):
            comm.bind(sp.identity(3, format="csr"), np.arange(3))
        rows = torch.arange(6, dtype=torch.float64).reshape(3, 2)
        first = staged.exchange(rows, [3], [3], "test")
        buffers = [b.data_ptr() for b in staged.staging_buffers([3], [3], 2, torch.float64, pinned=False)]
        second = staged.exchange(rows + 1, [3], [3], "test")
        assert torch.equal(first, direct.exchange(rows, [3], [3], "test")) and torch.equal(first, rows)
        assert torch.equal(second, rows + 1), "a reused buffer must not leak into the returned rows"
        assert len(staged._staging) == 1
        assert [b.data_ptr() for b in staged._staging[((3,), (3,), 2, torch.float64)]] == buffers
        assert not any(b.is_pinned() for b in staged._staging[((3,), (3,), 2, torch.float64)])
        assert first.data_ptr() not in buffers and second.data_ptr() not in buffers
        staged.bind(sp.identity(3, format="csr"), np.arange(3))
        assert staged._staging == {}
    finally:
        dist.destroy_process_group()
