"""The CUDA device: the same numbers as the CPU (float64), through one process, an nccl group
(a rank per GPU) and ranks that share a GPU (gloo, staged through host memory). Skipped
without a GPU (CI); the nccl halo exchange between GPUs needs two."""
import pytest
import torch

from surf_dist.comm.local import LocalCommunicator
from surf_dist.io.config import preset, with_overrides
from surf_dist.core.evaluate import evaluate_unrolled
from surf_dist.runtime import run_job
from surf_dist.runtime.common import make_worker, transport
from surf_dist.core.train import build_state, dual_update, primal_step

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.slow   # ranks on GPUs, spawned processes
CFG = with_overrides(preset("quick"), {"train": {"dtype": "float64"}})


def steps_job(cfg, worker, steps: int = 2, progress: bool = False) -> dict:
    """Two primal-dual steps, then the unrolled curve on the test tasks (CPU tensors out)."""
    state = build_state(cfg, worker)
    T = cfg.train.tasks_per_step
    for step in range(steps):
        tasks = worker.family.batch("train", range(step * T, (step + 1) * T))
        dual_update(state, worker, primal_step(state, worker, tasks, cfg)["slacks"])
    curve = evaluate_unrolled(state.model, worker, worker.family.batch("test", range(cfg.eval.test_tasks)))
    return {"params": {k: v.detach().cpu() for k, v in state.model.state_dict().items()},
            "duals": state.duals.cpu(), "curve": curve}


def assert_close(a: dict, b: dict) -> None:
    for k in a["params"]:
        torch.testing.assert_close(a["params"][k], b["params"][k], rtol=1e-9, atol=1e-9, msg=k)
    torch.testing.assert_close(a["duals"], b["duals"], rtol=1e-9, atol=1e-9)
    for k in ("loss", "local_accuracy", "bytes_per_agent"):
        assert a["curve"][k] == pytest.approx(b["curve"][k], rel=1e-9, abs=1e-9), k


@pytest.fixture(scope="module")
def on_cpu():
    return steps_job(CFG, make_worker(CFG, LocalCommunicator()))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible")
@pytest.mark.timeout(300)
def test_one_process_on_the_gpu_matches_the_cpu(on_cpu):
    worker = make_worker(CFG, LocalCommunicator(), "cuda")
    assert worker.load(worker.family.batch("test", range(1))).X_seen.is_cuda
    assert_close(steps_job(CFG, worker), on_cpu)


GPUS = torch.cuda.device_count() if CUDA else 0


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible")
@pytest.mark.timeout(300)
def test_an_nccl_group_matches_the_cpu(on_cpu):
    assert_close(run_job(steps_job, CFG, "torch", GPUS, "cuda"), on_cpu)


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 2, reason="needs 2+ CUDA GPUs (the nccl halo exchange between GPUs)")
@pytest.mark.timeout(300)
def test_nccl_ranks_on_two_gpus_exchange_halos_and_match_the_cpu(on_cpu):
    assert_close(run_job(steps_job, CFG, "torch", 2, "cuda"), on_cpu)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible")
@pytest.mark.timeout(300)
@pytest.mark.parametrize("per_gpu", [2, 4])
def test_ranks_sharing_a_gpu_stage_through_gloo_and_match_the_cpu(on_cpu, per_gpu):
    assert_close(run_job(steps_job, CFG, "torch", per_gpu * GPUS, "cuda"), on_cpu)


def test_the_transport_is_nccl_only_with_a_gpu_per_rank():
    assert transport("cuda", 1, 1) == transport("cuda", 8, 8) == "nccl"
    assert transport("cuda", 2, 1) == transport("cuda", 4, 1) == "gloo"     # ranks share a GPU
    assert transport("cpu", 2, 8) == "gloo"


@pytest.mark.skipif(CUDA, reason="a CUDA GPU is visible")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        run_job(steps_job, CFG, "local", 1, "cuda")


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible")
def test_group_mean_of_gpu_values_with_a_gpu_index_equals_the_cpus():
    """The bench hands group_mean a task index already on the GPU (Shards.to): the means are made
    there and come back on the CPU, equal to the CPU's."""
    values = torch.arange(6, dtype=torch.float64)
    groups = torch.tensor([0, 0, 1, 1, 1, 2])
    cpu = LocalCommunicator().group_mean(values, groups, 3)
    gpu = LocalCommunicator().group_mean(values.cuda(), groups.cuda(), 3)
    assert gpu.device.type == "cpu" and torch.equal(gpu, cpu)
    assert cpu.tolist() == [0.5, 3.0, 5.0]


# ------------------------------------------------------------------ the commands on CUDA (issue 26)


def _json_numbers(path):
    import json
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in ("wall_seconds", "backend", "timings", "device", "config")}


def _close(a, b, where=""):
    if isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _close(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-7, abs=1e-9), where
    else:
        assert a == b, where


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible")
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend,workers", [("local", 1), ("torch", 2)])
def test_bench_on_cuda_gives_the_cpu_numbers(tmp_path, backend, workers):
    """``surf-dist bench --device cuda`` (one process, and 2 ranks: nccl with 2 GPUs, else
    sharing one through gloo) writes the bench.json of ``--device cpu``."""
    from surf_dist.cli.main import main
    from test_bench import TINY_ARGS
    args = ["bench", "pretrained", "--quick", "--dtype", "float64", "--no-progress", *TINY_ARGS]
    assert main(args + ["--out", str(tmp_path / "cpu")]) == 0
    assert main(args + ["--device", "cuda", "--backend", backend, "--workers", str(workers),
                        "--out", str(tmp_path / "cuda")]) == 0
    _close(_json_numbers(tmp_path / "cuda" / "bench.json"), _json_numbers(tmp_path / "cpu" / "bench.json"))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible")
@pytest.mark.timeout(600)
@pytest.mark.parametrize("backend,workers", [("local", 1), ("torch", 2)])
def test_train_on_cuda_gives_the_cpu_model(tmp_path, backend, workers):
    """``surf-dist train --device cuda`` ends with the model and duals of ``--device cpu``."""
    from surf_dist.cli.main import main
    args = ["train", "--quick", "--dtype", "float64", "--steps", "4", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "cpu")]) == 0
    assert main(args + ["--device", "cuda", "--backend", backend, "--workers", str(workers),
                        "--out", str(tmp_path / "cuda")]) == 0
    cpu, cuda = (torch.load(tmp_path / p / "model.pt", map_location="cpu", weights_only=True) for p in ("cpu", "cuda"))
    for key in cpu["model"]:
        torch.testing.assert_close(cuda["model"][key], cpu["model"][key], rtol=1e-9, atol=1e-9, msg=key)
