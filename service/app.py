"""The BentoML services: `SlotServe` (HTTP + gRPC front) over `Inference` (the batched model).

    client --HTTP--> SlotServe --+-- decode, resize (pure functions, service.processing)
    client --gRPC--> (same proc) +-- await Inference.infer  <-- BentoML adaptive batching
                                 +-- masks -> objects, COCO RLE; timings; metrics

The front is async, so every request in flight reaches the batcher at once (a sync front
runs one request per worker thread and the batcher never sees concurrency). gRPC runs on the
front worker's event loop and calls the same pipeline, so HTTP and gRPC requests land in the
same model calls. Calls to `Inference` are idempotent and are retried on a dropped pooled
connection, so a keep-alive race between the two processes never reaches a client.
"""

import asyncio
import importlib.util
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import bentoml
import numpy as np
from bentoml.exceptions import ServiceUnavailable
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime.backends import BackendError, check_graph, check_provider, create_backend
from runtime.contract import BundleError, to_model_input
from service.batcher import Batcher
from service.bundle import ResolvedBundle, resolve_bundle
from service.errors import Overloaded, RequestError, all_reasons, retry_after_s
from service.guard import RequestGuard, UploadRoute
from service.metrics import ServiceMetrics
from service.pipeline import Pipeline
from service.processing import Limits
from service.runner import ModelRunner
from service.schemas import BatchDecomposition, Decomposition
from service.settings import get_settings

log = logging.getLogger("slotserve")
SETTINGS = get_settings()


def _bundle_or_exit() -> ResolvedBundle:
    """Verify the bundle when the module loads, so a bad one stops `bentoml serve` at once
    (exit status 1, one line) instead of crash-looping workers; never serve a wrong model."""
    try:
        bundle = resolve_bundle(SETTINGS)
        check_graph(bundle.path, bundle.manifest, SETTINGS.variant)
        if SETTINGS.backend == "onnxruntime":
            check_provider(SETTINGS.provider)
    except (BundleError, BackendError) as err:
        raise SystemExit(f"slotserve: refusing to serve: {err}") from None
    return bundle


BUNDLE = _bundle_or_exit()
TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
"""A dropped connection to the inference service: safe to retry (inference is idempotent)."""
RETRIES = 3

_metrics: ServiceMetrics | None = None


class ShedLogFilter(logging.Filter):
    """BentoML logs every request its batcher sheds as an ERROR with a traceback (hundreds a
    second under overload). A shed is the designed answer, counted in slotserve_errors_total:
    log it as one WARNING line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], ServiceUnavailable):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "shed %s [%s]: the batcher is over its latency budget (503)"
        return True


HTTP_ENDPOINTS = ["decompose", "decompose_batch", "visualize"]
GRPC_ENDPOINTS = ["Decompose", "DecomposeBatch", "DecomposeStream"]
# BentoML wraps every request, and every message it sends back, in OpenTelemetry spans even
# when no exporter is configured: a fifth of the worker's request-handling CPU on the model
# routes. They go untraced unless SLOTSERVE_TRACE_MODEL_ROUTES is set (for a real exporter).
UNTRACED_ROUTES = [f"/{e}" for e in HTTP_ENDPOINTS]


def metrics() -> ServiceMetrics:
    """One set of metric objects per process, created after BentoML set up multiprocess mode."""
    global _metrics
    if _metrics is None:
        _metrics = ServiceMetrics()
        _metrics.prime(all_reasons(), {"http": HTTP_ENDPOINTS, "grpc": GRPC_ENDPOINTS})
    return _metrics


RETRY_AFTER_S = retry_after_s(SETTINGS.max_latency_ms / 1000)
"""What a shed answer asks the client to wait, in seconds (`Retry-After`): one latency budget."""

_front: "SlotServe | None" = None


def admit(in_flight: int) -> str | None:
    """Shed an HTTP request before reading it when the requests already in flight in this
    worker would take the model past its latency budget."""
    batcher = _front.batcher if _front is not None else None
    if batcher is None:
        return None
    wait = (in_flight + 1) * batcher.per_image  # each request in flight holds >= 1 image
    if wait > batcher.max_latency:
        return (
            f"the model is saturated: {in_flight} requests in flight would wait about "
            f"{1000 * wait:.0f} ms, over the {1000 * batcher.max_latency:.0f} ms budget; "
            "retry shortly"
        )
    return None


def count_http(endpoint: str, outcome: str) -> None:
    """One HTTP request's outcome: `ok` or the refusal / failure reason."""
    m = metrics()
    m.requests.labels("http", endpoint, outcome).inc()
    if outcome != "ok":
        m.errors.labels(outcome, "http").inc()


def count_refusal(path: str, reason: str) -> None:
    """The request guard's refusals (never reach an API method) count like the others."""
    endpoint = path.strip("/")
    count_http(endpoint if endpoint in HTTP_ENDPOINTS else "other", reason)


@bentoml.service(
    name="slotserve-inference",
    workers=SETTINGS.inference_workers,
    traffic={"timeout": SETTINGS.timeout_s},
    # The front's client to this service recycles its connection pool every 100 requests
    # by default, closing connections other requests are still using (BentoML issue 4971):
    # under a burst those requests fail with ServerDisconnectedError. Recycle never.
    runner_connection={"max_requests": 2**31 - 1, "max_age": 1e9},
)
class Inference:
    """The model behind BentoML's adaptive batcher (SLOTSERVE_BATCHER=bentoml only)."""

    def __init__(self) -> None:
        logging.getLogger("bentoml._internal.server.http_app").addFilter(ShedLogFilter())
        self.runner = build_runner()

    @bentoml.api(
        batchable=True,
        batch_dim=0,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def infer(self, images: np.ndarray) -> list[dict]:
        """uint8 (N, H, W, 3) RGB at the model's input size -> one dict per image."""
        return self.runner(images)

    @bentoml.api
    def describe(self) -> dict:
        """The backend really in use and the bundle it serves."""
        return describe_runner(self.runner)


def build_runner() -> ModelRunner:
    manifest = BUNDLE.manifest
    backend = create_backend(BUNDLE.path, manifest, SETTINGS)
    backend.infer(
        to_model_input(np.zeros((1, manifest.input.height, manifest.input.width, 3), np.uint8))
    )
    return ModelRunner(backend, manifest, metrics())


def describe_runner(runner: ModelRunner) -> dict:
    return {
        "backend": runner.backend.describe(),
        "bundle_source": BUNDLE.source,
        "pid": os.getpid(),
    }


def json_response(body: dict) -> Response:
    """Our dicts already have the schema's shape (tests check them against it); encoding them
    directly skips a pydantic round trip on every response."""
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


async def model_route(request: Request) -> JSONResponse:
    front = bentoml.get_current_service()
    return JSONResponse(await front.describe_model())


_routes = Starlette(routes=[Route("/model", model_route, methods=["GET"])])


@bentoml.service(
    name="slotserve",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.timeout_s, "max_concurrency": SETTINGS.max_concurrency},
    **({} if SETTINGS.trace_model_routes else {"tracing": {"excluded_urls": UNTRACED_ROUTES}}),
)
@bentoml.asgi_app(_routes, path="/")
class SlotServe:
    """Object decomposition: one mask and one semantic code label per object."""

    if SETTINGS.batcher == "bentoml":
        inference = bentoml.depends(Inference)

    def __init__(self) -> None:
        self.bundle = BUNDLE
        self.metrics = metrics()
        self.batcher: Batcher | None = None
        if SETTINGS.batcher == "inprocess":
            self.runner = build_runner()
            self.batcher = Batcher(
                self.runner,
                SETTINGS.max_batch_size,
                SETTINGS.max_latency_ms,
                SETTINGS.batch_wait_ms,
            )
        self.pipeline = Pipeline(
            self.bundle.manifest,
            self._infer,
            Limits(SETTINGS.max_upload_bytes, SETTINGS.max_pixels, SETTINGS.min_side),
            max_images=SETTINGS.max_images,
            max_batch_size=SETTINGS.max_batch_size,
            metrics=self.metrics,
        )
        self.grpc_server = None
        global _front
        _front = self

    async def _infer(self, images: np.ndarray) -> list[dict]:
        if self.batcher is not None:
            return await self.batcher.submit(images)
        for attempt in range(1, RETRIES + 1):
            try:
                return await self.inference.to_async.call("infer", images)
            except ServiceUnavailable as err:
                raise Overloaded(
                    "the model is saturated (adaptive batcher over its latency budget); "
                    "retry shortly",
                    RETRY_AFTER_S,
                ) from err
            except TRANSIENT as err:
                if attempt == RETRIES:
                    raise
                log.warning("retrying inference after %s (attempt %d)", type(err).__name__, attempt)
        raise AssertionError("unreachable")

    async def describe_model(self) -> dict:
        if self.batcher is not None:
            backend = describe_runner(self.runner)
        else:
            backend = await self.inference.to_async.call("describe")
        return {
            "manifest": self.bundle.manifest.model_dump(mode="json"),
            "bundle_source": self.bundle.source,
            **backend,
            "batching": {
                "batcher": SETTINGS.batcher,
                "max_batch_size": SETTINGS.max_batch_size,
                "max_latency_ms": SETTINGS.max_latency_ms,
                "batch_wait_ms": SETTINGS.batch_wait_ms,
            },
            "grpc_port": SETTINGS.grpc_port or None,
            "http": {
                "event_loop": type(asyncio.get_running_loop()).__module__,
                "parser": "httptools" if importlib.util.find_spec("httptools") else "h11",
                "untraced_routes": [] if SETTINGS.trace_model_routes else UNTRACED_ROUTES,
            },
        }

    @bentoml.on_startup
    async def warm_up(self) -> None:
        """Calibrate the batcher before traffic arrives (blank images, results discarded).

        The in-process batcher learns its time per image from the first calls. BentoML's
        batcher sends its first ~11 requests one at a time while it fits its latency model;
        under a burst at start-up the queue behind them overruns max_latency_ms and is shed.
        """
        manifest = self.bundle.manifest
        blank = np.zeros((1, manifest.input.height, manifest.input.width, 3), dtype=np.uint8)
        started = time.perf_counter()
        try:
            for _ in range(12):
                await self._infer(blank)
            for size in (2, 3, 4):
                await asyncio.gather(*[self._infer(blank) for _ in range(size)])
        except Overloaded:
            log.warning("warm-up shed by the batcher: max_latency_ms is too low for this model")
        log.info("batcher warmed up in %.0f ms", 1e3 * (time.perf_counter() - started))

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        if not SETTINGS.grpc_port:
            return
        from service.rpc.server import SlotServeServicer, start_server

        servicer = SlotServeServicer(self.pipeline, self.describe_model, self.metrics)
        self.grpc_server = await start_server(
            servicer, SETTINGS.grpc_host, SETTINGS.grpc_port, SETTINGS.grpc_max_message_bytes
        )

    @bentoml.on_shutdown
    async def stop_grpc(self) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=5)
        if self.batcher is not None:
            self.batcher.close()

    async def _answer(self, endpoint: str, work: Callable[[], Awaitable], respond) -> Response:
        """Run one request's work and count its outcome: ok, a refusal (its 4xx / 503 with the
        one-line reason) or a bug (counted, then re-raised: BentoML answers 500 and logs it)."""
        try:
            result = await work()
        except RequestError as err:
            count_http(endpoint, err.reason)
            body = {"error": err.message, "reason": err.reason}
            headers = None
            if isinstance(err, Overloaded):
                headers = {"Retry-After": str(err.retry_after_s)}
            return JSONResponse(body, status_code=err.http_status, headers=headers)
        except Exception:
            count_http(endpoint, "internal")
            raise
        count_http(endpoint, "ok")
        return respond(result)

    @bentoml.api(route="/decompose")
    async def decompose(self, image: Path) -> Decomposition:
        """One image (multipart field `image`: PNG, JPEG or WebP, any size) -> its objects."""
        return await self._answer(
            "decompose",
            lambda: self.pipeline.decompose(image.read_bytes(), "http"),
            json_response,
        )

    @bentoml.api(route="/decompose_batch")
    async def decompose_batch(self, images: list[Path]) -> BatchDecomposition:
        """Several images (repeat the multipart field `images`) -> their objects, in order."""
        return await self._answer(
            "decompose_batch",
            lambda: self.pipeline.decompose_many([p.read_bytes() for p in images], "http"),
            lambda results: json_response({"results": results}),
        )

    @bentoml.api(route="/visualize")
    async def visualize(self, image: Path) -> Image.Image:
        """One image -> PNG overlay of its objects, coloured by semantic code and named."""
        return await self._answer(
            "visualize",
            lambda: self.pipeline.visualize(image.read_bytes(), "http"),
            lambda png: Response(png, media_type="image/png"),
        )


_per_image = SETTINGS.max_upload_bytes + 64 * 1024
SlotServe.add_asgi_middleware(
    RequestGuard,
    routes={
        "/decompose": UploadRoute("image", 1, _per_image),
        "/visualize": UploadRoute("image", 1, _per_image),
        "/decompose_batch": UploadRoute(
            "images", SETTINGS.max_images, SETTINGS.max_batch_request_bytes
        ),
    },
    max_body_bytes=_per_image,
    on_refuse=count_refusal,
    admit=admit,
    retry_after_s=RETRY_AFTER_S,
)
