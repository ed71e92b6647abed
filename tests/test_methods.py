"""surf_dist.methods.registry: every registered baseline against an independent dense hand recursion,
exactness on a problem with a finite optimum and Chebyshev mixing rates."""
import functools
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from surf_dist.methods.registry import METHODS
from surf_dist.methods.accelerated import chebyshev_mix, spectral_lambda2
from surf_dist.problem.softmax import grad_per_agent, loss_per_agent, solve_centralized
from surf_dist.problem.tasks import Shards

N = 5
STEPS = [0.1, 0.2, 0.15, 0.25, 0.3]
MOMENTA = [0.5, 0.3, 0.6, 0.4, 0.2]
CONSENSUS = [0.5, 0.8, 0.3, 1.0, 0.6]
DISCRETE = {"local_steps": 2, "gossip_rounds": 2}        # dfedavgm overrides with its only value
TWO_VECTOR = {"beer", "gradient_tracking", "gt_heavy_ball", "gt_nesterov", "chebyshev_gt", "gt_local_steps"}
EXACT = ("gradient_tracking", "extra", "nids", "gt_heavy_ball", "gt_nesterov", "chebyshev_gt",
         "gt_local_steps")


def column(values):
    return torch.tensor(values, dtype=torch.float64)[:, None]


def batches_of(n=N, m=6, b=3, seed=0):
    """A deterministic mini-batch schedule: evaluation number -> positions (n, b)."""
    def batches(i):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        return torch.stack([torch.randperm(m, generator=gen)[:b] for _ in range(n)])
    return batches


def hyper_for(method, lambda2, steps=STEPS, momenta=MOMENTA, consensus=None, **discrete):
    hyper = {"step": column(steps)}
    if "momentum" in method.continuous:
        hyper["momentum"] = column(momenta)
    if "consensus" in method.continuous:
        hyper["consensus"] = column(CONSENSUS * (len(steps) // N) if consensus is None else [consensus] * len(steps))
    for key, values in method.discrete.items():
        hyper[key] = discrete.get(key, values[0] if len(values) == 1 else DISCRETE[key])
    if method.needs_spectrum:
        hyper["lambda2"] = torch.full((len(steps), 1), lambda2, dtype=torch.float64)
    return hyper


def chebyshev_matrix(S, lam, K):
    """P_K(S) = T_K(S / lam) / T_K(1 / lam) from the eigendecomposition of a symmetric S."""
    mu, V = np.linalg.eigh(S.numpy())
    T_K = np.polynomial.chebyshev.Chebyshev.basis(K)
    return torch.as_tensor(V @ np.diag(T_K(mu / lam) / T_K(1 / lam)) @ V.T)


@pytest.fixture
def problem(make_shards, ring_shift, bound_comm):
    shards = make_shards(num_agents=N, num_seen=6, num_features=3, num_classes=3, seed=11)
    S = ring_shift(N)
    return shards, torch.as_tensor(S.toarray()), bound_comm(S), spectral_lambda2(S)


# Hand recursions with a dense S: each returns the models and evaluation counts for r = 0..R.
def oracle(name, S, W0, g, gb, h, R):
    a, b = h["step"], h.get("momentum")
    E, K = h.get("local_steps"), h.get("gossip_rounds")
    I = torch.eye(S.shape[0], dtype=S.dtype)
    S_half = (I + S) / 2
    models, evals = [W0], [0]
    if name == "choco":                     # no compressor: q = x' - h exactly
        x, public, mixed = W0, torch.zeros_like(W0), torch.zeros_like(W0)
        for r in range(R):
            half = x - a * g(x)
            q = half - public
            public, mixed = public + q, mixed + S @ q
            x = half + h["consensus"] * (mixed - public)
            models.append(x); evals.append(r + 1)
    elif name == "beer":                    # no compressor: the copies become x and v exactly
        x, v, hx, hv = W0, g(W0), torch.zeros_like(W0), torch.zeros_like(W0)
        for r in range(R):
            hx, hv = hx + (x - hx), hv + (v - hv)
            x_new = x + h["consensus"] * (S @ hx - hx) - a * v
            v = v + h["consensus"] * (S @ hv - hv) + g(x_new) - g(x)
            x = x_new
            models.append(x); evals.append(r + 2)
    elif name in ("dgd", "dsgd"):
        w = W0
        for r in range(R):
            w = S @ w - a * (g(w) if name == "dgd" else gb(r, w))
            models.append(w); evals.append(r + 1)
    elif name == "dfedavgm":
        w = W0
        for r in range(R):
            v = torch.zeros_like(w)
            for e in range(E):
                v = b * v + gb(r * E + e, w)
                w = w - a * v
            w = S @ w
            models.append(w); evals.append(E * (r + 1))
    elif name in ("gradient_tracking", "gt_heavy_ball"):
        beta = b if name == "gt_heavy_ball" else 0.0
        x_prev, x, y = W0, W0, g(W0)
        for r in range(R):
            x_new = S @ x - a * y + beta * (x - x_prev)
            y = S @ y + g(x_new) - g(x)
            x_prev, x = x, x_new
            models.append(x); evals.append(r + 2)
    elif name == "gt_nesterov":
        x_prev, x, y = W0, W0, g(W0)
        for r in range(R):
            v = x + b * (x - x_prev)
            x_new = S_half @ v - a * y
            v_new = x_new + b * (x_new - x)
            y = S @ y + g(v_new) - g(v)
            x_prev, x = x, x_new
            models.append(x); evals.append(r + 2)
    elif name == "extra":
        xs = [W0, S @ W0 - a * g(W0)]
        while len(xs) <= R:
            xs.append((I + S) @ xs[-1] - S_half @ xs[-2] - a * (g(xs[-1]) - g(xs[-2])))
        models, evals = xs[:R + 1], list(range(R + 1))
    elif name == "nids":
        xs = [W0, W0 - a * g(W0)]
        while len(xs) <= R + 1:
            xs.append(S_half @ (2 * xs[-1] - xs[-2] - a * g(xs[-1]) + a * g(xs[-2])))
        models, evals = [W0] + xs[2:R + 2], [0] + list(range(2, R + 2))
    elif name in ("dgd_heavy_ball", "dgd_nesterov"):
        w_prev, w = W0, W0
        for r in range(R):
            if name == "dgd_heavy_ball":
                w_new = S @ w - a * g(w) + b * (w - w_prev)
            else:
                v = w + b * (w - w_prev)
                w_new = S_half @ v - a * g(v)
            w_prev, w = w, w_new
            models.append(w); evals.append(r + 1)
    elif name in ("chebyshev_dgd", "chebyshev_gt"):
        P = chebyshev_matrix(S, h["lambda2"][0, 0].item(), K)
        xs, x, y = [W0], W0, g(W0)
        for _ in range(R // K):
            if name == "chebyshev_dgd":
                x = P @ (x - a * g(x))
            else:
                x_new = P @ (x - a * y)
                y = P @ y + g(x_new) - g(x)
                x = x_new
            xs.append(x)
        models = [xs[r // K] for r in range(R + 1)]
        evals = [math.ceil(r / K) if name == "chebyshev_dgd" else (r > 0) + r // K for r in range(R + 1)]
    elif name == "dgd_local_steps":
        w = W0
        for r in range(R):
            for _ in range(E):
                w = w - a * g(w)
            w = S @ w
            models.append(w); evals.append(E * (r + 1))
    elif name == "gt_local_steps":
        x, y = W0, g(W0)
        for r in range(R):
            z = x
            for _ in range(E):
                z = z - a * (g(z) - g(x) + y)
            x_new = S @ x + z - x
            y = S @ y + g(x_new) - g(x)
            x = x_new
            models.append(x); evals.append(1 + E * (r + 1))
    else:
        raise AssertionError(f"no oracle for {name}")
    return models, evals


def test_every_method_has_an_oracle_here():
    assert list(METHODS) == ["dgd", "dsgd", "gradient_tracking", "dfedavgm", "extra", "nids",
                             "dgd_heavy_ball", "dgd_nesterov", "gt_heavy_ball", "gt_nesterov",
                             "chebyshev_dgd", "chebyshev_gt", "dgd_local_steps", "gt_local_steps", "choco", "beer"]
    for method in METHODS.values():
        assert method.name and method.doc and set(method.continuous) <= {"step", "momentum", "consensus"}


@pytest.mark.parametrize("name", list(METHODS))
def test_method_matches_dense_hand_recursion_and_ledger(problem, name):
    shards, S, comm, lam = problem
    method = METHODS[name]
    hyper = hyper_for(method, lam)
    batches = batches_of() if method.stochastic else None
    g = lambda W: grad_per_agent(W, shards.X_seen, shards.Y_seen)
    gb = lambda i, W: grad_per_agent(W, *shards.minibatch(batches(i)))
    R = 4
    models, evals = oracle(name, S, shards.init_weights, g, gb, hyper, R)
    d = shards.init_weights.shape[1]
    floats = 2 * d if name in TWO_VECTOR else d
    seen = 0
    for r, (W, count) in enumerate(method.run(shards.init_weights, shards, comm, hyper, R, batches)):
        assert torch.allclose(W, models[r], atol=1e-12, rtol=0), (name, r)
        assert count == evals[r], (name, r, count, evals[r])
        assert comm.ledger.rounds == r, (name, r)
        assert comm.ledger.bytes.tolist() == [r * 2 * floats * 8] * N, (name, r)  # ring: 2 neighbours
        seen += 1
    assert seen == R + 1


@pytest.mark.parametrize("rounds", [0, 1, 5])
@pytest.mark.parametrize("name", list(METHODS))
def test_yields_rounds_plus_one_and_never_overshoots(problem, name, rounds):
    shards, _, comm, lam = problem
    method = METHODS[name]
    hyper = hyper_for(method, lam, local_steps=3, gossip_rounds=4)   # 5 rounds end mid-iteration
    out = list(method.run(shards.init_weights, shards, comm, hyper, rounds,
                          batches_of() if method.stochastic else None))
    assert len(out) == rounds + 1 and comm.ledger.rounds == rounds
    assert torch.equal(out[0][0], shards.init_weights) and out[0][1] == 0
    assert all(a[1] <= b[1] for a, b in zip(out, out[1:]))


def replicated(shards: Shards, copies: int) -> Shards:
    """The same task ``copies`` times, stacked as separate tasks."""
    cat = lambda t: torch.cat([t] * copies)
    tasks = torch.cat([shards.task_of_node + c * len(shards.X_pool) for c in range(copies)])
    return Shards(cat(shards.X_seen), cat(shards.Y_seen), cat(shards.X_held), cat(shards.Y_held),
                  shards.X_pool * copies, shards.Y_pool * copies, tasks, cat(shards.init_weights))


@pytest.mark.parametrize("name", list(METHODS))
def test_hyperparameters_are_per_node_replicas(problem, bound_comm, ring_shift, name):
    """Two replicas of one task with different steps (and momenta) give the two separate runs."""
    shards, _, _, lam = problem
    method = METHODS[name]
    settings = [(0.1, 0.3), (0.25, 0.6)]
    batches = batches_of()
    separate = []
    for step, beta in settings:
        hyper = hyper_for(method, lam, steps=[step] * N, momenta=[beta] * N)
        runs = method.run(shards.init_weights, shards, bound_comm(ring_shift(N)), hyper, 5,
                          batches if method.stochastic else None)
        separate.append(list(runs)[-1][0])
    both = replicated(shards, 2)
    hyper = hyper_for(method, lam, steps=[s for s, _ in settings for _ in range(N)],
                      momenta=[m for _, m in settings for _ in range(N)])
    comm = bound_comm(sp.block_diag([ring_shift(N)] * 2, format="csr"))
    joint = list(method.run(both.init_weights, both, comm, hyper, 5,
                            (lambda i: torch.cat([batches(i)] * 2)) if method.stochastic else None))[-1][0]
    assert torch.allclose(joint, torch.cat(separate), atol=1e-13, rtol=0)
    assert not torch.allclose(separate[0], separate[1])            # the steps do matter


@pytest.mark.parametrize("name, setting, reference", [
    ("gt_local_steps", {"local_steps": 1}, "gradient_tracking"),
    ("gt_heavy_ball", {"momenta": [0.0] * N}, "gradient_tracking"),
    ("dgd_heavy_ball", {"momenta": [0.0] * N}, "dgd"),
    ("chebyshev_dgd", {"gossip_rounds": 1}, "dgd_local_steps"),    # both S (w - a g(w)) at K = E = 1
    ("beer", {"consensus": 1.0}, "gradient_tracking"),             # no compressor, c = 1
])
def test_special_cases_reduce_to_the_simpler_method(problem, name, setting, reference):
    shards, _, comm, lam = problem
    ours = list(METHODS[name].run(shards.init_weights, shards, comm, hyper_for(METHODS[name], lam, **setting), 6))
    base_hyper = hyper_for(METHODS[reference], lam, local_steps=1)
    theirs = list(METHODS[reference].run(shards.init_weights, shards, comm, base_hyper, 6))
    for r, ((W, count), (W_ref, count_ref)) in enumerate(zip(ours, theirs)):
        assert torch.allclose(W, W_ref, atol=1e-14, rtol=0) and count == count_ref, (name, r)
    if name == "gt_local_steps":                     # E = 1 is literally DIGing, bit for bit
        assert all(torch.equal(W, W_ref) for (W, _), (W_ref, _) in zip(ours, theirs))


def centered(W_nd, num_classes):
    """Remove the softmax invariance w_c <- w_c + v: subtract each feature's mean over classes."""
    W = W_nd.reshape(W_nd.shape[0], -1, num_classes)
    return (W - W.mean(-1, keepdim=True)).reshape(W_nd.shape[0], -1)


@functools.cache
def pooled_optimum(make_shards):
    """5 agents, random labels on 100 pooled samples in 3-d: not separable, so sum_i f_i has a
    finite minimizer (unique up to the softmax invariance). L-BFGS finds it centrally, and a few
    Newton steps (pseudo-inverse: the Hessian is singular along the invariance) polish it."""
    shards = make_shards(num_agents=N, num_seen=20, num_features=3, num_classes=3, seed=11)
    X, Y = shards.X_seen.reshape(-1, 4), shards.Y_seen.reshape(-1)
    pooled_loss = lambda w: loss_per_agent(w[None], X[None], Y[None])[0]
    w_star = solve_centralized(X, Y, 3, l2=0.0, max_iter=100)
    for _ in range(4):
        gradient = torch.autograd.functional.jacobian(pooled_loss, w_star)
        hessian = torch.autograd.functional.hessian(pooled_loss, w_star)
        w_star = w_star - torch.linalg.pinv(hessian, hermitian=True, rtol=1e-10) @ gradient
    return shards, w_star


@pytest.fixture
def nonseparable(make_shards, ring_shift, bound_comm):
    shards, w_star = pooled_optimum(make_shards)
    X, Y = shards.X_seen.reshape(-1, 4), shards.Y_seen.reshape(-1)
    pooled_grad = lambda W: grad_per_agent(W, X.expand(len(W), -1, -1), Y.expand(len(W), -1))
    assert pooled_grad(w_star[None]).abs().max() < 1e-12          # a finite minimizer exists
    S = ring_shift(N)
    return shards, S, lambda: bound_comm(S), w_star, pooled_grad


EXACT_SETTINGS = {"gradient_tracking": (0.5, None, 300), "extra": (0.5, None, 300), "nids": (0.5, None, 300),
                  "gt_heavy_ball": (0.3, 0.3, 300), "gt_nesterov": (0.3, 0.2, 300),
                  "chebyshev_gt": (0.5, None, 600), "gt_local_steps": (0.1, None, 300)}


@pytest.mark.parametrize("name", EXACT)
def test_exact_methods_reach_the_centralized_minimizer(nonseparable, name):
    shards, S, new_comm, w_star, pooled_grad = nonseparable
    step, beta, rounds = EXACT_SETTINGS[name]
    method = METHODS[name]
    hyper = hyper_for(method, spectral_lambda2(S), steps=[step] * N, momenta=[beta] * N,
                      gossip_rounds=3, local_steps=4)
    W = list(method.run(shards.init_weights, shards, new_comm(), hyper, rounds))[-1][0]
    assert (W - W.mean(0)).abs().max() < 1e-9                                # consensus
    assert pooled_grad(W).abs().max() < 1e-8                                 # stationary for sum_i f_i
    assert (centered(W, 3) - centered(w_star[None], 3)).abs().max() < 1e-6  # the minimizer itself


def test_dgd_with_a_constant_step_stops_short_of_the_minimizer(nonseparable):
    shards, S, new_comm, w_star, pooled_grad = nonseparable
    hyper = {"step": column([0.5] * N)}
    W = list(METHODS["dgd"].run(shards.init_weights, shards, new_comm(), hyper, 300))[-1][0]
    error = (centered(W, 3) - centered(w_star[None], 3)).abs().max()
    assert error > 1e-4 and pooled_grad(W).abs().max() > 1e-4
    # ... although it has converged to its own (inexact) fixed point
    W_more = list(METHODS["dgd"].run(shards.init_weights, shards, new_comm(), hyper, 400))[-1][0]
    assert (W_more - W).abs().max() < 1e-8


@pytest.mark.parametrize("K", [1, 2, 3, 4, 6])
def test_chebyshev_mixing_contracts_disagreement_by_the_chebyshev_bound(ring_shift, bound_comm, K):
    S = ring_shift(6)
    lam = spectral_lambda2(S)
    comm = bound_comm(S)
    lam_n1 = torch.full((6, 1), lam, dtype=torch.float64)
    bound = 1 / math.cosh(K * math.acosh(1 / lam))                  # 1 / T_K(1 / lambda)
    gen = torch.Generator().manual_seed(K)
    Z = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    mu, V = np.linalg.eigh(S.toarray())
    slowest = torch.as_tensor(V[:, np.argmax(np.where(np.isclose(mu, 1), -1, np.abs(mu)))])[:, None]
    disagreement = lambda A: (A - A.mean(0)).norm()
    for trial in (Z, slowest):
        mixed = trial
        for _ in range(3):                                           # three iterations in a row
            new = chebyshev_mix(mixed, comm.shift, lam_n1, K)
            assert disagreement(new) <= bound * disagreement(mixed) + 1e-12
            assert torch.allclose(new.mean(0), mixed.mean(0), atol=1e-14)   # the average is kept
            mixed = new
    # the bound is attained on the slowest eigenvector, so a weaker polynomial would fail above
    once = chebyshev_mix(slowest, comm.shift, lam_n1, K)
    assert float(disagreement(once)) == pytest.approx(bound * float(disagreement(slowest)), rel=1e-9)
    assert comm.ledger.rounds == 7 * K                               # one shift per mixing round
    if K == 1:
        assert torch.equal(chebyshev_mix(Z, comm.shift, lam_n1, 1), comm.shift(Z))


def test_chebyshev_on_a_complete_graph_is_averaging(bound_comm):
    n = 5
    S = sp.csr_matrix(np.full((n, n), 1 / n))                       # lambda2 = 0: clamped to 1e-6
    lam = spectral_lambda2(S)
    assert lam < 1e-12
    Z = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for K in (1, 3, 6):
        mixed = chebyshev_mix(Z, bound_comm(S).shift, torch.full((n, 1), lam, dtype=torch.float64), K)
        assert torch.allclose(mixed, Z.mean(0).expand(n, -1), atol=1e-11)


@pytest.mark.parametrize("n", [5, 6, 7])
def test_spectral_lambda2_of_a_ring_has_its_closed_form(ring_shift, n):
    eigenvalues = [1 / 3 + 2 / 3 * math.cos(2 * math.pi * k / n) for k in range(1, n)]
    assert spectral_lambda2(ring_shift(n)) == pytest.approx(max(map(abs, eigenvalues)), abs=1e-12)


def test_spectral_lambda2_of_a_directed_cycle_is_its_second_singular_value():
    """S = (I + P) / 2 with P the cyclic permutation: normal, singular values |cos(pi k / n)|."""
    n = 6
    P = sp.csr_matrix((np.ones(n), (np.arange(n), (np.arange(n) + 1) % n)), shape=(n, n))
    S = (sp.identity(n) + P) / 2
    assert spectral_lambda2(S) == pytest.approx(math.cos(math.pi / n), abs=1e-12)
    with pytest.raises(ValueError, match="square"):
        spectral_lambda2(sp.csr_matrix(np.ones((2, 3))))


def test_bad_calls_say_what_is_missing(problem):
    shards, _, comm, lam = problem
    with pytest.raises(ValueError, match="momentum"):
        METHODS["dgd_heavy_ball"].run(shards.init_weights, shards, comm, {"step": column(STEPS)}, 3)
    with pytest.raises(ValueError, match="lambda2"):
        METHODS["chebyshev_dgd"].run(shards.init_weights, shards, comm,
                                     {"step": column(STEPS), "gossip_rounds": 2}, 3)
    with pytest.raises(ValueError, match="stochastic"):
        METHODS["dsgd"].run(shards.init_weights, shards, comm, {"step": column(STEPS)}, 3)
    with pytest.raises(ValueError, match="full local gradients"):
        METHODS["dgd"].run(shards.init_weights, shards, comm, {"step": column(STEPS)}, 3, batches_of())
    assert comm.ledger.rounds == 0


@pytest.mark.parametrize("name", ["dgd_nesterov", "gt_nesterov"])
def test_nesterov_contracts_at_its_predicted_rate_where_s_has_a_strongly_negative_eigenvalue(name):
    """A property, not the recursion again: on a 2-agent graph with S = [[0.1, 0.9], [0.9, 0.1]]
    (eigenvalues 1 and -0.8) and gradients that vanish (a = 0 on identical quadratics) the
    disagreement is a consensus mode of S~ = (I + S) / 2 (mu = 0.1): it must shrink at the
    spectral radius of z^2 - mu (1 + b) z + mu b at b = 0.9. Mixing the extrapolated point
    with S itself (mu = -0.8) has a root of modulus ~1.4 there and diverges."""
    from surf_dist.methods.accelerated import dgd_nesterov_rounds, gt_nesterov_rounds
    S = torch.tensor([[0.1, 0.9], [0.9, 0.1]], dtype=torch.float64)
    b, steps = 0.9, 60
    rounds = dgd_nesterov_rounds if name == "dgd_nesterov" else gt_nesterov_rounds
    w0 = torch.tensor([[1.0, -2.0], [-1.0, 2.0]], dtype=torch.float64)           # pure disagreement
    it = rounds(w0, lambda w: torch.zeros_like(w), lambda z: S @ z, {"step": 0.0, "momentum": b})
    spread = [float((w0[0] - w0[1]).norm())] + [float((w[0] - w[1]).norm()) for w, _ in zip(it, range(steps))]
    mu = 0.1
    radius = max(abs(np.roots([1.0, -mu * (1 + b), mu * b])))
    assert radius < 1 and max(abs(np.roots([1.0, 0.8 * (1 + b), -0.8 * b]))) > 1.3    # S~ stable, S not
    assert spread[-1] <= spread[0] * (radius + 0.02) ** steps
    assert spread[-1] < 1e-12
