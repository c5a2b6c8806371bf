"""Inference-time changes to the photo model, measured on the recipe's tuning scenes:

    .venv/bin/python scripts/inference_probe.py native-refine --out runs/inference_probe.jsonl
    .venv/bin/python scripts/inference_probe.py best-of-inits --out runs/inference_probe.jsonl
    .venv/bin/python scripts/inference_probe.py slot-count --out runs/inference_probe.jsonl
    .venv/bin/python scripts/inference_probe.py adaptive-count --out runs/inference_probe.jsonl
    .venv/bin/python scripts/inference_probe.py ensemble --out runs/inference_probe.jsonl
    .venv/bin/python scripts/inference_probe.py temperature --out runs/inference_probe.jsonl
    .venv/bin/python scripts/inference_probe.py snapshots --snapshots 'runs/snaps/*.ckpt' ...
    .venv/bin/python scripts/inference_probe.py large-scenes --scenes 96 --out runs/...

(`reports/photos/inference_probe.jsonl` holds the committed run.)

The photo model (`--checkpoint`, default runs/photos, where `make train-photos` writes it) at the
recipe's inference settings (896 px into Lite0, 7 refinements, half slot attention in the
masks, guided filter radius 32), on 192 scenes of the held-out stamps (seed 4321, the scenes
the settings were tuned on; FG-ARI / mBO):

- `native-refine`: scenes of another size (default 96x160) are resized to the model's square
  input and the masks back (what the service does). Here the coarse masks are instead
  upsampled to the scene's own size and guided by the scene itself, at each `--radii`.
- `best-of-inits`: each of `--inits` fixed starts alone (seed s; the stored one is seed 0),
  the oracle (per image the start of best FG-ARI), and the model's own choice among its first
  n starts (`slot_attention.eval_inits`, each of `--start-counts`: the start whose slots
  reconstruct the features best), judged on every `--judge-strides`-th token each way (the
  model: 4).
- `start-judges`: other judges of the `--inits` starts than the reconstruction: the start
  whose pixel partition agrees most with the other starts' (a medoid), both by summed rank,
  and a pixel vote over the `--start-counts` starts of lowest error, matched by IoU.
- `slot-count`: the model runs with `--slot-counts` slots instead of the 7 it trained with
  (slot attention's slots are exchangeable and start from a learned Gaussian, so the count is
  free at inference; each count's fixed noise is drawn as the shipped one is, seed 0).
- `adaptive-count`: a count per image: the model runs with each of `--slot-counts`, and each
  image keeps the count whose feature reconstruction error plus a price per slot (each of
  `--penalties`) is lowest; beside it each count alone and the per-image best count by FG-ARI
  (an oracle, the most any choice of count could give).
- `ensemble`: the coarse masks of several passes averaged before the guided filter: the image
  mirrored (`flip`), Lite0 fed other `--sizes` than 896 px (`scales`), and both. Each pass's
  slots are matched to the plain pass's by mask IoU (Hungarian) before averaging.
- `temperature`: slot attention's logits (q.k / sqrt(d)) multiplied by each of `--factors`
  (above 1: a sharper competition of the slots for each token).
- `snapshots`: Lightning resume checkpoints of one run (`--snapshots`, a glob of copies of
  `checkpoints/last.ckpt` taken during training) scored at `--every` steps, and their weights
  averaged over the steps from each of `--average-from`, with their own averaged codebook and
  with the final one.
- `large-scenes`: scenes larger than the model's input (default 384x384). As served, each is
  resized to 128 px and its masks blown up; here the model is also given it at each of
  `--input-sizes` px (Lite0 still fed 896 px, so a sharper image; the guided filter at that
  size, its radius scaled with it), and those features refined at 128 px instead.

One JSON line per probe.
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

import training.model.selfmod as selfmod
from runtime.contract import sha256_file
from training.checkpoint import load_checkpoint
from training.config import InferenceOverrides
from training.evaluate import _model_inputs, _slot_maps, evaluate_scenes, evaluation_scenes
from training.metrics.segmentation import fg_ari
from training.model import build_model
from training.model.refine import refine_masks

TUNING_VARIANT, TUNING_SEED = "photos-unseen", 4321
"""The scenes the recipe's inference settings were tuned on (held-out stamps)."""
RECIPE = InferenceOverrides(iterations=7, encoder_input=896, mask_attention=0.5, refine_radius=32)
BATCH = 8


def ints(text: str) -> list[int]:
    """A comma-separated list of integers (an argument)."""
    return [int(v) for v in text.split(",")]


def floats(text: str) -> list[float]:
    """A comma-separated list of numbers (an argument)."""
    return [float(v) for v in text.split(",")]


def scored(ids: np.ndarray, scenes, num_slots: int) -> dict:
    result = evaluate_scenes(lambda images: (ids, None), scenes, num_slots, chunk=len(scenes))
    return {"fg_ari": result["fg_ari"], "mbo": result["mbo"]}


def model_inputs(scenes, start: int, size: int) -> tuple[np.ndarray, torch.Tensor]:
    part = np.stack([s.image for s in scenes[start : start + BATCH]])
    x = torch.from_numpy(_model_inputs(part, size, size)).permute(0, 3, 1, 2)
    return part, x.float() / 255


def tuning(args, probe: str) -> tuple[list, dict]:
    """The tuning scenes (held-out stamps, seed 4321, unless `--variant` / `--seed` say
    otherwise) and the head of the probe's result."""
    scenes, _ = evaluation_scenes(args.variant, args.scenes, args.seed, args.height, args.width)
    head = {"probe": probe, "size": [args.height, args.width], "scenes": len(scenes)}
    if (args.variant, args.seed) != (TUNING_VARIANT, TUNING_SEED):
        head |= {"variant": args.variant, "seed": args.seed}
    return scenes, head


def with_features(model, scenes) -> list[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """(images, model input, frozen features) per batch: the features once for every run."""
    batches = []
    for i in range(0, len(scenes), BATCH):
        part, x = model_inputs(scenes, i, model.cfg.image_size)
        batches.append((part, x, model.encoder.features(x)))
    return batches


def scored_on(model, batches, scenes) -> dict:
    """The model as it stands on `with_features` batches."""
    ids = [_slot_maps(model(x, f).masks.numpy(), *p.shape[1:3]) for p, x, f in batches]
    return scored(np.concatenate(ids), scenes, model.cfg.slot_attention.num_slots)


@contextmanager
def coarse_masks():
    """While open, every forward leaves its masks on the token grid (before upsampling and
    the guided filter) and the filter's eps in the yielded dict."""
    captured = {}
    refine = selfmod.refine_masks

    def capture(grid, image, radius, eps):
        captured["grid"], captured["eps"] = grid, eps
        return refine(grid, image, radius, eps)

    selfmod.refine_masks = capture
    try:
        yield captured
    finally:
        selfmod.refine_masks = refine


@torch.no_grad()
def native_refine(model, args) -> dict:
    k, size = model.cfg.slot_attention.num_slots, model.cfg.image_size
    scenes, out = tuning(args, "native-refine")
    with coarse_masks() as captured:
        square, grids = [], []
        for i in range(0, len(scenes), BATCH):
            part, x = model_inputs(scenes, i, size)
            square.append(_slot_maps(model(x).masks.numpy(), *part.shape[1:3]))
            grids.append(captured["grid"])
    out["square_then_resized"] = scored(np.concatenate(square), scenes, k)
    image = torch.from_numpy(np.stack([s.image for s in scenes])).permute(0, 3, 1, 2) / 255
    grid = torch.cat(grids)
    for radius in args.radii:
        ids = refine_masks(grid, image.float(), radius, captured["eps"]).argmax(1).numpy()
        out[f"native_radius_{radius}"] = scored(ids, scenes, k)
    return out


def noise_probe(model, args, probe: str) -> tuple[list, dict]:
    """The tuning scenes and the result's head for a probe that changes the slots' starting
    noise (refused for a model whose slots do not start from one)."""
    if model.cfg.slot_attention.init != "gaussian":
        raise SystemExit(f"{probe}: the slots need a noise to start from (init gaussian)")
    return tuning(args, probe)


@contextmanager
def reconstruction_errors(model):
    """While open, every forward leaves each image's feature reconstruction error (mean
    squared, over tokens and channels) in the yielded dict, under "per_image"."""
    decode = model._decode_features
    error = {}

    def measured(*args, **kwargs):
        out = decode(*args, **kwargs)
        decoded, target = out[0], out[1]
        error["per_image"] = ((decoded.reconstruction - target) ** 2).mean(dim=(1, 2))
        return out

    model._decode_features = measured
    try:
        yield error
    finally:
        del model._decode_features  # the bound method of the class again


def with_starts(model, n: int):
    """The model with `slot_attention.eval_inits` = n (its weights), in eval mode."""
    other = build_model(InferenceOverrides(inits=n).apply(model.cfg))
    other.load_state_dict(model.state_dict())
    return other.eval()


@contextmanager
def judged_every(stride: int):
    """While open, the model judges its starts on every `stride`-th token each way."""
    shipped = selfmod.SELECT_STRIDE
    selfmod.SELECT_STRIDE = stride
    try:
        yield
    finally:
        selfmod.SELECT_STRIDE = shipped


def each_start(one, batches, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A one-start model run from each of n fixed starts (seed s; the stored one is seed 0)
    on `with_features` batches -> pixel ids (n, B, H, W) and each image's feature
    reconstruction error on every token (n, B)."""
    k, d = one.cfg.slot_attention.num_slots, one.cfg.slot_attention.slot_dim
    ids, errors = [], []
    for s in range(n):
        one.slot_init.eval_noise.copy_(
            torch.randn(k, d, generator=torch.Generator().manual_seed(s))
        )
        parts, errs = [], []
        with reconstruction_errors(one) as error:
            for p, x, f in batches:
                parts.append(_slot_maps(one(x, f).masks.numpy(), *p.shape[1:3]))
                errs.append(error["per_image"].numpy())
        ids.append(np.concatenate(parts))
        errors.append(np.concatenate(errs))
    return np.stack(ids), np.stack(errors)


@torch.no_grad()
def best_of_inits(model, args) -> dict:
    scenes, out = noise_probe(model, args, "best-of-inits")
    k = model.cfg.slot_attention.num_slots
    one = with_starts(model, 1)
    batches = with_features(one, scenes)  # the frozen encoder once for every start
    ids, _ = each_start(one, batches, args.inits)
    true = np.stack([s.instances for s in scenes])
    for s, start in enumerate(ids):
        out[f"init_{s}"] = scored(start, scenes, k)
    per_image = np.stack([fg_ari(true, start) for start in ids])
    out["oracle_fg_ari"] = float(np.nanmean(np.nanmax(per_image, axis=0)))
    for stride in args.judge_strides:
        with judged_every(stride):
            for n in args.start_counts:
                picked = scored_on(with_starts(model, n), batches, scenes)
                out[f"best_of_{n}_judged_every_{stride}"] = picked
    return out


@torch.no_grad()
def start_judges(model, args) -> dict:
    """Other judges of the slot starts than the reconstruction: each of `--inits` starts
    alone, then per image the start the judge picks. `reconstruction`: the lowest feature
    error on every token; `agreement`: the start whose partition of the pixels agrees most
    with the other starts' (mean ARI over every pixel, a medoid); both by summed rank; and a
    majority vote of the pixels over the m starts of lowest error, each matched to the
    lowest's slots by IoU (Hungarian)."""
    scenes, out = noise_probe(model, args, "start-judges")
    k = model.cfg.slot_attention.num_slots
    one = with_starts(model, 1)
    ids, errors = each_start(one, with_features(one, scenes), args.inits)  # (n, B, H, W), (n, B)
    true = np.stack([s.instances for s in scenes])
    n, rows = len(ids), np.arange(ids.shape[1])
    aris = np.stack([fg_ari(true, i) for i in ids])
    out["starts_mean_fg_ari"] = float(np.nanmean(aris))
    out["oracle_fg_ari"] = float(np.nanmean(np.nanmax(aris, axis=0)))
    agreement = np.zeros(errors.shape)
    for i in range(n):
        for j in range(i + 1, n):
            both = np.nan_to_num(fg_ari(ids[i] + 1, ids[j]))  # every pixel counted
            agreement[i] += both
            agreement[j] += both
    ranks = errors.argsort(0).argsort(0) + (-agreement).argsort(0).argsort(0)
    for name, choice in (
        ("reconstruction", errors.argmin(0)),
        ("agreement", agreement.argmax(0)),
        ("reconstruction_and_agreement", ranks.argmin(0)),
    ):
        out[name] = scored(ids[choice, rows], scenes, k)
    order = errors.argsort(0)  # (n, B): starts by error, per image
    one_hot = torch.from_numpy(np.eye(k, dtype=np.float32)[ids]).permute(0, 1, 4, 2, 3)
    for m in args.start_counts:
        if m > n:
            continue
        reference = one_hot[order[0], rows]
        votes = reference + sum(matched(reference, one_hot[order[r], rows]) for r in range(1, m))
        out[f"vote_of_{m}"] = scored(votes.argmax(1).numpy(), scenes, k)
    return out


@contextmanager
def slot_counts(model):
    """Yields a function that sets the model's slot count (each count's fixed noise drawn as
    the shipped one is, seed 0); the shipped count and noise come back when the block ends."""
    init, d = model.slot_init, model.cfg.slot_attention.slot_dim
    shipped = init.eval_noise.clone()

    def use(k: int) -> None:
        init.eval_noise = torch.randn(k, d, generator=torch.Generator().manual_seed(0))
        if k == len(shipped) and not torch.equal(init.eval_noise, shipped):
            raise SystemExit("the checkpoint's slot noise is not seed 0's")
        init.num_slots = k

    try:
        yield use
    finally:
        init.eval_noise, init.num_slots = shipped, len(shipped)


@torch.no_grad()
def slot_count(model, args) -> dict:
    scenes, out = noise_probe(model, args, "slot-count")
    batches = with_features(model, scenes)
    with slot_counts(model) as use:
        for k in args.slot_counts:
            use(k)
            out[f"slots_{k}"] = scored_on(model, batches, scenes)
            print(k, out[f"slots_{k}"], flush=True)
    return out


@torch.no_grad()
def adaptive_count(model, args) -> dict:
    """A slot count chosen per image: the model runs with each of `--slot-counts`, and each
    image keeps the count whose feature reconstruction error plus `penalty` x count is
    lowest, for each of `--penalties` (an error that more slots always lower, against a
    price per slot). Beside them each count alone, and the per-image best count by FG-ARI
    itself (`oracle`: an upper bound no rule that sees only the image can be held to)."""
    scenes, out = noise_probe(model, args, "adaptive-count")
    counts = sorted(args.slot_counts)
    batches = with_features(model, scenes)
    true = np.stack([s.instances for s in scenes])
    ids, errors = [], []
    with slot_counts(model) as use, reconstruction_errors(model) as error:
        for k in counts:
            use(k)
            maps, errs = [], []
            for p, x, f in batches:
                maps.append(_slot_maps(model(x, f).masks.numpy(), *p.shape[1:3]))
                errs.append(error["per_image"].numpy())
            ids.append(np.concatenate(maps))
            errors.append(np.concatenate(errs))
            out[f"slots_{k}"] = {
                **scored(ids[-1], scenes, k),
                "feature_error": float(errors[-1].mean()),
            }
    ids, err = np.stack(ids), np.stack(errors)  # (counts, scenes, H, W), (counts, scenes)
    scenes_at = np.arange(len(scenes))

    def picked(choice: np.ndarray) -> dict:
        result = scored(ids[choice, scenes_at], scenes, max(counts))
        result["images_per_count"] = dict(
            zip(map(str, counts), np.bincount(choice, minlength=len(counts)).tolist())
        )
        return result

    aris = np.stack([fg_ari(true, ids[c]) for c in range(len(counts))])
    out["oracle"] = picked(np.nan_to_num(aris, nan=-1.0).argmax(0))
    for penalty in args.penalties:
        choice = (err + penalty * np.asarray(counts, dtype=float)[:, None]).argmin(0)
        out[f"penalty_{penalty:g}"] = picked(choice)
        print(penalty, out[f"penalty_{penalty:g}"], flush=True)
    return out


def upsampled(grid: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=False)


def matched(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """other's slots (B, K, H, W) reordered to the reference's: per image, the assignment of
    largest total soft IoU (Hungarian; slots may be empty, as one-hot masks of hard ids)."""
    out = torch.empty_like(other)
    for b in range(len(reference)):
        a, o = reference[b].flatten(1), other[b].flatten(1)
        inter = a @ o.T
        union = a.sum(1)[:, None] + o.sum(1)[None] - inter
        iou = inter / union.clamp_min(1e-8)  # two empty slots: 0, not 0 / 0
        rows, cols = linear_sum_assignment(-iou.numpy())
        out[b, rows] = other[b, cols]
    return out


@torch.no_grad()
def ensemble(model, args) -> dict:
    """The coarse masks of the mirrored image and of other Lite0 input sizes, matched to the
    plain pass's and averaged before the guided filter."""
    if RECIPE.encoder_input not in args.sizes:
        raise SystemExit(f"ensemble: --sizes must hold the recipe's {RECIPE.encoder_input}")
    scenes, out = tuning(args, "ensemble")
    k, size, d = model.cfg.slot_attention.num_slots, model.cfg.image_size, model.cfg.decoder
    others = [
        load_checkpoint(args.checkpoint, overrides=replace(RECIPE, encoder_input=s))[0].eval()
        for s in args.sizes
        if s != RECIPE.encoder_input
    ]
    ids = {name: [] for name in ("plain", "flip", "scales", "scales_flip")}
    with coarse_masks() as captured:
        for i in range(0, len(scenes), BATCH):
            part, x = model_inputs(scenes, i, size)
            model(x)
            plain = upsampled(captured["grid"], size)
            model(x.flip(-1))
            flipped = matched(plain, upsampled(captured["grid"], size).flip(-1))
            scales = [plain]
            for other in others:
                other(x)
                scales.append(matched(plain, upsampled(captured["grid"], size)))
            for name, grids in (
                ("plain", [plain]),
                ("flip", [plain, flipped]),
                ("scales", scales),
                ("scales_flip", [*scales, flipped]),
            ):
                mean = torch.stack(grids).mean(0)
                masks = refine_masks(mean, x, d.refine_radius, d.refine_eps)
                ids[name].append(_slot_maps(masks.numpy(), *part.shape[1:3]))
    out["sizes"] = args.sizes
    for name, parts in ids.items():
        out[name] = scored(np.concatenate(parts), scenes, k)
    return out


@torch.no_grad()
def temperature(model, args) -> dict:
    """Slot attention's logits scaled by each factor at inference."""
    scenes, out = tuning(args, "temperature")
    batches = with_features(model, scenes)
    shipped = model.grouping.scale
    try:
        for factor in args.factors:
            model.grouping.scale = shipped * factor
            out[f"factor_{factor:g}"] = scored_on(model, batches, scenes)
    finally:
        model.grouping.scale = shipped
    return out


@torch.no_grad()
def large_scenes(model, args) -> dict:
    """Larger scenes through the model at more of their own detail than the served 128 px."""
    scenes, out = tuning(args, "large-scenes")
    k, size, d = model.cfg.slot_attention.num_slots, model.cfg.image_size, model.cfg.decoder
    height, width = args.height, args.width
    ids: dict[str, list] = {}
    with coarse_masks() as captured:
        for i in range(0, len(scenes), BATCH):
            _, served = model_inputs(scenes, i, size)
            for side in [size, *args.input_sizes]:
                x = served if side == size else model_inputs(scenes, i, side)[1]
                model(x)
                runs = {f"input_{side}": (x, round(d.refine_radius * side / size))}
                if side != size:
                    runs[f"input_{side}_refined_{size}"] = (served, d.refine_radius)
                for name, (guide, radius) in runs.items():
                    masks = refine_masks(captured["grid"], guide, radius, captured["eps"])
                    ids.setdefault(name, []).append(_slot_maps(masks.numpy(), height, width))
    out["input_sizes"] = args.input_sizes
    for name, parts in ids.items():
        out[name] = scored(np.concatenate(parts), scenes, k)
    return out


def snapshot_weights(pattern: str) -> list[tuple[int, dict]]:
    """(step, model weights) of each Lightning checkpoint matching `pattern`, by step; copies
    of one step (last.ckpt copied twice between two saves) count once."""
    found = {}
    for path in sorted(glob.glob(pattern)):
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own run's files
        weights = {k[6:]: v for k, v in state["state_dict"].items() if k.startswith("model.")}
        found[int(state["global_step"])] = weights
    if not found:
        raise SystemExit(f"snapshots: no checkpoint matches {pattern}")
    return sorted(found.items())


@torch.no_grad()
def snapshots(model, args) -> dict:
    """The run's weights at earlier steps, and averaged over its last steps."""
    found = snapshot_weights(args.snapshots)
    scenes, out = tuning(args, "snapshots")
    final = {name: v.clone() for name, v in model.state_dict().items()}
    batches = with_features(model, scenes)  # the encoder is frozen: the same at every step

    def score(weights: dict) -> dict:
        model.load_state_dict(weights, strict=True)
        return scored_on(model, batches, scenes)

    try:
        out["final"] = score(final)
        for step, weights in found:
            if step % args.every == 0 or step == found[-1][0]:
                out[f"step_{step}"] = score({**final, **weights})
        for start in args.average_from:
            chosen = [w for step, w in found if step >= start]
            if not chosen:
                continue
            mean = {
                name: torch.stack([w[name].float() for w in chosen]).mean(0).to(v.dtype)
                if v.is_floating_point() and name in chosen[0]
                else v
                for name, v in final.items()
            }
            out[f"average_from_{start}"] = {**score(mean), "snapshots": len(chosen)}
            final_codes = {n: final[n] if n.startswith("codebook.") else v for n, v in mean.items()}
            out[f"average_from_{start}_final_codebook"] = score(final_codes)
    finally:
        model.load_state_dict(final)
    return out


PROBES = {
    "native-refine": native_refine,
    "best-of-inits": best_of_inits,
    "start-judges": start_judges,
    "slot-count": slot_count,
    "adaptive-count": adaptive_count,
    "ensemble": ensemble,
    "temperature": temperature,
    "snapshots": snapshots,
    "large-scenes": large_scenes,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/inference_probe.py", description=__doc__)
    p.add_argument("probe", choices=list(PROBES))
    p.add_argument("--out", type=Path, required=True, help="one JSON line is appended here")
    p.add_argument("--checkpoint", default="runs/photos/model.safetensors")
    p.add_argument("--scenes", type=int, default=192)
    p.add_argument(
        "--variant",
        default=TUNING_VARIANT,
        choices=["photos", "photos-unseen"],
        help="training or held-out stamps (default: held-out, as the tuning scenes)",
    )
    p.add_argument(
        "--seed", type=int, default=TUNING_SEED, help="other scenes than the tuning ones"
    )
    p.add_argument("--height", type=int, default=None, help="default by probe: 96, 384 or 128")
    p.add_argument("--width", type=int, default=None, help="default by probe: 160, 384 or 128")
    p.add_argument("--radii", type=ints, default=[24, 32, 40])
    p.add_argument("--inits", type=int, default=16, help="best-of-inits: starts alone")
    p.add_argument("--start-counts", type=ints, default=[2, 4, 8, 16])
    p.add_argument("--judge-strides", type=ints, default=[1, 2, 4])
    p.add_argument("--penalties", type=floats, default=[0.01, 0.015, 0.02, 0.025])
    p.add_argument("--slot-counts", type=ints, default=[5, 6, 7, 8, 9])
    p.add_argument("--sizes", type=ints, default=[768, 896, 1024])
    p.add_argument("--input-sizes", type=ints, default=[256, 384])
    p.add_argument("--factors", type=floats, default=[1, 0.8, 1.25, 1.5, 2])
    p.add_argument("--snapshots", default="runs/snaps/*.ckpt", help="a glob of last.ckpt copies")
    p.add_argument("--every", type=int, default=2000)
    p.add_argument("--average-from", type=ints, default=[4000, 8000, 11000])
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    height, width = {"native-refine": (96, 160), "large-scenes": (384, 384)}.get(
        args.probe, (128, 128)
    )
    args.height, args.width = args.height or height, args.width or width
    torch.set_num_threads(args.threads)
    model, _ = load_checkpoint(args.checkpoint, overrides=RECIPE)
    model.eval()
    started = time.time()
    result = PROBES[args.probe](model, args)
    result["checkpoint_sha256"] = sha256_file(args.checkpoint)[:12]
    result["seconds"] = round(time.time() - started)
    print(json.dumps(result), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
