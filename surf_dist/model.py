"""The unrolled network (U-DGD): W_l = H_l(W_{l-1}; S) - Psi_l(W_{l-1}, B_l).

Legend: N: nodes (agents of every task in the batch), d: params per agent, K: hops,
L: layers, b: mini-batch per agent, p: features + bias, C: classes, F: per-coordinate features.

The graph filter ``H_l(W; S) = sum_k h_{k,l} S^k W`` runs on whatever graph the communicator is
bound to (the graph is an input, never a parameter). The local network ``Psi_l`` sees only the
agent's own weights and a fresh mini-batch of its own data: nothing in it mixes agents.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .comm.base import Communicator
from .config import ModelConfig
from .problem import grad_per_agent
from .tasks import Shards


def graph_filter(taps_k: torch.Tensor, hops: list[torch.Tensor]) -> torch.Tensor:
    """H(W; S) = sum_{k=0..K} h_k S^k W, from hops = [W, S W, ..., S^K W], each (N, d)."""
    return sum(h * Z for h, Z in zip(taps_k, hops))


def rms(x_nd: torch.Tensor) -> torch.Tensor:
    """Per-agent root mean square over its own coordinates: (N, d) -> (N, 1)."""
    return x_nd.pow(2).mean(dim=1, keepdim=True).add(1e-12).sqrt()


class CompactLocalNet(nn.Module):
    """A learned-optimizer update from per-coordinate features, independent of d.

    Psi_l(w_i, B) = a_l * g_i + rms(g_i) * c_l * MLP_l(phi_i),  g_i = grad f_i(w_i; B_{l,i}),
    phi_i (d, F) = [g_i / rms(g_i), (w_i - (S W)_i) / rms(.), w_i / rms(w_i)]: every feature is
    normalised by a statistic of the agent's own vector, so the update is scale-aware but local.
    """
    num_features = 3

    def __init__(self, num_layers: int, hidden: int, init_step: float, generator: torch.Generator):
        super().__init__()
        F, H = self.num_features, hidden
        self.log_step = nn.Parameter(torch.full((num_layers,), math.log(init_step)))
        self.out_scale = nn.Parameter(torch.full((num_layers,), 0.1))
        self.w1 = nn.Parameter(torch.randn(num_layers, F, H, generator=generator) / math.sqrt(F))
        self.b1 = nn.Parameter(torch.zeros(num_layers, H))
        self.w2 = nn.Parameter(torch.randn(num_layers, H, generator=generator) / math.sqrt(H))

    def forward(self, layer, W_nd, G_nd, disagreement_nd, X_nbp, Y_nb):
        phi = torch.stack([G_nd / rms(G_nd), disagreement_nd / rms(disagreement_nd),
                           W_nd / rms(W_nd)], dim=-1)                          # (N, d, F)
        hidden = torch.tanh(phi @ self.w1[layer] + self.b1[layer])              # (N, d, H)
        learned = hidden @ self.w2[layer]                                       # (N, d)
        return self.log_step[layer].exp() * G_nd + rms(G_nd) * self.out_scale[layer] * learned


class PaperLocalNet(nn.Module):
    """The paper's local network: Psi_l = Linear(ReLU(Norm(Linear([vec(B_{l,i}); w_i])))).

    The raw mini-batch (features and one-hot labels, b (p + C) numbers) is concatenated with the
    agent's weights (d). ``Norm`` is a LayerNorm over that agent's own hidden vector (never
    across agents). About d (b (p + C) + 2 d) parameters per layer, tied to one d.
    """

    def __init__(self, num_layers: int, batch_size: int, num_inputs: int, num_classes: int,
                 generator: torch.Generator):
        super().__init__()
        d = num_inputs * num_classes
        fan_in = batch_size * (num_inputs + num_classes) + d
        self.num_classes = num_classes
        self.inner = nn.ModuleList(nn.Linear(fan_in, d) for _ in range(num_layers))
        self.norm = nn.ModuleList(nn.LayerNorm(d) for _ in range(num_layers))
        self.outer = nn.ModuleList(nn.Linear(d, d) for _ in range(num_layers))
        with torch.no_grad():
            for p in self.parameters():
                if p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=generator) / math.sqrt(p.shape[1]))
            for layer in self.outer:
                layer.weight.mul_(0.01)
                layer.bias.zero_()

    def forward(self, layer, W_nd, G_nd, disagreement_nd, X_nbp, Y_nb):
        onehot = torch.nn.functional.one_hot(Y_nb, self.num_classes).to(W_nd.dtype)
        inputs = torch.cat([X_nbp.flatten(1), onehot.flatten(1), W_nd], dim=1)
        hidden = torch.relu(self.norm[layer](self.inner[layer](inputs)))
        return self.outer[layer](hidden)


class UnrolledDGD(nn.Module):
    """L layers of graph filter minus local network, each fed a fresh mini-batch."""

    def __init__(self, config: ModelConfig, num_inputs: int, num_classes: int, seed: int = 0):
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(seed)
        L, K = config.num_layers, config.num_hops
        taps = torch.zeros(L, K + 1)
        taps[:, 1:] = 1.0 / K          # start as an average of the 1..K hop aggregations
        self.taps = nn.Parameter(taps)
        if config.local_net == "compact":
            self.local_net = CompactLocalNet(L, config.hidden, config.init_step, gen)
        else:
            self.local_net = PaperLocalNet(L, config.batch_size, num_inputs, num_classes, gen)

    def forward(self, W0_nd: torch.Tensor, shards: Shards, positions_lnb: torch.Tensor,
                comm: Communicator, active_ln: torch.Tensor | None = None,
                stale: bool = False) -> list[torch.Tensor]:
        """Run the L layers from W_0; returns [W_0, W_1, ..., W_L].

        ``active_ln`` (L, N) bool: False marks an asynchronous agent at that layer: it neither
        updates nor sends (its neighbours receive zeros, or with ``stale`` the last message it
        sent on that hop; W_0 before its first).
        """
        K = self.config.num_hops
        Ws = [W0_nd]
        last_sent = [W0_nd] * K
        for layer in range(self.config.num_layers):
            W = Ws[-1]
            active = None if active_ln is None else active_ln[layer]
            hops = [W]
            for k in range(K):
                message = hops[-1]
                if active is not None:
                    fill = last_sent[k] if stale else torch.zeros_like(message)
                    message = torch.where(active[:, None], message, fill)
                    last_sent[k] = message
                hops.append(comm.shift(message, senders=active))
            X_b, Y_b = shards.minibatch(positions_lnb[layer])
            G = grad_per_agent(W, X_b, Y_b)
            psi = self.local_net(layer, W, G, W - hops[1], X_b, Y_b)
            W_next = graph_filter(self.taps[layer], hops) - psi
            if active is not None:
                W_next = torch.where(active[:, None], W_next, W)
            Ws.append(W_next)
        return Ws
