"""Two front workers (SLOTSERVE_WORKERS=2): metrics add up across processes, gRPC is served
by both through SO_REUSEPORT, and a bundle variant is selectable."""

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


def test_metrics_add_up_across_two_workers(tmp_path):
    env = {"SLOTSERVE_WORKERS": "2", "SLOTSERVE_VARIANT": "fp16"}
    with serve(tmp_path / "srv", env=env) as server:
        seen: set[int] = set()  # /readyz answers once one worker is up: wait for both
        deadline = time.monotonic() + 90
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(httpx.get(f"{server.url}/model", timeout=30).json()["pid"])
        assert len(seen) == 2, seen
        before_http = server.metric_value("slotserve_images_total", protocol="http")
        before_grpc = server.metric_value("slotserve_images_total", protocol="grpc")
        before_calls = server.metric_value("slotserve_batch_images_sum")

        async def load():
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                https = [
                    client.post("/decompose", files={"image": ("s.png", blocky_png(i))})
                    for i in range(40)
                ]
                replies = await asyncio.gather(*https)
            grpc_replies = []
            for i in range(12):  # a new channel each time: connections spread over workers
                async with grpc.aio.insecure_channel(server.grpc_target) as channel:
                    stub = pb_grpc.SlotServeStub(channel)
                    grpc_replies.append(
                        await stub.Decompose(pb.DecomposeRequest(image=blocky_png(i)))
                    )
            return replies, grpc_replies

        replies, grpc_replies = asyncio.run(load())
        assert [r.status_code for r in replies] == [200] * 40
        pids = {r.json()["model_call"]["id"].split("-")[0] for r in replies}
        pids |= {r.model_call.id.split("-")[0] for r in grpc_replies}
        assert len(pids) == 2, pids  # both workers served (HTTP and/or gRPC)

        # the exposition merges both processes' counters: totals equal what was sent
        assert server.metric_value("slotserve_images_total", protocol="http") - before_http == 40
        assert server.metric_value("slotserve_images_total", protocol="grpc") - before_grpc == 12
        assert server.metric_value("slotserve_batch_images_sum") - before_calls == 52
        info = httpx.get(f"{server.url}/model", timeout=30).json()
        assert info["backend"]["variant"] == "fp16"
        assert info["backend"]["file"] == "model.fp16.onnx"
        models = server.metric_value("slotserve_model_info", variant="fp16")
        assert models == 1  # livemax: one series per label set, not one per worker
