"""Optimizers trained with this project and shipped with it (provenance: ``README.md`` here).

``pretrained`` (or ``pretrained:NAME``) stands for the folder of a shipped model wherever a
run folder is read: ``surf-dist evaluate pretrained``, ``surf-dist train --init-from pretrained``.
"""
from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
NAMES = ("default", "r1", "r2", "r3", "r5", "mixture", "cta", "local", "scratch", "robust")   # provenance, numbers: README.md here
BUDGETS = {"r1": 1, "r2": 2, "r3": 3, "r5": 5}    # the budget models: R layers trained for the R-th iterate alone
DEVICE = "CPU, 2 cores shared with other jobs, one torch thread"
ONE_CORE = "CPU, one core of 2 (taskset), one torch thread, the other core busy"


def _budget(layers: int, warmup: int, steps: int, seconds: int, device: str = ONE_CORE, more: str = "") -> dict:
    """The training record of a budget model (``BUDGETS``)."""
    return {"meta_steps": steps, "wall_seconds": seconds, "device": device,
            "how": f"the default preset, {layers} layer(s) after {warmup} warm-up local steps, trained for its "
                   f"last layer alone (--layers {layers} --warmup-steps {warmup} --anytime false{more}); of "
                   "seeds 0, 1, 2 the one with the highest validation pooled accuracy at its budget"}


TRAINING = {   # meta-training cost of each shipped model (README.md here)
    "default": {"meta_steps": 300, "wall_seconds": 1041, "device": ONE_CORE,
                "how": "the default preset from scratch (surf-dist train), seed 0 of 3, chosen on validation"},
    "r1": _budget(1, 12, 600, 243, more=" --steps 600 --lr 0.01 --seed 2"),
    "r2": _budget(2, 8, 300, 220),
    "r3": _budget(3, 8, 300, 164),
    "r5": _budget(5, 4, 300, 216, more=" --seed 2"),
    "mixture": {"meta_steps": 540, "wall_seconds": 2631, "device": ONE_CORE,
                "how": "default fine-tuned 240 steps (lr 1e-3, 1,590 s) on a mixture: the digits, the large and "
                       "mnist1d presets and ring graphs of 30 agents (--mixture large,mnist1d,default:ring:30)"},
    "cta": {"meta_steps": 450, "wall_seconds": 3147, "device": ONE_CORE,
            "how": "the cta preset from scratch (the default before adapt-then-combine layers)"},
    "local": {"meta_steps": 1200, "wall_seconds": 3960, "device": DEVICE,
              "how": "scratch (900 steps, 2,960 s) + 300 steps with dual step 1.0 (~1,000 s)"},
    "scratch": {"meta_steps": 900, "wall_seconds": 2960, "device": DEVICE, "how": "the 'local' preset"},
    "robust": {"meta_steps": 900, "wall_seconds": 5500, "device": DEVICE,
               "how": "the 'local' preset with --async-train 5 (beside four other jobs)"},
}


def resolve_run(run: str | Path) -> Path:
    """A run folder as given, or the folder of the shipped model that ``pretrained[:NAME]`` names."""
    text = str(run)
    if text != "pretrained" and not text.startswith("pretrained:"):
        return Path(run)
    name = text.partition(":")[2] or "default"
    if name not in NAMES:
        raise ValueError(f"no pretrained model {name!r}; shipped: {', '.join(NAMES)}")
    return HERE / name


def shipped_name(run: str | Path) -> str | None:
    """``pretrained[:NAME]`` where ``run`` is the folder of a shipped model (a path that the
    command line resolved already), else None."""
    folder = Path(run).resolve()
    if folder.parent != HERE.resolve() or folder.name not in NAMES:
        return None
    return "pretrained" if folder.name == "default" else f"pretrained:{folder.name}"


def training_cost(run: str, folder: Path, saved: dict) -> dict:
    """Meta-training steps, wall time and device of a shipped model or a run folder's model.pt."""
    text = str(run)
    if text == "pretrained" or text.startswith("pretrained:"):
        return TRAINING[text.partition(":")[2] or "default"]
    import json
    trained = json.loads(saved["config"])["train"]
    cost = {"meta_steps": trained["steps"], "wall_seconds": saved.get("train_seconds"), "device": saved.get("device"),
            "how": f"run folder {folder}"}
    if trained.get("init_from"):            # a fine-tune: its start's cost counts too
        from ...io.checkpoint import load_checkpoint
        start = resolve_run(trained["init_from"])
        if not (start / "model.pt").is_file():
            cost["how"] += f", fine-tuning {trained['init_from']} (gone: its cost is not counted)"
            return cost
        base = training_cost(trained["init_from"], start, load_checkpoint(start / "model.pt"))
        walls = (cost["wall_seconds"], base["wall_seconds"])
        cost.update(meta_steps=cost["meta_steps"] + base["meta_steps"],
                    wall_seconds=None if None in walls else sum(walls),
                    how=f"run folder {folder}: {trained['steps']} steps fine-tuning {trained['init_from']} "
                        f"({base['meta_steps']} steps)")
    return cost
