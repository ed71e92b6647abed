"""One rank of a distributed run, the same on both runtimes (spawned or torchrun processes in
``torch_runtime``, Ray actors in ``ray_runtime``): its process group, its worker and job
(``run_rank``), how one rank's error is described (``job_failure``) and how the failures of a
group become one error (``group_failure``). The runtimes differ only in how ranks start, meet
and report back."""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from ..comm.torch_dist import PeerLostError, TorchCommunicator
from .common import JobError, WorkerLostError, make_worker

LOOPBACK = "127.0.0.1"
GRACE_S = 1.0          # after a first failure, how long to collect the other ranks' reports
RENDEZVOUS_S = 120.0   # at least this long for every rank to arrive (imports on a busy machine)
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)   # re-raised as themselves

Failure = tuple[str, str, "type | None"]   # (kind, message, user error class); kinds below


@contextmanager
def process_group(backend: str, timeout_s: float, **init):
    """The default group (gloo or nccl), destroyed on the way out whatever happens. Its timeout
    bounds the rendezvous only: the communicator's collectives run in a group of their own
    (``timeout_s``). ``init``: where the ranks meet (a store, or an ``init_method`` with rank
    and world size; nothing under torchrun, which sets the environment)."""
    dist.init_process_group(backend, timeout=timedelta(seconds=max(timeout_s, RENDEZVOUS_S)), **init)
    try:
        yield
    finally:
        dist.destroy_process_group()


def rank_device(cuda: bool, index: int = 0) -> torch.device:
    """GPU ``index`` (made the current one, as nccl needs), or the CPU."""
    if not cuda:
        return torch.device("cpu")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def loopback_sockets() -> None:
    """gloo's and nccl's sockets on loopback, for a group whose ranks all live on this machine."""
    os.environ.update(GLOO_SOCKET_IFNAME="lo", NCCL_SOCKET_IFNAME="lo")


def run_rank(job, cfg, options: dict, timeout_s: float, device: torch.device, *,
             files=None, coordinator_factory=None):
    """Inside a process group: this rank's worker runs ``job(cfg, worker, **options)``; rank 0's
    result, None on the others. Progress shows on rank 0 only. ``files``: what the driver read
    for the job (a cluster node may not see its files); ``coordinator_factory``: rank 0's
    coordinator, when it lives elsewhere."""
    comm = TorchCommunicator(timeout_s)
    worker = make_worker(cfg, comm, device)
    if files is not None:
        worker.files = files
    if coordinator_factory is not None:
        worker.coordinator_factory = coordinator_factory
    if "progress" in options:
        options = {**options, "progress": options["progress"] and comm.rank == 0}
    result = job(cfg, worker, **options)
    return result if comm.rank == 0 else None


def job_failure(err: BaseException, where: str = "") -> Failure:
    """A rank's own error: kind "peer" for a lost peer (an echo of another rank's failure; its
    message already names the rank and round), else "error" with its place (``where``: "(at
    file:line)"), and the user error class it re-raises as, if any."""
    if isinstance(err, PeerLostError):
        return "peer", str(err), None
    message = f"{type(err).__name__}: {err}" + (f" {where}" if where else "")
    return "error", message, next((c for c in USER_ERRORS if isinstance(err, c)), None)


def group_failure(runtime: str, failures: dict[int, Failure]) -> Exception:
    """One error naming every failed rank, root causes first (lost-peer echoes last). A user
    error re-raises as itself; an error the job raised is a ``JobError`` (running the group
    again would repeat it); a rank that died without a word ("died") is a ``WorkerLostError``
    with ``lost`` set, the only failure worth a restart."""
    ordered = sorted(failures.items(), key=lambda item: (item[1][0] == "peer", item[0]))
    text = "; ".join(m if m.startswith(f"rank {r}:") else f"rank {r}: {m}" for r, (_, m, _) in ordered)
    message = f"{runtime} backend failed: {text}" if text else f"{runtime} backend failed"
    kind, _, user = ordered[0][1] if ordered else ("died", "", None)
    if user is not None:
        return user(message)
    if kind == "error":
        return JobError(message)
    return WorkerLostError(message, lost=True)
