"""One primal-dual meta-training step in one process (one torch thread): studies/results/train_step_*.json (--out).

    python studies/train_step.py                                    # the default preset
    python studies/train_step.py --hops 1 --layers 20 --local-steps 4 --repeats 5
    python studies/train_step.py --malloc system      # glibc's default: freed pages go back
    python studies/train_step.py --threads 2          # as surf-dist train runs on 2 cores

Times (after one warm-up step, median of --repeats) a primal step (forward of the unrolled
network on the task batch, the Lagrangian's backward, the optimizer step) plus the dual
update, on the ``local`` backend. Prints one JSON line; ``--out FILE`` also writes it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

from surf_dist.core._malloc import keep_freed_memory
from surf_dist.comm.local import LocalCommunicator
from surf_dist.io.config import preset, with_overrides
from surf_dist.runtime.common import make_worker
from surf_dist.core.train import build_state, dual_update, primal_step


def step_seconds(cfg, repeats: int) -> list[float]:
    worker = make_worker(cfg, LocalCommunicator())
    state = build_state(cfg, worker)
    per_step = cfg.train.tasks_per_step
    times = []
    for step in range(repeats + 1):
        tasks = worker.family.batch("train", range(step * per_step, (step + 1) * per_step))
        start = time.perf_counter()
        row = primal_step(state, worker, tasks, cfg)
        dual_update(state, worker, row["slacks"])
        times.append(time.perf_counter() - start)
    return times[1:]     # step 0 is the warm-up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default")
    parser.add_argument("--hops", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--local-steps", type=int)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--malloc", choices=("keep", "system"), default="keep",
                        help="keep: freed memory stays in the process, as every surf-dist command runs "
                             "(surf_dist/core/_malloc.py); system: glibc's default")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (surf-dist train on the local "
                        "backend uses every core)")
    parser.add_argument("--out", help="also write the JSON line here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.malloc == "keep":
        keep_freed_memory()
    model = {k: v for k, v in (("num_hops", args.hops), ("num_layers", args.layers),
                               ("local_steps", args.local_steps)) if v is not None}
    cfg = with_overrides(preset(args.preset), {"model": model})
    times = step_seconds(cfg, args.repeats)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent).stdout.strip()
    result = {"preset": args.preset, "model": model, "malloc": args.malloc, "threads": args.threads, "step_s": statistics.median(times), "steps_s": times,
              "commit": commit, "torch": torch.__version__, "machine": platform.machine(),
              "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}
    print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
