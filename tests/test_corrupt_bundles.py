"""A bundle that must not be served stops `bentoml serve` at once: non-zero exit, one line.

Also the backend's own checks, without a server: provider choice, variants, the contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from runtime.backends import BackendError
from runtime.backends.onnxruntime import OnnxRuntimeBackend, provider_chain, provider_options
from runtime.contract import load_bundle, to_model_input
from service.settings import DEFAULT_BUNDLE
from tests.conftest import run_module
from tests.serving import REPO

FILES = ("manifest.json", "model.onnx", "model.fp16.onnx", "model.int8.onnx")


def copy_bundle(dst):
    dst.mkdir()
    for name in FILES:
        shutil.copy2(DEFAULT_BUNDLE / name, dst / name)
    return dst


def edit_manifest(bundle, change):
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


def _missing(b):
    (b / "model.onnx").unlink()


def _hash_mismatch(b):
    with open(b / "model.onnx", "ab") as f:
        f.write(b"\0")


def _contract_size(b):
    edit_manifest(b, lambda m: m["input"].update(height=32, width=32))


def _contract_slots(b):
    edit_manifest(b, lambda m: m.update(num_slots=5))


def _future_format(b):
    edit_manifest(b, lambda m: m.update(format_version=99))


def _not_json(b):
    (b / "manifest.json").write_text("{ not json")


def _other_format(b):
    edit_manifest(b, lambda m: m.update(format="something-else"))


def _swapped_graph(b):
    # a different, valid ONNX file under the right name with its hash updated: the graph's
    # input no longer matches the manifest, which the contract check catches
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])
    y = helper.make_tensor_value_info("masks", TensorProto.FLOAT, ["batch", 3, 32, 32])
    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["masks"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, b / "model.onnx")
    from runtime.contract import sha256_file

    edit_manifest(b, lambda m: m["files"].update({"model.onnx": sha256_file(b / "model.onnx")}))


CASES = {
    "missing-file": (_missing, {}, "missing"),
    "hash-mismatch": (_hash_mismatch, {}, "sha256 mismatch"),
    "contract-input-size": (_contract_size, {}, "does not match the manifest"),
    "contract-slots": (_contract_slots, {}, "slots"),
    "swapped-graph": (_swapped_graph, {}, "input shape"),
    "incompatible-version": (_future_format, {}, "format 99 is not supported"),
    "manifest-not-json": (_not_json, {}, "not JSON"),
    "not-a-bundle": (_other_format, {}, "not a SlotServe bundle"),
    "missing-variant": (
        lambda b: edit_manifest(b, lambda m: m["files"].pop("model.int8.onnx")),
        {"SLOTSERVE_VARIANT": "int8"},
        "no int8 variant",
    ),
    "provider-not-installed": (lambda b: None, {"SLOTSERVE_PROVIDER": "cuda"}, "provider cuda"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_service_refuses_to_start_on_a_bad_bundle(tmp_path, name):
    spoil, extra_env, words = CASES[name]
    bundle = copy_bundle(tmp_path / "bundle")
    spoil(bundle)
    env = {
        **os.environ,
        "BENTOML_HOME": str(tmp_path / "home"),
        "BENTOML_DO_NOT_TRACK": "True",
        "SLOTSERVE_BUNDLE": str(bundle),
        **extra_env,
    }
    res = run_module("bentoml", "serve", "--port", "0", env=env, timeout=120)
    assert res.returncode != 0
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("slotserve: refusing to serve:"), res.stderr[-2000:]
    assert words in last


def test_a_bundle_directory_that_does_not_exist_is_refused(tmp_path):
    """Importing the service does no work (no bundle check at import); the deployment check
    that `bentoml serve` runs before its workers refuses the bundle with one line."""
    env = {**os.environ, "SLOTSERVE_BUNDLE": str(tmp_path / "nope")}
    check = (
        "import service.app\n"
        "from service.bundle import check_bundle_or_exit\n"
        "from service.settings import get_settings\n"
        "check_bundle_or_exit(get_settings())\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", check],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1, res.stderr[-2000:]
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("slotserve: refusing to serve:") and "not a directory" in last
    imported = subprocess.run(
        [sys.executable, "-c", "import service.app"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr[-2000:]


def test_provider_chain_prefers_gpus_and_always_ends_on_the_cpu():
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain("auto", gpu_build) == gpu_build
    assert provider_chain("cuda", gpu_build) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_chain("cpu", gpu_build) == ["CPUExecutionProvider"]
    assert provider_chain("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(BackendError, match="not in this onnxruntime build"):
        provider_chain("tensorrt", ["CPUExecutionProvider"])


def test_cuda_runs_in_full_fp32_unless_tf32_is_asked_for(monkeypatch):
    """onnxruntime's CUDA provider defaults to TF32, which moved the shipped model's masks by
    up to 0.27 on an H100; the service turns it off unless SLOTSERVE_CUDA_TF32 says otherwise."""
    from runtime.backends import factory
    from service.settings import Settings

    manifest = load_bundle(DEFAULT_BUNDLE)
    chain = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    trt, cuda, cpu = provider_options(chain, manifest, "fp16", 64)
    assert cuda == {"use_tf32": "0"} and cpu == {}
    assert trt["trt_fp16_enable"] is True and trt["trt_profile_max_shapes"].endswith("64x3x64x64")
    assert provider_options(chain[1:], manifest, cuda_tf32=True)[0] == {"use_tf32": "1"}

    seen = {}
    monkeypatch.setattr(
        "runtime.backends.onnxruntime.OnnxRuntimeBackend",
        lambda *args, **kwargs: seen.update(kwargs) or "backend",
    )
    assert factory.create_backend(DEFAULT_BUNDLE, manifest, Settings()) == "backend"
    assert seen["cuda_tf32"] is False
    monkeypatch.setenv("SLOTSERVE_CUDA_TF32", "true")
    factory.create_backend(DEFAULT_BUNDLE, manifest, Settings())
    assert seen["cuda_tf32"] is True


def test_memory_settings_reach_the_onnxruntime_session(monkeypatch):
    """The memory pattern is off by default (it doubles the arena's steady size at the same
    speed; README "Memory"), the arena on; SLOTSERVE_ORT_MEMORY_* turn either around."""
    from runtime.backends import factory
    from service.settings import Settings

    manifest = load_bundle(DEFAULT_BUNDLE)
    backend = factory.create_backend(DEFAULT_BUNDLE, manifest, Settings(provider="cpu"))
    options = backend.session.get_session_options()
    assert options.enable_mem_pattern is False and options.enable_cpu_mem_arena is True
    assert backend.describe()["memory_pattern"] is False
    monkeypatch.setenv("SLOTSERVE_ORT_MEMORY_PATTERN", "true")
    monkeypatch.setenv("SLOTSERVE_ORT_MEMORY_ARENA", "false")
    backend = factory.create_backend(DEFAULT_BUNDLE, manifest, Settings(provider="cpu"))
    options = backend.session.get_session_options()
    assert options.enable_mem_pattern is True and options.enable_cpu_mem_arena is False


def test_gpu_sessions_load_cuda_from_the_nvidia_pip_packages_first(monkeypatch):
    from runtime.backends.onnxruntime import load_gpu_libraries

    calls = []
    monkeypatch.setattr(ort, "preload_dlls", lambda: calls.append(1), raising=False)
    load_gpu_libraries(["CPUExecutionProvider"])
    assert calls == []  # a CPU service never touches CUDA
    load_gpu_libraries(["CUDAExecutionProvider", "CPUExecutionProvider"])
    load_gpu_libraries(["TensorrtExecutionProvider", "CPUExecutionProvider"])
    assert calls == [1, 1]


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8"])
def test_every_shipped_variant_loads_and_reports_its_provider(variant):
    manifest = load_bundle(DEFAULT_BUNDLE)
    name = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}[variant]
    backend = OnnxRuntimeBackend(DEFAULT_BUNDLE / name, manifest, variant, "auto", 1, 1)
    expected = "cpu" if ort.get_device() == "CPU" else backend.provider
    assert backend.provider == expected
    out = backend.infer(to_model_input(np.zeros((2, 64, 64, 3), np.uint8), manifest.input))
    k = manifest.num_slots
    assert out.masks.shape == (2, k, 64, 64) and out.masks.dtype == np.float32
    assert out.codes.dtype == np.int64 and out.distances.shape == (2, k)
    # int8 quantizes the mask output too (steps of 1/255)
    np.testing.assert_allclose(out.masks.sum(1), 1.0, atol=1e-2 if variant == "int8" else 2e-3)
    assert backend.describe()["variant"] == variant


def test_model_instances_share_the_cores_each_on_its_own_session(monkeypatch):
    """Two instances (the default) get the cores divided between them, one thread each on 2
    cores; an explicit SLOTSERVE_INTRA_OP_THREADS wins; one instance leaves onnxruntime its
    own choice (0). Each instance gets its own session with that many threads, calls go to a
    free one, and a backend that runs one instance (TensorRT) gets one."""
    from prometheus_client import CollectorRegistry

    from service.bundle import ResolvedBundle
    from service.metrics import ServiceMetrics
    from service.runner import build_runner
    from service.settings import Settings

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert Settings().model_instances == 2 and Settings().threads_per_instance == 4
    assert Settings(model_instances=3).threads_per_instance == 2
    assert Settings(model_instances=16).threads_per_instance == 1
    assert Settings(model_instances=1).threads_per_instance == 0
    assert Settings(intra_op_threads=3).threads_per_instance == 3

    manifest = load_bundle(DEFAULT_BUNDLE)
    bundle = ResolvedBundle(DEFAULT_BUNDLE, manifest, "test")
    metrics = ServiceMetrics(registry=CollectorRegistry())
    runner = build_runner(bundle, Settings(provider="cpu", model_instances=3), metrics)
    sessions = [runner._free.get() for _ in range(runner.instances)]
    assert runner.instances == 3 and len({id(b.session) for b in sessions}) == 3
    assert {b.session.get_session_options().intra_op_num_threads for b in sessions} == {2}
    for backend in sessions:
        runner._free.put(backend)
    assert len(runner(runner.blank(2))) == 2 and runner._free.qsize() == 3  # handed back

    class OneAtATime:
        max_instances = 1
        name = provider = variant = "fake"

        def infer(self, images):  # the start-up warm-up call
            return None

    made = []
    monkeypatch.setattr("service.runner.create_backend", lambda *a: made.append(1) or OneAtATime())
    runner = build_runner(bundle, Settings(model_instances=3), metrics)
    assert runner.instances == 1 and made == [1]
