"""Soft position embedding (Slot Attention): a linear map of the grid [x, y, 1-x, 1-y]."""

import torch
from torch import nn
from torch.nn import functional as F


def coordinate_grid(height: int, width: int) -> torch.Tensor:
    """(height, width, 4) grid of [x, y, 1 - x, 1 - y] in [0, 1]."""
    ys = torch.linspace(0.0, 1.0, height)
    xs = torch.linspace(0.0, 1.0, width)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y, 1.0 - x, 1.0 - y], dim=-1)


def token_grid(attn: torch.Tensor) -> torch.Tensor:
    """(N, 2) positions (x, y) in [0, 1] of the square token map that attention
    (..., N) covers, in the encoder's row-major token order, on attn's device and dtype."""
    n = attn.shape[-1]
    side = round(n**0.5)
    return coordinate_grid(side, side)[..., :2].reshape(n, 2).to(attn)


def token_map(attn: torch.Tensor) -> torch.Tensor:
    """Attention (B, K, N) over a square token map -> (B, K, S, S), S = sqrt(N), row-major."""
    b, k, n = attn.shape
    side = round(n**0.5)
    return attn.reshape(b, k, side, side)


def resize_positions(pos: torch.Tensor, n: int) -> torch.Tensor:
    """Learned positions (..., S*S, D) of a square token grid -> (..., n, D) on a sqrt(n) grid.

    The same `pos` when n = S*S; otherwise bicubic interpolation over the grid, so a model
    trained on one grid runs on a finer one (a frozen encoder fed a larger image)."""
    *lead, m, d = pos.shape
    if n == m:
        return pos
    side, new = round(m**0.5), round(n**0.5)
    if side * side != m or new * new != n:
        raise ValueError(f"positions need square grids, got {m} -> {n} tokens")
    grid = pos.reshape(-1, side, side, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new, new), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).reshape(*lead, n, d)


def attention_moments(attn: torch.Tensor):
    """Each slot's attention (B, K, N) as a distribution over token positions -> (mean
    (B, K, 2), offsets of every token from the mean (B, K, N, 2), variance (B, K, 2)).
    Shared by the slot frames of slot-centric decoding and the grouping's locality prior."""
    grid = token_grid(attn)
    w = attn / (attn.sum(-1, keepdim=True) + 1e-8)
    mean = w @ grid
    offset = grid - mean.unsqueeze(2)
    var = torch.einsum("bkn,bknc->bkc", w, offset.square())
    return mean, offset, var


class SoftPositionEmbed(nn.Module):
    """Adds a learned projection of the coordinate grid to a (B, C, H, W) feature map."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.proj = nn.Linear(4, channels)
        self.register_buffer("grid", coordinate_grid(height, width), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.grid).permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W)
