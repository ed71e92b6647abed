"""What every runtime does the same way: place agents on workers and build a worker."""
from __future__ import annotations

import numpy as np

from ..comm.base import Communicator
from ..engine import TORCH_DTYPES, Worker
from ..tasks import TaskFamily
from ..topology import place_agents


class WorkerLostError(RuntimeError):
    """A worker of a distributed run died or failed; the message names every failed rank.
    ``lost``: the root cause is a worker that vanished (killed, crashed, out of memory), not an
    error raised by the job, so running the group again may succeed."""

    def __init__(self, message: str, lost: bool = False):
        super().__init__(message)
        self.lost = lost


def placement(family: TaskFamily, num_workers: int) -> np.ndarray:
    """Worker id of every agent (n,). The same agents sit on the same worker in every task;
    the partition is computed on the family's first training graph (a new graph per task
    can't be partitioned ahead of time), falling back to contiguous blocks."""
    adjacency = family.sample("train", 0).shift.copy()
    adjacency.setdiag(0)
    adjacency.eliminate_zeros()
    return place_agents(family.config.num_agents, num_workers, adjacency != 0)


def make_worker(cfg, comm: Communicator) -> Worker:
    """The worker of ``comm.rank``: the task family (same seed everywhere) and its agents."""
    family = TaskFamily(cfg.task, seed=cfg.train.seed)
    owner = placement(family, comm.world_size)
    return Worker(family, comm, np.flatnonzero(owner == comm.rank), TORCH_DTYPES[cfg.train.dtype])
