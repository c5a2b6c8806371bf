"""How an image of any size meets a model of one size, and its masks come back: the one
definition the service (`service.pipeline`) and every evaluation (`training.evaluate`) use, so
a figure measured offline is the one users get at the same size.

to_model_size     RGB image -> uint8 (H, W, 3) at the model's input size (area / bilinear)
masks_to_labels   per-slot mask scores (K, h, w) -> slot index per pixel at the input's size
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def to_model_size(img: Image.Image, height: int, width: int) -> np.ndarray:
    """RGB image -> uint8 (height, width, 3).

    Shrinking averages the covered area (box filter, like OpenCV's INTER_AREA): it
    antialiases photos and returns an integer-factor upscale exactly to its original pixels.
    Enlarging is bilinear.
    """
    if img.size != (width, height):
        shrink = img.width >= width and img.height >= height
        method = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
        img = img.resize((width, height), method)
    return np.asarray(img, dtype=np.uint8)


def masks_to_labels(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Per-slot mask scores (K, h, w) -> slot index per pixel (height, width), uint8.

    Scores are resized bilinearly to the input's own size before the argmax, so boundaries
    follow the scores rather than the model's pixel grid. One running max keeps memory at
    two planes of the output size whatever K is.
    """
    num_slots, h, w = masks.shape
    if (h, w) == (height, width):
        return masks.argmax(axis=0).astype(np.uint8)
    best = np.full((height, width), -np.inf, dtype=np.float32)
    labels = np.zeros((height, width), dtype=np.uint8)
    for k in range(num_slots):
        plane = Image.fromarray(np.ascontiguousarray(masks[k], dtype=np.float32))
        up = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
        better = up > best
        best[better] = up[better]
        labels[better] = k
    return labels
