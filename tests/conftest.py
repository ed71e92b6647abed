import torch; torch.set_num_threads(1)  # noqa: E702  (2-core machine: threads slow tiny tensors 50x)

# Shared fixtures: tiny synthetic problems, graphs bound to a local communicator, the digits
# task family of the ``quick`` preset. Everything is float64 with 4 to 8 agents.

import os

import numpy as np
import pytest
import scipy.sparse as sp

from surf_dist.comm.local import LocalCommunicator
from surf_dist.io.config import preset
from surf_dist.problem.softmax import add_bias
from surf_dist.problem.tasks import Shards, TaskFamily
from surf_dist.problem.topology import ring, shift_operator, star


RAY_FILES = {"test_cluster_files.py", "test_ray_backend.py"}
ONE_PROCESS_FILES = {"test_bad_inputs.py"}      # its last test compares the table of every case's result


def test_group(nodeid: str) -> str | None:
    """The tests that must share one test process, one after the other: every test that starts
    Ray, a Ray cluster or the namespace hosts ("ray": two Ray instances or two pairs of hosts at
    once would compete for the hosts' names and the 2 cores), and a file whose last test reads
    what the others recorded. None: any process."""
    path, name = nodeid.split("::")[0], nodeid.split("::")[-1]
    file = path.rsplit("/", 1)[-1]
    if file in ONE_PROCESS_FILES:
        return file
    if file in RAY_FILES or "ray" in name.split("[")[0].lower():
        return "ray"
    return None


def pytest_collection_modifyitems(config, items):
    """The "ray" group first: it is the longest stretch one process runs alone, so it starts at once."""
    items.sort(key=lambda item: test_group(item.nodeid) != "ray")


def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist (``-n 2`` in pyproject.toml): tests spread over the processes as they
    free up, except each ``test_group`` runs whole in one of them."""
    from xdist.scheduler import LoadScopeScheduling

    class Grouped(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return test_group(nodeid) or nodeid

    return Grouped(config, log)


@pytest.fixture(scope="session")
def quick_cfg():
    return preset("quick")


@pytest.fixture(scope="session")
def digits_family(quick_cfg):
    """The quick preset's task family (8 agents on a ring, bundled digits), seed 0."""
    return TaskFamily(quick_cfg.task, seed=0)


def _make_shards(num_agents=4, num_seen=6, num_held=3, num_features=3, num_classes=3, seed=0,
                 init_std=1.0):
    """Random float64 shards: features with a bias column, labels in [0, C), W_0 ~ N(0, init_std^2)."""
    gen = torch.Generator().manual_seed(seed)
    n, p, C = num_agents, num_features, num_classes
    X_seen = add_bias(torch.randn(n, num_seen, p, generator=gen, dtype=torch.float64))
    X_held = add_bias(torch.randn(n, num_held, p, generator=gen, dtype=torch.float64))
    Y_seen = torch.randint(0, C, (n, num_seen), generator=gen)
    Y_held = torch.randint(0, C, (n, num_held), generator=gen)
    W0 = init_std * torch.randn(n, (p + 1) * C, generator=gen, dtype=torch.float64)
    return Shards(X_seen, Y_seen, X_held, Y_held, [X_held.reshape(-1, p + 1)], [Y_held.reshape(-1)],
                  torch.zeros(n, dtype=torch.int64), W0)


@pytest.fixture
def make_shards():
    return _make_shards


def _bound_comm(shift: sp.csr_matrix) -> LocalCommunicator:
    comm = LocalCommunicator()
    comm.bind(sp.csr_matrix(shift), np.arange(shift.shape[0]))
    return comm


@pytest.fixture
def bound_comm():
    """Factory: a LocalCommunicator bound to ``shift`` hosting every node."""
    return _bound_comm


@pytest.fixture
def ring_shift():
    """Factory: Metropolis (doubly stochastic) shift operator of an n-ring."""
    return lambda n, normalization="metropolis": shift_operator(ring(n), normalization)


@pytest.fixture
def star_shift():
    return lambda n, normalization="metropolis": shift_operator(star(n), normalization)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``SURF_DIST_REQUIRE_CLUSTER=1`` (``.ci/run``) a skipped ``cluster`` test fails: CI
    installs what they need, so a skip there means the cluster was never launched."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and item.get_closest_marker("cluster") and os.environ.get("SURF_DIST_REQUIRE_CLUSTER") == "1":
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.longrepr = f"cluster test skipped where it must run (SURF_DIST_REQUIRE_CLUSTER=1): {reason}"
