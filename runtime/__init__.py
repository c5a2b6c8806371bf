"""The runtime shared by export and service, torch-free: the bundle contract
(`runtime.contract`: files, manifest, tensor names, input normalisation) and the inference
backends (`runtime.backends`: onnxruntime on CPU / CUDA / TensorRT, native TensorRT).

Dependencies run along the pipeline, training -> export -> service, with this package below
all three; the contracts in pyproject.toml (`[tool.importlinter]`) enforce it."""
