"""``surf-dist bench [RUN ...] --out DIR``: learned optimizers against every baseline, measured
the same way (the protocol: ``protocol.py``; the files: ``report.py``).

Each baseline's step size, momentum, local steps or gossip rounds and its start (W_0 = 0 or
the task's W_0) are chosen per round budget on validation tasks; the learned optimizers
(default: the shipped ones) and the chosen baselines then run on disjoint draws of fresh test
tasks, every round evaluated, and the report gives the rounds ratio and the fixed-budget gap
with intervals. On the local backend with 2+ cores the baselines are split between this
process and a helper process; on torch / Ray every rank runs every method on its agents.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from .._malloc import keep_freed_memory
from ..comm.local import LocalCommunicator
from ..config import RunConfig, from_dict
from ..engine import Worker
from ..guards import helper_pool, stop_pool
from ..methods import METHODS
from .protocol import BenchConfig, report_task_indices
from .runner import baseline_job, centralized_on_test, learned_on_test, methods_of

DEFAULT_RUNS = ("pretrained", "pretrained:scratch", "pretrained:robust")


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] bench: {message}", file=sys.stderr, flush=True)


def cost_estimate(name: str, bench: BenchConfig) -> float:
    """Relative cost of a baseline (measured on the digits): configurations searched x
    gradient evaluations per round (local steps, and their edge extensions, weigh most)."""
    m = METHODS[name]
    configs = 2 * len(bench.step_grid) * (3 if "momentum" in m.continuous else 1)   # coordinate lines
    per_round = 1.0
    for key, values in m.discrete.items():
        per_round *= (sum(values) + 2 * max(values) if len(values) > 1 else max(values)) if key == "local_steps" \
            else len(values)
    return configs * per_round


def split_methods(names: list[str], bench: BenchConfig) -> tuple[list[str], list[str]]:
    """Two lists of about equal estimated cost (greedy, most expensive first)."""
    bins: tuple[list[str], list[str]] = ([], [])
    load = [0.0, 0.0]
    for name in sorted(names, key=lambda n: -cost_estimate(n, bench)):
        i = int(load[1] < load[0])
        bins[i].append(name)
        load[i] += cost_estimate(name, bench)
    return bins


def baselines_detached(cfg_dict: dict, bench_dict: dict, names: list[str], choices: dict | None = None) -> dict:
    """Some baselines on the local backend, in a helper process."""
    from ..jobs import local_worker
    keep_freed_memory()
    cfg, bench = from_dict(cfg_dict), BenchConfig(**bench_dict)
    worker = local_worker(cfg)
    return {n: baseline_job(n, worker, bench, cfg.model.batch_size, _say, (choices or {}).get(n)) for n in names}


def bench_job(cfg: RunConfig, worker: Worker, bench: dict, runs: list[tuple[str, str]],
              meta_training: dict, progress: bool = True, choices: dict | None = None) -> dict:
    """Every worker runs this; rank 0's result holds the raw per-task arrays. ``choices``:
    {baseline: its validation choices saved by an earlier bench}, replayed instead of tuning."""
    bc = BenchConfig(**bench)
    keep_freed_memory()           # 2x faster passes; runner.run_grid hands the memory back after each
    say = _say if worker.comm.rank == 0 else (lambda *_: None)
    names = methods_of(bc)
    side = future = None
    mine = names
    if isinstance(worker.comm, LocalCommunicator) and (os.cpu_count() or 1) > 1 and len(names) > 1:
        mine, theirs = split_methods(names, bc)
        side = helper_pool(1)
        future = side.submit(baselines_detached, cfg.to_dict(), bench, theirs, choices)
        say(f"baselines {', '.join(theirs)} in a helper process")
    try:
        baselines = {n: baseline_job(n, worker, bc, cfg.model.batch_size, say, (choices or {}).get(n)) for n in mine}
        test_tasks = [t for d in range(bc.draws) for t in worker.family.batch("test", report_task_indices(bc, d))]
        learned = {}
        for label, run_dir in runs:
            learned[label] = {**learned_on_test(run_dir, worker, test_tasks), "meta_training": meta_training[label]}
            say(f"{label}: {learned[label]['accuracy'][:, -1].mean():.3f} pooled accuracy at "
                f"{learned[label]['rounds'][-1]} rounds")
        centralized = centralized_on_test(worker, test_tasks, bc.pool_cap) if worker.comm.rank == 0 else None
        if future is not None:
            baselines.update(future.result())
            side.shutdown()
    except BaseException:
        if side is not None:
            stop_pool(side)
        raise
    return {"baselines": {n: baselines[n] for n in names}, "learned": learned, "centralized": centralized}


def learned_runs(args_runs: list[str] | None) -> list[tuple[str, str]]:
    """(label, folder) of each learned optimizer; labels never collide with baselines."""
    from ..pretrained import resolve_run
    given = list(args_runs or DEFAULT_RUNS)
    out = []
    for run in given:
        label = run if run.startswith("pretrained") else f"run:{Path(run).as_posix().rstrip('/')}"
        if label in dict(out):
            raise ValueError(f"{run} is given twice")
        folder = resolve_run(run)
        if not (folder / "model.pt").is_file():
            raise ValueError(f"{folder} holds no model.pt (a folder of 'surf-dist train', or 'pretrained[:NAME]')")
        out.append((label, str(folder)))
    return out


# --------------------------------------------------------------------------- command line

def add_arguments(parser) -> None:
    """The bench's own flags (the common ones are added by ``cli.build_parser``)."""
    parser.add_argument("models", nargs="*", metavar="RUN",
                        help="learned optimizers: run folders of 'surf-dist train' or 'pretrained[:NAME]' "
                             f"(default: {' '.join(DEFAULT_RUNS)})")
    parser.add_argument("--report-seed", type=int, default=BenchConfig.report_seed,
                        help="which fresh test tasks are reported (>= 1; 0 names the development tasks)")
    parser.add_argument("--draws", type=int, default=BenchConfig.draws, help="disjoint draws of test tasks")
    parser.add_argument("--tasks-per-draw", type=int, default=BenchConfig.tasks_per_draw, help="test tasks per draw")
    parser.add_argument("--tune-tasks", type=int, default=BenchConfig.tune_tasks,
                        help="validation tasks every baseline is tuned on")
    parser.add_argument("--methods", help="comma-separated baselines (default: all of " + ", ".join(METHODS) + ")")
    parser.add_argument("--bootstrap", type=int, default=BenchConfig.bootstrap, help="bootstrap resamples of the intervals")


def bench_config(args) -> BenchConfig:
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else ()
    return BenchConfig(report_seed=args.report_seed, draws=args.draws, tasks_per_draw=args.tasks_per_draw,
                       tune_tasks=args.tune_tasks, rounds=args.rounds or BenchConfig.rounds,
                       bootstrap=args.bootstrap, methods=methods)


def check_arguments(args) -> None:
    """The bench's settings and models, checked (ValueError) before anything is written."""
    bc = bench_config(args)
    methods_of(bc)
    from ..jobs import run_config
    for label, folder in learned_runs(args.models):
        model = run_config(Path(folder)).model
        if model.num_layers * model.num_hops > bc.rounds:
            raise ValueError(f"{label} takes {model.num_layers * model.num_hops} rounds, more than "
                             f"--rounds {bc.rounds}; pass --rounds {model.num_layers * model.num_hops} or more")


def run_bench(args, cfg: RunConfig, out: Path, progress: bool) -> int:
    """``surf-dist bench``: run, then write bench.json, bench.csv, bench.png and print the table."""
    from ..checkpoint import load_checkpoint
    from ..pretrained import training_cost
    from ..runtime import is_coordinator, run_job
    from .report import assemble, table, write_bench
    bc = bench_config(args)
    methods_of(bc)
    runs = learned_runs(args.models)
    meta = {label: training_cost(arg, Path(folder), load_checkpoint(Path(folder) / "model.pt"))
            for (label, folder), arg in zip(runs, args.models or DEFAULT_RUNS)}
    start = time.perf_counter()
    raw = run_job(bench_job, cfg, args.backend, args.workers, args.device, progress=progress,
                  bench=bc.__dict__, runs=runs, meta_training=meta)
    if raw is None or not is_coordinator():
        return 0
    out.mkdir(parents=True, exist_ok=True)
    import torch
    torch.save({"raw": raw, "bench": bc.__dict__}, out / "raw.pt")    # re-assemble without re-running
    report = assemble(raw, bc)
    report["config"] = cfg.to_dict()
    report["wall_seconds"] = time.perf_counter() - start
    report["backend"] = {"name": args.backend, "workers": args.workers, "device": args.device}
    report["command"] = "surf-dist " + " ".join(sys.argv[1:])
    written = write_bench(out, report)
    print(table(report))
    print(f"\nwall time {report['wall_seconds']:.0f} s; wrote " + ", ".join(p.name for p in written))
    return 0
