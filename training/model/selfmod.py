"""The self-modulating slot-attention model; its forward reads like the paper:
encode -> bottom-up pass -> quantise -> modulate -> modulated pass -> decode."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from training.model.codebook import EMACodebook
from training.model.decoder import FeatureDecoder, SlotFrames, build_decoder
from training.model.encoder import build_encoder
from training.model.modulation import TopDownModulation
from training.model.objects import merge_shared_slots
from training.model.position import attention_moments, token_map
from training.model.precision import full_precision
from training.model.refine import refine_masks
from training.model.slot_attention import SlotAttention
from training.model.slot_init import SlotInit
from training.model.slot_select import SlotSelector

MIN_SPREAD = 0.01
"""Floor of a slot's spread (0.6 px of a 64x64 image): an empty slot's frame stays finite."""
SELECT_STRIDE = 4
"""Starts (`slot_attention.eval_inits`) are judged on every SELECT_STRIDE-th token each way."""


@dataclass
class ModelOutput:
    masks: torch.Tensor  # (B, K, H, W) decoder alpha, softmax over slots (objects merged)
    codes: torch.Tensor  # (B, K) int64 semantic code per slot
    code_distances: torch.Tensor  # (B, K) distance from what was quantised to its code
    slots: torch.Tensor  # (B, K, D) final (modulated) slots
    attention: torch.Tensor  # (B, K, N) last attention map of the final pass
    reconstruction: torch.Tensor  # (B, 3, H, W); feature decoder: each object in its mean colour
    losses: dict[str, torch.Tensor] = field(default_factory=dict)  # named breakdown + "total"
    bottom_up_attention: torch.Tensor | None = None  # (B, K, N)
    slot_masks: torch.Tensor | None = None  # (B, K, H, W) masks before merging, one per slot
    kept: torch.Tensor | None = None  # (B, K) 1 / 0: slots kept (slot_attention.keep_penalty)


class SelfModulatingSlotAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        sa = cfg.slot_attention
        self.encoder = build_encoder(cfg.encoder, cfg.image_size, sa.slot_dim)
        self.slot_init = SlotInit(sa)
        self.grouping = SlotAttention(sa, sa.slot_dim)
        # The codebook always exists, so the plain-Slot-Attention ablation still reports a
        # semantic code per slot (its codes simply do not feed back into the attention).
        self.codes_features = cfg.codebook.source == "features"
        code_dim = self.encoder.feature_dim if self.codes_features else sa.slot_dim
        self.codebook = EMACodebook(cfg.codebook, code_dim)
        self.modulation = (
            TopDownModulation(cfg.modulation, sa.slot_dim, sa.mlp_hidden, code_dim)
            if cfg.modulation.enabled
            else None
        )
        self.selector = SlotSelector(sa.slot_dim, sa.mlp_hidden) if sa.keep_penalty > 0 else None
        self.keep_ramp = 1.0
        """The share of `keep_penalty` the loss pays now (training sets it from the step)."""
        self.distill_ramp = 1.0
        """The share of `slot_attention.distill` the loss pays now (set from the step)."""
        if cfg.decoder.kind == "features":
            grid, dim = self.encoder.grid_size, self.encoder.feature_dim
            self.decoder = FeatureDecoder(cfg.decoder, sa.slot_dim, grid, dim)
        else:
            self.decoder = build_decoder(cfg.decoder, sa.slot_dim, cfg.image_size)

    @property
    def reconstructs_features(self) -> bool:
        return self.cfg.decoder.kind == "features"

    def forward(self, image: torch.Tensor, features: torch.Tensor | None = None) -> ModelOutput:
        """image (B, 3, H, W) float in [0, 1] -> ModelOutput.

        `features` (B, N, C): the frozen encoder's standardised features of `image`
        (`encoder.features`), when the caller has them cached; computed here otherwise."""
        if self.reconstructs_features:
            if features is None:
                features = self.encoder.features(image)
            tokens = self.encoder.project(features)  # (B, N, D)
        else:
            tokens = self.encoder(image)  # (B, N, D)
        k, v = self.grouping.project(tokens)  # (B, N, D) each
        starts = self.slot_init.starts()  # > 1: several starts per image, the best one kept
        if starts > 1:
            k, v = _per_start(k, starts), _per_start(v, starts)
        z0 = self.slot_init(image.shape[0])  # (B * starts, K, D)
        distill = self.training and self.cfg.slot_attention.distill > 0
        first_attention = distill and self.cfg.slot_attention.distill_target == "attention"
        trace: list[torch.Tensor] | None = [] if first_attention else None  # DIAS's student
        slots, attn = self.grouping.iterate(z0, k, v, trace=trace)  # bottom-up pass
        covered = None  # the frozen features beside each start's rows (feature codes only)
        if self.codes_features:
            covered = features if starts == 1 else _per_start(features, starts)
        vq = self.codebook(covered_features(attn, covered) if self.codes_features else slots)
        bottom_up_attn = attn
        if self.modulation is not None:
            mod = self.modulation(vq.quantized.to(slots.dtype), attn)
            slots, attn = self.grouping.iterate(z0, k, v, mod, attn)  # same z0, same weights
        codes, distances = vq.indices, vq.distances
        if self.codes_features:  # the served code names what the final slot covers
            codes, distances = self.codebook.lookup(covered_features(attn, covered))
        kept = self.selector(slots) if self.selector is not None else None
        if starts > 1:
            rows = self._best_starts(slots, features, kept, starts)
            slots, attn, bottom_up_attn, codes, distances = (
                t.index_select(0, rows) for t in (slots, attn, bottom_up_attn, codes, distances)
            )
            kept = kept.index_select(0, rows) if kept is not None else None
        if self.reconstructs_features:
            decoded, target, slot_masks, picture, sampled = self._decode_features(
                slots, image, features, attn, kept
            )
        else:
            decoded, target = self._decode(slots, image, attn)
            slot_masks, picture, sampled = decoded.masks, decoded.reconstruction, None
        masks = slot_masks
        share = self.cfg.decoder.merge_share
        if share > 0 and not self.training and masks.dim() == 4:
            masks, _ = merge_shared_slots(masks, share)
        mse = F.mse_loss(decoded.reconstruction, target)
        total = mse + self.cfg.codebook.commitment_weight * vq.commitment
        losses = {"mse": mse, "commitment": vq.commitment}
        if distill:
            if trace is not None:  # DIAS
                losses["distill"] = attention_distillation(trace[0], attn)
            else:  # SPOT
                share = attn if sampled is None else attn.index_select(2, sampled)
                losses["distill"] = attention_distillation(share, decoded.masks)
            weight = self.cfg.slot_attention.distill * self.distill_ramp
            total = total + weight * losses["distill"]
        if kept is not None:
            losses["kept"] = kept.mean()
            penalty = self.cfg.slot_attention.keep_penalty * self.keep_ramp
            total = total + penalty * losses["kept"]
        return ModelOutput(
            masks=masks,
            codes=codes,
            code_distances=distances,
            slots=slots,
            attention=attn,
            reconstruction=picture,
            losses={**losses, "total": total},
            bottom_up_attention=bottom_up_attn,
            slot_masks=slot_masks,
            kept=kept,
        )

    def _best_starts(
        self, slots: torch.Tensor, features: torch.Tensor, kept: torch.Tensor | None, n: int
    ) -> torch.Tensor:
        """slots (B * n, K, D) of n starts per image -> (B,) the row of each image's start
        whose slots reconstruct its frozen features (B, N, C) best: the decoder on every
        fourth token of the grid each way (a sixteenth of the tokens, 49 of a 28x28 grid),
        mean squared error. Judging on every token or every other one scored the same on the
        tuning scenes; served, judging 8 starts on every other token made the photo bundle
        about 1.5x slower, on every fourth 1.00-1.16x (docs/photos.md)."""
        grid = round(features.shape[1] ** 0.5)
        picked = torch.arange(grid * grid, device=features.device).view(grid, grid)
        picked = picked[SELECT_STRIDE // 2 :: SELECT_STRIDE, SELECT_STRIDE // 2 :: SELECT_STRIDE]
        picked = picked.flatten()
        decoded = self.decoder(slots, picked, grid_tokens=features.shape[1], keep=kept)
        recon = full_precision(decoded.reconstruction).unflatten(0, (-1, n))  # (B, n, P, C)
        error = (recon - full_precision(features[:, None, picked])).square()
        best = error.mean(dim=(2, 3)).argmin(dim=1)  # (B,)
        return torch.arange(best.shape[0], device=best.device) * n + best

    def _decode_features(
        self,
        slots: torch.Tensor,
        image: torch.Tensor,
        features: torch.Tensor,
        attn: torch.Tensor,
        kept: torch.Tensor | None = None,
    ):
        """Feature decoder -> (decoded, target features, slot masks, picture, the sampled
        tokens (P,) or None for every token).

        Training decodes `train_pixels` random tokens (masks (B, K, P) on those tokens, the
        picture is the feature reconstruction). Otherwise every token is decoded and the masks
        come at the image's size: on the token grid the decoder's alphas, mixed with the final
        slot attention `attn` (B, K, N) by `decoder.mask_attention`, then upsampled and refined
        on the image (`decoder.refine_radius`); the picture paints each slot in its mean colour
        under its mask (the features themselves cannot be shown)."""
        n_tok = self.cfg.decoder.train_pixels
        n = features.shape[1]
        if self.training and n != self.decoder.pos.shape[2]:
            # sampled tokens index the learned positions: features of another grid would be
            # decoded at the wrong places without any error
            raise ValueError(
                f"features on a grid of {n} tokens, but the decoder learns positions for "
                f"{self.decoder.pos.shape[2]} (encoder.lite0_input): train on features of "
                "the encoder's own input size"
            )
        if self.training and n_tok and n_tok < n:
            tokens = torch.randperm(n, device=features.device)[:n_tok]
            decoded = self.decoder(slots, tokens, keep=kept)
            return decoded, features[:, tokens], decoded.masks, decoded.reconstruction, tokens
        decoded = self.decoder(slots, grid_tokens=n, keep=kept)
        d = self.cfg.decoder
        grid = decoded.masks
        if d.mask_attention > 0:
            share = full_precision(attn)
            if kept is not None:
                share = share * kept.unsqueeze(-1)
            share = share / share.sum(dim=1, keepdim=True).clamp_min(1e-8)
            grid = (1.0 - d.mask_attention) * grid + d.mask_attention * share
        masks = refine_masks(token_map(grid), image, d.refine_radius, d.refine_eps)
        if kept is not None:  # the filter's floor would leave a dropped slot a sliver
            masks = masks * kept[:, :, None, None].to(masks.dtype)
            masks = masks / masks.sum(dim=1, keepdim=True).clamp_min(1e-12)
        weight = masks.flatten(2)  # (B, K, H*W)
        colour = torch.einsum("bkp,bcp->bkc", weight, image.flatten(2)) / (
            weight.sum(-1, keepdim=True) + 1e-6
        )  # (B, K, 3) mean colour of each slot
        picture = torch.einsum("bkc,bkhw->bchw", colour, masks)
        return decoded, features, masks, picture, None

    def _attention_prior(self, attn: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """attn (B, K, N) on the token grid -> log attention upsampled to (B, K, H*W)."""
        grid = token_map(torch.log(full_precision(attn) + 1e-6))
        return F.interpolate(grid, size=size, mode="bilinear", align_corners=False).flatten(2)

    def _slot_frames(self, attn: torch.Tensor) -> SlotFrames:
        """attn (B, K, N) on the token grid -> each slot's centre and spread in [0, 1] units."""
        centre, _, var = attention_moments(attn)
        return SlotFrames(centre, (var + MIN_SPREAD**2).sqrt())

    def _decode(self, slots: torch.Tensor, image: torch.Tensor, attn: torch.Tensor):
        """Decode all pixels, or in training a random subset when the decoder supports it."""
        n_pix = self.cfg.decoder.train_pixels
        hw = image.shape[-1] * image.shape[-2]
        bias = None
        frames = self._slot_frames(attn) if self.cfg.decoder.slot_centric else None
        if self.cfg.decoder.attention_prior:
            bias = self._attention_prior(attn, (image.shape[-2], image.shape[-1]))  # (B, K, H*W)
        if self.training and self.cfg.decoder.kind == "mlp" and n_pix and n_pix < hw:
            pixels = torch.rand(image.shape[0], hw, device=image.device).argsort(dim=1)[:, :n_pix]
            flat = image.flatten(2).transpose(1, 2)  # (B, H*W, 3)
            target = flat.gather(1, pixels.unsqueeze(-1).expand(-1, -1, 3))
            if bias is not None:
                bias = bias.gather(2, pixels.unsqueeze(1).expand(-1, bias.shape[1], -1))
            return self.decoder(slots, pixels, bias, frames), full_precision(target)  # (B, P, 3)
        return self.decoder(slots, alpha_bias=bias, frames=frames), full_precision(image)


def _per_start(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, ...) -> (B * n, ...): each image's row repeated for its n starts, image-major."""
    return x.unsqueeze(1).expand(x.shape[0], n, *x.shape[1:]).flatten(0, 1)


def attention_distillation(first: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
    """first, final (B, K, N) attention, each a distribution over the K slots at every token
    -> cross-entropy of `first` against `final` held fixed, mean over tokens (DIAS's
    self-distillation: the first refinement learns where the iteration ends)."""
    with torch.autocast(device_type=first.device.type, enabled=False):
        target = full_precision(final).detach()
        return -(target * torch.log(full_precision(first) + 1e-8)).sum(1).mean()


def covered_features(attn: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """attn (B, K, N), features (B, N, C) -> (B, K, C): the features each slot's attention
    covers (attention-weighted mean over tokens), L2-normalised, in full precision."""
    with torch.autocast(device_type=attn.device.type, enabled=False):
        weights = full_precision(attn)
        weights = weights / (weights.sum(-1, keepdim=True) + 1e-8)
        return F.normalize(weights @ full_precision(features), dim=-1)


def build_model(cfg: ModelConfig) -> SelfModulatingSlotAttention:
    return SelfModulatingSlotAttention(cfg)
