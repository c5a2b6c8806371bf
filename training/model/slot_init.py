"""Initial slots z0 (B, K, D). No random op runs outside training: exports are deterministic."""

import torch
from torch import nn

from training.config import SlotAttentionConfig


class SlotInit(nn.Module):
    """gaussian: z0 = mu + exp(logsigma) * eps, eps ~ N(0, 1) while training and a fixed eps
    (a buffer drawn once at construction) in eval mode; learned: one query per slot."""

    def __init__(self, cfg: SlotAttentionConfig):
        super().__init__()
        self.kind = cfg.init
        k, d = cfg.num_slots, cfg.slot_dim
        if self.kind == "learned":
            self.queries = nn.Parameter(torch.randn(k, d) * d**-0.5)
        else:
            self.mu = nn.Parameter(torch.randn(1, 1, d) * d**-0.5)
            self.logsigma = nn.Parameter(torch.full((1, 1, d), -1.0))
            self.register_buffer(
                "eval_noise", torch.randn(k, d, generator=torch.Generator().manual_seed(0))
            )
        self.num_slots = k

    def forward(self, batch: int) -> torch.Tensor:
        if self.kind == "learned":
            return self.queries.unsqueeze(0).expand(batch, -1, -1)
        sigma = self.logsigma.exp()
        if self.training:
            eps = torch.randn(batch, self.num_slots, self.mu.shape[-1], device=self.mu.device)
        else:
            eps = self.eval_noise.unsqueeze(0).expand(batch, -1, -1)
        return self.mu + sigma * eps
