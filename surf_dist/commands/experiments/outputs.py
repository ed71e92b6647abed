"""The files of an experiment: ``NAME.json`` (the numbers and the config), ``NAME.csv`` (a flat
table, one function per experiment) and ``NAME.png``; and the lines printed on the terminal."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ...io.config import RunConfig
from ...io.files import all_or_nothing, atomic_open, atomic_write_text, results_json
from ..results import CURVE_KEYS, table
from .figures import plot_async_figure, plot_communication, plot_eps, plot_layers, plot_transfer


def write_outputs(out: Path, name: str, result: dict, cfg: RunConfig) -> list[Path]:
    """``NAME.json`` (numbers + config), ``NAME.csv`` (a flat table) and ``NAME.png``."""
    out.mkdir(parents=True, exist_ok=True)
    from .compression import compression_rows, plot_compression
    from .link_failures import link_failure_rows, plot_link_failures
    writers = {"layers": (layers_rows, plot_layers), "eps": (eps_rows, plot_eps), "async": (async_rows, plot_async_figure),
               "communication": (communication_rows, plot_communication), "transfer": (transfer_rows, plot_transfer),
               "compression": (compression_rows, plot_compression),
               "link-failures": (link_failure_rows, plot_link_failures)}
    rows_of, plot = writers[name]
    text = results_json({"config": cfg.to_dict(), **result}, f"{name}.json", indent=1, default=_jsonable)
    with all_or_nothing(out):              # a failed write leaves none of them
        atomic_write_text(out / f"{name}.json", text)
        with atomic_open(out / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows_of(result))
        written = [out / f"{name}.json", out / f"{name}.csv", plot(result, out / f"{name}.png")]
    print(describe(name, result))
    return written


def _jsonable(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.bool_):
        return bool(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def layers_rows(result: dict) -> list[list]:
    cols = ["loss", "accuracy", "local_accuracy"]
    rows = [["model", "layer", *cols, "g_mean", "violated_mean", "violated_tasks", "violated_agents",
             "held_loss_mean", "rose_mean", "rose_tasks", "rose_agents"]]
    for name, entry in result["models"].items():
        c, s = entry["curve"], entry["descent"]
        for l in range(len(c["loss"])):
            rows.append([name, l, *(c[k][l] for k in cols), s["g_mean"][l], *_step(s, l, "violated"),
                         s["held_loss_mean"][l], *_step(s, l, "rose")])
    return rows


def _step(stats: dict, layer: int, tag: str) -> list:
    """The step from layer - 1 to ``layer``: (mean test, fraction of tasks, fraction of agents);
    blanks for layer 0."""
    return [""] * 3 if layer == 0 else [stats[f"{tag}_{k}"][layer - 1] for k in ("mean", "tasks", "agents")]


def eps_rows(result: dict) -> list[list]:
    rows = [["model", "eps", "layer", "rounds", "loss", "accuracy", "local_accuracy", "violated_mean",
             "violated_tasks", "violated_agents"]]
    for name, entry in result["models"].items():
        c, s = entry["curve"], entry["descent"]
        for l in range(len(c["loss"])):
            rows.append([name, entry["eps"], l, c["rounds"][l], c["loss"][l], c["accuracy"][l],
                         c["local_accuracy"][l], *_step(s, l, "violated")])
    return rows


def async_rows(result: dict) -> list[list]:
    keys = ["mean", "std", "sem", "min", "p10", "median", "p90", "max", "drop_vs_first_level", "draws"]
    rows = [["model", "n_async", *keys]]
    for name, stats in result["stats"].items():
        rows += [[name, level, *(s[k] for k in keys)] for level, s in zip(result["n_async"], stats)]
    for level, p in zip(result["n_async"], result.get("paired_surf_minus_unrolled", [])):
        rows.append(["surf_minus_unrolled", level, p["mean"], p["std"], p["sem"], "", "", "", "", "", "", ""])
    return rows


def communication_rows(result: dict) -> list[list]:
    rows = [["method", *CURVE_KEYS]]
    for name, curve in result["summary"]["methods"].items():
        rows += [[name, *(curve[k][i] for k in CURVE_KEYS)] for i in range(len(curve["rounds"]))]
    return rows


def transfer_rows(result: dict) -> list[list]:
    rows = [["topology", "num_agents", "method", "rounds_at_budget", "local_accuracy_at_budget",
             "accuracy_at_budget", "loss_at_budget", "final_rounds", "final_local_accuracy",
             "rounds_to_match_surf", "held_loss_rises"]]
    for s in result["settings"]:
        for name, m in s["key"]["methods"].items():
            b, f = m["at_budget"], m["final"]
            rows.append([s["topology"], s["num_agents"], name, b["rounds"], b["local_accuracy"], b["accuracy"],
                         b["loss"], f["rounds"], f["local_accuracy"], m["rounds_to_target"], m.get("held_loss_rises", "")])
    return rows


def describe(name: str, result: dict) -> str:
    """A few lines for the terminal."""
    lines = []
    if name in ("layers", "eps"):
        for model, e in result["models"].items():
            t, c = e["totals"], e["curve"]
            lines.append(f"{model:<16} final loss {c['loss'][-1]:.3f} local_acc {c['local_accuracy'][-1]:.3f}; "
                         f"layers violating (mean) {t['violated_layers_mean']}, rising {t['rose_layers_mean']}; "
                         f"violated task-layers {t['violated_fraction_task_layers']:.2f}, "
                         f"agent-layers {t['violated_fraction_agent_layers']:.2f}"
                         + (f"; rounds to {result['target']:.3f}: {e['rounds_to_target']}" if name == "eps" else ""))
    elif name == "async":
        lines.append(f"final local_accuracy mean (std) per n_async {result['n_async']}")
        for model, stats in result["stats"].items():
            lines.append(f"  {model:<10} " + " ".join(f"{s['mean']:.3f} ({s['std']:.3f})" for s in stats))
        if "paired_surf_minus_unrolled" in result:
            lines.append("  surf - unrolled (paired) " + " ".join(
                f"{p['mean']:+.4f}" for p in result["paired_surf_minus_unrolled"]))
    elif name == "communication":
        lines.append(table(result["summary"]))
    elif name == "compression":
        from .compression import describe_compression
        lines.append(describe_compression(result))
    elif name == "link-failures":
        from .link_failures import describe_link_failures
        lines.append(describe_link_failures(result))
    else:
        for s in result["settings"]:
            m = s["key"]["methods"]
            lines.append(f"{s['label']:<24} " + " ".join(
                f"{k} {v['at_budget']['local_accuracy']:.3f}" for k, v in m.items())
                + f"; dgd rounds to match surf: {m['dgd']['rounds_to_target']}")
    return "\n".join(lines)
