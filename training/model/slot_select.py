"""An adaptive slot count (AdaSlot, Fan et al. 2024): a keep / drop decision per slot.

The model has `num_slots` slots at most; a small head reads each final slot and decides
whether the image needs it. While training the decision is a hard Gumbel-softmax sample, its
gradient passed straight through, and the loss pays for the share of slots kept; at inference
it is the likelier choice (and each image keeps at least its surest slot). A dropped slot
leaves the decoder's alpha softmax (`keep_softmax`), so the kept slots share every token."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.model.precision import full_precision

KEEP_BIAS = 2.0
"""The head's starting preference for keeping a slot (a logit margin: 88% kept): training
begins close to the fixed-count model and drops slots as the penalty teaches it to."""


class SlotSelector(nn.Module):
    def __init__(self, slot_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(slot_dim), nn.Linear(slot_dim, hidden), nn.ReLU(), nn.Linear(hidden, 2)
        )
        with torch.no_grad():
            self.net[-1].bias.copy_(torch.tensor([KEEP_BIAS, 0.0]))

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        """slots (B, K, D) -> (B, K): 1 for a kept slot, 0 for a dropped one (in training a
        straight-through sample whose gradient is the soft choice's)."""
        logits = full_precision(self.net(slots))  # (B, K, 2): keep, drop
        margin = logits[..., 0] - logits[..., 1]
        surest = (margin == margin.amax(dim=1, keepdim=True)).to(logits.dtype)
        if self.training:  # a sample that drops every slot would leave nothing to decode
            return torch.maximum(F.gumbel_softmax(logits, tau=1.0, hard=True)[..., 0], surest)
        return torch.maximum((margin >= 0).to(logits.dtype), surest)


def keep_softmax(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Softmax over slots (dim 1) of `logits` (B, K, P) among the kept slots of `keep` (B, K):
    a dropped slot's share is 0 and the kept slots' shares sum to 1. Written as keep x exp,
    normalised, so the gradient reaches `keep` (the straight-through sample)."""
    k = keep.unsqueeze(-1).to(logits.dtype)
    kept_logits = torch.where(k > 0, logits, torch.full_like(logits, -1e4))
    top = kept_logits.amax(dim=1, keepdim=True).detach()
    weights = k * torch.exp((logits - top).clamp(max=30.0))
    return weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
