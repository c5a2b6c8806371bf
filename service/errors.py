"""Request errors: one class per reason, each with its HTTP status and gRPC status code.

The message of every error is one line that says what was wrong and, where it helps, what
to send instead. The HTTP layer and the gRPC layer map the same exception to their codes,
so a client sees the same reason on either protocol.
"""

from __future__ import annotations

import math


def retry_after_s(max_latency_s: float) -> int:
    """Seconds a shed client should wait before it retries (HTTP `Retry-After`, gRPC
    `grpc-retry-pushback-ms`): one latency budget, about what the queue it was refused from
    takes to drain; whole seconds, at least 1."""
    return max(1, math.ceil(max_latency_s))


class RequestError(Exception):
    """A request the service refuses; `reason` is a short machine label for metrics."""

    http_status = 400
    grpc_code = "INVALID_ARGUMENT"
    reason = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class EmptyUpload(RequestError):
    reason = "empty_upload"


class BadImage(RequestError):
    reason = "bad_image"


class UnsupportedImage(RequestError):
    http_status = 415
    reason = "unsupported_image"


class ImageTooSmall(RequestError):
    reason = "image_too_small"


class UploadTooLarge(RequestError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    reason = "upload_too_large"


class TooManyPixels(RequestError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    reason = "too_many_pixels"


class TooManyImages(RequestError):
    http_status = 413
    grpc_code = "RESOURCE_EXHAUSTED"
    reason = "too_many_images"


class Overloaded(RequestError):
    """The batcher could not meet its latency budget: shed, the client may retry after
    `retry_after_s` seconds (sent as `Retry-After` / `grpc-retry-pushback-ms`)."""

    http_status = 503
    grpc_code = "UNAVAILABLE"
    reason = "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1, hold_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.hold_s = hold_s
        """How long the refusal is held before it is sent (see `Batcher`): a client that
        resends at once then cannot turn refusals into a loop that takes the model's cores."""


GUARD_REASONS = (
    "bad_request",
    "bad_multipart",
    "wrong_field",
    "missing_field",
    "not_a_file",
    "wrong_content_type",
)
"""Reasons the HTTP request guard (service.guard) refuses with, before any image is read."""


def all_reasons() -> list[str]:
    """Every refusal reason, for metric labels created at start-up (so rate() sees the first)."""
    seen, stack = [], [RequestError]
    while stack:
        cls = stack.pop()
        if cls.reason not in seen:
            seen.append(cls.reason)
        stack.extend(cls.__subclasses__())
    return sorted({*seen, *GUARD_REASONS, "internal"})
