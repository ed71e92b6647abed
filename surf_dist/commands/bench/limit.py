"""The information limit: what pooled accuracy R rounds of one-hop messages can carry.

After R rounds in which every message travels one hop, what an agent holds can depend only on
the data of the agents within R hops of it (its R-hop ball), whatever the method: a baseline,
or a learned optimizer with one hop per layer. The limit at R gives each agent the centralized
optimum of its ball's pooled seen data (the regularised cross-entropy of the centralized
reference, L-BFGS) and scores it on the task's pooled held-out samples like the pooled
``accuracy`` of every method. Averaged over agents and tasks it is the centralized reference
restricted to what R rounds can carry. A reference, not a strict bound: another estimator from
the same data may score a little higher on a finite test pool.

The estimator is tuned like a baseline: its l2 regularisation is chosen per budget R from
``L2_GRID`` on the validation tasks (``choose_l2``: the highest mean pooled accuracy there),
and the test tasks are then scored with that choice; no test task takes part in it.

Cost: one L-BFGS solve per distinct ball, so the bench scores ``agents`` evenly spaced agents
of every test task (an unbiased estimate of the mean over agents on a vertex-transitive graph
such as a circulant; a sample elsewhere), warm-starting each agent's solve at R from its ball's
optimum at the R before.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from ...problem.softmax import pooled_accuracy, solve_centralized
from ...problem.tasks import materialize

ROUNDS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 30, 40, 50)
L2_GRID = (1e-4, 1e-2, 1e-1, 1.0)     # the ball estimator's l2, chosen per budget on validation tasks


def reach(shift: sp.spmatrix, rounds: int) -> np.ndarray:
    """(n, n) bool: j is within ``rounds`` hops of i on the shift operator's graph."""
    step = ((abs(shift) + sp.identity(shift.shape[0])) > 0).astype(np.int64).tocsr()
    ball = sp.identity(shift.shape[0], dtype=np.int64, format="csr")
    for _ in range(rounds):
        ball = ((ball @ step) > 0).astype(np.int64)
    return ball.toarray() > 0


def limit_rounds(max_rounds: int) -> list[int]:
    """The budgets the limit is computed at: ``ROUNDS`` up to ``max_rounds``, and it."""
    return sorted({r for r in ROUNDS if r <= max_rounds} | {max_rounds})


def sampled_agents(num_agents: int, agents: int) -> np.ndarray:
    return np.unique(np.linspace(0, num_agents - 1, min(agents, num_agents)).round().astype(int))


def limit_of_task(family, task, rounds: list[int], agents: np.ndarray, pool_cap: int,
                  l2: float | list[float] = 1e-4) -> np.ndarray:
    """Mean pooled accuracy of the sampled agents' ball optima at every budget: (len(rounds),).
    ``l2``: the estimator's regularisation, one for all budgets or one per budget."""
    l2_r = [float(l2)] * len(rounds) if np.isscalar(l2) else [float(v) for v in l2]
    everyone = np.arange(family.config.num_agents)
    sh = materialize(family.dataset, [task], everyone, family.config.feature_noise, torch.float64)
    X_seen, Y_seen = sh.X_seen, sh.Y_seen                      # (n, m, p), (n, m): one task
    X_pool, Y_pool = sh.X_pool[0][:pool_cap], sh.Y_pool[0][:pool_cap]
    solved: dict[bytes, tuple[torch.Tensor, float]] = {}       # agents with the same ball share its optimum
    last = {int(i): None for i in agents}
    out = []
    for R, reg in zip(rounds, l2_r):
        balls = reach(task.shift, R)
        scores = []
        for i in agents:
            ball = balls[i]
            key = np.packbits(ball).tobytes() + repr(reg).encode()
            if key not in solved:
                w = solve_centralized(X_seen[ball].reshape(-1, X_seen.shape[-1]), Y_seen[ball].reshape(-1),
                                      family.num_classes, l2=reg, w0=last[int(i)])
                solved[key] = (w, float(pooled_accuracy(w[None], X_pool, Y_pool)[0]))
            last[int(i)] = solved[key][0]
            scores.append(solved[key][1])
        out.append(float(np.mean(scores)))
    return np.array(out)


def choose_l2(family, val_tasks, rounds: list[int], agents: np.ndarray, pool_cap: int,
              grid: tuple[float, ...] = L2_GRID) -> tuple[list[float], np.ndarray]:
    """Per budget, the l2 of ``grid`` with the highest mean pooled accuracy on ``val_tasks``
    (ties: the smaller l2), and the validation means (len(grid), len(rounds))."""
    values = np.array([[limit_of_task(family, t, rounds, agents, pool_cap, l2) for t in val_tasks] for l2 in grid])
    means = values.mean(axis=1)                                   # (grid, rounds)
    return [float(grid[int(np.argmax(means[:, j]))]) for j in range(len(rounds))], means


def limit_on_test(worker, test_tasks, rounds: list[int], agents: int, pool_cap: int, val_tasks=None) -> dict:
    """{"rounds": [...], "accuracy": (T, len(rounds)), "agents": the sampled agent indices,
    "l2": the regularisation per budget, "validation": its mean pooled accuracy per grid value
    and budget}; with ``val_tasks`` the l2 is chosen on them per budget, else ``L2_GRID[0]``."""
    family = worker.family
    chosen = sampled_agents(family.config.num_agents, agents)
    l2, on_val = [L2_GRID[0]] * len(rounds), None
    if val_tasks:
        l2, on_val = choose_l2(family, val_tasks, rounds, chosen, pool_cap)
    values = np.stack([limit_of_task(family, t, rounds, chosen, pool_cap, l2) for t in test_tasks])
    out = {"rounds": list(rounds), "accuracy": values, "agents": chosen.tolist(), "l2": l2}
    if on_val is not None:
        out["validation"] = {"l2_grid": list(L2_GRID), "accuracy": on_val.tolist()}
    return out
