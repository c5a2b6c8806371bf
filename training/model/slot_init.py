"""Initial slots z0 (B, K, D). No random op runs outside training: exports are deterministic."""

import torch
from torch import nn

from training.config import SlotAttentionConfig


class SlotInit(nn.Module):
    """gaussian: z0 = mu + exp(logsigma) * eps, eps ~ N(0, 1) while training and a fixed eps
    (a buffer drawn once at construction) in eval mode; learned: one query per slot.

    With `eval_inits` = n > 1, eval mode starts each image n ways: the stored eps, then eps
    drawn from seeds 1 .. n-1 (not stored: the same on every construction), rows image-major
    (B * n, K, D); the model keeps the start that reconstructs best."""

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
            more = [_fixed_noise(k, d, seed) for seed in range(1, cfg.eval_inits)]
            self.register_buffer(
                "more_eval_noise", torch.stack(more) if more else torch.zeros(0, k, d), False
            )
        self.num_slots = k
        self.eval_inits = cfg.eval_inits

    def forward(self, batch: int) -> torch.Tensor:
        if self.kind == "learned":
            return self.queries.unsqueeze(0).expand(batch, -1, -1)
        sigma = self.logsigma.exp()
        if self.training:
            eps = torch.randn(batch, self.num_slots, self.mu.shape[-1], device=self.mu.device)
        elif self.eval_inits > 1:
            starts = torch.cat([self.eval_noise.unsqueeze(0), self.more_eval_noise])  # (n, K, D)
            eps = starts.unsqueeze(0).expand(batch, -1, -1, -1).flatten(0, 1)
        else:
            eps = self.eval_noise.unsqueeze(0).expand(batch, -1, -1)
        return self.mu + sigma * eps

    def starts(self) -> int:
        """Rows `forward` gives each image: `eval_inits` in eval mode, else 1."""
        return 1 if self.training or self.kind == "learned" else self.eval_inits


def _fixed_noise(k: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(k, d, generator=torch.Generator().manual_seed(seed))
