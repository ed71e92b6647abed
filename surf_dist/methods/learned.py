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

from ..comm.base import Communicator
from ..io.config import ModelConfig
from ..problem.softmax import grad_per_agent
from ..problem.tasks import Shards

# rows (node x coordinate) of the compact net's hidden layer at once without autograd: 4 MB in
# float32, which stays in cache (4-5x faster than the whole (N d, H) layer at 10,000 agents)
MLP_ROWS = 1 << 16


def graph_filter(taps_k: torch.Tensor, hops: list[torch.Tensor]) -> torch.Tensor:
    """H(W; S) = sum_{k=0..K} h_k S^k W, from hops = [W, S W, ..., S^K W], each (N, d)."""
    return sum(h * Z for h, Z in zip(taps_k, hops))


def rms(x_nd: torch.Tensor) -> torch.Tensor:
    """Per-agent root mean square over its own coordinates: (N, d) -> (N, 1)."""
    return x_nd.pow(2).mean(dim=1, keepdim=True).add(1e-12).sqrt()


class CompactLocalNet(nn.Module):
    """A learned-optimizer update from per-coordinate features, independent of d.

    Starting from V_0 = w_i, E local sub-steps on the layer's mini-batch (no communication):
      V_{e+1} = V_e - [a_{l,e} g_e + rms(g_e) c_{l,e} MLP_l(phi_e)],  g_e = grad f_i(V_e; B_{l,i})
      phi_e (d, F) = [g_e / rms(g_e), (w_i - (S W)_i) / rms(.), V_e / rms(V_e), m_i / rms(m_i)]
    and Psi_l = w_i - V_E. ``m_i`` is the agent's previous layer update (a local momentum
    memory). With ``tracking`` a fifth feature is the agent's gradient tracker y_i / rms(y_i)
    (``UnrolledDGD``: an estimate of the network-average gradient, as in gradient tracking).
    Every feature is normalised by a statistic of the agent's own vector: local only.
    With ``zero_init`` the MLP's output weights start at zero: the untrained network is DGD with
    E plain gradient sub-steps per layer, whatever the seed (only w1's draw depends on it).
    """

    def __init__(self, num_layers: int, hidden: int, init_step: float, local_steps: int,
                 generator: torch.Generator, tracking: bool = False, zero_init: bool = False):
        super().__init__()
        self.num_features = 4 + int(tracking)
        F, H, E = self.num_features, hidden, local_steps
        self.log_step = nn.Parameter(torch.full((num_layers, E), math.log(init_step)))
        self.out_scale = nn.Parameter(torch.full((num_layers, E), 0.1))
        self.w1 = nn.Parameter(torch.randn(num_layers, F, H, generator=generator) / math.sqrt(F))
        self.b1 = nn.Parameter(torch.zeros(num_layers, H))
        self.w2 = nn.Parameter(torch.zeros(num_layers, H) if zero_init
                               else torch.randn(num_layers, H, generator=generator) / math.sqrt(H))

    def mlp(self, layer: int, phi_ndf: torch.Tensor) -> torch.Tensor:
        """tanh(phi w1 + b1) w2, computed as 2 sigmoid(2 (phi w1 + b1)) w2 - sum(w2).

        The same function; on the CPU torch's tanh costs ~5x a sigmoid, and the (N d, H)
        hidden layer is the largest tensor of a training step (this form halves its time).
        """
        phi = phi_ndf.reshape(-1, phi_ndf.shape[-1])
        w2 = self.w2[layer]
        if torch.is_grad_enabled() or phi.shape[0] <= MLP_ROWS:
            pre = torch.addmm(2 * self.b1[layer], phi, 2 * self.w1[layer])
            return (2 * (torch.sigmoid(pre) @ w2) - w2.sum()).reshape(phi_ndf.shape[:-1])
        # without autograd (evaluation) in blocks of rows: the (N d, H) hidden layer never whole
        out = torch.empty(phi.shape[0], dtype=phi.dtype, device=phi.device)
        for start in range(0, phi.shape[0], MLP_ROWS):
            pre = torch.addmm(2 * self.b1[layer], phi[start:start + MLP_ROWS], 2 * self.w1[layer])
            out[start:start + MLP_ROWS] = 2 * (torch.sigmoid(pre) @ w2) - w2.sum()
        return out.reshape(phi_ndf.shape[:-1])

    def forward(self, layer, W_nd, disagreement_nd, X_nbp, Y_nb, memory_nd, tracker_nd=None, grad_nd=None):
        """``grad_nd``: the gradient at W_nd on this mini-batch, where the caller has it."""
        V = W_nd
        for e in range(self.log_step.shape[1]):
            G = grad_nd if e == 0 and grad_nd is not None else grad_per_agent(V, X_nbp, Y_nb)
            features = [G / rms(G), disagreement_nd / rms(disagreement_nd), V / rms(V), memory_nd / rms(memory_nd)]
            if tracker_nd is not None:
                features.append(tracker_nd / rms(tracker_nd))
            phi = torch.stack(features, dim=-1)                                   # (N, d, F)
            learned = self.mlp(layer, phi)                                        # (N, d)
            V = V - (self.log_step[layer, e].exp() * G + rms(G) * self.out_scale[layer, e] * learned)
        return W_nd - V


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

    def forward(self, layer, W_nd, disagreement_nd, X_nbp, Y_nb, memory_nd, tracker_nd=None, grad_nd=None):
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
        if config.correction:          # exact diffusion / NIDS mixes with (I + S) / 2
            taps[:, 0], taps[:, 1:] = 0.5, 0.5 / K
        else:
            taps[:, 1:] = 1.0 / K      # start as an average of the 1..K hop aggregations
        self.taps = nn.Parameter(taps)
        if config.momentum:     # a local term (W_(l-1) is the agent's own): no communication
            self.beta = nn.Parameter(torch.full((L,), config.momentum_init))
        if config.correction:   # c_l times the agent's previous local update: local, no communication
            self.correction = nn.Parameter(torch.ones(L))
        if config.warmup_steps:  # learned sizes of the plain local steps before the first layer
            self.log_warmup = nn.Parameter(torch.full((config.warmup_steps,), math.log(config.init_step)))
        if config.local_net == "compact":
            self.local_net = CompactLocalNet(L, config.hidden, config.init_step, config.local_steps, gen,
                                             config.tracking, config.zero_init)
        else:
            if config.tracking or config.zero_init:
                raise ValueError("tracking and zero_init need the compact local network")
            self.local_net = PaperLocalNet(L, config.batch_size, num_inputs, num_classes, gen)

    def forward(self, W0_nd: torch.Tensor, shards: Shards, positions_lnb: torch.Tensor,
                comm: Communicator, active_ln: torch.Tensor | None = None,
                stale: bool = False, each_layer=None) -> list[torch.Tensor]:
        """Run the L layers from W_0 (zeros with ``config.start == "zero"``); returns
        [W_0, W_1, ..., W_L]. With ``each_layer``, it is called with every iterate as it is
        made (W_0 first) and only the last two are kept and returned (evaluation of many
        agents: two iterates in memory, not L + 1).

        ``active_ln`` (L, N) bool: False marks an asynchronous agent at that layer: it neither
        updates nor sends (its neighbours receive zeros, or with ``stale`` the last message it
        sent on that hop, which they kept: ``comm.shift(..., hold=k)``; W_0 before its first).

        With ``config.momentum`` a heavy-ball term beta_l (W_l - W_(l-1)) is added to every layer
        (its own previous iterate: no communication), which can accelerate consensus as it
        accelerates gradient descent.

        With ``config.combine == "atc"`` (adapt then combine) every layer first moves each agent
        locally, U = W - Psi_l(W, B_l) [+ beta_l (W - W_(l-1))] [+ c_l Psi_(l-1)], and then filters
        the adapted iterate: W_l = H_l(U; S). The first round's messages already hold a local
        step on the agent's data (with W_0 = 0 they hold nothing else). With momentum and
        correction at beta = c = 1 and taps (1/2, 1/2) a layer is exact diffusion / NIDS with the
        local network's update in place of the gradient step. The local network's disagreement
        feature is the previous layer's U - S U (zero at the first layer).

        With ``config.tracking`` every agent also keeps a gradient tracker
        y_l = (S y)_{l-1} + g_l - g_{l-1} (y_0 = g_0; g_l: its gradient at W_l on B_l), sent with
        W in the first hop's message: the same rounds, twice the bytes on that hop.
        """
        if self.config.start == "zero":      # the network's own start, whatever the task's W_0
            W0_nd = torch.zeros_like(W0_nd)
        K, d = self.config.num_hops, W0_nd.shape[1]
        tracking = self.config.tracking
        Ws = [W0_nd]
        if each_layer is not None:
            each_layer(W0_nd)
        last_sent: list[torch.Tensor | None] = [None] * K
        memory = torch.zeros_like(W0_nd)     # each agent's previous update (local state)
        tracker = mixed_tracker = grad_prev = previous_tracker = None
        atc = self.config.combine == "atc"
        spread = torch.zeros_like(W0_nd)     # atc: the previous layer's U - S U (none before the first)
        for layer in range(self.config.num_layers):
            W = Ws[-1]
            if layer == 0 and self.config.warmup_steps:
                W = self.warm_up(W, shards, positions_lnb, active_ln)
            active = None if active_ln is None else active_ln[layer]
            X_b, Y_b = shards.minibatch(positions_lnb[layer])
            grad = None
            if tracking:
                grad = grad_per_agent(W, X_b, Y_b)
                tracker = grad if tracker is None else mixed_tracker + grad - grad_prev
                if active is not None and grad_prev is not None:   # an idle agent keeps its tracker
                    tracker = torch.where(active[:, None], tracker, previous_tracker)
                    grad = torch.where(active[:, None], grad, grad_prev)
                previous_tracker, grad_prev = tracker, grad
            # heavy ball on the agent's own previous iterate (W_(-1) = W_0: none at the first layer)
            heavy = self.beta[layer] * (W - Ws[-2]) if self.config.momentum and layer else 0.0
            if atc:
                psi = self.local_net(layer, W, spread, X_b, Y_b, memory, tracker, grad)
                U = W - psi + heavy
                if self.config.correction:
                    U = U + self.correction[layer] * memory
                if active is not None:
                    U = torch.where(active[:, None], U, W)
                hops = [U]
            else:
                hops = [W]
            for k in range(K):
                message = torch.cat([hops[-1], tracker], dim=1) if tracking and k == 0 else hops[-1]
                if active is not None:
                    if last_sent[k] is None:     # before its first message: W_0 (zeros for the tracker)
                        last_sent[k] = torch.cat([W0_nd, torch.zeros_like(message[:, d:])], dim=1)
                    fill = last_sent[k] if stale else torch.zeros_like(message)
                    message = torch.where(active[:, None], message, fill)
                    last_sent[k] = message
                shifted = comm.shift(message, senders=active, hold=k if stale and active is not None else None)
                if shifted.shape[1] > d:
                    shifted, mixed_tracker = shifted[:, :d], shifted[:, d:]
                hops.append(shifted)
            if atc:
                spread = hops[0] - hops[1]
                W_next = graph_filter(self.taps[layer], hops)
            else:
                psi = self.local_net(layer, W, W - hops[1], X_b, Y_b, memory, tracker, grad)
                W_next = graph_filter(self.taps[layer], hops) - psi + heavy
            if active is not None:
                W_next = torch.where(active[:, None], W_next, W)
                psi = torch.where(active[:, None], psi, memory)
            memory = psi
            Ws.append(W_next)
            if each_layer is not None:
                each_layer(W_next)
                del Ws[:-2]              # the heavy-ball term reads W_(l-1)
        return Ws

    def warm_up(self, W_nd: torch.Tensor, shards: Shards, positions_lnb: torch.Tensor,
                active_ln: torch.Tensor | None) -> torch.Tensor:
        """``warmup_steps`` plain local gradient steps on the agent's whole seen data (as the
        local-step baselines take them), W <- W - exp(log_warmup[e]) grad f_i(W); no
        communication. An agent asleep at the first layer does not move."""
        start = W_nd
        for e in range(self.config.warmup_steps):
            W_nd = W_nd - self.log_warmup[e].exp() * grad_per_agent(W_nd, shards.X_seen, shards.Y_seen)
        if active_ln is not None:
            W_nd = torch.where(active_ln[0][:, None], W_nd, start)
        return W_nd
