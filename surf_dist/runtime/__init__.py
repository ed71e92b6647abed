"""Runtimes: where the workers of a job live (one process, torch.distributed ranks, Ray actors):
``run_job`` here, ``common`` (building a worker, placement of agents on workers), ``rank`` and
``torch_runtime`` (torch.distributed ranks), ``ray_runtime`` (Ray actors), ``job_files`` (the
files the driver reads and sends to the ranks), ``ray_rows`` (a Ray rank's rows of a file
dataset, from the driver's node) and ``pools`` (helper process pools). One of the
two homes of ``torch.distributed`` and ``ray`` (with ``comm``). May import ``core``,
``methods``, ``problem``, ``comm`` and ``io``; never ``commands`` or ``cli``."""
from __future__ import annotations

import os

from ..comm.local import LocalCommunicator
from .common import check_device, make_worker

BACKENDS = ("local", "torch", "ray")


def is_coordinator() -> bool:
    """False on the non-zero ranks of a torchrun launch: only the coordinator writes files."""
    return int(os.environ.get("RANK", "0")) == 0


COLLECTIVE_TIMEOUT_ENV = "SURF_DIST_COLLECTIVE_TIMEOUT_S"
DEFAULT_COLLECTIVE_TIMEOUT_S = 60.0


def collective_timeout_s() -> float:
    """Seconds a collective may wait for a peer before the run fails naming it:
    ``SURF_DIST_COLLECTIVE_TIMEOUT_S`` if set (``--collective-timeout`` sets it for one command;
    a slow but alive rank, e.g. a large task on a busy host, needs more than the default), else
    60 s. ValueError naming the variable otherwise."""
    text = os.environ.get(COLLECTIVE_TIMEOUT_ENV)
    if not text:
        return DEFAULT_COLLECTIVE_TIMEOUT_S
    return parse_timeout_s(text, f"{COLLECTIVE_TIMEOUT_ENV}={text[:40]!r} (environment)", "unset it")


def parse_timeout_s(text: str, said: str, default_hint: str) -> float:
    """``text`` as a collective timeout in seconds, in (0, 86400]; else a ValueError that starts
    with ``said`` (the flag or variable that gave it) and ends with how to get the default."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not (0 < seconds <= 86_400):
        raise ValueError(f"{said} must be a number of seconds in (0, 86400]; set it to how long a collective "
                         f"may wait for a slow rank, or {default_hint} for {DEFAULT_COLLECTIVE_TIMEOUT_S:g} s")
    return seconds


def run_job(job, cfg, backend: str = "local", workers: int = 1, device: str = "cpu", **options):
    """Run ``job(cfg, worker, **options)`` on every worker; return the coordinator's result
    (None on the other ranks of a torchrun launch). ``device`` "cuda": each worker's shards
    and iterates on a GPU of its own, and the ranks' collectives through nccl."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if backend != "torch" and launched > 1:
        raise ValueError(f"launched as {launched} torchrun ranks (WORLD_SIZE={launched}): "
                         "pass --backend torch")
    if backend == "local":
        if workers != 1:
            raise ValueError("the local backend runs one worker; use --backend torch or ray for more")
        check_device(device)
        return job(cfg, make_worker(cfg, LocalCommunicator(), device), **options)
    timeout_s = collective_timeout_s()
    if backend == "ray":
        from .ray_runtime import run_ray
        return run_ray(job, cfg, workers, timeout_s, device=device, **options)
    from .torch_runtime import run_torch
    return run_torch(job, cfg, workers, timeout_s, device=device, **options)
