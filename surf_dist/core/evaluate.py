"""Evaluation on test tasks: the unrolled models, tuned baselines, the centralized optimum,
the asynchronous sweep and the permuted-label check, all with the ledger's costs.

Curves are dicts of aligned lists: ``rounds`` (cumulative), ``bytes_per_agent``, ``loss``
(held-out cross-entropy), ``accuracy`` (pooled held-out) and ``local_accuracy`` (own held-out).

Baseline step sizes are tuned per round budget: every step size of ``eval.step_grid`` runs on
``tune_tasks`` validation tasks and on the test tasks at once (replicas of the tasks in one
batch), and at every evaluation point the test value reported is the one of the step size with
the best validation ``local_accuracy`` at that point. Nothing is tuned on test tasks.
"""
from __future__ import annotations

import numpy as np
import torch

from ..io.config import RunConfig
from .engine import Worker
from ..methods.learned import UnrolledDGD
from ..methods.registry import METHODS
from ..problem.softmax import METRICS, pooled_accuracy, pooled_loss, solve_centralized
from ..io.progress import bar as progress_bar
from ..problem.tasks import materialize
from .train import unroll

BASELINES = ("dgd", "dsgd", "gradient_tracking", "dfedavgm")   # of the bench's registry; the order
                                                            # numbers their mini-batch streams


def evaluate_unrolled(model: UnrolledDGD, worker: Worker, tasks, masks_ltn=None, stale=False) -> dict:
    """Per-layer curve of the unrolled network on ``tasks`` (layer 0 is W_0)."""
    with torch.no_grad():
        shards, Ws = unroll(model, worker, tasks, masks_ltn, stale)
    groups = torch.zeros(Ws[0].shape[0], dtype=torch.int64)
    per_layer = [worker.metrics(W, shards, groups, 1) for W in Ws]
    K = model.config.num_hops
    cumulative = [0.0] + worker.comm.bytes_curve()
    curve = {"rounds": [l * K for l in range(len(Ws))],
             "bytes_per_agent": [cumulative[l * K] for l in range(len(Ws))]}
    curve.update({k: [float(m[k][0]) for m in per_layer] for k in METRICS})
    return curve


def evaluate_baselines(cfg: RunConfig, worker: Worker, test_tasks, progress=True, names=BASELINES) -> dict:
    """The baselines ``names`` (default: every one), step size tuned per round budget on
    validation tasks (module doc)."""
    ec = cfg.eval
    val_tasks = worker.family.batch("val", range(cfg.train.val_tasks, cfg.train.val_tasks + ec.tune_tasks))
    points = baseline_points(ec)
    results = {}
    for name in progress_bar(names, "baselines", progress):
        _, tuning, _ = run_baseline(name, cfg, worker, val_tasks, ec.step_grid, points, pooled=False)
        chosen = []
        for acc, loss in zip(tuning["local_accuracy"], tuning["loss"]):
            loss = np.where(np.isfinite(loss), loss, np.inf)
            chosen.append(ec.step_grid[int(np.lexsort((loss, -acc))[0])])  # best accuracy, then loss
        steps = sorted(set(chosen))
        rounds, test, cumulative = run_baseline(name, cfg, worker, test_tasks, steps, points)
        curve = {"rounds": rounds, "bytes_per_agent": [cumulative[r] for r in rounds]}
        for k in METRICS:
            curve[k] = [float(test[k][i, steps.index(a)]) for i, a in enumerate(chosen)]
        curve["step_size"] = chosen
        results[name] = curve
    return results


def baseline_points(ec) -> list[int]:
    """The rounds at which the baselines are evaluated: the ``eval_points`` below
    ``baseline_rounds``, and ``baseline_rounds`` itself (``--rounds 7`` runs 7 rounds, not the
    4 of the last evaluation point below it)."""
    return [p for p in ec.eval_points if p < ec.baseline_rounds] + [ec.baseline_rounds]


def run_baseline(name: str, cfg: RunConfig, worker: Worker, tasks, step_sizes, points, pooled=True):
    """Run baseline ``name`` on ``tasks`` with every step size at once (replicas of the tasks).

    Returns (rounds, {metric: (P, G) array}, cumulative bytes per agent by round)."""
    replicas = [t for _ in step_sizes for t in tasks]
    shards = worker.load(replicas)
    step_of_node = torch.arange(len(replicas)).repeat_interleave(len(worker.agents)) // len(tasks)
    alpha = torch.as_tensor(step_sizes, dtype=worker.dtype)[step_of_node][:, None].to(worker.device)
    stream = BASELINES.index(name) + 1
    batches = lambda r: worker.positions(replicas, [r], cfg.model.batch_size, stream)[0]
    method = METHODS[name]
    hyper = {"step": alpha}
    if name == "dfedavgm":
        hyper.update(momentum=cfg.eval.momentum, local_steps=cfg.eval.local_steps)
    iterates = method.run(shards.init_weights, shards, worker.comm, hyper, points[-1],
                          batches if method.stochastic else None)
    rounds, table = [], {k: [] for k in METRICS}
    with torch.no_grad():
        for r, (W, _) in enumerate(iterates):
            if r not in points:
                continue
            rounds.append(r)
            for k, v in worker.metrics(W, shards, step_of_node, len(step_sizes), pooled).items():
                table[k].append(v.numpy())
    return rounds, {k: np.array(v) for k, v in table.items()}, [0.0] + worker.comm.bytes_curve()


def evaluate_centralized(worker: Worker, test_tasks) -> dict:
    """The centralized optimum of each test task (pooled seen data), averaged over tasks.

    A reference, not a federated method: the coordinator computes it from every agent's data."""
    family = worker.family
    losses, accs = [], []
    everyone = np.arange(family.config.num_agents)
    for task in test_tasks:
        shards = materialize(family.dataset, [task], everyone, family.config.feature_noise, torch.float64)
        X = shards.X_seen.reshape(-1, shards.X_seen.shape[-1])
        w = solve_centralized(X, shards.Y_seen.reshape(-1), family.num_classes)
        losses.append(float(pooled_loss(w[None], shards.X_pool[0], shards.Y_pool[0])[0]))
        accs.append(float(pooled_accuracy(w[None], shards.X_pool[0], shards.Y_pool[0])[0]))
    return {"loss": float(np.mean(losses)), "accuracy": float(np.mean(accs))}


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
