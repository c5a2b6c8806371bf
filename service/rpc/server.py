"""The gRPC server that runs inside each front worker, on the worker's own event loop.

BentoML 1.4 cannot serve gRPC for new-style services, so the front service starts this
server from a startup hook. Its servicer calls the same `Pipeline` as the HTTP routes, so
gRPC requests share the adaptive batcher and the metrics. With several front workers, each
binds the same port with SO_REUSEPORT and the kernel spreads connections across them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager, nullcontext

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.errors import Overloaded, RequestError
from service.pipeline import Pipeline
from service.rpc import reflection
from service.rpc.slotserve.v1 import slotserve_pb2 as pb
from service.rpc.slotserve.v1 import slotserve_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["SlotServe"].full_name
STREAM_CONCURRENCY = 64
"""Images of one stream in flight at once: enough to fill batches, bounded for memory."""


def to_proto(result: dict) -> pb.Decomposition:
    objects = [
        pb.DetectedObject(
            slot=o["slot"],
            code=o["code"],
            label=o["label"],
            label_score=o["label_score"],
            code_distance=o["code_distance"],
            area=o["area"],
            bbox=o["bbox"],
            mask=pb.Rle(size=o["mask"]["size"], counts=o["mask"]["counts"]),
        )
        for o in result["objects"]
    ]
    return pb.Decomposition(
        width=result["width"],
        height=result["height"],
        objects=objects,
        model=pb.ModelRef(**result["model"]),
        timings_ms=pb.Timings(**result["timings_ms"]),
        model_call=pb.ModelCall(**result["model_call"]),
    )


class SlotServeServicer(pb_grpc.SlotServeServicer):
    def __init__(
        self,
        pipeline: Pipeline,
        describe: Callable,
        metrics=None,
        admit: Callable[[int], AbstractContextManager] | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.describe = describe
        self.metrics = metrics
        self.admit = admit or (lambda images: nullcontext())
        """The batcher's admission, asked before an image is decoded (raises `Overloaded`)."""

    def _count(self, endpoint: str, outcome: str, reason: str | None = None) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels("grpc", endpoint, outcome).inc()
            if reason:
                self.metrics.errors.labels(reason, "grpc").inc()

    async def _refuse(self, context, endpoint: str, err: RequestError):
        self._count(endpoint, err.reason, err.reason)
        trailers = ()
        if isinstance(err, Overloaded):  # gRPC's retry pushback: clients with a retry policy wait
            await asyncio.sleep(err.hold_s)
            trailers = (("grpc-retry-pushback-ms", str(1000 * err.retry_after_s)),)
        await context.abort(getattr(grpc.StatusCode, err.grpc_code), err.message, trailers)

    async def _internal(self, context, endpoint: str, err: Exception):
        log.exception("gRPC %s failed", endpoint)
        self._count(endpoint, "internal", "internal")
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error ({type(err).__name__})")

    async def Decompose(self, request, context):
        try:
            with self.admit(1):
                result = await self.pipeline.decompose(request.image, "grpc")
        except RequestError as err:
            await self._refuse(context, "Decompose", err)
        except Exception as err:
            await self._internal(context, "Decompose", err)
        self._count("Decompose", "ok")
        return to_proto(result)

    async def DecomposeBatch(self, request, context):
        try:
            with self.admit(1):
                results = await self.pipeline.decompose_many(list(request.images), "grpc")
        except RequestError as err:
            await self._refuse(context, "DecomposeBatch", err)
        except Exception as err:
            await self._internal(context, "DecomposeBatch", err)
        self._count("DecomposeBatch", "ok")
        return pb.DecomposeBatchResponse(results=[to_proto(r) for r in results])

    async def DecomposeStream(
        self, request_iterator: AsyncIterator, context
    ) -> AsyncIterator[pb.StreamResponse]:
        queue: asyncio.Queue = asyncio.Queue()
        slots = asyncio.Semaphore(STREAM_CONCURRENCY)

        async def one(item) -> None:
            try:
                with self.admit(1):
                    result = await self.pipeline.decompose(item.image, "grpc")
                self._count("DecomposeStream", "ok")
                await queue.put(pb.StreamResponse(id=item.id, result=to_proto(result)))
            except RequestError as err:
                self._count("DecomposeStream", err.reason, err.reason)
                error = pb.Error(code=err.grpc_code, reason=err.reason, message=err.message)
                await queue.put(pb.StreamResponse(id=item.id, error=error))
            except Exception as err:
                log.exception("gRPC DecomposeStream item %s failed", item.id)
                self._count("DecomposeStream", "internal", "internal")
                message = f"internal error ({type(err).__name__})"
                error = pb.Error(code="INTERNAL", reason="internal", message=message)
                await queue.put(pb.StreamResponse(id=item.id, error=error))
            finally:
                slots.release()

        async def reader() -> None:
            tasks = set()
            try:
                async for item in request_iterator:
                    await slots.acquire()
                    task = asyncio.create_task(one(item))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                await queue.put(None)  # the stream always ends, whatever happened above

        feeder = asyncio.create_task(reader())
        try:
            while (response := await queue.get()) is not None:
                yield response
            await feeder
        finally:
            feeder.cancel()

    async def GetModel(self, request, context):
        info = await self.describe()
        return pb.ModelInfo(
            manifest_json=json.dumps(info["manifest"]),
            backend=info["backend"]["backend"],
            provider=info["backend"]["provider"],
            variant=info["backend"]["variant"],
        )


async def start_server(
    servicer: SlotServeServicer, host: str, port: int, max_message_bytes: int
) -> grpc.aio.Server:
    """Start serving (health SERVING, reflection v1 and v1alpha on); returns the running server."""
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
    )
    pb_grpc.add_SlotServeServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable(server, (SERVICE_NAME, health.SERVICE_NAME))
    address = f"{host}:{port}"
    if server.add_insecure_port(address) == 0:
        raise RuntimeError(f"gRPC cannot bind {address}")
    started = time.perf_counter()
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "gRPC serving %s on %s (%.0f ms)",
        SERVICE_NAME,
        address,
        1e3 * (time.perf_counter() - started),
    )
    return server
