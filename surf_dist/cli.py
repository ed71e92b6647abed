"""``surf-dist``: the command line.

  surf-dist demo --out DIR          meta-train SURF and plain unrolling, compare with baselines
  surf-dist baselines --out DIR     tuned decentralized baselines and the centralized optimum
  surf-dist train --out RUN         meta-train one model (``--resume`` continues a run)
  surf-dist evaluate RUN... --out DIR
  surf-dist experiment NAME --out DIR   layers | eps | async | communication | transfer
  surf-dist bench [RUN...] --out DIR    learned optimizers against every tuned baseline, the
                                        honest protocol (validation choices, fresh test draws)
  surf-dist config --preset NAME    print a preset as JSON, to edit and pass back with --config
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from . import jobs
from .config import LOCAL_NETS, PRESETS, load_config, preset, with_overrides
from .pretrained import resolve_run
from .train import CHECKPOINT

DEMO_BASELINE_ROUNDS = 200


def boolean(text: str) -> bool:
    """``true`` / ``false`` (any case) on the command line."""
    value = {"true": True, "false": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value

OVERRIDES = {  # flag -> (section, field, type, help)
    "dataset": ("task", "dataset", str, "dataset name (digits is embedded; mnist, fashion_mnist, cifar10 need --data-root)"),
    "data_root": ("task", "data_root", str, "folder holding the dataset's files"),
    "agents": ("task", "num_agents", int, "agents per task"),
    "topology": ("task", "topology", str, "topology preset name (see topologies/) or JSON file"),
    "alpha": ("task", "alpha", float, "Dirichlet label skew (inf: IID)"),
    "samples_seen": ("task", "samples_seen", int, "samples per agent seen by the optimizer"),
    "samples_held": ("task", "samples_held", int, "held-out samples per agent"),
    "layers": ("model", "num_layers", int, "unrolled layers L"),
    "hops": ("model", "num_hops", int, "hops K per layer (communication rounds per layer)"),
    "local_net": ("model", "local_net", str, f"local network: {', '.join(LOCAL_NETS)}"),
    "batch_size": ("model", "batch_size", int, "mini-batch per agent per layer"),
    "tracking": ("model", "tracking", boolean,
                 "true: the compact net also tracks the network-average gradient (sent with W)"),
    "momentum": ("model", "momentum", boolean,
                 "true: a learned heavy-ball term beta_l (W_l - W_(l-1)) in every layer (local, no messages)"),
    "local_steps": ("model", "local_steps", int, "compact net: local sub-steps per layer (no communication)"),
    "steps": ("train", "steps", int, "meta-training steps"),
    "lr": ("train", "lr", float, "Adam learning rate of the meta-parameters"),
    "dual_lr": ("train", "dual_lr", float, "dual ascent step"),
    "eps": ("train", "eps", float, "descent constraint: g(W_l) <= (1 - eps) g(W_(l-1))"),
    "descent": ("train", "descent", str, "descent function: loss or grad_norm"),
    "objective": ("train", "objective", str, "what the last layer is trained for: local (each agent's own "
                  "held-out data; scored by local_accuracy) or pooled (its task's pooled held-out data; "
                  "scored by accuracy)"),
    "async_train": ("train", "async_train", int, "agents dropped at random per task and layer while meta-training "
                    "(0: off); trains for robustness to asynchronous agents"),
    "init_from": ("train", "init_from", str, "a trained run folder whose model starts meta-training "
                  "(fine-tuning; same layers and local network); 'pretrained[:scratch|:robust]': "
                  "a shipped optimizer"),
    "seed": ("train", "seed", int, "the one seed behind tasks, graphs, batches, dropouts and inits"),
    "dtype": ("train", "dtype", str, "float32 or float64"),
    "test_tasks": ("eval", "test_tasks", int, "test tasks"),
    "rounds": ("eval", "baseline_rounds", int, "baseline rounds (default: the preset's, 500; demo: "
               f"{DEMO_BASELINE_ROUNDS} - SURF needs 20, and the rounds the baselines need to match it "
               "lie well below)"),
    "async_draws": ("eval", "async_draws", int, "random dropout draws per n_async level"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="surf-dist", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    helps = {"demo": "the main job: meta-train SURF and plain unrolling, evaluate against baselines",
             "baselines": "run the tuned baselines and the centralized optimum on test tasks",
             "train": "meta-train one unrolled model into a run folder",
             "evaluate": "evaluate trained run folders against the baselines",
             "experiment": "one experiment of the results report (layers, eps, async, communication, transfer)",
             "bench": "learned optimizers (default: the shipped ones) against every baseline, each tuned per "
                      "round budget on validation tasks, on fresh test draws: rounds ratio and fixed-budget gap "
                      "with intervals (bench.json, bench.csv, bench.png)"}
    for name, text in helps.items():
        p = sub.add_parser(name, help=text, description=text)
        if name == "evaluate":
            p.add_argument("runs", nargs="+", help="run folders written by 'surf-dist train'; 'pretrained': "
                                                   "the optimizer shipped with the package, 'pretrained:scratch': "
                                                   "the default preset from scratch, 'pretrained:robust': the one "
                                                   "trained with agents dropping out")
        if name == "experiment":
            from .experiments import add_arguments
            add_arguments(p)
        if name == "bench":
            from .bench import add_arguments as add_bench_arguments
            add_bench_arguments(p)
        p.add_argument("--out", required=True, help="output folder (must be new or empty)")
        p.add_argument("--force", action="store_true", help="write into a non-empty --out")
        p.add_argument("--preset", default="default", choices=sorted(PRESETS), help="named settings")
        p.add_argument("--config", help="JSON config file (from 'surf-dist config'); overrides --preset")
        p.add_argument("--quick", action="store_true", help="the small 'quick' preset (seconds)")
        p.add_argument("--backend", default="local", help="local (one process), torch or ray")
        p.add_argument("--workers", type=int, default=1, help="workers (processes / actors)")
        p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                       help="where each worker computes; cuda: one GPU per worker, collectives through nccl")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        if name == "train":
            p.add_argument("--resume", action="store_true", help="continue the run in --out")
            p.add_argument("--unconstrained", action="store_true", help="standard unrolling (no duals)")
        for flag, (_, _, typ, text) in OVERRIDES.items():
            p.add_argument("--" + flag.replace("_", "-"), dest=flag, type=typ, help=text)
    cp = sub.add_parser("config", help="print a preset as JSON")
    cp.add_argument("--preset", default="default", choices=sorted(PRESETS))
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


def resolve_config(args):
    cfg = load_config(args.config) if args.config else preset("quick" if args.quick else args.preset)
    overrides = explicit_overrides(args)
    if args.command == "demo" and args.rounds is None and not args.config:
        overrides.setdefault("eval", {})["baseline_rounds"] = min(DEMO_BASELINE_ROUNDS, cfg.eval.baseline_rounds)
    return with_overrides(cfg, overrides) if overrides else cfg


def prepare_out(path: Path, force: bool, resume: bool = False) -> None:
    if resume:
        if not (path / CHECKPOINT).is_file():
            raise ValueError(f"--resume: {path} holds no {CHECKPOINT} to continue from")
        return
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise ValueError(f"--out {path} is not empty; choose a new folder or pass --force "
                         "(nothing was written)")
    path.mkdir(parents=True, exist_ok=True)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        print(json.dumps(preset(args.preset).to_dict(), indent=1))
        return 0
    from .runtime.common import WorkerLostError
    try:
        return run_command(args)
    except (ValueError, FileNotFoundError, FloatingPointError) as err:
        print(f"surf-dist {args.command}: error: {err}", file=sys.stderr)
        return 2
    except WorkerLostError as err:   # a rank died: say which, then resume from the checkpoint
        print(f"surf-dist {args.command}: error: {err}", file=sys.stderr)
        return 1


def run_command(args) -> int:
    import torch

    from ._malloc import keep_freed_memory
    from .report import table, write_results
    from .runtime import is_coordinator, run_job

    torch.set_num_threads(1)  # tiny per-agent kernels: one thread per worker is fastest here
    keep_freed_memory()       # reuse freed tensors' pages instead of faulting in new ones
    if getattr(args, "runs", None):
        args.runs = [str(resolve_run(r)) for r in args.runs]
    cfg = resolve_config(args)
    if args.command == "evaluate" and not args.config:
        # evaluate with the settings it was trained on, and the flags'
        cfg = jobs.settings_of_runs(args.runs, explicit_overrides(args))
    out = Path(args.out)
    if args.command == "bench":   # every check before --out is made
        from .bench import check_arguments
        check_arguments(args)
    if is_coordinator():   # the other ranks of a torchrun launch write nothing
        prepare_out(out, args.force, getattr(args, "resume", False))
    progress = not args.no_progress and sys.stderr.isatty()
    if args.command == "experiment":
        from .experiments import run_experiment
        return run_experiment(args, cfg, out, progress, explicit_overrides(args))
    if args.command == "bench":
        from .bench import run_bench
        return run_bench(args, cfg, out, progress)
    run = lambda job, **kw: run_job(job, cfg, args.backend, args.workers, args.device, progress=progress, **kw)
    start = time.perf_counter()
    if args.command == "train":
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
        summary = run(jobs.evaluate_job, run_dirs=args.runs)
    if summary is None:   # a non-coordinator rank
        return 0
    summary["wall_seconds"] = time.perf_counter() - start
    summary["backend"] = {"name": args.backend, "workers": args.workers}
    written = write_results(out, summary, cfg.to_dict())
    print(table(summary))
    print(f"\nwall time {summary['wall_seconds']:.1f} s; wrote " + ", ".join(p.name for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
