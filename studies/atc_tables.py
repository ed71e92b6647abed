"""The tables of docs/RESULTS.md "Adapt then combine" from bench.json files (result: the tables, printed).

    python studies/atc_tables.py docs/results/bench_atc_digits.json [...]

Per learned optimizer: pooled accuracy after R = 1, 2, 3, 5, 10, 20 rounds with its difference to
the strongest baseline at R (points, 95% bootstrap over test tasks), the rounds ratio and the
20-round gap, and the distance to the information limit at R = 5 / 10 / 20 (points).
"""
from __future__ import annotations

import json
import sys

import numpy as np

BUDGETS = ("1", "2", "3", "5", "10", "20")


def fmt(v) -> str:
    return "n.r." if v is None else f"{v:.2f}"


def table(path: str) -> str:
    r = json.loads(open(path).read())
    lines = ["| model | " + " | ".join(f"R = {b}" for b in BUDGETS) + " | ratio | gap at 20 (pts) | - limit at 5 / 10 / 20 (pts) |",
             "|---|" + "---:|" * (len(BUDGETS) + 3)]
    for label, c in r["comparisons"].items():
        eb, lim = c["every_budget"], c.get("limit", {})
        cells = [f"{eb[k]['learned']:.3f} ({100 * eb[k]['difference']['mean']:+.1f} [{100 * eb[k]['difference']['low']:+.1f}, "
                 f"{100 * eb[k]['difference']['high']:+.1f}])" if k in eb else "-" for k in BUDGETS]
        ratio, gap = c["accuracy"]["ratio"], c["accuracy"]["budget_gap"]
        lines.append(f"| `{label}` | " + " | ".join(cells) + f" | {fmt(ratio['mean'])}x [{fmt(ratio['low'])}, {fmt(ratio['high'])}]"
                     f" | {100 * gap['mean']:+.2f} [{100 * gap['low']:+.2f}, {100 * gap['high']:+.2f}] | "
                     + " / ".join(f"{100 * lim[k]['distance']['mean']:+.1f}" for k in ("5", "10", "20") if k in lim) + " |")
    eb = next(iter(r["comparisons"].values()))["every_budget"]
    lines.append("| strongest baseline | " + " | ".join(f"{eb[k]['best_baseline']:.3f} ({eb[k]['which'][0]})" for k in BUDGETS
                                                    if k in eb) + " | | | |")
    if r.get("per_budget"):     # the learned optimizers chosen per budget on validation tasks
        pb = r["per_budget"]
        lines.append("| **chosen per budget on validation** | " + " | ".join(
            f"{pb[k]['learned']:.3f} ({100 * pb[k]['difference']['mean']:+.1f} [{100 * pb[k]['difference']['low']:+.1f}, "
            f"{100 * pb[k]['difference']['high']:+.1f}]) `{pb[k]['chosen']}`" for k in BUDGETS if k in pb) + " | | | "
            + " / ".join(f"{100 * pb[k]['distance']['mean']:+.1f}" for k in ("5", "10", "20") if "distance" in pb.get(k, {}))
            + " |")
        lines.append("| gradient evaluations per agent: chosen / strongest | " + " | ".join(
            f"{pb[k]['grad_evals']['learned']:g} / {max(pb[k]['grad_evals']['strongest']):g}" for k in BUDGETS if k in pb)
            + " | | | |")
    if r.get("limit"):
        m = dict(zip(r["limit"]["rounds"], np.mean(r["limit"]["accuracy"], axis=0)))
        lines.append("| information limit | " + " | ".join(f"{m[int(k)]:.3f}" for k in BUDGETS if int(k) in m) + " | | | |")
    return "\n".join(lines)


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(f"{p}\n{table(p)}\n")
