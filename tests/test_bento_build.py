"""`bentoml build` packs the service, the contract and the model with no package index (as
`make build` runs it); the built bento serves, and a bundle imported into the model store is
what it serves."""

from __future__ import annotations

import os

import httpx
import pytest

from loadtests.images import encode
from tests.conftest import run_module
from tests.serving import serve
from training.data.shapes import generate_batch

pytestmark = pytest.mark.slow


def test_bentoml_build_then_serve_the_bento_from_the_model_store(tmp_path):
    home = tmp_path / "srv" / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    imported = run_module(
        "export", "bentoml", "--bundle", "models/slotserve-shapes", env=env, timeout=300
    )
    assert imported.returncode == 0, imported.stderr[-3000:]
    # No index and no local wheels: anything the build tried to install would fail it.
    offline = {**env, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}
    built = run_module("bentoml", "build", ".", env=offline, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "pip install" not in built.stdout + built.stderr  # BentoML's "installing uv" line
    src = next((home / "bentos" / "slotserve").glob("*/src"))
    packed = {p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file()}
    assert {
        "service/app.py",
        "service/rpc/slotserve/v1/slotserve.proto",
        "runtime/contract.py",
        "runtime/backends/onnxruntime.py",
        "models/slotserve-shapes/model.onnx",
        "models/slotserve-shapes/manifest.json",
    } <= packed
    assert not any(p.startswith(("training/", "export/")) for p in packed)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with serve(tmp_path / "srv", target="slotserve:latest", cwd=outside) as server:
        info = httpx.get(f"{server.url}/model", timeout=30).json()
        assert info["bundle_source"] == "model store slotserve-shapes:latest"
        data = encode(generate_batch(1, seed=2)[0].image)
        r = httpx.post(f"{server.url}/decompose", files={"image": ("s.png", data)})
        assert r.status_code == 200 and r.json()["objects"]
