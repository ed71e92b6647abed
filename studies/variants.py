"""SURF variants against the tuned baselines (speed, memorisation, transfer): OUT/variants.json (kept: studies/results/variants*.json).

    python studies/variants.py --out runs/variants                  # every variant (~16 cores: ~6 min)
    python studies/variants.py --out runs/v --only base,tracking --jobs 2
    python studies/variants.py --out runs/v --evaluate-only          # trained runs and baselines in runs/v
    python studies/variants.py --out runs/v1 --seed 1 --only base  # another seed: its tasks, its baselines
    python studies/variants.py --list

Each variant is the `paper` preset (the default until issue 7: embedded digits, 100 agents,
degree-3 circulant, L = 10, K = 2) with a few settings changed (``VARIANTS``). All variants meta-train in parallel
processes, one torch thread each (``--cuda`` sends the variants named there to the GPU, one
after another). Then, for each trained model:

- ``local_accuracy`` per layer on the 10 test tasks, its final value, and the rounds the best
  tuned baseline needs to reach it (DGD, DSGD, gradient tracking, DFedAvgM, each with its step
  size tuned per round budget on validation tasks, evaluated every 5-10 rounds up to 500):
  ``ratio`` = those rounds / the variant's rounds (L K);
- the pooled ``accuracy`` and the gap to the centralized optimum (same test tasks);
- ``local_accuracy`` on the same tasks with permuted labels (a memorising optimizer falls);
- layer-to-layer rises of the mean test loss (the descent constraints' promise);
- transfer (compact local networks only: their parameters do not depend on d or n): the same
  model on tasks of other datasets (wine, breast_cancer) and other graph families
  (Erdos-Renyi, random geometric, small world), against the best tuned baseline at the same
  number of rounds.

Writes ``OUT/variants.json`` (everything) and ``OUT/variants.md`` (the table).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from surf_dist.io.config import preset, with_overrides
from surf_dist.commands.bench.summary_curves import centralized_summary, tuned_baselines
from surf_dist.core.evaluate import evaluate_unrolled
from surf_dist.commands.jobs import load_model, local_worker, rounds_to_reach, run_config
from surf_dist.core.train import new_model, train

K1_L20 = {"num_hops": 1, "num_layers": 20}            # 20 layers of one hop: the same 20 rounds as L10 x K2
K1_L20_LS4 = {**K1_L20, "local_steps": 4}
DEFAULT_TRAIN = {"eps": 0.02, "steps": 900, "lr_floor": 0.1}
VARIANTS = {   # name -> overrides of the `paper` preset
    "base": {},
    "unconstrained": {"train": {"constrained": False}},
    "tasks8": {"train": {"tasks_per_step": 8}},
    "lr1e-2": {"train": {"lr": 1e-2}},
    "hidden32": {"model": {"hidden": 32}},
    "local_steps2": {"model": {"local_steps": 2}},
    "tracking": {"model": {"tracking": True}},
    "tracking_local_steps2": {"model": {"tracking": True, "local_steps": 2}},
    "tracking_eps0.1": {"model": {"tracking": True}, "train": {"eps": 0.1}},
    "tracking_K3_L7": {"model": {"tracking": True, "num_hops": 3, "num_layers": 7}},
    "tracking_L5": {"model": {"tracking": True, "num_layers": 5}},
    "tracking_L15": {"model": {"tracking": True, "num_layers": 15}},
    "momentum0.5": {"model": {"momentum": True, "momentum_init": 0.5}},
    "momentum0.8": {"model": {"momentum": True, "momentum_init": 0.8}},
    "K1_L20": {"model": K1_L20},
    "K1_L20_steps900": {"model": K1_L20, "train": {"steps": 900}},
    "K1_L20_local_steps2": {"model": {**K1_L20, "local_steps": 2}},
    "K1_L20_local_steps4": {"model": K1_L20_LS4},
    "K1_L20_local_steps6": {"model": {**K1_L20, "local_steps": 6}},
    "K1_L20_local_steps4_eps0.02": {"model": K1_L20_LS4, "train": {"eps": 0.02}},
    "K1_L20_local_steps4_unconstrained": {"model": K1_L20_LS4, "train": {"constrained": False}},
    "K1_L20_local_steps4_eps0.02_batch12": {"model": {**K1_L20_LS4, "batch_size": 12}, "train": {"eps": 0.02}},
    # = the `default` preset (issue 7); its seed-1 run: --seed 1
    "K1_L20_local_steps4_eps0.02_steps900_cosine": {"model": K1_L20_LS4, "train": DEFAULT_TRAIN},
    "K1_L20_local_steps4_eps0.02_steps900_cosine_async5": {"model": K1_L20_LS4,
                                                           "train": {**DEFAULT_TRAIN, "async_train": 5}},
    "K1_L20_local_steps4_eps0.02_steps900_cosine_zeroinit": {"model": {**K1_L20_LS4, "zero_init": True},
                                                             "train": DEFAULT_TRAIN},
    "tracking_steps1500_gpu": {"model": {"tracking": True}, "train": {"steps": 1500}},
    "steps1500_gpu": {"train": {"steps": 1500}},
}
BASELINE_POINTS = (0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60, 70, 80, 90, 100, 110, 120, 140, 160,
                   180, 200, 250, 300, 350, 400, 450, 500)
TRANSFER = {"wine": {"task": {"dataset": "wine"}}, "breast_cancer": {"task": {"dataset": "breast_cancer"}},
            "erdos_renyi": {"task": {"topology": "erdos_renyi"}},
            "random_geometric": {"task": {"topology": "random_geometric"}},
            "small_world": {"task": {"topology": "small_world"}}}
TRANSFER_POINTS = (0, 5, 10, 15, 20, 21, 25, 30, 40)


def base_config(base: str = "paper", seed: int = 0):
    """The preset the variants change, with the run's seed (tasks, graphs, initialisations)."""
    return with_overrides(preset(base), {"train": {"seed": seed}})


def train_variant(name: str, out: str, device: str, base: str = "paper", seed: int = 0) -> dict:
    cfg = with_overrides(base_config(base, seed), VARIANTS[name])
    start = time.perf_counter()
    state = train(cfg, local_worker(cfg, device), Path(out) / name, progress=False)
    return {"train_s": time.perf_counter() - start, "steps": state.step, "best_val_loss": state.best_val}


def baselines(overrides: dict, points, base: str = "paper", seed: int = 0) -> dict:
    cfg = with_overrides(base_config(base, seed), overrides)
    cfg = with_overrides(cfg, {"eval": {"eval_points": list(points), "baseline_rounds": points[-1]}})
    worker = local_worker(cfg)
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    return {"methods": tuned_baselines(cfg, worker, tasks, progress=False),
            "centralized": centralized_summary(cfg, worker, tasks)}


def best_at(methods: dict, rounds: int, metric: str = "local_accuracy") -> tuple[str, float]:
    """The best baseline's value at ``rounds`` (its curve's last point at or below it)."""
    best = ("", -math.inf)
    for name, curve in methods.items():
        value = [v for r, v in zip(curve["rounds"], curve[metric]) if r <= rounds][-1]
        best = max(best, (name, value), key=lambda item: item[1])
    return best


def evaluate_variant(name: str, out: str) -> dict:
    run_dir = Path(out) / name
    cfg = run_config(run_dir)
    worker = local_worker(cfg)
    model = load_model(run_dir, worker)
    fam = worker.family
    tasks = fam.batch("test", range(cfg.eval.test_tasks))
    curve = evaluate_unrolled(model, worker, tasks)
    permuted = evaluate_unrolled(model, worker, fam.batch("test", range(cfg.eval.test_tasks), permute_labels=True))
    result = {"curve": curve, "rounds": curve["rounds"][-1], "local_accuracy": curve["local_accuracy"][-1],
              "accuracy": curve["accuracy"][-1], "permuted_local_accuracy": permuted["local_accuracy"][-1],
              "loss_rises": sum(b > a for a, b in zip(curve["loss"], curve["loss"][1:])), "transfer": {}}
    if cfg.model.local_net == "compact":
        for where, overrides in TRANSFER.items():
            other = with_overrides(cfg, overrides)
            try:     # a graph family may not be drawable at this size (e.g. too sparse to connect)
                other_worker = local_worker(other)
                other_tasks = other_worker.family.batch("test", range(cfg.eval.test_tasks))
            except ValueError as err:
                result["transfer"][where] = {"error": str(err)}
                continue
            other_model = new_model(other, other_worker)
            other_model.load_state_dict(model.state_dict())
            other_curve = evaluate_unrolled(other_model, other_worker, other_tasks)
            result["transfer"][where] = {"local_accuracy": other_curve["local_accuracy"][-1],
                                         "loss_rises": sum(b > a for a, b in zip(other_curve["loss"],
                                                                                  other_curve["loss"][1:]))}
    return result


def done(value) -> Future:
    """A future that already holds ``value`` (what an earlier run computed)."""
    future = Future()
    future.set_result(value)
    return future


def table(report: dict) -> str:
    main = report["baselines"]["default"]
    lines = ["| variant | rounds | local_accuracy | accuracy | gap to centralized | best baseline rounds to reach | ratio "
             "| permuted | loss rises | " + " | ".join(f"{w} (best baseline)" for w in TRANSFER) + " | train s |",
             "|---|" + "---:|" * (8 + len(TRANSFER) + 1)]
    for name, v in report["variants"].items():
        if "error" in v:
            lines.append(f"| {name} | error: {v['error']} |")
            continue
        needs = min(rounds_to_reach(c, v["local_accuracy"]) for c in main["methods"].values())
        cells = []
        for where in TRANSFER:
            t, base = v["transfer"].get(where, {}), report["baselines"].get(where, {})
            if "local_accuracy" not in t or "methods" not in base:
                cells.append("-")
                continue
            _, value_b = best_at(base["methods"], v["rounds"])
            cells.append(f"{t['local_accuracy']:.3f} ({value_b:.3f})")
        lines.append(f"| {name} | {v['rounds']} | {v['local_accuracy']:.3f} | {v['accuracy']:.3f} | "
                     f"{main['centralized']['accuracy'] - v['accuracy']:+.3f} | {needs} | {needs / v['rounds']:.1f} | "
                     f"{v['permuted_local_accuracy']:.3f} | {v['loss_rises']} | " + " | ".join(cells)
                     + f" | {v.get('train_s', float('nan')):.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (required unless --list)")
    parser.add_argument("--deadline-s", type=float, default=None,
                        help="stop waiting after this many seconds and write what is done")
    parser.add_argument("--only", help="comma-separated variant names (default: all but the *_gpu ones "
                                       "without a GPU)")
    parser.add_argument("--cuda", default="", help="comma-separated variants to train on the GPU")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--preset", default="paper", help="the preset the variants change (quick: a smoke test)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every variant and of the baselines "
                        "(its own training, validation and test tasks)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="evaluate the variants trained in OUT, with the baselines of OUT/variants.json")
    args = parser.parse_args()
    if args.list:
        print("\n".join(f"{k}: {json.dumps(v)}" for k, v in VARIANTS.items()))
        return 0
    if not args.out:
        parser.error("--out is required")
    names = args.only.split(",") if args.only else [
        n for n in VARIANTS if torch.cuda.is_available() or args.evaluate_only or not n.endswith("_gpu")]
    on_gpu = set(args.cuda.split(",")) - {""}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    names = [n for n in names if not args.evaluate_only or (out / n / "model.pt").is_file()]
    report = {"command": " ".join([Path(sys.executable).name] + sys.argv), "variants": {n: {} for n in names},
              "baselines": {}, "host": os.uname().nodename, "cpus": os.cpu_count(), "torch": torch.__version__}
    ctx = get_context("spawn")
    deadline = math.inf if args.deadline_s is None else start + args.deadline_s

    def result(job):     # the job's value, or a TimeoutError once the deadline has passed
        return job.result(timeout=None if deadline == math.inf else max(0.0, deadline - time.perf_counter()))

    pool, gpu = ProcessPoolExecutor(args.jobs, mp_context=ctx), ProcessPoolExecutor(1, mp_context=ctx)
    if args.evaluate_only:
        earlier = json.loads((out / "variants.json").read_text())
        report["trained_by"] = {k: earlier[k] for k in ("command", "host", "cpus", "torch")}
        base_jobs = {w: done(b) for w, b in earlier["baselines"].items()}
        trained = {n: done({k: v for k, v in earlier["variants"].get(n, {}).items() if k in ("train_s", "steps")})
                   for n in names if (out / n / "model.pt").is_file()}
    else:
        base_jobs = {"default": pool.submit(baselines, {}, BASELINE_POINTS, args.preset, args.seed)}
        base_jobs.update({w: pool.submit(baselines, o, TRANSFER_POINTS, args.preset, args.seed)
                          for w, o in TRANSFER.items()})
        trained = {n: (gpu if n in on_gpu else pool).submit(train_variant, n, str(out),
                                                            "cuda" if n in on_gpu else "cpu", args.preset, args.seed)
                   for n in names}
    evaluated = {}
    for n, job in trained.items():
        try:
            report["variants"][n].update(result(job))
            evaluated[n] = pool.submit(evaluate_variant, n, str(out))
        except Exception as err:     # one failing variant must not hide the others
            report["variants"][n]["error"] = f"{type(err).__name__}: {err}"
        print(f"trained {n} at {time.perf_counter() - start:.0f} s: {report['variants'][n]}", flush=True)
    for n, job in evaluated.items():
        try:
            report["variants"][n].update(result(job))
        except Exception as err:
            report["variants"][n]["error"] = f"{type(err).__name__}: {err}"
        (out / "variants.json").write_text(json.dumps(report, indent=1))     # what is done so far
    for w, job in base_jobs.items():
        try:
            report["baselines"][w] = result(job)
        except Exception as err:     # e.g. a graph family that can't be drawn at this size
            report["baselines"][w] = {"error": f"{type(err).__name__}: {err}"}
    report["wall_s"] = time.perf_counter() - start
    (out / "variants.json").write_text(json.dumps(report, indent=1))
    (out / "variants.md").write_text(table(report) + "\n")
    print(table(report))
    print(f"\nwall time {report['wall_s']:.0f} s; wrote {out / 'variants.json'}, {out / 'variants.md'}", flush=True)
    if time.perf_counter() > deadline:    # abandon the jobs still running
        os._exit(0)
    pool.shutdown()
    gpu.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
