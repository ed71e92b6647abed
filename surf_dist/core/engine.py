"""What one worker does with a batch of tasks, on any backend.

A ``Worker`` hosts a fixed set of agent indices in every task of a batch. ``load`` binds the
communicator to the batch's graph (the disjoint union of the tasks' graphs), draws and gathers
the hosted shards only, and assembles each task's pooled held-out set from the workers' shares
(two all-reduces of (tasks, held-out part) masks and of the pools' rows, none of them growing
with the agents). Metrics are per-node tensors reduced through the communicator, so the same
code gives the same numbers on one process or many.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..comm.base import Communicator
from ..comm.compress import parse_compressor
from .coordinator import Coordinator, draw_link_survival
from ..problem.softmax import correct_per_agent, loss_per_agent, pooled_correct
from ..problem.round_graphs import round_shifts
from ..problem.tasks import Shards, Task, TaskFamily, block_shift, materialize, minibatch_indices, pool_owner

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Worker:
    family: TaskFamily
    comm: Communicator
    agents: np.ndarray        # agent indices (within a task) hosted here
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")    # where the hosted shards and iterates live
    coordinator_factory: Callable[..., Coordinator] = Coordinator   # the Ray runtime swaps in an actor
    files: dict | None = None     # ``shipped.Shipped``: the files the driver read for the job (None: read the disk)
    owner: np.ndarray | None = None   # the worker of every agent (the placement; None: ask the others)
    inputs: object | None = None      # ``runtime.job_files.TaskInputs``: the dataset and topologies the driver read

    def new_coordinator(self, num_layers: int, dual_lr: float, seed: int, run_dir: str | None = None):
        """The coordinator of one training run or sweep (called on rank 0 only)."""
        assert self.comm.rank == 0, "only rank 0 talks to the coordinator"
        return self.coordinator_factory(num_layers, dual_lr, seed, run_dir)

    @property
    def num_agents(self) -> int:
        return self.family.config.num_agents

    def load(self, tasks: list[Task], dropped=None, stale: bool = False) -> Shards:
        """Bind the batch's graph and gather the hosted shards. ``dropped``: r -> (T n,) bool, the
        agents dropped in round r: they send nothing. Their messages are zeros (``round_graphs``),
        or with ``stale`` their neighbours use the last row received from them (``comm.base``)."""
        nodes_of = lambda agents: (np.arange(len(tasks))[:, None] * self.num_agents + agents[None]).ravel()
        lists = None if self.owner is None else [nodes_of(np.flatnonzero(self.owner == q))
                                                 for q in range(self.comm.world_size)]
        # a sender's random draws (compression) follow the task and the agent, not the batch or the worker
        keys = ((np.array([t.seed for t in tasks], dtype=np.uint64)[:, None] << np.uint64(20))
                | self.agents.astype(np.uint64)[None]).ravel()
        self.comm.bind(block_shift(tasks), nodes_of(self.agents), lists, keys,
                       parse_compressor(self.family.config.compress),
                       round_shifts(tasks, self.family.config.link_failure, draw_link_survival,
                                    None if stale else dropped),
                       silent=dropped if stale else None)
        shards = materialize(self.family.dataset, tasks, self.agents, self.family.config.feature_noise,
                             self.dtype, self.pool_owners(tasks), self.comm.rank)
        return self.whole_pools(shards).to(self.device)

    def pool_owners(self, tasks: list[Task]) -> list[np.ndarray]:
        """Per task, the worker that reads each sample of its held-out part (``tasks.pool_owner``):
        every worker's (P,) mask of what its agents hold, summed in one all-reduce."""
        holds = [t.holds(self.agents) for t in tasks]
        mine = torch.zeros(self.comm.world_size, sum(map(len, holds)), dtype=torch.float64)
        mine[self.comm.rank] = torch.as_tensor(np.concatenate(holds), dtype=torch.float64)
        everyone = self.comm.all_reduce(mine).numpy() if self.comm.world_size > 1 else mine.numpy()
        return [pool_owner(part) for part in np.split(everyone, np.cumsum(list(map(len, holds)))[:-1], axis=1)]

    def whole_pools(self, shards: Shards) -> Shards:
        """``shards`` with every task's whole pool: the workers' shares (features and labels)
        summed into place, one all-reduce for the batch (its size: the pools, not the agents)."""
        if self.comm.world_size == 1:
            return shards
        sizes = shards.pool_size
        rows = torch.zeros(sum(sizes), shards.X_pool[0].shape[-1] + 1, dtype=torch.float64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        for start, at, X, Y in zip(starts, shards.pool_at, shards.X_pool, shards.Y_pool):
            rows[start + at] = torch.cat([X.double(), Y.double()[:, None]], 1)
        rows = self.comm.all_reduce(rows).split(list(sizes))
        return shards.with_whole_pools([r[:, :-1].to(shards.X_pool[0].dtype) for r in rows],
                                       [r[:, -1].round().long() for r in rows])

    def positions(self, tasks: list[Task], steps, batch_size: int, stream: int) -> torch.Tensor:
        """Mini-batch positions of the hosted nodes for ``steps``: (len(steps), N_local, b)."""
        cache = {}
        for t in tasks:   # replicas of a task (a step-size grid) share its batches
            if t.seed not in cache:
                cache[t.seed] = minibatch_indices(t, steps, batch_size, stream, self.agents)
        per_task = [cache[t.seed] for t in tasks]
        return torch.as_tensor(np.concatenate(per_task, axis=1), device=self.device)

    def active_mask(self, masks_ltn: np.ndarray | None) -> torch.Tensor | None:
        """Slice a global (L, T, n) participation mask to the hosted nodes: (L, N_local)."""
        if masks_ltn is None:
            return None
        return torch.as_tensor(masks_ltn[:, :, self.agents].reshape(masks_ltn.shape[0], -1), device=self.device)

    def metrics(self, W_nd: torch.Tensor, shards: Shards, groups_n: torch.Tensor, num_groups: int,
                pooled: bool = True) -> dict:
        """Held-out ``loss``, ``accuracy`` (pooled held-out of the task; NaN when not
        ``pooled``) and ``local_accuracy`` (the agent's own held-out samples), each averaged
        over the nodes of every group: (G,)."""
        W_nd = W_nd.detach()
        pooled_acc = (shards.on_pools(pooled_correct, W_nd) if pooled
                      else torch.full((W_nd.shape[0],), float("nan"), dtype=W_nd.dtype, device=W_nd.device))
        values = {"loss": loss_per_agent(W_nd, shards.X_held, shards.Y_held), "accuracy": pooled_acc,
                  "local_accuracy": correct_per_agent(W_nd, shards.X_held, shards.Y_held)}
        return {k: self.comm.group_mean(v, groups_n, num_groups) for k, v in values.items()}
