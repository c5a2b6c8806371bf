"""Labels that are true (training/labels.py, export/labels.py): named on one labelled set,
thresholds picked on another, judged on objects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.contract import load_bundle, served_labels
from training.labels import (
    BACKGROUND,
    Thresholds,
    code_labels,
    code_stats,
    fit_code_labels,
    object_records,
    pick_thresholds,
    slot_pairs,
    summarise_records,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["cat", "dog", "cup"]


def pairs(spec: dict[int, dict[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """{code: {truth: count}} -> (codes, truth) arrays; truth -1 is background."""
    codes, truth = [], []
    for code, counts in spec.items():
        for t, n in counts.items():
            codes += [code] * n
            truth += [t] * n
    return np.array(codes), np.array(truth)


def test_stats_count_background_and_the_commonest_category():
    stats = code_stats(*pairs({0: {-1: 6, 1: 3, 2: 1}, 2: {0: 4}}), num_codes=3, num_classes=3)
    assert stats.slots.tolist() == [10, 0, 4]
    assert stats.background_share.tolist() == [0.6, 0.0, 0.0]
    assert stats.category.tolist() == [1, -1, 0]
    assert stats.category_share.tolist() == [0.3, 0.0, 1.0]
    with pytest.raises(ValueError, match="no name"):
        code_stats(np.array([0]), np.array([5]), 3, 3)


def test_pure_codes_are_labelled_and_mixed_ones_are_not():
    naming = pairs({0: {0: 50}, 1: {1: 45, 2: 5}, 2: {-1: 40}, 3: {0: 20, 1: 20}})
    labels, th = fit_code_labels(naming, naming, 5, NAMES)
    assert [c.label for c in labels] == ["cat", "dog", BACKGROUND, None, None]
    assert labels[1].score == 0.9 and labels[3].score == 0.5 and labels[4].slots == 0
    assert th.background == 1.0 and th.category == 0.9  # code 3, right half the time, is out


def test_background_needs_every_validation_slot_right():
    """A code that is 95% background on the naming set, but holds an object on validation,
    is never served as background: a real object would be called background."""
    naming = pairs({0: {-1: 95, 0: 5}, 1: {0: 30}})
    validation = pairs({0: {-1: 50, 0: 1}, 1: {0: 30}})
    labels, th = fit_code_labels(naming, validation, 2, NAMES)
    assert th.background is None and labels[0].label != BACKGROUND
    assert labels[1].label == "cat"
    clean = pairs({0: {-1: 50}, 1: {0: 30}})
    labels, th = fit_code_labels(naming, clean, 2, NAMES)
    assert labels[0].label == BACKGROUND and th.background == 0.95


def test_category_threshold_is_the_lowest_share_that_is_right_often_enough():
    naming = pairs({0: {0: 90, 1: 10}, 1: {1: 70, 2: 30}, 2: {2: 55, 0: 45}})
    # On validation code 1 is right 80% of the time, code 2 only 40%.
    validation = pairs({0: {0: 27, 1: 3}, 1: {1: 24, 2: 6}, 2: {2: 12, 0: 18}})
    naming_stats = code_stats(*naming, 3, 3)
    th = pick_thresholds(naming_stats, code_stats(*validation, 3, 3))
    assert th.category == 0.7  # codes 0 and 1 right 90% and 80% on validation; code 2 40%
    assert [c.label for c in code_labels(naming_stats, th, NAMES)] == ["cat", "dog", None]
    never = pick_thresholds(naming_stats, code_stats(*pairs({0: {1: 30}}), 3, 3))
    assert never.category is None
    assert [c.label for c in code_labels(naming_stats, never, NAMES)] == [None, None, None]


def test_a_code_seen_a_few_times_gets_no_label():
    """Three slots, all cats, on both sets: right every time, but not evidence."""
    few = pairs({0: {0: 3}, 1: {1: 40}})
    labels, _ = fit_code_labels(few, few, 2, NAMES)
    assert [c.label for c in labels] == [None, "dog"]
    assert labels[0].score == 1.0 and labels[0].slots == 3
    alone = pairs({0: {0: 3}})
    assert fit_code_labels(alone, alone, 1, NAMES)[1].category is None


def test_object_records_judge_objects_by_the_slot_that_covers_them():
    true = np.zeros((1, 4, 4), int)
    true[0, :2, :2] = 1  # a cat, covered by slot 1
    true[0, 2:, 2:] = 2  # a cup, swallowed by slot 0 (the background slot)
    pred = np.zeros((1, 4, 4), int)
    pred[0, :2, :2] = 1
    codes = np.array([[5, 3]])
    labels = [None, None, None, "cat", None, BACKGROUND]
    r = summarise_records(object_records(true, [np.array([0, 2])], pred, codes, labels, NAMES))
    assert r["objects"] == 2
    assert r["objects_labelled_background"] == 0.5  # the cup: its slot's code says background
    assert r["matched"] == 0.5 and r["label_accuracy"] == 1.0 and r["label_precision"] == 1.0
    r = summarise_records(object_records(true, [np.array([1, 2])], pred, codes, labels, NAMES))
    assert r["label_accuracy"] == 0.0 and r["label_coverage"] == 1.0


def test_a_background_slot_that_holds_an_object_is_judged_as_that_object():
    """Slot truth for labelling: a mostly-background slot that an object ends up in counts as
    that object's category, so its code cannot earn "background" from it."""
    from training.data import Scene

    instances = np.zeros((6, 6), np.int32)
    instances[:3, :3] = 1  # a cat, with a slot of its own (slot 1)
    instances[4:, 4:] = 2  # a dog (4 pixels), swallowed by slot 0, which is mostly background
    instances[4:, :2] = 3  # a cup, also in slot 0: 3 pixels, so the dog is its largest object
    instances[5, 1] = 0
    scene = Scene(np.zeros((6, 6, 3), np.uint8), instances, np.array([0, 1, 2]))
    pred = np.zeros((6, 6), int)
    pred[:3, :3] = 1
    pred[0, 5] = 2  # slot 2: background only

    def predict(images):
        return pred[None].repeat(len(images), 0), np.array([[7, 4, 9]] * len(images))

    codes, truth = slot_pairs(predict, [scene], num_slots=3)
    assert dict(zip(codes.tolist(), truth.tolist(), strict=True)) == {7: 1, 4: 0, 9: -1}


@pytest.mark.slow
def test_shipped_model_calls_no_object_background_and_its_labels_are_right():
    """The must-show on the shipped shapes bundle, on scenes the labels were not fitted on."""
    from training.data import SHAPE_CLASSES
    from training.evaluate import bundle_predictor, shapes_scenes

    bundle = ROOT / "models" / "slotserve-shapes"
    manifest = load_bundle(bundle)
    assert manifest.code_labels is not None and manifest.label_set == "shapes"
    labels = [label for label, _ in served_labels(manifest)]
    predict = bundle_predictor(bundle)
    for variant in ("solid", "textured"):
        scenes = shapes_scenes(variant, 128, 12345, manifest.input.height)
        pred, codes = predict(np.stack([s.image for s in scenes]))
        true = np.stack([s.instances for s in scenes])
        records = object_records(
            true, [s.classes for s in scenes], pred, codes, labels, SHAPE_CLASSES
        )
        r = summarise_records(records)
        assert r["objects"] > 300 and r["matched"] > 0.7
        assert r["objects_labelled_background"] == 0.0
        assert r["label_coverage"] == 0.0 or r["label_precision"] >= 0.8


def test_thresholds_from_the_manifest_are_the_ones_served():
    manifest = load_bundle(ROOT / "models" / "slotserve-shapes")
    th = Thresholds(**manifest.label_thresholds)
    for spec in manifest.code_labels:
        if spec.label == BACKGROUND:
            assert th.background is not None and spec.background_share >= th.background
        elif spec.label is not None:
            assert th.category is not None and spec.category_share >= th.category
