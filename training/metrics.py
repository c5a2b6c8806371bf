"""Metrics of the model (DESIGN.md section 4).

Segmentation metrics compare a predicted id map with a ground-truth instance map:

* ``true_ids``: (H, W) or (B, H, W) non-negative ints; 0 is background, 1..n are objects.
* ``pred_ids``: same shape, any ints (normally the slot index 0..K-1 of the argmax over the
  slot masks). Only the partition matters, so predicted labels may be permuted freely.

All three segmentation metrics return one float per image, shape (B,), with NaN for an image
they cannot score (no foreground pixels / no objects); :func:`nanmean` and the
:class:`SegmentationEvaluator` exclude those images from means.

Code metrics look at the semantic code (0..E-1) of each slot: perplexity and usage of the
codebook, and agreement between codes and ground-truth shape classes (NMI, majority purity).
:func:`slot_classes` gives the ground-truth class each non-empty predicted slot covers, so that
``codes[image, slot]`` can be paired with it.

Everything is numpy in, numpy/float out; no torch needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

__all__ = [
    "SegmentationEvaluator",
    "SlotClasses",
    "code_histogram",
    "code_perplexity",
    "code_usage",
    "fg_ari",
    "majority_purity",
    "mbo",
    "miou_hungarian",
    "name_codes",
    "nanmean",
    "nmi",
    "object_errors",
    "slot_classes",
    "touching",
]

# Ids at or above this are compacted with np.unique instead of used directly as bins.
_DIRECT_LABEL_LIMIT = 4096


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# segmentation metrics
# --------------------------------------------------------------------------------------------


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


class ObjectErrors(NamedTuple):
    """Per ground-truth object (objects present in an image, image-major order): where its
    FG-ARI goes. All (M,) bool."""

    split: np.ndarray  # its majority segment holds less than `split_below` of its pixels
    merged: np.ndarray  # another object of its image has the same majority segment
    merged_apart: np.ndarray  # ... and that object does not touch it (4-neighbourhood)


def touching(ids: np.ndarray, n: int) -> np.ndarray:
    """(n, n) bool, symmetric: which ids of an (H, W) map with values in 0..n-1 share a
    4-neighbour edge."""
    a = np.concatenate([ids[:, :-1].ravel(), ids[:-1, :].ravel()])
    b = np.concatenate([ids[:, 1:].ravel(), ids[1:, :].ravel()])
    adjacent = np.zeros((n, n), bool)
    adjacent[a, b] = True
    return adjacent | adjacent.T


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


# --------------------------------------------------------------------------------------------
# code (codebook) metrics
# --------------------------------------------------------------------------------------------


def code_histogram(codes: np.ndarray, num_codes: int) -> np.ndarray:
    """Usage count of each code.

    Args:
        codes: any shape, ints in 0..num_codes-1.
        num_codes: codebook size E.

    Returns:
        (E,) int64 counts.
    """
    c = np.asarray(codes).ravel()
    if c.size and not np.issubdtype(c.dtype, np.integer):
        raise TypeError(f"codes must be integers, got {c.dtype}")
    c = c.astype(np.int64, copy=False)
    if c.size and (c.min() < 0 or c.max() >= num_codes):
        raise ValueError(f"codes must lie in 0..{num_codes - 1}, got {c.min()}..{c.max()}")
    return np.bincount(c, minlength=num_codes)


def code_perplexity(codes: np.ndarray, num_codes: int) -> float:
    """``2 ** H`` with H the entropy in bits of the empirical code distribution.

    Ranges from 1 (one code used) to E (uniform over the whole codebook); uniform usage of m
    codes gives exactly m. NaN when ``codes`` is empty.

    Args:
        codes: any shape, ints in 0..num_codes-1.
        num_codes: codebook size E.
    """
    hist = code_histogram(codes, num_codes)
    total = hist.sum()
    if total == 0:
        return float("nan")
    prob = hist[hist > 0] / total
    entropy = float(-(prob * np.log2(prob)).sum())
    return float(2.0**entropy)


def code_usage(codes: np.ndarray, num_codes: int) -> float:
    """Fraction of the codebook (of size ``num_codes``) used at least once, in [0, 1]."""
    return float((code_histogram(codes, num_codes) > 0).sum() / num_codes)


def nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalized mutual information between two labelings (sklearn, arithmetic mean).

    Args:
        a: (M,) int labels (e.g. codes), any shape is flattened.
        b: (M,) int labels (e.g. classes).

    Returns:
        NMI in [0, 1]; invariant to relabelling. NaN when empty. Follows sklearn's conventions
        otherwise (e.g. both labelings constant -> 1.0).
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.shape} vs {b.shape}")
    if a.size == 0:
        return float("nan")
    return float(normalized_mutual_info_score(a, b, average_method="arithmetic"))


def _cooccurrence(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contingency of two flat labelings: (counts (A, C), labels_a (A,), labels_b (C,))."""
    la, ia = np.unique(a, return_inverse=True)
    lb, ib = np.unique(b, return_inverse=True)
    counts = np.bincount(ia * len(lb) + ib, minlength=len(la) * len(lb))
    return counts.reshape(len(la), len(lb)), la, lb


def majority_purity(codes: np.ndarray, classes: np.ndarray) -> float:
    """Majority-vote purity of codes with respect to classes.

    ``sum over codes of (count of the code's most frequent class) / number of pairs``;
    1.0 when every code sees a single class. NaN when empty.

    Args:
        codes: (M,) int code per entry (any shape is flattened).
        classes: (M,) int class per entry.
    """
    c = np.asarray(codes).ravel()
    k = np.asarray(classes).ravel()
    if c.shape != k.shape:
        raise ValueError(f"codes {c.shape} and classes {k.shape} differ in length")
    if c.size == 0:
        return float("nan")
    counts, _, _ = _cooccurrence(c, k)
    return float(counts.max(axis=1).sum() / c.size)


class SlotClasses(NamedTuple):
    """Result of :func:`slot_classes`: one entry per non-empty predicted slot, all (M,) int64.

    Entries are ordered by image, then slot. Look a slot's code up as
    ``codes[r.image, r.slot]`` for ``codes`` of shape (B, K).
    """

    slot: np.ndarray
    class_id: np.ndarray
    image: np.ndarray


def slot_classes(
    pred_ids: np.ndarray,
    true_ids: np.ndarray,
    classes: np.ndarray | Sequence[np.ndarray],
    num_slots: int,
    background_class: int = -1,
) -> SlotClasses:
    """Ground-truth class covered most by each non-empty predicted slot.

    Every pixel of a slot votes: background pixels (true id 0) vote ``background_class``,
    object pixels vote their object's class (object i has class ``classes[b][i - 1]``). The
    slot gets the class with most votes; ties go to the smallest class value (so, with the
    default -1, background wins a tie). Slots that cover no pixel are skipped.

    Args:
        pred_ids: (H, W) or (B, H, W) int slot index per pixel, in 0..num_slots-1.
        true_ids: same shape, int instance ids, 0 = background.
        classes: for (B, H, W) input a sequence of B int arrays, (n_b,) each (a padded (B, n)
            array also works); for a single (H, W) image one (n,) array.
        num_slots: K.
        background_class: class voted by background pixels.

    Returns:
        SlotClasses(slot (M,), class_id (M,), image (M,)), a tuple; M = number of non-empty
        (image, slot) pairs.
    """
    single = np.ndim(true_ids) == 2
    t, p = _as_batch(true_ids, pred_ids)
    batch = t.shape[0]
    per_image = [np.asarray(classes)] if single else list(classes)
    if len(per_image) != batch:
        raise ValueError(f"got {len(per_image)} class arrays for {batch} images")
    if p.size and (p.min() < 0 or p.max() >= num_slots):
        raise ValueError(f"pred_ids must lie in 0..{num_slots - 1}, got {p.min()}..{p.max()}")

    # Vote per pixel through a (B, max_id + 1) lookup table: column 0 = background.
    max_id = int(t.max()) if t.size else 0
    lut = np.full((batch, max_id + 1), background_class, dtype=np.int64)
    for b, cls in enumerate(per_image):
        cls = np.asarray(cls, dtype=np.int64).ravel()
        n_obj = int(t[b].max()) if t.shape[1] else 0
        if n_obj > len(cls):
            raise ValueError(f"image {b} has object id {n_obj} but only {len(cls)} classes")
        m = min(len(cls), max_id)
        lut[b, 1 : m + 1] = cls[:m]
    votes = np.take_along_axis(lut, t, axis=1)  # (B, N) class voted by each pixel

    vote_labels, vote_bins = np.unique(votes, return_inverse=True)
    vote_bins = vote_bins.reshape(votes.shape)
    n_c = max(len(vote_labels), 1)
    flat = (np.arange(batch)[:, None] * num_slots + p) * n_c + vote_bins
    counts = np.bincount(flat.ravel(), minlength=batch * num_slots * n_c)
    counts = counts.reshape(batch, num_slots, n_c)

    image, slot = np.nonzero(counts.sum(axis=2) > 0)
    best = counts[image, slot].argmax(axis=1)  # first max = smallest class value
    class_id = vote_labels[best] if len(vote_labels) else best
    return SlotClasses(slot.astype(np.int64), class_id.astype(np.int64), image.astype(np.int64))


def name_codes(
    codes: np.ndarray,
    classes: np.ndarray,
    num_codes: int,
    class_names: Sequence[str],
    background_name: str = "background",
) -> list[str | None]:
    """Name each code after the ground-truth class it co-occurs with most.

    Args:
        codes: (M,) int code per entry, in 0..num_codes-1.
        classes: (M,) int class per entry; 0..len(class_names)-1, or negative for background
            (e.g. ``background_class=-1`` from :func:`slot_classes`).
        num_codes: E.
        class_names: name of each class index.
        background_name: name used for negative classes.

    Returns:
        list of E entries: the majority class name of each code (ties -> smallest class
        value), or None for a code that never occurs.
    """
    c = np.asarray(codes, dtype=np.int64).ravel()
    k = np.asarray(classes, dtype=np.int64).ravel()
    if c.shape != k.shape:
        raise ValueError(f"codes {c.shape} and classes {k.shape} differ in length")
    code_histogram(c, num_codes)  # range check
    if k.size and k.max() >= len(class_names):
        raise ValueError(f"class {k.max()} has no name (only {len(class_names)} names)")
    names: list[str | None] = [None] * num_codes
    if c.size == 0:
        return names
    counts, code_labels, class_labels = _cooccurrence(c, k)
    for code, row in zip(code_labels, counts, strict=True):
        cls = int(class_labels[row.argmax()])
        names[int(code)] = background_name if cls < 0 else class_names[cls]
    return names


# --------------------------------------------------------------------------------------------
# aggregator
# --------------------------------------------------------------------------------------------


@dataclass
class SegmentationEvaluator:
    """Accumulates per-image segmentation metrics and (code, class) pairs over batches.

    Use: ``update(...)`` per batch, then ``compute()``. Background is its own class
    (``background_class``) in the code statistics, so a code that specialises on background
    counts as pure.
    """

    num_slots: int
    num_codes: int | None = None
    class_names: Sequence[str] | None = None
    background_class: int = -1
    _fg_ari: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _mbo: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _miou: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _codes: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _classes: list[np.ndarray] = field(default_factory=list, init=False, repr=False)
    _errors: list[ObjectErrors] = field(default_factory=list, init=False, repr=False)

    def reset(self) -> None:
        """Forget everything accumulated so far."""
        for acc in (self._fg_ari, self._mbo, self._miou, self._codes, self._classes, self._errors):
            acc.clear()

    def update(
        self,
        true_ids: np.ndarray,
        classes: Sequence[np.ndarray],
        pred_ids: np.ndarray,
        codes: np.ndarray | None = None,
    ) -> None:
        """Add one batch.

        Args:
            true_ids: (B, H, W) int instance ids, 0 = background.
            classes: B int arrays, (n_b,) class of each object of image b.
            pred_ids: (B, H, W) int slot index per pixel, in 0..num_slots-1.
            codes: optional (B, K) int code of each slot (K = num_slots), in 0..num_codes-1.
        """
        true_ids = np.asarray(true_ids)
        pred_ids = np.asarray(pred_ids)
        if true_ids.ndim != 3:
            raise ValueError(f"expected (B, H, W) id maps, got shape {true_ids.shape}")
        self._fg_ari.append(fg_ari(true_ids, pred_ids))
        self._mbo.append(mbo(true_ids, pred_ids))
        self._miou.append(miou_hungarian(true_ids, pred_ids))
        self._errors.append(object_errors(true_ids, pred_ids))
        if codes is None:
            return
        if self.num_codes is None:
            raise ValueError("num_codes must be set to evaluate codes")
        codes = np.asarray(codes)
        if codes.shape != (true_ids.shape[0], self.num_slots):
            raise ValueError(
                f"codes must be (B, K) = {(true_ids.shape[0], self.num_slots)}, got {codes.shape}"
            )
        sc = slot_classes(pred_ids, true_ids, classes, self.num_slots, self.background_class)
        entry_codes = codes[sc.image, sc.slot].astype(np.int64)
        code_histogram(entry_codes, self.num_codes)  # range check now, not at compute()
        self._codes.append(entry_codes)
        self._classes.append(sc.class_id)

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """All (code, class) pairs seen so far, one per non-empty slot."""
        if not self._codes:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        return np.concatenate(self._codes), np.concatenate(self._classes)

    def compute(self) -> dict[str, float | int]:
        """Summary over everything seen.

        Returns:
            ``images`` (int), ``fg_ari``, ``mbo``, ``miou`` (means over images, NaN entries
            excluded; NaN if none is left); ``split_objects``, ``merged_objects`` and
            ``merged_apart_objects``, fractions of all objects (:func:`object_errors`).
            When codes were given also ``code_perplexity``,
            ``code_usage``, ``codes_used`` (int), ``code_class_nmi`` and
            ``code_class_purity``, over the non-empty slots.
        """
        cat = np.concatenate
        out: dict[str, float | int] = {
            "images": int(sum(len(a) for a in self._fg_ari)),
            "fg_ari": nanmean(cat(self._fg_ari)) if self._fg_ari else float("nan"),
            "mbo": nanmean(cat(self._mbo)) if self._mbo else float("nan"),
            "miou": nanmean(cat(self._miou)) if self._miou else float("nan"),
        }
        for name in ObjectErrors._fields:  # split, merged, merged_apart
            flags = cat([getattr(e, name) for e in self._errors]) if self._errors else []
            out[f"{name}_objects"] = nanmean(flags)
        if self._codes:
            assert self.num_codes is not None
            codes, classes = self.pairs()
            out["code_perplexity"] = code_perplexity(codes, self.num_codes)
            out["code_usage"] = code_usage(codes, self.num_codes)
            out["codes_used"] = int((code_histogram(codes, self.num_codes) > 0).sum())
            out["code_class_nmi"] = nmi(codes, classes)
            out["code_class_purity"] = majority_purity(codes, classes)
        return out

    def code_names(self) -> list[str | None]:
        """Majority class name per code (see :func:`name_codes`); None for unseen codes."""
        if self.num_codes is None or self.class_names is None:
            raise ValueError("code_names needs num_codes and class_names")
        codes, classes = self.pairs()
        return name_codes(codes, classes, self.num_codes, self.class_names)
