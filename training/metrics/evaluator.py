"""The evaluator: segmentation metrics, split / merge diagnostics and code statistics
accumulated over batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from training.metrics.codes import (
    code_histogram,
    code_perplexity,
    code_usage,
    majority_purity,
    name_codes,
    nmi,
    slot_classes,
)
from training.metrics.diagnostics import ObjectErrors, object_errors
from training.metrics.segmentation import fg_ari, mbo, miou_hungarian
from training.metrics.tables import nanmean


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
