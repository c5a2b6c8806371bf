"""Lightning's resume checkpoint (`checkpoints/last.ckpt`), written atomically, read without
arbitrary pickle.

A kill during a write must never leave a corrupt latest checkpoint: the state is written to
a temporary file in the same folder, flushed to disk, then renamed over the old one (rename
is atomic within a filesystem), so `last.ckpt` is always either the previous or the new
complete checkpoint. Loading uses `torch.load(weights_only=True)`: tensors and plain
containers only, no code runs from a checkpoint file.

A resumed run also keeps the CSV log of the steps before it (`keep_log_history`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from training.checkpoint import replacing


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        with replacing(Path(path)) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


HISTORY = "metrics-before-resume.csv"


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    with replacing(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def keep_log_history(logs: Path, resume_step: int) -> None:
    """Before a resumed run: Lightning's CSVLogger starts `metrics.csv` afresh on every run,
    so fold its rows from before the checkpoint's step (later ones are trained again) into
    `HISTORY`, which `restore_log_history` puts back in front once the run ends. A run killed
    again before then keeps its history for the next resume."""
    rows = _read_rows(logs / HISTORY) + _read_rows(logs / "metrics.csv")
    kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) < resume_step]
    if kept:
        _write_rows(logs / HISTORY, kept)


def restore_log_history(logs: Path) -> None:
    """After a run: `metrics.csv` = the history before the resume + this run's rows."""
    history = logs / HISTORY
    if history.exists():
        _write_rows(logs / "metrics.csv", _read_rows(history) + _read_rows(logs / "metrics.csv"))
        history.unlink()
