"""The request path shared by HTTP and gRPC: decode -> preprocess -> batched inference ->
postprocess, with timings and metrics. No BentoML here: `infer` is any coroutine that takes
uint8 (N, H, W, 3) images and returns one result dict per image (the BentoML service passes
its batching dependency; tests pass a local function).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio
import numpy as np
from PIL import Image

from runtime.contract import Manifest, served_labels
from runtime.resize import masks_to_labels, to_model_size
from service.errors import RequestError, TooManyImages
from service.processing import Limits, decode_image, describe_objects, render_overlay

InferFn = Callable[[np.ndarray], Awaitable[list[dict]]]
INLINE_DECODE_BYTES = 256 * 1024
"""Uploads up to this size decode on the event loop; larger ones in a worker thread."""


@dataclass
class Prepared:
    image: Image.Image
    pixels: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


class Pipeline:
    def __init__(
        self,
        manifest: Manifest,
        infer: InferFn,
        limits: Limits | None = None,
        max_images: int = 64,
        max_batch_size: int = 32,
        metrics=None,
    ) -> None:
        self.manifest = manifest
        self.code_labels = served_labels(manifest)
        self.infer = infer
        self.limits = limits or Limits()
        self.max_images = max_images
        self.max_batch_size = max_batch_size
        self.metrics = metrics
        self.model_ref = {"name": manifest.name, "version": manifest.version}

    # -- stages -----------------------------------------------------------------------------
    def _prepare_sync(self, data: bytes) -> Prepared:
        t0 = time.perf_counter()
        img = decode_image(data, self.limits)
        t1 = time.perf_counter()
        pixels = to_model_size(img, self.manifest.input.height, self.manifest.input.width)
        t2 = time.perf_counter()
        return Prepared(img, pixels, {"decode": t1 - t0, "preprocess": t2 - t1})

    async def prepare(self, data: bytes) -> Prepared:
        if len(data) <= INLINE_DECODE_BYTES:
            return self._prepare_sync(data)
        return await anyio.to_thread.run_sync(self._prepare_sync, data)

    async def _infer(self, prepared: Sequence[Prepared]) -> tuple[list[dict], float]:
        t0 = time.perf_counter()
        results: list[dict] = []
        for i in range(0, len(prepared), self.max_batch_size):
            chunk = prepared[i : i + self.max_batch_size]
            results.extend(await self.infer(np.stack([p.pixels for p in chunk])))
        return results, time.perf_counter() - t0

    def _finish(self, p: Prepared, out: dict, inference_s: float, protocol: str) -> dict:
        t0 = time.perf_counter()
        width, height = p.image.size
        labels = masks_to_labels(out["masks"], height, width)
        objects = describe_objects(labels, out["codes"], out["distances"], self.code_labels)
        post = time.perf_counter() - t0
        timings = {**p.timings, "inference": inference_s, "postprocess": post}
        timings["total"] = sum(timings.values())
        if self.metrics is not None:
            for stage, seconds in timings.items():
                self.metrics.stage_seconds.labels(stage, protocol).observe(seconds)
            self.metrics.images.labels(protocol).inc()
            self.metrics.objects.labels(protocol).inc(len(objects))
        return {
            "width": width,
            "height": height,
            "objects": objects,
            "model": self.model_ref,
            "timings_ms": {k: round(v * 1000, 3) for k, v in timings.items()},
            "model_call": {
                "id": out["call"],
                "images": out["images"],
                "compute_ms": round(out["compute_ms"], 3),
            },
            "_labels": labels,
        }

    # -- entry points -----------------------------------------------------------------------
    async def decompose(self, data: bytes, protocol: str = "http") -> dict:
        prepared = await self.prepare(data)
        (out,), inference_s = await self._infer([prepared])
        result = self._finish(prepared, out, inference_s, protocol)
        result.pop("_labels")
        return result

    async def decompose_many(self, items: Sequence[bytes], protocol: str = "http") -> list[dict]:
        if not items:
            raise TooManyImages("no images in the request; send at least one")
        if len(items) > self.max_images:
            raise TooManyImages(
                f"{len(items)} images in one request; the limit is {self.max_images}"
            )
        prepared = []
        for index, data in enumerate(items):
            try:
                prepared.append(await self.prepare(data))
            except RequestError as err:
                raise type(err)(f"image {index}: {err}") from err
        outs, inference_s = await self._infer(prepared)
        results = []
        for p, out in zip(prepared, outs, strict=True):
            result = self._finish(p, out, inference_s, protocol)
            result.pop("_labels")
            results.append(result)
        return results

    async def visualize(self, data: bytes, protocol: str = "http") -> bytes:
        prepared = await self.prepare(data)
        (out,), inference_s = await self._infer([prepared])
        result = self._finish(prepared, out, inference_s, protocol)
        return render_overlay(
            prepared.image, result["_labels"], result["objects"], self.manifest.codebook_size
        )
