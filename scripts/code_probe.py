"""What should a code quantise: the slot (the paper) or the frozen features the slot covers
(`model.codebook.source=features`)? The photo model, built from `training/configs/photos.yaml`,
trained once per source on the same cached frozen features, judged on grouping and on what the
codes say about the objects' categories.

    .venv/bin/python scripts/code_probe.py --out runs/decoder-probe   # ~15 min on 2 cores

The scenes and their frozen Lite0 features are `scripts/decoder_probe.py`'s cache (2,048 scenes
of the training stamps, 128 of the held-out stamps, seed 4321), computed once in `--out`. Each
source trains the real model (`training.model.build_model`) for `--steps` steps of batch 32 on
sampled tokens, as the recipe does, with one seed and one schedule for both. Then, on the
held-out scenes, masks at the recipe's radius:

- FG-ARI and mBO;
- the codes' NMI with the category of the object each slot covers, over foreground slots;
- codes named after their commonest category on `--naming-scenes` training scenes (512): the
  share of held-out foreground slots whose code's name is their category (`naming_accuracy`),
  beside always naming the commonest category;
- the served labels under the project's rule (`training/labels.py`: named on the first half
  of those scenes, thresholds on the second), over held-out objects matched at IoU >= 0.5.

Beside both, what the frozen features allow at all (`ground_truth_masks`): the features pooled
inside each object's true mask, clustered by k-means into as many clusters as there are codes
on the naming scenes, each cluster named after its commonest category, judged on the held-out
objects. Perfect masks and a cluster per category's share of the features: a code of a slot
can hardly name categories better than that.

Writes `code_probe.json` in `--out`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans
from sklearn.metrics import normalized_mutual_info_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_probe import load_caches, probe_parser, scored
from recipe_probe import predict, train_on_cache

from training.config import load_train_config
from training.data.photos import generate_photo_batch, photo_library
from training.labels import (
    fit_code_labels,
    object_records,
    summarise_records,
)
from training.metrics import slot_classes


def scenes_of(n: int, seed: int, split: str, cached: dict) -> list:
    """The cached scenes again, with their categories (decoder_probe draws them 64 at a time)."""
    scenes = []
    for start in range(0, n, 64):
        scenes += generate_photo_batch(min(64, n - start), seed + start, 128, split=split)
    truth = np.stack([s.instances for s in scenes])
    if not np.array_equal(truth, cached["instances"][:n].numpy()):
        raise SystemExit(f"the cache in --out does not hold these {split} scenes: delete it")
    return scenes


def code_pairs(ids, codes, scenes, num_slots) -> tuple[np.ndarray, np.ndarray]:
    """(code, truth) of every non-empty slot; truth -1 is background, else a category."""
    sc = slot_classes(
        ids, np.stack([s.instances for s in scenes]), [s.classes for s in scenes], num_slots
    )
    return codes[sc.image, sc.slot], sc.class_id


def pooled_objects(data: dict) -> tuple[np.ndarray, np.ndarray]:
    """(features (M, C), category (M,)) of every object of `data["scenes"]`: the frozen
    features averaged over the token cells its true mask covers (area-weighted), L2-normalised."""
    scenes = data["scenes"]
    grid = int(data["feats"].shape[1] ** 0.5)
    pooled, category = [], []
    for i, scene in enumerate(scenes):
        ids = torch.as_tensor(scene.instances)
        masks = torch.stack([(ids == j + 1).float() for j in range(len(scene.classes))])
        cover = F.interpolate(masks[None], size=(grid, grid), mode="area")[0].flatten(1)
        weights = cover / cover.sum(1, keepdim=True).clamp_min(1e-8)
        pooled.append(F.normalize(weights @ data["feats"][i].float(), dim=-1))
        category.append(np.asarray(scene.classes))
    return torch.cat(pooled).numpy(), np.concatenate(category)


def ground_truth_masks(train: dict, val: dict, clusters: int) -> dict:
    """k-means on features pooled inside true masks, named on the naming scenes (docstring)."""
    x, y = pooled_objects(train)
    kmeans = KMeans(min(clusters, len(x)), n_init=4, random_state=0).fit(x)
    named = np.array(
        [np.bincount(y[kmeans.labels_ == c]).argmax() for c in range(kmeans.n_clusters)]
    )
    vx, vy = pooled_objects(val)
    cluster = kmeans.predict(vx)
    return {
        "objects": len(vy),
        "code_nmi": round(float(normalized_mutual_info_score(vy, cluster)), 3),
        "naming_accuracy": round(float(np.mean(named[cluster] == vy)), 3),
        "commonest_category_share": round(float(np.bincount(vy).max() / len(vy)), 3),
    }


def judge_codes(model, train: dict, val: dict, names: list[str]) -> dict:
    """Grouping and code figures on the held-out scenes (module docstring); `train["scenes"]`
    are the naming scenes, the first of the cached training scenes."""
    k = model.cfg.slot_attention.num_slots
    e = model.cfg.codebook.size
    n = len(train["scenes"])
    val_ids, val_codes = predict(model, val["images"], val["feats"])
    naming_ids, naming_codes = predict(model, train["images"][:n], train["feats"][:n])
    code, truth = code_pairs(val_ids, val_codes, val["scenes"], k)
    fg = truth >= 0
    n_code, n_truth = code_pairs(naming_ids, naming_codes, train["scenes"], k)
    n_fg = n_truth >= 0
    named = {c: np.bincount(n_truth[n_fg & (n_code == c)]).argmax() for c in set(n_code[n_fg])}
    right = [named.get(int(c), -1) == t for c, t in zip(code[fg], truth[fg], strict=True)]
    halves = (slice(0, n // 2), slice(n // 2, n))
    labels, _ = fit_code_labels(
        *(code_pairs(naming_ids[h], naming_codes[h], train["scenes"][h], k) for h in halves),
        e,
        names,
    )
    records = object_records(
        val["instances"].numpy(),
        [s.classes for s in val["scenes"]],
        val_ids,
        val_codes,
        [label.label for label in labels],
        names,
    )
    return {
        **scored(val["instances"].numpy(), val_ids),
        "code_nmi": round(float(normalized_mutual_info_score(truth[fg], code[fg])), 3),
        "naming_accuracy": round(float(np.mean(right)), 3),
        "commonest_category_share": (
            round(float(np.bincount(truth[fg]).max() / fg.sum()), 3) if fg.any() else float("nan")
        ),
        "codes_used": len(np.unique(code)),
        "served_labels": summarise_records(records),
    }


def train(source: str, train_set: dict, val: dict, names: list[str], args) -> dict:
    run = train_on_cache(source, [f"model.codebook.source={source}"], train_set, val, args)
    data = {**train_set, "feats": run["feats"]}
    held_out = {**val, "feats": run["held_out"]}
    result = judge_codes(run["model"], data, held_out, names)
    print(f"{source}: {result}", flush=True)
    return {**result, "final_loss": run["final_loss"],
            "seconds_per_step": round(run["seconds"] / args.steps, 3)}  # fmt: skip


def finite(value):
    """NaN (a share of nothing, e.g. no matched object) as null: the file stays valid JSON."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, float) and value != value:
        return None
    return value


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser("scripts/code_probe.py", __doc__, steps=4000)
    parser.add_argument("--naming-scenes", type=int, default=512)
    parser.add_argument("--sources", default="slots,features")
    args = parser.parse_args(argv)
    if not 2 <= args.naming_scenes <= args.train_scenes:
        parser.error("--naming-scenes must lie in 2..--train-scenes: codes are named on those")
    data, val = load_caches(args)
    data["scenes"] = scenes_of(args.naming_scenes, 1, "train", data)
    val["scenes"] = scenes_of(args.val_scenes, 4321, "unseen", val)
    names = list(photo_library().categories)
    results = {"config": {k: str(v) for k, v in vars(args).items()}}
    size = load_train_config("photos").model.codebook.size
    results["ground_truth_masks"] = ground_truth_masks(data, val, size)
    print(f"ground-truth masks: {results['ground_truth_masks']}", flush=True)
    for source in args.sources.split(","):
        results[source] = train(source, data, val, names, args)
        (args.out / "code_probe.json").write_text(json.dumps(finite(results), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
