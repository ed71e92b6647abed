"""The torch.distributed backend: real gloo groups on loopback against the single-process reference.

One spawned group per world size (2 and 4 ranks) runs every check at once (``group_job``), and
the same job runs in this process on the local backend: per-layer outputs and meta-gradients of
the unrolled network (synchronous, and with stale asynchronous agents), 3 constrained
primal-dual steps, baseline curves, the unrolled curve and the async sweep, all in float64 to
1e-9. Oracles: the physical bytes of one shift equal a hand count of the rows that cross ranks
(a ring, a star, and a directed graph with unequal weights, where S and S^T differ); a shift
with no cut edge moves nothing. Failures: a rank that dies, a rank that hangs, too many
workers.
"""
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.distributed as dist

from surf_dist.cli.main import main
from surf_dist.comm.local import LocalCommunicator
from surf_dist.io.config import preset, with_overrides
from surf_dist.core.coordinator import draw_async_masks
from surf_dist.commands.bench.runner import run_grid
from surf_dist.core.evaluate import async_sweep, evaluate_unrolled
from surf_dist.methods.learned import UnrolledDGD
from surf_dist.problem.softmax import loss_per_agent
from surf_dist.runtime import run_job
from surf_dist.runtime.common import make_worker
from surf_dist.problem.tasks import block_shift, materialize
from surf_dist.problem.topology import ring, shift_operator, star
from surf_dist.core.train import train, unroll

pytestmark = [pytest.mark.equivalence, pytest.mark.slow]   # spawned gloo ranks

CFG = with_overrides(preset("quick"), {"train": {"dtype": "float64"}})
TOL = dict(rtol=1e-9, atol=1e-9)
D = 5                                   # columns of the hand-counted shift


# ------------------------------------------------------------------ jobs (run on every rank)


def gather_rows(worker, W_nd, num_tasks):
    """The global (T n, d) matrix from every rank's hosted rows (an all-reduce of scatters)."""
    nodes = (np.arange(num_tasks)[:, None] * worker.num_agents + worker.agents[None]).ravel()
    full = torch.zeros(num_tasks * worker.num_agents, W_nd.shape[1], dtype=W_nd.dtype)
    full[torch.as_tensor(nodes)] = W_nd.detach()
    return worker.comm.all_reduce(full).numpy()


def model_checks(cfg, worker) -> dict:
    """Per-layer outputs and meta-gradients on 2 training tasks, plain and with stale dropouts."""
    fam, L = worker.family, cfg.model.num_layers
    model = UnrolledDGD(cfg.model, fam.dataset.num_features + 1, fam.num_classes, seed=1).to(worker.dtype)
    tasks = fam.batch("train", range(2))
    masks = draw_async_masks(np.random.default_rng(3), L, len(tasks), worker.num_agents, 2)
    out = {}
    for name, m, stale in (("sync", None, False), ("stale", masks, True)):
        model.zero_grad()
        shards, Ws = unroll(model, worker, tasks, m, stale)
        loss = sum((l + 1) * loss_per_agent(W, shards.X_held, shards.Y_held).sum() for l, W in enumerate(Ws))
        loss.backward()
        worker.comm.all_reduce_grads(model.parameters())
        out[f"{name}_layers"] = np.stack([gather_rows(worker, W, len(tasks)) for W in Ws])
        out[f"{name}_grads"] = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    test_tasks = fam.batch("test", range(cfg.eval.test_tasks))
    out["unrolled_curve"] = evaluate_unrolled(model, worker, test_tasks)
    out["async_sweep"] = async_sweep(model, worker, test_tasks, (0, 1, 2), 2, seed=5)
    return out


def training_checks(cfg, worker) -> dict:
    """3 primal-dual steps, constrained with a large eps (positive duals), one agent dropped."""
    run_cfg = with_overrides(cfg, {"train": {"steps": 3, "eps": 0.5, "constrained": True, "val_every": 3,
                                             "async_train": 1}})
    state = train(run_cfg, worker, run_dir=None, progress=False)
    params = torch.cat([p.detach().reshape(-1) for p in state.model.parameters()]).numpy()
    # the pooled objective: every node's loss on its task's whole pool, of which each rank holds
    # a share (models and losses summed across ranks; its meta-gradient through those sums)
    pooled = train(with_overrides(run_cfg, {"train": {"objective": "pooled", "steps": 2, "val_every": 2}}),
                   worker, run_dir=None, progress=False)
    return {"duals": state.duals.numpy(), "params": params, "best_val": state.best_val,
            "outer_loss": np.array([row["outer_loss"] for row in state.history]),
            "pooled_outer_loss": np.array([row["outer_loss"] for row in pooled.history]),
            "pooled_best_val": pooled.best_val,
            "pooled_params": torch.cat([p.detach().reshape(-1) for p in pooled.model.parameters()]).numpy()}


def baseline_checks(cfg, worker) -> dict:
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    out = {}
    configs = [{"start": start, "step": step} for start in ("zero", "task") for step in (0.1, 1.0)]
    for name in ("dsgd", "gradient_tracking"):
        run = run_grid(name, worker, tasks, configs, 8, (0, 4, 8), 256, cfg.model.batch_size)
        out[name] = {"bytes": run["bytes"], "grad_evals": run["grad_evals"], **run["values"]}
    return out


def cut_bytes_checks(cfg, worker) -> dict:
    """Bind hand-made 8-node graphs, contiguous blocks per rank; bytes sent by one shift."""
    comm = worker.comm
    nodes = np.array_split(np.arange(8), comm.world_size)[comm.rank]
    graphs = {"ring": shift_operator(ring(8), "metropolis"), "star": shift_operator(star(8), "metropolis"),
              "no_cut": sp.block_diag([shift_operator(star(len(b)), "metropolis")     # a star per rank
                                       for b in np.array_split(np.arange(8), comm.world_size)], format="csr"),
              "directed": directed_graph()}
    Z = torch.as_tensor(np.random.default_rng(0).normal(size=(8, D)))
    out = {}
    for name, S in graphs.items():
        comm.bind(sp.csr_matrix(S), nodes)
        Z_local = Z[nodes].clone().requires_grad_(True)
        Y = comm.shift(Z_local)
        forward = comm.ledger.physical_bytes
        (Y * torch.arange(1.0, D + 1, dtype=Y.dtype)).sum().backward()
        sent = comm.all_reduce(torch.tensor([forward, comm.ledger.physical_bytes - forward], dtype=torch.float64))
        full_y = torch.zeros(8, D, dtype=Y.dtype)
        full_y[nodes] = Y.detach()
        full_g = torch.zeros(8, D, dtype=Y.dtype)
        full_g[nodes] = Z_local.grad
        out[name] = {"forward_bytes": float(sent[0]), "backward_bytes": float(sent[1]),
                     "SZ": comm.all_reduce(full_y).numpy(), "grad": comm.all_reduce(full_g).numpy(),
                     "S": S.toarray(), "Z": Z.numpy()}
    out["comm_seconds"] = comm.ledger.comm_seconds
    return out


def directed_graph() -> sp.csr_matrix:
    """8 nodes, edges one way only with unequal weights (a directed ring plus three chords):
    S and S^T differ, so a halo exchange that swapped them would fail."""
    S = np.diag(np.linspace(0.2, 0.5, 8))
    for i in range(8):
        S[(i + 1) % 8, i] = 0.3 + 0.05 * i           # row = receiver, column = sender
    S[5, 0], S[2, 6], S[7, 3] = 0.7, -0.4, 1.1
    return sp.csr_matrix(S)


def crossing_rows(S: np.ndarray, world: int) -> int:
    """Rows a shift moves between ranks (contiguous blocks): one per (sender, receiving rank)
    pair with an edge from the sender into that rank."""
    owner = np.concatenate([[r] * len(b) for r, b in enumerate(np.array_split(np.arange(8), world))])
    return len({(j, owner[i]) for i, j in zip(*np.nonzero(S)) if owner[i] != owner[j]})


def group_job(cfg, worker, progress=False) -> dict:
    return {"model": model_checks(cfg, worker), "train": training_checks(cfg, worker),
            "baselines": baseline_checks(cfg, worker), "bytes": cut_bytes_checks(cfg, worker)}


def dying_job(cfg, worker, progress=False):
    worker.comm.all_reduce(torch.ones(1))
    if worker.comm.rank == 1:
        os._exit(1)                           # dies between two collectives, without a word
    worker.comm.all_reduce(torch.ones(1))     # rank 0 waits on the dead peer


def failing_job(cfg, worker, progress=False):
    worker.comm.all_reduce(torch.ones(1))
    assert worker.comm.rank != 1, "rank 1's job is wrong"     # a job error, not a lost worker
    worker.comm.all_reduce(torch.ones(1))


def hanging_job(cfg, worker, progress=False):
    if worker.comm.rank == 1:
        time.sleep(60)                        # alive but never joins the next collective
    worker.comm.all_reduce(torch.ones(1))


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def reference():
    return group_job(CFG, make_worker(CFG, LocalCommunicator()))


@pytest.fixture(scope="module", params=[2, 4], ids=["2ranks", "4ranks"])
def distributed(request):
    result = run_job(group_job, CFG, "torch", request.param)
    return request.param, result


def assert_tree_close(actual, expected, path=""):
    if isinstance(expected, dict):
        assert set(actual) == set(expected), path
        for key in expected:
            assert_tree_close(actual[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, list) and any(isinstance(e, dict) for e in expected):
        assert actual == expected, path            # the baselines' choices (segments of configurations)
    else:
        np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float),
                                   err_msg=path, **TOL)


# ------------------------------------------------------------------ equivalence


@pytest.mark.timeout(120)
def test_unrolled_outputs_and_meta_gradients_match(distributed, reference):
    _, result = distributed
    for name in ("sync", "stale"):
        assert np.abs(reference["model"][f"{name}_grads"]).max() > 0   # the check can fail
        assert_tree_close(result["model"][f"{name}_layers"], reference["model"][f"{name}_layers"], name)
        assert_tree_close(result["model"][f"{name}_grads"], reference["model"][f"{name}_grads"], name)


@pytest.mark.timeout(120)
def test_primal_dual_steps_match(distributed, reference):
    _, result = distributed
    assert (reference["train"]["duals"] > 0).any(), "eps = 0.5 should make some dual positive"
    assert_tree_close(result["train"], reference["train"])


@pytest.mark.timeout(120)
def test_baselines_unrolled_curve_and_async_sweep_match(distributed, reference):
    _, result = distributed
    assert_tree_close(result["baselines"], reference["baselines"])
    assert_tree_close(result["model"]["unrolled_curve"], reference["model"]["unrolled_curve"])
    assert_tree_close(result["model"]["async_sweep"], reference["model"]["async_sweep"])


@pytest.mark.timeout(120)
def test_physical_bytes_are_the_rows_that_cross_ranks(distributed):
    world, result = distributed
    row = D * 8                                        # d float64 values
    # ring of 8 in contiguous blocks: every cut edge moves one row each way
    cut_edges = {2: 2, 4: 4}[world]
    # star, hub 0 on rank 0: the hub's row goes once to every other rank; every leaf row once
    star_rows = {2: 1 + 4, 4: 3 + 6}[world]
    directed = result["bytes"]["directed"]["S"]
    assert not np.allclose(directed, directed.T)
    expected = {"ring": 2 * cut_edges * row, "star": star_rows * row, "no_cut": 0,
                "directed": crossing_rows(directed, world) * row}
    assert expected["directed"] > 0
    for name, nbytes in expected.items():
        check = result["bytes"][name]
        assert check["forward_bytes"] == nbytes, name
        assert check["backward_bytes"] == nbytes, name   # gradients return along reversed edges
        S, Z = check["S"], check["Z"]
        np.testing.assert_allclose(check["SZ"], S @ Z, **TOL)
        np.testing.assert_allclose(check["grad"], S.T @ np.tile(np.arange(1.0, D + 1), (8, 1)), **TOL)
    assert result["bytes"]["comm_seconds"] > 0


# ------------------------------------------------------------------ failures


@pytest.mark.timeout(60)
def test_dead_rank_fails_fast_naming_it():
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 1: exited with code 1") as info:
        run_job(dying_job, CFG, "torch", 2)          # collective timeout: 60 s
    assert time.monotonic() - start < 25, "the parent should not wait for the collective timeout"
    assert "rank 0: all-reduce" in str(info.value)


@pytest.mark.timeout(60)
def test_a_job_error_is_not_a_lost_worker():
    from surf_dist.runtime.common import JobError, WorkerLostError
    with pytest.raises(JobError, match=r"rank 1: AssertionError: rank 1's job is wrong") as info:
        run_job(failing_job, CFG, "torch", 2)
    assert not isinstance(info.value, WorkerLostError)


@pytest.mark.timeout(60)
def test_hanging_rank_times_out_with_context():
    from surf_dist.runtime.torch_runtime import run_torch
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"rank 0: all-reduce after round 0 timed out after 4 s: "
                                           r"a peer is gone or stuck"):
        run_torch(hanging_job, CFG, 2, timeout_s=4)
    assert time.monotonic() - start < 30


@pytest.mark.timeout(60)
def test_the_collective_timeout_comes_from_the_environment(monkeypatch, tmp_path, capsys):
    """SURF_DIST_COLLECTIVE_TIMEOUT_S reaches every collective through run_job (a 3 s wait
    fails after 3 s, naming it); a value that is no number of seconds is one line before any work."""
    monkeypatch.setenv("SURF_DIST_COLLECTIVE_TIMEOUT_S", "3")
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"timed out after 3 s"):
        run_job(hanging_job, CFG, "torch", 2)
    assert time.monotonic() - start < 30
    for bad in ("0", "-5", "inf", "nan", "soon"):
        monkeypatch.setenv("SURF_DIST_COLLECTIVE_TIMEOUT_S", bad)
        code = main(["baselines", "--quick", "--backend", "torch", "--workers", "2", "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and "SURF_DIST_COLLECTIVE_TIMEOUT_S" in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


@pytest.mark.timeout(30)
def test_more_workers_than_agents_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ValueError, match="cannot place 8 agents on 9 workers"):
        run_job(dying_job, CFG, "torch", 9)
    code = main(["baselines", "--quick", "--backend", "torch", "--workers", "9", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "cannot place 8 agents on 9 workers" in capsys.readouterr().err


@pytest.mark.timeout(30)
def test_torchrun_launcher_dry_run():
    script = Path(__file__).parents[1] / "launch" / "torchrun.sh"
    env = {**os.environ, "DRY_RUN": "1", "NPROC": "3", "ARGS": "baselines --quick --out /tmp/o"}
    printed = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, check=True).stdout
    assert printed.split() == ["torchrun", "--standalone", "--nproc-per-node", "3", "-m", "surf_dist.cli.main",
                               "baselines", "--quick", "--out", "/tmp/o", "--backend", "torch", "--workers", "3"]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_real_torchrun_launch_trains_like_the_single_process(tmp_path):
    """launch/torchrun.sh starts 2 ranks with torchrun on loopback; the model and checkpoint
    they write equal a local run's (float64, to 1e-9)."""
    import sys
    root = Path(__file__).parents[1]
    torchrun = Path(sys.executable).parent / "torchrun"
    if not torchrun.exists():
        pytest.fail(f"torchrun is not installed beside {sys.executable} (it comes with torch)")
    train = "train --quick --dtype float64 --steps 3 --no-progress --out "
    env = {**os.environ, "NPROC": "2", "TORCHRUN": str(torchrun), "ARGS": train + str(tmp_path / "tr"),
           "PYTHONPATH": str(root), "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run(["bash", str(root / "launch" / "torchrun.sh")], env=env, capture_output=True, text=True,
                          timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(train.split() + [str(tmp_path / "local")]) == 0
    assert torch.load(tmp_path / "tr" / "model.pt", weights_only=True)["device"] == "cpu, 2 worker(s)"
    for name in ("model.pt", "checkpoint.pt"):
        ours, ref = (torch.load(tmp_path / run / name, weights_only=True) for run in ("tr", "local"))
        for saved in (ours, ref):
            saved.pop("train_seconds", None), saved.pop("device", None)
        assert_tree_close(_numbers(ours), _numbers(ref))


def _numbers(tree):
    """A checkpoint's tensors and numbers as nested dicts of arrays (strings dropped)."""
    if isinstance(tree, dict):
        return {k: _numbers(v) for k, v in tree.items() if not isinstance(v, str)}
    if isinstance(tree, (list, tuple)):
        return {str(i): _numbers(v) for i, v in enumerate(tree)}
    return tree.detach().numpy() if isinstance(tree, torch.Tensor) else tree


def data_held_job(cfg, worker, progress=False) -> dict:
    """Per rank: the seen and held-out rows of its shards for 2 tasks, the dataset's bytes in the
    rank's own memory (a memory-mapped pixel set: none), the pooled held-out rows it reads from
    the dataset (its share) and those it then holds (every share, summed into every rank)."""
    tasks = worker.family.batch("train", range(2))
    shards = worker.load(tasks)
    share = materialize(worker.family.dataset, tasks, worker.agents, 0.0, torch.float64, worker.pool_owners(tasks),
                        worker.comm.rank)
    mine = torch.zeros(5, worker.comm.world_size, dtype=torch.float64)
    mine[:, worker.comm.rank] = torch.tensor([shards.X_seen.shape[0] * shards.X_seen.shape[1],
                                              shards.X_held.shape[0] * shards.X_held.shape[1],
                                              worker.family.dataset.features.resident_bytes(),
                                              sum(x.shape[0] for x in share.X_pool),
                                              sum(x.shape[0] for x in shards.X_pool)], dtype=torch.float64)
    return {"per_rank": worker.comm.all_reduce(mine).numpy(), "pooled": sum(share.pool_size)}


def object_collectives_job(cfg, worker, progress: bool = False) -> dict:
    """How many ``all_gather_object`` calls three loads make (the node lists follow from the
    placement), and one bind without the lists (which must ask the other ranks)."""
    original, calls = dist.all_gather_object, []
    dist.all_gather_object = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    try:
        for k in range(3):
            worker.load(worker.family.batch("train", range(k + 1)))
        loads = len(calls)
        tasks = worker.family.batch("train", range(2))
        worker.comm.bind(block_shift(tasks), (np.arange(2)[:, None] * worker.num_agents + worker.agents).ravel())
    finally:
        dist.all_gather_object = original
    return {"loads": loads, "bare_bind": len(calls) - loads}


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_loading_a_batch_needs_no_object_collective():
    assert run_job(object_collectives_job, CFG, "torch", 2) == {"loads": 0, "bare_bind": 1}


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_with_four_ranks_each_holds_a_quarter_of_the_samples_and_no_dataset(tmp_path):
    """MNIST-format files: each of 4 gloo ranks holds the rows of its own 2 agents of 8 (a
    quarter of the batch's seen and held-out samples), reads a share of the pooled held-out
    samples (then holds them whole) and none of the dataset itself."""
    from surf_dist.problem.data_files import write_idx
    from surf_dist.problem.datasets import MNIST_FILES
    rng = np.random.default_rng(0)
    for name, n in zip(MNIST_FILES, (300, 300, 100, 100)):
        write_idx(tmp_path / name, rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) if "images" in name
                  else (np.arange(n) % 10).astype(np.uint8))
    cfg = with_overrides(CFG, {"task": {"dataset": "mnist", "data_root": str(tmp_path)}})
    out = run_job(data_held_job, cfg, "torch", 4)
    per_rank = out["per_rank"]
    seen, held = 2 * 8 * cfg.task.samples_seen, 2 * 8 * cfg.task.samples_held     # 2 tasks x 8 agents
    np.testing.assert_array_equal(per_rank[0], [seen / 4] * 4)
    np.testing.assert_array_equal(per_rank[1], [held / 4] * 4)
    np.testing.assert_array_equal(per_rank[2], [0] * 4)
    # the pooled held-out sets are read in shares: every distinct sample by exactly one rank;
    # then every rank holds them whole (the shares summed), to score its own agents' models
    print("pooled held-out rows read per rank", per_rank[3], "of", out["pooled"])
    assert per_rank[3].sum() == out["pooled"] and per_rank[3].max() <= out["pooled"] / 2
    np.testing.assert_array_equal(per_rank[4], [out["pooled"]] * 4)
