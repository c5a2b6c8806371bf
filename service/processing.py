"""Pure pre- and post-processing: bytes -> model input, model output -> objects. No BentoML.

decode_image      upload bytes -> RGB PIL image, with the limits and the one-line refusals
to_model_size     RGB image -> uint8 (H, W, 3) at the model's input size (area / bilinear)
masks_to_labels   per-slot mask scores (K, h, w) -> slot index per pixel at the input's size
describe_objects  slot map + codes -> one object per non-empty slot, mask as COCO RLE
render_overlay    input image + slot map + codes -> PNG bytes, colours by code (for people)
"""

from __future__ import annotations

import colorsys
import io
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps, UnidentifiedImageError
from pycocotools import mask as mask_utils

from service.errors import (
    BadImage,
    EmptyUpload,
    ImageTooSmall,
    TooManyPixels,
    UnsupportedImage,
    UploadTooLarge,
)

ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP"}
"""PIL format -> name in messages. MPO is the multi-picture JPEG phones write (first frame)."""
ACCEPTED_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX"}


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 4


def decode_image(data: bytes, limits: Limits = Limits()) -> Image.Image:
    """Decode an uploaded PNG / JPEG / WebP into an 8-bit RGB image, EXIF orientation applied.

    The header is read first and the pixel count checked before any pixel is decoded, so a
    decompression bomb costs nothing. Raises a `RequestError` subclass with a one-line reason.
    """
    if not data:
        raise EmptyUpload("the upload is empty (0 bytes); send a PNG, JPEG or WebP image")
    if len(data) > limits.max_upload_bytes:
        raise UploadTooLarge(
            f"the upload is {len(data)} bytes; the limit is {limits.max_upload_bytes} bytes"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise TooManyPixels(f"decompression bomb refused: {err}") from err
    except UnidentifiedImageError as err:
        raise BadImage(
            f"not a decodable image ({len(data)} bytes, starts {data[:8]!r}); "
            "send a PNG, JPEG or WebP file"
        ) from err
    except Exception as err:
        raise BadImage(f"corrupt or truncated image header: {err}") from err

    fmt = img.format or "unknown"
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedImage(f"{fmt} images are not accepted; send PNG, JPEG or WebP")
    width, height = img.size
    if width * height > limits.max_pixels:
        raise TooManyPixels(
            f"the image is {width}x{height} = {width * height} pixels; "
            f"the limit is {limits.max_pixels} pixels"
        )
    if min(width, height) < limits.min_side:
        raise ImageTooSmall(
            f"the image is {width}x{height}; both sides must be at least {limits.min_side} px"
        )
    if getattr(img, "n_frames", 1) > 1 and fmt != "MPO":
        raise UnsupportedImage(f"animated {ACCEPTED_FORMATS[fmt]} is not accepted; send one frame")
    if img.mode not in ACCEPTED_MODES:
        raise UnsupportedImage(
            f"{ACCEPTED_FORMATS[fmt]} in mode {img.mode} ({_mode_words(img.mode)}) is not "
            "accepted; send 8-bit RGB, RGBA, grayscale or palette images"
        )
    try:
        img.load()
        img = ImageOps.exif_transpose(img)
    except (OSError, SyntaxError, ValueError, EOFError, zlib.error, IndexError) as err:
        raise BadImage(f"corrupt or truncated {ACCEPTED_FORMATS[fmt]}: {err}") from err
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    return img if img.mode == "RGB" else img.convert("RGB")


def _mode_words(mode: str) -> str:
    if mode.startswith("I;16") or mode == "I":
        return "16/32-bit integer"
    if mode == "F":
        return "32-bit float"
    if mode == "CMYK":
        return "CMYK"
    return "unsupported pixel format"


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


def describe_objects(
    labels: np.ndarray,
    codes: np.ndarray,
    distances: np.ndarray,
    code_names: list[str | None] | None = None,
) -> list[dict]:
    """One object per non-empty slot: code, label, distance, area, bbox [x, y, w, h], COCO RLE.

    Masks are disjoint by construction (each pixel belongs to its argmax slot).
    """
    num_slots = len(codes)
    areas = np.bincount(labels.ravel(), minlength=num_slots)
    present = [k for k in range(num_slots) if areas[k] > 0]
    if not present:
        return []
    stack = np.asfortranarray(np.stack([labels == k for k in present], axis=-1), dtype=np.uint8)
    rles = mask_utils.encode(stack)
    boxes = mask_utils.toBbox(rles)
    objects = []
    for k, rle, box in zip(present, rles, boxes, strict=True):
        code = int(codes[k])
        objects.append(
            {
                "slot": k,
                "code": code,
                "label": code_names[code] if code_names and code < len(code_names) else None,
                "code_distance": float(distances[k]),
                "area": int(areas[k]),
                "bbox": [round(float(v)) for v in box],
                "mask": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()},
            }
        )
    return objects


def code_palette(size: int) -> np.ndarray:
    """A stable, well-spread colour per code (golden-angle hues): (size, 3) uint8."""
    colours = []
    for i in range(size):
        hue = (i * 0.618033988749895) % 1.0
        sat, val = (0.65, 0.95) if i % 2 == 0 else (0.9, 0.75)
        colours.append([round(255 * c) for c in colorsys.hsv_to_rgb(hue, sat, val)])
    return np.asarray(colours, dtype=np.uint8)


OVERLAY_MIN_SIDE = 256


def render_overlay(
    img: Image.Image,
    labels: np.ndarray,
    objects: list[dict],
    codebook_size: int,
    alpha: float = 0.55,
) -> bytes:
    """PNG of the input with each object tinted by its code, outlined, and named.

    Small inputs are enlarged by a whole factor (nearest neighbour) until the short side is
    at least `OVERLAY_MIN_SIDE` pixels, so the names stay legible; larger ones keep their size.
    """
    scale = max(1, min(8, OVERLAY_MIN_SIDE // max(1, min(img.size))))
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)
    if scale > 1:
        rgb = rgb.repeat(scale, axis=0).repeat(scale, axis=1)
        labels = labels.repeat(scale, axis=0).repeat(scale, axis=1)
        objects = [{**o, "bbox": [v * scale for v in o["bbox"]]} for o in objects]
    palette = code_palette(codebook_size)
    slot_colour = np.zeros((int(labels.max()) + 1, 3), dtype=np.float32)
    for obj in objects:
        slot_colour[obj["slot"]] = palette[obj["code"] % codebook_size]
    tinted = (1 - alpha) * rgb + alpha * slot_colour[labels]
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    tinted[edge] = 255.0
    out = Image.fromarray(tinted.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for obj in objects:
        x, y, w, h = obj["bbox"]
        if w * h < 16:
            continue
        name = obj["label"] or f"code {obj['code']}"
        draw.text((x + 1, y + 1), f"{name} #{obj['code']}", fill=(0, 0, 0))
        draw.text((x, y), f"{name} #{obj['code']}", fill=(255, 255, 255))
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()
