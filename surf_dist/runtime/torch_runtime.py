"""The torch.distributed runtime: gloo ranks spawned on this machine, or launched by torchrun.
With ``device="cuda"`` every rank takes the GPU of its local rank and the group uses nccl.

Every rank builds ``make_worker(cfg, TorchCommunicator(timeout_s))`` and runs
``job(cfg, worker, **options)``; rank 0 (the coordinator) returns the result, the other ranks
return None. Progress bars show on rank 0 only.

- Launched by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` in the environment): this process is
  one rank; the group is initialised from the environment.
- Otherwise ``workers`` processes are spawned here (start method "spawn") and meet through a
  TCP store that this process holds on a free loopback port. The parent polls them: the first
  rank that raises or dies ends the run at once, with a message naming every failed rank, and
  the others are killed (no waiting for the collective timeout).
"""
from __future__ import annotations

import os
import pickle
import queue
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from datetime import timedelta
from multiprocessing import util as mp_util

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..comm.torch_dist import PeerLostError, TorchCommunicator
from ..topology import place_agents
from .common import JobError, WorkerLostError, check_device, make_worker

LOOPBACK = "127.0.0.1"
GRACE_S = 1.0          # after a first failure, how long to collect the other ranks' reports
RENDEZVOUS_S = 120.0   # at least this long for every rank to arrive (imports on a busy machine)
USER_ERRORS = (ValueError, FileNotFoundError, FloatingPointError)   # re-raised as themselves


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


@contextmanager
def process_group(timeout_s: float, device: str = "cpu", **init):
    """The default group (gloo; nccl for ``device`` cuda), destroyed on the way out whatever
    happens. Its timeout bounds the rendezvous only: the communicator's collectives run in a
    group of their own (``timeout_s``)."""
    backend = "nccl" if device == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=max(timeout_s, RENDEZVOUS_S)), **init)
    try:
        yield
    finally:
        dist.destroy_process_group()


def run_torch(job, cfg, workers: int, timeout_s: float = 60.0, device: str = "cpu", **options):
    """Run ``job`` on ``workers`` ranks; the coordinator's result (None on other ranks)."""
    place_agents(cfg.task.num_agents, workers)     # a clear ValueError before anything starts
    if launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if workers != world:
            raise ValueError(f"torchrun started {world} ranks (WORLD_SIZE={world}) but --workers is "
                             f"{workers}: pass --workers {world}")
        check_device(device, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
        torch.set_num_threads(1)
        rank_device = _rank_device(device, int(os.environ.get("LOCAL_RANK", "0")))
        with process_group(timeout_s, device):
            return _run_rank(job, cfg, timeout_s, options, rank_device)
    check_device(device, workers)
    return _spawn(job, cfg, workers, timeout_s, options, device)


def _rank_device(device: str, local_rank: int) -> torch.device:
    """The GPU of ``local_rank`` (made the current one, as nccl needs), or the CPU."""
    if device != "cuda":
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def _run_rank(job, cfg, timeout_s, options, device):
    comm = TorchCommunicator(timeout_s)
    if "progress" in options:
        options = {**options, "progress": options["progress"] and comm.rank == 0}
    result = job(cfg, make_worker(cfg, comm, device), **options)
    return result if comm.rank == 0 else None


def _spawned_rank(rank, world, port, timeout_s, job, cfg, options, device, reports):
    """One spawned rank: reports (rank, "ok", result, None) from rank 0, or (rank, kind, message,
    user error class or None) from any rank that fails, kind "peer" for a lost-peer error.
    Exits through ``os._exit`` once its report is flushed: the interpreter's teardown with
    torch loaded takes seconds and does nothing useful here."""
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    os.environ.update(MASTER_ADDR=LOOPBACK, MASTER_PORT=str(port))
    code = 0
    try:
        store = dist.TCPStore(LOOPBACK, port, world, is_master=False,
                              timeout=timedelta(seconds=max(timeout_s, RENDEZVOUS_S)))
        rank_device = _rank_device(device, rank)
        with process_group(timeout_s, device, store=store, rank=rank, world_size=world):
            result = _run_rank(job, cfg, timeout_s, options, rank_device)
        if rank == 0:     # pickled here: tensors travel as bytes, not as shared memory of a dying process
            reports.put((rank, "ok", pickle.dumps(result), None))
    except BaseException as err:
        code = 1
        if isinstance(err, PeerLostError):     # its message already names the rank and round
            kind, message = "peer", str(err)
        else:
            where = traceback.extract_tb(err.__traceback__)[-1]
            kind = "error"
            message = f"{type(err).__name__}: {err} (at {os.path.basename(where.filename)}:{where.lineno})"
        reports.put((rank, kind, message, next((c for c in USER_ERRORS if isinstance(err, c)), None)))
    reports.close()
    reports.join_thread()      # the report has reached the pipe to the parent
    mp_util._exit_function()   # what multiprocessing runs at a child's exit (frees semaphores)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _spawn(job, cfg, workers, timeout_s, options, device):
    ctx = mp.get_context("spawn")
    store = dist.TCPStore(LOOPBACK, 0, workers, is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=max(timeout_s, RENDEZVOUS_S)))
    reports = ctx.Queue()
    procs = [ctx.Process(target=_spawned_rank, daemon=True, name=f"surf-dist-rank-{r}",
                         args=(r, workers, store.port, timeout_s, job, cfg, options, device, reports))
             for r in range(workers)]
    for p in procs:
        p.start()
    try:
        return _supervise(procs, reports)
    finally:
        _stop(procs)
        del store


def _supervise(procs, reports):
    """Wait for rank 0's result while every rank stays alive; fail fast otherwise."""
    result, have_result, failures, failed_at = None, False, {}, None
    while True:
        try:
            rank, kind, payload, err_type = reports.get(timeout=0.05)
            if kind == "ok":
                result, have_result = pickle.loads(payload), True
            else:
                failures[rank] = (kind, payload, err_type)
                failed_at = failed_at or time.monotonic()
        except queue.Empty:
            pass
        codes = [p.exitcode for p in procs]
        if failed_at is None and any(c not in (None, 0) for c in codes):
            failed_at = time.monotonic()
        if failed_at is not None:
            if time.monotonic() - failed_at > GRACE_S or all(c is not None for c in codes):
                raise _failure(failures, codes)
        elif have_result and all(c == 0 for c in codes):
            return result
        elif all(c == 0 for c in codes) and not have_result:
            raise RuntimeError("torch backend: every rank exited cleanly but rank 0 sent no result")


def _failure(failures, codes) -> Exception:
    """One error naming every failed rank, the root causes first (lost-peer errors last)."""
    causes, echoes = [], []
    for rank, code in enumerate(codes):
        if rank in failures:
            kind, message, err_type = failures[rank]
            (echoes if kind == "peer" else causes).append((rank, message, err_type))
        elif code not in (None, 0):
            how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                   else f"exited with code {code}")
            causes.append((rank, f"{how} without reporting an error (crashed, killed or out of memory)", None))
    ordered = causes + echoes
    text = "; ".join(f"rank {r}: {m}" if not m.startswith(f"rank {r}:") else m for r, m, _ in ordered)
    message = f"torch backend failed: {text}" if text else "torch backend failed"
    if ordered and ordered[0][2] is not None:          # a user error: the job's own message
        return ordered[0][2](message)
    root = ordered[0][0] if ordered else None
    if root is not None and root in failures and failures[root][0] == "error":
        return JobError(message)                       # the job raised on that rank
    return WorkerLostError(message, lost=True)         # a rank died without a word


def _stop(procs) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + 3.0
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
