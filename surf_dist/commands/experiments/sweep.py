"""One bench per value of one task setting (a compressor, a link-failure probability): the
baselines tuned anew under each value on the bench's protocol, the learned optimizers as they
are, the centralized optimum computed once (no value changes it)."""
from __future__ import annotations

import dataclasses

import numpy as np

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


def budget(report: dict, learned: list[str]) -> int:
    """R: the most rounds (layers) a learned optimizer of ``report`` runs."""
    return max(report["methods"][label]["curves"][0]["rounds"][-1] for label in learned)


def row_at(method: dict, R: int) -> tuple[dict, int]:
    """One method of a bench report after R rounds (its last round where it ran fewer): kind,
    rounds, pooled accuracy (mean over draws and per draw), bytes per agent; and that round's
    index in its curves."""
    curves = method["curves"]
    rounds = curves[0]["rounds"]
    at = rounds.index(R) if R in rounds else len(rounds) - 1
    per_draw = [float(c["accuracy"][at]) for c in curves]
    return {"kind": method["kind"], "rounds": int(rounds[at]), "accuracy": float(np.mean(per_draw)),
            "accuracy_per_draw": per_draw, "bytes_per_agent": float(curves[0]["bytes_per_agent"][at])}, at


def learned_versus(raws: dict, values: list, reference, learned: list[str], bench) -> dict:
    """Per learned optimizer and value: its paired difference in final pooled accuracy to itself
    under ``reference`` (per test task, bootstrap interval). Keyed by str(value)."""
    from ..bench.protocol import mean_difference
    D, T = bench.draws, bench.tasks_per_draw
    final = lambda value, label: np.asarray(raws[value]["learned"][label]["accuracy"])[:, -1].reshape(D, T)
    return {label: {str(v): mean_difference(final(v, label), final(reference, label), bench.bootstrap,
                                            bench.confidence) for v in values}
            for label in learned}


def protocol_of(bench) -> dict:
    """The bench's settings as JSON (its grids as lists)."""
    return {**bench.__dict__, "step_grid": list(bench.step_grid), "momentum_grid": list(bench.momentum_grid),
            "consensus_grid": list(bench.consensus_grid)}
