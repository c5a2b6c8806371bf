"""Vector-quantised codebook trained by exponential moving averages (van den Oord et al.;
Razavi et al.): k-means initialisation on the first batch, Laplace-smoothed cluster sizes,
dead codes re-seeded from the batch, straight-through gradients to the slots."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.config import CodebookConfig
from training.distributed import all_reduce_sum, broadcast_from_rank0
from training.model.precision import full_precision


@dataclass
class Quantized:
    quantized: torch.Tensor  # (B, K, D) code vectors, straight-through to the input
    indices: torch.Tensor  # (B, K) int64 code index: the slot's semantic label
    distances: torch.Tensor  # (B, K) Euclidean distance from each slot to its code
    commitment: torch.Tensor  # () mean squared distance (weighted by the loss config)


def kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None):
    """x (M, D) -> centroids (k, D); Lloyd's algorithm from k distinct samples."""
    idx = torch.randperm(x.shape[0], generator=generator)[:k]
    if idx.numel() < k:  # fewer samples than codes: repeat with replacement
        idx = torch.randint(0, x.shape[0], (k,), generator=generator)
    centroids = x[idx].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centroids).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    return centroids


class EMACodebook(nn.Module):
    def __init__(self, cfg: CodebookConfig, dim: int):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("embed", torch.randn(cfg.size, dim) * dim**-0.5)
        self.register_buffer("embed_avg", self.embed.clone())
        self.register_buffer("cluster_size", torch.ones(cfg.size))
        self.register_buffer("initialised", torch.tensor(False))
        self.register_buffer("reseeded", torch.tensor(0))  # total dead-code re-seeds, for logs

    @property
    def size(self) -> int:
        return self.cfg.size

    def lookup(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, K, D) -> (indices (B, K) int64, distances (B, K)), nearest code by L2, in
        full precision whatever autocast is on (bf16 would tie near codes)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = full_precision(x)
            sq = x.pow(2).sum(-1, keepdim=True) - 2 * x @ self.embed.t() + self.embed.pow(2).sum(-1)
            indices = sq.argmin(dim=-1)
            dist_sq = sq.gather(-1, indices.unsqueeze(-1)).squeeze(-1)
        return indices, dist_sq.clamp_min(0.0).sqrt()

    @torch.no_grad()
    def _init(self, flat: torch.Tensor) -> None:
        # Each replica sees its own batch: all take rank 0's centroids, so they start alike.
        self.embed.copy_(broadcast_from_rank0(kmeans(flat, self.size, self.cfg.kmeans_iters)))
        self.embed_avg.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        onehot = F.one_hot(indices, self.size).to(flat.dtype)  # (M, E)
        # summed over replicas: every replica makes the same update from the global batch
        counts = all_reduce_sum(onehot.sum(0))
        sums = all_reduce_sum(onehot.t() @ flat)  # (E, D)
        decay, eps = self.cfg.decay, self.cfg.epsilon
        self.cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_avg.mul_(decay).add_(sums, alpha=1 - decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + eps) / (n + self.size * eps) * n
        self.embed.copy_(self.embed_avg / smoothed.unsqueeze(1))
        self._reseed_dead(flat)

    @torch.no_grad()
    def _reseed_dead(self, flat: torch.Tensor) -> None:
        dead = self.cluster_size < self.cfg.dead_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        picks = flat[torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)]
        broadcast_from_rank0(picks)  # cluster sizes agree, so every replica re-seeds alike
        self.embed[dead] = picks
        self.embed_avg[dead] = picks
        self.cluster_size[dead] = 1.0
        self.reseeded.add_(n_dead)

    def forward(self, x: torch.Tensor) -> Quantized:
        """x (B, K, D) slots -> Quantized. EMA updates happen only in training mode."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = full_precision(x)
            flat = x.detach().reshape(-1, x.shape[-1])
            if self.training and not bool(self.initialised):
                self._init(flat)
            indices, distances = self.lookup(x)
            if self.training:
                self._ema_update(flat, indices.reshape(-1))
            codes = F.embedding(indices, self.embed)  # (B, K, D)
            commitment = F.mse_loss(x, codes.detach())
            quantized = x + (codes - x).detach()  # straight-through estimator
        return Quantized(quantized, indices, distances, commitment)
