"""Inference backends behind one interface (`Backend.infer`), chosen by settings."""

from runtime.backends.base import Backend, BackendError, ModelOutputs, variant_file
from runtime.backends.factory import check_graph, check_provider, create_backend

__all__ = [
    "Backend",
    "BackendError",
    "ModelOutputs",
    "check_graph",
    "check_provider",
    "create_backend",
    "variant_file",
]
