"""Bad input, as a careless or hostile user would give it: every case ends in exit 2 (130 for
Ctrl-C) and exactly one line on stderr, ``surf-dist COMMAND: error: ...``, with no traceback,
and nothing is created or overwritten. The cases and their messages are docs/BAD_INPUTS.md;
the last test renders that table from this run and fails if the file has drifted
(``SURF_DIST_WRITE_BAD_INPUTS=1 pytest tests/test_bad_inputs.py`` rewrites it).

Most cases run ``surf_dist.cli.main.main(argv)`` in this process; those marked ``subprocess`` run
``python -m surf_dist.cli.main`` to show that nothing reaches stderr but the one line.
"""
from __future__ import annotations

import contextlib
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

from surf_dist.cli import errors as cli_errors
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
    stdout: str = ""             # subprocess only: a file its standard output goes to (/dev/full)


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


def interrupt_after(write_checkpoint: bool, signal_as=KeyboardInterrupt):
    """Ctrl-C (or SIGTERM: ``cli.errors.Terminated``) in the middle of the work (after a checkpoint
    was written, or before anything)."""
    def patch(monkeypatch, tmp, run):
        def interrupted(job, cfg, backend, workers, device, **options):
            if write_checkpoint:
                shutil.copy(run / "checkpoint.pt", Path(options["run_dir"]) / "checkpoint.pt")
            raise signal_as
        monkeypatch.setattr("surf_dist.runtime.run_job", interrupted)
    return patch


def read_only_disk(monkeypatch, tmp, run):
    """A read-only mount (root ignores chmod): the probe file fails as it would there."""
    def refuse(probe):
        raise OSError(30, "Read-only file system", str(probe))
    monkeypatch.setattr(io_files, "_create_and_remove_probe", refuse)


def environment(name: str, value: str):
    return lambda monkeypatch, tmp, run: monkeypatch.setenv(name, value)


def mnist_gz_folder(body: bytes):
    """The four idx files gzipped (``.gz``), each holding ``body`` (not a gzip stream)."""
    def setup(tmp, run):
        for name in MNIST_FILES:
            write(tmp / "mnist" / f"{name}.gz", body)
    return setup


def link_loop(a: str, b: str):
    """``a`` -> ``b`` -> ``a``: a loop of links."""
    def setup(tmp, run):
        os.symlink(tmp / b, tmp / a)
        os.symlink(tmp / a, tmp / b)
    return setup


def empty_idx_folder(tmp, run):
    """The four MNIST idx files with valid headers and no samples."""
    for name in MNIST_FILES:
        dims = (0, 28, 28) if "images" in name else (0,)
        magic = 0x00000800 + len(dims)
        write(tmp / "mnist" / name, magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims))


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
    Case("config-tuple-scalar", "--config", '"eval_points": 5', [*B, "--config", "{tmp}/cfg.json"],
         "eval.eval_points must be a list of", setup=config_file(quick_config(eval={"eval_points": 5}))),
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
    Case("mixture-unknown-preset", "numbers", "--mixture of a preset that is not one", [*TR, "--mixture", "big"],
         "expected PRESET[:TOPOLOGY[:AGENTS]]"),
    Case("mixture-unknown-topology", "numbers", "--mixture of a topology that is not one",
         [*TR, "--mixture", "quick:nowhere"], "unknown topology preset 'nowhere'"),
    Case("mixture-one-agent", "numbers", "--mixture of one agent", [*TR, "--mixture", "quick:ring:1"],
         "num_agents must be at least 2"),
    # ------------------------------------------------------------------ --compress
    Case("compress-zero-bits", "compress", "a bit width of 0", [*TR, "--compress", "q0"],
         "a bit width must lie in 1..32, got 0"),
    Case("compress-33-bits", "compress", "a bit width of 33", [*B, "--compress", "q33"],
         "a bit width must lie in 1..32, got 33"),
    Case("compress-k-above-d", "compress", "top-k above the model's d", [*EV, "--compress", "topk:651"],
         "keeps 651 coordinates but a message holds d = 650"),
    Case("compress-k-zero", "compress", "k = 0", ["bench", Q, *O, "--compress", "randk:0"], "k must be >= 1"),
    Case("compress-fraction-above-one", "compress", "a fraction above 1", [*TR, "--compress", "topk:1.5"],
         "a fraction of the coordinates must lie in (0, 1]"),
    Case("compress-unknown", "compress", "an unknown compressor", [*B, "--compress", "zip8"], "unknown compressor"),
    Case("compress-config", "compress", '"compress": "q0" in a config file', [*B, "--config", "{tmp}/cfg.json"],
         "a bit width must lie in 1..32", setup=config_file(quick_config(task={"compress": "q0"}))),
    # ------------------------------------------------------------------ --link-failure, time-varying graphs
    Case("link-failure-one", "links", "every link fails (p = 1)", [*TR, "--link-failure", "1"],
         "link_failure must lie in [0, 1)"),
    Case("link-failure-negative", "links", "a negative probability", [*B, "--link-failure", "-0.1"],
         "link_failure must lie in [0, 1)"),
    Case("link-failure-config", "links", '"link_failure": 2 in a config file', [*B, "--config", "{tmp}/cfg.json"],
         "link_failure must lie in [0, 1)", setup=config_file(quick_config(task={"link_failure": 2}))),
    Case("stale-link-failure", "links", "experiment async --async-mode stale with link failures",
         ["experiment", "async", Q, *O, "--async-mode", "stale", "--link-failure", "0.3"],
         "--async-mode stale with --link-failure 0.3: a receiver's last row from a dropped neighbour may predate"),
    Case("stale-time-varying", "links", "experiment async --async-mode stale on a time-varying topology",
         ["experiment", "async", Q, *O, "--async-mode", "stale", "--topology", "random_matching"],
         "--async-mode stale with the time-varying topology random_matching"),
    Case("stale-config", "links", '"async_mode": "stale" and "link_failure": 0.5 in a config file',
         ["evaluate", "{run}", *O, "--config", "{tmp}/cfg.json"], "use --async-mode zeros or --link-failure 0",
         setup=config_file(quick_config(task={"link_failure": 0.5}, eval={"async_mode": "stale"}))),
    Case("sequence-empty", "links", "a topology sequence with no graph", [*B, "--topology", "{tmp}/g.json"],
         "topology sequence is empty", setup=files('{"family": "sequence", "sequence": []}', "g.json")),
    Case("sequence-agent-counts", "links", "a sequence of edge lists of 3 and 4 agents",
         [*B, "--topology", "{tmp}/g.json"], "its graphs have different agent counts",
         setup=both(files("0 1\n1 2\n2 0\n", "a.txt"), files("0 1\n1 2\n2 3\n3 0\n", "b.txt"),
                    files('{"family": "sequence", "sequence": ["a.txt", "b.txt"]}', "g.json"))),
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
    Case("json-malformed", "graph", "a malformed JSON spec", [*B, "--topology", "{tmp}/g.json"], "is not valid JSON",
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
    Case("evaluate-skip-unknown", "evaluate", "--skip a part evaluate does not have", [*EV, "--skip", "baselines,plots"],
         "unknown part(s) ['plots']; choose from baselines, async, permuted, centralized"),
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
    # ------------------------------------------------------------------ issue 25, data loss: a path that names nothing
    Case("out-empty", "data loss", "--out \"\" (an unset shell variable; was the current folder)",
         [*B[:2], "--out", ""], "--out is an empty string, which names no file or folder"),
    Case("out-empty-force", "data loss", "--out \"\" --force (overwrote summary.json here)",
         [*B[:2], "--out", "", "--force"], "--out is an empty string", subprocess=True),
    Case("out-blanks", "data loss", "--out of blanks only", [*B[:2], "--out", "   "], "--out is only blanks"),
    Case("config-empty", "data loss", "--config \"\"", [*B, "--config", ""], "--config is an empty string"),
    Case("choices-from-empty", "data loss", "bench --choices-from \"\"", ["bench", Q, *O, "--choices-from", ""],
         "--choices-from is an empty string"),
    Case("evaluate-run-empty", "data loss", "evaluate \"\" (a run that is the current folder)",
         ["evaluate", "", *O], "a RUN argument is an empty string"),
    # ------------------------------------------------------------------ issue 25, hang: a graph that cannot connect
    Case("er-prob-1e-300", "hang", "erdos_renyi with edge_prob 1e-300 (looped forever, memory growing)",
         [*B, "--topology", "{tmp}/g.json"], "no connected graph in 100 draws (edge_prob 1e-300",
         setup=files(json.dumps({"family": "erdos_renyi", "edge_prob": 1e-300}), "g.json"), subprocess=True),
    Case("er-prob-tiny", "hang", "erdos_renyi with edge_prob 1e-6 for 8 agents",
         [*B, "--topology", "{tmp}/g.json"], "about ln(n)/n = 0.26 or more",
         setup=files(json.dumps({"family": "erdos_renyi", "edge_prob": 1e-6}), "g.json")),
    Case("rg-radius-tiny", "hang", "random_geometric with radius 1e-300",
         [*B, "--topology", "{tmp}/g.json"], "no connected graph in 100 draws (radius 1e-300",
         setup=files(json.dumps({"family": "random_geometric", "radius": 1e-300}), "g.json")),
    # ------------------------------------------------------------------ issue 25, accepted and wrong: no consensus
    Case("mix-swap", "no consensus", "two agents that swap models: '0 1 1'", [*B, "--topology", "{tmp}/g.txt"],
         "every agent's own weight is 0 and the graph is bipartite", setup=files("0 1 1\n")),
    Case("mix-bipartite-ring", "no consensus", "a weighted 4-ring with zero self-weights",
         [*B, "--topology", "{tmp}/g.txt"], "spectral gap 0",
         setup=files("0 1 0.5\n1 2 0.5\n2 3 0.5\n3 0 0.5\n")),
    Case("mix-float32-zero", "no consensus", "weights that are 0 in float32 (1e-46)", [*B, "--topology", "{tmp}/g.txt"],
         "are 0 in float32", setup=files("0 1 1e-46\n1 2 1e-46\n2 0 1e-46\n")),
    Case("mix-gap-tiny", "no consensus", "weights of 1e-20: a spectral gap of 1e-20", [*B, "--topology", "{tmp}/g.txt"],
         "the second-largest eigenvalue modulus is 1", setup=files("0 1 1e-20\n1 2 1e-20\n2 0 1e-20\n")),
    # ------------------------------------------------------------------ issue 25, accepted and wrong: rounds
    Case("rounds-huge", "rounds", "--rounds 10^12 (ran 500 and recorded 10^12)", [*B, "--rounds", "1000000000000"],
         "baseline_rounds must be at most 100,000"),
    Case("rounds-float-config", "rounds", '"baseline_rounds": 1e12 in a config', [*B, "--config", "{tmp}/cfg.json"],
         "eval.baseline_rounds must be an integer", setup=config_file(quick_config(eval={"baseline_rounds": 1e12}))),
    # ------------------------------------------------------------------ issue 25, accepted and wrong: divergence
    Case("diverge-nan-model", "divergence", "evaluate a model.pt of NaN weights", ["evaluate", "{tmp}/run", *O],
         "NaN or infinite value(s): the model diverged",
         setup=copied_run(lambda s: {**s, "model": {k: v * float("nan") for k, v in s["model"].items()}}, "model.pt")),
    Case("diverge-nan-init", "divergence", "--init-from a model.pt of NaN weights (was 'lower --lr')",
         [*TR, "--init-from", "{tmp}/run"], "NaN or infinite value(s)",
         setup=copied_run(lambda s: {**s, "model": {k: v * float("nan") for k, v in s["model"].items()}}, "model.pt")),
    # ------------------------------------------------------------------ issue 25, accepted and wrong: unused settings
    Case("evaluate-quick", "unused setting", "--quick with evaluate RUN", ["evaluate", "{run}", Q, *O],
         "--quick is not used: evaluate takes its settings from the run"),
    Case("evaluate-preset", "unused setting", "--preset with evaluate pretrained", ["evaluate", "pretrained", "--preset",
         "paper", *O], "--preset paper is not used"),
    Case("quick-and-preset", "unused setting", "--quick and --preset paper", [*TR, "--preset", "paper"],
         "--quick and --preset paper both name a preset"),
    Case("data-root-digits", "unused setting", "--data-root with the bundled digits", [*B, "--data-root", "{tmp}"],
         "dataset 'digits' comes with the package and reads no files"),
    Case("bench-methods-empty", "unused setting", "bench --methods '' (meant all 14)", ["bench", Q, *O, "--methods", ""],
         "--methods '' names nothing"),
    Case("bench-methods-twice", "unused setting", "bench --methods dgd,dgd (ran twice)",
         ["bench", Q, *O, "--methods", "dgd,dgd"], "dgd given twice"),
    Case("target-nan", "unused setting", "experiment eps --target nan", ["experiment", "eps", Q, *O, "--target", "nan"],
         "--target nan: a local_accuracy target must lie in [0, 1]"),
    Case("target-other-experiment", "unused setting", "--target with experiment layers",
         ["experiment", "layers", Q, *O, "--target", "0.5"], "--target is not used by experiment layers"),
    Case("topology-preset-and-file", "unused setting", "--topology ring with a file ./ring (the file won)",
         [*B, "--topology", "ring"], "'ring' names both the preset 'ring' and the file ./ring",
         setup=files("0 1\n", "ring"), patch=lambda monkeypatch, tmp, run: monkeypatch.chdir(tmp)),
    Case("config-duplicate-key", "unused setting", "a key twice in a config (the first was dropped)",
         [*B, "--config", "{tmp}/cfg.json"], "key(s) ['num_agents'] given twice",
         setup=config_file('{"task": {"num_agents": 8, "num_agents": 9}}')),
    Case("topology-duplicate-key", "unused setting", "a key twice in a topology spec", [*B, "--topology", "{tmp}/g.json"],
         "key(s) ['family'] given twice", setup=files('{"family": "ring", "family": "star"}', "g.json")),
    # ------------------------------------------------------------------ issue 25, tracebacks and internal errors
    Case("stdout-full", "traceback", "surf-dist config > /dev/full", ["config"],
         "could not write the output to standard output (No space left on device)", subprocess=True,
         stdout="/dev/full"),
    Case("config-deep", "traceback", "a config nested 100,000 deep (RecursionError)", [*B, "--config", "{tmp}/cfg.json"],
         "nests its JSON too deeply", setup=config_file('{"a": ' * 100_000 + "1" + "}" * 100_000)),
    Case("memory-limit-inf", "traceback", "SURF_DIST_MEMORY_LIMIT_GB=inf (OverflowError)", B,
         "SURF_DIST_MEMORY_LIMIT_GB='inf' (environment) must be a positive number",
         patch=environment("SURF_DIST_MEMORY_LIMIT_GB", "inf")),
    Case("memory-limit-negative", "traceback", "SURF_DIST_MEMORY_LIMIT_GB=-1 (was 'lower --agents')", B,
         "SURF_DIST_MEMORY_LIMIT_GB='-1' (environment)", patch=environment("SURF_DIST_MEMORY_LIMIT_GB", "-1")),
    Case("mnist-gz-corrupt", "traceback", "corrupt .gz idx files (zlib.error)",
         [*B, "--dataset", "mnist", "--data-root", "{tmp}/mnist"], "not a valid gzip file",
         setup=mnist_gz_folder(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"garbage" * 8)),
    Case("async-levels-over-agents", "traceback", "experiment async --async-levels 100 (failed after training two models)",
         ["experiment", "async", Q, *O, "--async-levels", "100"], "--async-levels: [100] not in [0, 8)"),
    # ------------------------------------------------------------------ issue 25, left behind: results that cannot fit
    Case("out-near-path-max", "left behind", "an --out of 4,050 bytes (the work ran, then its results did not fit)",
         [*B[:2], "--out", "/" + "/".join(["y" * 200] * 20) + "/z" * 23], "which leaves no room for the names"),
    # ------------------------------------------------------------------ issue 25, left behind: SIGTERM
    Case("sigterm-train", "SIGTERM", "SIGTERM after a checkpoint (was silent, a stale lock)", TR,
         "terminated (SIGTERM); continue with: surf-dist train", code=143, keeps="out/checkpoint.pt",
         patch=interrupt_after(write_checkpoint=True, signal_as=cli_errors.Terminated)),
    Case("sigterm-baselines", "SIGTERM", "SIGTERM before anything is written", B,
         "terminated (SIGTERM) before anything was written", code=143,
         patch=interrupt_after(write_checkpoint=False, signal_as=cli_errors.Terminated)),
    # ------------------------------------------------------------------ issue 25, unclear messages
    Case("config-link-loop", "unclear", "--config a loop of links (was 'a link to X, which does not exist')",
         [*B, "--config", "{tmp}/a.json"], "is a link that leads back to itself", setup=link_loop("a.json", "b.json")),
    Case("out-link-loop", "unclear", "--out a loop of links", [*B[:2], "--out", "{tmp}/a"],
         "is a link that leads back to itself", setup=link_loop("a", "b")),
    Case("run-link-loop", "unclear", "evaluate a loop of links", ["evaluate", "{tmp}/a", *O],
         "is a link that leads back to itself", setup=link_loop("a", "b")),
    Case("config-folder", "unclear", "--config a folder (was 'does not exist')", [*B, "--config", "{tmp}"],
         "is a folder, not a file"),
    Case("config-fifo", "unclear", "--config a FIFO (was 'does not exist')", [*B, "--config", "{tmp}/fifo"],
         "is a FIFO (named pipe)", setup=lambda tmp, run: os.mkfifo(tmp / "fifo")),
    Case("choices-from-folder", "unclear", "bench --choices-from a folder", ["bench", Q, *O, "--choices-from", "{tmp}"],
         "is a folder, not a file"),
    Case("topology-folder", "unclear", "--topology a folder", [*B, "--topology", "{tmp}/g/"], "is a folder, not a file",
         setup=lambda tmp, run: (tmp / "g").mkdir()),
    Case("config-utf16", "unclear", "a UTF-16 config (was 'not text')", [*B, "--config", "{tmp}/cfg.json"],
         "is UTF-16 text; save it as UTF-8", setup=files(json.dumps(quick_config()).encode("utf-16"), "cfg.json")),
    Case("edges-utf16", "unclear", "a UTF-16 edge list", [*B, "--topology", "{tmp}/g.txt"], "is UTF-16 text",
         setup=files("0 1\n1 2\n2 0\n".encode("utf-16"))),
    Case("edges-underscore", "unclear", "'1_0' in an edge list (was read as agent 10)", [*B, "--topology", "{tmp}/g.txt"],
         "line 2: expected 'i j' or 'i j weight' with integer ids, got '1_0 2'", setup=files("0 1\n1_0 2\n2 0\n")),
    Case("mnist-no-samples", "unclear", "idx files of no samples (was numpy's 'cannot reshape')",
         [*B, "--dataset", "mnist", "--data-root", "{tmp}/mnist"], "holds no samples", setup=empty_idx_folder),
    Case("evaluate-model-file", "unclear", "evaluate RUN/model.pt (was 'does not exist')",
         ["evaluate", "{run}/model.pt", *O], "is a file; name the run folder that holds it"),
    Case("topology-megabytes", "unclear", "a 1 MB topology name (was a 1 MB error line)",
         [*B, "--topology", "x" * 1_000_000], "characters left out"),
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
            with open(case.stdout, "w") if case.stdout else contextlib.nullcontext(subprocess.PIPE) as out:
                done = subprocess.run([sys.executable, "-m", "surf_dist.cli.main", *argv], stdout=out,
                                      stderr=subprocess.PIPE, text=True, timeout=120, env=env)
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
                        "argv": stable(" ".join(a if len(a) <= 1000 else f"{a[:12]}...({len(a):,} characters)"
                                                for a in case.argv).replace("{tmp}", "TMP").replace("{run}", "RUN")
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
@pytest.mark.timeout(180)
@pytest.mark.parametrize("sent, code, said", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_ctrl_c_of_a_real_training_prints_the_resume_command(tmp_path, sent, code, said):
    """SIGINT (Ctrl-C) or SIGTERM (kill; issue 25: it was silent and left a stale lock) to a real
    `surf-dist train` after its first checkpoint: one line with the command that continues it,
    exit 130 / 143, the lock released."""
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
    proc.send_signal(sent)
    try:
        err = proc.communicate(timeout=60)[1]
    except subprocess.TimeoutExpired:         # stuck after Ctrl-C: show where (surf_dist.cli.main.entry), then end it
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        pytest.fail("no exit 60 s after SIGINT; its threads then:\n" + proc.communicate()[1])
    assert proc.returncode == code, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert f"error: {said}; continue with: surf-dist train --quick --steps 100000 --out {out} --no-progress --resume" in err
    assert not (out / io_files.LOCK_NAME).exists()


def test_resume_of_a_run_keeps_its_training_cost(tmp_path, trained, capsys):
    """Issue 25, data loss: `train --resume` of a finished run leaves its model.pt (and the
    training cost the bench reports) as it is; a resume that trains on adds its time to the
    cost, never replaces it with the last session's."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "model.pt").read_bytes()
    cost = torch.load(run / "model.pt", weights_only=True)["train_seconds"]
    assert main(["train", "--quick", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert (run / "model.pt").read_bytes() == before
    assert main(["train", "--quick", "--steps", "9", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert torch.load(run / "model.pt", weights_only=True)["train_seconds"] > cost
    assert torch.load(run / "checkpoint.pt", weights_only=True)["train_seconds"] > cost


def test_rounds_are_run_exactly(tmp_path, capsys):
    """Issue 25: `--rounds 7 --quick` stopped at the evaluation point 4; now it runs 7."""
    out = tmp_path / "out"
    assert main(["baselines", "--quick", "--rounds", "7", "--out", str(out), "--no-progress"]) == 0
    methods = json.loads((out / "summary.json").read_text())["methods"]
    assert all(curve["rounds"] == [0, 2, 4, 7] for curve in methods.values())


def test_a_partial_config_says_which_preset_fills_it(tmp_path, capsys):
    """Issue 25: the keys a --config leaves out come from the preset the command line names
    (they came from the 'paper' preset, whatever --preset said), and a note says so."""
    from surf_dist.cli.main import build_parser, resolve_config
    write(tmp_path / "cfg.json", json.dumps({"task": {"num_agents": 6}}))
    args = build_parser().parse_args(["baselines", "--quick", "--config", str(tmp_path / "cfg.json"), "--out", "x"])
    cfg = resolve_config(args)
    assert cfg.task.num_agents == 6 and cfg.eval == preset("quick").eval
    assert "they come from preset 'quick' (--quick)" in capsys.readouterr().err


def test_summary_json_is_strict_json():
    """Issue 25: no bare NaN or Infinity reaches a results file (io.files.results_json)."""
    assert json.loads(io_files.results_json({"a": [1.0, 2.0]}, "x.json")) == {"a": [1.0, 2.0]}
    with pytest.raises(FloatingPointError, match=r"m.loss is inf at round 5 \(last finite round 2\)"):
        io_files.results_json({"m": {"rounds": [0, 2, 5], "loss": [1.0, 0.5, float("inf")]}}, "x.json")


def test_no_traceback_from_the_environment_or_a_closed_pipe():
    """Issue 25: an MPLBACKEND that does not exist broke even --help (the plots are PNG files
    drawn by Agg: it is not used); a reader that stops reading (`surf-dist config | true`)
    ends the command quietly, exit 141 as SIGPIPE would, no BrokenPipeError traceback."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "nosuch"}
    done = subprocess.run([sys.executable, "-m", "surf_dist.cli.main", "--help"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0 and done.stderr == "" and "surf-dist" in done.stdout
    proc = subprocess.Popen([sys.executable, "-m", "surf_dist.cli.main", "config"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**env, "MPLBACKEND": ""})
    proc.stdout.close()                      # the reader is gone before the first byte
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 141 and "Traceback" not in err and err == "", err


def test_results_and_plots_share_their_permissions(tmp_path, capsys):
    """Issue 25: summary.json and results.csv were written 0600 (mkstemp), the plots 0644."""
    out = tmp_path / "out"
    assert main(["baselines", "--quick", "--rounds", "2", "--out", str(out), "--no-progress"]) == 0
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert len(set(modes.values())) == 1 and modes["summary.json"] == 0o666 & ~io_files.current_umask(), modes


def test_a_failed_write_of_the_results_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """Issue 25: a full disk while the plots were written left summary.json behind, and the
    rerun was refused as not empty. Now none of the results stay, the folder it made is gone,
    the numbers are rescued to the temporary folder, and a rerun works."""
    def full_disk(summary, out):
        (out / "half.png").write_bytes(b"\x89PNG")
        raise OSError(28, "No space left on device", str(out / "half.png"))
    monkeypatch.setattr("surf_dist.commands.results.write_all", full_disk)
    out = tmp_path / "out"
    argv = ["baselines", "--quick", "--rounds", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "could not write the results" in err and len(err.splitlines()) == 1
    assert not out.exists()
    Path(re.search(r"saved in (\S+)$", err.strip()).group(1)).unlink()
    monkeypatch.undo()
    monkeypatch.setenv("SURF_DIST_MEMORY_LIMIT_GB", MEMORY_LIMIT_GB)
    assert main(argv) == 0


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

def family_counts() -> dict[str, int]:
    """Cases per family, in the table's order (the classes of issue 25 are families of their own)."""
    counts: dict[str, int] = {}
    for case in CASES:
        counts[case.family] = counts.get(case.family, 0) + 1
    return counts


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
             "", f"{len(results)} inputs; per family: "
             + ", ".join(f"{family} {count}" for family, count in family_counts().items()) + ".", "",
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
