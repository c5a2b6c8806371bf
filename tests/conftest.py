"""Shared fixtures: small model configs and a tiny trained checkpoint."""

from __future__ import annotations

import pytest
import torch

from training.checkpoint import CheckpointInfo, save_checkpoint
from training.config import ModelConfig
from training.model import build_model

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

# A small plain model (the defaults are the shipped model): tests opt into the shipped
# options they exercise, e.g. the `exported` fixture below.
SMALL = {
    "image_size": 32,
    "encoder": {"channels": 16, "stride": 4},
    "slot_attention": {
        "num_slots": 4,
        "slot_dim": 32,
        "mlp_hidden": 32,
        "iterations": 2,
        "eval_iterations": None,
        "init": "gaussian",
        "locality": 0.0,
        "locality_window": 0.0,
        "key_pool": 1,
        "key_pool_mix": 1.0,
    },
    "codebook": {"size": 8},
    "decoder": {
        "channels": 32,
        "train_pixels": 128,
        "attention_prior": False,
        "slot_centric": False,
        "merge_share": 0.0,
    },
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


def run_module(module: str, *args: str, timeout: int = 600, env=None):
    """`python -m MODULE ARGS` in a subprocess, in the repository root (the CLI as a user
    runs it)."""
    import subprocess
    import sys

    from loadtests.server import REPO

    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def small_checkpoint(path, cfg: ModelConfig | None = None, code_names=None):
    """A small model after one training forward (codebook initialised), saved in eval mode."""
    cfg = cfg or small_config()
    torch.manual_seed(0)
    model = build_model(cfg)
    model(torch.rand(4, 3, cfg.image_size, cfg.image_size))  # k-means init + one EMA step
    return save_checkpoint(model.eval(), path, CheckpointInfo(cfg, code_names))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """A small trained-for-one-step checkpoint and its exported bundle (shared, read-only)."""
    from export.onnx_export import export_bundle

    root = tmp_path_factory.mktemp("export")
    # The shipped architecture's options (finer tokens, locality prior, attention prior,
    # slot-centric decoding), so every export, bundle and service test runs the operators the
    # shipped model exports.
    cfg = small_config(
        encoder={"stride": 2},
        slot_attention={"locality": 1.0, "locality_window": 0.25},
        decoder={"attention_prior": True, "slot_centric": True},
    )
    ckpt = small_checkpoint(root / "m.safetensors", cfg, code_names=["background"] * 8)
    manifest = export_bundle(ckpt, root / "bundle")
    return ckpt, root / "bundle", manifest


def pytest_collection_modifyitems(config, items):
    """GPU tests skip only where there is no CUDA GPU (never for a missing tool in CI)."""
    import shutil

    has_gpu = shutil.which("nvidia-smi") is not None
    if has_gpu:
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The real service (`bentoml serve`, shipped default bundle), shared by a test session."""
    from tests.serving import serve

    # tests.serving gives it the wide functional-test latency budget.
    with serve(tmp_path_factory.mktemp("server")) as running:
        yield running
