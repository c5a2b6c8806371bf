"""scripts/label_probe.py and scripts/inference_probe.py: tiny runs write their figures, and
the naming and picking logic is right on hand-made cases."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans

from tests.conftest import small_checkpoint, small_config

REPO = Path(__file__).resolve().parents[1]
PHOTO = {
    "encoder": {"kind": "lite0", "lite0_input": 160, "lite0_reductions": (32,)},
    "decoder": {"kind": "features", "train_pixels": 16, "refine_radius": 2},
}


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_label_probe_names_clusters_by_their_commonest_category():
    probe = script("label_probe")
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))])
    y = np.array([0] * 20 + [3] * 20)
    kmeans = KMeans(2, n_init=2, random_state=0).fit(x)
    named = np.array([np.bincount(y[kmeans.labels_ == c]).argmax() for c in range(2)])
    assert probe.judge(kmeans, named, x, y)["naming_accuracy"] == 1.0
    swapped = probe.judge(kmeans, named[::-1].copy(), x, y)
    assert swapped["naming_accuracy"] == 0.0 and swapped["commonest_category_share"] == 0.5


def test_a_tiny_label_probe_writes_a_line_per_feature_and_cluster_count(tmp_path):
    out = tmp_path / "labels.jsonl"
    args = ["--out", str(out), "--sizes", "224", "--clusters", "2,3"]
    assert script("label_probe").main([*args, "--train-scenes", "16", "--eval-scenes", "8"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["features"], r["clusters"]) for r in rows] == [
        (kind, k) for kind in ("block", "head", "logits") for k in (2, 3)
    ]
    for r in rows:
        for split in ("unseen", "seen"):
            assert r[split]["objects"] >= 16 and 0.0 <= r[split]["naming_accuracy"] <= 1.0


@pytest.fixture(scope="module")
def photo_checkpoint(tmp_path_factory):
    return small_checkpoint(
        tmp_path_factory.mktemp("probe") / "m.safetensors", small_config(**PHOTO)
    )


def test_native_refine_scores_the_served_path_and_each_radius(photo_checkpoint, tmp_path):
    out = tmp_path / "p.jsonl"
    args = ["native-refine", "--checkpoint", str(photo_checkpoint), "--out", str(out)]
    assert script("inference_probe").main([*args, "--scenes", "4", "--radii", "2,4"]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["size"] == [96, 160] and row["scenes"] == 4
    for key in ("square_then_resized", "native_radius_2", "native_radius_4"):
        assert -1.0 <= row[key]["fg_ari"] <= 1.0 and 0.0 <= row[key]["mbo"] <= 1.0


def test_best_of_inits_scores_each_start_and_their_best(photo_checkpoint, tmp_path):
    out = tmp_path / "p.jsonl"
    args = ["best-of-inits", "--checkpoint", str(photo_checkpoint), "--out", str(out)]
    assert script("inference_probe").main([*args, "--scenes", "4", "--inits", "2"]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert set(row) >= {"init_0", "init_1", "best_of_2"}
    assert row["init_0"]["feature_error"] != row["init_1"]["feature_error"]  # other starts
    learned = small_checkpoint(
        tmp_path / "l.safetensors", small_config(**PHOTO, slot_attention={"init": "learned"})
    )
    with pytest.raises(SystemExit, match="init gaussian"):
        script("inference_probe").main(
            ["best-of-inits", "--checkpoint", str(learned), "--out", str(out)]
        )


def test_slot_count_scores_a_count_the_same_whatever_count_ran_before(photo_checkpoint, tmp_path):
    from training.checkpoint import load_checkpoint

    k = load_checkpoint(photo_checkpoint)[0].cfg.slot_attention.num_slots
    out = tmp_path / "p.jsonl"
    args = ["slot-count", "--checkpoint", str(photo_checkpoint), "--out", str(out)]
    assert script("inference_probe").main([*args, "--scenes", "4", "--slot-counts", str(k)]) == 0
    counts = f"{k + 2},{k}"  # another count first: its noise must not leak into the next
    assert script("inference_probe").main([*args, "--scenes", "4", "--slot-counts", counts]) == 0
    alone, after = [json.loads(line) for line in out.read_text().splitlines()]
    assert set(after) >= {f"slots_{k + 2}", f"slots_{k}"} and after["size"] == [128, 128]
    assert after[f"slots_{k}"] == alone[f"slots_{k}"]
    learned = small_checkpoint(
        tmp_path / "l.safetensors", small_config(**PHOTO, slot_attention={"init": "learned"})
    )
    with pytest.raises(SystemExit, match="init gaussian"):
        script("inference_probe").main(
            ["slot-count", "--checkpoint", str(learned), "--out", str(out)]
        )


def test_matching_undoes_a_permutation_of_the_slots():
    import torch

    probe = script("inference_probe")
    reference = torch.randn(3, 5, 8, 8).softmax(1)
    order = torch.tensor([3, 0, 4, 1, 2])
    assert torch.equal(probe.matched(reference, reference[:, order]), reference)


def test_ensemble_of_the_plain_pass_alone_is_the_plain_pass(photo_checkpoint, tmp_path):
    out = tmp_path / "p.jsonl"
    args = ["ensemble", "--checkpoint", str(photo_checkpoint), "--out", str(out), "--scenes", "4"]
    assert script("inference_probe").main([*args, "--sizes", "896"]) == 0
    assert script("inference_probe").main([*args, "--sizes", "832,896"]) == 0
    alone, two = [json.loads(line) for line in out.read_text().splitlines()]
    assert alone["scales"] == alone["plain"] and alone["scales_flip"] == alone["flip"]
    assert two["plain"] == alone["plain"] and two["sizes"] == [832, 896]
    with pytest.raises(SystemExit, match="896"):
        script("inference_probe").main([*args, "--sizes", "832"])


def test_snapshots_of_the_final_weights_score_as_the_final_weights(photo_checkpoint, tmp_path):
    import torch

    from training.checkpoint import load_checkpoint

    weights = load_checkpoint(photo_checkpoint)[0].state_dict()
    # as Lightning writes them: the module's weights under "model."; step 4000 copied twice
    for name, step in (("a", 2000), ("b", 4000), ("c", 4000)):
        state = {"global_step": step, "state_dict": {f"model.{k}": v for k, v in weights.items()}}
        torch.save(state, tmp_path / f"{name}.ckpt")
    out = tmp_path / "p.jsonl"
    args = ["snapshots", "--checkpoint", str(photo_checkpoint), "--out", str(out), "--scenes", "4"]
    glob = str(tmp_path / "*.ckpt")
    assert script("inference_probe").main([*args, "--snapshots", glob, "--average-from", "0"]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["step_2000"] == row["step_4000"] == row["final"]
    assert row["average_from_0"] == {**row["final"], "snapshots": 2}
    with pytest.raises(SystemExit, match="no checkpoint"):
        script("inference_probe").main([*args, "--snapshots", str(tmp_path / "none*.ckpt")])


def test_temperature_1_is_the_model_as_it_ships(photo_checkpoint, tmp_path):
    out = tmp_path / "p.jsonl"
    args = ["temperature", "--checkpoint", str(photo_checkpoint), "--out", str(out)]
    assert script("inference_probe").main([*args, "--scenes", "4", "--factors", "1"]) == 0
    assert script("inference_probe").main([*args, "--scenes", "4", "--factors", "4,1"]) == 0
    alone, after = [json.loads(line) for line in out.read_text().splitlines()]
    assert after["factor_1"] == alone["factor_1"]  # the scale is put back after each factor
    assert set(after) >= {"factor_4", "factor_1"}
