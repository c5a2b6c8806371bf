"""The import layering (pyproject.toml `[tool.importlinter]`) holds, and a broken layer is caught.

Dependencies run along the pipeline: training -> export -> service, with the torch-free
runtime (bundle contract, backends) below all three; `lint-imports` (Import Linter) checks it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("runtime", "training", "export", "service", "loadtests")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(exe), "--no-cache", "--no-logo", "pyproject.toml"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def _copy_sources(dst: Path) -> None:
    shutil.copy(REPO / "pyproject.toml", dst)
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, dst / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )


def test_a_forbidden_import_breaks_its_contract(tmp_path):
    """The same sources with one import against the rules: lint-imports fails and names both
    the contract and the import (so the check above is not vacuous)."""
    _copy_sources(tmp_path)
    assert lint_imports(tmp_path).returncode == 0
    pipeline = tmp_path / "service" / "pipeline.py"
    pipeline.write_text(pipeline.read_text() + "\nfrom training.config import TrainConfig\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "A serving image needs neither PyTorch nor the training code BROKEN" in result.stdout
    assert "service.pipeline -> training.config" in result.stdout


def test_an_import_cycle_between_backends_is_caught(tmp_path):
    """The factory / backend loop this layering removed: put it back and the check fails."""
    _copy_sources(tmp_path)
    base = tmp_path / "runtime" / "backends" / "base.py"
    base.write_text(base.read_text() + "\nfrom runtime.backends.factory import create_backend\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "runtime.backends.base -> runtime.backends.factory" in result.stdout
