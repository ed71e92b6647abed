"""Peak memory per rank and time per agent-layer of evaluating `pretrained` at 1k to 100k agents on 1, 2 and 4 workers: studies/results/<--name>.json.

Each cell runs in a fresh process: ``runtime.run_job`` on the local backend (1 worker) or
torch.distributed gloo ranks on loopback (2, 4 workers), the default preset with ``--agents``
n, float32, one test task. Every rank loads the shipped ``pretrained`` model and runs
``core.evaluate.evaluate_unrolled`` (what ``surf-dist evaluate`` runs for a learned model:
the task's draws and shards, the 20 layers, and the per-layer loss, pooled accuracy and local
accuracy). The task is loaded once first (its draws are then cached by the task), and the
evaluation is timed once (a repeat at 100k agents would double a cell of minutes):

- ``load_s``: drawing the task's blocks for the rank's agents and gathering their shards;
- ``eval_s``: ``evaluate_unrolled`` (load included), wall clock, rank 0;
- ``cpu_s``: the CPU seconds of every rank during ``evaluate_unrolled``, summed (ranks may
  share cores: this is the number to compare across worker counts);
- ``us_per_agent_layer``: ``cpu_s`` / (n L), and ``wall_us_per_agent_layer``: ``eval_s`` / (n L);
- ``vmhwm_mb``: each rank's peak resident memory (VmHWM) at the end.

    python studies/scale_evaluate.py --agents 100,1000,10000,100000 --workers 1,2,4 --name scale_evaluate
    python studies/scale_evaluate.py --cells 100:1,100000:2 --name two_cells     # these cells, in this order
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def vmhwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def evaluation_job(cfg, worker, progress=False) -> dict:
    import torch
    from surf_dist.commands.jobs import load_model
    from surf_dist.core.evaluate import evaluate_unrolled
    from surf_dist.methods.pretrained import resolve_run
    comm = worker.comm
    model = load_model(resolve_run("pretrained"), worker)
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    start = time.perf_counter()
    worker.load(tasks)
    load_s = time.perf_counter() - start
    cpu, start = time.process_time(), time.perf_counter()
    curve = evaluate_unrolled(model, worker, tasks)
    eval_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    slots = torch.zeros(3, comm.world_size, dtype=torch.float64)
    slots[:, comm.rank] = torch.tensor([vmhwm_mb(), cpu_s, load_s], dtype=torch.float64)
    slots = comm.all_reduce(slots)
    return {"eval_s": eval_s, "cpu_s": slots[1].tolist(), "load_s": slots[2].tolist(),
            "vmhwm_mb": slots[0].tolist(), "final_accuracy": curve["accuracy"][-1],
            "final_local_accuracy": curve["local_accuracy"][-1]}


def run_cell(agents: int, workers: int, tasks: int) -> dict:
    from surf_dist.io.config import preset, with_overrides
    from surf_dist.runtime import run_job
    cfg = with_overrides(preset("default"), {"task": {"num_agents": agents}, "eval": {"test_tasks": tasks}})
    start = time.perf_counter()
    out = run_job(evaluation_job, cfg, "local" if workers == 1 else "torch", workers)
    layers = cfg.model.num_layers * tasks
    out.update(agents=agents, workers=workers, test_tasks=tasks, layers=cfg.model.num_layers,
               total_s=time.perf_counter() - start,
               us_per_agent_layer=sum(out["cpu_s"]) / (agents * layers) * 1e6,
               wall_us_per_agent_layer=out["eval_s"] / (agents * layers) * 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="100,1000,10000,100000")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--cells", help="AGENTS:WORKERS,... in this order (instead of --agents x --workers)")
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per cell")
    parser.add_argument("--name", default="scale_evaluate")
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cell:                                 # one cell, in its own process
        agents, workers = map(int, args.cell.split(","))
        print(json.dumps(run_cell(agents, workers, args.tasks)))
        return
    out_path = HERE / "results" / f"{args.name}.json"
    cells = []
    order = ([tuple(map(int, c.split(":"))) for c in args.cells.split(",")] if args.cells else
             [(a, w) for a in map(int, args.agents.split(",")) for w in map(int, args.workers.split(","))])
    for agents, workers in order:
            start = time.perf_counter()
            try:
                done = subprocess.run([sys.executable, __file__, "--cell", f"{agents},{workers}", "--tasks",
                                       str(args.tasks)], capture_output=True, text=True, timeout=args.timeout)
                cell = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else
                        {"agents": agents, "workers": workers, "error": done.stderr.strip().splitlines()[-3:]})
            except subprocess.TimeoutExpired:
                cell = {"agents": agents, "workers": workers, "error": f"over {args.timeout:.0f} s"}
            cell["cell_s"] = time.perf_counter() - start
            print(json.dumps(cell), flush=True)
            cells.append(cell)
            out_path.parent.mkdir(exist_ok=True)
            out_path.write_text(json.dumps({"command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
                                            "machine": f"{platform.processor() or platform.machine()}, "
                                                       f"{os.cpu_count()} cores, {platform.system()}",
                                            "cells": cells}, indent=1))


if __name__ == "__main__":
    main()
