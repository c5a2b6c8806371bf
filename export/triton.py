"""Triton Inference Server model repository from a bundle: the path for users who outgrow
one machine. Layout:

    REPO/NAME/config.pbtxt     dynamic batching, named I/O with dtypes and dims, instances
    REPO/NAME/1/model.onnx     (onnxruntime backend)
    REPO/NAME_trt/...          a TensorRT model beside it, when the bundle has a plan
"""

from __future__ import annotations

import shutil
from pathlib import Path

from export.contract import (
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
) -> str:
    """Triton model configuration (protobuf text format). Dims exclude the batch axis."""
    s, k = manifest.input.height, manifest.num_slots
    outputs = {
        OUTPUT_MASKS: ("float32", [k, s, s]),
        OUTPUT_CODES: ("int64", [k]),
        OUTPUT_DISTANCES: ("float32", [k]),
    }
    lines = [
        f'name: "{name}"',
        f'platform: "{platform}"',
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
    preferred = ", ".join(str(b) for b in preferred_batch_sizes if b <= max_batch_size)
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
        "parameters {",
        '  key: "slotserve_manifest_version"',
        f'  value: {{ string_value: "{manifest.version}" }}',
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
