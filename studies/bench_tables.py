"""Markdown tables of a ``surf-dist bench`` report (its bench.json) for docs/RESULTS.md and the README; printed, no result file.

    python studies/bench_tables.py runs/bench_digits/bench.json

Prints (1) per learned optimizer and metric: the rounds ratio, the bytes ratio and the
fixed-budget gap with their intervals and the strongest baseline per draw; (2) every method
at the learned optimizers' round count and at the last round, mean over draws; (3) the
information limit and each learned optimizer's distance to it; (4) each baseline's rounds to
reach the first learned optimizer's final pooled accuracy, per draw; (5) one row per learned
optimizer, the issue-17 table: distance to the limit at 5 / 10 / 20 rounds, pooled ratio and
gap against the strongest baseline, permuted labels, descent, its validation pooled accuracy
at 5 / 10 / 20 rounds (what a choice may use) and its meta-training cost.
Every number is read from the report; nothing is recomputed.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from surf_dist.problem.softmax import METRICS


def fmt(v, scale=1.0, unit=""):
    return "n.r." if v is None else f"{v * scale:.2f}{unit}"


def interval(s, scale=1.0, unit=""):
    return f"{fmt(s['mean'], scale, unit)} [{fmt(s['low'], scale, unit)}, {fmt(s['high'], scale, unit)}]"


def main(path: str) -> None:
    r = json.loads(open(path).read())
    rounds = r["protocol"]["rounds"]
    print(f"draws: {[d['test_task_indices'][0] for d in r['draws']]}... (report seed {r['draws'][0]['report_seed']}), "
          f"wall {r.get('wall_seconds', 0):,.0f} s, command `{r.get('command')}`\n")
    print("| learned optimizer | metric | rounds ratio | bytes ratio | fixed-budget gap | per draw (ratio; gap) | strongest baseline per draw |")
    print("|---|---|---:|---:|---:|---|---|")
    for label, per_metric in r["comparisons"].items():
        for m in METRICS:
            s = per_metric[m]
            scale, unit = (100.0, " pts") if m != "loss" else (1.0, "")
            per = "; ".join(f"{fmt(a, unit='x')} / {fmt(g, scale)}" for a, g in
                            zip(s["ratio"]["per_draw"], s["budget_gap"]["per_draw"]))
            print(f"| `{label}` | {m} | {interval(s['ratio'], unit='x')} | "
                  f"{interval(s['bytes_ratio'], unit='x') if 'bytes_ratio' in s else '-'} | "
                  f"{interval(s['budget_gap'], scale, unit)} | {per} | {', '.join(str(x) for x in s['strongest'])} |")
    budget = min(r["methods"][n]["curves"][0]["rounds"][-1] for n in r["learned"])
    print(f"\n| method | pooled @{budget} | local @{budget} | loss @{budget} | pooled @{rounds} | local @{rounds} | "
          f"loss @{rounds} | grad evals / round |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, e in r["methods"].items():
        c0 = e["curves"][0]
        cells = []
        for b in (budget, rounds):
            if b in c0["rounds"]:
                i = c0["rounds"].index(b)
                cells += [f"{np.mean([c[m][i] for c in e['curves']]):.3f}" for m in METRICS]
            else:
                cells += ["-"] * 3
        i = c0["rounds"].index(budget) if budget in c0["rounds"] else -1
        evals = c0["grad_evals_per_agent"][i] / max(c0["rounds"][i], 1)
        print(f"| {name} | " + " | ".join(cells) + f" | {evals:.1f} |")
    cen = r["centralized"]
    print(f"| centralized optimum | {np.mean(cen['accuracy']):.3f} | {np.mean(cen['local_accuracy']):.3f} | "
          f"{np.mean(cen['loss']):.3f} | | | | |")
    limit = r.get("limit")
    if limit:
        means = np.mean(limit["accuracy"], axis=0)
        budgets = [b for b in limit["rounds"] if b in (1, 2, 3, 5, 10, 15, 20) or b == limit["rounds"][-1]]
        print(f"\ninformation limit (R-hop ball optimum, {len(limit['agents_per_task'])} agents a test task) and each "
              "learned optimizer's pooled accuracy minus it after R rounds, points [95% interval]:\n")
        print("| | " + " | ".join(f"R = {b}" for b in budgets) + " |")
        print("|---|" + "---:|" * len(budgets))
        print("| limit | " + " | ".join(f"{means[limit['rounds'].index(b)]:.3f}" for b in budgets) + " |")
        best = []                        # the best baseline at each budget, each with its own choice there
        for b in budgets:
            at = {n: np.mean([c["accuracy"][b] for c in r["methods"][n]["curves"]]) for n in r["baselines"]}
            name = max(at, key=at.get)
            best.append(f"{at[name]:.3f} ({name})")
        print("| best tuned baseline at R | " + " | ".join(best) + " |")
        for label in r["learned"]:
            curves = r["methods"][label]["curves"]
            rounds = curves[0]["rounds"]
            print(f"| `{label}`, pooled accuracy | " + " | ".join(
                f"{np.mean([c['accuracy'][rounds.index(b)] for c in curves]):.3f}" if b in rounds else "-"
                for b in budgets) + " |")
        for label in r["learned"]:
            dist = r["comparisons"][label].get("limit", {})
            print(f"| `{label}` | " + " | ".join(interval(dist[str(b)]["distance"], 100.0) if str(b) in dist else "-"
                                                for b in budgets) + " |")
    first = r["learned"][0]
    s = r["comparisons"][first]["accuracy"]
    print(f"\nrounds to reach `{first}`'s final pooled accuracy {['%.4f' % t for t in s['target']]} per draw:\n")
    print("| baseline | " + " | ".join(f"draw {d}" for d in range(len(s["target"]))) + " |")
    print("|---|" + "---:|" * len(s["target"]))
    for name, need in sorted(s["rounds_to_target"].items(), key=lambda kv: np.mean([x or 1e9 for x in kv[1]])):
        print(f"| {name} | " + " | ".join("n.r." if x is None else f"{x:.0f}" for x in need) + " |")


def variants(r: dict) -> None:
    print("\n| learned optimizer | pooled - limit @5 | @10 | @20 | pooled ratio | pooled gap | permuted labels: drop "
          "| loss rises / violated task-layers | validation pooled @5 / @10 / @20 | meta-training |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label in r["learned"]:
        comp, method = r["comparisons"][label], r["methods"][label]
        dist = comp.get("limit", {})
        cells = [interval(dist[b]["distance"], 100.0) if b in dist else "-" for b in ("5", "10", "20")]
        s = comp["accuracy"]
        perm = comp.get("permuted_labels", {}).get("accuracy")
        descent = method.get("descent")
        val = method.get("validation", {}).get("accuracy")
        rounds = method["curves"][0]["rounds"]
        val_cells = " / ".join(f"{val[rounds.index(b)]:.3f}" if val and b in rounds else "-" for b in (5, 10, 20))
        meta = method.get("meta_training") or {}
        wall = meta.get("wall_seconds")
        print(f"| `{label}` | " + " | ".join(cells) + f" | {interval(s['ratio'], unit='x')} | "
              f"{interval(s['budget_gap'], 100.0)} | {interval(perm['drop'], 100.0) if perm else '-'} | "
              f"{(str(descent['rose_layers_mean']) + ' / ' + format(descent['violated_fraction_task_layers'], '.0%')) if descent else '-'} | "
              f"{val_cells} | {meta.get('meta_steps')} steps, {format(wall, ',.0f') + ' s' if wall else '?'}, "
              f"{meta.get('device') or '?'} |")


if __name__ == "__main__":
    main(sys.argv[1])
    variants(json.loads(open(sys.argv[1]).read()))
