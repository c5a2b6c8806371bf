"""Photo-object scenes: real photo cut-outs pasted on crops of real photographs, exact ground truth.

Objects are the photo stamps of Debian's `tuxpaint-stamps-default` (PNGs with an alpha channel:
animals, food, plants, vehicles, household things...). The `cartoon` folders, the drawings
(`symbols`, `seasonal`, road signs, flags) and stamps that are flat-colour drawings rather than
photographs are left out; what remains is ~300 stamps in 14 categories. Backgrounds are random
crops of a fixed list of photographs from Debian's wallpaper packages (landscapes, water, leaves,
sky; those showing flowers, bottles or animals are left out, so the background holds no object
of a stamp category).

The category of a stamp is the folder below `animals/` for animals (`mammals`, `birds`, `fish`,
`insects`) and the top folder otherwise (`food`, `plants`, `vehicles`, `household`, ...): those
folder names are the class names. A fixed fifth of the stamps, chosen by a stable hash of their
path, is held out (`split="unseen"`) for evaluation on objects never seen in training.

A scene is deterministic per seed and may have any height and width: 2-5 objects, each scaled
so its longer side is 0.3-0.6 of the image's shorter side, randomly flipped, centred anywhere
inside the image (so it may be cut off at the border), pasted in painter's order with its soft
alpha. Ground truth is the exact instance map after occlusion: a pixel belongs to the topmost
object whose resized alpha is >= 0.5 there. Every object keeps at least `MIN_VISIBLE_SHARE` of
its own area and `MIN_SCENE_SHARE` of the image; the layout is redrawn until it does.

Nothing is fetched: the packages are installed by the project's set-up (`make system-deps`);
without them, `PhotoLibrary.load` raises `MissingPhotoData` naming the install command.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.shapes import Scene, scene_seed

STAMPS_ROOT = Path("/usr/share/tuxpaint/stamps")
DEBIAN_PACKAGES = (
    "tuxpaint-stamps-default",
    "plasma-workspace-wallpapers",
    "mate-backgrounds",
    "lomiri-wallpapers-16.04",
)
INSTALL_COMMAND = "make system-deps  (or: apt-get install " + " ".join(DEBIAN_PACKAGES) + ")"

# Photographs with no object of the stamp categories in them, from the packages above. A KDE
# wallpaper is a folder of sizes; the one nearest 1920 px wide is read.
BACKGROUND_FILES: tuple[str, ...] = (
    *(
        f"/usr/share/wallpapers/{name}"
        for name in (
            "BytheWater",
            "DarkestHour",
            "EveningGlow",
            "FallenLeaf",
            "Kite",
            "OneStandsOut",
            "Path",
            "Volna",
            "summer_1am",
        )
    ),
    *(
        f"/usr/share/backgrounds/mate/nature/{name}.jpg"
        for name in (
            "Aqua",
            "Blinds",
            "Dune",
            "Garden",
            "GreenMeadow",
            "RainDrops",
            "Storm",
            "Wood",
        )
    ),
    *(
        f"/usr/share/backgrounds/{name}.jpg"
        for name in (
            "Bridge_by_Sander_Klootwijk",
            "Picture_1A_by_freespace",
            "aitzgorri_by_Aitzol_Berasategi",
            "life_by_Aitzol_Berasategi",
            "picosdeeuropa_by_Aitzol_Berasategi",
            "seeding_by_Clements_Engelhardt",
            "sunset_by_Aitzol_Berasategi",
        )
    ),
)

EXCLUDED_FOLDERS = frozenset({"cartoon", "symbols", "seasonal", "roadsigns", "flags"})
"""Folders of drawings, not photographs, anywhere in a stamp's path."""
DRAWING_COLOUR_SHARE = 0.45
"""A stamp whose 16 most frequent exact colours cover this share of its opaque pixels is a
flat-colour drawing (photographs spread over thousands of colours) and is left out."""
MIN_OPAQUE_PIXELS = 500
MIN_STAMPS_PER_CATEGORY = 4
HOLDOUT_MODULUS = 5
"""A stamp is held out when sha256 of its path (relative to the stamps folder) is 0 modulo this."""
STAMP_MAX_SIDE = 384
"""Stamps are kept at most this many pixels on their longer side (scenes up to ~640 px)."""
BACKGROUND_SHORT_SIDE = 512
"""Backgrounds are kept with this shorter side; crops are taken from that."""

SPLITS = ("train", "unseen")
MIN_VISIBLE_SHARE = 0.35
MIN_SCENE_SHARE = 0.01
SCALE_RANGE = (0.3, 0.6)
"""Longer side of an object as a fraction of the image's shorter side."""
_MAX_LAYOUT_TRIES = 30


class MissingPhotoData(RuntimeError):
    """The Debian packages that hold the stamps and the photographs are not installed."""


@dataclass(frozen=True)
class Stamp:
    """One photo cut-out: RGBA uint8 pixels, its category index and its path (the hash key)."""

    name: str
    category: int
    rgba: np.ndarray

    @property
    def unseen(self) -> bool:
        return is_held_out(self.name)


def is_held_out(name: str) -> bool:
    """Whether the stamp at `name` (path relative to the stamps folder) is held out."""
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % HOLDOUT_MODULUS == 0


def stamp_category(name: str) -> str:
    """The class of a stamp: the folder below `animals/`, else the top folder."""
    parts = Path(name).parts
    return parts[1] if parts[0] == "animals" and len(parts) > 2 else parts[0]


def is_drawing(rgba: np.ndarray) -> bool:
    """Flat-colour artwork rather than a photograph (see DRAWING_COLOUR_SHARE)."""
    opaque = rgba[..., 3] >= 128
    pixels = rgba[..., :3][opaque]
    if len(pixels) == 0:
        return True
    packed = (pixels[:, 0].astype(np.int64) << 16) | (pixels[:, 1].astype(np.int64) << 8)
    packed |= pixels[:, 2]
    counts = np.unique(packed, return_counts=True)[1]
    top = np.sort(counts)[::-1][:16].sum()
    return top / len(pixels) >= DRAWING_COLOUR_SHARE


def _fit(img: Image.Image, max_side: int) -> Image.Image:
    scale = max_side / max(img.size)
    if scale >= 1:
        return img
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def _crop_to_alpha(rgba: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(rgba[..., 3] >= 8)
    return rgba[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _background_path(entry: str) -> Path:
    path = Path(entry)
    if path.is_dir():  # a KDE wallpaper: contents/images/WxH.ext
        sizes = sorted((path / "contents" / "images").glob("*x*.*"))
        if not sizes:
            raise MissingPhotoData(f"{path} has no images; install them with: {INSTALL_COMMAND}")
        return min(sizes, key=lambda p: abs(int(p.stem.split("x")[0]) - 1920))
    return path


def _load_background(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        if img.format == "JPEG":  # decode at a reduced scale directly: 4-8x faster
            img.draft("RGB", (BACKGROUND_SHORT_SIDE * 2, BACKGROUND_SHORT_SIDE * 2))
        img = img.convert("RGB")
        scale = BACKGROUND_SHORT_SIDE / min(img.size)
        size = (round(img.width * scale), round(img.height * scale))
        return np.asarray(img.resize(size, Image.Resampling.LANCZOS))


@dataclass(frozen=True)
class PhotoLibrary:
    """The stamps (both splits), the class names and the background photographs, in memory."""

    categories: tuple[str, ...]
    stamps: tuple[Stamp, ...]
    backgrounds: tuple[np.ndarray, ...]

    def split(self, split: str) -> tuple[Stamp, ...]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return tuple(s for s in self.stamps if s.unseen == (split == "unseen"))

    @staticmethod
    def load(
        stamps_root: Path = STAMPS_ROOT, backgrounds: Sequence[str] = BACKGROUND_FILES
    ) -> PhotoLibrary:
        missing = [b for b in backgrounds if not Path(b).exists()]
        if not stamps_root.is_dir() or missing:
            what = stamps_root if not stamps_root.is_dir() else missing[0]
            raise MissingPhotoData(
                f"photo scenes need Debian's stamp and wallpaper packages ({what} is missing); "
                f"install them with: {INSTALL_COMMAND}"
            )
        found: list[tuple[str, str, np.ndarray]] = []
        for path in sorted(stamps_root.rglob("*.png")):
            name = path.relative_to(stamps_root).as_posix()
            if EXCLUDED_FOLDERS & set(Path(name).parts[:-1]):
                continue
            with Image.open(path) as img:
                rgba = np.asarray(_fit(img.convert("RGBA"), STAMP_MAX_SIDE))
            if (rgba[..., 3] >= 128).sum() < MIN_OPAQUE_PIXELS or is_drawing(rgba):
                continue
            found.append((name, stamp_category(name), _crop_to_alpha(rgba)))
        counts: dict[str, int] = {}
        for _, cat, _ in found:
            counts[cat] = counts.get(cat, 0) + 1
        categories = tuple(sorted(c for c, n in counts.items() if n >= MIN_STAMPS_PER_CATEGORY))
        index = {c: i for i, c in enumerate(categories)}
        stamps = tuple(Stamp(n, index[c], a) for n, c, a in found if c in index)
        bgs = tuple(_load_background(_background_path(b)) for b in backgrounds)
        return PhotoLibrary(categories, stamps, bgs)


@lru_cache(maxsize=1)
def photo_library() -> PhotoLibrary:
    """The installed library, loaded once per process (about 10 s)."""
    return PhotoLibrary.load()


def _background_crop(rng: np.random.Generator, bg: np.ndarray, height: int, width: int):
    bh, bw = bg.shape[:2]
    aspect = width / height
    max_h = min(bh, bw / aspect)
    crop_h = max_h * rng.uniform(0.4, 1.0)
    crop_w = crop_h * aspect
    y0 = rng.uniform(0, bh - crop_h)
    x0 = rng.uniform(0, bw - crop_w)
    img = Image.fromarray(bg).resize(
        (width, height), Image.Resampling.BILINEAR, box=(x0, y0, x0 + crop_w, y0 + crop_h)
    )
    out = np.asarray(img, dtype=np.float32)
    return out[:, ::-1] if rng.random() < 0.5 else out


def _place(rng: np.random.Generator, stamp: Stamp, height: int, width: int):
    """(alpha (h, w) float in 0..1, rgb (h, w, 3) float, top, left) of one resized stamp."""
    sh, sw = stamp.rgba.shape[:2]
    side = rng.uniform(*SCALE_RANGE) * min(height, width)
    scale = side / max(sh, sw)
    h, w = max(2, round(sh * scale)), max(2, round(sw * scale))
    img = Image.fromarray(stamp.rgba).resize((w, h), Image.Resampling.BILINEAR)
    rgba = np.asarray(img, dtype=np.float32)
    if rng.random() < 0.5:
        rgba = rgba[:, ::-1]
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    return rgba[..., 3] / 255.0, rgba[..., :3], round(cy - h / 2), round(cx - w / 2)


def _clip(top: int, left: int, h: int, w: int, height: int, width: int):
    """Slices of the image and of the object for the overlap of a box with the image."""
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, height), min(left + w, width)
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def generate_photo_scene(
    seed: int,
    height: int = 128,
    width: int | None = None,
    split: str = "train",
    min_objects: int = 2,
    max_objects: int = 5,
    library: PhotoLibrary | None = None,
) -> Scene:
    """One photo-object scene, deterministic per (seed, size, split) and library."""
    width = height if width is None else width
    if min(height, width) < 16:
        raise ValueError(f"photo scenes need at least 16 px a side, got {height}x{width}")
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    lib = library or photo_library()
    pool = lib.split(split)
    rng = np.random.default_rng(seed)
    image = _background_crop(
        rng, lib.backgrounds[rng.integers(len(lib.backgrounds))], height, width
    )
    n = int(rng.integers(min_objects, max_objects + 1))
    best = None
    for _ in range(_MAX_LAYOUT_TRIES):
        picks = [pool[i] for i in rng.integers(len(pool), size=n)]
        placed = [_place(rng, s, height, width) for s in picks]
        owner = np.zeros((height, width), dtype=np.int32)
        areas = []
        for i, (alpha, _, top, left) in enumerate(placed, start=1):
            dst, src = _clip(top, left, *alpha.shape, height, width)
            solid = alpha[src] >= 0.5
            owner[dst][solid] = i
            areas.append(int(solid.sum()))
        visible = np.bincount(owner.ravel(), minlength=n + 1)[1:]
        ok = [
            a > 0 and v >= MIN_VISIBLE_SHARE * a and v >= MIN_SCENE_SHARE * height * width
            for a, v in zip(areas, visible, strict=True)
        ]
        if best is None or sum(ok) > sum(best[2]):
            best = (picks, placed, ok)
        if all(ok):
            break
    picks, placed, ok = best
    owner = np.zeros((height, width), dtype=np.int32)
    classes = []
    for stamp, (alpha, rgb, top, left), keep in zip(picks, placed, ok, strict=True):
        if not keep:  # never drawn: no unlabelled object stays in the image
            continue
        dst, src = _clip(top, left, *alpha.shape, height, width)
        a = alpha[src][..., None]
        image[dst] = image[dst] * (1 - a) + rgb[src] * a
        classes.append(stamp.category)
        owner[dst][alpha[src] >= 0.5] = len(classes)
    # An object painted over by later ones may have dropped under the visibility floor only if
    # its own check failed; the kept ones were checked against the same painter's order.
    instances = _relabel(owner)
    kept = np.asarray(classes, dtype=np.int64)
    present = np.unique(owner[owner > 0])
    return Scene(
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
        instances=instances,
        classes=kept[present - 1],
    )


def _relabel(owner: np.ndarray) -> np.ndarray:
    """Instance ids 1..n in order of first id, with ids that vanished removed."""
    ids = np.unique(owner[owner > 0])
    lut = np.zeros(int(owner.max()) + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return lut[owner]


def generate_photo_batch(
    n: int, seed: int, height: int = 128, width: int | None = None, split: str = "train", **kw
) -> list[Scene]:
    """`n` scenes; scene i uses `scene_seed(seed, i)` as the shapes batches do."""
    return [generate_photo_scene(scene_seed(seed, i), height, width, split, **kw) for i in range(n)]
