"""Test images for the load tests, and the check every decomposition answer must pass.

`make_images(seed)` encodes synthetic "shapes" scenes (training.data.shapes) as PNG, a few
JPEG and one WebP, at 64x64, 128x128 and 96x160 (height x width): deterministic by seed.
`validate(result, width, height)` returns why an answer is wrong, or None when it is right;
`result` is the JSON of one HTTP decomposition or `proto_to_result` of a gRPC one.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from service.rpc.client import to_result as proto_to_result  # noqa: F401 (the locustfile's)

TIMINGS = ("decode", "preprocess", "inference", "postprocess", "total")
# (format, height, width, variant) of each image of a set, in order.
LAYOUT: tuple[tuple[str, int, int, str], ...] = (
    ("PNG", 64, 64, "solid"),
    ("PNG", 64, 64, "textured"),
    ("PNG", 128, 128, "solid"),
    ("PNG", 96, 160, "textured"),
    ("JPEG", 64, 64, "textured"),
    ("PNG", 64, 64, "solid"),
    ("PNG", 128, 128, "textured"),
    ("JPEG", 96, 160, "solid"),
    ("PNG", 64, 64, "textured"),
    ("WEBP", 128, 128, "solid"),
    ("PNG", 96, 160, "solid"),
    ("JPEG", 128, 128, "textured"),
)


@dataclass(frozen=True)
class TestImage:
    name: str
    data: bytes
    width: int
    height: int
    format: str

    __test__ = False  # not a pytest test class


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **options) -> bytes:
    """An image (uint8 array or PIL) as the bytes of an image file; `options` go to PIL."""
    if fmt in ("JPEG", "WEBP"):
        options.setdefault("quality", 90)
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def multipart(field: str, files: list[tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body with each (filename, data, content type) as a file in
    `field`; returns (body, Content-Type header). Load generators build it once per image:
    at hundreds of requests a second a form built per request costs the client CPU that the
    server it measures shares on small machines."""
    boundary = uuid.uuid4().hex
    parts = [
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
        for name, data, ctype in files
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def blocky_png(seed: int, size: int = 64) -> bytes:
    """A PNG of random 8x8 colour blocks: cheap to make, never blank, varied by seed."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return encode(Image.fromarray(small).resize((size, size), Image.Resampling.NEAREST))


def make_images(seed: int = 0, count: int = len(LAYOUT)) -> list[TestImage]:
    """`count` encoded scenes (the LAYOUT cycled), the same bytes for the same seed."""
    from training.data.shapes import generate_scene, scene_seed  # imports torch

    images = []
    for i in range(count):
        fmt, height, width, variant = LAYOUT[i % len(LAYOUT)]
        side = max(height, width)
        scene = generate_scene(scene_seed(seed, i), variant, size=64 if side <= 64 else 128)
        img = Image.fromarray(scene.image)
        if img.size != (width, height):
            img = img.resize((width, height), Image.Resampling.NEAREST)
        data = encode(img, fmt)
        name = f"{i:03d}-{variant}-{height}x{width}.{fmt.lower()}"
        images.append(TestImage(name, data, width, height, fmt))
    return images


def rle_counts(counts: str) -> list[int]:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString, checked).

    pycocotools decodes without bounds checks, so `validate` checks the runs first: a broken
    answer must be a failure, not a crash of the load generator. ValueError when malformed.
    """
    runs: list[int] = []
    p = 0
    while p < len(counts):
        x, k, more = 0, 0, True
        while more:
            if p >= len(counts):
                raise ValueError("it ends inside a number")
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {counts[p]!r} at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def validate(result, width: int, height: int) -> str | None:
    """Why `result` is not a correct decomposition of a `width` x `height` image (None: it is).

    Checks: the size, at least one object, each object's RLE size [h, w], bbox inside the
    image and equal to its mask's box, area equal to its mask's, masks disjoint and covering
    the image, the model reference, all five timings and the model call.
    """
    if not isinstance(result, dict):
        return f"the answer is a {type(result).__name__}, not a JSON object"
    if (result.get("width"), result.get("height")) != (width, height):
        return (
            f"size mismatch: answered {result.get('width')}x{result.get('height')}, "
            f"sent {width}x{height}"
        )
    objects = result.get("objects")
    if not isinstance(objects, list) or not objects:
        return "no objects"
    rles = []
    for i, obj in enumerate(objects):
        if not isinstance(obj, dict):
            return f"object {i} is not an object"
        mask = obj.get("mask")
        if not isinstance(mask, dict) or not isinstance(mask.get("counts"), str):
            return f"object {i} has no RLE mask"
        if list(mask.get("size") or []) != [height, width]:
            return f"object {i}: RLE size {mask.get('size')} != [{height}, {width}]"
        bbox = obj.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            return f"object {i}: bbox {bbox!r} is not [x, y, w, h]"
        x, y, w, h = bbox
        if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > width or y + h > height:
            return f"object {i}: bbox {bbox} outside the {width}x{height} image"
        try:
            runs = rle_counts(mask["counts"])
        except ValueError as err:
            return f"object {i}: mask counts are not a COCO RLE string ({err})"
        if min(runs, default=0) < 0 or sum(runs) != height * width:
            return f"object {i}: RLE runs cover {sum(runs)} pixels, not {height}x{width}"
        rles.append({"size": [height, width], "counts": mask["counts"].encode()})
    try:
        masks = mask_utils.decode(rles)  # (h, w, n) uint8
    except Exception as err:  # pycocotools raises bare exceptions on bad counts
        return f"an RLE mask does not decode: {err}"
    if masks.shape != (height, width, len(objects)):
        return f"masks decode to shape {masks.shape}, not {(height, width, len(objects))}"
    areas = masks.reshape(-1, len(objects)).sum(axis=0)
    for i, (obj, area, box) in enumerate(zip(objects, areas, mask_utils.toBbox(rles), strict=True)):
        if obj.get("area") != int(area):
            return f"object {i}: area {obj.get('area')} != its mask's {int(area)} pixels"
        if [round(float(v)) for v in box] != list(obj["bbox"]):
            return f"object {i}: bbox {obj['bbox']} != its mask's box {box.tolist()}"
    cover = masks.sum(axis=2, dtype=np.int32)
    if cover.max() > 1:
        return f"masks overlap on {int((cover > 1).sum())} pixels"
    if cover.min() < 1:
        return f"masks leave {int((cover < 1).sum())} pixels uncovered"
    model = result.get("model")
    if not isinstance(model, dict) or not model.get("name") or not model.get("version"):
        return f"missing model reference: {model!r}"
    timings = result.get("timings_ms")
    if not isinstance(timings, dict):
        return "missing timings_ms"
    missing = [k for k in TIMINGS if not _is_number(timings.get(k)) or timings[k] < 0]
    if missing:
        return f"missing or negative timings: {missing}"
    call = result.get("model_call")
    if not isinstance(call, dict) or not call.get("id"):
        return "missing model_call"
    if not isinstance(call.get("images"), int) or call["images"] < 1:
        return f"model_call.images is {call.get('images')!r}"
    return None


def validate_batch(results, images: list[TestImage]) -> str | None:
    """`validate` for each answer of a batch, in order: the first reason found, or None."""
    if not isinstance(results, list):
        return "no results list"
    if len(results) != len(images):
        return f"{len(results)} results for {len(images)} images"
    for i, (result, image) in enumerate(zip(results, images, strict=True)):
        reason = validate(result, image.width, image.height)
        if reason:
            return f"image {i} ({image.name}): {reason}"
    return None
