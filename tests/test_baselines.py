"""Baselines: contracts, and that the textured variant stays hard for colour grouping."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from training.baselines import colour_segmentation, kmeans_segmentation
from training.data import generate_batch


def _fg_ari(instances: np.ndarray, labels: np.ndarray) -> float:
    """ARI over the pixels whose ground-truth instance is not background."""
    fg = instances != 0
    return adjusted_rand_score(instances[fg], labels[fg])


def _mean_fg_ari(scenes, segment) -> float:
    return float(np.mean([_fg_ari(s.instances, segment(s.image)) for s in scenes]))


@pytest.fixture(scope="module")
def solid():
    return generate_batch(64, seed=12345, variant="solid")


@pytest.fixture(scope="module")
def textured():
    return generate_batch(64, seed=12345, variant="textured")


def test_colour_segmentation_groups_exact_colours():
    image = np.zeros((4, 5, 3), np.uint8)
    image[:2, :] = (255, 0, 0)
    image[3, 4] = (255, 0, 1)
    labels = colour_segmentation(image)
    assert labels.shape == (4, 5) and labels.dtype == np.int64
    assert len(np.unique(labels)) == 3
    assert len(np.unique(labels[:2])) == 1 and labels[3, 4] != labels[0, 0]


def test_kmeans_segmentation_contract_and_determinism(textured):
    image = textured[0].image
    labels = kmeans_segmentation(image, k=5, seed=3)
    assert labels.shape == image.shape[:2] and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < 5
    assert np.array_equal(labels, kmeans_segmentation(image, k=5, seed=3))
    flat = np.full((8, 8, 3), 7, np.uint8)  # fewer colours than k: no failure
    assert (kmeans_segmentation(flat) == 0).all()


def test_baselines_reject_non_rgb():
    with pytest.raises(ValueError):
        colour_segmentation(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        kmeans_segmentation(np.zeros((4, 4, 4), np.uint8))


def test_colour_solves_solid_scenes(solid):
    assert _mean_fg_ari(solid, colour_segmentation) > 0.95


def test_textured_scenes_defeat_colour(textured):
    """Fails if the textured variant stops being hard for colour-only grouping."""
    colour = _mean_fg_ari(textured, colour_segmentation)
    kmeans = _mean_fg_ari(textured, kmeans_segmentation)
    assert colour < 0.45, colour
    assert kmeans < 0.7, kmeans
    # ...but not so noisy that colour carries no object information at all.
    assert kmeans > 0.35, kmeans
