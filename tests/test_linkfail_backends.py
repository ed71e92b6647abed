"""Link failures and time-varying graphs give the same numbers on every backend: the single
process, 2 gloo ranks and 2 Ray actors, in float64 to 1e-12. One job per backend runs, for each
network setting: the unrolled network's per-layer outputs and meta-gradients on 2 training tasks
with 2 of 8 agents dropped per layer, the ledger's bytes after every round; gradient tracking
(two vectors in one message), Chebyshev DGD and CHOCO on a grid of replicas on the test tasks."""
import dataclasses

import numpy as np
import pytest

from surf_dist.comm.local import LocalCommunicator
from surf_dist.commands.bench.runner import run_grid
from surf_dist.core.coordinator import draw_async_masks, draw_link_survival
from surf_dist.core.train import unroll
from surf_dist.methods.learned import UnrolledDGD
from surf_dist.problem.softmax import loss_per_agent
from surf_dist.problem.topology import load_topology_preset
from surf_dist.runtime import ray_runtime, run_job
from surf_dist.runtime.common import make_worker
from test_compress_backends import assert_close
from test_torch_backend import CFG, gather_rows

pytestmark = [pytest.mark.equivalence, pytest.mark.slow]   # spawned gloo ranks and Ray actors

SETTINGS = (("ring", 0.3), ("random_matching", 0.0), ("one_peer_exponential", 0.2), ("random_regular", 0.5))


def network_job(cfg, worker, progress=False) -> dict:
    base, base_topology = worker.family.config, worker.family.topology
    out = {}
    try:
        for topology, p in SETTINGS:     # what Worker.load binds (the placement stays the ring's)
            worker.family.config = dataclasses.replace(base, topology=topology, link_failure=p)
            worker.family.topology = load_topology_preset(topology)
            fam = worker.family
            model = UnrolledDGD(cfg.model, fam.dataset.num_features + 1, fam.num_classes, seed=1).to(worker.dtype)
            tasks = fam.batch("train", range(2))
            masks = draw_async_masks(np.random.default_rng(4), cfg.model.num_layers, len(tasks), fam.config.num_agents, 2)
            shards, Ws = unroll(model, worker, tasks, masks)
            loss = sum((l + 1) * loss_per_agent(W, shards.X_held, shards.Y_held).sum() for l, W in enumerate(Ws))
            loss.backward()
            worker.comm.all_reduce_grads(model.parameters())
            entry = {"layers": np.stack([gather_rows(worker, W, len(tasks)) for W in Ws]),
                     "grads": np.concatenate([q.grad.reshape(-1).numpy() for q in model.parameters()]),
                     "bytes": np.array(worker.comm.bytes_curve()),
                     "messages": np.array(worker.comm.ledger_per_agent()["messages_per_agent"])}
            test_tasks = fam.batch("test", range(cfg.eval.test_tasks))
            grids = {"gradient_tracking": [{"start": "zero", "step": 0.1}, {"start": "task", "step": 1.0}],
                     "chebyshev_dgd": [{"start": "zero", "step": 0.5, "gossip_rounds": 2}],
                     "choco": [{"start": "zero", "step": 0.5, "consensus": 0.5}]}
            for name, configs in grids.items():
                grid = run_grid(name, worker, test_tasks, configs, 8, np.array([0, 4, 8]), 64, cfg.model.batch_size)
                entry[name] = {**grid["values"], "bytes": grid["bytes"]}
            out[f"{topology}@{p}"] = entry
    finally:
        worker.family.config, worker.family.topology = base, base_topology
    return out


@pytest.fixture(scope="module")
def reference():
    return network_job(CFG, make_worker(CFG, LocalCommunicator()))


def test_the_reference_has_failures_and_changing_graphs(reference):
    """The checks below could not pass by accident: failures cut the messages of a ring (2 a
    round and agent without failures or dropouts), and every setting changes the numbers."""
    ring = reference["ring@0.3"]
    rounds = CFG.model.num_layers * CFG.model.num_hops
    assert ring["messages"] < 2 * rounds * 6 / 8          # 2 of 8 agents dropped, then 30% of links fail
    layers = [e["layers"][-1] for e in reference.values()]
    assert all(not np.allclose(a, b) for i, a in enumerate(layers) for b in layers[i + 1:])
    assert all(np.isfinite(e["grads"]).all() and np.abs(e["grads"]).max() > 0 for e in reference.values())


@pytest.mark.timeout(300)
def test_two_gloo_ranks_match_the_single_process(reference):
    assert_close(run_job(network_job, CFG, "torch", 2), reference)


@pytest.mark.timeout(400)
def test_two_ray_actors_match_the_single_process(reference):
    with ray_runtime.local_ray(num_cpus=2):
        assert_close(run_job(network_job, CFG, "ray", 2), reference)


def physical_job(cfg, worker, progress=False) -> dict:
    """Rows that crossed ranks in the unrolled network's forward pass on one ring task (no
    failures, then half the links failing), with agents 0 and 5 dropped at every layer (zeros)
    or none, and the count expected from the ring's edges and the placement."""
    import torch
    from surf_dist.problem.round_graphs import num_edges
    base = worker.family.config
    fam, K, L = worker.family, cfg.model.num_hops, cfg.model.num_layers
    n, owner = fam.config.num_agents, worker.owner
    out = {}
    try:
        for p in (0.0, 0.5):
            fam.config = dataclasses.replace(base, link_failure=p)
            model = UnrolledDGD(cfg.model, fam.dataset.num_features + 1, fam.num_classes, seed=1).to(worker.dtype)
            task = fam.sample("train", 0)
            for label, dropped in (("all", []), ("dropped", [0, 5])):
                masks = np.ones((L, 1, n), dtype=bool)
                masks[:, :, dropped] = False
                with torch.no_grad():
                    unroll(model, worker, [task], masks)
                crossed = worker.comm.all_reduce(torch.tensor([float(worker.comm.ledger.physical_bytes)]))
                d = (fam.dataset.num_features + 1) * fam.num_classes
                expected = 0
                for r in range(L * K):     # ring edges (i, i+1) across ranks, live, from a sender not dropped
                    edges = sorted((min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n))
                    live = draw_link_survival(task.seed, r, num_edges(task.shift), p) if p else [True] * n
                    for (i, j), ok in zip(edges, live):
                        if ok and owner[i] != owner[j]:
                            expected += (i not in dropped) + (j not in dropped)
                out[f"{p}/{label}"] = (float(crossed[0]) / (d * 8), expected)
    finally:
        fam.config = base
    return out


@pytest.mark.timeout(300)
def test_failed_links_and_dropped_agents_send_no_rows_between_ranks():
    counts = run_job(physical_job, CFG, "torch", 2)
    assert counts["0.0/all"][1] == 2 * 2 * CFG.model.num_layers * CFG.model.num_hops     # 2 cut edges, both ways
    assert counts["0.5/dropped"][1] < counts["0.5/all"][1] < counts["0.0/all"][1]
    for key, (crossed, expected) in counts.items():
        assert crossed == expected, key
