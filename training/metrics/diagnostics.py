"""Where FG-ARI goes: objects split over several segments, or merged with another object."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from training.data.shapes import touching
from training.metrics.tables import _as_batch, _contingency


class ObjectErrors(NamedTuple):
    """Per ground-truth object (objects present in an image, image-major order): where its
    FG-ARI goes. All (M,) bool."""

    split: np.ndarray  # its majority segment holds less than `split_below` of its pixels
    merged: np.ndarray  # another object of its image has the same majority segment
    merged_apart: np.ndarray  # ... and that object does not touch it (4-neighbourhood)


def object_errors(
    true_ids: np.ndarray, pred_ids: np.ndarray, split_below: float = 0.8
) -> ObjectErrors:
    """Split and merged objects: the two ways a grouping loses FG-ARI.

    An object is *split* when no predicted segment holds `split_below` of its pixels, and
    *merged* when its majority segment is also the majority segment of another object;
    *merged apart* when one such object does not touch it, which a spatially compact grouping
    avoids. One image at a time, each with its own compact ids, so memory stays
    (objects in the image)^2 whatever the id values.

    Args:
        true_ids: (H, W) or (B, H, W) int, 0 = background.
        pred_ids: same shape, int predicted segment ids.
    """
    t, p = _as_batch(true_ids, pred_ids)
    width = np.shape(true_ids)[-1]
    flags: list[list[np.ndarray]] = [[], [], []]
    for ti, pi in zip(t, p, strict=True):
        labels, ids = np.unique(ti, return_inverse=True)  # background, if present, is 0
        counts, _ = _contingency(ids[None], pi[None])
        counts = counts[0][labels > 0]  # (objects, P)
        majority = counts.argmax(axis=1)
        same = majority[:, None] == majority[None, :]
        np.fill_diagonal(same, False)  # other objects only
        adjacent = touching(ids.reshape(-1, width), len(labels))[labels > 0][:, labels > 0]
        flags[0].append(counts.max(axis=1) / counts.sum(axis=1) < split_below)
        flags[1].append(same.any(axis=1))
        flags[2].append((same & ~adjacent).any(axis=1))
    return ObjectErrors(*(np.concatenate(f) if f else np.zeros(0, bool) for f in flags))
