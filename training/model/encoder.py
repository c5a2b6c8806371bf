"""Encoders: image (B, 3, H, W) in [0, 1] -> tokens (B, N, D).

The CNN path (default) trains from scratch on a CPU; the ViT path wraps a frozen timm
model loaded from a local weights file (nothing is downloaded)."""

from __future__ import annotations

import torch
from torch import nn

from training.config import EncoderConfig
from training.model.position import SoftPositionEmbed


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


class ViTEncoder(nn.Module):
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
        dim = self.vit.num_features
        self.register_buffer(
            "mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False
        )
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, out_dim), nn.ReLU(inplace=True), nn.Linear(out_dim, out_dim)
        )

    def train(self, mode: bool = True) -> ViTEncoder:
        super().train(mode)
        self.vit.eval()  # frozen: keep dropout/norm statistics fixed
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            tokens = self.vit.forward_features((image - self.mean) / self.std)[:, self.prefix :]
        return self.mlp(self.norm(tokens))  # (B, N, D)


def build_encoder(cfg: EncoderConfig, image_size: int, out_dim: int) -> nn.Module:
    return {"cnn": CNNEncoder, "vit": ViTEncoder}[cfg.kind](cfg, image_size, out_dim)
