"""In-process adaptive batching, and the one place that decides to shed.

    admit(n) --> [room within the latency budget?] --> reservation (or Overloaded: 503)
    submit(images) --> queue --> [model idle?] --> one call with everything queued
                                  (up to max_batch_size images), run in a worker thread

Admission: a request is let in when the work ahead of it (images queued, running, and
reserved by requests admitted but not yet queued) times the measured model time per image
fits the latency budget, `max_latency_ms`; otherwise it is refused at once with `Overloaded`
(503 / UNAVAILABLE, with Retry-After). The HTTP request guard asks before it reads a body and
the gRPC servicer before it decodes, so a refusal costs almost nothing; a request admitted
that way carries its reservation (a context variable) into `submit`, which does not ask
again. A request that was not admitted ahead is admitted by `submit` itself.

Batching: the model never waits for a batch to fill: when it is idle a request goes at once
(one user sees the bare model latency); while it runs, arrivals queue and leave together in
the next call, so batches grow with the load by themselves (Triton's dynamic batcher with no
queue delay; `batch_wait_ms` adds one). A job still queued when its deadline (admission +
budget) has passed is answered `Overloaded` instead of being run late.

HTTP and gRPC requests of a worker process go through the same `Batcher`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar, Token
from dataclasses import dataclass

import numpy as np

from service.errors import Overloaded, retry_after_s

_admitted: ContextVar[Reservation | None] = ContextVar("slotserve_admitted", default=None)


@dataclass
class _Job:
    images: np.ndarray
    future: asyncio.Future
    deadline: float


class Reservation:
    """Room for `images` in the batcher's queue, held from admission until the request's
    images are queued (or the request ends). Use as a context manager around the request."""

    def __init__(self, batcher: Batcher, images: int, deadline: float) -> None:
        self.batcher, self.images, self.deadline = batcher, images, deadline
        self._token: Token | None = None

    def take(self) -> int:
        """Hand the reserved images over to a queued job (once)."""
        images, self.images = self.images, 0
        self.batcher.reserved_images -= images
        return images

    def __enter__(self) -> Reservation:
        self._token = _admitted.set(self)
        return self

    def __exit__(self, *exc) -> None:
        self.take()
        if self._token is not None:
            _admitted.reset(self._token)


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
        self.retry_after_s = retry_after_s(self.max_latency)
        self.queue: deque[_Job] = deque()
        self.queued_images = 0
        self.running_images = 0
        self.reserved_images = 0
        self.per_image = 0.0  # EWMA of model seconds per image (0 until the first call)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def expected_wait(self, extra_images: int = 0) -> float:
        """Seconds until `extra_images` more would be served: the work ahead, and their own."""
        ahead = self.queued_images + self.running_images + self.reserved_images
        return (ahead + extra_images) * self.per_image

    def _refuse_over_budget(self, images: int) -> None:
        wait = self.expected_wait(images)
        if wait > self.max_latency:
            raise Overloaded(
                f"the model is saturated: the expected wait of {1000 * wait:.0f} ms is over "
                f"the {1000 * self.max_latency:.0f} ms budget; retry shortly",
                self.retry_after_s,
            )

    def admit(self, images: int = 1) -> Reservation:
        """Let a request of `images` in, or raise `Overloaded` when the work ahead of it
        would take it past the latency budget. Enter the reservation around the request."""
        self._refuse_over_budget(images)
        self.reserved_images += images
        return Reservation(self, images, time.perf_counter() + self.max_latency)

    def overloaded(self, message: str) -> Overloaded:
        return Overloaded(message, self.retry_after_s)

    async def submit(self, images: np.ndarray) -> list[dict]:
        """uint8 (N, H, W, 3) with N <= max_batch_size -> one result dict per image."""
        if len(images) > self.max_batch_size:
            raise ValueError(f"{len(images)} images > max_batch_size {self.max_batch_size}")
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._serve())
        reservation = _admitted.get()
        if reservation is not None and reservation.images:
            extra = len(images) - reservation.take()
            if extra > 0:  # a batch request that carried more images than it was admitted for
                self._refuse_over_budget(extra)
            deadline = reservation.deadline
        else:
            self._refuse_over_budget(len(images))
            deadline = time.perf_counter() + self.max_latency
        job = _Job(images, asyncio.get_running_loop().create_future(), deadline)
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
            if now > job.deadline:
                job.future.set_exception(
                    self.overloaded("waited past the latency budget in the queue; retry shortly")
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
