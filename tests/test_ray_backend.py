"""The Ray backend: 2 rank actors on a real local Ray instance (loopback) against the
single-process reference.

One Ray instance serves the module. One run of the torch backend's ``group_job`` checks, in
float64 to 1e-9: per-layer outputs and meta-gradients (synchronous and with stale dropouts),
3 constrained primal-dual steps with one agent dropped per layer (duals and dropouts come from
the coordinator actor), baseline curves, the unrolled curve and the async sweep. Also: the
command line gives the local backend's numbers; a rank actor that dies ends the run fast with
its rank named once its group restarts are spent, and frees the cluster; too many workers is a clear error before Ray starts.
"""
import json
import os
import time

import numpy as np
import pytest
import ray
import torch

from surf_dist.cli.main import main
from surf_dist.comm.local import LocalCommunicator
from surf_dist.runtime import run_job
from surf_dist.runtime import ray_runtime
from surf_dist.runtime.common import make_worker
from test_torch_backend import CFG, assert_tree_close, dying_job, failing_job, group_job

pytestmark = [pytest.mark.equivalence, pytest.mark.slow]   # Ray actors and gloo groups

WORKERS = 2


def actor_pid(coordinator) -> int:
    return os.getpid()


def recorded_group_job(cfg, worker, progress=False) -> dict:
    """``group_job``, with rank 0 recording every coordinator it is handed."""
    made = []
    if worker.comm.rank == 0:
        make = worker.coordinator_factory

        def recording(*args):
            made.append(make(*args))
            return made[-1]
        worker.coordinator_factory = recording
    out = group_job(cfg, worker, progress)
    if worker.comm.rank == 0:    # made: the async sweep's coordinator, the training's, the pooled training's
        pid_of = lambda proxy: ray.get(proxy.actor.__ray_call__.remote(actor_pid))   # noqa: E731
        out["coordinators"] = {
            "types": [type(c).__name__ for c in made], "pids": [pid_of(c) for c in made],
            "rank0_pid": os.getpid(), "train_duals": made[1].state()["duals"].numpy()}
        probe = make(3, 0.1, 0)              # once its proxy is gone, an actor is reset and reused
        probe.dual_step(torch.ones(3, dtype=torch.float64))
        used_pid = pid_of(probe)
        del probe
        again = make(2, 0.1, 0)
        out["coordinators"]["reuse"] = {"same_process": pid_of(again) == used_pid,
                                        "fresh_duals": again.state()["duals"].numpy()}
    return out


@pytest.fixture(scope="module")
def ray_instance():
    with ray_runtime.local_ray(num_cpus=WORKERS):
        yield


@pytest.fixture(scope="module")
def reference():
    return group_job(CFG, make_worker(CFG, LocalCommunicator()))


@pytest.fixture(scope="module")
def on_ray(ray_instance):
    return run_job(recorded_group_job, CFG, "ray", WORKERS)


def summary_numbers(path):
    summary = json.loads((path / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in ("wall_seconds", "backend", "timings")}


# ------------------------------------------------------------------ equivalence


@pytest.mark.slow
@pytest.mark.timeout(240)     # the first one pays for the module's Ray job (~1 min quiet)
def test_unrolled_outputs_and_meta_gradients_match(on_ray, reference):
    for name in ("sync", "stale"):
        assert np.abs(reference["model"][f"{name}_grads"]).max() > 0   # the check can fail
        assert_tree_close(on_ray["model"][f"{name}_layers"], reference["model"][f"{name}_layers"], name)
        assert_tree_close(on_ray["model"][f"{name}_grads"], reference["model"][f"{name}_grads"], name)


@pytest.mark.slow
@pytest.mark.timeout(240)     # the first one pays for the module's Ray job (~1 min quiet)
def test_primal_dual_steps_match_with_the_coordinator_in_its_own_actor(on_ray, reference):
    assert (reference["train"]["duals"] > 0).any(), "eps = 0.5 should make some dual positive"
    assert_tree_close(on_ray["train"], reference["train"])
    coordinators = on_ray["coordinators"]
    assert coordinators["types"] == ["CoordinatorProxy"] * 3
    assert coordinators["rank0_pid"] not in coordinators["pids"]        # another process
    assert_tree_close(coordinators["train_duals"], reference["train"]["duals"])   # its own state
    assert coordinators["reuse"]["same_process"]
    assert_tree_close(coordinators["reuse"]["fresh_duals"], np.zeros(2))


@pytest.mark.slow
@pytest.mark.timeout(240)     # the first one pays for the module's Ray job (~1 min quiet)
def test_baselines_unrolled_curve_and_async_sweep_match(on_ray, reference):
    assert_tree_close(on_ray["baselines"], reference["baselines"])
    assert_tree_close(on_ray["model"]["unrolled_curve"], reference["model"]["unrolled_curve"])
    assert_tree_close(on_ray["model"]["async_sweep"], reference["model"]["async_sweep"])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_command_line_baselines_match_local(ray_instance, tmp_path):
    for backend, workers in (("local", 1), ("ray", WORKERS)):
        code = main(["baselines", "--quick", "--dtype", "float64", "--no-progress", "--backend", backend,
                     "--workers", str(workers), "--out", str(tmp_path / backend)])
        assert code == 0
    assert_tree_close(summary_numbers(tmp_path / "ray")["methods"], summary_numbers(tmp_path / "local")["methods"])


# ------------------------------------------------------------------ failures


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_dead_actor_restarts_the_group_then_fails_naming_its_rank_once_retries_are_spent(ray_instance, capfd):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"ray backend failed: rank 1: its actor died") as info:
        run_job(dying_job, CFG, "ray", WORKERS, max_retries=1)     # collective timeout: 60 s
    assert time.monotonic() - start < 45, "the driver should not wait for the collective timeout"
    assert "rank 0: all-reduce" in str(info.value)       # rank 0's echo comes after the cause
    assert str(info.value).endswith("(after 1 group restart(s))")
    assert capfd.readouterr().err.count("restarting the group from the start (restart 1 of 1)") == 1
    deadline = time.monotonic() + 15
    while ray.available_resources().get("CPU", 0) < WORKERS and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == WORKERS, "actors and placement group freed"


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_job_error_fails_at_once_without_restarting_the_group(ray_instance, capfd):
    """Only a lost worker restarts the group; an error raised by the job fails with its message."""
    from surf_dist.runtime.common import JobError
    with pytest.raises(JobError, match=r"rank 1: AssertionError: rank 1's job is wrong"):
        run_job(failing_job, CFG, "ray", WORKERS, max_retries=2)
    assert "restarting the group" not in capfd.readouterr().err


@pytest.mark.timeout(60)
def test_more_workers_than_agents_is_a_clear_error_before_ray_starts(monkeypatch, tmp_path, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("Ray should not be touched")
    monkeypatch.setattr(ray_runtime.ray, "init", refuse)
    monkeypatch.setattr(ray_runtime, "placement_group", refuse)
    with pytest.raises(ValueError, match="cannot place 8 agents on 9 workers"):
        run_job(dying_job, CFG, "ray", 9)
    code = main(["baselines", "--quick", "--backend", "ray", "--workers", "9", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "cannot place 8 agents on 9 workers" in capsys.readouterr().err


def test_an_inherited_loopback_interface_is_overridden_on_other_nodes(monkeypatch, capsys):
    from surf_dist.runtime import ray_runtime
    monkeypatch.setattr(ray_runtime, "interface_of", lambda address: "eth7")
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    monkeypatch.setenv("NCCL_SOCKET_IFNAME", "ens5")          # a user's own non-loopback choice: kept
    ray_runtime.use_node_interface("10.1.2.3")
    assert os.environ["GLOO_SOCKET_IFNAME"] == "eth7" and os.environ["NCCL_SOCKET_IFNAME"] == "ens5"
    assert "GLOO_SOCKET_IFNAME=lo (loopback) was inherited" in capsys.readouterr().err
    monkeypatch.delenv("GLOO_SOCKET_IFNAME")
    ray_runtime.use_node_interface("10.1.2.3")                # nothing inherited: the node's interface
    assert os.environ["GLOO_SOCKET_IFNAME"] == "eth7" and capsys.readouterr().err == ""
