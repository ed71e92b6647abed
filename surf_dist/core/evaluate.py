"""Evaluation on test tasks: the unrolled models, the centralized optimum, the asynchronous
sweep and the permuted-label check, all with the ledger's costs (the baselines, tuned by the
bench's rule: ``commands/bench/summary_curves.py``).

Curves are dicts of aligned lists: ``rounds`` (cumulative), ``bytes_per_agent``, ``loss``
(held-out cross-entropy), ``accuracy`` (pooled held-out) and ``local_accuracy`` (own held-out).
"""
from __future__ import annotations

import numpy as np
import torch

from .engine import Worker
from ..methods.learned import UnrolledDGD
from ..problem.softmax import METRICS, correct_per_agent, loss_per_agent, pooled_accuracy, solve_centralized
from ..problem.tasks import materialize
from .train import unroll


def evaluate_unrolled(model: UnrolledDGD, worker: Worker, tasks, masks_ltn=None, stale=False) -> dict:
    """Per-layer curve of the unrolled network on ``tasks`` (layer 0 is W_0)."""
    per_layer = []        # each layer's metrics as it is made: two iterates in memory, not L + 1
    score = lambda shards, W: per_layer.append(
        worker.metrics(W, shards, torch.zeros(W.shape[0], dtype=torch.int64), 1))
    with torch.no_grad():
        unroll(model, worker, tasks, masks_ltn, stale, each_layer=score)
    K = model.config.num_hops
    cumulative = [0.0] + worker.comm.bytes_curve()
    curve = {"rounds": [l * K for l in range(len(per_layer))],
             "bytes_per_agent": [cumulative[l * K] for l in range(len(per_layer))]}
    curve.update({k: [float(m[k][0]) for m in per_layer] for k in METRICS})
    return curve


def centralized_on_test(worker: Worker, test_tasks, pool_cap: int) -> dict:
    """The centralized optimum of each test task's pooled seen data, scored like the methods:
    {metric: (T,)} (a reference computed from every agent's data, not a federated method)."""
    family = worker.family
    everyone = np.arange(family.config.num_agents)
    out = {k: [] for k in METRICS}
    for task in test_tasks:
        sh = materialize(family.dataset, [task], everyone, family.config.feature_noise, torch.float64)
        w = solve_centralized(sh.X_seen.reshape(-1, sh.X_seen.shape[-1]), sh.Y_seen.reshape(-1), family.num_classes)
        W = w[None].expand(len(everyone), -1)
        out["loss"].append(float(loss_per_agent(W, sh.X_held, sh.Y_held).mean()))
        out["local_accuracy"].append(float(correct_per_agent(W, sh.X_held, sh.Y_held).mean()))
        out["accuracy"].append(float(pooled_accuracy(w[None], sh.X_pool[0][:pool_cap], sh.Y_pool[0][:pool_cap])[0]))
    return {k: np.array(v) for k, v in out.items()}


def async_sweep(model: UnrolledDGD, worker: Worker, tasks, levels, draws: int, seed: int,
                stale: bool = False) -> dict:
    """Final-layer ``local_accuracy`` with ``n_async`` agents dropped per layer, per draw.

    The coordinator draws the masks from its evaluation generator, seeded by ``seed`` alone,
    so the constrained and the unconstrained model face exactly the same dropouts."""
    L, n = model.config.num_layers, worker.num_agents
    coordinator = worker.new_coordinator(L, 0.0, seed) if worker.comm.rank == 0 else None
    results = {}
    for level in levels:
        results[level] = []
        for _ in range(draws if level else 1):      # nothing random to draw at level 0
            drawn = (coordinator.draw_masks("eval", L, len(tasks), n, level) if coordinator
                     else np.zeros((L, len(tasks), n), dtype=bool))
            masks = worker.comm.broadcast(torch.as_tensor(drawn)).numpy()
            results[level].append(evaluate_unrolled(model, worker, tasks, masks, stale)["local_accuracy"][-1])
    return results
