"""In-process adaptive batching, and the one place that decides to shed.

    admit(n) --> [room within the latency budget?] --> reservation (or Overloaded: 503)
    submit(images) --> queue --> [model idle?] --> one call with everything queued
                                  (up to max_batch_size images), run in a worker thread

Admission: a request is let in when the work ahead of it (images queued, running, and
reserved by requests admitted but not yet queued) times the measured time per image fits
80% of the latency budget, `max_latency_ms` (the rest is for reading, decoding and answering,
outside the queue, and for the estimate's error on a busy machine); otherwise it is refused
at once with `Overloaded` (503 / UNAVAILABLE, with Retry-After). The HTTP request guard
asks before it reads a body and the gRPC servicer before it decodes, so a refusal costs
almost nothing; a request admitted that way carries its reservation (a context variable)
into `submit`, which does not ask again. A request that was not admitted ahead is admitted
by `submit` itself.

Refusals are held `shed_hold_ms` before they are answered (`Overloaded.hold_s`; the guard and
the servicer wait, costing an open connection and no CPU): a client that resends at once then
sends at most one request per hold instead of as fast as refusals come back, which under a
retry storm took the cores from the model. Clients that honour Retry-After never notice.

The time per image is the queue's drain rate: while work is waiting, the wall time from one
model call's end to the next one's, per image, so the decoding and answering that share the
cores with the model are in it; when the model idles between calls, the call's own time.

Batching: the model never waits for a batch to fill: when it is idle a request goes at once
(one user sees the bare model latency); while it runs, arrivals queue and leave together in
the next call, so batches grow with the load by themselves (Triton's dynamic batcher with no
queue delay; `batch_wait_ms` adds one). A job still queued when its deadline (admission +
budget) cannot be met by the call it would join is answered `Overloaded` instead of being
run late.

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

PLANNED_SHARE = 0.8
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
        shed_hold_ms: float = 0.0,
    ) -> None:
        self.run = run
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self.plan = PLANNED_SHARE * self.max_latency
        """The share of the budget the queue and the model may take; the rest is for reading,
        decoding and answering, which happen outside the queue."""
        self.batch_wait = batch_wait_ms / 1000
        self.shed_hold = shed_hold_ms / 1000
        self.retry_after_s = retry_after_s(self.max_latency)
        self.queue: deque[_Job] = deque()
        self.queued_images = 0
        self.running_images = 0
        self.reserved_images = 0
        self.per_image = 0.0  # seconds per image drained, recent calls (0 until the first)
        self._seconds = self._images = 0.0  # their exponentially decayed sums
        self._last_end: float | None = None  # when the last call ended with work waiting
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def expected_wait(self, extra_images: int = 0) -> float:
        """Seconds until `extra_images` more would be served: the work ahead, and their own."""
        ahead = self.queued_images + self.running_images + self.reserved_images
        return (ahead + extra_images) * self.per_image

    def _refuse_over_budget(self, images: int) -> None:
        if not self.queued_images + self.running_images + self.reserved_images:
            return  # nothing ahead: refusing would not serve anyone sooner
        wait = self.expected_wait(images)
        if wait > self.plan:
            raise self.overloaded(
                f"the model is saturated: the expected wait of {1000 * wait:.0f} ms is over "
                f"the {1000 * self.plan:.0f} ms the queue may take of the "
                f"{1000 * self.max_latency:.0f} ms budget; retry shortly"
            )

    def admit(self, images: int = 1) -> Reservation:
        """Let a request of `images` in, or raise `Overloaded` when the work ahead of it
        would take it past the latency budget. Enter the reservation around the request."""
        self._refuse_over_budget(images)
        self.reserved_images += images
        return Reservation(self, images, time.perf_counter() + self.plan)

    def overloaded(self, message: str) -> Overloaded:
        return Overloaded(message, self.retry_after_s, self.shed_hold)

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
            deadline = time.perf_counter() + self.plan
        job = _Job(images, asyncio.get_running_loop().create_future(), deadline)
        self.queue.append(job)
        self.queued_images += len(images)
        self._wake.set()
        return await job.future

    def _take(self) -> list[_Job]:
        jobs, size, now = [], 0, time.perf_counter()
        # the call ends about this long from now: its jobs' deadlines must allow for it
        ends = now + min(self.queued_images, self.max_batch_size) * self.per_image
        while self.queue and size + len(self.queue[0].images) <= self.max_batch_size:
            job = self.queue.popleft()
            self.queued_images -= len(job.images)
            if job.future.cancelled():
                continue  # the client went away
            own = len(job.images) * self.per_image
            # late by the estimate: refused only when the job alone would have fitted (a
            # machine slower than the budget still answers what reaches an idle model)
            if now > job.deadline or (ends > job.deadline and own <= self.plan):
                job.future.set_exception(
                    Overloaded(  # not held: it has waited already
                        "the latency budget ran out in the queue; retry shortly",
                        self.retry_after_s,
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
                ended = time.perf_counter()
                # backlogged: the drain rate (end to end of calls); else the call's own time
                since = self._last_end if self._last_end is not None else started
                self._last_end = ended if self.queue else None
                # a ratio of sums, so large calls (what a long queue is drained by) weigh
                # by their images, not one small call's per-image cost
                self._seconds = 0.8 * self._seconds + (ended - since)
                self._images = 0.8 * self._images + len(batch)
                self.per_image = self._seconds / self._images
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
