"""The training log of a run folder: ``metrics.csv`` (one row per step) and TensorBoard
scalars, written by the coordinator only."""
from __future__ import annotations

import csv
import os
from pathlib import Path


class MetricsLogger:
    """One CSV row and one TensorBoard scalar set per step (coordinator only)."""

    def __init__(self, run_dir: Path, num_layers: int, append: bool = False, first_step: int | None = None):
        """``append``: continue an existing metrics.csv; with ``first_step`` (a resumed run), rows
        of that step and later, written after the checkpoint by the run that stopped, are dropped."""
        from torch.utils.tensorboard import SummaryWriter
        self.columns = (["step", "outer_loss", "violations", "val_loss", "val_local_accuracy"]
                        + [f"slack_{l}" for l in range(1, num_layers + 1)]
                        + [f"dual_{l}" for l in range(1, num_layers + 1)])
        path = run_dir / "metrics.csv"
        if append and first_step is not None and path.exists():
            with open(path, newline="") as f:
                lines = f.read().splitlines(keepends=True)
            kept = lines[:1] + [l for l in lines[1:] if l.endswith("\n")
                                and l.split(",", 1)[0].isdigit() and int(l.split(",", 1)[0]) < first_step]
            tmp = path.with_name(".metrics.csv.tmp")
            with open(tmp, "w", newline="") as f:
                f.writelines(kept)
            os.replace(tmp, path)     # atomic: a kill now never loses the kept rows
        self.file = open(path, "a" if append and path.exists() else "w", newline="")
        self.csv = csv.writer(self.file)
        if self.file.tell() == 0:
            self.csv.writerow(self.columns)
        self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, row: dict) -> None:
        slacks, duals = row["slacks"].tolist(), row["duals"].tolist()
        flat = {"step": row["step"], "outer_loss": row["outer_loss"],
                "violations": sum(s > 0 for s in slacks), "val_loss": row.get("val_loss", ""),
                "val_local_accuracy": row.get("val_local_accuracy", "")}
        flat.update({f"slack_{l + 1}": s for l, s in enumerate(slacks)})
        flat.update({f"dual_{l + 1}": v for l, v in enumerate(duals)})
        self.csv.writerow([flat[c] for c in self.columns])
        for key in ("outer_loss", "violations", "val_loss", "val_local_accuracy"):
            if flat[key] != "":
                self.tb.add_scalar(f"train/{key}", flat[key], row["step"])
        self.tb.add_scalars("train/slack", {str(l + 1): s for l, s in enumerate(slacks)}, row["step"])
        self.tb.add_scalars("train/dual", {str(l + 1): v for l, v in enumerate(duals)}, row["step"])

    def flush(self) -> None:
        """Rows written so far reach the disk (called before each checkpoint)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.tb.flush()

    def close(self) -> None:
        self.file.close()
        self.tb.close()
