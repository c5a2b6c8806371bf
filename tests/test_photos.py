"""Photo-object scenes (training/data/photos.py) on the installed Debian packages.

`make test` installs the packages (`make system-deps`); a missing package is a failure here,
never a skip.
"""

from __future__ import annotations

import numpy as np
import pytest

from training.data.photos import (
    MIN_SCENE_SHARE,
    MissingPhotoData,
    PhotoLibrary,
    Stamp,
    generate_photo_batch,
    generate_photo_scene,
    is_drawing,
    is_held_out,
    photo_library,
    stamp_category,
)


@pytest.fixture(scope="module")
def lib() -> PhotoLibrary:
    return photo_library()


def test_library_has_photo_stamps_in_folder_categories(lib):
    assert len(lib.stamps) >= 250
    assert {"mammals", "birds", "fish", "insects", "food", "plants", "vehicles"} <= set(
        lib.categories
    )
    # The backgrounds are photographs: thousands of colours, not a flat fill.
    assert all(len(np.unique(b[::4, ::4].reshape(-1, 3), axis=0)) > 500 for b in lib.backgrounds)
    # The drawings and cartoons are out: no stamp from those folders got in.
    for s in lib.stamps:
        assert not {"cartoon", "symbols", "seasonal"} & set(s.name.split("/")), s.name
    assert len(lib.backgrounds) >= 15


def test_category_is_the_folder_below_animals_or_the_top_folder():
    assert stamp_category("animals/mammals/cat.png") == "mammals"
    assert stamp_category("animals/birds/sub/owl.png") == "birds"
    assert stamp_category("food/fruit/apple.png") == "food"
    assert stamp_category("vehicles/bus.png") == "vehicles"


def test_holdout_is_a_stable_fifth_by_name(lib):
    unseen = lib.split("unseen")
    assert 0.12 < len(unseen) / len(lib.stamps) < 0.28
    assert not {s.name for s in unseen} & {s.name for s in lib.split("train")}
    # Stable: a hash of the name, not of the order or the run.
    assert [is_held_out(s.name) for s in unseen] == [True] * len(unseen)
    assert is_held_out("animals/mammals/cat.png") == is_held_out("animals/mammals/cat.png")


def test_drawing_filter_separates_flat_colours_from_photographs():
    rng = np.random.default_rng(0)
    flat = np.zeros((40, 40, 4), np.uint8)
    flat[..., 3] = 255
    flat[:20, :, :3] = (250, 10, 10)
    flat[20:, :, :3] = (10, 10, 250)
    photo = np.concatenate(
        [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), np.full((40, 40, 1), 255, np.uint8)],
        axis=-1,
    )
    assert is_drawing(flat)
    assert not is_drawing(photo)


@pytest.mark.parametrize(("height", "width"), [(128, 128), (96, 160)])
def test_scenes_are_deterministic_with_exact_instances(lib, height, width):
    a = generate_photo_scene(11, height, width, library=lib)
    b = generate_photo_scene(11, height, width, library=lib)
    c = generate_photo_scene(12, height, width, library=lib)
    assert a.image.shape == (height, width, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image) and np.array_equal(a.instances, b.instances)
    assert not np.array_equal(a.image, c.image)
    ids = np.unique(a.instances)
    assert ids[0] == 0 and list(ids[1:]) == list(range(1, a.num_objects + 1))
    assert a.classes.shape == (a.num_objects,)
    assert all(0 <= k < len(lib.categories) for k in a.classes)


def test_every_object_is_visible_and_counts_are_in_range(lib):
    scenes = generate_photo_batch(40, seed=3, height=128, library=lib)
    counts = [s.num_objects for s in scenes]
    assert min(counts) >= 2 and max(counts) <= 5 and len(set(counts)) >= 3
    for s in scenes:
        areas = np.bincount(s.instances.ravel())[1:]
        assert (areas >= MIN_SCENE_SHARE * 128 * 128).all()


def test_instance_map_is_where_the_objects_were_pasted():
    """A flat red stamp on a flat grey photo: instance pixels are red, the rest grey."""
    name = next(f"food/s{i}.png" for i in range(100) if not is_held_out(f"food/s{i}.png"))
    rgba = np.zeros((30, 20, 4), np.uint8)
    rgba[...] = (255, 0, 0, 255)
    toy = PhotoLibrary(("food",), (Stamp(name, 0, rgba),), (np.full((300, 300, 3), 90, np.uint8),))
    for seed in range(5):
        scene = generate_photo_scene(seed, 64, 96, library=toy)
        inside = scene.instances > 0
        assert inside.any() and (~inside).any()
        assert (scene.image[~inside] == 90).all()
        assert (scene.image[inside] == (255, 0, 0)).all()
        assert (scene.classes == 0).all()


def test_unseen_split_draws_only_held_out_stamps(lib):
    names = {s.category for s in lib.split("unseen")}
    for s in generate_photo_batch(10, seed=5, height=64, split="unseen", library=lib):
        assert set(s.classes.tolist()) <= names
    with pytest.raises(ValueError, match="split"):
        generate_photo_scene(1, 64, split="test", library=lib)


def test_missing_packages_name_the_install_command(tmp_path):
    with pytest.raises(MissingPhotoData, match="make system-deps"):
        PhotoLibrary.load(stamps_root=tmp_path / "nothing")


def test_photo_dataset_items_are_what_training_reads(lib):
    from training.data.datasets import PhotoDataset

    ds = PhotoDataset(6, seed=0, size=48, split="unseen")
    item = ds[0]
    assert item["image"].shape == (3, 48, 48) and item["image"].dtype.is_floating_point
    assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert item["instances"].shape == (48, 48) and int(item["instances"].max()) >= 1
    assert len(ds) == 6
