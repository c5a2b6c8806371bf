"""scripts/decoder_probe.py: the autoregressive decoder only sees earlier tokens, its masks are
distributions over slots, and a tiny run writes both decoders' figures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def probe_module():
    spec = importlib.util.spec_from_file_location(
        "decoder_probe", REPO / "scripts/decoder_probe.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_autoregressive_decoder_predicts_each_token_from_earlier_ones_only():
    probe = probe_module()
    torch.manual_seed(0)
    decoder = probe.AutoregressiveDecoder(slot_dim=16, tokens=9, feature_dim=5, dim=16, layers=2)
    decoder.eval()
    slots, target = torch.randn(2, 4, 16), torch.randn(2, 9, 5)
    recon, masks = decoder(slots, target)
    assert recon.shape == (2, 9, 5) and masks.shape == (2, 4, 9)
    torch.testing.assert_close(masks.sum(1), torch.ones(2, 9))

    changed = target.clone()
    changed[:, 5:] += 1.0  # tokens 5.. are inputs to the predictions of tokens 6..
    recon2, _ = decoder(slots, changed)
    torch.testing.assert_close(recon2[:, :6], recon[:, :6])
    assert not torch.allclose(recon2[:, 6:], recon[:, 6:])

    other_slots = torch.randn(2, 4, 16)  # every token, the first included, sees the slots
    assert not torch.allclose(decoder(other_slots, target)[0][:, 0], recon[:, 0])


def test_a_tiny_probe_run_writes_both_decoders_figures(tmp_path: Path):
    probe = probe_module()
    args = ["--out", str(tmp_path), "--train-scenes", "8", "--val-scenes", "4"]
    assert probe.main([*args, "--steps", "2", "--batch", "4", "--threads", "1"]) == 0
    result = json.loads((tmp_path / "decoder_probe.json").read_text())
    for decoder in ("mlp", "ar"):
        scores = result[decoder]["scores"]
        assert set(scores) == {"radius 0", "radius 32"}
        for s in scores.values():
            assert -1.0 <= s["fg_ari"] <= 1.0 and 0.0 <= s["mbo"] <= 1.0
        assert result[decoder]["seconds_per_step"] > 0
    assert set(result["baselines"]) == {"k-means on RGB", "k-means on Lite0 features"}
    assert (tmp_path / "train.pt").exists() and (tmp_path / "unseen.pt").exists()
