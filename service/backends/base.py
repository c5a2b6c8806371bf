"""The backend interface: float32 (B, 3, H, W) in, masks / codes / code distances out."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.contract import VARIANT_FILES, Manifest


class BackendError(RuntimeError):
    """A backend that cannot run as configured; the message is one line."""


@dataclass(frozen=True)
class ModelOutputs:
    masks: np.ndarray
    """float32 (B, K, H, W): per-slot mask scores, summing to 1 over K."""
    codes: np.ndarray
    """int64 (B, K): codebook index per slot."""
    distances: np.ndarray
    """float32 (B, K): distance from each slot to its code."""


class Backend(abc.ABC):
    name: str
    provider: str
    """The execution provider / device really in use (not merely the one asked for)."""
    variant: str

    @abc.abstractmethod
    def infer(self, images: np.ndarray) -> ModelOutputs:
        """images: float32 (B, 3, H, W) in [0, 1], as `export.contract.to_model_input` makes."""

    def describe(self) -> dict:
        return {"backend": self.name, "provider": self.provider, "variant": self.variant}


def variant_file(bundle: Path, manifest: Manifest, variant: str) -> Path:
    name = VARIANT_FILES[variant]
    if variant != "fp32" and name not in manifest.files:
        have = ", ".join(["fp32", *sorted(v for v in manifest.variants if v in VARIANT_FILES)])
        raise BackendError(
            f"bundle {manifest.name} has no {variant} variant (it has: {have}); "
            "run `python -m export variants` or choose another SLOTSERVE_VARIANT"
        )
    return bundle / name


def check_graph(bundle: Path, manifest: Manifest, variant: str = "fp32") -> None:
    """Load the variant's graph on the CPU and check it against the manifest's contract."""
    from service.backends.onnxruntime import OnnxRuntimeBackend

    OnnxRuntimeBackend(variant_file(bundle, manifest, variant), manifest, variant, "cpu", 1, 1)


def check_provider(provider: str) -> None:
    """Refuse an onnxruntime provider this onnxruntime build does not have."""
    import onnxruntime as ort

    from service.backends.onnxruntime import provider_chain

    provider_chain(provider, ort.get_available_providers())


def create_backend(bundle: Path, manifest: Manifest, settings) -> Backend:
    """Build the backend the settings ask for (`settings` is a `service.settings.Settings`)."""
    if settings.backend == "onnxruntime":
        from service.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            variant_file(bundle, manifest, settings.variant),
            manifest,
            variant=settings.variant,
            provider=settings.provider,
            intra_op_threads=settings.intra_op_threads,
            inter_op_threads=settings.inter_op_threads,
            trt_cache_dir=settings.trt_cache_dir or bundle / "trt-cache",
            max_batch_size=settings.max_batch_size,
            spinning=settings.ort_spinning,
            memory_arena=settings.ort_memory_arena,
            memory_pattern=settings.ort_memory_pattern,
            cuda_tf32=settings.cuda_tf32,
        )
    if settings.backend == "tensorrt":
        from service.backends.tensorrt import TensorRTBackend

        return TensorRTBackend.from_bundle(bundle, manifest, variant=settings.variant)
    raise BackendError(f"unknown backend {settings.backend!r}")
