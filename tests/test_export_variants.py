"""fp16 / int8 variants and the Triton model repository."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from runtime.contract import VARIANT_FILES, load_bundle
from tests.conftest import run_module

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def with_variants(exported, tmp_path_factory):
    from export.variants import build_variants
    from training.checkpoint import load_checkpoint

    ckpt, bundle, _ = exported
    copy = tmp_path_factory.mktemp("variants") / "bundle"
    shutil.copytree(bundle, copy)
    model, _ = load_checkpoint(ckpt)
    results = build_variants(copy, scenes=32, threads=1, codebook=model.codebook.embed.numpy())
    return copy, results


def test_variants_are_written_hashed_and_measured(with_variants):
    bundle, results = with_variants
    manifest = load_bundle(bundle)  # hashes of the new files verify
    for name in ("fp16", "int8"):
        assert VARIANT_FILES[name] in manifest.files
        figures = manifest.variants[name]
        for key in ("code_agreement", "fg_ari_change", "speedup_vs_fp32", "fp32_ms", "ms"):
            assert key in figures, (name, key)
        assert 0.0 <= figures["code_agreement"] <= 1.0
    int8 = manifest.variants["int8"]
    assert int8["method"] in ("static", "dynamic") and int8["scope"] == "decoder"
    # the whole-graph static candidate is measured beside it, for the record
    assert {"static", "static-all"} <= set(int8["candidates"]) | set(int8["failed"])
    # static quantisation runs (its calibration reader gets the input contract), whether or
    # not it then wins on speed
    assert "static" in int8["candidates"], int8["failed"]
    assert results["fp16"]["code_agreement"] >= 0.99  # half precision keeps the codes


def test_fp16_keeps_float32_io_and_has_half_weights(with_variants):
    bundle, _ = with_variants
    model = onnx.load(str(bundle / VARIANT_FILES["fp16"]))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    halves = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves, "no fp16 weights in the fp16 variant"


def test_int8_quantises_the_decoder_only_and_codebook_stays_float(with_variants, exported):
    from export.variants import QUANTISABLE_OPS, codebook_nodes, scope_nodes
    from training.checkpoint import load_checkpoint

    bundle, _ = with_variants
    model = onnx.load(str(bundle / VARIANT_FILES["int8"]))
    ops = {n.op_type for n in model.graph.node}
    assert ops & {"QuantizeLinear", "DequantizeLinear", "MatMulInteger", "DynamicQuantizeLinear"}
    dequantised = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    # node names survive quantisation (module paths do not): compare with the fp32 graph
    decoder = set(scope_nodes(onnx.load(str(exported[1] / "model.onnx")), "decoder"))
    quantised = {"decoder": 0, "elsewhere": 0}
    for node in model.graph.node:
        integer = node.op_type in ("MatMulInteger", "ConvInteger")
        if integer or (node.op_type in QUANTISABLE_OPS and dequantised & set(node.input)):
            name = node.name.removesuffix("_quant")
            quantised["decoder" if name in decoder else "elsewhere"] += 1
    assert quantised["decoder"] >= 3 and quantised["elsewhere"] == 0, quantised
    codebook = load_checkpoint(exported[0])[0].codebook.embed.numpy()
    fp32 = onnx.load(str(exported[1] / "model.onnx"))
    assert codebook_nodes(fp32, codebook), "found no node reading the codebook"


def test_triton_config_parses_as_protobuf_text(exported, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from export.triton import write_triton_repo

    _, bundle, _ = exported
    configs = write_triton_repo(bundle, tmp_path / "repo", name="slots", max_batch_size=32)
    cfg = text_format.Parse(configs[0].read_text(), model_config_pb2.ModelConfig())
    assert cfg.name == "slots" and cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    assert [i.name for i in cfg.input] == ["image"] and list(cfg.input[0].dims) == [3, 32, 32]
    assert [o.name for o in cfg.output] == ["masks", "codes", "code_distances"]
    assert cfg.output[1].data_type == model_config_pb2.TYPE_INT64
    assert list(cfg.output[0].dims) == [4, 32, 32]
    assert list(cfg.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert cfg.instance_group[0].count == 1
    assert (tmp_path / "repo" / "slots" / "1" / "model.onnx").exists()


def test_triton_repo_includes_plan_when_present(exported, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from export.triton import write_triton_repo
    from runtime.contract import sha256_file, write_manifest

    _, bundle, _ = exported
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    (copy / "engine.plan").write_bytes(np.arange(16, dtype=np.uint8).tobytes())
    manifest = load_bundle(copy)
    manifest.files["engine.plan"] = sha256_file(copy / "engine.plan")
    write_manifest(copy, manifest)
    configs = write_triton_repo(copy, tmp_path / "repo", name="slots")
    assert len(configs) == 2
    trt = text_format.Parse(configs[1].read_text(), model_config_pb2.ModelConfig())
    assert (
        trt.platform == "tensorrt_plan"
        and trt.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    )


def test_tensorrt_profile_options_and_cache_keys():
    from export.tensorrt import cache_key, needs_fp16_onnx, plan_name
    from runtime.trt_options import BatchProfile, ort_tensorrt_options

    p = BatchProfile(1, 8, 32)
    assert p.shapes(64, 64)["max"] == (32, 3, 64, 64)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        BatchProfile(4, 2, 8)
    opts = ort_tensorrt_options(64, 64, p, fp16=True, cache_dir="c")
    assert opts["trt_profile_min_shapes"] == "image:1x3x64x64"
    assert opts["trt_profile_opt_shapes"] == "image:8x3x64x64"
    assert opts["trt_profile_max_shapes"] == "image:32x3x64x64"
    assert opts["trt_fp16_enable"] is True and opts["trt_engine_cache_enable"] is True
    # TensorRT 11 is strongly typed: fp16 must come from the fp16 ONNX; TensorRT 10 uses the flag
    assert needs_fp16_onnx("11.0.0", True) and not needs_fp16_onnx("10.9.0", True)
    assert not needs_fp16_onnx("11.0.0", False)
    a = cache_key("abc", "NVIDIA H200", "10.9.0", True, p)
    assert a == cache_key("abc", "NVIDIA H200", "10.9.0", True, p)
    assert (
        len(
            {
                a,
                cache_key("abc", "NVIDIA L4", "10.9.0", True, p),
                cache_key("abc", "NVIDIA H200", "11.0.0", True, p),
                cache_key("abc", "NVIDIA H200", "10.9.0", False, p),
                cache_key("abd", "NVIDIA H200", "10.9.0", True, p),
            }
        )
        == 5
    )
    assert (
        plan_name("NVIDIA H200", "10.9.0", True, a) == f"model.nvidia-h200.trt10.9.0.fp16.{a}.plan"
    )


@pytest.mark.gpu
def test_tensorrt_engine_builds_on_gpu(with_variants):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is only installable on GPU machines")
    from export.tensorrt import build_bundle_engine
    from runtime.trt_options import BatchProfile

    bundle, _ = with_variants
    plan = build_bundle_engine(bundle, BatchProfile(1, 4, 8), fp16=True)
    assert plan.stat().st_size > 0 and trt.__version__ in plan.name


def test_bentoml_import_and_cli_verbs(exported, tmp_path):
    import json
    import os

    _, bundle, _ = exported
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml")}
    res = run_module("export", "bentoml", "--bundle", str(bundle), "--name", "slots-test", env=env)
    assert res.returncode == 0, res.stderr
    tag = json.loads(res.stdout)["tag"]
    assert tag.startswith("slots-test:")
    stored = list((tmp_path / "bentoml" / "models" / "slots-test").glob("*/manifest.json"))
    assert stored, "bundle not in the model store"
    assert (stored[0].parent / "model.onnx").exists()

    res = run_module("export", "triton", "--bundle", str(bundle), "--out", str(tmp_path / "repo"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["configs"][0].endswith("config.pbtxt")

    res = run_module("export", "verify", "--bundle", str(tmp_path / "nope"), "--checkpoint", "x")
    assert res.returncode == 2 and res.stderr.startswith("error:") and res.stderr.count("\n") == 1


def test_variants_are_judged_on_the_scenes_of_the_bundles_label_set():
    from export.variants import variant_scenes
    from training.data.photos import photo_library

    photos = variant_scenes("photos", 4, 5, 64)
    assert len(photos) == 4 and all(s.image.shape == (64, 64, 3) for s in photos)
    categories = len(photo_library().categories)
    assert all(0 <= c < categories for s in photos for c in s.classes)
    assert all(s.image.mean() != 0 for s in photos)
    shapes = variant_scenes("shapes", 4, 5, 64)
    assert (
        len(shapes) == 4
        and variant_scenes(None, 4, 5, 64)[0].image.tobytes() == shapes[0].image.tobytes()
    )
    # a photo scene is not a shapes scene of the same seed
    assert photos[0].image.tobytes() != shapes[0].image.tobytes()


def test_static_int8_is_skipped_where_its_calibration_would_not_fit_memory():
    from export.variants import FULL_EVAL_BATCH, int8_methods
    from runtime.contract import load_bundle as load
    from training.config import ModelConfig
    from training.evaluate import eval_batch_size

    assert int8_methods("auto", FULL_EVAL_BATCH) == ["static", "dynamic"]
    assert int8_methods("static", 1) == ["static"] and int8_methods("dynamic", 16) == ["dynamic"]
    # the shipped photo model (Lite0 at 896 px) calibrates 5 images at a time: dynamic only
    models = Path(__file__).parents[1] / "models"
    photos = load(models / "slotserve-photos")
    batch = eval_batch_size(ModelConfig.model_validate(photos.model.model_dump()), 16)
    assert batch < FULL_EVAL_BATCH and int8_methods("auto", batch) == ["dynamic"]
    shapes = load(models / "slotserve-shapes")
    batch = eval_batch_size(ModelConfig.model_validate(shapes.model.model_dump()), 16)
    assert int8_methods("auto", batch) == ["static", "dynamic"]
