"""scripts/code_probe.py: a tiny run trains the photo model once per codebook source and writes
grouping and code figures for each."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def probe_module():
    spec = importlib.util.spec_from_file_location("code_probe", REPO / "scripts/code_probe.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tiny_probe_run_writes_figures_for_both_sources(tmp_path: Path):
    probe = probe_module()
    args = ["--out", str(tmp_path), "--train-scenes", "8", "--val-scenes", "4"]
    extra = ["--naming-scenes", "8", "--steps", "2", "--batch", "4", "--threads", "1"]
    assert probe.main([*args, *extra]) == 0
    result = json.loads((tmp_path / "code_probe.json").read_text())
    for source in ("slots", "features"):
        r = result[source]
        assert -1.0 <= r["fg_ari"] <= 1.0 and 0.0 <= r["mbo"] <= 1.0
        assert 1 <= r["codes_used"] <= 32
        assert r["served_labels"]["objects"] > 0
        assert r["seconds_per_step"] > 0
    reference = result["ground_truth_masks"]
    assert reference["objects"] >= 8 and 0.0 <= reference["naming_accuracy"] <= 1.0
    # the scenes are drawn again for their categories: a cache of other scenes is refused
    with pytest.raises(SystemExit, match="does not hold these"):
        probe.main([*args[:2], "--train-scenes", "8", "--val-scenes", "5", *extra])


def test_naming_needs_scenes_from_the_training_cache(tmp_path: Path):
    probe = probe_module()
    with pytest.raises(SystemExit):
        probe.main(["--out", str(tmp_path), "--train-scenes", "8", "--naming-scenes", "9"])


def recipe_module():
    path = REPO / "scripts/recipe_probe.py"
    spec = importlib.util.spec_from_file_location("recipe_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tiny_recipe_probe_writes_one_line_per_variant(tmp_path: Path):
    probe = recipe_module()
    args = ["--out", str(tmp_path), "--train-scenes", "8", "--val-scenes", "4", "--steps", "2"]
    args += ["--batch", "4", "--threads", "1", "--variant", "base="]
    args += ["--variant", "iters5=model.slot_attention.iterations=5"]
    assert probe.main(args) == 0
    lines = (tmp_path / "recipe_probe.jsonl").read_text().splitlines()
    results = {r["variant"]: r for r in map(json.loads, lines)}
    assert results["base"]["overrides"] == []
    assert results["iters5"]["overrides"] == ["model.slot_attention.iterations=5"]
    for r in results.values():
        assert -1.0 <= r["fg_ari"] <= 1.0 and 0.0 <= r["mbo"] <= 1.0 and r["steps"] == 2
    # the recipe's Lite0 input follows the cache's grid (448 px: 14x14 tokens), whatever
    # photos.yaml trains at, so the learned positions are the cached tokens'
    cfg = probe.cache_config(torch.zeros(1, 196, 320), ["model.slot_attention.iterations=5"])
    assert cfg.model.encoder.lite0_input == 448 == cfg.model.encoder.eval_input
    assert cfg.model.slot_attention.iterations == 5
    with pytest.raises(ValueError, match="NAME=OVERRIDES"):
        probe.variant_arg("=model.slot_attention.iterations=5")
