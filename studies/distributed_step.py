"""One meta-training step and one baseline round at 100 agents, per backend: studies/results/distributed_step.json.

    python studies/distributed_step.py                    # local, torch x2, torch x4, ray x2
    python studies/distributed_step.py --backends local torch:2

For each backend it times (after warm-up, median of --repeats) one primal-dual step of the
`paper` preset (4 tasks x 100 agents, 10 layers, 2 hops) and one DGD round on the 10 test
tasks, and reports the physical bytes that crossed worker boundaries and the time spent in
collectives (summed over ranks, per step). Results go to stdout and studies/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from surf_dist.io.config import preset
from surf_dist.methods.registry import METHODS
from surf_dist.runtime import run_job
from surf_dist.core.train import build_state, dual_update, primal_step


def bench_job(cfg, worker, repeats: int = 5, progress: bool = False) -> dict:
    comm = worker.comm
    state = build_state(cfg, worker)
    tc = cfg.train
    step_times, phys, comm_s = [], [], []
    for step in range(repeats + 1):
        tasks = worker.family.batch("train", range(step * tc.tasks_per_step, (step + 1) * tc.tasks_per_step))
        start = time.perf_counter()
        row = primal_step(state, worker, tasks, cfg)
        dual_update(state, worker, row["slacks"])
        elapsed = time.perf_counter() - start
        if step:   # step 0 is the warm-up
            step_times.append(elapsed)
            phys.append(comm.ledger.physical_bytes)
            comm_s.append(comm.ledger.comm_seconds)
    test_tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    shards = worker.load(test_tasks)
    alpha = torch.full((shards.init_weights.shape[0], 1), 1.0, dtype=worker.dtype)
    rounds = 20
    start = time.perf_counter()
    for _ in METHODS["dgd"].run(shards.init_weights, shards, comm, {"step": alpha}, rounds):
        pass
    round_s = (time.perf_counter() - start) / rounds
    round_bytes = comm.ledger.physical_bytes / rounds
    totals = comm.all_reduce(torch.tensor([statistics.median(phys), statistics.median(comm_s),
                                           round_bytes], dtype=torch.float64)).tolist()
    return {"step_s": statistics.median(step_times), "round_s": round_s,
            "step_physical_bytes": totals[0], "step_comm_s_all_ranks": totals[1],
            "round_physical_bytes": totals[2],
            "logical_bytes_per_agent_per_round": comm.ledger_per_agent()["bytes_per_agent"] / rounds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["local", "torch:2", "torch:4", "ray:2"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "distributed_step.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = preset("paper")
    results = []
    for spec in args.backends:
        backend, _, workers = spec.partition(":")
        start = time.perf_counter()
        result = run_job(bench_job, cfg, backend, int(workers or 1), repeats=args.repeats)
        result.update(backend=backend, workers=int(workers or 1), wall_s=time.perf_counter() - start)
        results.append(result)
        print(json.dumps(result))
    base = next((r for r in results if r["backend"] == "local"), None)
    print(f"\n{'backend':<10}{'step s':>9}{'ratio':>7}{'round ms':>10}{'ratio':>7}{'step MB':>9}"
          f"{'comm s':>8}{'round KB':>10}")
    for r in results:
        step_ratio = r["step_s"] / base["step_s"] if base else float("nan")
        round_ratio = r["round_s"] / base["round_s"] if base else float("nan")
        print(f"{r['backend'] + ':' + str(r['workers']):<10}{r['step_s']:>9.3f}{step_ratio:>7.2f}"
              f"{r['round_s'] * 1e3:>10.1f}{round_ratio:>7.2f}{r['step_physical_bytes'] / 1e6:>9.2f}"
              f"{r['step_comm_s_all_ranks']:>8.3f}{r['round_physical_bytes'] / 1e3:>10.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{os.cpu_count()} cores, {platform.machine()}, torch {torch.__version__}, 1 thread per process"
    out.write_text(json.dumps({"machine": machine, "results": results}, indent=1))


if __name__ == "__main__":
    main()
