"""The paper-sized problem on one GPU and on the CPU: studies/results/gpu_check_*.json (--out).

    python studies/gpu_check.py                      # cuda (if visible) and cpu
    python studies/gpu_check.py --devices cpu        # what a machine without a GPU can run

The problem: 100 agents, 512-d features (the ``synthetic512`` dataset: the size of the paper's
CNN features), 10 classes, L = 10 layers, K = 2 hops, batch 10; otherwise the `paper` preset
(compact local network, float32, degree-3 circulant). For every device:

- ``single``: one process, the local communicator. One meta-training step (forward through
  the 10 layers, backward, Adam, dual step) on T tasks of 100 agents (``--tasks``: T = 4 is the
  `paper` preset's batch), the unrolled forward on 10 test tasks, and one DGD round on them.
- ``group``: the same step through torch.distributed with one rank per GPU (nccl on cuda,
  gloo on cpu; a one-GPU machine has a group of one): the distributed runtime end to end,
  its all-reduces and broadcasts through the collective library.
- ``cli``: ``surf-dist train --quick --device cuda`` (a short run, checked for a model file),
  and the clear error for two workers on one GPU.

Timings are medians over ``--repeats`` after a warm-up, synchronised with the GPU; memory is
the peak allocated by torch on the GPU (``torch.cuda.max_memory_allocated``) or the peak
resident set of the process on the CPU. A section that fails prints its error and the others
still run. Results: a table on stdout and JSON (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

from surf_dist.comm.local import LocalCommunicator
from surf_dist.io.config import preset, with_overrides
from surf_dist.core.evaluate import evaluate_unrolled
from surf_dist.methods.registry import METHODS
from surf_dist.runtime import run_job
from surf_dist.runtime.common import make_worker
from surf_dist.core.train import build_state, dual_update, primal_step

PAPER = {"task": {"dataset": "synthetic512", "num_agents": 100},
         "model": {"num_layers": 10, "num_hops": 2, "batch_size": 10},
         "eval": {"test_tasks": 10}}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` calls after one warm-up."""
    times = []
    for i in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def check_job(cfg, worker, tasks_per_step=(4,), repeats: int = 5, progress: bool = False) -> dict:
    """Step, forward and DGD-round timings of the paper-sized problem on this worker."""
    device = worker.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
           "world_size": worker.comm.world_size, "backend": type(worker.comm).__name__}
    for T in tasks_per_step:
        state = build_state(with_overrides(cfg, {"train": {"tasks_per_step": T}}), worker)
        batches = iter(range(10**6))

        def step():
            i = next(batches)
            tasks = worker.family.batch("train", range(i * T, (i + 1) * T))
            dual_update(state, worker, primal_step(state, worker, tasks, cfg)["slacks"])
        out[f"step_s_T{T}"] = timed(step, device, repeats)
        out[f"agent_layers_per_s_T{T}"] = T * cfg.task.num_agents * cfg.model.num_layers / out[f"step_s_T{T}"]
    test_tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    out["forward_10_tasks_s"] = timed(lambda: evaluate_unrolled(state.model, worker, test_tasks), device, repeats)
    shards = worker.load(test_tasks)
    alpha = torch.full((shards.init_weights.shape[0], 1), 1.0, dtype=worker.dtype, device=device)
    rounds = 20
    out["dgd_round_ms"] = 1e3 * timed(lambda: [None for _ in METHODS["dgd"].run(
        shards.init_weights, shards, worker.comm, {"step": alpha}, rounds)], device, 3) / rounds
    out["peak_memory_mb"] = peak_memory_mb(device)
    out["memory_kind"] = "torch max_memory_allocated" if device.type == "cuda" else "process peak RSS"
    return out


def section_cli(device) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "surf_dist.cli.main", "train", "--quick", "--steps", "6", "--no-progress",
               "--device", device, "--out", f"{tmp}/run"]
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        out["train_quick_s"] = time.perf_counter() - start
        out["train_quick_ok"] = done.returncode == 0 and Path(f"{tmp}/run/model.pt").is_file()
        if not out["train_quick_ok"]:
            out["train_quick_stderr"] = done.stderr[-2000:]
        if device == "cuda":
            gpus = torch.cuda.device_count()
            cmd = [sys.executable, "-m", "surf_dist.cli.main", "train", "--quick", "--no-progress", "--device", "cuda",
                   "--backend", "torch", "--workers", str(gpus + 1), "--out", f"{tmp}/too_many"]
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
            out["too_many_workers_exit"] = done.returncode
            out["too_many_workers_error"] = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default=None, help="comma-separated: cuda,cpu (default: cuda if visible, and cpu)")
    parser.add_argument("--tasks", default="4,32", help="tasks per meta-step to time (comma-separated)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sections", default="single,group,cli")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "gpu_check.json"))
    args = parser.parse_args()
    args.tasks = tuple(int(t) for t in args.tasks.split(","))
    devices = args.devices.split(",") if args.devices else (["cuda"] if torch.cuda.is_available() else []) + ["cpu"]
    torch.set_num_threads(1)
    cfg = with_overrides(preset("paper"), PAPER)
    report = {"command": " ".join([Path(sys.executable).name] + sys.argv), "torch": torch.__version__,
              "cuda": torch.version.cuda, "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
              "host": platform.node(), "cpus": os.cpu_count(), "results": {}}
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}); GPUs: {report['gpus'] or 'none'}; "
          f"{os.cpu_count()} CPUs", flush=True)
    for device in devices:
        tasks = args.tasks if device == "cuda" else args.tasks[:1]      # the CPU: the default batch only
        ranks = max(1, torch.cuda.device_count()) if device == "cuda" else 1
        sections = {
            "single": lambda: check_job(cfg, make_worker(cfg, LocalCommunicator(), device), tasks, args.repeats),
            "group": lambda: run_job(check_job, cfg, "torch", ranks, device, tasks_per_step=tasks,
                                     repeats=args.repeats),
            "cli": lambda: section_cli(device)}
        for name in args.sections.split(","):
            run = sections[name]
            start = time.perf_counter()
            try:
                result = run()
            except Exception as err:     # one failing section must not hide the others
                traceback.print_exc()
                result = {"error": f"{type(err).__name__}: {err}"}
            result["wall_s"] = time.perf_counter() - start
            report["results"][f"{device}/{name}"] = result
            print(f"{device}/{name}: " + json.dumps(result), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
