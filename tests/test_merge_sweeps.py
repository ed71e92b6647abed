"""studies/merge_sweeps.py: runs of one sweep experiment that tuned other baselines merge into
one result only where they measured the same thing (the learned rows equal to the last digit)."""
import importlib.util
import json
from pathlib import Path

import pytest

from surf_dist.commands.experiments.compression import pareto
from surf_dist.io.config import preset

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "merge_sweeps.py"
spec = importlib.util.spec_from_file_location("merge_sweeps", SCRIPT)
merge_sweeps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(merge_sweeps)


def row(kind, accuracy, bytes_):
    return {"kind": kind, "rounds": 20, "accuracy": accuracy, "accuracy_per_draw": [accuracy] * 3,
            "bytes_per_agent": bytes_, "bytes_to_target": None, "rounds_to_target": None}


def run_folder(tmp_path, name, baselines: dict, learned=0.9):
    """A compression result over none and q8 with ``baselines`` {name: (acc none, acc q8)}."""
    result = {"config": preset("quick").to_dict(), "compressors": ["none", "q8"], "rounds": 20,
              "target": {"accuracy": learned, "method": "pretrained", "compressor": "none"},
              "methods": {c: {"pretrained": row("learned", learned, b),
                              **{n: row("baseline", acc[i], b) for n, acc in baselines.items()}}
                          for i, (c, b) in enumerate([("none", 1000.0), ("q8", 260.0)])},
              "learned_versus_full_rows": {}, "pareto": [],
              "protocol": {"report_seed": 43, "methods": list(baselines)}, "wall_seconds": 1.0, "command": name}
    folder = tmp_path / name
    folder.mkdir()
    (folder / "compression.json").write_text(json.dumps(result))
    return folder


def test_two_runs_merge_into_every_baseline_and_one_pareto_front(tmp_path):
    a = run_folder(tmp_path, "a", {"dgd": (0.8, 0.7)})
    b = run_folder(tmp_path, "b", {"choco": (0.85, 0.95)})
    assert merge_sweeps.main([str(a), str(b), "--out", str(tmp_path / "m")]) == 0
    merged = json.loads((tmp_path / "m" / "compression.json").read_text())
    assert {c: sorted(m) for c, m in merged["methods"].items()} == {c: ["choco", "dgd", "pretrained"]
                                                                   for c in ("none", "q8")}
    assert merged["protocol"]["methods"] == ["dgd", "choco"] and merged["merged_from"] == ["a", "b"]
    points = [(r["bytes_per_agent"], r["accuracy"], c, n) for c, m in merged["methods"].items() for n, r in m.items()]
    assert merged["pareto"] == pareto(points) and merged["pareto"][0]["method"] == "choco"    # q8: 0.95 at 260 B
    assert (tmp_path / "m" / "compression.png").is_file() and (tmp_path / "m" / "compression.csv").is_file()


def test_runs_whose_learned_rows_differ_are_refused(tmp_path):
    a = run_folder(tmp_path, "a", {"dgd": (0.8, 0.7)})
    b = run_folder(tmp_path, "b", {"choco": (0.85, 0.95)}, learned=0.9000001)
    with pytest.raises(SystemExit, match="pretrained under none differs between the runs"):
        merge_sweeps.main([str(a), str(b), "--out", str(tmp_path / "m")])
    assert not (tmp_path / "m").exists()
