"""Where `python -m export onnx` puts a bundle: built apart, then moved to `--out`, and never
over a different bundle unless asked (`--force`).

An export takes minutes, so what can be refused at once is: `--out` holding files that are no
bundle, or a bundle of another checkpoint. A bundle of the same checkpoint is compared after
the export: the same graph and manifest (up to the export's date and measured figures) leaves
`--out` as it was (a tracked bundle stays clean in git); a different one is refused."""

from __future__ import annotations

import shutil
from pathlib import Path

from runtime.contract import MANIFEST_FILE, MODEL_FILE, BundleError, read_manifest, sha256_file

MEASURED = {"created", "parity", "variants", "tools", "files"}
"""Manifest fields that change from one export of the same model to the next."""


def _refusal(out: Path, why: str) -> BundleError:
    return BundleError(f"{out} {why}; pass --force to overwrite it, or choose another --out")


def refuse_early(out: Path, checkpoint: str | Path, force: bool) -> None:
    """Refuse before exporting when `out` certainly holds something else."""
    if force or not out.exists() or not any(out.iterdir()):
        return
    if not (out / MANIFEST_FILE).exists():
        raise _refusal(out, "holds files but no bundle")
    if read_manifest(out).checkpoint_sha256 != sha256_file(checkpoint):
        raise _refusal(out, "holds a bundle of another checkpoint")


def same_bundle(existing: Path, new: Path) -> bool:
    """The same fp32 graph, byte for byte, and the same manifest but for measured figures."""
    if not (existing / MANIFEST_FILE).exists():
        return False
    old, fresh = read_manifest(existing), read_manifest(new)
    if old.files.get(MODEL_FILE) != fresh.files.get(MODEL_FILE):
        return False
    return old.model_dump(exclude=MEASURED) == fresh.model_dump(exclude=MEASURED)


def place(staging: Path, out: Path, force: bool) -> None:
    """Move the bundle built in `staging` to `out` (refusing a different one unless forced)."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise _refusal(out, "holds a different bundle")
        shutil.rmtree(out)
    elif out.exists():
        out.rmdir()
    staging.rename(out)
