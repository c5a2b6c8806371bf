"""The CPU-shaped inference paths (issue 28, GFLOP utilisation) are the reference math, and the
exported graph keeps them: separable slot-frame positions, 2-D Gemm decoder layers, no RGB in
a masks-only graph, and a locality prior without (B, K, N, 2) offset tensors."""

from __future__ import annotations

import onnx
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import small_config
from training.model import build_model
from training.model.decoder import SlotFrames
from training.model.position import token_grid
from training.model.slot_attention import SlotAttention


def _decoder_inputs(cfg, b=2, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    k, d, p = cfg.slot_attention.num_slots, cfg.slot_attention.slot_dim, cfg.image_size**2
    slots = torch.randn(b, k, d, generator=g, dtype=dtype)
    centre = torch.rand(b, k, 2, generator=g, dtype=dtype)
    # spreads from tiny (offsets clamped at FRAME_CLAMP) to wide
    scale = torch.rand(b, k, 2, generator=g, dtype=dtype) * 0.3 + 0.005
    bias = torch.randn(b, k, p, generator=g, dtype=dtype)
    return slots, SlotFrames(centre, scale), bias


def _decode(decoder, cpu_shaped, slots, frames, bias):
    decoder.cpu_shaped = cpu_shaped
    with torch.no_grad():
        return decoder(slots, alpha_bias=bias, frames=frames)


def test_cpu_shaped_decoder_is_the_reference_function():
    torch.manual_seed(0)
    cfg = small_config(decoder={"slot_centric": True, "attention_prior": True})
    decoder = build_model(cfg).decoder.eval().double()
    inputs = _decoder_inputs(cfg)
    fast, ref = _decode(decoder, True, *inputs), _decode(decoder, False, *inputs)
    for name in ("masks", "rgb", "reconstruction"):
        a, b = getattr(fast, name), getattr(ref, name)
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)
    assert not torch.allclose(ref.masks, ref.masks[:, :1]), "degenerate masks prove nothing"


def test_cpu_shaped_decoder_does_less_work_than_the_reference():
    """The whole-image path must be the separable one: its pos_proj runs on rows and columns
    (not every pixel of every slot), which the FLOP count shows."""
    cfg = small_config(decoder={"slot_centric": True})
    decoder = build_model(cfg).decoder.eval()
    inputs = _decoder_inputs(cfg, dtype=torch.float32)
    flops = {}
    for cpu_shaped in (True, False):
        counter = FlopCounterMode(display=False)
        with counter:
            _decode(decoder, cpu_shaped, *inputs)
        flops[cpu_shaped] = counter.get_total_flops()
    h, p, f = cfg.decoder.channels, cfg.image_size**2, 2 * (1 + 2 * cfg.decoder.fourier_bands)
    b, k = inputs[0].shape[:2]
    per_pixel_pos_proj = 2 * b * k * p * f * h
    assert flops[False] - flops[True] >= 0.9 * per_pixel_pos_proj


def test_separable_locality_prior_is_the_offsets_form():
    g = torch.Generator().manual_seed(0)
    side = 16
    attn = torch.rand(3, 5, side * side, generator=g) ** 6
    floor = (1.0 / (side - 1)) ** 2
    fast = SlotAttention._separable_bias(attn, floor)
    ref = SlotAttention._offset_bias(attn, floor)
    assert torch.equal(fast, ref)
    # the eval-mode prior is the separable one
    cfg = small_config(slot_attention={"locality": 1.0, "locality_window": 0.0})
    grouping = build_model(cfg).grouping.eval()
    torch.testing.assert_close(grouping.locality_bias(attn), fast, rtol=0, atol=0)


def test_near_peak_distance_per_axis_is_bitwise_the_full_grid():
    from training.model import slot_attention

    cfg = small_config(slot_attention={"locality": 1.0, "locality_window": 0.25})
    grouping = build_model(cfg).grouping.eval()
    attn = torch.rand(2, 4, 256, generator=torch.Generator().manual_seed(1))
    got = grouping._near_peak(attn)
    # the former full-grid form, written out
    pooled = torch.nn.functional.avg_pool2d(
        attn.reshape(2, 4, 16, 16), 5, 1, 2, count_include_pad=False
    ).flatten(2)
    pooled = pooled / (pooled.amax(-1, keepdim=True) + 1e-8)
    grid = token_grid(attn)
    peak = (slot_attention.PEAK_SHARPNESS * pooled).softmax(-1) @ grid
    distance = (grid - peak.unsqueeze(2)).square().sum(-1)
    want = attn * torch.exp(-0.5 * distance / 0.25**2)
    assert torch.equal(got, want)


def _shapes(graph) -> dict[str, list]:
    return {
        vi.name: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        for vi in [*graph.value_info, *graph.output]
    }


@pytest.mark.slow
def test_exported_graph_keeps_the_cpu_shapes(exported):
    """Structure of the exported graph (not its speed): undoing any of the rewrites fails."""
    _, bundle, manifest = exported
    graph = onnx.load(str(bundle / "model.onnx")).graph
    cfg = manifest.model.model_dump() if hasattr(manifest.model, "model_dump") else manifest.model
    pixels = cfg["image_size"] ** 2
    shapes = _shapes(graph)
    # Fourier features on rows and columns, not on every pixel of every slot
    trig = [n.output[0] for n in graph.node if n.op_type in ("Sin", "Cos")]
    assert trig and all(pixels not in shapes[t] for t in trig), [shapes[t] for t in trig]
    # the decoder's layers are 1x1 convolutions on (B*K, h, H, W) (onnxruntime's NCHWc kernels,
    # bias and ReLU fused): two h -> h, then h -> 1 (the alpha logit alone: a masks-only graph
    # computes no RGB), and the (4, h) output layer is not in the graph
    inits = {i.name: list(i.dims) for i in graph.initializer}
    h = cfg["decoder"]["channels"]
    kernels = [inits.get(n.input[1]) for n in graph.node if n.op_type == "Conv"]
    assert kernels.count([h, h, 1, 1]) == 2 and kernels.count([1, h, 1, 1]) == 1, kernels
    assert not [n for n, d in inits.items() if d in ([4, h], [h, 4])]
    for w in ("model.decoder.mlp.1.weight", "model.decoder.mlp.3.weight"):
        assert w not in inits or not any(w in n.input for n in graph.node if n.op_type != "Conv")
    # slot attention: MatMul, not Einsum, for the logits and updates
    equations = [a.s.decode() for n in graph.node if n.op_type == "Einsum" for a in n.attribute]
    assert not {"bkd,bnd->bkn", "bkn,bnd->bkd"} & set(equations), equations
    # the locality prior's distances and the near-peak weighting per axis: the (B, K, N, 2)
    # offsets left are attention_moments' own (one per variance), and none is divided
    stride = cfg["encoder"]["stride"]
    tokens = (cfg["image_size"] // stride) ** 2
    pairs = [
        n.op_type
        for n in graph.node
        if len(shapes.get(n.output[0], [])) == 4 and shapes[n.output[0]][-2:] == [tokens, 2]
    ]
    assert pairs.count("Div") == 0, pairs
    assert pairs.count("Sub") == equations.count("bkn,bknc->bkc"), pairs
