"""Lightning's resume checkpoint (`checkpoints/last.ckpt`), written atomically, read without
arbitrary pickle.

A kill during a write must never leave a corrupt latest checkpoint: the state is written to
a temporary file in the same folder, flushed to disk, then renamed over the old one (rename
is atomic within a filesystem), so `last.ckpt` is always either the previous or the new
complete checkpoint. Loading uses `torch.load(weights_only=True)`: tensors and plain
containers only, no code runs from a checkpoint file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
