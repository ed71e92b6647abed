"""The settings a command line may set, flag by flag: ``--agents 20`` -> task.num_agents.

``OVERRIDES`` maps each flag to its config section and field, the type that parses it and its
help line; ``cli.main`` adds them to every run command and applies what was given on top of the
preset or ``--config``."""
from __future__ import annotations

import argparse

from ..io.config import LOCAL_NETS

DEMO_BASELINE_ROUNDS = 200


def boolean(text: str) -> bool:
    """``true`` / ``false`` (any case) on the command line."""
    value = {"true": True, "false": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value

def names(text: str) -> tuple[str, ...]:
    """``a,b`` on the command line -> ("a", "b")."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


OVERRIDES = {  # flag -> (section, field, type, help)
    "dataset": ("task", "dataset", str, "dataset name (digits is embedded; mnist, fashion_mnist, cifar10 need --data-root)"),
    "data_root": ("task", "data_root", str, "folder holding the dataset's files"),
    "agents": ("task", "num_agents", int, "agents per task"),
    "topology": ("task", "topology", str, "topology preset name (surf_dist/problem/topologies/) or JSON file"),
    "alpha": ("task", "alpha", float, "Dirichlet label skew (inf: IID)"),
    "samples_seen": ("task", "samples_seen", int, "samples per agent seen by the optimizer"),
    "samples_held": ("task", "samples_held", int, "held-out samples per agent"),
    "compress": ("task", "compress", str, "what every message carries (every method, the learned one included): "
                 "none (full rows; the default), qB (stochastic quantisation to B = 1..32 bits, one float32 scale "
                 "per message; unbiased), topk:K or randk:K (K coordinates of each message, or a fraction such as "
                 "topk:0.01; values plus int32 indices). Meta-training passes gradients straight through. "
                 "See docs/COMPRESSION.md"),
    "link_failure": ("task", "link_failure", float, "probability P in [0, 1) that each edge fails in each round "
                     "(independently; every method, the learned one included): the surviving graph mixes with "
                     "Metropolis weights and failed links send nothing. See docs/NETWORKS.md"),
    "layers": ("model", "num_layers", int, "unrolled layers L"),
    "hops": ("model", "num_hops", int, "hops K per layer (communication rounds per layer)"),
    "local_net": ("model", "local_net", str, f"local network: {', '.join(LOCAL_NETS)}"),
    "batch_size": ("model", "batch_size", int, "mini-batch per agent per layer"),
    "tracking": ("model", "tracking", boolean,
                 "true: the compact net also tracks the network-average gradient (sent with W)"),
    "momentum": ("model", "momentum", boolean,
                 "true: a learned heavy-ball term beta_l (W_l - W_(l-1)) in every layer (local, no messages)"),
    "start": ("model", "start", str, "the unrolled network's first iterate: task (the task's W_0) or zero "
              "(W_0 = 0, a start the baselines may also choose)"),
    "combine": ("model", "combine", str, "cta: filter the iterate, then subtract the local update (unrolled DGD); "
                "atc: adapt then combine: the local update first, then the graph filter on the adapted iterate "
                "(diffusion; the first round already carries each agent's data)"),
    "correction": ("model", "correction", boolean, "atc only: true adds a learned c_l times the previous local update "
                   "before the filter; with --momentum true the network starts as exact diffusion / NIDS"),
    "warmup_steps": ("model", "warmup_steps", int, "compact net: plain local gradient steps with learned sizes before "
                     "the first layer (no messages; counted as gradient evaluations); may be added when fine-tuning"),
    "local_steps": ("model", "local_steps", int, "compact net: local sub-steps per layer (no communication)"),
    "steps": ("train", "steps", int, "meta-training steps"),
    "lr": ("train", "lr", float, "Adam learning rate of the meta-parameters"),
    "dual_lr": ("train", "dual_lr", float, "dual ascent step"),
    "eps": ("train", "eps", float, "descent constraint: g(W_l) <= (1 - eps) g(W_(l-1))"),
    "descent": ("train", "descent", str, "descent function: loss or grad_norm"),
    "objective": ("train", "objective", str, "what the last layer is trained for: local (each agent's own "
                  "held-out data; scored by local_accuracy) or pooled (its task's pooled held-out data; "
                  "scored by accuracy)"),
    "anytime": ("train", "anytime", boolean, "true: train every layer's iterate for the objective (its mean "
                "over layers), so that every round budget, not only the last layer, is trained for"),
    "async_train": ("train", "async_train", int, "agents dropped at random per task and layer while meta-training "
                    "(0: off); trains for robustness to asynchronous agents"),
    "init_from": ("train", "init_from", str, "a trained run folder whose model starts meta-training "
                  "(fine-tuning; same layers and local network); 'pretrained[:local|:scratch|:robust]': "
                  "a shipped optimizer"),
    "mixture": ("train", "mixture", names, "more meta-training settings, comma-separated PRESET[:TOPOLOGY[:AGENTS]] "
                "(e.g. large,mnist1d,default:ring:30): the steps take their tasks from the run's own setting and "
                "these in turn; validation averages over them"),
    "seed": ("train", "seed", int, "the one seed behind tasks, graphs, batches, dropouts and inits"),
    "dtype": ("train", "dtype", str, "float32 or float64"),
    "test_tasks": ("eval", "test_tasks", int, "test tasks"),
    "rounds": ("eval", "baseline_rounds", int, "baseline rounds (default: the preset's, 500; bench: 100, five times SURF's 20; demo: "
               f"{DEMO_BASELINE_ROUNDS} - SURF needs 20, and the rounds the baselines need to match it "
               "lie well below)"),
    "async_draws": ("eval", "async_draws", int, "random dropout draws per n_async level"),
}
