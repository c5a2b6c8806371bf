"""Data: synthetic shapes scenes, the user's image folders and COCO evaluation sets."""

from training.data.coco import CocoScenes, load_coco_folder, read_coco, write_coco
from training.data.datasets import SceneDataset, ShapesDataset
from training.data.folder import IMAGE_EXTENSIONS, ImageFolderDataset
from training.data.shapes import (
    SHAPE_CLASSES,
    VARIANTS,
    Scene,
    generate_batch,
    generate_scene,
    scene_seed,
    stack_scenes,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "VARIANTS",
    "CocoScenes",
    "ImageFolderDataset",
    "Scene",
    "SceneDataset",
    "ShapesDataset",
    "generate_batch",
    "generate_scene",
    "load_coco_folder",
    "read_coco",
    "scene_seed",
    "stack_scenes",
    "write_coco",
]
