"""What a user gets over HTTP, scored: the served masks, codes and labels of labelled scenes
against the bundle run directly through onnxruntime, on the same scenes.

Every scene goes to `POST /decompose_batch` as a PNG at its own size; each answer's COCO-RLE
masks are painted back into a slot map and scored like any model (`evaluate_scenes`: FG-ARI,
mBO, code statistics, and the served `label` judged on objects). The bundle's own figures come
from `training.evaluate.bundle_predictor` on the same scenes, so the difference is what the
service adds (decoding, resizing, post-processing, RLE).

    python -m loadtests.served_quality --bundle runs/photo-bundle --variant photos-unseen \
        --scenes 512 --height 96 --width 160 --out reports/photos/served.jsonl

starts `bentoml serve` on the bundle with a latency budget wide enough that nothing is shed (or
uses `--url` of a running server of it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import httpx
import numpy as np
from pycocotools import mask as mask_utils

from loadtests.images import encode

CHUNK = 16
"""Images per request: well under the service's SLOTSERVE_MAX_IMAGES (64 by default)."""


def slot_map(result: dict, num_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(slot id per pixel, code per slot) of one served decomposition.

    The served masks partition the image (each pixel goes to its most likely slot); a pixel
    no mask covers would be a service bug, so it raises instead of being guessed."""
    h, w = result["height"], result["width"]
    ids = np.full((h, w), -1, dtype=np.int64)
    codes = np.zeros(num_slots, dtype=np.int64)
    for obj in result["objects"]:
        rle = {"size": obj["mask"]["size"], "counts": obj["mask"]["counts"].encode()}
        mask = mask_utils.decode(rle).astype(bool)
        if (ids[mask] >= 0).any():
            raise ValueError(f"slot {obj['slot']}'s mask overlaps another object's")
        ids[mask] = obj["slot"]
        codes[obj["slot"]] = obj["code"]
    if (ids < 0).any():
        raise ValueError(f"{int((ids < 0).sum())} pixels are in no served mask")
    return ids, codes


def served_predictor(url: str, num_slots: int, timeout: float = 600):
    """A `training.evaluate.Predictor` that asks the server: uint8 images (B, H, W, 3) ->
    (slot id per pixel (B, H, W), code per slot (B, K))."""

    def predict(images: np.ndarray):
        maps, codes = [], []
        with httpx.Client(timeout=timeout) as client:
            for i in range(0, len(images), CHUNK):
                files = [
                    ("images", (f"{i + j}.png", encode(im), "image/png"))
                    for j, im in enumerate(images[i : i + CHUNK])
                ]
                r = client.post(f"{url}/decompose_batch", files=files)
                if r.status_code != 200:
                    raise RuntimeError(f"/decompose_batch answered {r.status_code}: {r.text}")
                for result in r.json()["results"]:
                    m, c = slot_map(result, num_slots)
                    maps.append(m)
                    codes.append(c)
        return np.stack(maps), np.stack(codes)

    return predict


FIGURES = ("fg_ari", "mbo", "miou", "code_class_nmi")


def compare(
    url: str, bundle: str | Path, variant: str, scenes: int, seed: int, height: int, width: int
) -> dict:
    """Served against direct figures of `bundle` on the same labelled scenes."""
    from runtime.contract import load_bundle, served_labels
    from training.evaluate import bundle_predictor, evaluate_scenes, evaluation_scenes

    manifest = load_bundle(bundle)
    k, e = manifest.num_slots, manifest.codebook_size
    data, class_names = evaluation_scenes(variant, scenes, seed, height, width)
    labels = [label for label, _ in served_labels(manifest)]
    out = {"bundle": manifest.name, "variant": variant, "seed": seed, "size": [height, width]}
    out["scenes"] = len(data)
    for name, predict in (
        ("served", served_predictor(url, k)),
        ("bundle", bundle_predictor(bundle)),
    ):
        out[name] = evaluate_scenes(predict, data, k, e, class_names, code_names=labels)
    out["served_minus_bundle"] = {
        key: round(out["served"][key] - out["bundle"][key], 4)
        for key in FIGURES
        if key in out["served"] and key in out["bundle"]
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.served_quality", description=__doc__)
    p.add_argument("--bundle", required=True, help="the bundle the server serves")
    p.add_argument("--url", help="a running server of --bundle (default: start one)")
    p.add_argument("--variant", default="photos-unseen", help="labelled scenes (see evaluate)")
    p.add_argument("--scenes", type=int, default=512)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--height", type=int, default=None, help="default: the bundle's input")
    p.add_argument("--width", type=int, default=None, help="default: --height")
    p.add_argument("--out", type=Path, help="append the result as one JSON line")
    args = p.parse_args(argv)
    from runtime.contract import BundleError, load_bundle

    try:
        height = args.height or load_bundle(args.bundle).input.height
    except BundleError as err:
        p.error(str(err))
    width = args.width or height
    if args.url:
        result = compare(args.url, args.bundle, args.variant, args.scenes, args.seed, height, width)
    else:
        from loadtests.server import serve

        # A quality run, not a latency one: no request may be shed for a slow model.
        env = {
            "SLOTSERVE_BUNDLE": str(Path(args.bundle).resolve()),
            "SLOTSERVE_MAX_LATENCY_MS": "600000",
        }
        with tempfile.TemporaryDirectory() as root, serve(Path(root), env, timeout=300) as server:
            result = compare(
                server.url, args.bundle, args.variant, args.scenes, args.seed, height, width
            )
    line = json.dumps(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as f:
            f.write(line + "\n")
    print(json.dumps({"served_minus_bundle": result["served_minus_bundle"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
