"""``surf-dist experiment``: every experiment on the quick preset with tiny trained runs (files
written, numbers consistent with hand computations), and the descent bookkeeping against an oracle."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from surf_dist.commands import jobs
from surf_dist.cli.main import main
from surf_dist.comm.local import LocalCommunicator
from surf_dist.methods.constraints import descent_values
from surf_dist.core.evaluate import evaluate_unrolled
from surf_dist.commands.experiments import exceeds, layer_statistics, summarize_descent
from surf_dist.problem.softmax import loss_per_agent
from surf_dist.runtime.common import make_worker
from surf_dist.core.train import unroll


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained runs (quick preset, 2 steps): SURF, unrolled, SURF with eps 0.3."""
    root = tmp_path_factory.mktemp("runs")
    flags = {"surf": [], "unrolled": ["--unconstrained"], "surf_eps0.3": ["--eps", "0.3"]}
    for name, extra in flags.items():
        code = main(["train", "--quick", "--steps", "2", "--out", str(root / name), "--no-progress", *extra])
        assert code == 0
    return {name: str(root / name) for name in flags}


def experiment(name, out, *args):
    return main(["experiment", name, "--out", str(out), "--no-progress", *args])


def test_exceeds_is_the_descent_test_by_hand():
    curve = np.array([1.0, 0.9, 0.95, 0.5, 0.5])
    # eps 0.1: 0.9 > 0.9 no (equal); 0.95 > 0.81 yes; 0.5 > 0.855 no; 0.5 > 0.45 yes
    assert exceeds(curve, 0.1).tolist() == [False, True, False, True]
    # rises: 0.9 < 1 no; 0.95 > 0.9 yes; no; 0.5 == 0.5 no (not strictly)
    assert exceeds(curve, 0.0).tolist() == [False, True, False, False]
    # per-task columns: the fraction of tasks is the column mean
    two = np.stack([curve, curve[::-1]], axis=1)   # task 2: 0.5, 0.5, 0.95, 0.9, 1.0 rises at l = 2, 4
    assert exceeds(two, 0.0).mean(1).tolist() == [0.0, 1.0, 0.0, 0.5]
    stats = {"violated_mean": [False, True, True], "violated_tasks": [0.0, 0.5, 1.0],
             "violated_agents": [0.25, 0.25, 0.25], "rose_mean": [False] * 3, "rose_tasks": [0.0] * 3,
             "rose_agents": [0.0, 0.0, 0.3]}
    totals = summarize_descent(stats)
    assert totals["violated_layers_mean"] == 2 and totals["violated_fraction_task_layers"] == pytest.approx(0.5)
    assert totals["rose_fraction_agent_layers"] == pytest.approx(0.1)


@pytest.mark.timeout(60)
def test_layer_statistics_match_a_loop_over_agents(runs):
    cfg = jobs.run_config(Path(runs["surf"]))
    worker = make_worker(cfg, LocalCommunicator())
    model = jobs.load_model(Path(runs["surf"]), worker)
    tasks = worker.family.batch("test", range(2))
    eps = 0.3      # a large eps makes violations likely, so the count is not trivially 0
    stats = layer_statistics(model, worker, tasks, eps, "loss")
    with torch.no_grad():
        shards, Ws = unroll(model, worker, tasks)
        g = descent_values(Ws, shards.X_seen, shards.Y_seen, "loss").numpy()       # (L+1, T n)
        held = np.stack([loss_per_agent(W, shards.X_held, shards.Y_held).numpy() for W in Ws])
    n, L = worker.num_agents, len(Ws) - 1
    for l in range(1, L + 1):
        bad = rose = 0
        for node in range(len(tasks) * n):
            bad += g[l, node] > (1 - eps) * g[l - 1, node]
            rose += held[l, node] > held[l - 1, node]
        assert stats["violated_agents"][l - 1] == pytest.approx(bad / (len(tasks) * n))
        assert stats["rose_agents"][l - 1] == pytest.approx(rose / (len(tasks) * n))
        task_g = [g[:, t * n:(t + 1) * n].mean(1) for t in range(len(tasks))]
        frac = np.mean([tg[l] > (1 - eps) * tg[l - 1] for tg in task_g])
        assert stats["violated_tasks"][l - 1] == pytest.approx(frac)
        mean_g = np.mean(task_g, axis=0)
        assert stats["violated_mean"][l - 1] == bool(mean_g[l] > (1 - eps) * mean_g[l - 1])


@pytest.mark.timeout(60)
def test_layers_writes_files_and_per_layer_curves(runs, tmp_path):
    out = tmp_path / "layers"
    assert experiment("layers", out, "--runs", runs["surf"], runs["unrolled"]) == 0
    result = json.loads((out / "layers.json").read_text())
    assert set(result["models"]) == {"surf", "unrolled"} and (out / "layers.png").stat().st_size > 0
    L = result["config"]["model"]["num_layers"]
    for entry in result["models"].values():
        per_task = np.array(entry["descent"]["g_per_task"])                     # (L+1, T)
        assert per_task.shape[0] == L + 1 and len(entry["curve"]["loss"]) == L + 1
        assert entry["descent"]["violated_tasks"] == pytest.approx(
            exceeds(per_task, result["eps"]).mean(1).tolist())
    with open(out / "layers.csv") as f:
        assert len(list(csv.reader(f))) == 1 + 2 * (L + 1)


@pytest.mark.timeout(60)
def test_async_pairs_the_same_draws(runs, tmp_path):
    out = tmp_path / "async"
    assert experiment("async", out, "--runs", runs["surf"], runs["unrolled"],
                      "--async-levels", "0,1,3", "--async-draws", "3") == 0
    result = json.loads((out / "async.json").read_text())
    assert result["n_async"] == [0, 1, 3]          # a level above the 8 agents is refused (issue 25)
    assert [len(d) for d in result["raw"]["surf"]] == [1, 3, 3]   # level 0 has nothing to draw
    for level, pair in enumerate(result["paired_surf_minus_unrolled"]):
        diff = np.array(result["raw"]["surf"][level]) - np.array(result["raw"]["unrolled"][level])
        assert pair["mean"] == pytest.approx(diff.mean())
    s = result["stats"]["surf"]
    assert s[0]["std"] == 0 and s[2]["drop_vs_first_level"] == pytest.approx(s[0]["mean"] - s[2]["mean"])
    assert (out / "async.png").is_file() and (out / "async.csv").is_file()


@pytest.mark.timeout(60)
def test_communication_rounds_to_target_from_the_curves(runs, tmp_path):
    out = tmp_path / "comm"
    assert experiment("communication", out, "--runs", runs["surf"], runs["unrolled"], "--rounds", "12") == 0
    result = json.loads((out / "communication.json").read_text())
    methods = result["summary"]["methods"]
    assert {"surf", "unrolled", "dgd", "dsgd", "gradient_tracking", "dfedavgm"} == set(methods)
    key = result["key"]
    target = methods["surf"]["local_accuracy"][-1]
    for name, curve in methods.items():
        reached = [r for r, a in zip(curve["rounds"], curve["local_accuracy"]) if a >= target]
        assert key["methods"][name]["rounds_to_target"] == (reached[0] if reached else None)
    assert "centralized" in result["summary"] and (out / "communication.png").is_file()
    # reusing the baselines of 'surf-dist baselines' gives the same numbers
    assert main(["baselines", "--quick", "--rounds", "12", "--out", str(tmp_path / "bl"), "--no-progress"]) == 0
    out2 = tmp_path / "comm2"
    assert experiment("communication", out2, "--runs", runs["surf"], runs["unrolled"], "--rounds", "12",
                      "--baselines", str(tmp_path / "bl")) == 0
    reused = json.loads((out2 / "communication.json").read_text())
    assert set(reused["summary"]["methods"]) == set(methods)
    for name, curve in methods.items():
        for k in ("rounds", "bytes_per_agent", "loss", "local_accuracy"):
            assert reused["summary"]["methods"][name][k] == pytest.approx(curve[k])
    assert reused["summary"]["centralized"] == pytest.approx(result["summary"]["centralized"])
    assert experiment("communication", tmp_path / "comm3", "--runs", runs["surf"], runs["unrolled"],
                      "--baselines", str(tmp_path / "bl")) == 2     # 20 rounds asked, 12 saved


@pytest.mark.timeout(60)
def test_transfer_to_another_topology_and_size(runs, tmp_path):
    out = tmp_path / "transfer"
    assert experiment("transfer", out, "--runs", runs["surf"], runs["unrolled"],
                      "--topologies", "star,ring", "--test-agents", "6") == 0
    result = json.loads((out / "transfer.json").read_text())
    got = [(s["topology"], s["num_agents"]) for s in result["settings"]]
    assert got == [("ring", 8), ("star", 8), ("ring", 6)]    # the training setting first, ring not twice
    assert set(result["settings"][0]["summary"]["methods"]) == {"surf", "unrolled", "dgd"}
    # the training setting reproduces the plain evaluation of the model on its own test tasks
    cfg = jobs.run_config(Path(runs["surf"]))
    worker = make_worker(cfg, LocalCommunicator())
    model = jobs.load_model(Path(runs["surf"]), worker)
    curve = evaluate_unrolled(model, worker, worker.family.batch("test", range(cfg.eval.test_tasks)))
    assert result["settings"][0]["summary"]["methods"]["surf"]["local_accuracy"] == pytest.approx(curve["local_accuracy"])
    bytes_6 = result["settings"][2]["summary"]["methods"]["surf"]["bytes_per_agent"]
    assert bytes_6[1] == pytest.approx(result["settings"][0]["summary"]["methods"]["surf"]["bytes_per_agent"][1])
    assert (out / "transfer.png").is_file()


@pytest.mark.timeout(60)
def test_eps_from_runs_and_from_training(runs, tmp_path):
    out = tmp_path / "eps"
    assert experiment("eps", out, "--runs", runs["surf"], runs["surf_eps0.3"]) == 0
    result = json.loads((out / "eps.json").read_text())
    assert {m["eps"] for m in result["models"].values()} == {0.05, 0.3}
    assert result["target"] == pytest.approx(min(m["final"]["local_accuracy"] for m in result["models"].values()))
    for m in result["models"].values():   # every model reaches the lowest final accuracy
        assert m["rounds_to_target"] is not None and m["rounds_to_target"] <= m["curve"]["rounds"][-1]
    out2 = tmp_path / "eps_trained"      # one eps value trains in this process
    assert experiment("eps", out2, "--quick", "--steps", "1", "--eps-values", "0.1") == 0
    trained = json.loads((out2 / "eps.json").read_text())
    assert list(trained["models"]) == ["surf_eps0.1"] and (out2 / "run_surf_eps0.1" / "model.pt").is_file()
    assert (out2 / "eps.png").is_file()


@pytest.mark.timeout(30)
def test_refuses_non_empty_out_and_ambiguous_runs(runs, tmp_path, capsys):
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert experiment("layers", out, "--runs", runs["surf"], runs["unrolled"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert "not empty" in capsys.readouterr().err
    assert experiment("layers", tmp_path / "two", "--runs", runs["surf"], runs["surf_eps0.3"]) == 2
    assert "both 'surf'" in capsys.readouterr().err
    assert experiment("eps", tmp_path / "both", "--runs", runs["surf"], "--eps-values", "0.1") == 2
    assert experiment("eps", tmp_path / "free", "--runs", runs["surf"], runs["unrolled"]) == 2
    assert "constrained" in capsys.readouterr().err


@pytest.mark.slow           # two benches (every baseline's grid tuned twice)
@pytest.mark.timeout(400)
def test_compression_experiment_counts_bytes_by_hand_and_compares_like_for_like(tmp_path, capsys):
    """The shipped optimizer and two baselines, with full rows and at 2 bits, on the quick
    preset (8 agents on a ring, 2 neighbours, float32, d = 650): bytes per agent after 20 rounds
    are 20 x 2 x 650 x 4 with full rows and 20 x 2 x (ceil(2 x 650 / 8) + 4) at 2 bits."""
    out = tmp_path / "compression"
    assert experiment("compression", out, "--quick", "--methods", "dgd,choco", "--compressors", "none,q2") == 0
    result = json.loads((out / "compression.json").read_text())
    assert result["rounds"] == 20 and set(result["methods"]) == {"none", "q2"}
    for spec, per_message in (("none", 650 * 4), ("q2", 163 + 4)):
        rows = result["methods"][spec]
        assert set(rows) == {"dgd", "choco", "pretrained"}
        assert rows["pretrained"]["bytes_per_agent"] == 20 * 2 * per_message
        assert rows["dgd"]["bytes_per_agent"] == 20 * 2 * per_message
    assert result["learned_versus_full_rows"]["pretrained"]["none"]["mean"] == 0.0
    assert result["methods"]["none"]["pretrained"]["accuracy"] == result["target"]["accuracy"]
    assert result["methods"]["q2"]["pretrained"]["accuracy"] != result["methods"]["none"]["pretrained"]["accuracy"]
    assert result["pareto"] and (out / "compression.png").stat().st_size > 0
    assert len(list(csv.reader((out / "compression.csv").open()))) == 1 + 2 * 3
    assert experiment("compression", tmp_path / "bad", "--quick", "--compressors", "none,q0") == 2
    assert "--compressors q0: a bit width must lie in 1..32" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert experiment("layers", tmp_path / "unused", "--quick", "--compressors", "q4") == 2
    assert "--compressors is not used by experiment layers" in capsys.readouterr().err


@pytest.mark.slow           # two benches of one baseline
@pytest.mark.timeout(400)
def test_link_failure_experiment_counts_only_live_links(tmp_path, capsys):
    """The shipped optimizer and DGD without failures and with half the links failing, on the
    quick preset (8 agents on a ring, float32, d = 650): 20 x 2 x 650 x 4 bytes per agent after
    20 rounds without failures; with p = 0.5 about half, and the same for both methods (the
    failures are drawn per task and round, whatever the method)."""
    out = tmp_path / "links"
    assert experiment("link-failures", out, "--quick", "--methods", "dgd", "--link-failure-probs", "0,0.5") == 0
    result = json.loads((out / "link-failures.json").read_text())
    assert result["rounds"] == 20 and set(result["methods"]) == {"0.0", "0.5"}
    full, half = result["methods"]["0.0"], result["methods"]["0.5"]
    assert full["pretrained"]["bytes_per_agent"] == full["dgd"]["bytes_per_agent"] == 20 * 2 * 650 * 4
    assert half["pretrained"]["bytes_per_agent"] == half["dgd"]["bytes_per_agent"]
    assert 0.3 < half["dgd"]["bytes_per_agent"] / (20 * 2 * 650 * 4) < 0.7
    assert half["pretrained"]["accuracy"] != full["pretrained"]["accuracy"]
    assert result["learned_versus_first_p"]["pretrained"]["0.0"]["mean"] == 0.0
    assert (out / "link-failures.png").stat().st_size > 0
    assert len(list(csv.reader((out / "link-failures.csv").open()))) == 1 + 2 * 2
    assert experiment("link-failures", tmp_path / "bad", "--quick", "--link-failure-probs", "0,1") == 2
    assert "--link-failure-probs: 1 is not a probability in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert experiment("layers", tmp_path / "unused", "--quick", "--link-failure-probs", "0.1") == 2
