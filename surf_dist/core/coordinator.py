"""The coordinator: owns the multipliers and the dropout generators, records metrics and
writes checkpoints. Workers never update the duals or draw dropouts themselves.

The local and torch backends run it inside rank 0 (it then broadcasts its decisions); the Ray
backend runs the same class as a Ray actor of its own. All of its state is in ``state()``, so
a checkpoint restores it exactly.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..io.checkpoint import save_checkpoint
from ..methods.constraints import dual_step
from ..io.metrics_log import MetricsLogger

STREAMS = {"train": 7, "eval": 11}
LINK_STREAM = 13       # link failures: keyed by the task's seed and the round (``draw_link_survival``)


class Coordinator:
    def __init__(self, num_layers: int, dual_lr: float, seed: int, run_dir: str | None = None):
        self.dual_lr = dual_lr
        self.duals = torch.zeros(num_layers, dtype=torch.float64)
        self.rngs = {name: np.random.default_rng(np.random.SeedSequence([seed, key]))
                     for name, key in STREAMS.items()}
        self.run_dir = Path(run_dir) if run_dir else None
        self.logger = None

    def dual_step(self, slacks_l: torch.Tensor) -> torch.Tensor:
        """lambda <- max(0, lambda + dual_lr * slack); returns the new multipliers."""
        self.duals = dual_step(self.duals, slacks_l.double(), self.dual_lr)
        return self.duals.clone()

    def draw_masks(self, stream: str, num_layers: int, num_tasks: int, num_agents: int,
                   num_async: int) -> np.ndarray:
        """(L, T, n) bool participation: ``num_async`` random agents per task and layer sit out."""
        return draw_async_masks(self.rngs[stream], num_layers, num_tasks, num_agents, num_async)

    def record(self, row: dict) -> None:
        if self.run_dir is None:
            return
        if self.logger is None:
            self.run_dir.mkdir(parents=True, exist_ok=True)     # on the driver's machine
            self.logger = MetricsLogger(self.run_dir, len(self.duals), append=row["step"] > 0,
                                        first_step=row["step"])
        self.logger.write(row)

    def save(self, name: str, payload: dict) -> None:
        """Atomically write ``payload`` plus the coordinator's own state to ``run_dir/name``."""
        if self.run_dir is not None:
            if self.logger is not None:   # the rows a checkpoint covers are on disk before it
                self.logger.flush()
            save_checkpoint(self.run_dir / name, {**payload, "coordinator": self.state()})

    def state(self) -> dict:
        return {"duals": self.duals.clone(),
                "rngs": json.dumps({k: r.bit_generator.state for k, r in self.rngs.items()})}

    def restore(self, state: dict) -> None:
        self.duals = state["duals"].clone()
        for name, rng_state in json.loads(state["rngs"]).items():
            self.rngs[name].bit_generator.state = rng_state

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
            self.logger = None


def draw_async_masks(generator: np.random.Generator, num_layers: int, num_tasks: int,
                     num_agents: int, num_async: int) -> np.ndarray:
    """(L, T, n) bool, False for ``num_async`` random agents per task and layer (a fresh draw
    at every layer)."""
    keys = generator.random((num_layers, num_tasks, num_agents))
    return keys.argsort(-1).argsort(-1) >= num_async


def draw_link_survival(task_seed: int, round_: int, num_edges: int, p: float) -> np.ndarray:
    """(E,) bool: which of a task's E undirected edges survive round ``round_`` (each fails
    independently with probability p). The coordinator's link stream, keyed by the task's seed
    and the round rather than advanced by calls: every rank of every backend derives the same
    draws for the tasks it hosts without a broadcast, whatever the batch or the worker count."""
    rng = np.random.default_rng(np.random.SeedSequence([int(task_seed), LINK_STREAM, int(round_)]))
    return rng.random(num_edges) >= p
