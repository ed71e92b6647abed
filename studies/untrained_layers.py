"""The layer families before any meta-training, on the validation tasks (result: studies/results/untrained_layers.json).

    python studies/untrained_layers.py --out studies/results/untrained_layers.json

Each family with its learned term at zero (``zero_init``) is a hand-made method: ``cta`` is
unrolled DGD with 4 local sub-steps per round, ``atc`` adapt-then-combine (diffusion), ``atc+nids``
adds the exact-diffusion correction and momentum 1 (NIDS with local sub-steps). Pooled
accuracy after R rounds, mean over the 10 validation tasks of the bench, per initial step.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from surf_dist.commands.bench.protocol import BenchConfig, val_task_indices
from surf_dist.commands.jobs import local_worker
from surf_dist.core.train import unroll
from surf_dist.io.config import preset
from surf_dist.methods.learned import UnrolledDGD

FAMILIES = {"cta": {}, "atc": {"combine": "atc"},
            "atc+nids": {"combine": "atc", "momentum": True, "momentum_init": 1.0, "correction": True}}
SHOW = (1, 2, 3, 5, 10, 20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="0.25,0.5,1.0", help="initial step sizes, comma-separated")
    parser.add_argument("--out")
    args = parser.parse_args()
    cfg = preset("cta")
    worker = local_worker(cfg)
    tasks = worker.family.batch("val", val_task_indices(BenchConfig()))
    out = {}
    for name, kw in FAMILIES.items():
        for step in (float(s) for s in args.steps.split(",")):
            mc = dataclasses.replace(cfg.model, init_step=step, zero_init=True, **kw)
            model = UnrolledDGD(mc, worker.family.dataset.num_features + 1, worker.family.num_classes, seed=0)
            with torch.no_grad():
                shards, Ws = unroll(model, worker, tasks)
            acc = [float(worker.metrics(W, shards, shards.task_of_node, len(tasks))["accuracy"].mean()) for W in Ws]
            out[f"{name} step {step}"] = acc
            print(f"{name:9s} step {step:5.3f}", " ".join(f"{acc[r]:.3f}" for r in SHOW), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"rounds": list(range(len(acc))), "pooled_accuracy": out}, indent=1) + "\n")


if __name__ == "__main__":
    main()
