"""The photo model's pieces: frozen Lite0 features, the feature decoder, masks refined on the
image, the frozen features computed once per training image, and the whole graph exported."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from tests.conftest import small_checkpoint, small_config
from training.model import build_model
from training.model.refine import guided_filter, refine_masks

# A small photo model: frozen Lite0 at 160 px (a 5x5 token grid at stride 32), the feature
# decoder and the guided-filter refinement, so every operator of the photo graph is exercised.
PHOTO = {
    "encoder": {"kind": "lite0", "lite0_input": 160, "lite0_reductions": (32,)},
    "decoder": {"kind": "features", "train_pixels": 16, "refine_radius": 2},
}


def _disc_scene(size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """An image of a disc on a background of another colour, and its 0/1 partition."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    truth = ((x - 30.3) ** 2 + (y - 34.6) ** 2 < 17.5**2).long()
    colours = torch.tensor([[0.8, 0.3, 0.2], [0.2, 0.5, 0.7]])
    image = colours[truth].permute(2, 0, 1)[None]
    image = image + 0.02 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    return image.clamp(0, 1), truth


def test_guided_filter_keeps_a_mask_that_is_affine_in_the_image():
    """He et al.'s defining property: where the mask is an affine function of the guide's
    colours, the filter gives it back (up to the small regulariser)."""
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    mask = (0.3 * image[:, 0:1] - 0.5 * image[:, 1:2] + 0.2 * image[:, 2:3] + 0.4).expand(
        1, 2, 40, 40
    )
    out = guided_filter(image, mask, radius=3, eps=1e-6)
    assert (out - mask).abs().max() < 1e-3
    flat = torch.full_like(mask, 0.25)
    assert (guided_filter(image, flat, 3, 1e-3) - 0.25).abs().max() < 1e-5


def test_refinement_moves_coarse_mask_edges_onto_the_image_edge():
    """An 8x8 grid of area fractions, upsampled to 64x64: bilinear rounds the disc's edge
    off within a cell; the refinement puts it where the colours change."""
    image, truth = _disc_scene()
    onehot = torch.nn.functional.one_hot(truth, 2).permute(2, 0, 1)[None].float()
    coarse = torch.nn.functional.adaptive_avg_pool2d(onehot, 8)  # (1, 2, 8, 8)
    plain = refine_masks(coarse, image, radius=0, eps=1e-3)
    refined = refine_masks(coarse, image, radius=4, eps=1e-3)
    wrong_plain = (plain.argmax(1)[0] != truth).float().mean().item()
    wrong_refined = (refined.argmax(1)[0] != truth).float().mean().item()
    assert wrong_plain > 0.01
    assert wrong_refined < 0.002
    assert torch.allclose(refined.sum(1), torch.ones(1, 64, 64), atol=1e-5)
    assert refined.min() >= 0


def test_lite0_encoder_is_frozen_and_standardises_its_features():
    model = build_model(small_config(**PHOTO)).train()
    enc = model.encoder
    assert not enc.backbone.training and not any(p.requires_grad for p in enc.backbone.parameters())
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    raw = enc.raw_features(images)
    assert raw.shape == (6, 25, 320)  # 160 px / 32 = a 5x5 grid of stride-32 features
    assert not bool(enc.statistics_fitted)
    enc.fit_statistics(raw)
    assert bool(enc.statistics_fitted)
    std = enc.features(images).reshape(-1, 320)
    assert std.mean(0).abs().max() < 1e-4
    assert (std.std(0) - 1).abs()[raw.reshape(-1, 320).std(0) > 1e-3].max() < 1e-3
    assert enc.project(std.view(6, 25, 320)).shape == (6, 25, 32)


def test_training_on_features_of_another_grid_is_refused():
    """Training decodes sampled tokens at their learned positions; features of another grid
    (a cache computed at another Lite0 input) would be decoded at the wrong places, so they
    are refused. In eval mode the positions resize to the grid (a larger input at inference)."""
    model = build_model(small_config(**PHOTO)).train()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    on_grid = torch.randn(2, 25, 320)  # 5x5: the 160-px input the model was built for
    assert torch.isfinite(model(images, on_grid).losses["total"])
    with pytest.raises(ValueError, match=r"grid of 49 tokens.*positions for 25"):
        model(images, torch.randn(2, 49, 320))
    assert model.eval()(images, torch.randn(2, 49, 320)).masks.shape == (2, 4, 32, 32)


def test_two_levels_are_pooled_onto_the_coarsest_grid():
    enc = build_model(
        small_config(**{**PHOTO, "encoder": {"kind": "lite0", "lite0_reductions": (16, 32)}})
    ).encoder
    assert enc.raw_features(torch.rand(1, 3, 32, 32)).shape == (1, 196, 112 + 320)


def test_the_feature_decoder_needs_frozen_features_and_the_token_grid():
    with pytest.raises(ValidationError, match=r"needs encoder\.kind=lite0 or vit"):
        small_config(decoder={"kind": "features"})
    with pytest.raises(ValidationError, match="slot_centric=false"):
        small_config(**{**PHOTO, "decoder": {"kind": "features", "slot_centric": True}})
    with pytest.raises(ValidationError, match="multiple of 32"):
        small_config(encoder={"kind": "lite0", "lite0_input": 100})


def test_the_feature_decoder_is_dinosaurs_mlp_of_slot_plus_position():
    """The decoder runs its first layer on slots and positions apart (for speed); what it
    decodes must be DINOSAUR's definition: the MLP of slot + position per token, an alpha
    softmax over slots, the features mixed by the alphas. Gradients reach every weight."""
    decoder = build_model(small_config(**PHOTO)).decoder
    torch.manual_seed(0)
    slots = torch.randn(3, 4, decoder.pos.shape[-1], requires_grad=True)
    tokens = torch.tensor([0, 7, 3, 24])
    decoded = decoder(slots, tokens)
    whole = decoder.mlp(slots.unsqueeze(2) + decoder.pos[:, :, tokens])  # (B, K, P, C + 1)
    alphas = whole[..., -1].softmax(dim=1)
    torch.testing.assert_close(decoded.masks, alphas, atol=1e-5, rtol=1e-5)
    mixed = (whole[..., :-1] * alphas.unsqueeze(-1)).sum(dim=1)
    torch.testing.assert_close(decoded.reconstruction, mixed, atol=1e-5, rtol=1e-5)
    grid = decoder(slots)  # every token of the trained grid
    assert grid.masks.shape == (3, 4, decoder.pos.shape[2])
    torch.testing.assert_close(grid.masks[:, :, tokens], alphas, atol=1e-5, rtol=1e-5)
    decoded.reconstruction.square().mean().backward()
    assert slots.grad.abs().sum() > 0 and decoder.pos.grad[:, :, tokens].abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.mlp.parameters())


def test_box_mean_is_the_mean_of_the_window_clipped_at_the_border():
    from training.model.refine import box_mean

    x = torch.rand(2, 3, 9, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for radius in (0, 1, 3, 6, 15):  # 15: wider than the image
        out = box_mean(x, radius)
        for i, j in ((0, 0), (4, 5), (8, 11), (2, 10)):
            rows = slice(max(i - radius, 0), i + radius + 1)
            cols = slice(max(j - radius, 0), j + radius + 1)
            window = x[..., rows, cols]
            torch.testing.assert_close(out[..., i, j], window.mean((-2, -1)))


def test_codes_can_quantise_the_frozen_features_a_slot_covers():
    """codebook.source=features: the code names what a slot covers, whatever the slot holds."""
    with pytest.raises(ValidationError, match=r"codebook\.source=features"):
        small_config(codebook={"source": "features"})
    model = build_model(small_config(**PHOTO, codebook={"source": "features"}))
    dim = model.encoder.feature_dim
    assert model.codebook.embed.shape == (8, dim)
    a, b = torch.randn(2, dim, generator=torch.Generator().manual_seed(2))
    model.codebook.embed[3] = a / a.norm()
    model.codebook.embed[5] = b / b.norm()
    tokens = model.encoder.grid_size**2
    features = torch.stack([a.expand(tokens, dim), 2.0 * b.expand(tokens, dim)])
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32), features)
    assert out.codes[0].tolist() == [3] * 4 and out.codes[1].tolist() == [5] * 4
    assert out.code_distances.max() < 1e-3
    # training: the EMA codebook moves in feature space and the modulation learns from codes
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.rand(3, 3, 32, 32)).losses["total"]
    loss.backward()
    assert model.modulation.to_channel.weight.shape == (model.cfg.slot_attention.slot_dim, dim)
    assert model.modulation.to_channel.weight.grad.abs().sum() > 0


def test_photo_model_trains_on_sampled_tokens_and_infers_pixel_masks():
    model = build_model(small_config(**PHOTO)).train()
    images = torch.rand(3, 3, 32, 32)
    out = model(images)
    assert out.masks.shape == (3, 4, 16)  # 16 sampled tokens of 25
    out.losses["total"].backward()
    assert model.decoder.mlp[0].weight.grad is not None
    assert all(p.grad is None for p in model.encoder.backbone.parameters())  # frozen
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert out.masks.shape == (3, 4, 32, 32)
    assert torch.allclose(out.masks.sum(1), torch.ones(3, 32, 32), atol=1e-4)
    assert out.reconstruction.shape == (3, 3, 32, 32)  # each object in its mean colour
    # Features passed in (the training cache) give the same result as features computed.
    with torch.no_grad():
        again = model(images, model.encoder.features(images))
    assert torch.equal(again.masks, out.masks)


def test_positions_resize_to_a_finer_grid_and_keep_the_trained_one():
    from training.model.position import resize_positions

    pos = torch.randn(1, 25, 8)
    assert resize_positions(pos, 25) is pos
    flat = torch.ones(1, 1, 25, 8) * torch.arange(8.0)  # the same position everywhere
    assert torch.allclose(resize_positions(flat, 49), torch.ones(1, 1, 49, 8) * torch.arange(8.0))
    ramp = torch.linspace(0, 1, 5).repeat(5).view(1, 25, 1)  # x of each token, row-major
    finer = resize_positions(ramp, 100).view(10, 10)
    assert (finer.diff(dim=1) > 0).all() and torch.allclose(finer, finer[:1].expand(10, 10))
    with pytest.raises(ValueError, match="square"):
        resize_positions(pos, 30)


def test_a_lite0_model_runs_on_a_larger_input_at_inference_only():
    """`encoder.eval_input`: a finer token grid from the same weights in eval mode (the
    positions of encoder and decoder resized); training keeps the grid it learned on, and
    eval_input equal to lite0_input is the model unchanged."""
    from training.config import InferenceOverrides

    torch.manual_seed(0)
    base = build_model(small_config(**PHOTO))
    finer = build_model(InferenceOverrides(encoder_input=224).apply(base.cfg))
    same = build_model(InferenceOverrides(encoder_input=160).apply(base.cfg))
    for other in (finer, same):
        other.load_state_dict(base.state_dict())  # the override adds no weights
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out, equal = (m.eval()(images) for m in (base, finer, same))
    assert ref.attention.shape[-1] == 25 and out.attention.shape[-1] == 49
    assert out.masks.shape == ref.masks.shape == (2, 4, 32, 32)
    assert torch.allclose(out.masks.sum(1), torch.ones(2, 32, 32), atol=1e-4)
    assert not torch.allclose(out.masks, ref.masks, atol=1e-3)
    assert torch.equal(equal.masks, ref.masks)
    assert finer.train()(images).attention.shape[-1] == 25  # training: the trained grid


def test_encoder_input_is_a_lite0_override_of_a_multiple_of_32():
    import argparse

    from training.config import InferenceOverrides

    parser = argparse.ArgumentParser()
    InferenceOverrides.add_arguments(parser)
    parsed = InferenceOverrides.from_args(parser.parse_args(["--encoder-input", "640"]))
    assert parsed == InferenceOverrides(encoder_input=640) and parsed
    for bad in ("100", "0", "big"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--encoder-input", bad])
    with pytest.raises(ValueError, match="Lite0 encoders"):
        parsed.apply(small_config())  # the shapes model's CNN encoder has no input size
    with pytest.raises(ValidationError, match="multiple of 32"):
        small_config(encoder={"kind": "lite0", "eval_input": 200})


def test_masks_mix_the_decoders_alphas_with_the_slot_attention():
    """`decoder.mask_attention`: 0 gives the alphas, 1 the final slot attention (normalised
    over slots) upsampled, and a share in between their mix; the weights are the same, and
    the override is refused for a pixel decoder and outside [0, 1]."""
    import argparse

    import torch.nn.functional as F

    from training.config import InferenceOverrides

    torch.manual_seed(0)
    flat = {**PHOTO, "decoder": {**PHOTO["decoder"], "refine_radius": 0}}
    base = build_model(small_config(**flat)).eval()
    models = {}
    for share in (0.0, 0.5, 1.0):
        models[share] = build_model(InferenceOverrides(mask_attention=share).apply(base.cfg))
        models[share].load_state_dict(base.state_dict())
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = {share: m.eval()(images) for share, m in models.items()}
        ref = base(images)
    assert torch.equal(out[0.0].masks, ref.masks)
    attn = out[1.0].attention / out[1.0].attention.sum(1, keepdim=True)
    grid = attn.reshape(2, 4, 5, 5)
    up = F.interpolate(grid, size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(out[1.0].masks, up, atol=1e-5)
    assert not torch.allclose(out[1.0].masks, ref.masks, atol=1e-3)
    assert torch.allclose(out[0.5].masks, (out[0.0].masks + out[1.0].masks) / 2, atol=1e-5)
    parser = argparse.ArgumentParser()
    InferenceOverrides.add_arguments(parser)
    assert InferenceOverrides.from_args(parser.parse_args(["--mask-attention", "0.5"])) == (
        InferenceOverrides(mask_attention=0.5)
    )
    for bad in ("1.5", "-0.1", "half"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--mask-attention", bad])
    with pytest.raises(ValueError, match="feature decoders"):
        InferenceOverrides(mask_attention=0.5).apply(small_config())
    # a bundle's recorded settings rebuild its model (`export verify`): a pixel decoder
    # records no share, a feature decoder its own
    shapes = small_config()
    assert InferenceOverrides.held_by(shapes).mask_attention is None
    assert InferenceOverrides.held_by(shapes).apply(shapes) == shapes
    assert InferenceOverrides.held_by(models[0.5].cfg).mask_attention == 0.5


def test_several_starts_keep_each_images_best_reconstruction():
    """`slot_attention.eval_inits`: each image is grouped from every start, and the result of
    the start whose slots reconstruct its features best on every fourth token of the grid
    each way is returned whole (slots, attention, codes, masks); each image chooses for
    itself; start 0 is the model's one stored start, and training draws one start per image."""
    import argparse

    from training.config import InferenceOverrides

    torch.manual_seed(0)
    base = build_model(small_config(**PHOTO)).eval()  # the gaussian init
    finer = InferenceOverrides(encoder_input=224)  # a 7x7 grid: 4 tokens judge a start
    images = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    five = build_model(InferenceOverrides(inits=5, encoder_input=224).apply(base.cfg)).eval()
    single = build_model(finer.apply(base.cfg)).eval()
    for m in (five, single):
        m.load_state_dict(base.state_dict())  # the starts add no weights
    features = five.encoder.features(images)
    assert features.shape[1] == 49
    starts = [five.slot_init.eval_noise, *five.slot_init.more_eval_noise]
    judged = torch.tensor([16, 20, 44, 48])  # rows and columns 2 and 6
    with torch.no_grad():
        out = five(images, features)
        one, errors = [], []
        for noise in starts:
            single.slot_init.eval_noise.copy_(noise)
            o = single(images, features)
            decoded = single.decoder(o.slots, judged, grid_tokens=49)
            errors.append((decoded.reconstruction - features[:, judged]).square().mean((1, 2)))
            one.append(o)
        plain = build_model(finer.apply(base.cfg)).eval()
        plain.load_state_dict(base.state_dict())
        first = plain(images, features)
    assert out.masks.shape == (6, 4, 32, 32) and out.slots.shape == (6, 4, 32)
    best = torch.stack(errors).argmin(0)
    assert len(set(best.tolist())) > 1, "the images choose different starts"
    for i, j in enumerate(best.tolist()):
        assert torch.allclose(out.slots[i], one[j].slots[i], atol=1e-6)
        assert torch.allclose(out.masks[i], one[j].masks[i], atol=1e-6)
        assert torch.equal(out.codes[i], one[j].codes[i])
        assert torch.allclose(out.attention[i], one[j].attention[i], atol=1e-6)
    assert torch.equal(first.masks, one[0].masks)  # start 0 is the stored eps
    with torch.no_grad():  # batch-independent: an image alone chooses the same start
        alone = five(images[4:5], features[4:5])
    assert torch.allclose(alone.masks[0], out.masks[4], atol=1e-6)
    # training: one fresh start per image, as before
    assert five.train()(images).slots.shape == (6, 4, 32)
    # CLI and validation
    parser = argparse.ArgumentParser()
    InferenceOverrides.add_arguments(parser)
    assert InferenceOverrides.from_args(parser.parse_args(["--inits", "8"])) == (
        InferenceOverrides(inits=8)
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["--inits", "0"])
    learned = small_config(**PHOTO, slot_attention={"init": "learned"})
    with pytest.raises(ValidationError, match="init=gaussian"):
        InferenceOverrides(inits=2).apply(learned)
    with pytest.raises(ValidationError, match=r"decoder\.kind=features"):
        small_config(slot_attention={"eval_inits": 2})  # a pixel decoder
    assert InferenceOverrides.held_by(five.cfg).inits == 5


def test_training_computes_each_images_frozen_features_once(monkeypatch):
    from training.config import TrainConfig
    from training.lit import SlotModule

    cfg = TrainConfig.model_validate({"model": small_config(**PHOTO).model_dump()})
    module = SlotModule(cfg)
    enc = module.model.encoder
    calls = []
    original = enc.raw_features
    monkeypatch.setattr(enc, "raw_features", lambda x: calls.append(len(x)) or original(x))
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    first = module._cached_features({"image": images[:2], "index": torch.tensor([0, 1])})
    assert calls == [2] and bool(enc.statistics_fitted)
    mixed = module._cached_features({"image": images[1:3], "index": torch.tensor([1, 2])})
    assert calls == [2, 1]  # only the new image ran through the backbone
    again = module._cached_features({"image": images[:2], "index": torch.tensor([0, 1])})
    assert calls == [2, 1]
    assert torch.equal(again, first) and torch.equal(mixed[0], first[1])
    # float16 storage: within its rounding of the features computed directly
    assert torch.allclose(first, enc.features(images[:2]), atol=2e-2, rtol=1e-2)


def test_validation_computes_each_scenes_frozen_features_once(monkeypatch):
    from training.config import TrainConfig
    from training.lit import SlotModule

    model = {**small_config(**PHOTO).model_dump()}
    model["encoder"] = {**model["encoder"], "eval_input": 192}  # a finer grid at inference
    module = SlotModule(TrainConfig.model_validate({"model": model})).eval()
    enc = module.model.encoder
    enc.fit_statistics(enc.raw_features(torch.rand(2, 3, 32, 32)))
    calls = []
    original = enc.raw_features
    monkeypatch.setattr(enc, "raw_features", lambda x: calls.append(len(x)) or original(x))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    batch = {"image": images, "index": torch.tensor([0, 1, 2])}
    first = module._validation_features(batch, 0)
    assert calls == [3] and first.shape[1] == (192 // 32) ** 2  # the inference grid
    again = module._validation_features(batch, 0)
    assert calls == [3] and torch.equal(again, first)
    module._validation_features(batch, 1)  # another validation set: its own scenes
    assert calls == [3, 3]
    torch.manual_seed(0)
    cached = module.model(images, first).masks
    torch.manual_seed(0)
    assert torch.equal(cached, module.model(images).masks)
    module.drop_cached_features()
    module._validation_features(batch, 0)
    assert calls == [3, 3, 3, 3]  # the model's own forward above, then the emptied cache


@pytest.mark.slow
@pytest.mark.parametrize(("source", "inits"), [("slots", 1), ("features", 3)])
def test_photo_graph_exports_whole_and_passes_the_parity_gate(tmp_path, source, inits):
    """Encoder, slots, codebook, feature decoder and refinement: one ONNX graph that matches
    PyTorch (the export's parity gate raises otherwise, codes included) and takes an image in
    [0, 1], whatever the codes quantise, with one start or the best of several."""
    import numpy as np
    import onnxruntime as ort

    from export.onnx_export import export_bundle
    from runtime.contract import INPUT_NAME, OUTPUT_MASKS, load_bundle, to_model_input
    from training.checkpoint import load_checkpoint
    from training.config import InferenceOverrides

    config = small_config(**PHOTO, codebook={"source": source})
    ckpt = small_checkpoint(tmp_path / "m.safetensors", config)
    # a radius, an encoder input, the attention's share of the masks and the starts set at
    # export (the recipe trained with 2 and 160 px, a 5x5 grid; 224 px gives 7x7): the parity
    # gate compares the graph with the checkpoint at the manifest's settings
    radius = InferenceOverrides(refine_radius=3, encoder_input=224, mask_attention=0.5, inits=inits)
    export_bundle(ckpt, tmp_path / "bundle", verify_batches=(1, 3), overrides=radius)
    manifest = load_bundle(tmp_path / "bundle")
    assert manifest.model.decoder.refine_radius == 3
    assert manifest.model.decoder.model_extra["mask_attention"] == 0.5
    assert manifest.model.model_extra["encoder"]["eval_input"] == 224
    assert manifest.model.slot_attention.model_extra.get("eval_inits", 1) == inits
    # the refinement's box filters are running sums in the graph (onnxruntime's pooling
    # kernel at radius 32 took 35% of the photo model's time)
    from export.graph import graph_report

    assert "CumSum" in graph_report(tmp_path / "bundle" / "model.onnx")["ops"]
    # `export verify` rebuilds the checkpoint at the manifest's settings, not the trained ones
    from export.verify import parity_gate, verify_bundle

    parity_gate(verify_bundle(tmp_path / "bundle", ckpt, batches=(2,)))
    spec = manifest.input
    assert (spec.height, spec.width) == (32, 32)
    images = (np.random.default_rng(0).random((2, 32, 32, 3)) * 255).astype(np.uint8)
    session = ort.InferenceSession(str(tmp_path / "bundle" / "model.onnx"))
    (masks,) = session.run([OUTPUT_MASKS], {INPUT_NAME: to_model_input(images, spec)})
    model, _ = load_checkpoint(ckpt, overrides=radius)
    assert model.cfg.decoder.refine_radius == 3 and model.cfg.decoder.mask_attention == 0.5
    assert model(torch.rand(1, 3, 32, 32)).attention.shape[-1] == 49  # the 7x7 grid
    with torch.no_grad():
        ref = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).masks.numpy()
    assert masks.shape == ref.shape == (2, 4, 32, 32)
    assert np.abs(masks - ref).max() < 1e-3


def test_items_without_an_index_still_fit_the_statistics_and_are_not_kept():
    from training.config import TrainConfig
    from training.lit import SlotModule

    module = SlotModule(TrainConfig.model_validate({"model": small_config(**PHOTO).model_dump()}))
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    out = module._cached_features({"image": images})
    assert bool(module.model.encoder.statistics_fitted) and not module._cache
    assert torch.allclose(out, module.model.encoder.features(images), atol=1e-5)


def test_evaluation_batches_shrink_with_the_encoders_input():
    """A batch of 64 images at 896 px held over 10 GB of Lite0 activations and ran the end of
    `make train-photos` out of memory: evaluation batches hold a fixed number of pixels."""
    from types import SimpleNamespace

    import numpy as np

    from training.evaluate import eval_batch_size, model_predictor

    photo = small_config(**{**PHOTO, "encoder": {**PHOTO["encoder"], "eval_input": 896}})
    assert eval_batch_size(photo) == 5
    assert eval_batch_size(small_config(**PHOTO)) == 64  # 160 px
    assert eval_batch_size(small_config()) == 64

    seen = []

    class Recorder(torch.nn.Module):
        cfg = photo

        def forward(self, x):
            seen.append(len(x))
            return SimpleNamespace(
                masks=torch.ones(len(x), 4, 32, 32) / 4, codes=torch.zeros(len(x), 4)
            )

    predict = model_predictor(Recorder())
    ids, codes = predict(np.zeros((12, 32, 32, 3), np.uint8))
    assert seen == [5, 5, 2] and ids.shape == (12, 32, 32) and codes.shape == (12, 4)
