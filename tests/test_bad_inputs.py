"""Bad input, as a careless or hostile user would give it: every case ends in exit 2 (130 for
Ctrl-C) and exactly one line on stderr, ``surf-dist COMMAND: error: ...``, with no traceback,
and nothing is created or overwritten. The cases and their messages are docs/BAD_INPUTS.md;
the last test renders that table from this run and fails if the file has drifted
(``SURF_DIST_WRITE_BAD_INPUTS=1 pytest tests/test_bad_inputs.py`` rewrites it).

Most cases run ``surf_dist.cli.main.main(argv)`` in this process; those marked ``subprocess`` run
``python -m surf_dist.cli.main`` to show that nothing reaches stderr but the one line.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from surf_dist.io import files as io_files
from surf_dist.io.checkpoint import save_checkpoint
from surf_dist.cli.main import main
from surf_dist.io.config import preset, with_overrides
from surf_dist.problem.datasets import MNIST_FILES
from surf_dist.methods.learned import UnrolledDGD

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "docs" / "BAD_INPUTS.md"
MEMORY_LIMIT_GB = "16"        # the size messages name the limit: the same on every machine
RESULTS: dict[str, dict] = {}


@dataclass
class Case:
    """``argv`` may hold ``{tmp}`` (this case's folder), ``{run}`` (a trained quick run, shared,
    read-only) and ``{paper}`` (a model.pt of the paper's local network on digits). ``setup``
    (tmp, run) prepares files and may return a function to call afterwards; ``patch``
    (monkeypatch, tmp, run) replaces code (Ctrl-C, a read-only disk)."""
    id: str
    family: str
    what: str
    argv: list[str]
    expect: str
    setup: object = None
    patch: object = None
    code: int = 2
    subprocess: bool = False
    keeps: str = ""              # a file the case is allowed to leave (Ctrl-C after a checkpoint)


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


def files(text: str, name="g.txt"):
    return lambda tmp, run: write(tmp / name, text) and None


def config_file(data):
    return lambda tmp, run: write(tmp / "cfg.json", data if isinstance(data, str) else json.dumps(data)) and None


def quick_config(**sections):
    data = preset("quick").to_dict()
    for section, values in sections.items():
        data[section].update(values)
    return data


def copied_run(edit=None, name="checkpoint.pt"):
    """Copy the trained run to {tmp}/run and apply ``edit(state) -> state`` to one of its files."""
    def setup(tmp, run):
        shutil.copytree(run, tmp / "run")
        if edit is not None:
            path = tmp / "run" / name
            state = torch.load(path, weights_only=True)
            state.pop("format")
            save_checkpoint(path, edit(state))
    return setup


def without(key):
    return lambda state: {k: v for k, v in state.items() if k != key}


def with_value(key, value):
    def edit(state):
        state = dict(state)
        if "." in key:
            outer, inner = key.split(".")
            state[outer] = {**state[outer], inner: value}
        else:
            state[key] = value
        return state
    return edit


def locked(folder_of):
    """Hold the lock of a folder while the case runs, as a second process writing it would."""
    def setup(tmp, run):
        folder = folder_of(tmp, run)
        folder.mkdir(parents=True, exist_ok=True)
        lock = io_files.FolderLock(folder).acquire()
        return lock.release
    return setup


def both(*setups):
    def setup(tmp, run):
        undo = [s(tmp, run) for s in setups]
        return lambda: [u() for u in undo if u]
    return setup


def interrupt_after(write_checkpoint: bool):
    """Ctrl-C in the middle of the work (after a checkpoint was written, or before anything)."""
    def patch(monkeypatch, tmp, run):
        def interrupted(job, cfg, backend, workers, device, **options):
            if write_checkpoint:
                shutil.copy(run / "checkpoint.pt", Path(options["run_dir"]) / "checkpoint.pt")
            raise KeyboardInterrupt
        monkeypatch.setattr("surf_dist.runtime.run_job", interrupted)
    return patch


def read_only_disk(monkeypatch, tmp, run):
    """A read-only mount (root ignores chmod): the probe file fails as it would there."""
    def refuse(probe):
        raise OSError(30, "Read-only file system", str(probe))
    monkeypatch.setattr(io_files, "_create_and_remove_probe", refuse)


def mnist_folder(corrupt: bool, skip: str = ""):
    def setup(tmp, run):
        for name in MNIST_FILES:
            if name != skip:
                write(tmp / "mnist" / name, b"\x00\x00\x08\x03 not an idx file" if corrupt else b"")
    return setup


def crafted_pickle(tmp, run):
    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))
    shutil.copytree(run, tmp / "run")
    write(tmp / "run" / "checkpoint.pt", pickle.dumps({"format": "surf-dist-checkpoint-1", "x": Payload()}))


def paper_model(tmp_path_factory):
    cfg = with_overrides(preset("quick"), {"model": {"local_net": "paper"}})
    path = tmp_path_factory.mktemp("paper") / "paper"
    model = UnrolledDGD(cfg.model, 65, 10)
    save_checkpoint(path / "model.pt", {"config": json.dumps(cfg.to_dict()), "model": model.state_dict(),
                                        "best_val": 1.0})
    return path


Q, O = "--quick", ["--out", "{tmp}/out"]
B = ["baselines", Q, *O]
TR = ["train", Q, *O]
EV = ["evaluate", "{run}", *O]
RES = ["train", Q, "--out", "{tmp}/run", "--resume"]
TRIANGLE_PLUS = "0 1\n1 2\n2 0\n2 3\n3 4\n4 5\n"

CASES = [
    # ------------------------------------------------------------------ the output folder
    Case("out-under-file", "--out", "a path under a regular file", [*B[:2], "--out", "{tmp}/file/out"],
         "is a file, not a folder", setup=files("x", "file")),
    Case("out-dangling-link", "--out", "a link to nothing", [*B[:2], "--out", "{tmp}/link"],
         "which does not exist", setup=lambda tmp, run: os.symlink(tmp / "nowhere", tmp / "link")),
    Case("out-under-dangling-link", "--out", "a folder under a link to nothing", [*B[:2], "--out", "{tmp}/link/out"],
         "is a link to", setup=lambda tmp, run: os.symlink(tmp / "nowhere", tmp / "link"), subprocess=True),
    Case("out-name-too-long", "--out", "a name of 300 bytes", [*B[:2], "--out", "{tmp}/" + "x" * 300],
         "the file system takes at most 255"),
    Case("out-not-empty", "--out", "a folder holding results", B, "is not empty",
         setup=files("precious", "out/summary.json")),
    Case("out-is-a-file", "--out", "an existing file", B, "exists and is not a folder", setup=files("x", "out")),
    Case("out-read-only", "--out", "a read-only file system (simulated: root ignores chmod)", B,
         "cannot write in", patch=read_only_disk),
    Case("out-locked", "lock", "a second training into a run being written", TR, "being written by another",
         setup=locked(lambda tmp, run: tmp / "out"), subprocess=True),
    Case("resume-locked", "lock", "--resume of a run another process is training", RES, "being written by another",
         setup=both(copied_run(), locked(lambda tmp, run: tmp / "run"))),
    Case("evaluate-locked", "lock", "evaluate into a folder being written", EV, "being written by another",
         setup=locked(lambda tmp, run: tmp / "out")),
    # ------------------------------------------------------------------ --config files
    Case("config-malformed", "--config", "malformed JSON", [*B, "--config", "{tmp}/cfg.json"], "not valid JSON",
         setup=config_file('{"task": {')),
    Case("config-null", "--config", "a file holding null", [*B, "--config", "{tmp}/cfg.json"], "got null",
         setup=config_file("null"), subprocess=True),
    Case("config-list", "--config", "a file holding a list", [*B, "--config", "{tmp}/cfg.json"], "got a list",
         setup=config_file("[1, 2]")),
    Case("config-binary", "--config", "a binary file", [*B, "--config", "{tmp}/cfg.json"], "not text",
         setup=lambda tmp, run: write(tmp / "cfg.json", b"\xff\xfe\x00\x81garbage") and None),
    Case("config-missing", "--config", "a file that does not exist", [*B, "--config", "{tmp}/none.json"],
         "does not exist"),
    Case("config-agents-string", "--config", '"num_agents": "8"', [*B, "--config", "{tmp}/cfg.json"],
         "task.num_agents must be an integer", setup=config_file(quick_config(task={"num_agents": "8"}))),
    Case("config-layers-bool", "--config", '"num_layers": true', [*B, "--config", "{tmp}/cfg.json"],
         "model.num_layers must be an integer, got true", setup=config_file(quick_config(model={"num_layers": True}))),
    Case("config-lr-string", "--config", '"lr": "fast"', [*B, "--config", "{tmp}/cfg.json"],
         "train.lr must be a number", setup=config_file(quick_config(train={"lr": "fast"}))),
    Case("config-tracking-int", "--config", '"tracking": 1', [*B, "--config", "{tmp}/cfg.json"],
         "model.tracking must be true or false", setup=config_file(quick_config(model={"tracking": 1}))),
    Case("config-dataset-number", "--config", '"dataset": 5', [*B, "--config", "{tmp}/cfg.json"],
         "task.dataset must be a string", setup=config_file(quick_config(task={"dataset": 5}))),
    Case("config-tuple-elements", "--config", '"eval_points": [0, "a"]', [*B, "--config", "{tmp}/cfg.json"],
         "eval.eval_points[1] must be an integer", setup=config_file(quick_config(eval={"eval_points": [0, "a"]}))),
    Case("config-tuple-scalar", "--config", '"step_grid": 0.5', [*B, "--config", "{tmp}/cfg.json"],
         "eval.step_grid must be a list of floats", setup=config_file(quick_config(eval={"step_grid": 0.5}))),
    Case("config-section-number", "--config", '"task": 5', [*B, "--config", "{tmp}/cfg.json"],
         "section 'task' must be a JSON object", setup=config_file({"task": 5})),
    Case("config-unknown-key", "--config", "an unknown key", [*B, "--config", "{tmp}/cfg.json"],
         "unknown key(s) ['agents']", setup=config_file({"task": {"agents": 8}})),
    Case("config-negative-size", "--config", '"samples_seen": -4', [*B, "--config", "{tmp}/cfg.json"],
         "samples_seen must be a positive integer", setup=config_file(quick_config(task={"samples_seen": -4}))),
    Case("config-nan", "--config", '"eps": NaN', [*B, "--config", "{tmp}/cfg.json"], "must be a finite number",
         setup=config_file(json.dumps(quick_config(train={"eps": float("nan")})))),
    # ------------------------------------------------------------------ numbers on the command line
    Case("lr-negative", "numbers", "a negative learning rate", [*TR, "--lr", "-1e-3"], "lr must be > 0",
         subprocess=True),
    Case("seed-negative", "numbers", "a negative seed", [*TR, "--seed", "-1"], "--seed -1: seed must be"),
    Case("lr-minus-inf", "numbers", "--lr -inf", [*TR, "--lr", "-inf"], "--lr -inf: TrainConfig.lr must be a finite"),
    Case("dual-lr-negative", "numbers", "a negative dual step", [*TR, "--dual-lr", "-0.1"], "dual_lr must be >= 0"),
    Case("agents-word", "numbers", "--agents abc", [*B, "--agents", "abc"], "invalid int value: 'abc'"),
    Case("agents-fraction", "numbers", "--agents 8.5", [*B, "--agents", "8.5"], "invalid int value: '8.5'"),
    Case("agents-one", "numbers", "one agent", [*B, "--agents", "1"], "at least 2"),
    Case("layers-negative", "numbers", "--layers -3", [*TR, "--layers", "-3"], "num_layers must be a positive"),
    Case("steps-zero", "numbers", "--steps 0", [*TR, "--steps", "0"], "steps must be a positive integer"),
    Case("alpha-nan", "numbers", "--alpha nan", [*B, "--alpha", "nan"], "alpha"),
    Case("eps-above-one", "numbers", "--eps 1.5", [*TR, "--eps", "1.5"], "eps must lie in [0, 1)"),
    Case("workers-zero", "numbers", "--workers 0", [*B, "--backend", "torch", "--workers", "0"],
         "needs at least 1 worker"),
    Case("workers-above-agents", "numbers", "more workers than agents",
         [*B, "--backend", "torch", "--workers", "9"], "cannot place 8 agents on 9 workers"),
    Case("async-train-all", "numbers", "every agent dropped", [*TR, "--async-train", "8"],
         "async_train must lie in [0, num_agents = 8)"),
    Case("bool-word", "numbers", "--tracking maybe", [*TR, "--tracking", "maybe"], "expected true or false"),
    # ------------------------------------------------------------------ sizes
    Case("agents-millions", "sizes", "3,000,000 agents (used to hang for minutes)", [*TR, "--agents", "3000000"],
         "GiB limit", subprocess=True),
    Case("agents-baselines", "sizes", "2,000,000 agents for the baselines", [*B, "--agents", "2000000"],
         "evaluation iterates"),
    Case("layers-huge", "sizes", "100,000 layers", [*TR, "--layers", "100000"], "training activations"),
    Case("samples-huge", "sizes", "10^8 samples per agent", [*TR, "--samples-seen", "100000000"], "GiB limit"),
    Case("test-tasks-huge", "sizes", "10^7 test tasks", [*B, "--test-tasks", "10000000"], "evaluation iterates"),
    # ------------------------------------------------------------------ your own graph
    Case("edges-one-indexed", "graph", "an edge list numbered from 1", [*B, "--topology", "{tmp}/g.txt"],
         "as if counted from 1", setup=files("1 2\n2 3\n3 1\n")),
    Case("edges-agents-mismatch", "graph", "a 6-agent edge list with --agents 100",
         [*B, "--topology", "{tmp}/g.txt", "--agents", "100"], "--agents 100 but the edge list",
         setup=files(TRIANGLE_PLUS)),
    Case("edges-config-mismatch", "graph", "a 6-agent edge list with a --config saying 8 agents",
         [*B, "--config", "{tmp}/cfg.json", "--topology", "{tmp}/g.txt"], "has num_agents 8 but the edge list",
         setup=both(files(TRIANGLE_PLUS), config_file(quick_config()))),
    Case("edges-bad-line", "graph", "a line that is not 'i j [weight]'", [*B, "--topology", "{tmp}/g.txt"],
         "line 2: expected 'i j' or 'i j weight'", setup=files("0 1\n1 two\n")),
    Case("edges-negative-id", "graph", "a negative id", [*B, "--topology", "{tmp}/g.txt"],
         "node ids must be >= 0", setup=files("0 1\n1 -2\n")),
    Case("edges-lowest-id", "graph", "ids starting at 3", [*B, "--topology", "{tmp}/g.txt"],
         "lowest node id is 3", setup=files("3 4\n4 5\n")),
    Case("edges-negative-weight", "graph", "a negative weight", [*B, "--topology", "{tmp}/g.txt"],
         "must be a number > 0", setup=files("0 1 0.5\n1 2 -0.5\n2 0 0.5\n")),
    Case("edges-asymmetric", "graph", "an edge given twice with two weights", [*B, "--topology", "{tmp}/g.txt"],
         "mixing weights must be symmetric", setup=files("0 1 0.5\n1 2 0.5\n2 0 0.5\n1 0 0.25\n")),
    Case("edges-weights-too-big", "graph", "weights summing above 1 at an agent", [*B, "--topology", "{tmp}/g.txt"],
         "sum to 1.4 > 1", setup=files("0 1 0.7\n1 2 0.7\n2 0 0.2\n")),
    Case("edges-mixed-weights", "graph", "weights on some lines only", [*B, "--topology", "{tmp}/g.txt"],
         "give every edge a weight or none", setup=files("0 1 0.5\n1 2\n2 0\n")),
    Case("edges-self-weight", "graph", "a weighted self-loop", [*B, "--topology", "{tmp}/g.txt"],
         "own weight is implied", setup=files("0 0 0.5\n0 1 0.5\n1 2 0.5\n")),
    Case("edges-disconnected", "graph", "two islands", [*B, "--topology", "{tmp}/g.txt"],
         "g.txt with 6 agents: graph is disconnected: 2 connected components", setup=files("0 1\n1 2\n2 0\n3 4\n4 5\n5 3\n")),
    Case("edges-empty", "graph", "an edge list with no edges", [*B, "--topology", "{tmp}/g.txt"],
         "holds no edges", setup=files("# nothing yet\n")),
    Case("edges-missing", "graph", "an edge list that does not exist", [*B, "--topology", "{tmp}/nope.txt"],
         "topology file not found"),
    Case("json-ignored-weights", "graph", "a JSON spec whose weighted edge list it would ignore",
         [*B, "--topology", "{tmp}/g.json"], "would ignore",
         setup=both(files("0 1 0.5\n1 2 0.5\n2 0 0.5\n"), files('{"family": "edge_list", "edge_list": "g.txt"}',
                                                             "g.json"))),
    Case("json-unknown-family", "graph", "a JSON spec of an unknown family", [*B, "--topology", "{tmp}/g.json"],
         "unknown topology family 'hypercube'", setup=files('{"family": "hypercube"}', "g.json")),
    Case("json-malformed", "graph", "a malformed JSON spec", [*B, "--topology", "{tmp}/g.json"], "invalid JSON",
         setup=files('{"family": ', "g.json")),
    Case("topology-unknown", "graph", "an unknown preset", [*B, "--topology", "no_such_graph"],
         "unknown topology preset 'no_such_graph'"),
    Case("weights-not-edge-list", "graph", "normalization 'weights' on a ring", [*B, "--topology", "{tmp}/g.json"],
         "edge lists only", setup=files('{"family": "ring", "normalization": "weights"}', "g.json")),
    # ------------------------------------------------------------------ datasets
    Case("mnist-no-root", "data", "mnist without --data-root", [*B, "--dataset", "mnist"], "--data-root"),
    Case("mnist-missing-root", "data", "a --data-root that does not exist",
         [*B, "--dataset", "mnist", "--data-root", "{tmp}/none"], "does not exist"),
    Case("mnist-missing-file", "data", "a folder lacking one idx file",
         [*B, "--dataset", "mnist", "--data-root", "{tmp}/mnist"], "missing file t10k-labels-idx1-ubyte",
         setup=mnist_folder(corrupt=False, skip="t10k-labels-idx1-ubyte")),
    Case("mnist-corrupt", "data", "corrupt idx files (found when loading; --out removed again)",
         [*B, "--dataset", "mnist", "--data-root", "{tmp}/mnist"], "train-images-idx3-ubyte",
         setup=mnist_folder(corrupt=True)),
    Case("dataset-unknown", "data", "an unknown dataset", [*B, "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    # ------------------------------------------------------------------ backends
    Case("backend-unknown", "backend", "an unknown backend", [*B, "--backend", "carrier-pigeon"],
         "--backend must be one of"),
    Case("backend-local-workers", "backend", "3 workers on the local backend", [*B, "--workers", "3"],
         "the local backend runs one worker"),
    # ------------------------------------------------------------------ checkpoints and resume
    Case("resume-no-checkpoint", "resume", "--resume of an empty folder", RES, "holds no checkpoint.pt",
         setup=lambda tmp, run: (tmp / "run").mkdir()),
    Case("resume-missing-folder", "resume", "--resume of a folder that does not exist", RES, "does not exist"),
    Case("resume-fewer-steps", "resume", "--resume --steps 4 of a run at step 6", [*RES, "--steps", "4"],
         "is at step 6, past --steps 4", setup=copied_run(), subprocess=True),
    Case("resume-other-settings", "resume", "--resume with other settings", [*RES, "--layers", "3"],
         "differs in: model.num_layers", setup=copied_run()),
    Case("checkpoint-garbage", "checkpoint", "a checkpoint of garbage bytes", RES, "corrupt",
         setup=both(copied_run(), files(b"\x00garbage" * 10, "run/checkpoint.pt"))),
    Case("checkpoint-pickle", "checkpoint", "a crafted pickle that would run code", RES, "corrupt",
         setup=crafted_pickle),
    Case("checkpoint-no-optimizer", "checkpoint", "a checkpoint without its optimizer", RES,
         "has no 'optimizer' entry", setup=copied_run(without("optimizer"))),
    Case("checkpoint-no-model", "checkpoint", "a checkpoint without its model", RES, "has no 'model' entry",
         setup=copied_run(without("model"))),
    Case("checkpoint-tensor-shape", "checkpoint", "a tensor of the wrong shape", RES,
         "'model.taps' has shape (2, 2)", setup=copied_run(lambda s: {**s, "model": {**s["model"], "taps": torch.zeros(2, 2)}})),
    Case("checkpoint-step-string", "checkpoint", "a step that is a string", RES, "'step' should be of type int",
         setup=copied_run(with_value("step", "6"))),
    Case("checkpoint-duals-shape", "checkpoint", "duals of the wrong length", RES, "'coordinator.duals' should be",
         setup=copied_run(with_value("coordinator.duals", torch.zeros(7, dtype=torch.float64)))),
    Case("checkpoint-config-text", "checkpoint", "a config that is not JSON", RES, "its config is not JSON",
         setup=copied_run(with_value("config", "{oops"))),
    Case("model-no-weights", "checkpoint", "evaluate a model.pt without weights", ["evaluate", "{tmp}/run", *O],
         "has no 'model' entry", setup=copied_run(without("model"), "model.pt")),
    Case("model-tensor-type", "checkpoint", "evaluate a model.pt holding a string for a tensor",
         ["evaluate", "{tmp}/run", *O], "should be a float tensor",
         setup=copied_run(lambda s: {**s, "model": {**s["model"], "taps": "zeros"}}, "model.pt")),
    Case("model-config-types", "checkpoint", "evaluate a model.pt whose config has num_agents \"8\"",
         ["evaluate", "{tmp}/run", *O], "task.num_agents must be an integer",
         setup=copied_run(lambda s: {**s, "config": json.dumps(quick_config(task={"num_agents": "8"}))}, "model.pt")),
    Case("init-from-damaged", "checkpoint", "--init-from a run whose model.pt has no weights",
         [*TR, "--init-from", "{tmp}/run"], "has no 'model' entry", setup=copied_run(without("model"), "model.pt")),
    # ------------------------------------------------------------------ evaluate
    Case("evaluate-missing", "evaluate", "a run that does not exist", ["evaluate", "{tmp}/nope", *O], "does not exist"),
    Case("evaluate-twice", "evaluate", "the same run twice", ["evaluate", "{run}", "{run}", *O], "is given twice"),
    Case("evaluate-other-dataset", "evaluate", "a paper-network run on another dataset",
         ["evaluate", "{paper}", "--dataset", "wine", *O], "trained on 'digits' (64 features, 10 classes)"),
    Case("evaluate-no-model", "evaluate", "a folder without model.pt", ["evaluate", "{tmp}/empty", *O],
         "holds no model.pt", setup=lambda tmp, run: (tmp / "empty").mkdir()),
    Case("evaluate-pretrained-unknown", "evaluate", "an unknown shipped model", ["evaluate", "pretrained:nope", *O],
         "no pretrained model 'nope'"),
    # ------------------------------------------------------------------ bench
    Case("bench-report-seed-zero", "bench", "the development tasks as the report", ["bench", Q, *O, "--report-seed", "0"],
         "report_seed must be >= 1"),
    Case("bench-method-unknown", "bench", "an unknown baseline", ["bench", Q, *O, "--methods", "dgd,newton"],
         "unknown bench method(s) ['newton']"),
    Case("bench-rounds-short", "bench", "fewer rounds than the learned optimizer takes",
         ["bench", "pretrained", Q, *O, "--rounds", "10"], "pass --rounds 20 or more"),
    Case("bench-run-missing", "bench", "a learned optimizer folder without model.pt", ["bench", "{tmp}/empty", Q, *O],
         "holds no model.pt", setup=lambda tmp, run: (tmp / "empty").mkdir()),
    Case("bench-draws-zero", "bench", "no test draw", ["bench", Q, *O, "--draws", "0"],
         "bench draws must be a positive integer"),
    # ------------------------------------------------------------------ the command line itself
    Case("flag-unknown", "command line", "a misspelt flag", [*B, "--agnets", "8"], "unrecognized arguments: --agnets"),
    Case("flag-missing-out", "command line", "no --out", ["train", Q], "the following arguments are required: --out"),
    Case("preset-unknown", "command line", "an unknown preset", ["train", "--preset", "huge", *O], "invalid choice: 'huge'"),
    Case("objective-unknown", "command line", "an unknown objective", [*TR, "--objective", "global"],
         "objective must be one of ('local', 'pooled')"),
    Case("local-net-unknown", "command line", "an unknown local network", [*TR, "--local-net", "transformer"],
         "local_net must be one of ('compact', 'paper')"),
    # ------------------------------------------------------------------ Ctrl-C
    Case("ctrl-c-train", "Ctrl-C", "Ctrl-C after a checkpoint", TR, "interrupted; continue with: surf-dist train",
         patch=interrupt_after(write_checkpoint=True), code=130, keeps="out/checkpoint.pt"),
    Case("ctrl-c-baselines", "Ctrl-C", "Ctrl-C before anything is written", B,
         "interrupted before anything was written", patch=interrupt_after(write_checkpoint=False), code=130),
]


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One quick training (6 steps: a checkpoint at step 6) shared by every case that reads a run."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--quick", "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    return paper_model(tmp_path_factory)


@pytest.fixture(autouse=True)
def memory_limit(monkeypatch):
    monkeypatch.setenv("SURF_DIST_MEMORY_LIMIT_GB", MEMORY_LIMIT_GB)


def snapshot(*folders) -> dict:
    """Every file under ``folders`` with a hash of its bytes (and every link and folder)."""
    seen = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_symlink():
                seen[str(path)] = "link:" + os.readlink(path)
            elif path.is_file():
                seen[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                seen[str(path)] = "dir"
    return seen


def stable(text: str, tmp: Path, run: Path, paper_dir: Path) -> str:
    """A message with the machine-specific parts replaced: folders, pids, the interpreter."""
    for path, name in ((tmp, "TMP"), (run, "RUN"), (paper_dir, "PAPER")):
        for form in {str(path.resolve()), str(path)}:
            text = text.replace(form, name)
    return re.sub(r"pid \d+", "pid PID", text)


def expand(argv, tmp, run, paper_dir):
    return [a.format(tmp=tmp, run=run, paper=paper_dir) for a in argv]


# --------------------------------------------------------------------------- the cases

@pytest.mark.parametrize("case", [pytest.param(c, marks=[pytest.mark.slow, pytest.mark.timeout(60)])   # 2-5 s each
                                  if c.subprocess else c for c in CASES], ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(case, tmp_path, trained, paper, monkeypatch, capsys):
    undo = case.setup(tmp_path, trained) if case.setup else None
    if case.patch:
        case.patch(monkeypatch, tmp_path, trained)
    argv = expand(case.argv, tmp_path, trained, paper)
    before = snapshot(tmp_path, trained)
    try:
        if case.subprocess:
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run([sys.executable, "-m", "surf_dist.cli.main", *argv], capture_output=True, text=True,
                                  timeout=120, env=env)
            code, err = done.returncode, done.stderr
        else:
            code = main(argv)
            err = capsys.readouterr().err
        after = snapshot(tmp_path, trained)
    finally:
        if undo:
            undo()
    if case.keeps:
        kept = str(tmp_path / case.keeps)
        assert kept in after, f"{case.id}: {case.keeps} should have been kept"
        after = {k: v for k, v in after.items() if k in before}
    assert "Traceback" not in err, err
    lines = err.splitlines()
    command = argv[0]
    assert len(lines) == 1, f"{case.id}: stderr should be one line, got {len(lines)}:\n{err}"
    assert lines[0].startswith(f"surf-dist {command}: error: "), lines[0]
    assert code == case.code, f"{case.id}: exit {code}, expected {case.code}: {err}"
    assert case.expect in lines[0], f"{case.id}: {case.expect!r} not in {lines[0]!r}"
    assert after == before, f"{case.id}: files changed: {sorted(set(after.items()) ^ set(before.items()))[:4]}"
    RESULTS[case.id] = {"message": stable(lines[0], tmp_path, trained, paper), "code": code,
                        "argv": stable(" ".join(case.argv).replace("{tmp}", "TMP").replace("{run}", "RUN")
                                       .replace("{paper}", "PAPER"), tmp_path, trained, paper)}


# --------------------------------------------------------------------------- beyond the table

def test_a_real_read_only_folder_is_refused(tmp_path, capsys):
    """Where the machine has a read-only mount (root ignores chmod, so only a mount tells)."""
    candidates = [Path(p) for p in ("/proc/sys", "/sys") if Path(p).is_dir()]
    target = next((p for p in candidates if os.statvfs(p).f_flag & os.ST_RDONLY), None)
    if target is None:
        pytest.skip("no read-only mount on this machine (the table simulates one)")
    code = main(["baselines", "--quick", "--out", str(target / "surf-dist-out")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write in" in err and len(err.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_ctrl_c_of_a_real_training_prints_the_resume_command(tmp_path):
    """SIGINT to a real `surf-dist train` after its first checkpoint: exit 130, one line with the
    command that continues it, and that command does continue it."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["train", "--quick", "--steps", "100000", "--out", str(out), "--no-progress"]
    # a pytest started in the background of a non-interactive shell ignores SIGINT, and so would
    # its children (Python keeps an inherited SIG_IGN): give the child the terminal's default
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)   # noqa: E731
    proc = subprocess.Popen([sys.executable, "-m", "surf_dist.cli.main", *argv], stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint.pt").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    try:
        err = proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:         # stuck after Ctrl-C: show where (surf_dist.cli.main.entry), then end it
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        pytest.fail("no exit 60 s after SIGINT; its threads then:\n" + proc.communicate()[1])
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert f"continue with: surf-dist train --quick --steps 100000 --out {out} --no-progress --resume" in err
    assert not (out / io_files.LOCK_NAME).exists()


@pytest.mark.slow
@pytest.mark.timeout(30)
def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    """A lock file left by a process that died (its pid gone, no flock held): taken over, said so."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = tmp_path / "out"
    write(folder / io_files.LOCK_NAME, dead.stdout)
    with io_files.FolderLock(folder):
        assert (folder / io_files.LOCK_NAME).read_text().strip() == str(os.getpid())
    assert f"took over the stale lock {folder / io_files.LOCK_NAME} of process {dead.stdout.strip()}" in \
        capsys.readouterr().err
    assert not (folder / io_files.LOCK_NAME).exists()


def test_evaluate_names_never_collide(tmp_path, trained, capsys):
    """`a/run` and `b/run` stay two models, a folder named `dgd` does not replace the baseline."""
    for name in ("a/run", "b/run", "dgd"):
        shutil.copytree(trained, tmp_path / name)
    out = tmp_path / "eval"
    argv = ["evaluate", str(tmp_path / "a/run"), str(tmp_path / "b/run"), str(tmp_path / "dgd"),
            "--out", str(out), "--rounds", "2", "--no-progress"]
    assert main(argv) == 0
    methods = json.loads((out / "summary.json").read_text())["methods"]
    assert {"a/run", "b/run", "run:dgd", "dgd"} <= set(methods)
    assert methods["run:dgd"]["rounds"] != methods["dgd"]["rounds"]      # SURF's curve vs DGD's


def test_an_edge_list_sets_the_agents(tmp_path, capsys):
    """--topology FILE: the agents come from the file, its weights are the mixing weights."""
    from surf_dist.commands.jobs import run_config
    edges = write(tmp_path / "g.txt", "0 1 0.3\n1 2 0.3\n2 3 0.3\n3 4 0.3\n4 5 0.3\n5 0 0.3\n")
    out = tmp_path / "run"
    assert main(["train", "--quick", "--steps", "1", "--topology", str(edges), "--out", str(out),
                 "--no-progress"]) == 0
    cfg = run_config(out)
    assert cfg.task.num_agents == 6 and cfg.task.topology == str(edges.resolve())


# --------------------------------------------------------------------------- the table

def render(results: dict) -> str:
    lines = ["# Bad input and what it gets", "",
             "Every row is a case of `tests/test_bad_inputs.py`, which runs it (most in process, those marked",
             "with `*` as a real `python -m surf_dist.cli.main`), checks that it exits with the code shown and",
             "exactly one line on stderr, and that it created or overwrote nothing; then it renders this",
             "table and fails if this file differs. Regenerate: "
             "`SURF_DIST_WRITE_BAD_INPUTS=1 pytest tests/test_bad_inputs.py`.",
             "", "`TMP`: the case's own folder; `RUN`: a run trained with `surf-dist train --quick` (step 6);",
             "`PAPER`: a model of the paper's local network trained on digits. The size checks run with",
             f"`SURF_DIST_MEMORY_LIMIT_GB={MEMORY_LIMIT_GB}` (otherwise the limit is the machine's memory).",
             "", f"{len(results)} inputs.", "",
             "| # | family | input | command (`surf-dist ...`) | exit | message (stderr) |",
             "|---:|---|---|---|---:|---|"]
    for number, case in enumerate(CASES, start=1):
        result = results[case.id]
        cells = [str(number), case.family, case.what + (" *" if case.subprocess else ""),
                 f"`{result['argv']}`", str(result["code"]), "`" + result["message"].replace("`", "'") + "`"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")   # GFM: \| in a code span too
    return "\n".join(lines) + "\n"


def test_the_table_in_docs_is_this_run():
    missing = [c.id for c in CASES if c.id not in RESULTS]
    if missing:
        pytest.skip(f"{len(missing)} cases did not run here (run the whole file to compare the table)")
    text = render(RESULTS)
    if os.environ.get("SURF_DIST_WRITE_BAD_INPUTS"):
        TABLE.write_text(text)
    assert TABLE.is_file() and TABLE.read_text() == text, (
        "docs/BAD_INPUTS.md differs from what the cases print now; regenerate it with "
        "SURF_DIST_WRITE_BAD_INPUTS=1 pytest tests/test_bad_inputs.py and review the diff")
