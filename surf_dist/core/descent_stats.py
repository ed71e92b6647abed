"""Per-layer descent of an unrolled model on test tasks: where the constraint
g_l <= (1 - eps) g_(l-1) is violated and where the held-out loss rose, per task and per node.

# L: layers, N: nodes of the task batch (task, agent), T: tasks
"""
from __future__ import annotations

import numpy as np
import torch

from ..methods.constraints import descent_values
from .engine import Worker
from ..problem.softmax import loss_per_agent
from .train import unroll


def exceeds(values, eps: float = 0.0):
    """Where a layer fails to descend: ``values[l] > (1 - eps) values[l - 1]`` for l = 1..L.

    ``values``: (L + 1, ...) array or tensor; eps = 0 asks where the value rose."""
    return values[1:] > (1.0 - eps) * values[:-1]


def layer_statistics(model, worker: Worker, tasks, eps: float, descent: str) -> dict:
    """Per-layer descent on ``tasks``: the constraint's g (seen data, as in training) and the
    held-out loss, each as the mean over tasks, per task, and indicator fractions.

    ``violated_*`` test g_l > (1 - eps) g_(l-1); ``rose_*`` test held-out loss_l > loss_(l-1).
    ``*_mean``: on the mean over test tasks (the constraint in training is an expectation);
    ``*_tasks``: fraction of tasks (per-task means); ``*_agents``: fraction of (task, agent) nodes."""
    with torch.no_grad():
        shards, Ws = unroll(model, worker, tasks)
    return unrolled_statistics(shards, Ws, worker.comm, len(tasks), eps, descent)


def unrolled_statistics(shards, Ws, comm, T: int, eps: float, descent: str) -> dict:
    """``layer_statistics`` of iterates already computed: ``Ws`` [W_0..W_L] on ``shards`` (T tasks)."""
    with torch.no_grad():
        g = descent_values(Ws, shards.X_seen, shards.Y_seen, descent)                      # (L+1, N)
        held = torch.stack([loss_per_agent(W, shards.X_held, shards.Y_held) for W in Ws])  # (L+1, N)
    groups = shards.task_of_node
    per_task = lambda v_ln: torch.stack([comm.group_mean(v, groups, T) for v in v_ln]).numpy()  # (rows, T)
    stats = {}
    for key, values, tol in (("g", g, eps), ("held_loss", held, 0.0)):
        tag = "violated" if key == "g" else "rose"
        task_values = per_task(values)
        stats[f"{key}_mean"] = task_values.mean(1).tolist()
        stats[f"{key}_per_task"] = task_values.tolist()
        stats[f"{tag}_mean"] = [bool(v) for v in exceeds(task_values.mean(1), tol)]
        stats[f"{tag}_tasks"] = exceeds(task_values, tol).mean(1).tolist()
        stats[f"{tag}_agents"] = per_task(exceeds(values, tol).double()).mean(1).tolist()
    stats["eps"], stats["descent"] = eps, descent
    return stats


def summarize_descent(stats: dict) -> dict:
    """Totals over layers: layers whose mean violated / rose, and overall fractions."""
    out = {}
    for tag in ("violated", "rose"):
        out[f"{tag}_layers_mean"] = int(sum(stats[f"{tag}_mean"]))
        out[f"{tag}_fraction_task_layers"] = float(np.mean(stats[f"{tag}_tasks"]))
        out[f"{tag}_fraction_agent_layers"] = float(np.mean(stats[f"{tag}_agents"]))
    return out
