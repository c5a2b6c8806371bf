"""Export: checkpoints to self-describing model bundles (ONNX, fp16/int8, TensorRT, Triton).

Importing this package is cheap and torch-free: the bundle contract (`export.contract`) is
shared with the service, which must not need PyTorch. The exporters import torch lazily."""
