"""Model invariants: shapes, no NaN, gradients everywhere, determinism, top-down effect,
codebook EMA and dead-code re-seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import small_config
from training.config import ModelConfig
from training.model import build_model
from training.model.codebook import EMACodebook, kmeans

_DEFAULT = ModelConfig()  # the shipped model: its options on the small model
SHIPPED_GROUPING = {
    **_DEFAULT.slot_attention.model_dump(
        include={"init", "locality", "locality_window", "key_pool", "key_pool_mix"}
    ),
    "eval_iterations": 3,
}
SHIPPED_DECODER = _DEFAULT.decoder.model_dump(
    include={"attention_prior", "slot_centric", "merge_share"}
)


def _images(b=3, size=32, seed=0):
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"modulation": {"enabled": False}},
        {"modulation": {"qvf": True}},
        {"slot_attention": {"init": "learned"}},
        {"decoder": {"kind": "conv", "broadcast_size": 8, "output_stride": 2}},
        {"decoder": {"attention_prior": True}},
        {"decoder": {"kind": "conv", "broadcast_size": 8, "attention_prior": True}},
        {"encoder": {"stride": 2}, "decoder": {"attention_prior": True}},
        {"encoder": {"stride": 1}},
        {"decoder": {"slot_centric": True, "attention_prior": True}},
        {"slot_attention": {"locality": 1.0}, "encoder": {"stride": 2}},
        {"slot_attention": {"locality": 1.0, "locality_window": 0.25}, "encoder": {"stride": 2}},
        {"slot_attention": {"key_pool": 3}, "encoder": {"stride": 2}},
        {"slot_attention": {"key_pool": 3, "key_pool_mix": 0.5}, "encoder": {"stride": 2}},
        {
            "encoder": {"stride": 2, "channels": 16},
            "slot_attention": SHIPPED_GROUPING,
            "decoder": SHIPPED_DECODER,
        },
    ],
    ids=[
        "default",
        "no_topdown",
        "qvf",
        "learned_init",
        "conv_decoder",
        "prior",
        "conv_prior",
        "stride2_prior",
        "stride1",
        "slot_centric",
        "locality",
        "locality_window",
        "key_pool",
        "key_pool_mix",
        "shipped_options",
    ],
)
def test_shapes_no_nan_and_gradients_everywhere(overrides):
    torch.manual_seed(0)
    cfg = small_config(**overrides)
    model = build_model(cfg).train()
    out = model(_images())
    out.losses["total"].backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, f"no gradient reaches: {missing}"
    assert torch.isfinite(out.losses["total"])
    model.eval()
    with torch.no_grad():
        out = model(_images())
    k, s = cfg.slot_attention.num_slots, cfg.image_size
    assert out.masks.shape == (3, k, s, s)
    assert out.codes.shape == (3, k) and out.codes.dtype == torch.int64
    assert out.code_distances.shape == (3, k)
    assert out.slots.shape == (3, k, cfg.slot_attention.slot_dim)
    assert out.attention.shape == (3, k, (s // cfg.encoder.stride) ** 2)
    assert out.reconstruction.shape == (3, 3, s, s)
    assert torch.allclose(out.masks.sum(1), torch.ones(3, s, s), atol=1e-5)
    for t in (out.masks, out.code_distances, out.slots, out.reconstruction):
        assert torch.isfinite(t).all()


def test_eval_is_deterministic_and_batch_independent(small_cfg):
    torch.manual_seed(0)
    model = build_model(small_cfg)
    model(_images(8))  # one training step's worth of codebook init / EMA
    model.eval()
    x = _images(4, seed=1)
    with torch.no_grad():
        a, b = model(x), model(x)
        single = model(x[2:3])
    assert torch.equal(a.masks, b.masks) and torch.equal(a.codes, b.codes)
    assert torch.allclose(single.masks[0], a.masks[2], atol=1e-5)
    assert torch.equal(single.codes[0], a.codes[2])


def test_eval_iterations_apply_in_eval_mode_only():
    """`eval_iterations` changes inference, not training: in eval mode the model equals the
    same weights built with that many iterations; in training it runs `iterations`."""
    torch.manual_seed(0)
    more = build_model(small_config(slot_attention={"iterations": 2, "eval_iterations": 4}))
    more(_images(8))  # codebook init
    same = build_model(small_config(slot_attention={"iterations": 4}))
    same.load_state_dict(more.state_dict())
    plain = build_model(small_config(slot_attention={"iterations": 2}))
    plain.load_state_dict(more.state_dict())
    x = _images(3, seed=1)
    more.eval(), same.eval(), plain.eval()
    assert (more.grouping.num_iterations, plain.grouping.num_iterations) == (4, 2)
    with torch.no_grad():
        a, b, c = more(x), same(x), plain(x)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.codes, b.codes)
    assert not torch.allclose(a.masks, c.masks)
    more.train()
    assert more.grouping.num_iterations == 2


def test_training_init_is_stochastic_eval_init_is_fixed(small_cfg):
    model = build_model(small_cfg)
    model.train()
    assert not torch.equal(model.slot_init(2), model.slot_init(2))
    model.eval()
    assert torch.equal(model.slot_init(2), model.slot_init(2))


def test_topdown_changes_the_output(small_cfg):
    torch.manual_seed(0)
    model = build_model(small_cfg).eval()
    torch.nn.init.normal_(model.modulation.to_channel.weight, std=0.5)
    x = _images()
    with torch.no_grad():
        on = model(x)
        modulation, model.modulation = model.modulation, None
        off = model(x)
        model.modulation = modulation
    assert not torch.allclose(on.slots, off.slots, atol=1e-4)
    assert not torch.allclose(on.masks, off.masks, atol=1e-4)
    # the bottom-up pass is shared, so the codes (from bottom-up slots) are the same
    assert torch.equal(on.codes, off.codes)


def test_codebook_kmeans_init_and_ema_update(small_cfg):
    torch.manual_seed(0)
    book = EMACodebook(small_cfg.codebook, 16).train()
    x = torch.randn(4, 6, 16)
    assert not bool(book.initialised)
    book(x)
    assert bool(book.initialised)
    before = book.embed.clone()
    book(x + 1.0)
    assert not torch.equal(before, book.embed), "EMA update did not move the codebook"
    book.eval()
    frozen = book.embed.clone()
    book(torch.randn(4, 6, 16))
    assert torch.equal(frozen, book.embed), "eval mode must not update the codebook"


def test_codebook_lookup_is_nearest_code():
    cfg = small_config().codebook
    book = EMACodebook(cfg, 4).eval()
    x = torch.randn(2, 3, 4)
    q = book(x)
    dists = torch.cdist(x.reshape(-1, 4), book.embed)
    assert torch.equal(q.indices.reshape(-1), dists.argmin(1))
    assert torch.allclose(q.distances.reshape(-1), dists.min(1).values, atol=1e-4)
    assert torch.allclose(q.quantized, book.embed[q.indices], atol=1e-6)


def test_dead_codes_are_reseeded_from_the_batch(small_cfg):
    torch.manual_seed(0)
    book = EMACodebook(small_cfg.codebook, 8).train()
    x = torch.randn(2, 5, 8)
    book(x)
    book.cluster_size[:3] = 0.0  # codes 0-2 unused for a long time
    book.reseeded.zero_()
    x2 = torch.randn(2, 5, 8) + 5.0  # far from everything: no code is assigned to 0-2
    book(x2)
    assert int(book.reseeded) >= 3
    flat = x2.reshape(-1, 8)
    for code in book.embed[:3]:
        assert torch.cdist(code[None], flat).min() < 1e-5, "re-seeded code is not a batch vector"


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g) for c in centres])
    found = kmeans(x, 3, 10, generator=g)
    assert torch.cdist(centres, found).min(1).values.max() < 0.5


def test_attention_prior_shapes_the_masks(small_cfg):
    """With the prior, a slot whose attention is (nearly) zero somewhere cannot own those pixels."""
    torch.manual_seed(0)
    cfg = small_config(decoder={"attention_prior": True})
    model = build_model(cfg).eval()
    x = _images()
    with torch.no_grad():
        out = model(x)
        prior = model._attention_prior(out.attention, (32, 32)).reshape(3, 4, 32, 32)
    # masks = softmax(decoder alpha + log attention): the prior's argmax and the masks agree
    # far more often than chance (1/K) before any training
    agreement = (prior.argmax(1) == out.masks.argmax(1)).float().mean()
    assert agreement > 0.5
    plain = build_model(small_cfg).eval()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert not torch.allclose(plain(x).masks, out.masks)


def test_slot_centric_decoding_moves_with_the_slot():
    """Slots decoded in their own frames: moving every frame's centre by 8 pixels moves the
    decoded colours and masks by exactly 8 pixels (the slots encode no position)."""
    from training.model.decoder import SlotFrames

    torch.manual_seed(0)
    cfg = small_config(decoder={"slot_centric": True})
    decoder = build_model(cfg).decoder.eval()
    pitch = 1.0 / (cfg.image_size - 1)  # one pixel in [0, 1] coordinates
    slots = torch.randn(1, 2, cfg.slot_attention.slot_dim)
    scale = torch.full((1, 2, 2), 0.1)
    centres = torch.tensor([[[10.0, 12.0], [14.0, 9.0]]])

    def decode(shift: float):
        frames = SlotFrames((centres + shift) * pitch, scale)
        with torch.no_grad():
            out = decoder(slots, frames=frames)
        return torch.cat([out.rgb[0].flatten(0, 1), out.masks[0]])  # (2 * 3 + 2, H, W)

    a, b = decode(0.0), decode(8.0)
    assert torch.allclose(a[:, 4:-12, 4:-12], b[:, 12:-4, 12:-4], atol=1e-5)
    assert not torch.allclose(a, b, atol=1e-3), "the decoded slots ignore their frames"


def test_locality_prior_keeps_slots_where_they_attended():
    """Tokens that look alike cannot be told apart by content; the locality prior then hands
    each slot the tokens near where it attended before, and without it attention is even."""
    from training.config import SlotAttentionConfig
    from training.model.slot_attention import SlotAttention

    torch.manual_seed(0)
    grouping = SlotAttention(SlotAttentionConfig(num_slots=2, locality=1.0), 64).eval()
    side = 8
    k = v = torch.randn(1, 1, 64).expand(1, side * side, 64)  # every token the same
    x = torch.arange(side).repeat(side)  # token column, row-major order
    before = torch.stack([(x < side // 2).float(), (x >= side // 2).float()])[None]  # (1, 2, N)
    slots = torch.randn(1, 2, 64)
    with torch.no_grad():
        _, plain = grouping.step(slots, k, v)
        _, local = grouping.step(slots, k, v, prior=grouping.locality_bias(before))
    assert torch.allclose(plain, plain[..., :1].expand_as(plain), atol=1e-5)  # no spatial cue
    left = local[0, 0].reshape(side, side)
    assert (left[:, : side // 2] > 0.5).all() and (left[:, side // 2 :] < 0.5).all()
    # the log-density peaks at each slot's centre and falls off with distance from it
    bias = grouping.locality_bias(before)[0, 0].reshape(side, side)
    assert bias[:, 1:2].mean() > bias[:, 0].mean() > bias[:, -1].mean()


def test_locality_prior_training_and_inference_forms_agree():
    """Training's expanded (matmul) form and inference's offset form are one function."""
    from training.config import SlotAttentionConfig
    from training.model.slot_attention import SlotAttention

    spread = torch.randn(4, 5, 32 * 32, generator=torch.Generator().manual_seed(1))
    peaked = torch.zeros(2, 5, 32 * 32)
    peaked[:, :, :40] = 1.0  # slots on a few tokens: the spread floor applies
    peaked[:, 1, 500:600] = 1.0
    for window in (0.0, 0.25):
        cfg = SlotAttentionConfig(num_slots=5, locality=1.0, locality_window=window)
        grouping = SlotAttention(cfg, 64)
        for attn in (spread.softmax(1), peaked):
            fast = grouping.train().locality_bias(attn)
            exact = grouping.eval().locality_bias(attn)
            assert torch.allclose(fast, exact, rtol=1e-4, atol=1e-3)


def test_locality_window_lets_a_slot_keep_one_of_two_apart_blobs():
    """A slot that attended to two blobs far apart: fitted to all of its attention, its
    Gaussian spans both (the prior barely tells them apart); fitted near the peak
    (`locality_window`) it covers the larger blob only, and the smaller one goes to the other
    slot."""
    from training.config import SlotAttentionConfig
    from training.model.slot_attention import SlotAttention

    torch.manual_seed(0)
    side = 16
    k = v = torch.randn(1, 1, 64).expand(1, side * side, 64)  # every token the same
    blobs = torch.zeros(side, side)
    blobs[1:7, 1:7] = 1.0  # the larger blob, top left
    blobs[11:14, 11:14] = 1.0  # the smaller one, bottom right
    before = torch.stack([blobs, 1.0 - blobs]).flatten(1)[None]  # (1, 2, N)
    small = torch.zeros(side, side, dtype=torch.bool)
    small[11:14, 11:14] = True
    small = small.flatten()
    large = blobs.flatten().bool() & ~small
    gap, share = {}, {}
    for window in (0.0, 0.25):
        cfg = SlotAttentionConfig(num_slots=2, locality=1.0, locality_window=window)
        grouping = SlotAttention(cfg, 64).eval()
        with torch.no_grad():
            prior = grouping.locality_bias(before)
            _, attn = grouping.step(torch.randn(1, 2, 64), k, v, prior=prior)
        bias = prior[0, 0]
        gap[window] = (bias[large].mean() - bias[small].mean()).item()
        share[window] = (attn[0, 0, large].mean().item(), attn[0, 0, small].mean().item())
    assert gap[0.0] < 5.0 < 15.0 < gap[0.25], gap  # log-density, large blob minus small
    assert share[0.25][0] > 0.9 and share[0.25][1] < 0.01, share


def _project(inputs, **fields):
    """Keys and values of a 16-wide SlotAttention with the same weights whatever `fields`."""
    from training.config import SlotAttentionConfig
    from training.model.slot_attention import SlotAttention

    torch.manual_seed(1)
    fields = {"key_pool": 1, "key_pool_mix": 1.0, **fields}  # plain pooling unless asked
    cfg = SlotAttentionConfig(num_slots=3, slot_dim=16, **fields)
    with torch.no_grad():
        return SlotAttention(cfg, 16).project(inputs)


def test_key_pool_averages_keys_over_neighbouring_tokens_and_keeps_values():
    """key_pool=3: every key is the mean of the unpooled keys of its 3x3 tokens (fewer at the
    border), the values are untouched; stripes one token wide keep a third of their contrast."""
    from training.config import SlotAttentionConfig
    from training.model.slot_attention import SlotAttention

    torch.manual_seed(0)
    inputs = torch.randn(2, 36, 16)  # a 6x6 token map
    (k1, v1), (k3, v3) = _project(inputs), _project(inputs, key_pool=3)
    assert torch.equal(v1, v3)
    grid = k1.reshape(2, 6, 6, 16)
    assert torch.allclose(
        k3.reshape(2, 6, 6, 16)[:, 2, 3], grid[:, 1:4, 2:5].mean((1, 2)), atol=1e-6
    )
    assert torch.allclose(k3.reshape(2, 6, 6, 16)[:, 0, 0], grid[:, :2, :2].mean((1, 2)), atol=1e-6)

    a, b = torch.randn(16), torch.randn(16)
    rows = torch.stack([a if r % 2 == 0 else b for r in range(6)])  # (6, 16) stripes
    stripes = rows[:, None].expand(6, 6, 16).reshape(1, 36, 16)
    # row r's key mixes rows r-1..r+1: contrast kept = |1 - 4 mix / 3| (sign flips past 0.75)
    for mix, kept in ((1.0, 1 / 3), (0.5, 1 / 3), (0.25, 2 / 3)):
        cfg = SlotAttentionConfig(num_slots=3, slot_dim=16, key_pool=3, key_pool_mix=mix)
        attention = SlotAttention(cfg, 16)
        attention.norm_inputs = nn.Identity()
        with torch.no_grad():
            keys = attention.project(stripes)[0].reshape(6, 6, 16)
            raw = attention.to_k(torch.stack([a, b]))
        contrast = (keys[2, 2] - keys[3, 2]).norm() / (raw[0] - raw[1]).norm()
        assert contrast.item() == pytest.approx(kept, abs=1e-5), mix


def test_key_pool_mix_blends_own_and_pooled_keys():
    """key_pool_mix=m: each key is (1 - m) * its own key + m * the pooled one; values untouched."""
    inputs = torch.randn(2, 36, 16)
    (own, v1), (pooled, _), (mixed, v3) = (
        _project(inputs),
        _project(inputs, key_pool=3),
        _project(inputs, key_pool=3, key_pool_mix=0.3),
    )
    assert torch.equal(v1, v3)
    assert torch.allclose(mixed, 0.7 * own + 0.3 * pooled, atol=1e-6)
    assert not torch.allclose(mixed, pooled, atol=1e-3)


def test_vit_encoder_loads_a_local_weights_file_and_stays_frozen(tmp_path):
    """encoder.kind=vit builds timm's ViT from the user's weights file (random weights here,
    saved as a DINO checkpoint would be), keeps it frozen in training, and trains the rest."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    name = "vit_tiny_patch16_224"
    weights = timm.create_model(name, num_classes=0, img_size=32).state_dict()
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp_path / "vit.safetensors")
    cfg = small_config(
        encoder={"kind": "vit", "vit_name": name, "vit_weights": str(tmp_path / "vit.safetensors")}
    )
    model = build_model(cfg).train()
    vit = model.encoder.vit
    assert not vit.training, "the frozen ViT left eval mode"
    for key, value in vit.state_dict().items():
        assert torch.equal(value, weights[key]), f"{key} not loaded from the file"
    out = model(_images())
    out.losses["total"].backward()
    assert all(p.grad is None for p in vit.parameters())
    assert model.encoder.mlp[0].weight.grad.abs().sum() > 0
    assert torch.isfinite(out.losses["total"])
    with pytest.raises(ValueError, match="vit_weights"):
        build_model(small_config(encoder={"kind": "vit", "vit_name": name}))
