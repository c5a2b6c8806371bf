"""What is exported and what an exported graph must be: the wrapper around the model that
gives the bundle's outputs, and the graph facts the contract relies on. Shared by the exporter
(`export.onnx_export`) and the parity gate (`export.verify`)."""

from __future__ import annotations

from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import nn

MASK_SOURCES = ("decoder_alpha", "attention")


class ExportWrapper(nn.Module):
    """image (B, 3, H, W) in [0, 1] -> masks (B, K, H, W), codes (B, K), distances (B, K)."""

    def __init__(self, model: nn.Module, mask_source: str = "decoder_alpha"):
        super().__init__()
        if mask_source not in MASK_SOURCES:
            raise ValueError(f"mask_source must be one of {MASK_SOURCES}, got {mask_source!r}")
        self.model = model
        self.mask_source = mask_source
        self.eval()  # the wrapper too: the exporter warns about (and traces) training mode

    def forward(self, image: torch.Tensor):
        out = self.model(image)
        masks = out.masks
        if self.mask_source == "attention":
            b, k, n = out.attention.shape
            side = round(n**0.5)
            grid = out.attention.reshape(b, k, side, side)
            masks = F.interpolate(grid, size=image.shape[-2:], mode="bilinear", align_corners=False)
            masks = masks / masks.sum(dim=1, keepdim=True).clamp_min(1e-8)
        return masks, out.codes, out.code_distances


def graph_report(path: Path) -> dict:
    """Facts about an exported graph that the bundle contract relies on."""
    graph = onnx.load(str(path)).graph
    ops = sorted({n.op_type for n in graph.node})
    dim0 = graph.input[0].type.tensor_type.shape.dim[0]
    return {
        "ops": ops,
        "random_ops": [o for o in ops if o.startswith("Random")],
        "batch_symbolic": bool(dim0.dim_param) and not dim0.HasField("dim_value"),
        "batch_dim": dim0.dim_param or dim0.dim_value,
        "inputs": [i.name for i in graph.input],
        "outputs": [o.name for o in graph.output],
        "initializers": len(graph.initializer),
    }
