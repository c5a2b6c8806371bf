"""A real Triton Inference Server over the exported repository of the shipped bundle.

`make test` builds `.venv-triton` first (`make triton-venv`): PyPI's nvidia-pytriton ships
`tritonserver` with the Python backend; `python -m export triton` writes the Python-backend
model that runs the bundle's ONNX graph with onnxruntime. These tests start that server on
loopback, call it with tritonclient over HTTP and gRPC (KServe v2), compare its outputs with
onnxruntime's own on the bundle, and read the dynamic batcher's work from Triton's metrics.

Without `.venv-triton` they skip, except in CI (CI set), where they fail; a server that cannot
start fails everywhere.
"""

from __future__ import annotations

import asyncio
import os
import time

import numpy as np
import pytest

from loadtests.triton_peer import BUNDLE, TritonInstall, TritonUnavailable, start
from runtime.contract import INPUT_NAME, OUTPUT_NAMES, to_model_input
from tests.conftest import run_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def install() -> TritonInstall:
    try:
        return TritonInstall.find()
    except TritonUnavailable as err:
        if os.environ.get("CI"):
            pytest.fail(str(err))
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def repository(install, tmp_path_factory):
    """The shipped bundle's repository, written by the CLI as an operator would."""
    repo = tmp_path_factory.mktemp("triton") / "repo"
    res = run_module(
        "export", "triton", "--bundle", BUNDLE, "--out", repo,
        "--max-batch-size", "32", "--python-env", install.env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return repo


@pytest.fixture(scope="module")
def server(install, repository, tmp_path_factory):
    with start(repository, "slotserve-shapes_python", install, tmp_path_factory.mktemp("t")) as s:
        yield s


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    from loadtests.measure import scenes
    from runtime.contract import load_bundle
    from service.settings import DEFAULT_BUNDLE

    return to_model_input(scenes(8), load_bundle(DEFAULT_BUNDLE).input)


def reference(images: np.ndarray) -> dict[str, np.ndarray]:
    """The bundle's own onnxruntime output (the project's environment, not Triton's)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(BUNDLE / "model.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: images})))


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(got["codes"], want["codes"])
    assert got["masks"].shape == want["masks"].shape
    np.testing.assert_allclose(got["masks"], want["masks"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["code_distances"], want["code_distances"], rtol=1e-5)


async def http_infer(server, batch: np.ndarray) -> dict[str, np.ndarray]:
    import tritonclient.http.aio as httpclient

    client = httpclient.InferenceServerClient(server.url)
    try:
        tensor = httpclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        result = await client.infer(server.model, [tensor])
        return {name: result.as_numpy(name) for name in OUTPUT_NAMES}
    finally:
        await client.close()


def test_http_and_grpc_answers_equal_onnxruntime_on_the_bundle(server, images):
    import tritonclient.grpc as grpcclient

    want = reference(images[:3])
    assert_same(asyncio.run(http_infer(server, images[:3])), want)

    client = grpcclient.InferenceServerClient(server.grpc_target)
    tensor = grpcclient.InferInput(INPUT_NAME, list(images[3:8].shape), "FP32")
    tensor.set_data_from_numpy(images[3:8])
    result = client.infer(server.model, [tensor])
    assert_same({n: result.as_numpy(n) for n in OUTPUT_NAMES}, reference(images[3:8]))

    config = client.get_model_config(server.model).config
    assert config.backend == "python" and config.max_batch_size == 32
    assert config.parameters["slotserve_manifest_version"].string_value == "3"
    assert client.is_model_ready(server.model)


def test_dynamic_batcher_merges_a_concurrent_burst(server, images):
    """One image per request, all at once: Triton's metrics count every image
    (nv_inference_count) in fewer model executions (nv_inference_exec_count)."""
    import tritonclient.grpc.aio as grpcclient

    burst = 48
    want = reference(images)
    before_images, before_calls = server.batching()

    async def one(client, k: int) -> np.ndarray:
        batch = images[k % 8 : k % 8 + 1]
        tensor = grpcclient.InferInput(INPUT_NAME, list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        return (await client.infer(server.model, [tensor])).as_numpy("codes")

    async def all_at_once():
        async with grpcclient.InferenceServerClient(server.grpc_target) as client:
            return await asyncio.gather(*[one(client, k) for k in range(burst)])

    codes = asyncio.run(all_at_once())
    for k, got in enumerate(codes):  # each answer is its own image's, whatever batch it rode in
        np.testing.assert_array_equal(got[0], want["codes"][k % 8])
    deadline = time.monotonic() + 10
    while (counted := server.batching())[0] - before_images < burst:
        assert time.monotonic() < deadline, f"metrics never counted the burst: {counted}"
        time.sleep(0.2)
    images_done, calls = counted[0] - before_images, counted[1] - before_calls
    assert images_done == burst
    assert 1 <= calls <= burst / 2, f"{burst} requests ran in {calls} model executions"


def test_a_malformed_request_gets_a_clear_error_and_the_server_keeps_serving(server, images):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_target)
    wrong = np.zeros((1, 3, 32, 32), np.float32)  # the model takes 64 x 64
    tensor = grpcclient.InferInput(INPUT_NAME, list(wrong.shape), "FP32")
    tensor.set_data_from_numpy(wrong)
    with pytest.raises(InferenceServerException, match="unexpected shape"):
        client.infer(server.model, [tensor])
    assert_same(asyncio.run(http_infer(server, images[:1])), reference(images[:1]))
