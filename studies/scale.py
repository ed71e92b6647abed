"""SURF layers and DGD rounds at 100, 1,000 and 10,000 agents on one machine: studies/results/scale.json (+ scale.png).

    python studies/scale.py                                  # all cells (~15 min on 2 busy cores)
    python studies/scale.py --agents 100,1000 --families ring --reps 3
    python studies/scale.py --agents 10000 --families ring --torch-workers 2 --torch-only \
        --out studies/results/scale_torch.json               # torch backend, 2 gloo ranks

For every graph family (``ring``; ``er``: connected Erdos-Renyi with a fixed mean degree,
``--er-degree``, i.e. edge probability degree / (n - 1)) and every number of agents, one fresh
process (so that its peak RSS is its own) builds the `paper` preset with ``num_agents = n`` and
that topology, through the package's own path: ``jobs.local_worker`` (TaskFamily, Worker,
LocalCommunicator, Metropolis weights), one test task, ``worker.load`` / ``worker.positions``,
``UnrolledDGD`` (10 layers, K = 2 hops, compact local net, batch 8, float32). It times, as
medians over ``--reps`` repetitions after a warm-up (each repetition loops the operation until
it lasts at least ``--min-time`` seconds):

- ``fwd``: one forward pass over the task without autograd (evaluation), per layer;
- ``fwd+bwd``: the training forward plus the backward of that preset's Lagrangian
  (descent constraints of every layer + outer loss, as ``train.primal_step``), per layer;
- ``dgd``: one round of the registry's ``dgd`` (full local gradients, step 1.0).

Time per agent-layer (round) is that time divided by n; ``ratio`` is it over the same family's
100-agent figure (the target: at most 2). Bytes per agent come from the communicator's ledger
(logical: each agent's row to each neighbour, float32). Memory: ``peak_rss_mib`` is
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the cell's process at the end (imports, the
dataset, the task family and everything measured); ``tensor_mib`` sums the bytes of the
worker's shards, the model, the sparse shift and the tensors autograd saves for the backward
of one forward (deduplicated by storage). Results: studies/results/scale.json (+ scale.png).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
FAMILIES = ("ring", "er")


def topology_for(family: str, n: int, er_degree: float, tmp: Path) -> str:
    """The config's ``task.topology``: a preset name, or a JSON spec written to ``tmp``."""
    if family == "ring":
        return "ring"
    path = tmp / f"er_{n}.json"
    path.write_text(json.dumps({"description": f"connected Erdos-Renyi, mean degree {er_degree}",
                                "family": "erdos_renyi", "normalization": "metropolis",
                                "edge_prob": er_degree / (n - 1)}))
    return str(path)


def make_config(family: str, n: int, er_degree: float, tmp: Path):
    from surf_dist.io.config import preset, with_overrides
    return with_overrides(preset("paper"), {"task": {"num_agents": n,
                                                       "topology": topology_for(family, n, er_degree, tmp)}})


def timed(fn, reps: int, min_time: float, comm, warm_s: float | None = None) -> dict:
    """Median seconds of ``fn()`` over ``reps`` repetitions after one warm-up call; each
    repetition loops ``inner`` calls (the same on every rank), sized from the warm-up so that
    it lasts about ``min_time`` or more. ``warm_s``: the caller already ran the warm-up call
    (after a barrier) and it took that long on this rank."""
    barrier = lambda: comm.all_reduce(torch.zeros(1))
    if warm_s is None:
        barrier()
        start = time.perf_counter()
        fn()                                                   # warm-up, also sizes ``inner``
        barrier()
        warm_s = time.perf_counter() - start
    once = float(comm.all_reduce(torch.tensor([warm_s])).item()) / comm.world_size
    inner = max(1, math.ceil(min_time / max(once, 1e-9)))     # the same on every rank
    samples = []
    for _ in range(reps):
        barrier()
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        barrier()
        samples.append((time.perf_counter() - start) / inner)
    return {"median_s": statistics.median(samples), "samples_s": samples, "inner": inner}


def tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor):
            continue
        if t.is_sparse:
            total += sum(x.numel() * x.element_size() for x in (t._indices(), t._values()))
            continue
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB


def measure(cfg, worker, reps: int = 5, min_time: float = 0.3, dgd_rounds: int = 10,
            backward: bool = True) -> dict:
    """Every number of one cell on this worker (a job: runs on any backend)."""
    from surf_dist.methods.constraints import descent_values, lagrangian_share, slack_terms
    from surf_dist.methods.registry import METHODS
    from surf_dist.core.train import new_model
    from surf_dist.problem.softmax import loss_per_agent

    comm, L, n = worker.comm, cfg.model.num_layers, cfg.task.num_agents
    out = {"rss_mib_after_worker": rss_mib()}
    start = time.perf_counter()
    tasks = worker.family.batch("test", [0])
    shards = worker.load(tasks)
    positions = worker.positions(tasks, range(L), cfg.model.batch_size, stream=0)
    out["task_setup_s"] = time.perf_counter() - start
    shift = tasks[0].shift
    out["mean_degree"] = (shift.nnz - shift.shape[0]) / shift.shape[0]   # off-diagonal entries per row
    model = new_model(cfg, worker)
    W0 = shards.init_weights
    N_local = W0.shape[0]

    # Forward without autograd, and its ledger (the bind above reset it).
    def forward():
        with torch.no_grad():
            return model(W0, shards, positions, comm)
    comm.all_reduce(torch.zeros(1))
    start = time.perf_counter()
    forward()                                                  # the warm-up of the timing below
    comm.all_reduce(torch.zeros(1))
    warm_fwd = time.perf_counter() - start
    led = comm.ledger_per_agent()
    out["layer_rounds"] = led["rounds"] / L
    out["bytes_per_agent_per_layer"] = led["bytes_per_agent"] / L
    out["messages_per_agent_per_layer"] = led["messages_per_agent"] / L
    out["fwd"] = timed(forward, reps, min_time, comm, warm_fwd)

    # Training forward + backward of the Lagrangian (zero duals: the same graph of operations).
    duals = torch.zeros(L, dtype=W0.dtype)

    def forward_backward(saved=None):
        model.zero_grad(set_to_none=True)
        if saved is None:
            Ws = model(W0, shards, positions, comm)
        else:
            with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
                Ws = model(W0, shards, positions, comm)
        g = descent_values(Ws, shards.X_seen, shards.Y_seen, cfg.train.descent)
        outer = loss_per_agent(Ws[-1], shards.X_held, shards.Y_held)
        lagrangian_share(outer, slack_terms(g, cfg.train.eps), duals, n).backward()
    saved: list = []
    forward_backward(saved)                                    # sizes the autograd memory, and warms up
    autograd_bytes = tensor_bytes(saved)
    del saved
    if backward:
        comm.all_reduce(torch.zeros(1))
        start = time.perf_counter()
        forward_backward()                                     # the warm-up of the timing below
        comm.all_reduce(torch.zeros(1))
        out["fwd_bwd"] = timed(forward_backward, reps, min_time, comm, time.perf_counter() - start)

    # DGD rounds: a fresh bind so that the ledger counts these rounds only.
    shards = worker.load(tasks)
    alpha = torch.full((N_local, 1), 1.0, dtype=worker.dtype)

    def dgd():
        for _ in METHODS["dgd"].run(shards.init_weights, shards, comm, {"step": alpha}, dgd_rounds):
            pass
    dgd()
    led = comm.ledger_per_agent()
    out["bytes_per_agent_per_round"] = led["bytes_per_agent"] / led["rounds"]
    physical = comm.all_reduce(torch.tensor([float(comm.ledger.physical_bytes)], dtype=torch.float64))
    out["physical_bytes_per_round_all_ranks"] = float(physical.item()) / dgd_rounds   # 0 on one process
    t = timed(dgd, reps, min_time, comm)
    out["dgd"] = {**t, "median_s": t["median_s"] / dgd_rounds,
                  "samples_s": [s / dgd_rounds for s in t["samples_s"]], "rounds_per_call": dgd_rounds}

    shard_tensors = [shards.X_seen, shards.Y_seen, shards.X_held, shards.Y_held, shards.init_weights,
                     *shards.X_pool, *shards.Y_pool, positions]
    sparse = getattr(comm, "_matrix", None) or getattr(comm, "_blocks", {})
    mib = lambda b: b / 2 ** 20
    out["tensor_mib"] = {"shards": mib(tensor_bytes(shard_tensors)),
                         "model": mib(tensor_bytes(model.parameters())),
                         "shift_sparse": mib(tensor_bytes(sparse.values())),
                         "autograd_saved_fwd": mib(autograd_bytes)}
    out["peak_rss_mib"] = rss_mib()
    if comm.world_size > 1:   # the sum over ranks
        out["peak_rss_mib_rank0"] = out["peak_rss_mib"]
        out["peak_rss_mib"] = float(comm.all_reduce(torch.tensor([out["peak_rss_mib"]], dtype=torch.float64)).item())
    out["nodes_here"] = N_local
    return out


def run_cell(args) -> dict:
    """One (family, n, backend) cell, in this process."""
    torch.set_num_threads(1)
    family, n = args.cell.split(":")
    n = int(n)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = make_config(family, n, args.er_degree, Path(tmp))
        start = time.perf_counter()
        options = {"reps": args.reps, "min_time": args.min_time, "dgd_rounds": args.dgd_rounds,
                   "backward": not args.no_backward}
        if args.backend == "local":
            from surf_dist.commands.jobs import local_worker
            worker = local_worker(cfg)
            build_s = time.perf_counter() - start
            out = measure(cfg, worker, **options)
            out["worker_setup_s"] = build_s
        else:
            from surf_dist.runtime import run_job
            out = run_job(measure, cfg, "torch", args.workers, timeout_s=600.0, **options)
            out["peak_rss_mib_parent"] = rss_mib()
    out.update(family=family, num_agents=n, backend=args.backend, workers=args.workers,
               cell_wall_s=time.perf_counter() - start)
    return out


def machine() -> dict:
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(next(l for l in f if l.startswith("MemTotal")).split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        pass
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l for l in f if l.startswith("model name")).split(":", 1)[1].strip()
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cpu_count": os.cpu_count(), "memory_gib": mem / 2 ** 30 if mem else None,
            "torch": torch.__version__, "torch_threads": 1,
            "loadavg_start": os.getloadavg()}


def spawn_cell(args, family: str, n: int, backend: str = "local", workers: int = 1) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--cell", f"{family}:{n}",
           "--backend", backend, "--workers", str(workers), "--reps", str(args.reps),
           "--min-time", str(args.min_time), "--dgd-rounds", str(args.dgd_rounds),
           "--er-degree", str(args.er_degree)] + (["--no-backward"] if args.no_backward else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"family": family, "num_agents": n, "backend": backend, "workers": workers,
                "error": " | ".join(tail)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def derive(results: list[dict]) -> None:
    """Per agent-layer (round) times and the ratios to the family's smallest-n local figure."""
    for r in results:
        if "error" in r:
            continue
        n, L = r["num_agents"], 10
        r["fwd_layer_ms"] = r["fwd"]["median_s"] / L * 1e3
        r["fwd_agent_layer_us"] = r["fwd"]["median_s"] / L / n * 1e6
        if "fwd_bwd" in r:
            r["fwd_bwd_layer_ms"] = r["fwd_bwd"]["median_s"] / L * 1e3
            r["fwd_bwd_agent_layer_us"] = r["fwd_bwd"]["median_s"] / L / n * 1e6
        r["dgd_round_ms"] = r["dgd"]["median_s"] * 1e3
        r["dgd_agent_round_us"] = r["dgd"]["median_s"] / n * 1e6
    for r in results:
        if "error" in r:
            continue
        base = min((b for b in results if "error" not in b and b["family"] == r["family"]
                    and b["backend"] == "local"), key=lambda b: b["num_agents"], default=None)
        if base is None:
            continue
        r["ratio_base_agents"] = base["num_agents"]
        for key in ("fwd_agent_layer_us", "fwd_bwd_agent_layer_us", "dgd_agent_round_us"):
            if key in r and key in base:
                r[key.replace("_us", "_ratio")] = r[key] / base[key]


def table(results: list[dict]) -> str:
    head = ("| family | agents | backend | fwd ms/layer | fwd us/agent-layer | ratio | fwd+bwd ms/layer "
            "| fwd+bwd us/agent-layer | ratio | DGD ms/round | DGD us/agent-round | ratio "
            "| B/agent/layer | B/agent/round | peak RSS MiB | tensors MiB (shards+model+S / autograd) |")
    rows = [head, "|" + "---|" * 4 + "---:|" * 12]
    f = lambda r, k, fmt: format(r[k], fmt) if k in r else "-"
    for r in results:
        backend = r["backend"] + (f" x{r['workers']}" if r["backend"] != "local" else "")
        if "error" in r:
            rows.append(f"| {r['family']} | {r['num_agents']} | {backend} | failed: {r['error'][:120]} |")
            continue
        t = r["tensor_mib"]
        rows.append(
            f"| {r['family']} | {r['num_agents']:,} | {backend} | {f(r, 'fwd_layer_ms', '.2f')} "
            f"| {f(r, 'fwd_agent_layer_us', '.2f')} | {f(r, 'fwd_agent_layer_ratio', '.2f')} "
            f"| {f(r, 'fwd_bwd_layer_ms', '.2f')} | {f(r, 'fwd_bwd_agent_layer_us', '.2f')} "
            f"| {f(r, 'fwd_bwd_agent_layer_ratio', '.2f')} | {f(r, 'dgd_round_ms', '.3f')} "
            f"| {f(r, 'dgd_agent_round_us', '.3f')} | {f(r, 'dgd_agent_round_ratio', '.2f')} "
            f"| {r['bytes_per_agent_per_layer']:,.0f} | {r['bytes_per_agent_per_round']:,.0f} "
            f"| {r['peak_rss_mib']:.0f} | {t['shards'] + t['model'] + t['shift_sparse']:.1f} / "
            f"{t['autograd_saved_fwd']:.1f} |")
    return "\n".join(rows)


def plot(results: list[dict], path: Path) -> bool:
    if not any(r.get("backend") == "local" and "error" not in r for r in results):
        return False
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for family, color in zip(FAMILIES, ("tab:blue", "tab:red")):
        for key, style, label in (("fwd_agent_layer_us", "-o", "fwd"), ("fwd_bwd_agent_layer_us", "--s", "fwd+bwd"),
                                  ("dgd_agent_round_us", ":^", "DGD round")):
            pts = sorted((r["num_agents"], r[key]) for r in results
                         if r.get("family") == family and r.get("backend") == "local" and key in r)
            if pts:
                ax.plot(*zip(*pts), style, color=color, label=f"{family} {label}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("agents")
    ax.set_ylabel("us per agent-layer (per agent-round for DGD)")
    ax.set_title("SURF / DGD cost per agent, 1 thread")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", default="100,1000,10000", help="comma-separated numbers of agents")
    parser.add_argument("--families", default="ring,er", help=f"comma-separated, from {FAMILIES}")
    parser.add_argument("--reps", type=int, default=5, help="timed repetitions per number (median)")
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per repetition, at least")
    parser.add_argument("--dgd-rounds", type=int, default=10, help="DGD rounds per timed call")
    parser.add_argument("--er-degree", type=float, default=12.0,
                        help="mean degree of the Erdos-Renyi graphs (connected at 10k agents needs > ln n)")
    parser.add_argument("--no-backward", action="store_true", help="skip forward+backward")
    parser.add_argument("--torch-workers", type=int, default=0,
                        help="also run the largest n of every family on the torch backend (gloo) with this many workers")
    parser.add_argument("--torch-only", action="store_true", help="with --torch-workers: skip the local cells")
    parser.add_argument("--out", default=str(HERE / "results" / "scale.json"))
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--backend", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.cell:
        print(json.dumps(run_cell(args)))
        return

    agents = [int(a) for a in args.agents.split(",")]
    families = [f.strip() for f in args.families.split(",")]
    bad = sorted(set(families) - set(FAMILIES))
    if bad:
        parser.error(f"unknown families {bad}; choose from {FAMILIES}")
    info = machine()
    start = time.perf_counter()
    results = []
    cells = [] if args.torch_only else [(f, n, "local", 1) for f in families for n in agents]
    if args.torch_workers > 1:
        cells += [(f, max(agents), "torch", args.torch_workers) for f in families]
    for family, n, backend, workers in cells:
        t = time.perf_counter()
        r = spawn_cell(args, family, n, backend, workers)
        results.append(r)
        print(f"[{time.perf_counter() - start:7.1f} s] {family} n={n} {backend}x{workers}: "
              f"{'FAILED ' + r['error'] if 'error' in r else 'done'} ({time.perf_counter() - t:.1f} s)",
              flush=True)
    derive(results)
    info["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md = table(results)
    doc = {"command": " ".join(["python", "studies/scale.py", *sys.argv[1:]]),
           "machine": info, "wall_s": time.perf_counter() - start,
           "settings": {"agents": agents, "families": families, "reps": args.reps, "min_time_s": args.min_time,
                        "dgd_rounds_per_call": args.dgd_rounds, "er_mean_degree": args.er_degree,
                        "preset": "default", "layers": 10, "hops": 2, "local_net": "compact", "batch": 8,
                        "dtype": "float32", "target": "agent-layer time within 2x of the 100-agent figure"},
           "memory_note": "peak_rss_mib: ru_maxrss of the cell's own process (sum over ranks for torch); "
                          "tensor_mib: bytes of the shards, model, sparse shift and autograd-saved tensors",
           "results": results, "table_markdown": md}
    out.write_text(json.dumps(doc, indent=1))
    png = out.with_suffix(".png")
    plotted = plot(results, png)
    print()
    print(md)
    print(f"\nwall {doc['wall_s']:.0f} s; load {info['loadavg_start']} -> {info['loadavg_end']}; "
          f"wrote {out}" + (f" and {png}" if plotted else ""))


if __name__ == "__main__":
    main()
