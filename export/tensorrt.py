"""TensorRT engines from a bundle, and the onnxruntime TensorRT execution-provider options.

UNVERIFIED: TensorRT cannot be installed on the development machines (its libraries come
from a host out of reach), so this path is written against TensorRT's documented Python API
(`tensorrt.Builder`, `OnnxParser`, optimization profiles, `build_serialized_network`) and its
GPU tests are behind the `gpu` marker. What runs everywhere is tested: profile and option
construction, cache keys, the fp16 ONNX it feeds TensorRT 11.

Versions: TensorRT 10 still has the FP16 builder flag; TensorRT 11 removed it (strongly typed
networks take their precision from the ONNX), so for fp16 there we parse `model.fp16.onnx`.
Plans are tied to the GPU model and TensorRT version: they are built on the target and cached
under a key of (ONNX sha256, GPU name, TensorRT version, precision, profile)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from runtime.contract import (
    INPUT_NAME,
    MODEL_FILE,
    VARIANT_FILES,
    load_bundle,
    sha256_file,
    write_manifest,
)
from runtime.trt_options import BatchProfile

log = logging.getLogger(__name__)


def major_version(version: str) -> int:
    return int(version.split(".")[0])


def needs_fp16_onnx(trt_version: str, fp16: bool) -> bool:
    """TensorRT >= 11 is strongly typed: fp16 comes from an fp16 graph, not a builder flag."""
    return fp16 and major_version(trt_version) >= 11


def gpu_name() -> str:
    """Name of GPU 0 (nvidia-smi), or 'unknown-gpu' where none answers."""
    exe = shutil.which("nvidia-smi")
    if exe:
        res = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip().splitlines()[0]
    return "unknown-gpu"


def cache_key(
    onnx_sha256: str, gpu: str, trt_version: str, fp16: bool, profile: BatchProfile
) -> str:
    blob = json.dumps(
        {
            "onnx": onnx_sha256,
            "gpu": gpu,
            "trt": trt_version,
            "fp16": fp16,
            "profile": asdict(profile),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_name(gpu: str, trt_version: str, fp16: bool, key: str) -> str:
    safe = "".join(c if c.isalnum() else "-" for c in gpu).strip("-").lower()
    return f"model.{safe}.trt{trt_version}.{'fp16' if fp16 else 'fp32'}.{key}.plan"


def build_engine(
    onnx_path: Path,
    height: int,
    width: int,
    profile: BatchProfile,
    fp16: bool,
    workspace_gb: float = 4.0,
) -> bytes:
    """Parse an ONNX file and build a serialized plan (GPU and TensorRT required)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = major_version(trt.__version__)
    flags = 0
    if major < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if needs_fp16_onnx(trt.__version__, fp16):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp16 and major < 11:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    shapes = profile.shapes(height, width)
    opt_profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(opt_profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine (see its log above)")
    return bytes(plan)


def build_bundle_engine(
    bundle: str | Path,
    profile: BatchProfile = BatchProfile(),
    fp16: bool = True,
    cache_dir: str | Path | None = None,
) -> Path:
    """Build (or reuse from the cache) a plan for this GPU and TensorRT; record it in the bundle."""
    import tensorrt as trt

    bundle = Path(bundle)
    manifest = load_bundle(bundle)
    source = bundle / (
        VARIANT_FILES["fp16"] if needs_fp16_onnx(trt.__version__, fp16) else MODEL_FILE
    )
    if not source.exists():
        raise FileNotFoundError(
            f"{source}: build the fp16 variant first (python -m export variants)"
        )
    gpu = gpu_name()
    key = cache_key(sha256_file(source), gpu, trt.__version__, fp16, profile)
    name = plan_name(gpu, trt.__version__, fp16, key)
    cache = Path(cache_dir) if cache_dir else bundle / "trt-cache"
    cache.mkdir(parents=True, exist_ok=True)
    cached = cache / name
    if not cached.exists():
        log.info("building TensorRT engine %s on %s (TensorRT %s)", name, gpu, trt.__version__)
        cached.write_bytes(
            build_engine(source, manifest.input.height, manifest.input.width, profile, fp16)
        )
    target = bundle / name
    if target.resolve() != cached.resolve():
        shutil.copy2(cached, target)
    manifest.files[name] = sha256_file(target)
    manifest.variants[f"tensorrt-{'fp16' if fp16 else 'fp32'}"] = {
        "file": name,
        "gpu": gpu,
        "tensorrt": trt.__version__,
        "profile": asdict(profile),
        "source_onnx": source.name,
        "verified": False,
    }
    write_manifest(bundle, manifest)
    return target
