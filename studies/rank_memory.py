"""Per-rank memory with a pixel dataset (each rank holds its agents' rows): studies/results/rank_memory.json.

Writes MNIST-format files of the real size (70,000 random 28x28 images; nothing is downloaded)
into a temporary folder, then on the local backend and on 2 and 4 torch.distributed ranks
builds each worker (the task family) and loads one batch of 4 tasks of the default preset
(100 agents) on MNIST, each case in a fresh process. Every rank reports its peak resident
memory (VmHWM), the bytes of the dataset in its own memory and the bytes of its shards. ``--eager`` reads the whole standardised float64
matrix into every rank first, as every rank did before ``pixel_rows.py``.

    python studies/rank_memory.py            # ~1 min; writes studies/results/rank_memory.json
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from surf_dist.io.config import preset, with_overrides
from surf_dist.problem.data_files import write_idx
from surf_dist.problem.datasets import MNIST_FILES
from surf_dist.runtime import run_job

OUT = Path(__file__).parent / "results" / "rank_memory.json"


def write_mnist(folder: Path) -> None:
    rng = np.random.default_rng(0)
    for name, n in zip(MNIST_FILES, (60_000, 60_000, 10_000, 10_000)):
        write_idx(folder / name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if "images" in name
                  else (np.arange(n) % 10).astype(np.uint8))


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started (VmHWM: unlike ru_maxrss, not
    inherited from the parent of a spawned rank)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_job(cfg, worker, eager: bool = False, progress: bool = False) -> dict:
    if eager:
        worker.family.dataset = type(worker.family.dataset)(
            worker.family.dataset.name, np.asarray(worker.family.dataset.features), worker.family.dataset.labels,
            worker.family.dataset.num_classes)
    shards = worker.load(worker.family.batch("train", range(4)))
    features = worker.family.dataset.features
    dataset_mb = (features.resident_bytes() if hasattr(features, "resident_bytes") else features.nbytes) / 2 ** 20
    shard_mb = sum(t.numel() * t.element_size() for t in (shards.X_seen, shards.X_held)) / 2 ** 20
    pool_mb = sum(x.numel() * x.element_size() for x in shards.X_pool) / 2 ** 20
    row = torch.tensor([peak_rss_mb(), dataset_mb, shard_mb, pool_mb], dtype=torch.float64)
    table = torch.zeros(worker.comm.world_size, 4, dtype=torch.float64)
    table[worker.comm.rank] = row
    return {"per_rank": worker.comm.all_reduce(table).tolist()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--case", nargs=4, metavar=("FOLDER", "BACKEND", "WORKERS", "EAGER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.case:                    # one case, in a process of its own
        folder, backend, workers, eager = args.case
        cfg = with_overrides(preset("default"), {"task": {"dataset": "mnist", "data_root": folder}})
        per_rank = run_job(memory_job, cfg, backend, int(workers), eager=eager == "1")["per_rank"]
        print(json.dumps({"backend": backend, "workers": int(workers), "whole matrix on every rank": eager == "1",
                          "peak_rss_mb": [round(r[0]) for r in per_rank], "dataset_mb": [round(r[1], 1) for r in per_rank],
                          "shards_mb": [round(r[2], 2) for r in per_rank], "pools_mb": [round(r[3], 2) for r in per_rank]}))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as folder:
        write_mnist(Path(folder))
        for eager in ("1", "0"):
            for backend, workers in (("local", "1"), ("torch", "2"), ("torch", "4")):
                done = subprocess.run([sys.executable, __file__, "--case", folder, backend, workers, eager],
                                      capture_output=True, text=True, check=True)
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python studies/rank_memory.py", "machine": "2 cores, 24 GiB, "
                                    "torch " + torch.__version__, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
