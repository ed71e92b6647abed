"""Tasks drawn per block of agents, and pooled metrics from whole pools on every worker.

Oracles: a task of at most ``AGENT_BLOCK`` agents draws exactly what the one-stream recipe
drew before blocks existed (shards, W_0 and mini-batch keys, rebuilt here by hand); any subset
of agents, spread over several blocks, draws exactly the rows of the whole task. Equivalence:
the pretrained optimizer's evaluation curve (pooled accuracy included), the async sweep and
the pooled outer loss of 12 agents in blocks of 5 are the same on the local backend and on 2
gloo ranks (float64, to 1e-12).
"""
import dataclasses

import numpy as np
import pytest
import torch

from surf_dist.comm.local import LocalCommunicator
from surf_dist.core.evaluate import async_sweep, evaluate_unrolled
from surf_dist.core.train import trained_loss, unroll
from surf_dist.commands.jobs import load_model
from surf_dist.io.config import TrainConfig, preset, with_overrides
from surf_dist.methods.pretrained import resolve_run
from surf_dist.problem import tasks as tasks_module
from surf_dist.problem.tasks import AGENT_BLOCK, TaskFamily, dirichlet_shards, minibatch_indices
from surf_dist.runtime import run_job
from surf_dist.runtime.common import make_worker


def family_of(digits_family, num_agents: int) -> TaskFamily:
    cfg = dataclasses.replace(digits_family.config, num_agents=num_agents, topology="ring")
    return TaskFamily(cfg, digits_family.dataset, seed=digits_family.seed)


def test_a_task_of_one_block_draws_what_the_one_stream_recipe_drew(digits_family):
    fam = family_of(digits_family, 60)
    cfg, task = fam.config, fam.sample("test", 3)
    ss = np.random.SeedSequence([fam.seed, 2, 3])
    _, part_ss, init_ss, _, _ = ss.spawn(5)
    pool = np.random.default_rng(part_ss).permutation(fam.pools["test"])
    held = int(len(pool) * cfg.held_fraction)
    seen, held_idx = dirichlet_shards(fam.dataset.labels, pool[held:], pool[:held], 60, cfg.samples_seen,
                                      cfg.samples_held, cfg.alpha, np.random.default_rng(part_ss.spawn(1)[0]))
    assert np.array_equal(task.seen_idx, seen) and np.array_equal(task.held_idx, held_idx)
    assert np.array_equal(task.init_weights, np.random.default_rng(init_ss).normal(0.0, cfg.init_std, (60, fam.num_params)))
    keys = np.random.default_rng(np.random.SeedSequence([task.seed, 1, 0, 7])).random((60, cfg.samples_seen))
    assert np.array_equal(minibatch_indices(task, [7], 4)[0], np.argsort(keys, axis=-1)[:, :4])


def test_any_agents_over_several_blocks_draw_the_rows_of_the_whole_task(digits_family):
    n = 2 * AGENT_BLOCK + 37                      # three blocks, the last one short
    task = family_of(digits_family, n).sample("val", 1)
    everyone = np.arange(n)
    seen, held = task.shards_of(everyone)
    init = task.init_of(everyone)
    batches = minibatch_indices(task, [0, 5], 3)
    for agents in (np.array([5, AGENT_BLOCK + 2, n - 1, 0]), np.arange(AGENT_BLOCK - 3, AGENT_BLOCK + 3)):
        s, h = task.shards_of(agents)
        assert np.array_equal(s, seen[agents]) and np.array_equal(h, held[agents])
        assert np.array_equal(task.init_of(agents), init[agents])
        assert np.array_equal(minibatch_indices(task, [0, 5], 3, agents=agents), batches[:, agents])
    # the blocks are distinct streams (no block repeats block 0's draws)
    assert not np.array_equal(init[:AGENT_BLOCK][:37], init[2 * AGENT_BLOCK:])
    assert not np.array_equal(seen[:37], seen[2 * AGENT_BLOCK:])
    # a subset's pool mask is the samples its agents hold
    assert task.holds(np.array([4])).sum() == len(np.unique(held[4]))


# ------------------------------------------------------------------ local == 2 gloo ranks

CFG = with_overrides(preset("default"), {"task": {"num_agents": 12, "topology": "ring"},
                                         "train": {"dtype": "float64"}, "eval": {"test_tasks": 2}})


def evaluation_job(cfg, worker, progress=False) -> dict:
    """What ``surf-dist evaluate`` computes for the learned model, with blocks of 5 agents."""
    tasks_module.AGENT_BLOCK = 5            # this process's draws: 12 agents in 3 blocks
    model = load_model(resolve_run("pretrained"), worker)
    tasks = worker.family.batch("test", range(cfg.eval.test_tasks))
    curve = evaluate_unrolled(model, worker, tasks)
    sweep = async_sweep(model, worker, tasks, (0, 2), 2, seed=3)
    with torch.no_grad():
        shards, Ws = unroll(model, worker, tasks)
        pooled = trained_loss(Ws, shards, TrainConfig(objective="pooled", anytime=True))
    pooled_mean = worker.comm.all_reduce(pooled.sum()[None]) / (len(tasks) * worker.num_agents)
    return {"curve": curve, "sweep": sweep, "pooled_loss": float(pooled_mean[0]),
            "pool_rows": worker.comm.all_reduce(torch.tensor([float(len(x)) for x in shards.X_pool]))}


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_evaluation_in_blocks_is_the_same_on_one_process_and_two_ranks():
    saved = tasks_module.AGENT_BLOCK
    try:
        local = evaluation_job(CFG, make_worker(CFG, LocalCommunicator()))
    finally:
        tasks_module.AGENT_BLOCK = saved
    ranks = run_job(evaluation_job, CFG, "torch", 2)
    for key in ("rounds", "bytes_per_agent", "loss", "accuracy", "local_accuracy"):
        np.testing.assert_allclose(ranks["curve"][key], local["curve"][key], rtol=1e-12, atol=1e-12, err_msg=key)
    for level in (0, 2):
        np.testing.assert_allclose(ranks["sweep"][level], local["sweep"][level], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ranks["pooled_loss"], local["pooled_loss"], rtol=1e-12)
    # each rank holds every task's whole pool (2 ranks: twice the single process's rows)
    assert torch.equal(ranks["pool_rows"], 2 * local["pool_rows"])
    assert 0.1 < local["curve"]["accuracy"][-1] <= 1.0 and local["curve"]["accuracy"][0] != local["curve"]["accuracy"][-1]


def test_the_local_net_in_blocks_of_rows_is_the_whole_one(monkeypatch):
    """Evaluation computes the compact net's hidden layer in blocks of rows: the same numbers."""
    from surf_dist.methods import learned
    net = learned.CompactLocalNet(2, 16, 0.5, 1, torch.Generator().manual_seed(0), zero_init=False)
    phi = torch.randn(300, 65, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = net.mlp(1, phi)
        monkeypatch.setattr(learned, "MLP_ROWS", 1000)          # 20 blocks, the last one short
        blocks = net.mlp(1, phi)
    assert torch.equal(blocks, whole) and whole.abs().sum() > 0


def test_pooled_scores_in_blocks_of_models_are_the_whole_ones(monkeypatch):
    """Many agents on a large pool are scored in blocks of models: the same numbers."""
    from surf_dist.problem.softmax import pooled_correct, pooled_loss_sum
    gen = torch.Generator().manual_seed(2)
    W, X, Y = torch.randn(50, 12, generator=gen), torch.randn(40, 4, generator=gen), torch.arange(40) % 3
    whole = [fn(W, X, Y) for fn in (pooled_correct, pooled_loss_sum)]
    monkeypatch.setattr(tasks_module, "POOL_CELLS", 7 * 40)      # blocks of 7 models, the last one short
    for fn, expected in zip((pooled_correct, pooled_loss_sum), whole):
        assert torch.equal(tasks_module._in_blocks(fn, W, X, Y), expected)
    assert 0 < whole[0].sum() < 50 * 40
