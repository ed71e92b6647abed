"""``surf-dist experiment link-failures``: accuracy against the link-failure probability, on the
bench's protocol.

For every probability p (``--link-failure-probs``, default 0, 0.1, 0.3, 0.5: each edge fails
independently in each round, the surviving graph mixes with Metropolis weights) one bench runs
(``bench.bench_job``): every baseline tuned per round budget on validation tasks under that p,
the learned optimizers (``--runs``, default ``pretrained``) as they are, all on the same fresh
test draws (``--report-seed``, 3 draws of ``test_tasks``). Per method and p the result holds, at
R = the learned optimizers' rounds: the pooled accuracy (mean over draws, and per draw) and the
bytes per agent (failed links send nothing). Each learned optimizer also gets its paired
difference to itself at the first p (per task, with a bootstrap interval). The figure: accuracy
at R against p, one line per method (the learned ones thick).
"""
from __future__ import annotations

import math
from pathlib import Path

from .sweep import bench_per_value, budget, learned_versus, protocol_of, row_at

DEFAULT_PROBS = (0.0, 0.1, 0.3, 0.5)


def check_probs(probs) -> list[float]:
    """The probabilities, each in [0, 1), none twice (ValueError naming the bad one)."""
    probs = [float(p) for p in probs]
    for p in probs:
        if not (math.isfinite(p) and 0 <= p < 1):
            raise ValueError(f"--link-failure-probs: {p:g} is not a probability in [0, 1) (1 would fail every link); "
                             "pass values such as 0,0.1,0.3,0.5")
    twice = sorted({p for p in probs if probs.count(p) > 1})
    if twice:
        raise ValueError(f"--link-failure-probs: {', '.join(f'{p:g}' for p in twice)} given twice; name each once")
    if not probs:
        raise ValueError("--link-failure-probs: no probability given; pass values such as 0,0.1,0.3,0.5")
    return probs


def link_failure_experiment(cfg, worker, runs: list[str], probs: list[float], methods: list[str],
                            report_seed: int, progress: bool, say) -> dict | None:
    """Every worker runs this; rank 0 returns the numbers (module doc)."""
    out = bench_per_value(cfg, worker, runs, methods, report_seed, progress, say, "link_failure", probs,
                          lambda p: f"link failures p = {p:g}")
    return None if out is None else summarize(*out, probs)


def summarize(labelled, bench, reports: dict, raws: dict, probs: list[float]) -> dict:
    """The numbers of the module doc from each probability's bench report."""
    learned = [label for label, _ in labelled]
    R = budget(reports[probs[0]], learned)
    table = {str(p): {name: row_at(m, R)[0] for name, m in reports[p]["methods"].items()} for p in probs}
    return {"link_failure_probs": list(probs), "rounds": R, "methods": table,
            "learned_versus_first_p": learned_versus(raws, probs, probs[0], learned, bench),
            "protocol": protocol_of(bench)}


def link_failure_rows(result: dict) -> list[list]:
    rows = [["link_failure", "method", "kind", "rounds", "accuracy", "bytes_per_agent"]]
    for p, entries in result["methods"].items():
        for name, e in entries.items():
            rows.append([p, name, e["kind"], e["rounds"], e["accuracy"], e["bytes_per_agent"]])
    return rows


def plot_link_failures(result: dict, path) -> Path:
    from ...io import plots
    plt = plots.plt
    fig, ax = plt.subplots(figsize=(9, 6))
    probs = result["link_failure_probs"]
    names = sorted({n for entries in result["methods"].values() for n in entries})
    for i, name in enumerate(names):
        points = [(p, result["methods"][str(p)][name]) for p in probs if name in result["methods"][str(p)]]
        learned = points[0][1]["kind"] == "learned"
        ax.plot([p for p, _ in points], [e["accuracy"] for _, e in points], marker="o",
                color=plt.cm.tab20(i % 20), linewidth=3 if learned else 1, label=name)
    ax.set(xlabel="link-failure probability p (per edge and round)", ylabel="pooled held-out accuracy",
           title=f"Accuracy after {result['rounds']} rounds against link failures")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower left", ncol=2)
    fig.tight_layout()
    return plots._save(fig, path)


def describe_link_failures(result: dict) -> str:
    lines = [f"pooled accuracy at {result['rounds']} rounds against the link-failure probability"]
    for p, entries in result["methods"].items():
        best = max((e for e in entries.items() if e[1]["kind"] == "baseline"), key=lambda e: e[1]["accuracy"],
                   default=None)
        parts = [f"{n} {e['accuracy']:.3f}" for n, e in entries.items() if e["kind"] == "learned"]
        if best:
            parts.append(f"best baseline {best[0]} {best[1]['accuracy']:.3f}")
        lines.append(f"  p = {p:<5} " + "; ".join(parts))
    return "\n".join(lines)
