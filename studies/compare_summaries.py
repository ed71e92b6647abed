"""The largest differences between summary.json files (e.g. one demo on two backends); printed, no result file.

    python studies/compare_summaries.py runs/local runs/torch2 runs/ray2

Prints, against the first folder, the largest absolute and relative difference over every
number under "methods", "centralized", "async" and "permuted_labels", and where it is.
Exits non-zero if a summary lacks numbers the first one has.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KEYS = ("methods", "centralized", "async", "permuted_labels")


def flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from flatten(v, f"{prefix}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, float(tree)


def numbers(path: Path) -> dict[str, float]:
    summary = json.loads((path / "summary.json").read_text())
    return dict(flatten({k: summary[k] for k in KEYS if k in summary}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="output folders holding summary.json")
    args = parser.parse_args()
    reference = numbers(Path(args.runs[0]))
    status = 0
    for run in args.runs[1:]:
        other = numbers(Path(run))
        missing = sorted(set(reference) - set(other))
        if missing:
            print(f"{run}: {len(missing)} numbers missing, e.g. {missing[:3]}")
            status = 1
            continue
        diffs = [(abs(other[k] - v), abs(other[k] - v) / max(abs(v), 1e-12), k) for k, v in reference.items()]
        worst_abs = max(diffs)
        worst_rel = max(diffs, key=lambda d: d[1])
        print(f"{run} vs {args.runs[0]}: {len(diffs)} numbers; max abs diff {worst_abs[0]:.3g} "
              f"({worst_abs[2]}); max rel diff {worst_rel[1]:.3g} ({worst_rel[2]})")
    return status


if __name__ == "__main__":
    sys.exit(main())
