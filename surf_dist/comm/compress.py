"""Compressed messages: what a sending agent puts on the wire instead of its full row.

Legend: N: hosted rows, R: messages per row (replicas of a grid side by side; 1 otherwise),
m: coordinates of one message, k: coordinates a sparsifier keeps, b: bits per coordinate.

A spec is a string (``--compress``):

  none         the full row at the dtype in use (the default; exactly what runs without it)
  qB           stochastic quantisation to B bits (1 <= B <= 32) with one scale per message:
               s = max_j |z_j| (rounded up to float32), 2^B levels evenly spaced on [-s, s],
               each coordinate rounded to one of its two neighbouring levels at random with
               the probabilities that make it unbiased: E[Q(z)] = z, and each coordinate's
               variance is at most (s / (2^B - 1))^2 (QSGD-style; the levels span the row's
               range instead of its norm, so one bit still carries a sign)
  topk:K       the K coordinates of largest magnitude, the others zero (biased)
  randk:K      K coordinates drawn uniformly without replacement, the others zero (biased:
               not rescaled by m / K, as CHOCO's rand_k)
               K: an integer >= 1 (coordinates per message), or a fraction 0 < F <= 1 written
               with a decimal point (``topk:0.01``: ceil(F m) coordinates, at least 1)

Bytes on the wire of one message (what the ledger counts, ``MessageCost``):
  none: m values at the dtype's size; qB: ceil(B m / 8) payload bytes + a float32 scale (4);
  topk / randk: k values at the dtype's size + k int32 indices (4 bytes each; a receiver that
  shares the seed could regenerate randk's indices, which the count does not assume).

Randomness: the uniforms of a message are a counter-based hash of (the sender's key, the
round, the coordinate): the sender's key names the agent in its task (``Worker.load``: the
task's seed and the agent index), the round is the number of shifts since ``bind``. Nothing
depends on the worker that hosts the agent or on how many there are, so every backend and
worker count draws the same numbers; replicas of a grid share their agent's draws.

Gradient (meta-training through a compressor): straight-through. The backward of ``Q(z)`` is
the identity, as if nothing had been compressed; the forward value is the compressed row.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

KINDS = ("none", "quantize", "topk", "randk")
SYNTAX = "none, qB (B bits, 1..32), topk:K or randk:K (K coordinates >= 1, or a fraction like 0.01)"


@dataclass(frozen=True)
class MessageCost:
    """Bytes of one message on the wire, by part."""
    payload: int        # values (quantised levels or kept coordinates)
    scales: int         # per-message scales
    indices: int        # positions of kept coordinates

    @property
    def total(self) -> int:
        return self.payload + self.scales + self.indices


@dataclass(frozen=True)
class Compressor:
    """A parsed ``--compress`` spec (module doc). ``bits`` for quantisation; ``count`` or
    ``fraction`` for the sparsifiers."""
    kind: str = "none"
    bits: int = 0
    count: int = 0
    fraction: float = 0.0

    @property
    def identity(self) -> bool:
        return self.kind == "none"

    def __str__(self) -> str:
        if self.kind == "quantize":
            return f"q{self.bits}"
        if self.kind in ("topk", "randk"):
            return f"{self.kind}:{self.count if self.count else repr(self.fraction)}"
        return "none"

    def kept(self, m: int) -> int:
        """k: the coordinates a sparsifier keeps of a message of ``m``."""
        if self.count:
            return min(self.count, m)
        return max(1, math.ceil(self.fraction * m - 1e-9))

    def cost(self, m: int, element_size: int) -> MessageCost:
        """Bytes of one message of ``m`` coordinates whose values are ``element_size`` bytes."""
        if self.kind == "quantize":
            return MessageCost(math.ceil(self.bits * m / 8), 4, 0)
        if self.kind in ("topk", "randk"):
            k = self.kept(m)
            return MessageCost(k * element_size, 0, 4 * k)
        return MessageCost(m * element_size, 0, 0)

    def check_fits(self, d: int, said: str = "") -> None:
        """ValueError unless a message of ``d`` coordinates can keep ``count`` of them; ``said``:
        where the spec comes from (default: ``--compress SPEC``)."""
        if self.count > d:
            raise ValueError(f"{said or f'--compress {self}'}: keeps {self.count} coordinates but a message holds d = {d}; "
                             f"pass {self.kind}:K with K <= {d}, or a fraction such as {self.kind}:0.1")

    def apply(self, Z_nrm: torch.Tensor, keys_n: np.ndarray, round_: int) -> torch.Tensor:
        """Q of every message (N, R, m) -> (N, R, m), straight-through gradient (module doc)."""
        if self.identity:
            return Z_nrm
        return _StraightThrough.apply(Z_nrm, self, keys_n, round_)

    def compressed(self, Z_nrm: torch.Tensor, keys_n: np.ndarray, round_: int) -> torch.Tensor:
        """The forward value of ``apply`` (no gradient)."""
        N, _, m = Z_nrm.shape
        if self.kind == "topk":
            index = Z_nrm.abs().topk(self.kept(m), dim=-1).indices
            return torch.zeros_like(Z_nrm).scatter(-1, index, Z_nrm.gather(-1, index))
        u = torch.as_tensor(uniforms(keys_n, round_, m), device=Z_nrm.device)[:, None, :]    # (N, 1, m)
        if self.kind == "randk":
            index = u.expand_as(Z_nrm).topk(self.kept(m), dim=-1).indices
            return torch.zeros_like(Z_nrm).scatter(-1, index, Z_nrm.gather(-1, index))
        return quantize(Z_nrm, u, self.bits)


def quantize(Z: torch.Tensor, u: torch.Tensor, bits: int) -> torch.Tensor:
    """Stochastic quantisation of every message (last axis) to ``bits`` bits (module doc):
    Z (..., m), u (..., m) uniforms in [0, 1) -> (..., m) at Z's dtype; unbiased over u."""
    z = Z.double()
    scale = z.abs().amax(-1, keepdim=True)
    scale32 = scale.float()
    scale32 = torch.where(scale32.double() < scale, torch.nextafter(scale32, torch.full_like(scale32, math.inf)), scale32)
    scale = scale32.double()
    levels = 2.0 ** bits - 1
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    t = ((z / safe + 1) * (levels / 2)).clamp(0, levels)        # position on the level grid
    low = t.floor()
    q = low + (u < (t - low)).double()
    out = (q * (2 / levels) - 1) * scale
    return torch.where(scale > 0, out, torch.zeros_like(out)).to(Z.dtype)


class _StraightThrough(torch.autograd.Function):
    """y = Q(x) forward; backward passes the gradient through unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, Z, compressor, keys, round_):
        return compressor.compressed(Z, keys, round_)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None, None


_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(keys_n: np.ndarray, round_: int, m: int) -> np.ndarray:
    """Uniforms in [0, 1) (N, m), float64, a hash of (key, round, coordinate): the same numbers
    on any machine, backend and worker count."""
    with np.errstate(over="ignore"):
        keys = _mix(np.asarray(keys_n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1))
        base = _mix(keys ^ _mix(np.uint64(round_) + np.uint64(0x632BE59BD9B4E019)))
        x = _mix(base[:, None] + np.arange(m, dtype=np.uint64)[None, :] * np.uint64(0x9E3779B97F4A7C15))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"


def parse_compressor(text: str, said: str = "") -> Compressor:
    """The ``Compressor`` of a spec string; ValueError naming the problem and the syntax, and
    where the spec comes from (``said``; default: ``--compress SPEC``)."""
    said = said or f"--compress {text}"
    spec = str(text).strip().lower()
    if spec in ("none", "identity", ""):
        return Compressor()
    quant = re.fullmatch(r"q(-?\d+)", spec)
    if quant:
        bits = int(quant.group(1))
        if not 1 <= bits <= 32:
            raise ValueError(f"{said}: a bit width must lie in 1..32, got {bits}; pass e.g. q8")
        return Compressor("quantize", bits=bits)
    sparse = re.fullmatch(r"(topk|randk):(.*)", spec)
    if sparse:
        kind, value = sparse.groups()
        if re.fullmatch(r"-?\d+", value):
            count = int(value)
            if count <= 0:
                raise ValueError(f"{said}: k must be >= 1 coordinate (or a fraction in (0, 1]), "
                                 f"got {count}; pass e.g. {kind}:10 or {kind}:0.1")
            return Compressor(kind, count=count)
        if re.fullmatch(r"-?" + _NUMBER, value):
            fraction = float(value)
            if not 0 < fraction <= 1:
                raise ValueError(f"{said}: a fraction of the coordinates must lie in (0, 1], "
                                 f"got {value}; pass e.g. {kind}:0.1")
            return Compressor(kind, fraction=fraction)
        raise ValueError(f"{said}: {kind} needs a count or a fraction after the colon; "
                         f"pass e.g. {kind}:10 or {kind}:0.01")
    raise ValueError(f"{said}: unknown compressor; choose {SYNTAX}")
