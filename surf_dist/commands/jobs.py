"""The jobs behind the commands, written once for every backend.

A job is ``job(cfg, worker, **options) -> dict``: every worker runs it with its own
``Worker`` (its hosted agents and its communicator); the result of rank 0, the coordinator,
is what the command reports. Only rank 0 writes files.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..comm.compress import parse_compressor
from ..comm.local import LocalCommunicator
from ..io.config import RunConfig, from_dict, mixture_task, with_overrides
from ..core.engine import Worker
from ..core.evaluate import async_sweep, evaluate_unrolled
from .bench.summary_curves import centralized_summary, tuned_baselines
from ..runtime.pools import helper_pool, stop_pool
from ..methods.learned import UnrolledDGD
from ..core.models import fitted_model, load_model, run_config  # noqa: F401 - read as jobs.*
from ..core.train import new_model, to_cpu, train


def baselines_job(cfg: RunConfig, worker: Worker, progress: bool = True) -> dict:
    test_tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    summary = {"methods": tuned_baselines(cfg, worker, test_tasks, progress)}
    if worker.comm.rank == 0:
        summary["centralized"] = centralized_summary(cfg, worker, test_tasks)
    return summary


def train_job(cfg: RunConfig, worker: Worker, run_dir: str, resume: bool = False,
              progress: bool = True) -> dict:
    state = train(cfg, worker, Path(run_dir), resume=resume, progress=progress, mixture=mixture_workers(cfg, worker))
    return {"best_val_loss": state.best_val, "duals": state.duals.tolist(), "steps": state.step}


def mixture_workers(cfg: RunConfig, worker: Worker) -> tuple[Worker, ...]:
    """A worker for each setting of ``cfg.train.mixture``, on ``worker``'s communicator and device
    (each places its own agents on the same ranks; messages compressed as the run's own)."""
    from ..runtime.common import make_worker
    tasks = [dataclasses.replace(mixture_task(entry), compress=cfg.task.compress) for entry in cfg.train.mixture]
    return tuple(make_worker(dataclasses.replace(cfg, task=task), worker.comm, worker.device) for task in tasks)


def check_compressor(spec: str, said: str, d: int | None = None) -> None:
    """A ``--compress`` spec parses and, with ``d``, fits a message of d coordinates (ValueError
    naming ``said``, where the spec comes from)."""
    compressor = parse_compressor(spec, said)
    if d is not None:
        compressor.check_fits(d, said)


def settings_of_runs(runs: list[str], overrides: dict[str, dict]) -> RunConfig:
    """The settings ``runs[0]`` was trained with, ``overrides`` (the command line's explicit
    settings) on top."""
    return with_overrides(run_config(Path(runs[0])), overrides)


EVALUATE_PARTS = ("baselines", "async", "permuted", "centralized")   # what ``evaluate --skip`` may leave out


def evaluate_models(cfg: RunConfig, worker: Worker, models: dict[str, UnrolledDGD],
                    progress: bool = True, skip: tuple[str, ...] = ()) -> dict:
    """Curves of each model and the baselines on the test tasks, the async sweep, the
    permuted-label check and the centralized optimum, in the ``summary.json`` format; the parts
    named in ``skip`` (``EVALUATE_PARTS``) are left out of it."""
    fam, ec = worker.family, cfg.eval
    test_tasks = fam.batch("test", range(ec.test_tasks))
    stale = ec.async_mode == "stale"
    summary = {"methods": {}}
    if "async" not in skip:
        summary["async"] = {"n_async": list(ec.async_levels)}
    if "permuted" not in skip:
        summary["permuted_labels"] = {}
        permuted = fam.batch("test", range(ec.test_tasks), permute_labels=True)
    for name, model in models.items():
        summary["methods"][name] = evaluate_unrolled(model, worker, test_tasks)
        if "async" not in skip:
            sweep = async_sweep(model, worker, test_tasks, ec.async_levels, ec.async_draws, cfg.train.seed, stale)
            summary["async"][name] = [sweep[level] for level in ec.async_levels]
        if "permuted" not in skip:
            summary["permuted_labels"][name] = evaluate_unrolled(model, worker, permuted)["local_accuracy"][-1]
    if "baselines" not in skip:
        summary["methods"].update(tuned_baselines(cfg, worker, test_tasks, progress))
    if worker.comm.rank == 0 and "centralized" not in skip:
        summary["centralized"] = centralized_summary(cfg, worker, test_tasks)
    return summary


def demo_job(cfg: RunConfig, worker: Worker, out_dir: str, progress: bool = True) -> dict:
    """Meta-train SURF (constrained) and plain unrolling, then evaluate both with the baselines.

    On the single-process backend a second process trains the unconstrained model and then
    runs the baselines while this one trains and evaluates SURF (the pieces are independent;
    on 2+ cores this halves the wall time). Distributed backends run them one after another."""
    out = Path(out_dir)
    configs = {name: with_overrides(cfg, {"train": {"constrained": constrained}})
               for name, constrained in (("surf", True), ("unrolled", False))}
    start = time.perf_counter()
    side = None
    if isinstance(worker.comm, LocalCommunicator) and (os.cpu_count() or 1) > 1:
        side = helper_pool(1)
        device = str(worker.device)
        side_model = side.submit(train_detached, configs["unrolled"].to_dict(), str(out / "run_unrolled"), device)
        side_baselines = side.submit(baselines_detached, cfg.to_dict(), device)
    try:
        models = {"surf": train(configs["surf"], worker, out / "run_surf", progress=progress, tag="surf").model}
        if side is None:
            models["unrolled"] = train(configs["unrolled"], worker, out / "run_unrolled", progress=progress,
                                       tag="unrolled").model
        else:
            models["unrolled"] = new_model(configs["unrolled"], worker)
            models["unrolled"].load_state_dict(side_model.result())
        timings = {"train_s": time.perf_counter() - start}
        summary = evaluate_models(cfg, worker, models, progress, skip=() if side is None else ("baselines",))
        if side is not None:
            summary["methods"].update(side_baselines.result())
            side.shutdown()
    except BaseException:
        if side is not None:
            stop_pool(side)
        raise
    timings["total_s"] = time.perf_counter() - start
    summary["timings"] = timings
    return summary


def train_models(configs: dict[str, RunConfig], worker: Worker, out: Path, progress: bool, say) -> dict:
    """Meta-train each config into ``out/run_NAME``: {name: (model, config)}; ``say`` prints a
    progress line.

    As in ``demo_job``: on the local backend with 2+ cores the first model trains here and the
    others in helper processes at the same time; distributed backends train one by one."""
    names = list(configs)
    cores = os.cpu_count() or 1
    side, futures = None, {}
    say(f"training {', '.join(names)} ({configs[names[0]].train.steps} steps each)")
    start = time.perf_counter()
    if isinstance(worker.comm, LocalCommunicator) and cores > 1 and len(names) > 1:
        side = helper_pool(min(len(names) - 1, cores - 1))
        futures = {n: side.submit(train_detached, configs[n].to_dict(), str(out / f"run_{n}"), str(worker.device))
                   for n in names[1:]}
    models = {}
    try:
        for n in names:
            if n in futures:
                model = new_model(configs[n], worker)
                model.load_state_dict(futures[n].result())
            else:
                model = train(configs[n], worker, out / f"run_{n}", progress=progress, tag=n).model
            models[n] = (model, configs[n])
            say(f"trained {n} ({time.perf_counter() - start:.0f} s)")
    except BaseException:
        if side is not None:
            stop_pool(side)
        raise
    if side is not None:
        side.shutdown()
    return models


def train_detached(cfg_dict: dict, run_dir: str, device: str = "cpu") -> dict:
    """Train on the local backend in a helper process; returns the kept model's state (CPU)."""
    cfg = from_dict(cfg_dict)
    return to_cpu(train(cfg, local_worker(cfg, device), Path(run_dir), progress=False).best_model)


def baselines_detached(cfg_dict: dict, device: str = "cpu") -> dict:
    """The tuned baselines on the local backend in a helper process."""
    cfg = from_dict(cfg_dict)
    worker = local_worker(cfg, device)
    return tuned_baselines(cfg, worker, worker.family.batch("test", range(cfg.eval.test_tasks)), False)


def local_worker(cfg: RunConfig, device: str = "cpu") -> Worker:
    from ..runtime.common import make_worker
    torch.set_num_threads(1)
    return make_worker(cfg, LocalCommunicator(), torch.device(device))


def evaluate_job(cfg: RunConfig, worker: Worker, run_dirs: list[str], progress: bool = True,
                 names: list[str] | None = None, skip: tuple[str, ...] = ()) -> dict:
    """``names``: one per run (``model_names``), by default from the folders; ``skip``: parts
    of ``EVALUATE_PARTS`` left out."""
    names = names or model_names(run_dirs)
    models = {name: load_model(Path(run_dir), worker) for name, run_dir in zip(names, run_dirs)}
    return evaluate_models(cfg, worker, models, progress, skip=skip)


RESERVED_NAMES = ("dgd", "dsgd", "gradient_tracking", "dfedavgm", "centralized", "n_async")


def model_names(runs: list[str]) -> list[str]:
    """The name of each evaluated run in summary.json, distinct from each other and from the
    baselines. The rule: the folder's name without a ``run_`` prefix (``pretrained[:NAME]`` as
    written); where two runs share it, as many trailing folders of their paths as tell them
    apart (``a/run``, ``b/run``); a name a baseline uses gets the prefix ``run:`` (``run:dgd``).
    The same folder given twice is an error."""
    resolved = [str(Path(r).resolve()) if not str(r).startswith("pretrained") else str(r) for r in runs]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise ValueError(f"{runs[i]} is given twice; evaluate each run once")
    parts = [Path(r).parts if not str(r).startswith("pretrained") else (str(r),) for r in resolved]
    names = [p[-1].removeprefix("run_") if not p[-1].startswith("pretrained") else p[-1] for p in parts]
    for name in set(names):
        clashing = [i for i, n in enumerate(names) if n == name]
        depth = 1
        while len(clashing) > 1 and len({"/".join(parts[i][-depth:]) for i in clashing}) < len(clashing):
            depth += 1
        if len(clashing) > 1:
            for i in clashing:
                names[i] = "/".join(parts[i][-depth:])
    return [f"run:{n}" if n in RESERVED_NAMES else n for n in names]


def final_row(curve: dict, rounds: int | None = None) -> dict:
    """The curve's point at ``rounds`` (the last point at or below it), or its last point."""
    idx = len(curve["rounds"]) - 1 if rounds is None else max(
        i for i, r in enumerate(curve["rounds"]) if r <= rounds)
    return {k: curve[k][idx] for k in ("rounds", "bytes_per_agent", "loss", "accuracy", "local_accuracy")}


def rounds_to_reach(curve: dict, target: float, metric: str = "local_accuracy") -> float:
    """First evaluated round count at which ``metric`` reaches ``target`` (inf if never)."""
    for r, v in zip(curve["rounds"], curve[metric]):
        if v >= target:
            return r
    return float("inf")


def mean_std(values) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std())
