"""One bench per value of one task setting (a compressor, a link-failure probability): the
baselines tuned anew under each value on the bench's protocol, the learned optimizers as they
are, the centralized optimum computed once (no value changes it)."""
from __future__ import annotations

import dataclasses

DRAWS = 3
BOOTSTRAP = 1000


def bench_per_value(cfg, worker, runs: list[str], methods: list[str], report_seed: int, progress: bool, say,
                    field: str, values: list, describe) -> tuple | None:
    """Every worker runs this; on rank 0 (labelled runs, BenchConfig, {value: report},
    {value: raw results}), None elsewhere. ``field``: the TaskConfig field set to each of
    ``values`` (``describe(value)`` names it in the progress line)."""
    from ..bench import bench_job, learned_runs
    from ..bench.protocol import BenchConfig
    from ..bench.report import assemble
    labelled = learned_runs(runs or ["pretrained"])
    bench = BenchConfig(report_seed=report_seed, draws=DRAWS, tasks_per_draw=cfg.eval.test_tasks,
                        tune_tasks=cfg.eval.tune_tasks, rounds=cfg.eval.baseline_rounds, bootstrap=BOOTSTRAP,
                        methods=tuple(methods))
    base = worker.family.config
    reports, raws, centralized = {}, {}, None
    try:
        for value in values:
            worker.family.config = dataclasses.replace(base, **{field: value})    # what every bind uses
            value_cfg = dataclasses.replace(cfg, task=worker.family.config)      # and a helper process's
            say(f"{describe(value)}: a bench of {len(bench.methods) or 'every'} baseline(s) and "
                f"{len(labelled)} learned optimizer(s)")
            raw = bench_job(value_cfg, worker, bench.__dict__, labelled, {label: None for label, _ in labelled},
                            progress, centralized=centralized is None)
            if worker.comm.rank != 0:
                continue
            centralized = raw.get("centralized", centralized)
            raw["centralized"] = centralized
            raws[value], reports[value] = raw, assemble(raw, bench)
    finally:
        worker.family.config = base
    if worker.comm.rank != 0:
        return None
    return labelled, bench, reports, raws
