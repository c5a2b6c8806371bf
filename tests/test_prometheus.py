"""The real service scraped by a real Prometheus that loads the SlotServe rules.

`bentoml serve` runs the service; `prometheus` scrapes its /metrics every second with the
shipped config (target and intervals adjusted) and rules. After a known load (HTTP images
from a few concurrent clients, a few gRPC images, a few bad images) the test asks
Prometheus's HTTP API what it saw: the counters equal what was sent, the latency quantile
agrees with the latencies the service reported and the client measured, the recording rules
produce values, and every dashboard query runs.

Without the `prometheus` binary this skips, except in CI (CI set), where it fails.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from loadtests.images import blocky_png
from service.metrics import LATENCY_BUCKETS
from tests.serving import free_port, serve
from tests.test_monitoring import (
    PROMETHEUS_YML,
    RULES,
    dashboard_queries,
    grafana_to_promql,
    require_tool,
)

pytestmark = pytest.mark.slow

N_HTTP = 60  # good images over HTTP, in the main load
CLIENTS = 4  # concurrent HTTP clients sharing them
PACE_S = 0.5  # pause between one client's requests: the load spans ~8 s of 1 s scrapes
N_GRPC = 4  # good images over gRPC
N_BAD = 3  # undecodable uploads over HTTP (400, reason bad_image)
BAD = b"this is not an image" * 8


def bucket(seconds: float) -> tuple[float, float]:
    """The (lower, upper] bounds of the latency bucket that holds `seconds`."""
    bounds = (0.0, *LATENCY_BUCKETS, math.inf)
    i = bisect.bisect_left(bounds, seconds, lo=1)
    return bounds[i - 1], bounds[i]


def empirical_quantile(values: list[float], q: float) -> float:
    """The observation histogram_quantile's rank falls on (the ceil(q*n)-th smallest)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


class Prometheus:
    """`prometheus` in a subprocess on a free port, with its own storage and log."""

    def __init__(self, root: Path, target: str) -> None:
        root.mkdir(parents=True, exist_ok=True)
        config = yaml.safe_load(PROMETHEUS_YML.read_text())
        config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
        config["rule_files"] = [str(RULES)]
        (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "slotserve"]
        job.update(
            scrape_interval="1s", scrape_timeout="1s", static_configs=[{"targets": [target]}]
        )
        self.config = root / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "prometheus.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    require_tool("prometheus"),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus not ready after {timeout} s")
            time.sleep(0.2)

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
        reply = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert reply["status"] == "success", (expr, reply)
        return reply["data"]["result"]

    def value(self, expr: str, at: float | None = None) -> float:
        result = self.query(expr, at)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    def wait_for_scrape_after(self, t: float, timeout: float = 20) -> float:
        """Wait until Prometheus holds a scrape that started after wall-clock time `t`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query('timestamp(up{job="slotserve"} == 1)')
            if result and float(result[0]["value"][1]) > t:
                return float(result[0]["value"][1])
            time.sleep(0.2)
        raise TimeoutError(f"no successful scrape after {t} within {timeout} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


async def http_load(url: str) -> tuple[list[float], list[float]]:
    """N_HTTP good images from CLIENTS paced clients: (client latencies, server inference s)."""
    client_s: list[float] = []
    inference_s: list[float] = []
    seeds = iter(range(1000, 1000 + N_HTTP))

    async def client(http: httpx.AsyncClient) -> None:
        for seed in seeds:
            data = blocky_png(seed)
            started = time.perf_counter()
            reply = await http.post(f"{url}/decompose", files={"image": ("x.png", data)})
            client_s.append(time.perf_counter() - started)
            assert reply.status_code == 200, reply.text
            inference_s.append(reply.json()["timings_ms"]["inference"] / 1000)
            await asyncio.sleep(PACE_S)

    async with httpx.AsyncClient(timeout=60) as http:
        await asyncio.gather(*[client(http) for _ in range(CLIENTS)])
    return client_s, inference_s


def grpc_decompose(target: str, seeds: range) -> None:
    import grpc

    from service.rpc.slotserve.v1 import slotserve_pb2 as pb
    from service.rpc.slotserve.v1 import slotserve_pb2_grpc as pb_grpc

    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.SlotServeStub(channel)
        for seed in seeds:
            stub.Decompose(pb.DecomposeRequest(image=blocky_png(seed)), timeout=60)


def post_bad(url: str) -> None:
    reply = httpx.post(f"{url}/decompose", files={"image": ("x.png", BAD)}, timeout=60)
    assert reply.status_code == 400 and reply.json()["reason"] == "bad_image", reply.text


@pytest.mark.timeout(300)
def test_prometheus_sees_what_was_sent(tmp_path) -> None:
    require_tool("prometheus")
    with serve(tmp_path / "srv") as server:
        prometheus = Prometheus(tmp_path / "prometheus", server.url.removeprefix("http://"))
        try:
            prometheus.wait_ready()
            check_scraped_load(server, prometheus)
        except BaseException:
            print(f"--- prometheus log ---\n{prometheus.log_tail()}")
            print(f"--- service log ---\n{server.log_tail()}")
            raise
        finally:
            prometheus.stop()


def check_scraped_load(server, prometheus: Prometheus) -> None:
    # One request of each kind first, then a scrape: every series the load touches exists
    # before it starts, so rate() sees the whole load (a counter's first value is not a rate).
    first = httpx.post(
        f"{server.url}/decompose", files={"image": ("x.png", blocky_png(1))}, timeout=60
    )
    assert first.status_code == 200, first.text
    inference_s = [first.json()["timings_ms"]["inference"] / 1000]
    post_bad(server.url)
    grpc_decompose(server.grpc_target, range(2000, 2001))
    prometheus.wait_for_scrape_after(time.time())

    started = time.time()
    client_s, load_inference_s = asyncio.run(http_load(server.url))
    inference_s += load_inference_s
    grpc_decompose(server.grpc_target, range(2001, 2000 + N_GRPC))
    for _ in range(N_BAD - 1):
        post_bad(server.url)
    took = time.time() - started
    assert 4 < took < 40, f"the load took {took:.1f} s"

    # The last scrape, taken after the load, holds the exact counts.
    at = prometheus.wait_for_scrape_after(time.time()) + 2.5  # + rule evaluations after it
    while time.time() < at:
        time.sleep(0.1)
    n_http = N_HTTP + 1
    assert prometheus.value('up{job="slotserve"}', at) == 1
    assert prometheus.value('slotserve_images_total{protocol="http"}', at) == n_http
    assert prometheus.value('slotserve_images_total{protocol="grpc"}', at) == N_GRPC
    assert prometheus.value("sum(slotserve_images_total)", at) == n_http + N_GRPC
    ok = 'slotserve_requests_total{protocol="http",endpoint="decompose",outcome="ok"}'
    assert prometheus.value(ok, at) == n_http
    bad = 'slotserve_requests_total{protocol="http",endpoint="decompose",outcome="bad_image"}'
    assert prometheus.value(bad, at) == N_BAD
    assert (
        prometheus.value('slotserve_errors_total{reason="bad_image",protocol="http"}', at) == N_BAD
    )
    assert prometheus.value("sum(slotserve_batch_images_sum)", at) >= n_http + N_GRPC
    info = prometheus.query("slotserve_model_info", at)
    assert len(info) == 1 and info[0]["value"][1] == "1", info
    assert info[0]["metric"]["backend"] == "onnxruntime"
    assert 0 <= prometheus.value("slotserve_code_drift", at) <= 1

    # p95 of the inference stage over all HTTP images so far: in the bucket of the exact
    # p95 of the inference times the service reported in its responses.
    raw_p95 = prometheus.value(
        "histogram_quantile(0.95, sum by (le) "
        '(slotserve_stage_seconds_bucket{stage="inference",protocol="http"}))',
        at,
    )
    exact = empirical_quantile(inference_s, 0.95)
    low, high = bucket(exact - 1e-6)[0], bucket(exact + 1e-6)[1]  # timings are rounded to us
    assert low <= raw_p95 <= high, (raw_p95, exact, sorted(inference_s))

    # The dashboard's and recording rule's form, a rate over the last minute: positive,
    # inside the histogram's range, and no later than the bucket of the slowest request
    # the clients saw (a request's client latency includes its inference stage).
    rate_p95 = prometheus.value(
        "histogram_quantile(0.95, sum by (le) "
        '(rate(slotserve_stage_seconds_bucket{stage="inference"}[1m])))',
        at,
    )
    assert 0 < rate_p95 <= LATENCY_BUCKETS[-1]
    assert rate_p95 <= bucket(max(client_s))[1], (rate_p95, max(client_s))
    assert bucket(min(inference_s))[0] <= rate_p95, (rate_p95, min(inference_s))

    # Recording rules, evaluated by Prometheus from the rule file.
    recorded = prometheus.value(
        'slotserve:stage_seconds:p95{stage="inference",protocol="http"}', at
    )
    assert bucket(min(inference_s))[0] <= recorded <= bucket(max(client_s))[1]
    assert prometheus.value('slotserve:images:rate1m{protocol="http"}', at) > 0
    assert prometheus.value("slotserve:batch_images:mean1m", at) >= 1
    assert 0 < prometheus.value("slotserve:error_ratio:rate5m", at) < 1
    assert prometheus.value("slotserve:shed_ratio:rate1m", at) == 0
    rules = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    unhealthy = [
        (r["name"], r.get("lastError")) for g in rules for r in g["rules"] if r["health"] != "ok"
    ]
    assert unhealthy == []
    assert sum(len(g["rules"]) for g in rules) >= 20

    print(
        f"load {took:.1f} s; inference p95: exact {exact * 1e3:.1f} ms, Prometheus "
        f"{raw_p95 * 1e3:.1f} ms (all), {rate_p95 * 1e3:.1f} ms (rate 1m), "
        f"{recorded * 1e3:.1f} ms (recorded); client max {max(client_s) * 1e3:.1f} ms"
    )

    # Every dashboard query runs; all but the shedding ones have data after this load.
    empty = [
        (title, expr)
        for title, expr in dashboard_queries()
        if not prometheus.query(grafana_to_promql(expr, "1m"), at)
    ]
    assert all('reason="overloaded"' in expr for _, expr in empty), empty
    print(f"dashboard: {len(dashboard_queries())} queries, empty: {[t for t, _ in empty]}")
