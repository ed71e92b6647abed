"""Each baseline's result saved in the bench's output folder as soon as it is done
(``baselines/NAME.pt``, written atomically), and ``--resume``: a killed bench run again with
``--resume`` skips the baselines saved there and runs the others.

A saved result carries the settings it was made with (``settings_of``: the run config, the
protocol's settings that shape a baseline's curves, and the validation choices replayed, if
any); ``--resume`` refuses, before anything runs, a folder whose results were made otherwise.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ...io.config import RunConfig
from ...io.file_checks import atomic_open
from .protocol import BenchConfig
from .runner import methods_of

FOLDER = "baselines"
REPORT_ONLY = ("methods", "bootstrap", "confidence", "limit_agents")   # do not shape a baseline's curves


def settings_of(cfg_dict: dict, bench_dict: dict, choice: dict | None) -> dict:
    """What a baseline's result depends on, as plain JSON values."""
    protocol = {k: v for k, v in bench_dict.items() if k not in REPORT_ONLY}
    return json.loads(json.dumps({"config": cfg_dict, "protocol": protocol, "choices": choice}, sort_keys=True))


def save_baseline(folder: str | Path, name: str, result: dict, settings: dict) -> Path:
    """Write ``folder/baselines/NAME.pt`` atomically (a kill leaves the old file or none)."""
    import torch
    path = Path(folder) / FOLDER / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        torch.save({"settings": settings, "result": result}, f)
    return path


def _first_difference(saved, here, where: str = "") -> str | None:
    """The first key (dotted) at which two nested dicts differ, or None."""
    if isinstance(saved, dict) and isinstance(here, dict):
        for key in sorted(set(saved) | set(here)):
            found = _first_difference(saved.get(key), here.get(key), f"{where}.{key}" if where else key)
            if found:
                return found
        return None
    return None if saved == here else where


def resumed_baselines(args, cfg: RunConfig, bc: BenchConfig, choices: dict | None) -> dict:
    """{baseline: its saved result} in ``--out``'s ``baselines/`` folder under ``--resume`` ({}
    without it), each checked to be made with these settings (ValueError naming the first
    difference otherwise)."""
    if not getattr(args, "resume", False):
        return {}
    import torch
    folder = Path(args.out) / FOLDER
    out = {}
    for name in methods_of(bc):
        path = folder / f"{name}.pt"
        if not path.is_file():
            continue
        try:
            saved = torch.load(path, weights_only=False)
            settings = saved["settings"]
        except Exception as exc:           # a file of something else: say so, run nothing
            raise ValueError(f"--resume: {path} is not a saved baseline ({type(exc).__name__}); remove it to run "
                             f"{name} again") from None
        here = settings_of(cfg.to_dict(), dataclasses.asdict(bc), (choices or {}).get(name))
        differs = _first_difference(settings, here)
        if differs:
            raise ValueError(f"--resume: {path} was made with other settings ({differs} differs); pass the settings "
                             f"of the killed bench, or start a new --out")
        out[name] = saved["result"]
    return out
