"""Import a bundle into the BentoML model store, so `bentoml build` packs it with the service."""

from __future__ import annotations

import shutil
from pathlib import Path

from runtime.contract import MANIFEST_FILE, load_bundle


def import_bundle(bundle: str | Path, name: str | None = None) -> str:
    """Copy a verified bundle into `bentoml.models.create(...)`; returns the model tag."""
    import bentoml

    bundle = Path(bundle)
    manifest = load_bundle(bundle)
    files = [MANIFEST_FILE, *sorted(manifest.files)]
    labels = {
        "format": manifest.format,
        "format_version": str(manifest.format_version),
        "model_version": manifest.version,
    }
    metadata = {
        "codebook_size": manifest.codebook_size,
        "num_slots": manifest.num_slots,
        "mask_source": manifest.mask_source,
        "checkpoint_sha256": manifest.checkpoint_sha256,
    }
    with bentoml.models.create(name or manifest.name, labels=labels, metadata=metadata) as model:
        for file in files:
            shutil.copy2(bundle / file, Path(model.path) / file)
    load_bundle(model.path)  # what landed in the store verifies too
    return str(model.tag)
