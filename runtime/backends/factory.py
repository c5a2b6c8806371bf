"""Build the backend the settings ask for, and the start-up checks of a bundle's graph.

Apart from the interface (`base`) so that the backends import the interface and this module
imports the backends: the dependencies run one way."""

from __future__ import annotations

from pathlib import Path

from runtime.backends.base import Backend, BackendError, variant_file
from runtime.contract import Manifest


def check_graph(bundle: Path, manifest: Manifest, variant: str = "fp32") -> None:
    """Load the variant's graph on the CPU and check it against the manifest's contract."""
    from runtime.backends.onnxruntime import OnnxRuntimeBackend

    OnnxRuntimeBackend(variant_file(bundle, manifest, variant), manifest, variant, "cpu", 1, 1)


def check_provider(provider: str) -> None:
    """Refuse an onnxruntime provider this onnxruntime build does not have."""
    import onnxruntime as ort

    from runtime.backends.onnxruntime import provider_chain

    provider_chain(provider, ort.get_available_providers())


def create_backend(bundle: Path, manifest: Manifest, settings) -> Backend:
    """Build the backend the settings ask for (`settings`: an object with the fields of
    `service.settings.Settings`)."""
    if settings.backend == "onnxruntime":
        from runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(
            variant_file(bundle, manifest, settings.variant),
            manifest,
            variant=settings.variant,
            provider=settings.provider,
            intra_op_threads=settings.threads_per_instance,
            inter_op_threads=settings.inter_op_threads,
            trt_cache_dir=settings.trt_cache_dir or bundle / "trt-cache",
            max_batch_size=settings.max_batch_size,
            spinning=settings.ort_spinning,
            memory_arena=settings.ort_memory_arena,
            memory_pattern=settings.ort_memory_pattern,
            cuda_tf32=settings.cuda_tf32,
        )
    if settings.backend == "tensorrt":
        from runtime.backends.tensorrt import TensorRTBackend

        return TensorRTBackend.from_bundle(bundle, manifest, variant=settings.variant)
    raise BackendError(f"unknown backend {settings.backend!r}")
