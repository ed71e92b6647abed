"""Running the bench on one worker: baselines tuned on validation tasks (``search.py``), then
every method on the test draws, every round (the protocol is ``protocol.py``; the files are
``report.py``).

Every worker of a backend runs ``bench_job``; a baseline's grid runs as replicas of the tasks
(``grid_run.py``, ``replicas.py``), so a tuning run is one pass over the rounds whatever the
grid's size.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from ...core.evaluate import centralized_on_test  # noqa: F401 - read as runner.*
from ...core.descent_stats import summarize_descent, unrolled_statistics
from ...core.engine import Worker
from ...core.models import load_model, run_config
from ...methods.registry import METHODS
from ...core.train import unroll
from ...io.config import STARTS
from .protocol import METRICS, BenchConfig, choose, report_task_indices, val_task_indices
from .grid_run import TUNE_SCHEDULE, run_grid, tuning_rounds  # noqa: F401 - run_grid, tuning_rounds read as runner.*
from .search import config_key, tune


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
