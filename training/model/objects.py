"""Slots -> objects: merge the slots that share their pixels.

A slot-attention model with spare slots often gives one object to two slots: the stripes of
a striped object, the two ends of a colour ramp, an outline and its inside. The decoder's
masks say so themselves: where one of the two slots wins a pixel, the other still holds a
good part of it, while two slots on different objects hold almost nothing of each other's
pixels. `merge_shared_slots` reads that off the soft masks and sums each group of slots that
share their pixels into one mask, so the rest of the pipeline (argmax, codes, the service)
sees one object per group.
"""

from __future__ import annotations

import math

import torch


def slot_shares(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft masks (B, K, P) summing to 1 over slots -> (share (B, K, K), area (B, K)).

    share[b, i, j] is the mean probability that slot i gives to the pixels slot j wins (its
    argmax segment), 0 where slot j wins none; area[b, j] counts the pixels slot j wins."""
    k = masks.shape[1]
    winner = masks.argmax(1)  # (B, P)
    slots = torch.arange(k, device=masks.device).view(1, k, 1)
    won = (winner.unsqueeze(1) == slots).to(masks.dtype)  # (B, K, P) one-hot segments
    area = won.sum(-1)  # (B, K)
    share = torch.einsum("bip,bjp->bij", masks, won) / area.clamp_min(1.0).unsqueeze(1)
    return share, area


def slot_groups(share: torch.Tensor, area: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, K) index of the slot that represents each slot's group.

    Slots i and j are linked when each holds more than `threshold` of the other's pixels
    (mean probability over the other's segment); groups are the connected components of the
    links (transitive closure by repeated squaring), and a group is represented by its member
    that wins the most pixels (the lowest index on a tie). Slots that win no pixel stay alone."""
    b, k, _ = share.shape
    live = area > 0
    eye = torch.eye(k, dtype=torch.bool, device=share.device).unsqueeze(0)
    link = torch.minimum(share, share.transpose(1, 2)) > threshold
    link = (link & live.unsqueeze(2) & live.unsqueeze(1)) | eye
    reach = link.to(share.dtype)
    for _ in range(max(1, math.ceil(math.log2(k)))):
        reach = (reach @ reach > 0).to(share.dtype)
    # score[b, i, j] = area of j if j is in i's group, else -1: the argmax is i's representative
    score = torch.where(reach > 0, area.unsqueeze(1).expand(b, k, k), torch.full_like(reach, -1.0))
    return score.argmax(-1)


def merge_shared_slots(masks: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft masks (B, K, H, W) -> (merged masks (B, K, H, W), representative (B, K)).

    Each group of slots (`slot_groups`) becomes its representative's channel, the sum of its
    members' masks; the other members' channels become 0. The result still sums to 1 over
    slots, its argmax is the objects' segmentation, and a slot whose channel is now empty
    is read as no object (area 0)."""
    b, k, h, w = masks.shape
    flat = masks.flatten(2)
    share, area = slot_shares(flat)
    rep = slot_groups(share, area, threshold)  # (B, K)
    slots = torch.arange(k, device=masks.device).view(1, 1, k)
    to = (rep.unsqueeze(2) == slots).to(flat.dtype)  # (B, K from, K to)
    merged = torch.einsum("bft,bfp->btp", to, flat)
    return merged.view(b, k, h, w), rep
