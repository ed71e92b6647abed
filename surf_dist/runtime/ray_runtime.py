"""The Ray runtime: workers are Ray actors that form a torch.distributed group, as Ray Train does.

``run_ray`` places ``workers`` rank actors with a placement group (one bundle per rank, Ray
picks the nodes), lets rank 0 choose the rendezvous address (its node's IP and a free port;
127.0.0.1 and the ``lo`` interface on a local instance) and hands it to the others. Every rank
then runs the body both runtimes share (``rank.run_rank``); rank 0's result is returned.

The coordinator is the real ``Coordinator`` class as a Ray actor of its own (no CPU, on the
driver's node, so the files it writes land where the command runs). Rank 0's
``worker.coordinator_factory`` returns, per call, a ``CoordinatorProxy`` for an actor in a freshly
constructed state: ``proxy.dual_step(x)`` is ``ray.get(actor.dual_step.remote(x))``. An actor
whose proxy is gone is reset and reused rather than a new one started (~2 s: a process
importing torch).

Files: a cluster shares no filesystem, so the ranks read none. The driver reads every file the
job needs (``job_files.for_job``: models, the checkpoint to resume; ``job_files.for_tasks``:
the ``--data-root`` dataset and topology files) and sends them with the job through the object
store, except a file dataset's features: a row server on the driver's node sends each rank only
its agents' rows (``ray_rows``). The coordinator, on the driver's node, writes the run folder; a
restart reads the checkpoint again, on the driver.

Failures: the driver polls the ranks' futures (``ray.wait``); the first rank that raises or
whose actor dies ends the attempt after a short grace period (to collect the other ranks'
reports), with one message naming every failed rank, root causes first. A lost worker (an actor
that is gone: Ray reports it dead, or its entry in Ray's actor table says so when the grace
period ends; never a live rank that is only slow, whose peers' collectives time out) restarts
the whole group, up to ``max_retries`` times (default ``SURF_DIST_RAY_RETRIES``, else 2): a
training job resumes from the last checkpoint in its run folder, any other job starts again. Once retries are spent the last
failure is raised. Whatever happens, the actors are killed, the placement group removed and,
if this call started Ray, Ray shut down.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import socket
import sys
import time
import weakref
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import ray
import ray._private.ray_constants as ray_constants
import torch
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from ..io.checkpoint import CHECKPOINT
from ..core.coordinator import Coordinator
from .job_files import for_job, for_tasks
from .ray_rows import serve_rows
from ..problem.topology import place_agents
from .common import DEVICES, WorkerLostError
from .rank import (GRACE_S, LOOPBACK, RENDEZVOUS_S, group_failure, job_failure, loopback_sockets,
                   process_group, rank_device, run_rank)

STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
POLL_S = 0.05
LIVENESS_S = 10.0      # how long ranks that said nothing are watched before a failure is called "no rank died"
LOCAL_ONLY_FLAG = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"   # "0": a local Ray stays on 127.0.0.1


# ------------------------------------------------------------------ Ray itself


@contextmanager
def local_ray(num_cpus: int):
    """A fresh single-node Ray instance on the loopback interface, shut down on the way out.

    Without ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` Ray advertises the machine's external
    address instead of 127.0.0.1. Ray reads that variable once, when it is imported (into
    ``ray_constants.ENABLE_RAY_CLUSTER``), so the variable is set for the processes Ray starts and
    the constant for this one, both restored afterwards. The actors get the driver's ``sys.path``:
    jobs defined outside the installed package (a checkout, a test module) import there too."""
    saved = os.environ.get(LOCAL_ONLY_FLAG), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOCAL_ONLY_FLAG] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        path = os.pathsep.join(os.path.abspath(p) for p in sys.path if p)
        ray.init(address="local", include_dashboard=False, num_cpus=num_cpus,
                 runtime_env={"env_vars": {"PYTHONPATH": path}})
        try:
            assert ray.util.get_node_ip_address() == LOOPBACK, "the local Ray left the loopback"
            yield
        finally:
            ray.shutdown()
    finally:
        if saved[0] is None:
            os.environ.pop(LOCAL_ONLY_FLAG, None)
        else:
            os.environ[LOCAL_ONLY_FLAG] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]


@contextmanager
def ray_connection(address: str | None, num_cpus: int):
    """Yields whether the workers talk over loopback. Reuses a Ray this process already runs;
    otherwise connects to ``address`` (or ``RAY_ADDRESS``), or starts a local instance."""
    if ray.is_initialized():
        yield None                   # decided by rank 0's node address
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        with local_ray(num_cpus):
            yield True
        return
    ray.init(address=address)
    try:
        yield False
    finally:
        ray.shutdown()               # disconnects; the cluster keeps running


# ------------------------------------------------------------------ the coordinator actor


CoordinatorActor = ray.remote(Coordinator)


def _single_thread(coordinator: Coordinator) -> None:
    """Inside a new actor (through ``__ray_call__``): one torch thread, as in every actor."""
    torch.set_num_threads(1)


def _construct(coordinator: Coordinator, *args) -> None:
    """Inside a used actor (through ``__ray_call__``): close the previous state, then run
    ``Coordinator.__init__(*args)``, which sets every attribute afresh."""
    coordinator.close()
    coordinator.__init__(*args)


def _coordinator_answer(ref, timeout_s: float, what: str):
    """``ray.get`` of a coordinator call, with errors that say it was the coordinator. An array
    comes back writable, as from a local ``Coordinator`` (Ray's zero-copy arrays are read-only)."""
    try:
        value = ray.get(ref, timeout=timeout_s)
        return value.copy() if isinstance(value, np.ndarray) and not value.flags.writeable else value
    except ray.exceptions.RayActorError as err:
        raise RuntimeError(f"the coordinator actor died during {what}: {_first_line(err)}") from err
    except ray.exceptions.GetTimeoutError as err:
        raise RuntimeError(f"the coordinator actor did not answer {what} within {timeout_s:g} s") from err


def use_node_interface(address: str) -> None:
    """Point gloo's and nccl's sockets at the interface of this node's cluster ``address``.
    A user's own choice is kept, except a loopback interface (a common setting for runs on one
    machine): ranks on other nodes cannot reach it, so it is overridden, saying so."""
    iface = interface_of(address)
    for key in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        inherited = os.environ.get(key)
        if inherited and not inherited.startswith("lo"):
            continue
        if inherited:
            print(f"surf-dist: {key}={inherited} (loopback) was inherited, but this rank's node is at {address}: "
                  f"using {iface or 'the default interface'} instead", file=sys.stderr, flush=True)
            os.environ.pop(key)
        if iface:
            os.environ[key] = iface


class CoordinatorProxy:
    """Rank 0's handle on one coordinator actor: ``proxy.name(*args)`` is
    ``ray.get(actor.name.remote(*args))``, with a timeout and errors naming the coordinator."""

    def __init__(self, actor, timeout_s: float):
        self.actor, self.timeout_s = actor, timeout_s

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        method = getattr(self.actor, name)
        return lambda *args, **kwargs: _coordinator_answer(method.remote(*args, **kwargs),
                                                           self.timeout_s, f"{name}()")


class CoordinatorFactory:
    """Rank 0's ``coordinator_factory``: each call returns a proxy for a coordinator actor
    (pinned to ``node_id``) in the state of ``Coordinator(num_layers, dual_lr, seed, run_dir)``.

    An actor whose previous proxy is gone (garbage collected) is reset and reused; otherwise a
    new one starts. A demo thus starts one actor process instead of four (each start costs
    ~2 s of CPU here: a process importing torch). ``close`` kills every actor made."""

    def __init__(self, node_id: str, timeout_s: float, folder: str):
        self.node_id, self.timeout_s = node_id, timeout_s
        self.folder = folder         # the driver's working folder: a relative run_dir is relative to it
        self.actors: list = []
        self.idle: list = []         # actors no live proxy points to
        self.releases: list = []     # finalizers returning an actor to ``idle``

    def __call__(self, num_layers: int, dual_lr: float, seed: int, run_dir: str | None = None):
        if run_dir is not None:
            run_dir = os.path.join(self.folder, run_dir)     # unchanged when absolute
        if self.idle:
            actor = self.idle.pop()
            ready = actor.__ray_call__.remote(_construct, num_layers, dual_lr, seed, run_dir)
        else:
            actor = CoordinatorActor.options(
                num_cpus=0, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False),
            ).remote(num_layers, dual_lr, seed, run_dir)
            self.actors.append(actor)
            ready = actor.__ray_call__.remote(_single_thread)
        _coordinator_answer(ready, self.timeout_s, "its start")
        proxy = CoordinatorProxy(actor, self.timeout_s)
        self.releases.append(weakref.finalize(proxy, self.idle.append, actor))
        return proxy

    def close(self) -> None:
        for release in self.releases:
            release.detach()
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors, self.idle, self.releases = [], [], []


# ------------------------------------------------------------------ one rank


def interface_of(address: str) -> str | None:
    """The network interface holding ``address`` on this machine, or None."""
    import psutil  # a dependency of Ray
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == address for a in addresses):
            return name
    return None


@ray.remote
class RankActor:
    """Rank ``rank`` of ``world``: one worker hosting a block of agents."""

    def __init__(self, rank: int, world: int):
        torch.set_num_threads(1)
        self.rank, self.world = rank, world

    def node_ip(self) -> str:
        return ray.util.get_node_ip_address()

    def rendezvous(self, loopback: bool | None) -> tuple[str, int]:
        """(address, free port) for the group, chosen by rank 0 on its own node."""
        host = ray.util.get_node_ip_address()
        if loopback or (loopback is None and host.startswith("127.")):
            host = LOOPBACK
        with socket.socket() as sock:
            sock.bind((host, 0))
            return host, sock.getsockname()[1]

    def run(self, payload, host: str, port: int, timeout_s: float, factory, backend: str) -> bytes | None:
        """Run the job on this rank; rank 0 returns its pickled result (writable arrays, unlike
        Ray's zero-copy ones)."""
        job, cfg, options, files, inputs = payload
        if host == LOOPBACK:       # a local instance: keep gloo's / nccl's sockets on loopback
            loopback_sockets()
        else:                      # gloo would take the address its hostname resolves to
            use_node_interface(ray.util.get_node_ip_address())       # (often 127.0.1.1)
        os.environ.update(MASTER_ADDR=host, MASTER_PORT=str(port))
        gpus = ray.get_gpu_ids()   # Ray sets CUDA_VISIBLE_DEVICES: this actor's GPU is device 0
        try:
            with process_group(backend, timeout_s, init_method=f"tcp://{host}:{port}",
                               rank=self.rank, world_size=self.world):
                result = run_rank(job, cfg, options, timeout_s, rank_device(bool(gpus)),
                                  files=files, inputs=inputs, coordinator_factory=factory)
        finally:
            if factory is not None:
                factory.close()
        return pickle.dumps(result) if self.rank == 0 else None


# ------------------------------------------------------------------ the driver


def run_ray(job, cfg, workers: int, timeout_s: float = 60.0, *, address: str | None = None,
            cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0,
            placement_strategy: str | None = None, max_retries: int | None = None,
            device: str = "cpu", **options):
    """Run ``job`` on ``workers`` Ray actors (module doc); rank 0's result.

    ``address``: a Ray cluster to join (default ``RAY_ADDRESS``; none: a local instance, or the
    Ray this process already runs). ``placement_strategy``: one of ``STRATEGIES`` (default
    ``SURF_DIST_RAY_PLACEMENT``, else PACK). With ``gpus_per_worker`` > 0 the ranks compute on
    a GPU: a whole one each (what ``device`` "cuda" asks for) and the collectives use nccl, or
    a fraction (ranks share GPUs) and the collectives use gloo, staged through host memory.
    ``max_retries``: group restarts after a lost worker (module doc). On a cluster the ranks'
    node addresses are printed to stderr."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and gpus_per_worker == 0:
        gpus_per_worker = 1.0
    if gpus_per_worker > 1:
        raise ValueError(f"a worker uses one GPU at most: gpus_per_worker={gpus_per_worker}; "
                         "pass 1, or a fraction to share GPUs between workers")
    place_agents(cfg.task.num_agents, workers)     # a clear ValueError before Ray starts
    if max_retries is None:
        max_retries = int(os.environ.get("SURF_DIST_RAY_RETRIES", "2"))
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    placement_strategy = placement_strategy or os.environ.get("SURF_DIST_RAY_PLACEMENT") or "PACK"
    if placement_strategy not in STRATEGIES:
        raise ValueError(f"placement_strategy must be one of {STRATEGIES}, got {placement_strategy!r}")
    if cpus_per_worker < 0 or gpus_per_worker < 0 or cpus_per_worker + gpus_per_worker == 0:
        raise ValueError(f"each worker needs some CPU or GPU: got cpus_per_worker={cpus_per_worker}, "
                         f"gpus_per_worker={gpus_per_worker}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    local_cpus = max(os.cpu_count() or 1, math.ceil(workers * cpus_per_worker))
    with ray_connection(address, local_cpus) as loopback:
        if placement_strategy == "STRICT_SPREAD" and loopback and workers > 1:
            raise ValueError("placement_strategy STRICT_SPREAD puts every worker on its own node; "
                             "a local Ray instance has one node")
        for attempt in range(max_retries + 1):
            try:
                return _attempt(job, cfg, workers, timeout_s, loopback, cpus_per_worker,
                                gpus_per_worker, placement_strategy, options)
            except WorkerLostError as err:       # only a lost worker restarts the group
                if attempt == max_retries:
                    if max_retries:
                        raise WorkerLostError(f"{err} (after {max_retries} group restart(s))") from err
                    raise
                options = resume_options(options)
                how = "from the last checkpoint" if options.get("resume") else "from the start"
                print(f"ray backend: {err}; restarting the group {how} "
                      f"(restart {attempt + 1} of {max_retries})", file=sys.stderr, flush=True)


def resume_options(options: dict) -> dict:
    """The options of a restart: a training job whose run folder holds a checkpoint resumes."""
    run_dir = options.get("run_dir")
    if run_dir is not None and (Path(run_dir) / CHECKPOINT).exists():
        return {**options, "resume": True}
    return options


def _attempt(job, cfg, workers, timeout_s, loopback, cpus_per_worker, gpus_per_worker,
             placement_strategy, options):
    """One start of the group: place the actors, rendezvous, run, tear down."""
    bundle = {"CPU": cpus_per_worker, "GPU": gpus_per_worker}
    group = placement_group([{k: v for k, v in bundle.items() if v > 0}] * workers,
                            strategy=placement_strategy)
    actors, servers = [], []
    try:
        wait_s = max(timeout_s, RENDEZVOUS_S)
        if not ray.wait([group.ready()], timeout=wait_s)[0]:
            raise RuntimeError(f"ray backend: no room for {workers} workers of {bundle} "
                               f"({placement_strategy}) within {wait_s:g} s; the cluster has "
                               f"{ray.available_resources()} free")
        actors = [RankActor.options(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_restarts=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=r),
        ).remote(r, workers) for r in range(workers)]
        host, port = _supervise([actors[0].rendezvous.remote(loopback)], wait_s, "rendezvous")
        if not loopback:
            ips = ray.get([a.node_ip.remote() for a in actors], timeout=wait_s)
            print(f"ray backend: {placement_strategy} placement, rank nodes "
                  + " ".join(f"{r}={ip}" for r, ip in enumerate(ips)), file=sys.stderr, flush=True)
        factory = CoordinatorFactory(node := ray.get_runtime_context().get_node_id(), wait_s, os.getcwd())
        inputs, servers = serve_rows(for_tasks(cfg, options), node)     # files read here, now
        payload = ray.put((job, cfg, options, for_job(cfg, options), inputs))
        backend = "nccl" if gpus_per_worker == 1 else "gloo"      # a GPU each, or shared / none
        futures = [a.run.remote(payload, host, port, timeout_s, factory if r == 0 else None, backend)
                   for r, a in enumerate(actors)]
        return pickle.loads(_supervise(futures, actors=actors))
    finally:
        for actor in actors + servers:
            ray.kill(actor, no_restart=True)
        remove_placement_group(group)


def _supervise(futures, limit_s: float | None = None, what: str = "job", actors=None):
    """Wait for every rank's future; rank 0's value. The first failure ends the wait after
    ``GRACE_S`` (or as soon as every rank has answered) with an error naming the failed ranks.
    A rank still running then (``actors``: the rank actors, in rank order) is asked of Ray's
    actor table: a dead actor is a lost worker ("died"); a live one is slow, not lost."""
    rank_of = {ref: r for r, ref in enumerate(futures)}
    pending, failures, failed_at, result = list(futures), {}, None, None
    start = time.monotonic()
    while True:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        for ref in done:
            try:
                value = ray.get(ref)
                if rank_of[ref] == 0:
                    result = value
            except ray.exceptions.RayError as err:
                failures[rank_of[ref]] = _describe(err)
                failed_at = failed_at or time.monotonic()
        if failed_at is not None and (not pending or time.monotonic() - failed_at > GRACE_S):
            if actors is not None:
                _ask_the_silent(pending, rank_of, actors, failures)
            raise group_failure("ray", failures)
        if not pending:
            return result
        if limit_s is not None and time.monotonic() - start > limit_s:
            raise RuntimeError(f"ray backend: the {what} did not finish within {limit_s:g} s")


def _ask_the_silent(pending, rank_of, actors, failures) -> None:
    """Before a failure with no dead rank is raised (peers timed out or lost a connection): for
    up to ``LIVENESS_S``, the ranks that have not answered are watched, their answers collected
    and Ray's actor table asked, so a rank that died (its death not yet reported) makes the
    failure a lost worker, and a rank that lives (slow) does not."""
    deadline = time.monotonic() + LIVENESS_S
    while pending and not any(kind == "died" for kind, _, _ in failures.values()):
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL_S)
        for ref in done:
            try:
                ray.get(ref)
            except ray.exceptions.RayError as err:
                failures[rank_of[ref]] = _describe(err)
        for ref in pending:
            if not actor_alive(actors[rank_of[ref]]):
                failures[rank_of[ref]] = ("died", "its actor died before finishing (its process or node is gone)",
                                          None)
        if time.monotonic() > deadline:
            return


def actor_alive(actor) -> bool:
    """Whether Ray's actor table (the GCS; no dashboard needed) does not hold ``actor`` as dead."""
    from ray._private import state
    try:
        entry = state.actors(actor_id=actor._actor_id.hex())
    except Exception:        # noqa: BLE001 - the table unreadable: say alive, never restart on a guess
        return True
    return (entry or {}).get("State", "ALIVE") != "DEAD"


def _describe(err: Exception):
    """(kind, message, user error class or None) of one rank's failure (``rank.job_failure``;
    kind "died" for an actor that died)."""
    if isinstance(err, ray.exceptions.RayTaskError):
        frames = re.findall(r'File "([^"]+)", line (\d+)', str(err))
        return job_failure(err.cause, f"(at {os.path.basename(frames[-1][0])}:{frames[-1][1]})" if frames else "")
    if isinstance(err, ray.exceptions.RayActorError):
        reason = re.search(r"The actor is dead because ([^.]*)", str(err))
        return "died", ("its actor died before finishing (crashed, killed or out of memory)"
                        + (f": {reason.group(1)}" if reason else "")), None
    return "error", f"{type(err).__name__}: {_first_line(err)}", None


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
