"""Checkpoints: the model config plus weights as safetensors, loaded without pickle.

One file (`*.safetensors`) holds every parameter and buffer; its string metadata holds the
resolved `ModelConfig` (JSON), the code names, the served code labels with the labelled set
they were fitted on, the training code-usage distribution and free-form run information. This
is the artefact export reads; Lightning's own resume state (`checkpoints/last.ckpt`) is separate
and only for resuming."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import save_file

from training.config import InferenceOverrides, ModelConfig
from training.labels import CodeLabel
from training.model import SelfModulatingSlotAttention, build_model

FORMAT_VERSION = "1"


@contextmanager
def replacing(path: Path) -> Iterator[str]:
    """Write `path` atomically: the body writes the yielded temporary file in the same folder,
    which then replaces `path` (a rename, atomic within a filesystem); if the body fails, or
    the process dies, `path` keeps its previous content and the temporary file is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass
class CheckpointInfo:
    config: ModelConfig
    code_names: list[str | None] | None = None
    """Each code's commonest truth on labelled scenes, background included: a diagnostic."""
    code_usage: list[float] | None = None
    """Training distribution of code assignments (sums to 1): the drift reference."""
    code_labels: list[CodeLabel] | None = None
    """What each code is served as (`training.labels`), fitted on `label_set` scenes."""
    label_set: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    model: SelfModulatingSlotAttention, path: str | Path, info: CheckpointInfo
) -> Path:
    """Write weights + metadata atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": "slotserve-checkpoint",
        "format_version": FORMAT_VERSION,
        "config": info.config.model_dump_json(),
        "code_names": json.dumps(info.code_names),
        "code_usage": json.dumps(info.code_usage),
        "code_labels": json.dumps(
            None if info.code_labels is None else [c.to_json() for c in info.code_labels]
        ),
        "label_set": json.dumps(info.label_set),
        "extra": json.dumps(info.extra),
    }
    with replacing(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return path


def read_info(path: str | Path) -> CheckpointInfo:
    """The metadata of a checkpoint, without loading its weights."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != "slotserve-checkpoint":
        raise ValueError(f"{path}: not a SlotServe checkpoint (no 'format' metadata)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format {meta.get('format_version')} != {FORMAT_VERSION}"
        )
    labels = json.loads(meta.get("code_labels", "null"))
    return CheckpointInfo(
        config=ModelConfig.model_validate_json(meta["config"]),
        code_names=json.loads(meta.get("code_names", "null")),
        code_usage=json.loads(meta.get("code_usage", "null")),
        code_labels=None if labels is None else [CodeLabel(**c) for c in labels],
        label_set=json.loads(meta.get("label_set", "null")),
        extra=json.loads(meta.get("extra", "{}")),
    )


def load_checkpoint(
    path: str | Path,
    device: str = "cpu",
    overrides: InferenceOverrides | None = None,
) -> tuple[SelfModulatingSlotAttention, CheckpointInfo]:
    """Rebuild the model from a checkpoint (config from its metadata), in eval mode.

    `overrides` change the checkpoint's inference settings (iterations, slot merging, mask
    refinement); those left None, or no overrides, keep the checkpoint's."""
    info = read_info(path)
    if overrides:
        info.config = overrides.apply(info.config)
    model = build_model(info.config)
    with safe_open(str(path), framework="pt", device=device) as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    model.load_state_dict(state, strict=True)
    return model.eval(), info
