"""In-process adaptive batching for the model: continuous batching with deadline shedding.

    submit(images) --> queue --> [model idle?] --> one call with everything queued
                                  (up to max_batch_size images), run in a worker thread

The model never waits for a batch to fill: when it is idle a request goes at once (one user
sees the bare model latency); while it runs, arrivals queue and leave together in the next
call, so batches grow with the load by themselves (Triton's dynamic batcher with no queue
delay; `batch_wait_ms` adds one). A request whose expected wait (queued images x the measured
time per image) is over `max_latency_ms` is refused at once with `Overloaded` (503 /
UNAVAILABLE) instead of joining a queue it cannot leave in time; so is one that has waited
past that budget by the time the model is free.

HTTP and gRPC requests of a worker process go through the same `Batcher`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from service.errors import Overloaded, retry_after_s


@dataclass
class _Job:
    images: np.ndarray
    future: asyncio.Future
    enqueued: float


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray], list[dict]],
        max_batch_size: int = 32,
        max_latency_ms: float = 2000,
        batch_wait_ms: float = 0.0,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self.batch_wait = batch_wait_ms / 1000
        self.queue: deque[_Job] = deque()
        self.queued_images = 0
        self.running_images = 0
        self.per_image = 0.0  # EWMA of model seconds per image (0 until the first call)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def expected_wait(self, extra_images: int = 0) -> float:
        return (self.queued_images + self.running_images + extra_images) * self.per_image

    async def submit(self, images: np.ndarray) -> list[dict]:
        """uint8 (N, H, W, 3) with N <= max_batch_size -> one result dict per image."""
        if len(images) > self.max_batch_size:
            raise ValueError(f"{len(images)} images > max_batch_size {self.max_batch_size}")
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._serve())
        if self.expected_wait(len(images)) > self.max_latency:
            raise Overloaded(
                f"the model is saturated: the expected wait of "
                f"{1000 * self.expected_wait(len(images)):.0f} ms is over the "
                f"{1000 * self.max_latency:.0f} ms budget; retry shortly",
                retry_after_s(self.max_latency),
            )
        job = _Job(images, asyncio.get_running_loop().create_future(), time.perf_counter())
        self.queue.append(job)
        self.queued_images += len(images)
        self._wake.set()
        return await job.future

    def _take(self) -> list[_Job]:
        jobs, size, now = [], 0, time.perf_counter()
        while self.queue and size + len(self.queue[0].images) <= self.max_batch_size:
            job = self.queue.popleft()
            self.queued_images -= len(job.images)
            if job.future.cancelled():
                continue  # the client went away
            if now - job.enqueued > self.max_latency:
                job.future.set_exception(
                    Overloaded(
                        "waited past the latency budget in the queue; retry shortly",
                        retry_after_s(self.max_latency),
                    )
                )
                continue
            jobs.append(job)
            size += len(job.images)
        return jobs

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                if self.batch_wait and self.queued_images < self.max_batch_size:
                    await asyncio.sleep(self.batch_wait)
                jobs = self._take()
                if not jobs:
                    continue
                batch = np.concatenate([j.images for j in jobs])
                self.running_images = len(batch)
                started = time.perf_counter()
                try:
                    results = await loop.run_in_executor(self.executor, self.run, batch)
                except Exception as err:  # the model failed: every waiting caller hears it
                    for job in jobs:
                        if not job.future.done():
                            job.future.set_exception(err)
                    continue
                finally:
                    self.running_images = 0
                seconds = (time.perf_counter() - started) / len(batch)
                self.per_image = (
                    seconds if not self.per_image else 0.8 * self.per_image + 0.2 * seconds
                )
                offset = 0
                for job in jobs:
                    n = len(job.images)
                    if not job.future.done():
                        job.future.set_result(results[offset : offset + n])
                    offset += n

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
