"""Slots -> objects: slots that share their pixels merge into one object, others stay apart."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import small_checkpoint, small_config
from training.checkpoint import load_checkpoint
from training.config import InferenceOverrides
from training.model.objects import merge_shared_slots, slot_groups, slot_shares


def _masks(*rows: list[float]) -> torch.Tensor:
    """Slot masks over a 1 x P strip of pixels, one row per slot -> (1, K, 1, P)."""
    m = torch.tensor(rows, dtype=torch.float32)
    assert torch.allclose(m.sum(0), torch.ones(m.shape[1])), "masks must sum to 1 over slots"
    return m.view(1, len(rows), 1, -1)


# An object in stripes over pixels 0-5, held by slots 0 and 1 in turn (each keeping 0.3 of
# the other's stripes), and a second object on pixels 6-9 that slot 2 holds alone.
STRIPES = _masks(
    [0.7, 0.3, 0.7, 0.3, 0.7, 0.3, 0.01, 0.01, 0.01, 0.01],
    [0.28, 0.68, 0.28, 0.68, 0.28, 0.68, 0.01, 0.01, 0.01, 0.01],
    [0.02, 0.02, 0.02, 0.02, 0.02, 0.02, 0.98, 0.98, 0.98, 0.98],
)


def test_shares_are_mean_probability_over_the_other_slots_pixels():
    share, area = slot_shares(STRIPES.flatten(2))
    assert area[0].tolist() == [3.0, 3.0, 4.0]
    # slot 1 gives 0.28 to each of slot 0's three pixels; slot 2 gives 0.02
    assert share[0, 1, 0].item() == pytest.approx(0.28)
    assert share[0, 0, 1].item() == pytest.approx(0.3)
    assert share[0, 2, 0].item() == pytest.approx(0.02)
    assert share[0, 0, 2].item() == pytest.approx(0.01)


def test_striped_object_merges_and_the_other_object_stays():
    merged, rep = merge_shared_slots(STRIPES, 0.1)
    assert rep[0].tolist() == [0, 0, 2]  # slot 1 joins slot 0 (equal areas: lowest index)
    assert torch.allclose(merged[0, 0], STRIPES[0, 0] + STRIPES[0, 1])
    assert torch.equal(merged[0, 1], torch.zeros_like(merged[0, 1]))
    assert torch.equal(merged[0, 2], STRIPES[0, 2])
    assert torch.allclose(merged.sum(1), torch.ones_like(merged[:, 0]))
    objects = merged.argmax(1)[0, 0].tolist()
    assert objects == [0] * 6 + [2] * 4


def test_threshold_above_the_shares_keeps_every_slot():
    merged, rep = merge_shared_slots(STRIPES, 0.29)  # 0.28 one way: not mutual
    assert rep[0].tolist() == [0, 1, 2]
    assert torch.equal(merged, STRIPES)


def test_groups_close_transitively_and_the_largest_member_represents_them():
    # links 0-1 and 1-2, not 0-2: one group of three, represented by slot 2 (most pixels)
    share = torch.tensor([[[1.0, 0.2, 0.0], [0.2, 1.0, 0.2], [0.0, 0.2, 1.0]]])
    area = torch.tensor([[3.0, 2.0, 5.0]])
    assert slot_groups(share, area, 0.1)[0].tolist() == [2, 2, 2]


def test_slots_that_win_no_pixel_stay_alone():
    # slot 1 wins nothing but holds 0.3 everywhere: its mass stays in its own channel
    masks = _masks([0.7, 0.7, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3], [0.0, 0.0, 0.7, 0.7])
    merged, rep = merge_shared_slots(masks, 0.1)
    assert rep[0].tolist() == [0, 1, 2]
    assert torch.equal(merged, masks)


def test_model_merges_in_eval_mode_only(tmp_path):
    cfg = small_config(decoder={"merge_share": 0.05})
    path = small_checkpoint(tmp_path / "m.safetensors", cfg)
    model, _ = load_checkpoint(path)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    expected, rep = merge_shared_slots(out.slot_masks, 0.05)
    assert torch.equal(out.masks, expected)
    assert (rep != torch.arange(4)).any(), "this model and threshold merge some slots"
    off, _ = load_checkpoint(path, overrides=InferenceOverrides(merge_share=0.0))
    with torch.no_grad():
        plain = off(x)
    assert torch.equal(plain.masks, plain.slot_masks)
    assert torch.equal(plain.slot_masks, out.slot_masks)
    model.train()
    train_out = model(x)  # training decodes sampled pixels and never merges
    assert train_out.masks.dim() == 3
    assert train_out.slot_masks is train_out.masks


def test_merge_share_is_range_checked():
    with pytest.raises(ValueError, match="merge_share"):
        small_config(decoder={"merge_share": 0.5})
