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
from surf_dist.problem.tasks import materialize
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
@pytest.mark.timeout(600)
def test_ray_ranks_read_no_dataset_or_topology_file_get_their_agents_rows_only_and_give_the_local_numbers(tmp_path, monkeypatch):
    """The driver reads the files, then they leave the host before any rank starts its job
    (moved away right after the driver's read): 2 Ray ranks give the local backend's numbers, as
    do 2 torch ranks; each Ray rank is sent exactly its own agents' rows (``rows_of_my_agents_job``)."""
    from surf_dist.runtime import ray_runtime
    data, edges = make_inputs(tmp_path / "in")
    cfg = config(data, edges)
    local = run_job(jobs.baselines_job, cfg, "local", 1, progress=False)

    def read_then_hide(cfg, options):
        inputs = for_tasks(cfg, options)
        shutil.move(tmp_path / "in", tmp_path / "elsewhere")
        return inputs
    spawned = run_job(jobs.baselines_job, cfg, "torch", 2, progress=False)
    monkeypatch.setattr(ray_runtime, "for_tasks", read_then_hide)
    with ray_runtime.local_ray(num_cpus=2):
        remote = run_job(baselines_without_the_files, cfg, "ray", 2, folder=str(tmp_path / "in"), max_retries=0)
        assert not (tmp_path / "in").exists() and (tmp_path / "elsewhere").is_dir()
        monkeypatch.undo()
        moved = config(tmp_path / "elsewhere" / "mnist", tmp_path / "elsewhere" / "graph.edges")
        rows = run_job(rows_of_my_agents_job, moved, "ray", 2, max_retries=0)
    assert np.abs(np.asarray(local["methods"]["dgd"]["loss"])).max() > 0
    assert_tree_close(spawned["methods"], local["methods"])
    assert_tree_close(remote["methods"], local["methods"])
    family = for_tasks(moved, {}).family(moved.task, 0)
    assert torch.equal(rows["X_seen"], materialize(family.dataset, family.batch("train", range(2)), rows["agents"]).X_seen)


def rows_of_my_agents_job(cfg, worker, progress: bool = False):
    """Each rank: the features of its agents' shards of two training tasks are exactly the rows
    the driver's row server sent it (their seen and held-out samples, its share of each pooled
    held-out set), fewer than the dataset holds; rank 0 returns its agents and seen features."""
    from surf_dist.runtime.ray_rows import RemoteRows
    data, agents = worker.family.dataset, worker.agents
    assert isinstance(data.features, RemoteRows), f"rank {worker.comm.rank} holds {type(data.features).__name__}"
    assert len(data.features.received()) == 0, "rows sent before any shard was gathered"
    tasks = worker.family.batch("train", range(2))
    shards = materialize(data, tasks, agents)
    # the pooled held-out samples a worker reads are among its agents' held-out ones (``pool_share``)
    mine = np.unique(np.concatenate([np.concatenate([t.seen_idx[agents].ravel(), t.held_idx[agents].ravel()])
                                     for t in tasks]))
    sent = data.features.received()
    assert np.array_equal(sent, mine), f"rank {worker.comm.rank} was sent {len(sent)} rows, its agents use {len(mine)}"
    assert 0 < len(sent) < data.num_samples
    return {"agents": agents, "X_seen": shards.X_seen}


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


TORCHRUN_ENTRY = '''import os, sys
empty = sys.argv.pop(1)
if os.environ["RANK"] != "0":      # every other rank looks for the files somewhere they are not
    os.chdir(empty)
from surf_dist.cli.main import main
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_under_torchrun_rank_0_sends_the_dataset_and_topology_and_the_run_matches_local(tmp_path):
    """torchrun, 2 ranks; the dataset folder and the edge list are named by relative paths that
    exist only in rank 0's working folder (rank 1 starts in an empty one): rank 0 reads them and
    broadcasts them through the group, and the trained model equals a local run's."""
    import os
    import subprocess
    import sys
    root = Path(__file__).parents[1]
    here, empty = tmp_path / "rank0", tmp_path / "empty"
    empty.mkdir()
    make_inputs(here)
    entry = tmp_path / "entry.py"
    entry.write_text(TORCHRUN_ENTRY)
    train = ["train", "--quick", "--dtype", "float64", "--steps", "3", "--no-progress", "--dataset", "mnist",
             "--data-root", "mnist", "--topology", "graph.edges", "--agents", str(AGENTS)]
    env = {**os.environ, "PYTHONPATH": str(root), "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo",
           "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    done = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", str(entry), str(empty), *train,
                           "--out", str(tmp_path / "tr"), "--backend", "torch", "--workers", "2"],
                          cwd=here, env=env, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not any(empty.iterdir()), "rank 1 wrote into its own folder"
    local = subprocess.run([sys.executable, str(entry), str(empty), *train, "--out", str(tmp_path / "local")],
                           cwd=here, env={**env, "RANK": "0"}, capture_output=True, text=True, timeout=200)
    assert local.returncode == 0, local.stderr[-3000:]
    ours, ref = (torch.load(tmp_path / run / "model.pt", weights_only=True) for run in ("tr", "local"))
    for key in ref["model"]:
        torch.testing.assert_close(ours["model"][key], ref["model"][key], rtol=1e-9, atol=1e-9, msg=key)


def test_the_baselines_an_experiment_reuses_travel_with_the_job(tmp_path):
    """``experiment communication --baselines DIR``: the driver (rank 0 under torchrun) reads
    DIR's summary.json and sends it; a rank reads what it was sent, never its own disk."""
    import json
    from surf_dist.commands.experiments import load_baselines
    from surf_dist.runtime.job_files import Shipped, for_job
    cfg = preset("quick")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"config": cfg.to_dict(), "methods": {"dgd": {}},
                                                            "centralized": {}}))
    files = for_job(cfg, {"baselines": str(tmp_path / "b")})
    assert load_baselines(tmp_path / "b", cfg)["methods"] == {"dgd": {}}
    shutil.rmtree(tmp_path / "b")
    assert load_baselines(tmp_path / "b", cfg, files)["methods"] == {"dgd": {}}
    for where in (None, Shipped()):
        with pytest.raises(ValueError, match=r"--baselines: .*summary.json does not exist"):
            load_baselines(tmp_path / "b", cfg, where)


@pytest.mark.parametrize("args, named", [
    (["train", "--config", "absent.json"], "config file absent.json"),
    (["evaluate", "absent_run"], "absent_run/model.pt"),
    (["bench", "absent_run", "--quick"], "absent_run"),
    (["bench", "pretrained", "--quick", "--choices-from", "absent.json"], "--choices-from absent.json"),
    (["bench", "pretrained", "--quick", "--baselines-from", "absent_dir"], "--baselines-from absent_dir"),
])
def test_a_torchrun_rank_without_a_file_read_on_every_rank_stops_before_anything_runs_naming_it(
        tmp_path, monkeypatch, capsys, args, named):
    """The files read on every torchrun rank (launch/README.md): a rank whose node lacks one
    stops in one line naming it (exit 2) before it joins the group; here rank 1 of 2."""
    from surf_dist.cli.main import main
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main([*args, "--out", "out", "--backend", "torch", "--workers", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert named in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
