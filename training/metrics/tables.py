"""Contingency tables of id maps: the counting every segmentation metric is built on.

Id maps are ``(H, W)`` or ``(B, H, W)`` ints: ``true_ids`` non-negative (0 background,
1..n objects), ``pred_ids`` any ints (only the partition matters). Numpy only."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Ids at or above this are compacted with np.unique instead of used directly as bins.
_DIRECT_LABEL_LIMIT = 4096


def nanmean(values: np.ndarray | Sequence[float]) -> float:
    """Mean of the finite entries of ``values`` (any shape); NaN if there are none (no warning)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else float("nan")


def _as_batch(true_ids: np.ndarray, pred_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two id maps and return them as (B, N) int arrays (N = H*W)."""
    t = np.asarray(true_ids)
    p = np.asarray(pred_ids)
    if t.shape != p.shape:
        raise ValueError(f"true_ids {t.shape} and pred_ids {p.shape} differ in shape")
    if t.ndim == 2:
        t, p = t[None], p[None]
    if t.ndim != 3:
        raise ValueError(f"id maps must be (H, W) or (B, H, W), got shape {t.shape}")
    for name, a in (("true_ids", t), ("pred_ids", p)):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            raise TypeError(f"{name} must be an integer array, got {a.dtype}")
    shape = (t.shape[0], t.shape[1] * t.shape[2])
    t = t.reshape(shape).astype(np.int64, copy=False)
    p = p.reshape(shape).astype(np.int64, copy=False)
    if t.size and t.min() < 0:
        raise ValueError("true_ids must be non-negative (0 = background, 1..n = objects)")
    return t, p


def _compact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ints to 0..L-1 bins. Returns (bins same shape as x, labels (L,) with labels[bin]=id).

    Small non-negative ids are used as bins directly (labels = arange, possibly with unused
    entries); anything else goes through ``np.unique``.
    """
    if x.size == 0:
        return x.astype(np.int64), np.zeros(0, dtype=np.int64)
    lo, hi = int(x.min()), int(x.max())
    if lo >= 0 and hi < _DIRECT_LABEL_LIMIT:
        return x, np.arange(hi + 1, dtype=np.int64)
    labels, inverse = np.unique(x, return_inverse=True)
    return inverse.reshape(x.shape), labels


def _contingency(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image contingency tables over all pixels.

    Args:
        t: (B, N) true ids (>= 0).
        p: (B, N) predicted ids.

    Returns:
        counts: (B, T, P) int64, counts[b, i, j] = #pixels of image b with true label
            ``true_labels[i]`` and predicted bin j.
        true_labels: (T,) the true id of each row (0 = background, if present).
    """
    batch = t.shape[0]
    tb, true_labels = _compact(t)
    pb, _ = _compact(p)
    n_t = max(len(true_labels), 1)
    n_p = max(int(pb.max()) + 1 if pb.size else 1, 1)
    offsets = np.arange(batch, dtype=np.int64)[:, None] * (n_t * n_p)
    flat = (offsets + tb * n_p + pb).ravel()
    counts = np.bincount(flat, minlength=batch * n_t * n_p).reshape(batch, n_t, n_p)
    if len(true_labels) == 0:  # empty images: keep a consistent (B, 0, P) shape
        counts = counts[:, :0]
    return counts, true_labels


def _pairs(n: np.ndarray) -> np.ndarray:
    """n choose 2, elementwise, int64."""
    return n * (n - 1) // 2


def _iou_tables(true_ids: np.ndarray, pred_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU between every ground-truth object and every predicted segment, per image.

    Returns:
        iou: (B, T, P) float64; IoU over the full image (background pixels count towards the
            predicted segment's area). Rows of objects absent from an image are 0.
        present: (B, T) bool, True where row i is an object (id >= 1) present in image b.
    """
    t, p = _as_batch(true_ids, pred_ids)
    counts, true_labels = _contingency(t, p)
    obj = true_labels > 0
    counts_obj = counts[:, obj, :]  # (B, T, P)
    area_t = counts_obj.sum(axis=2, keepdims=True)  # (B, T, 1)
    area_p = counts.sum(axis=1, keepdims=True)  # (B, 1, P), all pixels incl. background
    union = area_t + area_p - counts_obj
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, counts_obj / np.maximum(union, 1), 0.0)
    return iou, area_t[..., 0] > 0
