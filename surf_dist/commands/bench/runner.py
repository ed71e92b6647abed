"""Running the bench on one worker: baselines tuned on validation tasks, then every method on
the test draws, every round (the protocol is ``protocol.py``; the files are ``report.py``).

Every worker of a backend runs ``bench_job``; a baseline's grid runs as replicas of the tasks
(``replicas.py``), so a tuning run is one pass over the rounds whatever the grid's size.
"""
from __future__ import annotations

import dataclasses

import itertools
import math
import time
from pathlib import Path

import numpy as np
import torch

from ...core._malloc import release_freed_memory
from ...core.evaluate import centralized_on_test  # noqa: F401 - read as runner.*
from ...core.descent_stats import summarize_descent, unrolled_statistics
from ...core.engine import Worker
from ...core.models import load_model, run_config
from ...methods.registry import METHODS
from ...methods.accelerated import spectral_lambda2
from ...core.train import unroll
from ...io.config import STARTS
from .protocol import METRICS, BenchConfig, Grid, choose, report_task_indices, val_task_indices
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


# --------------------------------------------------------------------------- one grid run

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
    zero = torch.zeros_like(shards.init_weights)
    W0 = prob.stack([zero if c["start"] == "zero" else shards.init_weights for c in configs])
    hyper = {}
    for key in method.continuous:
        hyper[key] = prob.columns(torch.tensor([c[key] for c in configs], dtype=W0.dtype, device=W0.device))
    for key in method.discrete:
        hyper[key] = configs[0][key]
    if method.needs_spectrum:
        per_task = torch.tensor([spectral_lambda2(t.shift) for t in tasks], dtype=W0.dtype)
        hyper["lambda2"] = per_task[shards.task_of_node][:, None].to(W0.device)
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


# --------------------------------------------------------------------------- tuning

def grids_of(name: str, bench: BenchConfig) -> dict[str, Grid]:
    method = METHODS[name]
    grids = {}
    for key in method.continuous:
        grids[key] = Grid(key, list(bench.momentum_grid if key == "momentum" else bench.step_grid))
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


def selections(tuned: dict, rounds: int) -> dict:
    """{start set: {metric: config index at every round 0..rounds}}: best of both starts, and
    each start alone (the choice at a round is the one made at the last tuning round <= it)."""
    configs, values, at = tuned["configs"], tuned["values"], tuned["at"]
    starts = np.array([c["start"] for c in configs])
    hold = np.searchsorted(at, np.arange(rounds + 1), side="right") - 1
    out = {}
    for which in ("best", *STARTS):
        allowed = None if which == "best" else starts == which
        out[which] = {m: choose(values[m], values["loss"], m, allowed)[hold] for m in METRICS}
    return out


# --------------------------------------------------------------------------- test curves

def baseline_on_test(name: str, worker: Worker, test_tasks, tuned: dict, bench: BenchConfig,
                     batch_size: int) -> dict:
    """Every chosen configuration on the test tasks at every round (``run_choices``)."""
    return run_choices(name, worker, test_tasks, tuned["configs"], selections(tuned, bench.rounds), bench,
                       batch_size)


def run_choices(name: str, worker: Worker, test_tasks, configs: list[dict], picks: dict, bench: BenchConfig,
                batch_size: int) -> dict:
    """The configurations ``picks`` chooses ({start set: {metric: index into ``configs`` at every
    round}}) on the test tasks; the curves per start set {start set: {metric: (T, rounds + 1),
    "bytes_METRIC"/"grad_evals_METRIC": (rounds + 1,), "chosen": {metric: segments}}}."""
    method = METHODS[name]
    needed = sorted({int(i) for sel in picks.values() for idx in sel.values() for i in idx})
    by_discrete: dict[tuple, list[int]] = {}
    for i in needed:
        by_discrete.setdefault(tuple(configs[i][k] for k in method.discrete), []).append(i)
    pooled_rounds = {i: np.zeros(bench.rounds + 1, dtype=bool) for i in needed}
    horizon = dict.fromkeys(needed, 0)          # the last round at which a configuration is chosen
    for sel in picks.values():
        for r, i in enumerate(sel["accuracy"]):
            pooled_rounds[int(i)][r] = True
        for idx in sel.values():
            for r, i in enumerate(idx):
                horizon[int(i)] = max(horizon[int(i)], r)
    bounds = [b for b in (*(until for until, _ in TUNE_SCHEDULE if until), bench.rounds) if b <= bench.rounds]
    runs = {}
    for group in by_discrete.values():      # each configuration runs only as far as it is chosen
        for bound in bounds:
            members = [i for i in group if horizon[i] <= bound and i not in runs]
            if not members:
                continue
            out = run_grid(name, worker, test_tasks, [configs[i] for i in members], bound, np.arange(bound + 1),
                           bench.pool_cap, batch_size, np.stack([pooled_rounds[i][:bound + 1] for i in members], 1))
            for j, i in enumerate(members):
                runs[i] = {"values": {k: _padded(out["values"][k][:, :, j], bench.rounds) for k in METRICS},
                           "bytes": _padded(out["bytes"], bench.rounds),       # (rounds+1, T), (rounds+1,)
                           "grad_evals": _padded(out["grad_evals"], bench.rounds)}
    curves = {}
    for which, sel in picks.items():
        entry = {}
        for metric, idx in sel.items():
            entry[metric] = np.stack([runs[int(i)]["values"][metric][r] for r, i in enumerate(idx)], axis=1)
            entry[f"bytes_{metric}"] = np.array([runs[int(i)]["bytes"][r] for r, i in enumerate(idx)])
            entry[f"grad_evals_{metric}"] = np.array([runs[int(i)]["grad_evals"][r] for r, i in enumerate(idx)])
        entry["chosen"] = {m: segments(idx, configs) for m, idx in sel.items()}
        curves[which] = entry
    return curves


def _padded(values: np.ndarray, rounds: int) -> np.ndarray:
    """Per-round values (r + 1, ...) to rounds + 1 rows, NaN after round r (never chosen there)."""
    out = np.full((rounds + 1, *values.shape[1:]), np.nan)
    out[:len(values)] = values
    return out


def from_segments(tuned: dict, rounds: int) -> tuple[list[dict], dict]:
    """(configs, picks) of choices saved as segments ({start set: {metric: [segments]}}),
    cut or held to ``rounds``: what ``run_choices`` replays."""
    configs: list[dict] = []
    keys: dict[tuple, int] = {}
    picks = {}
    for which, per_metric in tuned.items():
        picks[which] = {}
        for metric, segs in per_metric.items():
            idx = np.empty(rounds + 1, dtype=int)
            for seg in segs:
                key = config_key(seg["config"])
                if key not in keys:
                    keys[key] = len(configs)
                    configs.append(dict(seg["config"]))
                lo, hi = seg["from_round"], min(seg["to_round"], rounds)
                if lo <= rounds:
                    idx[lo:hi + 1] = keys[key]
            last = segs[-1]["to_round"]
            if last < rounds:
                idx[last + 1:] = keys[config_key(segs[-1]["config"])]
            picks[which][metric] = idx
    return configs, picks


def segments(idx: np.ndarray, configs: list[dict]) -> list[dict]:
    """Per-round choices as runs: [{"from_round", "to_round", "config"}]."""
    out = []
    for r, i in enumerate(idx.tolist()):
        if out and out[-1]["index"] == i:
            out[-1]["to_round"] = r
        else:
            out.append({"from_round": r, "to_round": r, "index": i})
    return [{"from_round": s["from_round"], "to_round": s["to_round"], "config": configs[s["index"]]} for s in out]


def learned_on_test(run_dir: str, worker: Worker, test_tasks, permuted_tasks=None) -> dict:
    """A trained optimizer's per-task values at every layer {metric: (T, L + 1)}, its rounds,
    bytes and gradient evaluations per agent per layer, and its descent on these tasks
    (``descent_stats.summarize_descent``: layers whose mean held-out loss rose, fractions of
    violated descent constraints). With ``permuted_tasks`` (the same tasks, labels permuted), started
    at the tasks' W_0 whatever the model's start, its last layer there and on the unpermuted tasks
    from the same start
    also its last layer's values there {metric: (T,)} (an optimizer that memorised the training
    labels falls there)."""
    model = load_model(Path(run_dir), worker)
    T = len(test_tasks)
    with torch.no_grad():
        shards, Ws = unroll(model, worker, test_tasks)
    per_layer = [worker.metrics(W, shards, shards.task_of_node, T) for W in Ws]
    cfg = model.config
    cumulative = [0.0] + worker.comm.bytes_curve()
    K = cfg.num_hops
    steps = cfg.local_steps if cfg.local_net == "compact" else 1
    trained = run_config(Path(run_dir), worker.files).train
    descent = summarize_descent(unrolled_statistics(shards, Ws, worker.comm, T, trained.eps, trained.descent))
    out = {**{k: np.stack([m[k].numpy() for m in per_layer], axis=1) for k in METRICS},
           "rounds": [l * K for l in range(len(Ws))],
           "bytes": [cumulative[l * K] for l in range(len(Ws))],
           "grad_evals": [l * steps + (cfg.warmup_steps if l else 0) for l in range(len(Ws))],
           "model": {"num_layers": cfg.num_layers, "num_hops": K, "local_steps": steps,
                     "batch_size": cfg.batch_size, "local_net": cfg.local_net, "start": cfg.start},
           "descent": {**descent, "eps": trained.eps}}
    if permuted_tasks is not None:
        # From the task's W_0, not W_0 = 0: relabelling the classes only permutes the blocks of a
        # zero start's iterates (the same accuracy by symmetry), so the check could not fail there.
        model.config = dataclasses.replace(cfg, start="task")
        for key, tasks in (("permuted", permuted_tasks), ("unpermuted_from_task_start", test_tasks)):
            with torch.no_grad():
                shards, Ws = unroll(model, worker, tasks)
            out[key] = {k: v.numpy() for k, v in worker.metrics(Ws[-1], shards, shards.task_of_node, T).items()}
        model.config = cfg
    return out


def methods_of(bench: BenchConfig) -> list[str]:
    names = list(bench.methods or METHODS)
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"unknown bench method(s) {unknown}; choose from {', '.join(METHODS)}")
    return names


def baseline_job(name: str, worker: Worker, bench: BenchConfig, batch_size: int, say,
                 choices: dict | None = None) -> dict:
    """Tune one baseline on validation tasks (or replay ``choices`` made so before, saved as
    segments), then run its choices on every test draw."""
    fam = worker.family
    test_tasks = [t for d in range(bench.draws) for t in fam.batch("test", report_task_indices(bench, d))]
    start = time.perf_counter()
    if choices is not None:
        configs, picks = from_segments(choices["tuned"], bench.rounds)
        curves = run_choices(name, worker, test_tasks, configs, picks, bench, batch_size)
        say(f"{name}: its validation choices on the test tasks ({time.perf_counter() - start:.0f} s)")
        return {"curves": curves, "grids": choices["grids"], "extensions": 0, "at_edge": choices.get("at_edge", {}),
                "configurations_tried": choices["configurations_tried"], "doc": METHODS[name].doc}
    tuned = tune(name, worker, fam.batch("val", val_task_indices(bench)), bench, batch_size, say)
    start = time.perf_counter()
    curves = baseline_on_test(name, worker, test_tasks, tuned, bench, batch_size)
    say(f"{name}: test draws ({time.perf_counter() - start:.0f} s)")
    return {"curves": curves, "grids": tuned["grids"], "extensions": tuned["extensions"], "at_edge": tuned["at_edge"],
            "configurations_tried": len(tuned["configs"]), "doc": METHODS[name].doc}
