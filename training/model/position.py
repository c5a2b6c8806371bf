"""Soft position embedding (Slot Attention): a linear map of the grid [x, y, 1-x, 1-y]."""

import torch
from torch import nn


def coordinate_grid(height: int, width: int) -> torch.Tensor:
    """(height, width, 4) grid of [x, y, 1 - x, 1 - y] in [0, 1]."""
    ys = torch.linspace(0.0, 1.0, height)
    xs = torch.linspace(0.0, 1.0, width)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y, 1.0 - x, 1.0 - y], dim=-1)


class SoftPositionEmbed(nn.Module):
    """Adds a learned projection of the coordinate grid to a (B, C, H, W) feature map."""

    def __init__(self, channels: int, height: int, width: int):
        super().__init__()
        self.proj = nn.Linear(4, channels)
        self.register_buffer("grid", coordinate_grid(height, width), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(self.grid).permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W)
