"""``surf-dist experiment compression``: accuracy against bytes per agent under each compressor,
on the bench's protocol.

For every compressor (``--compressors``, default none, q8, q4, q2, topk:0.1, topk:0.01) one
bench runs (``bench.bench_job``): every baseline tuned per round budget on validation tasks under
that compressor, the learned optimizers (``--runs``, default ``pretrained``) as they are, all on
the same fresh test draws (``--report-seed``, 3 draws of ``test_tasks``). Per method and
compressor the result holds, at R = the learned optimizers' rounds: the pooled accuracy (mean
over draws, and per draw) and the bytes per agent; and the bytes per agent each method needs to
reach the first learned optimizer's pooled accuracy at R with full rows (``target``; None when
not reached within the rounds run). Each learned optimizer also gets its paired difference to
itself with full rows, per task, with a bootstrap interval. The figure: accuracy against bytes
(log), one colour per method, one marker per compressor, and the Pareto front of all points.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..jobs import check_compressor
from .sweep import bench_per_value, budget, learned_versus, protocol_of, row_at

DEFAULT_COMPRESSORS = ("none", "q8", "q4", "q2", "topk:0.1", "topk:0.01")


def check_compressors(specs: list[str]) -> list[str]:
    """The specs, each parsed (ValueError naming a bad one), none twice."""
    for spec in specs:
        check_compressor(spec, f"--compressors {spec}")
    twice = sorted({s for s in specs if specs.count(s) > 1})
    if twice:
        raise ValueError(f"--compressors: {', '.join(twice)} given twice; name each once")
    return specs


def compression_experiment(cfg, worker, runs: list[str], compressors: list[str], methods: list[str],
                           report_seed: int, progress: bool, say) -> dict | None:
    """Every worker runs this; rank 0 returns the numbers (module doc)."""
    d = (worker.family.dataset.num_features + 1) * worker.family.num_classes
    for spec in compressors:
        check_compressor(spec, f"--compressors {spec}", d)
    out = bench_per_value(cfg, worker, runs, methods, report_seed, progress, say, "compress", compressors,
                          lambda spec: f"compression {spec}")
    return None if out is None else summarize(*out, compressors)


def summarize(labelled, bench, reports: dict, raws: dict, compressors: list[str]) -> dict:
    """The numbers of the module doc from each compressor's bench report."""
    learned = [label for label, _ in labelled]
    R = budget(reports[compressors[0]], learned)
    full = "none" if "none" in compressors else compressors[0]
    target_curve = np.mean([c["accuracy"] for c in reports[full]["methods"][learned[0]]["curves"]], axis=0)
    target = float(target_curve[-1])
    table = {}
    for spec in compressors:
        table[spec] = {}
        for name, m in reports[spec]["methods"].items():
            row, _ = row_at(m, R)
            curves = m["curves"]
            reached = np.flatnonzero(np.mean([c["accuracy"] for c in curves], axis=0) >= target - 1e-12)
            table[spec][name] = {**row, "bytes_to_target": (float(curves[0]["bytes_per_agent"][int(reached[0])])
                                                            if len(reached) else None),
                                 "rounds_to_target": int(curves[0]["rounds"][int(reached[0])]) if len(reached) else None}
    points = [(row["bytes_per_agent"], row["accuracy"], spec, name)
              for spec, rows in table.items() for name, row in rows.items()]
    return {"compressors": list(compressors), "rounds": R, "target": {"accuracy": target, "method": learned[0],
                                                                       "compressor": full},
            "methods": table, "learned_versus_full_rows": learned_versus(raws, compressors, full, learned, bench),
            "pareto": pareto(points), "protocol": protocol_of(bench)}


def pareto(points: list[tuple]) -> list[dict]:
    """The points (bytes, accuracy, compressor, method) no other point beats on both: fewer or
    equal bytes and higher or equal accuracy, one of them strictly. Sorted by bytes."""
    front, best = [], -np.inf
    for b, acc, spec, name in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append({"bytes_per_agent": b, "accuracy": acc, "compressor": spec, "method": name})
            best = acc
    return front


def compression_rows(result: dict) -> list[list]:
    rows = [["compressor", "method", "kind", "rounds", "accuracy", "bytes_per_agent", "bytes_to_target",
             "rounds_to_target"]]
    for spec, entries in result["methods"].items():
        for name, e in entries.items():
            rows.append([spec, name, e["kind"], e["rounds"], e["accuracy"], e["bytes_per_agent"],
                         "" if e["bytes_to_target"] is None else e["bytes_to_target"],
                         "" if e["rounds_to_target"] is None else e["rounds_to_target"]])
    return rows


def plot_compression(result: dict, path) -> Path:
    from ...io import plots
    plt = plots.plt
    fig, ax = plt.subplots(figsize=(9, 6))
    markers = dict(zip(result["compressors"], "os^vDPX*<>"))
    names = sorted({n for entries in result["methods"].values() for n in entries})
    colors = {n: plt.cm.tab20(i % 20) for i, n in enumerate(names)}
    for spec, entries in result["methods"].items():
        for name, e in entries.items():
            learned = e["kind"] == "learned"
            ax.scatter(max(e["bytes_per_agent"], 1.0), e["accuracy"], marker=markers[spec], color=colors[name],
                       s=80 if learned else 30, edgecolors="black" if learned else "none",
                       label=name if spec == result["compressors"][0] else None)
    front = result["pareto"]
    ax.step([max(p["bytes_per_agent"], 1.0) for p in front], [p["accuracy"] for p in front], where="post",
            color="gray", linestyle="--", label="Pareto front")
    for spec, marker in markers.items():
        ax.scatter([], [], marker=marker, color="gray", label=f"compressor {spec}")
    ax.set_xscale("log")
    ax.set(xlabel=f"bytes per agent after {result['rounds']} rounds", ylabel="pooled held-out accuracy",
           title=f"Accuracy against bytes at {result['rounds']} rounds, every method under each compressor")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    return plots._save(fig, path)


def describe_compression(result: dict) -> str:
    lines = [f"pooled accuracy at {result['rounds']} rounds and bytes per agent; target {result['target']['accuracy']:.3f} "
             f"({result['target']['method']}, {result['target']['compressor']})"]
    for spec, entries in result["methods"].items():
        best = max((e for e in entries.items() if e[1]["kind"] == "baseline"), key=lambda e: e[1]["accuracy"],
                   default=None)
        learned = [(n, e) for n, e in entries.items() if e["kind"] == "learned"]
        parts = [f"{n} {e['accuracy']:.3f} ({e['bytes_per_agent']:.0f} B)" for n, e in learned]
        if best:
            parts.append(f"best baseline {best[0]} {best[1]['accuracy']:.3f} ({best[1]['bytes_per_agent']:.0f} B)")
        lines.append(f"  {spec:<10} " + "; ".join(parts))
    return "\n".join(lines)
