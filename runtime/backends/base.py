"""The backend interface: float32 (B, 3, H, W) in, masks / codes / code distances out."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.contract import VARIANT_FILES, Manifest


class BackendError(RuntimeError):
    """A backend that cannot run as configured; the message is one line."""


@dataclass(frozen=True)
class ModelOutputs:
    masks: np.ndarray
    """float32 (B, K, H, W): per-slot mask scores, summing to 1 over K."""
    codes: np.ndarray
    """int64 (B, K): codebook index per slot."""
    distances: np.ndarray
    """float32 (B, K): distance from each slot to its code."""


class Backend(abc.ABC):
    name: str
    provider: str
    """The execution provider / device really in use (not merely the one asked for)."""
    variant: str
    max_instances: int | None = None
    """How many backends of this kind the service may run side by side as model instances,
    each called from its own thread (None: any number)."""

    @abc.abstractmethod
    def infer(self, images: np.ndarray) -> ModelOutputs:
        """images: float32 (B, 3, H, W), normalised as the manifest says
        (`runtime.contract.to_model_input`)."""

    def describe(self) -> dict:
        return {"backend": self.name, "provider": self.provider, "variant": self.variant}


def variant_file(bundle: Path, manifest: Manifest, variant: str) -> Path:
    name = VARIANT_FILES[variant]
    if variant != "fp32" and name not in manifest.files:
        have = ", ".join(["fp32", *sorted(v for v in manifest.variants if v in VARIANT_FILES)])
        raise BackendError(
            f"bundle {manifest.name} has no {variant} variant (it has: {have}); "
            "run `python -m export variants` or choose another SLOTSERVE_VARIANT"
        )
    return bundle / name
