"""What pooled accuracy R rounds of one-hop communication can buy, the R-hop oracle: studies/results/reach_oracle.json (--out).

    python studies/reach_oracle.py --rounds 20                 # the default preset's budget, seed 0
    python studies/reach_oracle.py --rounds 20 --seed 1 --out studies/results/reach_oracle_seed1.json

After R rounds in which every message travels one hop, what an agent holds can depend only on
the data of the agents within R hops of it (its R-hop ball), whatever the method: DGD, DFedAvgM,
SURF with one hop per layer. The oracle gives each agent the centralized optimum of its ball's
pooled seen data (the same regularised cross-entropy, L-BFGS, as the centralized optimum of
``surf-dist evaluate``) and scores it on the task's test pool, like the pooled ``accuracy`` of
any method. Averaged over agents and test tasks it is the centralized reference restricted to
what R rounds can carry: the gap of a method's pooled accuracy to the centralized optimum
splits into what the budget allows (centralized - oracle) and what the method leaves
(oracle - method). A reference, not a strict bound: another estimator from the same data may
score a little higher on a finite test pool.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from surf_dist.commands.bench.limit import limit_of_task, reach, sampled_agents
from surf_dist.io.config import preset, with_overrides
from surf_dist.commands.jobs import local_worker


def oracle(worker, task, rounds: int) -> dict:
    """The limit at ``rounds`` over every agent of ``task`` (``surf-dist bench`` samples agents)."""
    n = worker.family.config.num_agents
    balls = reach(task.shift, rounds)
    accuracy = limit_of_task(worker.family, task, [rounds], sampled_agents(n, n), pool_cap=10 ** 9)[0]
    return {"accuracy": float(accuracy), "ball_mean": float(balls.sum(1).mean()),
            "ball_min": int(balls.sum(1).min()), "whole_graph": float((balls.sum(1) == len(balls)).mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, action="append",
                        help="communication rounds of one hop (repeat for several; default 20)")
    parser.add_argument("--tasks", type=int, help="test tasks (default: the preset's test_tasks)")
    parser.add_argument("--out", help="write the result as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = with_overrides(preset(args.preset), {"train": {"seed": args.seed}})
    worker = local_worker(cfg)
    tasks = worker.family.batch("test", range(args.tasks or cfg.eval.test_tasks))
    start = time.perf_counter()
    result = {"command": " ".join(["python"] + sys.argv), "preset": args.preset, "seed": args.seed,
              "tasks": len(tasks), "rounds": {}}
    for rounds in args.rounds or [20]:
        per_task = [oracle(worker, task, rounds) for task in tasks]
        result["rounds"][rounds] = {k: float(np.mean([t[k] for t in per_task])) for k in per_task[0]}
        print(f"R = {rounds}: oracle pooled accuracy {result['rounds'][rounds]['accuracy']:.4f}, "
              f"ball {result['rounds'][rounds]['ball_mean']:.1f} agents on average "
              f"(min {result['rounds'][rounds]['ball_min']:.0f}), whole graph for "
              f"{result['rounds'][rounds]['whole_graph']:.0%} of agents", flush=True)
    result["wall_s"] = time.perf_counter() - start
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
