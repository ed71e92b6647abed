"""surf_dist.problem.tasks: reproducible task draws, disjoint pools, held-out discipline, label skew,
label permutation, mini-batch streams and per-worker materialization."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from surf_dist.problem.tasks import (TaskFamily, block_shift, dirichlet_shards, materialize, pool_owner,
                             minibatch_indices)


def family_with(digits_family, **changes):
    """Another family on the same (already loaded) dataset."""
    cfg = dataclasses.replace(digits_family.config, **changes)
    return TaskFamily(cfg, dataset=digits_family.dataset, seed=digits_family.seed)


def assert_same_task(a, b):
    assert (a.shift != b.shift).nnz == 0
    for name in ("seen_idx", "held_idx", "init_weights", "label_map"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.seed == b.seed


def test_same_seed_gives_identical_tasks(digits_family):
    again = TaskFamily(digits_family.config, dataset=digits_family.dataset, seed=0)
    for split, index in [("train", 0), ("train", 5), ("val", 1), ("test", 2)]:
        assert_same_task(digits_family.sample(split, index), again.sample(split, index))
    # the draw depends on nothing but (seed, split, index): order of requests is irrelevant
    assert_same_task(digits_family.batch("train", [3, 1])[1], digits_family.sample("train", 1))


def test_different_index_split_or_seed_gives_different_tasks(digits_family):
    base = digits_family.sample("train", 0)
    other_seed = TaskFamily(digits_family.config, dataset=digits_family.dataset, seed=1).sample("train", 0)
    for other in (digits_family.sample("train", 1), digits_family.sample("val", 0), other_seed):
        assert not np.array_equal(base.seen_idx, other.seen_idx)
        assert not np.array_equal(base.init_weights, other.init_weights)
        assert base.seed != other.seed


def test_task_shapes_and_init_distribution(digits_family):
    cfg = digits_family.config
    task = digits_family.sample("train", 0)
    n, d = cfg.num_agents, digits_family.num_params
    assert task.num_agents == n and task.shift.shape == (n, n)
    assert task.seen_idx.shape == (n, cfg.samples_seen) and task.held_idx.shape == (n, cfg.samples_held)
    assert task.init_weights.shape == (n, d)
    assert abs(task.init_weights.std() - cfg.init_std) < 0.05          # 5200 draws of N(0, 1)
    assert np.array_equal(task.label_map, np.arange(digits_family.num_classes))


def test_pools_are_disjoint_and_tasks_stay_in_their_pool(digits_family):
    pools = digits_family.pools
    assert sum(len(p) for p in pools.values()) == digits_family.dataset.num_samples
    for a in pools:
        for b in pools:
            if a < b:
                assert np.intersect1d(pools[a], pools[b]).size == 0
    used = {}
    for split in pools:
        idx = np.concatenate([np.concatenate([t.seen_idx.ravel(), t.held_idx.ravel()])
                              for t in digits_family.batch(split, range(4))])
        assert np.isin(idx, pools[split]).all(), split
        used[split] = np.unique(idx)
    assert np.intersect1d(used["train"], used["val"]).size == 0
    assert np.intersect1d(used["train"], used["test"]).size == 0
    assert np.intersect1d(used["val"], used["test"]).size == 0


def test_no_held_out_sample_is_seen_by_any_agent_of_its_task(digits_family):
    for split in ("train", "test"):
        for task in digits_family.batch(split, range(5)):
            assert np.intersect1d(task.held_idx, task.seen_idx).size == 0


def test_seen_samples_without_replacement_within_an_agent(digits_family):
    # digits: ~80 train samples per class in the seen part; 8 draws never need replacement
    for task in digits_family.batch("train", range(3)):
        for row in task.seen_idx:
            assert len(np.unique(row)) == len(row)


def _mean_tv_to_pooled(family, num_tasks=3):
    labels = family.dataset.labels
    C = family.num_classes
    tvs = []
    for task in family.batch("train", range(num_tasks)):
        hist = np.stack([np.bincount(labels[row], minlength=C) for row in task.seen_idx]).astype(float)
        hist /= hist.sum(1, keepdims=True)
        pooled = np.bincount(labels[task.seen_idx.ravel()], minlength=C) / task.seen_idx.size
        tvs.append(0.5 * np.abs(hist - pooled).sum(1).mean())
    return float(np.mean(tvs))


def test_large_alpha_approaches_iid(digits_family):
    many = dict(samples_seen=200)
    skewed = _mean_tv_to_pooled(family_with(digits_family, alpha=0.1, **many))
    near_iid = _mean_tv_to_pooled(family_with(digits_family, alpha=1e4, **many))
    iid = _mean_tv_to_pooled(family_with(digits_family, alpha=math.inf, **many))
    # multinomial noise of 200 draws over 10 classes: expected TV about 0.1
    assert near_iid < 0.15 and iid < 0.15
    assert skewed > 0.5
    assert skewed > 3 * near_iid


def test_dirichlet_shards_uniform_when_alpha_is_infinite():
    labels = np.repeat(np.arange(4), 500)
    rng = np.random.default_rng(0)
    perm = rng.permutation(labels.size)
    seen, held = dirichlet_shards(labels, perm[:1500], perm[1500:], 3, 400, 100, math.inf, rng)
    assert seen.shape == (3, 400) and held.shape == (3, 100)
    assert np.isin(seen, perm[:1500]).all() and np.isin(held, perm[1500:]).all()
    for row in seen:
        freq = np.bincount(labels[row], minlength=4) / 400
        assert np.abs(freq - 0.25).max() < 0.08


def test_agent_held_out_labels_follow_its_own_skew(digits_family):
    """Seen and held-out labels of one agent are drawn from the same q_i."""
    fam = family_with(digits_family, alpha=0.05, samples_seen=40, samples_held=40)
    labels = fam.dataset.labels
    task = fam.sample("train", 0)
    C = fam.num_classes
    for seen, held in zip(task.seen_idx, task.held_idx):
        p = np.bincount(labels[seen], minlength=C) / len(seen)
        q = np.bincount(labels[held], minlength=C) / len(held)
        assert 0.5 * np.abs(p - q).sum() < 0.4


def test_permute_labels_is_a_consistent_permutation(digits_family):
    plain = digits_family.batch("train", range(3))
    permuted = digits_family.batch("train", range(3), permute_labels=True)
    agents = np.arange(digits_family.config.num_agents)
    C = digits_family.num_classes
    assert any(not np.array_equal(t.label_map, np.arange(C)) for t in permuted)
    for a, b in zip(plain, permuted):
        assert sorted(b.label_map.tolist()) == list(range(C))
        # same partition, graph and start: only the labels change
        assert np.array_equal(a.seen_idx, b.seen_idx) and np.array_equal(a.init_weights, b.init_weights)
        sa = materialize(digits_family.dataset, [a], agents)
        sb = materialize(digits_family.dataset, [b], agents)
        assert torch.equal(sa.X_seen, sb.X_seen)
        label_map = torch.as_tensor(b.label_map)
        for ya, yb in [(sa.Y_seen, sb.Y_seen), (sa.Y_held, sb.Y_held), (sa.Y_pool[0], sb.Y_pool[0])]:
            assert torch.equal(yb, label_map[ya])


def test_minibatch_indices_no_repeats_and_reproducible_per_step(digits_family):
    task = digits_family.sample("train", 0)
    n, m = task.seen_idx.shape
    b = 5
    batches = minibatch_indices(task, range(6), b)
    assert batches.shape == (6, n, b)
    assert batches.min() >= 0 and batches.max() < m
    for step in batches:
        for row in step:
            assert len(np.unique(row)) == b
    # step s is the same batch whichever steps are asked for, and in whichever order
    assert np.array_equal(minibatch_indices(task, [4], b)[0], batches[4])
    assert np.array_equal(minibatch_indices(task, [5, 2], b), batches[[5, 2]])
    assert np.array_equal(minibatch_indices(task, range(6), b), batches)
    # steps and streams differ
    assert not np.array_equal(batches[0], batches[1])
    assert not np.array_equal(minibatch_indices(task, [0], b, stream=1)[0], batches[0])
    # agents draw their own batches
    assert not all(np.array_equal(batches[0, 0], batches[0, i]) for i in range(1, n))


def test_minibatch_indices_cover_each_agents_samples_evenly(digits_family):
    task = digits_family.sample("train", 1)
    n, m = task.seen_idx.shape
    counts = np.zeros((n, m))
    batches = minibatch_indices(task, range(400), 2)
    for i in range(n):
        counts[i] = np.bincount(batches[:, i].ravel(), minlength=m)
    # each of m = 8 positions is drawn with probability 2 / 8 per step: 100 of 400 expected
    assert np.abs(counts - 100).max() < 40


@pytest.mark.parametrize("noise_std", [0.0, 0.3])
def test_materialize_subset_equals_rows_of_full(digits_family, noise_std):
    tasks = digits_family.batch("val", range(2))
    n = digits_family.config.num_agents
    full = materialize(digits_family.dataset, tasks, np.arange(n), noise_std)
    subset = np.array([1, 4, 6])
    others = np.setdiff1d(np.arange(n), subset)
    # two workers, ``subset`` on rank 0: who reads each held-out sample, from what each worker's agents hold
    owners = [pool_owner(np.stack([t.holds(subset), t.holds(others)])) for t in tasks]
    part = materialize(digits_family.dataset, tasks, subset, noise_std, pool_owners=owners, rank=0)
    rows = (np.arange(2)[:, None] * n + subset[None]).ravel()
    for name in ("X_seen", "Y_seen", "X_held", "Y_held", "init_weights"):
        assert torch.equal(getattr(part, name), getattr(full, name)[rows]), name
    assert torch.equal(part.task_of_node, torch.tensor([0, 0, 0, 1, 1, 1]))
    rest = materialize(digits_family.dataset, tasks, others, noise_std, pool_owners=owners, rank=1)
    for t in range(2):      # the two shares partition the pool: rows of the whole, each exactly once
        assert full.pool_size[t] == part.pool_size[t] == full.X_pool[t].shape[0]
        assert torch.equal(full.pool_at[t], torch.arange(full.pool_size[t]))
        at = torch.cat([part.pool_at[t], rest.pool_at[t]])
        assert torch.equal(at.sort().values, torch.arange(full.pool_size[t]))
        assert 0 < len(part.pool_at[t]) < full.pool_size[t]
        for sh in (part, rest):
            assert torch.equal(sh.X_pool[t], full.X_pool[t][sh.pool_at[t]])
            assert torch.equal(sh.Y_pool[t], full.Y_pool[t][sh.pool_at[t]])
    positions = torch.as_tensor(minibatch_indices(tasks[0], [0], 3)[0])
    X_full, Y_full = full.minibatch(torch.cat([positions, positions]))
    X_part, Y_part = part.minibatch(torch.cat([positions[subset], positions[subset]]))
    assert torch.equal(X_part, X_full[rows]) and torch.equal(Y_part, Y_full[rows])


def test_materialize_values_come_from_the_dataset(digits_family):
    task = digits_family.sample("train", 2)
    ds = digits_family.dataset
    agents = np.arange(digits_family.config.num_agents)
    owner = pool_owner(np.stack([task.holds(np.array([3])), task.holds(agents[agents != 3])]))
    shards = materialize(ds, [task], np.array([3]), pool_owners=[owner], rank=0)
    assert shards.X_seen.dtype == torch.float64 and shards.X_seen.shape[-1] == ds.num_features + 1
    assert torch.equal(shards.X_seen[0, :, :-1], torch.as_tensor(ds.features[task.seen_idx[3]]))
    assert torch.equal(shards.X_seen[0, :, -1], torch.ones(task.seen_idx.shape[1], dtype=torch.float64))
    assert torch.equal(shards.Y_held[0], torch.as_tensor(ds.labels[task.held_idx[3]]))
    assert torch.equal(shards.init_weights[0], torch.as_tensor(task.init_weights[3]))
    # the task's pooled held-out set: the distinct held-out samples of all its agents; agent 3,
    # alone on rank 0, reads every one it holds (rank 1, every other agent, the rest)
    distinct = np.unique(task.held_idx)
    mine = np.isin(distinct, task.held_idx[3])
    share = distinct[mine]
    assert shards.pool_size == [distinct.size] and 0 < share.size < distinct.size
    assert torch.equal(shards.pool_at[0], torch.as_tensor(np.flatnonzero(mine)))
    assert torch.equal(shards.X_pool[0][:, :-1], torch.as_tensor(ds.features[share]))
    assert torch.equal(shards.Y_pool[0], torch.as_tensor(ds.labels[share]))


def test_feature_noise_is_per_task_and_reproducible(digits_family):
    tasks = digits_family.batch("train", range(2))
    agents = np.arange(digits_family.config.num_agents)
    clean = materialize(digits_family.dataset, tasks, agents)
    a = materialize(digits_family.dataset, tasks, agents, noise_std=0.5)
    b = materialize(digits_family.dataset, tasks, agents, noise_std=0.5)
    assert torch.equal(a.X_seen, b.X_seen)
    noise = a.X_seen - clean.X_seen
    assert abs(noise[..., :-1].std().item() - 0.5) < 0.05
    assert torch.equal(noise[..., -1], torch.zeros_like(noise[..., -1]))     # bias column intact


def test_block_shift_is_the_disjoint_union(digits_family):
    tasks = digits_family.batch("train", range(3))
    big = block_shift(tasks)
    n = digits_family.config.num_agents
    assert big.shape == (3 * n, 3 * n)
    dense = big.toarray()
    for t, task in enumerate(tasks):
        block = slice(t * n, (t + 1) * n)
        assert np.array_equal(dense[block, block], task.shift.toarray())
    mask = np.kron(np.eye(3), np.ones((n, n))).astype(bool)
    assert not dense[~mask].any()


def test_unknown_split_is_a_value_error(digits_family):
    with pytest.raises(ValueError, match="split"):
        digits_family.sample("training", 0)
