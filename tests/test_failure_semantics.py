"""Failure semantics users can rely on (issue 26): ``--collective-timeout`` is checked before
any work and reaches every collective; a rank that is slow but alive is not a lost worker (the
run finishes with the local numbers when the delay fits the timeout, and fails once, without a
group restart, when it does not); a killed driver leaves no torch rank running or writing; a
killed coordinator actor fails a Ray run in one line, in bounded time.

The slow rank is real: ``SURF_DIST_TEST_SLOW_RANK=RANK:SECONDS`` (read by ``runtime.rank``,
for tests only) makes that rank sleep before its job while its peers wait in a collective.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from surf_dist.cli.main import main
from test_resilience import CLI, TRAIN, children, cli_env, rank_pids, ray_process_pid, run_and_kill, wait_for_checkpoint
from test_torch_backend import assert_tree_close

BASELINES = ["baselines", "--quick", "--dtype", "float64", "--no-progress"]
SLOW = "SURF_DIST_TEST_SLOW_RANK"


def run_cli(args: list[str], timeout: float, **env) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, env=cli_env(**env), capture_output=True, text=True, timeout=timeout,
                          check=False)


def numbers(out: Path) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    return summary["methods"]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ": error: " in line]


# ------------------------------------------------------------------ --collective-timeout


@pytest.mark.timeout(60)
def test_a_bad_collective_timeout_is_one_line_before_any_work(tmp_path, capsys):
    out = tmp_path / "o"
    for bad in ("0", "-5", "inf", "nan", "soon", "100000"):
        code = main(BASELINES + ["--backend", "torch", "--workers", "2", "--collective-timeout", bad,
                                 "--out", str(out)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert len(err.splitlines()) == 1 and f"--collective-timeout {bad} must be a number of seconds" in err, err
        assert not out.exists()
    code = main(BASELINES + ["--collective-timeout", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--collective-timeout 5 is not used: the local backend" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert "SURF_DIST_COLLECTIVE_TIMEOUT_S" not in os.environ


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_the_flag_reaches_the_collectives_and_a_slow_rank_is_not_a_lost_one(monkeypatch, tmp_path, capfd):
    """torch ranks, rank 1 asleep for 90 s, ``--collective-timeout 2``: rank 0's first collective
    fails after 2 s naming it, and the run is a job error that says no rank died (exit 1), not
    a lost worker; the flag leaves the environment as it found it."""
    monkeypatch.setenv(SLOW, "1:90")
    monkeypatch.setenv("SURF_DIST_COLLECTIVE_TIMEOUT_S", "50")
    start = time.monotonic()
    code = main(BASELINES + ["--backend", "torch", "--workers", "2", "--collective-timeout", "2",
                             "--out", str(tmp_path / "o")])
    took = time.monotonic() - start
    err = error_lines(capfd.readouterr().err)
    assert code == 1, err
    assert len(err) == 1 and "rank 0: all-reduce" in err[0] and "timed out after 2 s" in err[0], err
    assert "no rank died" in err[0] and "--collective-timeout" in err[0], err
    assert took < 60, f"{took:.1f} s: the 2 s timeout did not apply (rank 1 sleeps 90 s)"
    assert os.environ["SURF_DIST_COLLECTIVE_TIMEOUT_S"] == "50"
    assert not (tmp_path / "o").exists(), "a failed run leaves no output folder"


# ------------------------------------------------------------------ a slow rank under Ray


@pytest.fixture(scope="module")
def local_numbers(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "o"
    done = run_cli(BASELINES + ["--out", str(out)], timeout=120)
    assert done.returncode == 0, done.stderr
    return numbers(out)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_ray_rank_slower_than_the_grace_period_but_within_the_timeout_gives_the_local_numbers(
        tmp_path, local_numbers):
    """Rank 1 sleeps 5 s (five times the supervisor's grace period after a failure, a hundred
    of its polls) inside a 60 s collective timeout: no restart, the local backend's numbers."""
    out = tmp_path / "o"
    done = run_cli(BASELINES + ["--backend", "ray", "--workers", "2", "--collective-timeout", "60",
                                "--out", str(out)], timeout=200, **{SLOW: "1:5"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{SLOW}: rank 1 sleeps 5 s" in done.stdout + done.stderr, "the delay did not happen"
    assert "restarting the group" not in done.stderr
    assert_tree_close(numbers(out), local_numbers)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_ray_rank_slower_than_the_timeout_fails_once_without_a_group_restart(tmp_path):
    """Rank 1 sleeps 30 s, the timeout is 3 s: rank 0's collective times out, rank 1 is alive
    (Ray's actor table says so), so the run fails in one line that says no rank died, without
    restarting the group (a restart would meet the same slow rank again)."""
    start = time.monotonic()
    done = run_cli(BASELINES + ["--backend", "ray", "--workers", "2", "--collective-timeout", "3",
                                "--out", str(tmp_path / "o")], timeout=200, **{SLOW: "1:30"})
    err = error_lines(done.stderr)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "restarting the group" not in done.stderr, done.stderr[-3000:]
    assert len(err) == 1 and "timed out after 3 s" in err[0] and "no rank died" in err[0], done.stderr[-3000:]
    assert time.monotonic() - start < 150
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ a killed driver, a killed coordinator


def snapshot(folder: Path) -> dict:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_killed_driver_leaves_no_torch_rank_running_or_writing(tmp_path):
    """SIGKILL the driver of a 2-rank training once its first checkpoint exists: both ranks
    die with it (parent-death signal), and the run folder does not change afterwards."""
    out, ranks = tmp_path / "run", []
    proc = subprocess.Popen(CLI + TRAIN + ["--steps", "300", "--out", str(out), "--backend", "torch",
                                           "--workers", "2"], env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(proc, out, 180)
        ranks = rank_pids(proc.pid, 2)
        assert len(ranks) == 2, children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        gone_by = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() and "Z" not in _state(pid) for pid in ranks):
            assert time.monotonic() < gone_by, f"a rank outlived its driver: {ranks}"
            time.sleep(0.05)
        before = snapshot(out)
        time.sleep(3)     # a surviving rank writes metrics.csv every step (a step takes well under 1 s)
        assert snapshot(out) == before, "the run folder changed after its driver and ranks were gone"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        for pid in ranks:      # a rank that outlived its driver (the test failed): not left behind
            if _state(pid) != "Z":
                os.kill(pid, signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "Z"
    return stat[stat.rindex(")") + 2]


def coordinator_pid(driver_pid: int) -> int | None:
    """The coordinator actor of the Ray run started by ``driver_pid``."""
    return ray_process_pid(b"ray::Coordinator", driver_pid)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_coordinator_actor_fails_the_ray_run_in_one_line(tmp_path):
    """The coordinator actor (duals, dropouts, checkpoints) SIGKILLed mid-training: its state is
    gone with it, so the run does not restart; it fails within seconds, exit 1, one line that
    names the dead coordinator (the contract of ``runtime.common.JobError``), and no rank is left."""
    out = tmp_path / "run"
    code, _, stderr, took = run_and_kill(out, ["--steps", "300", "--backend", "ray", "--workers", "2"],
                                         victim=coordinator_pid, timeout=200, tag_driver=True, end_timeout=90)
    err = error_lines(stderr)
    assert code == 1, stderr[-3000:]
    assert len(err) == 1 and "the coordinator actor died" in err[0], stderr[-3000:]
    assert "restarting the group" not in stderr
    assert took < 60, f"{took:.1f} s from the kill to the end"
    assert not (out / "model.pt").exists()
