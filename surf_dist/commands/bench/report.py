"""``bench.json``, ``bench.csv``, ``bench.png`` and the printed table, from the raw results.

bench.json (every number of the report):
- ``draws``: [{report_seed, draw, test_task_indices}]; ``validation_task_indices``;
  ``baselines``: the baseline names; ``rounds_step``: 1 (every round is evaluated).
- ``methods``: per name, ``kind`` (baseline / learned), and per draw the curves
  ``rounds``, ``accuracy`` (pooled held-out), ``local_accuracy``, ``loss`` (means over the
  draw's tasks), ``bytes_per_agent`` and ``grad_evals_per_agent`` (of the configuration chosen
  for ``accuracy``). Baselines: the best start per round (``curves``) and each start alone
  (``by_start``: ``zero`` and ``task``), the chosen configurations per metric as round
  segments (``tuned``), the grids searched and any choice left at a grid's edge.
- ``per_budget`` (two or more learned optimizers, else None): at each budget R the one chosen on
  the validation tasks (``per_budget``), its difference to the strongest baseline and to the limit.
- ``centralized``: per draw, the centralized optimum scored on each metric like the methods.
- ``limit``: the information limit (``limit.py``) per draw at its ``rounds``; learned
  optimizers also carry ``validation``: their mean per layer on the validation tasks (the only
  numbers a choice between them may use), and ``descent`` on the test tasks: layers whose mean
  held-out loss rose, fractions of violated descent constraints.
- ``comparisons``: per learned optimizer and metric, ``ratio``, ``bytes_ratio`` and
  ``budget_gap`` as {per_draw, mean, low, high}, each baseline's ``rounds_to_target`` per
  draw, and the ``strongest`` baseline per draw (``None``: not reached within the rounds run);
  ``every_budget``: per round budget R of 1, 2, 3, 5, 10, 15, 20, its pooled accuracy after R
  rounds minus the strongest baseline's at R (each tuned for R), with its interval;
  ``limit``: per round budget R, the learned optimizer's pooled accuracy after R rounds minus
  the limit at R as {per_draw, mean, low, high}; ``permuted_labels``: its last layer's value
  on the same test tasks with permuted labels and the ``drop`` from the unpermuted value, both
  started at the tasks' W_0 (from W_0 = 0 the drop is zero by symmetry).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ...io.files import all_or_nothing, atomic_write_text, results_json
from .protocol import METRICS, BenchConfig, Comparison, mean_difference, report_task_indices, val_task_indices


def _draw_means(values_t, bench: BenchConfig) -> list:
    """(T_all, ...) per-task values -> per draw the mean over its tasks (lists)."""
    v = np.asarray(values_t).reshape(bench.draws, bench.tasks_per_draw, *np.shape(values_t)[1:])
    return v.mean(axis=1).tolist()


def assemble(raw: dict, bench: BenchConfig) -> dict:
    """The bench.json dict from the job's raw per-task arrays."""
    D, T = bench.draws, bench.tasks_per_draw
    rounds = list(range(bench.rounds + 1))
    methods = {}
    for name, res in raw["baselines"].items():
        def curves_of(entry):
            return [{"rounds": rounds, **{m: _draw_means(entry[m], bench)[d] for m in METRICS},
                     "bytes_per_agent": entry["bytes_accuracy"].tolist(),
                     "grad_evals_per_agent": entry["grad_evals_accuracy"].tolist()} for d in range(D)]
        c = res["curves"]
        methods[name] = {"kind": "baseline", "doc": res["doc"], "curves": curves_of(c["best"]),
                         "by_start": {s: curves_of(c[s]) for s in ("zero", "task") if s in c},
                         "tuned": {s: c[s]["chosen"] for s in ("best", "zero", "task") if s in c},
                         "grids": res["grids"], "grid_extensions": res["extensions"], "at_edge": res["at_edge"],
                         "configurations_tried": res["configurations_tried"]}
    for label, res in raw["learned"].items():
        validation = {m: np.asarray(v).tolist() for m, v in res.get("validation", {}).items()}
        methods[label] = {"kind": "learned", "model": res["model"], "meta_training": res["meta_training"],
                          "validation": validation, "descent": res.get("descent"),
                          "curves": [{"rounds": res["rounds"], **{m: _draw_means(res[m], bench)[d] for m in METRICS},
                                      "bytes_per_agent": res["bytes"], "grad_evals_per_agent": res["grad_evals"]}
                                     for d in range(D)]}
    comparisons = {}
    for label, res in raw["learned"].items():
        comparisons[label] = {}
        for m in METRICS:
            comp = Comparison(
                metric=m, learned_dt=res[m][:, -1].reshape(D, T), learned_rounds=res["rounds"][-1],
                baselines={n: b["curves"]["best"][m].reshape(D, T, -1) for n, b in raw["baselines"].items()},
                bytes={n: np.tile(b["curves"]["best"][f"bytes_{m}"], (D, 1)) for n, b in raw["baselines"].items()},
                learned_bytes=res["bytes"][-1])
            comparisons[label][m] = comp.summary(bench.bootstrap, bench.confidence)
        comparisons[label]["every_budget"] = budget_differences(res, raw["baselines"], bench)
        if raw.get("limit") is not None:
            comparisons[label]["limit"] = limit_distances(res, raw["limit"], bench)
        if "permuted" in res:
            # raw results of a bench before the check started at the tasks' W_0 hold no such key
            same = res.get("unpermuted_from_task_start") or {m: res[m][:, -1] for m in METRICS}
            comparisons[label]["permuted_labels"] = {
                m: {"value": float(np.mean(res["permuted"][m])), "unpermuted": float(np.mean(same[m])),
                    "drop": mean_difference(np.asarray(same[m]).reshape(D, T), res["permuted"][m].reshape(D, T),
                                            bench.bootstrap, bench.confidence)} for m in ("accuracy", "local_accuracy")}
    centralized = {m: _draw_means(raw["centralized"][m], bench) for m in METRICS}
    limit = None
    if raw.get("limit") is not None:
        limit = {"rounds": raw["limit"]["rounds"], "agents_per_task": raw["limit"]["agents"],
                 "accuracy": _draw_means(raw["limit"]["accuracy"], bench),
                 "l2": raw["limit"].get("l2"), "validation": raw["limit"].get("validation")}
    return {"protocol": {**bench.__dict__, "step_grid": list(bench.step_grid),
                         "momentum_grid": list(bench.momentum_grid)},
            "draws": [{"report_seed": bench.report_seed, "draw": d, "test_task_indices": report_task_indices(bench, d)}
                      for d in range(D)],
            "validation_task_indices": val_task_indices(bench),
            "baselines": list(raw["baselines"]), "learned": list(raw["learned"]), "rounds_step": 1,
            "methods": methods, "centralized": centralized, "limit": limit, "comparisons": comparisons,
            "per_budget": (per_budget(raw["learned"], raw["baselines"], raw.get("limit"), bench)
                           if len(raw["learned"]) > 1 else None)}


EVERY_BUDGET = (1, 2, 3, 5, 10, 15, 20)    # the round budgets of the "every budget" comparison


def budget_differences(learned: dict, baselines: dict, bench: BenchConfig) -> dict:
    """{R: {learned, best_baseline, which, difference}} at every R of ``EVERY_BUDGET`` that is one
    of the learned optimizer's round counts: its pooled accuracy after R rounds minus that of the
    baseline whose mean over the test draw is highest at R (each baseline already tuned for R on
    validation tasks; taking the strongest on the draw itself can only favour the baselines),
    as a mean over draws with a bootstrap interval over test tasks within draws."""
    D, T = bench.draws, bench.tasks_per_draw
    out = {}
    for R in EVERY_BUDGET:
        if R not in learned["rounds"] or R > bench.rounds:
            continue
        mine = learned["accuracy"][:, learned["rounds"].index(R)].reshape(D, T)
        per = {n: np.asarray(b["curves"]["best"]["accuracy"])[:, R].reshape(D, T) for n, b in baselines.items()}
        which = [max(per, key=lambda n: per[n][d].mean()) for d in range(D)]
        best = np.stack([per[which[d]][d] for d in range(D)])
        out[str(R)] = {"learned": float(mine.mean()), "best_baseline": float(best.mean()), "which": which,
                       "difference": mean_difference(mine, best, bench.bootstrap, bench.confidence)}
    return out


def per_budget(learned: dict, baselines: dict, limit: dict | None, bench: BenchConfig) -> dict:
    """The learned optimizers chosen per round budget as the baselines are: at each R of
    ``EVERY_BUDGET``, among the learned optimizers that run at least R rounds, the one whose mean
    pooled accuracy after R rounds on the validation tasks is highest (no test task is read to
    choose), and its difference to the strongest baseline at R (``budget_differences``) and to
    the limit at R, with the gradient evaluations per agent each spent in R rounds. {R: {chosen,
    validation, learned, best_baseline, which, difference, grad_evals[, limit, distance]}}."""
    out = {}
    for R in EVERY_BUDGET:
        on_val = {label: float(np.asarray(res["validation"]["accuracy"])[res["rounds"].index(R)])
                  for label, res in learned.items() if R in res["rounds"] and "validation" in res}
        if not on_val or R > bench.rounds:
            continue
        chosen = max(on_val, key=on_val.get)
        res = learned[chosen]
        at_R = {"rounds": [R], "accuracy": res["accuracy"][:, [res["rounds"].index(R)]]}
        entry = {"chosen": chosen, "validation": on_val, **budget_differences(at_R, baselines, bench)[str(R)]}
        entry["grad_evals"] = {"learned": res["grad_evals"][res["rounds"].index(R)],     # per agent, R rounds
                               "strongest": [float(np.asarray(baselines[n]["curves"]["best"]["grad_evals_accuracy"])[R])
                                             for n in entry["which"]]}
        if limit is not None and R in limit["rounds"]:
            entry.update(limit_distances(at_R, limit, bench)[str(R)])
        out[str(R)] = entry
    return out


def limit_distances(learned: dict, limit: dict, bench: BenchConfig) -> dict:
    """{R: {learned, limit, distance}} at every budget R of the limit that is one of the learned
    optimizer's round counts: its pooled accuracy after R rounds minus the limit at R (mean over
    draws, bootstrap interval over test tasks within draws; negative: below the limit)."""
    D, T = bench.draws, bench.tasks_per_draw
    out = {}
    for j, R in enumerate(limit["rounds"]):
        if R not in learned["rounds"]:
            continue
        mine = learned["accuracy"][:, learned["rounds"].index(R)].reshape(D, T)
        bound = np.asarray(limit["accuracy"])[:, j].reshape(D, T)
        out[str(R)] = {"learned": float(mine.mean()), "limit": float(bound.mean()),
                       "distance": mean_difference(mine, bound, bench.bootstrap, bench.confidence)}
    return out


# --------------------------------------------------------------------------- files

def write_bench(out: Path, report: dict) -> list[Path]:
    text = results_json(report, "bench.json", indent=1)      # diverged: nothing written
    out.mkdir(parents=True, exist_ok=True)
    with all_or_nothing(out):              # a failed write leaves none of them
        atomic_write_text(out / "bench.json", text)
        rows = [["method", "draw", "round", "accuracy", "local_accuracy", "loss", "bytes_per_agent", "grad_evals_per_agent"]]
        for name, entry in report["methods"].items():
            for d, c in enumerate(entry["curves"]):
                rows += [[name, d, r, *(c[k][i] for k in ("accuracy", "local_accuracy", "loss", "bytes_per_agent",
                                                         "grad_evals_per_agent"))] for i, r in enumerate(c["rounds"])]
        with open(out / "bench.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        return [out / "bench.json", out / "bench.csv", plot_bench(report, out / "bench.png")]


HEADLINE_BUDGETS = (5, 10, 20)      # the round budgets whose distance to the limit the table prints


def _interval(s: dict, scale: float = 1.0, unit: str = "") -> str:
    f = lambda v: "n.r." if v is None else f"{v * scale:.2f}{unit}"     # n.r.: not reached in the rounds run
    return f"{f(s['mean'])} [{f(s['low'])}, {f(s['high'])}]"


def table(report: dict) -> str:
    """Every method at the learned optimizers' round count, and the two headline numbers."""
    learned = report["learned"]
    budgets = sorted({report["methods"][n]["curves"][0]["rounds"][-1] for n in learned}) or [20]
    lines = [f"pooled accuracy / local accuracy / held-out loss, mean over {len(report['draws'])} draws "
             f"of {len(report['draws'][0]['test_task_indices'])} test tasks"]
    task = (report.get("config") or {}).get("task")
    if task:
        held = task["samples_held"] * task["num_agents"]
        lines.append(f"held-out samples per test task: {held} (pooled accuracy scored on "
                     f"{min(held, report['protocol']['pool_cap'])} of them; local accuracy on each agent's "
                     f"{task['samples_held']}); a difference of one sample is "
                     f"{100 / min(held, report['protocol']['pool_cap']):.2f} pts of pooled accuracy per task")
    header = f"{'method':<22}" + "".join(f"{'@' + str(b) + ' rounds':>24}" for b in budgets) + f"{'@' + str(report['protocol']['rounds']):>24}"
    lines.append(header)
    for name, entry in report["methods"].items():
        cells = []
        for b in [*budgets, report["protocol"]["rounds"]]:
            c0 = entry["curves"][0]
            if b not in c0["rounds"]:
                cells.append(f"{'-':>24}")
                continue
            i = c0["rounds"].index(b)
            vals = [np.mean([c[m][i] for c in entry["curves"]]) for m in METRICS]
            cells.append(f"{vals[0]:>8.3f}{vals[1]:>8.3f}{vals[2]:>8.3f}")
        lines.append(f"{name:<22}" + "".join(cells))
    cen = report["centralized"]
    lines.append(f"{'centralized optimum':<22}{np.mean(cen['accuracy']):>8.3f}{np.mean(cen['local_accuracy']):>8.3f}"
                 f"{np.mean(cen['loss']):>8.3f}")
    limit = report.get("limit")
    if limit:
        means = np.mean(limit["accuracy"], axis=0)
        lines.append("information limit (pooled accuracy of each agent's R-hop ball optimum, "
                     f"{len(limit['agents_per_task'])} agents a task): "
                     + ", ".join(f"R={r} {v:.3f}" for r, v in zip(limit["rounds"], means)))
    for label, per_metric in report["comparisons"].items():
        meta = report["methods"][label].get("meta_training") or {}
        wall = meta.get("wall_seconds")
        cost = (f"meta-training {meta.get('meta_steps')} steps, " + (f"{wall:,.0f} s" if wall else "wall time not recorded")
                + f", {meta.get('device') or 'device not recorded'}") if meta else ""
        descent = report["methods"][label].get("descent")
        if descent:
            cost += (f"; on the test tasks the mean held-out loss rose at {descent['rose_layers_mean']} layer(s), "
                     f"{descent['violated_fraction_task_layers']:.0%} of task-layers violate its descent constraint")
        lines.append(f"\n{label} ({cost}): ratio = best baseline's rounds to its final value / its rounds; "
                     f"gap = its value - best baseline's at its rounds; [95% bootstrap over test tasks]; "
                     f"n.r.: no baseline reaches it within {report['protocol']['rounds']} rounds")
        if "permuted_labels" in per_metric:
            drop = per_metric["permuted_labels"]["accuracy"]["drop"]
            lines.append(f"  permuted labels (same test tasks, both from the tasks' W_0): pooled accuracy "
                         f"{per_metric['permuted_labels']['accuracy']['unpermuted']:.3f} -> "
                         f"{per_metric['permuted_labels']['accuracy']['value']:.3f}, drop {_interval(drop, 100.0)} pts")
        if per_metric.get("every_budget"):
            lines.append("  pooled accuracy - the strongest baseline's after R rounds (pts): " + "; ".join(
                f"R={r} {_interval(d['difference'], 100.0)}" for r, d in per_metric["every_budget"].items()))
        if "limit" in per_metric:
            last = max(int(r) for r in per_metric["limit"])
            shown = {r: d for r, d in per_metric["limit"].items() if int(r) in (*HEADLINE_BUDGETS, last)}
            lines.append("  pooled accuracy - information limit after R rounds (pts): " + "; ".join(
                f"R={r} {_interval(d['distance'], 100.0)}" for r, d in shown.items()))
        for m in METRICS:
            s = per_metric[m]
            strongest = ", ".join(str(x) for x in s["strongest"])
            gap_scale, unit = (100.0, " pts") if m != "loss" else (1.0, "")
            lines.append(f"  {m:<15} ratio {_interval(s['ratio'], unit='x'):<26} bytes ratio "
                         f"{_interval(s['bytes_ratio'], unit='x') if 'bytes_ratio' in s else '-':<26} "
                         f"gap {_interval(s['budget_gap'], gap_scale, unit):<28} strongest per draw: {strongest}")
    if report.get("per_budget"):
        lines.append("\nthe learned optimizers chosen per round budget on the validation tasks (as each baseline is): "
                     "pooled accuracy after R rounds, - the strongest baseline's (pts), - the limit (pts)")
        lines += [f"  R={r:<3} {d['chosen']:<36} {d['learned']:.3f}  {_interval(d['difference'], 100.0):<24}"
                  + (f"  {_interval(d['distance'], 100.0):<24}" if "distance" in d else "")
                  + f"  gradient evaluations per agent {d['grad_evals']['learned']:g} vs "
                  + "/".join(f"{g:g}" for g in d["grad_evals"]["strongest"])
                  for r, d in report["per_budget"].items()]
    return "\n".join(lines)


LEARNED_COLORS = ("black", "crimson", "darkorange", "darkviolet", "saddlebrown", "teal")   # apart from tab20's


def plot_bench(report: dict, path: Path) -> Path:
    from ...io import plots
    plt = plots.plt
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    cmap = plt.get_cmap("tab20")
    for i, (name, entry) in enumerate(report["methods"].items()):
        learned = entry["kind"] == "learned"
        color = (LEARNED_COLORS[(i - len(report["baselines"])) % len(LEARNED_COLORS)] if learned
                 else cmap(i % 20))
        for ax, metric in zip(axes, METRICS):
            per_draw = np.array([c[metric] for c in entry["curves"]])
            x = np.array(entry["curves"][0]["rounds"])
            mean = per_draw.mean(0)
            kw = dict(color=color, label=name, linewidth=2.4 if learned else 1.1, marker="o" if learned else None,
                      markersize=3)
            ax.plot(np.maximum(x, 0.8), mean, **kw)
            if per_draw.shape[0] > 1:
                ax.fill_between(np.maximum(x, 0.8), per_draw.min(0), per_draw.max(0), color=color, alpha=0.12)
    limit = report.get("limit")
    if limit:
        axes[0].plot(limit["rounds"], np.mean(limit["accuracy"], axis=0), color="black", linestyle=":", marker="s",
                     markersize=4, linewidth=1.6, label="information limit (R-hop ball optimum)")
    for ax, metric in zip(axes, METRICS):
        value = float(np.mean(report["centralized"][metric]))
        ax.axhline(value, color="gray", linestyle="--", linewidth=1, label="centralized optimum")
        ax.set_xscale("log")
        ax.set(xlabel="communication rounds (log)", ylabel=metric.replace("_", " "),
               title={"accuracy": "Pooled held-out accuracy", "local_accuracy": "Local held-out accuracy",
                      "loss": "Held-out loss"}[metric] + " (band: range over draws)")
        ax.grid(True, alpha=0.3)
        if metric != "loss":
            lo = min(value - 0.25, 0.6)
            ax.set_ylim(max(0.0, lo), 1.0)
        else:
            ax.set_yscale("log")
    axes[0].legend(fontsize=7, loc="lower right", ncol=2)
    fig.suptitle("surf-dist bench: every baseline tuned per round budget on validation tasks; test draws")
    fig.tight_layout()
    return plots._save(fig, path)
