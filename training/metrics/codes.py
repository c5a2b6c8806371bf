"""Code (codebook) metrics: perplexity and usage of the codebook, and agreement between the
semantic code of each slot (0..E-1) and ground-truth classes (NMI, majority purity, names).

:func:`slot_classes` gives the ground-truth class each non-empty predicted slot covers, so
that ``codes[image, slot]`` can be paired with it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from sklearn.metrics import normalized_mutual_info_score

from training.metrics.tables import _as_batch


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
