"""Native TensorRT backend for plans built by `python -m export tensorrt` (GPU only).

UNVERIFIED: written against the TensorRT 10 Python API (named I/O tensors, `set_input_shape`,
`set_tensor_address`, `execute_async_v3`) and cuda-python's runtime bindings; neither can be
installed on the CPU machines this project is developed on. Its tests sit behind the `gpu`
marker. Plans are tied to a GPU model and a TensorRT version, so the plan is looked up in the
manifest's `tensorrt-<precision>` variant and its recorded GPU is checked against this one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from runtime.backends.base import Backend, BackendError, ModelOutputs
from runtime.contract import INPUT_NAME, OUTPUT_CODES, OUTPUT_DISTANCES, OUTPUT_MASKS, Manifest

log = logging.getLogger(__name__)


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as err:
            raise BackendError(
                "the tensorrt backend needs cuda-python (pip install cuda-python)"
            ) from err
    return cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA call failed with error {int(err)}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTBackend(Backend):
    name = "tensorrt"
    max_instances = 1  # several engines side by side on one GPU: not measured, so one

    def __init__(self, plan: Path, variant: str) -> None:
        try:
            import tensorrt as trt
        except ImportError as err:
            raise BackendError("the tensorrt backend needs the tensorrt package") from err
        self.cudart = _cudart()
        self.variant = variant
        self.plan = plan
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise BackendError(f"{plan.name}: TensorRT cannot deserialize it (other GPU/version?)")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        self.max_batch = int(self.engine.get_tensor_profile_shape(INPUT_NAME, 0)[2][0])
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self.provider = "tensorrt-native"

    @classmethod
    def from_bundle(cls, bundle: Path, manifest: Manifest, variant: str) -> TensorRTBackend:
        key = f"tensorrt-{'fp16' if variant == 'fp16' else 'fp32'}"
        entry = manifest.variants.get(key)
        if not entry:
            raise BackendError(
                f"bundle {manifest.name} has no {key} plan; build it on this GPU with "
                "`python -m export tensorrt --bundle DIR`"
            )
        return cls(bundle / entry["file"], variant)

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr))
            ptr = _check(self.cudart.cudaMalloc(nbytes))
            self.buffers[name] = (ptr, nbytes)
        return ptr

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        trt, cudart = self.trt, self.cudart
        feed = np.ascontiguousarray(
            images, dtype=trt.nptype(self.engine.get_tensor_dtype(INPUT_NAME))
        )
        self.context.set_input_shape(INPUT_NAME, feed.shape)
        src = self._device(INPUT_NAME, feed.nbytes)
        kind = cudart.cudaMemcpyKind
        _check(
            cudart.cudaMemcpyAsync(
                src, feed.ctypes.data, feed.nbytes, kind.cudaMemcpyHostToDevice, self.stream
            )
        )
        self.context.set_tensor_address(INPUT_NAME, src)
        outputs: dict[str, np.ndarray] = {}
        for name in self.names:
            if name == INPUT_NAME:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            host = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._device(name, host.nbytes))
            outputs[name] = host
        if not self.context.execute_async_v3(self.stream):
            raise BackendError("TensorRT execution failed")
        for name, host in outputs.items():
            _check(
                cudart.cudaMemcpyAsync(
                    host.ctypes.data,
                    self.buffers[name][0],
                    host.nbytes,
                    kind.cudaMemcpyDeviceToHost,
                    self.stream,
                )
            )
        _check(cudart.cudaStreamSynchronize(self.stream))
        return outputs

    def infer(self, images: np.ndarray) -> ModelOutputs:
        parts = [
            self._run(images[i : i + self.max_batch]) for i in range(0, len(images), self.max_batch)
        ]
        cat = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        return ModelOutputs(
            masks=cat[OUTPUT_MASKS].astype(np.float32, copy=False),
            codes=cat[OUTPUT_CODES].astype(np.int64, copy=False),
            distances=cat[OUTPUT_DISTANCES].astype(np.float32, copy=False),
        )

    def describe(self) -> dict:
        return {
            **super().describe(),
            "file": self.plan.name,
            "tensorrt": self.trt.__version__,
            "max_batch": self.max_batch,
            "verified": False,
        }
