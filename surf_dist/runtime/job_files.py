"""The files a job reads, read once by the driver and sent to the ranks.

A cluster shares no filesystem: a rank on another node cannot open the driver's run folders.
So the ranks never read a model, a checkpoint to resume or a run to warm-start from: the driver
reads every such file before the job starts (``for_job``) and the bytes travel with the job
through Ray's object store; what the ranks compute comes back to the driver, whose coordinator
writes it. (The torch backend's spawned ranks share the driver's machine and read the files
themselves; under torchrun rank 0 reads them and broadcasts them: ``torch_runtime``.)

The tasks' inputs too: ``TaskInputs`` holds the dataset read from ``--data-root`` and every
topology read from a file (an edge list, a JSON spec), read once on the driver (``for_tasks``);
a rank draws its tasks from them and opens none of those files. Bundled datasets and topology
presets come with the package, which every node has: each rank makes those itself.

``Shipped`` maps a path, exactly as the job names it (normalised, not resolved against any
working folder, which differs between the driver and a Ray actor), to the file's bytes.
``None`` in its place means the ranks share the driver's filesystem and read files themselves
(the local backend, and torch ranks on one machine)."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..io.checkpoint import CHECKPOINT
from ..problem.datasets import FILE_DATASETS, Dataset, canonical_name, load_dataset
from ..problem.edge_list import read_edge_list
from ..problem.tasks import TaskFamily
from ..problem.topology import TopologySpec, is_preset, load_topology_preset

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
    bench, the runs an experiment reads and the baselines it reuses (``--baselines DIR``)."""
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
    if isinstance(options.get("baselines"), str):   # experiment communication --baselines DIR
        files.add(Path(options["baselines"]) / "summary.json")
    return files


class TaskInputs:
    """The dataset and topologies a job's tasks come from, as the driver read them:
    ``datasets`` {(canonical name, data root): Dataset} of the datasets read from files,
    ``topologies`` {topology as the config names it: spec holding its edges} of the topologies
    read from files. ``family(task_config, seed)`` draws from them; a file-based input that
    the driver did not read is refused, naming it (a rank never falls back to its own disk)."""

    def __init__(self):
        self.datasets: dict[tuple[str, str], Dataset] = {}
        self.topologies: dict[str, TopologySpec] = {}

    def add(self, task_config) -> None:
        """Read ``task_config``'s dataset and topology here, where they are files."""
        key = (canonical_name(task_config.dataset), task_config.data_root or "")
        if key[0] in FILE_DATASETS and key not in self.datasets:
            self.datasets[key] = load_dataset(task_config.dataset, task_config.data_root or None)
        self.add_topology(task_config.topology)

    def add_topology(self, text: str) -> None:
        if text not in self.topologies and not is_preset(text):
            spec = load_topology_preset(text)       # an edge list's edges read here, once, into the spec
            self.topologies[text] = (replace(spec, edges=read_edge_list(spec.edge_list)) if spec.family == "edge_list"
                                     else spec)

    def with_features(self, features) -> "TaskInputs":
        """A copy whose datasets hold ``features(key, dataset)`` in place of their features (the
        labels and everything else kept): what a Ray rank receives (``ray_rows``)."""
        copy = TaskInputs()
        copy.topologies = dict(self.topologies)
        copy.datasets = {key: replace(data, features=features(key, data)) for key, data in self.datasets.items()}
        return copy

    def family(self, task_config, seed: int) -> TaskFamily:
        key = (canonical_name(task_config.dataset), task_config.data_root or "")
        if key[0] in FILE_DATASETS and key not in self.datasets:
            raise ValueError(f"dataset {key[0]} in {key[1] or '(no --data-root)'} was not read by the driver "
                             "(a rank on another host cannot open its files); name it in the job's own settings")
        if task_config.topology not in self.topologies and not is_preset(task_config.topology):
            raise ValueError(f"topology file {task_config.topology} was not read by the driver (a rank on another "
                             "host cannot open it); name it in the job's own settings")
        return TaskFamily(task_config, dataset=self.datasets.get(key), seed=seed,
                          topology=self.topologies.get(task_config.topology))


def for_tasks(cfg, options: dict) -> TaskInputs:
    """What every rank's tasks are drawn from, read here on the driver: the job's dataset and
    topology, and the topologies the transfer experiment visits (``options["topologies"]``)."""
    inputs = TaskInputs()
    inputs.add(cfg.task)
    for text in options.get("topologies") or ():
        inputs.add_topology(str(text))
    return inputs
