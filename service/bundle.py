"""Which bundle to serve: the SLOTSERVE_BUNDLE setting, else the BentoML model store, else the
default bundle shipped in the repository, so a fresh clone serves at once."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from runtime.backends import BackendError, check_graph, check_provider
from runtime.contract import BundleError, Manifest, load_bundle
from service.settings import DEFAULT_BUNDLE, Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedBundle:
    path: Path
    manifest: Manifest
    source: str
    """'setting', 'model store <tag>' or 'shipped default'."""


def _from_store(tag: str) -> Path | None:
    try:
        import bentoml
        from bentoml.exceptions import NotFound
    except ImportError:
        return None
    try:
        return Path(bentoml.models.get(tag).path)
    except (NotFound, ValueError):
        return None


def resolve_bundle(settings: Settings) -> ResolvedBundle:
    """Find and verify (sha256 of every file) the bundle to serve; BundleError if unusable."""
    if settings.bundle is not None:
        path, source = Path(settings.bundle), "setting"
        if not path.is_dir():
            raise BundleError(f"SLOTSERVE_BUNDLE={path}: not a directory")
    elif (stored := _from_store(settings.model_tag)) is not None:
        path, source = stored, f"model store {settings.model_tag}"
    else:
        path, source = DEFAULT_BUNDLE, "shipped default"
    manifest = load_bundle(path)
    log.info("serving bundle %s %s from %s", manifest.name, manifest.version, source)
    return ResolvedBundle(path, manifest, source)


def check_bundle_or_exit(settings: Settings) -> None:
    """Resolve and verify the bundle, load its graph once on the CPU and check the provider:
    on any problem, exit with status 1 and one line (never serve a wrong model)."""
    try:
        bundle = resolve_bundle(settings)
        check_graph(bundle.path, bundle.manifest, settings.variant)
        if settings.backend == "onnxruntime":
            check_provider(settings.provider)
    except (BundleError, BackendError) as err:
        raise SystemExit(f"slotserve: refusing to serve: {err}") from None
