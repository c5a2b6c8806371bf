"""The model-bundle contract, defined once and torch-free.

Export writes bundles with it; the service reads them with it. A bundle is a directory:

    manifest.json      this contract's `Manifest` (config, I/O, codes, hashes, parity, tools)
    model.onnx         fp32 graph, weights inside (single file)
    model.fp16.onnx    optional variant
    model.int8.onnx    optional variant
    *.plan             optional TensorRT engines, built on the target GPU

Tensors (B = batch, dynamic; K = slots; H, W = the model's input size):

    input  "image"           float32 (B, 3, H, W), RGB, NCHW, values in [0, 1] (pixel / 255)
    output "masks"           float32 (B, K, H, W), per-slot mask probabilities (sum 1 over K)
    output "codes"           int64   (B, K), semantic code per slot (codebook index)
    output "code_distances"  float32 (B, K), distance from the slot to its code
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

BUNDLE_FORMAT = "slotserve-bundle"
BUNDLE_VERSION = 1
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
VARIANT_FILES = {"fp32": MODEL_FILE, "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}

INPUT_NAME = "image"
OUTPUT_MASKS = "masks"
OUTPUT_CODES = "codes"
OUTPUT_DISTANCES = "code_distances"
OUTPUT_NAMES = (OUTPUT_MASKS, OUTPUT_CODES, OUTPUT_DISTANCES)


class BundleError(ValueError):
    """A bundle that must not be served; the message is one line naming the problem."""


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = INPUT_NAME
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    channels: Literal[3] = 3
    colour: Literal["RGB"] = "RGB"
    height: int
    width: int
    scale: float = 1.0 / 255.0
    """pixel value (uint8) * scale = model input; no mean/std: the model normalises inside."""


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: Literal["float32", "int64"]
    shape: list[str | int]
    description: str = ""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    format: Literal["slotserve-bundle"] = BUNDLE_FORMAT
    format_version: int = BUNDLE_VERSION
    name: str
    version: str
    created: str
    model: dict
    """The ModelConfig the graph was built from (as JSON-able dict)."""
    input: InputSpec
    outputs: list[OutputSpec]
    num_slots: int
    iterations: dict[str, int]
    """{"bottom_up": T, "modulated": T or 0}: unrolled, fixed in the graph."""
    codebook_size: int
    code_names: list[str | None] | None = None
    code_usage: list[float] | None = None
    """Training distribution of code assignments: the reference for drift monitoring."""
    mask_source: Literal["decoder_alpha", "attention"] = "decoder_alpha"
    checkpoint_sha256: str
    files: dict[str, str]
    """file name -> sha256 of every file in the bundle except the manifest."""
    variants: dict[str, dict] = Field(default_factory=dict)
    """variant -> {file, code_agreement, fg_ari_change, speed_vs_fp32, ...}."""
    parity: dict = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(bundle: str | Path, manifest: Manifest) -> Path:
    path = Path(bundle) / MANIFEST_FILE
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return path


def read_manifest(bundle: str | Path) -> Manifest:
    path = Path(bundle) / MANIFEST_FILE
    if not path.exists():
        raise BundleError(f"{path}: missing manifest")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from err
    if raw.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not a SlotServe bundle manifest")
    if raw.get("format_version") != BUNDLE_VERSION:
        raise BundleError(
            f"{path}: bundle format {raw.get('format_version')} is not supported "
            f"(this SlotServe reads format {BUNDLE_VERSION}); re-export the checkpoint"
        )
    try:
        return Manifest.model_validate(raw)
    except ValueError as err:
        first = str(err).splitlines()
        raise BundleError(f"{path}: invalid manifest ({' '.join(first[:2])})") from err


def verify_files(bundle: str | Path, manifest: Manifest) -> None:
    """Refuse a bundle whose files are missing or differ from their recorded sha256."""
    root = Path(bundle)
    for name, expected in sorted(manifest.files.items()):
        path = root / name
        if not path.exists():
            raise BundleError(f"{path}: missing (listed in the manifest)")
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"{path}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…)"
            )


def load_bundle(bundle: str | Path) -> Manifest:
    """Read and verify a bundle; raises BundleError with a one-line reason."""
    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)
    return manifest


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 images (B, H, W, 3) RGB -> float32 (B, 3, H, W) in [0, 1], the input contract."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (B, H, W, 3) images, got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
