"""A trained model on another seed's test tasks (a weak seed: its data or its meta-training?): studies/results/cross_seed_*.json.

    python studies/cross_seed.py --run runs/v7/K1_L20_local_steps4_eps0.02_steps900_cosine \
        --seed 1 --baselines runs/v7s1/variants.json
    python studies/cross_seed.py --run pretrained --seed 2 --baselines runs/v7s2/variants.json
    python studies/cross_seed.py --run pretrained --seed 1 --split train --tasks 8

The seed draws the dataset's train / validation / test pools, the tasks, and the model's
initialisation. Here the model trained on one seed runs, unchanged, on the test tasks of
``--seed``, and is compared with that seed's tuned baselines (``variants.py --seed S`` wrote
them to its ``variants.json``). A diagnostic, not a result: the pools of two seeds overlap, so
some of the other seed's test samples were in this model's training pool (the compact network
does not memorise labels, docs/RESULTS.md section 6, but the overlap is there).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from surf_dist.io.config import with_overrides
from surf_dist.core.evaluate import evaluate_unrolled
from surf_dist.commands.jobs import local_worker, rounds_to_reach, run_config
from surf_dist.methods.pretrained import resolve_run
from surf_dist.core.train import new_model, warm_start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a trained run folder ('pretrained': the shipped one)")
    parser.add_argument("--seed", type=int, required=True, help="the seed whose test tasks to run on")
    parser.add_argument("--baselines", help="variants.json of `variants.py --seed SEED` (its tuned baselines; "
                                            "test split only)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="whose tasks: test (default), or train / val to ask how well meta-training did")
    parser.add_argument("--tasks", type=int, help="how many tasks of the split (default: the run's test_tasks)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    run = resolve_run(args.run)
    cfg = run_config(run)
    other = with_overrides(cfg, {"train": {"seed": args.seed}})
    worker = local_worker(other)
    model = new_model(other, worker)
    warm_start(model, run)
    tasks = worker.family.batch(args.split, range(args.tasks or other.eval.test_tasks))
    curve = evaluate_unrolled(model, worker, tasks)
    result = {"run": args.run, "trained_seed": cfg.train.seed, "test_seed": args.seed, "split": args.split,
              "tasks": len(tasks),
              "local_accuracy": curve["local_accuracy"][-1], "accuracy": curve["accuracy"][-1],
              "loss": curve["loss"]}
    if args.baselines and args.split == "test":
        methods = json.loads(Path(args.baselines).read_text())["baselines"]["default"]["methods"]
        needs = min(rounds_to_reach(c, result["local_accuracy"]) for c in methods.values())
        result.update(best_baseline_rounds=needs, ratio=needs / curve["rounds"][-1])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
