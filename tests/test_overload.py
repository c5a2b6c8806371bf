"""Overload: past its latency budget the batcher sheds with 503 (gRPC UNAVAILABLE) at once,
accepted requests still succeed, and the service answers normally as soon as load drops."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import pytest

from loadtests.images import blocky_png
from service.rpc.slotserve.v1 import slotserve_pb2 as pb
from service.rpc.slotserve.v1 import slotserve_pb2_grpc as pb_grpc
from tests.serving import serve

pytestmark = pytest.mark.slow


def test_burst_past_the_latency_budget_is_shed_not_queued(tmp_path):
    env = {"SLOTSERVE_MAX_LATENCY_MS": "150", "SLOTSERVE_MAX_BATCH_SIZE": "8"}
    with serve(tmp_path / "srv", env=env) as server:
        data = blocky_png(0)

        async def burst():
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=60) as client,
                grpc.aio.insecure_channel(server.grpc_target) as channel,
            ):
                stub = pb_grpc.SlotServeStub(channel)

                async def one_http():
                    t = time.perf_counter()
                    r = await client.post("/decompose", files={"image": ("s.png", data)})
                    body = {**r.json(), "retry_after": r.headers.get("retry-after")}
                    return r.status_code, body, time.perf_counter() - t

                async def one_grpc():
                    t = time.perf_counter()
                    try:
                        await stub.Decompose(pb.DecomposeRequest(image=data))
                        return 200, None, time.perf_counter() - t
                    except grpc.aio.AioRpcError as err:
                        pushback = dict(err.trailing_metadata() or ()).get("grpc-retry-pushback-ms")
                        return err.code(), pushback, time.perf_counter() - t

                return await asyncio.gather(
                    *[one_http() for _ in range(96)], *[one_grpc() for _ in range(32)]
                )

        results = asyncio.run(burst())
        http = results[:96]
        statuses = [s for s, _, _ in http]
        assert set(statuses) <= {200, 503}, statuses
        shed = [(body, dt) for s, body, dt in http if s == 503]
        assert shed, "a burst far past the latency budget must shed"
        assert all(body["reason"] == "overloaded" for body, _ in shed)
        # shed answers say when to come back: one 150 ms budget, in whole seconds (RFC 9110
        # Retry-After), whether the guard or the batcher shed them
        assert {body["retry_after"] for body, _ in shed} == {"1"}
        served = statuses.count(200) + sum(1 for s, _, _ in results[96:] if s == 200)
        assert served > 0  # the budget admits what it can serve in time, whichever came first
        # shed quickly: well within the client's patience, not after queueing without bound
        assert max(dt for _, dt in shed) < 5.0
        grpc_codes = {s for s, _, _ in results[96:]}
        assert grpc_codes <= {200, grpc.StatusCode.UNAVAILABLE}, grpc_codes
        pushbacks = {p for s, p, _ in results[96:] if s == grpc.StatusCode.UNAVAILABLE}
        assert pushbacks <= {"1000"}, pushbacks  # gRPC's retry pushback, in milliseconds

        # a shed is the designed answer: logged as one warning line, not as a traceback
        log = server.log_tail(100000)
        assert "Traceback" not in log, log[log.find("Traceback") - 300 :][:3000]

        # recovery: the very next lone request is served
        time.sleep(0.5)
        r = httpx.post(f"{server.url}/decompose", files={"image": ("s.png", data)}, timeout=30)
        assert r.status_code == 200
        assert server.metric_value("slotserve_errors_total", reason="overloaded") == len(shed) + (
            sum(1 for s, _, _ in results[96:] if s != 200)
        )
