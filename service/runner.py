"""One model call: uint8 images -> per-image outputs, with the model-side metrics.

The batcher (`service.batcher`) forms the batch; this runs it on a backend and keeps the
model-side metrics and the code statistics. With several model instances each has its own
backend (its own onnxruntime session and memory arena), so calls side by side share nothing
but the cores; in an A/B of the served overload point (open loop, 4x the saturating rate),
own sessions answered 64-69 images/s against 63-67 with one shared session.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time

import numpy as np

from runtime.backends import Backend, create_backend
from runtime.contract import Manifest, to_model_input
from service.bundle import ResolvedBundle
from service.metrics import CodeDrift, ServiceMetrics
from service.settings import Settings


class ModelRunner:
    def __init__(
        self, backends: Backend | list[Backend], manifest: Manifest, metrics: ServiceMetrics
    ) -> None:
        backends = backends if isinstance(backends, list) else [backends]
        self.backend = backends[0]
        """The first instance's backend: what `describe` and the metrics' labels show."""
        self.instances = len(backends)
        """Calls that may run at once, one per backend."""
        self._free: queue.SimpleQueue[Backend] = queue.SimpleQueue()
        for backend in backends:
            self._free.put(backend)
        backend = self.backend
        self.manifest = manifest
        self.metrics = metrics
        self.drift = CodeDrift(manifest.code_usage, manifest.codebook_size)
        self._drift_lock = threading.Lock()  # model instances call from their own threads
        self.calls = itertools.count(1)
        self.labels = {
            "backend": backend.name,
            "provider": backend.provider,
            "variant": backend.variant,
        }
        metrics.model_info.labels(model=manifest.name, version=manifest.version, **self.labels).set(
            1
        )

    def blank(self, n: int = 1) -> np.ndarray:
        return np.zeros((n, self.manifest.input.height, self.manifest.input.width, 3), np.uint8)

    def __call__(self, images: np.ndarray) -> list[dict]:
        """uint8 (N, H, W, 3) RGB at the model's input size -> one dict per image."""
        started = time.perf_counter()
        backend = self._free.get()  # never waits: the batcher runs at most `instances` calls
        try:
            out = backend.infer(to_model_input(images, self.manifest.input))
        finally:
            self._free.put(backend)
        seconds = time.perf_counter() - started
        n = len(images)
        call = f"{os.getpid()}-{next(self.calls)}"
        self.metrics.batch_images.observe(n)
        self.metrics.inference_seconds.labels(**self.labels).observe(seconds)
        # Blank (all-zero) images carry no semantics and are what the start-up warm-up
        # sends: they stay out of the code-usage statistics and the drift window.
        informative = images.reshape(n, -1).any(axis=1)
        codes = out.codes[informative].ravel()
        for code, count in zip(*np.unique(codes, return_counts=True), strict=True):
            self.metrics.code_assignments.labels(str(int(code))).inc(int(count))
        with self._drift_lock:
            self.drift.add(codes)
            self.metrics.code_drift.set(self.drift.divergence())
        return [
            {
                "masks": out.masks[i],
                "codes": out.codes[i],
                "distances": out.distances[i],
                "call": call,
                "images": n,
                "compute_ms": seconds * 1000,
            }
            for i in range(n)
        ]


def build_runner(
    bundle: ResolvedBundle, settings: Settings, metrics: ServiceMetrics
) -> ModelRunner:
    """The backends the settings ask for, one per model instance (as far as the backend runs
    calls side by side), each run once on a blank image (so the first request does not pay
    for onnxruntime's first-call set-up), behind a `ModelRunner`."""
    first = create_backend(bundle.path, bundle.manifest, settings)
    instances = min(settings.model_instances, first.max_instances or settings.model_instances)
    backends = [first] + [
        create_backend(bundle.path, bundle.manifest, settings) for _ in range(instances - 1)
    ]
    runner = ModelRunner(backends, bundle.manifest, metrics)
    for backend in backends:
        backend.infer(to_model_input(runner.blank(), bundle.manifest.input))
    return runner


def describe_runner(runner: ModelRunner) -> dict:
    """The backend really in use, and the worker process it runs in."""
    return {"backend": runner.backend.describe(), "pid": os.getpid()}
