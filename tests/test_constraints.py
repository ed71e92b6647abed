"""surf_dist.methods.constraints: descent values, slacks, the Lagrangian share and the dual step, by hand;
the Lagrangian's gradient in the model parameters against central finite differences."""
import pytest
import torch

from surf_dist.io.config import ModelConfig
from surf_dist.methods.constraints import descent_values, dual_step, lagrangian_share, slack_terms
from surf_dist.methods.learned import UnrolledDGD
from surf_dist.problem.softmax import grad_per_agent, loss_per_agent


def test_descent_values_loss_and_grad_norm(make_shards):
    shards = make_shards(num_agents=4)
    Ws = [shards.init_weights, 0.5 * shards.init_weights, torch.zeros_like(shards.init_weights)]
    X, Y = shards.X_seen, shards.Y_seen
    g = descent_values(Ws, X, Y, "loss")
    assert g.shape == (3, 4)
    for l, W in enumerate(Ws):
        assert torch.equal(g[l], loss_per_agent(W, X, Y))
    assert torch.allclose(g[2], torch.log(torch.tensor(3.0, dtype=torch.float64)).expand(4))  # W = 0
    gn = descent_values(Ws, X, Y, "grad_norm")
    for l, W in enumerate(Ws):
        G = grad_per_agent(W, X, Y)
        assert torch.allclose(gn[l], torch.sqrt((G * G).sum(1)))


def test_descent_values_rejects_unknown_function(make_shards):
    shards = make_shards()
    with pytest.raises(ValueError, match="descent"):
        descent_values([shards.init_weights], shards.X_seen, shards.Y_seen, "hessian")


def test_slack_terms_by_hand():
    g = torch.tensor([[4.0, 2.0], [3.0, 2.0], [3.0, 1.0]], dtype=torch.float64)   # (L + 1 = 3, N = 2)
    eps = 0.25
    slack = slack_terms(g, eps)
    # g_l - 0.75 g_{l-1}
    expect = torch.tensor([[3.0 - 3.0, 2.0 - 1.5], [3.0 - 2.25, 1.0 - 1.5]], dtype=torch.float64)
    assert torch.allclose(slack, expect)
    assert torch.allclose(slack_terms(g, 0.0), g[1:] - g[:-1])


def test_lagrangian_share_by_hand_and_shares_add_up():
    outer = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    slack = torch.tensor([[0.5, -0.5, 1.0, 0.0], [2.0, 0.0, 0.0, -1.0]], dtype=torch.float64)
    duals = torch.tensor([0.1, 3.0], dtype=torch.float64)
    full = lagrangian_share(outer, slack, duals, num_nodes=4)
    # mean outer = 3; sum_l lambda_l mean_n slack = 0.1 * 0.25 + 3 * 0.25
    assert full.item() == pytest.approx(3.0 + 0.1 * 0.25 + 3.0 * 0.25)
    halves = (lagrangian_share(outer[:2], slack[:, :2], duals, num_nodes=4)
              + lagrangian_share(outer[2:], slack[:, 2:], duals, num_nodes=4))
    assert halves.item() == pytest.approx(full.item(), abs=1e-14)
    # zero duals: plain unrolling
    assert lagrangian_share(outer, slack, torch.zeros(2, dtype=torch.float64), 4).item() == pytest.approx(3.0)


def test_dual_step_projected_ascent_by_hand():
    duals = torch.tensor([0.5, 0.0, 1.0, 0.05], dtype=torch.float64)
    slacks = torch.tensor([-1.0, 2.0, -0.2, -1.0], dtype=torch.float64)
    new = dual_step(duals, slacks, dual_lr=0.1)
    assert torch.allclose(new, torch.tensor([0.4, 0.2, 0.98, 0.0], dtype=torch.float64))
    assert (new >= 0).all()
    assert torch.equal(dual_step(duals, slacks, 0.0), duals)       # dual_lr 0 freezes
    assert torch.equal(duals, torch.tensor([0.5, 0.0, 1.0, 0.05], dtype=torch.float64))  # not in place


def _flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _set_flat(model, flat):
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[offset:offset + p.numel()].view_as(p))
            offset += p.numel()


@pytest.mark.parametrize("descent", ["loss", "grad_norm"])
def test_lagrangian_gradient_matches_central_finite_differences(make_shards, ring_shift, bound_comm, descent):
    n, L = 4, 2
    shards = make_shards(num_agents=n, num_seen=5, num_held=3, num_features=2, num_classes=3, seed=7)
    comm = bound_comm(ring_shift(n))
    cfg = ModelConfig(num_layers=L, num_hops=2, local_net="compact", batch_size=3, hidden=3, init_step=0.3)
    model = UnrolledDGD(cfg, 3, 3, seed=1).double()
    with torch.no_grad():
        model.taps.add_(0.1 * torch.randn(model.taps.shape, generator=torch.Generator().manual_seed(2),
                                          dtype=torch.float64))
    gen = torch.Generator().manual_seed(5)
    pos = torch.stack([torch.stack([torch.randperm(5, generator=gen)[:3] for _ in range(n)]) for _ in range(L)])
    duals = torch.tensor([0.3, 0.7], dtype=torch.float64)

    def lagrangian():
        Ws = model(shards.init_weights, shards, pos, comm)
        g = descent_values(Ws, shards.X_seen, shards.Y_seen, descent)
        outer = loss_per_agent(Ws[-1], shards.X_held, shards.Y_held)
        return lagrangian_share(outer, slack_terms(g, 0.05), duals, n)

    model.zero_grad()
    lagrangian().backward()
    analytic = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
    theta = _flat_params(model)
    h = 1e-6
    numeric = torch.empty_like(theta)
    with torch.no_grad():
        for k in range(theta.numel()):
            e = torch.zeros_like(theta)
            e[k] = h
            _set_flat(model, theta + e)
            up = lagrangian().item()
            _set_flat(model, theta - e)
            down = lagrangian().item()
            numeric[k] = (up - down) / (2 * h)
    _set_flat(model, theta)
    assert analytic.abs().max() > 1e-3                     # a real, non-trivial gradient
    assert torch.allclose(analytic, numeric, atol=1e-7, rtol=1e-5), (analytic - numeric).abs().max()


def test_primal_step_gradient_and_slacks_match_the_hand_built_lagrangian(digits_family, quick_cfg):
    """train.primal_step differentiates exactly E f(W_L) + sum_l lambda_l slack_l on its batch."""
    import copy

    import numpy as np

    from surf_dist.comm.local import LocalCommunicator
    from surf_dist.io.config import with_overrides
    from surf_dist.core.engine import Worker
    from surf_dist.core.train import build_state, primal_step, unroll

    cfg = with_overrides(quick_cfg, {"train": {"dtype": "float64", "eps": 0.1, "descent": "grad_norm"}})
    worker = Worker(digits_family, LocalCommunicator(), np.arange(cfg.task.num_agents), torch.float64)
    state = build_state(cfg, worker)
    state.duals = torch.tensor([0.5, 0.0, 2.0, 1.0], dtype=torch.float64)
    reference = copy.deepcopy(state.model)
    tasks = digits_family.batch("train", [0, 1])

    row = primal_step(state, worker, tasks, cfg)

    shards, Ws = unroll(reference, worker, tasks)
    g = descent_values(Ws, shards.X_seen, shards.Y_seen, "grad_norm")
    outer = loss_per_agent(Ws[-1], shards.X_held, shards.Y_held)
    slack = slack_terms(g, 0.1)
    lagrangian_share(outer, slack, state.duals, outer.numel()).backward()
    assert row["outer_loss"] == pytest.approx(outer.mean().item(), rel=1e-12)
    assert torch.allclose(row["slacks"], slack.mean(1).detach(), atol=1e-12)
    for (name, p), q in zip(state.model.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-12, rtol=1e-9), name
        assert not torch.equal(p.detach(), q.detach()), name            # Adam moved it


def test_the_anytime_objective_is_the_mean_of_every_layers_loss(digits_family, quick_cfg):
    """``anytime``: primal_step differentiates the mean over layers 1..L of the objective, by hand."""
    import copy

    import numpy as np

    from surf_dist.comm.local import LocalCommunicator
    from surf_dist.io.config import with_overrides
    from surf_dist.core.engine import Worker
    from surf_dist.core.train import build_state, primal_step, unroll

    cfg = with_overrides(quick_cfg, {"train": {"dtype": "float64", "anytime": True, "constrained": False}})
    worker = Worker(digits_family, LocalCommunicator(), np.arange(cfg.task.num_agents), torch.float64)
    state = build_state(cfg, worker)
    reference = copy.deepcopy(state.model)
    tasks = digits_family.batch("train", [0, 1])
    row = primal_step(state, worker, tasks, cfg)
    shards, Ws = unroll(reference, worker, tasks)
    per_layer = torch.stack([loss_per_agent(W, shards.X_held, shards.Y_held).mean() for W in Ws[1:]])
    per_layer.mean().backward()
    assert row["outer_loss"] == pytest.approx(per_layer.mean().item(), rel=1e-12)
    assert row["outer_loss"] != pytest.approx(per_layer[-1].item(), rel=1e-3)     # not the last layer's alone
    for (name, p), q in zip(state.model.named_parameters(), reference.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-12, rtol=1e-9), name
