"""surf_dist.problem.softmax: the softmax classifier's loss, closed-form gradient, accuracy, reference."""
import pytest
import torch

from surf_dist.problem.softmax import (add_bias, correct_per_agent, grad_per_agent, logits, loss_per_agent,
                               num_params, pooled_accuracy, solve_centralized)


def _random_problem(n=5, m=7, p=4, C=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    X = add_bias(torch.randn(n, m, p, generator=gen, dtype=torch.float64))
    Y = torch.randint(0, C, (n, m), generator=gen)
    W = torch.randn(n, (p + 1) * C, generator=gen, dtype=torch.float64)
    return W, X, Y


def test_num_params_and_bias_column():
    assert num_params(64, 10) == 650
    X = torch.randn(2, 3, 4, dtype=torch.float64)
    Xb = add_bias(X)
    assert Xb.shape == (2, 3, 5)
    assert torch.equal(Xb[..., :4], X)
    assert torch.equal(Xb[..., 4], torch.ones(2, 3, dtype=torch.float64))


def test_logits_read_weights_row_major():
    W, X, _ = _random_problem(n=3, p=2, C=4)
    Z = logits(W, X)
    for i in range(3):
        assert torch.allclose(Z[i], X[i] @ W[i].reshape(3, 4))


def test_loss_per_agent_matches_hand_cross_entropy():
    W, X, Y = _random_problem()
    loss = loss_per_agent(W, X, Y)
    for i in range(W.shape[0]):
        Z = X[i] @ W[i].reshape(X.shape[-1], -1)
        hand = (torch.logsumexp(Z, dim=1) - Z[torch.arange(len(Y[i])), Y[i]]).mean()
        assert torch.allclose(loss[i], hand, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grad_per_agent_equals_autograd_per_agent(seed):
    W, X, Y = _random_problem(seed=seed)
    closed = grad_per_agent(W, X, Y)
    for i in range(W.shape[0]):
        w = W[i].clone().requires_grad_(True)
        (auto,) = torch.autograd.grad(loss_per_agent(w[None], X[i:i + 1], Y[i:i + 1])[0], w)
        assert torch.allclose(closed[i], auto, atol=1e-12, rtol=1e-10)


def test_grad_per_agent_is_independent_per_agent():
    W, X, Y = _random_problem()
    base = grad_per_agent(W, X, Y)
    W2, X2 = W.clone(), X.clone()
    W2[2] += 1.0
    X2[2] *= 3.0
    moved = grad_per_agent(W2, X2, Y)
    keep = [0, 1, 3, 4]
    assert torch.equal(moved[keep], base[keep])
    assert not torch.allclose(moved[2], base[2])


def test_grad_per_agent_is_differentiable_in_w():
    """Meta-gradients flow through the closed form: its Jacobian-vector product is the Hessian's."""
    W, X, Y = _random_problem(n=2)
    v = torch.randn_like(W)
    W = W.requires_grad_(True)
    (hv,) = torch.autograd.grad((grad_per_agent(W, X, Y) * v).sum(), W)
    h = 1e-6
    fd = (grad_per_agent(W.detach() + h * v, X, Y) - grad_per_agent(W.detach() - h * v, X, Y)) / (2 * h)
    assert torch.allclose(hv, fd, atol=1e-7)


def test_correct_per_agent_hand_case():
    # p = 1 feature + bias, C = 2 classes; agent 0 predicts class 1 iff x > 0, agent 1 always class 0.
    X = add_bias(torch.tensor([[[-1.0], [2.0], [3.0], [-4.0]]] * 2, dtype=torch.float64))
    Y = torch.tensor([[0, 1, 0, 0], [0, 1, 0, 0]])
    W = torch.tensor([[-1.0, 1.0, 0.0, 0.0],       # logits (-x, x)
                      [0.0, 0.0, 1.0, 0.0]], dtype=torch.float64)   # logits (1, 0)
    acc = correct_per_agent(W, X, Y)
    assert acc.tolist() == [0.75, 0.75]
    Y2 = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]])
    assert correct_per_agent(W, X, Y2).tolist() == [1.0, 0.0]


def test_pooled_accuracy_hand_case():
    X = add_bias(torch.tensor([[-1.0], [2.0], [3.0], [-4.0], [0.5]], dtype=torch.float64))
    Y = torch.tensor([0, 1, 1, 0, 0])
    W = torch.tensor([[-1.0, 1.0, 0.0, 0.0],       # sign classifier: wrong only on x = 0.5
                      [0.0, 0.0, 1.0, 0.0],        # always class 0: right on 3 of 5
                      [1.0, -1.0, 0.0, 0.0]], dtype=torch.float64)  # inverted sign: right on 0.5 only
    assert pooled_accuracy(W, X, Y).tolist() == pytest.approx([0.8, 0.6, 0.2])


def test_pooled_accuracy_agrees_with_correct_per_agent_on_shared_data():
    W, X, Y = _random_problem(n=4)
    shared_X, shared_Y = X[0], Y[0]
    pooled = pooled_accuracy(W, shared_X, shared_Y)
    per = correct_per_agent(W, shared_X.expand(4, -1, -1), shared_Y.expand(4, -1))
    assert torch.equal(pooled, per)


def test_solve_centralized_reaches_stationary_point():
    gen = torch.Generator().manual_seed(3)
    C, p, s = 3, 4, 60
    X = add_bias(torch.randn(s, p, generator=gen, dtype=torch.float64))
    Y = torch.randint(0, C, (s,), generator=gen)
    l2 = 1e-2
    w = solve_centralized(X, Y, C, l2=l2)
    assert w.dtype == torch.float64 and w.shape == ((p + 1) * C,)
    w = w.clone().requires_grad_(True)
    objective = loss_per_agent(w[None], X[None], Y[None])[0] + 0.5 * l2 * (w * w).sum()
    (grad,) = torch.autograd.grad(objective, w)
    assert grad.abs().max() < 1e-6
    # and it is a real improvement over the starting point w = 0 (loss log C)
    assert objective.item() < torch.log(torch.tensor(float(C))).item() - 0.05


def test_solve_centralized_fits_separable_data():
    X = add_bias(torch.tensor([[-2.0], [-1.0], [1.0], [2.0]], dtype=torch.float64))
    Y = torch.tensor([0, 0, 1, 1])
    w = solve_centralized(X, Y, 2)
    assert pooled_accuracy(w[None], X, Y).item() == 1.0


def test_outer_loss_local_and_pooled_by_hand():
    """``local``: each agent's cross-entropy on its own held-out samples; ``pooled``: on the
    pooled held-out samples of its own task (two tasks, pools of different sizes), with
    gradients equal to the hand formula's."""
    from surf_dist.problem.tasks import Shards
    from surf_dist.core.train import outer_loss
    gen = torch.Generator().manual_seed(1)
    n, p, C = 4, 3, 3
    X_held = add_bias(torch.randn(n, 2, p, generator=gen, dtype=torch.float64))
    Y_held = torch.randint(0, C, (n, 2), generator=gen)
    pools_x = [add_bias(torch.randn(s, p, generator=gen, dtype=torch.float64)) for s in (5, 7)]
    pools_y = [torch.randint(0, C, (s,), generator=gen) for s in (5, 7)]
    task_of_node = torch.tensor([0, 0, 1, 1])
    shards = Shards(X_held, Y_held, X_held, Y_held, pools_x, pools_y, task_of_node, torch.zeros(n, (p + 1) * C))
    W = torch.randn(n, (p + 1) * C, generator=gen, dtype=torch.float64, requires_grad=True)

    def hand(i, X, Y):
        return torch.nn.functional.cross_entropy(X @ W[i].reshape(p + 1, C), Y)

    local = torch.stack([hand(i, X_held[i], Y_held[i]) for i in range(n)])
    pooled = torch.stack([hand(i, pools_x[int(task_of_node[i])], pools_y[int(task_of_node[i])]) for i in range(n)])
    assert torch.allclose(outer_loss(W, shards, "local"), local)
    ours = outer_loss(W, shards, "pooled")
    assert torch.allclose(ours, pooled) and not torch.allclose(ours, local)
    weights = torch.arange(1.0, n + 1, dtype=torch.float64)
    grad_ours, = torch.autograd.grad((weights * ours).sum(), W)
    grad_hand, = torch.autograd.grad((weights * pooled).sum(), W)
    assert torch.allclose(grad_ours, grad_hand)
