"""Pre- and post-processing of the service: pure functions, no BentoML, no server."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from loadtests.images import encode
from runtime.resize import masks_to_labels, to_model_size
from service.errors import (
    BadImage,
    EmptyUpload,
    ImageTooSmall,
    TooManyPixels,
    UnsupportedImage,
    UploadTooLarge,
)
from service.processing import Limits, decode_image, describe_objects, render_overlay

ROOT = Path(__file__).resolve().parents[1]


def rgb(w: int = 40, h: int = 30, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1"])
def test_accepted_modes_decode_to_rgb_of_the_same_size(mode):
    img = rgb().convert(mode)
    out = decode_image(encode(img))
    assert out.mode == "RGB" and out.size == (40, 30)


def test_rgb_png_pixels_survive_decoding_exactly():
    img = rgb()
    assert np.array_equal(np.asarray(decode_image(encode(img))), np.asarray(img))


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_jpeg_and_webp_decode(fmt):
    assert decode_image(encode(rgb(), fmt)).size == (40, 30)


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    data = encode(rgb(40, 30), "JPEG", exif=exif.tobytes())
    assert decode_image(data).size == (30, 40)


def test_palette_with_transparency_decodes():
    img = rgb().convert("P")
    img.info["transparency"] = 0
    assert decode_image(encode(img, transparency=0)).mode == "RGB"


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", EmptyUpload, "0 bytes"),
        (b"hello, this is text", BadImage, "not a decodable image"),
        (b'{"image": "x"}', BadImage, "not a decodable image"),
        (encode(rgb())[:60], BadImage, "truncated"),
        (encode(rgb(), "JPEG")[:300], BadImage, "truncated"),
        (encode(rgb(1, 1)), ImageTooSmall, "1x1"),
        (encode(rgb(200, 1)), ImageTooSmall, "200x1"),
        (encode(rgb(), "GIF"), UnsupportedImage, "GIF"),
        (encode(rgb(), "BMP"), UnsupportedImage, "BMP"),
        (encode(rgb(), "TIFF"), UnsupportedImage, "TIFF"),
        (encode(rgb().convert("CMYK"), "JPEG"), UnsupportedImage, "CMYK"),
        (encode(Image.new("I;16", (20, 20), 4000)), UnsupportedImage, "16"),
    ],
)
def test_bad_uploads_are_refused_with_one_line_reasons(data, error, words):
    with pytest.raises(error) as info:
        decode_image(data)
    message = str(info.value)
    assert words in message and "\n" not in message
    assert error.http_status in (400, 413, 415)


def test_animated_png_is_refused():
    frames = [rgb(seed=i) for i in range(3)]
    data = encode(frames[0], save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedImage, match="animated"):
        decode_image(data)


def test_oversized_upload_is_refused_before_decoding():
    with pytest.raises(UploadTooLarge, match="limit is 100 bytes"):
        decode_image(encode(rgb()), Limits(max_upload_bytes=100))


def test_decompression_bomb_is_refused_from_the_header():
    # 8000 x 8000 of one grey compresses to ~60 kB but would decode to 64 M pixels.
    data = encode(Image.new("L", (8000, 8000), 7))
    assert len(data) < 200_000
    with pytest.raises(TooManyPixels, match="64000000 pixels"):
        decode_image(data, Limits(max_pixels=40_000_000))


def test_upscaled_scene_resizes_back_to_the_original_pixels():
    small = rgb(64, 64)
    for factor in (2, 3):
        big = small.resize((64 * factor, 64 * factor), Image.Resampling.NEAREST)
        back = to_model_size(big, 64, 64)
        assert back.shape == (64, 64, 3) and back.dtype == np.uint8
        assert np.array_equal(back, np.asarray(small))


def _masks(seed: int = 0, k: int = 5, size: int = 16) -> np.ndarray:
    logits = np.random.default_rng(seed).normal(size=(k, size, size)).astype(np.float32)
    e = np.exp(logits)
    return e / e.sum(axis=0, keepdims=True)


def test_labels_at_model_size_are_the_argmax():
    masks = _masks()
    assert np.array_equal(masks_to_labels(masks, 16, 16), masks.argmax(0))


def test_labels_at_other_sizes_follow_the_scores_between_pixels():
    """Two slots whose scores cross a quarter of the way from pixel 1 to pixel 2 (source x =
    1.75, pixel centres at x + 0.5): upscaled 10x, the boundary lands at output x = 22, where
    bilinear scores cross; nearest-neighbour upscaling would put it at 20."""
    left = np.array([1.0, 0.8, 0.4, 0.0], np.float32)
    masks = np.stack([np.tile(left, (4, 1)), np.tile(1 - left, (4, 1))])
    labels = masks_to_labels(masks, 40, 40)
    assert labels.shape == (40, 40) and labels.dtype == np.uint8
    assert (labels[:, :22] == 0).all() and (labels[:, 23:] == 1).all()


def test_labels_keep_every_dominant_slot_and_their_layout_when_resized():
    """A 4 x 4 grid of slots, each winning its own cell: at any size each keeps its place."""
    k, size = 16, 8
    masks = np.full((k, size, size), 0.01, np.float32)
    for s in range(k):
        r, c = divmod(s, 4)
        masks[s, 2 * r : 2 * r + 2, 2 * c : 2 * c + 2] = 0.9
    for height, width in ((64, 64), (30, 50), (4, 4)):
        labels = masks_to_labels(masks, height, width)
        assert labels.shape == (height, width)
        centres = [
            labels[int((2 * r + 1) * height / size), int((2 * c + 1) * width / size)]
            for r in range(4)
            for c in range(4)
        ]
        assert centres == list(range(k)), (height, width, centres)


def test_objects_are_disjoint_cover_the_image_and_decode_with_pycocotools():
    labels = masks_to_labels(_masks(k=5), 30, 20)
    codes = np.array([3, 1, 4, 1, 5])
    distances = np.linspace(0.1, 0.5, 5).astype(np.float32)
    names = [None, "square", None, "circle", "star", None]
    scores = [0.1, 0.9, 0.3, 0.85, 0.95, 0.0]
    objects = describe_objects(labels, codes, distances, list(zip(names, scores, strict=True)))
    total = np.zeros((30, 20), dtype=int)
    for obj in objects:
        mask = mask_utils.decode(obj["mask"] | {"counts": obj["mask"]["counts"].encode()})
        assert mask.shape == (30, 20) and obj["mask"]["size"] == [30, 20]
        assert np.array_equal(mask.astype(bool), labels == obj["slot"])
        assert obj["area"] == mask.sum() > 0
        ys, xs = np.nonzero(mask)
        assert obj["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert obj["code"] == codes[obj["slot"]]
        assert obj["label"] == names[obj["code"]]
        assert obj["label_score"] == scores[obj["code"]]
        assert obj["code_distance"] == pytest.approx(float(distances[obj["slot"]]))
        total += mask
    assert (total == 1).all()  # disjoint and covering


def test_empty_slots_are_dropped():
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[:, 4:] = 2
    objects = describe_objects(labels, np.array([0, 1, 2, 3]), np.zeros(4), None)
    assert [o["slot"] for o in objects] == [0, 2]
    assert all(o["label"] is None for o in objects)


def test_overlay_is_a_png_of_the_input_size():
    img = rgb(50, 40)
    labels = masks_to_labels(_masks(k=3), 40, 50)
    objects = describe_objects(labels, np.array([0, 5, 9]), np.zeros(3), [("bg", 1.0)] * 10)
    png = render_overlay(img, labels, objects, codebook_size=10)
    out = Image.open(io.BytesIO(png))
    assert out.format == "PNG" and out.size == (300, 240)  # enlarged 6x: names stay legible
    small = np.asarray(out.convert("RGB"))[::6, ::6]
    assert not np.array_equal(small, np.asarray(img))  # tinted


def test_large_overlays_keep_the_input_size():
    img = rgb(400, 300)
    labels = masks_to_labels(_masks(k=3), 300, 400)
    objects = describe_objects(labels, np.array([0, 5, 9]), np.zeros(3), None)
    out = Image.open(io.BytesIO(render_overlay(img, labels, objects, codebook_size=10)))
    assert out.size == (400, 300)


def test_served_labels_come_from_code_labels_else_code_names():
    from runtime.contract import CodeLabelSpec, read_manifest, served_labels

    manifest = read_manifest(ROOT / "models" / "slotserve-shapes")
    labelled = served_labels(manifest)
    assert labelled == [(c.label, c.score) for c in manifest.code_labels]
    legacy = manifest.model_copy(update={"code_labels": None, "code_names": ["a", None]})
    assert served_labels(legacy)[:3] == [("a", None), (None, None), (None, None)]
    spec = CodeLabelSpec(label="birds", score=0.9)
    assert served_labels(manifest.model_copy(update={"code_labels": [spec]})) == [("birds", 0.9)]
