"""Checkpoints written atomically and loaded without unpickling code (``weights_only``)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .config import from_dict

FORMAT = "surf-dist-checkpoint-1"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically:
    a temporary file in the same folder, flushed and fsynced, then renamed over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, expected_config: dict | None = None,
                    may_differ: tuple[str, ...] = ()) -> dict:
    """Load a checkpoint; a missing, corrupt, foreign or mismatched file is a ValueError.

    ``may_differ`` names config fields ("section.field") allowed to change, e.g. a resumed run
    that asks for more steps."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, garbage bytes, disallowed globals, ...
        raise ValueError(f"checkpoint {path} is corrupt or not a surf-dist checkpoint: "
                         f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path} is not a {FORMAT} file")
    if expected_config is not None:
        saved = _with_defaults(json.loads(state["config"]))
        if saved != expected_config:
            sections = set(saved) | set(expected_config)
            diff = sorted(f"{s}.{k}" for s in sections
                          for k in set(saved.get(s, {})) | set(expected_config.get(s, {}))
                          if saved.get(s, {}).get(k) != expected_config.get(s, {}).get(k)
                          and f"{s}.{k}" not in may_differ)
            if diff:
                raise ValueError(f"checkpoint {path} was written with a different configuration "
                                 f"(differs in: {', '.join(diff)})")
    return state


def _with_defaults(config: dict) -> dict:
    """A saved config with the fields added since it was written, at their defaults (which keep
    the former behaviour); left as it is where it no longer parses (then it differs)."""
    try:
        return from_dict(config).to_dict()
    except (ValueError, TypeError):
        return config
