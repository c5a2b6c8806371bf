"""The ASGI wiring of the service (service.guard): the admission gate in front of everything
BentoML builds, and the request guard on the upload routes in front of its request parsing.

    uvicorn -> AdmissionGate -> BentoML (metrics, tracing, access log, timeout, ...)
            -> RequestGuard -> BentoML's request parsing -> SlotServe's API methods

BentoML puts middleware added with `add_asgi_middleware` inside its own (request metrics,
OpenTelemetry, the access log, a timeout task per request), so a refusal made there paid for
all of them; the gate goes outside by making the service a `FrontedService`, whose
`to_asgi` (what BentoML's worker serves) wraps BentoML's app. Refused requests then do not
appear in BentoML's own request metrics; `slotserve_errors_total{reason="overloaded"}`
counts them.

The gate and the guard are built by BentoML when a worker starts, before the service instance
exists; their hooks find that instance through `bentoml.get_current_service()` when a request
arrives."""

from __future__ import annotations

import bentoml

from service.batcher import Reservation
from service.guard import AdmissionGate, RequestGuard, UploadRoute
from service.responses import count_refusal
from service.settings import Settings

MULTIPART_OVERHEAD = 64 * 1024
"""Room for multipart part headers and boundaries over an image's own bytes."""

UPLOAD_PATHS = frozenset({"/decompose", "/visualize", "/decompose_batch"})
"""The routes that reach the model: admission is asked for these."""


def admit(images: int) -> Reservation:
    """Ask the worker's batcher to let a request in (raises `Overloaded` when it will not)."""
    return bentoml.get_current_service().batcher.admit(images)


def on_refuse(path: str, reason: str) -> None:
    count_refusal(bentoml.get_current_service().metrics, path, reason)


class FrontedService(bentoml.Service):
    """A `bentoml.Service` whose ASGI app has the admission gate in front of BentoML's."""

    __slots__ = ()

    def to_asgi(self, is_main: bool = True):
        return AdmissionGate(
            super().to_asgi(is_main),
            UPLOAD_PATHS,
            admit=lambda images: admit(images),  # looked up per call: tests replace it
            on_refuse=lambda path, reason: on_refuse(path, reason),
        )


def install(service, settings: Settings, endpoints: list[str]) -> None:
    """Put the admission gate in front of `service` and the request guard in front of
    BentoML's request parsing."""
    assert {r.strip("/") for r in UPLOAD_PATHS} == set(endpoints), "a model route unguarded"
    if type(service) is not bentoml.Service:
        raise TypeError(
            f"expected a bentoml.Service to put the admission gate in front of, got "
            f"{type(service).__name__}: BentoML's service class changed"
        )
    service.__class__ = FrontedService
    per_image = settings.max_upload_bytes + MULTIPART_OVERHEAD
    routes = {
        "/decompose": UploadRoute("image", 1, per_image),
        "/visualize": UploadRoute("image", 1, per_image),
        "/decompose_batch": UploadRoute(
            "images", settings.max_images, settings.max_batch_request_bytes
        ),
    }
    assert set(routes) == UPLOAD_PATHS
    service.add_asgi_middleware(
        RequestGuard, routes=routes, max_body_bytes=per_image, on_refuse=on_refuse
    )
