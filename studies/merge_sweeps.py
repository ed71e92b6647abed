"""Merge the baselines of two or more runs of one sweep experiment (``surf-dist experiment
compression`` or ``link-failures``) on the same settings and report seed into one result.

A sweep is one bench per value; its cost grows with the baselines it tunes, so a long sweep may
be run as several runs with other ``--methods``. The runs must agree on everything but their
baselines: the same values, task settings, protocol (report seed, draws, grids) and learned
optimizers, whose rows must be equal to the last digit (the same test tasks, the same models: a
check that the runs measured the same thing). The merged result holds every baseline once (a
baseline in two runs must have the same row), the learned rows, and, for compression, the Pareto
front of all points and each baseline's bytes to the target; then the usual JSON, CSV and PNG.

    python studies/merge_sweeps.py RUN_A RUN_B --out DIR
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from surf_dist.commands.experiments import compression
from surf_dist.commands.experiments.outputs import write_outputs
from surf_dist.io.config import from_dict

KINDS = {"compression": ("compressors", compression.pareto), "link-failures": ("link_failure_probs", None)}


def load(folder: Path) -> tuple[str, dict]:
    for name in KINDS:
        path = folder / f"{name}.json"
        if path.is_file():
            return name, json.loads(path.read_text())
    raise SystemExit(f"{folder}: holds neither compression.json nor link-failures.json")


def same_but_methods(a: dict, b: dict, what: str) -> None:
    strip = lambda d: {k: v for k, v in d.items() if k != "methods"}
    if strip(a) != strip(b):
        differ = sorted(k for k in set(a) | set(b) if k != "methods" and a.get(k) != b.get(k))
        raise SystemExit(f"the runs differ in {what} {differ}: merge only runs of the same settings")


def merge(results: list[dict], kind: str) -> dict:
    values_key, pareto = KINDS[kind]
    first = results[0]
    for other in results[1:]:
        if other[values_key] != first[values_key] or other["rounds"] != first["rounds"]:
            raise SystemExit(f"the runs sweep other values or rounds ({values_key})")
        same_but_methods(first["protocol"], other["protocol"], "protocol")
        same_but_methods(first["config"], other["config"], "settings")
    merged = {**first, "methods": {}, "merged_from": [r["command"] for r in results],
              "wall_seconds": sum(r["wall_seconds"] for r in results)}
    merged["protocol"] = {**first["protocol"], "methods": [m for r in results for m in r["protocol"]["methods"]]}
    for value in first["methods"]:
        rows = {}
        for r in results:
            for name, row in r["methods"][value].items():
                if name in rows and rows[name] != row:
                    raise SystemExit(f"{name} under {value} differs between the runs: not the same measurement")
                rows[name] = row
        merged["methods"][value] = rows
    if pareto is not None:
        points = [(row["bytes_per_agent"], row["accuracy"], value, name)
                  for value, rows in merged["methods"].items() for name, row in rows.items()]
        merged["pareto"] = pareto(points)
    return merged


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="output folders of the experiment runs")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the merged result")
    args = parser.parse_args(argv)
    loaded = [load(folder) for folder in args.runs]
    kinds = {kind for kind, _ in loaded}
    if len(kinds) != 1 or len(loaded) < 2:
        raise SystemExit("give two or more runs of one experiment")
    kind = kinds.pop()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: name a new folder")
    merged = merge([result for _, result in loaded], kind)
    config = merged.pop("config")
    write_outputs(args.out, kind, merged, from_dict(config))
    print(f"merged {len(loaded)} runs into {args.out} ({kind}.json, .csv, .png)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
