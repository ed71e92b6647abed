"""Resilience: a run that loses a process mid-training resumes from its last checkpoint and ends
exactly where an uninterrupted run ends (float64, same seed): by ``--resume`` after a torch
rank is lost, by itself after a Ray rank actor is lost (the group restarts); a real two-node
Ray cluster in two network namespaces (tests/testbed.py) gives the local backend's numbers
with one rank on each node; ``ray up`` with launch/cluster-local.yaml brings up both namespace
hosts over ssh, runs a training submitted by launch/ray_job.sh, and ``ray down`` stops it.

Every run goes through the command line in a subprocess (``python -m surf_dist.cli.main``), so a
process can be killed from outside with SIGKILL, as a crash or the OOM killer would.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.resilience
# Timeouts are generous (each test takes 20 s to 2 min on the quiet 2-core machine) so that a
# loaded machine does not fail them; a hung collective still fails within the runs' own 60 s.

CLI = [sys.executable, "-m", "surf_dist.cli.main"]
STEPS = 12            # the quick preset checkpoints every val_every = 3 steps
TRAIN = ["train", "--quick", "--dtype", "float64", "--steps", str(STEPS), "--no-progress"]


def cli_env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env.pop("RAY_ADDRESS", None)
    # the checkout's package first, wherever the test runs from
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def train(out: Path, *extra, timeout=300) -> subprocess.CompletedProcess:
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


def wait_for_checkpoint(proc: subprocess.Popen, out: Path, timeout: float) -> None:
    """Until the run of ``proc`` has written its first checkpoint in ``out`` (it must not end first)."""
    deadline = time.monotonic() + timeout
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.005)


def run_and_kill(out: Path, backend_args: list[str], victim, timeout=240.0, tag_driver=False, end_timeout=60.0):
    """Start a training run; once its first checkpoint exists, SIGKILL ``victim(cli_pid)``.
    Returns (exit code, stdout, stderr, seconds from the kill to the end, at most
    ``end_timeout``). ``tag_driver``: the run's processes carry ``SURF_TEST_DRIVER=<cli pid>`` in
    their environment (Ray's workers inherit the driver's), to find them among other Ray
    instances on the machine."""
    env = cli_env()
    launch = CLI + TRAIN + ["--out", str(out), *backend_args]
    if tag_driver:
        launch = ["/bin/sh", "-c", 'SURF_TEST_DRIVER=$$ exec "$@"', "sh", *launch]
    proc = subprocess.Popen(launch, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(proc, out, timeout)
        pid = victim(proc.pid)
        assert pid, "the process to kill was not found"
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        stdout, stderr = proc.communicate(timeout=end_timeout)
        return proc.returncode, stdout, stderr, time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same(actual, expected, where="", tol=0.0):
    """Nested checkpoints equal: bit for bit (dtypes included) when ``tol`` is 0, else up to
    ``tol`` relative and absolute (float64 round-off of sums taken in another order)."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), where
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}/{key}", tol)
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]", tol)
    elif isinstance(expected, torch.Tensor):
        assert actual.dtype == expected.dtype, where
        if tol:
            torch.testing.assert_close(actual, expected, rtol=tol, atol=tol, msg=where)
        else:
            assert torch.equal(actual, expected), where
    elif isinstance(expected, float) and tol:
        assert actual == pytest.approx(expected, rel=tol, abs=tol), where
    else:
        assert actual == expected, where


def timeless(saved: dict) -> dict:
    """A saved model without the record of how its training ran (wall time, device and
    workers): those differ between a resumed and an uninterrupted run by nature."""
    return {k: v for k, v in saved.items() if k not in ("train_seconds", "device")}


def assert_runs_equal(resumed: Path, uninterrupted: Path):
    final, ref = load(resumed / "checkpoint.pt"), load(uninterrupted / "checkpoint.pt")
    assert ref["step"] == STEPS
    assert all(t.dtype == torch.float64 for t in ref["model"].values() if t.is_floating_point())
    assert_same(timeless(final), timeless(ref), "checkpoint.pt")   # model, Adam state, duals, generators, step
    assert_same(timeless(load(resumed / "model.pt")), timeless(load(uninterrupted / "model.pt")), "model.pt")
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


@pytest.mark.timeout(30)
def test_resumed_metrics_drop_rows_written_after_the_checkpoint(tmp_path):
    """A run that stopped after its checkpoint at step 3 left rows 3 and 4 and half a row 5;
    the resumed run (first step 3) keeps rows 0-2 and writes its own from step 3 on."""
    from surf_dist.io.metrics_log import MetricsLogger
    header = "step,outer_loss\r\n"
    (tmp_path / "metrics.csv").write_text(header + "".join(f"{s},0.{s}\r\n" for s in range(5)) + "5,0.")
    logger = MetricsLogger(tmp_path, 1, append=True, first_step=3)
    logger.write({"step": 3, "outer_loss": 9.0, "slacks": torch.zeros(1), "duals": torch.ones(1)})
    logger.flush()
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    logger.close()
    assert [line.split(",")[:2] for line in lines[1:]] == [["0", "0.0"], ["1", "0.1"], ["2", "0.2"], ["3", "9.0"]]


@pytest.mark.slow
@pytest.mark.timeout(120)
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


@pytest.mark.slow
@pytest.mark.timeout(240)
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


def ray_process_pid(prefix: bytes, driver_pid: int) -> int | None:
    """A process of the Ray run started by ``driver_pid`` whose command line starts with
    ``prefix`` (Ray names an actor's process after its class and running method, e.g.
    ``ray::RankActor.run``); every process of that run's own Ray instance (``local_ray``)
    carries the driver's ``SURF_TEST_DRIVER`` tag."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                env = (entry / "environ").read_bytes()
            except OSError:
                continue
            if cmd.startswith(prefix) and f"SURF_TEST_DRIVER={driver_pid}".encode() in env:
                return int(entry.name)
    return None


def rank_actor_pid(cli_pid: int) -> int | None:
    """A rank actor of the Ray run started by ``cli_pid``."""
    return ray_process_pid(b"ray::RankActor.run", cli_pid)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_actor_killed_mid_run_restarts_the_group_from_the_checkpoint_exactly(tmp_path, uninterrupted):
    """A rank actor SIGKILLed after the first checkpoint: the driver restarts the group, the
    training resumes from the checkpoint and ends bit for bit where an uninterrupted Ray run ends."""
    out = tmp_path / "run"
    code, _, stderr, _ = run_and_kill(out, ["--backend", "ray", "--workers", "2"], victim=rank_actor_pid,
                                      tag_driver=True)
    assert code == 0, stderr[-3000:]
    assert re.search(r"ray backend failed: rank \d: its actor died.*; restarting the group from the "
                     r"last checkpoint \(restart 1 of 2\)", stderr), stderr[-3000:]
    assert_runs_equal(out, uninterrupted("ray", 2))


# ------------------------------------------------------------------ a two-node Ray cluster


@pytest.fixture
def ray_tmp():
    """A short folder for Ray's temp dirs (its socket paths must stay under 107 bytes)."""
    folder = Path(tempfile.mkdtemp(prefix="surfray", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)



@pytest.fixture
def ray_cluster(ray_tmp):
    """A head node in surfh1 and a worker node in surfh2, one CPU each; torn down by killing
    the namespaces' processes (never ``ray stop``)."""
    import testbed
    hosts = testbed.create()
    ray_bin = Path(sys.executable).parent / "ray"
    base = ray_tmp
    env = {k: v for k, v in cli_env().items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        (ns1, (_, ip1)), (ns2, (_, ip2)) = hosts.items()
        # no GLOO_SOCKET_IFNAME: the ranks find the interface of their node's address themselves
        for ns, args in ((ns1, ["--head", f"--node-ip-address={ip1}", "--port=6379", "--include-dashboard=false"]),
                         (ns2, [f"--address={ip1}:6379", f"--node-ip-address={ip2}"])):
            started = testbed.run_in(ns, [str(ray_bin), "start", *args, "--num-cpus=1", "--disable-usage-stats",
                                          f"--temp-dir={base / ns}"],
                                     env=env, capture_output=True, text=True, timeout=120)
            assert started.returncode == 0, f"ray start in {ns} failed:\n{started.stdout}\n{started.stderr}"
        yield {"address": f"{ip1}:6379", "env": env, "ips": (ip1, ip2), "head": ns1}
    finally:
        testbed.remove()


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(240)
def test_two_node_ray_cluster_one_rank_per_node_matches_local(ray_cluster, tmp_path):
    import testbed
    steps = ["--steps", "3"]
    ray_out = tmp_path / "ray"
    env = {**ray_cluster["env"], "RAY_ADDRESS": ray_cluster["address"], "SURF_DIST_RAY_PLACEMENT": "STRICT_SPREAD"}
    done = testbed.run_in(ray_cluster["head"], CLI + TRAIN + steps + ["--backend", "ray", "--workers", "2",
                                                                    "--out", str(ray_out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    placed = re.search(r"ray backend: STRICT_SPREAD placement, rank nodes 0=(\S+) 1=(\S+)", done.stderr)
    assert placed, done.stderr[-3000:]
    assert set(placed.groups()) == set(ray_cluster["ips"]), "one rank on each node"
    local = train(tmp_path / "local", *steps, "--backend", "local")
    assert local.returncode == 0, local.stderr
    for name in ("checkpoint.pt", "model.pt"):
        assert_same(timeless(load(ray_out / name)), timeless(load(tmp_path / "local" / name)), name, tol=1e-9)
    rows, ref_rows = ([[float(x) if x else x for x in r.split(",")] for r in p.read_text().splitlines()[1:]]
                      for p in (ray_out / "metrics.csv", tmp_path / "local" / "metrics.csv"))
    assert len(rows) == len(ref_rows) == 3
    for row, ref in zip(rows, ref_rows):
        assert row == [pytest.approx(x, rel=1e-9, abs=1e-9) if x != "" else x for x in ref]


# ------------------------------------------------------------------ the real launcher: ray up

PROBE = """
import json, sys, time
import ray
from ray.util.placement_group import placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
ray.init(address="auto")
deadline = time.time() + 90
while len([n for n in ray.nodes() if n["Alive"]]) < 2 and time.time() < deadline:
    time.sleep(0.5)
group = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
ray.get(group.ready(), timeout=60)
where = ray.remote(lambda: ray.util.get_node_ip_address())
ips = ray.get([where.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(group, i)).remote()
               for i in range(2)], timeout=60)
print("PROBE " + json.dumps({"nodes": sorted(n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]),
                             "cpus": ray.cluster_resources().get("CPU"), "task_ips": ips}))
"""


def start_sshd(ns: str, addr: str, folder: Path) -> subprocess.Popen:
    """An sshd on ``addr`` in namespace ``ns``, as the first process of a PID namespace of its
    own (with its own /proc): whatever runs over its sessions, ``ray stop`` included, sees and
    can signal only that host's processes, as on a separate machine."""
    config = folder / f"sshd_{ns}.conf"
    config.write_text("\n".join([
        f"ListenAddress {addr}:22", f"HostKey {folder / 'host_key'}", f"PidFile {folder / f'sshd_{ns}.pid'}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes", f"AuthorizedKeysFile {folder / 'authorized_keys'}", "StrictModes no",
        "UsePAM no", ""]))
    import testbed
    sshd = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--pid", "--fork", "--mount-proc",
                             shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while testbed.run_in(ns, [sys.executable, "-c", f"import socket; socket.create_connection(('{addr}', 22), 1)"],
                         capture_output=True).returncode != 0:
        assert sshd.poll() is None, f"sshd in {ns} exited: {sshd.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, f"sshd in {ns} is not listening on {addr}:22"
        time.sleep(0.2)
    return sshd


def ray_daemons(pids) -> list[int]:
    """The Ray daemons (raylet, gcs_server) among ``pids``."""
    found = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() in ("raylet", "gcs_server"):
                found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.timeout(480)
def test_ray_up_submit_a_training_ray_down_with_the_local_cluster_file(tmp_path, ray_tmp):
    """The launcher end to end: ``ray up`` with launch/cluster-local.yaml (its provider,
    addresses and start commands; the test only points the key and the ``ray`` binary at its
    own, one CPU and a temp dir per node) brings up both hosts; ``ray exec`` sees two nodes and
    runs a task on each; ``launch/ray_job.sh`` submits a short training that places one rank on
    each node; ``ray down`` stops the cluster. Each host's sshd runs in a PID namespace of its
    own, so the ``ray stop`` that ``ray down`` runs over ssh stops that host's Ray alone: a
    process named ``raylet`` outside the namespaces survives it.

    Ray runs its remote commands in shells that source ~/.bashrc last, which must find the
    environment's ``python`` and ``ray`` first on PATH (launch/cluster-local.yaml): the test
    appends a line to ~/.bashrc that puts this interpreter's folder first, and restores the
    file after."""
    import testbed
    import yaml
    for tool in ("sshd", "ssh", "ssh-keygen", "rsync"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            pytest.skip(f"{tool} is missing (apt: openssh-server, rsync)")
    home = Path.home()
    bootstrap = {p: (p.read_bytes() if p.exists() else None)
                 for p in (home / "ray_bootstrap_config.yaml", home / "ray_bootstrap_key.pem",
                           home / ".bashrc")}
    ssh_dirs = set(Path(tempfile.gettempdir()).glob("ray_ssh_*"))
    name = f"surf-dist-test-{os.getpid()}"
    state_files = [Path(tempfile.gettempdir()) / "ray" / f"cluster-{name}.{ext}" for ext in ("state", "lock")]
    hosts = testbed.create()
    sentinel = None
    try:
        shutil.copy(shutil.which("sleep"), tmp_path / "raylet")       # what `ray stop` would kill
        sentinel = subprocess.Popen([str(tmp_path / "raylet"), "300"])
        with open(home / ".bashrc", "a") as bashrc:
            bashrc.write(f"\nexport PATH={Path(sys.executable).parent}:$PATH "
                         f"PYTHONPATH={Path(__file__).resolve().parents[1]}\n")
        for key in ("client_key", "host_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / key)], check=True)
        shutil.copy(tmp_path / "client_key.pub", tmp_path / "authorized_keys")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)       # sshd's privilege separation folder
        for ns, (_, addr) in hosts.items():
            start_sshd(ns, addr, tmp_path)

        config = yaml.safe_load((Path(__file__).resolve().parents[1] / "launch" / "cluster-local.yaml").read_text())
        assert config["provider"]["head_ip"] == "10.77.0.1" and config["provider"]["worker_ips"] == ["10.77.0.2"]
        ray_bin = str(Path(sys.executable).parent / "ray")
        config["cluster_name"] = name
        config["auth"]["ssh_private_key"] = str(tmp_path / "client_key")
        for kind, node in (("head", "h1"), ("worker", "h2")):
            config[f"{kind}_start_ray_commands"] = [
                re.sub(r"^ray start\b", f"{ray_bin} start", cmd.strip())
                + f" --num-cpus=1 --disable-usage-stats --temp-dir={ray_tmp / node}"
                for cmd in config[f"{kind}_start_ray_commands"]]
        cluster = tmp_path / "cluster.yaml"
        cluster.write_text(yaml.safe_dump(config))
        (tmp_path / "probe.py").write_text(PROBE)

        env = {k: v for k, v in cli_env().items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        env.update(RAY_UP_enable_autoscaler_v2="0", RAY_USAGE_STATS_ENABLED="0")
        head = next(iter(hosts))
        up = testbed.run_in(head, [ray_bin, "up", "-y", str(cluster)], env=env, capture_output=True,
                            text=True, timeout=150)
        assert up.returncode == 0, (up.stdout + up.stderr)[-3000:]
        probe = testbed.run_in(head, [ray_bin, "exec", str(cluster), f"{sys.executable} {tmp_path / 'probe.py'}"],
                               env=env, capture_output=True, text=True, timeout=150)
        assert probe.returncode == 0, (probe.stdout + probe.stderr)[-3000:]
        found = re.search(r"PROBE (\{.*\})", probe.stdout + probe.stderr)
        assert found, (probe.stdout + probe.stderr)[-3000:]
        seen = json.loads(found.group(1))
        assert seen["nodes"] == ["10.77.0.1", "10.77.0.2"]
        assert seen["cpus"] == 2
        assert sorted(seen["task_ips"]) == ["10.77.0.1", "10.77.0.2"], "one task on each node"

        run_dir = tmp_path / "trained"
        job = testbed.run_in(head, ["bash", str(Path(__file__).resolve().parents[1] / "launch" / "ray_job.sh")],
                             env={**env, "CLUSTER": str(cluster), "WORKERS": "2", "RAY": ray_bin,
                                  "ARGS": f"train --quick --steps 3 --no-progress --out {run_dir}"},
                             capture_output=True, text=True, timeout=180)
        assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
        placed = re.search(r"rank nodes 0=(\S+) 1=(\S+)", job.stdout + job.stderr)
        assert placed and set(placed.groups()) == {"10.77.0.1", "10.77.0.2"}, (job.stdout + job.stderr)[-3000:]
        assert load(run_dir / "checkpoint.pt")["step"] == 3 and (run_dir / "model.pt").is_file()

        assert ray_daemons(testbed.pids(head)), "the head runs a raylet before ray down"
        down = testbed.run_in(head, [ray_bin, "down", "-y", str(cluster)], env=env, capture_output=True,
                              text=True, timeout=120)
        assert down.returncode == 0, (down.stdout + down.stderr)[-3000:]
        deadline = time.monotonic() + 30
        while ray_daemons(testbed.pids(head)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not ray_daemons(testbed.pids(head)), "ray down left the head's Ray running"
        assert sentinel.poll() is None, "ray down reached a process outside the test hosts"
    finally:
        if sentinel is not None:
            sentinel.kill()
            sentinel.wait()
        testbed.remove()               # the worker host's Ray, sshd and anything left
        for path, data in bootstrap.items():
            if data is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(data)
        for path in state_files:
            path.unlink(missing_ok=True)
        for folder in set(Path(tempfile.gettempdir()).glob("ray_ssh_*")) - ssh_dirs:
            shutil.rmtree(folder, ignore_errors=True)
