"""Start the real service (`bentoml serve`) in a subprocess: for benchmarks, soak runs and tests.

Each server gets its own BENTOML_HOME (servers sharing one wipe each other's Prometheus
multiprocess directory), free HTTP and gRPC ports, and a log file shown when it fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
"""The repository root: `bentoml serve` runs from here and finds bentofile.yaml."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    grpc_target: str
    home: Path
    log: Path
    proc: subprocess.Popen

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by `bentoml serve` and its workers."""
        import psutil

        root = psutil.Process(self.proc.pid)
        total = 0.0
        for proc in [root, *root.children(recursive=True)]:
            try:
                times = proc.cpu_times()
            except psutil.Error:  # a process that ended between listing and reading
                continue
            total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        """Resident memory of `bentoml serve` and its workers, bytes."""
        import psutil

        root = psutil.Process(self.proc.pid)
        total = 0
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:  # a process that ended between listing and reading
                continue
        return total

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=30).text

    def bundle(self) -> str:
        """The served bundle as `GET /model` names it: "<name> v<version> (<created>)"."""
        manifest = httpx.get(f"{self.url}/model", timeout=30).json()["manifest"]
        return f"{manifest['name']} v{manifest['version']} ({manifest['created']})"

    def metric_value(self, name: str, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.metrics()):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    total += sample.value
        return total


def _ready(url: str, grpc_target: str | None) -> bool:
    try:
        if httpx.get(f"{url}/readyz", timeout=2).status_code != 200:
            return False
    except httpx.HTTPError:
        return False
    if grpc_target is None:
        return True
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(grpc_target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@contextlib.contextmanager
def serve(
    root: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    target: str | None = None,
    cwd: Path = REPO,
):
    """Run `bentoml serve [TARGET]` (default: the repo's bentofile) until the block ends."""
    root.mkdir(parents=True, exist_ok=True)
    port, grpc_port = free_port(), free_port()
    full_env = {
        **os.environ,
        "BENTOML_HOME": str(root / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "True",
        "SLOTSERVE_GRPC_PORT": str(grpc_port),
        "SLOTSERVE_GRPC_HOST": "127.0.0.1",
        **(env or {}),
    }
    log = root / "server.log"
    address = ["--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bentoml", "serve", *([target] if target else []), *address],
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    grpc_on = full_env["SLOTSERVE_GRPC_PORT"] != "0"
    server = Server(
        f"http://127.0.0.1:{port}",
        f"127.0.0.1:{grpc_port}" if grpc_on else "",
        root / "bentoml",
        log,
        proc,
    )
    try:
        wait_until_ready(
            proc, lambda: _ready(server.url, server.grpc_target or None), timeout,
            "bentoml serve", server.log_tail,
        )  # fmt: skip
        yield server
    finally:
        stop(proc)


def wait_until_ready(
    proc: subprocess.Popen,
    ready: Callable[[], bool],
    timeout: float,
    name: str,
    log_tail: Callable[[], str],
    exited: type[Exception] = RuntimeError,
    late: type[Exception] = TimeoutError,
) -> None:
    """Poll `ready()` every 0.5 s until it holds; raise `exited` if the process ends first and
    `late` after `timeout` seconds, each with the tail of the server's log."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise exited(f"{name} exited with {proc.returncode}:\n{log_tail()}")
        if time.monotonic() > deadline:
            raise late(f"{name} not ready after {timeout:.0f} s:\n{log_tail()}")
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
