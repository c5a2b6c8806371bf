"""Spatial-broadcast decoder (Watters et al. 2019): each slot is tiled over a small grid,
given positions, upsampled by transposed convolutions to RGB + an alpha logit; alphas are
softmaxed over slots to give the masks, and the masks mix the per-slot RGB."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from training.config import DecoderConfig
from training.model.position import SoftPositionEmbed, coordinate_grid, resize_positions
from training.model.precision import full_precision
from training.model.slot_select import keep_softmax

FRAME_SPAN = 4.0
"""Relative positions are divided by FRAME_SPAN x the slot's spread (the standard deviation of
its attention), so an object spans about [-0.5, 0.5], the span of the image in the absolute
frame, and the same Fourier bands fit it."""
FRAME_CLAMP = 4.0
"""Relative positions are clipped here: far from its slot a pixel's exact offset does not
matter, and a tiny spread would otherwise feed huge values to the MLP."""


@dataclass
class SlotFrames:
    centre: torch.Tensor  # (B, K, 2) attention-weighted mean position (x, y) in [0, 1]
    scale: torch.Tensor  # (B, K, 2) attention-weighted standard deviation, clamped below


@dataclass
class Decoded:
    reconstruction: torch.Tensor  # (B, 3, H, W); (B, P, 3) when decoding sampled pixels
    masks: torch.Tensor  # (B, K, H, W) softmax over slots of the alpha logits; (B, K, P)
    rgb: torch.Tensor | None  # (B, K, 3, H, W) per-slot colours; (B, K, P, 3); None: features


def fourier_features(coords: torch.Tensor, bands: int) -> torch.Tensor:
    """coords (..., 2) (in [0, 1] in the image frame) -> (..., 2 + 4 * bands): the coordinates
    x and y, and sin and cos of 2^i * pi * each of them."""
    freqs = (2.0 ** torch.arange(bands, dtype=coords.dtype, device=coords.device)) * math.pi
    angles = coords.unsqueeze(-1) * freqs  # (..., 2, bands)
    return torch.cat([coords, angles.sin().flatten(-2), angles.cos().flatten(-2)], dim=-1)


def _pointwise(linear: nn.Linear, x: torch.Tensor, out: slice = slice(None)) -> torch.Tensor:
    """`linear` (its output features `out`) on every pixel of x (N, C, H, W) -> (N, C', H, W):
    a 1x1 convolution, which onnxruntime runs in its blocked-channel (NCHWc) kernels with the
    bias and a following ReLU fused, faster on a CPU than a Gemm on (N*H*W, C) rows."""
    weight = linear.weight[out]
    bias = None if linear.bias is None else linear.bias[out]
    return F.conv2d(x, weight[:, :, None, None], bias)


class MLPBroadcastDecoder(nn.Module):
    """Spatial broadcast with a per-pixel MLP (1x1 convolutions) on Fourier position features.

    The first layer is separable, W [slot; pos] = W_s slot + W_p pos, so it costs one
    projection per slot plus one per pixel. Because every pixel is decoded independently,
    training decodes a random subset of pixels (`train_pixels`): an unbiased estimate of the
    full-image loss at a fraction of the cost; inference decodes every pixel at full
    resolution, so masks are not limited by a coarse decoding grid. Given `frames`, each slot
    sees positions relative to its own centre and spread (slot-centric decoding)."""

    cpu_shaped = True
    """Decode whole images in slot frames with `_image_in_frames` (the same function as the
    reference `_hidden(slots, _positions(None, frames))`, in fewer FLOPs and CPU-friendly
    shapes). False: the reference path, for tests and for counting its FLOPs."""

    def __init__(self, cfg: DecoderConfig, slot_dim: int, image_size: int):
        super().__init__()
        self.cfg, self.image_size = cfg, image_size
        h = cfg.channels
        self.bands = cfg.fourier_bands
        self.slot_proj = nn.Linear(slot_dim, h)
        self.pos_proj = nn.Linear(2 * (1 + 2 * self.bands), h, bias=False)
        self.mlp = nn.Sequential(
            nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 4)
        )
        coords = coordinate_grid(image_size, image_size)[..., :2].reshape(-1, 2)  # (H*W, 2) x, y
        # Fourier features of every pixel, computed once: a constant in an exported graph.
        features = fourier_features(coords, self.bands)
        self.register_buffer("features", features, persistent=False)
        self.register_buffer("coords", coords, persistent=False)
        # pos_proj's input columns that see x and y: [x, y, sin x.., sin y.., cos x.., cos y..]
        band = torch.arange(self.bands)
        self.axis_columns = [
            torch.cat(
                [torch.tensor([a]), 2 + a * self.bands + band, 2 + (2 + a) * self.bands + band]
            )
            for a in (0, 1)
        ]

    def _positions(self, pixels: torch.Tensor | None, frames: SlotFrames | None) -> torch.Tensor:
        """Projected position features: (1, 1, P, h) absolute, or (B, K, P, h) in slot frames."""
        if frames is None:
            feats = self.features if pixels is None else self.features[pixels]  # (P|B,P, F)
            pos = self.pos_proj(feats)
            return pos.unsqueeze(0).unsqueeze(0) if pixels is None else pos.unsqueeze(1)
        coords = self.coords if pixels is None else self.coords[pixels]  # (P, 2) | (B, P, 2)
        if pixels is None:
            coords = coords.unsqueeze(0)
        rel = (coords.unsqueeze(1) - frames.centre.unsqueeze(2)) / (
            FRAME_SPAN * frames.scale.unsqueeze(2)
        )  # (B, K, P, 2): the slot's object spans about [-0.5, 0.5]
        rel = rel.clamp(-FRAME_CLAMP, FRAME_CLAMP)
        return self.pos_proj(fourier_features(rel, self.bands))

    def _hidden(self, slots: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The MLP on position features pos (1 | B, 1 | K, P, h) conditioned on slots (B, K, D)
        -> (B, K, P, 4): RGB and alpha logits."""
        first = self.slot_proj(slots).unsqueeze(2)  # (B, K, 1, h)
        return self.mlp(first + pos)

    def _frame_axis(self, axis: int, frames: SlotFrames) -> torch.Tensor:
        """Projected Fourier features of one image axis (0: x, 1: y) in every slot's frame ->
        (B, K, S, h). A pixel's x depends on its column only and its y on its row only, and
        the features of x and of y meet only in `pos_proj`, so the projection of a pixel's
        features is the sum of its column's and its row's: S = 64 rows of work per slot, not
        64 x 64 pixels."""
        s = self.image_size
        grid = self.coords.view(s, s, 2)
        line = grid[0, :, 0] if axis == 0 else grid[:, 0, 1]  # (S,) the same values as coords
        rel = (line - frames.centre[..., axis : axis + 1]) / (
            FRAME_SPAN * frames.scale[..., axis : axis + 1]
        )  # (B, K, S)
        rel = rel.clamp(-FRAME_CLAMP, FRAME_CLAMP).unsqueeze(-1)  # (B, K, S, 1)
        freqs = (2.0 ** torch.arange(self.bands, dtype=rel.dtype, device=rel.device)) * math.pi
        angles = rel * freqs  # (B, K, S, bands)
        feats = torch.cat([rel, angles.sin(), angles.cos()], dim=-1)  # (B, K, S, 1 + 2 bands)
        return F.linear(feats, self.pos_proj.weight[:, self.axis_columns[axis]])

    def _image_in_frames(
        self, slots: torch.Tensor, frames: SlotFrames
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole image decoded in slot frames, the same function as `_hidden` on
        `_positions(None, frames)`, shaped for the CPU: the first layer is separable (slot +
        column + row, each projected once), the MLP's layers run as 1x1 convolutions on
        (B*K, h, H, W) (onnxruntime's NCHWc kernels, bias and ReLU fused), and the alpha logit
        is its own output channel, so a graph that needs only the masks never computes RGB.
        -> RGB logits (B, K, P, 3), alpha logits (B, K, P)."""
        b, k, _ = slots.shape
        h, s = self.cfg.channels, self.image_size
        cols = self._frame_axis(0, frames) + self.slot_proj(slots).unsqueeze(2)  # (B, K, S, h)
        rows = self._frame_axis(1, frames)  # (B, K, S, h)
        # channels first, pixel = (row, column): (B*K, h, S, S)
        x = rows.transpose(2, 3).unsqueeze(4) + cols.transpose(2, 3).unsqueeze(3)
        x = x.reshape(b * k, h, s, s)
        *hidden, last = self.mlp
        for layer in hidden:  # ReLU, Linear, ReLU, Linear, ReLU: Linear as a 1x1 convolution
            x = layer(x) if isinstance(layer, nn.ReLU) else _pointwise(layer, x)
        rgb = _pointwise(last, x, slice(0, 3)).view(b, k, 3, s * s).transpose(2, 3)
        alpha = _pointwise(last, x, slice(3, 4)).view(b, k, s * s)
        return rgb, alpha

    def forward(
        self,
        slots: torch.Tensor,
        pixels: torch.Tensor | None = None,
        alpha_bias: torch.Tensor | None = None,
        frames: SlotFrames | None = None,
    ) -> Decoded:
        """slots (B, K, D); pixels (B, P) flat pixel indices to decode (None: all, as an image);
        alpha_bias (B, K, P or H*W) added to the alpha logits; frames: decode each slot at
        positions relative to its own centre and scale (slot-centric decoding)."""
        b, k, _ = slots.shape
        if pixels is None and frames is not None and self.cpu_shaped:  # same math
            rgb_logits, alpha = self._image_in_frames(slots, frames)
        else:
            out = self._hidden(slots, self._positions(pixels, frames))  # (B, K, P, 4)
            rgb_logits, alpha = out[..., :3], out[..., 3]
        rgb = torch.sigmoid(full_precision(rgb_logits))  # (B, K, P, 3)
        logits = full_precision(alpha)
        logits = logits if alpha_bias is None else logits + alpha_bias
        masks = logits.softmax(dim=1)  # (B, K, P)
        recon = (rgb * masks.unsqueeze(-1)).sum(dim=1)  # (B, P, 3)
        if pixels is not None:
            return Decoded(recon, masks, rgb)
        s = self.image_size
        return Decoded(
            recon.transpose(1, 2).reshape(b, 3, s, s),
            masks.reshape(b, k, s, s),
            rgb.permute(0, 1, 3, 2).reshape(b, k, 3, s, s),
        )


class BroadcastDecoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, slot_dim: int, image_size: int):
        super().__init__()
        self.cfg, self.image_size = cfg, image_size
        c, s0 = cfg.channels, cfg.broadcast_size
        self.pos = SoftPositionEmbed(slot_dim, s0, s0)
        # Each upsampling step is a 4x4 stride-2 transposed conv (exact doubling); the last
        # layer is a light 3x3 conv to RGB + alpha. Full-resolution hidden convs are avoided:
        # the decoder runs once per slot, so it dominates the step time on a CPU.
        layers: list[nn.Module] = []
        ups = int(math.log2(image_size // cfg.output_stride // s0))
        d_in = slot_dim
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(d_in, c, 4, stride=2, padding=1), nn.ReLU(True)]
            d_in = c
        layers += [nn.Conv2d(d_in, 4, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(
        self,
        slots: torch.Tensor,
        pixels: torch.Tensor | None = None,
        alpha_bias: torch.Tensor | None = None,
        frames: SlotFrames | None = None,
    ) -> Decoded:
        """slots (B, K, D) -> Decoded at image resolution (`pixels` and `frames` must be None);
        alpha_bias (B, K, H*W) added to the alpha logits."""
        if pixels is not None or frames is not None:
            raise ValueError("the convolutional decoder decodes whole images in one frame only")
        b, k, d = slots.shape
        s0 = self.cfg.broadcast_size
        x = slots.reshape(b * k, d, 1, 1).expand(-1, -1, s0, s0)  # (B*K, D, s0, s0)
        # channels-last lets oneDNN pick its fast convolution kernels (~1.3x on a CPU).
        x = self.pos(x).contiguous(memory_format=torch.channels_last)
        out = self.net(x)  # (B*K, 4, h, w)
        if out.shape[-1] != self.image_size:
            size = (self.image_size, self.image_size)
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        out = out.view(b, k, 4, self.image_size, self.image_size)
        rgb = torch.sigmoid(full_precision(out[:, :, :3]))
        logits = full_precision(out[:, :, 3])
        if alpha_bias is not None:
            logits = logits + alpha_bias.view_as(logits)
        masks = logits.softmax(dim=1)  # (B, K, H, W)
        recon = (rgb * masks.unsqueeze(2)).sum(dim=1)
        return Decoded(recon, masks, rgb)


class FeatureDecoder(nn.Module):
    """DINOSAUR's MLP decoder (Seitzer et al. 2023), the paper's feature-reconstruction regime:
    each slot plus a learned position per token goes through an MLP to the frozen encoder's
    C feature channels and an alpha logit; alphas are softmaxed over slots and mix the per-slot
    features into the reconstruction of the (standardised) features.

    Tokens are decoded independently, so training decodes a random subset (`train_pixels`
    tokens per image). The masks are the alphas on the token grid; the model upsamples and
    refines them on the image (`training/model/refine.py`)."""

    def __init__(self, cfg: DecoderConfig, slot_dim: int, grid_size: int, feature_dim: int):
        super().__init__()
        h = cfg.channels
        self.grid_size = grid_size
        self.pos = nn.Parameter(torch.randn(1, 1, grid_size**2, slot_dim) * 0.02)
        self.mlp = nn.Sequential(
            nn.Linear(slot_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(),
            nn.Linear(h, h), nn.ReLU(), nn.Linear(h, feature_dim + 1),
        )  # fmt: skip

    def forward(
        self,
        slots: torch.Tensor,
        tokens: torch.Tensor | None = None,
        grid_tokens: int | None = None,
        keep: torch.Tensor | None = None,
    ) -> Decoded:
        """slots (B, K, D); tokens (P,) token indices to decode (None: all); grid_tokens: the
        size of the grid when it differs from the trained one (the encoder ran on a larger
        image; positions are resized, and `tokens` index the resized grid); keep (B, K): the
        slots that take part in the alpha softmax (None: all; `slot_select.keep_softmax`).

        -> Decoded(reconstruction (B, P, C), masks (B, K, P) on the token grid, rgb=None)."""
        pos = resize_positions(self.pos, grid_tokens or self.pos.shape[2])
        if tokens is not None:
            pos = pos[:, :, tokens]
        # The first layer is linear: W(slot + pos) + b = (W slot + b) + W pos, so it runs on
        # the K slots and the P positions apart and the sum is broadcast (B x K x P rows of the
        # layer's matrix product become B x K + P; the decoder is most of a training step).
        first = self.mlp[0]
        hidden = first(slots).unsqueeze(2) + F.linear(pos, first.weight)  # (B, K, P, h)
        out = full_precision(self.mlp[1:](hidden))  # (B, K, P, C + 1)
        # split, not two slices: each slice's backward fills a zero tensor of out's size
        features, logits = out.split((out.shape[-1] - 1, 1), dim=-1)
        logits = logits.squeeze(-1)
        masks = logits.softmax(dim=1) if keep is None else keep_softmax(logits, keep)
        recon = (features * masks.unsqueeze(-1)).sum(dim=1)
        return Decoded(recon, masks, None)


def build_decoder(cfg: DecoderConfig, slot_dim: int, image_size: int) -> nn.Module:
    """The pixel decoders; `FeatureDecoder` needs the encoder's grid and is built by the model."""
    return {"mlp": MLPBroadcastDecoder, "conv": BroadcastDecoder}[cfg.kind](
        cfg, slot_dim, image_size
    )
