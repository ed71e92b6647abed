"""Runtimes: where the workers of a job live (one process, torch.distributed ranks, Ray actors)."""
from __future__ import annotations

from ..comm.local import LocalCommunicator
from .common import make_worker

BACKENDS = ("local",)


def run_job(job, cfg, backend: str = "local", workers: int = 1, **options):
    """Run ``job(cfg, worker, **options)`` on every worker; return the coordinator's result."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "local":
        if workers != 1:
            raise ValueError("the local backend runs one worker; use --backend torch or ray for more")
        return job(cfg, make_worker(cfg, LocalCommunicator()), **options)
