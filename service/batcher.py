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

The time per image is the queue's drain rate. With one instance: while work is waiting, the
wall time from one model call's end to the next one's, per image, so the decoding and
answering that share the cores with the model are in it; when the model idles between calls,
the call's own time. With several: each call's own time per image divided by the instances
(they run side by side, and the gaps between one instance's calls are covered by the others';
end-to-end intervals would mix instances that idle with instances that run).

Batching: the model never waits for a batch to fill: when an instance is idle a request goes
at once (one user sees the bare model latency); while the instances run, arrivals queue and
leave together in the next call, so batches grow with the load by themselves (Triton's
dynamic batcher with no queue delay; `batch_wait_ms` adds one). A job still queued when its
deadline cannot be met by the call it would join is answered `Overloaded` instead of being
run late. The deadline is admission + 85% of the budget (`LATE_SHARE`): once a job is queued,
its reading and decoding are behind it and only answering is left, so the band between the
80% admission plans for and 85% absorbs the estimate's error instead of throwing away work
already done (a late refusal costs the decoding and the client's wait).

Instances: up to `instances` model calls run at once, each in its own worker thread (Triton's
`instance_group` count); the service gives each its own session and a share of the cores
(`model_instances`). A free instance takes its share of the work in hand (queued and running
images over the instances), so calls stay alike in size. On 2 CPU cores two single-threaded
calls side by side drain a queue faster than one call on both cores (docs/benchmarks.md
"Model instances").

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
LATE_SHARE = 0.85
"""A queued job is refused as late when its call would end past admission + this share of
the budget (the rest is for answering)."""
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
        instances: int = 1,
    ) -> None:
        if instances < 1:
            raise ValueError(f"instances must be >= 1, not {instances}")
        self.run = run
        self.instances = instances
        """Model calls that may run at once; `run` must be safe to call from that many
        threads."""
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000
        self.plan = PLANNED_SHARE * self.max_latency
        """The share of the budget the queue and the model may take; the rest is for reading,
        decoding and answering, which happen outside the queue."""
        self.late = LATE_SHARE * self.max_latency
        """Admission to the end of a job's model call, at most."""
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
        self.executor = ThreadPoolExecutor(max_workers=instances, thread_name_prefix="model")
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._calls: set[asyncio.Task] = set()  # model calls running

    def expected_wait(self, extra_images: int = 0) -> float:
        """Seconds until `extra_images` more would be served: the work ahead, and their own;
        with several instances, the waiting images leave in calls of their share each, and
        the last of those runs on one instance at its own pace (the instances' drain rate
        times their number) rather than the drain rate."""
        waiting = self.queued_images + self.reserved_images + extra_images
        work = waiting + self.running_images
        last_call = self._share(waiting)
        return (work + last_call * (self.instances - 1)) * self.per_image

    def _share(self, images: int) -> int:
        """One instance's share of `images` (rounded up), at most a full batch."""
        return min(self.max_batch_size, -(-images // self.instances))

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
        # a call takes at most its instance's share of the work in hand (queued and running),
        # so the instances' calls stay alike in size: a free instance that took everything
        # queued would leave its users waiting on one long call while the other instance
        # runs short ones (one instance: everything queued, up to max_batch_size)
        limit = max(1, self._share(self.queued_images + self.running_images))
        # the call ends about this long from now: its jobs' deadlines must allow for it (one
        # instance takes `instances` times the drain rate's time per image)
        call = min(self.queued_images, limit) * self.per_image * self.instances
        ends = now + call
        while self.queue and (
            size + len(self.queue[0].images) <= limit
            or (not jobs and len(self.queue[0].images) <= self.max_batch_size)
        ):
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
            while self.queue and len(self._calls) < self.instances:
                if self.batch_wait and self.queued_images < self.max_batch_size:
                    await asyncio.sleep(self.batch_wait)
                jobs = self._take()
                if not jobs:
                    continue
                call = loop.create_task(self._call(jobs))
                self._calls.add(call)
                call.add_done_callback(self._finished)

    def _finished(self, call: asyncio.Task) -> None:
        """A model call is over: its instance is free, so the queue may go on."""
        self._calls.discard(call)
        self._wake.set()

    async def _call(self, jobs: list[_Job]) -> None:
        """One model call on `jobs` in a worker thread; answers each job's future."""
        batch = np.concatenate([j.images for j in jobs])
        self.running_images += len(batch)
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self.executor, self.run, batch
            )
        except Exception as err:  # the model failed: every waiting caller hears it
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(err)
            return
        finally:
            self.running_images -= len(batch)
        ended = time.perf_counter()
        if self.instances > 1:
            # the call's own time, shared among the instances that run side by side (the gaps
            # between one instance's calls are covered by the others')
            seconds = (ended - started) / self.instances
        else:
            # backlogged: the drain rate (end to end of calls); else the call's own time
            seconds = ended - (self._last_end if self._last_end is not None else started)
            self._last_end = ended if self.queue else None
        # a ratio of sums, so large calls (what a long queue is drained by) weigh by their
        # images, not one small call's per-image cost
        self._seconds = 0.8 * self._seconds + seconds
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
        for call in list(self._calls):
            call.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)
