"""Top-down modulation (Kim et al., NeurIPS 2024): what the codebook recognised in each
bottom-up slot, and where that slot attended, re-weight the values of a second pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from training.config import ModulationConfig


@dataclass
class Modulation:
    """Per-slot factors consumed by `SlotAttention.step` (None = not applied).

    channel (B, K, D) scales values per channel; spatial (B, K, N) scales them per token;
    query (B, K, D) and ffn (B, K, H) scale queries and the slot-MLP hidden layer ("qvf")."""

    channel: torch.Tensor | None = None
    spatial: torch.Tensor | None = None
    query: torch.Tensor | None = None
    ffn: torch.Tensor | None = None


def _unit_linear(d_in: int, d_out: int) -> nn.Linear:
    """A Linear that starts as the constant 1 (zero weights, unit bias): the modulated pass
    begins as a copy of the bottom-up pass and learns how far to depart from it."""
    layer = nn.Linear(d_in, d_out)
    nn.init.zeros_(layer.weight)
    nn.init.ones_(layer.bias)
    return layer


class TopDownModulation(nn.Module):
    def __init__(
        self, cfg: ModulationConfig, slot_dim: int, mlp_hidden: int, code_dim: int | None = None
    ):
        super().__init__()
        self.cfg = cfg
        code_dim = code_dim or slot_dim  # codes of frozen features are wider than slots
        self.to_channel = _unit_linear(code_dim, slot_dim) if cfg.channel else None
        self.to_query = _unit_linear(code_dim, slot_dim) if cfg.qvf else None
        self.to_ffn = _unit_linear(code_dim, mlp_hidden) if cfg.qvf else None

    def forward(self, codes: torch.Tensor, attn: torch.Tensor) -> Modulation:
        """codes (B, K, code_dim) quantised slots (or the features they cover); attn (B, K, N)
        last bottom-up attention map."""
        spatial = None
        if self.cfg.spatial:
            # m_s[k, n] = 1 + A[k, n] - mean_n A[k, n]: emphasise where the slot looked.
            spatial = 1.0 + attn - attn.mean(dim=-1, keepdim=True)
        return Modulation(
            channel=self.to_channel(codes) if self.to_channel is not None else None,
            spatial=spatial,
            query=self.to_query(codes) if self.to_query is not None else None,
            ffn=self.to_ffn(codes) if self.to_ffn is not None else None,
        )
