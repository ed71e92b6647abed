"""How much memory a command will need, estimated from its settings before anything is allocated.

Legend: n: agents, T: tasks held at once, d = p C: params per agent, p: features + bias,
C: classes, L: layers, K: hops, E: local sub-steps, F: compact-net features, H: hidden width,
m / h: seen / held-out samples per agent.

The estimate counts the big tensors (upper bounds within a small factor, not a profile):
- shards: T n (m + h) p numbers (each worker gathers its agents' samples);
- meta-training keeps every layer's activations for the backward pass:
  T n L d (K + 3 + E (F + 2 H + 4)) for the compact network (T: tasks per step; the
  default preset: 3.1 GiB estimated, 2.8 GiB measured for one meta-step), T n L d (K + 5) plus the
  network's own weights L (fan_in d + d^2) (and Adam's two moments) for the paper's;
- evaluation (no gradients) holds a few iterates per node: test_tasks n d (K + 6).
A command whose estimate exceeds the memory limit (this machine's RAM, or
``SURF_DIST_MEMORY_LIMIT_GB``) is refused with the estimate, its largest term and the fix.
"""
from __future__ import annotations

import os

from ..io.config import RunConfig

MAX_AGENTS = 1_000_000          # the graph, placement and task code is exercised up to 10,000
TRAINING_COMMANDS = ("train", "demo", "experiment")
GIB = 1024 ** 3


def memory_limit_bytes() -> int:
    """``SURF_DIST_MEMORY_LIMIT_GB`` if set, else this machine's physical memory."""
    text = os.environ.get("SURF_DIST_MEMORY_LIMIT_GB")
    if text:                         # set and not empty
        try:
            gib = float(text)
        except ValueError:
            gib = float("nan")
        if not (0 < gib < 1e9):      # inf, nan, 0, a negative number or a word: never a memory size
            raise ValueError(f"SURF_DIST_MEMORY_LIMIT_GB={text[:40]!r} (environment) must be a positive number of GiB "
                             "below 10^9; set it to the memory this command may use, or unset it for this machine's")
        return int(gib * GIB)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 16 * GIB


def estimate_bytes(cfg: RunConfig, num_features: int, num_classes: int, training: bool) -> dict[str, int]:
    """The big terms (name -> bytes) of a command on ``cfg`` for a dataset of that shape."""
    tc, mc, ec, task = cfg.train, cfg.model, cfg.eval, cfg.task
    size = 8 if tc.dtype == "float64" else 4
    p, C, n = num_features + 1, num_classes, task.num_agents
    d = p * C
    per_agent_data = (task.samples_seen + task.samples_held) * p
    terms = {"evaluation iterates": ec.test_tasks * n * (d * (mc.num_hops + 6) + per_agent_data) * size}
    if training:
        T = tc.tasks_per_step
        if mc.local_net == "compact":
            features = 4 + int(mc.tracking)
            per_layer = d * (mc.num_hops + 3 + mc.local_steps * (features + 2 * mc.hidden + 4))
        else:
            fan_in = mc.batch_size * (p + C) + d
            per_layer = d * (mc.num_hops + 5)
            terms["network weights"] = 4 * mc.num_layers * (fan_in * d + d * d) * size
        terms["training activations"] = T * n * (mc.num_layers * per_layer + per_agent_data) * size
    return terms


def check_size(cfg: RunConfig, command: str, num_features: int, num_classes: int) -> int:
    """Refuse, before anything is allocated, a command that cannot fit: more than
    ``MAX_AGENTS`` agents, or an estimate above ``memory_limit_bytes()``. Returns the estimate."""
    n = cfg.task.num_agents
    terms = estimate_bytes(cfg, num_features, num_classes, command in TRAINING_COMMANDS)
    total, limit = sum(terms.values()), memory_limit_bytes()
    if total > limit:
        biggest = max(terms, key=terms.get)
        raise ValueError(f"this needs about {total / GIB:,.1f} GiB ({biggest}: {terms[biggest] / GIB:,.1f} "
                         f"GiB for {n:,} agents x {cfg.model.num_layers} layers x {num_features + 1} x "
                         f"{num_classes} params per agent), more than the {limit / GIB:,.1f} GiB limit; lower "
                         "--agents, --layers, --test-tasks or --samples-seen (SURF_DIST_MEMORY_LIMIT_GB sets "
                         "the limit)")
    if n > MAX_AGENTS:
        raise ValueError(f"--agents {n:,} is above the limit of {MAX_AGENTS:,} agents per task; "
                         "use fewer agents")
    return total
