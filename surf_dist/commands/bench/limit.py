"""The information limit: what pooled accuracy R rounds of one-hop messages can carry.

After R rounds in which every message travels one hop, what an agent holds can depend only on
the data of the agents within R hops of it (its R-hop ball), whatever the method: a baseline,
or a learned optimizer with one hop per layer. The limit at R gives each agent the centralized
optimum of its ball's pooled seen data (the regularised cross-entropy of the centralized
reference, L-BFGS) and scores it on the task's pooled held-out samples like the pooled
``accuracy`` of every method. Averaged over agents and tasks it is the centralized reference
restricted to what R rounds can carry. A reference, not a strict bound: another estimator from
the same data may score a little higher on a finite test pool.

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


def limit_of_task(family, task, rounds: list[int], agents: np.ndarray, pool_cap: int) -> np.ndarray:
    """Mean pooled accuracy of the sampled agents' ball optima at every budget: (len(rounds),)."""
    everyone = np.arange(family.config.num_agents)
    sh = materialize(family.dataset, [task], everyone, family.config.feature_noise, torch.float64)
    X_seen, Y_seen = sh.X_seen, sh.Y_seen                      # (n, m, p), (n, m): one task
    X_pool, Y_pool = sh.X_pool[0][:pool_cap], sh.Y_pool[0][:pool_cap]
    solved: dict[bytes, tuple[torch.Tensor, float]] = {}       # agents with the same ball share its optimum
    last = {int(i): None for i in agents}
    out = []
    for R in rounds:
        balls = reach(task.shift, R)
        scores = []
        for i in agents:
            ball = balls[i]
            key = np.packbits(ball).tobytes()
            if key not in solved:
                w = solve_centralized(X_seen[ball].reshape(-1, X_seen.shape[-1]), Y_seen[ball].reshape(-1),
                                      family.num_classes, w0=last[int(i)])
                solved[key] = (w, float(pooled_accuracy(w[None], X_pool, Y_pool)[0]))
            last[int(i)] = solved[key][0]
            scores.append(solved[key][1])
        out.append(float(np.mean(scores)))
    return np.array(out)


def limit_on_test(worker, test_tasks, rounds: list[int], agents: int, pool_cap: int) -> dict:
    """{"rounds": [...], "accuracy": (T, len(rounds)), "agents": the sampled agent indices}."""
    family = worker.family
    chosen = sampled_agents(family.config.num_agents, agents)
    values = np.stack([limit_of_task(family, t, rounds, chosen, pool_cap) for t in test_tasks])
    return {"rounds": list(rounds), "accuracy": values, "agents": chosen.tolist()}
