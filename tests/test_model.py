"""Model invariants: shapes, no NaN, gradients everywhere, determinism, top-down effect,
codebook EMA and dead-code re-seeding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import small_config
from training.model import build_model
from training.model.codebook import EMACodebook, kmeans


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
        {"slot_attention": {"locality": 1.0, "locality_gate": True}},
        {"slot_attention": {"locality": 1.0, "locality_window": 0.25, "free_slots": 1}},
        {"decoder": {"slot_centric": True, "film": True, "orientations": 6}},
        {"slot_attention": {"key_pool": 3}, "encoder": {"stride": 2}},
        {"slot_attention": {"key_pool": 3, "key_pool_mix": 0.5}, "encoder": {"stride": 2}},
        {"encoder": {"stride": 2, "layers": 6}},
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
        "locality_gate",
        "free_slots",
        "film_oriented",
        "key_pool",
        "key_pool_mix",
        "deeper_encoder",
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


def test_deeper_encoder_appends_convs_and_keeps_four_layer_keys():
    """Layers past four are extra 3x3 convs after the first four, so a four-layer checkpoint's
    encoder weights load into the first part of a deeper one unchanged."""
    four = build_model(small_config(encoder={"stride": 2})).encoder
    six = build_model(small_config(encoder={"stride": 2, "layers": 6})).encoder
    convs = [m for m in six.convs if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 6
    assert all(c.kernel_size == (3, 3) and c.stride == (1, 1) for c in convs[4:])
    four_keys = set(four.state_dict())
    assert four_keys < set(six.state_dict())
    missing, _ = six.load_state_dict(four.state_dict(), strict=False)
    assert {k.split(".")[1] for k in missing} == {"8", "10"}  # only the two new convs
    assert six(_images()).shape == four(_images()).shape


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


def test_oriented_fourier_bands():
    """Two orientations are the x and y axes exactly (checkpoints trained before the option
    decode the same); n orientations are unit vectors pi / n apart, and a band along 45
    degrees is constant along the other diagonal."""
    from training.model.decoder import band_directions, fourier_features

    coords = torch.rand(50, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(band_directions(2), torch.eye(2))
    assert torch.allclose(
        fourier_features(coords, 4, band_directions(2)), fourier_features(coords, 4)
    )
    d = band_directions(4)
    assert torch.allclose(d.norm(dim=0), torch.ones(4))
    assert torch.allclose(d[:, 1], torch.tensor([0.5**0.5, 0.5**0.5]))
    along_anti = torch.tensor([[0.2, 0.6], [0.4, 0.4], [0.7, 0.1]])  # x + y = 0.8
    feats = fourier_features(along_anti, 3, d).view(3, -1)
    n, bands = 4, 3  # layout: n raw, then sin (n x bands), then cos (n x bands)
    bands_45 = [1] + [n + k * n * bands + bands + b for k in (0, 1) for b in range(bands)]
    assert torch.allclose(feats[:, bands_45], feats[:1, bands_45].expand(3, -1), atol=1e-5)
    assert fourier_features(coords, 4, d).shape == (50, 4 * (1 + 2 * 4))


def test_film_decoder_conditions_every_layer_on_the_slot():
    """With its FiLM layer zeroed, the FiLM decoder is exactly the additive decoder with the
    same weights; a slot's FiLM scales then change its colours and masks, not another slot's
    colours."""
    torch.manual_seed(0)
    cfg = small_config(decoder={"slot_centric": True, "film": True})
    film = build_model(cfg).decoder.eval()
    plain = build_model(small_config(decoder={"slot_centric": True})).decoder.eval()
    plain.load_state_dict({k: v for k, v in film.state_dict().items() if not k.startswith("film.")})
    slots = torch.randn(2, 3, cfg.slot_attention.slot_dim)
    with torch.no_grad():
        film.film.weight.zero_()
        film.film.bias.zero_()
        assert torch.allclose(film(slots).reconstruction, plain(slots).reconstruction, atol=1e-6)
        before = film(slots)
        film.film.bias[cfg.decoder.channels :].normal_()  # scales and shifts of later layers
        after = film(slots)
    assert not torch.allclose(before.rgb, after.rgb, atol=1e-3)
    # each slot's colours depend on that slot only: moving slot 0 leaves slots 1-2 as they are
    moved = slots.clone()
    moved[:, 0] += 1.0
    with torch.no_grad():
        again = film(moved)
    assert torch.allclose(again.rgb[:, 1:], after.rgb[:, 1:], atol=1e-6)
    assert not torch.allclose(again.rgb[:, 0], after.rgb[:, 0], atol=1e-3)


def test_boundary_length_counts_cut_neighbour_pairs():
    """Hand-made partitions of a 4x4 token grid (24 neighbour pairs): one segment has no
    boundary; halves cut 4 pairs (2 * 4 / 24); stripes one token wide cut 12; an even soft
    mix has none. The penalty enters the loss with its weight, and its gradient reaches the
    grouping."""
    from training.model.selfmod import boundary_length

    def partition(labels):
        return torch.nn.functional.one_hot(torch.tensor(labels).flatten(), 2).T[None].float()

    whole = partition([[0] * 4] * 4)
    halves = partition([[0, 0, 1, 1]] * 4)
    stripes = partition([[0, 1, 0, 1]] * 4)
    assert boundary_length(whole).item() == 0.0
    assert boundary_length(halves).item() == pytest.approx(2 * 4 / 24)
    assert boundary_length(stripes).item() == pytest.approx(2 * 12 / 24)
    assert boundary_length(torch.full((1, 2, 16), 0.5)).item() == 0.0

    torch.manual_seed(0)
    cfg = small_config(slot_attention={"boundary_weight": 0.5})
    model = build_model(cfg).train()
    out = model(_images())
    losses = out.losses
    assert losses["boundary"] > 0
    expected = losses["mse"] + cfg.codebook.commitment_weight * losses["commitment"]
    assert torch.allclose(losses["total"], expected + 0.5 * losses["boundary"])
    losses["boundary"].backward()
    assert model.grouping.to_k.weight.grad.abs().sum() > 0
    assert "boundary" not in build_model(small_config()).train()(_images()).losses


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


def test_locality_gate_scales_each_slots_prior():
    """A closed gate is plain Slot Attention for that slot, an open one the full prior; the
    gate is read per slot, so slots can differ."""
    from training.config import SlotAttentionConfig
    from training.model.slot_attention import SlotAttention

    torch.manual_seed(0)
    inputs = torch.randn(2, 16 * 16, 32)
    slots = torch.randn(2, 4, 32)

    def grouping(locality, gate_logit=None):
        cfg = SlotAttentionConfig(
            num_slots=4, slot_dim=32, locality=locality, locality_gate=gate_logit is not None
        )
        torch.manual_seed(1)
        module = SlotAttention(cfg, 32).eval()
        if gate_logit is not None:
            nn.init.constant_(module.to_gate.bias, gate_logit)
        with torch.no_grad():
            return module(inputs, slots)[1]  # last attention (B, K, N)

    plain, full = grouping(0.0), grouping(1.0)
    assert not torch.allclose(plain, full, atol=1e-3), "the prior changes nothing here"
    assert torch.allclose(grouping(1.0, -50.0), plain, atol=1e-6)
    assert torch.allclose(grouping(1.0, 50.0), full, atol=1e-6)

    cfg = SlotAttentionConfig(num_slots=4, slot_dim=32, locality=1.0, locality_gate=True)
    module = SlotAttention(cfg, 32)
    assert torch.sigmoid(module.to_gate(slots)).min() > 0.9  # starts with the full prior
    with torch.no_grad():
        module.to_gate.weight.copy_(slots[0, :1])  # a gate that differs from slot to slot
    gates = torch.sigmoid(module.to_gate(slots))
    assert gates.shape == (2, 4, 1) and gates.std() > 0.01


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


def test_free_slots_ignore_the_locality_prior():
    """A free slot gets no locality prior (the first `free_slots` slots); the others keep it,
    so a free slot with the prior is the same as the prior with that slot's row zeroed."""
    from training.config import SlotAttentionConfig
    from training.model.slot_attention import SlotAttention

    torch.manual_seed(0)
    slots, k, v = torch.randn(2, 4, 32), torch.randn(2, 64, 32), torch.randn(2, 64, 32)
    prior = torch.randn(2, 4, 64) * 3.0

    def step(free, prior):
        cfg = SlotAttentionConfig(num_slots=4, slot_dim=32, locality=1.0, free_slots=free)
        torch.manual_seed(1)
        with torch.no_grad():
            return SlotAttention(cfg, 32).eval().step(slots, k, v, prior=prior)[1]

    zeroed = prior.clone()
    zeroed[:, 0] = 0.0
    free = step(1, prior)
    assert torch.allclose(free, step(0, zeroed), atol=1e-6)
    assert not torch.allclose(free, step(0, prior), atol=1e-3), "the free slot kept its prior"


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
