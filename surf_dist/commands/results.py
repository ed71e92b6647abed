"""Results as files: summary.json, results.csv, PNG plots, and a short table for the terminal."""
from __future__ import annotations

import csv
from pathlib import Path

from ..io.files import all_or_nothing, atomic_open, atomic_write_text, results_json
from .jobs import final_row, mean_std, rounds_to_reach
from ..io.plots import write_all

CURVE_KEYS = ("rounds", "bytes_per_agent", "loss", "accuracy", "local_accuracy")


def write_results(out: Path, summary: dict, config: dict) -> list[Path]:
    text = results_json({"config": config, **summary}, "summary.json", indent=1)   # diverged: nothing written
    out.mkdir(parents=True, exist_ok=True)
    with all_or_nothing(out):              # a failed write leaves none of them
        atomic_write_text(out / "summary.json", text)
        rows = [["method", *CURVE_KEYS]]
        for name, curve in summary["methods"].items():
            rows += [[name, *(curve[k][i] for k in CURVE_KEYS)] for i in range(len(curve["rounds"]))]
        with atomic_open(out / "results.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        return [out / "summary.json", out / "results.csv", *write_all(summary, out)]


def table(summary: dict) -> str:
    """Final local accuracy of every method, and the rounds each baseline needs to match SURF."""
    methods = summary["methods"]
    lines = [f"{'method':<18} {'rounds':>6} {'MB/agent':>9} {'loss':>7} {'acc':>6} {'local_acc':>9}"]
    for name, curve in methods.items():
        row = final_row(curve)
        lines.append(f"{name:<18} {row['rounds']:>6} {row['bytes_per_agent'] / 1e6:>9.3f} {row['loss']:>7.3f} "
                     f"{row['accuracy']:>6.3f} {row['local_accuracy']:>9.3f}")
    if "centralized" in summary:
        c = summary["centralized"]
        lines.append(f"{'centralized':<18} {'':>6} {'':>9} {c['loss']:>7.3f} {c['accuracy']:>6.3f}")
    if "surf" in methods:
        target = final_row(methods["surf"])
        lines.append(f"\nrounds to reach SURF's local_accuracy {target['local_accuracy']:.3f} "
                     f"(SURF: {target['rounds']}):")
        for name, curve in methods.items():
            if name not in ("surf", "unrolled"):
                need = rounds_to_reach(curve, target["local_accuracy"])
                if need == float("inf"):   # not reached within the baseline's horizon
                    horizon = curve["rounds"][-1]
                    lines.append(f"  {name:<18} {'>' + str(horizon):>6} (>{horizon / target['rounds']:.0f}x)")
                    continue
                ratio = need / target["rounds"] if target["rounds"] else float("inf")
                lines.append(f"  {name:<18} {need:>6} ({ratio:.1f}x)")
    if summary.get("permuted_labels"):
        lines.append("\npermuted-label test tasks, final local_accuracy: "
                     + ", ".join(f"{k} {v:.3f}" for k, v in summary["permuted_labels"].items()))
    if summary.get("async"):
        sweep = summary["async"]
        lines.append("\nasync sweep, final local_accuracy mean (std) per n_async " + str(sweep["n_async"]))
        for name, levels in sweep.items():
            if name != "n_async":
                cells = " ".join("%.3f (%.3f)" % mean_std(v) for v in levels)
                lines.append(f"  {name:<10} {cells}")
    return "\n".join(lines)
