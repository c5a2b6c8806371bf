"""Data-parallel helpers: what keeps the replicas of one model identical under DDP.

Each process (replica) holds the whole model and sees its own share of every batch. DDP
averages the gradients, so parameters stay equal; the EMA codebook is trained outside the
gradient, so it keeps itself equal: its k-means start is broadcast from rank 0 and its EMA
statistics are summed over all replicas before each update (training/model/codebook.py).
Without a process group (one process) every helper is the identity."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over all replicas, in place; returns it."""
    if is_distributed():
        dist.all_reduce(t)
    return t


def broadcast_from_rank0(t: torch.Tensor) -> torch.Tensor:
    """Overwrite `t` with rank 0's copy, in place; returns it."""
    if is_distributed():
        dist.broadcast(t, src=0)
    return t


def replicas_differ(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors whose value is not the same on every replica ([] with one)."""
    if not is_distributed():
        return []
    differ = []
    for name, t in tensors.items():
        mine = t.detach().double().flatten()
        copies = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(copies, mine)
        if not all(torch.equal(c, copies[0]) for c in copies):
            differ.append(name)
    return differ
