"""Which learned optimizer ships as the default, decided on validation tasks only: studies/results/choose_default.json (--out).

    python studies/choose_default.py [RUN ...] [--out FILE]

Runs each learned optimizer (default: the three shipped ones) on the bench's validation tasks
(validation split, indices 1000-1009, the ones the baselines are tuned on; never a test task)
and ranks them by pooled accuracy after their last layer, then by held-out loss. Prints one
JSON document (and writes it to --out).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from surf_dist.commands.bench import DEFAULT_RUNS, learned_runs
from surf_dist.commands.bench.protocol import BenchConfig, val_task_indices
from surf_dist.commands.bench.runner import learned_on_test
from surf_dist.io.config import preset
from surf_dist.commands.jobs import local_worker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", default=list(DEFAULT_RUNS))
    parser.add_argument("--preset", default="default")
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = preset(args.preset)
    worker = local_worker(cfg)
    tasks = worker.family.batch("val", val_task_indices(BenchConfig()))
    rows = {}
    for label, folder in learned_runs(args.runs):
        res = learned_on_test(folder, worker, tasks)
        rows[label] = {m: float(np.mean(res[m][:, -1])) for m in ("accuracy", "local_accuracy", "loss")}
        rows[label]["rounds"] = res["rounds"][-1]
    ranking = sorted(rows, key=lambda n: (-rows[n]["accuracy"], rows[n]["loss"]))
    result = {"validation_task_indices": val_task_indices(BenchConfig()), "preset": args.preset,
              "models": rows, "ranking": ranking, "chosen": ranking[0]}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
