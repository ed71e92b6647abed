"""Primal-dual meta-training of the unrolled network, top to bottom.

Every step draws a fresh batch of training tasks, runs the L layers, takes an Adam step on the
Lagrangian (the primal step) and a projected ascent step on the multipliers (the dual step).
``constrained=False`` keeps the multipliers at zero: standard unrolling, the ablation.
The model kept at the end is the one with the lowest validation loss after its last layer.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._malloc import release_freed_memory
from ..io.checkpoint import CHECKPOINT, check_state_dict, check_training_state, load_checkpoint, load_model_file
from ..io.config import RunConfig
from ..methods.constraints import descent_values, lagrangian_share, slack_terms
from .coordinator import Coordinator
from .engine import Worker
from ..methods.learned import UnrolledDGD
from ..methods.pretrained import resolve_run
from ..problem.softmax import loss_per_agent, pooled_loss_sum
from ..io.progress import bar as progress_bar
from ..problem.tasks import Shards



@dataclass
class TrainState:
    model: UnrolledDGD
    optimizer: torch.optim.Optimizer
    duals: torch.Tensor                    # the workers' copy of the coordinator's multipliers
    coordinator: Coordinator | None        # rank 0 only: owns duals, dropouts, logs, checkpoints
    step: int = 0
    best_val: float = float("inf")
    best_model: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0             # the training cost of the sessions before this one (resume)


def new_model(cfg: RunConfig, worker: Worker, seed: int = 0) -> UnrolledDGD:
    """An unrolled network for the worker's task family, in its dtype, on its device."""
    fam = worker.family
    model = UnrolledDGD(cfg.model, fam.dataset.num_features + 1, fam.num_classes, seed=seed)
    return model.to(device=worker.device, dtype=worker.dtype)


def build_state(cfg: RunConfig, worker: Worker, run_dir: Path | None = None) -> TrainState:
    model = new_model(cfg, worker, seed=cfg.train.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    duals = torch.zeros(cfg.model.num_layers, dtype=torch.float64)
    coordinator = None
    if worker.comm.rank == 0:
        coordinator = worker.new_coordinator(cfg.model.num_layers, cfg.train.dual_lr, cfg.train.seed,
                                             str(run_dir) if run_dir else None)
    return TrainState(model, optimizer, duals, coordinator, best_model=copy.deepcopy(model.state_dict()))


# Parameters a fine-tuning run may add to a trained network (they start at their initial values:
# warm-up steps of init_step before the first layer).
ADDED_ON_FINE_TUNING = ("log_warmup",)


def warm_start(model: UnrolledDGD, run_dir: str | Path, files=None) -> None:
    """Start from the weights of the model trained in ``run_dir`` (fine-tuning a trained
    optimizer on other tasks; the compact network's weights do not depend on d or n);
    ``files``: the driver's copy (``shipped``), or None to read the disk."""
    run_dir = resolve_run(run_dir)
    saved, saved_cfg = load_model_file(run_dir / "model.pt", files)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(getattr(v, "shape", ())) for k, v in saved["model"].items()}
    added = {k: v for k, v in ours.items() if k not in theirs and k in ADDED_ON_FINE_TUNING}
    if {k: v for k, v in ours.items() if k not in added} != theirs:
        raise ValueError(f"init_from {run_dir}: its network does not fit this one (trained with model "
                         f"settings {saved_cfg.model}; this run's are {model.config})")
    check_state_dict(saved["model"], theirs, run_dir / "model.pt")
    model.load_state_dict({**model.state_dict(), **saved["model"]})     # an added part keeps its initial value


def unroll(model: UnrolledDGD, worker: Worker, tasks, masks_ltn=None, stale=False, each_layer=None):
    """Load ``tasks`` on this worker and run every layer: (shards, [W_0..W_L]); with
    ``each_layer(shards, W)`` called on every iterate, only the last two are kept. Dropped agents
    send nothing (their rows never cross): their neighbours use zeros, or with ``stale`` the last
    row they received from them."""
    K = model.config.num_hops
    dropped = None if masks_ltn is None else (lambda r: ~masks_ltn[r // K].reshape(-1))
    shards = worker.load(tasks, dropped, stale)
    positions = worker.positions(tasks, range(model.config.num_layers), model.config.batch_size, stream=0)
    hook = None if each_layer is None else (lambda W: each_layer(shards, W))
    Ws = model(shards.init_weights, shards, positions, worker.comm, worker.active_mask(masks_ltn), stale, hook)
    return shards, Ws


def primal_step(state: TrainState, worker: Worker, tasks, cfg: RunConfig) -> dict:
    """One Adam step on this worker's share of the Lagrangian, gradients all-reduced."""
    masks = None
    if cfg.train.async_train > 0:   # the coordinator draws the dropouts and sends them out
        shape = (cfg.model.num_layers, len(tasks), worker.num_agents)
        drawn = (state.coordinator.draw_masks("train", *shape, cfg.train.async_train)
                 if state.coordinator else np.zeros(shape, dtype=bool))
        masks = worker.comm.broadcast(torch.as_tensor(drawn)).numpy()
    shards, Ws = unroll(state.model, worker, tasks, masks)
    g = descent_values(Ws, shards.X_seen, shards.Y_seen, cfg.train.descent)
    outer = trained_loss(Ws, shards, cfg.train)
    slack = slack_terms(g, cfg.train.eps)
    num_nodes = len(tasks) * worker.num_agents
    duals = state.duals.to(device=outer.device, dtype=outer.dtype)
    if not cfg.train.constrained:
        duals = torch.zeros_like(duals)
    state.optimizer.zero_grad(set_to_none=True)
    lagrangian_share(outer, slack, duals, num_nodes).backward()
    worker.comm.all_reduce_grads(state.model.parameters())
    state.optimizer.step()
    sums = worker.comm.all_reduce(torch.cat([outer.sum()[None], slack.sum(1)]).detach().double().cpu())
    return {"outer_loss": float(sums[0]) / num_nodes, "slacks": (sums[1:] / num_nodes)}


def outer_loss(W_nd: torch.Tensor, shards: Shards, objective: str) -> torch.Tensor:
    """Per node, the last layer's loss that meta-training minimises (N,).

    ``local``: on the agent's own held-out samples, which follow its label skew (what
    ``local_accuracy`` scores). ``pooled``: on the pooled held-out samples of its task, one
    model good for every agent's data (what the pooled ``accuracy`` scores); each worker holds
    every pool whole and scores its own nodes (``Shards.on_pools``)."""
    if objective == "local":
        return loss_per_agent(W_nd, shards.X_held, shards.Y_held)
    return shards.on_pools(pooled_loss_sum, W_nd)


def trained_loss(Ws: list[torch.Tensor], shards: Shards, tc) -> torch.Tensor:
    """Per node, what meta-training minimises: the last layer's ``outer_loss``, or with
    ``tc.anytime`` its mean over layers 1..L (each layer is a round budget a user may stop at)."""
    if not tc.anytime:
        return outer_loss(Ws[-1], shards, tc.objective)
    return torch.stack([outer_loss(W, shards, tc.objective) for W in Ws[1:]]).mean(0)


def learning_rate(cfg: RunConfig, step: int) -> float:
    """Cosine decay from ``lr`` to ``lr * lr_floor`` over the run (a function of the step alone,
    so a resumed run continues the same schedule)."""
    tc = cfg.train
    progress = step / max(tc.steps - 1, 1)
    return tc.lr * (tc.lr_floor + (1 - tc.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def dual_update(state: TrainState, worker: Worker, slacks_l: torch.Tensor) -> None:
    """The coordinator's projected ascent step, sent to every worker."""
    new = state.coordinator.dual_step(slacks_l) if state.coordinator else state.duals
    state.duals = worker.comm.broadcast(new.clone())


def validate(model: UnrolledDGD, worker: Worker, tasks, tc) -> dict:
    """The last layer's metrics on ``tasks``, and ``objective``: the training objective's mean
    (``trained_loss`` of the train settings ``tc``)."""
    with torch.no_grad():
        shards, Ws = unroll(model, worker, tasks)
        groups = torch.zeros(Ws[-1].shape[0], dtype=torch.int64)
        values = worker.metrics(Ws[-1], shards, groups, 1)
        values["objective"] = worker.comm.group_mean(trained_loss(Ws, shards, tc), groups, 1)
        return {k: float(v[0]) for k, v in values.items()}


def train(cfg: RunConfig, worker: Worker, run_dir: Path | None = None, resume: bool = False,
          progress: bool = True, tag: str = "", mixture: tuple[Worker, ...] = ()) -> TrainState:
    """Meta-train; the coordinator writes metrics.csv, TensorBoard events and checkpoints
    under ``run_dir``; the model with the best validation value of the objective is kept.

    ``mixture``: workers of more settings (``cfg.train.mixture``, on the same communicator):
    step s draws its tasks from setting s mod (1 + len(mixture)), the run's own first, and the
    validation objective is the mean over the settings of each one's."""
    tc = cfg.train
    session_start = time.perf_counter()
    state = build_state(cfg, worker, run_dir)      # its coordinator creates run_dir
    if resume:
        saved = load_resumable(run_dir / CHECKPOINT, cfg, state.model, worker.files)
        restore(state, saved)
        state.train_seconds = earlier_training_seconds(saved, run_dir)
    elif tc.init_from:
        warm_start(state.model, tc.init_from, worker.files)
        state.best_model = copy.deepcopy(state.model.state_dict())
    worker.comm.check_replicated(state.model.parameters(), "model parameters")   # before the first layer
    settings = (worker, *mixture)
    val_tasks = [w.family.batch("val", range(tc.val_tasks)) for w in settings]
    first_step = state.step
    started = session_start - state.train_seconds     # the cost accumulates over resumes
    bar = progress_bar(range(state.step, tc.steps), f"train {tag}".strip(), progress,
                       initial=state.step, total=tc.steps)
    for step in bar:
        for group in state.optimizer.param_groups:
            group["lr"] = learning_rate(cfg, step)
        here = settings[step % len(settings)]
        tasks = here.family.batch("train", range(step * tc.tasks_per_step, (step + 1) * tc.tasks_per_step))
        row = primal_step(state, here, tasks, cfg)
        if not np.isfinite(row["outer_loss"]):
            raise FloatingPointError(f"meta-training diverged at step {step}: outer loss is "
                                     f"{row['outer_loss']}; lower --lr or init_step")
        if tc.constrained:
            dual_update(state, worker, row["slacks"])
        row.update(step=step, duals=state.duals.clone())
        validating = (step + 1) % tc.val_every == 0 or step + 1 == tc.steps
        if validating:
            vals = [validate(state.model, w, tasks, tc) for w, tasks in zip(settings, val_tasks)]
            val = {"objective": float(np.mean([v["objective"] for v in vals])), "local_accuracy": vals[0]["local_accuracy"]}
            row.update(val_loss=val["objective"], val_local_accuracy=val["local_accuracy"])
            release_freed_memory()      # the validation's arrays (kept in the process where asked)
            if val["objective"] < state.best_val:
                state.best_val = val["objective"]
                state.best_model = copy.deepcopy(state.model.state_dict())
            bar.set_postfix(loss=f"{row['outer_loss']:.3f}", val_acc=f"{val['local_accuracy']:.3f}")
        state.step = step + 1
        state.history.append(row)
        if state.coordinator:
            state.coordinator.record(row)
            if validating:
                state.train_seconds = time.perf_counter() - started
                state.coordinator.save(CHECKPOINT, snapshot(state, cfg))
    state.model.load_state_dict(state.best_model)
    state.train_seconds = time.perf_counter() - started
    finished_before = resume and state.step == first_step and run_dir is not None and (run_dir / "model.pt").is_file()
    if state.coordinator and finished_before:      # nothing trained: its model.pt (and its cost) stays as it is
        state.coordinator.close()
    elif state.coordinator:
        state.coordinator.save("model.pt", {"config": json.dumps(cfg.to_dict()),
                                            "model": to_cpu(state.best_model), "best_val": state.best_val,
                                            "train_seconds": state.train_seconds,
                                            "device": f"{worker.device.type}, {worker.comm.world_size} worker(s)"})
        state.coordinator.close()
    return state


def snapshot(state: TrainState, cfg: RunConfig) -> dict:
    """The workers' part of a checkpoint (the coordinator adds its duals and generators)."""
    saved = {"config": json.dumps(cfg.to_dict()), "step": state.step, "model": state.model.state_dict(),
             "optimizer": state.optimizer.state_dict(), "best_val": state.best_val,
             "best_model": state.best_model, "train_seconds": state.train_seconds}
    return to_cpu(saved)     # the coordinator (a Ray actor of its own) may have no GPU


def to_cpu(tree):
    """``tree`` (nested dicts and lists) with every tensor on the CPU."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


def load_resumable(path: Path, cfg: RunConfig, model: UnrolledDGD, files=None) -> dict:
    """A training checkpoint that ``cfg`` can continue: written with the same settings (but
    ``train.steps``), every field intact and of ``model``'s shapes, at a step <= ``steps``;
    ``files`` as in ``checkpoint.load_checkpoint``."""
    saved = load_checkpoint(path, cfg.to_dict(), may_differ=("train.steps",), files=files)
    check_training_state(saved, path, model, cfg.model.num_layers)
    if saved["step"] > cfg.train.steps:
        raise ValueError(f"--resume: {path.parent} is at step {saved['step']}, past --steps {cfg.train.steps}; "
                         f"pass --steps {saved['step']} or more to continue it (nothing was rewritten)")
    return saved


def earlier_training_seconds(saved: dict, run_dir: Path | None) -> float:
    """The training cost (seconds) of a run's sessions before a resume: its checkpoint's; a
    checkpoint written before it held one: its model.pt's (the last session's, at least)."""
    seconds = saved.get("train_seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) and seconds >= 0:
        return float(seconds)
    model_file = Path(run_dir) / "model.pt" if run_dir is not None else None
    if model_file is not None and model_file.is_file():
        try:
            earlier = load_checkpoint(model_file).get("train_seconds")
        except ValueError:
            return 0.0
        if isinstance(earlier, (int, float)) and not isinstance(earlier, bool) and math.isfinite(earlier):
            return max(float(earlier), 0.0)
    return 0.0


def restore(state: TrainState, saved: dict) -> None:
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.duals = saved["coordinator"]["duals"].clone()
    if state.coordinator:
        state.coordinator.restore(saved["coordinator"])
    state.step, state.best_val, state.best_model = saved["step"], saved["best_val"], saved["best_model"]
