"""Scenes as torch datasets: scenes held in memory, and shapes scenes generated up front."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from training.data.shapes import Scene, check_scene_args, generate_batch, stack_scenes


class SceneDataset(Dataset):
    """Scenes held in memory as a torch dataset (any source: shapes, COCO, ...).

    item -> dict(image=float32 tensor (3, H, W) in [0, 1], instances=int64 tensor (H, W),
    index=int64 scalar: the item's position, the key of the frozen-feature cache).
    Instance maps are stored as uint8 when ids fit (a 40k-scene training set stays small).
    """

    def __init__(self, scenes: Sequence[Scene]):
        images, instances = stack_scenes(scenes)
        small = instances.max() < 256
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 3, H, W)
        self.instances = torch.from_numpy(instances.astype(np.uint8 if small else np.int32))
        self.classes = [torch.from_numpy(s.classes) for s in scenes]

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "image": self.images[index].float().div_(255.0),
            "instances": self.instances[index].long(),
            "index": torch.tensor(index),
        }


class ShapesDataset(SceneDataset):
    """n shapes scenes generated up front in memory (deterministic from seed).

    item -> dict(image=float32 tensor (3, H, W) in [0, 1], instances=int64 tensor (H, W)).
    `classes[i]` is the (n_i,) int64 class tensor of scene i.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        variant: str = "solid",
        size: int = 64,
        min_objects: int = 2,
        max_objects: int = 6,
    ):
        check_scene_args(variant, size, min_objects, max_objects)
        if n < 1:
            raise ValueError(f"ShapesDataset needs n >= 1 scenes, got {n}")
        self.variant, self.seed = variant, seed
        kw = {"min_objects": min_objects, "max_objects": max_objects}
        super().__init__(generate_batch(n, seed, variant, size, **kw))


class PhotoDataset(SceneDataset):
    """n photo-object scenes of `size` x `size` generated up front (deterministic from seed).

    item -> dict(image=float32 (3, H, W) in [0, 1], instances=int64 (H, W)), as ShapesDataset.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        size: int = 64,
        split: str = "train",
        min_objects: int = 2,
        max_objects: int = 5,
    ):
        if n < 1:
            raise ValueError(f"PhotoDataset needs n >= 1 scenes, got {n}")
        self.split, self.seed = split, seed
        kw = {"min_objects": min_objects, "max_objects": min(max_objects, 5)}
        from training.data.photos import generate_photo_batch  # reads the Debian packages

        super().__init__(generate_photo_batch(n, seed, size, size, split, **kw))
