"""A trained model from its folder: the settings it was trained with (``run_config``) and its
network, built for the dataset of the tasks at hand (``load_model``, ``fitted_model``)."""
from __future__ import annotations

from pathlib import Path

from ..io.checkpoint import check_state_dict, load_model_file
from ..io.config import RunConfig
from ..methods.learned import UnrolledDGD
from .engine import Worker


def run_config(run_dir: Path, files=None) -> RunConfig:
    return load_model_file(Path(run_dir) / "model.pt", files)[1]


def load_model(run_dir: Path, worker: Worker) -> UnrolledDGD:
    saved, cfg = load_model_file(Path(run_dir) / "model.pt", worker.files)
    data = worker.family.dataset
    model = fitted_model(Path(run_dir), saved, cfg, data.name, data.num_features, data.num_classes)
    worker.comm.check_replicated(model.parameters(), f"model parameters of {run_dir}")   # before the first layer
    return model.to(device=worker.device, dtype=worker.dtype)


def fitted_model(run_dir: Path, saved: dict, cfg: RunConfig, dataset: str, num_features: int,
                 num_classes: int) -> UnrolledDGD:
    """The model of ``run_dir`` (its ``model.pt`` already loaded as ``saved``, trained with
    ``cfg``) built for a dataset of ``num_features`` and ``num_classes``; a ValueError naming
    both datasets if its network is tied to the size of the one it was trained on."""
    model = UnrolledDGD(cfg.model, num_features + 1, num_classes)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(getattr(v, "shape", ())) for k, v in saved["model"].items()}
    if ours != theirs and set(ours) == set(theirs) and dataset != cfg.task.dataset:
        from ..problem.datasets import SHAPES
        trained = SHAPES.get(cfg.task.dataset, ("?", "?"))
        raise ValueError(f"{run_dir} was trained on '{cfg.task.dataset}' ({trained[0]} features, {trained[1]} "
                         f"classes) and its {cfg.model.local_net} local network is tied to that size; this "
                         f"evaluation uses '{dataset}' ({num_features} features, {num_classes} classes): "
                         f"evaluate it on '{cfg.task.dataset}' (drop --dataset) or train a run on '{dataset}'")
    check_state_dict(saved["model"], ours, run_dir / "model.pt")
    model.load_state_dict(saved["model"])
    return model
