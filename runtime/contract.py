"""The model-bundle contract, defined once and torch-free.

Export writes bundles with it; the service reads them with it. A bundle is a directory:

    manifest.json      this contract's `Manifest` (config, I/O, codes, hashes, parity, tools)
    model.onnx         fp32 graph, weights inside (single file)
    model.fp16.onnx    optional variant
    model.int8.onnx    optional variant
    *.plan             optional TensorRT engines, built on the target GPU

Tensors (B = batch, dynamic; K = slots; H, W = the model's input size):

    input  "image"           float32 (B, 3, H, W), RGB, NCHW: (pixel * scale - mean) / std,
                             per channel, as the manifest's `input` says (`to_model_input`)
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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    """What the graph takes, and how a reader turns uint8 RGB pixels into it:
    `(pixel * scale - mean) / std` per channel (`to_model_input`). A manifest without mean / std
    means 0 / 1 (the shipped bundles normalise inside the graph); a pretrained encoder's
    ImageNet statistics would be written here, and every reader applies them."""

    model_config = ConfigDict(extra="forbid")
    name: str = INPUT_NAME
    layout: Literal["NCHW"] = "NCHW"
    dtype: Literal["float32"] = "float32"
    channels: Literal[3] = 3
    colour: Literal["RGB"] = "RGB"
    height: int
    width: int
    scale: float = 1.0 / 255.0
    """uint8 pixel * scale, before mean and std."""
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @field_validator("scale")
    @classmethod
    def _positive_scale(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"input.scale must be positive, got {value}")
        return value

    @field_validator("std")
    @classmethod
    def _positive_std(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if not all(v > 0 for v in value):
            raise ValueError(f"input.std must be positive per channel, got {list(value)}")
        return value


class _Section(BaseModel):
    """A part of the model config: the fields bundle readers rely on are typed; the rest of
    the training config (`training.config.ModelConfig`) is kept as written."""

    model_config = ConfigDict(extra="allow")


class SlotAttentionSection(_Section):
    num_slots: int = Field(ge=1)


class CodebookSection(_Section):
    size: int = Field(ge=1)


class DecoderSection(_Section):
    merge_share: float = 0.0
    """Slots sharing their pixels above this were merged into one mask by the graph."""
    refine_radius: int = 0
    """Feature decoders: the graph refines the masks with a guided filter of this radius
    (0: none; pixel decoders never do)."""


class ModelSection(_Section):
    """The config the graph was built from (`training.config.ModelConfig`, as JSON)."""

    image_size: int = Field(ge=1)
    slot_attention: SlotAttentionSection
    codebook: CodebookSection
    decoder: DecoderSection = Field(default_factory=DecoderSection)


class OutputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    dtype: Literal["float32", "int64"]
    shape: list[str | int]
    description: str = ""


class ServingSpec(BaseModel):
    """How this model should be batched where it differs from the service's defaults, as a
    Triton model's config holds its own `max_batch_size`. An environment variable set by the
    operator still wins (`service.settings.Settings.for_bundle`)."""

    model_config = ConfigDict(extra="forbid")
    max_batch_size: int | None = Field(None, ge=1)
    """The most images per model call: each image of a batch holds the model's activations in
    an instance (the photo model about 200 MB, the shapes model about 30 MB). None: the
    service's default."""


class CodeLabelSpec(BaseModel):
    """What one code says about the objects it is given to (training/labels.py)."""

    model_config = ConfigDict(extra="forbid")
    label: str | None
    """The served label: "background", a category, or null where the code is not reliable."""
    score: float
    """Share of the code's slots on the labelled naming set whose truth is the label (or the
    best candidate's share where the label is null)."""
    category: str | None = None
    background_share: float = 0.0
    category_share: float = 0.0
    slots: int = 0


class Manifest(BaseModel):
    """The slot count and the codebook size are the model section's
    (`model.slot_attention.num_slots`, `model.codebook.size`), written once; `num_slots` and
    `codebook_size` read them."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    format: Literal["slotserve-bundle"] = BUNDLE_FORMAT
    format_version: int = BUNDLE_VERSION
    name: str
    version: str
    created: str
    model: ModelSection
    input: InputSpec
    outputs: list[OutputSpec]
    iterations: dict[str, int]
    """{"bottom_up": T, "modulated": T or 0}: unrolled, fixed in the graph."""
    code_names: list[str | None] | None = None
    code_labels: list[CodeLabelSpec] | None = None
    """Per code: the served label and its score, measured on labelled scenes at export
    (`python -m export labels`). Absent: labels fall back to `code_names`, with no score."""
    label_thresholds: dict[str, float | None] | None = None
    """Shares a code needed for a label ({"background": t, "category": t}; null: never given),
    picked on validation scenes; and the labelled set they were measured on."""
    label_set: str | None = None
    code_usage: list[float] | None = None
    """Training distribution of code assignments: the reference for drift monitoring."""
    mask_source: Literal["decoder_alpha", "attention"] = "decoder_alpha"
    serving: ServingSpec = Field(default_factory=ServingSpec)
    checkpoint_sha256: str
    files: dict[str, str]
    """file name -> sha256 of every file in the bundle except the manifest."""
    variants: dict[str, dict] = Field(default_factory=dict)
    """variant -> {file, code_agreement, fg_ari_change, speed_vs_fp32, ...}."""
    parity: dict = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _fold_repeated_counts(cls, raw):
        """Manifests written before the model section was typed repeat the slot count and the
        codebook size at the top level: accepted when they agree with the model section."""
        if not isinstance(raw, dict) or not isinstance(raw.get("model"), dict):
            return raw
        raw = dict(raw)
        model = raw["model"]
        for key, section, field in (
            ("num_slots", "slot_attention", "num_slots"),
            ("codebook_size", "codebook", "size"),
        ):
            if key in raw:
                value = raw.pop(key)
                written = (model.get(section) or {}).get(field)
                if written is not None and value != written:
                    raise ValueError(
                        f"{key} {value} disagrees with model.{section}.{field} {written}"
                    )
        return raw

    @property
    def num_slots(self) -> int:
        return self.model.slot_attention.num_slots

    @property
    def codebook_size(self) -> int:
        return self.model.codebook.size


def served_labels(manifest: Manifest) -> list[tuple[str | None, float | None]]:
    """(label, label_score) per code: from `code_labels`, else `code_names` with no score."""
    if manifest.code_labels is not None:
        return [(c.label, c.score) for c in manifest.code_labels]
    names = manifest.code_names or []
    return [(names[e] if e < len(names) else None, None) for e in range(manifest.codebook_size)]


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


def to_model_input(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 images (B, H, W, 3) RGB -> float32 (B, 3, H, W), normalised as `spec` says:
    (pixel * scale - mean) / std per channel."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 (B, H, W, 3) images, got {images.dtype} {images.shape}")
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)
    # Divide by 1 / scale rather than multiply by scale: for scale 1/255 that is pixel / 255
    # bit for bit, what every bundle so far was verified and evaluated with.
    x /= np.float32(1.0 / spec.scale)
    if spec.mean != (0.0, 0.0, 0.0) or spec.std != (1.0, 1.0, 1.0):
        x -= np.asarray(spec.mean, np.float32)[:, None, None]
        x /= np.asarray(spec.std, np.float32)[:, None, None]
    return x
