"""``surf-dist experiment NAME --out DIR``: the experiments behind the results report.

  layers          per-layer held-out loss and accuracy of SURF and plain unrolling on test tasks,
                  and the layer-to-layer descent: where the held-out loss rose and where the
                  constraint g_l <= (1 - eps) g_(l-1) is violated (per layer; the mean over test
                  tasks, the fraction of tasks, the fraction of (task, agent) nodes)
  eps             SURF trained with several eps (``--eps-values``): per-layer loss, final
                  accuracy, rounds to reach a target, constraint violations on test tasks
  async           n_async agents dropped per layer (``--async-levels``, ``--async-draws`` draws
                  each, the same draws for both models): mean, spread and the paired difference
  communication   accuracy against rounds and bytes per agent: both models, every tuned
                  baseline, the centralized optimum
  transfer        models trained on one graph family and size, tested on other families
                  (``--topologies``) and sizes (``--test-agents``) against tuned DGD there
  compression     accuracy against bytes per agent under each compressor (``--compressors``) for
                  every baseline (``--methods``) and the learned optimizers (``--runs``, default
                  ``pretrained``), on the bench's protocol (``compression.py``)
  link-failures   accuracy after the learned optimizers' rounds against the probability that each
                  link fails in a round (``--link-failure-probs``), every baseline and the learned
                  optimizers, on the bench's protocol (``link_failures.py``)

The models come from ``--runs`` (folders of ``surf-dist train``; a constrained run is ``surf``,
an unconstrained one ``unrolled``) or are trained into ``DIR/run_NAME`` (SURF and unrolled in
parallel processes on the local backend, as the demo does). Every experiment writes
``NAME.png``, ``NAME.json`` (the numbers, the config, the wall time) and ``NAME.csv`` into DIR.

This module is the command-line glue and the job; the parts:
  measurements    the experiments themselves (models in, numbers out)
  outputs         the JSON, CSV and terminal lines;  figures   the PNGs
  ``descent_stats`` (per-layer descent) and ``evaluate`` (curves, baselines) hold the maths,
  ``jobs.train_models`` trains the models.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import jobs
from ...io.config import RunConfig, with_overrides
from ...core.descent_stats import exceeds, layer_statistics, summarize_descent
from .measurements import (
    async_experiment,
    communication_experiment,
    communication_numbers,
    eps_experiment,
    layers_experiment,
    load_baselines,
    paired,
    spread,
    transfer_experiment,
    transfer_settings,
)
from .compression import DEFAULT_COMPRESSORS, check_compressors, compression_experiment
from .link_failures import DEFAULT_PROBS, check_probs, link_failure_experiment
from .outputs import describe, write_outputs

__all__ = [
    "EXPERIMENTS", "add_arguments", "experiment_config", "options_of", "run_experiment", "experiment_job",
    "load_runs", "exceeds", "layer_statistics", "summarize_descent", "layers_experiment", "eps_experiment",
    "async_experiment", "communication_experiment", "transfer_experiment", "communication_numbers",
    "load_baselines", "transfer_settings", "spread", "paired", "write_outputs", "describe",
]

EXPERIMENTS = ("layers", "eps", "async", "communication", "transfer", "compression", "link-failures")
DEFAULT_EPS = (0.01, 0.05, 0.2)
DEFAULT_ASYNC_LEVELS = (0, 1, 2, 5, 10, 20)
DEFAULT_TOPOLOGIES = ("erdos_renyi", "random_geometric", "ring", "small_world")
DEFAULT_TEST_AGENTS = (50, 200)
TRANSFER_ROUNDS = 200      # tuned DGD on each transfer graph; SURF needs L * K = 20 rounds


# --------------------------------------------------------------------------- command line

def add_arguments(parser) -> None:
    """The experiment's own flags (the common ones are added by ``cli.build_parser``)."""
    parser.add_argument("name", choices=EXPERIMENTS, help="which experiment")
    parser.add_argument("--runs", nargs="+", metavar="RUN",
                        help="trained run folders to reuse ('surf-dist train'; 'pretrained[:scratch|:robust]': a "
                             "shipped optimizer); default: train here")
    parser.add_argument("--baselines", metavar="DIR", help="communication: reuse the tuned baselines and "
                        "centralized optimum of 'surf-dist baselines --out DIR' (same task settings and seed)")
    parser.add_argument("--eps-values", type=_floats, help="eps: comma-separated eps values "
                        f"(default {','.join(map(str, DEFAULT_EPS))})")
    parser.add_argument("--target", type=float, help="eps: local_accuracy target for 'rounds to reach' "
                        "(default: the lowest final local_accuracy of the models)")
    parser.add_argument("--async-levels", type=_ints, help="async: comma-separated n_async levels "
                        f"(default {','.join(map(str, DEFAULT_ASYNC_LEVELS))}, those <= agents)")
    parser.add_argument("--async-mode", choices=("zeros", "stale"),
                        help="async: a dropped agent sends zeros or its stale iterate")
    parser.add_argument("--topologies", type=_names, help="transfer: comma-separated topology presets "
                        f"(default {','.join(DEFAULT_TOPOLOGIES)})")
    parser.add_argument("--compressors", type=_names, help="compression: comma-separated --compress specs "
                        f"(default {','.join(DEFAULT_COMPRESSORS)})")
    parser.add_argument("--link-failure-probs", type=_floats, help="link-failures: comma-separated probabilities "
                        f"that a link fails in a round (default {','.join(map(str, DEFAULT_PROBS))})")
    parser.add_argument("--methods", type=_names, help="compression, link-failures: comma-separated baselines "
                        "(default: all)")
    parser.add_argument("--report-seed", type=int, help="compression, link-failures: which fresh test tasks are "
                        "reported (>= 1)")
    parser.add_argument("--test-agents", type=_ints, help="transfer: comma-separated agent counts "
                        f"(default {','.join(map(str, DEFAULT_TEST_AGENTS))})")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def experiment_config(args, cfg: RunConfig, overrides: dict[str, dict]) -> RunConfig:
    """The experiment's settings: those of ``--runs[0]`` (unless --config) with the command
    line's explicit ``overrides`` on top, else ``cfg`` (preset + overrides); plus the
    experiment's defaults (async levels, transfer rounds)."""
    if args.runs and not args.config:
        cfg = jobs.settings_of_runs(args.runs, overrides)
    extra: dict[str, dict] = {}
    if args.name == "async":
        levels = args.async_levels or DEFAULT_ASYNC_LEVELS
        beyond = [l for l in args.async_levels or () if not 0 <= l < cfg.task.num_agents]
        if beyond:        # refused before training, not after it (issue 25)
            raise ValueError(f"--async-levels: {beyond[:5]} not in [0, {cfg.task.num_agents}) (the agents dropped "
                             f"per layer out of {cfg.task.num_agents}); pass levels below {cfg.task.num_agents}")
        extra.setdefault("eval", {})["async_levels"] = [l for l in levels if l <= cfg.task.num_agents]
    if args.async_mode:
        extra.setdefault("eval", {})["async_mode"] = args.async_mode
    if args.name == "transfer" and args.rounds is None:
        extra.setdefault("eval", {})["baseline_rounds"] = min(TRANSFER_ROUNDS, cfg.eval.baseline_rounds)
    return with_overrides(cfg, extra) if extra else cfg


def options_of(args) -> dict:
    """The picklable options of ``experiment_job`` (they travel to every worker)."""
    if args.target is not None and not 0 <= args.target <= 1:
        raise ValueError(f"--target {args.target}: a local_accuracy target must lie in [0, 1]")
    unused = {"--eps-values": args.eps_values and args.name != "eps", "--target": args.target is not None
              and args.name != "eps", "--async-levels": args.async_levels and args.name != "async",
              "--topologies": args.topologies and args.name != "transfer",
              "--test-agents": args.test_agents and args.name != "transfer",
              "--baselines": args.baselines and args.name != "communication",
              "--compressors": args.compressors and args.name != "compression",
              "--link-failure-probs": args.link_failure_probs and args.name != "link-failures",
              "--methods": args.methods and args.name not in ("compression", "link-failures"),
              "--report-seed": args.report_seed is not None and args.name not in ("compression", "link-failures")}
    for flag, ignored in unused.items():
        if ignored:
            raise ValueError(f"{flag} is not used by experiment {args.name}; drop it")
    if args.name == "eps" and args.runs and args.eps_values:
        raise ValueError("eps: pass either --runs (trained models, eps read from them) or --eps-values")
    compressors = check_compressors(list(args.compressors or DEFAULT_COMPRESSORS))
    probs = check_probs(args.link_failure_probs or DEFAULT_PROBS)
    if args.name in ("compression", "link-failures"):
        from ..bench.runner import methods_of
        from ..bench.protocol import BenchConfig
        methods_of(BenchConfig(report_seed=args.report_seed or 1, methods=tuple(args.methods or ())))
    return {"name": args.name, "runs": list(args.runs or []),
            "compressors": compressors, "link_failure_probs": probs, "methods": list(args.methods or []), "report_seed": args.report_seed or 1, "eps_values": list(args.eps_values or DEFAULT_EPS),
            "target": args.target, "topologies": list(args.topologies or DEFAULT_TOPOLOGIES),
            "test_agents": list(args.test_agents or DEFAULT_TEST_AGENTS), "baselines": args.baselines}


def run_experiment(args, cfg: RunConfig, out: Path, progress: bool, overrides: dict[str, dict]) -> int:
    """Run experiment ``args.name`` on ``args.backend`` and write its files (coordinator only).

    ``overrides``: the settings the command line names explicitly (``cli.explicit_overrides``),
    applied on top of a ``--runs`` folder's settings."""
    from ...runtime import is_coordinator, run_job
    cfg = experiment_config(args, cfg, overrides)
    options = options_of(args)
    start = time.perf_counter()
    result = run_job(experiment_job, cfg, args.backend, args.workers, args.device, progress=progress,
                     out_dir=str(out), **options)
    if result is None or not is_coordinator():
        return 0
    result["wall_seconds"] = time.perf_counter() - start
    result["command"] = "surf-dist " + " ".join(sys.argv[1:]) if Path(sys.argv[0]).name == "surf-dist" else None
    result["backend"] = {"name": args.backend, "workers": args.workers}
    written = write_outputs(out, args.name, result, cfg)
    print(f"\nwall time {result['wall_seconds']:.1f} s; wrote " + ", ".join(p.name for p in written))
    return 0


# --------------------------------------------------------------------------- the job

def experiment_job(cfg: RunConfig, worker, name: str, out_dir: str, runs: list[str],
                   progress: bool = True, **options) -> dict:
    """Every worker runs this (``worker``: its ``engine.Worker``); the coordinator's result holds
    the numbers and the plot data."""
    out = Path(out_dir)
    say = _say if worker.comm.rank == 0 else (lambda *_: None)
    if name == "eps":
        if runs:
            models = load_runs(runs, worker, key=_eps_name)
        else:
            configs = {f"surf_eps{e:g}": with_overrides(cfg, {"train": {"eps": e, "constrained": True}})
                       for e in options["eps_values"]}
            models = jobs.train_models(configs, worker, out, progress, say)
        return eps_experiment(cfg, worker, models, options.get("target"), say)
    if name == "compression":
        return compression_experiment(cfg, worker, runs, options["compressors"], options["methods"],
                                      options["report_seed"], progress, say)
    if name == "link-failures":
        return link_failure_experiment(cfg, worker, runs, options["link_failure_probs"], options["methods"],
                                       options["report_seed"], progress, say)
    if runs:
        models = load_runs(runs, worker, key=lambda c: "surf" if c.train.constrained else "unrolled")
    else:
        configs = {n: with_overrides(cfg, {"train": {"constrained": c}}) for n, c in (("surf", True), ("unrolled", False))}
        models = jobs.train_models(configs, worker, out, progress, say)
    if name == "layers":
        return layers_experiment(cfg, worker, models, say)
    if name == "async":
        return async_experiment(cfg, worker, models, say)
    if name == "communication":
        return communication_experiment(cfg, worker, models, progress, say, options.get("baselines"))
    if name == "transfer":
        return transfer_experiment(cfg, worker, models, options["topologies"], options["test_agents"], progress, say)
    raise ValueError(f"unknown experiment {name!r}; choose one of {EXPERIMENTS}")


def _eps_name(cfg: RunConfig) -> str:
    if not cfg.train.constrained:
        raise ValueError("eps: every --runs folder must hold a constrained (SURF) run")
    return f"surf_eps{cfg.train.eps:g}"


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_runs(runs: list[str], worker, key) -> dict:
    """{name: (model, config)} of trained run folders, named by ``key(config)``."""
    models = {}
    for run in runs:
        cfg = jobs.run_config(Path(run), worker.files)
        name = key(cfg)
        if name in models:
            raise ValueError(f"--runs: {run} and {models[name][2]} are both '{name}' models; pass one of each")
        models[name] = (jobs.load_model(Path(run), worker), cfg, run)
    first = next(iter(models.values()))[1]
    for model, cfg, run in models.values():
        if cfg.task != first.task or cfg.model != first.model:
            raise ValueError(f"--runs: {run} was trained on other task or model settings than {runs[0]}")
    return {name: (model, cfg) for name, (model, cfg, _) in models.items()}
