"""Inference backends behind one interface (`Backend.infer`), chosen by settings."""

from service.backends.base import (
    Backend,
    BackendError,
    ModelOutputs,
    check_graph,
    check_provider,
    create_backend,
)

__all__ = [
    "Backend",
    "BackendError",
    "ModelOutputs",
    "check_graph",
    "check_provider",
    "create_backend",
]
