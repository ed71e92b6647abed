"""What every runtime does the same way: place agents on workers and build a worker."""
from __future__ import annotations

import numpy as np
import torch

from ..comm.base import Communicator
from ..core.engine import TORCH_DTYPES, Worker
from ..problem.tasks import TaskFamily
from ..problem.topology import place_agents

DEVICES = ("cpu", "cuda")


class JobError(RuntimeError):
    """A rank's job raised an error (an assertion, CUDA out of memory, a dead coordinator...):
    the run fails at once with that rank's message; running the group again would only repeat it."""


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


def make_worker(cfg, comm: Communicator, device: torch.device | str = "cpu", inputs=None) -> Worker:
    """The worker of ``comm.rank``: the task family (same seed everywhere) and its agents, its
    shards and iterates on ``device``. ``inputs``: the dataset and topologies as the driver read
    them (``job_files.TaskInputs``; None: read here)."""
    family = (TaskFamily(cfg.task, seed=cfg.train.seed) if inputs is None
              else inputs.family(cfg.task, cfg.train.seed))
    owner = placement(family, comm.world_size)
    worker = Worker(family, comm, np.flatnonzero(owner == comm.rank), TORCH_DTYPES[cfg.train.dtype],
                    torch.device(device), owner=owner)
    worker.inputs = inputs
    return worker


def check_device(device: str) -> None:
    """A clear error, before anything starts, for a device this machine can't give."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device cuda: no CUDA GPU is visible (torch {torch.__version__}, "
                         f"CUDA build: {torch.version.cuda or 'none'})")


def transport(device: str, workers: int, gpus: int) -> str:
    """The collectives' backend of ``workers`` ranks on a machine with ``gpus`` GPUs: nccl when
    each rank has a GPU of its own; gloo on the CPU, and for ranks that share GPUs (nccl can't
    run two ranks on one GPU): their rows are staged through host memory at each exchange, so
    fewer GPUs than workers still runs, and one GPU can check the multi-rank GPU path."""
    return "nccl" if device == "cuda" and workers <= gpus else "gloo"
