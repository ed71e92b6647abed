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

import functools
import os
import sys
import time
from pathlib import Path

from ...core._malloc import keep_freed_memory
from ...comm.local import LocalCommunicator
from ...io.config import RunConfig, from_dict
from ...core.engine import Worker
from ...runtime.pools import helper_pool, stop_pool
from ...methods.registry import METHODS
from .limit import limit_on_test, limit_rounds, sampled_agents
from .protocol import METRICS, BenchConfig, report_task_indices, val_task_indices
from .runner import baseline_job, centralized_on_test, learned_on_test, methods_of
from .saved_baselines import resumed_baselines, save_baseline, settings_of

DEFAULT_RUNS = ("pretrained", "pretrained:r1", "pretrained:r2", "pretrained:r3", "pretrained:r5", "pretrained:mixture",
                "pretrained:cta")


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] bench: {message}", file=sys.stderr, flush=True)


def cost_estimate(name: str, bench: BenchConfig) -> float:
    """Relative cost of a baseline (measured on the digits): configurations searched x
    gradient evaluations per round (local steps, and their edge extensions, weigh most)."""
    m = METHODS[name]
    configs = 2 * len(bench.step_grid) * (3 if "momentum" in m.continuous else 1)   # coordinate lines
    configs *= len(bench.consensus_grid) if "consensus" in m.continuous else 1      # the whole product
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


def baselines_detached(cfg_dict: dict, bench_dict: dict, names: list[str], choices: dict | None = None,
                       save_to: str | None = None) -> dict:
    """Some baselines on the local backend, in a helper process."""
    from ..jobs import local_worker
    keep_freed_memory()
    cfg, bench = from_dict(cfg_dict), BenchConfig(**bench_dict)
    worker = local_worker(cfg)
    return {n: saved_job(n, worker, cfg_dict, bench, _say, choices, save_to) for n in names}


def saved_job(name: str, worker: Worker, cfg_dict: dict, bench: BenchConfig, say, choices: dict | None,
              save_to: str | None) -> dict:
    """``baseline_job``, its result then saved in ``save_to`` (rank 0; None: not saved)."""
    choice = (choices or {}).get(name)
    result = baseline_job(name, worker, bench, cfg_dict["model"]["batch_size"], say, choice)
    if save_to and worker.comm.rank == 0:
        save_baseline(save_to, name, result, settings_of(cfg_dict, bench.__dict__, choice))
    return result


def bench_job(cfg: RunConfig, worker: Worker, bench: dict, runs: list[tuple[str, str]],
              meta_training: dict, progress: bool = True, choices: dict | None = None,
              skip: tuple[str, ...] = (), limit_at: list[int] | None = None, centralized: bool = True,
              save_to: str | None = None) -> dict:
    """Every worker runs this; rank 0's result holds the raw per-task arrays. ``choices``:
    {baseline: its validation choices saved by an earlier bench}, replayed instead of tuning.
    ``skip``: baselines not run (their results come from an earlier bench); ``limit_at``: the
    round budgets of the information limit (None: not computed); ``centralized``: compute it;
    ``save_to``: the folder each baseline's result is saved in as it finishes (``saved_baselines``)."""
    bc = BenchConfig(**bench)
    keep_freed_memory()           # 2x faster passes; runner.run_grid hands the memory back after each
    say = _say if worker.comm.rank == 0 else (lambda *_: None)
    names = [n for n in methods_of(bc) if n not in skip]
    side = future = None
    mine = names
    if isinstance(worker.comm, LocalCommunicator) and (os.cpu_count() or 1) > 1 and len(names) > 1:
        mine, theirs = split_methods(names, bc)
        side = helper_pool(1)
        future = side.submit(baselines_detached, cfg.to_dict(), bench, theirs, choices, save_to)
        say(f"baselines {', '.join(theirs)} in a helper process")
    try:
        baselines = {n: saved_job(n, worker, cfg.to_dict(), bc, say, choices, save_to) for n in mine}
        test_tasks = [t for d in range(bc.draws) for t in worker.family.batch("test", report_task_indices(bc, d))]
        learned = {}
        val_tasks = worker.family.batch("val", val_task_indices(bc))
        permuted = [t for d in range(bc.draws)
                    for t in worker.family.batch("test", report_task_indices(bc, d), permute_labels=True)]
        for label, run_dir in runs:
            on_val = learned_on_test(run_dir, worker, val_tasks)        # what a choice between them may use
            learned[label] = {**learned_on_test(run_dir, worker, test_tasks, permuted),
                              "meta_training": meta_training[label],
                              "validation": {m: on_val[m].mean(0) for m in METRICS}}
            say(f"{label}: {learned[label]['accuracy'][:, -1].mean():.3f} pooled accuracy at "
                f"{learned[label]['rounds'][-1]} rounds")
        reference = {}
        if worker.comm.rank == 0 and centralized:
            reference["centralized"] = centralized_on_test(worker, test_tasks, bc.pool_cap)
        if worker.comm.rank == 0 and limit_at:
            start = time.perf_counter()
            reference["limit"] = limit_on_test(worker, test_tasks, limit_at, bc.limit_agents, bc.pool_cap,
                                               val_tasks=val_tasks)
            say(f"information limit at {len(limit_at)} round budgets ({time.perf_counter() - start:.0f} s)")
        if future is not None:
            baselines.update(future.result())
            side.shutdown()
    except BaseException:
        if side is not None:
            stop_pool(side)
        raise
    return {"baselines": {n: baselines[n] for n in names}, "learned": learned, **reference}


def learned_runs(args_runs: list[str] | None) -> list[tuple[str, str]]:
    """(label, folder) of each learned optimizer; labels never collide with baselines."""
    from ...methods.pretrained import resolve_run, shipped_name
    given = list(args_runs or DEFAULT_RUNS)
    out = []
    for run in given:
        run = shipped_name(run) or run      # a shipped model's folder is labelled by its name
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
    parser.add_argument("--pool-cap", type=int, default=BenchConfig.pool_cap,
                        help="pooled held-out samples scored per test task (all when fewer): raise it where the "
                             "tasks' held-out pools are large (MNIST-1D) so a point of accuracy means something")
    parser.add_argument("--limit-agents", type=int, default=BenchConfig.limit_agents,
                        help="agents per test task whose R-hop ball optimum estimates the information limit")
    parser.add_argument("--baselines-from", metavar="BENCH_DIR",
                        help="take the baselines' test curves, the centralized optimum and the limit from an "
                             "earlier bench's folder (same task settings and protocol) instead of running them: "
                             "only the learned optimizers run (minutes instead of hours)")
    parser.add_argument("--choices-from", metavar="FILE",
                        help="replay the baselines' validation choices saved by an earlier bench (its bench.json, "
                             "or a tuned_baselines.json) on this bench's test draws instead of tuning again: "
                             "validation tasks do not depend on --report-seed, so a fresh report seed costs only "
                             "the chosen configurations' test runs")
    parser.add_argument("--resume", action="store_true",
                        help="continue a killed bench in --out: the baselines it saved there (baselines/*.pt, "
                             "each as it finished) are not run again; refused if they were made with other settings")


def listed_names(text: str | None, flag: str) -> tuple[str, ...]:
    """A comma-separated list of names given on the command line, () if the flag is absent;
    an empty list (``--methods ''``, which once meant all) or a name given twice is a ValueError."""
    if text is None:
        return ()
    names = tuple(m.strip() for m in text.split(",") if m.strip())
    if not names:
        raise ValueError(f"{flag} {text!r} names nothing; leave {flag} out for all, or name some")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"{flag} {text}: {', '.join(twice)} given twice; name each once")
    return names


def bench_config(args) -> BenchConfig:
    methods = listed_names(args.methods, "--methods")
    return BenchConfig(report_seed=args.report_seed, draws=args.draws, tasks_per_draw=args.tasks_per_draw,
                       tune_tasks=args.tune_tasks, rounds=args.rounds or BenchConfig.rounds,
                       bootstrap=args.bootstrap, methods=methods, limit_agents=args.limit_agents,
                       pool_cap=args.pool_cap)


SAME_PROTOCOL = ("report_seed", "draws", "tasks_per_draw", "tune_tasks", "rounds", "step_grid", "momentum_grid",
                 "max_extensions", "max_local_steps", "edge_min_round", "pool_cap")


@functools.lru_cache(maxsize=2)
def _saved_bench(folder: str) -> tuple[dict, dict]:
    """(bench.json, the raw results) of an earlier bench's folder, read once."""
    import json

    import torch
    path = Path(folder)
    if not (path / "bench.json").is_file() or not (path / "raw.pt").is_file():
        raise ValueError(f"--baselines-from {folder}: holds no bench.json and raw.pt; name a folder written by "
                         "'surf-dist bench'")
    return json.loads((path / "bench.json").read_text()), torch.load(path / "raw.pt", weights_only=False)["raw"]


def reused_results(args, cfg: RunConfig, bc: BenchConfig) -> dict | None:
    """The reusable part of the bench in ``--baselines-from`` ({baselines, centralized, limit?}),
    checked to be measured on the same tasks with the same protocol (ValueError otherwise)."""
    if not args.baselines_from:
        return None
    folder = args.baselines_from
    report, raw = _saved_bench(str(folder))
    check_same_tasks(f"--baselines-from {folder}", report["config"]["task"], report["config"]["model"]["batch_size"],
                     cfg, "its tasks differ", "run the baselines here")
    for key in SAME_PROTOCOL:
        here = getattr(bc, key)
        if report["protocol"].get(key) != (list(here) if isinstance(here, tuple) else here):
            raise ValueError(f"--baselines-from {folder}: its protocol differs ({key} {report['protocol'].get(key)} "
                             f"there, {here} here); pass the same bench settings")
    missing = [n for n in methods_of(bc) if n not in raw["baselines"]]
    if missing:
        raise ValueError(f"--baselines-from {folder}: has no {', '.join(missing)}; pass --methods with the ones it has "
                         f"({','.join(raw['baselines'])})")
    return raw


def saved_choices(args, cfg: RunConfig, bc: BenchConfig) -> dict | None:
    """{baseline: its saved validation choices} of ``--choices-from``, checked to be made for these
    task settings and mini-batch (ValueError otherwise); None without the flag."""
    if not getattr(args, "choices_from", None):
        return None
    import json
    path = Path(args.choices_from)
    if args.baselines_from:
        raise ValueError("--choices-from and --baselines-from exclude each other: the first reruns the baselines' "
                         "choices on this bench's test tasks, the second reuses an earlier bench's test curves")
    from ...io.files import read_text_file      # a folder, a FIFO, a loop of links, UTF-16: said as such
    text = read_text_file(path, "--choices-from", hint="name the bench.json of an earlier 'surf-dist bench'")
    try:
        saved = json.loads(text)
        if "methods" in saved:       # a bench.json
            task, batch = saved["config"]["task"], saved["config"]["model"]["batch_size"]
            choices = {n: m for n, m in saved["methods"].items() if m.get("kind") == "baseline"}
        else:                        # a tuned_baselines.json (surf_dist/pretrained)
            task, batch, choices = saved["task"], saved["batch_size"], saved["baselines"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--choices-from {path}: not a bench.json or tuned_baselines.json written by surf-dist "
                         f"({type(exc).__name__}); name the bench.json of an earlier 'surf-dist bench'") from None
    check_same_tasks(f"--choices-from {path}", task, batch, cfg, "its choices were made for other tasks", "tune here")
    # a method whose update changed since (its documented formula differs) is tuned again here
    usable = {n: c for n, c in choices.items() if n in METHODS and c.get("doc", METHODS[n].doc) == METHODS[n].doc}
    return best_start_only({n: usable[n] for n in methods_of(bc) if n in usable})


def best_start_only(choices: dict) -> dict:
    """Saved choices reduced to the best start per round (the bench also reports each start alone)."""
    return {n: {**c, "tuned": {"best": c["tuned"]["best"]}} for n, c in choices.items()}


def check_same_tasks(where: str, task: dict, batch: int, cfg: RunConfig, differ: str, fix: str) -> None:
    """ValueError naming the first task setting, or the mini-batch, in which saved results (``task``,
    ``batch``) differ from ``cfg``'s."""
    ours = cfg.to_dict()["task"]
    task = {"compress": "none", "link_failure": 0.0, **task}   # saved before compression and link failures
    for key in sorted(set(task) | set(ours)):
        if task.get(key) != ours.get(key):
            raise ValueError(f"{where}: {differ} ({key} {task.get(key)!r} there, {ours.get(key)!r} here); pass the "
                             f"same task settings or {fix}")
    if batch != cfg.model.batch_size:
        raise ValueError(f"{where}: its mini-batches hold {batch} samples, here {cfg.model.batch_size}; pass "
                         "--batch-size to match")


def model_rounds(runs: list[tuple[str, str]]) -> dict[str, int]:
    """{label: communication rounds} of the learned optimizers."""
    from ..jobs import run_config
    models = {label: run_config(Path(folder)).model for label, folder in runs}
    return {label: m.num_layers * m.num_hops for label, m in models.items()}


def check_arguments(args, cfg: RunConfig) -> None:
    """The bench's settings and models, checked (ValueError) before anything is written."""
    bc = bench_config(args)
    methods_of(bc)
    resumed_baselines(args, cfg, bc, saved_choices(args, cfg, bc))
    reused_results(args, cfg, bc)
    for label, rounds in model_rounds(learned_runs(args.models)).items():
        if rounds > bc.rounds:
            raise ValueError(f"{label} takes {rounds} rounds, more than --rounds {bc.rounds}; "
                             f"pass --rounds {rounds} or more")


def run_bench(args, cfg: RunConfig, out: Path, progress: bool) -> int:
    """``surf-dist bench``: run, then write bench.json, bench.csv, bench.png and print the table."""
    from ...io.checkpoint import load_checkpoint
    from ...methods.pretrained import training_cost
    from ...runtime import is_coordinator, run_job
    from .report import assemble, table, write_bench
    bc = bench_config(args)
    methods_of(bc)
    runs = learned_runs(args.models)
    meta = {label: training_cost(arg, Path(folder), load_checkpoint(Path(folder) / "model.pt"))
            for (label, folder), arg in zip(runs, args.models or DEFAULT_RUNS)}
    earlier = reused_results(args, cfg, bc) or {}
    skip = tuple(n for n in methods_of(bc) if n in earlier.get("baselines", {}))
    limit_at = limit_rounds(max(model_rounds(runs).values(), default=20))
    known = earlier.get("limit")
    if (known and set(limit_at) <= set(known["rounds"])
            and known["agents"] == sampled_agents(cfg.task.num_agents, bc.limit_agents).tolist()):
        limit_at = None                          # the earlier bench's limit covers these budgets
    if skip:
        _say(f"baselines {', '.join(skip)}, the centralized optimum{'' if limit_at else ' and the limit'} from "
             f"{args.baselines_from}")
    choices = saved_choices(args, cfg, bc)
    if choices is not None:
        fresh = [n for n in methods_of(bc) if n not in choices]
        _say(f"validation choices of {args.choices_from} replayed for {', '.join(choices) or 'no baseline'}"
             + (f"; tuning {', '.join(fresh)} here (no saved choices for their current update)" if fresh else ""))
    resumed = resumed_baselines(args, cfg, bc, choices)
    if resumed:
        _say(f"--resume: {', '.join(resumed)} saved in {out / 'baselines'}, not run again")
    start = time.perf_counter()
    raw = run_job(bench_job, cfg, args.backend, args.workers, args.device, progress=progress,
                  bench=bc.__dict__, runs=runs, meta_training=meta, skip=skip + tuple(resumed), limit_at=limit_at,
                  centralized="centralized" not in earlier, choices=choices,
                  save_to=str(out) if args.backend != "ray" else None)     # Ray actors may sit on other hosts
    if raw is None or not is_coordinator():
        return 0
    raw["baselines"] = {n: (earlier["baselines"][n] if n in skip else resumed[n] if n in resumed
                            else raw["baselines"][n]) for n in methods_of(bc)}
    for key in ("centralized", "limit"):
        if key not in raw and key in earlier:
            raw[key] = earlier[key]
    out.mkdir(parents=True, exist_ok=True)
    import torch
    torch.save({"raw": raw, "bench": bc.__dict__}, out / "raw.pt")    # re-assemble without re-running
    report = assemble(raw, bc)
    report["config"] = cfg.to_dict()
    report["wall_seconds"] = time.perf_counter() - start
    report["backend"] = {"name": args.backend, "workers": args.workers, "device": args.device}
    report["command"] = "surf-dist " + " ".join(sys.argv[1:])
    if skip:
        report["baselines_from"] = str(args.baselines_from)
    if getattr(args, "choices_from", None):
        report["baselines_from"] = f"validation choices of {args.choices_from}"
    written = write_bench(out, report)
    print(table(report))
    print(f"\nwall time {report['wall_seconds']:.0f} s; wrote " + ", ".join(p.name for p in written))
    return 0
