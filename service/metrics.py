"""SlotServe's own Prometheus metrics, beside BentoML's.

prometheus_client is imported lazily, inside `ServiceMetrics(...)`: BentoML sets
PROMETHEUS_MULTIPROC_DIR in each worker after importing the service module, and
prometheus_client picks single- or multi-process storage when it is first imported. Built
in the service's `__init__`, the metrics land in the multiprocess files BentoML's /metrics
aggregates, so figures add up across workers.

Buckets fit what we measure on a 2-core CPU: ~1 ms per image of model time, tens of ms for
a full batch, and up to seconds when overloaded.
"""

from __future__ import annotations

import math
from collections import deque

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
    0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
STAGES = ("decode", "preprocess", "inference", "postprocess", "total")


def js_divergence(p: list[float] | tuple[float, ...], q: list[float] | tuple[float, ...]) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between two distributions."""
    sp, sq = sum(p), sum(q)
    if sp <= 0 or sq <= 0:
        return 0.0
    total = 0.0
    for a, b in zip(p, q, strict=True):
        a, b = a / sp, b / sq
        m = (a + b) / 2
        if a > 0:
            total += 0.5 * a * math.log2(a / m)
        if b > 0:
            total += 0.5 * b * math.log2(b / m)
    return max(0.0, min(1.0, total))


class CodeDrift:
    """Live code usage over the last `window` slot assignments against the training usage."""

    def __init__(self, reference: list[float] | None, codebook_size: int, window: int = 5000):
        self.reference = list(reference) if reference else [1.0] * codebook_size
        self.recent: deque[int] = deque(maxlen=window)
        self.counts = [0] * codebook_size

    def add(self, codes) -> None:
        for c in codes:
            c = int(c)
            if len(self.recent) == self.recent.maxlen:
                self.counts[self.recent[0]] -= 1
            self.recent.append(c)
            self.counts[c] += 1

    def divergence(self) -> float:
        return js_divergence(self.counts, self.reference) if self.recent else 0.0


class ServiceMetrics:
    """The metric families; `registry=None` means prometheus_client's default registry."""

    def __init__(self, registry=None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        kw = {} if registry is None else {"registry": registry}
        self.batch_images = Histogram(
            "slotserve_batch_images",
            "Images per model call (all protocols share the batcher)",
            buckets=BATCH_BUCKETS,
            **kw,
        )
        self.stage_seconds = Histogram(
            "slotserve_stage_seconds",
            "Per-image latency by stage (inference = queue + model call, seen by the caller)",
            ["stage", "protocol"],
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.inference_seconds = Histogram(
            "slotserve_inference_seconds",
            "Duration of one model call (a whole batch) by backend and provider",
            ["backend", "provider", "variant"],
            buckets=LATENCY_BUCKETS,
            **kw,
        )
        self.requests = Counter(
            "slotserve_requests",
            "Requests by protocol, endpoint and outcome",
            ["protocol", "endpoint", "outcome"],
            **kw,
        )
        self.images = Counter(
            "slotserve_images", "Images decomposed and returned", ["protocol"], **kw
        )
        self.objects = Counter("slotserve_objects", "Objects returned", ["protocol"], **kw)
        self.errors = Counter(
            "slotserve_errors", "Refused or failed requests by reason", ["reason", "protocol"], **kw
        )
        self.code_assignments = Counter(
            "slotserve_code_assignments", "Slots assigned to each code", ["code"], **kw
        )
        self.code_drift = Gauge(
            "slotserve_code_drift",
            "Jensen-Shannon divergence (0..1) of live code usage from the training usage",
            multiprocess_mode="livemax",
            **kw,
        )
        self.model_info = Gauge(
            "slotserve_model_info",
            "The model being served (value 1), labelled with what it is and where it runs",
            ["model", "version", "backend", "provider", "variant"],
            multiprocess_mode="livemax",
            **kw,
        )

    def prime(self, reasons: list[str], endpoints: dict[str, list[str]]) -> None:
        """Create the labelled series at zero, so the first event of each is a visible rise
        (`rate()` cannot see a series' first sample). endpoints: protocol -> endpoint names."""
        for protocol, names in endpoints.items():
            self.images.labels(protocol)
            self.objects.labels(protocol)
            for stage in STAGES:
                self.stage_seconds.labels(stage, protocol)
            for reason in reasons:
                self.errors.labels(reason, protocol)
            for name in names:
                for outcome in ("ok", *reasons):
                    self.requests.labels(protocol, name, outcome)
