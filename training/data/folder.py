"""A folder of the user's own unlabelled images as a training dataset.

Files are found recursively and sorted, so the order (and any seeded split) is stable.
Every file is checked with PIL at construction: unreadable ones are skipped with a warning
instead of crashing an epoch later. Each image is EXIF-oriented, converted to RGB (alpha
composited onto white, 16-bit and float images rescaled), its shorter side resized to `size`
(antialiased bilinear) and centre-cropped to `size` x `size`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def find_images(root: Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Sorted image files under root (recursive; extensions matched case-insensitively)."""
    wanted = {e.lower() for e in extensions}
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in wanted)


def is_readable(path: Path) -> bool:
    """True if PIL can identify and verify the file (cheap: no full decode)."""
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception as error:  # PIL raises many types for broken files
        log.warning("skipping unreadable image %s: %s", path, error)
        return False
    return True


def _to_uint8(pixels: np.ndarray, mode: str) -> np.ndarray:
    """Rescale a high-depth (H, W) greyscale array to uint8: 16-bit by 65535; 32-bit integers
    by 65535 if any value exceeds 255 (16-bit PNGs may open as "I"); floats in [0, 1] by 1.
    """
    if mode.startswith("I;16") or (mode == "I" and pixels.max() > 255):
        top = 65535.0
    else:
        top = 1.0 if mode == "F" and pixels.max() <= 1.0 else 255.0
    return np.clip(pixels / top * 255.0, 0, 255).round().astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Alpha is composited onto white; 16-bit / float are rescaled."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        image = Image.fromarray(_to_uint8(np.asarray(image, dtype=np.float32), image.mode))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return image.convert("RGB")


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (antialiased bilinear), then centre-crop to a square."""
    w, h = image.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


def load_image(path: Path, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB: EXIF-oriented, RGB, shorter side resized, centre-cropped."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        return np.array(resize_center_crop(to_rgb(image), size), dtype=np.uint8)


class ImageFolderDataset(Dataset):
    """Unlabelled images under `root` (recursive, sorted).

    item -> dict(image=float32 tensor (3, size, size) in [0, 1]).
    `files` lists the readable images, in item order.
    """

    def __init__(
        self, root: str | Path, size: int = 64, extensions: Sequence[str] = IMAGE_EXTENSIONS
    ):
        self.root, self.size = Path(root), int(size)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist")
        if self.size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        candidates = find_images(self.root, extensions)
        self.files = [p for p in candidates if is_readable(p)]
        if not self.files:
            raise ValueError(
                f"no readable images ({', '.join(extensions)}) under {self.root} "
                f"({len(candidates)} candidate files, all unreadable)"
                if candidates
                else f"no images with extensions {', '.join(extensions)} under {self.root}"
            )
        if len(self.files) < len(candidates):
            log.warning(
                "%d of %d images skipped", len(candidates) - len(self.files), len(candidates)
            )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path = self.files[index]
        try:
            pixels = load_image(path, self.size)  # (size, size, 3) uint8
        except OSError as error:
            raise OSError(f"failed to decode {path} (it passed verification): {error}") from error
        image = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
        return {"image": image, "index": torch.tensor(index)}
