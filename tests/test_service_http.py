"""The real service over HTTP: `bentoml serve` in a subprocess, a real HTTP client."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from loadtests.images import encode
from runtime.contract import load_bundle, to_model_input
from service.schemas import BatchDecomposition, Decomposition
from service.settings import DEFAULT_BUNDLE
from training.data.shapes import generate_batch
from training.metrics import fg_ari

pytestmark = pytest.mark.slow


def labels_from(result: dict) -> np.ndarray:
    """Slot map (0 = no object) rebuilt from the response's RLE masks."""
    h, w = result["height"], result["width"]
    out = np.zeros((h, w), dtype=np.int64)
    for i, obj in enumerate(result["objects"], start=1):
        rle = {"size": obj["mask"]["size"], "counts": obj["mask"]["counts"].encode()}
        m = mask_utils.decode(rle).astype(bool)
        assert not (out[m] > 0).any(), "masks overlap"
        out[m] = i
    return out


def test_decompose_returns_objects_with_pycocotools_masks(server):
    scene = generate_batch(1, seed=3)[0]
    r = httpx.post(f"{server.url}/decompose", files={"image": ("s.png", encode(scene.image))})
    assert r.status_code == 200, r.text
    body = r.json()
    Decomposition.model_validate(body)  # the documented schema, field for field
    assert (body["width"], body["height"]) == (64, 64)
    assert body["model"]["name"] == "slotserve-shapes"
    assert set(body["timings_ms"]) >= {"decode", "preprocess", "inference", "postprocess", "total"}
    assert body["timings_ms"]["total"] >= body["timings_ms"]["inference"] > 0
    labels = labels_from(body)
    assert (labels > 0).all()  # disjoint masks that cover the image
    for obj in body["objects"]:
        assert obj["area"] > 0 and 0 <= obj["code"] < 32
        assert obj["label"] is None or isinstance(obj["label"], str)


def _served_and_bundle_fg_ari(server, scenes, scale=None, size=None):
    """Mean FG-ARI of the served masks at an input size, and of the bundle run directly."""
    manifest = load_bundle(DEFAULT_BUNDLE)
    session = ort.InferenceSession(str(DEFAULT_BUNDLE / "model.onnx"))
    images = np.stack([s.image for s in scenes])
    masks = session.run(["masks"], {"image": to_model_input(images, manifest.input)})[0]
    truth = np.stack([s.instances for s in scenes])
    bundle = float(np.nanmean(fg_ari(truth, masks.argmax(1))))
    assert manifest.input.height == 64

    files, truths = [], []
    for s in scenes:
        w, h = size or (64 * scale, 64 * scale)
        img = Image.fromarray(s.image).resize((w, h), Image.Resampling.NEAREST)
        inst = Image.fromarray(s.instances.astype(np.int32)).resize(
            (w, h), Image.Resampling.NEAREST
        )
        files.append(("images", (f"{len(files)}.png", encode(np.asarray(img)))))
        truths.append(np.asarray(inst))
    r = httpx.post(f"{server.url}/decompose_batch", files=files, timeout=120)
    assert r.status_code == 200, r.text
    results = BatchDecomposition.model_validate(r.json()).model_dump()["results"]
    scores = []
    for result, t in zip(results, truths, strict=True):
        assert (result["width"], result["height"]) == (t.shape[1], t.shape[0])
        scores.append(fg_ari(t[None], labels_from(result)[None])[0])
    return float(np.nanmean(scores)), bundle


@pytest.mark.parametrize(
    ("scale", "size", "tolerance"),
    # Integer factors give the model the scene's exact pixels; what moves FG-ARI is the
    # bilinear upsampling of the scores, whose boundaries differ from the blocky nearest-
    # neighbour truth at block edges. Measured with the shipped model (v2, 24 scenes): 0 at
    # 1x, -0.009 at 2x, -0.016 at 3x, -0.014 at 3x by 2x (v1 the same within 0.001; an
    # earlier model: -0.002 / -0.005 / -0.004: upsampling flips more of these models'
    # boundary pixels).
    [
        (1, None, 0.01),
        (2, None, 0.02),
        (3, None, 0.03),
        (None, (192, 128), 0.03),  # non-square, integer factors (3x wide, 2x high)
        # Non-integer factors: the resized input is no longer the scene's exact pixels (edges
        # blend), so the model sees a slightly different image; measured 0.024 apart (v1:
        # 0.027, the model before it 0.053, an earlier one 0.018).
        (None, (160, 96), 0.08),
    ],
    ids=str,
)
def test_served_masks_score_like_the_bundle(server, scale, size, tolerance):
    scenes = generate_batch(24, seed=12345, variant="solid")
    served, bundle = _served_and_bundle_fg_ari(server, scenes, scale, size)
    print(f"served FG-ARI {served:.4f} vs bundle {bundle:.4f} at {scale or size}")
    assert abs(served - bundle) <= tolerance, (served, bundle)


def test_concurrent_requests_share_model_calls(server):
    scenes = generate_batch(32, seed=5)
    before_calls = server.metric_value("slotserve_batch_images_count")
    before_images = server.metric_value("slotserve_batch_images_sum")

    async def burst():
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(
                *[
                    client.post("/decompose", files={"image": ("s.png", encode(s.image))})
                    for s in scenes
                ]
            )

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 32
    sizes = [r.json()["model_call"]["images"] for r in responses]
    assert max(sizes) > 1
    calls = server.metric_value("slotserve_batch_images_count") - before_calls
    images = server.metric_value("slotserve_batch_images_sum") - before_images
    assert images == 32 and calls < 32, (images, calls)


def test_model_route_reports_the_provider_in_use(server):
    r = httpx.get(f"{server.url}/model")
    assert r.status_code == 200
    info = r.json()
    assert info["backend"]["backend"] == "onnxruntime"
    assert info["backend"]["provider"] == "cpu"
    assert info["backend"]["providers"][0] == "CPUExecutionProvider"
    assert info["manifest"]["name"] == "slotserve-shapes"
    # what the serving figures rest on: spinning onnxruntime threads, uvloop + httptools
    # under uvicorn, no OpenTelemetry spans on the model routes unless asked for
    assert info["backend"]["spinning"] is True and info["backend"]["memory_arena"] is True
    assert info["backend"]["memory_pattern"] is False  # half the memory (README "Memory")
    assert info["http"]["event_loop"].startswith("uvloop") and info["http"]["parser"] == "httptools"
    assert "/decompose" in info["http"]["untraced_routes"]
    # two model calls at once (SLOTSERVE_MODEL_INSTANCES), the cores shared between them
    assert info["batching"]["model_instances"] == 2
    cores = len(os.sched_getaffinity(0))
    assert info["backend"]["intra_op_threads"] == max(1, cores // 2)
    assert (
        info["bundle_source"] in ("shipped default", "setting")
        or "model store" in info["bundle_source"]
    )


def test_visualize_returns_a_png_overlay(server):
    scene = generate_batch(1, seed=9)[0]
    r = httpx.post(f"{server.url}/visualize", files={"image": ("s.png", encode(scene.image))})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(r.content))
    assert img.size == (256, 256)  # a 64x64 input is drawn 4x larger


def test_openapi_lists_the_routes(server):
    spec = httpx.get(f"{server.url}/docs.json").json()
    assert {"/decompose", "/decompose_batch", "/visualize"} <= set(spec["paths"])


def test_import_service_leaves_torch_and_training_unimported():
    code = (
        "import sys, service, service.app, service.rpc.server, runtime.backends.onnxruntime\n"
        "bad = sorted(m for m in ('torch', 'training', 'lightning') if m in sys.modules)\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1].replace("'", '"')) == []
