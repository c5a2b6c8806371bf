"""`python -m export triton`: the repository layout and the Python-backend model's config
(the server itself: tests/test_triton_server.py)."""

from __future__ import annotations

import json

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.conftest import run_module


def parse(path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_cli_writes_production_and_python_backend_models_side_by_side(exported, tmp_path):
    _, bundle, _ = exported
    repo = tmp_path / "repo"
    res = run_module(
        "export", "triton", "--bundle", bundle, "--out", repo, "--name", "slots",
        "--max-batch-size", "16", "--instances", "2",
        "--python-env", "$$TRITON_MODEL_DIRECTORY/env.tar.gz",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    configs = json.loads(res.stdout)["configs"]
    assert configs == [
        str(repo / "slots" / "config.pbtxt"),
        str(repo / "slots_python" / "config.pbtxt"),
    ]
    production, python = (parse(repo / name / "config.pbtxt") for name in ("slots", "slots_python"))

    assert production.platform == "onnxruntime_onnx" and not production.backend
    assert python.backend == "python" and not python.platform and python.name == "slots_python"
    # one contract: the same tensors, batching and warm-up, whatever runs the graph
    for field in ("input", "output", "max_batch_size", "dynamic_batching", "model_warmup"):
        assert getattr(python, field) == getattr(production, field), field
    assert python.max_batch_size == 16 and list(python.dynamic_batching.preferred_batch_size) == [
        8,
        16,
    ]
    assert python.instance_group[0].count == 2
    assert python.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    params = {k: v.string_value for k, v in python.parameters.items()}
    assert params["EXECUTION_ENV_PATH"] == "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
    assert params["onnx_file"] == "model.onnx" and params["slotserve_manifest_version"] == "1"
    assert "EXECUTION_ENV_PATH" not in production.parameters

    version = repo / "slots_python" / "1"
    assert (version / "model.onnx").read_bytes() == (bundle / "model.onnx").read_bytes()
    assert "class TritonPythonModel" in (version / "model.py").read_text()


def test_a_bundles_own_batch_limit_is_tritons_unless_told_otherwise(exported, tmp_path):
    """A manifest's serving.max_batch_size (the photo model's activations take ~200 MB an
    image) becomes the models' max_batch_size; --max-batch-size still wins."""
    import shutil

    from runtime.contract import read_manifest, write_manifest

    _, bundle, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = read_manifest(copy)
    assert manifest.serving.max_batch_size is None
    manifest.serving.max_batch_size = 4
    write_manifest(copy, manifest)
    for extra, limit in (((), 4), (("--max-batch-size", "16"), 16)):
        repo = tmp_path / f"repo{limit}"
        args = ("export", "triton", "--bundle", copy, "--out", repo, "--name", "slots", *extra)
        res = run_module(*args)
        assert res.returncode == 0, res.stderr
        for name in ("slots", "slots_python"):
            config = parse(repo / name / "config.pbtxt")
            assert config.max_batch_size == limit
            assert max(config.dynamic_batching.preferred_batch_size) <= limit
    assert list(
        parse(tmp_path / "repo4" / "slots" / "config.pbtxt").dynamic_batching.preferred_batch_size
    ) == [4]


def test_without_an_environment_the_python_model_uses_the_stubs_interpreter(exported, tmp_path):
    from export.triton import write_python_model

    _, bundle, _ = exported
    config = parse(write_python_model(bundle, tmp_path / "repo", name="slots"))
    assert "EXECUTION_ENV_PATH" not in config.parameters
    assert config.parameters["intra_op_threads"].string_value == "0"


def test_a_bad_bundle_is_one_error_line_and_no_repository(tmp_path):
    (tmp_path / "bundle").mkdir()
    res = run_module(
        "export", "triton", "--bundle", tmp_path / "bundle", "--out", tmp_path / "repo"
    )
    assert res.returncode == 2 and res.stderr.startswith("error:") and res.stderr.count("\n") == 1
    assert not (tmp_path / "repo").exists()
