"""onnxruntime backend: CPU, CUDA or TensorRT execution provider, checked after loading.

`onnxruntime-gpu` quietly falls back to the CPU when CUDA or TensorRT libraries are missing,
so the provider reported (in /model and the model-info metric) is the one the session really
uses, read back from `get_providers()`. An explicit provider that does not load is an error;
`auto` takes the best that does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from runtime.backends.base import Backend, BackendError, ModelOutputs
from runtime.contract import INPUT_NAME, OUTPUT_CODES, OUTPUT_DISTANCES, OUTPUT_MASKS, Manifest
from runtime.trt_options import BatchProfile, ort_tensorrt_options

log = logging.getLogger(__name__)

PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
SHORT_NAMES = {v: k for k, v in PROVIDERS.items()}


def provider_chain(requested: str, available: list[str]) -> list[str]:
    """Providers to ask onnxruntime for, best first, always ending on the CPU."""
    if requested == "auto":
        wanted = [PROVIDERS["tensorrt"], PROVIDERS["cuda"]]
    elif requested == "tensorrt":
        wanted = [PROVIDERS["tensorrt"], PROVIDERS["cuda"]]
    else:
        wanted = [PROVIDERS[requested]]
    chain = [p for p in wanted if p in available and p != PROVIDERS["cpu"]]
    if requested not in ("auto", "cpu") and PROVIDERS[requested] not in available:
        raise BackendError(
            f"provider {requested} is not in this onnxruntime build (it offers "
            f"{', '.join(SHORT_NAMES.get(p, p) for p in available)}); install the gpu extra "
            "or set SLOTSERVE_PROVIDER=auto"
        )
    return [*chain, PROVIDERS["cpu"]]


def load_gpu_libraries(chain: list[str]) -> None:
    """Load CUDA and cuDNN from the nvidia pip packages (`onnxruntime-gpu[cuda,cudnn]`) before
    a GPU session is made: they are not on the loader's path, and without them onnxruntime
    quietly falls back to the CPU. Libraries already loaded (by torch, or found on the path)
    are kept; what cannot be found is reported by onnxruntime and then by the provider check."""
    if any(p != PROVIDERS["cpu"] for p in chain) and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def cuda_options(tf32: bool = False) -> dict[str, str]:
    """CUDA execution provider options. TF32 is onnxruntime's default there; it trades
    fp32 accuracy for speed, and the bundle's parity gate was passed in full fp32."""
    return {"use_tf32": "1" if tf32 else "0"}


def provider_options(
    chain: list[str],
    manifest: Manifest,
    variant: str = "fp32",
    max_batch_size: int = 64,
    trt_cache_dir: Path | None = None,
    cuda_tf32: bool = False,
) -> list[dict]:
    """One options dict per provider of `chain` (as `InferenceSession` takes them)."""
    options = []
    for p in chain:
        if p == PROVIDERS["tensorrt"]:
            options.append(
                ort_tensorrt_options(
                    manifest.input.height,
                    manifest.input.width,
                    BatchProfile(min=1, opt=max(1, max_batch_size // 2), max=max_batch_size),
                    fp16=variant == "fp16",
                    cache_dir=trt_cache_dir or Path("trt-cache"),
                )
            )
        elif p == PROVIDERS["cuda"]:
            options.append(cuda_options(cuda_tf32))
        else:
            options.append({})
    return options


def check_contract(session: ort.InferenceSession, manifest: Manifest, path: Path) -> None:
    """Refuse a graph whose inputs / outputs differ from what the manifest promises."""
    inputs = {i.name: i for i in session.get_inputs()}
    if set(inputs) != {INPUT_NAME}:
        raise BackendError(f"{path.name}: inputs {sorted(inputs)} != ['{INPUT_NAME}']")
    shape = inputs[INPUT_NAME].shape
    want = [3, manifest.input.height, manifest.input.width]
    if len(shape) != 4 or list(shape[1:]) != want or isinstance(shape[0], int):
        raise BackendError(
            f"{path.name}: input shape {shape} does not match the manifest "
            f"(batch, {want[0]}, {want[1]}, {want[2]}) with a symbolic batch"
        )
    outputs = {o.name: o for o in session.get_outputs()}
    missing = {OUTPUT_MASKS, OUTPUT_CODES, OUTPUT_DISTANCES} - set(outputs)
    if missing:
        raise BackendError(f"{path.name}: graph lacks outputs {sorted(missing)}")
    slots = outputs[OUTPUT_MASKS].shape[1]
    if isinstance(slots, int) and slots != manifest.num_slots:
        raise BackendError(
            f"{path.name}: graph has {slots} slots, the manifest says {manifest.num_slots}"
        )


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(
        self,
        path: Path,
        manifest: Manifest,
        variant: str = "fp32",
        provider: str = "auto",
        intra_op_threads: int = 0,
        inter_op_threads: int = 1,
        trt_cache_dir: Path | None = None,
        max_batch_size: int = 64,
        spinning: bool = True,
        cuda_tf32: bool = False,
        memory_arena: bool = True,
        memory_pattern: bool = False,
    ) -> None:
        self.variant = variant
        self.path = path
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = inter_op_threads
        options.enable_cpu_mem_arena = memory_arena
        options.enable_mem_pattern = memory_pattern
        options.log_severity_level = 3
        spin = "1" if spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        chain = provider_chain(provider, ort.get_available_providers())
        load_gpu_libraries(chain)
        per_provider = provider_options(
            chain,
            manifest,
            variant,
            max_batch_size,
            trt_cache_dir or path.parent / "trt-cache",
            cuda_tf32,
        )
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=chain, provider_options=per_provider
            )
        except Exception as err:  # onnxruntime raises its own exception types
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BackendError(f"{path.name}: onnxruntime cannot load it ({first})") from err
        check_contract(self.session, manifest, path)
        used = self.session.get_providers()[0]
        self.provider = SHORT_NAMES.get(used, used)
        if provider not in ("auto", self.provider):
            raise BackendError(
                f"asked for provider {provider} but onnxruntime runs on {self.provider} "
                "(missing CUDA / TensorRT libraries?); set SLOTSERVE_PROVIDER=auto to accept that"
            )
        self.input_dtype = np.float16 if "float16" in self.session.get_inputs()[0].type else None
        log.info("onnxruntime %s on %s (%s)", path.name, self.provider, ", ".join(chain))

    def infer(self, images: np.ndarray) -> ModelOutputs:
        feed = images if self.input_dtype is None else images.astype(self.input_dtype)
        masks, codes, distances = self.session.run(
            [OUTPUT_MASKS, OUTPUT_CODES, OUTPUT_DISTANCES], {INPUT_NAME: feed}
        )
        return ModelOutputs(
            masks=masks.astype(np.float32, copy=False),
            codes=codes.astype(np.int64, copy=False),
            distances=distances.astype(np.float32, copy=False),
        )

    def describe(self) -> dict:
        options = self.session.get_session_options()
        return {
            **super().describe(),
            "file": self.path.name,
            "providers": self.session.get_providers(),
            "onnxruntime": ort.__version__,
            "intra_op_threads": options.intra_op_num_threads,
            "spinning": options.get_session_config_entry("session.intra_op.allow_spinning") == "1",
            "memory_arena": options.enable_cpu_mem_arena,
            "memory_pattern": options.enable_mem_pattern,
        }
