"""The files a job reads, read once by the driver and sent to the ranks.

A cluster shares no filesystem: a rank on another node cannot open the driver's run folders.
So the ranks never read a model, a checkpoint to resume or a run to warm-start from: the driver
reads every such file before the job starts (``for_job``) and the bytes travel with the job
through Ray's object store; what the ranks compute comes back to the driver, whose coordinator
writes it. (The torch backend's spawned ranks share the driver's machine and read the files
themselves; torchrun across machines does not ship them yet.)

``Shipped`` maps a path, exactly as the job names it (normalised, not resolved against any
working folder, which differs between the driver and a Ray actor), to the file's bytes.
``None`` in its place means the ranks share the driver's filesystem and read files themselves
(the local backend, and torch ranks on one machine)."""
from __future__ import annotations

import os
from pathlib import Path

from ..io.checkpoint import CHECKPOINT

MODEL = "model.pt"
PACKAGE = Path(__file__).resolve().parents[1]     # surf_dist/: the installed package


class Shipped(dict):
    """{normalised path: bytes} of the files the driver read for a job."""

    @staticmethod
    def key(path) -> str:
        return os.path.normpath(str(path))

    def add(self, path) -> None:
        """Read ``path`` on the driver, if it is a file (a missing one is reported by the rank
        that asks for it, with the message it gives for any missing checkpoint)."""
        path = Path(path)
        if path.is_file():
            self[self.key(path)] = path.read_bytes()

    def bytes_of(self, path) -> bytes:
        """The driver's copy of ``path``; a file of the installed package itself (a shipped
        model, ``pretrained:NAME``) is read here: every node has the package."""
        key = self.key(path)
        if key in self:
            return self[key]
        if Path(path).resolve().is_relative_to(PACKAGE) and Path(path).is_file():
            return Path(path).read_bytes()
        raise ValueError(f"{path} was not sent by the driver (a cluster shares no filesystem, so the "
                         "ranks read only the files the driver sends them)")


def for_job(cfg, options: dict) -> Shipped:
    """Every file a job of the command line reads (the job's options as ``run_job`` gets them):
    the model to warm-start from, the checkpoint of a run to resume, the models to evaluate or
    bench, the runs an experiment reads."""
    from ..methods.pretrained import resolve_run
    files = Shipped()
    if cfg.train.init_from:
        files.add(resolve_run(cfg.train.init_from) / MODEL)
    if options.get("resume") and options.get("run_dir"):
        files.add(Path(options["run_dir"]) / CHECKPOINT)
    for run in options.get("run_dirs") or ():
        files.add(Path(run) / MODEL)
    for run in options.get("runs") or ():          # bench: (label, folder); experiments: folders
        files.add(Path(run[1] if isinstance(run, (tuple, list)) else run) / MODEL)
    return files
