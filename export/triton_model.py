"""Triton Python-backend model: the bundle's ONNX graph run by onnxruntime inside Triton.

`python -m export triton` copies this file to `REPO/NAME_python/1/model.py`. It runs in
Triton's Python-backend stub, not in the project: it imports only numpy, onnxruntime and
Triton's `triton_python_backend_utils`, and reads tensor names, the ONNX file and the
onnxruntime threads from its own `config.pbtxt`.

Triton's dynamic batcher hands `execute` several requests at once, each with its own batch
axis; they are concatenated into one onnxruntime call (one model call per Triton batch, as
`nv_inference_exec_count` counts) and the outputs split back per request.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _parameters(config: dict) -> dict[str, str]:
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def session_options(params: dict[str, str]) -> ort.SessionOptions:
    """The service's onnxruntime settings (runtime/backends/onnxruntime.py), so that both
    servers run the same graph the same way."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
    options.inter_op_num_threads = int(params.get("inter_op_threads", "1"))
    options.enable_mem_pattern = False
    options.log_severity_level = 3
    return options


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = _parameters(config)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        onnx_file = version_dir / params.get("onnx_file", "model.onnx")
        self.session = ort.InferenceSession(
            str(onnx_file), session_options(params), providers=["CPUExecutionProvider"]
        )
        pb_utils.Logger.log_info(
            f"{args['model_name']}: {onnx_file.name} on onnxruntime {ort.__version__} "
            f"(numpy {np.__version__}, {sys.prefix})"
        )
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]
        graph_outputs = {o.name for o in self.session.get_outputs()}
        missing = set(self.output_names) - graph_outputs
        if missing:
            raise pb_utils.TritonModelException(
                f"{onnx_file.name} lacks outputs {sorted(missing)} named in config.pbtxt"
            )

    def execute(self, requests: list) -> list:
        batches = [
            pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
        ]
        try:
            outputs = self.session.run(
                self.output_names, {self.input_name: np.concatenate(batches)}
            )
        except Exception as err:  # onnxruntime raises its own types: answer every request
            reason = (str(err).strip() or type(err).__name__).splitlines()[0]
            error = pb_utils.TritonError(f"onnxruntime: {reason}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for batch in batches:
            stop = start + len(batch)
            tensors = [
                pb_utils.Tensor(name, out[start:stop])
                for name, out in zip(self.output_names, outputs)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses
