"""No shared filesystem: a Ray cluster whose worker node cannot see the driver's folders.

The layout of ``launch/cluster-cloud.yaml``: a head node with no CPU (the driver and the
coordinator actor) in namespace ``surfh1``, and a worker node with 2 CPUs in ``surfh2`` that
hosts every rank. The worker node runs in a mount namespace of its own with an empty tmpfs over
the folder the commands run in (tests/testbed.py), so a rank that opened a run folder, a model
or a checkpoint of the driver's would find nothing. Training, ``--init-from``, ``evaluate RUN``,
the demo and a killed rank actor's restart with resume all run there and give the local
backend's numbers; so do the baselines and a training on a ``--data-root`` MNIST (idx files made
tiny by the test) and an edge-list topology that exist only on the driver's host.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_resilience import CLI, STEPS, TRAIN, assert_same, cli_env, load, ray_tmp, timeless  # noqa: E402,F401

pytestmark = [pytest.mark.resilience, pytest.mark.cluster, pytest.mark.slow]


@pytest.fixture
def cloud(ray_tmp, tmp_path):
    """The head (0 CPUs) in surfh1; the worker (2 CPUs) in surfh2 with a private tmpfs over
    ``tmp_path / 'work'``, where the commands run; torn down by killing the namespaces' processes."""
    import testbed
    hosts = testbed.create()
    (ns1, (_, ip1)), (ns2, (_, ip2)) = hosts.items()
    work = tmp_path / "work"
    work.mkdir()
    ray_bin = Path(sys.executable).parent / "ray"
    env = {k: v for k, v in cli_env().items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        head = [str(ray_bin), "start", "--head", f"--node-ip-address={ip1}", "--port=6379",
                "--include-dashboard=false", "--num-cpus=0", "--disable-usage-stats", f"--temp-dir={ray_tmp / ns1}"]
        started = testbed.run_in(ns1, head, env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, f"ray start in {ns1}: {started.stdout}\n{started.stderr}"
        node = (f"mount -t tmpfs tmpfs {work} && exec {ray_bin} start --address={ip1}:6379 --node-ip-address={ip2} "
                f"--num-cpus=2 --disable-usage-stats --temp-dir={ray_tmp / ns2}")
        started = testbed.run_in(ns2, ["unshare", "--mount", "--propagation", "private", "sh", "-c", node],
                                 env=env, capture_output=True, text=True, timeout=120)
        if started.returncode != 0 and "unshare" in started.stderr:
            pytest.skip(f"cannot make a private mount namespace: {started.stderr.strip()[-300:]}")
        assert started.returncode == 0, f"ray start in {ns2}: {started.stdout}\n{started.stderr}"
        yield {"work": work, "head": ns1, "worker": ns2,
               "env": {**env, "RAY_ADDRESS": f"{ip1}:6379", "SURF_DIST_RAY_RETRIES": "1"}}
    finally:
        testbed.remove()


def on_cluster(cloud, *args, timeout=300) -> subprocess.CompletedProcess:
    """A command line run by a driver on the head node, in the folder the worker cannot see."""
    import testbed
    return testbed.run_in(cloud["head"], CLI + list(args) + ["--backend", "ray", "--workers", "2"],
                          env=cloud["env"], cwd=cloud["work"], capture_output=True, text=True, timeout=timeout)


def locally(cloud, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), env=cli_env(), cwd=cloud["work"], capture_output=True, text=True,
                          timeout=timeout, check=False)


def ranks_on(ns: str) -> list[int]:
    """The rank actors' processes in network namespace ``ns``."""
    import testbed
    found = []
    for pid in testbed.pids(ns):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::RankActor.run"):
                found.append(pid)
        except OSError:
            continue
    return found


def worker_sees(cloud, path: Path) -> bool:
    """Whether ``path`` exists in the worker node's view of the filesystem (its Ray processes'
    mount namespace). A failure to look (nsenter itself failing) is an error, never a "no"."""
    import testbed
    pid = testbed.pids(cloud["worker"])[0]
    looked = subprocess.run(["nsenter", "-t", str(pid), "-m", "sh", "-c", 'if test -e "$1"; then echo seen; '
                             'else echo unseen; fi', "sh", str(path)], capture_output=True, text=True, timeout=30)
    assert looked.returncode == 0 and looked.stdout.strip() in ("seen", "unseen"), looked.stderr
    return looked.stdout.strip() == "seen"


def assert_summaries_equal(cloud, command: list[str], learned: str) -> None:
    """``command`` on the cluster and locally: the same methods (``learned`` among them), the
    same pooled accuracy curves."""
    done = on_cluster(cloud, *command, "--out", "cluster_out")
    assert done.returncode == 0, done.stderr[-3000:]
    assert locally(cloud, *command, "--out", "local_out").returncode == 0
    ours, ref = (json.loads((cloud["work"] / f / "summary.json").read_text())["methods"]
                 for f in ("cluster_out", "local_out"))
    assert set(ours) == set(ref) and learned in ours
    for name in ref:
        assert ours[name]["accuracy"] == pytest.approx(ref[name]["accuracy"], abs=1e-9, nan_ok=True), name
    for folder in ("cluster_out", "local_out"):
        shutil.rmtree(cloud["work"] / folder)


def assert_models_equal(a: Path, b: Path) -> None:
    for name in ("checkpoint.pt", "model.pt"):
        assert_same(timeless(load(a / name)), timeless(load(b / name)), name, tol=1e-9)


@pytest.mark.slow
@pytest.mark.timeout(600)   # measured 191 s and 357 s (setup included) on one busy core
def test_training_warm_start_evaluate_and_a_restart_need_no_shared_filesystem(cloud):
    work = cloud["work"]
    steps = ["--steps", "3"]
    # a training: every rank on the worker node; run folder, metrics and checkpoints on the driver's
    done = on_cluster(cloud, *TRAIN, *steps, "--out", "a")
    assert done.returncode == 0, done.stderr[-3000:]
    assert locally(cloud, *TRAIN, *steps, "--out", "a_local").returncode == 0
    assert_models_equal(work / "a", work / "a_local")
    rows, ref_rows = ([[float(x) if x else x for x in r.split(",")] for r in (work / f / "metrics.csv").read_text()
                       .splitlines()[1:]] for f in ("a", "a_local"))
    assert len(rows) == len(ref_rows) == 3
    for row, ref in zip(rows, ref_rows):
        assert row == [pytest.approx(x, rel=1e-9, abs=1e-9) if x != "" else x for x in ref]
    assert not worker_sees(cloud, work / "a" / "model.pt"), "the worker node sees the driver's files"

    # --init-from a run only the driver sees
    done = on_cluster(cloud, *TRAIN, *steps, "--init-from", "a", "--out", "b")
    assert done.returncode == 0, done.stderr[-3000:]
    assert locally(cloud, *TRAIN, *steps, "--init-from", "a", "--out", "b_local").returncode == 0
    assert_models_equal(work / "b", work / "b_local")

    # evaluate RUN, and the demo (the shipped optimizer against baselines tuned on validation tasks)
    assert_summaries_equal(cloud, ["evaluate", "a", "--dtype", "float64", "--no-progress"], "a")
    assert_summaries_equal(cloud, ["demo", "--quick", "--dtype", "float64", "--rounds", "24", "--no-progress"],
                           "pretrained")

    # a rank actor killed after the first checkpoint: the group restarts and resumes from the
    # checkpoint the driver reads and sends
    launch = ["ip", "netns", "exec", cloud["head"], *CLI, *TRAIN, "--out", "r", "--backend", "ray", "--workers", "2"]
    proc = subprocess.Popen(launch, env=cloud["env"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 240
        while not (work / "r" / "checkpoint.pt").exists():
            assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.communicate()}"
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.005)
        victims = ranks_on(cloud["worker"])
        assert victims, "no rank actor found on the worker node"
        os.kill(victims[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr[-3000:]
    assert re.search(r"restarting the group from the last checkpoint", stderr), stderr[-3000:]
    assert locally(cloud, *TRAIN, "--out", "r_local").returncode == 0
    assert load(work / "r" / "checkpoint.pt")["step"] == STEPS
    assert_models_equal(work / "r", work / "r_local")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_dataset_and_an_edge_list_only_on_the_driver_host_give_the_local_numbers(cloud):
    """MNIST idx files and an edge list in the folder the worker node cannot see: the driver
    reads them and sends them; the baselines and a training on the cluster equal local runs."""
    from test_job_inputs import make_inputs
    make_inputs(cloud["work"] / "inputs")
    assert worker_sees(cloud, Path(sys.executable)), "the check must be able to say yes"
    for name in ("inputs/graph.edges", "inputs/mnist/train-images-idx3-ubyte"):
        assert (cloud["work"] / name).is_file() and not worker_sees(cloud, cloud["work"] / name), name
    task = ["--dtype", "float64", "--no-progress", "--dataset", "mnist", "--data-root", "inputs/mnist",
            "--topology", "inputs/graph.edges"]
    baselines = ["baselines", "--quick", *task]
    done = on_cluster(cloud, *baselines, "--out", "cluster_b")
    assert done.returncode == 0, done.stderr[-3000:]
    assert locally(cloud, *baselines, "--out", "local_b").returncode == 0
    ours, ref = (json.loads((cloud["work"] / f / "summary.json").read_text())["methods"] for f in ("cluster_b", "local_b"))
    assert set(ours) == set(ref) and ref
    for name in ref:
        assert ours[name]["accuracy"] == pytest.approx(ref[name]["accuracy"], abs=1e-9, nan_ok=True), name
    train = TRAIN + task[3:]
    done = on_cluster(cloud, *train, "--out", "cluster_t")
    assert done.returncode == 0, done.stderr[-3000:]
    assert locally(cloud, *train, "--out", "local_t").returncode == 0
    assert_models_equal(cloud["work"] / "cluster_t", cloud["work"] / "local_t")
