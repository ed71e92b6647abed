"""``surf-dist bench --resume``: each baseline is saved in --out as it finishes; a killed bench
resumed there runs only the baselines not saved and writes the numbers of an uninterrupted run;
saved results made with other settings are refused before anything runs."""
import json
import shutil

import pytest

from surf_dist.cli.main import main
from surf_dist.commands import bench

METHODS = ("dgd", "gradient_tracking", "dgd_heavy_ball")
ARGS = ["pretrained", "--quick", "--dtype", "float64", "--draws", "1", "--tasks-per-draw", "2", "--rounds", "24", "--bootstrap", "20", "--no-progress", "--methods", ",".join(METHODS)]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_bench_resumed_writes_the_numbers_of_an_uninterrupted_one(tmp_path, capsys, monkeypatch):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert main(["bench", "--out", str(whole), *ARGS, "--tune-tasks", "2"]) == 0
    assert sorted(p.name for p in (whole / "baselines").iterdir()) == sorted(f"{n}.pt" for n in METHODS)
    (killed / "baselines").mkdir(parents=True)          # killed after two baselines: their files only
    for name in METHODS[1:]:
        shutil.copy(whole / "baselines" / f"{name}.pt", killed / "baselines" / f"{name}.pt")
    ran, real = [], bench.baseline_job
    monkeypatch.setattr(bench, "baseline_job", lambda name, *a, **k: ran.append(name) or real(name, *a, **k))
    capsys.readouterr()
    assert main(["bench", "--out", str(killed), "--resume", *ARGS, "--tune-tasks", "2"]) == 0
    assert ran == ["dgd"] and "not run again" in capsys.readouterr().err
    a, b = (json.loads((p / "bench.json").read_text()) for p in (whole, killed))
    for key in ("protocol", "methods", "comparisons", "centralized", "limit", "baselines"):
        assert a[key] == b[key], key
    # other settings than the saved results': one line, exit 2, nothing written or run
    files = sorted(p.stat().st_mtime_ns for p in killed.rglob("*"))
    for extra, differs in ((["--tune-tasks", "3"], "protocol.tune_tasks"),
                           (["--tune-tasks", "2", "--agents", "6"], "config.task.num_agents")):
        assert main(["bench", "--out", str(killed), "--resume", *ARGS, *extra]) == 2
        err = capsys.readouterr().err
        assert f"({differs} differs)" in err and len(err.splitlines()) == 1, err
    assert sorted(p.stat().st_mtime_ns for p in killed.rglob("*")) == files and ran == ["dgd"]
