"""The task family: a task is a draw of (graph S, partition of data over agents, W_0).

Legend: n: agents per task, T: tasks in a batch, N = T * n nodes, m / h: seen / held-out
samples per agent, b: mini-batch, L: layers, p: features + bias column, C: classes.

Everything random comes from one seed: task ``k`` of split ``s`` draws from
``SeedSequence([seed, s, k])``, so a task is the same on every backend and worker count.
A task is a graph and seeds; its per-agent parts (shards as dataset indices, W_0, mini-batch
keys) are drawn only for the agents asked for, in blocks of ``AGENT_BLOCK`` consecutive agents,
each block from a stream of its own (block 0 from the stream a whole task used before blocks
existed, so a task of at most ``AGENT_BLOCK`` agents draws what it always drew). A worker
draws the blocks of its agents and ``materialize`` gathers their features, so a worker's
memory holds its own shards and nothing else, whatever the number of agents. A task's pooled
held-out set (the distinct held-out samples of all its agents: evaluation data for the
``accuracy`` metric, never seen by the optimizer) is split the same way: each sample is read
by the lowest-ranked worker whose agents hold it (``pool_share``; the workers learn who holds
what from one sum of (held-part,) masks), and the worker then sends its share to the others.

Sampling (documented contract):
- The dataset is split once into train / validation / test pools (60/20/20, stratified).
- Each task splits its pool at random into a seen part and a held-out part
  (``held_fraction``): no held-out sample of a task is ever seen by any of its agents.
- Agent i draws class proportions q_i ~ Dirichlet(alpha) (uniform when alpha is inf), then
  m seen and h held-out labels i.i.d. from q_i, then samples of those classes without
  replacement within the agent where the part has enough of them, with replacement otherwise.
  Different agents may share samples: with 100 agents the pools are far smaller than n (m + h).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from ..io.config import TaskConfig
from .datasets import Dataset, load_dataset, split_pools
from .softmax import add_bias, num_params
from .topology import TopologySpec, load_topology_preset

SPLITS = {"train": 0, "val": 1, "test": 2}
AGENT_BLOCK = 1024               # consecutive agents drawn from one stream


@dataclass(frozen=True)
class ShardRule:
    """What a task's agents draw their shards and W_0 from (every agent of every task)."""
    labels: np.ndarray            # (dataset,) labels
    seen_pool: np.ndarray         # dataset indices of the task's seen part
    held_pool: np.ndarray         # dataset indices of its held-out part
    samples_seen: int
    samples_held: int
    alpha: float
    init_std: float
    num_params: int


@dataclass(frozen=True)
class Task:
    shift: sp.csr_matrix          # (n, n) validated shift operator
    label_map: np.ndarray         # (C,) label permutation (identity unless permuted)
    seed: int                     # root of this task's per-agent streams (noise, mini-batches)
    rule: ShardRule
    part_seed: np.random.SeedSequence     # the shards' streams (one child per block of agents)
    init_seed: np.random.SeedSequence     # W_0's streams (block 0: itself; block b: its child b)
    rounds: tuple = ()            # time-varying: the shift of each round, cycled (``round_graphs.py``)
    _drawn: dict = field(default_factory=dict, compare=False, repr=False)   # the last agents' draws

    @property
    def num_agents(self) -> int:
        return self.shift.shape[0]

    def shards_of(self, agents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Dataset indices of ``agents``' seen (k, m) and held-out (k, h) samples."""
        return self._draw(agents)[:2]

    def init_of(self, agents: np.ndarray) -> np.ndarray:
        """W_0 of ``agents``: (k, d)."""
        return self._draw(agents)[2]

    def holds(self, agents: np.ndarray) -> np.ndarray:
        """Which samples of the held-out part (``held_part``) ``agents`` hold: (P,) bool."""
        return np.isin(self.held_part, self.shards_of(agents)[1])

    @property
    def held_part(self) -> np.ndarray:
        """The dataset indices agents draw held-out samples from, sorted: (P,)."""
        return np.sort(self.rule.held_pool)

    # every agent at once (n-sized: for tests and small tasks)
    seen_idx = property(lambda self: self.shards_of(np.arange(self.num_agents))[0])
    held_idx = property(lambda self: self.shards_of(np.arange(self.num_agents))[1])
    init_weights = property(lambda self: self.init_of(np.arange(self.num_agents)))

    def _draw(self, agents) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draw the blocks holding ``agents`` whole (each from its own stream) and keep their rows."""
        agents = np.asarray(agents, dtype=np.int64)
        key = agents.tobytes()
        if key not in self._drawn:
            r, n = self.rule, self.num_agents
            seen = np.empty((len(agents), r.samples_seen), dtype=np.int64)
            held = np.empty((len(agents), r.samples_held), dtype=np.int64)
            init = np.empty((len(agents), r.num_params))
            for block, rows, lo, size in agent_blocks(agents, n):
                part = np.random.default_rng(child_seed(self.part_seed, block))
                s, h = dirichlet_shards(r.labels, r.seen_pool, r.held_pool, size, r.samples_seen,
                                        r.samples_held, r.alpha, part)
                seen[rows], held[rows] = s[agents[rows] - lo], h[agents[rows] - lo]
                stream = self.init_seed if block == 0 else child_seed(self.init_seed, block)
                W0 = np.random.default_rng(stream).normal(0.0, r.init_std, (size, r.num_params))
                init[rows] = W0[agents[rows] - lo]
            self._drawn.clear()
            self._drawn[key] = (seen, held, init)
        return self._drawn[key]


def agent_blocks(agents: np.ndarray, num_agents: int):
    """(block, rows of ``agents`` in it, its first agent, its size) for each block ``agents`` touch."""
    of = agents // AGENT_BLOCK
    for block in np.unique(of):
        lo = int(block) * AGENT_BLOCK
        yield int(block), np.flatnonzero(of == block), lo, min(AGENT_BLOCK, num_agents - lo)


def child_seed(ss: np.random.SeedSequence, index: int) -> np.random.SeedSequence:
    """The ``index``-th child ``ss.spawn`` would make, without counting spawns on ``ss``."""
    return np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (int(index),), pool_size=ss.pool_size)


class TaskFamily:
    """Draws tasks from disjoint train / validation / test pools of one dataset."""

    def __init__(self, config: TaskConfig, dataset: Dataset | None = None, seed: int = 0,
                 topology: TopologySpec | None = None):
        """``dataset`` and ``topology``: as read elsewhere (the driver, for a rank on another
        host); by default read here from ``config``."""
        self.config = config
        self.dataset = dataset if dataset is not None else load_dataset(config.dataset, config.data_root or None)
        self.topology = topology if topology is not None else load_topology_preset(config.topology)
        self.seed = seed
        self.pools = dict(zip(SPLITS, split_pools(self.dataset.labels, (0.6, 0.2, 0.2), seed=seed)))
        self.num_classes = self.dataset.num_classes
        self.num_params = num_params(self.dataset.num_features, self.num_classes)
        for split, pool in self.pools.items():
            held = int(len(pool) * config.held_fraction)
            if held < 1 or len(pool) - held < 1:
                raise ValueError(f"the {split} pool of {self.dataset.name} has {len(pool)} samples: "
                                 "too few to split into seen and held-out parts")

    def sample(self, split: str, index: int, permute_labels: bool = False) -> Task:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {tuple(SPLITS)}, got {split!r}")
        cfg = self.config
        ss = np.random.SeedSequence([self.seed, SPLITS[split], index])
        graph_ss, part_ss, init_ss, perm_ss, stream_ss = ss.spawn(5)
        shift, rounds = (self.topology.sample_union(cfg.num_agents, np.random.default_rng(graph_ss))
                         if self.topology.is_time_varying else
                         (self.topology.sample(cfg.num_agents, np.random.default_rng(graph_ss)), ()))
        pool = np.random.default_rng(part_ss).permutation(self.pools[split])
        num_held = int(len(pool) * cfg.held_fraction)
        rule = ShardRule(self.dataset.labels, pool[num_held:], pool[:num_held], cfg.samples_seen,
                         cfg.samples_held, cfg.alpha, cfg.init_std, self.num_params)
        label_map = (np.random.default_rng(perm_ss).permutation(self.num_classes) if permute_labels
                     else np.arange(self.num_classes))
        return Task(shift, label_map, int(stream_ss.generate_state(1)[0]), rule, part_ss, init_ss, rounds)

    def batch(self, split: str, indices, permute_labels: bool = False) -> list[Task]:
        return [self.sample(split, int(i), permute_labels) for i in indices]


def dirichlet_shards(labels, seen_pool, held_pool, num_agents, samples_seen, samples_held, alpha, rng):
    """Label-skewed shards: (n, m) seen and (n, h) held-out dataset indices (see module doc)."""
    classes = np.unique(labels)
    by_class_seen = {c: seen_pool[labels[seen_pool] == c] for c in classes}
    by_class_held = {c: held_pool[labels[held_pool] == c] for c in classes}
    usable = np.array([len(by_class_seen[c]) > 0 and len(by_class_held[c]) > 0 for c in classes])
    if not usable.any():
        raise ValueError("no class has samples in both the seen and held-out parts of the pool")
    seen = np.empty((num_agents, samples_seen), dtype=np.int64)
    held = np.empty((num_agents, samples_held), dtype=np.int64)
    for i in range(num_agents):
        if math.isinf(alpha):
            q = usable / usable.sum()
        else:
            q = rng.dirichlet(np.full(len(classes), alpha)) * usable
            q = q / q.sum() if q.sum() > 0 else usable / usable.sum()
        seen[i] = _draw(rng, classes, q, samples_seen, by_class_seen)
        held[i] = _draw(rng, classes, q, samples_held, by_class_held)
    return seen, held


def _draw(rng, classes, q, count, by_class):
    counts = rng.multinomial(count, q)
    out = []
    for c, k in zip(classes, counts):
        if k:
            candidates = by_class[c]
            out.append(rng.choice(candidates, size=k, replace=k > len(candidates)))
    return rng.permutation(np.concatenate(out))


def minibatch_indices(task: Task, steps, batch_size: int, stream: int = 0,
                      agents: np.ndarray | None = None) -> np.ndarray:
    """I.i.d. mini-batches of each agent's own seen samples: (len(steps), k, b) positions in
    [0, m) for ``agents`` (default: all n).

    Step ``s`` of stream ``stream`` always draws the same batch, whatever else is drawn, so
    iterations can ask for their batches one at a time. Within one step an agent's batch has
    no repeats; steps are independent. Streams: 0 the unrolled layers, 1 baseline iterations.
    Each block of agents draws its keys from its own stream (block 0's is the whole task's of
    before), so a worker draws only the blocks of its agents.
    """
    n, m = task.num_agents, task.rule.samples_seen
    agents = np.arange(n) if agents is None else np.asarray(agents, dtype=np.int64)
    out = np.empty((len(steps), len(agents), batch_size), dtype=np.int64)
    for i, step in enumerate(steps):
        for block, rows, lo, size in agent_blocks(agents, n):
            ss = np.random.SeedSequence([task.seed, 1, stream, step], spawn_key=(block,) if block else ())
            keys = np.random.default_rng(ss).random((size, m))[agents[rows] - lo]
            out[i, rows] = np.argsort(keys, axis=-1)[:, :batch_size]
    return out


@dataclass
class Shards:
    """The data one worker holds for the nodes it hosts, stacked over (task, agent)."""
    X_seen: torch.Tensor          # (N, m, p)
    Y_seen: torch.Tensor          # (N, m)
    X_held: torch.Tensor          # (N, h, p)
    Y_held: torch.Tensor          # (N, h)
    X_pool: list[torch.Tensor]    # per task: (s_w, p) this worker's share of the task's pooled held-out samples
    Y_pool: list[torch.Tensor]
    task_of_node: torch.Tensor    # (N,) index of the node's task in the batch
    init_weights: torch.Tensor    # (N, d)
    pool_at: list[torch.Tensor] | None = None   # per task: (s_w,) the share's positions in the whole pool
    pool_size: list[int] | None = None          # per task: s, the whole pool (None: the shares are whole)
    agents: np.ndarray | None = None            # the hosted agents (indices within a task)
    num_agents: int = 0                         # agents per task

    def to(self, device: torch.device) -> "Shards":
        """The same shards on ``device`` (no copy where they already are)."""
        move = lambda t: t.to(device)
        return Shards(*(list(map(move, v)) if isinstance(v, list) else move(v)
                        for v in (self.X_seen, self.Y_seen, self.X_held, self.Y_held, self.X_pool,
                                  self.Y_pool, self.task_of_node, self.init_weights)),
                      None if self.pool_at is None else list(map(move, self.pool_at)), self.pool_size,
                      self.agents, self.num_agents)

    def pool(self, t: int, cap: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Task ``t``'s share (X, Y) among its pool's first ``cap`` samples, and how many samples
        those are in all (every share together)."""
        X, Y = self.X_pool[t], self.Y_pool[t]
        size = X.shape[0] if self.pool_size is None else self.pool_size[t]
        if cap is None or cap >= size:
            return X, Y, size
        if self.pool_at is None:
            return X[:cap], Y[:cap], cap
        keep = self.pool_at[t] < cap
        return X[keep], Y[keep], cap

    def on_pools(self, fn, W_nd: torch.Tensor, cap: int | None = None) -> torch.Tensor:
        """The mean over each task's pooled held-out samples (its first ``cap``), per node:
        (N, ...). ``fn(W (k, ...), X (s, p), Y (s,))`` gives per model the *sum* over the given
        samples (k, ...). Needs the pools whole (``with_whole_pools``): each worker scores its
        own nodes' models, so nothing here grows with the agents of other workers.
        Differentiable in ``W_nd``."""
        assert self.pool_size is None or all(len(x) == s for x, s in zip(self.X_pool, self.pool_size)), \
            "score on whole pools: Worker.load gathers every worker's share"
        pools = [self.pool(t, cap) for t in range(len(self.X_pool))]
        rows = [torch.nonzero(self.task_of_node == t).squeeze(1) for t in range(len(pools))]
        values = torch.cat([_in_blocks(fn, W_nd[r], X, Y) / size for r, (X, Y, size) in zip(rows, pools)])
        return values[torch.argsort(torch.cat(rows))]          # back in node order

    def with_whole_pools(self, X_pool: list[torch.Tensor], Y_pool: list[torch.Tensor]) -> "Shards":
        """The same shards with each task's whole pool (every worker's share, in pool order)."""
        return dataclasses.replace(self, X_pool=X_pool, Y_pool=Y_pool, pool_at=None, pool_size=None)

    def minibatch(self, positions_nb: torch.Tensor):
        """Gather rows of the seen shards: positions (N, b) -> X (N, b, p), Y (N, b)."""
        X = torch.gather(self.X_seen, 1, positions_nb[..., None].expand(-1, -1, self.X_seen.shape[-1]))
        return X, torch.gather(self.Y_seen, 1, positions_nb)


POOL_CELLS = 1 << 22     # (model, pooled sample) pairs scored at once: ~4 blocks at 100,000 agents on digits


def _in_blocks(fn, W_k: torch.Tensor, X_sp: torch.Tensor, Y_s: torch.Tensor) -> torch.Tensor:
    """``fn(W, X, Y)`` over blocks of models, each of at most ``POOL_CELLS`` (model, sample)
    pairs: the (k, s, C) logits of many agents on a large pool are never whole."""
    step = max(1, POOL_CELLS // max(1, X_sp.shape[0]))
    if W_k.shape[0] <= step:
        return fn(W_k, X_sp, Y_s)
    return torch.cat([fn(W_k[i:i + step], X_sp, Y_s) for i in range(0, W_k.shape[0], step)])


def materialize(dataset: Dataset, tasks: list[Task], agents: np.ndarray, noise_std: float = 0.0,
                dtype=torch.float64, pool_owners: list[np.ndarray] | None = None, rank: int = 0) -> Shards:
    """Gather the shards of ``agents`` (indices within a task) for every task of the batch.

    ``pool_owners``: per task, the worker that reads each sample of its held-out part (P,),
    -1 where no agent holds it (``pool_owner``); this worker is ``rank``. Default: ``agents``
    are every agent that matters (their pools whole, read here)."""
    Xs, Ys, Xh, Yh, Xp, Yp, W0, At, Sizes = [], [], [], [], [], [], [], [], []
    for t, task in enumerate(tasks):
        seen_idx, held_idx = task.shards_of(agents)
        seen_x, seen_y = _features(dataset, task, seen_idx, noise_std, 0, agents)
        held_x, held_y = _features(dataset, task, held_idx, noise_std, 1, agents)
        owner = pool_owner(task.holds(agents)[None]) if pool_owners is None else pool_owners[t]
        pool_ids, at, size = pool_share(task.held_part, owner, rank)
        noise = None
        if noise_std > 0:     # the whole pool's stream, so that every share draws what the whole pool draws
            rng = np.random.default_rng(np.random.SeedSequence([task.seed, 2, 2, 0]))
            noise = rng.normal(0.0, noise_std, (size, dataset.features.shape[-1]))[at][None]
        pool_x, pool_y = _features(dataset, task, pool_ids[None], noise_std, 2, agents, noise)
        Xs.append(seen_x); Ys.append(seen_y); Xh.append(held_x); Yh.append(held_y)
        Xp.append(pool_x[0]); Yp.append(pool_y[0]); At.append(torch.as_tensor(at)); Sizes.append(size)
        W0.append(task.init_of(agents))
    as_t = lambda a: torch.as_tensor(np.concatenate(a), dtype=dtype)
    as_i = lambda a: torch.as_tensor(np.concatenate(a), dtype=torch.int64)
    task_of_node = torch.arange(len(tasks)).repeat_interleave(len(agents))
    return Shards(as_t(Xs), as_i(Ys), as_t(Xh), as_i(Yh),
                  [torch.as_tensor(x, dtype=dtype) for x in Xp], [torch.as_tensor(y) for y in Yp],
                  task_of_node, as_t(W0), At, Sizes, np.asarray(agents), tasks[0].num_agents if tasks else 0)


def pool_owner(holds_wp: np.ndarray) -> np.ndarray:
    """The worker that reads each sample of a held-out part: the lowest-ranked one whose agents
    hold it, -1 where none does. ``holds_wp``: (workers, P), nonzero where worker w's agents
    hold sample p (summed across workers, each filling its own row)."""
    held = holds_wp != 0
    return np.where(held.any(0), held.argmax(0), -1)


def pool_share(held_part: np.ndarray, owner: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The part of a task's pooled held-out set (the samples of its held-out part that some
    agent holds, by dataset index, sorted) that worker ``rank`` reads (``owner`` == ``rank``),
    so that the workers' shares partition the pool. (dataset indices, their positions in the
    pool, the pool's size)."""
    ids = held_part[owner >= 0]
    at = np.flatnonzero(owner[owner >= 0] == rank)
    return ids[at], at, len(ids)


def _features(dataset, task, idx, noise_std, part, agents, noise=None):
    """Features with bias column, and labels, for the (k, s) index array of ``agents``.

    Augmentation noise is drawn per agent (its own stream), so a worker that hosts a subset
    of the agents draws exactly what the single process draws for them."""
    X = dataset.features[idx]                      # (k, s, p_raw)
    if noise is not None:                          # drawn by the caller
        X = X + noise
    elif noise_std > 0:
        X = X + np.stack([np.random.default_rng(np.random.SeedSequence([task.seed, 2, part, int(a)]))
                          .normal(0.0, noise_std, X.shape[1:]) for a in agents])
    X = add_bias(torch.as_tensor(X)).numpy()
    return X, task.label_map[dataset.labels[idx]]


def block_shift(tasks: list[Task]) -> sp.csr_matrix:
    """The batch as one graph: the disjoint union of the tasks' graphs, (T n, T n)."""
    return sp.block_diag([t.shift for t in tasks], format="csr")
