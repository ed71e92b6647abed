"""The measurement protocol of ``surf-dist bench``: which tasks, which choices, which numbers.

Pure functions on numbers; nothing here runs a method.

- **Tasks.** Hyperparameters are chosen on ``tune_tasks`` validation tasks (validation split,
  indices from ``VAL_OFFSET``). The report uses ``draws`` disjoint draws of ``tasks_per_draw``
  test tasks each, at test-split indices ``report_seed * REPORT_STRIDE + draw * tasks + k``;
  indices below ``REPORT_STRIDE`` (report seed 0) are the development tasks and never reported.
- **Choices per round budget.** Every configuration (start x hyperparameters) runs on the
  validation tasks for every round; at each round r and for each metric the configuration
  with the best validation mean at r is chosen (accuracies: highest, ties by lower loss;
  loss: lowest). The test curve at r is that configuration's test value at r. A choice at the
  edge of a grid (at a round >= ``edge_min_round``) extends the grid.
- **Numbers.** ``rounds_to_target``: the first round whose mean over a draw's tasks reaches the
  learned optimizer's final value on that draw. ``ratio``: the best baseline's rounds to
  target over the learned optimizer's rounds. ``budget_gap``: the learned optimizer's value
  minus the best baseline's at the learned optimizer's round count (loss: the baseline's
  minus the learned one's, so positive always favours the learned optimizer). Each is given
  per draw, as the mean over draws, and with a percentile bootstrap interval that resamples
  test tasks within every draw (``bootstrap`` resamples, seeded).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ...problem.softmax import METRICS  # noqa: F401 - the bench's metrics, read as protocol.METRICS

HIGHER_IS_BETTER = {"accuracy": True, "local_accuracy": True, "loss": False}
VAL_OFFSET = 1000
REPORT_STRIDE = 100_000


@dataclass(frozen=True)
class BenchConfig:
    report_seed: int = 1
    draws: int = 3
    tasks_per_draw: int = 10
    tune_tasks: int = 10
    rounds: int = 100                  # 5x the default learned optimizer's 20; later crossings: ratio > 5x
    step_grid: tuple[float, ...] = tuple(2.0 ** k for k in range(-4, 5))                # 1/16 .. 16
    momentum_grid: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99)
    consensus_grid: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.7, 1.0)   # CHOCO's consensus step gamma
    max_extensions: int = 3            # per hyperparameter and direction
    max_local_steps: int = 16          # local steps grow at the edge up to 4x SURF's 4 gradient steps per round
    edge_min_round: int = 5            # choices before this round do not extend a grid
    pool_cap: int = 256                # pooled held-out samples scored per task (all when fewer)
    limit_agents: int = 10             # agents per test task whose R-hop ball optimum gives the limit (limit.py)
    bootstrap: int = 2000
    confidence: float = 0.95
    methods: tuple[str, ...] = ()      # () : every baseline

    def __post_init__(self):
        if self.report_seed < 1:
            raise ValueError(f"report_seed must be >= 1 (0 names the development tasks), got {self.report_seed}")
        for name in ("draws", "tasks_per_draw", "tune_tasks", "rounds", "pool_cap", "bootstrap", "limit_agents"):
            if getattr(self, name) < 1:
                raise ValueError(f"bench {name} must be a positive integer, got {getattr(self, name)}")
        if self.max_local_steps < 1:
            raise ValueError(f"max_local_steps must be >= 1, got {self.max_local_steps}")
        if self.draws * self.tasks_per_draw > REPORT_STRIDE:
            raise ValueError(f"draws x tasks_per_draw must stay below {REPORT_STRIDE}")
        if len(self.step_grid) < 2 or min(self.step_grid) <= 0:
            raise ValueError("step_grid needs at least two positive values")
        if not self.consensus_grid or not all(0 < c <= 1 for c in self.consensus_grid):
            raise ValueError("consensus_grid values must lie in (0, 1]")
        if not all(0 <= b < 1 for b in self.momentum_grid):
            raise ValueError("momentum values must lie in [0, 1)")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")


def report_task_indices(cfg: BenchConfig, draw: int) -> list[int]:
    base = cfg.report_seed * REPORT_STRIDE + draw * cfg.tasks_per_draw
    return list(range(base, base + cfg.tasks_per_draw))


def val_task_indices(cfg: BenchConfig) -> list[int]:
    return list(range(VAL_OFFSET, VAL_OFFSET + cfg.tune_tasks))


# --------------------------------------------------------------------------- choices

def choose(values_rc: np.ndarray, loss_rc: np.ndarray, metric: str, allowed: np.ndarray | None = None) -> np.ndarray:
    """Index of the chosen configuration at every round: (rounds + 1, configs) -> (rounds + 1,).

    ``values_rc`` / ``loss_rc``: validation means; ``allowed`` (configs,) bool restricts the
    choice (one start only). A configuration whose value or loss is not finite (a diverged run)
    is never chosen over one whose both are."""
    sign = -1.0 if HIGHER_IS_BETTER[metric] else 1.0
    finite = np.isfinite(values_rc) & np.isfinite(loss_rc)      # a diverged run is never chosen
    primary = np.where(finite, sign * values_rc, np.inf)
    secondary = np.where(finite, loss_rc, np.finfo(float).max)
    if allowed is not None:
        primary = np.where(allowed[None], primary, np.inf)
    best = primary.min(axis=1, keepdims=True)
    tied = primary <= best + 1e-9                 # equal up to the order of sums (any backend)
    secondary = np.where(tied, secondary, np.inf)
    least = secondary.min(axis=1, keepdims=True)
    with np.errstate(over="ignore"):         # every configuration diverged: least is the largest float
        return (secondary <= least + 1e-9 * np.maximum(1.0, np.abs(least))).argmax(axis=1)   # then the first


@dataclass
class Grid:
    """The values of one hyperparameter, extended where a choice sits at an edge. ``cap``: the
    largest value an extension may add (local steps: each doubling doubles a run's cost)."""
    name: str
    values: list
    cap: float = math.inf

    def extend(self, chosen: set) -> list:
        """New values beyond any edge in ``chosen`` (empty when none). A one-value grid is a
        fixed setting (DFedAvgM's compute-matched local steps), never extended."""
        if len(self.values) == 1:
            return []
        new = []
        lo, hi = min(self.values), max(self.values)
        if self.name == "momentum":
            if hi in chosen:
                new.append(1 - (1 - hi) / 2)
        elif self.name == "consensus":          # gamma <= 1: only the small end grows
            if lo in chosen:
                new.append(lo / 2)
        elif self.name in ("local_steps", "gossip_rounds"):
            if hi in chosen and hi * 2 <= self.cap:
                new.append(hi * 2)
        else:
            if hi in chosen:
                new.append(hi * 2)
            if lo in chosen:
                new.append(lo / 2)
        self.values = sorted(self.values + new)
        return new


# --------------------------------------------------------------------------- numbers

def crossings(curves_dr: np.ndarray, targets_d: np.ndarray, higher: bool) -> np.ndarray:
    """First round at which each curve reaches its target: (D, R+1), (D,) -> (D,), inf if never."""
    hit = curves_dr >= targets_d[:, None] if higher else curves_dr <= targets_d[:, None]
    return np.where(hit.any(1), hit.argmax(1), np.inf)


@dataclass
class Comparison:
    """A learned optimizer against the baselines on the test draws, for one metric.

    ``learned_dt`` (draws, tasks): its value after ``learned_rounds``; ``baselines``:
    name -> (draws, tasks, rounds + 1) per-task test curves at every round;
    ``bytes``: name -> (draws, rounds + 1) cumulative bytes per agent; ``learned_bytes``."""
    metric: str
    learned_dt: np.ndarray
    learned_rounds: int
    baselines: dict[str, np.ndarray]
    bytes: dict[str, np.ndarray] = field(default_factory=dict)
    learned_bytes: float = 0.0

    def numbers(self, idx_dt: np.ndarray | None = None) -> dict:
        """Per draw: ratio, bytes ratio, budget gap, each baseline's rounds to target, for the
        tasks ``idx_dt`` (draws, tasks) of every draw (default: all of them)."""
        D, T = self.learned_dt.shape
        idx = np.tile(np.arange(T), (D, 1)) if idx_dt is None else idx_dt
        rows = np.arange(D)[:, None]
        higher = HIGHER_IS_BETTER[self.metric]
        target = self.learned_dt[rows, idx].mean(1)                              # (D,)
        curves = {n: c[rows, idx].mean(1) for n, c in self.baselines.items()}   # (D, R+1)
        need = {n: crossings(c, target, higher) for n, c in curves.items()}
        best_need = np.min(np.stack(list(need.values())), axis=0)
        budget = self.learned_rounds
        at_budget = np.stack([c[:, budget] for c in curves.values()])          # (B, D)
        best_at = at_budget.max(0) if higher else at_budget.min(0)
        gap = (target - best_at) if higher else (best_at - target)
        out = {"target": target, "rounds_to_target": need, "ratio": best_need / budget, "budget_gap": gap,
               "strongest": [min(need, key=lambda n: need[n][d]) for d in range(D)]}
        if self.bytes and self.learned_bytes:
            bneed = []
            for d in range(D):
                costs = [self.bytes[n][d][int(need[n][d])] if math.isfinite(need[n][d]) else math.inf for n in need]
                bneed.append(min(costs))
            out["bytes_ratio"] = np.array(bneed) / self.learned_bytes
        return out

    def summary(self, resamples: int, confidence: float, seed: int = 0) -> dict:
        """``ratio``, ``bytes_ratio`` and ``budget_gap`` as {per_draw, mean, low, high}."""
        point = self.numbers()
        rng = np.random.default_rng(seed)
        D, T = self.learned_dt.shape
        boot = {k: [] for k in ("ratio", "bytes_ratio", "budget_gap") if k in point}
        for _ in range(resamples):
            sample = self.numbers(rng.integers(0, T, size=(D, T)))
            for k in boot:
                boot[k].append(float(np.mean(sample[k])))
        q = (1 - confidence) / 2
        out = {}
        for k, values in boot.items():
            v = np.array(values)
            out[k] = {"per_draw": _finite_list(point[k]), "mean": _finite(float(np.mean(point[k]))),
                      "low": _finite(float(np.quantile(v, q, method="inverted_cdf"))),
                      "high": _finite(float(np.quantile(v, 1 - q, method="inverted_cdf")))}
        out["rounds_to_target"] = {n: _finite_list(v) for n, v in point["rounds_to_target"].items()}
        out["target"] = point["target"].tolist()
        out["strongest"] = point["strongest"]
        return out


def mean_difference(a_dt: np.ndarray, b_dt: np.ndarray, resamples: int, confidence: float, seed: int = 0) -> dict:
    """The mean over draws of the per-draw mean of ``a - b`` (draws, tasks), {per_draw, mean,
    low, high}: a percentile bootstrap resampling the tasks within every draw, as ``Comparison``."""
    diff = np.asarray(a_dt, dtype=float) - np.asarray(b_dt, dtype=float)
    D, T = diff.shape
    rng = np.random.default_rng(seed)
    boot = [diff[np.arange(D)[:, None], rng.integers(0, T, size=(D, T))].mean() for _ in range(resamples)]
    q = (1 - confidence) / 2
    return {"per_draw": diff.mean(1).tolist(), "mean": float(diff.mean()),
            "low": float(np.quantile(boot, q, method="inverted_cdf")),
            "high": float(np.quantile(boot, 1 - q, method="inverted_cdf"))}


def _finite(x: float):
    """JSON has no infinity: a target never reached within the rounds run is ``None``."""
    return x if math.isfinite(x) else None


def _finite_list(values) -> list:
    return [_finite(float(v)) for v in values]
