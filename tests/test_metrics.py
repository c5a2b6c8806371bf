"""Unit tests of training.metrics on hand-made cases whose answers are worked out below."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from training.metrics import (
    SegmentationEvaluator,
    code_histogram,
    code_perplexity,
    code_usage,
    fg_ari,
    majority_purity,
    mbo,
    miou_hungarian,
    name_codes,
    nanmean,
    nmi,
    object_errors,
    slot_classes,
)

# A 4x4 scene: background (0) in the left column, objects 1, 2, 3.
TRUE = np.array(
    [
        [0, 1, 1, 2],
        [0, 1, 1, 2],
        [0, 3, 3, 2],
        [0, 3, 3, 2],
    ]
)


def sk_fg_ari(true: np.ndarray, pred: np.ndarray) -> float:
    fg = true != 0
    return adjusted_rand_score(true[fg], pred[fg])


# --------------------------------------------------------------------------------------------
# segmentation metrics
# --------------------------------------------------------------------------------------------


def test_perfect_segmentation_scores_one() -> None:
    # Prediction = ground truth with slot 0 on the background: every metric is exactly 1.
    for f in (fg_ari, mbo, miou_hungarian):
        np.testing.assert_array_equal(f(TRUE, TRUE), [1.0])


def test_shapes_single_and_batch() -> None:
    batch = np.stack([TRUE, TRUE, TRUE])
    for f in (fg_ari, mbo, miou_hungarian):
        assert f(TRUE, TRUE).shape == (1,)
        assert f(batch, batch).shape == (3,)
    with pytest.raises(ValueError):
        fg_ari(TRUE, TRUE[:3])
    with pytest.raises(ValueError):
        mbo(-TRUE, TRUE)


def test_label_permutation_invariance() -> None:
    rng = np.random.default_rng(1)
    pred = rng.integers(0, 5, size=(3, 4, 4))
    true = np.stack([TRUE] * 3)
    # Rename the predicted segments (0..4 -> arbitrary, even negative/large ints) and the
    # objects (1,2,3 -> 3,1,2; background stays 0): all scores are unchanged.
    pred_perm = np.array([7, -2, 0, 100_000, 3])[pred]
    true_perm = np.array([0, 3, 1, 2])[true]
    for f in (fg_ari, mbo, miou_hungarian):
        np.testing.assert_allclose(f(true_perm, pred_perm), f(true, pred), rtol=0, atol=1e-12)


def test_fg_ari_ignores_background_pixels() -> None:
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 4, size=(20, 4, 4))
    other = pred.copy()
    bg = np.broadcast_to(TRUE == 0, pred.shape)
    other[bg] = rng.integers(0, 4, size=int(bg.sum()))  # only background predictions change
    true = np.broadcast_to(TRUE, pred.shape)
    np.testing.assert_array_equal(fg_ari(true, pred), fg_ari(true, other))


def test_fg_ari_hand_computed_value() -> None:
    # Foreground: six pixels, true = [1,1,1,2,2,2], pred = [0,0,1,1,1,1]; background last two.
    true = np.array([[1, 1, 1, 2, 2, 2, 0, 0]])
    pred = np.array([[0, 0, 1, 1, 1, 1, 0, 1]])
    # Contingency (rows true 1,2; cols pred 0,1): [[2, 1], [0, 3]]
    #   sum_ij C(n_ij,2) = 1 + 0 + 0 + 3 = 4
    #   rows a = (3, 3): sum C(a,2) = 3 + 3 = 6; cols b = (2, 4): sum C(b,2) = 1 + 6 = 7
    #   C(6,2) = 15; expected = 6*7/15 = 2.8; max = (6+7)/2 = 6.5
    #   ARI = (4 - 2.8) / (6.5 - 2.8) = 1.2 / 3.7 = 12/37
    np.testing.assert_allclose(fg_ari(true, pred), [12 / 37], rtol=1e-12)
    assert math.isclose(sk_fg_ari(true, pred), 12 / 37, rel_tol=1e-12)


def test_fg_ari_merge_gives_zero() -> None:
    # Everything (objects and background) in one segment: sum_ij = sum_a, sum_b = C(n,2),
    # so ARI = (sum_a - sum_a) / ((sum_a + C(n,2))/2 - sum_a) = 0.
    np.testing.assert_array_equal(fg_ari(TRUE, np.zeros_like(TRUE)), [0.0])


def test_fg_ari_edge_cases() -> None:
    # No foreground -> NaN.
    assert np.isnan(fg_ari(np.zeros((3, 3), int), np.arange(9).reshape(3, 3))[0])
    # A single object predicted as one cluster -> 1.0 (sklearn's convention).
    one = np.array([[0, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(fg_ari(one, np.array([[5, 2, 2], [0, 2, 2]])), [1.0])
    # A single object split into two clusters -> 0.0 (all predicted pairs inside one object).
    np.testing.assert_array_equal(fg_ari(one, np.array([[0, 1, 1], [0, 2, 2]])), [0.0])
    # One foreground pixel -> 1.0 (no pairs, no disagreement).
    np.testing.assert_array_equal(fg_ari(np.array([[0, 1]]), np.array([[0, 0]])), [1.0])
    # A batch with an empty image: NaN only there, and nanmean skips it.
    true = np.stack([TRUE, np.zeros_like(TRUE)])
    scores = fg_ari(true, true)
    assert scores[0] == 1.0 and np.isnan(scores[1])
    assert nanmean(scores) == 1.0
    assert np.isnan(nanmean([np.nan]))


def test_fg_ari_matches_sklearn_seeded() -> None:
    rng = np.random.default_rng(3)
    for _ in range(60):
        h, w = rng.integers(1, 9, size=2)
        n_true, n_pred = rng.integers(1, 6, size=2)
        true = rng.integers(0, n_true + 1, size=(4, h, w))
        pred = rng.integers(0, n_pred, size=(4, h, w))
        got = fg_ari(true, pred)
        for b in range(4):
            if (true[b] != 0).any():
                assert math.isclose(got[b], sk_fg_ari(true[b], pred[b]), abs_tol=1e-10)
            else:
                assert np.isnan(got[b])


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(-2, 3)), min_size=1, max_size=40),
)
def test_fg_ari_matches_sklearn_hypothesis(pairs: list[tuple[int, int]]) -> None:
    true = np.array([[t for t, _ in pairs]])
    pred = np.array([[p for _, p in pairs]])
    got = fg_ari(true, pred)[0]
    if (true != 0).any():
        assert math.isclose(got, sk_fg_ari(true, pred), abs_tol=1e-10)
    else:
        assert np.isnan(got)


def test_fg_ari_is_fast() -> None:
    # B=512 at 64x64 is one vectorised pass (~20 ms here); the bound is loose for shared CPUs.
    rng = np.random.default_rng(4)
    true = np.repeat(np.repeat(rng.integers(0, 7, (512, 8, 8)), 8, 1), 8, 2)
    pred = np.repeat(np.repeat(rng.integers(0, 11, (512, 16, 16)), 4, 1), 4, 2)
    start = time.perf_counter()
    fg_ari(true, pred)
    assert time.perf_counter() - start < 1.0


def test_split_object_mbo_vs_hungarian() -> None:
    # pixel:  0 1 2 3 4 5 6 7
    true = np.array([[1, 1, 1, 1, 2, 2, 0, 0]])
    pred = np.array([[0, 1, 1, 1, 1, 1, 2, 2]])
    # areas: object 1 = 4, object 2 = 2; segment 0 = 1, segment 1 = 5, segment 2 = 2.
    # IoU(obj1, seg0) = 1/(4+1-1) = 1/4;  IoU(obj1, seg1) = 3/(4+5-3) = 1/2
    # IoU(obj2, seg1) = 2/(2+5-2) = 2/5;  all other IoUs 0.
    # mBO: both objects pick segment 1 -> (1/2 + 2/5)/2 = 0.45
    # Hungarian: obj1->seg1, obj2->seg0|2 = 1/2 + 0; obj1->seg0, obj2->seg1 = 1/4 + 2/5 = 0.65
    #   best = 0.65 -> mIoU = 0.65/2 = 0.325
    np.testing.assert_allclose(mbo(true, pred), [0.45], rtol=1e-12)
    np.testing.assert_allclose(miou_hungarian(true, pred), [0.325], rtol=1e-12)


def test_unmatched_object_counts_zero() -> None:
    # Two objects, one segment covering all four pixels: IoU of each object = 2/4 = 1/2.
    true = np.array([[1, 1, 2, 2]])
    pred = np.zeros_like(true)
    np.testing.assert_allclose(mbo(true, pred), [0.5])  # both objects reuse the segment
    np.testing.assert_allclose(miou_hungarian(true, pred), [0.25])  # (1/2 + 0) / 2
    assert fg_ari(true, pred)[0] == 0.0


def test_no_objects_gives_nan() -> None:
    empty = np.zeros((2, 2), int)
    assert np.isnan(mbo(empty, empty)[0])
    assert np.isnan(miou_hungarian(empty, empty)[0])


def test_object_ids_absent_from_an_image_are_not_counted() -> None:
    # Image 0 uses ids 1..3, image 1 only id 5 (ids 1..4 absent there). Image 1 is perfect.
    img1 = np.array([[0, 5], [0, 5]])
    true = np.stack([np.array([[1, 2], [3, 0]]), img1])
    pred = np.stack([np.array([[0, 0], [1, 1]]), img1])
    # Image 0: segment 0 = {obj1, obj2}, segment 1 = {obj3, bg}; each object IoU 1/2 with its
    # segment -> mBO 1/2; Hungarian obj1->seg0, obj3->seg1, obj2 unmatched -> (1/2+1/2)/3.
    np.testing.assert_allclose(mbo(true, pred), [0.5, 1.0])
    np.testing.assert_allclose(miou_hungarian(true, pred), [1 / 3, 1.0])


def test_object_errors_hand_made() -> None:
    """Objects 1 and 2 touch; object 3 is apart from both."""
    true = np.zeros((8, 8), int)
    true[0:3, 0:3], true[0:3, 3:6], true[6:8, 6:8] = 1, 2, 3

    def errors(pred):
        e = object_errors(true, pred)
        return e.split.tolist(), e.merged.tolist(), e.merged_apart.tolist()

    assert errors(true) == ([False] * 3, [False] * 3, [False] * 3)
    touching = np.where(true == 2, 1, true)  # 1 and 2 in one segment
    assert errors(touching) == ([False] * 3, [True, True, False], [False] * 3)
    apart = np.where(true == 3, 1, true)  # 1 and 3 in one segment
    assert errors(apart) == ([False] * 3, [True, False, True], [True, False, True])
    split = true.copy()
    split[0:3, 0:2] = 5  # 6 of object 1's 9 pixels elsewhere: 2/3 < 0.8 in one segment
    assert errors(split) == ([True, False, False], [False] * 3, [False] * 3)
    assert object_errors(true, split, split_below=0.6).split.tolist() == [False] * 3
    # Large, sparse ids and a batch: objects are counted per image, absent ids are skipped.
    big = np.where(true > 0, true + 1000, 0)
    e = object_errors(np.stack([big, np.where(big == 1003, 0, big)]), np.stack([apart, apart]))
    assert e.merged_apart.tolist() == [True, False, True, False, False]
    # Background is no object: sharing a segment with it is neither a merge nor a split.
    with_background = np.where(true >= 2, true, 7)  # object 1 and the background: segment 7
    assert errors(with_background) == ([False] * 3, [False] * 3, [False] * 3)


# --------------------------------------------------------------------------------------------
# code metrics
# --------------------------------------------------------------------------------------------


def test_code_histogram_and_usage() -> None:
    codes = np.array([[0, 3, 3], [3, 5, 0]])
    np.testing.assert_array_equal(code_histogram(codes, 8), [2, 0, 0, 3, 0, 1, 0, 0])
    assert code_usage(codes, 8) == 3 / 8  # codes 0, 3, 5 used
    with pytest.raises(ValueError):
        code_histogram(np.array([8]), 8)


def test_code_perplexity() -> None:
    # Uniform over m codes: H = log2 m -> perplexity m.
    for m in (1, 2, 5, 16):
        codes = np.repeat(np.arange(m), 3)
        assert math.isclose(code_perplexity(codes, 32), m, rel_tol=1e-12)
    # A single code: H = 0 -> 1.
    assert code_perplexity(np.full(10, 7), 32) == 1.0
    # p = (1/2, 1/4, 1/4): H = 1/2*1 + 2 * 1/4*2 = 1.5 bits -> 2 ** 1.5.
    assert math.isclose(code_perplexity(np.array([0, 0, 1, 2]), 4), 2**1.5, rel_tol=1e-12)
    assert np.isnan(code_perplexity(np.zeros(0, int), 4))


def test_nmi() -> None:
    a = np.array([0, 0, 1, 1, 2, 2])
    assert math.isclose(nmi(a, np.array([5, 5, 9, 9, 1, 1])), 1.0)  # relabelled partition
    # Exactly independent: every (a, b) combination once -> MI = 0.
    assert abs(nmi(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))) < 1e-12
    rng = np.random.default_rng(5)
    x, y = rng.integers(0, 4, 20_000), rng.integers(0, 4, 20_000)
    assert nmi(x, y) < 0.01
    assert nmi(x, y) == normalized_mutual_info_score(x, y, average_method="arithmetic")


def test_majority_purity() -> None:
    codes = np.array([0, 0, 0, 1, 1, 2])
    classes = np.array([4, 4, 7, 7, 7, 9])
    # code 0 -> class 4 (2 of 3), code 1 -> class 7 (2), code 2 -> class 9 (1): 5/6.
    assert math.isclose(majority_purity(codes, classes), 5 / 6)
    assert majority_purity(np.array([3, 3]), np.array([1, 2])) == 0.5


def test_slot_classes_tiny_map() -> None:
    true = np.array([[0, 1, 1], [0, 2, 2]])  # object 1 has class 5, object 2 class 7
    pred = np.array([[0, 0, 1], [0, 2, 2]])  # slot 3 of 4 is empty
    r = slot_classes(pred, true, np.array([5, 7]), num_slots=4)
    # slot 0: pixels bg, obj1, bg -> background (-1); slot 1: obj1 -> 5; slot 2: obj2 x2 -> 7
    np.testing.assert_array_equal(r.slot, [0, 1, 2])
    np.testing.assert_array_equal(r.class_id, [-1, 5, 7])
    np.testing.assert_array_equal(r.image, [0, 0, 0])
    slot, class_id, image = r  # also a plain tuple
    assert slot is r.slot and class_id is r.class_id and image is r.image


def test_slot_classes_batch_ties_and_lookup() -> None:
    true = np.stack([np.array([[0, 1], [2, 2]]), np.array([[1, 1], [1, 0]])])
    pred = np.stack([np.array([[1, 1], [0, 0]]), np.array([[2, 2], [0, 0]])])
    classes = [np.array([3, 1]), np.array([2])]
    r = slot_classes(pred, true, classes, num_slots=3, background_class=-1)
    # image 0: slot 0 = obj2 x2 -> 1; slot 1 = bg + obj1 -> tie (-1 vs 3) -> smallest = -1
    # image 1: slot 0 = obj1 + bg -> tie -> -1; slot 2 = obj1 x2 -> 2; slot 1 empty
    np.testing.assert_array_equal(r.image, [0, 0, 1, 1])
    np.testing.assert_array_equal(r.slot, [0, 1, 0, 2])
    np.testing.assert_array_equal(r.class_id, [1, -1, -1, 2])
    codes = np.array([[10, 11, 12], [20, 21, 22]])
    np.testing.assert_array_equal(codes[r.image, r.slot], [10, 11, 20, 22])
    with pytest.raises(ValueError):  # image 0 has object id 2 but only one class
        slot_classes(pred, true, [np.array([3]), np.array([2])], num_slots=3)
    with pytest.raises(ValueError):  # slot index out of range
        slot_classes(pred, true, classes, num_slots=2)


def test_name_codes() -> None:
    codes = np.array([0, 0, 0, 2, 2, 3])
    classes = np.array([1, 1, 0, -1, -1, 0])
    names = name_codes(codes, classes, 5, ["circle", "square"], background_name="bg")
    # code 0: square x2, circle x1 -> square; code 1 unseen; code 2: background; code 3: circle
    assert names == ["square", None, "bg", "circle", None]


# --------------------------------------------------------------------------------------------
# evaluator
# --------------------------------------------------------------------------------------------


def test_evaluator_end_to_end() -> None:
    ev = SegmentationEvaluator(
        num_slots=3, num_codes=4, class_names=["circle", "square", "triangle"]
    )
    # Image A: perfect. ARI 1, mBO 1, mIoU 1.
    #   slot 0 = obj1 (class 0, code 2), slot 1 = obj2 (class 1, code 0), slot 2 empty.
    # Image B: two objects merged into slot 0. ARI 0; IoU of each object 2/4:
    #   mBO 1/2, mIoU (1/2 + 0)/2 = 1/4. slot 0 -> class 1 (code 0), slots 1, 2 empty.
    true_ab = np.array([[[1, 1], [2, 2]], [[1, 1], [2, 2]]])
    pred_ab = np.array([[[0, 0], [1, 1]], [[0, 0], [0, 0]]])
    codes_ab = np.array([[2, 0, 1], [0, 3, 3]])
    ev.update(true_ab, [np.array([0, 1]), np.array([1, 1])], pred_ab, codes_ab)
    # Image C (second batch): one object (class 2) in the bottom row, perfect.
    #   ARI 1 (one object, one cluster), mBO 1, mIoU 1.
    #   slot 0 = background (class -1, code 2), slot 1 = obj1 (class 2, code 1), slot 2 empty.
    ev.update(
        np.array([[[0, 0], [1, 1]]]), [np.array([2])], np.array([[[0, 0], [1, 1]]]),
        np.array([[2, 1, 0]]),
    )  # fmt: skip
    out = ev.compute()
    assert out["images"] == 3
    assert math.isclose(out["fg_ari"], 2 / 3)  # (1 + 0 + 1) / 3
    assert math.isclose(out["mbo"], 2.5 / 3)  # (1 + 1/2 + 1) / 3
    assert math.isclose(out["miou"], 0.75)  # (1 + 1/4 + 1) / 3
    # 5 objects; the two of image B share slot 0 and touch: merged, not apart; none split.
    assert math.isclose(out["merged_objects"], 0.4)
    assert out["merged_apart_objects"] == 0.0 and out["split_objects"] == 0.0
    # (code, class) pairs: (2,0) (0,1) (0,1) (2,-1) (1,2)
    # code counts: 0 -> 2, 1 -> 1, 2 -> 2, 3 -> 0; p = (.4, .2, .4)
    h_codes = -(2 * 0.4 * math.log2(0.4) + 0.2 * math.log2(0.2))  # 1.5219 bits
    assert math.isclose(out["code_perplexity"], 2**h_codes)
    assert out["code_usage"] == 0.75 and out["codes_used"] == 3
    # classes: 1 -> 2 times, 0, -1, 2 -> once each: H = 0.4*log2(1/.4) + 3*0.2*log2(5)
    h_classes = -(0.4 * math.log2(0.4) + 3 * 0.2 * math.log2(0.2))  # 1.9219 bits
    # H(class | code) = 0.4 * 1 bit (code 2 splits evenly over classes 0 and -1), others 0
    mi = h_classes - 0.4
    assert math.isclose(out["code_class_nmi"], mi / ((h_codes + h_classes) / 2))  # 0.8839
    # purity: code 0 -> 2 (class 1), code 1 -> 1, code 2 -> 1 (tie) = 4/5
    assert math.isclose(out["code_class_purity"], 0.8)
    # code 2 ties background (-1) and circle (0): the smallest class value, background, wins.
    assert ev.code_names() == ["square", "triangle", "background", None]

    ev.reset()
    assert ev.compute()["images"] == 0


def test_evaluator_without_codes() -> None:
    ev = SegmentationEvaluator(num_slots=4)
    ev.update(TRUE[None], [np.array([0, 0, 0])], TRUE[None])
    out = ev.compute()
    assert set(out) == {
        "images", "fg_ari", "mbo", "miou", "split_objects", "merged_objects",
        "merged_apart_objects",
    }  # fmt: skip
    assert out["fg_ari"] == out["mbo"] == out["miou"] == 1.0
    assert out["split_objects"] == out["merged_objects"] == out["merged_apart_objects"] == 0.0
    with pytest.raises(ValueError):
        ev.code_names()
