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

The models come from ``--runs`` (folders of ``surf-dist train``; a constrained run is ``surf``,
an unconstrained one ``unrolled``) or are trained into ``DIR/run_NAME`` (SURF and unrolled in
parallel processes on the local backend, as the demo does). Every experiment writes
``NAME.png``, ``NAME.json`` (the numbers, the config, the wall time) and ``NAME.csv`` into DIR.
"""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from . import jobs
from .comm.local import LocalCommunicator
from .config import RunConfig, with_overrides
from .constraints import descent_values
from .engine import Worker
from .evaluate import (
    async_sweep,
    evaluate_baselines,
    evaluate_centralized,
    evaluate_unrolled,
)
from .problem import loss_per_agent
from .report import CURVE_KEYS, atomic_write_text, table
from .train import new_model, train, unroll

EXPERIMENTS = ("layers", "eps", "async", "communication", "transfer")
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
        extra.setdefault("eval", {})["async_levels"] = [l for l in levels if l <= cfg.task.num_agents]
    if args.async_mode:
        extra.setdefault("eval", {})["async_mode"] = args.async_mode
    if args.name == "transfer" and args.rounds is None:
        extra.setdefault("eval", {})["baseline_rounds"] = min(TRANSFER_ROUNDS, cfg.eval.baseline_rounds)
    return with_overrides(cfg, extra) if extra else cfg


def options_of(args) -> dict:
    """The picklable options of ``experiment_job`` (they travel to every worker)."""
    if args.name == "eps" and args.runs and args.eps_values:
        raise ValueError("eps: pass either --runs (trained models, eps read from them) or --eps-values")
    return {"name": args.name, "runs": list(args.runs or []), "eps_values": list(args.eps_values or DEFAULT_EPS),
            "target": args.target, "topologies": list(args.topologies or DEFAULT_TOPOLOGIES),
            "test_agents": list(args.test_agents or DEFAULT_TEST_AGENTS), "baselines": args.baselines}


def run_experiment(args, cfg: RunConfig, out: Path, progress: bool, overrides: dict[str, dict]) -> int:
    """Run experiment ``args.name`` on ``args.backend`` and write its files (coordinator only).

    ``overrides``: the settings the command line names explicitly (``cli.explicit_overrides``),
    applied on top of a ``--runs`` folder's settings."""
    from .runtime import is_coordinator, run_job
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

def experiment_job(cfg: RunConfig, worker: Worker, name: str, out_dir: str, runs: list[str],
                   progress: bool = True, **options) -> dict:
    """Every worker runs this; the coordinator's result holds the numbers and the plot data."""
    out = Path(out_dir)
    say = _say if worker.comm.rank == 0 else (lambda *_: None)
    if name == "eps":
        if runs:
            models = load_runs(runs, worker, key=_eps_name)
        else:
            configs = {f"surf_eps{e:g}": with_overrides(cfg, {"train": {"eps": e, "constrained": True}})
                       for e in options["eps_values"]}
            models = train_models(configs, worker, out, progress, say)
        return eps_experiment(cfg, worker, models, options.get("target"), say)
    if runs:
        models = load_runs(runs, worker, key=lambda c: "surf" if c.train.constrained else "unrolled")
    else:
        configs = {n: with_overrides(cfg, {"train": {"constrained": c}}) for n, c in (("surf", True), ("unrolled", False))}
        models = train_models(configs, worker, out, progress, say)
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


def load_runs(runs: list[str], worker: Worker, key) -> dict:
    """{name: (model, config)} of trained run folders, named by ``key(config)``."""
    models = {}
    for run in runs:
        cfg = jobs.run_config(Path(run))
        name = key(cfg)
        if name in models:
            raise ValueError(f"--runs: {run} and {models[name][2]} are both '{name}' models; pass one of each")
        models[name] = (jobs.load_model(Path(run), worker), cfg, run)
    first = next(iter(models.values()))[1]
    for model, cfg, run in models.values():
        if cfg.task != first.task or cfg.model != first.model:
            raise ValueError(f"--runs: {run} was trained on other task or model settings than {runs[0]}")
    return {name: (model, cfg) for name, (model, cfg, _) in models.items()}


def train_models(configs: dict[str, RunConfig], worker: Worker, out: Path, progress: bool, say) -> dict:
    """Meta-train each config into ``out/run_NAME``: {name: (model, config)}.

    As in ``jobs.demo_job``: on the local backend with 2+ cores the first model trains here and
    the others in helper processes at the same time; distributed backends train one by one."""
    names = list(configs)
    cores = os.cpu_count() or 1
    side, futures = None, {}
    say(f"training {', '.join(names)} ({configs[names[0]].train.steps} steps each)")
    start = time.perf_counter()
    if isinstance(worker.comm, LocalCommunicator) and cores > 1 and len(names) > 1:
        side = ProcessPoolExecutor(min(len(names) - 1, cores - 1), mp_context=multiprocessing.get_context("spawn"))
        futures = {n: side.submit(jobs.train_detached, configs[n].to_dict(), str(out / f"run_{n}"), str(worker.device))
                   for n in names[1:]}
    models = {}
    for n in names:
        if n in futures:
            model = new_model(configs[n], worker)
            model.load_state_dict(futures[n].result())
        else:
            model = train(configs[n], worker, out / f"run_{n}", progress=progress, tag=n).model
        models[n] = (model, configs[n])
        say(f"trained {n} ({time.perf_counter() - start:.0f} s)")
    if side is not None:
        side.shutdown()
    return models


# --------------------------------------------------------------------------- layer statistics

def exceeds(values, eps: float = 0.0):
    """Where a layer fails to descend: ``values[l] > (1 - eps) values[l - 1]`` for l = 1..L.

    ``values``: (L + 1, ...) array or tensor; eps = 0 asks where the value rose."""
    return values[1:] > (1.0 - eps) * values[:-1]


def layer_statistics(model, worker: Worker, tasks, eps: float, descent: str) -> dict:
    """Per-layer descent on ``tasks``: the constraint's g (seen data, as in training) and the
    held-out loss, each as the mean over tasks, per task, and indicator fractions.

    ``violated_*`` test g_l > (1 - eps) g_(l-1); ``rose_*`` test held-out loss_l > loss_(l-1).
    ``*_mean``: on the mean over test tasks (the constraint in training is an expectation);
    ``*_tasks``: fraction of tasks (per-task means); ``*_agents``: fraction of (task, agent) nodes."""
    T = len(tasks)
    with torch.no_grad():
        shards, Ws = unroll(model, worker, tasks)
        g = descent_values(Ws, shards.X_seen, shards.Y_seen, descent)                      # (L+1, N)
        held = torch.stack([loss_per_agent(W, shards.X_held, shards.Y_held) for W in Ws])  # (L+1, N)
    groups, comm = shards.task_of_node, worker.comm
    per_task = lambda v_ln: torch.stack([comm.group_mean(v, groups, T) for v in v_ln]).numpy()  # (rows, T)
    stats = {}
    for key, values, tol in (("g", g, eps), ("held_loss", held, 0.0)):
        tag = "violated" if key == "g" else "rose"
        task_values = per_task(values)
        stats[f"{key}_mean"] = task_values.mean(1).tolist()
        stats[f"{key}_per_task"] = task_values.tolist()
        stats[f"{tag}_mean"] = [bool(v) for v in exceeds(task_values.mean(1), tol)]
        stats[f"{tag}_tasks"] = exceeds(task_values, tol).mean(1).tolist()
        stats[f"{tag}_agents"] = per_task(exceeds(values, tol).double()).mean(1).tolist()
    stats["eps"], stats["descent"] = eps, descent
    return stats


def summarize_descent(stats: dict) -> dict:
    """Totals over layers: layers whose mean violated / rose, and overall fractions."""
    out = {}
    for tag in ("violated", "rose"):
        out[f"{tag}_layers_mean"] = int(sum(stats[f"{tag}_mean"]))
        out[f"{tag}_fraction_task_layers"] = float(np.mean(stats[f"{tag}_tasks"]))
        out[f"{tag}_fraction_agent_layers"] = float(np.mean(stats[f"{tag}_agents"]))
    return out


# --------------------------------------------------------------------------- experiments

def layers_experiment(cfg: RunConfig, worker: Worker, models: dict, say) -> dict:
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    result = {"experiment": "layers", "eps": cfg.train.eps, "descent": cfg.train.descent, "models": {}}
    for name, (model, _) in models.items():
        say(f"layers: {name} on {len(tasks)} test tasks")
        curve = evaluate_unrolled(model, worker, tasks)
        stats = layer_statistics(model, worker, tasks, cfg.train.eps, cfg.train.descent)
        result["models"][name] = {"curve": curve, "descent": stats, "totals": summarize_descent(stats)}
    return result


def eps_experiment(cfg: RunConfig, worker: Worker, models: dict, target: float | None, say) -> dict:
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    result = {"experiment": "eps", "descent": cfg.train.descent, "models": {}}
    for name, (model, mcfg) in models.items():
        say(f"eps: {name} on {len(tasks)} test tasks")
        curve = evaluate_unrolled(model, worker, tasks)
        stats = layer_statistics(model, worker, tasks, mcfg.train.eps, mcfg.train.descent)
        result["models"][name] = {"eps": mcfg.train.eps, "curve": curve, "descent": stats,
                                  "totals": summarize_descent(stats), "final": jobs.final_row(curve)}
    finals = [m["final"]["local_accuracy"] for m in result["models"].values()]
    result["target"] = float(min(finals)) if target is None else float(target)
    result["target_rule"] = "lowest final local_accuracy of the models" if target is None else "--target"
    for entry in result["models"].values():
        need = jobs.rounds_to_reach(entry["curve"], result["target"])
        entry["rounds_to_target"] = None if need == float("inf") else need
    return result


def async_experiment(cfg: RunConfig, worker: Worker, models: dict, say) -> dict:
    ec = cfg.eval
    tasks = worker.family.batch("test", range(ec.test_tasks))
    levels = list(ec.async_levels)
    result = {"experiment": "async", "n_async": levels, "draws": ec.async_draws, "mode": ec.async_mode,
              "num_agents": worker.num_agents, "raw": {}, "stats": {}}
    for name, (model, _) in models.items():
        start = time.perf_counter()
        say(f"async: {name}, levels {levels} x {ec.async_draws} draws on {len(tasks)} test tasks")
        sweep = async_sweep(model, worker, tasks, levels, ec.async_draws, cfg.train.seed, ec.async_mode == "stale")
        result["raw"][name] = [sweep[level] for level in levels]
        result["stats"][name] = [spread(v, sweep[levels[0]]) for v in result["raw"][name]]
        say(f"async: {name} done ({time.perf_counter() - start:.0f} s)")
    if {"surf", "unrolled"} <= set(result["raw"]):   # the same draws for both models: pair them
        result["paired_surf_minus_unrolled"] = [
            paired(s, u) for s, u in zip(result["raw"]["surf"], result["raw"]["unrolled"])]
    return result


def _sem(v: np.ndarray) -> float:
    """Standard error of the mean (0 for a single value)."""
    return float(v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0


def spread(values, reference) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std()), "sem": _sem(v),
            "min": float(v.min()), "p10": float(np.quantile(v, 0.1)), "median": float(np.median(v)),
            "p90": float(np.quantile(v, 0.9)), "max": float(v.max()),
            "drop_vs_first_level": float(np.mean(reference) - v.mean()), "draws": int(v.size)}


def paired(a, b) -> dict:
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return {"mean": float(d.mean()), "std": float(d.std()), "sem": _sem(d),
            "fraction_surf_better": float(np.mean(d > 0)), "fraction_tied": float(np.mean(d == 0))}


def communication_experiment(cfg: RunConfig, worker: Worker, models: dict, progress: bool, say,
                             baselines_dir: str | None = None) -> dict:
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    summary = {"methods": {}}
    for name, (model, _) in models.items():
        say(f"communication: {name} on {len(tasks)} test tasks")
        summary["methods"][name] = evaluate_unrolled(model, worker, tasks)
    if baselines_dir:
        say(f"communication: tuned baselines and centralized optimum from {baselines_dir}")
        saved = load_baselines(Path(baselines_dir), cfg)
        summary["methods"].update(saved["methods"])
        summary["centralized"] = saved["centralized"]
    else:
        say(f"communication: tuned baselines to {cfg.eval.baseline_rounds} rounds")
        summary["methods"].update(evaluate_baselines(cfg, worker, tasks, progress))
        if worker.comm.rank == 0:
            say("communication: centralized optimum")
            summary["centralized"] = evaluate_centralized(worker, tasks)
    return {"experiment": "communication", "summary": summary, "key": communication_numbers(summary),
            "baselines_from": baselines_dir}


EVAL_KEYS = ("test_tasks", "baseline_rounds", "eval_points", "step_grid", "tune_tasks", "local_steps", "momentum")


def load_baselines(folder: Path, cfg: RunConfig) -> dict:
    """The summary.json of ``surf-dist baselines``, checked to be on the same test tasks."""
    path = folder / "summary.json"
    if not path.is_file():
        raise ValueError(f"--baselines: {path} does not exist (write it with 'surf-dist baselines --out {folder}')")
    saved = json.loads(path.read_text())
    mine = cfg.to_dict()
    theirs = saved.get("config", {})
    same = (theirs.get("task") == mine["task"] and theirs.get("train", {}).get("seed") == mine["train"]["seed"]
            and {k: theirs.get("eval", {}).get(k) for k in EVAL_KEYS}
            == {k: mine["eval"][k] for k in EVAL_KEYS})
    if not same:
        raise ValueError(f"--baselines: {folder} was run on other task settings, seed, test tasks or baseline settings than these models")
    return saved


def communication_numbers(summary: dict, reference: str = "surf") -> dict:
    """Per method: values at the learned models' budget and at the end; rounds and bytes per
    agent to reach the reference model's final local_accuracy."""
    methods = summary["methods"]
    ref = methods.get(reference) or next(iter(methods.values()))
    budget = ref["rounds"][-1]
    target = ref["local_accuracy"][-1]
    numbers = {"reference": reference if reference in methods else next(iter(methods)),
               "budget_rounds": budget, "target_local_accuracy": target, "methods": {}}
    for name, curve in methods.items():
        need = jobs.rounds_to_reach(curve, target)
        reached = need != float("inf")
        numbers["methods"][name] = {
            "at_budget": jobs.final_row(curve, budget), "final": jobs.final_row(curve),
            "rounds_to_target": need if reached else None,
            "bytes_per_agent_to_target": curve["bytes_per_agent"][curve["rounds"].index(need)] if reached else None,
            "ratio_to_reference": need / budget if reached and budget else None}
    if "centralized" in summary:
        numbers["centralized"] = summary["centralized"]
    return numbers


def transfer_settings(cfg: RunConfig, topologies, test_agents) -> list[dict]:
    """The training setting first (the in-distribution reference), then each other topology at
    the training size, then the training topology at each other size."""
    train_topo, train_n = cfg.task.topology, cfg.task.num_agents
    settings = [{"topology": train_topo, "num_agents": train_n, "kind": "trained on"}]
    settings += [{"topology": t, "num_agents": train_n, "kind": "topology"} for t in topologies if t != train_topo]
    settings += [{"topology": train_topo, "num_agents": n, "kind": "agents"} for n in test_agents if n != train_n]
    return settings


def transfer_experiment(cfg: RunConfig, worker: Worker, models: dict, topologies, test_agents,
                        progress: bool, say) -> dict:
    from .runtime.common import make_worker
    result = {"experiment": "transfer", "trained_on": {"topology": cfg.task.topology,
              "num_agents": cfg.task.num_agents}, "baseline_rounds": cfg.eval.baseline_rounds, "settings": []}
    settings = transfer_settings(cfg, topologies, test_agents)
    for i, setting in enumerate(settings):
        label = f"{Path(setting['topology']).stem} n={setting['num_agents']}"
        say(f"transfer [{i + 1}/{len(settings)}]: {label}")
        tcfg = with_overrides(cfg, {"task": {"topology": setting["topology"], "num_agents": setting["num_agents"]},
                                    "eval": {"async_levels": [0]}})
        tworker = make_worker(tcfg, worker.comm, worker.device)
        tasks = tworker.family.batch("test", range(tcfg.eval.test_tasks))
        methods = {name: evaluate_unrolled(model, tworker, tasks) for name, (model, _) in models.items()}
        methods.update(evaluate_baselines(tcfg, tworker, tasks, progress, names=("dgd",)))
        summary = {"methods": methods}
        if worker.comm.rank == 0:
            summary["centralized"] = evaluate_centralized(tworker, tasks)
        key = communication_numbers(summary)
        for name in models:
            key["methods"][name]["held_loss_rises"] = int(sum(exceeds(np.asarray(methods[name]["loss"]))))
        result["settings"].append({**setting, "label": label, "summary": summary, "key": key})
    return result


# --------------------------------------------------------------------------- files

def write_outputs(out: Path, name: str, result: dict, cfg: RunConfig) -> list[Path]:
    """``NAME.json`` (numbers + config), ``NAME.csv`` (a flat table) and ``NAME.png``."""
    out.mkdir(parents=True, exist_ok=True)
    writers = {"layers": (layers_rows, plot_layers), "eps": (eps_rows, plot_eps), "async": (async_rows, plot_async_figure),
               "communication": (communication_rows, plot_communication), "transfer": (transfer_rows, plot_transfer)}
    rows_of, plot = writers[name]
    atomic_write_text(out / f"{name}.json", json.dumps({"config": cfg.to_dict(), **result}, indent=1,
                                                       default=_jsonable))
    with open(out / f"{name}.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows_of(result))
    written = [out / f"{name}.json", out / f"{name}.csv", plot(result, out / f"{name}.png")]
    print(describe(name, result))
    return written


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def layers_rows(result: dict) -> list[list]:
    cols = ["loss", "accuracy", "local_accuracy"]
    rows = [["model", "layer", *cols, "g_mean", "violated_mean", "violated_tasks", "violated_agents",
             "held_loss_mean", "rose_mean", "rose_tasks", "rose_agents"]]
    for name, entry in result["models"].items():
        c, s = entry["curve"], entry["descent"]
        for l in range(len(c["loss"])):
            rows.append([name, l, *(c[k][l] for k in cols), s["g_mean"][l], *_step(s, l, "violated"),
                         s["held_loss_mean"][l], *_step(s, l, "rose")])
    return rows


def _step(stats: dict, layer: int, tag: str) -> list:
    """The step from layer - 1 to ``layer``: (mean test, fraction of tasks, fraction of agents);
    blanks for layer 0."""
    return [""] * 3 if layer == 0 else [stats[f"{tag}_{k}"][layer - 1] for k in ("mean", "tasks", "agents")]


def eps_rows(result: dict) -> list[list]:
    rows = [["model", "eps", "layer", "rounds", "loss", "accuracy", "local_accuracy", "violated_mean",
             "violated_tasks", "violated_agents"]]
    for name, entry in result["models"].items():
        c, s = entry["curve"], entry["descent"]
        for l in range(len(c["loss"])):
            rows.append([name, entry["eps"], l, c["rounds"][l], c["loss"][l], c["accuracy"][l],
                         c["local_accuracy"][l], *_step(s, l, "violated")])
    return rows


def async_rows(result: dict) -> list[list]:
    keys = ["mean", "std", "sem", "min", "p10", "median", "p90", "max", "drop_vs_first_level", "draws"]
    rows = [["model", "n_async", *keys]]
    for name, stats in result["stats"].items():
        rows += [[name, level, *(s[k] for k in keys)] for level, s in zip(result["n_async"], stats)]
    for level, p in zip(result["n_async"], result.get("paired_surf_minus_unrolled", [])):
        rows.append(["surf_minus_unrolled", level, p["mean"], p["std"], p["sem"], "", "", "", "", "", "", ""])
    return rows


def communication_rows(result: dict) -> list[list]:
    rows = [["method", *CURVE_KEYS]]
    for name, curve in result["summary"]["methods"].items():
        rows += [[name, *(curve[k][i] for k in CURVE_KEYS)] for i in range(len(curve["rounds"]))]
    return rows


def transfer_rows(result: dict) -> list[list]:
    rows = [["topology", "num_agents", "method", "rounds_at_budget", "local_accuracy_at_budget",
             "accuracy_at_budget", "loss_at_budget", "final_rounds", "final_local_accuracy",
             "rounds_to_match_surf", "held_loss_rises"]]
    for s in result["settings"]:
        for name, m in s["key"]["methods"].items():
            b, f = m["at_budget"], m["final"]
            rows.append([s["topology"], s["num_agents"], name, b["rounds"], b["local_accuracy"], b["accuracy"],
                         b["loss"], f["rounds"], f["local_accuracy"], m["rounds_to_target"], m.get("held_loss_rises", "")])
    return rows


def describe(name: str, result: dict) -> str:
    """A few lines for the terminal."""
    lines = []
    if name in ("layers", "eps"):
        for model, e in result["models"].items():
            t, c = e["totals"], e["curve"]
            lines.append(f"{model:<16} final loss {c['loss'][-1]:.3f} local_acc {c['local_accuracy'][-1]:.3f}; "
                         f"layers violating (mean) {t['violated_layers_mean']}, rising {t['rose_layers_mean']}; "
                         f"violated task-layers {t['violated_fraction_task_layers']:.2f}, "
                         f"agent-layers {t['violated_fraction_agent_layers']:.2f}"
                         + (f"; rounds to {result['target']:.3f}: {e['rounds_to_target']}" if name == "eps" else ""))
    elif name == "async":
        lines.append(f"final local_accuracy mean (std) per n_async {result['n_async']}")
        for model, stats in result["stats"].items():
            lines.append(f"  {model:<10} " + " ".join(f"{s['mean']:.3f} ({s['std']:.3f})" for s in stats))
        if "paired_surf_minus_unrolled" in result:
            lines.append("  surf - unrolled (paired) " + " ".join(
                f"{p['mean']:+.4f}" for p in result["paired_surf_minus_unrolled"]))
    elif name == "communication":
        lines.append(table(result["summary"]))
    else:
        for s in result["settings"]:
            m = s["key"]["methods"]
            lines.append(f"{s['label']:<24} " + " ".join(
                f"{k} {v['at_budget']['local_accuracy']:.3f}" for k, v in m.items())
                + f"; dgd rounds to match surf: {m['dgd']['rounds_to_target']}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures

def _plt():
    from . import plots  # selects the Agg backend
    return plots, plots.plt


def plot_layers(result: dict, path) -> Path:
    plots, plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (ax_loss, ax_acc), (ax_g, ax_rise) = axes
    names = list(result["models"])
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        entry = result["models"][name]
        c, s = entry["curve"], entry["descent"]
        style = plots._style(name)
        layers = np.arange(len(c["loss"]))
        ax_loss.plot(layers, c["loss"], **style)
        ax_acc.plot(layers, c["local_accuracy"], **style)
        ax_acc.plot(layers, c["accuracy"], **{**style, "linestyle": "--", "label": style["label"] + " (pooled)"})
        for ax, key in ((ax_g, "violated"), (ax_rise, "rose")):
            x = layers[1:] + (i - (len(names) - 1) / 2) * width
            ax.bar(x, s[f"{key}_tasks"], width, color=style["color"], alpha=0.6, label=f"{style['label']}: tasks")
            ax.plot(x, s[f"{key}_agents"], linestyle="none", marker="v", color=style["color"],
                    label=f"{style['label']}: agents")
            for l, flag in zip(layers[1:], s[f"{key}_mean"]):
                if flag:
                    ax.annotate("*", (l + (i - (len(names) - 1) / 2) * width, 1.0), ha="center",
                                fontsize=12, color=style["color"], annotation_clip=False)
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="layer (0 = W_0)", ylabel="held-out loss (log scale)", title="Held-out loss per layer")
    ax_acc.set(xlabel="layer (0 = W_0)", ylabel="accuracy", title="Local (solid) and pooled (dashed) accuracy")
    eps = result["eps"]
    ax_g.set(xlabel="layer l", ylabel="fraction", ylim=(0, 1.08),
             title=f"Constraint violated: g_l > (1-{eps:g}) g_(l-1) ({result['descent']}, seen data)")
    ax_rise.set(xlabel="layer l", ylabel="fraction", ylim=(0, 1.08), title="Held-out loss rose from layer l-1")
    for ax in axes.ravel():
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        ax.xaxis.set_major_locator(plots.MaxNLocator(integer=True))
    fig.suptitle("Per-layer behaviour on test tasks (bars: fraction of tasks; triangles: fraction of agents; "
                 "'mean': the mean over tasks fails)", fontsize=10)
    fig.tight_layout()
    return plots._save(fig, path)


def plot_eps(result: dict, path) -> Path:
    plots, plt = _plt()
    fig, (ax_loss, ax_acc, ax_v) = plt.subplots(1, 3, figsize=(16, 4.8))
    cmap = plt.get_cmap("viridis")
    names = list(result["models"])
    for i, name in enumerate(names):
        e = result["models"][name]
        color = cmap(i / max(len(names) - 1, 1))
        c = e["curve"]
        label = f"eps = {e['eps']:g}"
        ax_loss.plot(c["rounds"], c["loss"], marker="o", color=color, label=label)
        ax_acc.plot(c["rounds"], c["local_accuracy"], marker="o", color=color,
                    label=f"{label} (reaches target at {e['rounds_to_target']} rounds)")
        t = e["totals"]
        ax_v.bar(i - 0.2, t["violated_fraction_task_layers"], 0.4, color=color, alpha=0.7)
        ax_v.bar(i + 0.2, t["violated_fraction_agent_layers"], 0.4, color=color, alpha=0.35, hatch="//")
        ax_v.annotate(f"{t['violated_layers_mean']} of {len(e['descent']['violated_mean'])}\nlayers (mean)",
                      (i, max(t["violated_fraction_task_layers"], t["violated_fraction_agent_layers"]) + 0.02),
                      ha="center", fontsize=8)
    ax_acc.axhline(result["target"], color="black", linestyle="--", linewidth=1, label=f"target {result['target']:.3f}")
    ax_loss.set_yscale("log")
    ax_loss.set(xlabel="communication rounds", ylabel="held-out loss (log scale)", title="Held-out loss per layer")
    ax_acc.set(xlabel="communication rounds", ylabel="local accuracy", title="Local accuracy per layer")
    ax_v.set_xticks(range(len(names)), [f"eps={result['models'][n]['eps']:g}" for n in names])
    ax_v.set(ylabel="fraction of (task, layer) / (agent, layer) pairs", ylim=(0, 1.1),
             title="Constraint violations on test tasks\n(solid: tasks; hatched: agents)")
    for ax in (ax_loss, ax_acc, ax_v):
        ax.grid(True, alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_acc.legend(fontsize=7)
    fig.tight_layout()
    return plots._save(fig, path)


def plot_async_figure(result: dict, path) -> Path:
    plots, _ = _plt()
    return plots.plot_async({"async": {"n_async": result["n_async"], **result["raw"]}}, path)


def plot_communication(result: dict, path) -> Path:
    plots, _ = _plt()
    return plots.plot_accuracy_vs_communication(result["summary"], path)


def plot_transfer(result: dict, path) -> Path:
    plots, plt = _plt()
    settings = result["settings"]
    methods = list(settings[0]["key"]["methods"]) if settings else []
    fig, (ax_acc, ax_r) = plt.subplots(1, 2, figsize=(14, 4.8))
    x = np.arange(len(settings))
    width = 0.8 / max(len(methods), 1)
    for i, name in enumerate(methods):
        vals = [s["key"]["methods"][name]["at_budget"]["local_accuracy"] for s in settings]
        style = plots._style(name)
        ax_acc.bar(x + (i - (len(methods) - 1) / 2) * width, vals, width, color=style["color"],
                   label=f"{style['label']} ({settings[0]['key']['budget_rounds']} rounds)" if settings else name)
    if settings:
        dgd_final = [s["key"]["methods"]["dgd"]["final"]["local_accuracy"] for s in settings]
        ax_acc.plot(x, dgd_final, linestyle="none", marker="_", markersize=18, color="black",
                    label=f"DGD at {result['baseline_rounds']} rounds")
        need = [s["key"]["methods"]["dgd"]["rounds_to_target"] for s in settings]
        horizon = result["baseline_rounds"]
        ax_r.bar(x, [n if n is not None else horizon for n in need], 0.5,
                 color=["tab:blue" if n is not None else "lightgray" for n in need])
        for xi, n in zip(x, need):
            ax_r.annotate(str(n) if n is not None else f">{horizon}", (xi, n or horizon), xytext=(0, 3),
                          textcoords="offset points", ha="center", fontsize=8)
        ax_r.axhline(settings[0]["key"]["budget_rounds"], color="tab:red", linestyle="--", label="SURF's rounds")
    labels = [s["label"] + ("\n(trained)" if s["kind"] == "trained on" else "") for s in settings]
    for ax in (ax_acc, ax_r):
        ax.set_xticks(x, labels, fontsize=8, rotation=15)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    lo = min([s["key"]["methods"][m]["at_budget"]["local_accuracy"] for s in settings for m in methods] or [0])
    ax_acc.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax_acc.set(ylabel="local accuracy on test tasks", title="Accuracy on graphs the models were not trained on")
    ax_r.set(ylabel="rounds", title="Tuned DGD: rounds to match SURF's local accuracy")
    fig.tight_layout()
    return plots._save(fig, path)
