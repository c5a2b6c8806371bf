"""loadtests.served_quality: served masks scored against the bundle run directly."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from loadtests.served_quality import compare, main, slot_map
from service.settings import DEFAULT_BUNDLE


def _object(slot: int, code: int, mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "slot": slot,
        "code": code,
        "mask": {"size": rle["size"], "counts": rle["counts"].decode()},
    }


def test_slot_map_paints_each_served_mask_with_its_slot_and_code():
    left = np.zeros((4, 6), bool)
    left[:, :2] = True
    result = {"height": 4, "width": 6, "objects": [_object(3, 7, left), _object(1, 2, ~left)]}
    ids, codes = slot_map(result, num_slots=5)
    assert (ids[:, :2] == 3).all() and (ids[:, 2:] == 1).all()
    assert codes.tolist() == [0, 2, 0, 7, 0]

    result["objects"] = [_object(3, 7, left)]
    with pytest.raises(ValueError, match="16 pixels are in no served mask"):
        slot_map(result, 5)
    result["objects"] = [_object(3, 7, left), _object(1, 2, np.ones((4, 6), bool))]
    with pytest.raises(ValueError, match="overlaps"):
        slot_map(result, 5)


@pytest.mark.slow
def test_served_figures_match_the_bundle_at_its_size_and_another(server):
    same = compare(server.url, DEFAULT_BUNDLE, "textured", 16, 5, 64, 64)
    assert same["scenes"] == 16
    # a lossless PNG at the model's own size: the served masks are the bundle's argmax
    assert same["served"]["fg_ari"] == same["bundle"]["fg_ari"]
    assert same["served"]["code_usage"] == same["bundle"]["code_usage"]
    assert "labels" in same["served"]

    other = compare(server.url, DEFAULT_BUNDLE, "photos-unseen", 16, 5, 96, 160)
    assert other["size"] == [96, 160]
    # the service and the evaluation resize with the same functions (runtime.resize)
    assert abs(other["served_minus_bundle"]["fg_ari"]) <= 0.002


def test_a_missing_bundle_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--bundle", str(tmp_path / "nothing")])
    printed = capsys.readouterr()
    assert exit_.value.code == 2 and "manifest" in printed.err and printed.out == ""
