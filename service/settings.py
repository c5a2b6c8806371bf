"""Service settings: environment variables with the prefix `SLOTSERVE_` (pydantic-settings).

Every knob an operator turns lives here, read once per worker process at import time
(BentoML reads batching parameters from the decorators when the module is imported).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from runtime.contract import Manifest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO_ROOT / "models" / "slotserve-shapes"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLOTSERVE_", extra="ignore")

    # which model
    bundle: Path | None = None
    """A bundle directory; wins over the model store and the shipped default."""
    model_tag: str = "slotserve-shapes:latest"
    """BentoML model-store tag tried when `bundle` is unset (see `python -m export bentoml`)."""
    variant: Literal["fp32", "fp16", "int8"] = "fp32"

    # how it runs
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    provider: Literal["auto", "cpu", "cuda", "tensorrt"] = "auto"
    """onnxruntime execution provider; `auto` takes the best one that really loads."""
    model_instances: int = Field(2, ge=1)
    """Model calls that may run at once, each in its own thread on its own onnxruntime session
    (Triton's `instance_group` count). On 2 CPU cores two single-threaded calls gave 1.19x the
    images/s of one call on both cores, and the service more throughput and goodput under
    overload; one call alone answers a single user ~5 ms slower (docs/benchmarks.md "Model
    instances"). The TensorRT backend runs one."""
    intra_op_threads: int = Field(0, ge=0)
    """onnxruntime threads inside one operator, per instance; 0 shares the cores among the
    instances (one thread each on 2 cores; all of them with one instance)."""
    ort_spinning: bool = True
    """Let onnxruntime's threads spin between operators (onnxruntime's default). Off, every
    one of the graph's ~280 operators wakes sleeping threads: batch-1 inference on 2 cores
    went from 8.1 to 12.9 ms, and served throughput fell rather than rose."""
    inter_op_threads: int = Field(1, ge=0)
    ort_memory_arena: bool = True
    """Keep onnxruntime's CPU memory arena (its default). The arena holds on to the activations
    of the largest batch run so far, about 22 MB per image of it for the shipped model, so a
    worker's memory follows `max_batch_size`. Off, activations are freed after each call:
    less memory, but slower at batch 8 and up (README "Memory"; `python -m loadtests.memory`)."""
    ort_memory_pattern: bool = False
    """onnxruntime's memory pattern (on by default in onnxruntime): from the second call at a
    batch size it allocates one planned block per call while the arena keeps the first call's
    pieces too, so the arena settles at twice the activations. Off here: half the memory at
    the same speed (README "Memory")."""
    cuda_tf32: bool = False
    """Let onnxruntime's CUDA provider run fp32 convolutions and matrix products on TF32 tensor
    cores (onnxruntime's own default). Off here: on an H100, TF32 moved the shipped model's
    mask values by up to 0.27 from the CPU's and put 0.14% of pixels in another slot; with it
    off, the masks stay within 1.5e-3 (99.999% of pixels agree). Needs `provider` cuda or auto."""
    trace_model_routes: bool = False
    """Keep BentoML's OpenTelemetry spans on /decompose, /decompose_batch and /visualize (set
    it with a tracing exporter configured; without one the spans cost CPU and go nowhere)."""
    trt_cache_dir: Path | None = None

    # batching and load
    batch_wait_ms: float = Field(0.0, ge=0)
    """Extra wait to fill a batch when the model is idle (0 = none)."""
    max_batch_size: int = Field(32, ge=1)
    max_latency_ms: int = Field(2000, ge=1)
    """Latency budget: a request the batcher cannot serve within it is refused at once with
    503 / UNAVAILABLE and Retry-After (service/batcher.py owns that decision)."""
    shed_hold_ms: int | None = Field(None, ge=0)
    """A refused request's 503 / UNAVAILABLE is sent after this hold (no CPU, one open
    connection); unset, one latency budget: a refusal comes no sooner than an answer at the
    edge of the budget would, so clients that resend at once cannot spin refusals
    (docs/benchmarks.md)."""

    @property
    def threads_per_instance(self) -> int:
        """`intra_op_threads`, or the cores divided among `model_instances` (0 with one
        instance: onnxruntime's own choice, one thread per core)."""
        if self.intra_op_threads or self.model_instances == 1:
            return self.intra_op_threads
        return max(1, len(os.sched_getaffinity(0)) // self.model_instances)

    def for_bundle(self, manifest: Manifest) -> Settings:
        """These settings with the bundle's own batching where the environment sets none: a
        manifest's `serving.max_batch_size` (the photo model's activations take ~200 MB an
        image) replaces the default of 32 unless `SLOTSERVE_MAX_BATCH_SIZE` is set."""
        limit = manifest.serving.max_batch_size
        if limit is None or "max_batch_size" in self.model_fields_set:
            return self
        return self.model_copy(update={"max_batch_size": limit})

    @property
    def shed_hold(self) -> int:
        """`shed_hold_ms`, or the latency budget when it is unset."""
        return self.max_latency_ms if self.shed_hold_ms is None else self.shed_hold_ms

    workers: int = Field(1, ge=1)
    """Front (HTTP + gRPC) worker processes."""
    timeout_s: int = Field(60, ge=1)

    # limits on what a request may carry
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1)
    max_pixels: int = Field(40_000_000, ge=1)
    """Decoded pixel budget per image: larger ones (decompression bombs) are refused unread."""
    min_side: int = Field(4, ge=1)
    max_batch_request_bytes: int = Field(128 * 1024 * 1024, ge=1)
    """Whole-body limit of /decompose_batch."""
    max_images: int = Field(64, ge=1)
    """Images per /decompose_batch request or gRPC batch call."""

    # gRPC beside HTTP
    grpc_port: int = Field(50051, ge=0, le=65535)
    """0 turns the gRPC server off."""
    grpc_host: str = "0.0.0.0"
    grpc_max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)


def get_settings() -> Settings:
    return Settings()
