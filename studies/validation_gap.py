"""Learned optimizers against the best tuned baseline on the validation tasks, every round (result: studies/results/validation_gap.json).

What a choice between learned optimizers (recipe, seed, checkpoint) may look at:

    python studies/validation_gap.py RUN [RUN ...] --out studies/results/validation_gap.json

Each baseline replays the choices a full ``surf-dist bench`` made for it on these same
validation tasks (``--choices``: a bench.json; validation tasks do not depend on the report
seed), so no test task is touched. The baseline curves are cached in ``--cache``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from surf_dist.commands.bench.protocol import BenchConfig, val_task_indices
from surf_dist.commands.bench.runner import from_segments, learned_on_test, run_choices
from surf_dist.commands.jobs import local_worker
from surf_dist.io.config import preset
from surf_dist.methods.pretrained import resolve_run

SHOW = (1, 2, 3, 5, 10, 15, 20)


def baseline_curves(worker, tasks, choices: dict, rounds: int, batch_size: int) -> dict:
    bench = BenchConfig(rounds=rounds)
    out = {}
    for name, saved in choices.items():
        start = time.perf_counter()
        configs, picks = from_segments({"best": saved["tuned"]["best"]}, rounds)
        curves = run_choices(name, worker, tasks, configs, picks, bench, batch_size)
        out[name] = np.nanmean(curves["best"]["accuracy"], axis=0).tolist()
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--choices", default="docs/results/bench_digits.json")
    parser.add_argument("--cache", default="studies/results/validation_baselines_digits.json")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--out")
    args = parser.parse_args()
    cfg = preset("default")
    torch.manual_seed(0)
    worker = local_worker(cfg)
    tasks = worker.family.batch("val", val_task_indices(BenchConfig()))
    cache = Path(args.cache)
    if cache.is_file():
        base = json.loads(cache.read_text())["pooled_accuracy"]
    else:
        report = json.loads(Path(args.choices).read_text())
        choices = {n: m for n, m in report["methods"].items() if m["kind"] == "baseline"}
        base = baseline_curves(worker, tasks, choices, args.rounds, cfg.model.batch_size)
        cache.write_text(json.dumps({"made_by": " ".join(sys.argv), "choices": args.choices,
                                     "validation_task_indices": val_task_indices(BenchConfig()),
                                     "pooled_accuracy": base}, indent=1) + "\n")
    best = np.max(np.array([v[:args.rounds + 1] for v in base.values()]), axis=0)
    arg = [max(base, key=lambda n: base[n][r]) for r in range(args.rounds + 1)]
    print("pooled accuracy on validation tasks, R =", " ".join(f"{r:>6d}" for r in SHOW))
    print(f"{'best baseline':28s}", " ".join(f"{best[r]:6.3f}" for r in SHOW))
    print(f"{'(which)':28s}", " ".join(f"{arg[r][:6]:>6s}" for r in SHOW))
    results = {"best_baseline": best.tolist(), "which": arg, "learned": {}}
    for run in args.runs:
        got = learned_on_test(str(resolve_run(run)), worker, tasks)
        acc = got["accuracy"].mean(0)
        rounds = got["rounds"]
        curve = dict(zip(rounds, acc.tolist()))
        results["learned"][run] = curve
        print(f"{run[-28:]:28s}", " ".join(f"{curve.get(r, float('nan')):6.3f}" for r in SHOW))
        target = acc[-1]
        crossing = next((r for r in range(args.rounds + 1) if best[r] >= target), None)
        print(f"{'':28s} rounds ratio {'>' + str(args.rounds) if crossing is None else crossing}/{rounds[-1]}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
