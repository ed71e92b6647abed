"""The torch.distributed runtime: gloo ranks spawned on this machine, or launched by torchrun.
With ``device="cuda"`` every rank takes the GPU of its local rank and the group uses nccl; with
more ranks than GPUs they share them and the group uses gloo (``common.transport``).

Every rank runs the body both runtimes share (``rank.run_rank``): rank 0 (the coordinator)
returns the result, the other ranks return None; failures become one error the same way
(``rank.group_failure``).

- Launched by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` in the environment): this process is
  one rank; the group is initialised from the environment. Rank 0 reads every file the job
  reads (models, checkpoint, dataset, topology files) and broadcasts them, with its settings,
  through the group before anything runs (a file it cannot read fails every rank, naming
  it), so other nodes need none of them; every rank then checks it holds rank 0's model
  parameters before the first layer.
- Otherwise ``workers`` processes are spawned here (start method "spawn") and meet through a
  TCP store that this process holds on a free loopback port. The parent polls them: the first
  rank that raises or dies ends the run at once, with a message naming every failed rank, and
  the others are killed (no waiting for the collective timeout). A rank whose peers time out
  while it is still alive (slow, not lost) fails the run as a ``JobError``, not a lost worker.

Every rank dies with its parent (Linux ``PR_SET_PDEATHSIG``: the driver here, the torchrun
agent under torchrun), so a killed driver leaves no rank writing into the run folder.
"""
from __future__ import annotations

import os
import pickle
import queue
import signal
import sys
import time
import traceback
from datetime import timedelta
from multiprocessing import util as mp_util

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..problem.topology import place_agents
from .common import check_device, transport
from .job_files import for_job, for_tasks
from .rank import (GRACE_S, LOOPBACK, RENDEZVOUS_S, die_with_parent, from_rank_zero, group_failure,
                   job_failure, loopback_sockets, process_group, rank_device, run_rank)


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _gpus(device: str) -> int:
    return torch.cuda.device_count() if device == "cuda" else 0


def run_torch(job, cfg, workers: int, timeout_s: float = 60.0, device: str = "cpu", **options):
    """Run ``job`` on ``workers`` ranks; the coordinator's result (None on other ranks)."""
    place_agents(cfg.task.num_agents, workers)     # a clear ValueError before anything starts
    if launched_by_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if workers != world:
            raise ValueError(f"torchrun started {world} ranks (WORLD_SIZE={world}) but --workers is "
                             f"{workers}: pass --workers {world}")
        check_device(device)
        die_with_parent()          # the torchrun agent gone: this rank goes too
        torch.set_num_threads(1)
        local, gpus = int(os.environ.get("LOCAL_WORLD_SIZE", world)), _gpus(device)
        backend = transport(device, local, gpus)     # the same on every node of like nodes
        here = rank_device(device == "cuda", int(os.environ.get("LOCAL_RANK", "0")) % max(gpus, 1))
        with process_group(backend, timeout_s):     # rank 0's settings, and the files it reads, to every rank
            cfg, shared, files, inputs = from_rank_zero(
                lambda: (cfg, options, for_job(cfg, options), for_tasks(cfg, options)), "reading the job's files")
            options = {**shared, **({"progress": options["progress"]} if "progress" in options else {})}
            return run_rank(job, cfg, options, timeout_s, here, files=files, inputs=inputs)
    check_device(device)
    if device == "cuda" and workers > _gpus(device):
        print(f"torch backend: {workers} workers on {_gpus(device)} GPU(s) share them; collectives go through "
              "gloo, staged through host memory (one worker per GPU uses nccl)", file=sys.stderr, flush=True)
    return _spawn(job, cfg, workers, timeout_s, options, device)


def _spawned_rank(rank, world, port, timeout_s, job, cfg, options, device, reports, parent_pid):
    """One spawned rank: reports (rank, "ok", result, None) from rank 0, or (rank, kind, message,
    user error class or None) from any rank that fails, kind "peer" for a lost-peer error.
    Dies with the driver (``parent_pid``): a killed driver leaves no rank writing into its run
    folder. Exits through ``os._exit`` once its report is flushed: the interpreter's teardown
    with torch loaded takes seconds and does nothing useful here."""
    die_with_parent(parent_pid)
    torch.set_num_threads(1)
    loopback_sockets()
    os.environ.update(MASTER_ADDR=LOOPBACK, MASTER_PORT=str(port))
    code = 0
    try:
        store = dist.TCPStore(LOOPBACK, port, world, is_master=False,
                              timeout=timedelta(seconds=max(timeout_s, RENDEZVOUS_S)))
        gpus = _gpus(device)
        here = rank_device(device == "cuda", rank % max(gpus, 1))
        with process_group(transport(device, world, gpus), timeout_s, store=store, rank=rank, world_size=world):
            result = run_rank(job, cfg, options, timeout_s, here)
        if rank == 0:     # pickled here: tensors travel as bytes, not as shared memory of a dying process
            reports.put((rank, "ok", pickle.dumps(result), None))
    except BaseException as err:
        code = 1
        frames = traceback.extract_tb(err.__traceback__)
        where = f"(at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""
        reports.put((rank, *job_failure(err, where)))
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
                         args=(r, workers, store.port, timeout_s, job, cfg, options, device, reports, os.getpid()))
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
            rank, kind, payload, user = reports.get(timeout=0.05)
            if kind == "ok":
                result, have_result = pickle.loads(payload), True
            else:
                failures[rank] = (kind, payload, user)
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


def _failure(failures: dict, codes: list) -> Exception:
    """The ranks' own reports, and a "died" entry for each rank that exited without one."""
    for rank, code in enumerate(codes):
        if rank not in failures and code not in (None, 0):
            how = (f"was killed by {signal.Signals(-code).name}" if code < 0
                   else f"exited with code {code}")
            failures[rank] = ("died", f"{how} without reporting an error (crashed, killed or out of memory)", None)
    return group_failure("torch", failures)


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
