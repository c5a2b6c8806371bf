"""Synthetic "shapes" scenes with exact ground truth.

A scene is a `size` x `size` RGB image of 2-6 shapes drawn in painter's order (later shapes
occlude earlier ones) with an exact instance map (hard edges, no antialiasing) and the class
of every visible object. Everything is vectorised numpy on a pixel-centre grid: each shape
rotates the grid of its own bounding box into its frame and tests an implicit inequality
(half-planes for polygons), so a 64x64 scene takes well under a millisecond.

Two variants share the same layout for the same seed (geometry and appearance draw from
independent random streams):

- `solid`: flat random colours on a flat background (the Multi-dSprites regime). Grouping
  pixels by exact colour is near perfect here.
- `textured`: a gradient or lightly noisy background; each object is flat, flat+noise, stripes
  of two colours or a gradient between two colours, all from a 3-4 colour palette per scene
  (far from the background), so objects often share colours. Colour alone no longer separates
  objects (exact-colour grouping FG-ARI ~0.25, k-means on RGB ~0.55) while shape and edges
  still do: textures are coherent across an object's body, stripes are >= 4 px wide, and two
  touching plain (flat or noisy) objects never get the same colour.

Visible-object guarantee: objects with fewer than `MIN_VISIBLE_PIXELS` visible pixels are
dropped before rendering (so no unlabelled slivers remain in the image) and the layout is
redrawn (up to `_MAX_LAYOUT_TRIES` times, from the same deterministic stream) while fewer than
`min_objects` survive; only if every try fails (crowded extreme settings) may a scene hold
fewer. With the default range every scene has 2..6 objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "ellipse", "diamond", "star")
VARIANTS = ("solid", "textured")
MIN_VISIBLE_PIXELS = 8
"""Objects with fewer visible pixels than this are removed from the scene."""

SCALE_RANGE = (0.1, 0.2)
"""Object radius (centre to farthest point, roughly) as a fraction of the image size."""
CENTRE_RANGE = (0.1, 0.9)
"""Object centres as a fraction of the image size: objects may be cut off at the borders."""
_BOX_FACTOR = 1.1
"""Every shape lies inside a disc of this radius in its own frame (units of the radius)."""
_MAX_LAYOUT_TRIES = 20


@dataclass(frozen=True, eq=False)
class Scene:
    """One scene and its exact ground truth.

    image: (H, W, 3) uint8 RGB.
    instances: (H, W) int32; 0 = background, 1..n = visible objects.
    classes: (n,) int64; classes[i - 1] is the SHAPE_CLASSES index of instance i.
    """

    image: np.ndarray
    instances: np.ndarray
    classes: np.ndarray

    @property
    def num_objects(self) -> int:
        return len(self.classes)


@dataclass(frozen=True)
class _Layout:
    """Geometry of n objects in painter's order; arrays of shape (n,), pixels and radians."""

    classes: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray
    angle: np.ndarray

    def take(self, keep: np.ndarray) -> _Layout:
        """The objects at indices `keep`, in order."""
        return _Layout(*(getattr(self, f.name)[keep] for f in fields(self)))


# ----------------------------------------------------------------------------- shape masks
# Each function maps frame coordinates (u, v) (any shape, units of the object radius) to a
# boolean inside-mask of the same shape. All shapes fit in the disc of radius _BOX_FACTOR.


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 0.85**2


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.maximum(np.abs(u), np.abs(v)) <= 0.72


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Equilateral, circumradius 1: three half-planes at inradius 0.5."""
    inside = v <= 0.5
    for a in (np.pi / 6, 5 * np.pi / 6):  # normals pointing down-right and down-left
        inside &= u * np.cos(a) - v * np.sin(a) <= 0.5
    return inside


def _ellipse(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + (v / 0.55) ** 2 <= 1.0


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) + np.abs(v) / 0.6 <= 1.0


_STAR_POINTS, _STAR_INNER = 5, 0.45


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Five-pointed star, outer radius 1: fold the angle into one half-spike, test one edge."""
    sector = np.pi / _STAR_POINTS
    a = np.mod(np.arctan2(v, u), 2 * sector)
    a = np.where(a > sector, 2 * sector - a, a)  # 0 = towards a tip, sector = towards a notch
    rho = np.hypot(u, v)
    qx, qy = rho * np.cos(a), rho * np.sin(a)
    ix, iy = _STAR_INNER * np.cos(sector), _STAR_INNER * np.sin(sector)
    # Edge from the tip (1, 0) to the notch (ix, iy): inside = same side as the origin.
    return (ix - 1.0) * qy - iy * (qx - 1.0) >= 0.0


_SHAPE_FNS: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (
    _circle,
    _square,
    _triangle,
    _ellipse,
    _diamond,
    _star,
)
assert len(_SHAPE_FNS) == len(SHAPE_CLASSES)


# ----------------------------------------------------------------------------- geometry


def _object_box(cx: float, cy: float, radius: float, size: int) -> tuple[slice, slice]:
    """Row and column slices of the pixels that may belong to the object (clipped)."""
    reach = _BOX_FACTOR * radius
    y0, y1 = max(0, int(cy - reach)), min(size, int(np.ceil(cy + reach)) + 1)
    x0, x1 = max(0, int(cx - reach)), min(size, int(np.ceil(cx + reach)) + 1)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _box_offsets(box: tuple[slice, slice], cx: float, cy: float) -> tuple[np.ndarray, ...]:
    """Pixel-centre offsets from the object centre: dy (h, 1) and dx (1, w), in pixels."""
    dy = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None] + 0.5 - cy
    dx = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :] + 0.5 - cx
    return dy, dx


def _object_mask(layout: _Layout, i: int, size: int) -> tuple[tuple[slice, slice], np.ndarray]:
    """Box of object i and its (h, w) bool mask inside the box."""
    cx, cy, r = float(layout.cx[i]), float(layout.cy[i]), float(layout.radius[i])
    box = _object_box(cx, cy, r, size)
    dy, dx = _box_offsets(box, cx, cy)
    c, s = np.cos(layout.angle[i]), np.sin(layout.angle[i])
    u = (dx * c + dy * s) / r
    v = (dy * c - dx * s) / r
    return box, _SHAPE_FNS[layout.classes[i]](u, v)


def _sample_layout(rng: np.random.Generator, size: int, lo: int, hi: int) -> _Layout:
    n = int(rng.integers(lo, hi + 1))
    return _Layout(
        classes=rng.integers(0, len(SHAPE_CLASSES), n),
        cx=rng.uniform(*CENTRE_RANGE, n) * size,
        cy=rng.uniform(*CENTRE_RANGE, n) * size,
        radius=rng.uniform(*SCALE_RANGE, n) * size,
        angle=rng.uniform(0.0, 2 * np.pi, n),
    )


def _paint_instances(masks: list, size: int) -> np.ndarray:
    """Painter's order: (H, W) int32 map, object i (0-based) painted as i + 1."""
    instances = np.zeros((size, size), np.int32)
    for i, (box, mask) in enumerate(masks):
        instances[box][mask] = i + 1
    return instances


def _visible_layout(rng: np.random.Generator, size: int, lo: int, hi: int):
    """Sample layouts until >= lo objects stay visible; drop the hidden ones.

    Returns (layout of kept objects, their masks, (H, W) int32 instance map).
    """
    for _ in range(_MAX_LAYOUT_TRIES):
        layout = _sample_layout(rng, size, lo, hi)
        masks = [_object_mask(layout, i, size) for i in range(len(layout.classes))]
        counts = np.bincount(_paint_instances(masks, size).ravel(), minlength=len(masks) + 1)
        keep = np.flatnonzero(counts[1:] >= MIN_VISIBLE_PIXELS)
        if len(keep) >= lo:
            break
    layout = layout.take(keep)
    masks = [masks[i] for i in keep]
    # Dropping an object only uncovers pixels, so every kept object stays >= the minimum.
    return layout, masks, _paint_instances(masks, size)


# ----------------------------------------------------------------------------- appearance


def touching(ids: np.ndarray, n: int) -> np.ndarray:
    """(n, n) bool, symmetric: which ids of an (H, W) map with values in 0..n-1 share a
    4-neighbour edge."""
    a = np.concatenate([ids[:, :-1].ravel(), ids[:-1, :].ravel()])
    b = np.concatenate([ids[:, 1:].ravel(), ids[1:, :].ravel()])
    adjacent = np.zeros((n, n), bool)
    adjacent[a, b] = True
    return adjacent | adjacent.T


def _far_colours(rng: np.random.Generator, n: int, avoid: np.ndarray, min_dist: float):
    """(n, 16, 3) random RGB candidates -> (n, 3) float32 colours, each at distance >= min_dist
    from every row of `avoid` (m, 3) where possible (else the farthest candidate).
    """
    candidates = rng.integers(0, 256, (n, 16, 3)).astype(np.float32)
    dist = np.linalg.norm(candidates[:, :, None] - avoid[None, None], axis=-1).min(-1)  # (n, 16)
    ok = dist >= min_dist
    pick = np.where(ok.any(axis=1), ok.argmax(axis=1), dist.argmax(axis=1))  # (n,)
    return candidates[np.arange(n), pick]


_SOLID_BG_DIST = 80.0
"""Minimum RGB distance between object colours and the background (solid variant)."""


def _render_solid(rng: np.random.Generator, masks: list, size: int) -> np.ndarray:
    """(H, W, 3) float32 canvas: flat background, flat object colours far from it."""
    background = rng.integers(0, 256, (1, 3)).astype(np.float32)
    colours = _far_colours(rng, len(masks), background, _SOLID_BG_DIST)  # (n, 3)
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = background
    for (box, mask), colour in zip(masks, colours):
        canvas[box][mask] = colour
    return canvas


# Textured-variant parameters, tuned so that on 512 scenes (seed 12345) exact-colour grouping
# scores FG-ARI ~0.25 and RGB k-means (k=7) ~0.55.
_PALETTE_SIZES = (3, 4)
_PALETTE_BG_DIST = 110.0
"""Minimum RGB distance between palette colours and both background extremes."""
_PALETTE_DIST = 80.0
"""Minimum RGB distance between palette colours where possible (contrasted stripes)."""
_BG_GRADIENT_SPREAD = 28.0
_BG_NOISE_STD = (2.0, 5.0)
_OBJECT_KINDS = ("flat", "noise", "stripes", "gradient")
_OBJECT_KIND_P = (0.15, 0.5, 0.2, 0.15)
_OBJECT_KIND_CDF = np.cumsum(_OBJECT_KIND_P) / np.sum(_OBJECT_KIND_P)
_OBJECT_NOISE_STD = (2.0, 6.0)
_STRIPE_PERIOD = (4.0, 10.0)


def _textured_background(rng: np.random.Generator, size: int):
    """(H, W, 3) float32 background and its (2, 3) extreme colours (for palette distances)."""
    base = rng.integers(0, 256, 3).astype(np.float32)
    if rng.random() < 0.5:  # linear gradient across the image
        other = np.clip(base + rng.normal(0.0, _BG_GRADIENT_SPREAD, 3), 0, 255).astype(np.float32)
        a = rng.uniform(0.0, 2 * np.pi)
        coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
        t = np.clip(coords[None, :] * np.cos(a) + coords[:, None] * np.sin(a) + 0.5, 0.0, 1.0)
        return base + t[..., None] * (other - base), np.stack([base, other])
    noise = rng.normal(0.0, rng.uniform(*_BG_NOISE_STD), (size, size, 1)).astype(np.float32)
    return base + noise, np.stack([base, base])


def _palette(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """(k, 3) float32 palette: colours far from the (2, 3) background extremes, and greedily
    far from each other (falls back to the next candidates if too few qualify).
    """
    k = _PALETTE_SIZES[int(rng.integers(len(_PALETTE_SIZES)))]
    candidates = _far_colours(rng, 4 * k, background, _PALETTE_BG_DIST)  # (4k, 3)
    pairwise = np.linalg.norm(candidates[:, None] - candidates[None], axis=-1)  # (4k, 4k)
    chosen = [0]
    for i in range(1, len(candidates)):
        if len(chosen) == k:
            break
        if pairwise[i, chosen].min() >= _PALETTE_DIST:
            chosen.append(i)
    rest = [i for i in range(len(candidates)) if i not in chosen]
    return candidates[(chosen + rest)[:k]]


def _pick_colours(rng, k: int, plain: bool, avoid: set[int]) -> tuple[int, int]:
    """Two different palette indices. A plain (flat or noise) object avoids the colours in
    `avoid` (plain neighbours) where possible, so touching plain objects never merge visually.
    """
    allowed = [c for c in range(k) if c not in avoid] if plain else []
    i = allowed[int(rng.integers(len(allowed)))] if allowed else int(rng.integers(k))
    return i, (i + int(rng.integers(1, k))) % k


def _object_texture(rng, kind: str, c0, c1, along: np.ndarray, radius: float) -> np.ndarray:
    """Colours (m, 3) float32 of one object's m visible pixels, coherent across its body.

    c0, c1: (3,) colours; along: (m,) pixel offsets from the object centre along a random
    texture direction.
    """
    if kind == "stripes":
        period = rng.uniform(*_STRIPE_PERIOD)
        on = np.mod(along / period + rng.random(), 1.0) < 0.5
        return np.where(on[:, None], c0, c1)
    if kind == "gradient":
        t = np.clip(along / (2 * radius) + 0.5, 0.0, 1.0)[:, None]
        return c0 + t * (c1 - c0)
    if kind == "flat":
        return np.broadcast_to(c0, (len(along), 3))
    std = rng.uniform(*_OBJECT_NOISE_STD)
    return c0 + rng.normal(0.0, std, (len(along), 3)).astype(np.float32)


def _render_textured(rng, layout: _Layout, masks: list, instances: np.ndarray) -> np.ndarray:
    """(H, W, 3) float32 canvas of the textured variant; instances: (H, W) final id map."""
    canvas, background = _textured_background(rng, instances.shape[0])
    palette = _palette(rng, background)
    adjacent = touching(instances, len(masks) + 1)  # ids 0 (background) .. n
    plain_colour: dict[int, int] = {}  # object index -> palette index, flat/noise objects only
    for n, (box, mask) in enumerate(masks):
        kind = _OBJECT_KINDS[int(np.searchsorted(_OBJECT_KIND_CDF, rng.random(), side="right"))]
        plain = kind in ("flat", "noise")
        avoid = {c for m, c in plain_colour.items() if adjacent[n + 1, m + 1]}
        i, j = _pick_colours(rng, len(palette), plain, avoid)
        if plain:
            plain_colour[n] = i
        dy, dx = _box_offsets(box, float(layout.cx[n]), float(layout.cy[n]))
        a = rng.uniform(0.0, 2 * np.pi)
        along = (dx * np.cos(a) + dy * np.sin(a))[mask]  # (m,)
        texture = _object_texture(rng, kind, palette[i], palette[j], along, layout.radius[n])
        canvas[box][mask] = texture
    return canvas


# ----------------------------------------------------------------------------- public API


def check_scene_args(variant: str, size: int, min_objects: int, max_objects: int) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    if int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size!r}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(
            f"need 1 <= min_objects <= max_objects, got min_objects={min_objects}, "
            f"max_objects={max_objects}"
        )


def generate_scene(
    seed: int,
    variant: str = "solid",
    size: int = 64,
    min_objects: int = 2,
    max_objects: int = 6,
) -> Scene:
    """One deterministic scene: image (size, size, 3) uint8, instances (size, size) int32.

    The same arguments always give the same scene (for a given numpy version: numpy may change
    a Generator stream in a bug fix). The same seed gives the same layout (instances, classes)
    in both variants.
    """
    check_scene_args(variant, size, min_objects, max_objects)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    geometry_rng, appearance_rng = (np.random.default_rng(s) for s in _spawn(seed))
    layout, masks, instances = _visible_layout(geometry_rng, size, min_objects, max_objects)
    if variant == "solid":
        canvas = _render_solid(appearance_rng, masks, size)
    else:
        canvas = _render_textured(appearance_rng, layout, masks, instances)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return Scene(image=image, instances=instances, classes=layout.classes.astype(np.int64))


def _spawn(seed: int) -> list[np.random.SeedSequence]:
    return np.random.SeedSequence(seed).spawn(2)


def scene_seed(seed: int, index: int) -> int:
    """The seed of scene `index` of a batch drawn with `seed` (numpy's SeedSequence hash)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def generate_batch(n: int, seed: int, variant: str = "solid", size: int = 64, **kw) -> list[Scene]:
    """n scenes; scene i is generate_scene(scene_seed(seed, i), ...). kw: min/max_objects."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [generate_scene(scene_seed(seed, i), variant, size, **kw) for i in range(n)]


def stack_scenes(scenes: Sequence[Scene]) -> tuple[np.ndarray, np.ndarray]:
    """Stack scenes: images (N, H, W, 3) uint8 and instances (N, H, W) int32."""
    if len(scenes) == 0:
        raise ValueError("stack_scenes needs at least one scene")
    images = np.stack([s.image for s in scenes])
    instances = np.stack([s.instances for s in scenes]).astype(np.int32, copy=False)
    return images, instances
