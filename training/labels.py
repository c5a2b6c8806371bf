"""Labels that are true: what a served object's code says about it, and only where it is reliable.

A slot's truth on a labelled scene is what most of its pixels are: "background", or the category
of the object covering most of them (`slot_classes`); but a slot that an object ends up in (the
slot covering most of that object) is never background: it is that object's category. So a
code is "background" only by slots that hold no object. On a naming set, each code gets

* `category`: the category it most often covers among the foreground objects its slots hold;
* `background_share`: the share of its slots that are background;
* `category_share`: the share of its slots whose truth is `category`.

The served label of a code is "background" when its background share reaches the background
threshold, else its category when its category share reaches the category threshold, else
null (`label_score` is always the share behind the label, or the best candidate's share when
the label is null). A code needs MIN_SLOTS slots on each set to carry a label at all.
The thresholds are picked on a separate validation set, as the lowest
share such that every code at or above it was right on the validation slots it was given to
at least `precision` of the time: 0.8 for categories, 1.0 for background (a real object is
never called background). A kind of label that reaches its precision at no threshold is never
given.

`object_records` measures labels where users meet them: per ground-truth object, the slot that
covers most of it, matched when their IoU is >= 0.5; `summarise_records` pools the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

BACKGROUND = "background"
CATEGORY_PRECISION = 0.8
BACKGROUND_PRECISION = 1.0
MATCH_IOU = 0.5
MIN_SLOTS = 20
"""A code needs this many slots on the naming set, and again on the validation set, before it
may carry a label: a code seen three times, right three times, is not evidence."""


@dataclass(frozen=True)
class CodeLabel:
    """What one code says: the served `label` (or None), its `score`, and the evidence."""

    label: str | None
    score: float
    category: str | None
    background_share: float
    category_share: float
    slots: int

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CodeStats:
    """Slot counts per code (rows, E) and truth (columns: classes, then background last)."""

    table: np.ndarray

    @property
    def slots(self) -> np.ndarray:
        return self.table.sum(axis=1)

    @property
    def background(self) -> np.ndarray:
        return self.table[:, -1]

    @property
    def category(self) -> np.ndarray:
        """Commonest foreground class per code (ties -> smallest index); -1 where none."""
        fg = self.table[:, :-1]
        return np.where(fg.max(axis=1) > 0, fg.argmax(axis=1), -1)

    def share_of(self, classes: np.ndarray) -> np.ndarray:
        """Per code, the share of its slots whose truth is `classes[e]` (0 where it is -1)."""
        rows = np.arange(len(self.table))
        hits = np.where(classes >= 0, self.table[rows, np.maximum(classes, 0)], 0)
        return hits / np.maximum(self.slots, 1)

    @property
    def background_share(self) -> np.ndarray:
        return self.background / np.maximum(self.slots, 1)

    @property
    def category_share(self) -> np.ndarray:
        return self.share_of(self.category)


def code_stats(codes: np.ndarray, truth: np.ndarray, num_codes: int, num_classes: int) -> CodeStats:
    """Statistics of (code, slot truth) pairs; truth < 0 is background, else a class index."""
    codes = np.asarray(codes, dtype=np.int64).ravel()
    truth = np.asarray(truth, dtype=np.int64).ravel()
    if codes.shape != truth.shape:
        raise ValueError(f"codes {codes.shape} and truth {truth.shape} differ in length")
    if codes.size and (codes.min() < 0 or codes.max() >= num_codes):
        raise ValueError(f"codes must lie in 0..{num_codes - 1}")
    if truth.size and truth.max() >= num_classes:
        raise ValueError(f"class {truth.max()} has no name (only {num_classes})")
    cls = np.where(truth < 0, num_classes, truth)  # background in the last column
    table = np.zeros((num_codes, num_classes + 1), dtype=np.int64)
    np.add.at(table, (codes, cls), 1)
    return CodeStats(table)


@dataclass(frozen=True)
class Thresholds:
    """Shares a code needs for each kind of label; None: that kind is never given."""

    background: float | None
    category: float | None


def _lowest_reliable(
    scores: np.ndarray, right: np.ndarray, weights: np.ndarray, precision: float
) -> float | None:
    """Lowest threshold t (among `scores`) such that every code with score >= t that the
    validation set saw at least MIN_SLOTS times was right there at least `precision` of the
    time; None when no threshold gives any label."""
    seen = weights >= MIN_SLOTS
    for t in np.unique(scores):
        given = (scores >= t) & seen
        if given.any() and (right[given] >= precision - 1e-12).all():
            return float(t)
    return None


def pick_thresholds(
    naming: CodeStats,
    validation: CodeStats,
    category_precision: float = CATEGORY_PRECISION,
    background_precision: float = BACKGROUND_PRECISION,
) -> Thresholds:
    """Thresholds on the naming set's shares, judged on the validation set's slots.

    For background: a code labelled background with share >= t serves "background" to all its
    validation slots; right for its background slots. For categories likewise, with the
    naming-set category (a validation slot is right when its truth is that category)."""
    # Codes short of evidence on either set are judged by nothing and given nothing.
    evidence = np.where(naming.slots >= MIN_SLOTS, validation.slots, 0)
    background = _lowest_reliable(
        naming.background_share, validation.background_share, evidence, background_precision
    )

    # Category labels go only to codes that are not background codes at that threshold.
    is_bg = (
        np.zeros(len(naming.table), dtype=bool)
        if background is None
        else naming.background_share >= background
    )
    has_cat = (naming.category >= 0) & ~is_bg
    cat_right = validation.share_of(naming.category)
    category = _lowest_reliable(
        naming.category_share[has_cat],
        cat_right[has_cat],
        evidence[has_cat],
        category_precision,
    )
    return Thresholds(background=background, category=category)


def code_labels(
    naming: CodeStats, thresholds: Thresholds, class_names: Sequence[str]
) -> list[CodeLabel]:
    """The served label of every code (see the module docstring)."""
    out = []
    for e in range(len(naming.slots)):
        bg = float(naming.background_share[e])
        cat_share = float(naming.category_share[e])
        cat = class_names[naming.category[e]] if naming.category[e] >= 0 else None
        if naming.slots[e] < MIN_SLOTS:
            label, score = None, max(bg, cat_share)
        elif thresholds.background is not None and bg >= thresholds.background:
            label, score = BACKGROUND, bg
        elif (
            cat is not None and thresholds.category is not None and cat_share >= thresholds.category
        ):
            label, score = cat, cat_share
        else:
            label, score = None, max(bg, cat_share)
        out.append(
            CodeLabel(
                label, round(score, 4), cat, round(bg, 4), round(cat_share, 4), int(naming.slots[e])
            )
        )
    return out


def fit_code_labels(
    naming_pairs: tuple[np.ndarray, np.ndarray],
    validation_pairs: tuple[np.ndarray, np.ndarray],
    num_codes: int,
    class_names: Sequence[str],
    category_precision: float = CATEGORY_PRECISION,
    background_precision: float = BACKGROUND_PRECISION,
) -> tuple[list[CodeLabel], Thresholds]:
    """Code labels from (codes, slot truth) pairs of a naming and a validation set."""
    n = len(class_names)
    naming = code_stats(*naming_pairs, num_codes, n)
    validation = code_stats(*validation_pairs, num_codes, n)
    thresholds = pick_thresholds(naming, validation, category_precision, background_precision)
    return code_labels(naming, thresholds, class_names), thresholds


ObjectRecord = tuple[bool, bool, bool, bool, str]
"""Per ground-truth object: (labelled background, matched, given a label, right, category)."""


def object_slots(true_ids: np.ndarray, pred_ids: np.ndarray) -> list[tuple[int, int, float, int]]:
    """(object id, its slot, IoU, object pixels) for each ground-truth object present in one
    image: its slot is the one covering most of its pixels (ids 0 = background, 1..n objects)."""
    t, p = np.asarray(true_ids).ravel(), np.asarray(pred_ids).ravel()
    out = []
    for i in range(1, int(t.max(initial=0)) + 1):
        inside = t == i
        pixels = int(inside.sum())
        if not pixels:
            continue
        slot = int(np.bincount(p[inside]).argmax())
        inter = int((p[inside] == slot).sum())
        out.append((i, slot, inter / (pixels + int((p == slot).sum()) - inter), pixels))
    return out


def object_records(
    true_ids: np.ndarray,
    classes: Sequence[np.ndarray],
    pred_ids: np.ndarray,
    codes: np.ndarray,
    labels: Sequence[str | None],
    class_names: Sequence[str],
) -> list[ObjectRecord]:
    """What the served label says about each ground-truth object of a batch: its slot is the
    one covering most of its pixels, matched when their IoU is >= MATCH_IOU."""
    records = []
    for b in range(np.shape(true_ids)[0]):
        cats = np.asarray(classes[b]).ravel()
        for i, slot, iou, _ in object_slots(true_ids[b], pred_ids[b]):
            code = int(codes[b, slot])
            label = labels[code] if code < len(labels) else None
            name = class_names[int(cats[i - 1])]
            records.append(
                (label == BACKGROUND, iou >= MATCH_IOU, label is not None, label == name, name)
            )
    return records


def summarise_records(records: Sequence[ObjectRecord]) -> dict[str, float | int]:
    """`objects`; `objects_labelled_background` (share of all objects whose slot says
    "background": 0 is the bar); `matched` (share with IoU >= 0.5); over matched objects,
    `label_accuracy` (label == category; null counts as wrong), `label_coverage` (share given a
    label) and `label_precision` (right among those given one); `majority_class_share` (the
    share of matched objects in the commonest category: what always naming it would score)."""
    if not records:
        return {"objects": 0}
    arr = np.array([r[:4] for r in records], dtype=bool)
    matched = arr[:, 1]
    given = matched & arr[:, 2]
    cats = [r[4] for r, m in zip(records, matched, strict=True) if m]
    majority = max(cats.count(c) for c in set(cats)) / len(cats) if cats else float("nan")

    def share(flags: np.ndarray) -> float:
        return round(float(flags.mean()), 4) if flags.size else float("nan")

    return {
        "objects": len(records),
        "objects_labelled_background": share(arr[:, 0]),
        "matched": share(matched),
        "label_accuracy": share(arr[matched, 3]),
        "label_coverage": share(arr[matched, 2]),
        "label_precision": share(arr[given, 3]),
        "majority_class_share": round(majority, 4),
    }


LABEL_SETS = ("shapes", "photos", "none")
"""Labelled scenes a model's codes are named on: the shapes variants, photo scenes, or none
(a model trained on a user's unlabelled photos has no labelled set: every label is null)."""
NAMING_SEED, VALIDATION_SEED = 777, 778


def labelled_scenes(label_set: str, n: int, seed: int, height: int, width: int | None = None):
    """(scenes, class names) of a labelled set; shapes: n of each variant (square only)."""
    from training.evaluate import evaluation_scenes  # evaluate imports this module

    if label_set == "shapes":
        solid, names = evaluation_scenes("solid", n, seed, height, width)
        return solid + evaluation_scenes("textured", n, seed, height, width)[0], names
    if label_set == "photos":
        return evaluation_scenes("photos", n, seed, height, width)
    raise ValueError(f"label set must be one of {LABEL_SETS[:2]}, got {label_set!r}")


def slot_pairs(predict, scenes, num_slots: int, chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(code, slot truth) of every non-empty slot of `predict` on `scenes`.

    A slot's truth is what most of its pixels are (`slot_classes`), except that a slot some
    object ends up in (the slot covering most of that object, as `object_records` finds it)
    is never background: it is that object's category (the largest such object's). So a code
    is judged "background" only on slots that hold no object, which is what users meet: an
    object swallowed by a background slot would otherwise be served as "background"."""
    from training.metrics import slot_classes

    codes, truth = [], []
    for i in range(0, len(scenes), chunk):
        part = scenes[i : i + chunk]
        true = np.stack([s.instances for s in part])
        pred, c = predict(np.stack([s.image for s in part]))
        sc = slot_classes(pred, true, [s.classes for s in part], num_slots)
        slot_truth = np.asarray(sc.class_id).copy()
        held = {}  # (image, slot) -> (object pixels, category) of the largest object it holds
        for b, scene in enumerate(part):
            for obj, slot, _, size in object_slots(true[b], pred[b]):
                if size > held.get((b, slot), (0, -1))[0]:
                    held[b, slot] = (size, int(scene.classes[obj - 1]))
        for m, (b, slot) in enumerate(zip(sc.image, sc.slot, strict=True)):
            if slot_truth[m] < 0 and (int(b), int(slot)) in held:
                slot_truth[m] = held[int(b), int(slot)][1]
        codes.append(c[sc.image, sc.slot])
        truth.append(slot_truth)
    return np.concatenate(codes), np.concatenate(truth)


def label_model_codes(
    predict, num_slots: int, num_codes: int, label_set: str, height: int, scenes: int = 256
) -> tuple[list[CodeLabel], Thresholds] | None:
    """Name a model's codes on `scenes` labelled scenes, thresholds on as many others.

    `predict`: uint8 images (B, H, W, 3) -> (slot id per pixel, codes (B, K)). None for the
    `none` label set."""
    if label_set == "none":
        return None
    naming, names = labelled_scenes(label_set, scenes, NAMING_SEED, height)
    validation, _ = labelled_scenes(label_set, scenes, VALIDATION_SEED, height)
    return fit_code_labels(
        slot_pairs(predict, naming, num_slots),
        slot_pairs(predict, validation, num_slots),
        num_codes,
        names,
    )
