"""surf_dist.methods.learned: graph filter, local networks and the unrolled network, against analytic oracles.

Oracles: a silenced local network reduces a layer to the graph filter H(W; S) = sum_k h_k S^k W
(dense S by hand); taps [0, 1] with Psi = alpha * grad is one DGD step on the same mini-batch;
asynchronous agents keep their weights and send zeros (or their last message) by hand on a ring.
"""
import math

import pytest
import torch

from surf_dist.io.config import ModelConfig
from surf_dist.methods.learned import CompactLocalNet, PaperLocalNet, UnrolledDGD, graph_filter, rms
from surf_dist.problem.softmax import grad_per_agent, loss_per_agent

N_AGENTS, N_SEEN, BATCH = 6, 6, 3
P, C = 3, 3                 # raw features, classes: d = (P + 1) * C = 12
D = (P + 1) * C


def make_model(num_layers=1, num_hops=1, local_net="compact", hidden=4, seed=0):
    cfg = ModelConfig(num_layers=num_layers, num_hops=num_hops, local_net=local_net,
                      batch_size=BATCH, hidden=hidden, init_step=0.5)
    return UnrolledDGD(cfg, P + 1, C, seed=seed).double()


def silence(model):
    """Psi = 0: zero gradient step (exp(-1e9) = 0) and zero learned part."""
    model.local_net.log_step.data.fill_(-1e9)
    model.local_net.out_scale.data.fill_(0.0)


def dgd_local_net(model, alpha):
    """Psi = alpha * grad f_i(w_i; B) exactly."""
    model.local_net.log_step.data.fill_(math.log(alpha))
    model.local_net.out_scale.data.fill_(0.0)


def positions(num_layers, n=N_AGENTS, m=N_SEEN, b=BATCH, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.stack([torch.randperm(m, generator=gen)[:b] for _ in range(n)])
                        for _ in range(num_layers)])


@pytest.fixture
def setup(make_shards, ring_shift, bound_comm):
    shards = make_shards(num_agents=N_AGENTS, num_seen=N_SEEN, num_features=P, num_classes=C)
    S = ring_shift(N_AGENTS)
    return shards, torch.as_tensor(S.toarray()), bound_comm(S)


def set_taps(model, taps):
    model.taps.data.copy_(torch.as_tensor(taps, dtype=torch.float64))


# ------------------------------------------------------------------------- graph filter


def test_graph_filter_pure_function():
    W = torch.randn(4, 5, dtype=torch.float64)
    hops = [W, 2 * W, 3 * W]
    out = graph_filter(torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64), hops)
    assert torch.allclose(out, (1 - 2 + 1.5) * W)


def test_one_layer_taps_01_is_shift(setup):
    shards, S, comm = setup
    model = make_model()
    silence(model)
    set_taps(model, [[0.0, 1.0]])
    Ws = model(shards.init_weights, shards, positions(1), comm)
    assert len(Ws) == 2 and Ws[0] is shards.init_weights
    assert torch.allclose(Ws[1], S @ shards.init_weights, atol=1e-13)


def test_one_layer_taps_10_is_identity(setup):
    shards, _, comm = setup
    model = make_model()
    silence(model)
    set_taps(model, [[1.0, 0.0]])
    Ws = model(shards.init_weights, shards, positions(1), comm)
    assert torch.allclose(Ws[1], shards.init_weights, atol=1e-14)


def test_two_hop_filter_equals_dense_polynomial(setup):
    shards, S, comm = setup
    model = make_model(num_hops=2)
    silence(model)
    a, b, c = 0.3, -0.7, 1.9
    set_taps(model, [[a, b, c]])
    W = shards.init_weights
    Ws = model(W, shards, positions(1), comm)
    assert torch.allclose(Ws[1], a * W + b * S @ W + c * S @ S @ W, atol=1e-12)
    assert comm.ledger.rounds == 2            # K = 2 hops: two neighbour exchanges per layer


def test_layers_use_their_own_taps(setup):
    shards, S, comm = setup
    model = make_model(num_layers=3)
    silence(model)
    taps = [[0.5, 0.5], [1.0, 0.0], [-0.2, 2.0]]
    set_taps(model, taps)
    W = shards.init_weights
    Ws = model(W, shards, positions(3), comm)
    expect = W
    for l, (h0, h1) in enumerate(taps):
        expect = h0 * expect + h1 * S @ expect
        assert torch.allclose(Ws[l + 1], expect, atol=1e-12)


def test_taps_01_with_gradient_step_is_dgd_on_same_minibatch(setup):
    shards, S, comm = setup
    alpha = 0.37
    model = make_model(num_layers=2)
    dgd_local_net(model, alpha)
    set_taps(model, [[0.0, 1.0], [0.0, 1.0]])
    pos = positions(2)
    Ws = model(shards.init_weights, shards, pos, comm)
    W = shards.init_weights
    for l in range(2):
        X, Y = shards.minibatch(pos[l])
        # the mini-batch really is agent i's own rows of the seen data
        assert torch.equal(X[1], shards.X_seen[1, pos[l, 1]])
        W = S @ W - alpha * grad_per_agent(W, X, Y)
        assert torch.allclose(Ws[l + 1], W, atol=1e-12)


def test_a_zero_start_ignores_the_tasks_w0(setup):
    """``start='zero'``: the first iterate is 0 whatever W_0; from 0 the first layer is one DGD step."""
    shards, S, comm = setup
    alpha = 0.37
    model = make_model(num_layers=2)
    model.config = ModelConfig(**{**model.config.__dict__, "start": "zero"})
    dgd_local_net(model, alpha)
    set_taps(model, [[0.0, 1.0], [0.0, 1.0]])
    pos = positions(2)
    Ws = model(shards.init_weights, shards, pos, comm)
    other = model(torch.randn_like(shards.init_weights), shards, pos, comm)
    zero = torch.zeros_like(shards.init_weights)
    X, Y = shards.minibatch(pos[0])
    assert torch.equal(Ws[0], zero) and torch.equal(other[-1], Ws[-1])
    assert torch.allclose(Ws[1], S @ zero - alpha * grad_per_agent(zero, X, Y), atol=1e-12)
    assert Ws[1].abs().max() > 1e-3


def test_layer_momentum_by_hand(setup):
    """With Psi silenced and taps [0, 1]: W_1 = S W_0, W_(l+1) = S W_l + beta_l (W_l - W_(l-1))."""
    shards, S, comm = setup
    cfg = ModelConfig(num_layers=3, num_hops=1, local_net="compact", batch_size=BATCH, hidden=4, momentum=True)
    model = UnrolledDGD(cfg, P + 1, C).double()
    silence(model)
    set_taps(model, [[0.0, 1.0]] * 3)
    model.beta.data.copy_(torch.tensor([0.9, 0.3, -0.2], dtype=torch.float64))
    Ws = model(shards.init_weights, shards, positions(3), comm)
    expected = [shards.init_weights, S @ shards.init_weights]
    for beta in (0.3, -0.2):
        expected.append(S @ expected[-1] + beta * (expected[-1] - expected[-2]))
    for got, want in zip(Ws, expected):
        assert torch.allclose(got, want, atol=1e-12)


def test_gradient_tracker_by_hand_and_sent_with_w_on_the_first_hop(setup):
    """y_0 = g_0, y_l = S y_(l-1) + g_l - g_(l-1) (g_l: the gradient at W_l on B_l) reaches the
    local network at every layer; it rides on the first hop's message (2d floats), not the second."""
    shards, S, comm = setup
    cfg = ModelConfig(num_layers=3, num_hops=2, local_net="compact", batch_size=BATCH, hidden=4, tracking=True)
    model = UnrolledDGD(cfg, P + 1, C).double()
    seen = []
    net_forward = model.local_net.forward
    model.local_net.forward = lambda *args: seen.append(args[6]) or net_forward(*args)
    pos = positions(3)
    Ws = model(shards.init_weights, shards, pos, comm)
    tracker, grad_prev = None, None
    for l in range(3):
        X, Y = shards.minibatch(pos[l])
        grad = grad_per_agent(Ws[l], X, Y)
        tracker = grad if tracker is None else S @ tracker + grad - grad_prev
        grad_prev = grad
        assert torch.allclose(seen[l], tracker, atol=1e-12)
    per_round = [b for _, b in comm.ledger.history]   # all agents, 2 ring neighbours, 8 B per number
    assert per_round == [N_AGENTS * 2 * 2 * D * 8, N_AGENTS * 2 * D * 8] * 3


def test_the_graph_is_an_input_not_a_parameter(make_shards, star_shift, ring_shift, bound_comm):
    """The same trained model runs on graphs of another size and family."""
    model = make_model()
    silence(model)
    set_taps(model, [[0.25, 0.75]])
    for n, S in [(4, star_shift(4)), (7, ring_shift(7))]:
        shards = make_shards(num_agents=n, num_seen=N_SEEN, num_features=P, num_classes=C, seed=n)
        Ws = model(shards.init_weights, shards, positions(1, n=n), bound_comm(S))
        dense = torch.as_tensor(S.toarray())
        assert torch.allclose(Ws[1], 0.25 * shards.init_weights + 0.75 * dense @ shards.init_weights)


# ------------------------------------------------------------------------- asynchronous agents


def test_async_zeros_one_hop_by_hand(setup):
    shards, S, comm = setup
    model = make_model()
    silence(model)
    set_taps(model, [[0.0, 1.0]])
    W = shards.init_weights
    active = torch.ones(1, N_AGENTS, dtype=torch.bool)
    active[0, 2] = False
    Ws = model(W, shards, positions(1), comm, active_ln=active)
    assert torch.equal(Ws[1][2], W[2])                              # keeps its weights
    third = 1.0 / 3.0                                              # Metropolis weights on a ring
    assert torch.allclose(Ws[1][1], third * (W[0] + W[1]), atol=1e-13)   # receives zeros from 2
    assert torch.allclose(Ws[1][3], third * (W[3] + W[4]), atol=1e-13)
    assert torch.allclose(Ws[1][5], third * (W[4] + W[5] + W[0]), atol=1e-13)  # untouched
    # agent 2 sent nothing; its neighbours still sent to it
    assert comm.ledger.messages.tolist() == [2, 2, 0, 2, 2, 2]


@pytest.mark.parametrize("stale", [False, True])
@pytest.mark.parametrize("masked_layer", [1, 2])
def test_async_later_layer_zeros_or_stale_with_gradient_step(setup, stale, masked_layer):
    """Agent 2 drops out at one layer: it keeps W_l, its neighbours get zeros or its last
    message (W_{l-1}: what it sent at the previous layer), and the others take a DGD step."""
    shards, S, comm = setup
    alpha = 0.2
    L = masked_layer + 1
    model = make_model(num_layers=L)
    dgd_local_net(model, alpha)
    set_taps(model, [[0.0, 1.0]] * L)
    pos = positions(L)
    active = torch.ones(L, N_AGENTS, dtype=torch.bool)
    active[masked_layer, 2] = False
    Ws = model(shards.init_weights, shards, pos, comm, active_ln=active, stale=stale)
    W = [shards.init_weights]
    for l in range(masked_layer):                                 # all active: plain DGD
        X, Y = shards.minibatch(pos[l])
        W.append(S @ W[-1] - alpha * grad_per_agent(W[-1], X, Y))
        assert torch.allclose(Ws[l + 1], W[-1], atol=1e-12)
    last = W[masked_layer]
    assert not torch.allclose(last[2], W[masked_layer - 1][2])   # the stale value differs
    sent = last.clone()
    sent[2] = W[masked_layer - 1][2] if stale else 0.0
    X, Y = shards.minibatch(pos[masked_layer])
    expect = S @ sent - alpha * grad_per_agent(last, X, Y)
    expect[2] = last[2]
    assert torch.allclose(Ws[-1], expect, atol=1e-12)


@pytest.mark.parametrize("stale", [False, True])
def test_async_two_hops_second_message_zeros_or_stale(setup, stale):
    shards, S, comm = setup
    model = make_model(num_layers=2, num_hops=2)
    silence(model)
    a, b, c = 0.2, 0.5, 0.3
    set_taps(model, [[0.0, 0.5, 0.5], [a, b, c]])
    active = torch.ones(2, N_AGENTS, dtype=torch.bool)
    active[1, 4] = False
    Ws = model(shards.init_weights, shards, positions(2), comm, active_ln=active, stale=stale)
    W0 = shards.init_weights
    W1 = 0.5 * S @ W0 + 0.5 * S @ S @ W0
    assert torch.allclose(Ws[1], W1, atol=1e-12)
    hop1 = W1.clone()
    hop1[4] = W0[4] if stale else 0.0                 # last hop-1 message of agent 4: W_0
    hop2 = S @ hop1
    hop2[4] = (S @ W0)[4] if stale else 0.0           # last hop-2 message of agent 4: (S W_0)_4
    W2 = a * W1 + b * S @ hop1 + c * S @ hop2
    W2[4] = W1[4]
    assert torch.allclose(Ws[2], W2, atol=1e-12)


def test_async_all_active_mask_equals_no_mask(setup):
    shards, _, comm = setup
    model = make_model(num_layers=2, num_hops=2)
    pos = positions(2)
    plain = model(shards.init_weights, shards, pos, comm)
    masked = model(shards.init_weights, shards, pos, comm,
                   active_ln=torch.ones(2, N_AGENTS, dtype=torch.bool), stale=True)
    for a, b in zip(plain, masked):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------- local networks


def local_net_of(kind, seed=0, local_steps=1):
    gen = torch.Generator().manual_seed(seed)
    if kind == "compact":
        net = CompactLocalNet(2, 5, 0.3, local_steps, gen)
        with torch.no_grad():
            net.b1.normal_(generator=gen)       # make every input matter
    else:
        net = PaperLocalNet(2, BATCH, P + 1, C, gen)
        with torch.no_grad():
            for layer in net.outer:
                layer.bias.normal_(generator=gen)
    return net.double()


def local_inputs(seed=0, n=N_AGENTS):
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(n, D, generator=gen, dtype=torch.float64)
    dis = torch.randn(n, D, generator=gen, dtype=torch.float64)
    X = torch.randn(n, BATCH, P + 1, generator=gen, dtype=torch.float64)
    Y = torch.randint(0, C, (n, BATCH), generator=gen)
    memory = torch.randn(n, D, generator=gen, dtype=torch.float64)
    return W, dis, X, Y, memory


@pytest.mark.parametrize("kind", ["compact", "paper"])
def test_local_net_never_mixes_agents(kind):
    net = local_net_of(kind)
    W, dis, X, Y, M = local_inputs()
    out = net(1, W, dis, X, Y, M)
    j = 3
    W2, dis2, X2, Y2, M2 = (t.clone() for t in (W, dis, X, Y, M))
    W2[j] *= 5.0
    dis2[j] -= 2.0
    X2[j] = -X2[j]
    Y2[j] = (Y2[j] + 1) % C
    M2[j] += 1.0
    out2 = net(1, W2, dis2, X2, Y2, M2)
    others = [i for i in range(N_AGENTS) if i != j]
    assert torch.equal(out2[others], out[others])
    assert not torch.allclose(out2[j], out[j])


@pytest.mark.parametrize("kind", ["compact", "paper"])
def test_local_net_batched_equals_one_agent_at_a_time(kind):
    """No statistic across the agent dimension: a block of N equals N blocks of one."""
    net = local_net_of(kind)
    inputs = local_inputs(seed=1)
    out = net(0, *inputs)
    for i in range(N_AGENTS):
        alone = net(0, *(t[i:i + 1] for t in inputs))
        assert torch.allclose(out[i:i + 1], alone, atol=1e-13)


@pytest.mark.parametrize("kind", ["compact", "paper"])
def test_local_net_layers_have_separate_parameters(kind):
    net = local_net_of(kind)
    inputs = local_inputs(seed=2)
    assert not torch.allclose(net(0, *inputs), net(1, *inputs))


def compact_substep(net, layer, e, V, dis, X, Y, M):
    G = grad_per_agent(V, X, Y)
    phi = torch.stack([G / rms(G), dis / rms(dis), V / rms(V), M / rms(M)], dim=-1)
    learned = torch.tanh(phi @ net.w1[layer] + net.b1[layer]) @ net.w2[layer]
    return V - (net.log_step[layer, e].exp() * G + rms(G) * net.out_scale[layer, e] * learned)


def test_compact_net_formula_by_hand():
    net = local_net_of("compact")
    W, dis, X, Y, M = local_inputs(seed=3)
    layer = 1
    expect = W - compact_substep(net, layer, 0, W, dis, X, Y, M)
    assert torch.allclose(net(layer, W, dis, X, Y, M), expect, atol=1e-13)
    G = grad_per_agent(W, X, Y)
    # rms is per agent, over that agent's own coordinates
    assert torch.allclose(rms(G)[:, 0], G.pow(2).mean(1).sqrt(), atol=1e-10)


def test_compact_net_local_steps_by_hand():
    """E = 2 local sub-steps: two learned steps on the same mini-batch, Psi = w - V_2."""
    net = local_net_of("compact", local_steps=2)
    with torch.no_grad():
        net.log_step[:, 1] -= 0.5          # the sub-steps differ
    W, dis, X, Y, M = local_inputs(seed=4)
    V1 = compact_substep(net, 0, 0, W, dis, X, Y, M)
    V2 = compact_substep(net, 0, 1, V1, dis, X, Y, M)
    assert torch.allclose(net(0, W, dis, X, Y, M), W - V2, atol=1e-13)
    assert not torch.allclose(W - V2, W - V1)


def test_zero_init_compact_net_is_plain_gradient_substeps():
    """zero_init: the untrained local network is E gradient steps, V <- V - a_e grad f_i(V)."""
    gen = torch.Generator().manual_seed(0)
    net = CompactLocalNet(2, 5, 0.3, 2, gen, zero_init=True).double()
    W, dis, X, Y, M = local_inputs(seed=5)
    V = W
    for e in range(2):
        V = V - 0.3 * grad_per_agent(V, X, Y)
    out = net(1, W, dis, X, Y, M)
    assert torch.allclose(out, W - V, atol=1e-12)
    out.pow(2).sum().backward()
    assert net.w2.grad[1].abs().sum() > 0      # the learned term can grow from zero


def test_paper_net_parameter_count_matches_docstring_formula():
    gen = torch.Generator().manual_seed(0)
    L, b, p, classes = 2, 4, 65, 10        # the digits: 64 features + bias, 10 classes
    d = p * classes
    net = PaperLocalNet(L, b, p, classes, gen)
    count = sum(t.numel() for t in net.parameters())
    leading = d * (b * (p + classes) + 2 * d)        # the docstring's "about d (b (p + C) + 2 d)"
    assert count == L * (leading + 4 * d)            # + biases (2 d) and LayerNorm (2 d)
    assert abs(count / (L * leading) - 1) < 0.01


def test_compact_net_parameter_count_is_independent_of_d():
    counts = []
    for p, classes in [(4, 3), (65, 10)]:
        cfg = ModelConfig(num_layers=3, num_hops=2, local_net="compact", batch_size=2, hidden=8)
        model = UnrolledDGD(cfg, p, classes)
        counts.append(sum(t.numel() for t in model.local_net.parameters()))
    F, H, L = 4, 8, 3
    assert counts == [L * (2 + F * H + 2 * H)] * 2   # local_steps = 1: one step and one scale
    assert counts[0] < 1000


def test_paper_net_is_tied_to_one_d(setup):
    """The paper network is tied to one d: other d is a shape error, not silent misuse."""
    shards, _, comm = setup
    cfg = ModelConfig(num_layers=1, num_hops=1, local_net="paper", batch_size=BATCH, hidden=4)
    model = UnrolledDGD(cfg, P + 2, C).double()        # built for another number of inputs
    with pytest.raises(RuntimeError):
        model(shards.init_weights, shards, positions(1), comm)


# ------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", ["compact", "paper"])
def test_meta_gradients_reach_taps_and_local_net(setup, kind):
    shards, _, comm = setup
    model = make_model(num_layers=2, num_hops=2, local_net=kind)
    Ws = model(shards.init_weights, shards, positions(2), comm)
    loss_per_agent(Ws[-1], shards.X_held, shards.Y_held).mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        if param.dim() == 0 or name.startswith("local_net.") and kind == "paper":
            assert param.grad.abs().sum() > 0, name
        else:
            # every layer's slice of the stacked parameters gets a gradient
            per_layer = param.grad.reshape(param.shape[0], -1).abs().sum(1)
            assert (per_layer > 0).all(), name


def test_model_is_deterministic_in_its_seed():
    a, b, c = make_model(num_layers=2, seed=1), make_model(num_layers=2, seed=1), make_model(num_layers=2, seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_default_preset_communicates_as_much_as_the_paper_unrolling():
    """The default (20 layers of 1 hop, 4 local sub-steps) and the ``paper`` preset (10 layers of
    2 hops) send the same messages: 20 rounds and the same bytes per agent (ledger counts)."""
    from surf_dist.io.config import preset, with_overrides
    from surf_dist.core.evaluate import evaluate_unrolled
    from surf_dist.commands.jobs import local_worker
    from surf_dist.core.train import new_model

    ends = {}
    for name in ("default", "paper"):
        cfg = with_overrides(preset(name), {"eval": {"test_tasks": 1}})
        worker = local_worker(cfg)
        curve = evaluate_unrolled(new_model(cfg, worker), worker, worker.family.batch("test", [0]))
        ends[name] = (curve["rounds"][-1], curve["bytes_per_agent"][-1])
    assert preset("default").model.local_steps == 4 and preset("paper").model.local_steps == 1
    assert ends["default"] == ends["paper"]
    assert ends["default"][0] == 20 and ends["default"][1] > 0


# ------------------------------------------------------------------------- adapt then combine


def atc_model(num_layers, alpha, momentum=False, correction=False, start="task"):
    cfg = ModelConfig(num_layers=num_layers, num_hops=1, batch_size=BATCH, hidden=4, combine="atc",
                      momentum=momentum, momentum_init=1.0, correction=correction, start=start)
    model = UnrolledDGD(cfg, P + 1, C).double()
    dgd_local_net(model, alpha)
    return model


def test_atc_first_layer_moves_from_zero_on_its_neighbours_data(setup):
    """atc from W_0 = 0: W_1 = h0 U + h1 S U with U = -alpha grad f_i(0; B): the first round's
    messages already carry data, so an agent's W_1 changes when only a neighbour's data does."""
    shards, S, comm = setup
    alpha = 0.37
    model = atc_model(1, alpha, start="zero")
    set_taps(model, [[0.25, 0.75]])
    pos = positions(1)
    Ws = model(shards.init_weights, shards, pos, comm)
    zero = torch.zeros_like(shards.init_weights)
    X, Y = shards.minibatch(pos[0])
    U = zero - alpha * grad_per_agent(zero, X, Y)
    assert torch.allclose(Ws[1], 0.25 * U + 0.75 * (S @ U), atol=1e-12)
    assert Ws[1].abs().max() > 1e-3
    # agent 0's neighbour 1 gets other labels: agent 0's first iterate moves, agent 3 (not a neighbour) does not
    assert S[0, 1] > 0 and S[3, 1] == 0
    shards.Y_seen[1] = (shards.Y_seen[1] + 1) % C
    moved = model(shards.init_weights, shards, pos, comm)[1]
    assert (moved[0] - Ws[1][0]).abs().max() > 1e-6
    assert torch.allclose(moved[3], Ws[1][3], atol=1e-15)


def test_cta_first_layer_from_zero_ignores_the_neighbours_data(setup):
    """The contrast that makes the test above mean something: unrolled DGD (cta) sends W_0 = 0
    in its first round, so agent 0's first iterate does not depend on its neighbour's data."""
    shards, S, comm = setup
    model = make_model(num_layers=1)
    model.config = ModelConfig(**{**model.config.__dict__, "start": "zero"})
    dgd_local_net(model, 0.37)
    pos = positions(1)
    before = model(shards.init_weights, shards, pos, comm)[1]
    shards.Y_seen[1] = (shards.Y_seen[1] + 1) % C
    after = model(shards.init_weights, shards, pos, comm)[1]
    assert torch.allclose(before[0], after[0], atol=1e-15)


def test_atc_with_correction_is_nids_by_hand(setup):
    """momentum + correction at beta = c = 1, taps (1/2, 1/2), Psi = alpha grad: NIDS / exact
    diffusion, x_1 = S~(x_0 - a g_0), x_(k+1) = S~(2 x_k - x_(k-1) - a g_k + a g_(k-1)), S~ = (I + S)/2."""
    shards, S, comm = setup
    alpha, L = 0.3, 4
    model = atc_model(L, alpha, momentum=True, correction=True)
    assert torch.allclose(model.taps.data, torch.tensor([[0.5, 0.5]] * L, dtype=torch.float64))
    pos = positions(L)
    Ws = model(shards.init_weights, shards, pos, comm)
    S_half = (torch.eye(N_AGENTS, dtype=torch.float64) + S) / 2
    xs, gs = [shards.init_weights], []
    for l in range(L):
        X, Y = shards.minibatch(pos[l])
        gs.append(grad_per_agent(xs[-1], X, Y))
        if l == 0:
            xs.append(S_half @ (xs[0] - alpha * gs[0]))
        else:
            xs.append(S_half @ (2 * xs[-1] - xs[-2] - alpha * gs[-1] + alpha * gs[-2]))
    for got, want in zip(Ws, xs):
        assert torch.allclose(got, want, atol=1e-12)


def test_atc_correction_reaches_the_exact_optimum_where_diffusion_stalls(setup):
    """A property, not a re-derivation: with full local batches the corrected network (NIDS) reaches
    consensus at a stationary point of the network objective (disagreement and mean gradient ~0),
    while plain adapt-then-combine with the same step keeps a disagreement floor."""
    shards, S, comm = setup
    alpha, L = 0.5, 400
    full = torch.arange(N_SEEN).expand(L, N_AGENTS, N_SEEN)
    finals = {}
    for correction in (False, True):
        model = atc_model(L, alpha, momentum=correction, correction=correction)
        with torch.no_grad():
            W = model(shards.init_weights, shards, full, comm)[-1]
        spread = (W - W.mean(0)).norm() / W.norm()
        mean_grad = grad_per_agent(W, shards.X_seen, shards.Y_seen).mean(0).norm()
        finals[correction] = (float(spread), float(mean_grad))
    assert finals[True][0] < 1e-6 and finals[True][1] < 1e-6
    assert finals[False][0] > 1e-3


def test_warm_up_steps_by_hand_before_the_first_layer(setup):
    """warmup_steps = 3: W <- W - exp(log_warmup[e]) grad f_i(W) on the agent's whole seen data
    three times, then the first layer as usual (here atc with Psi = alpha grad and taps [0, 1])."""
    shards, S, comm = setup
    alpha, sizes = 0.3, [0.5, 0.2, 0.1]
    cfg = ModelConfig(num_layers=2, num_hops=1, batch_size=BATCH, hidden=4, combine="atc", warmup_steps=3)
    model = UnrolledDGD(cfg, P + 1, C).double()
    dgd_local_net(model, alpha)
    set_taps(model, [[0.0, 1.0]] * 2)
    model.log_warmup.data.copy_(torch.tensor(sizes, dtype=torch.float64).log())
    pos = positions(2)
    Ws = model(shards.init_weights, shards, pos, comm)
    W = shards.init_weights
    for size in sizes:
        W = W - size * grad_per_agent(W, shards.X_seen, shards.Y_seen)
    X, Y = shards.minibatch(pos[0])
    assert torch.allclose(Ws[1], S @ (W - alpha * grad_per_agent(W, X, Y)), atol=1e-12)


def test_a_mixture_takes_its_steps_in_turn_and_validates_on_every_setting(monkeypatch):
    """train(..., mixture=(w2,)): step s runs on setting s mod 2 (own first), and the validation
    objective is the mean of each setting's own."""
    from surf_dist.commands.jobs import local_worker, mixture_workers
    from surf_dist.core import train as training
    from surf_dist.io.config import preset, with_overrides
    cfg = with_overrides(preset("quick"), {"train": {"steps": 4, "val_every": 4, "mixture": ["quick:ring:6"]}})
    worker = local_worker(cfg)
    mixture = mixture_workers(cfg, worker)
    assert [w.num_agents for w in mixture] == [6] and mixture[0].comm is worker.comm
    seen, real_step, real_validate = [], training.primal_step, training.validate
    monkeypatch.setattr(training, "primal_step", lambda state, w, tasks, c: seen.append(w.num_agents)
                        or real_step(state, w, tasks, c))
    values = []
    monkeypatch.setattr(training, "validate", lambda *a: values.append(real_validate(*a)) or values[-1])
    state = training.train(cfg, worker, None, progress=False, mixture=mixture)
    assert seen == [8, 6, 8, 6]
    assert [v["objective"] for v in values[:2]] != [values[0]["objective"]] * 2
    assert state.history[-1]["val_loss"] == pytest.approx((values[0]["objective"] + values[1]["objective"]) / 2)
