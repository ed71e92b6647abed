"""Resilience: a run that loses a process mid-training resumes from its last checkpoint and ends
exactly where an uninterrupted run ends (float64, same seed); a real two-node Ray cluster in two
network namespaces gives the local backend's numbers with one rank on each node.

Every run goes through the command line in a subprocess (``python -m surf_dist.cli``), so a
process can be killed from outside with SIGKILL, as a crash or the OOM killer would.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.resilience

CLI = [sys.executable, "-m", "surf_dist.cli"]
STEPS = 12            # the quick preset checkpoints every val_every = 3 steps
TRAIN = ["train", "--quick", "--dtype", "float64", "--steps", str(STEPS), "--no-progress"]


def cli_env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("RAY_ADDRESS", None)
    # the checkout's package first, wherever the test runs from
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def train(out: Path, *extra, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + TRAIN + ["--out", str(out), *extra], env=cli_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of ``pid``'s live children."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == pid:
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except (OSError, ValueError):
            continue
    return found


def start_time(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def rank_pids(cli_pid: int, workers: int) -> list[int]:
    """The spawned ranks of a torch-backend run, rank 0 first (they are started in rank order)."""
    ranks = [p for p, cmd in children(cli_pid) if "spawn_main" in cmd and "resource_tracker" not in cmd]
    if len(ranks) != workers:
        return []
    return sorted(ranks, key=lambda p: (start_time(p), p))


def run_and_kill(out: Path, backend_args: list[str], victim, timeout=120.0):
    """Start a training run; once its first checkpoint exists, SIGKILL ``victim(cli_pid)``.
    Returns (completed process, checkpoint step at the kill)."""
    proc = subprocess.Popen(CLI + TRAIN + ["--out", str(out), *backend_args], env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.communicate()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        pid = victim(proc.pid)
        assert pid, "the process to kill was not found"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        stdout, stderr = proc.communicate(timeout=60)
        return proc.returncode, stdout, stderr, time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same(actual, expected, where=""):
    """Exact equality of nested checkpoints (tensors bit for bit, dtypes included)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype and torch.equal(actual, expected), where
    else:
        assert actual == expected, where


def assert_runs_equal(resumed: Path, uninterrupted: Path):
    final, ref = load(resumed / "checkpoint.pt"), load(uninterrupted / "checkpoint.pt")
    assert ref["step"] == STEPS
    assert all(t.dtype == torch.float64 for t in ref["model"].values() if t.is_floating_point())
    assert_same(final, ref, "checkpoint.pt")        # model, Adam state, duals, generators, step
    assert_same(load(resumed / "model.pt"), load(uninterrupted / "model.pt"), "model.pt")
    rows, ref_rows = ((p / "metrics.csv").read_text().splitlines() for p in (resumed, uninterrupted))
    assert [r.split(",")[0] for r in rows] == ["step"] + [str(s) for s in range(STEPS)], "one row per step"
    assert rows == ref_rows


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Uninterrupted runs with the same seed, one per backend (made on first use)."""
    made = {}

    def get(backend: str, workers: int) -> Path:
        if backend not in made:
            out = tmp_path_factory.mktemp("uninterrupted") / backend
            done = train(out, "--backend", backend, "--workers", str(workers))
            assert done.returncode == 0, done.stderr
            made[backend] = out
        return made[backend]
    return get


# ------------------------------------------------------------------ kill and resume


@pytest.mark.timeout(240)
def test_local_run_killed_after_a_checkpoint_resumes_exactly(tmp_path, uninterrupted):
    out = tmp_path / "run"
    code, _, _, _ = run_and_kill(out, ["--backend", "local"], victim=lambda pid: pid)
    assert code == -signal.SIGKILL
    assert not (out / "model.pt").exists(), "killed before the end"
    saved_step = load(out / "checkpoint.pt")["step"]
    assert 0 < saved_step < STEPS
    done = train(out, "--resume", "--backend", "local")
    assert done.returncode == 0, done.stderr
    assert_runs_equal(out, uninterrupted("local", 1))


@pytest.mark.timeout(300)
def test_torch_rank_killed_mid_run_fails_fast_naming_it_then_resumes_exactly(tmp_path, uninterrupted):
    out = tmp_path / "run"
    code, _, stderr, took = run_and_kill(out, ["--backend", "torch", "--workers", "2"],
                                         victim=lambda pid: (rank_pids(pid, 2) or [None, None])[1])
    assert code != 0
    assert re.search(r"torch backend failed: rank 1: was killed by SIGKILL", stderr), stderr[-3000:]
    assert took < 20, f"the run took {took:.1f} s to fail after losing rank 1 (collective timeout: 60 s)"
    assert not (out / "model.pt").exists(), "killed before the end"
    saved_step = load(out / "checkpoint.pt")["step"]
    assert 0 < saved_step < STEPS
    done = train(out, "--resume", "--backend", "torch", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert_runs_equal(out, uninterrupted("torch", 2))


# ------------------------------------------------------------------ a two-node Ray cluster


def assert_close(actual, expected, where=""):
    """Nested checkpoints equal up to float64 round-off (gradients summed across ranks)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{where}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype, where
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9, msg=where)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-9, abs=1e-9), where
    else:
        assert actual == expected, where


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """A head node in surfh1 and a worker node in surfh2, one CPU each; torn down by killing
    the namespaces' processes (never ``ray stop``)."""
    import testbed
    hosts = testbed.create()
    ray_bin = Path(sys.executable).parent / "ray"
    base = tmp_path_factory.mktemp("ray")
    env = {k: v for k, v in cli_env().items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        (ns1, (if1, ip1)), (ns2, (if2, ip2)) = hosts.items()
        for ns, iface, args in ((ns1, if1, ["--head", f"--node-ip-address={ip1}", "--port=6379",
                                            "--include-dashboard=false"]),
                                (ns2, if2, [f"--address={ip1}:6379", f"--node-ip-address={ip2}"])):
            started = testbed.run_in(ns, [str(ray_bin), "start", *args, "--num-cpus=1", "--disable-usage-stats",
                                          f"--temp-dir={base / ns}"],
                                     env={**env, "GLOO_SOCKET_IFNAME": iface}, capture_output=True,
                                     text=True, timeout=120)
            assert started.returncode == 0, f"ray start in {ns} failed:\n{started.stdout}\n{started.stderr}"
        yield {"address": f"{ip1}:6379", "env": env, "ips": (ip1, ip2), "head": ns1}
    finally:
        testbed.remove()


@pytest.mark.timeout(240)
def test_two_node_ray_cluster_one_rank_per_node_matches_local(ray_cluster, tmp_path):
    import testbed
    steps = ["--steps", "3"]
    ray_out = tmp_path / "ray"
    env = {**ray_cluster["env"], "RAY_ADDRESS": ray_cluster["address"], "SURF_DIST_RAY_PLACEMENT": "STRICT_SPREAD"}
    done = testbed.run_in(ray_cluster["head"], CLI + TRAIN + steps + ["--backend", "ray", "--workers", "2",
                                                                    "--out", str(ray_out)],
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    placed = re.search(r"ray backend: STRICT_SPREAD placement, rank nodes 0=(\S+) 1=(\S+)", done.stderr)
    assert placed, done.stderr[-3000:]
    assert set(placed.groups()) == set(ray_cluster["ips"]), "one rank on each node"
    local = train(tmp_path / "local", *steps, "--backend", "local")
    assert local.returncode == 0, local.stderr
    for name in ("checkpoint.pt", "model.pt"):
        assert_close(load(ray_out / name), load(tmp_path / "local" / name), name)
    rows, ref_rows = ([[float(x) if x else x for x in r.split(",")] for r in p.read_text().splitlines()[1:]]
                      for p in (ray_out / "metrics.csv", tmp_path / "local" / "metrics.csv"))
    assert len(rows) == len(ref_rows) == 3
    for row, ref in zip(rows, ref_rows):
        assert row == [pytest.approx(x, rel=1e-9, abs=1e-9) if x != "" else x for x in ref]
