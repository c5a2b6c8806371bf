"""Segmentation metrics: FG-ARI, mBO and Hungarian mIoU, one float per image.

Each compares a predicted id map with a ground-truth instance map (see
:mod:`training.metrics.tables`) and returns shape (B,), with NaN for an image it cannot score
(no foreground pixels / no objects); :func:`~training.metrics.tables.nanmean` and the
evaluator exclude those images from means."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from training.metrics.tables import _as_batch, _contingency, _iou_tables, _pairs


def fg_ari(true_ids: np.ndarray, pred_ids: np.ndarray) -> np.ndarray:
    """Foreground adjusted Rand index per image.

    ARI between the true and predicted partitions of the pixels whose true id is not 0
    (background pixels are ignored entirely, whatever is predicted there). Computed from
    per-image contingency tables (one ``np.bincount``), no per-pixel Python loop.

    Edge cases (same conventions as ``sklearn.metrics.adjusted_rand_score``):

    * no foreground pixels -> NaN (excluded from means);
    * partitions that agree on every pair of pixels -> 1.0; this includes a single true
      object predicted as a single cluster, and a single foreground pixel;
    * a single true object split over several predicted clusters -> 0.0;
    * all foreground merged into one predicted cluster with >= 2 true objects -> 0.0.

    Args:
        true_ids: (H, W) or (B, H, W) int, 0 = background.
        pred_ids: same shape, int predicted segment ids.

    Returns:
        (B,) float64 (B = 1 for a single (H, W) image).
    """
    t, p = _as_batch(true_ids, pred_ids)
    counts, true_labels = _contingency(t, p)
    fg = counts[:, true_labels != 0, :]  # (B, T_fg, P)
    n = fg.sum(axis=(1, 2))  # (B,)
    sum_ij = _pairs(fg).sum(axis=(1, 2))
    sum_a = _pairs(fg.sum(axis=2)).sum(axis=1)  # pairs in the same true object
    sum_b = _pairs(fg.sum(axis=1)).sum(axis=1)  # pairs in the same predicted cluster
    total = _pairs(n).astype(np.float64)
    sij, sa, sb = (x.astype(np.float64) for x in (sum_ij, sum_a, sum_b))
    # ARI = (sij - sa*sb/total) / ((sa+sb)/2 - sa*sb/total); multiplied through by total.
    num = sij * total - sa * sb
    den = 0.5 * (sa + sb) * total - sa * sb
    with np.errstate(invalid="ignore", divide="ignore"):
        ari = num / den
    agree = (sum_ij == sum_a) & (sum_ij == sum_b)  # no false/missed pairs (exact, int)
    ari = np.where(agree, 1.0, ari)
    return np.where(n == 0, np.nan, ari)


def mbo(true_ids: np.ndarray, pred_ids: np.ndarray) -> np.ndarray:
    """Mean best overlap per image.

    For each ground-truth object (id >= 1) the best IoU over all predicted segments (several
    objects may pick the same segment), averaged over the objects of the image.

    Args:
        true_ids: (H, W) or (B, H, W) int, 0 = background.
        pred_ids: same shape, int predicted segment ids.

    Returns:
        (B,) float64; NaN for an image without objects.
    """
    iou, present = _iou_tables(true_ids, pred_ids)
    best = iou.max(axis=2, initial=0.0)  # (B, T)
    n_obj = present.sum(axis=1)
    total = np.where(present, best, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_obj > 0, total / np.maximum(n_obj, 1), np.nan)


def miou_hungarian(true_ids: np.ndarray, pred_ids: np.ndarray) -> np.ndarray:
    """Mean IoU under a one-to-one (Hungarian) matching of objects to predicted segments.

    Per image, ``scipy.optimize.linear_sum_assignment`` maximises the summed IoU between
    ground-truth objects (id >= 1) and predicted segments, each used at most once; the
    matched IoUs are summed and divided by the number of objects, so an object left
    unmatched (fewer segments than objects) counts 0.

    Args:
        true_ids: (H, W) or (B, H, W) int, 0 = background.
        pred_ids: same shape, int predicted segment ids.

    Returns:
        (B,) float64; NaN for an image without objects.
    """
    iou, present = _iou_tables(true_ids, pred_ids)
    out = np.full(iou.shape[0], np.nan)
    for b in range(iou.shape[0]):
        m = iou[b][present[b]]  # (n_obj, P)
        if m.shape[0] == 0:
            continue
        rows, cols = linear_sum_assignment(m, maximize=True)
        out[b] = m[rows, cols].sum() / m.shape[0]
    return out
