"""surf_dist.comm.compress and compressed shifts: the spec syntax, unbiased quantisation (mean
over many draws, within a tolerance from its variance), exactly k coordinates kept, bytes on the
wire counted by hand, what a shift sends (own row exact, neighbours' rows compressed,
straight-through gradient), replicas of a grid compressed one message at a time, and CHOCO-SGD
against a two-agent example computed by hand."""
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from surf_dist.comm.compress import Compressor, parse_compressor, quantize, uniforms
from surf_dist.comm.local import LocalCommunicator
from surf_dist.methods.registry import choco_rounds


def bound(S, spec="none", keys=None):
    comm = LocalCommunicator()
    comm.bind(sp.csr_matrix(S), np.arange(S.shape[0]), keys=keys, compressor=parse_compressor(spec))
    return comm


def ring(n):
    S = np.zeros((n, n))
    for i in range(n):
        S[i, i], S[i, (i + 1) % n], S[i, (i - 1) % n] = 1 / 3, 1 / 3, 1 / 3
    return S


# ------------------------------------------------------------------ the spec

@pytest.mark.parametrize("text, kind, bits, count, fraction", [
    ("none", "none", 0, 0, 0.0), ("q8", "quantize", 8, 0, 0.0), ("Q1", "quantize", 1, 0, 0.0),
    ("q32", "quantize", 32, 0, 0.0), ("topk:0.01", "topk", 0, 0, 0.01), ("topk:7", "topk", 0, 7, 0.0),
    ("randk:0.1", "randk", 0, 0, 0.1), ("randk:1.0", "randk", 0, 0, 1.0)])
def test_specs_parse_and_print_back(text, kind, bits, count, fraction):
    c = parse_compressor(text)
    assert (c.kind, c.bits, c.count, c.fraction) == (kind, bits, count, fraction)
    assert parse_compressor(str(c)) == c


@pytest.mark.parametrize("text, said", [
    ("q0", "bit width must lie in 1..32, got 0"), ("q33", "bit width must lie in 1..32, got 33"),
    ("topk:0", "k must be >= 1"), ("randk:-2", "k must be >= 1"), ("topk:1.5", "fraction"),
    ("topk:0.0", "fraction"), ("topk:", "needs a count or a fraction"), ("zip", "unknown compressor")])
def test_bad_specs_say_what_is_wrong(text, said):
    with pytest.raises(ValueError, match=said.replace("(", r"\(").replace(".", r"\.")):
        parse_compressor(text)


def test_k_above_d_is_refused_and_fractions_round_up():
    with pytest.raises(ValueError, match="keeps 651 coordinates but a message holds d = 650"):
        parse_compressor("topk:651").check_fits(650)
    parse_compressor("topk:650").check_fits(650)
    assert parse_compressor("topk:0.01").kept(650) == 7 and parse_compressor("topk:0.1").kept(650) == 65
    assert parse_compressor("randk:0.001").kept(10) == 1


# ------------------------------------------------------------------ the compressors

def test_uniforms_are_uniform_and_differ_by_key_round_and_coordinate():
    u = uniforms(np.arange(200), 3, 500)
    assert u.shape == (200, 500) and 0 <= u.min() and u.max() < 1
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / u.size)            # 4 standard errors
    assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < 0.01
    assert not np.array_equal(uniforms(np.arange(3), 0, 5), uniforms(np.arange(3), 1, 5))
    assert np.array_equal(uniforms(np.array([7]), 2, 5)[0], uniforms(np.arange(9), 2, 5)[7])   # a row's own draws


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_stochastic_quantisation_is_unbiased(bits):
    """The mean of M independent draws is within 5 standard errors of z, the standard error
    from the variance bound (s / (2^b - 1))^2 per coordinate; the values lie on the 2^b levels."""
    z = torch.tensor([[0.9, -0.3, 0.05, -1.7, 0.0, 1.2, 0.333]], dtype=torch.float64)
    M = 4000
    u = torch.as_tensor(np.stack([uniforms(np.array([5]), r, z.shape[1])[0] for r in range(M)]))
    Q = quantize(z.expand(M, -1), u, bits)
    s = float(np.float32(1.7))                  # the scale max |z| = 1.7 as sent: a float32, rounded up
    assert s >= 1.7
    levels = 2 ** bits - 1
    grid = (torch.round((Q / s + 1) * levels / 2) * 2 / levels - 1) * s
    assert torch.allclose(Q, grid, atol=1e-12, rtol=0)                   # only level values are sent
    assert len(torch.unique(Q[:, 2])) == 2                                # 0.05 sits between two levels
    std_error = s / levels / math.sqrt(M)
    assert (Q.mean(0) - z[0]).abs().max() < 5 * std_error
    if bits <= 2:                                                         # a biased rounding would fail
        nearest = (torch.round((z / s + 1) * levels / 2) * 2 / levels - 1) * s
        assert (nearest - z).abs().max() > 20 * std_error


def test_quantisation_keeps_the_extremes_and_zero_rows():
    z = torch.tensor([[2.0, -2.0, 1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    Q = quantize(z, torch.full_like(z, 0.5), 3)
    assert Q[0, 0] == 2.0 and Q[0, 1] == -2.0 and torch.equal(Q[1], torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("spec", ["topk:3", "randk:3"])
def test_sparsifiers_keep_exactly_k_per_message(spec):
    Z = torch.as_tensor(np.random.default_rng(0).normal(size=(6, 2, 10)))   # 6 rows of 2 messages
    Q = parse_compressor(spec).compressed(Z, np.arange(6), 0)
    assert ((Q != 0).sum(-1) == 3).all()
    kept = Q != 0
    assert torch.equal(Q[kept], Z[kept])                                  # kept values unchanged
    if spec.startswith("topk"):
        smallest_kept = torch.where(kept, Z.abs(), torch.inf).amin(-1)
        largest_dropped = torch.where(kept, -torch.inf, Z.abs()).amax(-1)
        assert (smallest_kept > largest_dropped).all()
    else:
        again = parse_compressor(spec).compressed(Z, np.arange(6), 1)
        assert not torch.equal(kept, again != 0)                          # a new draw each round


def test_random_k_picks_every_coordinate_equally_often():
    m, k, draws = 8, 2, 4000
    counts = np.zeros(m)
    c = parse_compressor(f"randk:{k}")
    for r in range(draws):
        counts += (c.compressed(torch.ones(1, 1, m, dtype=torch.float64), np.array([1]), r)[0, 0] != 0).numpy()
    p = k / m
    assert np.abs(counts / draws - p).max() < 5 * math.sqrt(p * (1 - p) / draws)


# ------------------------------------------------------------------ the shift and the ledger

@pytest.mark.parametrize("spec, per_message, parts", [
    ("none", 7 * 8, (56, 0, 0)),
    ("q4", math.ceil(4 * 7 / 8) + 4, (4, 4, 0)),        # 28 bits -> 4 bytes, a float32 scale
    ("q3", math.ceil(3 * 7 / 8) + 4, (3, 4, 0)),        # 21 bits -> 3 bytes
    ("topk:3", 3 * 8 + 3 * 4, (24, 0, 12)),             # 3 float64 values, 3 int32 indices
    ("randk:0.5", 4 * 8 + 4 * 4, (32, 0, 16))])         # ceil(3.5) = 4 coordinates
def test_bytes_on_the_wire_by_hand(spec, per_message, parts):
    n, d = 6, 7
    comm = bound(ring(n), spec)
    comm.shift(torch.ones(n, d, dtype=torch.float64))
    senders = torch.tensor([True, True, False, True, True, True])
    comm.shift(torch.ones(n, d, dtype=torch.float64), senders)
    assert comm.ledger.bytes.tolist() == [2 * 2 * per_message] * 2 + [2 * per_message] + [2 * 2 * per_message] * 3
    assert comm.ledger.history == [(12, 12 * per_message), (10, 10 * per_message)]
    wire = comm.wire_per_agent()
    total = comm.ledger_per_agent()["bytes_per_agent"]
    assert [wire[f"{p}_bytes_per_agent"] for p in ("payload", "scales", "indices")] == \
        pytest.approx([22 * p / n for p in parts])
    assert sum(wire.values()) == pytest.approx(total) and total == pytest.approx(22 * per_message / n)


def test_a_shift_sends_compressed_rows_and_keeps_its_own():
    S = np.array([[0.5, 0.5, 0.0, 0.0], [0.25, 0.5, 0.25, 0.0], [0.0, 0.25, 0.5, 0.25], [0.0, 0.0, 0.5, 0.5]])
    Z = torch.tensor([[1.0, -3.0, 2.0], [4.0, 0.5, -6.0], [0.1, 0.2, 0.3], [-1.0, 7.0, 2.0]], dtype=torch.float64)
    comm = bound(S, "topk:1")
    Zg = Z.clone().requires_grad_(True)
    out = comm.shift(Zg)
    sent = torch.tensor([[0, -3.0, 0], [0, 0, -6.0], [0, 0, 0.3], [0, 7.0, 0]], dtype=torch.float64)
    Sd = torch.as_tensor(S)
    own = torch.diag(torch.diag(Sd))
    assert torch.allclose(out, own @ Z + (Sd - own) @ sent, atol=1e-15, rtol=0)
    V = torch.as_tensor(np.random.default_rng(1).normal(size=(4, 3)))
    (out * V).sum().backward()
    assert torch.allclose(Zg.grad, Sd.T @ V, atol=1e-15, rtol=0)            # straight-through
    comm = bound(S, "topk:1")
    mixed, q = comm.shift_sent(Z)
    assert torch.equal(q, sent) and torch.allclose(mixed, Sd @ sent, atol=1e-15, rtol=0)


def test_no_compressor_is_the_plain_product_bit_for_bit():
    S = ring(5)
    Z = torch.as_tensor(np.random.default_rng(2).normal(size=(5, 4)))
    plain = LocalCommunicator()
    plain.bind(sp.csr_matrix(S), np.arange(5))
    assert torch.equal(bound(S, "none").shift(Z), plain.shift(Z))
    assert not torch.equal(bound(S, "q32").shift(Z), plain.shift(Z))      # 2^32 levels still round
    assert torch.allclose(bound(S, "q32").shift(Z), plain.shift(Z), atol=1e-8, rtol=0)


def test_replicas_side_by_side_are_compressed_one_message_at_a_time():
    """A row holding R replicas interleaved as (p, R, C) (``bench.replicas``) sends each
    replica's message compressed alone: the same as R separate shifts with the same keys."""
    n, p, R, C = 4, 3, 2, 5
    rng = np.random.default_rng(3)
    reps = [torch.as_tensor(rng.normal(size=(n, p * C))) for _ in range(R)]
    joint_rows = torch.stack([W.reshape(n, p, C) for W in reps], dim=2).reshape(n, -1)
    for spec in ("q2", "topk:4", "randk:0.3"):
        keys = np.array([11, 12, 13, 14])
        comm = bound(ring(n), spec, keys)
        comm.replicas(R, C)
        joint = comm.shift(joint_rows).reshape(n, p, R, C)
        for r in range(R):
            alone = bound(ring(n), spec, keys).shift(reps[r])
            assert torch.allclose(joint[:, :, r].reshape(n, -1), alone, atol=1e-15, rtol=0), (spec, r)
        per_message = parse_compressor(spec).cost(p * C, 8).total
        assert comm.ledger.bytes.tolist() == [2 * R * per_message] * n


# ------------------------------------------------------------------ CHOCO-SGD by hand

def test_choco_two_agents_by_hand():
    """Two agents, S = [[1/2, 1/2], [1/2, 1/2]], f_i(x) = |x - b_i|^2 / 2, top-1, step 1/2,
    consensus step 1/2; two rounds computed by hand (every number exact in binary):
      round 1: x' = [[1.5, 0], [0, 0]], q = x' - 0 -> [[1.5, 0], [0, 0]], h = q,
               S h = [[.75, 0], [.75, 0]], x = x' + (S h - h) / 2 = [[1.125, 0], [0.375, 0]]
      round 2: x' = [[1.5625, 0], [0.1875, -1]], x' - h = [[.0625, 0], [.1875, -1]],
               q = [[.0625, 0], [0, -1]], h = [[1.5625, 0], [0, -1]], S h = [[.78125, -.5]] x 2,
               x = [[1.171875, -0.25], [0.578125, -0.75]]."""
    comm = bound(np.full((2, 2), 0.5), "topk:1")
    b = torch.tensor([[2.0, 0.0], [0.0, -2.0]], dtype=torch.float64)
    x0 = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    hyper = {"step": torch.full((2, 1), 0.5, dtype=torch.float64), "consensus": torch.full((2, 1), 0.5, dtype=torch.float64)}
    rounds = choco_rounds(x0, lambda x: x - b, comm.shift_sent, hyper)
    assert torch.equal(next(rounds), torch.tensor([[1.125, 0.0], [0.375, 0.0]], dtype=torch.float64))
    assert torch.equal(next(rounds), torch.tensor([[1.171875, -0.25], [0.578125, -0.75]], dtype=torch.float64))
    assert comm.ledger.bytes.tolist() == [2 * (8 + 4)] * 2                 # one value and one index a round


def test_choco_without_compression_at_full_consensus_is_adapt_then_combine_dgd():
    S = ring(5)
    comm = bound(S)
    rng = np.random.default_rng(4)
    b = torch.as_tensor(rng.normal(size=(5, 3)))
    x = torch.as_tensor(rng.normal(size=(5, 3)))
    hyper = {"step": torch.full((5, 1), 0.3, dtype=torch.float64), "consensus": torch.ones(5, 1, dtype=torch.float64)}
    rounds = choco_rounds(x, lambda w: w - b, comm.shift_sent, hyper)
    Sd = torch.as_tensor(S)
    for _ in range(4):
        x = Sd @ (x - 0.3 * (x - b))
        assert torch.allclose(next(rounds), x, atol=1e-13, rtol=0)


def test_choco_error_feedback_reaches_consensus_where_plain_compression_does_not():
    """Gossip only (step 0): CHOCO with top-1 of 6 coordinates drives the agents to their
    average; mixing the same top-1 rows into S x directly stalls short of it."""
    n, d = 6, 6
    S = ring(n)
    x0 = torch.as_tensor(np.random.default_rng(5).normal(size=(n, d)))
    average = x0.mean(0)
    comm = bound(S, "topk:1")
    hyper = {"step": torch.zeros(n, 1, dtype=torch.float64), "consensus": torch.full((n, 1), 0.3, dtype=torch.float64)}
    rounds = choco_rounds(x0, lambda w: torch.zeros_like(w), comm.shift_sent, hyper)
    for _ in range(400):
        x = next(rounds)
    assert (x - average).abs().max() < 1e-6
    plain, w = bound(S, "topk:1"), x0
    for _ in range(400):
        w = plain.shift(w)
    assert (w - w.mean(0)).abs().max() > 1e-3 or (w.mean(0) - average).abs().max() > 1e-3


def test_beer_is_exact_under_compression_where_compressed_tracking_is_not():
    """f_i(x) = |x - b_i|^2 / 2 on a ring: the minimiser of the sum is mean(b). BEER with top-2 of
    6 coordinates (error feedback on x and on the tracker) reaches it; gradient tracking whose
    messages are compressed the same way, with no error feedback, does not."""
    from surf_dist.methods.registry import beer_rounds, gradient_tracking_rounds
    n, d = 6, 3
    rng = np.random.default_rng(6)
    b = torch.as_tensor(rng.normal(size=(n, d)))
    x0 = torch.as_tensor(rng.normal(size=(n, d)))
    grad = lambda x: x - b
    hyper = {"step": torch.full((n, 1), 0.1, dtype=torch.float64), "consensus": torch.full((n, 1), 0.2, dtype=torch.float64)}
    rounds = beer_rounds(x0, grad, bound(ring(n), "topk:2").shift_sent, hyper)
    for _ in range(1500):
        x = next(rounds)
    assert (x - b.mean(0)).abs().max() < 1e-8
    plain = gradient_tracking_rounds(x0, grad, bound(ring(n), "topk:2").shift, hyper)
    for _ in range(1500):
        w = next(plain)
    assert not torch.isfinite(w).all() or (w - b.mean(0)).abs().max() > 1e-3


def test_choices_saved_before_compression_count_as_full_rows_only():
    """The demo's shipped baseline choices and an older bench's (no ``compress`` in their task
    settings) were made with full rows: used as such, refused under a compressor."""
    from surf_dist.commands.bench import check_same_tasks
    from surf_dist.commands.bench.demo import shipped_choices
    from surf_dist.io.config import preset, with_overrides
    default = preset("default")
    q8 = with_overrides(default, {"task": {"compress": "q8"}})
    assert shipped_choices(default) is not None and shipped_choices(q8) is None
    older = {k: v for k, v in default.to_dict()["task"].items() if k != "compress"}
    check_same_tasks("saved", older, default.model.batch_size, default, "differ", "tune here")
    with pytest.raises(ValueError, match="compress 'none' there, 'q8' here"):
        check_same_tasks("saved", older, q8.model.batch_size, q8, "differ", "tune here")


def test_a_silent_sender_holds_the_compressed_row_it_last_sent():
    """``shift(..., senders, hold=0)``: agent 0 sends in round 1 and is silent in round 2, where
    its neighbours use the q2 row they received in round 1 (not a fresh draw of its round-2 row)
    and it keeps its own row exact. By hand: Q_1 = Q(Z) of round 1, then
    (S Y)_i = s_ii y_i + sum_{j != i} s_ij q_j with q_0 = (Q_1)_0."""
    S = ring(5)
    comm = bound(S, "q2")
    Z = torch.as_tensor(np.random.default_rng(1).normal(size=(5, 6)))
    everyone = torch.ones(5, dtype=torch.bool)
    comm.shift(Z, everyone, hold=0)
    first = comm.compressor.apply(comm._messages(Z), comm._keys, 0).reshape(5, 6)
    silent = everyone.clone()
    silent[0] = False
    Y = Z + 1.0
    out = comm.shift(Y, silent, hold=0)
    fresh = comm.compressor.apply(comm._messages(Y), comm._keys, 1).reshape(5, 6)
    sent = fresh.clone()
    sent[0] = first[0]
    S_t = torch.as_tensor(S)
    expected = torch.diag(S_t)[:, None] * Y + (S_t - torch.diag(torch.diag(S_t))) @ sent
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    offdiag = S_t - torch.diag(torch.diag(S_t))
    assert not torch.allclose(out, torch.diag(S_t)[:, None] * Y + offdiag @ fresh)     # a fresh draw differs
    assert comm.ledger.messages.tolist() == [2 + 0, 2 + 2, 2 + 2, 2 + 2, 2 + 2]
