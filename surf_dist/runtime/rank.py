"""One rank of a distributed run, the same on both runtimes (spawned or torchrun processes in
``torch_runtime``, Ray actors in ``ray_runtime``): its process group, its worker and job
(``run_rank``), how one rank's error is described (``job_failure``) and how the failures of a
group become one error (``group_failure``). The runtimes differ only in how ranks start, meet
and report back."""
from __future__ import annotations

import os
import signal
import sys
import time
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
SLOW_RANK_ENV = "SURF_DIST_TEST_SLOW_RANK"   # tests only: "RANK:SECONDS", that rank sleeps before its job
PR_SET_PDEATHSIG = 1                         # linux/prctl.h

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


def die_with_parent(parent_pid: int | None = None) -> None:
    """Linux: the kernel sends this process SIGKILL when its parent dies (``prctl
    PR_SET_PDEATHSIG``), so a killed driver (or torchrun agent) leaves no rank training and
    writing into a run folder whose lock died with the driver. A parent that is already gone
    (``parent_pid`` no longer the parent, or adopted by init) ends this process at once.
    Other systems: nothing (their ranks end when a collective times out)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    parent = os.getppid()
    if parent == 1 or (parent_pid is not None and parent != parent_pid):
        os._exit(1)


def slow_rank_for_tests(rank: int) -> None:
    """Tests only: ``SURF_DIST_TEST_SLOW_RANK=RANK:SECONDS`` makes that rank sleep before its job,
    a rank that is slow but alive (its peers wait in their first collective)."""
    text = os.environ.get(SLOW_RANK_ENV)
    if text:
        slow, seconds = text.split(":")
        if int(slow) == rank:
            print(f"{SLOW_RANK_ENV}: rank {rank} sleeps {float(seconds):g} s", file=sys.stderr, flush=True)
            time.sleep(float(seconds))


def run_rank(job, cfg, options: dict, timeout_s: float, device: torch.device, *,
             files=None, inputs=None, coordinator_factory=None):
    """Inside a process group: this rank's worker runs ``job(cfg, worker, **options)``; rank 0's
    result, None on the others. Progress shows on rank 0 only. ``files``: what the driver read
    for the job (a cluster node may not see its files), ``inputs`` the dataset and topologies it
    read (``job_files.TaskInputs``); ``coordinator_factory``: rank 0's coordinator, when it
    lives elsewhere."""
    comm = TorchCommunicator(timeout_s)
    worker = make_worker(cfg, comm, device, inputs)
    if files is not None:
        worker.files = files
    if coordinator_factory is not None:
        worker.coordinator_factory = coordinator_factory
    if "progress" in options:
        options = {**options, "progress": options["progress"] and comm.rank == 0}
    slow_rank_for_tests(comm.rank)
    result = job(cfg, worker, **options)
    return result if comm.rank == 0 else None


def from_rank_zero(read, what: str):
    """``read()`` on rank 0 only (the files a job reads: on rank 0's node), its value sent to
    every rank through the default group before anything runs. A ValueError or missing file
    on rank 0 is raised on every rank, with rank 0's one-line message."""
    box = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", read())
        except (ValueError, FileNotFoundError) as err:
            box[0] = ("error", f"{what} on rank 0: {err}")
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise ValueError(value)
    return value


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
    again would repeat it); a rank that is gone ("died": its process or node vanished) is a
    ``WorkerLostError`` with ``lost`` set, the only failure worth a restart. Lost-peer echoes
    alone (a collective timed out, every rank still alive: one was slow or stuck) are a
    ``JobError`` saying so: a restart would meet the same slow rank again. The runtimes check
    liveness before they call this: a rank they could not hear from is "died" only if gone."""
    ordered = sorted(failures.items(), key=lambda item: (item[1][0] == "peer", item[0]))
    text = "; ".join(m if m.startswith(f"rank {r}:") else f"rank {r}: {m}" for r, (_, m, _) in ordered)
    message = f"{runtime} backend failed: {text}" if text else f"{runtime} backend failed"
    kind, _, user = ordered[0][1] if ordered else ("died", "", None)
    if user is not None:
        return user(message)
    if kind == "error":
        return JobError(message)
    if kind == "peer":
        return JobError(f"{message}; no rank died, so one is slower than the collective timeout or stuck: "
                        "if it is only slow, pass a larger --collective-timeout")
    return WorkerLostError(message, lost=True)
