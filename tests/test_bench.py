"""surf_dist.commands.bench: the protocol's numbers on hand-made curves, replicas against separate runs,
no choice influenced by a test draw, and ``surf-dist bench`` end to end (local and gloo)."""
import json
import math

import numpy as np
import pytest
import torch

from surf_dist.commands.bench import bench_job
from surf_dist.commands.bench.limit import limit_of_task, limit_rounds, reach, sampled_agents
from surf_dist.commands.bench.protocol import (BenchConfig, Comparison, Grid, choose, crossings, mean_difference,
                                      report_task_indices, val_task_indices)
from surf_dist.commands.bench.replicas import ReplicaProblem
from surf_dist.commands.bench.runner import selections, tuning_rounds
from surf_dist.cli.main import main
from surf_dist.io.config import preset, with_overrides
from surf_dist.methods.registry import METHODS
from surf_dist.methods.accelerated import spectral_lambda2
from surf_dist.methods.pretrained import HERE
from surf_dist.problem.softmax import correct_per_agent, grad_per_agent, loss_per_agent, pooled_accuracy
from surf_dist.runtime import run_job

QUICK64 = with_overrides(preset("quick"), {"train": {"dtype": "float64"}})
TINY = dict(draws=2, tasks_per_draw=2, tune_tasks=2, rounds=24, bootstrap=50,
            methods=("dgd", "gradient_tracking", "dgd_heavy_ball", "chebyshev_dgd"))


# ------------------------------------------------------------------ the protocol's numbers

def test_first_crossing_on_a_hand_made_curve():
    curves = np.array([[0.1, 0.5, 0.7, 0.69, 0.9], [0.1, 0.2, 0.3, 0.4, 0.5]])
    assert crossings(curves, np.array([0.7, 0.7]), True).tolist() == [2, math.inf]   # first round at or above
    assert crossings(curves, np.array([0.69, 0.05]), True).tolist() == [2, 0]
    losses = np.array([[2.0, 1.0, 0.5, 0.6, 0.4]])
    assert crossings(losses, np.array([0.5]), False).tolist() == [2]                 # loss: at or below


def test_ratio_and_budget_gap_on_hand_made_curves():
    rounds = np.arange(101)
    slow = np.minimum(rounds / 100, 1.0)                     # reaches 0.8 at round 80
    fast = np.minimum(rounds / 50, 1.0)                      # reaches 0.8 at round 40
    learned = np.full((1, 2), 0.8)                           # 0.8 after 10 rounds, one draw of 2 tasks
    comp = Comparison("accuracy", learned, 10, {"slow": np.tile(slow, (1, 2, 1)), "fast": np.tile(fast, (1, 2, 1))},
                      bytes={"slow": 2.0 * rounds[None], "fast": 4.0 * rounds[None]}, learned_bytes=20.0)
    n = comp.numbers()
    assert n["ratio"].tolist() == [4.0]                      # the best baseline (fast) needs 40 = 4 x 10
    assert n["rounds_to_target"]["slow"].tolist() == [80.0]
    assert n["strongest"] == ["fast"]
    assert n["budget_gap"].tolist() == pytest.approx([0.8 - 0.2])   # fast is at 10 / 50 at round 10
    assert n["bytes_ratio"].tolist() == [min(2.0 * 80, 4.0 * 40) / 20.0]
    s = comp.summary(20, 0.9)
    assert s["ratio"]["per_draw"] == [4.0] and s["ratio"]["low"] == s["ratio"]["high"] == 4.0   # identical tasks


def test_a_target_never_reached_is_censored_not_a_number():
    comp = Comparison("accuracy", np.full((1, 3), 0.99), 5, {"dgd": np.tile(np.linspace(0, 0.9, 21), (1, 3, 1))})
    s = comp.summary(10, 0.9)
    assert s["ratio"]["per_draw"] == [None] and s["ratio"]["mean"] is None
    assert s["rounds_to_target"]["dgd"] == [None]
    json.dumps(s)                                            # valid JSON: no Infinity


def test_choice_prefers_metric_then_loss_and_never_a_diverged_run():
    acc = np.array([[0.5, 0.7, np.nan], [0.8, 0.8, 0.9]])
    loss = np.array([[1.0, 0.9, np.nan], [0.6, 0.4, np.inf]])
    assert choose(acc, loss, "accuracy").tolist() == [1, 1]                 # 0.9 has diverged (inf loss)
    assert choose(acc, loss, "accuracy", allowed=np.array([True, False, True])).tolist() == [0, 0]
    tied = np.array([[0.8, 0.8]])
    assert choose(tied, np.array([[0.5, 0.3]]), "accuracy").tolist() == [1]         # tie: lower loss
    assert choose(loss[:1, :2], loss[:1, :2], "loss").tolist() == [1]


def test_grids_extend_at_their_edges():
    step = Grid("step", [0.25, 0.5, 1.0])
    assert step.extend({1.0}) == [2.0] and step.values == [0.25, 0.5, 1.0, 2.0]
    assert step.extend({0.25, 0.5}) == [0.125]
    assert step.extend({0.5}) == []                          # an interior choice: nothing to add
    momentum = Grid("momentum", [0.0, 0.9, 0.99])
    assert momentum.extend({0.0}) == []                      # no momentum is a natural edge
    assert momentum.extend({0.99}) == [pytest.approx(0.995)]
    assert Grid("local_steps", [2, 4, 8]).extend({8}) == [16]
    assert Grid("local_steps", [4]).extend({4}) == []           # a fixed setting: not tuned
    capped = Grid("local_steps", [4, 8], cap=16)
    assert capped.extend({8}) == [16] and capped.extend({16}) == []   # no run beyond the cap


def test_a_configuration_chosen_early_runs_only_that_far_with_the_same_values():
    """``run_choices`` runs each configuration only to the last round it is chosen at (a run
    of 12 rounds for the first, 40 for the second): its values there equal a full run's."""
    from surf_dist.commands.bench.runner import run_choices, run_grid
    from surf_dist.commands.jobs import local_worker
    worker = local_worker(QUICK64)
    bench = BenchConfig(rounds=40, pool_cap=16)
    tasks = worker.family.batch("test", report_task_indices(bench, 0))[:2]
    configs = [{"start": "zero", "step": 2.0}, {"start": "task", "step": 0.5}]
    idx = np.array([0] * 13 + [1] * 28)
    picks = {"best": {m: idx for m in ("accuracy", "local_accuracy", "loss")}}
    curves = run_choices("dgd", worker, tasks, configs, picks, bench, 4)["best"]
    full = run_grid("dgd", worker, tasks, configs, 40, np.arange(41), 16, 4)["values"]
    for metric in ("accuracy", "local_accuracy", "loss"):
        expected = np.where(idx[:, None] == 0, full[metric][:, :, 0], full[metric][:, :, 1]).T
        np.testing.assert_allclose(curves[metric], expected, rtol=1e-12, atol=0)


def test_report_tasks_are_disjoint_from_development_and_validation():
    cfg = BenchConfig(report_seed=3, draws=3, tasks_per_draw=4)
    draws = [set(report_task_indices(cfg, d)) for d in range(3)]
    assert all(not (a & b) for i, a in enumerate(draws) for b in draws[i + 1:])
    assert min(min(d) for d in draws) >= 100_000             # indices below are development's
    assert set(val_task_indices(cfg)).isdisjoint(range(8 + 3))   # meta-training's validation tasks
    with pytest.raises(ValueError, match="report_seed"):
        BenchConfig(report_seed=0)
    assert tuning_rounds(40).tolist() == [*range(31), 35, 40]


# ------------------------------------------------------------------ replicas == separate runs

@pytest.fixture
def replica_setup(make_shards, ring_shift, bound_comm):
    shards = make_shards(num_agents=5, num_seen=6, num_held=3, num_features=3, num_classes=3, seed=4)
    S = ring_shift(5)
    return shards, S, bound_comm


def test_replica_gradients_and_metrics_equal_each_replicas_own(replica_setup):
    shards, _, _ = replica_setup
    gen = torch.Generator().manual_seed(0)
    Ws = [torch.randn(5, 12, generator=gen, dtype=torch.float64) for _ in range(3)]
    prob = ReplicaProblem(shards, 3, 3, batches=lambda i: torch.tensor([[0, 2, 4]] * 5))
    W = prob.stack(Ws)
    full, batch, metrics = prob.full(W), prob.batch(W, 0), prob.metrics(W)
    X_b, Y_b = shards.minibatch(torch.tensor([[0, 2, 4]] * 5))
    for r, Wr in enumerate(Ws):
        assert torch.allclose(prob.replica(full, r), grad_per_agent(Wr, shards.X_seen, shards.Y_seen), atol=1e-13)
        assert torch.allclose(prob.replica(batch, r), grad_per_agent(Wr, X_b, Y_b), atol=1e-13)
        assert torch.allclose(metrics["loss"][:, r], loss_per_agent(Wr, shards.X_held, shards.Y_held), atol=1e-13)
        assert torch.equal(metrics["local_accuracy"][:, r], correct_per_agent(Wr, shards.X_held, shards.Y_held))
        assert torch.equal(metrics["accuracy"][:, r], pooled_accuracy(Wr, shards.X_pool[0], shards.Y_pool[0]))
    only = prob.metrics(W, pooled_replicas=[1])["accuracy"]
    assert torch.isnan(only[:, 0]).all() and torch.equal(only[:, 1], metrics["accuracy"][:, 1])


@pytest.mark.parametrize("name", ["dgd_heavy_ball", "dsgd", "chebyshev_gt", "gt_local_steps", "nids"])
def test_a_grid_of_replicas_equals_separate_runs(replica_setup, name):
    shards, S, bound_comm = replica_setup
    method = METHODS[name]
    configs = [{"step": 0.3, "momentum": 0.5}, {"step": 1.0, "momentum": 0.9}, {"step": 0.1, "momentum": 0.0}]
    discrete = {k: v[-1] for k, v in method.discrete.items()}
    positions = lambda i: torch.stack([torch.randperm(6, generator=torch.Generator().manual_seed(i * 7 + a))[:3]
                                       for a in range(5)])
    lam = torch.full((5, 1), spectral_lambda2(S), dtype=torch.float64)
    prob = ReplicaProblem(shards, 3, 3, positions)
    hyper = {k: prob.columns(torch.tensor([c[k] for c in configs], dtype=torch.float64)) for k in method.continuous}
    hyper.update(discrete, lambda2=lam)
    W0 = prob.stack([shards.init_weights] * 3)
    together = [W for W, _ in method.run(W0, prob, bound_comm(S), hyper, 5)]
    for r, c in enumerate(configs):
        own = {k: torch.full((5, 1), c[k], dtype=torch.float64) for k in method.continuous}
        own.update(discrete, lambda2=lam)
        batches = positions if method.stochastic else None
        alone = [W for W, _ in method.run(shards.init_weights, shards, bound_comm(S), own, 5, batches)]
        for a, b in zip(together, alone):
            assert torch.allclose(prob.replica(a, r), b, atol=1e-12)


# ------------------------------------------------------------------ nothing chosen on test draws

@pytest.mark.slow
@pytest.mark.timeout(90)
def test_no_choice_depends_on_the_test_draws():
    """Two report seeds (other test tasks): every baseline's choices are identical, while the
    test curves differ, so the check can fail."""
    results = []
    for seed in (1, 2):
        bench = BenchConfig(report_seed=seed, **TINY).__dict__
        raw = run_job(bench_job, QUICK64, "local", 1, bench=bench, runs=[], meta_training={}, progress=False)
        results.append(raw)
    for name in TINY["methods"]:
        a, b = (r["baselines"][name]["curves"] for r in results)
        assert a["best"]["chosen"] == b["best"]["chosen"], name
        assert a["zero"]["chosen"] == b["zero"]["chosen"] and a["task"]["chosen"] == b["task"]["chosen"]
    assert not np.allclose(results[0]["baselines"]["dgd"]["curves"]["best"]["loss"],
                           results[1]["baselines"]["dgd"]["curves"]["best"]["loss"])


def test_selections_read_validation_values_only():
    tuned = {"configs": [{"start": "zero", "step": 1.0}, {"start": "task", "step": 1.0}],
             "values": {"accuracy": np.array([[0.1, 0.2], [0.5, 0.4]]), "local_accuracy": np.zeros((2, 2)),
                        "loss": np.array([[1.0, 2.0], [1.0, 2.0]])}, "at": np.array([0, 3])}
    picks = selections(tuned, 5)
    assert picks["best"]["accuracy"].tolist() == [1, 1, 1, 0, 0, 0]     # held between budgets 0 and 3
    assert picks["zero"]["accuracy"].tolist() == [0] * 6
    assert picks["task"]["accuracy"].tolist() == [1] * 6


# ------------------------------------------------------------------ the information limit

def test_reach_balls_on_a_ring_by_hand(ring_shift):
    balls = reach(ring_shift(8), 2)
    assert balls.sum(1).tolist() == [5] * 8                       # i-2 .. i+2
    assert balls[0].nonzero()[0].tolist() == [0, 1, 2, 6, 7]
    assert reach(ring_shift(8), 4).all()                           # the diameter: everyone


def test_the_limit_grows_to_the_centralized_optimum_at_the_diameter():
    """On a ring of 8 every ball is the whole graph from R = 4: the limit there is the
    centralized optimum of the task (computed apart); below it, a smaller ball."""
    from surf_dist.commands.bench.runner import centralized_on_test
    from surf_dist.commands.jobs import local_worker
    worker = local_worker(QUICK64)
    task = worker.family.batch("test", [100_000])[0]
    agents = sampled_agents(8, 10)
    assert agents.tolist() == list(range(8)) and sampled_agents(100, 10).tolist()[:3] == [0, 11, 22]
    values = limit_of_task(worker.family, task, [1, 4, 6], agents, 256)
    central = centralized_on_test(worker, [task], 256)["accuracy"][0]
    assert values[1] == pytest.approx(central, abs=1e-12) and values[2] == pytest.approx(central, abs=1e-12)
    assert values[0] != pytest.approx(central, abs=1e-3)
    assert limit_rounds(20) == [1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20] and limit_rounds(7)[-1] == 7


def test_mean_difference_and_its_interval_by_hand():
    a = np.array([[0.9, 0.8], [0.7, 0.7]])
    b = np.full((2, 2), 0.5)
    s = mean_difference(a, b, 200, 0.9)
    assert s["per_draw"] == pytest.approx([0.35, 0.2]) and s["mean"] == pytest.approx(0.275)
    assert s["low"] < s["mean"] < s["high"]                      # tasks differ within draw 0
    same = mean_difference(np.full((2, 3), 0.6), b[:, :1].repeat(3, 1), 50, 0.9)
    assert same["low"] == pytest.approx(0.1) and same["high"] == pytest.approx(0.1)


# ------------------------------------------------------------------ end to end

TINY_ARGS = ["--draws", "2", "--tasks-per-draw", "2", "--tune-tasks", "2", "--rounds", "24", "--bootstrap", "40",
             "--methods", "dgd,gradient_tracking,dgd_heavy_ball,chebyshev_dgd"]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_bench_cli_writes_the_documented_report(tmp_path, capsys):
    out = tmp_path / "b"
    assert main(["bench", "pretrained", "--quick", "--dtype", "float64", "--out", str(out), *TINY_ARGS]) == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["rounds_step"] == 1 and report["baselines"] == TINY_ARGS[-1].split(",")
    assert len(report["draws"]) == 2 and len(report["draws"][0]["test_task_indices"]) == 2
    dgd = report["methods"]["dgd"]
    for curve in dgd["curves"]:
        assert curve["rounds"] == list(range(25))
        assert {"accuracy", "local_accuracy", "loss", "bytes_per_agent", "grad_evals_per_agent"} <= set(curve)
        assert curve["grad_evals_per_agent"][:3] == [0, 1, 2]
    assert set(dgd["by_start"]) == {"zero", "task"} and dgd["tuned"]["best"]["accuracy"][0]["from_round"] == 0
    comp = report["comparisons"]["pretrained"]
    for metric in ("accuracy", "local_accuracy", "loss"):
        for key in ("ratio", "budget_gap"):
            assert set(comp[metric][key]) == {"per_draw", "mean", "low", "high"}
            assert len(comp[metric][key]["per_draw"]) == 2
    assert report["methods"]["pretrained"]["meta_training"]["meta_steps"] == 300
    assert report["limit"]["rounds"] == limit_rounds(20) and len(report["limit"]["accuracy"]) == 2
    assert report["methods"]["pretrained"]["descent"]["rose_layers_mean"] >= 0
    drop = comp["permuted_labels"]["accuracy"]
    assert drop["drop"]["mean"] == pytest.approx(drop["unpermuted"] - drop["value"])
    # from the tasks' W_0 the check is not zero by symmetry (it is from the model's own W_0 = 0 start)
    assert drop["drop"]["mean"] != 0.0 and drop["unpermuted"] != pytest.approx(
        np.mean([c["accuracy"][-1] for c in report["methods"]["pretrained"]["curves"]]), abs=1e-9)
    distance = comp["limit"]["20"]
    assert distance["distance"]["mean"] == pytest.approx(distance["learned"] - distance["limit"])
    assert (out / "bench.csv").read_text().startswith("method,draw,round")
    assert (out / "bench.png").stat().st_size > 10_000
    assert "ratio" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_bench_reuses_an_earlier_benchs_baselines_and_limit(tmp_path, capsys, monkeypatch):
    """--baselines-from: nothing is tuned or run again; the baselines, the centralized optimum
    and the limit are the earlier bench's, and the learned optimizer's limit distances match."""
    from surf_dist.commands.bench import runner
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["--quick", "--dtype", "float64", *TINY_ARGS]
    assert main(["bench", "pretrained", "--out", str(first), *args]) == 0
    monkeypatch.setattr(runner, "tune", lambda *a, **k: pytest.fail("tuned again"))
    assert main(["bench", "pretrained", "pretrained:robust", "--out", str(second), "--baselines-from", str(first),
                 *args]) == 0
    a, b = (json.loads((p / "bench.json").read_text()) for p in (first, second))
    for name in a["baselines"]:
        assert a["methods"][name]["curves"] == b["methods"][name]["curves"]
    assert a["limit"] == b["limit"] and a["centralized"] == b["centralized"]
    assert a["comparisons"]["pretrained"]["limit"] == b["comparisons"]["pretrained"]["limit"]
    assert "20" in b["comparisons"]["pretrained:robust"]["limit"] and b["baselines_from"] == str(first)
    assert len(b["methods"]["pretrained"]["validation"]["accuracy"]) == 21     # every layer, validation tasks
    capsys.readouterr()
    for extra, message in ((["--agents", "6"], "its tasks differ (num_agents 8 there, 6 here)"),
                           (["--report-seed", "2"], "its protocol differs (report_seed"),
                           ([], "holds no bench.json")):
        where = str(first) if extra else str(tmp_path / "nothing")
        assert main(["bench", "--out", str(tmp_path / "x"), "--baselines-from", where, *args, *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_bench_replays_saved_validation_choices_on_a_fresh_report_seed(tmp_path, capsys, monkeypatch):
    """--choices-from: nothing is tuned again; on the same report seed the replayed choices give
    the tuned bench's test curves exactly; on a fresh seed the same configurations run on other tasks."""
    from surf_dist.commands.bench import runner
    first, same, fresh = tmp_path / "first", tmp_path / "same", tmp_path / "fresh"
    args = ["--quick", "--dtype", "float64", *TINY_ARGS]
    assert main(["bench", "pretrained", "--out", str(first), *args]) == 0
    monkeypatch.setattr(runner, "tune", lambda *a, **k: pytest.fail("tuned again"))
    saved = str(first / "bench.json")
    assert main(["bench", "pretrained", "--out", str(same), "--choices-from", saved, *args]) == 0
    assert main(["bench", "pretrained", "--out", str(fresh), "--choices-from", saved, "--report-seed", "5", *args]) == 0
    a, b, c = (json.loads((p / "bench.json").read_text()) for p in (first, same, fresh))
    for name in a["baselines"]:
        assert a["methods"][name]["tuned"]["best"] == b["methods"][name]["tuned"]["best"] == c["methods"][name]["tuned"]["best"]
        assert a["methods"][name]["curves"] == b["methods"][name]["curves"]
        assert a["methods"][name]["curves"] != c["methods"][name]["curves"]
    assert b["baselines_from"] == f"validation choices of {saved}"
    capsys.readouterr()
    for extra, message in ((["--agents", "6"], "its choices were made for other tasks (num_agents 8 there, 6 here)"),
                           (["--baselines-from", str(first)], "exclude each other")):
        assert main(["bench", "--out", str(tmp_path / "x"), "--choices-from", saved, *args[:3], *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "x").exists()


def test_bench_refuses_bad_settings_before_writing(tmp_path, capsys):
    for args, message in ((["--report-seed", "0"], "report_seed"), (["--methods", "dgd,newton"], "unknown bench method"),
                          (["no/such/run"], "holds no model.pt"), (["--rounds", "19"], "pass --rounds 20")):
        assert main(["bench", "--quick", "--out", str(tmp_path / "x"), *args]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.equivalence
@pytest.mark.timeout(240)
def test_bench_on_gloo_equals_the_single_process():
    bench = BenchConfig(**{**TINY, "methods": ("dgd", "gt_nesterov", "chebyshev_gt")}).__dict__
    kw = dict(bench=bench, runs=[("pretrained", str(HERE / "default"))], meta_training={"pretrained": {}},
              progress=False)
    local = run_job(bench_job, QUICK64, "local", 1, **kw)
    gloo = run_job(bench_job, QUICK64, "torch", 2, **kw)
    for name in bench["methods"]:
        for metric in ("accuracy", "local_accuracy", "loss"):
            np.testing.assert_allclose(gloo["baselines"][name]["curves"]["best"][metric],
                                       local["baselines"][name]["curves"]["best"][metric], rtol=1e-9, atol=1e-9)
        assert gloo["baselines"][name]["curves"]["best"]["chosen"] == local["baselines"][name]["curves"]["best"]["chosen"]
    for metric in ("accuracy", "loss"):
        np.testing.assert_allclose(gloo["learned"]["pretrained"][metric], local["learned"]["pretrained"][metric],
                                   rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ the demo replays the bench's choices

@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_replays_the_validation_choices_of_a_bench(tmp_path, capsys, monkeypatch):
    """A bench on the demo's own test draw, its choices saved, then the demo: the demo tunes
    nothing and reproduces the bench's baseline curves exactly."""
    from surf_dist.commands.bench import demo
    bench_out, demo_out = tmp_path / "bench", tmp_path / "demo"
    args = ["--quick", "--dtype", "float64", "--methods", "dgd,dgd_heavy_ball,chebyshev_gt", "--tune-tasks", "2",
            "--rounds", "24", "--bootstrap", "20"]
    assert main(["bench", "pretrained", "--out", str(bench_out), "--report-seed", str(demo.DEMO_REPORT_SEED),
                 "--draws", "1", "--tasks-per-draw", str(demo.DEMO_TASKS), *args]) == 0
    report = json.loads((bench_out / "bench.json").read_text())
    monkeypatch.setattr(demo, "TUNED_FILE", tmp_path / "tuned.json")
    demo.write_choices(report)
    saved = json.loads((tmp_path / "tuned.json").read_text())
    assert "curves" not in json.dumps(saved) and set(saved["baselines"]) == {"dgd", "dgd_heavy_ball", "chebyshev_gt"}
    capsys.readouterr()
    assert main(["demo", "--quick", "--dtype", "float64", "--rounds", "24", "--out", str(demo_out)]) == 0
    printed = capsys.readouterr()
    assert "tuned" not in printed.err                          # nothing tuned: the choices were replayed
    replay = json.loads((demo_out / "bench.json").read_text())
    for name in saved["baselines"]:
        for metric in ("accuracy", "local_accuracy", "loss"):
            assert replay["methods"][name]["curves"][0][metric] == pytest.approx(
                report["methods"][name]["curves"][0][metric], abs=1e-12)
    assert {"summary.json", "bench.png", "accuracy_vs_communication.png"} <= {p.name for p in demo_out.iterdir()}
    assert "ratio" in printed.out and "@20 rounds" in printed.out


def test_every_budget_compares_with_the_strongest_baseline_at_each_round_by_hand():
    from surf_dist.commands.bench.report import budget_differences
    bench = BenchConfig(draws=2, tasks_per_draw=2, rounds=3, bootstrap=50)
    learned = {"rounds": [0, 1, 2, 3], "accuracy": np.array([[0, .5, .6, .9], [0, .5, .6, .9],
                                                            [0, .4, .6, .8], [0, .4, .6, .8]])}
    a = np.array([[0, .6, .5, .5], [0, .6, .5, .5], [0, .3, .5, .5], [0, .3, .5, .5]])    # strong at R = 1, draw 0
    b = np.array([[0, .1, .7, .5], [0, .1, .7, .5], [0, .5, .7, .5], [0, .5, .7, .5]])    # strong at R = 2; R = 1, draw 1
    got = budget_differences(learned, {"a": {"curves": {"best": {"accuracy": a}}},
                                       "b": {"curves": {"best": {"accuracy": b}}}}, bench)
    assert set(got) == {"1", "2", "3"}
    assert got["1"]["which"] == ["a", "b"] and got["2"]["which"] == ["b", "b"]
    assert got["1"]["difference"]["per_draw"] == pytest.approx([-0.1, -0.1])
    assert got["2"]["difference"]["mean"] == pytest.approx(-0.1) and got["3"]["difference"]["mean"] == pytest.approx(0.35)
    assert got["3"]["difference"]["low"] == pytest.approx(0.35) == got["3"]["difference"]["high"]


@pytest.mark.slow
def test_the_limits_regularisation_is_chosen_on_validation_tasks_only(monkeypatch):
    """The l2 per budget is the validation argmax (recomputed by hand from limit_of_task on the
    validation tasks), the same whatever the test tasks; it fails if a test task is consulted."""
    from surf_dist.commands.bench import limit
    from surf_dist.commands.jobs import local_worker
    worker = local_worker(QUICK64)
    val = worker.family.batch("val", [1000, 1001])
    rounds, agents = [1, 2], sampled_agents(8, 2)
    by_hand = np.array([[limit.limit_of_task(worker.family, t, rounds, agents, 64, l2) for t in val]
                        for l2 in limit.L2_GRID]).mean(1)
    chosen, means = limit.choose_l2(worker.family, val, rounds, agents, 64)
    assert np.allclose(means, by_hand) and chosen == [limit.L2_GRID[int(np.argmax(by_hand[:, j]))] for j in range(2)]
    tests_a, tests_b = (worker.family.batch("test", [100_000 + k]) for k in (0, 7))
    seen = []
    real = limit.limit_of_task
    monkeypatch.setattr(limit, "limit_of_task", lambda fam, task, *a, **k: seen.append(task) or real(fam, task, *a, **k))
    got_a = limit.limit_on_test(worker, tests_a, rounds, 2, 64, val_tasks=val)
    n_val = len(seen) - 1
    got_b = limit.limit_on_test(worker, tests_b, rounds, 2, 64, val_tasks=val)
    assert got_a["l2"] == got_b["l2"] == chosen
    assert seen[n_val] is tests_a[0] and all(any(t is v for v in val) for t in seen[:n_val])    # the test task only after the choice


def test_saved_choices_of_a_changed_method_are_not_replayed(tmp_path):
    """A saved choice is replayed only for the update it was made for: a method whose documented
    formula changed since (here dgd) is tuned again; other task settings are refused."""
    from types import SimpleNamespace

    from surf_dist.commands.bench import saved_choices
    cfg = QUICK64
    segments = {"best": {"accuracy": [{"from_round": 0, "to_round": 24, "config": {"start": "zero", "step": 1.0}}]}}
    saved = {"config": {"task": cfg.to_dict()["task"], "model": {"batch_size": cfg.model.batch_size}},
             "methods": {"dgd": {"kind": "baseline", "doc": "an older dgd", "tuned": segments},
                         "nids": {"kind": "baseline", "doc": METHODS["nids"].doc, "tuned": segments}}}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(saved))
    args = SimpleNamespace(choices_from=str(path), baselines_from=None)
    got = saved_choices(args, cfg, BenchConfig(methods=("dgd", "nids")))
    assert list(got) == ["nids"] and got["nids"]["tuned"] == {"best": segments["best"]}
    with pytest.raises(ValueError, match="made for other tasks"):
        saved_choices(args, with_overrides(cfg, {"task": {"num_agents": 6}}), BenchConfig(methods=("nids",)))
