"""Load-generating clients over HTTP (aiohttp) and gRPC (grpc.aio), closed and open loop,
with the two ways clients meet a refusal (503 / UNAVAILABLE):

- `at-once`: send again at once (a closed-loop user's next request, or the same one again);
- `retry-after`: wait what the server asked (`Retry-After` seconds over HTTP,
  `grpc-retry-pushback-ms` over gRPC), then send again.

Both run in this process, on the same cores as a local server (the figures say so), so the
clients are kept lean: over HTTP, keep-alive connections that write a request built once per
image and parse the answer with httptools (the C parser uvicorn serves with), instead of
aiohttp's session machinery. Under a 4x open-loop overload on 2 cores the clients make 500+
requests a second, and aiohttp's clients took 0.22-0.29 cores of them from the service
(docs/benchmarks.md "Goodput under overload").
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

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


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: writes a whole request, parses the answer's status,
    `Retry-After` and keep-alive with httptools, and skips its body."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future | None = None
        self.retry_after = 0.0

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        import httptools

        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"unparsable answer: {err}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionError("the server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            self.retry_after = float(value or 0)

    def on_message_complete(self) -> None:
        if self.answer is not None and not self.answer.done():
            status = self.parser.get_status_code()
            self.answer.set_result((status, self.retry_after, self.parser.should_keep_alive()))

    def _fail(self, err: Exception) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(err)

    @property
    def open(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    async def exchange(self, request: bytes) -> tuple[int, float, bool]:
        """Send `request`; (status, Retry-After seconds, keep-alive) of its answer."""
        self.retry_after = 0.0
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return await self.answer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Caller:
    """One protocol's request to /decompose (or Decompose), returning an `Outcome`. Over
    HTTP, up to `connections` keep-alive connections, reused by whichever request is next; a
    connection that fails counts as an error (`Outcome(False, False)`), not a crash."""

    def __init__(self, server: Server, protocol: str, images: list[bytes], connections: int):
        self.server, self.protocol, self.images = server, protocol, images
        url = urlsplit(server.url)
        self.host, self.port = url.hostname, url.port or 80
        self.requests = {id(d): self._request(url.netloc, d) for d in images}
        self.slots = asyncio.Semaphore(connections)
        self.idle: list[_Connection] = []

    @staticmethod
    def _request(netloc: str, data: bytes) -> bytes:
        body, ctype = multipart("image", [("s.png", data, "image/png")])
        head = (
            f"POST /decompose HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    async def __aenter__(self) -> Caller:
        import grpc

        from service.rpc.slotserve.v1 import slotserve_pb2 as pb
        from service.rpc.slotserve.v1 import slotserve_pb2_grpc as pb_grpc

        self.pb, self.grpc = pb, grpc
        self.channel = grpc.aio.insecure_channel(self.server.grpc_target)
        self.stub = pb_grpc.SlotServeStub(self.channel)
        return self

    async def __aexit__(self, *exc) -> None:
        for conn in self.idle:
            conn.close()
        self.idle.clear()
        await self.channel.close()

    async def _post(self, request: bytes) -> tuple[int, float]:
        async with self.slots:
            while self.idle and not self.idle[-1].open:
                self.idle.pop()
            if self.idle:
                conn = self.idle.pop()
            else:
                loop = asyncio.get_running_loop()
                _, conn = await loop.create_connection(_Connection, self.host, self.port)
            try:
                status, wait, keep_alive = await conn.exchange(request)
            except BaseException:
                conn.close()
                raise
            if keep_alive and conn.open:
                self.idle.append(conn)
            else:
                conn.close()
            return status, wait

    async def __call__(self, data: bytes) -> Outcome:
        if self.protocol == "http":
            try:
                status, wait = await self._post(self.requests[id(data)])
            except OSError:  # refused, reset or closed: an error, as the server's 5xx are
                return Outcome(False, False)
            return Outcome(status == 200, status == 503, wait)
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
