"""Pure pre- and post-processing: bytes -> model input, model output -> objects. No BentoML.

decode_image      upload bytes -> RGB PIL image, with the limits and the one-line refusals
to_model_size     RGB image -> uint8 (H, W, 3) at the model's input size   (runtime.resize)
masks_to_labels   per-slot mask scores (K, h, w) -> slot index per pixel     (runtime.resize)
describe_objects  slot map + codes -> one object per non-empty slot, mask as COCO RLE
render_overlay    input image + slot map + codes -> PNG bytes, colours by code (for people)
layout_labels     objects -> non-overlapping name boxes for the overlay, font scaled to the image
"""

from __future__ import annotations

import colorsys
import io
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
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


def describe_objects(
    labels: np.ndarray,
    codes: np.ndarray,
    distances: np.ndarray,
    code_labels: list[tuple[str | None, float | None]] | None = None,
) -> list[dict]:
    """One object per non-empty slot: code, label and its score, distance, area, bbox
    [x, y, w, h], COCO RLE. `code_labels`: (label, score) per code (`served_labels`).

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
        label, score = (
            code_labels[code] if code_labels and code < len(code_labels) else (None, None)
        )
        objects.append(
            {
                "slot": k,
                "code": code,
                "label": label,
                "label_score": score,
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
LABEL_FONT_SHARE = 0.022
"""Label text height as a share of the overlay's short side (at least `LABEL_MIN_PX`)."""
LABEL_MIN_PX = 12
NEAR_ROWS = 3
"""How far (in label heights) from its object's box a label may go when nearer spots are taken."""

Box = tuple[int, int, int, int]
"""(left, top, right, bottom) in overlay pixels, right and bottom exclusive."""


@dataclass(frozen=True)
class Label:
    text: str
    box: Box
    fill: tuple[int, int, int]
    ink: tuple[int, int, int]


@dataclass(frozen=True)
class LabelLayout:
    font_px: int
    font: ImageFont.FreeTypeFont
    pad: int
    placed: list[Label]
    dropped: list[Label]
    """Labels with no free place near their object: listed in the legend instead."""


def label_font(px: int) -> ImageFont.FreeTypeFont:
    """Pillow's own scalable font (bundled, no font files needed) at an em size of `px`."""
    return ImageFont.load_default(size=px)


def _ink(fill) -> tuple[int, int, int]:
    """Black text on a light box, white on a dark one (luma of the sRGB colour over 0.45)."""
    r, g, b = (c / 255 for c in fill)
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else (255, 255, 255)


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _candidates(bbox, w: int, h: int, width: int, height: int):
    """Top-left corners to try first for a w x h label of an object at `bbox` [x, y, bw, bh]:
    its corners inside and outside, its centre, then down its left and right edges; each
    shifted into the image."""
    x, y, bw, bh = bbox
    spots = [
        (x, y),
        (x, y - h),
        (x, y + bh),
        (x, y + bh - h),
        (x + (bw - w) // 2, y + (bh - h) // 2),
        (x + bw - w, y),
        (x + bw - w, y - h),
        (x + bw - w, y + bh),
        (x - w, y),
        (x + bw, y),
    ]
    steps = max(1, min(20, bh // max(1, h)))
    for i in range(1, steps):
        spots += [(x, y + i * h), (x + bw - w, y + i * h)]
    for sx, sy in spots:
        yield min(max(0, sx), width - w), min(max(0, sy), height - h)


def _nearest_free(bbox, w: int, h: int, width: int, height: int, taken: list[Box]):
    """The free w x h spot nearest to `bbox` (on a grid of half a label height), at most
    `NEAR_ROWS` label heights from it; None when there is none."""
    x, y, bw, bh = bbox
    reach = NEAR_ROWS * h
    step = max(1, h // 2)
    xs = np.arange(max(0, x - w - reach), min(width - w, x + bw + reach) + 1, step)
    ys = np.arange(max(0, y - h - reach), min(height - h, y + bh + reach) + 1, step)
    left, top = (a.ravel() for a in np.meshgrid(xs, ys))
    right, bottom = left + w, top + h
    gap = np.hypot(
        np.maximum(0, np.maximum(x - right, left - (x + bw))),
        np.maximum(0, np.maximum(y - bottom, top - (y + bh))),
    )
    ok = gap <= reach
    if taken:
        t = np.asarray(taken)[None]
        ok &= ~(
            (left[:, None] < t[..., 2])
            & (t[..., 0] < right[:, None])
            & (top[:, None] < t[..., 3])
            & (t[..., 1] < bottom[:, None])
        ).any(axis=1)
    if not ok.any():
        return None
    i = int(np.flatnonzero(ok)[np.argmin(gap[ok])])
    return int(left[i]), int(top[i]), int(right[i]), int(bottom[i])


def layout_labels(objects: list[dict], width: int, height: int, palette: np.ndarray):
    """Place one name box per object so that no two overlap; smaller objects choose first
    (a large one has more room around it). A label goes at its object's box if it can, else
    at the nearest free spot (`NEAR_ROWS`); else it is dropped, for the legend. A box is
    filled with its code's colour, its text black or white for contrast, and its height
    scales with the overlay's short side."""
    font_px = max(LABEL_MIN_PX, round(LABEL_FONT_SHARE * min(width, height)))
    font = label_font(font_px)
    pad = max(2, font_px // 4)
    placed: list[Label] = []
    dropped: list[Label] = []
    for obj in sorted(objects, key=lambda o: (o["area"], o["slot"])):
        text = f"{obj['label']} #{obj['code']}" if obj["label"] else f"code {obj['code']}"
        w, h = round(font.getlength(text)) + 2 * pad, sum(font.getmetrics()) + 2 * pad
        fill = tuple(int(c) for c in palette[obj["code"] % len(palette)])
        spot = None
        if w <= width and h <= height:
            for cx, cy in _candidates(obj["bbox"], w, h, width, height):
                box = (cx, cy, cx + w, cy + h)
                if not any(_overlaps(box, other.box) for other in placed):
                    spot = box
                    break
            else:
                spot = _nearest_free(obj["bbox"], w, h, width, height, [lb.box for lb in placed])
        label = Label(text, spot or (0, 0, w, h), fill, _ink(fill))
        (placed if spot else dropped).append(label)
    return LabelLayout(font_px, font, pad, placed, dropped)


def _draw_label(draw: ImageDraw.ImageDraw, label: Label, layout: LabelLayout) -> None:
    x0, y0, x1, y1 = label.box
    draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=label.fill, outline=label.ink)
    xy = (x0 + layout.pad, y0 + layout.pad)
    draw.text(xy, label.text, fill=label.ink, font=layout.font, anchor="la")


def _legend(width: int, layout: LabelLayout) -> Image.Image:
    """A strip listing the labels that found no place (`not placed:` then their boxes, a
    name given to several objects once with its count), wrapped to the overlay's width."""
    pad, font = layout.pad, layout.font
    line_h = max((lb.box[3] - lb.box[1] for lb in layout.dropped), default=0) + pad
    title = "not placed:"
    x, y = 3 * pad + round(font.getlength(title)), pad
    counts = Counter((lb.text, lb.fill, lb.ink) for lb in layout.dropped)  # in order of first use
    moved = []
    for (text, fill, ink), n in counts.items():
        text = f"{text} x{n}" if n > 1 else text  # (the bundled font has no ×)
        w, h = round(font.getlength(text)) + 2 * pad, line_h - pad
        if x + w > width - pad and moved:
            x, y = pad, y + line_h
        moved.append(Label(text, (x, y, x + w, y + h), fill, ink))
        x += w + pad
    strip = Image.new("RGB", (width, y + line_h), (32, 32, 32))
    draw = ImageDraw.Draw(strip)
    draw.text((pad, 2 * pad), title, fill=(255, 255, 255), font=font, anchor="la")
    for label in moved:
        _draw_label(draw, label, layout)
    return strip


def render_overlay(
    img: Image.Image,
    labels: np.ndarray,
    objects: list[dict],
    codebook_size: int,
    alpha: float = 0.55,
) -> bytes:
    """PNG of the input with each object tinted by its code, outlined, and named.

    Small inputs are enlarged by a whole factor (nearest neighbour) until the short side is
    at least `OVERLAY_MIN_SIDE` pixels; larger ones keep their size. Names are drawn on boxes
    of their code's colour, in a font that grows with the image, placed so that none overlap
    (`layout_labels`); names that find no place are listed in a legend strip added below
    the image (only then is the PNG taller than the input).
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
    layout = layout_labels(objects, out.width, out.height, palette)
    draw = ImageDraw.Draw(out)
    for label in layout.placed:
        _draw_label(draw, label, layout)
    if layout.dropped:
        strip = _legend(out.width, layout)
        framed = Image.new("RGB", (out.width, out.height + strip.height))
        framed.paste(out, (0, 0))
        framed.paste(strip, (0, out.height))
        out = framed
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    return buf.getvalue()
