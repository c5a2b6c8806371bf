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

Everything is numpy in, numpy/float out. One module per role: `tables` (contingency tables
of id maps), `segmentation`, `diagnostics` (split / merged objects), `codes`, `evaluator`.
"""

from training.metrics.codes import (
    SlotClasses,
    code_histogram,
    code_perplexity,
    code_usage,
    majority_purity,
    name_codes,
    nmi,
    slot_classes,
)
from training.metrics.diagnostics import ObjectErrors, object_errors
from training.metrics.evaluator import SegmentationEvaluator
from training.metrics.segmentation import fg_ari, mbo, miou_hungarian
from training.metrics.tables import nanmean

__all__ = [
    "ObjectErrors",
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
]
