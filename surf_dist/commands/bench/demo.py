"""``surf-dist demo --out DIR``: the shipped optimizer against every baseline, in minutes.

The baselines run with the choices ``surf-dist bench`` made for them on validation tasks
(step size, momentum, local steps or gossip rounds and the start, per round budget), shipped
in ``surf_dist/methods/pretrained/tuned_baselines.json``; nothing is tuned on the demo's test tasks,
which are a fresh draw (report seed ``DEMO_REPORT_SEED``, not the bench's). When the task
settings differ from the ones those choices were made for (another graph, agent count or
dataset), the four one-hyperparameter baselines (``FALLBACK_METHODS``) are tuned here instead,
as the bench does, and said so first.
``surf-dist demo --train`` meta-trains SURF and plain unrolling from scratch instead (an hour).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ...io.config import RunConfig
from ...methods.pretrained import HERE, training_cost
from ...io.checkpoint import load_checkpoint
from . import _say, bench_job, best_start_only
from .protocol import BenchConfig

DEMO_REPORT_SEED = 7
DEMO_ROUNDS = 200
DEMO_TASKS = 10
TUNED_FILE = HERE / "tuned_baselines.json"
FALLBACK_METHODS = ("dgd", "gradient_tracking", "extra", "nids")   # one hyperparameter each: quick to tune


def shipped_choices(cfg: RunConfig) -> dict | None:
    """The shipped validation choices when they were made for these task settings, else None."""
    if not TUNED_FILE.is_file():
        return None
    saved = json.loads(TUNED_FILE.read_text())
    task = {"compress": "none", "link_failure": 0.0, **saved["task"]}   # made before compression, link failures
    same = task == cfg.to_dict()["task"] and saved["batch_size"] == cfg.model.batch_size
    if not same:
        return None
    return best_start_only(saved["baselines"])


def write_choices(report: dict, path: Path | None = None, names: list[str] | None = None) -> Path:
    """Save a bench report's validation choices (no test number) for ``surf-dist demo``, of the
    baselines ``names`` (default: all)."""
    path = TUNED_FILE if path is None else path
    cfg = report["config"]
    baselines = {n: {k: report["methods"][n][k] for k in ("tuned", "grids", "at_edge", "configurations_tried")}
                 for n in (names or report["baselines"])}
    path.write_text(json.dumps({"made_by": report["command"], "rounds": report["protocol"]["rounds"],
                                "validation_task_indices": report["validation_task_indices"],
                                "task": cfg["task"], "batch_size": cfg["model"]["batch_size"],
                                "baselines": baselines}, indent=1) + "\n")
    return path


def run_demo(args, cfg: RunConfig, out: Path, progress: bool) -> int:
    """Run the demo on ``args.backend``; write the bench files, summary.json and the plots."""
    from ..results import write_results
    from ...runtime import is_coordinator, run_job
    from .report import assemble, table, write_bench
    choices = shipped_choices(cfg)
    rounds = args.rounds or DEMO_ROUNDS
    if choices is None:
        _say(f"these task settings have no shipped baseline choices: tuning {', '.join(FALLBACK_METHODS)} here on "
             "validation tasks first (a few minutes; 'surf-dist bench' tunes all 16 baselines)")
    bench = BenchConfig(report_seed=DEMO_REPORT_SEED, draws=1, tasks_per_draw=DEMO_TASKS, rounds=rounds,
                        bootstrap=200, methods=tuple(choices or FALLBACK_METHODS))
    runs = [("pretrained", str(HERE / "default"))]
    meta = {"pretrained": training_cost("pretrained", HERE / "default", load_checkpoint(HERE / "default/model.pt"))}
    start = time.perf_counter()
    raw = run_job(bench_job, cfg, args.backend, args.workers, args.device, progress=progress,
                  bench=bench.__dict__, runs=runs, meta_training=meta, choices=choices)
    if raw is None or not is_coordinator():
        return 0
    report = assemble(raw, bench)
    report.update(config=cfg.to_dict(), wall_seconds=time.perf_counter() - start,
                  command="surf-dist " + " ".join(sys.argv[1:]),
                  baselines_from="shipped validation choices" if choices else "tuned here on validation tasks")
    written = write_bench(out, report)
    summary = {"methods": {n: {k: m["curves"][0][k] for k in ("rounds", "bytes_per_agent", "loss", "accuracy",
                                                             "local_accuracy")} for n, m in report["methods"].items()},
               "centralized": {k: float(v[0]) for k, v in report["centralized"].items()},
               "wall_seconds": report["wall_seconds"]}
    written += write_results(out, summary, cfg.to_dict())
    from ...io import plots
    written.append(plots.plot_accuracy_vs_communication(summary, out / "pooled_accuracy_vs_communication.png",
                                                        "accuracy"))
    print(table(report))
    print(f"\nwall time {report['wall_seconds']:.0f} s; wrote " + ", ".join(p.name for p in written))
    return 0
