"""``surf-dist``: the command line.

  surf-dist demo --out DIR          the shipped optimizer against every tuned baseline (minutes;
                                    --train: meta-train SURF and plain unrolling first, an hour)
  surf-dist baselines --out DIR     tuned decentralized baselines and the centralized optimum
  surf-dist train --out RUN         meta-train one model (``--resume`` continues a run)
  surf-dist evaluate RUN... --out DIR
  surf-dist experiment NAME --out DIR   layers | eps | async | communication | transfer | compression | link-failures
  surf-dist bench [RUN...] --out DIR    learned optimizers against every tuned baseline, the
                                        honest protocol (validation choices, fresh test draws)
  surf-dist config --preset NAME    print a preset as JSON, to edit and pass back with --config
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path

from ..commands import jobs
from ..io.config import PRESETS, ConfigError, load_config, preset, with_overrides
from ..io.files import claimed_output, is_empty_folder, rescue_text
from .errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    OneLineParser,
    UsageError,
    describe_os_error,
    join_negative_values,
    one_line,
    run_guarded,
    terminate_as_interrupt,
)
from .flags import DEMO_BASELINE_ROUNDS, OVERRIDES
from .preflight import (check_async_mode, check_command, check_path_arguments, check_runs_exist,
                        collective_timeout_flag)
from ..methods.pretrained import resolve_run
from ..io.checkpoint import CHECKPOINT
from ..problem.topology import topology_file

SECONDS_PER_STEP = 7.0      # one default-preset meta-step, one core, the other busy (the shipped default: 1,041 s for
                            # 300 steps alone on its core; 3,384 s for a seed sharing a core with tests)




def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="surf-dist", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {"demo": "the main job, in minutes: the shipped optimizer against every baseline (tuned on validation "
                     "tasks by 'surf-dist bench') on fresh test tasks; --train meta-trains from scratch first",
             "baselines": "run the tuned baselines and the centralized optimum on test tasks",
             "train": "meta-train one unrolled model into a run folder",
             "evaluate": "evaluate trained run folders against the baselines",
             "experiment": "one experiment of the results report (layers, eps, async, communication, transfer, compression, link-failures)",
             "bench": "learned optimizers (default: the shipped ones) against every baseline, each tuned per "
                      "round budget on validation tasks, on fresh test draws: rounds ratio and fixed-budget gap "
                      "with intervals (bench.json, bench.csv, bench.png)"}
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == "evaluate":
            p.add_argument("runs", nargs="+", help="run folders written by 'surf-dist train'; 'pretrained': "
                                                   "the default optimizer shipped with the package (the default "
                                                   "preset from scratch); 'pretrained:cta', 'pretrained:local', 'pretrained:scratch', "
                                                   "'pretrained:robust': the former preset's (each agent's own "
                                                   "data; robust: trained with agents dropping out)")
            p.add_argument("--skip", type=skipped_parts, default=(), metavar="PARTS",
                           help=f"comma-separated parts not to run: {', '.join(jobs.EVALUATE_PARTS)} (the learned "
                                "models' curves always run; e.g. --skip baselines,async,permuted,centralized "
                                "for a large federation, where tuning the baselines takes hours)")
        if name == "experiment":
            from ..commands.experiments import add_arguments
            add_arguments(p)
        if name == "bench":
            from ..commands.bench import add_arguments as add_bench_arguments
            add_bench_arguments(p)
        p.add_argument("--out", required=True, help="output folder (must be new or empty)")
        p.add_argument("--force", action="store_true", help="write into a non-empty --out")
        p.add_argument("--preset", choices=sorted(PRESETS), help="named settings (default: default)")
        p.add_argument("--config", help="JSON config file (from 'surf-dist config'); overrides --preset")
        p.add_argument("--quick", action="store_true", help="the small 'quick' preset (seconds)")
        p.add_argument("--backend", default="local", help="local (one process), torch or ray")
        p.add_argument("--workers", type=int, default=1, help="workers (processes / actors)")
        p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                       help="where each worker computes; cuda: one GPU per worker, collectives through nccl")
        p.add_argument("--collective-timeout", metavar="SECONDS",
                       help="torch and ray backends: how long a collective waits for a slow rank before the run "
                            "fails naming it (default: SURF_DIST_COLLECTIVE_TIMEOUT_S, else 60)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if name == "demo":
            p.add_argument("--train", action="store_true",
                           help="meta-train SURF and plain unrolling from scratch first (about an hour on 2 "
                                "cores) instead of running the shipped optimizer (minutes)")
        if name == "train":
            p.add_argument("--resume", action="store_true", help="continue the run in --out")
            p.add_argument("--unconstrained", action="store_true", help="standard unrolling (no duals)")
        for flag, (_, _, typ, text) in OVERRIDES.items():
            p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ, help=text)
    cp = sub.add_parser("config", help="print a preset as JSON")
    cp.add_argument("--preset", default="default", choices=sorted(PRESETS))
    cp.set_defaults(quick=False)
    return parser


def explicit_overrides(args) -> dict[str, dict]:
    """The settings the command line names (``--agents 20`` -> {"task": {"num_agents": 20}})."""
    overrides: dict[str, dict] = {}
    for flag, (section, field, _, _) in OVERRIDES.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides.setdefault(section, {})[field] = value
    if getattr(args, "unconstrained", False):
        overrides.setdefault("train", {})["constrained"] = False
    return overrides


def flag_of(field: str, args) -> str | None:
    """The flag given on this command line that sets config field ``field`` (``--seed``), if any."""
    for flag, (_, name, _, _) in OVERRIDES.items():
        if name == field and getattr(args, flag, None) is not None:
            return "--" + flag.replace("_", "-")
    return None


def preset_name(args) -> str:
    """The preset the command line names: --quick, --preset NAME, else 'default'."""
    return "quick" if args.quick else args.preset or "default"




def check_unused_settings(args, cfg) -> None:
    """Issue 25: a setting the command would not use is refused by name, never ignored (one
    place for every such rule). ValueError naming the flag and what is used instead."""
    chosen = "--quick" if args.quick else (f"--preset {args.preset}" if args.preset else None)
    if args.quick and args.preset:
        raise ValueError(f"--quick and --preset {args.preset} both name a preset (--quick is --preset quick); "
                         "pass one of them")
    reads_runs = args.command == "evaluate" or (args.command == "experiment" and args.runs)
    if chosen and reads_runs and not args.config:
        source = "RUN" if args.command == "evaluate" else "--runs"
        raise ValueError(f"{chosen} is not used: {args.command} takes its settings from the run it reads ({source}); "
                         "drop it, or pass --config FILE (and flags) for other settings")
    if cfg.task.data_root:
        from ..problem.datasets import FILE_DATASETS, canonical_name
        dataset = canonical_name(cfg.task.dataset)
        if dataset not in FILE_DATASETS:
            said = f"--data-root {args.data_root}" if args.data_root else f"data_root {cfg.task.data_root!r} (config)"
            raise ValueError(f"{said} is not used: dataset '{dataset}' comes with the package and reads no files; "
                             "drop it, or choose a dataset that reads its files there (mnist, fashion_mnist, cifar10)")


def note_filled(args, keys: list[str]) -> None:
    """Say where the settings a partial --config leaves out come from (issue 25: once the
    'paper' preset's, whatever --preset said)."""
    flag = "--quick" if args.quick else f"--preset {args.preset}" if args.preset else "the default; --preset NAME picks another"
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    print(f"surf-dist {args.command}: note: config file {args.config} leaves out {len(keys)} setting(s) ({shown}); "
          f"they come from preset '{preset_name(args)}' ({flag})", file=sys.stderr)


def resolve_config(args):
    """The command's settings: --config or the preset (for ``evaluate``: the first run's),
    the flags on top, and the agents of an edge-list topology. A bad value names its flag."""
    if args.command == "evaluate" and not args.config:
        cfg = jobs.run_config(Path(args.runs[0]))   # evaluate with the settings it was trained on
    else:
        cfg = (load_config(args.config, preset(preset_name(args)), lambda keys: note_filled(args, keys))
               if args.config else preset(preset_name(args)))
    if getattr(args, "topology", None):
        try:
            named_file = topology_file(args.topology)
        except ValueError as err:
            raise ValueError(f"--topology {args.topology}: {err}") from None
        if named_file is not None:
            args.topology = os.path.abspath(args.topology)   # the run's config must find it from anywhere
    overrides = explicit_overrides(args)
    if args.command == "demo" and args.rounds is None and not args.config:
        overrides.setdefault("eval", {})["baseline_rounds"] = min(DEMO_BASELINE_ROUNDS, cfg.eval.baseline_rounds)
    try:
        cfg = with_overrides(cfg, overrides) if overrides else cfg
    except ConfigError as err:
        flag = flag_of(err.field, args)
        given = getattr(args, flag[2:].replace('-', '_')) if flag else None
        given = ",".join(given) if isinstance(given, tuple) else given
        raise ValueError(f"{flag} {given}: {err}" if flag else str(err)) from None
    from ..runtime import is_coordinator
    if not is_coordinator():     # torchrun's other ranks run with rank 0's settings (it reads the files)
        return cfg
    return agents_of_topology(cfg, args)


def agents_of_topology(cfg, args):
    """An edge list says how many agents there are: take that number, unless --agents (or the
    --config file) says another, which is an error naming both."""
    from ..problem.topology import edge_list_nodes, load_topology_preset
    nodes = edge_list_nodes(load_topology_preset(cfg.task.topology))
    if nodes is None or nodes == cfg.task.num_agents:
        return cfg
    if getattr(args, "agents", None) is not None or args.config or args.command == "evaluate":
        said = (f"--agents {args.agents}" if getattr(args, "agents", None) is not None
                else f"{args.config or args.runs[0]} has num_agents {cfg.task.num_agents}")
        raise ValueError(f"{said} but the edge list {cfg.task.topology} has {nodes} agents (ids 0..{nodes - 1}); "
                         f"pass --agents {nodes}, or leave --agents out and it is read from the file")
    levels = [level for level in cfg.eval.async_levels if level < nodes]
    return with_overrides(cfg, {"task": {"num_agents": nodes}, "eval": {"async_levels": levels}})




def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(join_negative_values(argv, parser))
        if unknown:
            raise UsageError(f"surf-dist {args.command}", f"unrecognized arguments: {' '.join(unknown)} "
                                                          f"(see surf-dist {args.command} --help)")
    except UsageError as err:
        print(f"{err.prog}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        check_path_arguments(args)
    except ValueError as err:
        print(f"surf-dist {args.command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    if args.command == "config":
        print(json.dumps(preset(args.preset).to_dict(), indent=1))
        return 0
    from ..runtime.common import JobError, WorkerLostError   # a rank died or failed: say which (exit 1)
    return run_guarded(f"surf-dist {args.command}", lambda: run_command(args),
                       interrupted=lambda: interrupted_hint(args, argv),
                       other_errors={WorkerLostError: 1, JobError: 1})


def interrupted_hint(args, argv: list[str]) -> str:
    """The line printed on Ctrl-C: how to continue (train) or start again."""
    out = Path(args.out)
    if args.command == "train" and (out / CHECKPOINT).is_file():
        again = [a for a in argv if a != "--force"] + ([] if "--resume" in argv else ["--resume"])
        return f"interrupted; continue with: surf-dist {shlex.join(again)}"
    if args.command == "bench" and (out / "baselines").is_dir():
        again = argv + ([] if "--resume" in argv else ["--resume"])
        return f"interrupted; the baselines done are saved, continue with: surf-dist {shlex.join(again)}"
    if out.is_dir() and not is_empty_folder(out):
        again = argv + ([] if "--force" in argv else ["--force"])
        return f"interrupted before a checkpoint; start again with: surf-dist {shlex.join(again)}"
    return f"interrupted before anything was written; start again with: surf-dist {shlex.join(argv)}"


def run_command(args) -> int:
    with collective_timeout_flag(args):
        return run_checked_command(args)


def run_checked_command(args) -> int:
    import torch

    from ..runtime import is_coordinator

    torch.set_num_threads(1)  # tiny per-agent kernels: one thread per worker is fastest here
    names = None
    if getattr(args, "runs", None):
        given = list(args.runs)
        args.runs = [str(resolve_run(r)) for r in args.runs]
        if is_coordinator():                 # torchrun's other ranks get the runs' files from rank 0
            check_runs_exist(args.runs)      # before their names: a loop of links is said as such
        names = jobs.model_names(given) if args.command == "evaluate" else None
    cfg = resolve_config(args)
    check_unused_settings(args, cfg)
    out = Path(args.out)
    resume = getattr(args, "resume", False)
    if args.command == "bench":              # the bench's own settings and models
        from ..commands.bench import check_arguments
        check_arguments(args, cfg)
    if args.command == "experiment":         # the experiment's own settings, before any training
        from ..commands.experiments import experiment_config, options_of
        check_async_mode(experiment_config(args, cfg, explicit_overrides(args)))
        options_of(args)
    check_command(args, cfg, out)            # everything that can be checked: --out is not made yet
    writing = claimed_output(out, args.force, resume) if is_coordinator() else contextlib.nullcontext(out)
    with writing:
        return execute(args, cfg, out, names)


def execute(args, cfg, out: Path, names) -> int:
    import torch

    from ..commands.results import table, write_results
    from ..runtime import run_job

    progress = not args.no_progress     # a bar on a terminal, else a line every few seconds
    if args.command == "experiment":
        from ..commands.experiments import run_experiment
        return run_experiment(args, cfg, out, progress, explicit_overrides(args))
    if args.command == "bench":
        from ..commands.bench import run_bench
        return run_bench(args, cfg, out, progress)
    if args.command == "demo" and not args.train:
        from ..commands.bench.demo import run_demo
        return run_demo(args, cfg, out, progress)
    if args.command == "demo":
        minutes = 2 * cfg.train.steps * SECONDS_PER_STEP / 60 / min(2, os.cpu_count() or 1)
        print(f"meta-training SURF and plain unrolling, {cfg.train.steps} steps each: about {minutes:.0f} minutes "
              f"here (measured {SECONDS_PER_STEP} s per step of the default preset on one core)", file=sys.stderr)
    run = lambda job, **kw: run_job(job, cfg, args.backend, args.workers, args.device, progress=progress, **kw)
    start = time.perf_counter()
    if args.command == "train":
        if args.backend == "local":      # one process: every core it may use, freed memory kept (BENCHMARKS.md)
            from ..core._malloc import keep_freed_memory
            torch.set_num_threads(usable_cores())
            keep_freed_memory()
        result = run(jobs.train_job, run_dir=str(out), resume=args.resume)
        if result is None:   # a non-coordinator rank
            return 0
        print(f"trained {result['steps']} steps; best validation loss {result['best_val_loss']:.4f}; "
              f"model in {out / 'model.pt'}")
        return 0
    if args.command == "baselines":
        summary = run(jobs.baselines_job)
    elif args.command == "demo":
        summary = run(jobs.demo_job, out_dir=str(out))
    else:
        summary = run(jobs.evaluate_job, run_dirs=args.runs, names=names, skip=tuple(args.skip))
    if summary is None:   # a non-coordinator rank
        return 0
    summary["wall_seconds"] = time.perf_counter() - start
    summary["backend"] = {"name": args.backend, "workers": args.workers}
    try:
        written = write_results(out, summary, cfg.to_dict())
    except OSError as err:   # the folder went away or filled up: keep what was computed
        kept = rescue_text(json.dumps({"config": cfg.to_dict(), **summary}, indent=1), "summary.json")
        raise ValueError(f"could not write the results into {out} ({describe_os_error(err)}); "
                         f"the summary is saved in {kept}") from None
    print(table(summary))
    print(f"\nwall time {summary['wall_seconds']:.1f} s; wrote " + ", ".join(p.name for p in written))
    return 0


def skipped_parts(text: str) -> tuple[str, ...]:
    """``--skip``'s value: parts of ``jobs.EVALUATE_PARTS``, each once (argparse turns the
    ValueError into one line and exit 2)."""
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in parts if p not in jobs.EVALUATE_PARTS]
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {unknown or [text]}; choose from "
                                         f"{', '.join(jobs.EVALUATE_PARTS)}, comma-separated")
    return tuple(dict.fromkeys(parts))


def usable_cores() -> int:
    """The cores this process may run on (``taskset -c 0 surf-dist train ...`` gives one, so
    that several jobs share a machine without oversubscribing it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


EXIT_BROKEN_PIPE = 141     # 128 + SIGPIPE, what a shell reports for a reader that went away


def stdout_failed(err: OSError) -> int:
    """Standard output could not take the command's output: a reader that stopped reading
    (``surf-dist config | true``) ends the command quietly, as SIGPIPE would; anything else
    (``> /dev/full``) is one line. Either way no traceback, and stdout goes to /dev/null so
    that the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if isinstance(err, BrokenPipeError):
        return EXIT_BROKEN_PIPE
    command = " ".join(a for a in sys.argv[1:2] if not a.startswith("-"))
    print(f"surf-dist{' ' + command if command else ''}: error: could not write the output to standard output "
          f"({err.strerror or err}); redirect it to a file with space", file=sys.stderr)
    return EXIT_USER_ERROR


def entry() -> None:
    """The ``surf-dist`` executable. After Ctrl-C the process leaves at once, once its line is
    out: a library's native thread still writing at interpreter teardown (seen with torch's
    pybind11 on a closed stream) would otherwise abort it with SIGABRT instead of exit 130.
    ``kill -USR1 PID`` prints every thread's Python stack to stderr (where a run seems stuck)."""
    import faulthandler
    import signal
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    terminate_as_interrupt()
    try:
        code = main()
        sys.stdout.flush()
    except OSError as err:          # stdout is a closed pipe (`| head`) or a full disk (`> /dev/full`)
        code = stdout_failed(err)
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
