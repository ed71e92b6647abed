"""The five experiments: each takes trained models ``{name: (model, config)}`` and returns its
numbers as a dict (the coordinator's is written by ``outputs.write_outputs``).

``worker`` is the job's ``engine.Worker`` (its hosted agents and communicator); ``say`` prints a
progress line on rank 0.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .. import jobs
from ...io.config import RunConfig, with_overrides
from ...core.descent_stats import exceeds, layer_statistics, summarize_descent
from ...core.evaluate import async_sweep, evaluate_unrolled
from ..bench.summary_curves import centralized_summary, tuned_baselines


def layers_experiment(cfg: RunConfig, worker, models: dict, say) -> dict:
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    result = {"experiment": "layers", "eps": cfg.train.eps, "descent": cfg.train.descent, "models": {}}
    for name, (model, _) in models.items():
        say(f"layers: {name} on {len(tasks)} test tasks")
        curve = evaluate_unrolled(model, worker, tasks)
        stats = layer_statistics(model, worker, tasks, cfg.train.eps, cfg.train.descent)
        result["models"][name] = {"curve": curve, "descent": stats, "totals": summarize_descent(stats)}
    return result


def eps_experiment(cfg: RunConfig, worker, models: dict, target: float | None, say) -> dict:
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


def async_experiment(cfg: RunConfig, worker, models: dict, say) -> dict:
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


def communication_experiment(cfg: RunConfig, worker, models: dict, progress: bool, say,
                             baselines_dir: str | None = None) -> dict:
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    summary = {"methods": {}}
    for name, (model, _) in models.items():
        say(f"communication: {name} on {len(tasks)} test tasks")
        summary["methods"][name] = evaluate_unrolled(model, worker, tasks)
    if baselines_dir:
        say(f"communication: tuned baselines and centralized optimum from {baselines_dir}")
        saved = load_baselines(Path(baselines_dir), cfg, worker.files)
        summary["methods"].update(saved["methods"])
        summary["centralized"] = saved["centralized"]
    else:
        say(f"communication: tuned baselines to {cfg.eval.baseline_rounds} rounds")
        summary["methods"].update(tuned_baselines(cfg, worker, tasks, progress))
        if worker.comm.rank == 0:
            say("communication: centralized optimum")
            summary["centralized"] = centralized_summary(cfg, worker, tasks)
    return {"experiment": "communication", "summary": summary, "key": communication_numbers(summary),
            "baselines_from": baselines_dir}


EVAL_KEYS = ("test_tasks", "baseline_rounds", "eval_points", "tune_tasks")



def load_baselines(folder: Path, cfg: RunConfig, files=None) -> dict:
    """The summary.json of ``surf-dist baselines``, checked to be on the same test tasks.
    ``files``: what the driver (rank 0 under torchrun) read and sent; None: read it here."""
    path = folder / "summary.json"
    raw = path.read_bytes() if files is None and path.is_file() else None
    if files is not None:
        try:
            raw = files.bytes_of(path)
        except ValueError:           # not on the driver's host (rank 0's under torchrun) either
            raw = None
    if raw is None:
        raise ValueError(f"--baselines: {path} does not exist (write it with 'surf-dist baselines --out {folder}')")
    saved = json.loads(raw)
    mine = cfg.to_dict()
    theirs = saved.get("config", {})
    same = ({"compress": "none", "link_failure": 0.0, **theirs.get("task", {})} == mine["task"] and theirs.get("train", {}).get("seed") == mine["train"]["seed"]
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


def transfer_experiment(cfg: RunConfig, worker, models: dict, topologies, test_agents,
                        progress: bool, say) -> dict:
    from ...runtime.common import make_worker
    result = {"experiment": "transfer", "trained_on": {"topology": cfg.task.topology,
              "num_agents": cfg.task.num_agents}, "baseline_rounds": cfg.eval.baseline_rounds, "settings": []}
    settings = transfer_settings(cfg, topologies, test_agents)
    for i, setting in enumerate(settings):
        label = f"{Path(setting['topology']).stem} n={setting['num_agents']}"
        say(f"transfer [{i + 1}/{len(settings)}]: {label}")
        tcfg = with_overrides(cfg, {"task": {"topology": setting["topology"], "num_agents": setting["num_agents"]},
                                    "eval": {"async_levels": [0]}})
        tworker = make_worker(tcfg, worker.comm, worker.device, worker.inputs)
        tasks = tworker.family.batch("test", range(tcfg.eval.test_tasks))
        methods = {name: evaluate_unrolled(model, tworker, tasks) for name, (model, _) in models.items()}
        methods.update(tuned_baselines(tcfg, tworker, tasks, progress, names=("dgd",)))
        summary = {"methods": methods}
        if worker.comm.rank == 0:
            summary["centralized"] = centralized_summary(tcfg, tworker, tasks)
        key = communication_numbers(summary)
        for name in models:
            key["methods"][name]["held_loss_rises"] = int(sum(exceeds(np.asarray(methods[name]["loss"]))))
        result["settings"].append({**setting, "label": label, "summary": summary, "key": key})
    return result
