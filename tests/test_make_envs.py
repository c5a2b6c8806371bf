"""The Makefile's environments are built again when their pins change, and only then.

Each environment's stamp (`.installed`) holds the pins it was built with; `make -n` shows
whether make would build it again against a stamp of the same pins, of older pins, or none."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ENVS = {  # target: (the variable naming its folder, the pins it is built with)
    "venv": ("VENV", {"TORCH": "torch==9.9.9 torchvision==9.9.9"}),
    "triton-venv": (
        "TRITON_VENV",
        {"TRITON_PACKAGES": "numpy==9.9 onnxruntime==9.9", "TRITON_SERVER": "pytriton==9.9"},
    ),
}


def planned(target: str, folder: Path, pins: dict[str, str]) -> str:
    variable, _ = ENVS[target]
    assignments = [f"{k}={v}" for k, v in pins.items()]
    run = subprocess.run(
        ["make", "-n", "--no-print-directory", target, f"{variable}={folder}", *assignments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return run.stdout


def stamp_text(target: str) -> str:
    """What the recipe writes into the stamp for these pins."""
    _, pins = ENVS[target]
    return " ".join(pins.values())


@pytest.mark.parametrize("target", sorted(ENVS))
def test_an_environment_is_rebuilt_when_its_pins_change(target: str, tmp_path: Path):
    _, pins = ENVS[target]
    folder = tmp_path / "env"
    plan = planned(target, folder, pins)
    assert "pip install" in plan, "no stamp: make builds the environment"
    assert f"echo '{stamp_text(target)}' > {folder}/.installed" in plan, plan

    folder.mkdir()
    (folder / ".installed").write_text(stamp_text(target) + "\n")
    assert "pip install" not in planned(target, folder, pins), "same pins: nothing to build"

    bumped = {k: v.replace("9.9", "9.8") for k, v in pins.items()}
    assert "pip install" in planned(target, folder, bumped), "a pin changed: build it again"


def test_other_extras_do_not_rebuild_the_project_environment(tmp_path: Path):
    """A .venv built with EXTRAS=gpu,dev is kept by a later plain `make serve` (cpu,dev)."""
    _, pins = ENVS["venv"]
    folder = tmp_path / "env"
    folder.mkdir()
    (folder / ".installed").write_text(stamp_text("venv") + "\n")
    assert "pip install" not in planned("venv", folder, {**pins, "EXTRAS": "gpu,dev"})
