"""Which change to the photo recipe groups better? Each variant (a list of config overrides on
`training/configs/photos.yaml`) trains the real model on the same cached frozen features, with
one seed and one schedule, and is judged on the same held-out scenes (FG-ARI, mBO, masks at the
recipe's radius and inference refinements).

    .venv/bin/python scripts/recipe_probe.py --out runs/decoder-probe \
        --variant base= --variant all-tokens=decoder.train_pixels=0   # ~10 min a variant

The cache is `scripts/decoder_probe.py`'s (2,048 scenes of the training stamps, 128 of the
held-out stamps, seed 4321, 448-px Lite0, 14x14 tokens). One seed: differences under about 0.03
FG-ARI are within what seeds move. Appends one JSON line per variant to
`recipe_probe.jsonl` in `--out`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_probe import load_caches, probe_parser, scored

from training.config import load_train_config
from training.lit import follow_schedule
from training.model import build_model


def variant_arg(text: str) -> tuple[str, list[str]]:
    """NAME=OVERRIDE[,OVERRIDE...] (an empty list is the recipe as it is)."""
    name, _, rest = text.partition("=")
    if not name:
        raise ValueError(f"a variant is NAME=OVERRIDES, got {text!r}")
    return name, [o for o in rest.split(",") if o]


def predict(model, images: torch.Tensor, feats: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(slot id per pixel, codes (B, K)) of the model in eval mode, 32 scenes at a time."""
    ids, codes = [], []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(feats), 32):
            image = images[i : i + 32].permute(0, 3, 1, 2).float() / 255
            out = model(image, feats[i : i + 32])
            ids.append(out.masks.argmax(1).numpy())
            codes.append(out.codes.numpy())
    model.train()
    return np.concatenate(ids), np.concatenate(codes)


def cache_config(feats: torch.Tensor, overrides: list[str]):
    """The photo recipe with `overrides`, its Lite0 input set to the cache's grid (14x14 tokens:
    448 px), so the learned token positions are those of the cached features."""
    side = round(feats.shape[1] ** 0.5) * 32
    grid = [f"model.encoder.lite0_input={side}", f"model.encoder.eval_input={side}"]
    return load_train_config("photos", grid + overrides)


def train_on_cache(name: str, overrides: list[str], data: dict, val: dict, args) -> dict:
    """The real photo model (`training.model.build_model`) trained on the cached features for
    `args.steps` steps of `args.batch` (seed 0, the recipe's optimiser and schedule) ->
    {"model", "feats" and "held_out" (both standardised), "seconds", "final_loss"}."""
    torch.manual_seed(0)
    cfg = cache_config(data["feats"], overrides)
    model = build_model(cfg.model)
    model.encoder.fit_statistics(data["feats"][: cfg.data.batch_size])
    feats = model.encoder.standardise(data["feats"].float())
    held_out = model.encoder.standardise(val["feats"].float())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr)
    warm = cfg.optim.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 ** (s / cfg.optim.decay_steps)
    )
    gen = torch.Generator().manual_seed(0)
    started, losses = time.time(), []
    for step in range(1, args.steps + 1):
        follow_schedule(model, step - 1)  # Lightning's global_step counts from 0
        pick = torch.randint(len(feats), (args.batch,), generator=gen)
        image = data["images"][pick].permute(0, 3, 1, 2).float() / 255
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(image, feats[pick])
        loss = out.losses["total"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 250 == 0:
            rate = (time.time() - started) / step
            print(f"{name}: step {step}/{args.steps}, loss {np.mean(losses[-250:]):.4f}, "
                  f"{rate:.2f} s/step", flush=True)  # fmt: skip
    return {
        "model": model,
        "feats": feats,
        "held_out": held_out,
        "seconds": time.time() - started,
        "final_loss": round(float(np.mean(losses[-250:])), 4),
    }


def train_variant(name: str, overrides: list[str], data: dict, val: dict, args) -> dict:
    run = train_on_cache(name, overrides, data, val, args)
    ids, _ = predict(run["model"], val["images"], run["held_out"])
    return {
        "variant": name,
        "overrides": overrides,
        **scored(val["instances"].numpy(), ids),
        "final_loss": run["final_loss"],
        "seconds_per_step": round(run["seconds"] / args.steps, 3),
        "steps": args.steps,
    }


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser("scripts/recipe_probe.py", __doc__, steps=4000)
    parser.add_argument("--variant", type=variant_arg, action="append", required=True)
    args = parser.parse_args(argv)
    data, val = load_caches(args)
    for name, overrides in args.variant:
        result = train_variant(name, overrides, data, val, args)
        print(json.dumps(result), flush=True)
        with open(args.out / "recipe_probe.jsonl", "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
