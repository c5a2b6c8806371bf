"""The load-generating clients' two ways of meeting a refusal, against a scripted caller."""

from __future__ import annotations

import asyncio
import time

from loadtests import clients
from loadtests.clients import LoadResult, Outcome


class Scripted:
    """Answers with the outcomes given, in order, recording when each call came."""

    def __init__(self, *outcomes: Outcome) -> None:
        self.outcomes, self.calls = list(outcomes), []

    async def __call__(self, data: bytes) -> Outcome:
        self.calls.append(time.perf_counter())
        return self.outcomes.pop(0)


def run(retry: str, caller: Scripted) -> LoadResult:
    result = LoadResult()
    stop = time.perf_counter() + 10
    assert asyncio.run(clients._until_answered(caller, b"x", retry, result, stop))
    return result


def test_at_once_clients_resend_without_waiting():
    caller = Scripted(Outcome(False, True, 0.3), Outcome(False, True, 0.3), Outcome(True, False))
    result = run("at-once", caller)
    assert result.shed == 2 and result.answered == 1
    assert caller.calls[-1] - caller.calls[0] < 0.1


def test_retry_after_clients_wait_what_the_server_asks():
    caller = Scripted(Outcome(False, True, 0.3), Outcome(True, False))
    result = run("retry-after", caller)
    assert result.shed == 1 and result.answered == 1
    assert caller.calls[1] - caller.calls[0] >= 0.3
    assert result.end_to_end[0] >= 0.3 > result.latencies[0]


def test_an_error_is_not_retried():
    caller = Scripted(Outcome(False, False))
    result = LoadResult()
    stop = time.perf_counter() + 5
    ok = asyncio.run(clients._until_answered(caller, b"x", "at-once", result, stop))
    assert not ok and result.errors == 1 and len(caller.calls) == 1


def test_the_overload_report_names_what_held_and_what_did_not(tmp_path):
    """The report's verdict line counts overload points against the goal and the budget."""
    from loadtests import overload

    def point(kind, retry, goodput, p99, shed=0):
        return {
            "kind": kind, "protocol": "http", "retry": retry, "load": 10, "goodput": goodput,
            "answered": 1, "p50_ms": 1.0, "p99_ms": p99, "end_to_end_p99_ms": p99,
            "shed": shed, "service_shed": shed, "errors": 0, "given_up": 0,
            "of_saturation": goodput / 10, "of_first_saturation": goodput / 10,
            "p99_within_budget": p99 <= 2000, "server_cores": 1.9, "client_cores": 0.1,
        }  # fmt: skip

    result = {
        "started": "now",
        "machine": {"cpu": "cpu", "cores": 2},
        "settings": dict(
            quick=True,
            seconds=8,
            budget_ms=2000,
            shed_hold_ms=250,
            closed_factor=1.3,
            open_factor=4.0,
            patience=4.0,
        ),
        "rows": [
            point("saturation", "at-once", 10, 900),
            point("closed", "at-once", 9.5, 1900, shed=40),
            point("open", "retry-after", 7.0, 2500, shed=90),
        ],
    }
    overload.write_markdown(tmp_path / "o.md", result)
    text = (tmp_path / "o.md").read_text()
    assert "in 1 of 2 overload points; accepted p99 within the budget in 1 of 2" in text
    assert "| http | 10 users (saturation) | at-once | 10.0 | 1.00 | 1.00 |" in text
    assert text.count("| 1.90 | 0.10 |") == 3  # where the cores went, every point
    # 10 users at 10 img/s keep 1 s of work in flight: within 0.8 x 2 s
    assert "saturation points whose users fit the budget" in text and ": 0." in text
    overload.plot(tmp_path / "o.png", result)
    assert (tmp_path / "o.png").stat().st_size > 5_000


def test_cpu_used_counts_the_server_tree_and_the_clients(tmp_path):
    """The overload report's core columns, over the goodput window only: a server whose
    child burns a CPU for ~1 s while this process sleeps reads as server cores (about one on
    an idle machine) and almost no client cores; what this process burns after the window
    is not counted."""
    import subprocess
    import sys

    from loadtests.overload import cpu_used
    from loadtests.server import Server

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {burn!r}])"
    proc = subprocess.Popen([sys.executable, "-c", parent])
    server = Server("http://x", "", tmp_path, tmp_path / "log", proc)
    time.sleep(0.3)  # the child is running
    with cpu_used(server, 0.5) as cores:
        time.sleep(0.6)  # past the window: then this process burns a CPU for 1 s
        t = time.process_time()
        while time.process_time() - t < 1.0:
            pass
    proc.wait()
    assert cores.server > 0.3 and cores.client < 0.2


class CannedServer:
    """An HTTP/1.1 server on loopback that answers each request with the next canned answer
    (status, extra headers, close after it?), recording requests and connections."""

    def __init__(self, *answers: tuple[int, dict, bool]) -> None:
        self.answers, self.requests, self.connections = list(answers), [], 0

    async def handle(self, reader, writer) -> None:
        self.connections += 1
        while self.answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            self.requests.append((head, await reader.readexactly(length)))
            status, headers, close = self.answers.pop(0)
            body = b'{"ok": true}'
            lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            lines += ["Connection: close"] if close else []
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
            if close:
                break
        writer.close()


def call_canned(server: CannedServer, sends: int) -> list[Outcome]:
    from types import SimpleNamespace

    async def go():
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        target = SimpleNamespace(url=f"http://127.0.0.1:{port}", grpc_target="127.0.0.1:1")
        async with listener, clients.Caller(target, "http", [b"png"], 4) as call:
            return [await call(b"png") for _ in range(sends)]

    return asyncio.run(go())


def test_the_http_client_reads_status_and_retry_after_over_one_kept_connection():
    server = CannedServer((503, {"Retry-After": "2"}, False), (200, {}, False), (200, {}, False))
    outcomes = call_canned(server, 3)
    assert outcomes == [Outcome(False, True, 2.0), Outcome(True, False), Outcome(True, False)]
    assert server.connections == 1  # keep-alive: the three requests shared one connection
    head, body = server.requests[0]
    assert head.startswith(b"POST /decompose HTTP/1.1\r\n")
    assert b"multipart/form-data; boundary=" in head and b"png" in body


def test_the_http_client_reconnects_after_a_close_and_counts_a_reset_as_an_error():
    server = CannedServer((200, {}, True), (200, {}, False))
    assert call_canned(server, 2) == [Outcome(True, False), Outcome(True, False)]
    assert server.connections == 2  # "Connection: close" was honoured
    # a server that closes without answering: an error outcome, not an exception out of the client
    server = CannedServer()
    assert call_canned(server, 1) == [Outcome(False, False)]
