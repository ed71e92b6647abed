"""The files a job's tasks come from travel from the driver (issue 26): under Ray the driver
reads the ``--data-root`` dataset (MNIST idx files made tiny here) and an edge-list topology
once and sends them with the job; the ranks open none of them, so a run whose folder is gone
from the ranks' view gives the local backend's numbers. A rank whose replicated model differs
from rank 0's stops before its first layer (a hash all-gathered), naming the rank.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from surf_dist.commands import jobs
from surf_dist.io.config import preset, with_overrides
from surf_dist.problem.data_files import write_idx
from surf_dist.runtime import run_job
from surf_dist.runtime.job_files import TaskInputs, for_tasks
from test_torch_backend import assert_tree_close

AGENTS = 8


def make_inputs(folder: Path) -> tuple[Path, Path]:
    """A tiny MNIST in idx format (300 + 100 random images) and an 8-agent edge list with
    chords (not a ring: the graph must come from the file), both only in ``folder``."""
    data = folder / "mnist"
    data.mkdir(parents=True)
    rng = np.random.default_rng(5)
    for prefix, count in (("train", 300), ("t10k", 100)):
        write_idx(data / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28), dtype=np.uint8))
        write_idx(data / f"{prefix}-labels-idx1-ubyte", (np.arange(count) % 10).astype(np.uint8))
    edges = folder / "graph.edges"
    edges.write_text("".join(f"{i} {(i + 1) % AGENTS}\n" for i in range(AGENTS)) + "0 4\n2 6\n")
    return data, edges


def config(data: Path, edges: Path):
    return with_overrides(preset("quick"), {"train": {"dtype": "float64"},
                                            "task": {"dataset": "mnist", "data_root": str(data),
                                                     "topology": str(edges), "num_agents": AGENTS}})


def baselines_without_the_files(cfg, worker, folder: str, progress: bool = False) -> dict:
    """Each rank: the folder is gone from its view (the check can fail), then the baselines."""
    assert not Path(folder).exists(), f"rank {worker.comm.rank} still sees {folder}"
    return jobs.baselines_job(cfg, worker, progress=progress)


def test_task_inputs_draw_the_same_tasks_without_their_files(tmp_path):
    """What the driver read draws the tasks the files give, once the files are gone; a file
    input it did not read is refused by name, never read from the rank's disk."""
    data, edges = make_inputs(tmp_path / "in")
    cfg = config(data, edges)
    from surf_dist.problem.tasks import TaskFamily
    direct = TaskFamily(cfg.task, seed=0).sample("test", 1)
    inputs = for_tasks(cfg, {})
    shutil.rmtree(tmp_path / "in")
    shipped = inputs.family(cfg.task, 0).sample("test", 1)
    assert (shipped.shift != direct.shift).nnz == 0 and direct.shift[0, 4] > 0     # the chord 0-4: the file's graph
    assert np.array_equal(shipped.seen_idx, direct.seen_idx)
    with pytest.raises(ValueError, match=r"dataset mnist in .* was not read by the driver"):
        TaskInputs().family(cfg.task, 0)
    with pytest.raises(FileNotFoundError):
        TaskFamily(cfg.task, seed=0)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_ranks_read_no_dataset_or_topology_file_and_give_the_local_numbers(tmp_path, monkeypatch):
    """The driver reads the files, then they leave the host before any rank starts its job
    (moved away right after the driver's read): 2 Ray ranks give the local backend's numbers."""
    from surf_dist.runtime import ray_runtime
    data, edges = make_inputs(tmp_path / "in")
    cfg = config(data, edges)
    local = run_job(jobs.baselines_job, cfg, "local", 1, progress=False)

    def read_then_hide(cfg, options):
        inputs = for_tasks(cfg, options)
        shutil.move(tmp_path / "in", tmp_path / "elsewhere")
        return inputs
    monkeypatch.setattr(ray_runtime, "for_tasks", read_then_hide)
    with ray_runtime.local_ray(num_cpus=2):
        remote = run_job(baselines_without_the_files, cfg, "ray", 2, folder=str(tmp_path / "in"), max_retries=0)
    assert not (tmp_path / "in").exists() and (tmp_path / "elsewhere").is_dir()
    assert np.abs(np.asarray(local["methods"]["dgd"]["loss"])).max() > 0
    assert_tree_close(remote["methods"], local["methods"])


def different_models_job(cfg, worker, progress: bool = False):
    """Rank 1 builds its replica from another seed: the check before the first layer stops it."""
    from surf_dist.methods.learned import UnrolledDGD
    fam = worker.family
    model = UnrolledDGD(cfg.model, fam.dataset.num_features + 1, fam.num_classes, seed=worker.comm.rank)
    worker.comm.check_replicated(model.parameters(), "model parameters")
    return "ran"


def same_models_job(cfg, worker, progress: bool = False):
    from surf_dist.methods.learned import UnrolledDGD
    fam = worker.family
    model = UnrolledDGD(cfg.model, fam.dataset.num_features + 1, fam.num_classes, seed=1)
    worker.comm.check_replicated(model.parameters(), "model parameters")
    return "ran"


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_rank_with_other_model_parameters_stops_before_the_first_layer():
    cfg = preset("quick")
    assert run_job(same_models_job, cfg, "torch", 2) == "ran"
    with pytest.raises(ValueError, match=r"rank\(s\) \[1\] hold other model parameters than rank 0"):
        run_job(different_models_job, cfg, "torch", 2)
