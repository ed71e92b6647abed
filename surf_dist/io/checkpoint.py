"""Checkpoints written atomically and loaded without unpickling code (``weights_only``)."""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import torch

from .config import from_dict
from .files import atomic_open

FORMAT = "surf-dist-checkpoint-1"

CHECKPOINT = "checkpoint.pt"   # in a run folder: the full training state, rewritten atomically


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically:
    a temporary file in the same folder, flushed and fsynced, then renamed over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)


def load_checkpoint(path: str | Path, expected_config: dict | None = None,
                    may_differ: tuple[str, ...] = (), files=None) -> dict:
    """Load a checkpoint; a missing, corrupt, foreign or mismatched file is a ValueError.

    ``may_differ`` names config fields ("section.field") allowed to change, e.g. a resumed run
    that asks for more steps. ``files``: a ``shipped.Shipped`` (on a rank: the bytes the driver
    read), or None to read the disk."""
    path = Path(path)
    if files is not None:
        source = io.BytesIO(files.bytes_of(path))
    elif not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    else:
        source = path
    try:
        state = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, disallowed globals, ...
        raise ValueError(f"checkpoint {path} is corrupt or not a surf-dist checkpoint ({_why(err)}); "
                         "retrain, or use an intact copy") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a {FORMAT} file")
    if expected_config is not None:
        saved = _with_defaults(_config_data(state, path))
        if saved != expected_config:
            sections = set(saved) | set(expected_config)
            diff = sorted(f"{s}.{k}" for s in sections
                          for k in set(saved.get(s, {})) | set(expected_config.get(s, {}))
                          if saved.get(s, {}).get(k) != expected_config.get(s, {}).get(k)
                          and f"{s}.{k}" not in may_differ)
            if diff:
                raise ValueError(f"checkpoint {path} was written with a different configuration "
                                 f"(differs in: {', '.join(diff)}); use the run's own settings, or train "
                                 "into a new folder")
    return state


def _why(err: Exception) -> str:
    """What a failed ``torch.load`` means, in a few words (torch's own advice to load with
    ``weights_only=False`` is exactly what must not be done with an untrusted file)."""
    if isinstance(err, pickle.UnpicklingError):
        return "it is not a torch file of tensors and plain data; surf-dist never unpickles code"
    first = (str(err).splitlines() or [""])[0][:160].replace("`", "'")
    return f"{type(err).__name__}: {first}"


def _config_data(state: dict, path) -> dict:
    """The JSON config saved in a checkpoint, as a dict (ValueError if it is missing or not JSON)."""
    check_fields(state, path, {"config": str})
    try:
        return json.loads(state["config"])
    except json.JSONDecodeError as err:
        raise ValueError(f"checkpoint {path} is damaged: its config is not JSON ({err})") from None


def _with_defaults(config: dict) -> dict:
    """A saved config with the fields added since it was written, at their defaults (which keep
    the former behaviour); left as it is where it no longer parses (then it differs)."""
    try:
        return from_dict(config).to_dict()
    except (ValueError, TypeError):
        return config


# --------------------------------------------------------------------------- field-by-field checks
# A file with the right header can still lack a key or hold a tensor of another shape (edited,
# written by another version, or crafted). These checks name the field before anything uses it.

MODEL_FIELDS = {"config": str, "model": dict, "best_val": (int, float)}
TRAINING_FIELDS = {**MODEL_FIELDS, "step": int, "optimizer": dict, "best_model": dict, "coordinator": dict}


def check_fields(state: dict, path, fields: dict) -> None:
    """Every key of ``fields`` is present in ``state`` with its type; else ValueError naming it."""
    for key, kind in fields.items():
        if key not in state:
            raise ValueError(f"checkpoint {path} is damaged: it has no '{key}' entry; "
                             "retrain, or use an intact copy")
        value = state[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise ValueError(f"checkpoint {path} is damaged: '{key}' should be of type {names}, "
                             f"got {type(value).__name__}")


def saved_config(state: dict, path):
    """The ``RunConfig`` a checkpoint was written with (ValueError if its config is unreadable)."""
    data = _config_data(state, path)
    try:
        return from_dict(data)
    except ValueError as err:
        raise ValueError(f"checkpoint {path} holds a config this version cannot use: {err}") from None


def load_model_file(path, files=None):
    """(state, config) of a ``model.pt``, checked field by field (tensor shapes are checked
    against a model with ``check_state_dict`` where one is built); ``files`` as in
    ``load_checkpoint``."""
    state = load_checkpoint(path, files=files)
    check_fields(state, path, MODEL_FIELDS)
    return state, saved_config(state, path)


def check_state_dict(saved: dict, expected: dict, path, key: str = "model") -> None:
    """``saved`` (name -> tensor) has exactly the names of ``expected`` (name -> shape) and
    those shapes, floating point; else ValueError naming the first entry that is wrong."""
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        what = (f"lacks {missing[:3]}" if missing else "") + (" and " if missing and unexpected else "") + \
               (f"has unknown {unexpected[:3]}" if unexpected else "")
        raise ValueError(f"checkpoint {path}: '{key}' {what}: it was not written for these model settings "
                         "or is damaged")
    for name, shape in expected.items():
        value = saved[name]
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            raise ValueError(f"checkpoint {path}: '{key}.{name}' should be a float tensor, got "
                             f"{type(value).__name__}{'' if not isinstance(value, torch.Tensor) else ' ' + str(value.dtype)}")
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"checkpoint {path}: '{key}.{name}' has shape {tuple(value.shape)}, these settings "
                             f"need {tuple(shape)}; it was written for other model settings or is damaged")
        if not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"checkpoint {path}: '{key}.{name}' holds {bad} NaN or infinite value(s): the model "
                             "diverged when it was trained (or the file is damaged); retrain it, or use an intact copy")


def check_training_state(state: dict, path, model: torch.nn.Module, num_layers: int) -> None:
    """A training ``checkpoint.pt`` fits ``model``: every field, both weight sets, the
    optimizer's moments and the coordinator's duals and generators."""
    check_fields(state, path, TRAINING_FIELDS)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(state["model"], shapes, path, "model")
    check_state_dict(state["best_model"], shapes, path, "best_model")
    if state["step"] < 0:
        raise ValueError(f"checkpoint {path} is damaged: step is {state['step']}")
    coordinator = state["coordinator"]
    duals = coordinator.get("duals")
    if not isinstance(duals, torch.Tensor) or tuple(duals.shape) != (num_layers,):
        raise ValueError(f"checkpoint {path}: 'coordinator.duals' should be a tensor of shape ({num_layers},), "
                         f"got {tuple(duals.shape) if isinstance(duals, torch.Tensor) else type(duals).__name__}")
    try:
        rngs = json.loads(coordinator.get("rngs"))
        assert isinstance(rngs, dict) and all(isinstance(v, dict) for v in rngs.values())
    except (TypeError, ValueError, AssertionError):
        raise ValueError(f"checkpoint {path} is damaged: 'coordinator.rngs' is not the generators' "
                         "state") from None
    _check_optimizer(state["optimizer"], list(model.parameters()), path)


def _check_optimizer(saved: dict, params: list, path) -> None:
    """An Adam ``state_dict`` for ``params``: one group list covering them, moments of their shapes."""
    groups = saved.get("param_groups")
    moments = saved.get("state")
    if not isinstance(groups, list) or not isinstance(moments, dict) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) for g in groups):
        raise ValueError(f"checkpoint {path} is damaged: 'optimizer' is not an optimizer state")
    ids = [i for g in groups for i in g["params"]]
    if len(ids) != len(params):
        raise ValueError(f"checkpoint {path}: 'optimizer' has {len(ids)} parameters, the model {len(params)}")
    for index, param in zip(ids, params):
        for name, value in (moments.get(index) or {}).items():
            if name in ("exp_avg", "exp_avg_sq") and (not isinstance(value, torch.Tensor)
                                                      or value.shape != param.shape):
                raise ValueError(f"checkpoint {path}: 'optimizer' moment {name} of parameter {index} has "
                                 f"shape {tuple(getattr(value, 'shape', ()))}, the model's is {tuple(param.shape)}")
