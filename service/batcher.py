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
LATE_SHARE = 0.9
"""Admission plans for PLANNED_SHARE of the budget; a job is refused from the queue only when
its call would end past LATE_SHARE of it (the share between absorbs the estimate's error:
the images ahead leave in whole batches, not one by one), leaving the rest for answering."""
PIPELINED_CALLS = 2
"""Model calls handed to the model's thread at once: the one running and, when a full batch
waits, the next, which then starts the moment the first ends instead of after the event loop
has answered the first (under load the event loop is busy, and the model would idle)."""
_admitted: ContextVar[Reservation | None] = ContextVar("slotserve_admitted", default=None)


class _Timed:
    """`run(batch)` in the model's thread, remembering when it started and ended there."""

    def __init__(self, run: Callable[[np.ndarray], list[dict]], images: int) -> None:
        self.run, self.images = run, images
        self.started: float | None = None
        self.ended = 0.0

    def __call__(self, batch: np.ndarray) -> list[dict]:
        self.started = time.perf_counter()
        try:
            return self.run(batch)
        finally:
            self.ended = time.perf_counter()

    def remaining(self, per_image: float, now: float) -> float:
        """Seconds of this call still to run, by the time per image (all of it if it waits
        behind another call)."""
        own = self.images * per_image
        return own if self.started is None else max(0.0, own - (now - self.started))


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
        self.late = LATE_SHARE * self.max_latency
        """A job queued for longer than this past its admission, by the time its call would
        end, is refused instead of run: it would not be answered within the budget."""
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
        self._calls: set[asyncio.Task] = set()  # handed to the model's thread, not yet answered
        self._in_model: list[_Timed] = []  # their model calls, running or waiting, in order
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def in_model(self, now: float) -> float:
        """Seconds until the calls handed to the model's thread have all ended."""
        return sum(call.remaining(self.per_image, now) for call in self._in_model)

    def expected_wait(self, extra_images: int = 0) -> float:
        """Seconds until `extra_images` more would be served: the work ahead (what is left of
        the model's calls, then the images queued and reserved), and their own."""
        ahead = self.queued_images + self.reserved_images + extra_images
        return self.in_model(time.perf_counter()) + ahead * self.per_image

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
        return Reservation(self, images, time.perf_counter() + self.late)

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
            deadline = time.perf_counter() + self.late
        job = _Job(images, asyncio.get_running_loop().create_future(), deadline)
        self.queue.append(job)
        self.queued_images += len(images)
        self._wake.set()
        return await job.future

    def _take(self) -> list[_Job]:
        jobs, size, now = [], 0, time.perf_counter()
        # the call ends about this long from now (after any call already handed to the
        # model): its jobs' deadlines must allow for it
        batch = min(self.queued_images, self.max_batch_size)
        ends = now + self.in_model(now) + batch * self.per_image
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

    def _backlogged(self) -> bool:
        """A call may be handed to the model's thread while another runs: only with a full
        batch waiting and a known time per image (below that, arrivals had better join the
        next batch while the model runs, and deadlines cannot be checked)."""
        return self.queued_images >= self.max_batch_size and self.per_image > 0

    async def _serve(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.queue:
                if self._calls and (len(self._calls) >= PIPELINED_CALLS or not self._backlogged()):
                    break  # a call ending wakes this loop again
                if self.batch_wait and not self._calls and self.queued_images < self.max_batch_size:
                    await asyncio.sleep(self.batch_wait)
                jobs = self._take()
                if not jobs:
                    continue
                call = asyncio.get_running_loop().create_task(self._call(jobs))
                self._calls.add(call)
                call.add_done_callback(self._call_ended)

    def _call_ended(self, call: asyncio.Task) -> None:
        self._calls.discard(call)
        self._wake.set()

    async def _call(self, jobs: list[_Job]) -> None:
        """Run one batch in the model's thread and answer its jobs."""
        batch = np.concatenate([j.images for j in jobs])
        self.running_images += len(batch)
        submitted = time.perf_counter()
        timed = _Timed(self.run, len(batch))
        self._in_model.append(timed)
        try:
            results = await asyncio.get_running_loop().run_in_executor(self.executor, timed, batch)
        except Exception as err:  # the model failed: every waiting caller hears it
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
            self._last_end = None
            return
        finally:
            self.running_images -= len(batch)
            self._in_model.remove(timed)
        # backlogged (work waiting when the last call ended, or this call already handed
        # over): the drain rate, end to end of calls; else from this call's submission
        since = self._last_end if self._last_end is not None else submitted
        self._last_end = (
            timed.ended if (self.queue or self._calls - {asyncio.current_task()}) else None
        )
        # a ratio of sums, so large calls (what a long queue is drained by) weigh by their
        # images, not one small call's per-image cost
        self._seconds = 0.8 * self._seconds + (timed.ended - since)
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
