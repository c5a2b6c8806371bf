"""Two bundles of one model through onnxruntime, interleaved in one process: ms an image and
their ratio, at each batch size, on scikit-image's photographs at the bundles' input.

    .venv/bin/python scripts/bundle_ab.py --a runs/photos-one-start --b models/slotserve-photos \
        --out reports/photos/starts_speed.json

Both sessions take 2 intra-op threads (the machine's cores); rounds alternate which bundle
runs first, the first two rounds are warm-up, and the median of the rest is reported."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from skimage import data

from export.verify import ort_session
from runtime.contract import INPUT_NAME, MODEL_FILE, load_bundle, to_model_input
from training.evaluate import _model_inputs

PHOTOS = ("coffee", "astronaut", "chelsea", "rocket")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bundle_ab.py", description=__doc__)
    p.add_argument("--a", required=True, help="the reference bundle")
    p.add_argument("--b", required=True, help="the bundle compared with it")
    p.add_argument("--batches", default="1,4")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    specs = {k: load_bundle(b).input for k, b in (("a", args.a), ("b", args.b))}
    if (specs["a"].height, specs["a"].width) != (specs["b"].height, specs["b"].width):
        raise SystemExit("bundle_ab: the two bundles take inputs of different sizes")
    sessions = {
        k: ort_session(Path(b) / MODEL_FILE, args.threads)
        for k, b in (("a", args.a), ("b", args.b))
    }
    photos = [getattr(data, name)()[..., :3] for name in PHOTOS]
    h, w = specs["a"].height, specs["a"].width
    images = np.concatenate([_model_inputs(im[None], h, w) for im in photos])
    result = {"a": args.a, "b": args.b, "threads": args.threads, "batches": {}}
    for batch in map(int, args.batches.split(",")):
        x = np.resize(images, (batch, *images.shape[1:]))
        times = {"a": [], "b": []}
        for r in range(args.rounds):
            for k in ("a", "b") if r % 2 == 0 else ("b", "a"):
                feed = {INPUT_NAME: to_model_input(x, specs[k])}
                start = time.perf_counter()
                sessions[k].run(None, feed)
                times[k].append((time.perf_counter() - start) * 1000 / batch)
        ms = {k: float(np.median(v[2:])) for k, v in times.items()}
        result["batches"][str(batch)] = {
            "a_ms_per_image": round(ms["a"], 1),
            "b_ms_per_image": round(ms["b"], 1),
            "b_over_a": round(ms["b"] / ms["a"], 3),
        }
        print(batch, result["batches"][str(batch)], flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
