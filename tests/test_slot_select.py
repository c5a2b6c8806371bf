"""The adaptive slot count (slot_attention.keep_penalty, AdaSlot): what a dropped slot does to
the alphas, the masks and the loss, in training and at inference, and that the graph exports."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from tests.conftest import small_checkpoint, small_config
from tests.test_photo_model import PHOTO
from training.model import build_model
from training.model.slot_select import SlotSelector, keep_softmax


def adaptive(penalty: float = 0.1):
    return small_config(**PHOTO, slot_attention={"keep_penalty": penalty})


def test_keep_softmax_is_the_softmax_over_the_kept_slots_alone():
    logits = torch.randn(2, 5, 7)
    keep = torch.tensor([[1.0, 0, 1, 1, 0], [0, 0, 0, 1, 0]])
    shares = keep_softmax(logits, keep)
    assert torch.allclose(shares[0, [0, 2, 3]], logits[0, [0, 2, 3]].softmax(0), atol=1e-6)
    assert torch.equal(shares[0, [1, 4]], torch.zeros(2, 7))
    assert torch.allclose(shares[1, 3], torch.ones(7)) and shares[1].sum() == 7
    # a dropped slot with a far larger logit than every kept one changes nothing
    logits[0, 1] = 1e3
    assert torch.allclose(keep_softmax(logits, keep)[0], shares[0], atol=1e-6)
    assert torch.allclose(keep_softmax(logits, torch.ones(2, 5)), logits.softmax(1))


def test_the_gradient_reaches_the_keep_decision():
    logits = torch.randn(1, 3, 4)
    keep = torch.tensor([[1.0, 1.0, 0.0]], requires_grad=True)
    keep_softmax(logits, keep)[0, 0].sum().backward()
    assert keep.grad is not None and keep.grad[0, 2] != 0  # keeping slot 2 would take a share


def test_inference_keeps_the_likelier_choice_and_at_least_one_slot():
    selector = SlotSelector(8, 16).eval()
    with torch.no_grad():
        selector.net[-1].bias.copy_(torch.tensor([-50.0, 0.0]))  # every slot prefers dropping
        kept = selector(torch.randn(4, 6, 8))
    assert torch.equal(kept.sum(1), torch.ones(4))  # each image's surest slot stays
    with torch.no_grad():
        selector.net[-1].bias.copy_(torch.tensor([50.0, 0.0]))
        assert torch.equal(selector(torch.randn(4, 6, 8)), torch.ones(4, 6))
    selector.train()
    sample = selector(torch.randn(64, 6, 8))
    assert set(sample.unique().tolist()) <= {0.0, 1.0}  # hard samples in training


def test_in_training_a_dropped_slot_takes_no_token_and_the_loss_pays_for_the_kept():
    torch.manual_seed(0)
    model = build_model(adaptive(0.5)).train()
    out = model(torch.rand(3, 3, 32, 32))
    kept = out.kept.detach()
    assert 0 < kept.sum() < kept.numel()  # the head starts keeping most slots, not all
    losses = {k: float(v.detach()) for k, v in out.losses.items()}
    assert losses["kept"] == float(kept.mean())
    beta = model.cfg.codebook.commitment_weight
    assert losses["total"] == pytest.approx(
        losses["mse"] + beta * losses["commitment"] + 0.5 * losses["kept"], rel=1e-6
    )
    masks = out.masks.detach()  # (B, K, sampled tokens)
    assert torch.equal(masks[kept == 0], torch.zeros_like(masks[kept == 0]))
    out.losses["total"].backward()
    assert model.selector.net[1].weight.grad.abs().sum() > 0  # the head learns


def test_the_keep_penalty_rises_over_its_warmup():
    from training.lit import keep_ramp

    assert [keep_ramp(s, 4000) for s in (0, 1000, 4000, 9000)] == [0.0, 0.25, 1.0, 1.0]
    assert keep_ramp(0, 0) == 1.0
    torch.manual_seed(0)
    model = build_model(adaptive(0.5)).train()
    model.keep_ramp = 0.0
    losses = {k: float(v.detach()) for k, v in model(torch.rand(2, 3, 32, 32)).losses.items()}
    beta = model.cfg.codebook.commitment_weight
    assert losses["total"] == pytest.approx(losses["mse"] + beta * losses["commitment"], rel=1e-6)


def test_at_inference_a_dropped_slots_mask_is_zero_everywhere():
    model = build_model(adaptive()).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images).kept, torch.ones(2, 4))  # the head's start keeps all
    keep = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]])
    model.selector.forward = lambda slots: keep
    with torch.no_grad():
        out = model(images)
    assert torch.equal(out.masks[keep == 0], torch.zeros_like(out.masks[keep == 0]))
    assert torch.allclose(out.masks.sum(1), torch.ones(2, 32, 32), atol=1e-4)
    assert torch.allclose(out.masks[1, 1], torch.ones(32, 32))


def test_keep_penalty_needs_a_feature_decoder():
    with pytest.raises(ValidationError, match="keep_penalty"):
        small_config(slot_attention={"keep_penalty": 0.1})


@pytest.mark.slow
def test_an_adaptive_model_exports_and_passes_the_parity_gate(tmp_path):
    from export.onnx_export import export_bundle
    from runtime.contract import load_bundle

    ckpt = small_checkpoint(tmp_path / "m.safetensors", adaptive())
    export_bundle(ckpt, tmp_path / "bundle", verify_batches=(1, 3))
    assert load_bundle(tmp_path / "bundle").model.slot_attention.model_extra["keep_penalty"] == 0.1


def test_a_fixed_count_checkpoint_starts_an_adaptive_run(tmp_path):
    from training.checkpoint import CheckpointInfo, save_checkpoint
    from training.config import TrainConfig
    from training.train import SlotModule, _init_from

    fixed = build_model(small_config(**PHOTO))
    ckpt = save_checkpoint(fixed, tmp_path / "m.safetensors", CheckpointInfo(fixed.cfg))
    cfg = TrainConfig(model=adaptive())
    module = SlotModule(cfg)
    head = {k: v.clone() for k, v in module.model.selector.state_dict().items()}
    _init_from(module, cfg, str(ckpt))
    for name, value in module.model.state_dict().items():
        if name.startswith("selector."):  # new: as built
            assert torch.equal(value, head[name.removeprefix("selector.")])
        else:
            assert torch.equal(value, fixed.state_dict()[name])
    other = TrainConfig(
        model=small_config(**PHOTO, slot_attention={"keep_penalty": 0.1, "num_slots": 3})
    )
    with pytest.raises(ValueError, match="model config differs"):
        _init_from(SlotModule(other), other, str(ckpt))
