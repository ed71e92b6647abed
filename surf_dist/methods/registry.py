"""A uniform registry of decentralized optimization baselines on the ``Communicator``.

Legend: N: nodes (every replica of every task, stacked), d: params per agent, S: the shift
(one ``comm.shift`` call = one communication round), S~ = (I + S) / 2, a: step (N, 1),
b: momentum (N, 1), E: local steps, K: gossip rounds, g(x): each agent's local gradient (full
local data, or a mini-batch for the stochastic methods), x_{-1} = x_0.

  method             update per iteration                                     rounds  floats sent
  dgd                w <- S w - a g(w)                                             1  d
  dsgd               the same with a mini-batch gradient                           1  d
  gradient_tracking  x <- S x - a y;  y <- S y + g(x_new) - g(x);  y_0 = g(x_0)    1  2d (x, y)
  dfedavgm           E local heavy-ball SGD steps (velocity reset), then w <- S w  1  d
  extra              x_1 = S x_0 - a g(x_0);
                     x_{k+2} = (I + S) x_{k+1} - S~ x_k - a (g(x_{k+1}) - g(x_k))  1  d (S x_k cached)
  nids               x_1 = x_0 - a g(x_0)  (no round);
                     x_{k+2} = S~ (2 x_{k+1} - x_k - a g(x_{k+1}) + a g(x_k))     1  d
  dgd_heavy_ball     w_{k+1} = S w_k - a g(w_k) + b (w_k - w_{k-1})                 1  d
  dgd_nesterov       v_k = w_k + b (w_k - w_{k-1});  w_{k+1} = S~ v_k - a g(v_k)    1  d
  gt_heavy_ball      gradient tracking plus b (x_k - x_{k-1}) in the x update       1  2d (x, y)
  gt_nesterov        gradient tracking mixing v_k = x_k + b (x_k - x_{k-1})
                     and tracking g(v)                                             1  2d (v, y)
  chebyshev_dgd      w <- P_K(S) (w - a g(w))                                      K  d
  chebyshev_gt       x <- P_K(S) (x - a y);  y <- P_K(S) y + g(x_new) - g(x)       K  2d
  dgd_local_steps    E steps w <- w - a g(w), then w <- S w                        1  d
  gt_local_steps     z_0 = x, z_{e+1} = z_e - a (g(z_e) - g(x) + y) for e < E;
                     x <- S x + (z_E - x);  y <- S y + g(x_new) - g(x)             1  2d (x, y)

  choco              x' = x - a g(x);  q = Q(x' - h);  h <- h + q;  s <- s + S q;    1  Q(d)
                     x <- x' + c (s - h);  h_0 = s_0 = 0 (S h kept as s)

  beer               [q, p] = Q([x - h, v - e]);  h += q;  e += p;  (h, e start at 0)    1  Q(2d)
                     x <- x + c (S h - h) - a v;  v <- v + c (S e - e) + g(x_new) - g(x);  v_0 = g(x_0)

choco is CHOCO-SGD (Koloskova, Stich, Jaggi 2019, Algorithm 2) with each agent's full local
gradient, as dgd; beer is BEER (Zhao, Li, Richtarik, Chi 2022), compressed gradient tracking
with public copies of x and of the tracker v, both sent in one message (one row, one scale).
In choco h is the agent's public copy x_hat, which every neighbour also holds, updated by the
compressed difference q it sends (error feedback: what compression drops is sent in a later
round); c is the consensus step gamma, tuned on its own grid. ``shift_sent`` gives q (the
row as sent, Q the communicator's compressor) and S q; with no compressor q = x' - h.

P_K(S) = T_K(S / lambda2) / T_K(1 / lambda2) (see ``methods_accel``). gt_local_steps adds the
local displacement z_E - x to the mixed S x (and sends x with y, so the message can go out before
the local steps), which makes E = 1 exactly gradient_tracking.

``Method.run(W0, shards, comm, hyper, rounds, batches=None)`` yields ``(W_r, evals_r)`` for
r = 0 .. rounds, where r counts calls of ``comm.shift``; it never calls it more than ``rounds``
times and stops after r = rounds. W_r (N, d) is the model after r rounds (the last completed
iterate inside a K-round iteration). evals_r is the number of local gradient evaluations per
agent made before that yield (a full local gradient or a mini-batch gradient counts 1; the
initial gradient of the tracking methods is made after yielding r = 0, so evals_0 = 0, and a
gradient is counted at the first yield after it is computed). Mini-batch evaluation number i
(0-based, counted per agent) uses positions ``batches(i)`` (N, b). ``hyper`` holds the
``continuous`` names as per-node columns (N, 1), the ``discrete`` names as ints, and
``"lambda2"`` (N, 1) when ``needs_spectrum``. Nodes only interact through ``comm.shift``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import islice

import torch

from ..comm.base import Communicator
from .accelerated import (Grad, Shift, chebyshev_dgd_rounds, chebyshev_gt_rounds, dgd_heavy_ball_rounds,
                            dgd_nesterov_rounds, gt_heavy_ball_rounds, gt_nesterov_rounds)
from ..problem.softmax import grad_per_agent
from ..problem.tasks import Shards

Batches = Callable[[int], torch.Tensor]     # gradient evaluation number -> positions (N, b)
Rounds = Callable[[torch.Tensor, Grad, Shift, dict], Iterator[torch.Tensor]]


@dataclass(frozen=True)
class Method:
    name: str
    run: Callable[..., Iterator[tuple[torch.Tensor, int]]]
    continuous: tuple[str, ...]           # tuned on log grids by the caller, per-node columns (N, 1)
    discrete: dict[str, tuple[int, ...]]  # tuned over these integer values, passed as ints
    needs_spectrum: bool = False          # hyper["lambda2"]: (N, 1) per-node column
    stochastic: bool = False              # uses mini-batches (batches is not None)
    doc: str = ""                         # one line: the update and what one round sends


class LocalGradients:
    """g(W): every hosted agent's local gradient (N, d), counting evaluations per agent.

    ``source``: the shards (gradients of ``problem.grad_per_agent`` on the seen samples, or on
    mini-batch ``batches(i)`` for evaluation i), or any object with ``full(W)`` and
    ``batch(W, i)`` (e.g. ``bench.replicas.ReplicaProblem``, a whole grid at once)."""

    def __init__(self, source, stochastic: bool, batches: Batches | None = None):
        self.source, self.stochastic, self.batches, self.evals = source, stochastic, batches, 0

    def __call__(self, W_nd: torch.Tensor) -> torch.Tensor:
        i, self.evals = self.evals, self.evals + 1
        if not isinstance(self.source, Shards):
            return self.source.batch(W_nd, i) if self.stochastic else self.source.full(W_nd)
        if not self.stochastic:
            return grad_per_agent(W_nd, self.source.X_seen, self.source.Y_seen)
        return grad_per_agent(W_nd, *self.source.minibatch(self.batches(i)))


# The basic methods: endless generators over rounds, one ``shift`` then one yield of the model.
def dgd_rounds(w: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    while True:
        w = shift(w) - hyper["step"] * grad(w)
        yield w


def gradient_tracking_rounds(x: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    g = grad(x)
    y = g
    while True:
        Sx, Sy = shift(torch.cat([x, y], 1)).chunk(2, dim=1)
        x = Sx - hyper["step"] * y
        g_new = grad(x)
        y, g = Sy + g_new - g, g_new
        yield x


def dfedavgm_rounds(w: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a, b = hyper["step"], hyper["momentum"]
    while True:
        velocity = torch.zeros_like(w)
        for _ in range(hyper["local_steps"]):
            velocity = b * velocity + grad(w)
            w = w - a * velocity
        w = shift(w)
        yield w


def extra_rounds(x_prev: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a = hyper["step"]
    g_prev, Sx_prev = grad(x_prev), shift(x_prev)
    x = Sx_prev - a * g_prev
    yield x
    while True:
        g, Sx = grad(x), shift(x)
        x_next = x + Sx - 0.5 * (x_prev + Sx_prev) - a * (g - g_prev)
        x_prev, Sx_prev, g_prev, x = x, Sx, g, x_next
        yield x


def nids_rounds(x_prev: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a = hyper["step"]
    g_prev = grad(x_prev)
    x = x_prev - a * g_prev                         # x_1: a local step, no round
    while True:
        g = grad(x)
        z = 2 * x - x_prev - a * (g - g_prev)
        x_prev, g_prev, x = x, g, 0.5 * (z + shift(z))
        yield x


def dgd_local_steps_rounds(w: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    while True:
        for _ in range(hyper["local_steps"]):
            w = w - hyper["step"] * grad(w)
        w = shift(w)
        yield w


def gt_local_steps_rounds(x: torch.Tensor, grad: Grad, shift: Shift, hyper: dict) -> Iterator[torch.Tensor]:
    a = hyper["step"]
    g = grad(x)
    y = g
    while True:
        Sx, Sy = shift(torch.cat([x, y], 1)).chunk(2, dim=1)
        step = torch.zeros_like(x)                  # z_e - x, the corrected local displacement
        for e in range(hyper["local_steps"]):
            g_z = g if e == 0 else grad(x + step)
            step = step - a * (g_z - g + y)
        x = Sx + step
        g_new = grad(x)
        y, g = Sy + g_new - g, g_new
        yield x


def choco_rounds(x: torch.Tensor, grad: Grad, shift_sent, hyper: dict) -> Iterator[torch.Tensor]:
    """CHOCO-SGD (module doc): ``shift_sent(z)`` -> (S Q(z), Q(z)), one round."""
    a, c = hyper["step"], hyper["consensus"]
    public = torch.zeros_like(x)            # h = x_hat, the copy every neighbour holds
    mixed_public = torch.zeros_like(x)      # s = S h
    while True:
        half = x - a * grad(x)
        mixed_q, q = shift_sent(half - public)
        public, mixed_public = public + q, mixed_public + mixed_q
        x = half + c * (mixed_public - public)
        yield x


def beer_rounds(x: torch.Tensor, grad: Grad, shift_sent, hyper: dict) -> Iterator[torch.Tensor]:
    """BEER (module doc): gradient tracking with compressed, error-fed messages. Each round sends
    [x - h, v - e] compressed, then mixes with the updated copies. The paper starts the copies at
    h = x_0 and e = g(x_0), which assumes every neighbour already knows them; here they start at
    zero, so every byte that builds them is sent and counted. With no compressor and c = 1 it is
    gradient tracking (h = x and e = v after every round)."""
    a, c = hyper["step"], hyper["consensus"]
    d = x.shape[1]
    g = grad(x)
    v = g
    public_x, public_v = torch.zeros_like(x), torch.zeros_like(x)          # h, e: held by every neighbour
    mixed_x, mixed_v = torch.zeros_like(x), torch.zeros_like(x)            # S h, S e
    while True:
        mixed, sent = shift_sent(torch.cat([x - public_x, v - public_v], 1))
        public_x, public_v = public_x + sent[:, :d], public_v + sent[:, d:]
        mixed_x, mixed_v = mixed_x + mixed[:, :d], mixed_v + mixed[:, d:]
        x_new = x + c * (mixed_x - public_x) - a * v
        g_new = grad(x_new)
        v = v + c * (mixed_v - public_v) + g_new - g
        x, g = x_new, g_new
        yield x


def _runner(name: str, rounds_of: Rounds, required: tuple[str, ...], stochastic: bool, sent: bool = False):
    """Method.run for the endless round generator ``rounds_of``: validate, then yield (W_r, evals_r).
    ``sent``: the generator is given ``comm.shift_sent`` (error feedback), else ``comm.shift``."""
    def run(W0: torch.Tensor, shards: Shards, comm: Communicator, hyper: dict, rounds: int,
            batches: Batches | None = None) -> Iterator[tuple[torch.Tensor, int]]:
        missing = [key for key in required if key not in hyper]
        if missing:
            raise ValueError(f"{name} needs hyperparameters {missing} (got {sorted(hyper)})")
        plain = isinstance(shards, Shards)
        if plain and stochastic and batches is None:
            raise ValueError(f"{name} is stochastic: pass batches (gradient evaluation -> positions)")
        if plain and not stochastic and batches is not None:
            raise ValueError(f"{name} uses full local gradients: pass batches=None")
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        grad = LocalGradients(shards, stochastic, batches)
        shift = comm.shift_sent if sent else comm.shift
        return _paired(W0, grad, islice(rounds_of(W0, grad, shift, hyper), rounds))
    return run


def _paired(W0, grad: LocalGradients, models: Iterator[torch.Tensor]) -> Iterator[tuple[torch.Tensor, int]]:
    yield W0, 0
    for W in models:
        yield W, grad.evals


def _method(name: str, rounds_of: Rounds, continuous: tuple[str, ...], doc: str,
            discrete: dict[str, tuple[int, ...]] | None = None, needs_spectrum: bool = False,
            stochastic: bool = False, sent: bool = False) -> Method:
    discrete = discrete or {}
    required = (*continuous, *discrete, *(("lambda2",) if needs_spectrum else ()))
    return Method(name, _runner(name, rounds_of, required, stochastic, sent), continuous, discrete,
                  needs_spectrum, stochastic, doc)


GOSSIP_ROUNDS = (1, 2, 3, 4, 6)
LOCAL_STEPS = (1, 2, 4, 8)
DFEDAVGM_LOCAL_STEPS = (4,)        # compute-matched to SURF's 4 sub-steps

METHODS: dict[str, Method] = {m.name: m for m in (
    _method("dgd", dgd_rounds, ("step",), "w <- S w - a g(w); sends w (d)"),
    _method("dsgd", dgd_rounds, ("step",), "w <- S w - a g_batch(w); sends w (d)", stochastic=True),
    _method("gradient_tracking", gradient_tracking_rounds, ("step",),
            "x <- S x - a y, y <- S y + g(x_new) - g(x); sends x and y together (2d)"),
    _method("dfedavgm", dfedavgm_rounds, ("step", "momentum"),
            "E local heavy-ball SGD steps, then w <- S w; sends w (d)",
            {"local_steps": DFEDAVGM_LOCAL_STEPS}, stochastic=True),
    _method("extra", extra_rounds, ("step",),
            "x+ = (I + S) x - S~ x_prev - a (g(x) - g(x_prev)), S x_prev cached; sends x (d)"),
    _method("nids", nids_rounds, ("step",),
            "x+ = S~ (2 x - x_prev - a g(x) + a g(x_prev)), x_1 local; sends one vector (d)"),
    _method("dgd_heavy_ball", dgd_heavy_ball_rounds, ("step", "momentum"),
            "w+ = S w - a g(w) + b (w - w_prev); sends w (d)"),
    _method("dgd_nesterov", dgd_nesterov_rounds, ("step", "momentum"),
            "v = w + b (w - w_prev), w+ = S~ v - a g(v), S~ = (I + S) / 2; sends v (d)"),
    _method("gt_heavy_ball", gt_heavy_ball_rounds, ("step", "momentum"),
            "x+ = S x - a y + b (x - x_prev), y+ = S y + g(x+) - g(x); sends x and y (2d)"),
    _method("gt_nesterov", gt_nesterov_rounds, ("step", "momentum"),
            "v = x + b (x - x_prev), x+ = S~ v - a y, y+ = S y + g(v+) - g(v); sends v and y (2d)"),
    _method("chebyshev_dgd", chebyshev_dgd_rounds, ("step",),
            "w <- P_K(S) (w - a g(w)); K rounds, each sends d",
            {"gossip_rounds": GOSSIP_ROUNDS}, needs_spectrum=True),
    _method("chebyshev_gt", chebyshev_gt_rounds, ("step",),
            "x <- P_K(S) (x - a y), y <- P_K(S) y + g(x_new) - g(x); K rounds, each sends 2d",
            {"gossip_rounds": GOSSIP_ROUNDS}, needs_spectrum=True),
    _method("dgd_local_steps", dgd_local_steps_rounds, ("step",),
            "E local steps w <- w - a g(w), then w <- S w; sends w (d)", {"local_steps": LOCAL_STEPS}),
    _method("gt_local_steps", gt_local_steps_rounds, ("step",),
            "E corrected local steps z <- z - a (g(z) - g(x) + y), x <- S x + z - x, "
            "y <- S y + g(x_new) - g(x); sends x and y (2d)", {"local_steps": LOCAL_STEPS}),
    _method("choco", choco_rounds, ("step", "consensus"),
            "CHOCO-SGD: x' = x - a g(x), q = Q(x' - h), h += q, x = x' + c (S h - h); sends q (Q(d))", sent=True),
    _method("beer", beer_rounds, ("step", "consensus"),
            "BEER: [h, e] += Q([x - h, v - e]), x += c (S h - h) - a v, v += c (S e - e) + g(x+) - g(x); "
            "sends Q(2d)", sent=True),
)}
