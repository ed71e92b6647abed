"""The same FedAvg workload in Flower's simulation engine and in surf-dist: studies/results/flower_peer.json.

Flower is not a dependency of surf-dist: install it in a separate venv, never the
project's own. Pin torch first, or pip pulls a multi-GB CUDA build:

    python3 -m venv .flwr-venv
    .flwr-venv/bin/pip install torch==2.13.0
    .flwr-venv/bin/pip install 'flwr[simulation]'
    .flwr-venv/bin/pip install -e .

Run it from that venv (it runs both sides, one after the other, each in its own process):

    .flwr-venv/bin/python studies/flower_peer.py                 # 100 clients, 100 rounds
    .flwr-venv/bin/python studies/flower_peer.py --rounds 100 --local-steps 4 --lr 0.5

Workload (identical on both sides, checked): test task 0 of the ``default`` preset, drawn by
surf-dist's ``TaskFamily`` (100 agents, Dirichlet(0.7) label skew, 12 seen + 4 held-out digits
samples per agent, 64 features + bias, 10 classes, softmax regression, float64). The arrays
``materialize`` gives are written to one .npz and handed to the Flower clients. FedAvg needs
one global initial model: both sides start from agent 0's W_0 of the task. Each round every
client takes E local gradient steps (full batch by default, or ``--batch-size`` rows drawn by
surf-dist's ``minibatch_indices``, same positions on both sides) with step ``--lr`` on the
mean cross-entropy, then the server averages (all weights 1/n: every client has m samples).

- surf-dist: the registry's ``dfedavgm`` (momentum 0) on the complete graph with S = 1/n everywhere
  through the ``LocalCommunicator`` (so the ledger counts the bytes), one process, one torch
  thread.
- Flower: ``ClientApp`` (numpy, the same closed-form gradient as ``surf_dist.problem.softmax``) +
  ``ServerApp`` running ``flwr.serverapp.strategy.FedAvg`` under ``run_simulation`` with the
  Ray backend on 127.0.0.1 (no dashboard), one CPU per client actor (2 actors on 2 cores).

Reported per side: time per round (median, mean, total over the rounds), total wall time of
the child process (start-up included), peak memory, final accuracy (the global model on the
task's pooled held-out samples, ``accuracy``; mean over agents of its accuracy on each agent's
own held-out samples, ``local_accuracy``; held-out loss) and the max |w_flower - w_surf|.
Peak memory: the largest sum over the child's process tree (the child and all descendants,
Ray's raylet, GCS and actors included) of RSS and of PSS, sampled from /proc every 0.1 s, and
the child's own kernel high-water mark (ru_maxrss). RSS sums count shared pages once per
process; PSS splits them. Results: studies/results/flower_peer.json and a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Ray reads this once, when it is imported: "0" keeps a local Ray on 127.0.0.1.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "flower_peer.json"
LOOPBACK = "127.0.0.1"
VENV_HINT = ("flwr is not importable from {exe}: run this benchmark from the venv described in "
             "its docstring (e.g. .flwr-venv/bin/python studies/flower_peer.py)")


# ------------------------------------------------------------------ the maths, in numpy (Flower side)

def np_grad(w_d: np.ndarray, X: np.ndarray, Y: np.ndarray, num_classes: int) -> np.ndarray:
    """X^T (softmax(X W) - onehot(y)) / m, W = w.reshape(p, C): ``surf_dist.problem.softmax.grad_per_agent``."""
    W = w_d.reshape(X.shape[1], num_classes)
    Z = X @ W
    Z = Z - Z.max(axis=1, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(axis=1, keepdims=True)
    P[np.arange(len(Y)), Y] -= 1.0
    return (X.T @ P / X.shape[0]).reshape(-1)


def np_metrics(w_d: np.ndarray, data) -> dict:
    """The global model on the pooled held-out set and on every agent's own held-out samples."""
    C = int(data["num_classes"])
    W = w_d.reshape(-1, C)
    pooled = float(((data["X_pool"] @ W).argmax(-1) == data["Y_pool"]).mean())
    Z = data["X_held"] @ W                                  # (n, h, C)
    local = float((Z.argmax(-1) == data["Y_held"]).mean(axis=1).mean())
    Zs = Z - Z.max(-1, keepdims=True)
    logp = Zs - np.log(np.exp(Zs).sum(-1, keepdims=True))
    ce = -np.take_along_axis(logp, data["Y_held"][..., None], -1)[..., 0]
    return {"accuracy": pooled, "local_accuracy": local, "loss": float(ce.mean(axis=1).mean())}


# ------------------------------------------------------------------ Flower's ClientApp (module level)
# Defined here, not in __main__, so Ray pickles it by reference and each actor imports this
# module once and keeps its data cache (Flower sends the app with every message).

_DATA: dict[str, dict] = {}


def _client_data(path: str) -> dict:
    if path not in _DATA:
        with np.load(path) as f:
            _DATA[path] = {k: f[k] for k in f.files}
    return _DATA[path]


try:
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp
    FLWR_ERROR = None
except Exception as err:   # noqa: BLE001 - reported with the venv hint
    FLWR_ERROR = err
    client_app = None
else:
    client_app = ClientApp()

    @client_app.train()
    def client_train(msg: Message, context: Context) -> Message:
        cfg = msg.content["config"]
        data = _client_data(str(cfg["data"]))
        pid = int(context.node_config["partition-id"])
        rnd, E, lr = int(cfg["server-round"]) - 1, int(cfg["local-steps"]), float(cfg["lr"])
        X, Y, C = data["X_seen"][pid], data["Y_seen"][pid], int(data["num_classes"])
        w = msg.content["arrays"]["w"].numpy().copy()
        pos = data.get("positions")
        for e in range(E):
            if pos is not None and pos.size:
                rows = pos[rnd * E + e, pid]
                w -= lr * np_grad(w, X[rows], Y[rows], C)
            else:
                w -= lr * np_grad(w, X, Y, C)
        content = RecordDict({"arrays": ArrayRecord({"w": Array(w)}),
                              "metrics": MetricRecord({"num-examples": int(X.shape[0])})})
        return Message(content=content, reply_to=msg)


# ------------------------------------------------------------------ the workload (surf-dist's task)

def surf_config(args):
    from surf_dist.io.config import preset, with_overrides
    return with_overrides(preset("paper"), {"task": {"num_agents": args.clients},
                                              "train": {"dtype": "float64"}})


def build_workload(args, path: Path) -> dict:
    """Draw test task ``--task`` of the default preset and write its per-agent arrays."""
    from surf_dist.problem.tasks import TaskFamily, materialize, minibatch_indices
    cfg = surf_config(args)
    family = TaskFamily(cfg.task, seed=cfg.train.seed)
    task = family.sample("test", args.task)
    n = cfg.task.num_agents
    sh = materialize(family.dataset, [task], np.arange(n), cfg.task.feature_noise)
    m = sh.X_seen.shape[1]
    if args.batch_size and not 0 < args.batch_size <= m:
        raise SystemExit(f"--batch-size must lie in [1, {m}] (0: full batch)")
    positions = (minibatch_indices(task, range(args.rounds * args.local_steps), args.batch_size, stream=1)
                 if args.batch_size else np.zeros((0,), dtype=np.int64))
    arrays = {"X_seen": sh.X_seen.numpy(), "Y_seen": sh.Y_seen.numpy(), "X_held": sh.X_held.numpy(),
              "Y_held": sh.Y_held.numpy(), "X_pool": sh.X_pool[0].numpy(), "Y_pool": sh.Y_pool[0].numpy(),
              "w0": task.init_weights[0].astype(np.float64), "positions": positions,
              "num_classes": np.array(family.num_classes)}
    np.savez(path, **arrays)
    return {"agents": n, "samples_seen": m, "samples_held": int(sh.X_held.shape[1]),
            "pooled_held_out": int(sh.X_pool[0].shape[0]), "features_with_bias": int(sh.X_seen.shape[2]),
            "classes": family.num_classes, "params": int(arrays["w0"].size), "alpha": cfg.task.alpha,
            "dataset": cfg.task.dataset, "preset": "default", "split": "test", "task_index": args.task}


# ------------------------------------------------------------------ surf-dist side (child process)

def surf_side(args, data_path: str) -> dict:
    import scipy.sparse as sp
    import torch
    torch.set_num_threads(1)
    from surf_dist.methods.registry import METHODS
    from surf_dist.commands.jobs import local_worker
    from surf_dist.problem.topology import validate_shift_operator

    t_setup = time.perf_counter()
    cfg = surf_config(args)
    worker = local_worker(cfg)                       # sets torch.set_num_threads(1) too
    task = worker.family.sample("test", args.task)
    shards = worker.load([task])
    n, m, _ = shards.X_seen.shape
    data = _client_data(data_path)
    for key, got in (("X_seen", shards.X_seen), ("Y_seen", shards.Y_seen), ("X_held", shards.X_held),
                     ("Y_held", shards.Y_held), ("X_pool", shards.X_pool[0])):
        assert np.array_equal(got.numpy(), data[key]), f"surf-dist's {key} differs from the Flower data"
    complete = validate_shift_operator(sp.csr_matrix(np.full((n, n), 1.0 / n)), "metropolis")
    worker.comm.bind(complete, np.arange(n))         # FedAvg = exact averaging over all agents
    W0 = torch.as_tensor(task.init_weights[0], dtype=worker.dtype).expand(n, -1).clone()
    assert np.array_equal(W0[0].numpy(), data["w0"])
    alpha = torch.full((n, 1), args.lr, dtype=worker.dtype)
    steps = args.rounds * args.local_steps
    if args.batch_size:
        pos = worker.positions([task], range(steps), args.batch_size, stream=1)    # (steps, n, b)
        assert np.array_equal(pos.numpy(), data["positions"])
        batches = lambda it: pos[it]
    else:
        full = torch.arange(m).expand(n, m)
        batches = lambda it: full
    setup_s = time.perf_counter() - t_setup

    stamps = []
    hyper = {"step": alpha, "momentum": 0.0, "local_steps": args.local_steps}
    for W, _ in METHODS["dfedavgm"].run(W0, shards, worker.comm, hyper, args.rounds, batches):
        stamps.append(time.perf_counter())
    metrics = {k: float(v[0]) for k, v in worker.metrics(W, shards, shards.task_of_node, 1).items()}
    spread = float((W - W.mean(0)).abs().max())
    return {"round_s": np.diff(stamps).tolist(), "setup_s": setup_s, "metrics": metrics,
            "metrics_numpy": np_metrics(W[0].numpy(), data), "consensus_max_dev": spread,
            "ledger": worker.comm.ledger_per_agent(), "final_w": W[0].tolist(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__}


# ------------------------------------------------------------------ Flower side (child process)

def flower_side(args, data_path: str) -> dict:
    import logging

    import flower_peer  # the ClientApp by reference (see above)
    import flwr
    import ray
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg
    from flwr.simulation import run_simulation
    logging.getLogger("flwr").setLevel(logging.WARNING)
    data = _client_data(data_path)
    n, R = args.clients, args.rounds
    out: dict = {"stamps": []}

    def evaluate_fn(server_round: int, arrays: ArrayRecord):
        out["stamps"].append(time.perf_counter())   # called before round 1 and after each round
        if server_round == R:
            w = arrays["w"].numpy()
            out["metrics"], out["final_w"] = np_metrics(w, data), w.tolist()
            return MetricRecord(out["metrics"])
        return None

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        out["node_ip"] = ray.util.get_node_ip_address()
        assert out["node_ip"] == LOOPBACK, f"the local Ray left the loopback: {out['node_ip']}"
        strategy = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=n,
                          min_available_nodes=n)
        cfg = ConfigRecord({"data": data_path, "lr": float(args.lr), "local-steps": int(args.local_steps)})
        strategy.start(grid=grid, initial_arrays=ArrayRecord({"w": Array(data["w0"].copy())}),
                       num_rounds=R, train_config=cfg, evaluate_fn=evaluate_fn)

    backend_config = {"init_args": {"address": "local", "include_dashboard": False,
                                    "num_cpus": args.flower_cpus},
                      "client_resources": {"num_cpus": 1, "num_gpus": 0.0}}
    t0 = time.perf_counter()
    run_simulation(server_app=server_app, client_app=flower_peer.client_app, num_supernodes=n,
                   backend_config=backend_config)
    sim_s = time.perf_counter() - t0
    if "metrics" not in out or len(out["stamps"]) != R + 1:
        raise RuntimeError(f"the Flower run did not finish its {R} rounds "
                           f"({max(len(out['stamps']) - 1, 0)} timed)")
    return {"round_s": np.diff(out["stamps"]).tolist(), "run_simulation_s": sim_s,
            "first_round_starts_after_s": out["stamps"][0] - t0, "metrics": out["metrics"],
            "final_w": out["final_w"], "node_ip": out["node_ip"], "flwr": flwr.__version__,
            "ray": ray.__version__, "actors": args.flower_cpus}


# ------------------------------------------------------------------ memory of a process tree

def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry))
    return kids


def _field_kb(path: str, name: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory(threading.Thread):
    """Peak over time of the summed RSS and PSS of ``root`` and all its descendants."""

    def __init__(self, root: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak_rss_kb = self.peak_pss_kb = self.max_procs = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            kids, tree, todo = _children_map(), [], [self.root]
            while todo:
                pid = todo.pop()
                tree.append(pid)
                todo.extend(kids.get(pid, ()))
            rss = sum(_field_kb(f"/proc/{p}/status", "VmRSS:") for p in tree)
            pss = sum(_field_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in tree)
            self.peak_rss_kb, self.peak_pss_kb = max(self.peak_rss_kb, rss), max(self.peak_pss_kb, pss)
            self.max_procs = max(self.max_procs, len(tree))
            self.halt.wait(self.interval)


def run_child(side: str, args, data_path: str, tmp: Path) -> dict:
    result_path = tmp / f"{side}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--data", data_path,
           "--result", str(result_path), "--clients", str(args.clients), "--rounds", str(args.rounds),
           "--local-steps", str(args.local_steps), "--lr", repr(args.lr), "--batch-size",
           str(args.batch_size), "--task", str(args.task), "--flower-cpus", str(args.flower_cpus)]
    env = dict(os.environ)
    if side == "surf":
        env["OMP_NUM_THREADS"] = "1"
    log_path = tmp / f"{side}.log"
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(HERE))
        monitor = TreeMemory(proc.pid)
        monitor.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        monitor.halt.set()
        monitor.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_path.is_file():
        tail = log_path.read_text()[-4000:]
        raise SystemExit(f"the {side} side failed (exit {proc.returncode}); its output ends with:\n{tail}")
    res = json.loads(result_path.read_text())
    res.update(wall_s=wall, peak_tree_rss_mb=monitor.peak_rss_kb / 1024,
               peak_tree_pss_mb=monitor.peak_pss_kb / 1024, max_processes=monitor.max_procs,
               child_ru_maxrss_mb=usage.ru_maxrss / 1024, log_tail=log_path.read_text()[-1500:])
    return res


def summarize(res: dict) -> dict:
    r = res["round_s"]
    return {"median_round_ms": 1e3 * statistics.median(r), "mean_round_ms": 1e3 * statistics.fmean(r),
            "first_round_ms": 1e3 * r[0],
            "mean_round_after_first_ms": 1e3 * statistics.fmean(r[1:]) if len(r) > 1 else float("nan"),
            "total_rounds_s": sum(r)}


def load_avg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


# ------------------------------------------------------------------ main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=100, help="agents / Flower clients (default 100)")
    p.add_argument("--rounds", type=int, default=100, help="FedAvg rounds R (default 100)")
    p.add_argument("--local-steps", type=int, default=4, help="local gradient steps E per round (default 4)")
    p.add_argument("--lr", type=float, default=0.5, help="local step size on both sides (default 0.5)")
    p.add_argument("--batch-size", type=int, default=0,
                   help="local mini-batch rows (default 0: full batch of the agent's 12 samples)")
    p.add_argument("--task", type=int, default=0, help="index of the default preset's test task (default 0)")
    p.add_argument("--flower-cpus", type=int, default=min(2, os.cpu_count() or 1),
                   help="CPUs given to Ray = Flower client actors running at once (default: 2)")
    p.add_argument("--out", type=Path, default=RESULTS,
                   help=f"result JSON (default {RESULTS.relative_to(HERE.parent)})")
    p.add_argument("--side", choices=("surf", "flower"), help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("clients", "rounds", "local_steps", "flower_cpus"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.clients < 2:
        p.error("--clients must be >= 2")
    if not args.lr > 0:
        p.error("--lr must be > 0")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.side:
        if args.side == "flower" and FLWR_ERROR is not None:
            raise SystemExit(VENV_HINT.format(exe=sys.executable) + f" ({FLWR_ERROR})")
        res = (surf_side if args.side == "surf" else flower_side)(args, args.data)
        Path(args.result).write_text(json.dumps(res))
        return
    if FLWR_ERROR is not None:
        raise SystemExit(VENV_HINT.format(exe=sys.executable) + f" ({FLWR_ERROR})")
    try:
        import surf_dist  # noqa: F401
    except ImportError:
        raise SystemExit(f"surf_dist is not importable from {sys.executable}: "
                         "pip install -e the repository into this venv (see the docstring)") from None

    started = time.perf_counter()
    load_before = load_avg()
    with tempfile.TemporaryDirectory(prefix="flower_peer_") as tmp:
        tmp = Path(tmp)
        data_path = tmp / "workload.npz"
        workload = build_workload(args, data_path)
        print(f"workload: {workload['agents']} clients x {workload['samples_seen']} samples, "
              f"R={args.rounds}, E={args.local_steps}, lr={args.lr}; running surf-dist ...", flush=True)
        sides = {"surf-dist": run_child("surf", args, str(data_path), tmp)}
        print("running Flower (Ray simulation) ...", flush=True)
        sides["flower"] = run_child("flower", args, str(data_path), tmp)
    load_after = load_avg()

    w_flower, w_surf = (np.array(sides[k].pop("final_w")) for k in ("flower", "surf-dist"))
    w_diff = float(np.abs(w_flower - w_surf).max())
    summary = {name: summarize(res) for name, res in sides.items()}
    ratio = summary["flower"]["median_round_ms"] / summary["surf-dist"]["median_round_ms"]
    acc_gap = abs(sides["flower"]["metrics"]["accuracy"] - sides["surf-dist"]["metrics"]["accuracy"])
    import torch
    report = {
        "command": " ".join([sys.executable] + sys.argv),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k not in ("side", "data", "result")},
        "workload": workload,
        "summary": summary, "sides": sides,
        "speedup_median_round": ratio,
        "speedup_total_rounds": summary["flower"]["total_rounds_s"] / summary["surf-dist"]["total_rounds_s"],
        "target_50x_met": bool(ratio >= 50 and acc_gap <= 1e-9),
        "max_abs_final_weight_diff": w_diff, "accuracy_gap": acc_gap,
        "memory_note": ("peak_tree_*: max over time of the summed RSS / PSS of the side's process tree "
                        "(child + descendants; Ray raylet, GCS and actors for Flower), sampled every 0.1 s; "
                        "child_ru_maxrss_mb: the child process alone, kernel high-water mark"),
        "versions": {"flwr": sides["flower"]["flwr"], "ray": sides["flower"]["ray"], "torch": torch.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "load_avg_before": load_before, "load_avg_after": load_after},
        "wall_s": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print()
    print("| system | median round ms | mean round ms (rounds 2..R) | first round ms | rounds total s | "
          "process wall s | peak RSS tree MB | peak PSS tree MB | accuracy (pooled) | local accuracy | "
          "held-out loss |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, res in sides.items():
        s, mt = summary[name], res["metrics"]
        print(f"| {name} | {s['median_round_ms']:.2f} | {s['mean_round_after_first_ms']:.2f} | "
              f"{s['first_round_ms']:.1f} | {s['total_rounds_s']:.2f} | "
              f"{res['wall_s']:.1f} | {res['peak_tree_rss_mb']:.0f} | {res['peak_tree_pss_mb']:.0f} | "
              f"{mt['accuracy']:.4f} | {mt['local_accuracy']:.4f} | {mt['loss']:.4f} |")
    print(f"\nsurf-dist is {ratio:.1f}x faster per round (median; {report['speedup_total_rounds']:.1f}x on the "
          f"rounds' total); target 50x: {'met' if report['target_50x_met'] else 'NOT met'}. "
          f"max |w_flower - w_surf| = {w_diff:.2e}. flwr {report['versions']['flwr']}, ray "
          f"{report['versions']['ray']}. load {load_before} -> {load_after}. Written {args.out}")


if __name__ == "__main__":
    main()
