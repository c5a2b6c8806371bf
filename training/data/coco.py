"""COCO-format instance annotations (pycocotools) <-> in-memory scenes.

Users evaluate on their own data by providing images plus COCO instance masks; tests and users
make such sets from generated scenes with `write_coco`. Conventions:

- `read_coco` returns a `CocoScenes` (a sequence of `Scene` plus the category names).
- Instance ids 1..n follow annotation-id order; painting goes largest area first, so a small
  object inside a large one keeps its pixels. Annotations with no pixel left at `size` (tiny,
  or fully covered) are dropped. Crowd annotations are skipped unless `include_crowd`.
- classes[i - 1] = index of instance i's category among the sorted category ids.
- Images are EXIF-oriented when that matches the annotated width x height, then resized to
  `size` x `size` (antialiased bilinear, aspect not kept, or centre-cropped first with
  `center_crop=True`); masks use the same geometry with nearest-neighbour sampling.
- `write_coco` stores visible masks as compressed RLE with the counts as str, so
  `read_coco(write_coco(scenes, d), size=s)` reproduces the instances and classes exactly when
  the scenes are s x s.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from training.data.folder import to_rgb
from training.data.shapes import SHAPE_CLASSES, Scene

ANNOTATION_FILE = "annotations.json"
IMAGE_DIR = "images"


@dataclass(frozen=True)
class CocoScenes(Sequence[Scene]):
    """Scenes read from a COCO file; behaves as a list of `Scene`.

    scenes: one per COCO image, in image-id order.
    category_names: names by class index (sorted category ids).
    file_names: the COCO `file_name` of each scene.
    """

    scenes: list[Scene]
    category_names: tuple[str, ...]
    file_names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index):
        return self.scenes[index]

    def __iter__(self) -> Iterator[Scene]:
        return iter(self.scenes)


# ----------------------------------------------------------------------------- reading


def _square_box(width: int, height: int, center_crop: bool) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the region that is resized to the output square."""
    if not center_crop:
        return 0, 0, width, height
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _sample_mask(mask: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Nearest-neighbour resample of the box of an (H, W) mask to (size, size) bool."""
    left, top, right, bottom = box
    rows = top + ((np.arange(size) + 0.5) * (bottom - top) / size).astype(np.int64)
    cols = left + ((np.arange(size) + 0.5) * (right - left) / size).astype(np.int64)
    return mask[rows[:, None], cols[None, :]].astype(bool)


def _open_oriented(path: Path, width: int, height: int) -> Image.Image:
    """Open an image, applying EXIF orientation unless only the raw one matches the annotation."""
    with Image.open(path) as raw:
        raw.load()
        oriented = ImageOps.exif_transpose(raw)
        if oriented.size != (width, height) and raw.size == (width, height):
            return raw
        return oriented


def _read_image(path: Path, info: dict, size: int, center_crop: bool) -> np.ndarray:
    """(size, size, 3) uint8 RGB of one COCO image, geometry matching its masks."""
    image = to_rgb(_open_oriented(path, info["width"], info["height"]))
    if image.size != (info["width"], info["height"]):
        raise ValueError(
            f"{path}: image is {image.size[0]}x{image.size[1]} but the annotation file says "
            f"{info['width']}x{info['height']}"
        )
    box = _square_box(info["width"], info["height"], center_crop)
    resized = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, dtype=np.uint8)


def _ann_to_mask(coco: COCO, ann: dict) -> np.ndarray:
    """(H, W) uint8 mask of one annotation (polygons, RLE or uncompressed RLE)."""
    with warnings.catch_warnings():  # pycocotools + numpy 2 warn about the copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco.annToMask(ann)


def _instance_map(coco: COCO, anns: list[dict], box, size: int, class_of: dict[int, int]):
    """(size, size) int32 instances and (n,) int64 classes of one image's annotations."""
    anns = sorted(anns, key=lambda a: a["id"])
    masks = [_sample_mask(_ann_to_mask(coco, a), box, size) for a in anns]  # (size, size) bool
    order = sorted(range(len(anns)), key=lambda i: -int(masks[i].sum()))  # largest first
    painted = np.zeros((size, size), np.int32)
    for i in order:
        painted[masks[i]] = i + 1
    present = np.flatnonzero(np.bincount(painted.ravel(), minlength=len(anns) + 1)[1:])
    relabel = np.zeros(len(anns) + 1, np.int32)
    relabel[present + 1] = np.arange(1, len(present) + 1, dtype=np.int32)
    classes = np.array([class_of[anns[i]["category_id"]] for i in present], np.int64)
    return relabel[painted], classes


def read_coco(
    annotation_json: str | Path,
    image_dir: str | Path | None = None,
    size: int = 64,
    center_crop: bool = False,
    include_crowd: bool = False,
) -> CocoScenes:
    """Read a COCO instance file into scenes of `size` x `size`.

    image_dir defaults to `images/` beside the annotation file.
    """
    annotation_json = Path(annotation_json)
    image_dir = Path(image_dir) if image_dir is not None else annotation_json.parent / IMAGE_DIR
    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
        coco = COCO(str(annotation_json))
    cat_ids = sorted(coco.getCatIds())
    class_of = {cat: i for i, cat in enumerate(cat_ids)}
    scenes, names = [], []
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
        anns = [a for a in anns if include_crowd or not a.get("iscrowd", 0)]
        box = _square_box(info["width"], info["height"], center_crop)
        instances, classes = _instance_map(coco, anns, box, size, class_of)
        image = _read_image(image_dir / info["file_name"], info, size, center_crop)
        scenes.append(Scene(image=image, instances=instances, classes=classes))
        names.append(info["file_name"])
    categories = tuple(coco.loadCats(c)[0]["name"] for c in cat_ids)
    return CocoScenes(scenes=scenes, category_names=categories, file_names=names)


def load_coco_folder(folder: str | Path, size: int = 64, **kw) -> CocoScenes:
    """Read `folder/annotations.json` (or the folder's single *.json) with images from
    `folder/images/` (or the folder itself). kw: as for `read_coco`.
    """
    folder = Path(folder)
    annotation = folder / ANNOTATION_FILE
    if not annotation.is_file():
        candidates = sorted(folder.glob("*.json"))
        if len(candidates) != 1:
            raise FileNotFoundError(
                f"{folder}: expected {ANNOTATION_FILE} or exactly one *.json file, "
                f"found {[p.name for p in candidates]}"
            )
        annotation = candidates[0]
    images = folder / IMAGE_DIR if (folder / IMAGE_DIR).is_dir() else folder
    return read_coco(annotation, images, size=size, **kw)


# ----------------------------------------------------------------------------- writing


def _annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    """One COCO annotation with a compressed RLE (counts as str) of an (H, W) bool mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode()},
        "area": float(mask.sum()),
        "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        "iscrowd": 0,
    }


def write_coco(
    scenes: Sequence[Scene],
    out_dir: str | Path,
    category_names: Sequence[str] = SHAPE_CLASSES,
) -> Path:
    """Write `out_dir/images/000000.png`, ... and `out_dir/annotations.json`.

    Category ids are 1..K for class indices 0..K-1. Returns the annotation file's path.
    """
    out_dir = Path(out_dir)
    (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for n, scene in enumerate(scenes):
        if len(scene.classes) and scene.classes.max() >= len(category_names):
            raise ValueError(f"scene {n}: class {scene.classes.max()} has no category name")
        h, w = scene.instances.shape
        name = f"{n:06d}.png"
        Image.fromarray(scene.image).save(out_dir / IMAGE_DIR / name)
        images.append({"id": n + 1, "file_name": name, "width": w, "height": h})
        for i, cls in enumerate(scene.classes, start=1):
            ann = _annotation(scene.instances == i, len(annotations) + 1, n + 1, int(cls) + 1)
            annotations.append(ann)
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(category_names)]
    dataset = {
        "info": {"description": "SlotServe scenes"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    path = out_dir / ANNOTATION_FILE
    path.write_text(json.dumps(dataset))
    return path
