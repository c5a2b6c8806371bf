"""The demo: a checkpoint's figures beside the trivial baselines, and a picture of its masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.checkpoint import load_checkpoint
from training.config import InferenceOverrides
from training.data import generate_batch
from training.evaluate import baseline_predictor, evaluate_scenes, model_predictor
from training.visualize import save_mask_grid

DEMO_SEED = 12345


def run_demo(
    checkpoint: str | Path,
    out: Path,
    scenes: int = 128,
    overrides: InferenceOverrides | None = None,
) -> str:
    """Evaluate on `scenes` unseen scenes of each variant; write overlays; return a table."""
    o = overrides or InferenceOverrides()
    model, info = load_checkpoint(checkpoint, overrides=o)
    cfg = model.cfg
    k, e = cfg.slot_attention.num_slots, cfg.codebook.size
    out.mkdir(parents=True, exist_ok=True)
    rows = ["| variant | method | FG-ARI | mBO | mIoU | code NMI |", "|---|---|---|---|---|---|"]
    for variant in ("solid", "textured"):
        data = generate_batch(scenes, DEMO_SEED, variant, cfg.image_size)
        for method in ("model", "colour", "kmeans"):
            if method == "model":
                m = evaluate_scenes(model_predictor(model), data, k, e, code_names=info.code_names)
            else:
                m = evaluate_scenes(baseline_predictor(method, k), data, k)
            nmi = f"{m['code_class_nmi']:.3f}" if "code_class_nmi" in m else "-"
            figures = " | ".join(f"{m[key]:.3f}" for key in ("fg_ari", "mbo", "miou"))
            rows.append(f"| {variant} | {method} | {figures} | {nmi} |")
        images = np.stack([s.image for s in data[:6]])
        with torch.no_grad():
            res = model(torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255))
        recon = (res.reconstruction.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).numpy()
        save_mask_grid(
            out / f"masks_{variant}.png",
            images,
            recon,
            res.slot_masks.argmax(1).numpy(),
            res.codes.numpy(),
            e,
            f"{variant} scenes (masks: decoder alpha argmax)",
            object_ids=res.masks.argmax(1).numpy() if cfg.decoder.merge_share > 0 else None,
        )
    table = "\n".join(rows)
    (out / "demo.md").write_text(table + "\n")
    return f"{table}\n\nmask overlays: {out}/masks_solid.png, {out}/masks_textured.png"
