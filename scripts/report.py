"""Write the shipped model's figures into reports/ (the README's tables are read from these).

    python scripts/report.py evaluation --ablation runs/no_topdown/model.safetensors \
        [--previous V2.safetensors --previous-version 2]  # -> reports/evaluation.jsonl
    python scripts/report.py reproduction --checkpoint runs/default/model.safetensors \
        --wall-minutes 41.2                      # -> reports/make-train-reproduction.jsonl

Every figure is on the evaluation scenes `make evaluate` uses (512 per variant, seed 12345);
model rows carry the checkpoint's sha256, so tests/test_shipped.py can tell figures of the
shipped checkpoint from figures of an earlier one.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.contract import load_bundle, sha256_file  # noqa: E402
from training.checkpoint import load_checkpoint, read_info  # noqa: E402
from training.config import InferenceOverrides  # noqa: E402
from training.evaluate import (  # noqa: E402
    baseline_predictor,
    bundle_predictor,
    evaluate_scenes,
    model_predictor,
    shapes_scenes,
)

BUNDLE = ROOT / "models" / "slotserve-shapes"
SHIPPED = BUNDLE / "model.safetensors"
VARIANTS = ("solid", "textured")
SCENES, SEED = 512, 12345


def _model_rows(method: str, path: Path, overrides: InferenceOverrides | None = None) -> list[dict]:
    """`overrides`: inference settings other than the checkpoint's."""
    model, info = load_checkpoint(path, overrides=overrides)
    k, e = model.cfg.slot_attention.num_slots, model.cfg.codebook.size
    sha = sha256_file(path)
    rows = []
    for variant in VARIANTS:
        scenes = shapes_scenes(variant, SCENES, SEED, model.cfg.image_size)
        r = evaluate_scenes(model_predictor(model), scenes, k, e, code_names=info.code_names)
        rows.append(
            {
                "method": method,
                "variant": variant,
                "seed": SEED,
                "scenes": SCENES,
                **r,
                "iterations": model.grouping.num_iterations,
                "merge_share": model.cfg.decoder.merge_share,
                "checkpoint_sha256": sha,
            }
        )
        print(f"{method:28s} {variant:9s} FG-ARI {r['fg_ari']:.4f}  mBO {r['mbo']:.4f}", flush=True)
    return rows


def evaluation(args) -> list[dict]:
    rows = _model_rows("model", SHIPPED)
    rows += _model_rows("model_per_slot", SHIPPED, InferenceOverrides(merge_share=0.0))
    rows += _model_rows("model_3_refinements", SHIPPED, InferenceOverrides(iterations=3))
    rows += _model_rows("no_topdown", args.ablation)
    rows += _model_rows("no_topdown_per_slot", args.ablation, InferenceOverrides(merge_share=0.0))
    if args.previous:
        name = f"previous_shipped_v{args.previous_version}"
        rows += _model_rows(name, args.previous)
        merged = InferenceOverrides(merge_share=args.merge_share)
        rows += _model_rows(f"{name}_merged", args.previous, merged)
    manifest = load_bundle(BUNDLE)
    for variant in VARIANTS:
        scenes = shapes_scenes(variant, SCENES, SEED, manifest.input.height)
        for method, k in (("colour", manifest.num_slots), ("kmeans", 7), ("kmeans", 11)):
            r = evaluate_scenes(baseline_predictor(method, k), scenes, k, None)
            name = method if method == "colour" else f"kmeans_k{k}"
            rows.append({"method": name, "variant": variant, "seed": SEED, "scenes": SCENES, **r})
            print(f"{name:28s} {variant:9s} FG-ARI {r['fg_ari']:.4f}", flush=True)
        k, e = manifest.num_slots, manifest.codebook_size
        r = evaluate_scenes(bundle_predictor(BUNDLE), scenes, k, e)
        rows.append(
            {"method": "bundle_fp32", "variant": variant, "seed": SEED, "scenes": SCENES, **r}
        )
        print(f"{'bundle_fp32':28s} {variant:9s} FG-ARI {r['fg_ari']:.4f}", flush=True)
    return rows


def reproduction(args) -> list[dict]:
    extra = read_info(args.checkpoint).extra
    run = {
        "training_minutes": extra.get("train_minutes_this_session"),
        "wall_minutes": args.wall_minutes,
        "threads": extra.get("threads"),
        "steps": extra.get("steps"),
    }
    return [{**row, **run} for row in _model_rows("make_train_reproduction", args.checkpoint)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluation", help="reports/evaluation.jsonl")
    ev.add_argument("--ablation", type=Path, required=True, help="the top-down-off checkpoint")
    ev.add_argument("--previous", type=Path, help="the previously shipped checkpoint")
    ev.add_argument("--previous-version", type=int, default=2)
    ev.add_argument("--merge-share", type=float, default=0.04, help="for the previous model")
    rp = sub.add_parser("reproduction", help="reports/make-train-reproduction.jsonl")
    rp.add_argument("--checkpoint", type=Path, required=True, help="make train's output")
    rp.add_argument("--wall-minutes", type=float, help="make train's wall time, measured")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.command == "evaluation":
        rows, out = evaluation(args), ROOT / "reports" / "evaluation.jsonl"
    else:
        rows, out = reproduction(args), ROOT / "reports" / "make-train-reproduction.jsonl"
    out.write_text("".join(json.dumps(row) + "\n" for row in rows))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
