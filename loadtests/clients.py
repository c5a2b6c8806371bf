"""Load-generating clients over HTTP (aiohttp) and gRPC (grpc.aio), closed and open loop,
with the two ways clients meet a refusal (503 / UNAVAILABLE):

- `at-once`: send again at once (a closed-loop user's next request, or the same one again);
- `retry-after`: wait what the server asked (`Retry-After` seconds over HTTP,
  `grpc-retry-pushback-ms` over gRPC), then send again.

Both run in this process, on the same cores as a local server (the figures say so).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from loadtests.images import multipart
from loadtests.server import Server

RETRY_MODES = ("at-once", "retry-after")


@dataclass
class Outcome:
    ok: bool
    shed: bool
    retry_after_s: float = 0.0


@dataclass
class LoadResult:
    latencies: list[float] = field(default_factory=list)
    """Seconds of each answered attempt (send to answer)."""
    end_to_end: list[float] = field(default_factory=list)
    """Seconds from a request's first send to its answer, refusals and waits included."""
    shed: int = 0
    errors: int = 0
    given_up: int = 0
    """Open loop: requests still refused when the client's patience ran out."""
    elapsed: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)
    """perf_counter() start and end of the measured window (arrivals / users running)."""
    answered_at: list[float] = field(default_factory=list)
    """perf_counter() of each answer: goodput counts those inside the measured window."""

    @property
    def goodput(self) -> float:
        """Answered images per second inside the measured window."""
        start, end = self.window
        return sum(start <= t <= end for t in self.answered_at) / (end - start)

    @property
    def answered(self) -> int:
        return len(self.latencies)


class Caller:
    """One protocol's request to /decompose (or Decompose), returning an `Outcome`."""

    def __init__(self, server: Server, protocol: str, images: list[bytes], connections: int):
        self.server, self.protocol, self.images = server, protocol, images
        self.connections = connections
        self.uploads = {id(d): multipart("image", [("s.png", d, "image/png")]) for d in images}

    async def __aenter__(self) -> Caller:
        import aiohttp
        import grpc

        from service.rpc.slotserve.v1 import slotserve_pb2 as pb
        from service.rpc.slotserve.v1 import slotserve_pb2_grpc as pb_grpc

        self.pb, self.grpc = pb, grpc
        connector = aiohttp.TCPConnector(limit=self.connections)
        self.session = aiohttp.ClientSession(self.server.url, connector=connector)
        self.channel = grpc.aio.insecure_channel(self.server.grpc_target)
        self.stub = pb_grpc.SlotServeStub(self.channel)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.session.close()
        await self.channel.close()

    async def __call__(self, data: bytes) -> Outcome:
        if self.protocol == "http":
            body, ctype = self.uploads[id(data)]
            headers = {"Content-Type": ctype}
            async with self.session.post("/decompose", data=body, headers=headers) as r:
                await r.read()
                wait = float(r.headers.get("Retry-After", 0) or 0)
                return Outcome(r.status == 200, r.status == 503, wait)
        try:
            await self.stub.Decompose(self.pb.DecomposeRequest(image=data))
            return Outcome(True, False)
        except self.grpc.aio.AioRpcError as err:
            shed = err.code() == self.grpc.StatusCode.UNAVAILABLE
            pushback = dict(err.trailing_metadata() or ()).get("grpc-retry-pushback-ms", 0)
            return Outcome(False, shed, int(pushback) / 1000)


async def _until_answered(call: Caller, data: bytes, retry: str, result: LoadResult, stop: float):
    """Send `data` until it is answered (or `stop` passes); returns True when answered."""
    first = time.perf_counter()
    while True:
        t = time.perf_counter()
        outcome = await call(data)
        now = time.perf_counter()
        if outcome.ok:
            result.latencies.append(now - t)
            result.end_to_end.append(now - first)
            result.answered_at.append(now)
            return True
        if not outcome.shed:
            result.errors += 1
            return False
        result.shed += 1
        if retry == "retry-after" and outcome.retry_after_s:
            await asyncio.sleep(min(outcome.retry_after_s, max(0.0, stop - now)))
        if time.perf_counter() >= stop:
            return False


async def closed_loop(
    server: Server,
    protocol: str,
    users: int,
    seconds: float,
    images: list[bytes],
    retry: str = "at-once",
) -> LoadResult:
    """`users` clients, each sending its next request as soon as the last one is answered;
    a refused request is sent again at once or after Retry-After (`retry`)."""
    result = LoadResult()
    async with Caller(server, protocol, images, users) as call:
        deadline = time.perf_counter() + seconds

        async def user(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                await _until_answered(call, images[i % len(images)], retry, result, deadline)
                i += users

        result.window = (time.perf_counter(), deadline)
        await asyncio.gather(*[user(k) for k in range(users)])
        result.elapsed = time.perf_counter() - result.window[0]
    return result


async def open_loop(
    server: Server,
    protocol: str,
    rate: float,
    seconds: float,
    images: list[bytes],
    retry: str = "at-once",
    patience: float = 4.0,
    max_in_flight: int = 2048,
) -> LoadResult:
    """Requests arrive at `rate` per second whatever the answers (Poisson arrivals); each is
    sent again when refused (`retry`) until answered or `patience` seconds have passed."""
    import random

    result = LoadResult()
    rng = random.Random(0)
    async with Caller(server, protocol, images, max_in_flight) as call:
        tasks: set[asyncio.Task] = set()

        async def request(data: bytes) -> None:
            stop = time.perf_counter() + patience
            if not await _until_answered(call, data, retry, result, stop):
                result.given_up += 1

        started = time.perf_counter()
        end, i = started + seconds, 0
        result.window = (started, end)
        next_at = started
        while next_at < end:
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if len(tasks) < max_in_flight:
                task = asyncio.create_task(request(images[i % len(images)]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            else:
                result.given_up += 1  # the client itself is saturated: counted, not sent
            i += 1
            next_at += rng.expovariate(rate)
        if tasks:
            await asyncio.gather(*tasks)
        result.elapsed = time.perf_counter() - started
    return result
