"""Data: shapes scenes (determinism, exact ground truth), image folders, COCO round trip."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from training.data import (
    SHAPE_CLASSES,
    VARIANTS,
    ImageFolderDataset,
    ShapesDataset,
    generate_batch,
    generate_scene,
    load_coco_folder,
    read_coco,
    scene_seed,
    shapes,
    stack_scenes,
    write_coco,
)

# ----------------------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def solid():
    return generate_batch(64, seed=7, variant="solid")


@pytest.fixture(scope="module")
def textured():
    return generate_batch(64, seed=7, variant="textured")


def _same(a, b) -> bool:
    return all(
        np.array_equal(x.image, y.image)
        and np.array_equal(x.instances, y.instances)
        and np.array_equal(x.classes, y.classes)
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_scenes_other_seed_differs(variant):
    a, b = generate_batch(6, 3, variant), generate_batch(6, 3, variant)
    assert _same(a, b)
    assert not np.array_equal(stack_scenes(a)[0], stack_scenes(generate_batch(6, 4, variant))[0])
    assert _same([a[2]], [generate_scene(scene_seed(3, 2), variant)])


@pytest.mark.parametrize("variant", VARIANTS)
def test_ground_truth_is_consistent(variant, solid, textured):
    for scene in solid if variant == "solid" else textured:
        n = scene.num_objects
        assert scene.image.shape == (64, 64, 3) and scene.image.dtype == np.uint8
        assert scene.instances.shape == (64, 64) and scene.instances.dtype == np.int32
        assert scene.classes.dtype == np.int64 and len(scene.classes) == n
        # Hidden objects are dropped and the layout redrawn while fewer than min_objects stay.
        assert 2 <= n <= 6
        counts = np.bincount(scene.instances.ravel(), minlength=n + 1)
        assert len(counts) == n + 1, "instance ids must be contiguous 1..n"
        assert counts[1:].min() >= shapes.MIN_VISIBLE_PIXELS
        assert ((scene.classes >= 0) & (scene.classes < len(SHAPE_CLASSES))).all()


def test_solid_pixels_have_their_instance_colour(solid):
    for scene in solid:
        colours = []
        for i in range(scene.num_objects + 1):
            pixels = scene.image[scene.instances == i]
            assert (pixels == pixels[0]).all(), f"instance {i} is not one flat colour"
            colours.append(tuple(pixels[0]))
        assert colours[0] not in colours[1:], "an object has the background colour"


def test_instance_map_follows_painters_order():
    """Each visible region lies inside its shape, and only later objects cover a shape."""
    occluded = 0
    for seed in range(40):
        _, masks, instances = shapes._visible_layout(np.random.default_rng(seed), 64, 2, 6)
        for i, (box, mask) in enumerate(masks, start=1):
            region = instances[box]
            assert not (region == i)[~mask].any(), "visible pixels outside the shape"
            covered = region[mask & (region != i)]
            assert (covered > i).all(), "an earlier object or the background covers a shape"
            occluded += len(covered) > 0
    assert occluded >= 10, "occlusion should be common"


def test_every_class_appears(solid):
    seen = np.concatenate([s.classes for s in solid])
    assert set(seen.tolist()) == set(range(len(SHAPE_CLASSES)))


@pytest.mark.parametrize("size", [16, 32, 96])
def test_size_parameter(size):
    for scene in generate_batch(4, 1, "textured", size=size, min_objects=1, max_objects=3):
        assert scene.image.shape == (size, size, 3) and scene.instances.shape == (size, size)
        assert 1 <= scene.num_objects <= 3


def test_textured_has_same_layout_but_other_pixels(solid, textured):
    assert all(np.array_equal(s.instances, t.instances) for s, t in zip(solid, textured))
    colours_per_object = [
        len(np.unique(t.image[t.instances == 1], axis=0)) for t in textured if t.num_objects
    ]
    assert np.median(colours_per_object) > 1, "textured objects should not be flat"
    assert not np.array_equal(stack_scenes(solid)[0], stack_scenes(textured)[0])


@pytest.mark.parametrize(
    "kw",
    [
        {"variant": "stripes"},
        {"size": 8},
        {"min_objects": 0},
        {"min_objects": 4, "max_objects": 3},
    ],
)
def test_invalid_arguments_raise(kw):
    with pytest.raises(ValueError):
        generate_scene(0, **kw)
    with pytest.raises(ValueError):
        ShapesDataset(2, 0, **kw)


def test_negative_seed_and_empty_stack_raise():
    with pytest.raises(ValueError):
        generate_scene(-1)
    with pytest.raises(ValueError):
        stack_scenes([])


def test_shapes_dataset_items():
    ds = ShapesDataset(5, seed=2, variant="textured", size=32)
    item = ds[3]
    assert len(ds) == 5
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    assert item["instances"].shape == (32, 32) and item["instances"].dtype == torch.int64
    scene = generate_batch(5, 2, "textured", size=32)[3]
    assert np.array_equal(item["instances"].numpy(), scene.instances)
    assert np.allclose(item["image"].permute(1, 2, 0).numpy() * 255, scene.image, atol=1e-3)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32)


# ----------------------------------------------------------------------------- image folder

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height))
    return image


@pytest.fixture
def image_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    _halves(40, 30).save(tmp_path / "a.png")
    _halves(50, 50).save(tmp_path / "sub" / "b.JPG", quality=95)
    Image.new("RGBA", (20, 20), (10, 20, 30, 0)).save(tmp_path / "c.png")
    Image.new("L", (33, 17), 128).save(tmp_path / "d.png")
    deep = Image.fromarray(np.full((16, 16), 65535, np.uint16))
    deep.save(tmp_path / "d16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    _halves(60, 20).save(tmp_path / "e.jpg", exif=exif, quality=95)
    (tmp_path / "f.png").write_bytes(b"\x89PNG not really an image")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_image_folder_reads_all_modes(image_folder, caplog):
    with caplog.at_level(logging.WARNING):
        ds = ImageFolderDataset(image_folder, size=16)
    names = [p.relative_to(image_folder).as_posix() for p in ds.files]
    assert names == ["a.png", "c.png", "d.png", "d16.png", "e.jpg", "sub/b.JPG"]
    assert "f.png" in caplog.text
    for i in range(len(ds)):
        image = ds[i]["image"]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
    by_name = {p.name: ds[i]["image"] for i, p in enumerate(ds.files)}
    assert torch.allclose(by_name["c.png"], torch.ones(3, 16, 16)), "alpha goes onto white"
    assert torch.allclose(by_name["d.png"], torch.full((3, 16, 16), 128 / 255))
    assert torch.allclose(by_name["d16.png"], torch.ones(3, 16, 16)), "16-bit is rescaled"


def test_image_folder_honours_exif_orientation(image_folder):
    ds = ImageFolderDataset(image_folder, size=16)
    image = ds[[p.name for p in ds.files].index("e.jpg")]["image"]  # (3, 16, 16)
    # Displayed upright the 60x20 image is 20x60, red on top: the crop is red above blue.
    top, bottom = image[:, 2, 8], image[:, 13, 8]
    assert top[0] > 0.8 and top[2] < 0.2, top
    assert bottom[2] > 0.8 and bottom[0] < 0.2, bottom
    plain = ds[[p.name for p in ds.files].index("a.png")]["image"]  # no EXIF: red left
    assert plain[0, 8, 1] > 0.9 and plain[2, 8, 14] > 0.9


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        ImageFolderDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "x.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        ImageFolderDataset(tmp_path)


# ----------------------------------------------------------------------------- COCO


@pytest.mark.parametrize(("variant", "size"), [("solid", 64), ("textured", 32)])
def test_coco_round_trip_is_exact(tmp_path, variant, size):
    scenes = generate_batch(12, 5, variant, size=size)
    back = read_coco(write_coco(scenes, tmp_path), size=size)
    assert back.category_names == SHAPE_CLASSES
    assert len(back) == 12 and back.file_names[0] == "000000.png"
    assert _same(scenes, back)
    assert _same(scenes, load_coco_folder(tmp_path, size=size))


def test_coco_resized_read_is_consistent(tmp_path):
    write_coco(generate_batch(6, 8, "solid"), tmp_path)
    for scene in load_coco_folder(tmp_path, size=32, center_crop=True):
        assert scene.image.shape == (32, 32, 3) and scene.instances.shape == (32, 32)
        counts = np.bincount(scene.instances.ravel(), minlength=scene.num_objects + 1)
        assert len(counts) == scene.num_objects + 1 and counts[1:].min() > 0


def _square(x0: int, y0: int, side: int) -> list[list[float]]:
    return [[x0, y0, x0 + side, y0, x0 + side, y0 + side, x0, y0 + side]]


def test_coco_paints_large_first_and_skips_crowds(tmp_path):
    """A small object annotated before the large one around it must stay visible."""
    (tmp_path / "images").mkdir()
    Image.new("RGB", (40, 20), (0, 0, 0)).save(tmp_path / "images" / "p.jpg")
    anns = [
        {"id": 1, "category_id": 9, "segmentation": _square(4, 4, 6), "iscrowd": 0},
        {"id": 2, "category_id": 3, "segmentation": _square(0, 0, 20), "iscrowd": 0},
        {"id": 3, "category_id": 3, "segmentation": _square(25, 5, 8), "iscrowd": 1},
    ]
    for a in anns:
        a.update(image_id=1, area=1.0, bbox=[0, 0, 1, 1])
    data = {
        "images": [{"id": 1, "file_name": "p.jpg", "width": 40, "height": 20}],
        "annotations": anns,
        "categories": [{"id": 9, "name": "cup"}, {"id": 3, "name": "table"}],
    }
    (tmp_path / "mine.json").write_text(json.dumps(data))
    coco = load_coco_folder(tmp_path, size=40)
    scene = coco[0]
    assert coco.category_names == ("table", "cup")
    assert scene.classes.tolist() == [1, 0]  # ids follow annotation order
    assert 0 < (scene.instances == 1).sum() < (scene.instances == 2).sum()
    # The 40x20 image is stretched to 40x40: original (x, y) lands at row 2y, column x.
    assert scene.instances[14, 7] == 1 and scene.instances[30, 10] == 2
    assert scene.instances[18, 29] == 0  # the crowd annotation is skipped


def test_scene_verb_writes_pngs(tmp_path):
    from PIL import Image

    from tests.conftest import run_module

    res = run_module("training", "scene", "--out", tmp_path / "many", "-n", "2", "--size", "48")
    assert res.returncode == 0, res.stderr[-2000:]
    files = sorted((tmp_path / "many").glob("*.png"))
    assert len(files) == 2 and Image.open(files[0]).size == (48, 48)
