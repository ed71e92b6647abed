"""One pass of a baseline over the rounds with many configurations at once: the configurations
are replicas of the tasks' classifiers side by side (``replicas.py``), run in chunks of
``CHUNK``, and scored at the rounds asked for (the tuning budgets: ``tuning_rounds``)."""
from __future__ import annotations

import numpy as np
import torch

from ...core._malloc import release_freed_memory
from ...core.engine import Worker
from ...methods.accelerated import spectral_lambda2
from ...methods.registry import METHODS
from .protocol import METRICS
from .replicas import ReplicaProblem, task_means

CHUNK = 24                  # replicas per pass: larger blocks fall out of the caches (measured)
TASK_BLOCK = 10             # tasks per pass: 3 draws of 10 at once held 11 GB per process (measured)
TUNE_SCHEDULE = ((30, 1), (100, 5), (200, 10), (None, 25))   # (up to round, every) of the tuning budgets


def tuning_rounds(rounds: int) -> np.ndarray:
    """The round budgets at which choices are made: every round up to 30, then every 5 to 100,
    every 10 to 200, every 25 beyond, and the last; between two, the earlier one's choice holds."""
    budgets, start = [], 0
    for until, every in TUNE_SCHEDULE:
        stop = rounds if until is None else min(until, rounds)
        budgets.extend(range(start, stop + 1, every))
        start = stop
    return np.union1d(budgets, [rounds])


def run_grid(name: str, worker: Worker, tasks, configs: list[dict], rounds: int, at_rounds, pool_cap: int,
             batch_size: int, pooled_at: np.ndarray | None = None) -> dict:
    """Method ``name`` with every configuration of ``configs`` (one discrete setting, any
    continuous values and starts) on ``tasks``, in chunks of ``CHUNK`` replicas: per-task means
    at ``at_rounds`` {metric: (len(at_rounds), T, R)}, and per round the bytes and gradient
    evaluations per agent. ``pooled_at`` (rounds + 1, R) bool: where the pooled accuracy is
    needed (default: at every round of ``at_rounds``); NaN elsewhere."""
    rows = []
    for j in range(0, len(tasks), TASK_BLOCK):
        parts = []
        for i in range(0, len(configs), CHUNK):
            parts.append(_run_chunk(name, worker, tasks[j:j + TASK_BLOCK], configs[i:i + CHUNK], rounds, at_rounds,
                                    pool_cap, batch_size, None if pooled_at is None else pooled_at[:, i:i + CHUNK]))
            release_freed_memory()      # the pass's arrays, kept by the allocator (bench_job), go back
        rows.append({"values": {k: np.concatenate([p["values"][k] for p in parts], axis=2) for k in METRICS},
                     "bytes": parts[0]["bytes"], "grad_evals": parts[0]["grad_evals"]})
    return {"values": {k: np.concatenate([r["values"][k] for r in rows], axis=1) for k in METRICS},
            "bytes": rows[0]["bytes"], "grad_evals": rows[0]["grad_evals"]}


def _run_chunk(name, worker, tasks, configs, rounds, at_rounds, pool_cap, batch_size, pooled_at):
    method = METHODS[name]
    shards = worker.load(tasks)
    R = len(configs)
    stream = list(METHODS).index(name) + 1
    batches = lambda i: worker.positions(tasks, [i], batch_size, stream)[0]
    prob = ReplicaProblem(shards, worker.family.num_classes, R, batches, pool_cap, worker.comm)
    worker.comm.replicas(R, worker.family.num_classes)     # a compressor acts on each replica's message
    zero = torch.zeros_like(shards.init_weights)
    W0 = prob.stack([zero if c["start"] == "zero" else shards.init_weights for c in configs])
    hyper = {}
    for key in method.continuous:
        hyper[key] = prob.columns(torch.tensor([c[key] for c in configs], dtype=W0.dtype, device=W0.device))
    for key in method.discrete:
        hyper[key] = configs[0][key]
    if method.needs_spectrum:
        per_task = torch.tensor([spectral_lambda2(t.shift) for t in tasks], dtype=W0.dtype, device=W0.device)
        hyper["lambda2"] = per_task[shards.task_of_node.to(W0.device)][:, None]
    wanted = set(int(r) for r in at_rounds)
    table = {k: [] for k in METRICS}
    evals = []
    with torch.no_grad():
        for r, (W, grad_evals) in enumerate(method.run(W0, prob, worker.comm, hyper, rounds)):
            evals.append(grad_evals)
            if r in wanted:
                keep = None if pooled_at is None else np.flatnonzero(pooled_at[r]).tolist()
                for k, v in prob.metrics(W, keep).items():
                    table[k].append(task_means(worker.comm, v, shards.task_of_node, len(tasks)).numpy())
    per_round_bytes = [0.0] + worker.comm.bytes_curve()
    return {"values": {k: np.stack(v) for k, v in table.items()},
            "bytes": np.array(per_round_bytes[:rounds + 1]) / R, "grad_evals": np.array(evals, dtype=float)}
