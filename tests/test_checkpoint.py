"""surf_dist.io.checkpoint: atomic saves, safe loads, helpful errors; a training state round trip."""
import json
import math

import numpy as np
import pytest
import torch

from surf_dist.io import checkpoint
from surf_dist.io.checkpoint import load_checkpoint, save_checkpoint
from surf_dist.io.config import with_overrides


def _state(cfg, value=1.0):
    return {"config": json.dumps(cfg.to_dict()), "step": 7, "duals": torch.tensor([0.5, 0.0], dtype=torch.float64),
            "model": {"taps": torch.full((2, 3), value), "nested": {"x": torch.arange(4)}},
            "history": [1.5, "two", [3]], "best_val": math.inf}


def test_round_trip(tmp_path, quick_cfg):
    path = tmp_path / "sub" / "ck.pt"                    # the folder is created
    state = _state(quick_cfg)
    save_checkpoint(path, state)
    loaded = load_checkpoint(path, quick_cfg.to_dict())
    assert loaded["format"] == checkpoint.FORMAT
    assert loaded["step"] == 7 and loaded["history"] == [1.5, "two", [3]] and loaded["best_val"] == math.inf
    assert torch.equal(loaded["duals"], state["duals"]) and loaded["duals"].dtype == torch.float64
    assert torch.equal(loaded["model"]["taps"], state["model"]["taps"])
    assert torch.equal(loaded["model"]["nested"]["x"], torch.arange(4))
    assert json.loads(loaded["config"]) == quick_cfg.to_dict()


def test_overwrite_replaces_previous(tmp_path, quick_cfg):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _state(quick_cfg, 1.0))
    save_checkpoint(path, _state(quick_cfg, 2.0))
    assert torch.equal(load_checkpoint(path)["model"]["taps"], torch.full((2, 3), 2.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file_is_corrupt(tmp_path, quick_cfg):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _state(quick_cfg))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path, quick_cfg.to_dict())


@pytest.mark.parametrize("payload", [b"this is not a checkpoint at all" * 10, bytes(range(256)) * 4])
def test_garbage_file_is_corrupt(tmp_path, payload):
    path = tmp_path / "ck.pt"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path)


def test_empty_file_is_corrupt(tmp_path):
    """A zero-byte checkpoint (e.g. left by a crash on a filesystem without ordered writes)."""
    path = tmp_path / "ck.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path)


class _Evil:
    pass


def test_pickled_code_is_refused_not_executed(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"format": checkpoint.FORMAT, "payload": _Evil()}, path)
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(path)


def test_foreign_file_is_a_value_error(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ValueError, match="not a surf-dist-checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="not a surf-dist-checkpoint"):
        load_checkpoint(path)


def test_mismatched_config_names_the_differing_field(tmp_path, quick_cfg):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _state(quick_cfg))
    other = with_overrides(quick_cfg, {"task": {"num_agents": 6}, "train": {"lr": 0.5}})
    with pytest.raises(ValueError, match="different configuration") as err:
        load_checkpoint(path, other.to_dict())
    message = str(err.value)
    assert "task.num_agents" in message and "train.lr" in message
    assert "model." not in message and "eval." not in message


def test_mismatched_tuple_field_is_named(tmp_path, quick_cfg):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _state(quick_cfg))
    other = with_overrides(quick_cfg, {"eval": {"eval_points": [0, 3]}})
    with pytest.raises(ValueError, match=r"eval\.eval_points"):
        load_checkpoint(path, other.to_dict())


def test_field_missing_from_an_older_checkpoint_reads_as_its_default(tmp_path, quick_cfg):
    """A checkpoint written before a config field existed ran with the field's default (new
    fields default to the former behaviour): it resumes under that default and no other value,
    and the message names the field."""
    path = tmp_path / "ck.pt"
    old_config = quick_cfg.to_dict()
    del old_config["task"]["feature_noise"]
    save_checkpoint(path, {"config": json.dumps(old_config), "step": 0})
    assert load_checkpoint(path, quick_cfg.to_dict())["step"] == 0
    noisy = with_overrides(quick_cfg, {"task": {"feature_noise": 0.5}})
    with pytest.raises(ValueError, match=r"task\.feature_noise"):
        load_checkpoint(path, noisy.to_dict())


def test_interrupted_save_keeps_previous_checkpoint_and_no_temp_files(tmp_path, quick_cfg, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _state(quick_cfg, 1.0))
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise KeyboardInterrupt("killed mid-save")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _state(quick_cfg, 2.0))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]
    assert torch.equal(load_checkpoint(path)["model"]["taps"], torch.full((2, 3), 1.0))


def test_interrupted_first_save_leaves_nothing(tmp_path, quick_cfg, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ck.pt", _state(quick_cfg))
    assert list(tmp_path.iterdir()) == []


def test_training_state_round_trip(tmp_path, quick_cfg, digits_family):
    """snapshot -> save -> load -> restore gives the same model, optimizer, duals and mask stream."""
    from surf_dist.comm.local import LocalCommunicator
    from surf_dist.core.engine import Worker
    from surf_dist.core.train import build_state, primal_step, restore, snapshot

    cfg = with_overrides(quick_cfg, {"train": {"dtype": "float64", "async_train": 1}})
    worker = Worker(digits_family, LocalCommunicator(), np.arange(cfg.task.num_agents), torch.float64)
    state = build_state(cfg, worker)
    primal_step(state, worker, digits_family.batch("train", [0]), cfg)
    state.coordinator.duals = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    state.duals = state.coordinator.duals.clone()
    state.step = 1
    save_checkpoint(tmp_path / "ck.pt", {**snapshot(state, cfg), "coordinator": state.coordinator.state()})

    fresh = build_state(cfg, worker)
    restore(fresh, load_checkpoint(tmp_path / "ck.pt", cfg.to_dict()))
    assert fresh.step == 1 and torch.equal(fresh.duals, state.coordinator.duals)
    assert torch.equal(fresh.coordinator.duals, state.coordinator.duals)
    for (name, a), b in zip(state.model.state_dict().items(), fresh.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert fresh.coordinator.rngs["train"].random() == state.coordinator.rngs["train"].random()
    # the resumed optimizer continues exactly like the original one
    tasks = digits_family.batch("train", [1])
    primal_step(state, worker, tasks, cfg)
    primal_step(fresh, worker, tasks, cfg)
    for a, b in zip(state.model.parameters(), fresh.model.parameters()):
        assert torch.equal(a, b)
