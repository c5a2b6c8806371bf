"""Precision helpers shared by the model's modules."""

import torch


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """`t` in float32 out of a bf16/fp16 autocast region; float64 stays float64, so the model
    also runs end to end in double (the export parity gate's exact reference)."""
    return t if t.dtype == torch.float64 else t.float()
