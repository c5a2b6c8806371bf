"""gRPC beside HTTP: the `slotserve.v1` API (proto and generated code under `slotserve/v1/`).

Regenerate the Python code after editing the proto with `make proto`.
"""
