"""Shared fixtures: small model configs and a tiny trained checkpoint."""

from __future__ import annotations

import pytest
import torch

from training.config import ModelConfig

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

SMALL = {
    "image_size": 32,
    "encoder": {"channels": 16},
    "slot_attention": {"num_slots": 4, "slot_dim": 32, "mlp_hidden": 32, "iterations": 2},
    "codebook": {"size": 8},
    "decoder": {"channels": 32, "train_pixels": 128},
}


def small_config(**overrides) -> ModelConfig:
    raw = {k: dict(v) if isinstance(v, dict) else v for k, v in SMALL.items()}
    for section, value in overrides.items():
        if isinstance(value, dict):
            raw.setdefault(section, {}).update(value)
        else:
            raw[section] = value
    return ModelConfig.model_validate(raw)


@pytest.fixture
def small_cfg() -> ModelConfig:
    return small_config()
