"""The command line: smoke runs of every command on the quick preset, and bad input that must
fail with a clear message, a non-zero exit and nothing lost."""
import json

import pytest

from surf_dist.cli.main import main

CURVE_KEYS = {"rounds", "bytes_per_agent", "loss", "accuracy", "local_accuracy"}


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_explains_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("demo", "baselines", "train", "evaluate", "config"):
        assert command in text


def test_baselines_quick_writes_a_complete_summary(tmp_path, capsys):
    out = tmp_path / "bl"
    code, text, _ = run(["baselines", "--quick", "--out", str(out), "--no-progress"], capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"dgd", "dsgd", "gradient_tracking", "dfedavgm"}
    for curve in summary["methods"].values():
        assert CURVE_KEYS <= set(curve)
        assert len({len(curve[k]) for k in CURVE_KEYS}) == 1
        assert curve["rounds"][0] == 0 and curve["bytes_per_agent"][0] == 0
        # bytes grow linearly with rounds: a constant cost per round on a fixed graph
        per_round = [b / r for r, b in zip(curve["rounds"][1:], curve["bytes_per_agent"][1:])]
        assert max(per_round) == pytest.approx(min(per_round))
    assert 0 < summary["centralized"]["accuracy"] <= 1
    assert (out / "results.csv").is_file() and (out / "accuracy_vs_communication.png").is_file()
    assert "dgd" in text


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_demo_shipped_optimizer_tunes_the_fallback_baselines_where_no_choices_ship(tmp_path, capsys):
    """The quick preset's tasks have no shipped baseline choices: the demo tunes the four
    one-hyperparameter baselines on validation tasks and compares them with the shipped optimizer."""
    from surf_dist.commands.bench.demo import FALLBACK_METHODS
    out = tmp_path / "demo"
    code, text, err = run(["demo", "--quick", "--rounds", "24", "--out", str(out), "--no-progress"], capsys)
    assert code == 0, err
    report = json.loads((out / "bench.json").read_text())
    assert report["baselines"] == list(FALLBACK_METHODS) and report["learned"] == ["pretrained"]
    assert report["baselines_from"] == "tuned here on validation tasks" and "no shipped baseline choices" in err
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"pretrained", *FALLBACK_METHODS}
    assert (out / "pooled_accuracy_vs_communication.png").is_file() and "ratio" in text


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_demo_train_quick_writes_a_complete_summary(tmp_path, capsys):
    out = tmp_path / "demo"
    code, text, _ = run(["demo", "--train", "--quick", "--out", str(out), "--no-progress"], capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    methods = summary["methods"]
    assert {"surf", "unrolled", "dgd", "dsgd", "gradient_tracking", "dfedavgm"} <= set(methods)
    layers = summary["config"]["model"]["num_layers"]
    hops = summary["config"]["model"]["num_hops"]
    assert methods["surf"]["rounds"] == [l * hops for l in range(layers + 1)]
    assert summary["async"]["n_async"] == [0, 1, 2]
    assert len(summary["async"]["surf"]) == 3 and len(summary["async"]["unrolled"]) == 3
    assert set(summary["permuted_labels"]) == {"surf", "unrolled"}
    for name in ("accuracy_vs_communication.png", "layer_loss.png", "async.png", "results.csv"):
        assert (out / name).is_file()
    for run_name in ("run_surf", "run_unrolled"):
        assert (out / run_name / "model.pt").is_file() and (out / run_name / "metrics.csv").is_file()
    assert "permuted" in text


def test_train_resume_and_evaluate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, _ = run(["train", "--quick", "--out", str(run_dir), "--no-progress", "--steps", "3"], capsys)
    assert code == 0 and (run_dir / "checkpoint.pt").is_file()
    code, _, _ = run(["train", "--quick", "--out", str(run_dir), "--no-progress", "--steps", "6",
                      "--resume"], capsys)
    assert code == 0
    rows = (run_dir / "metrics.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(s) for s in range(6)]
    out = tmp_path / "eval"
    code, text, _ = run(["evaluate", str(run_dir), "--out", str(out), "--no-progress", "--rounds", "8"], capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert "run" in summary["methods"]
    assert summary["methods"]["dgd"]["rounds"][-1] == 8      # the run's settings, the flags on top
    assert "async sweep" in text and "\n  run " in text      # every model's sweep is printed


def test_evaluate_skip_leaves_out_exactly_the_parts_named(tmp_path, capsys):
    """--skip baselines,async,permuted,centralized: the learned model's curves alone (a large
    federation's evaluation); --skip async keeps the rest."""
    out = tmp_path / "lean"
    code, text, _ = run(["evaluate", "pretrained", "--agents", "12", "--test-tasks", "1", "--out", str(out),
                         "--no-progress", "--skip", "baselines,async,permuted,centralized"], capsys)
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["pretrained"] and len(summary["methods"]["pretrained"]["accuracy"]) == 21
    assert not {"async", "permuted_labels", "centralized"} & set(summary)
    out = tmp_path / "no_async"
    code, text, _ = run(["evaluate", "pretrained", "--agents", "12", "--test-tasks", "1", "--rounds", "4",
                         "--out", str(out), "--no-progress", "--skip", "async"], capsys)
    summary = json.loads((out / "summary.json").read_text())
    assert code == 0 and "dgd" in summary["methods"] and "async" not in summary
    assert {"permuted_labels", "centralized"} <= set(summary) and "async sweep" not in text


def test_async_train_and_objective_flags_reach_the_run(tmp_path, capsys):
    """--async-train N meta-trains with N agents dropped per task and layer (train.async_train);
    --objective pooled trains the last layer for the task's pooled data (train.objective)."""
    from surf_dist.commands.jobs import run_config
    run_dir = tmp_path / "run"
    code, _, _ = run(["train", "--quick", "--out", str(run_dir), "--no-progress", "--steps", "2",
                      "--async-train", "2", "--objective", "pooled"], capsys)
    assert code == 0
    assert run_config(run_dir).train.async_train == 2 and run_config(run_dir).train.objective == "pooled"


def test_refuses_to_overwrite_results(tmp_path, capsys):
    out = tmp_path / "kept"
    out.mkdir()
    (out / "summary.json").write_text("precious")
    code, _, err = run(["baselines", "--quick", "--out", str(out)], capsys)
    assert code == 2 and "not empty" in err
    assert (out / "summary.json").read_text() == "precious"


@pytest.mark.parametrize("args, message", [
    (["--dataset", "mnist", "--data-root", "/nonexistent/mnist"], "mnist"),
    (["--dataset", "mnist"], "--data-root"),
    (["--topology", "no_such_topology"], "no_such_topology"),
    (["--agents", "1"], "at least 2"),
    (["--alpha", "-1"], "alpha"),
    (["--lr", "nan"], "lr must be a finite number"),
    (["--async-train", "8"], "async_train must lie in [0, num_agents = 8)"),
    (["--async-train", "-1"], "async_train must lie in"),
    (["--objective", "global"], "objective must be one of ('local', 'pooled'), got 'global'"),
    (["--backend", "local", "--workers", "3"], "local backend"),
    (["--backend", "carrier-pigeon"], "backend"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, args, message):
    out = tmp_path / "out"
    code, _, err = run(["baselines", "--quick", "--out", str(out), "--no-progress", *args], capsys)
    assert code == 2
    assert message in err
    assert not (out / "summary.json").exists()


def test_disconnected_user_graph_is_refused(tmp_path, capsys):
    edges = tmp_path / "two_islands.txt"
    edges.write_text("0 1\n1 2\n2 3\n4 5\n5 6\n6 7\n")
    topo = tmp_path / "islands.json"
    topo.write_text(json.dumps({"family": "edge_list", "edge_list": str(edges)}))
    code, _, err = run(["baselines", "--quick", "--out", str(tmp_path / "o"), "--topology", str(topo)], capsys)
    assert code == 2 and "connected" in err.lower()


def test_corrupt_checkpoint_on_resume(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"\x00garbage" * 10)
    code, _, err = run(["train", "--quick", "--out", str(run_dir), "--resume"], capsys)
    assert code == 2 and "corrupt" in err
    assert (run_dir / "checkpoint.pt").read_bytes() == b"\x00garbage" * 10


def test_divergence_is_reported_not_saved(tmp_path, capsys):
    """A NaN/inf outer loss stops training with a clear error; no model.pt is written."""
    run_dir = tmp_path / "run"
    code, _, err = run(["train", "--quick", "--out", str(run_dir), "--no-progress", "--lr", "1e9",
                        "--steps", "4"], capsys)
    assert code == 2 and "diverged" in err
    assert not (run_dir / "model.pt").exists()


def test_config_prints_editable_json(tmp_path, capsys):
    code, text, _ = run(["config", "--preset", "quick"], capsys)
    assert code == 0
    data = json.loads(text)
    data["task"]["num_agents"] = 6
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "o"
    code, _, _ = run(["baselines", "--config", str(path), "--out", str(out), "--no-progress"], capsys)
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["config"]["task"]["num_agents"] == 6


def test_init_from_starts_training_from_a_trained_model(tmp_path, capsys):
    """--init-from RUN: meta-training starts from RUN's weights (fine-tuning); a network that
    does not fit, or a folder without a model, is a clear error that writes no model."""
    import torch
    from surf_dist.io.checkpoint import load_checkpoint
    from surf_dist.io.config import preset, with_overrides
    from surf_dist.commands.jobs import local_worker
    from surf_dist.core.train import build_state, warm_start
    source = tmp_path / "source"
    assert run(["train", "--quick", "--out", str(source), "--no-progress", "--steps", "2"], capsys)[0] == 0
    cfg = with_overrides(preset("quick"), {"train": {"seed": 3}})
    model = build_state(cfg, local_worker(cfg)).model
    trained = load_checkpoint(source / "model.pt")["model"]
    assert not all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    warm_start(model, source)
    assert all(torch.equal(v, trained[k]) for k, v in model.state_dict().items())
    code, _, _ = run(["train", "--quick", "--out", str(tmp_path / "tuned"), "--no-progress", "--steps", "2",
                      "--seed", "3", "--init-from", str(source), "--lr", "1e-12"], capsys)
    assert code == 0     # Adam moves each weight by ~lr: the run ends where it started, at source's
    tuned = load_checkpoint(tmp_path / "tuned" / "model.pt")["model"]
    assert all(torch.allclose(v, trained[k], atol=1e-9) for k, v in tuned.items())
    for i, (target, message) in enumerate(((str(source), "does not fit"), (str(tmp_path / "nowhere"), "does not exist"),
                                          ("pretrained", "does not fit"), ("pretrained:nope", "no pretrained model"))):
        args = ["--layers", "3"] if i == 0 else []
        out = tmp_path / f"bad{i}"
        code, _, err = run(["train", "--quick", "--out", str(out), "--no-progress", "--steps", "2",
                            "--init-from", target, *args], capsys)
        assert code == 2 and message in err and not (out / "model.pt").exists()
