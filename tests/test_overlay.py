"""The /visualize overlay: names readable at any size, never drawn over each other."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from service.processing import (
    LABEL_MIN_PX,
    code_palette,
    layout_labels,
    render_overlay,
)

NAMES = ["background", "star", "circle", "square", "triangle", "ellipse", None, None] * 4


def crowded_scene(width: int, height: int, seed: int = 0):
    """A 6 x 6 cluster of small objects packed near the top-left (their names cannot all fit
    beside them) and 20 larger ones spread over the rest, on a background slot 0:
    (image, labels, objects), objects as `describe_objects` gives them (less the masks)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.uint8)
    rects = [(0, 0, width, height)]
    for i, j in itertools.product(range(6), range(6)):
        x, y = int(width * (0.05 + 0.04 * j)), int(height * (0.05 + 0.04 * i))
        rects.append((x, y, width // 40, height // 40))
    for _ in range(20):
        x = int(rng.integers(0, width - width // 8))
        y = int(rng.integers(height // 3, height - height // 8))
        rects.append((x, y, width // 10, height // 10))
    for k, (x, y, w, h) in enumerate(rects):
        labels[y : y + h, x : x + w] = k
    codes = rng.integers(0, 32, size=len(rects))
    areas = np.bincount(labels.ravel(), minlength=len(rects))
    objects = [
        {
            "slot": k,
            "code": int(codes[k]),
            "label": NAMES[codes[k]],
            "area": int(areas[k]),
            "bbox": list(rect),
        }
        for k, rect in enumerate(rects)
        if areas[k]
    ]
    img = Image.fromarray((rng.random((height, width, 3)) * 60 + 100).astype(np.uint8))
    return img, labels, objects


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def render(img, labels, objects) -> np.ndarray:
    png = render_overlay(img, labels, objects, codebook_size=32)
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


def text_rows(pixels: np.ndarray, label) -> int:
    """Height in pixels of the text inside a drawn label box: rows (inside the 1-px outline)
    with pixels nearer the text colour than the box colour."""
    x0, y0, x1, y1 = label.box
    inner = pixels[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
    to_ink = np.abs(inner - np.array(label.ink)).sum(-1)
    to_fill = np.abs(inner - np.array(label.fill)).sum(-1)
    rows = np.flatnonzero((to_ink < to_fill).any(axis=1))
    return int(rows[-1] - rows[0] + 1) if len(rows) else 0


def test_labels_on_a_large_crowded_image_never_overlap_and_the_rest_go_to_a_legend():
    img, labels, objects = crowded_scene(2400, 1800)
    layout = layout_labels(objects, 2400, 1800, code_palette(32))
    assert len(layout.placed) + len(layout.dropped) == len(objects) == 57
    assert layout.dropped, "the crowded cluster should not fit: the test would prove nothing"
    assert len(layout.placed) >= 30
    for a, b in itertools.combinations(layout.placed, 2):
        assert not overlaps(a.box, b.box), (a, b)
    assert all(
        0 <= x0 < x1 <= 2400 and 0 <= y0 < y1 <= 1800
        for x0, y0, x1, y1 in (lb.box for lb in layout.placed)
    )

    pixels = render(img, labels, objects)
    assert pixels.shape[1] == 2400 and pixels.shape[0] > 1800  # the legend strip below
    for label in layout.placed:  # each box is drawn where the layout put it, text on top
        x0, y0, x1, y1 = label.box
        inner = pixels[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1]
        assert (np.abs(inner - np.array(label.fill)).sum(-1) == 0).mean() > 0.5, label.text
        assert text_rows(pixels, label) > 0, label.text
    legend = pixels[1800:]
    for label in layout.dropped:  # every dropped name's colour is in the legend
        assert (np.abs(legend - np.array(label.fill)).sum(-1) == 0).any(), label.text


def test_text_height_scales_with_the_image():
    heights = {}
    for width, height in ((600, 450), (2400, 1800)):
        img, labels, objects = crowded_scene(width, height)
        layout = layout_labels(objects, width, height, code_palette(32))
        pixels = render(img, labels, objects)
        drawn = [text_rows(pixels, lb) for lb in layout.placed if lb.text.startswith("back")]
        heights[width] = (layout.font_px, float(np.median(drawn)))
    (small_px, small_h), (large_px, large_h) = heights[600], heights[2400]
    assert small_px == LABEL_MIN_PX and large_px == pytest.approx(4 * 0.022 * 450, abs=1)
    assert large_h / small_h == pytest.approx(large_px / small_px, rel=0.2)
    assert small_h >= 0.6 * LABEL_MIN_PX  # legible at the smallest size too


def test_a_few_objects_all_get_labels_and_the_size_is_kept():
    img, labels, objects = crowded_scene(2400, 1800)
    few = [o for o in objects if o["area"] > 10_000][:5]
    layout = layout_labels(few, 2400, 1800, code_palette(32))
    assert len(layout.placed) == 5 and not layout.dropped
    assert render(img, labels, few).shape == (1800, 2400, 3)
