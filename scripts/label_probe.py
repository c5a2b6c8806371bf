"""Which of Lite0's features name an object's category best, given its true mask?

    .venv/bin/python scripts/label_probe.py --out reports/photos/label_features.jsonl  # ~12 min

The served label comes from a code, and a code can only name categories as well as the
features behind it separate them. This probe puts an upper bound on that for each feature
Lite0 offers, with perfect masks: on photo scenes (128x128, 2-5 objects), every object's
features are averaged inside its true mask (area-weighted on the token grid) and
L2-normalised, for

- `block`: the stride-32 block output (320 channels), what the photo model groups;
- `head`: that through Lite0's 1x1 head convolution, batch norm and ReLU6 (1280 channels),
  the features its ImageNet classifier pools;
- `logits`: the pooled head features through the ImageNet classifier (1000 classes).

k-means (`--clusters`) is fitted on the objects of `--train-scenes` scenes of the training
stamps (seed 1), each cluster named after its commonest category; then judged on
`--eval-scenes` new scenes of the held-out stamps (`unseen`) and of the training stamps
(`seen`, seed 12345 both): the share of objects whose cluster's name is their category, and
the clusters' NMI with the category, beside always naming the commonest category. One JSON
line per (input size, features, clusters).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

from training.data.photos import generate_photo_batch
from training.model.pretrained import Lite0Features, lite0_classifier

KINDS = ("block", "head", "logits")


def pooled_objects(encoder, classifier, n: int, seed: int, split: str) -> tuple[dict, np.ndarray]:
    """{kind: (M, C)} pooled features of every object of `n` scenes, and their categories."""
    out: dict[str, list] = {k: [] for k in KINDS}
    categories = []
    for start in range(0, n, 32):
        scenes = generate_photo_batch(min(32, n - start), seed + start, 128, split=split)
        image = torch.tensor(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2)
        (block,) = encoder(image.float() / 255)
        with torch.no_grad():
            head = classifier.bn2(classifier.conv_head(block))
        grid = block.shape[-1]
        for i, scene in enumerate(scenes):
            ids = torch.as_tensor(scene.instances)
            masks = torch.stack([(ids == j + 1).float() for j in range(len(scene.classes))])
            cover = F.interpolate(masks[None], size=(grid, grid), mode="area")[0].flatten(1)
            weights = cover / cover.sum(1, keepdim=True).clamp_min(1e-8)
            pooled_head = weights @ head[i].flatten(1).T
            with torch.no_grad():
                features = {
                    "block": weights @ block[i].flatten(1).T,
                    "head": pooled_head,
                    "logits": classifier.classifier(pooled_head),
                }
            for kind, value in features.items():
                out[kind].append(F.normalize(value, dim=-1))
            categories.append(np.asarray(scene.classes))
    return {k: torch.cat(v).numpy() for k, v in out.items()}, np.concatenate(categories)


def judge(kmeans: KMeans, named: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict:
    cluster = kmeans.predict(x)
    return {
        "objects": len(y),
        "naming_accuracy": round(float(np.mean(named[cluster] == y)), 3),
        "nmi": round(float(normalized_mutual_info_score(y, cluster)), 3),
        "commonest_category_share": round(float(np.bincount(y).max() / len(y)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/label_probe.py", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="JSON lines are appended here")
    p.add_argument("--sizes", default="448,896", help="Lite0 input sizes (multiples of 32)")
    p.add_argument("--clusters", default="32,64,128")
    p.add_argument("--train-scenes", type=int, default=1024)
    p.add_argument("--eval-scenes", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    classifier = lite0_classifier()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for size in (int(v) for v in args.sizes.split(",")):
        encoder = Lite0Features((32,), size)
        started = time.time()
        fit_x, fit_y = pooled_objects(encoder, classifier, args.train_scenes, 1, "train")
        sets = {
            split: pooled_objects(encoder, classifier, args.eval_scenes, 12345, split)
            for split in ("unseen", "train")
        }
        print(f"{size} px: features in {time.time() - started:.0f} s", flush=True)
        for kind in KINDS:
            for k in (int(v) for v in args.clusters.split(",")):
                kmeans = KMeans(k, n_init=4, random_state=0).fit(fit_x[kind])
                named = np.array(
                    [
                        np.bincount(fit_y[kmeans.labels_ == c]).argmax()
                        if (kmeans.labels_ == c).any()
                        else -1
                        for c in range(k)
                    ]
                )
                row = {"input": size, "features": kind, "clusters": k}
                row["unseen"] = judge(kmeans, named, sets["unseen"][0][kind], sets["unseen"][1])
                row["seen"] = judge(kmeans, named, sets["train"][0][kind], sets["train"][1])
                print(json.dumps(row), flush=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
