"""The bench's baselines and centralized optimum in the curve format of ``summary.json``, for
``surf-dist evaluate``, ``baselines``, ``demo --train`` and ``experiment``: one registry
(``methods/registry.py``), one tuning rule (``runner.tune``: the bench's grids, starts and
choice per round budget and metric on its validation tasks), nothing tuned on test tasks.

A curve: ``rounds`` (the ``eval.eval_points`` below ``eval.baseline_rounds``, and that), the
mean over the test tasks of each metric at those rounds, each metric's value from the
configuration chosen for that metric at that round, ``bytes_per_agent`` (of the configurations
chosen for ``accuracy``) and ``chosen`` (the choices as segments of rounds).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from ...core.engine import Worker
from ...core.evaluate import centralized_on_test
from ...io.config import RunConfig
from ...io.progress import bar as progress_bar
from ...methods.registry import METHODS
from .protocol import METRICS, BenchConfig, val_task_indices
from .runner import run_choices, selections, tune

SUMMARY_BASELINES = ("dgd", "dsgd", "gradient_tracking", "dfedavgm")   # of the registry, in this order


def summary_bench(cfg: RunConfig) -> BenchConfig:
    """The bench's protocol at the evaluation's round count and validation tasks."""
    return BenchConfig(tune_tasks=cfg.eval.tune_tasks, rounds=cfg.eval.baseline_rounds)


def baseline_points(cfg: RunConfig) -> list[int]:
    """The rounds at which the baselines' curves are given: the ``eval_points`` below
    ``baseline_rounds``, and ``baseline_rounds`` itself."""
    ec = cfg.eval
    return [p for p in ec.eval_points if p < ec.baseline_rounds] + [ec.baseline_rounds]


def tuned_baselines(cfg: RunConfig, worker: Worker, test_tasks, progress: bool = True,
                    names=SUMMARY_BASELINES) -> dict:
    """{name: curve} of the baselines ``names``, tuned as the bench tunes them (module doc)."""
    unknown = [n for n in names if n not in METHODS]
    assert not unknown, f"not in the registry: {unknown}"
    bench = summary_bench(cfg)
    val_tasks = worker.family.batch("val", val_task_indices(bench))
    points = baseline_points(cfg)
    talk = progress and worker.comm.rank == 0
    say = (lambda m: print(f"[{time.strftime('%H:%M:%S')}] baselines: {m}", file=sys.stderr, flush=True)) \
        if talk else (lambda _: None)
    out = {}
    for name in progress_bar(names, "baselines", progress):
        tuned = tune(name, worker, val_tasks, bench, cfg.model.batch_size, say)
        picks = {"best": selections(tuned, bench.rounds)["best"]}
        best = run_choices(name, worker, test_tasks, tuned["configs"], picks, bench, cfg.model.batch_size)["best"]
        out[name] = {"rounds": points, "bytes_per_agent": [float(best["bytes_accuracy"][r]) for r in points],
                     **{m: [float(np.mean(best[m][:, r])) for r in points] for m in METRICS},
                     "chosen": best["chosen"]}
    return out


def centralized_summary(cfg: RunConfig, worker: Worker, test_tasks) -> dict:
    """The bench's centralized optimum, each metric's mean over the test tasks."""
    return {m: float(np.mean(v)) for m, v in centralized_on_test(worker, test_tasks, summary_bench(cfg).pool_cap).items()}
