"""The four baselines ``evaluate`` and ``demo --train`` run (DGD / DSGD, gradient tracking, DFedAvgM),
from the bench's registry ``surf_dist.methods.registry``, against hand recursions."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from surf_dist.comm.local import LocalCommunicator
from surf_dist.core.engine import Worker
from surf_dist.methods.registry import METHODS
from surf_dist.problem.softmax import grad_per_agent, loss_per_agent

N = 5


@pytest.fixture
def problem(make_shards, ring_shift, bound_comm):
    shards = make_shards(num_agents=N, num_seen=6, num_features=3, num_classes=3, seed=11)
    S = ring_shift(N)
    return shards, torch.as_tensor(S.toarray()), bound_comm(S)


def batches_of(n=N, m=6, b=3, seed=0):
    """A deterministic mini-batch schedule: iteration -> positions (n, b)."""
    def batches(it):
        gen = torch.Generator().manual_seed(seed * 1000 + it)
        return torch.stack([torch.randperm(m, generator=gen)[:b] for _ in range(n)])
    return batches


def at_points(name, W0, shards, comm, hyper, points, batches=None):
    """(r, W_r) of the registry's method ``name`` at the rounds ``points`` (as ``evaluate`` reads it)."""
    for r, (W, _) in enumerate(METHODS[name].run(W0, shards, comm, hyper, points[-1], batches)):
        if r in points:
            yield r, W


def run_dgd(W0, shards, comm, alpha, points, batches=None):
    return at_points("dgd" if batches is None else "dsgd", W0, shards, comm, {"step": alpha}, points, batches)


def run_gradient_tracking(W0, shards, comm, alpha, points):
    return at_points("gradient_tracking", W0, shards, comm, {"step": alpha}, points)


def run_dfedavgm(W0, shards, comm, alpha, points, batches, local_steps, momentum):
    hyper = {"step": alpha, "momentum": momentum, "local_steps": local_steps}
    return at_points("dfedavgm", W0, shards, comm, hyper, points, batches)


def alphas(values):
    return torch.tensor(values, dtype=torch.float64)[:, None]


def test_dgd_equals_manual_recursion(problem):
    shards, S, comm = problem
    alpha = alphas([0.1, 0.2, 0.3, 0.4, 0.5])            # a per-node step column
    out = dict(run_dgd(shards.init_weights, shards, comm, alpha, (0, 1, 2, 3)))
    W = shards.init_weights
    assert torch.equal(out[0], W)
    for r in (1, 2, 3):
        W = S @ W - alpha * grad_per_agent(W, shards.X_seen, shards.Y_seen)
        assert torch.allclose(out[r], W, atol=1e-13)


def test_dsgd_uses_the_batch_of_each_iteration(problem):
    shards, S, comm = problem
    alpha = alphas([0.3] * N)
    batches = batches_of()
    out = dict(run_dgd(shards.init_weights, shards, comm, alpha, (0, 3), batches))
    W = shards.init_weights
    for r in range(3):
        X, Y = shards.minibatch(batches(r))
        W = S @ W - alpha * grad_per_agent(W, X, Y)
    assert torch.allclose(out[3], W, atol=1e-13)
    full = dict(run_dgd(shards.init_weights, shards, comm, alpha, (0, 3)))
    assert not torch.allclose(full[3], W)                 # mini-batches are not the full data


def test_yields_exactly_at_eval_points_and_rounds_match(problem):
    shards, S, comm = problem
    alpha = alphas([0.1] * N)
    points = (0, 2, 3, 7)
    for run, extra in [
        (run_dgd, {}),
        (run_dgd, {"batches": batches_of()}),
        (run_gradient_tracking, {}),
        (run_dfedavgm, {"batches": batches_of(), "local_steps": 2, "momentum": 0.5}),
    ]:
        comm.bind(sp.csr_matrix(S.numpy()), np.arange(N))          # fresh ledger
        rounds = [r for r, _ in run(shards.init_weights, shards, comm, alpha, points, **extra)]
        assert rounds == list(points), run.__name__
        assert comm.ledger.rounds == points[-1], run.__name__     # one exchange per iteration


def test_eval_point_values_equal_a_longer_run(problem):
    """Yielding does not perturb the iteration: sparse and dense eval points agree."""
    shards, _, comm = problem
    alpha = alphas([0.2] * N)
    dense = dict(run_gradient_tracking(shards.init_weights, shards, comm, alpha, tuple(range(9))))
    sparse = dict(run_gradient_tracking(shards.init_weights, shards, comm, alpha, (0, 4, 8)))
    for r in (0, 4, 8):
        assert torch.allclose(dense[r], sparse[r], atol=1e-14)


def test_gradient_tracking_invariant_average_of_y_is_average_gradient(problem):
    """With doubly stochastic S: mean_i y_i(r) = mean_i grad f_i(x_i(r)) at every r.

    mean x(r+1) = mean (S x(r)) - alpha mean y(r) = mean x(r) - alpha mean y(r), so the tracked
    average is read off consecutive iterates."""
    shards, S, comm = problem
    assert torch.allclose(S.sum(0), torch.ones(N, dtype=torch.float64))      # doubly stochastic
    alpha = 0.3
    out = dict(run_gradient_tracking(shards.init_weights, shards, comm, alphas([alpha] * N), tuple(range(12))))
    for r in range(11):
        mean_y = (out[r].mean(0) - out[r + 1].mean(0)) / alpha
        mean_grad = grad_per_agent(out[r], shards.X_seen, shards.Y_seen).mean(0)
        assert torch.allclose(mean_y, mean_grad, atol=1e-12), r


def test_gradient_tracking_first_steps_by_hand(problem):
    shards, S, comm = problem
    alpha = alphas([0.1, 0.2, 0.1, 0.2, 0.1])
    out = dict(run_gradient_tracking(shards.init_weights, shards, comm, alpha, (0, 1, 2, 3)))
    grad = lambda W: grad_per_agent(W, shards.X_seen, shards.Y_seen)
    x = shards.init_weights
    y = grad(x)
    for r in (1, 2, 3):
        x_new = S @ x - alpha * y
        y = S @ y + grad(x_new) - grad(x)
        x = x_new
        assert torch.allclose(out[r], x, atol=1e-13)
    # one message per round carries x and y together: 2 d floats per neighbour
    d = x.shape[1]
    assert comm.ledger.bytes.tolist() == [3 * 2 * 2 * d * 8] * N


def test_gradient_tracking_reaches_exact_stationarity_with_constant_step(make_shards, ring_shift, bound_comm):
    """Unlike DGD, GT with a constant step converges to a consensual stationary point of
    sum_i f_i (random labels on 100 samples in 3-d: not separable, so the optimum is finite)."""
    shards = make_shards(num_agents=N, num_seen=20, num_features=3, num_classes=3, seed=11)
    comm = bound_comm(ring_shift(N))
    alpha = alphas([0.5] * N)
    last = dict(run_gradient_tracking(shards.init_weights, shards, comm, alpha, (0, 300)))[300]
    spread = (last - last.mean(0)).abs().max()
    total_grad = grad_per_agent(last, shards.X_seen, shards.Y_seen).mean(0).abs().max()
    assert spread < 1e-9 and total_grad < 1e-9
    dgd = dict(run_dgd(shards.init_weights, shards, comm, alpha, (0, 300)))[300]
    assert (dgd - dgd.mean(0)).abs().max() > 1e-3       # DGD with a constant step does not


def test_dfedavgm_one_local_step_no_momentum_is_dsgd_like(problem):
    shards, S, comm = problem
    alpha = alphas([0.25] * N)
    batches = batches_of(seed=3)
    out = dict(run_dfedavgm(shards.init_weights, shards, comm, alpha, (0, 1, 2, 3), batches,
                            local_steps=1, momentum=0.0))
    W = shards.init_weights
    for r in (1, 2, 3):
        X, Y = shards.minibatch(batches(r - 1))
        W = S @ (W - alpha * grad_per_agent(W, X, Y))
        assert torch.allclose(out[r], W, atol=1e-13)


def test_dfedavgm_local_momentum_steps_by_hand(problem):
    shards, S, comm = problem
    alpha = alphas([0.1] * N)
    batches = batches_of(seed=4)
    E, beta = 3, 0.8
    out = dict(run_dfedavgm(shards.init_weights, shards, comm, alpha, (0, 2), batches,
                            local_steps=E, momentum=beta))
    W = shards.init_weights
    for r in range(2):
        v = torch.zeros_like(W)                           # momentum reset every round
        for e in range(E):
            X, Y = shards.minibatch(batches(r * E + e))
            v = beta * v + grad_per_agent(W, X, Y)
            W = W - alpha * v
        W = S @ W
    assert torch.allclose(out[2], W, atol=1e-13)
    assert comm.ledger.rounds == 2                      # local steps cost no communication


def test_dgd_on_digits_task_decreases_loss_and_reaches_consensus(digits_family):
    tasks = digits_family.batch("test", [0])
    worker = Worker(digits_family, LocalCommunicator(), np.arange(digits_family.config.num_agents))
    shards = worker.load(tasks)
    n = shards.init_weights.shape[0]
    out = dict(run_dgd(shards.init_weights, shards, worker.comm, torch.full((n, 1), 0.1), (0, 100)))
    loss0 = loss_per_agent(out[0], shards.X_seen, shards.Y_seen).mean()
    loss100 = loss_per_agent(out[100], shards.X_seen, shards.Y_seen).mean()
    spread = lambda W: (W - W.mean(0)).norm()
    assert loss100 < 0.5 * loss0
    assert spread(out[100]) < 0.2 * spread(out[0])
    ledger = worker.comm.ledger_per_agent()
    assert ledger["rounds"] == 100 and ledger["messages_per_agent"] == 200     # ring: 2 neighbours
