"""DINOSAUR's MLP decoder against an autoregressive transformer decoder (the paper's and SPOT's
choice), with the same self-modulating grouping over the same cached frozen features.

    .venv/bin/python scripts/decoder_probe.py --out runs/decoder-probe   # ~30 min on 2 cores

Both models group frozen EfficientNet-Lite0 stride-32 features of a 448-px input (14x14 tokens,
as `training/configs/photos.yaml`) with the same modules as the photo model (slot init,
self-modulating slot attention, EMA codebook, top-down modulation) and reconstruct the
standardised features:

- `mlp`: the photo model's `FeatureDecoder` (slot + token position -> features and an alpha
  logit; the alphas, softmaxed over slots, are the masks), trained on 64 random tokens;
- `ar`: a pre-norm transformer decoder over the token sequence in raster order, fed the target
  features shifted by one (teacher forcing), attending causally to earlier tokens and, by
  cross-attention, to the slots; the masks are the last layer's cross-attention weights
  (softmax over slots, averaged over heads), as in DINOSAUR's and SPOT's transformer decoders.
  Masks need one pass: the true features are there at inference too.

Training scenes use the training stamps and validation the held-out ones. The features are
computed once and kept in `--out` (float16). Each model's masks on the token grid are upsampled
to 128 px and refined on the image (`training/model/refine.py`, radius 32 as the photo recipe,
and 0: bilinear only); FG-ARI and mBO are averaged over the validation scenes. Writes
`decoder_probe.json` with both models' figures, training loss and speed, beside k-means on
RGB and on the frozen features on the same scenes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.baselines import kmeans_feature_segmentation, kmeans_segmentation
from training.config import (
    CodebookConfig,
    DecoderConfig,
    ModulationConfig,
    SlotAttentionConfig,
)
from training.data.photos import generate_photo_batch
from training.metrics.segmentation import fg_ari, mbo
from training.model.codebook import EMACodebook
from training.model.decoder import FeatureDecoder
from training.model.modulation import TopDownModulation
from training.model.pretrained import Lite0Features
from training.model.refine import refine_masks
from training.model.slot_attention import SlotAttention
from training.model.slot_init import SlotInit

IMAGE = 128
LITE0_INPUT = 448


def cached_features(out: Path, name: str, n: int, seed: int, split: str) -> dict:
    """Scenes and their frozen Lite0 stride-32 features (B, 196, 320), computed once."""
    path = out / f"{name}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    encoder = Lite0Features((32,), LITE0_INPUT)
    images, instances, feats = [], [], []
    started = time.time()
    for start in range(0, n, 64):
        scenes = generate_photo_batch(min(64, n - start), seed + start, IMAGE, split=split)
        image = torch.tensor(np.stack([s.image for s in scenes]))
        with torch.no_grad():
            (f,) = encoder(image.permute(0, 3, 1, 2).float() / 255)
        feats.append(f.flatten(2).transpose(1, 2).half())
        images.append(image)
        instances.append(torch.tensor(np.stack([s.instances for s in scenes])))
        print(
            f"{name}: {start + len(scenes)}/{n} scenes, {time.time() - started:.0f} s", flush=True
        )
    data = {
        "feats": torch.cat(feats),
        "images": torch.cat(images),
        "instances": torch.cat(instances),
    }
    torch.save(data, path)
    return data


class Block(nn.Module):
    """Pre-norm decoder block: causal self-attention, cross-attention to the slots, MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x, slots, causal):
        h = self.norms[0](x)
        x = x + self.self_attn(h, h, h, attn_mask=causal, need_weights=False)[0]
        h = self.norms[1](x)
        out, weights = self.cross_attn(h, slots, slots, average_attn_weights=True)
        x = x + out
        return x + self.mlp(self.norms[2](x)), weights  # weights (B, N, K)


class AutoregressiveDecoder(nn.Module):
    """Token n is predicted from tokens < n and the slots; masks from the last cross-attention."""

    def __init__(self, slot_dim: int, tokens: int, feature_dim: int, dim: int, layers: int):
        super().__init__()
        self.inp = nn.Linear(feature_dim, dim)
        self.bos = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, tokens, dim) * 0.02)
        self.slots_in = nn.Sequential(nn.LayerNorm(slot_dim), nn.Linear(slot_dim, dim))
        self.blocks = nn.ModuleList(Block(dim, 4) for _ in range(layers))
        self.out = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, feature_dim))
        causal = torch.triu(torch.full((tokens, tokens), float("-inf")), 1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, slots, target):
        """slots (B, K, D), target (B, N, C) -> reconstruction (B, N, C), masks (B, K, N)."""
        shifted = torch.cat([self.bos.expand(len(target), 1, -1), self.inp(target[:, :-1])], 1)
        x, memory = shifted + self.pos, self.slots_in(slots)
        for block in self.blocks:
            x, weights = block(x, memory, self.causal.to(x.dtype))
        return self.out(x).float(), weights.transpose(1, 2).float()


class Probe(nn.Module):
    def __init__(self, decoder: str, tokens: int, feature_dim: int, args):
        super().__init__()
        d = args.slot_dim
        sa = SlotAttentionConfig(
            num_slots=7, slot_dim=d, mlp_hidden=2 * d, init="gaussian", iterations=3,
            eval_iterations=3, locality=0.0, locality_window=0.0, key_pool=1, key_pool_mix=1.0,
        )  # fmt: skip
        self.project = nn.Sequential(
            nn.LayerNorm(feature_dim), nn.Linear(feature_dim, d), nn.ReLU(), nn.Linear(d, d)
        )
        self.pos = nn.Parameter(torch.randn(1, tokens, d) * 0.02)
        self.slot_init, self.grouping = SlotInit(sa), SlotAttention(sa, d)
        self.codebook = EMACodebook(CodebookConfig(size=32), d)
        self.modulation = TopDownModulation(ModulationConfig(), d, 2 * d)
        self.kind = decoder
        grid = int(tokens**0.5)
        self.decoder = (
            FeatureDecoder(DecoderConfig(kind="features", channels=256), d, grid, feature_dim)
            if decoder == "mlp"
            else AutoregressiveDecoder(d, tokens, feature_dim, args.ar_dim, args.ar_layers)
        )

    def forward(self, feats, tokens=None):
        """feats (B, N, C) standardised -> (reconstruction, its target, masks (B, K, N))."""
        k, v = self.grouping.project(self.project(feats) + self.pos)
        z0 = self.slot_init(len(feats))
        slots, attn = self.grouping.iterate(z0, k, v)
        quantized = self.codebook(slots).quantized.to(slots.dtype)
        slots, _ = self.grouping.iterate(z0, k, v, self.modulation(quantized, attn), attn)
        if self.kind == "ar":
            recon, masks = self.decoder(slots, feats)
            return recon, feats, masks
        decoded = self.decoder(slots, tokens)
        target = feats if tokens is None else feats[:, tokens]
        return decoded.reconstruction, target, decoded.masks


def scored(truth: np.ndarray, ids: np.ndarray) -> dict:
    return {
        "fg_ari": round(float(fg_ari(truth, ids).mean()), 3),
        "mbo": round(float(mbo(truth, ids).mean()), 3),
    }


def baselines(val: dict) -> dict:
    """k-means (k = 7, the slot count) on RGB and on frozen Lite0 features (224 px, stride
    32), the photo table's baselines, on the same validation scenes."""
    images, truth = val["images"].numpy(), val["instances"].numpy()
    rgb = np.stack([kmeans_segmentation(image) for image in images])
    return {
        "k-means on RGB": scored(truth, rgb),
        "k-means on Lite0 features": scored(truth, kmeans_feature_segmentation(images)),
    }


def evaluate(model: Probe, feats, images, instances, radii) -> dict:
    model.eval()
    grid = int(feats.shape[1] ** 0.5)
    scores = {}
    with torch.no_grad():
        masks = torch.cat([model(feats[i : i + 32])[2] for i in range(0, len(feats), 32)])
        masks = masks.reshape(len(feats), -1, grid, grid)
        image = images.permute(0, 3, 1, 2).float() / 255
        for radius in radii:
            ids = torch.cat(
                [
                    refine_masks(masks[i : i + 16], image[i : i + 16], radius, 1e-3).argmax(1)
                    for i in range(0, len(masks), 16)
                ]
            ).numpy()
            scores[f"radius {radius}"] = scored(instances.numpy(), ids)
    model.train()
    return scores


def standardised(data: dict, val: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets' features standardised per channel with the training set's statistics."""
    train = data["feats"].float()
    mu, sd = train.mean((0, 1)), train.std((0, 1)) + 1e-3
    return (train - mu) / sd, (val["feats"].float() - mu) / sd


def train(decoder: str, feats: torch.Tensor, val_feats: torch.Tensor, val: dict, args) -> dict:
    torch.manual_seed(0)
    n, tokens, channels = feats.shape
    model = Probe(decoder, tokens, channels, args)
    opt = torch.optim.Adam(model.parameters(), lr=4e-4)
    warm = 500
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 ** (s / 10000)
    )
    gen = torch.Generator().manual_seed(0)
    started, losses = time.time(), []
    for step in range(1, args.steps + 1):
        batch = feats[torch.randint(n, (args.batch,), generator=gen)]
        chosen = torch.randperm(tokens, generator=gen)[:64] if decoder == "mlp" else None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            recon, target, _ = model(batch, chosen)
        loss = F.mse_loss(recon.float(), target)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 100 == 0:
            rate = (time.time() - started) / step
            print(f"{decoder}: step {step}/{args.steps}, loss {np.mean(losses[-100:]):.4f}, "
                  f"{rate:.2f} s/step", flush=True)  # fmt: skip
    seconds = time.time() - started
    scores = evaluate(model, val_feats, val["images"], val["instances"], (0, 32))
    print(f"{decoder}: {scores}", flush=True)
    return {
        "scores": scores,
        "final_loss": round(float(np.mean(losses[-100:])), 4),
        "seconds_per_step": round(seconds / args.steps, 3),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def probe_parser(prog: str, doc: str, steps: int) -> argparse.ArgumentParser:
    """The options every probe over this cache takes: where it lives, its scenes, the schedule."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-scenes", type=int, default=2048)
    parser.add_argument("--val-scenes", type=int, default=128)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def load_caches(args: argparse.Namespace) -> tuple[dict, dict]:
    """The cached training scenes (seed 1) and held-out scenes (seed 4321), computed once in
    `--out`, with torch on `--threads` threads."""
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    data = cached_features(args.out, "train", args.train_scenes, 1, "train")
    val = cached_features(args.out, "unseen", args.val_scenes, 4321, "unseen")
    return data, val


def main(argv: list[str] | None = None) -> int:
    parser = probe_parser("scripts/decoder_probe.py", __doc__, steps=2000)
    parser.add_argument("--slot-dim", type=int, default=128)
    parser.add_argument("--ar-dim", type=int, default=192)
    parser.add_argument("--ar-layers", type=int, default=2)
    parser.add_argument("--decoders", default="mlp,ar")
    args = parser.parse_args(argv)
    data, val = load_caches(args)
    results = {"config": {k: str(v) for k, v in vars(args).items()}, "baselines": baselines(val)}
    print(f"baselines: {results['baselines']}", flush=True)
    feats, val_feats = standardised(data, val)
    for decoder in args.decoders.split(","):
        results[decoder] = train(decoder, feats, val_feats, val, args)
        (args.out / "decoder_probe.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
