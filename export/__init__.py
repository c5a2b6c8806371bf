"""Export: checkpoints to self-describing model bundles (ONNX, fp16/int8, TensorRT, Triton).

Export sits between training (it loads checkpoints) and the service (it writes the bundles the
service reads); the bundle contract it writes by lives below both, in `runtime.contract`."""
