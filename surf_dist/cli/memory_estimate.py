"""How much memory a command will need, estimated from its settings before anything is allocated.

Legend: n: agents, w: workers, k = ceil(n / w): agents per worker, T: tasks held at once,
d = p C: params per agent, p: features + bias, C: classes, L: layers, K: hops, E: local
sub-steps, F: compact-net features, H: hidden width, m / h: seen / held-out samples per agent.

The estimate is per worker (each holds only its own agents' shards and iterates) and counts
the big tensors (upper bounds within a small factor, not a profile):
- shards: T k (m + h) p numbers (each worker gathers its agents' samples);
- meta-training keeps every layer's activations for the backward pass:
  T k L d (K + 3 + E (F + 2 H + 4)) for the compact network (T: tasks per step; the
  default preset: 3.1 GiB estimated, 2.8 GiB measured for one meta-step), T k L d (K + 5) plus the
  network's own weights L (fan_in d + d^2) (and Adam's two moments) for the paper's;
- evaluation (no gradients) scores each layer as it is made: two iterates and one layer's
  temporaries per node, test_tasks k d (K + 28) (measured: 4.15 GB per rank for 2 x 50,000
  agents of the default preset, 4.39 GB estimated), the compact network's hidden layer in
  blocks of at most ``MLP_ROWS`` rows (2 MLP_ROWS H more);
- every worker process: ``PROCESS_BYTES`` (Python, torch, the dataset).
The workers on this machine (``--workers``, or a torchrun launch's ``LOCAL_WORLD_SIZE``) add up.
A command whose estimate exceeds the memory limit (this machine's RAM, or
``SURF_DIST_MEMORY_LIMIT_GB``) is refused with the estimate, its largest term and the fix.
"""
from __future__ import annotations

import os

from ..io.config import RunConfig

MAX_AGENTS = 1_000_000          # evaluation is measured up to 100,000 (BENCHMARKS.md)
MLP_ROWS = 1 << 16              # methods.learned.MLP_ROWS (cli may not import methods)
PROCESS_BYTES = 400 * 1024 ** 2  # a worker's Python, torch and dataset (~350 MB measured)
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


def estimate_bytes(cfg: RunConfig, num_features: int, num_classes: int, training: bool,
                   workers: int = 1) -> dict[str, int]:
    """The big terms (name -> bytes) of one of ``workers`` workers of a command on ``cfg`` for a
    dataset of that shape."""
    tc, mc, ec, task = cfg.train, cfg.model, cfg.eval, cfg.task
    size = 8 if tc.dtype == "float64" else 4
    p, C, k = num_features + 1, num_classes, -(-task.num_agents // workers)
    d = p * C
    per_agent_data = (task.samples_seen + task.samples_held) * p
    nodes = ec.test_tasks * k
    hidden = 2 * min(nodes * d, MLP_ROWS) * mc.hidden if mc.local_net == "compact" else 0
    terms = {"evaluation iterates": (nodes * (d * (mc.num_hops + 28) + per_agent_data) + hidden) * size,
             "worker process": PROCESS_BYTES}
    if training:
        T = tc.tasks_per_step
        if mc.local_net == "compact":
            features = 4 + int(mc.tracking)
            per_layer = d * (mc.num_hops + 3 + mc.local_steps * (features + 2 * mc.hidden + 4))
        else:
            fan_in = mc.batch_size * (p + C) + d
            per_layer = d * (mc.num_hops + 5)
            terms["network weights"] = 4 * mc.num_layers * (fan_in * d + d * d) * size
        terms["training activations"] = T * k * (mc.num_layers * per_layer + per_agent_data) * size
    return terms


def workers_here(workers: int) -> int:
    """How many of ``workers`` run on this machine: all of them, or a torchrun launch's share."""
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    return min(workers, int(local)) if local.isdigit() and int(local) > 0 else workers


def check_size(cfg: RunConfig, command: str, num_features: int, num_classes: int, workers: int = 1) -> int:
    """Refuse, before anything is allocated, a command that cannot fit: more than
    ``MAX_AGENTS`` agents, or an estimate (each worker on this machine holding its share of the
    agents) above ``memory_limit_bytes()``. Returns the estimate for this machine."""
    n = cfg.task.num_agents
    terms = estimate_bytes(cfg, num_features, num_classes, command in TRAINING_COMMANDS, workers)
    here = workers_here(workers)
    total, limit = here * sum(terms.values()), memory_limit_bytes()
    if total > limit:
        biggest = max(terms, key=terms.get)
        share = (f"{n:,} agents" if workers == 1 else
                 f"{-(-n // workers):,} of {n:,} agents on each of {here} workers")
        raise ValueError(f"this needs about {total / GIB:,.1f} GiB ({biggest}: {here * terms[biggest] / GIB:,.1f} "
                         f"GiB for {share} x {cfg.model.num_layers} layers x {num_features + 1} x "
                         f"{num_classes} params per agent), more than the {limit / GIB:,.1f} GiB limit; lower "
                         "--agents, --layers, --test-tasks or --samples-seen (SURF_DIST_MEMORY_LIMIT_GB sets "
                         "the limit)")
    if n > MAX_AGENTS:
        raise ValueError(f"--agents {n:,} is above the limit of {MAX_AGENTS:,} agents per task; "
                         "use fewer agents")
    return total
