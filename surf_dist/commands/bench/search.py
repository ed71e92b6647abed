"""Tuning one baseline on the validation tasks: which configurations (start x hyperparameters)
are tried (``Search``), and their validation means at the tuning budgets (``tune``); the
choices themselves are ``protocol.choose``."""
from __future__ import annotations

import itertools
import math
import time

import numpy as np

from ...core.engine import Worker
from ...io.config import STARTS
from ...methods.registry import METHODS
from .grid_run import run_grid, tuning_rounds
from .protocol import METRICS, BenchConfig, Grid, choose

def grids_of(name: str, bench: BenchConfig) -> dict[str, Grid]:
    method = METHODS[name]
    grids = {}
    for key in method.continuous:
        values = {"momentum": bench.momentum_grid, "consensus": bench.consensus_grid}.get(key, bench.step_grid)
        grids[key] = Grid(key, list(values))
    for key, values in method.discrete.items():
        grids[key] = Grid(key, list(values), bench.max_local_steps if key == "local_steps" else math.inf)
    return grids


def config_key(config: dict) -> tuple:
    return tuple(sorted(config.items()))


MOMENTUM_ANCHOR = 0.9      # the momentum at which a two-hyperparameter method's step line starts


class Search:
    """The configurations of one baseline tried on the validation tasks, and their values.

    One-hyperparameter methods: the whole grid (x discrete values x starts). Step and momentum:
    coordinate-wise, per start: every step at momentum 0.9, then every momentum at the step
    chosen most often (pooled accuracy, budgets >= ``edge_min_round``), then every step at the
    momentum chosen most often; each hyperparameter sees its whole grid, at a third of the
    9 x 9 product's cost. A choice at a grid's edge extends that grid (``extend``)."""

    def __init__(self, name: str, worker: Worker, val_tasks, bench: BenchConfig, batch_size: int,
                 say=lambda _: None):
        self.name, self.worker, self.tasks, self.bench, self.batch_size = name, worker, val_tasks, bench, batch_size
        self.say = say
        self.method = METHODS[name]
        self.grids = grids_of(name, bench)
        self.at = tuning_rounds(bench.rounds)
        self.configs: list[dict] = []
        self.columns: dict[str, list] = {k: [] for k in METRICS}
        self.done: set = set()

    def lines(self, fixed: dict) -> list[dict]:
        """Every configuration that varies ``self.method.continuous`` over the grids, except the
        names in ``fixed`` (start, hyperparameter -> value) held."""
        free = [k for k in self.method.continuous if k not in fixed]
        out = []
        discrete = list(self.method.discrete)
        for combo in itertools.product(*(self.grids[k].values for k in discrete)):
            for vals in itertools.product(*(self.grids[k].values for k in free)):
                for start in ([fixed["start"]] if "start" in fixed else STARTS):
                    config = {"start": start, **dict(zip(discrete, combo)), **dict(zip(free, vals)),
                              **{k: v for k, v in fixed.items() if k != "start"}}
                    out.append(config)
        return out

    def run(self, configs: list[dict]) -> None:
        todo = []
        for c in configs:
            if config_key(c) not in self.done:
                todo.append(c)
                self.done.add(config_key(c))
        groups: dict[tuple, list[dict]] = {}
        for c in todo:
            groups.setdefault(tuple(c[k] for k in self.method.discrete), []).append(c)
        for setting, members in groups.items():
            fixed = ", ".join(f"{k} {v}" for k, v in zip(self.method.discrete, setting))
            self.say(f"{self.name}: tuning {len(members)} configurations{' at ' + fixed if fixed else ''}, "
                     f"{self.bench.rounds} rounds ({len(self.configs)} done)")
            out = run_grid(self.name, self.worker, self.tasks, members, self.bench.rounds, self.at,
                           self.bench.pool_cap, self.batch_size)
            for k in METRICS:
                self.columns[k].append(out["values"][k].mean(axis=1))          # (B, R): mean over tasks
            self.configs.extend(members)

    @property
    def values(self) -> dict[str, np.ndarray]:
        return {k: np.concatenate(self.columns[k], axis=1) for k in METRICS}

    def chosen(self, metrics=METRICS, start: str | None = None) -> list[int]:
        """Indices chosen at the budgets >= edge_min_round (with repeats: one per budget and metric)."""
        values = self.values
        rows = self.at >= self.bench.edge_min_round
        allowed = None if start is None else np.array([c["start"] == start for c in self.configs])
        return [int(i) for m in metrics for i in choose(values[m], values["loss"], m, allowed)[rows]]

    def modal(self, key: str, start: str) -> float:
        """The value of ``key`` chosen most often for accuracy (budgets >= edge_min_round; under
        fewer rounds than that, the last budget's choice)."""
        picks = [self.configs[i][key] for i in self.chosen(("accuracy",), start)]
        if not picks:
            values = self.values
            allowed = np.array([c["start"] == start for c in self.configs])
            picks = [self.configs[int(choose(values["accuracy"], values["loss"], "accuracy", allowed)[-1])][key]]
        return max(set(picks), key=picks.count)

    def search(self) -> None:
        if set(self.method.continuous) == {"step", "momentum"}:
            for start in STARTS:
                self.run(self.lines({"start": start, "momentum": MOMENTUM_ANCHOR}))
                self.run(self.lines({"start": start, "step": self.modal("step", start)}))
                self.run(self.lines({"start": start, "momentum": self.modal("momentum", start)}))
        else:
            self.run(self.lines({}))

    def extend(self) -> int:
        """Grow every grid whose edge value is chosen (at a budget >= edge_min_round, for any
        metric) by one value beyond that edge, and try it in place of the edge value in each
        configuration chosen there; repeat up to ``max_extensions`` times. Returns how many."""
        for extensions in range(self.bench.max_extensions):
            chosen = [self.configs[i] for i in set(self.chosen())]
            grown = {k: g.extend({c[k] for c in chosen}) for k, g in self.grids.items()}
            grown = {k: v for k, v in grown.items() if v}
            if not grown:
                return extensions
            new = []
            for key, values in grown.items():      # one step beyond the edge, from the choices on it
                for v in values:
                    edge = _neighbour(self.grids[key].values, v)
                    new += [{**c, key: v} for c in chosen if c[key] == edge]
            self.run(new)
        return self.bench.max_extensions

    def at_edge(self) -> dict:
        out = {}
        values = self.values
        rows = self.at >= self.bench.edge_min_round
        for metric in METRICS:
            idx = set(choose(values[metric], values["loss"], metric)[rows].tolist())
            for key, grid in self.grids.items():
                picked = {self.configs[i][key] for i in idx}
                edges = picked & {min(grid.values), max(grid.values)}
                if key == "momentum":
                    edges.discard(0.0)          # no momentum: a natural edge, nothing beyond it
                if key == "consensus":
                    edges.discard(1.0)          # the full consensus step: a natural edge
                if edges and len(grid.values) > 1:
                    out.setdefault(metric, {})[key] = sorted(edges)
        return out


def _neighbour(values: list, v) -> object:
    """The grid value next to ``v`` (an end value just added): the former edge."""
    i = values.index(v)
    return values[i - 1] if i == len(values) - 1 else values[i + 1]


def tune(name: str, worker: Worker, val_tasks, bench: BenchConfig, batch_size: int, say) -> dict:
    """Validation means of the searched configurations at the tuning rounds (``Search``).
    Returns {"configs", "values": {metric: (B, configs)}, "at", "grids", "extensions", "at_edge"}."""
    start = time.perf_counter()
    s = Search(name, worker, val_tasks, bench, batch_size, say)
    s.search()
    extensions = s.extend()
    say(f"{name}: tuned {len(s.configs)} configurations on {len(val_tasks)} validation tasks "
        f"({time.perf_counter() - start:.0f} s, {extensions} grid extension(s))")
    return {"configs": s.configs, "values": s.values, "at": s.at, "grids": {k: g.values for k, g in s.grids.items()},
            "extensions": extensions, "at_edge": s.at_edge()}
