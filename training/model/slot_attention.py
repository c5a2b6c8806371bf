"""Slot Attention (Locatello et al. 2020) split into project / step / iterate.

Shapes: B batch, N tokens, K slots, D slot width. The optional `Modulation` carries the
top-down signal of the self-modulating variant into `step`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import SlotAttentionConfig
from training.model.modulation import Modulation
from training.model.position import attention_moments, token_grid, token_map

PEAK_SHARPNESS = 20.0
"""Soft-argmax temperature of `locality_window`'s peak, on attention scaled to a maximum of 1:
a spot at 0.9 of the maximum weighs e^-2 of it."""


class SlotAttention(nn.Module):
    def __init__(self, cfg: SlotAttentionConfig, input_dim: int):
        super().__init__()
        d = cfg.slot_dim
        self.cfg = cfg
        self.scale = d**-0.5
        self.norm_inputs = nn.LayerNorm(input_dim)
        self.norm_slots = nn.LayerNorm(d)
        self.norm_mlp = nn.LayerNorm(d)
        self.to_q = nn.Linear(d, d, bias=False)
        self.to_k = nn.Linear(input_dim, d, bias=False)
        self.to_v = nn.Linear(input_dim, d, bias=False)
        self.gru = nn.GRUCell(d, d)
        self.mlp_in = nn.Linear(d, cfg.mlp_hidden)
        self.mlp_out = nn.Linear(cfg.mlp_hidden, d)
        # Glorot-uniform projections, as in the original (TF/Keras) Slot Attention. PyTorch's
        # default Linear init is ~3x smaller here, which leaves the initial attention logits at
        # std ~0.3: attention is almost uniform, every slot receives the same update, and
        # training sat on the symmetric "all slots alike" fixed point for thousands of steps.
        for layer in (self.to_q, self.to_k, self.to_v):
            nn.init.xavier_uniform_(layer.weight)

    def project(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs (B, N, Din) -> keys, values (B, N, D)."""
        x = self.norm_inputs(inputs)
        k = self.to_k(x)
        if self.cfg.key_pool > 1:
            p = self.cfg.key_pool
            grid = token_map(k.transpose(1, 2))  # (B, D, S, S)
            pooled = F.avg_pool2d(grid, p, 1, p // 2, count_include_pad=False)
            pooled = pooled.flatten(2).transpose(1, 2)
            mix = self.cfg.key_pool_mix
            k = pooled if mix == 1.0 else k + mix * (pooled - k)
        return k, self.to_v(x)

    def locality_bias(self, attn: torch.Tensor) -> torch.Tensor:
        """Previous attention (B, K, N) -> (B, K, N) log-density, up to a constant, of each
        token's position under a diagonal Gaussian fitted to that slot's attention.

        The fit is detached (an EM-style E-step prior, not a path for gradients), and the
        spread is floored at one token so a slot that holds a single token cannot collapse.
        With `locality_window` the fit sees only the attention near the slot's densest spot.

        Two forms of the same function. Training expands the squared distance,
        sum_c (g_c^2 - 2 g_c mu_c + mu_c^2) / var_c, into one (B*K, 4) x (4, N) product:
        2.3x cheaper, but it cancels terms up to 1 / var (~1000), so float rounding reaches
        ~1e-4 in the logits. Inference and export take the offsets themselves, which keeps
        the exported graph within the 1e-4 parity gate of PyTorch (the expanded form missed
        it: 2e-4)."""
        w = attn.detach()
        if self.cfg.locality_window:
            w = self._near_peak(w)
        side = round(w.shape[-1] ** 0.5)
        floor = (1.0 / max(side - 1, 1)) ** 2
        if not self.training:
            return self._separable_bias(w, floor)
        grid = token_grid(w)  # (N, 2) x, y
        w = w / (w.sum(-1, keepdim=True) + 1e-8)
        mean = w @ grid  # (B, K, 2)
        var = (w @ grid.square() - mean.square()).clamp_min(floor)
        coef = torch.cat([var.reciprocal(), -2.0 * mean / var], dim=-1)  # (B, K, 4)
        features = torch.cat([grid.square(), grid], dim=-1)  # (N, 4)
        per_slot = (mean.square() / var + var.log()).sum(-1, keepdim=True)  # (B, K, 1)
        return -0.5 * (coef @ features.T + per_slot)

    @staticmethod
    def _separable_bias(w: torch.Tensor, floor: float) -> torch.Tensor:
        """The inference form of `locality_bias` on the square token map, per axis: a token's
        x offset depends on its column only and its y offset on its row only, so the squared
        distance's terms are computed on S columns and S rows and their sum broadcast to the
        S x S tokens. Bitwise `_offset_bias`: the same numbers, added in the same order. The
        variance keeps the offsets form (`attention_moments`): summed per axis in another order
        it moved the exported graph's masks 1.1e-4 from PyTorch's, past the 1e-4 gate."""
        side = round(w.shape[-1] ** 0.5)
        grid = token_grid(w)  # (N, 2)
        cols, rows = grid[:side, 0], grid[::side, 1]  # (S,) x of each column, y of each row
        mean, _, var = attention_moments(w)  # the variance as the offsets form sums it
        var = var.clamp_min(floor)  # (B, K, 2)
        dx = cols - mean[..., 0:1]  # (B, K, S): the offsets' x, per column
        dy = rows - mean[..., 1:2]
        tx = dx.square() / var[..., 0:1]  # (B, K, S)
        ty = dy.square() / var[..., 1:2]
        distance = (tx.unsqueeze(-2) + ty.unsqueeze(-1)).flatten(2)  # (B, K, N)
        return -0.5 * (distance + var.log().sum(-1, keepdim=True))

    @staticmethod
    def _offset_bias(w: torch.Tensor, floor: float) -> torch.Tensor:
        """`_separable_bias` on the (B, K, N, 2) offsets themselves: the reference the tests
        hold it to."""
        _, offset, var = attention_moments(w)
        var = var.clamp_min(floor)
        distance = (offset.square() / var.unsqueeze(2)).sum(-1)  # (B, K, N)
        return -0.5 * (distance + var.log().sum(-1, keepdim=True))

    def _near_peak(self, attn: torch.Tensor) -> torch.Tensor:
        """(B, K, N) attention weighted by a Gaussian (spread `locality_window`) around the
        slot's densest spot: a soft argmax (temperature PEAK_SHARPNESS) of its attention
        averaged over 5x5 tokens and divided by its maximum. A hard argmax would be a
        discontinuity: a near-tie that float rounding breaks differently in an exported
        graph moves the whole prior (the export parity gate caught it)."""
        pooled = F.avg_pool2d(token_map(attn), 5, 1, 2, count_include_pad=False)
        pooled = pooled.flatten(2)  # (B, K, N)
        pooled = pooled / (pooled.amax(-1, keepdim=True) + 1e-8)
        grid = token_grid(attn)  # (N, 2)
        peak = (PEAK_SHARPNESS * pooled).softmax(-1) @ grid  # (B, K, 2)
        side = round(pooled.shape[-1] ** 0.5)
        # per axis: a token's x distance depends on its column, its y on its row
        px = (grid[:side, 0] - peak[..., 0:1]).square()  # (B, K, S)
        py = (grid[::side, 1] - peak[..., 1:2]).square()
        distance = (px.unsqueeze(-2) + py.unsqueeze(-1)).flatten(2)  # (B, K, N) x + y
        return attn * torch.exp(-0.5 * distance / self.cfg.locality_window**2)

    def step(self, slots, k, v, mod: Modulation | None = None, prior: torch.Tensor | None = None):
        """One refinement: slots (B, K, D) -> (new slots (B, K, D), attention (B, K, N)).

        `prior` (B, K, N), if given, is added to the attention logits (`locality_bias`)."""
        b, n_slots, d = slots.shape
        q = self.to_q(self.norm_slots(slots))  # (B, K, D)
        if mod is not None and mod.query is not None:
            q = q * mod.query
        logits = (q @ k.transpose(1, 2)) * self.scale  # (B, K, N); MatMul in a graph
        if prior is not None:
            logits = logits + self.cfg.locality * prior
        attn = logits.softmax(dim=1)  # competition over slots
        weights = attn + self.cfg.eps
        weights = weights / weights.sum(dim=-1, keepdim=True)  # weighted mean over tokens
        if mod is None:
            updates = weights @ v  # (B, K, D)
        else:
            # v'[k, n] = v[n] * m_c[k] * m_s[k, n]; summing over n factorises, so the
            # (B, K, N, D) modulated values are never materialised.
            if mod.spatial is not None:
                weights = weights * mod.spatial
            updates = weights @ v  # (B, K, D)
            if mod.channel is not None:
                updates = updates * mod.channel
        slots = self.gru(updates.reshape(-1, d), slots.reshape(-1, d)).view(b, n_slots, d)
        hidden = torch.relu(self.mlp_in(self.norm_mlp(slots)))
        if mod is not None and mod.ffn is not None:
            hidden = hidden * mod.ffn
        return slots + self.mlp_out(hidden), attn

    @property
    def num_iterations(self) -> int:
        """Refinements per pass: `iterations` in training, `eval_iterations` (when set) in
        eval mode, which is what evaluation and export see."""
        c = self.cfg
        return c.iterations if self.training or c.eval_iterations is None else c.eval_iterations

    def iterate(self, slots, k, v, mod: Modulation | None = None, attn=None, trace=None):
        """`num_iterations` refinements from `slots`; returns the final slots and the last
        attention map.

        With `implicit_grad` the gradient skips all but the last refinement and flows straight
        through to the initial slots (first-order implicit differentiation, as in BO-QSA).
        With `locality` each refinement is biased towards where the previous one attended;
        `attn` (B, K, N) stands in for that before the first refinement (the modulated pass
        gets the bottom-up pass's final attention). `trace`, a list, receives every
        refinement's attention in order."""
        init, n = slots, self.num_iterations
        for i in range(n):
            last = i == n - 1
            if self.cfg.implicit_grad and last and i > 0 and torch.is_grad_enabled():
                slots = slots.detach() + init - init.detach()
            prior = self.locality_bias(attn) if self.cfg.locality and attn is not None else None
            slots, attn = self.step(slots, k, v, mod, prior)
            if trace is not None:
                trace.append(attn)
        return slots, attn

    def forward(self, inputs, slots, mod: Modulation | None = None):
        k, v = self.project(inputs)
        return self.iterate(slots, k, v, mod)
