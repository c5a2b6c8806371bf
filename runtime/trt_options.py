"""TensorRT batch profiles and onnxruntime's TensorRT execution-provider options.

Shared by the service's onnxruntime backend (which passes the options) and by export's
TensorRT engine builder (which builds plans over the same profile)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.contract import INPUT_NAME


@dataclass(frozen=True)
class BatchProfile:
    """Optimization profile over the batch axis (TensorRT needs min <= opt <= max)."""

    min: int = 1
    opt: int = 16
    max: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"batch profile needs 1 <= min <= opt <= max, got {self.min}/{self.opt}/{self.max}"
            )

    def shapes(self, height: int, width: int) -> dict[str, tuple[int, int, int, int]]:
        return {k: (getattr(self, k), 3, height, width) for k in ("min", "opt", "max")}


def ort_tensorrt_options(
    height: int,
    width: int,
    profile: BatchProfile = BatchProfile(),
    fp16: bool = True,
    cache_dir: str | Path = "trt-cache",
    workspace_gb: float = 4.0,
) -> dict[str, object]:
    """Provider options for onnxruntime's TensorrtExecutionProvider (engine cache on, one
    explicit profile over the batch range, as the service uses them)."""
    shapes = profile.shapes(height, width)
    fmt = {k: f"{INPUT_NAME}:{'x'.join(map(str, v))}" for k, v in shapes.items()}
    return {
        "trt_fp16_enable": fp16,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_max_workspace_size": int(workspace_gb * (1 << 30)),
        "trt_profile_min_shapes": fmt["min"],
        "trt_profile_opt_shapes": fmt["opt"],
        "trt_profile_max_shapes": fmt["max"],
    }
