"""`python -m service.rpc.client`, run as a user runs it, against the real service."""

from __future__ import annotations

import json

import httpx
import pytest

from loadtests.images import encode, validate
from tests.conftest import run_module
from tests.serving import REPO, free_port
from training.data.shapes import generate_batch

pytestmark = pytest.mark.slow


def client(*args, timeout: int = 120):
    return run_module("service.rpc.client", *args, timeout=timeout)


def one_line_error(done, status: int, *words: str) -> None:
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == ""
    line = done.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line, done.stderr
    assert all(w in line for w in words), line


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    paths = []
    for i, scene in enumerate(generate_batch(3, seed=41, variant="textured")):
        path = root / f"scene{i}.png"
        path.write_bytes(encode(scene.image))
        paths.append(path)
    return paths


def test_json_of_one_image_is_the_http_answer(server, scenes):
    done = client(scenes[0], "--json", "--target", server.grpc_target)
    assert done.returncode == 0, done.stderr
    via_grpc = json.loads(done.stdout)
    with open(scenes[0], "rb") as f:
        via_http = httpx.post(f"{server.url}/decompose", files={"image": f}, timeout=60).json()
    assert validate(via_grpc, 64, 64) is None
    assert set(via_grpc) == set(via_http)
    assert via_grpc["model"] == via_http["model"]
    assert set(via_grpc["timings_ms"]) == set(via_http["timings_ms"])
    for a, b in zip(via_grpc["objects"], via_http["objects"], strict=True):
        assert a["code_distance"] == pytest.approx(b["code_distance"], rel=1e-6)
        assert {**a, "code_distance": 0} == {**b, "code_distance": 0}


def test_several_images_are_one_batch_in_order(server, scenes):
    done = client(*scenes, "--json", "--target", server.grpc_target)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["results"]
    assert len(results) == 3 and all(validate(r, 64, 64) is None for r in results)
    one = json.loads(client(scenes[2], "--json", "--target", server.grpc_target).stdout)
    assert [o["mask"] for o in results[2]["objects"]] == [o["mask"] for o in one["objects"]]


def test_summary_health_and_describe(server, scenes):
    done = client(scenes[0], "--health", "--describe", "--target", server.grpc_target)
    assert done.returncode == 0, done.stderr
    health, rest = done.stdout.split("\n", 1)
    assert json.loads(health) == {"health": "SERVING"}
    described, summary = rest.rsplit("}\n", 1)
    described = json.loads(described + "}")
    assert described["reflection"] == "grpc.reflection.v1"
    assert described["services"]["slotserve.v1.SlotServe"]["DecomposeStream"] == {
        "input": "stream slotserve.v1.StreamRequest",
        "output": "stream slotserve.v1.StreamResponse",
    }
    assert described["model"]["name"] == "slotserve-shapes"
    assert described["model"]["provider"] == "cpu"
    assert summary.startswith(f"{scenes[0]} 64x64: ") and summary.count("\n") == 1


def test_a_missing_file_fails_before_connecting(tmp_path):
    done = client(tmp_path / "nope.png", "--target", f"127.0.0.1:{free_port()}")
    one_line_error(done, 2, "cannot read", "nope.png")


def test_no_server_at_the_target(scenes):
    target = f"127.0.0.1:{free_port()}"
    done = client(scenes[0], "--target", target, "--connect-timeout", "2")
    one_line_error(done, 3, "no gRPC server answers", target)


def test_a_refused_image_says_why(server, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a not really")
    done = client(bad, "--json", "--target", server.grpc_target)
    one_line_error(done, 1, "refused", "bad.png", "INVALID_ARGUMENT", "not a decodable image")


def test_nothing_to_do_is_a_usage_error():
    done = client()
    assert done.returncode == 2 and "give at least one IMAGE" in done.stderr


def test_the_api_docs_show_what_the_server_answers(server):
    """docs/api.md quotes the CLI's summary of docs/scene.png: it must still be the answer."""
    done = client("docs/scene.png", "--target", server.grpc_target)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith("docs/scene.png 128x128: ")
    assert line in (REPO / "docs" / "api.md").read_text()
