"""Triton Inference Server model repository from a bundle: the path for users who outgrow
one machine. Layout (docs/triton.md):

    REPO/NAME/config.pbtxt          onnxruntime backend (platform onnxruntime_onnx): production
    REPO/NAME/1/model.onnx
    REPO/NAME_trt/...               TensorRT (platform tensorrt_plan), when the bundle has a plan
    REPO/NAME_python/config.pbtxt   Python backend: for a Triton build without the onnxruntime
    REPO/NAME_python/1/model.py     backend (PyPI's nvidia-pytriton); model.py runs the same
    REPO/NAME_python/1/model.onnx   graph with onnxruntime, batched by Triton's dynamic batcher

Every config carries dynamic batching, named I/O with dtypes and dims, the instance group, a
warm-up request and the bundle's version; they differ only in what runs the graph.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runtime.contract import (
    INPUT_NAME,
    MODEL_FILE,
    OUTPUT_CODES,
    OUTPUT_DISTANCES,
    OUTPUT_MASKS,
    Manifest,
    load_bundle,
)

_DTYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64"}


def config_pbtxt(
    name: str,
    manifest: Manifest,
    platform: str = "onnxruntime_onnx",
    max_batch_size: int = 64,
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32),
    max_queue_delay_us: int = 2000,
    instances: int = 1,
    kind: str = "KIND_AUTO",
    backend: str | None = None,
    parameters: dict[str, str] | None = None,
) -> str:
    """Triton model configuration (protobuf text format). Dims exclude the batch axis.

    `backend` (e.g. "python") replaces `platform`; `parameters` are added to the bundle's
    version as string parameters (the Python model reads its settings from them)."""
    s, k = manifest.input.height, manifest.num_slots
    outputs = {
        OUTPUT_MASKS: ("float32", [k, s, s]),
        OUTPUT_CODES: ("int64", [k]),
        OUTPUT_DISTANCES: ("float32", [k]),
    }
    lines = [
        f'name: "{name}"',
        f'backend: "{backend}"' if backend else f'platform: "{platform}"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        "  {",
        f'    name: "{INPUT_NAME}"',
        "    data_type: TYPE_FP32",
        f"    dims: [ 3, {s}, {s} ]",
        "  }",
        "]",
        "output [",
    ]
    for i, (out, (dtype, dims)) in enumerate(outputs.items()):
        lines += [
            "  {",
            f'    name: "{out}"',
            f"    data_type: {_DTYPES[dtype]}",
            f"    dims: [ {', '.join(map(str, dims))} ]",
            "  }" + ("," if i < 2 else ""),
        ]
    # sizes above the model's limit are dropped; a limit below them all is itself preferred
    fitting = [b for b in preferred_batch_sizes if b <= max_batch_size] or [max_batch_size]
    preferred = ", ".join(map(str, fitting))
    lines += [
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {preferred} ]",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {instances}",
        f"    kind: {kind}",
        "  }",
        "]",
        "model_warmup [",
        "  {",
        '    name: "zeros"',
        "    batch_size: 1",
        "    inputs {",
        f'      key: "{INPUT_NAME}"',
        "      value {",
        "        data_type: TYPE_FP32",
        f"        dims: [ 3, {s}, {s} ]",
        "        zero_data: true",
        "      }",
        "    }",
        "  }",
        "]",
    ]
    params = {"slotserve_manifest_version": manifest.version, **(parameters or {})}
    for key, value in params.items():
        lines += [
            "parameters {",
            f"  key: {json.dumps(key)}",
            f"  value: {{ string_value: {json.dumps(value)} }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def write_triton_repo(
    bundle: str | Path, repo: str | Path, name: str | None = None, **kw
) -> list[Path]:
    """Write a model repository; returns the config files written."""
    bundle, repo = Path(bundle), Path(repo)
    manifest = load_bundle(bundle)
    name = name or manifest.name
    written = []
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy2(bundle / MODEL_FILE, model_dir / "1" / "model.onnx")
    (model_dir / "config.pbtxt").write_text(config_pbtxt(name, manifest, **kw))
    written.append(model_dir / "config.pbtxt")
    plans = sorted(bundle.glob("*.plan"))
    if plans:
        trt_dir = repo / f"{name}_trt"
        (trt_dir / "1").mkdir(parents=True, exist_ok=True)
        shutil.copy2(plans[0], trt_dir / "1" / "model.plan")
        kw = {**kw, "kind": "KIND_GPU"}
        (trt_dir / "config.pbtxt").write_text(
            config_pbtxt(f"{name}_trt", manifest, "tensorrt_plan", **kw)
        )
        written.append(trt_dir / "config.pbtxt")
    return written


PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_model.py")
"""The Python-backend model, copied to NAME_python/1/model.py."""


def write_python_model(
    bundle: str | Path,
    repo: str | Path,
    name: str | None = None,
    python_env: str | None = None,
    intra_op_threads: int = 0,
    **kw,
) -> Path:
    """Write REPO/NAME_python: the bundle's ONNX graph served by Triton's Python backend with
    onnxruntime. `python_env` becomes the model's EXECUTION_ENV_PATH (a packed or unpacked
    environment with numpy and onnxruntime; `$$TRITON_MODEL_DIRECTORY/...` is relative to the
    model's folder); without it the stub's own interpreter must have them. Returns the config."""
    bundle, repo = Path(bundle), Path(repo)
    manifest = load_bundle(bundle)
    name = f"{name or manifest.name}_python"
    model_dir = repo / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    shutil.copy2(bundle / MODEL_FILE, model_dir / "1" / "model.onnx")
    shutil.copy2(PYTHON_MODEL_SOURCE, model_dir / "1" / "model.py")
    parameters = {"onnx_file": "model.onnx", "intra_op_threads": str(intra_op_threads)}
    if python_env:
        parameters["EXECUTION_ENV_PATH"] = python_env
    kw = {"kind": "KIND_CPU", **kw}
    config = config_pbtxt(name, manifest, backend="python", parameters=parameters, **kw)
    (model_dir / "config.pbtxt").write_text(config)
    return model_dir / "config.pbtxt"
