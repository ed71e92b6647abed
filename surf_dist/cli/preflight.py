"""Everything about a command that can be checked before it starts, in the order a user would
fix it: where it runs, where it writes, how big it is, the graph, the data, the runs it reads.

``check_command`` creates nothing; it raises ValueError (or FileNotFoundError) with one line
naming the problem and the fix. What it cannot know (a corrupt dataset file, a run that
diverges) still fails later, and then the output folder it had not written is removed again.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import numpy as np

from ..commands import jobs
from ..io.checkpoint import load_model_file
from ..io.config import RunConfig, mixture_task
from ..problem.datasets import SHAPES, canonical_name, check_available
from ..io.files import check_input_file, check_output_folder
from ..methods.pretrained import resolve_run
from .errors import check_path_text
from .memory_estimate import check_size
from ..problem.topology import load_topology_preset
from ..io.checkpoint import CHECKPOINT


def check_command(args, cfg: RunConfig, out: Path) -> None:
    """All of the checks below for a parsed command line ``args`` and its settings ``cfg``."""
    from ..runtime import is_coordinator
    resume = getattr(args, "resume", False)
    check_launch(args.backend, args.workers, args.device, cfg.task.num_agents)
    if not is_coordinator():     # torchrun's other ranks: rank 0 checks the files, reads them and sends them
        check_size(cfg, args.command, *SHAPES[canonical_name(cfg.task.dataset)][:2], args.workers)
        return
    check_output_folder(out, args.force, resume)
    features, classes, _ = check_available(cfg.task.dataset, cfg.task.data_root or None)
    check_size(cfg, args.command, features, classes, args.workers)
    check_compress(cfg, features, classes, getattr(args, "compress", None) is not None)
    check_graph(cfg)
    check_async_mode(cfg)
    for entry in cfg.train.mixture if args.command == "train" else ():
        mixed = dataclasses.replace(cfg, task=mixture_task(entry))
        try:
            check_available(mixed.task.dataset, None)
            check_graph(mixed)
        except ValueError as err:
            raise ValueError(f"--mixture {entry}: {err}") from None
    if resume and args.command == "train":      # the bench's --resume: commands/bench/saved_baselines.py
        check_resumable(out, cfg, features, classes)
    if cfg.train.init_from and args.command in ("train", "demo", "experiment"):
        load_model_file(resolve_run(cfg.train.init_from) / "model.pt")
    if args.command == "evaluate":
        for run in args.runs:
            check_run_fits(Path(run), cfg.task.dataset, features, classes)
    if args.command == "bench":
        from ..commands.bench import learned_runs
        for _, folder in learned_runs(args.models):
            check_run_fits(Path(folder), cfg.task.dataset, features, classes)
    if args.command == "experiment" and args.runs:
        for run in args.runs:
            load_model_file(Path(run) / "model.pt")


def check_compress(cfg: RunConfig, features: int, classes: int, flag: bool = True) -> None:
    """The compressor parses and fits the messages: a sparsifier keeps at most d coordinates.
    ``flag``: the spec comes from ``--compress`` (else from a config or the run read)."""
    from ..comm.compress import parse_compressor
    spec = cfg.task.compress
    said = f"--compress {spec}" if flag else f"compress {spec!r} (task.compress of the settings read)"
    parse_compressor(spec, said).check_fits((features + 1) * classes, said)


def check_launch(backend: str, workers: int, device: str, num_agents: int) -> None:
    """The backend exists, the worker count fits the agents, the device is there."""
    from ..runtime import BACKENDS, check_device, collective_timeout_s
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "local":
        collective_timeout_s()
    if workers < 1:
        raise ValueError(f"--workers {workers}: needs at least 1 worker")
    if backend == "local" and workers != 1:
        raise ValueError(f"--workers {workers}: the local backend runs one worker; use --backend torch or "
                         "ray for more")
    if workers > num_agents:
        raise ValueError(f"--workers {workers}: cannot place {num_agents} agents on {workers} workers (every "
                         f"worker hosts at least one agent); pass --workers {num_agents} or fewer")
    check_device(device)


def check_graph(cfg: RunConfig) -> None:
    """One draw of the topology for ``num_agents`` agents: connected, a valid mixing matrix (a
    random family draws with the training seed, as the first task will)."""
    spec = load_topology_preset(cfg.task.topology)
    try:
        spec.sample(cfg.task.num_agents, np.random.default_rng(cfg.train.seed))
    except ValueError as err:
        named = spec.edge_list if spec.family == "edge_list" else cfg.task.topology
        if named in str(err):
            raise
        raise ValueError(f"topology {named} with {cfg.task.num_agents} agents: {err}") from None


def check_async_mode(cfg: RunConfig) -> None:
    """Stale asynchronous agents need a static graph without link failures: a dropped agent's
    neighbours use the last row they received from it (``comm.base``), which a failed link or
    another round's graph would leave older than its last message."""
    if cfg.eval.async_mode != "stale":
        return
    if cfg.task.link_failure > 0:
        raise ValueError(f"--async-mode stale with --link-failure {cfg.task.link_failure:g}: a receiver's last row "
                         "from a dropped neighbour may predate a failed link; use --async-mode zeros or --link-failure 0")
    if load_topology_preset(cfg.task.topology).is_time_varying:
        raise ValueError(f"--async-mode stale with the time-varying topology {cfg.task.topology}: a receiver's last "
                         "row from a dropped neighbour may come from another round's graph; use --async-mode zeros or "
                         "a static --topology")


def check_resumable(out: Path, cfg: RunConfig, features: int, classes: int) -> None:
    """``out`` holds a training checkpoint that ``cfg`` can continue (``train.load_resumable``)."""
    from ..methods.learned import UnrolledDGD
    from ..core.train import load_resumable
    path = out / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"--resume: {out} holds no {CHECKPOINT} to continue from; drop --resume to start "
                         "a new run (in an empty folder)")
    load_resumable(path, cfg, UnrolledDGD(cfg.model, features + 1, classes))


def check_runs_exist(runs: list[str]) -> None:
    """Every run folder to read exists and holds a ``model.pt``."""
    for run in map(Path, runs):
        if run.is_file():
            raise ValueError(f"{run} is a file; name the run folder that holds it ({run.parent}), written by "
                             "'surf-dist train'")
        if run.is_symlink() and not run.exists():
            check_input_file(run, "run folder")          # a loop of links, a link to nothing: say which
        if not run.is_dir():
            raise ValueError(f"run folder {run} does not exist (a folder written by 'surf-dist train', "
                             "or pretrained[:scratch|:robust])")
        if not (run / "model.pt").is_file():
            raise ValueError(f"{run} holds no model.pt: is it a run folder of 'surf-dist train' that finished? "
                             "(an interrupted one: continue it with 'surf-dist train --resume --out RUN')")


def check_run_fits(run: Path, dataset: str, features: int, classes: int) -> None:
    """A run folder holds an intact ``model.pt`` that can be evaluated on ``dataset``."""
    saved, run_cfg = load_model_file(run / "model.pt")
    jobs.fitted_model(run, saved, run_cfg, canonical_name(dataset), features, classes)


PATH_ARGUMENTS = {"out": "--out", "config": "--config", "data_root": "--data-root", "topology": "--topology",
                  "init_from": "--init-from", "baselines": "--baselines", "baselines_from": "--baselines-from",
                  "choices_from": "--choices-from", "runs": "RUN", "models": "RUN"}


def check_path_arguments(args) -> None:
    """Every path on the command line names something (``errors.check_path_text``): ``--out ""``
    is refused, never read as the current folder."""
    for dest, flag in PATH_ARGUMENTS.items():
        value = getattr(args, dest, None)
        for text in value if isinstance(value, list) else [value]:
            check_path_text(text, flag if dest not in ("runs", "models") else f"a {flag} argument")


@contextlib.contextmanager
def collective_timeout_flag(args):
    """``--collective-timeout`` checked before any work and set where the runtime reads the
    timeout (``SURF_DIST_COLLECTIVE_TIMEOUT_S``) for this command only."""
    from ..runtime import COLLECTIVE_TIMEOUT_ENV, parse_timeout_s
    text = getattr(args, "collective_timeout", None)
    if text is None:
        yield
        return
    if args.backend == "local":
        raise ValueError(f"--collective-timeout {text} is not used: the local backend runs no collectives; drop it, "
                         "or pass --backend torch or ray")
    parse_timeout_s(text, f"--collective-timeout {text[:40]}", "drop it")
    saved = os.environ.get(COLLECTIVE_TIMEOUT_ENV)
    os.environ[COLLECTIVE_TIMEOUT_ENV] = text
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(COLLECTIVE_TIMEOUT_ENV, None)
        else:
            os.environ[COLLECTIVE_TIMEOUT_ENV] = saved
