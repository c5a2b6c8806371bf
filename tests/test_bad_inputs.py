"""Malformed requests against the real service: each gets a 4xx (or the matching gRPC
status) with a one-line reason, never a 5xx, and the service keeps serving afterwards.
Ends with schemathesis fuzzing the OpenAPI spec: zero server errors."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import grpc
import httpx
import numpy as np
import pytest
from PIL import Image

from loadtests.images import encode
from service.rpc.slotserve.v1 import slotserve_pb2 as pb
from service.rpc.slotserve.v1 import slotserve_pb2_grpc as pb_grpc
from service.settings import Settings

pytestmark = pytest.mark.slow
LIMITS = Settings()


def noise(w: int = 64, h: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


GOOD = encode(noise())
FRAMES = [noise(seed=i) for i in range(3)]
BAD_IMAGES = {
    "zero-bytes": b"",
    "truncated-png": GOOD[:100],
    "truncated-jpeg": encode(noise(), "JPEG")[:400],
    "png-header-only": GOOD[:33],
    "text": b"this is a text file, not an image\n",
    "html": b"<html><body>hello</body></html>",
    "json": b'{"image": "aGVsbG8="}',
    "1x1": encode(noise(1, 1)),
    "1xN": encode(noise(1, 300)),
    "Nx1": encode(noise(300, 1)),
    "decompression-bomb": encode(Image.new("L", (10000, 10000), 3)),
    "16-bit-png": encode(Image.new("I;16", (64, 64), 1000)),
    "32-bit-float-tiff": encode(Image.new("F", (64, 64), 0.5), "TIFF"),
    "cmyk-jpeg": encode(noise().convert("CMYK"), "JPEG"),
    "animated-gif": encode(FRAMES[0], "GIF", save_all=True, append_images=FRAMES[1:]),
    "animated-png": encode(FRAMES[0], save_all=True, append_images=FRAMES[1:]),
    "animated-webp": encode(FRAMES[0], "WEBP", save_all=True, append_images=FRAMES[1:]),
    "bmp": encode(noise(), "BMP"),
    "tiff": encode(noise(), "TIFF"),
    "corrupt-png-crc": GOOD[:40] + bytes([GOOD[40] ^ 0xFF]) + GOOD[41:],
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_files_get_a_4xx_with_a_reason(server, name):
    r = httpx.post(
        f"{server.url}/decompose", files={"image": ("x.png", BAD_IMAGES[name])}, timeout=60
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    body = r.json()
    assert body["reason"] and body["error"] and "\n" not in body["error"]


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> bytes:
    out = b""
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


MULTI = "multipart/form-data; boundary=b0undary"
REQUESTS = {
    "wrong-field-name": ("/decompose", MULTI, _multipart([("file", "a.png", GOOD)]), 400),
    "text-value-not-file": ("/decompose", MULTI, _multipart([("image", None, b"abc")]), 400),
    "two-files-in-decompose": (
        "/decompose",
        MULTI,
        _multipart([("image", "a.png", GOOD), ("image", "b.png", GOOD)]),
        400,
    ),
    "no-parts": ("/decompose", MULTI, b"--b0undary--\r\n", 400),
    "broken-multipart": ("/decompose", MULTI, b"garbage that is not multipart", 400),
    "unterminated-multipart": (
        "/decompose",
        MULTI,
        _multipart([("image", "a.png", GOOD)])[:-20],
        400,
    ),
    "multipart-without-boundary": ("/decompose", "multipart/form-data", GOOD, 400),
    "json-body": ("/decompose", "application/json", b'{"image": "/etc/passwd"}', 415),
    "raw-png-body": ("/decompose", "image/png", GOOD, 415),
    "form-urlencoded": ("/decompose", "application/x-www-form-urlencoded", b"image=abc", 415),
    "no-content-type": ("/decompose", None, GOOD, 415),
    "visualize-bad-image": ("/visualize", MULTI, _multipart([("image", "a.png", b"xx")]), 400),
    "batch-wrong-field": ("/decompose_batch", MULTI, _multipart([("image", "a.png", GOOD)]), 400),
    "batch-one-bad-image": (
        "/decompose_batch",
        MULTI,
        _multipart([("images", "a.png", GOOD), ("images", "b.png", b"junk")]),
        400,
    ),
    "batch-over-image-limit": (
        "/decompose_batch",
        MULTI,
        _multipart([("images", f"{i}.png", b"x") for i in range(LIMITS.max_images + 1)]),
        413,
    ),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_malformed_requests_get_a_4xx_with_a_reason(server, name):
    path, ctype, body, status = REQUESTS[name]
    headers = {"content-type": ctype} if ctype else {}
    r = httpx.post(f"{server.url}{path}", content=body, headers=headers, timeout=60)
    assert r.status_code == status, (r.status_code, r.text)
    assert "\n" not in r.json()["error"]


def test_upload_over_the_size_limit_is_refused_before_reading(server):
    big = os.urandom(LIMITS.max_upload_bytes + 200_000)
    r = httpx.post(f"{server.url}/decompose", files={"image": ("big.png", big)}, timeout=60)
    assert r.status_code == 413 and r.json()["reason"] == "upload_too_large"


def test_chunked_upload_over_the_limit_is_cut_off(server):
    body = _multipart([("image", "big.png", os.urandom(LIMITS.max_upload_bytes + 200_000))])

    def chunks():
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + (1 << 20)]

    r = httpx.post(
        f"{server.url}/decompose", content=chunks(), headers={"content-type": MULTI}, timeout=60
    )
    assert r.status_code == 413, r.text


def test_wrong_method_is_a_405(server):
    assert httpx.get(f"{server.url}/decompose").status_code == 405


def test_a_path_in_the_filename_never_reaches_the_filesystem(server, tmp_path):
    target = tmp_path / "owned.png"
    r = httpx.post(
        f"{server.url}/decompose", files={"image": (f"../../../../{target}", GOOD)}, timeout=60
    )
    assert r.status_code == 200 and not target.exists()


GRPC_CASES = {
    "zero-bytes": (b"", grpc.StatusCode.INVALID_ARGUMENT),
    "truncated-png": (GOOD[:100], grpc.StatusCode.INVALID_ARGUMENT),
    "text": (b"hello", grpc.StatusCode.INVALID_ARGUMENT),
    "1x1": (BAD_IMAGES["1x1"], grpc.StatusCode.INVALID_ARGUMENT),
    "16-bit-png": (BAD_IMAGES["16-bit-png"], grpc.StatusCode.INVALID_ARGUMENT),
    "cmyk-jpeg": (BAD_IMAGES["cmyk-jpeg"], grpc.StatusCode.INVALID_ARGUMENT),
    "animated-gif": (BAD_IMAGES["animated-gif"], grpc.StatusCode.INVALID_ARGUMENT),
    "decompression-bomb": (BAD_IMAGES["decompression-bomb"], grpc.StatusCode.RESOURCE_EXHAUSTED),
    "over-size-limit": (
        b"\x89PNG" + os.urandom(LIMITS.max_upload_bytes),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
}


@pytest.mark.parametrize("name", sorted(GRPC_CASES))
def test_bad_grpc_images_get_status_codes(server, name):
    data, code = GRPC_CASES[name]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.SlotServeStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Decompose(pb.DecomposeRequest(image=data), timeout=60)
    assert info.value.code() == code
    assert info.value.details() and "\n" not in info.value.details()


def test_grpc_message_over_the_transport_limit_is_resource_exhausted(server):
    data = os.urandom(LIMITS.grpc_max_message_bytes + 1024)
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = pb_grpc.SlotServeStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Decompose(pb.DecomposeRequest(image=data), timeout=60)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_schemathesis_finds_no_server_error(server):
    exe = shutil.which("schemathesis") or shutil.which("st")
    if exe is None:
        candidate = os.path.join(os.path.dirname(sys.executable), "schemathesis")
        exe = candidate if os.path.exists(candidate) else None
    if exe is None:
        pytest.fail("schemathesis is not installed (it is in the dev extra)")
    res = subprocess.run(
        [exe, "run", f"{server.url}/docs.json", "-c", "not_a_server_error", "-n", "40"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-4000:]


def test_service_still_serves_after_all_of_that(server):
    """Runs last in this module (pytest keeps file order): readiness and a correct answer."""
    assert httpx.get(f"{server.url}/readyz").status_code == 200
    r = httpx.post(f"{server.url}/decompose", files={"image": ("ok.png", GOOD)}, timeout=60)
    assert r.status_code == 200 and r.json()["objects"]
    assert "Traceback" not in server.log_tail(100000)
    assert server.metric_value("slotserve_errors_total", protocol="http") >= len(BAD_IMAGES)
    # refusals by the request guard (before BentoML parses anything) are counted too
    assert server.metric_value("slotserve_errors_total", reason="wrong_content_type") >= 4
    assert server.metric_value("slotserve_errors_total", reason="bad_multipart") >= 3
