"""Overlays of real photographs (scikit-image's samples) through two checkpoints, side by side.

    .venv/bin/python scripts/photo_overlays.py \
        --checkpoint models/slotserve-shapes/model.safetensors \
        --checkpoint runs/photos/model.safetensors --iterations 10 \
        --out reports/photos/overlays-photo-model.png

Each row is one photograph: the input, then each checkpoint's objects tinted by code and named
as the service draws them (`service.processing.render_overlay`), at a height of 256 px.
`--iterations`, `--merge-share`, `--refine-radius` and `--encoder-input` apply to every
checkpoint but the first.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import skimage.data
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.resize import masks_to_labels  # noqa: E402
from service.processing import describe_objects, render_overlay  # noqa: E402
from training.checkpoint import load_checkpoint  # noqa: E402
from training.config import InferenceOverrides  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")
ROW = 256


def overlay(model, image: Image.Image) -> Image.Image:
    size = model.cfg.image_size
    x = torch.from_numpy(np.array(image.resize((size, size), Image.Resampling.BOX)))
    with torch.no_grad():
        out = model(x.permute(2, 0, 1)[None].float().div(255))
    labels = masks_to_labels(out.masks[0].numpy(), image.height, image.width)
    objects = describe_objects(labels, out.codes[0].numpy(), out.code_distances[0].numpy())
    png = render_overlay(image, labels, objects, model.cfg.codebook.size)
    return Image.open(io.BytesIO(png)).convert("RGB")


def fit(img: Image.Image) -> Image.Image:
    return img.resize((round(img.width * ROW / img.height), ROW), Image.Resampling.LANCZOS)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", action="append", required=True)
    p.add_argument("--out", type=Path, required=True)
    # The first checkpoint is the reference, drawn as it ships; the inference overrides apply to
    # the ones after it (the photo model's recipe settings, e.g. --iterations 10).
    InferenceOverrides.add_arguments(p)
    args = p.parse_args()
    overrides = InferenceOverrides.from_args(args)
    first, *rest = args.checkpoint
    models = [load_checkpoint(first)[0]]
    models += [load_checkpoint(c, overrides=overrides)[0] for c in rest]
    rows = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        tiles = [fit(image)] + [fit(overlay(m, image)) for m in models]
        row = Image.new("RGB", (sum(t.width for t in tiles) + 8 * len(tiles), ROW), "white")
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width + 8
        rows.append(row)
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, 24 + len(rows) * (ROW + 8)), "white")
    ImageDraw.Draw(sheet).text(
        (4, 4), "input | " + " | ".join(Path(c).parent.name for c in args.checkpoint), fill="black"
    )
    for i, r in enumerate(rows):
        sheet.paste(r, (0, 24 + i * (ROW + 8)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
