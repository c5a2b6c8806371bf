"""The BentoML service: `SlotServe`, HTTP and gRPC over one in-process batcher.

    client --HTTP--> admission gate, then guard (service.middleware): limits, shape --+
    client --gRPC--> servicer (service.rpc.server), admission -------------------------+
        --> Pipeline (service.pipeline): decode, resize, batched inference, masks -> objects
        --> Batcher (service.batcher): continuous batching; the one owner of shedding

The API methods are async, so every request in flight reaches the batcher at once. gRPC runs
on the worker's event loop and calls the same pipeline, so HTTP and gRPC requests land in the
same model calls. Other roles live in their own modules: the start-up check of the bundle
(`service.bundle`), the model call (`service.runner`), HTTP answers with their status and
`Retry-After` (`service.responses`), the admission gate and the request guard
(`service.middleware`).
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from pathlib import Path

import bentoml
import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service import middleware, responses
from service.batcher import Batcher
from service.bundle import check_bundle_or_exit, resolve_bundle
from service.errors import Overloaded, all_reasons
from service.metrics import ServiceMetrics
from service.pipeline import Pipeline
from service.processing import Limits
from service.responses import HTTP_ENDPOINTS, UNTRACED_ROUTES
from service.runner import build_runner, describe_runner
from service.schemas import BatchDecomposition, Decomposition
from service.settings import get_settings

log = logging.getLogger("slotserve")
SETTINGS = get_settings()
"""Read when the module loads: BentoML takes workers and timeouts from the decorator."""


async def model_route(request: Request) -> JSONResponse:
    front = bentoml.get_current_service()
    return JSONResponse(await front.describe_model())


_routes = Starlette(routes=[Route("/model", model_route, methods=["GET"])])


@bentoml.service(
    name="slotserve",
    workers=SETTINGS.workers,
    traffic={"timeout": SETTINGS.timeout_s},
    **({} if SETTINGS.trace_model_routes else {"tracing": {"excluded_urls": UNTRACED_ROUTES}}),
)
@bentoml.asgi_app(_routes, path="/")
class SlotServe:
    """Object decomposition: one mask and one semantic code label per object."""

    @bentoml.on_deployment
    def check_bundle() -> None:
        """Once, in `bentoml serve`'s own process before any worker starts: a bad bundle stops
        it with exit status 1 and one line, instead of crash-looping workers."""
        check_bundle_or_exit(get_settings())

    def __init__(self) -> None:
        settings = get_settings()
        self.bundle = resolve_bundle(settings)
        self.settings = settings.for_bundle(self.bundle.manifest)
        self.metrics = ServiceMetrics()
        self.metrics.prime(all_reasons(), responses.ENDPOINTS)
        self.runner = build_runner(self.bundle, self.settings, self.metrics)
        self.batcher = Batcher(
            self.runner,
            self.settings.max_batch_size,
            self.settings.max_latency_ms,
            self.settings.batch_wait_ms,
            self.settings.shed_hold,
            instances=self.runner.instances,
        )
        self.pipeline = Pipeline(
            self.bundle.manifest,
            self.batcher.submit,
            Limits(
                self.settings.max_upload_bytes, self.settings.max_pixels, self.settings.min_side
            ),
            max_images=self.settings.max_images,
            max_batch_size=self.settings.max_batch_size,
            metrics=self.metrics,
        )
        self.grpc_server = None

    async def describe_model(self) -> dict:
        return {
            "manifest": self.bundle.manifest.model_dump(mode="json"),
            "bundle_source": self.bundle.source,
            **describe_runner(self.runner),
            "batching": {
                "max_batch_size": self.settings.max_batch_size,
                "max_latency_ms": self.settings.max_latency_ms,
                "batch_wait_ms": self.settings.batch_wait_ms,
                "model_instances": self.batcher.instances,
            },
            "grpc_port": self.settings.grpc_port or None,
            "http": {
                "event_loop": type(asyncio.get_running_loop()).__module__,
                "parser": "httptools" if importlib.util.find_spec("httptools") else "h11",
                "untraced_routes": [] if self.settings.trace_model_routes else UNTRACED_ROUTES,
            },
        }

    @bentoml.on_startup
    async def warm_up(self) -> None:
        """Calibrate the batcher's time per image before traffic arrives (blank images,
        results discarded): until it has one, admission cannot tell what fits the budget."""
        manifest = self.bundle.manifest
        blank = np.zeros((1, manifest.input.height, manifest.input.width, 3), dtype=np.uint8)
        started = time.perf_counter()
        try:
            for _ in range(4):
                await self.batcher.submit(blank)
            for size in (2, 3, 4):
                await asyncio.gather(*[self.batcher.submit(blank) for _ in range(size)])
        except Overloaded:
            log.warning("warm-up shed by the batcher: max_latency_ms is too low for this model")
        log.info("batcher warmed up in %.0f ms", 1e3 * (time.perf_counter() - started))

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        if not self.settings.grpc_port:
            return
        from service.rpc.server import SlotServeServicer, start_server

        servicer = SlotServeServicer(
            self.pipeline, self.describe_model, self.metrics, admit=self.batcher.admit
        )
        self.grpc_server = await start_server(
            servicer,
            self.settings.grpc_host,
            self.settings.grpc_port,
            self.settings.grpc_max_message_bytes,
        )

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=5)
        self.batcher.close()

    @bentoml.api(route="/decompose")
    async def decompose(self, image: Path) -> Decomposition:
        """One image (multipart field `image`: PNG, JPEG or WebP, any size) -> its objects."""
        return await responses.answer(
            self.metrics,
            "decompose",
            lambda: self.pipeline.decompose(image.read_bytes(), "http"),
            responses.json_response,
        )

    @bentoml.api(route="/decompose_batch")
    async def decompose_batch(self, images: list[Path]) -> BatchDecomposition:
        """Several images (repeat the multipart field `images`) -> their objects, in order."""
        return await responses.answer(
            self.metrics,
            "decompose_batch",
            lambda: self.pipeline.decompose_many([p.read_bytes() for p in images], "http"),
            lambda results: responses.json_response({"results": results}),
        )

    @bentoml.api(route="/visualize")
    async def visualize(self, image: Path) -> Image.Image:
        """One image -> PNG overlay of its objects, coloured by semantic code and named."""
        return await responses.answer(
            self.metrics,
            "visualize",
            lambda: self.pipeline.visualize(image.read_bytes(), "http"),
            lambda png: Response(png, media_type="image/png"),
        )


middleware.install(SlotServe, SETTINGS, HTTP_ENDPOINTS)
