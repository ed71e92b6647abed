"""Optimizers trained with this project and shipped with it (provenance: ``README.md`` here).

``pretrained`` (or ``pretrained:NAME``) stands for the folder of a shipped model wherever a
run folder is read: ``surf-dist evaluate pretrained``, ``surf-dist train --init-from pretrained``.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
NAMES = ("default", "scratch", "robust")     # provenance and numbers: README.md here


def resolve_run(run: str | Path) -> Path:
    """A run folder as given, or the folder of the shipped model that ``pretrained[:NAME]`` names."""
    text = str(run)
    if text != "pretrained" and not text.startswith("pretrained:"):
        return Path(run)
    name = text.partition(":")[2] or "default"
    if name not in NAMES:
        raise ValueError(f"no pretrained model {name!r}; shipped: {', '.join(NAMES)}")
    return HERE / name
