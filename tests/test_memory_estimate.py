"""The memory estimate counts one worker's share of the agents, and the workers on this machine.

Oracle: the evaluation term written out by hand for the default preset (digits: p = 65,
C = 10); the measured peaks behind it are in BENCHMARKS.md ("100,000 agents").
"""
import pytest

from surf_dist.cli import memory_estimate as me
from surf_dist.io.config import preset, with_overrides

GIB = 1024 ** 3


def evaluation(agents: int, tasks: int = 1):
    return with_overrides(preset("default"), {"task": {"num_agents": agents}, "eval": {"test_tasks": tasks}})


def test_the_evaluation_term_by_hand():
    d, K, data = 65 * 10, 1, (12 + 4) * 65
    for workers, k in ((1, 100_000), (2, 50_000), (3, 33_334)):
        terms = me.estimate_bytes(evaluation(100_000), 64, 10, training=False, workers=workers)
        hidden = 2 * me.MLP_ROWS * 16                       # k d > MLP_ROWS: the hidden layer in blocks
        assert terms["evaluation iterates"] == (k * (d * (K + 28) + data) + hidden) * 4
        assert terms["worker process"] == me.PROCESS_BYTES


def test_all_workers_on_this_machine_add_up_and_a_torchrun_host_counts_its_own(monkeypatch):
    monkeypatch.setenv("SURF_DIST_MEMORY_LIMIT_GB", "1000")
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    cfg = evaluation(100_000)
    one = me.check_size(cfg, "evaluate", 64, 10, workers=1)
    four = me.check_size(cfg, "evaluate", 64, 10, workers=4)
    per_worker = sum(me.estimate_bytes(cfg, 64, 10, False, 4).values())
    assert four == 4 * per_worker and per_worker < one / 3      # a quarter of the agents each
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")                  # one rank per machine
    assert me.check_size(cfg, "evaluate", 64, 10, workers=4) == per_worker


def test_a_limit_refuses_one_worker_and_admits_four_machines(monkeypatch):
    monkeypatch.setenv("SURF_DIST_MEMORY_LIMIT_GB", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    cfg = evaluation(100_000)
    with pytest.raises(ValueError, match=r"evaluation iterates: .* GiB for 100,000 agents x 20 layers"):
        me.check_size(cfg, "evaluate", 64, 10, workers=1)
    assert me.check_size(cfg, "evaluate", 64, 10, workers=4) < 3 * GIB
    monkeypatch.delenv("LOCAL_WORLD_SIZE")                       # the four on this machine: too much again
    with pytest.raises(ValueError, match=r"25,000 of 100,000 agents on each of 4 workers"):
        me.check_size(cfg, "evaluate", 64, 10, workers=4)
