"""Self-distillation of the attention (slot_attention.distill): DIAS's target (the first
refinement's attention learns the final pass's) and SPOT's (the final attention learns the
feature decoder's alphas), each held fixed; the weight follows its ramp."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from tests.conftest import small_config
from tests.test_photo_model import PHOTO
from training.model import build_model
from training.model.selfmod import attention_distillation


def distilled(weight: float = 0.5):
    return small_config(**PHOTO, slot_attention={"distill": weight})


def test_the_distillation_is_the_cross_entropy_over_slots_at_each_token():
    first = torch.tensor([[[0.5, 0.9], [0.5, 0.1]]])  # (B=1, K=2, N=2)
    final = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    expected = -(math.log(0.5) + math.log(0.1)) / 2
    assert float(attention_distillation(first, final)) == pytest.approx(expected, rel=1e-5)
    # agreeing with a one-hot final attention costs nothing
    assert float(attention_distillation(final, final)) == pytest.approx(0.0, abs=1e-6)


def test_the_loss_adds_the_ramped_distillation_and_only_the_first_refinement_learns_it():
    torch.manual_seed(0)
    model = build_model(distilled(0.5)).train()
    model.distill_ramp = 0.5
    out = model(torch.rand(2, 3, 32, 32))
    losses = {k: float(v.detach()) for k, v in out.losses.items()}
    beta = model.cfg.codebook.commitment_weight
    assert losses["distill"] > 0
    assert losses["total"] == pytest.approx(
        losses["mse"] + beta * losses["commitment"] + 0.25 * losses["distill"], rel=1e-6
    )
    out.losses["distill"].backward()
    # the start and the keys shape the first attention; the final one is the fixed target,
    # so nothing that acts only after the first refinement (the GRU, the decoder) is moved
    assert model.slot_init.mu.grad.abs().sum() > 0
    assert model.grouping.to_q.weight.grad.abs().sum() > 0
    assert model.grouping.gru.weight_ih.grad is None
    assert all(p.grad is None for p in model.decoder.parameters())


def test_without_a_weight_or_outside_training_there_is_no_distillation():
    torch.manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    assert "distill" not in build_model(distilled(0.0)).train()(images).losses
    with torch.no_grad():
        assert "distill" not in build_model(distilled(0.5)).eval()(images).losses


def test_the_distillation_weight_rises_over_half_a_cosine():
    from training.lit import distill_ramp

    values = [distill_ramp(s, 1000) for s in (0, 250, 500, 1000, 5000)]
    assert values == pytest.approx([0.0, 0.5 - 0.5 * math.cos(math.pi / 4), 0.5, 1.0, 1.0])
    assert distill_ramp(0, 0) == 1.0


def test_training_sets_both_ramps_from_the_models_config():
    from training.lit import follow_schedule

    model = build_model(
        small_config(**PHOTO, slot_attention={"distill": 0.5, "distill_ramp": 1000})
    )
    follow_schedule(model, 500)
    assert model.distill_ramp == pytest.approx(0.5)
    assert model.keep_ramp == pytest.approx(500 / model.cfg.slot_attention.keep_warmup)


def test_spots_target_teaches_the_final_attention_the_decoders_alphas_on_the_decoded_tokens():
    def spot(**decoder):
        cfg = small_config(
            **{**PHOTO, "decoder": {**PHOTO["decoder"], **decoder}},
            slot_attention={"distill": 1.0, "distill_target": "decoder"},
        )
        torch.manual_seed(0)
        return build_model(cfg).train()

    model = spot(train_pixels=25)  # every token of the 5x5 grid: the alphas cover it all
    out = model(torch.rand(2, 3, 32, 32))
    alphas = model.decoder(out.slots, grid_tokens=out.attention.shape[-1]).masks.detach()
    expected = attention_distillation(out.attention, alphas)
    assert float(out.losses["distill"]) == pytest.approx(float(expected), rel=1e-5)
    out.losses["distill"].backward()
    assert all(p.grad is None for p in model.decoder.parameters())  # the alphas are the target
    # the final attention's queries and keys learn (through the start, past the refinements
    # the implicit gradient skips)
    assert model.grouping.to_q.weight.grad.abs().sum() > 0
    assert model.slot_init.mu.grad.abs().sum() > 0
    sampled = spot()(torch.rand(2, 3, 32, 32))  # the recipe's sampled tokens
    assert sampled.masks.shape[-1] < sampled.attention.shape[-1]
    assert float(sampled.losses["distill"]) > 0


def test_spots_target_needs_a_feature_decoder():
    with pytest.raises(ValidationError, match="distill_target=decoder"):
        small_config(slot_attention={"distill": 1.0, "distill_target": "decoder"})
