"""The ASGI middleware of the service: the request guard (service.guard) on the upload routes,
asking the batcher for admission before it reads a body and counting what it refuses.

The guard is built by BentoML when a worker starts, before the service instance exists; its
hooks find that instance through `bentoml.get_current_service()` when a request arrives."""

from __future__ import annotations

import bentoml

from service.batcher import Reservation
from service.guard import RequestGuard, UploadRoute
from service.responses import count_refusal
from service.settings import Settings

MULTIPART_OVERHEAD = 64 * 1024
"""Room for multipart part headers and boundaries over an image's own bytes."""


def admit(images: int) -> Reservation:
    """Ask the worker's batcher to let a request in (raises `Overloaded` when it will not)."""
    return bentoml.get_current_service().batcher.admit(images)


def on_refuse(path: str, reason: str) -> None:
    count_refusal(bentoml.get_current_service().metrics, path, reason)


def install(service, settings: Settings, endpoints: list[str]) -> None:
    """Put the request guard in front of BentoML's request parsing on `service`."""
    per_image = settings.max_upload_bytes + MULTIPART_OVERHEAD
    routes = {
        "/decompose": UploadRoute("image", 1, per_image),
        "/visualize": UploadRoute("image", 1, per_image),
        "/decompose_batch": UploadRoute(
            "images", settings.max_images, settings.max_batch_request_bytes
        ),
    }
    assert {r.strip("/") for r in routes} == set(endpoints), "a model route without its guard"
    service.add_asgi_middleware(
        RequestGuard, routes=routes, max_body_bytes=per_image, on_refuse=on_refuse, admit=admit
    )
