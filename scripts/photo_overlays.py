"""Overlays of real photographs (scikit-image's samples) through models, side by side.

    .venv/bin/python scripts/photo_overlays.py \
        --bundle models/slotserve-shapes --bundle models/slotserve-photos \
        --out reports/photos/overlays-photo-model.png
    .venv/bin/python scripts/photo_overlays.py \
        --checkpoint models/slotserve-shapes/model.safetensors \
        --checkpoint runs/photos/model.safetensors --iterations 7 --encoder-input 896 \
        --out runs/overlays.png

Each row is one photograph: the input, then each model's objects tinted by code and named as
the service draws them (`service.processing.render_overlay`), at a height of 256 px. A
`--bundle` is drawn by the service's own pipeline (`POST /visualize`: the bundle through
onnxruntime, with its served labels), a `--checkpoint` through PyTorch; bundles come first.
`--iterations`, `--merge-share`, `--refine-radius` and `--encoder-input` apply to every
checkpoint but the first (to all of them when bundles are given).
"""

from __future__ import annotations

import argparse
import asyncio
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


class ServedBundle:
    """A bundle as the service runs it: `Pipeline.visualize` over one onnxruntime session."""

    def __init__(self, path: str) -> None:
        from prometheus_client import CollectorRegistry

        from service.bundle import resolve_bundle
        from service.metrics import ServiceMetrics
        from service.pipeline import Pipeline
        from service.runner import build_runner
        from service.settings import Settings

        settings = Settings(bundle=path)
        bundle = resolve_bundle(settings)  # verified as the service verifies it
        runner = build_runner(
            bundle, settings.for_bundle(bundle.manifest), ServiceMetrics(CollectorRegistry())
        )

        async def infer(images: np.ndarray) -> list[dict]:
            return runner(images)

        self.name = bundle.manifest.name
        self.pipeline = Pipeline(bundle.manifest, infer)

    def __call__(self, image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        png = asyncio.run(self.pipeline.visualize(buffer.getvalue()))
        return Image.open(io.BytesIO(png)).convert("RGB")


def fit(img: Image.Image) -> Image.Image:
    return img.resize((round(img.width * ROW / img.height), ROW), Image.Resampling.LANCZOS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", action="append", default=[], help="a bundle directory")
    p.add_argument("--checkpoint", action="append", default=[])
    p.add_argument("--out", type=Path, required=True)
    # Bundles are drawn as they ship (their settings are in the graph). Without bundles, the
    # first checkpoint is the reference, drawn as it ships, and the inference overrides apply
    # to the ones after it (the photo recipe's settings: --iterations 7 --encoder-input 896).
    InferenceOverrides.add_arguments(p)
    args = p.parse_args(argv)
    if not args.bundle and not args.checkpoint:
        p.error("give at least one --bundle or --checkpoint")
    overrides = InferenceOverrides.from_args(args)
    drawers = [ServedBundle(b) for b in args.bundle]
    names = [d.name for d in drawers]
    for i, path in enumerate(args.checkpoint):
        model = load_checkpoint(path, overrides=overrides if drawers or i else None)[0]
        drawers.append(lambda image, model=model: overlay(model, image))
        names.append(Path(path).parent.name)
    rows = []
    for name in PHOTOS:
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        tiles = [fit(image)] + [fit(draw(image)) for draw in drawers]
        row = Image.new("RGB", (sum(t.width for t in tiles) + 8 * len(tiles), ROW), "white")
        x = 0
        for t in tiles:
            row.paste(t, (x, 0))
            x += t.width + 8
        rows.append(row)
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, 24 + len(rows) * (ROW + 8)), "white")
    ImageDraw.Draw(sheet).text((4, 4), "input | " + " | ".join(names), fill="black")
    for i, r in enumerate(rows):
        sheet.paste(r, (0, 24 + i * (ROW + 8)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
