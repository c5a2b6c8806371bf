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

    .venv/bin/python scripts/label_probe.py --out reports/photos/label_features.jsonl \
        --crops 128,256                                                          # ~14 min

`--crops` asks Lite0's own ImageNet classifier instead, as it was trained to be asked: a
square crop around each object's true box (15% margin on each side, `roi_align` to 224 px)
from scenes of each size, its 1,000 class probabilities summed into the categories. Which
category an ImageNet class counts for:

- `wordnet`: the nearest of each category's anchor synsets (`CATEGORY_ANCHORS`, read from the
  folder names, not from the stamps) among the class's WordNet hypernyms; classes under no
  anchor count for none. Nothing is learned from the stamps. Needs WordNet 3.0, the Debian
  package `wordnet-base` (ImageNet's synset ids are WordNet 3.0 offsets);
- `learned`: P(category | class) from the soft class counts of the objects of
  `--train-scenes` scenes of the training stamps (every category's share, 1e-3 smoothed);
- `learned+wordnet`: those counts with the WordNet map added at half an object's weight.

Judged on the same `--eval-scenes` scenes as above: the share of objects named right with a
label for every object, and at each score threshold (the category's probability mass) the
share labelled, the share of those right and the share of all objects labelled right (the
served rule's figure: an object without a label is not named).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score
from torchvision.ops import roi_align

from training.data.photos import generate_photo_batch, photo_library
from training.model.pretrained import IMAGENET_MEAN, IMAGENET_STD, Lite0Features, lite0_classifier

KINDS = ("block", "head", "logits")
WORDNET = Path("/usr/share/wordnet")
CATEGORY_ANCHORS = {
    "birds": ("bird.n.01",),
    "clothes": ("clothing.n.01", "headdress.n.01"),
    "fish": ("fish.n.01",),
    "food": ("food.n.01", "food.n.02", "edible_fruit.n.01", "vegetable.n.01"),
    "hobbies": ("musical_instrument.n.01", "photographic_equipment.n.01", "toy.n.01"),
    "household": (
        "home_appliance.n.01",
        "tableware.n.01",
        "kitchen_utensil.n.01",
        "furniture.n.01",
        "hand_tool.n.01",
        "tool.n.01",
        "container.n.01",
    ),
    "insects": ("insect.n.01", "arthropod.n.01", "gastropod.n.01"),
    "mammals": ("mammal.n.01",),
    "medical": ("medical_instrument.n.01",),
    "military": (
        "military_vehicle.n.01",
        "weapon.n.01",
        "warship.n.01",
        "military_uniform.n.01",
    ),
    "plants": ("plant.n.02", "fungus.n.01"),
    "space": ("celestial_body.n.01", "spacecraft.n.01"),
    "sports": ("sports_equipment.n.01", "game_equipment.n.01", "ball.n.01"),
    "vehicles": ("vehicle.n.01",),
}
"""WordNet synsets (lemma.n.sense) a category's ImageNet classes descend from, read from the
category's folder name: the stamps were not looked at."""
THRESHOLDS = (0.3, 0.5, 0.7)


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


class WordNet:
    """The noun hypernym graph of WordNet 3.0's database files (`data.noun`, `index.noun`)."""

    def __init__(self, root: Path = WORDNET) -> None:
        if not (root / "data.noun").is_file():
            raise FileNotFoundError(
                f"WordNet 3.0 not found in {root}: apt-get install wordnet-base"
            )
        self.hypernyms: dict[int, list[int]] = {}
        for line in (root / "data.noun").open(encoding="latin-1"):
            if line.startswith("  "):  # the licence header
                continue
            fields = line.split(" | ")[0].split()
            words = int(fields[3], 16)
            at = 4 + 2 * words
            pointers = int(fields[at])
            ups = []
            for k in range(pointers):
                symbol, offset, pos = fields[at + 1 + 4 * k : at + 4 + 4 * k]
                if symbol in ("@", "@i") and pos == "n":  # hypernym, instance hypernym
                    ups.append(int(offset))
            self.hypernyms[int(fields[0])] = ups
        self.senses: dict[str, list[int]] = {}
        for line in (root / "index.noun").open(encoding="latin-1"):
            if line.startswith("  "):
                continue
            fields = line.split()
            count = int(fields[2])
            self.senses[fields[0]] = [int(v) for v in fields[-count:]]

    def synset(self, name: str) -> int:
        """The offset of `lemma.n.NN`."""
        lemma, _, sense = name.rsplit(".", 2)
        return self.senses[lemma][int(sense) - 1]

    def ancestors(self, offset: int) -> dict[int, int]:
        """{offset: steps up} of `offset` and all its hypernyms."""
        steps = {offset: 0}
        queue = deque([offset])
        while queue:
            here = queue.popleft()
            for up in self.hypernyms.get(here, ()):
                if up not in steps:
                    steps[up] = steps[here] + 1
                    queue.append(up)
        return steps


def wordnet_categories(
    wordnet: WordNet, wnids: list[str], categories: list[str], anchors: dict = CATEGORY_ANCHORS
) -> np.ndarray:
    """(classes, categories) 0/1: each class (an `nXXXXXXXX` synset id) counts for the category
    of its nearest anchor among its hypernyms, or for none."""
    anchor = {wordnet.synset(s): categories.index(c) for c, names in anchors.items() for s in names}
    out = np.zeros((len(wnids), len(categories)), np.float32)
    for i, wnid in enumerate(wnids):
        hits = sorted(
            (steps, anchor[o])
            for o, steps in wordnet.ancestors(int(wnid[1:])).items()
            if o in anchor
        )
        if hits:
            out[i, hits[0][1]] = 1.0
    return out


def learned_categories(probs: np.ndarray, y: np.ndarray, n: int, prior=None) -> np.ndarray:
    """(classes, categories) P(category | class) from soft counts of labelled objects."""
    counts = probs.T @ np.eye(n, dtype=np.float32)[y]
    if prior is not None:
        counts = counts + prior
    counts = counts + 1e-3
    return counts / counts.sum(1, keepdims=True)


def judge_scores(scores: np.ndarray, y: np.ndarray) -> dict:
    """`scores` (objects, categories): named right with a label for every object, and at each
    threshold on the best category's score: [labelled, right of labelled, right of all]."""
    best, score = scores.argmax(1), scores.max(1)
    out = {
        "objects": len(y),
        "naming_accuracy": round(float(np.mean(best == y)), 3),
        "commonest_category_share": round(float(np.bincount(y).max() / len(y)), 3),
    }
    for t in THRESHOLDS:
        given = score >= t
        right = best == y
        precision = float(right[given].mean()) if given.any() else 0.0
        out[f"at_{t}"] = [
            round(float(given.mean()), 3),
            round(precision, 3),
            round(float((right & given).mean()), 3),
        ]
    return out


def object_crops(scene, size: int = 224, margin: float = 0.15) -> torch.Tensor:
    """(objects, 3, size, size): a square crop around each object's true box, normalised as
    Lite0's classifier expects (zero, the mean colour, outside the image)."""
    image = torch.tensor(scene.image).permute(2, 0, 1).float() / 255
    image = (image - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]
    boxes = []
    for j in range(len(scene.classes)):
        ys, xs = np.nonzero(scene.instances == j + 1)
        cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
        half = max(ys.max() + 1 - ys.min(), xs.max() + 1 - xs.min()) * (0.5 + margin)
        boxes.append([0, cx - half, cy - half, cx + half, cy + half])
    boxes = torch.tensor(boxes, dtype=torch.float32)
    return roi_align(image[None], boxes, (size, size), 1.0, 2, aligned=True)


def classified_objects(classifier, n: int, seed: int, split: str, size: int):
    """ImageNet class probabilities (objects, 1000) of every object's crop, and categories."""
    probs, categories = [], []
    for start in range(0, n, 32):
        scenes = generate_photo_batch(min(32, n - start), seed + start, size, split=split)
        crops = torch.cat([object_crops(s) for s in scenes])
        with torch.no_grad():
            probs.append(F.softmax(classifier(crops), -1).numpy())
        categories += [c for s in scenes for c in s.classes]
    return np.concatenate(probs), np.asarray(categories)


def crop_probe(args, classifier) -> None:
    import timm

    categories = list(photo_library().categories)
    synsets = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synsets.txt"
    by_wordnet = wordnet_categories(WordNet(WORDNET), synsets.read_text().split(), categories)
    for size in (int(v) for v in args.crops.split(",")):
        started = time.time()
        fit_p, fit_y = classified_objects(classifier, args.train_scenes, 1, "train", size)
        sets = {
            split: classified_objects(classifier, args.eval_scenes, 12345, split, size)
            for split in ("unseen", "train")
        }
        print(f"{size} px scenes: crops classified in {time.time() - started:.0f} s", flush=True)
        mappings = {
            "wordnet": by_wordnet,
            "learned": learned_categories(fit_p, fit_y, len(categories)),
            "learned+wordnet": learned_categories(fit_p, fit_y, len(categories), 0.5 * by_wordnet),
        }
        for name, mapping in mappings.items():
            row = {"probe": "classifier_crops", "scene_size": size, "mapping": name}
            row["unseen"] = judge_scores(sets["unseen"][0] @ mapping, sets["unseen"][1])
            row["seen"] = judge_scores(sets["train"][0] @ mapping, sets["train"][1])
            print(json.dumps(row), flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/label_probe.py", description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="JSON lines are appended here")
    p.add_argument("--sizes", default="448,896", help="Lite0 input sizes (multiples of 32)")
    p.add_argument("--clusters", default="32,64,128")
    p.add_argument("--train-scenes", type=int, default=1024)
    p.add_argument("--eval-scenes", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--crops",
        default=None,
        help="scene sizes (e.g. 128,256): the ImageNet classifier on object crops instead",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    classifier = lite0_classifier()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.crops:
        try:
            crop_probe(args, classifier)
        except FileNotFoundError as err:
            p.exit(2, f"{err}\n")
        return 0
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
