"""Training entry point: data, Lightning trainer, callbacks, final checkpoint and report.

Run layout (`run.out_dir`):
  config.yaml            the resolved TrainConfig
  checkpoints/last.ckpt  Lightning resume state (optimizer, schedule, step)
  model.safetensors      the model artefact: config + weights + code names (no pickle)
  logs/                  CSV (metrics.csv) and TensorBoard logs
  images/                mask overlays and codebook usage every `run.image_every` steps
  curves.png, metrics.json  written at the end
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import ConcatDataset, DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

from training.checkpoint import CheckpointInfo, save_checkpoint
from training.config import DataConfig, TrainConfig, save_config
from training.data import ImageFolderDataset, ShapesDataset, generate_batch
from training.data.datasets import PhotoDataset
from training.distributed import replicas_differ
from training.lit import SlotModule
from training.progress import RunProgressBar, single_log_output
from training.resume import AtomicCheckpointIO, keep_log_history, restore_log_history
from training.visualize import save_code_usage, save_mask_grid, save_training_curves

log = logging.getLogger(__name__)

VAL_SEED = 999  # validation scenes; the README's evaluation uses 12345, training 0/1
NAMING_SEED = 777  # labelled scenes used to name the codes after training


def _shapes(cfg: DataConfig, n: int, seed: int, variant: str, size: int) -> ShapesDataset:
    return ShapesDataset(n, seed, variant, size, cfg.min_objects, cfg.max_objects)


class NothingTrained(ValueError):
    """A run that ended without one optimisation step (data or budget too small): it writes
    no model artefact, which would be an untrained network."""


def check_one_batch(n: int, cfg: DataConfig, world_size: int = 1) -> None:
    """Every step takes a full batch on each process (an incomplete last batch is dropped),
    so a training set smaller than that trains zero steps: refuse it, saying what to do."""
    need = cfg.batch_size * world_size
    if n >= need:
        return
    source = f"data.folder {cfg.folder}" if cfg.variant == "folder" else "data.train_scenes"
    per = f" x {world_size} processes" if world_size > 1 else ""
    raise ValueError(
        f"{source} has {n} images, fewer than one batch (data.batch_size={cfg.batch_size}"
        f"{per}): add images, or set data.batch_size={max(1, n // world_size)} or lower"
    )


class ShapesDataModule(L.LightningDataModule):
    """Training scenes (solid, textured, both mixed, or a folder of the user's images) and
    labelled validation scenes of each shapes variant."""

    def __init__(self, cfg: DataConfig, image_size: int, val_batch: int = 64):
        super().__init__()
        self.cfg, self.size, self.val_batch = cfg, image_size, val_batch
        self.val_names: list[str] = []

    def setup(self, stage: str | None = None) -> None:
        c, s = self.cfg, self.size
        if c.variant == "folder":
            if not c.folder:
                raise ValueError("data.variant=folder needs data.folder")
            self.train_set = ImageFolderDataset(c.folder, s)
        elif c.variant == "mixed":
            half = max(1, c.train_scenes // 2)
            self.train_set = ConcatDataset(
                [_shapes(c, half, c.seed, "solid", s), _shapes(c, half, c.seed + 1, "textured", s)]
            )
        elif c.variant == "photos":
            self.train_set = PhotoDataset(
                c.train_scenes, c.seed, s, "train", c.min_objects, c.max_objects
            )
        else:
            self.train_set = _shapes(c, c.train_scenes, c.seed, c.variant, s)
        world = self.trainer.world_size if self.trainer is not None else 1
        check_one_batch(len(self.train_set), c, world)
        if c.variant == "photos":
            self.val_names = ["photos-unseen"]
            self.val_sets = [
                PhotoDataset(c.val_scenes, VAL_SEED, s, "unseen", c.min_objects, c.max_objects)
            ]
            return
        variants = ["solid", "textured"] if c.variant in ("mixed", "folder") else [c.variant]
        self.val_names = variants
        self.val_sets = [_shapes(c, c.val_scenes, VAL_SEED, v, s) for v in variants]

    def train_dataloader(self) -> StatefulDataLoader:
        # Stateful: Lightning saves the sampler's position in the resume checkpoint, so a run
        # resumed mid-epoch sees the rest of that epoch's shuffle instead of a new one.
        return StatefulDataLoader(
            self.train_set,
            batch_size=self.cfg.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(v, batch_size=self.val_batch) for v in self.val_sets]


class ArtefactCallback(Callback):
    """Every `image_every` steps: a PNG of mask overlays and of codebook usage; every
    `checkpoint_every` steps: the safetensors model artefact (atomic write)."""

    def __init__(self, cfg: TrainConfig, out_dir: Path):
        self.cfg, self.out = cfg, out_dir
        size = cfg.model.image_size
        if cfg.data.variant == "photos":
            from training.data.photos import generate_photo_batch  # reads the Debian packages

            scenes = generate_photo_batch(8, VAL_SEED + 1, size, split="unseen")
        else:
            scenes = generate_batch(6, VAL_SEED + 1, "textured", size)
            scenes += generate_batch(6, VAL_SEED + 1, "solid", size)[::2][:2]
        self.images = np.stack([s.image for s in scenes])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if not trainer.is_global_zero:  # replicas are identical: rank 0 writes for all
            return
        step = trainer.global_step
        if step % self.cfg.run.image_every == 0:
            self.save_images(module, step)
        if step % self.cfg.run.checkpoint_every == 0:
            save_checkpoint(
                module.model, self.out / "model.safetensors", CheckpointInfo(self.cfg.model)
            )

    @torch.no_grad()
    def save_images(self, module: SlotModule, step: int) -> None:
        (self.out / "images").mkdir(parents=True, exist_ok=True)
        was_training = module.training
        module.eval()
        x = torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div(255).to(module.device)
        out = module.model(x)
        recon = (out.reconstruction.clamp(0, 1) * 255).byte().permute(0, 2, 3, 1).cpu().numpy()
        codes = out.codes.cpu().numpy()
        e = self.cfg.model.codebook.size
        merged = self.cfg.model.decoder.merge_share > 0
        save_mask_grid(
            self.out / "images" / f"masks_{step:06d}.png",
            self.images,
            recon,
            out.slot_masks.argmax(1).cpu().numpy(),
            codes,
            e,
            f"step {step}",
            object_ids=out.masks.argmax(1).cpu().numpy() if merged else None,
        )
        counts = module.model.codebook.cluster_size.cpu().numpy()
        save_code_usage(
            self.out / "images" / f"codes_{step:06d}.png",
            counts,
            title=f"codebook usage (EMA cluster sizes), step {step}",
        )
        module.train(was_training)


class ReplicaCheck(Callback):
    """At the end of a data-parallel run, check that every replica holds the same EMA
    codebook (its statistics are all-reduced; `training/distributed.py`) and fail loudly
    if not: the checkpoint rank 0 writes would then be one replica of several."""

    def on_train_end(self, trainer, module) -> None:
        if trainer.world_size == 1:
            return
        book = module.model.codebook
        names = ("embed", "embed_avg", "cluster_size")
        differ = replicas_differ({n: getattr(book, n) for n in names})
        if differ:
            raise RuntimeError(f"the codebook differs across replicas: {', '.join(differ)}")
        if trainer.is_global_zero:
            log.info("codebook identical on all %d replicas", trainer.world_size)


def resolve_precision(precision: str) -> str:
    """The Lightning precision for `run.precision`; `auto` picks by the hardware.

    `auto` is bf16-mixed on a CPU with AMX tiles (an Intel Xeon: 1.43x per step, the default
    recipe 1.57x faster end to end at the same quality, README "Train") and 32-true
    elsewhere: CPUs without AMX have no fast bf16 convolutions (an AVX2 EPYC ran bf16 11.8x
    slower) and on an H100 bf16 gained nothing at this model size."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available():
        return "32-true"
    has_amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return "bf16-mixed" if has_amx is not None and has_amx() else "32-true"


def _threads(cfg: TrainConfig) -> None:
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)


def build_trainer(
    cfg: TrainConfig, out: Path, callbacks: list[Callback], enable_progress: bool = True
):
    r = cfg.run
    max_time = None
    if r.max_minutes:
        max_time = {"minutes": r.max_minutes}
    return L.Trainer(
        accelerator=r.accelerator,
        devices=r.devices,  # more than one process, or nodes: Lightning's DDP
        num_nodes=r.num_nodes,
        max_steps=r.max_steps,
        max_time=max_time,
        precision=r.precision,
        gradient_clip_val=cfg.optim.grad_clip,
        val_check_interval=r.val_every,
        check_val_every_n_epoch=None,
        log_every_n_steps=r.log_every,
        logger=[
            CSVLogger(out, name="logs", version=""),
            TensorBoardLogger(out, name="logs", version="tb"),
        ],
        callbacks=[
            ModelCheckpoint(
                dirpath=out / "checkpoints",
                every_n_train_steps=r.checkpoint_every,
                save_last=True,
                save_top_k=0,
                # Always overwrite last.ckpt. With the counter on, a run directory that was
                # moved or copied resumes into last-v1.ckpt (the stored path no longer
                # matches), and the next resume silently goes back to the old last.ckpt.
                enable_version_counter=False,
            ),
            *callbacks,
            *([RunProgressBar(refresh_rate=20)] if enable_progress else []),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=enable_progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        deterministic=False,
    )


def _init_from(module: SlotModule, cfg: TrainConfig, path: str) -> None:
    """Start from a checkpoint's weights; its model config must be this run's."""
    from training.checkpoint import load_checkpoint

    source, info = load_checkpoint(path)
    # a fixed slot count may start an adaptive one, whose keep head is new (trained from
    # scratch, the head dropped nearly every slot before the decoder could use them)
    wanted, theirs = cfg.model.slot_attention, info.config
    fixed = theirs.slot_attention.keep_penalty == 0 < wanted.keep_penalty
    if fixed:
        keep = {"keep_penalty": wanted.keep_penalty, "keep_warmup": wanted.keep_warmup}
        sa = theirs.slot_attention.model_copy(update=keep)
        theirs = theirs.model_copy(update={"slot_attention": sa})
    if theirs != cfg.model:
        raise ValueError(f"run.init_from={path}: its model config differs from this run's")
    missing, unexpected = module.model.load_state_dict(source.state_dict(), strict=not fixed)
    if unexpected or any(not key.startswith("selector.") for key in missing):
        raise ValueError(f"run.init_from={path}: weights that do not fit ({missing + unexpected})")
    log.info("starting from the weights of %s%s", path, " (a new keep head)" if fixed else "")


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True) -> Path | None:
    """Train, then name the codes, evaluate and write the final artefact. Returns its path
    (None in the other processes of a data-parallel run).

    With `resume`, an existing `checkpoints/last.ckpt` in `run.out_dir` is continued."""
    from training.evaluate import (  # avoid import cycle
        eval_batch_size,
        evaluate_model,
        fit_model_labels,
        label_set_of,
        labelled_variants,
        name_codes_on_shapes,
    )

    single_log_output()
    out = Path(cfg.run.out_dir)
    if cfg.run.precision == "auto":  # the saved config says what this machine ran
        precision = resolve_precision(cfg.run.precision)
        log.info("run.precision=auto -> %s", precision)
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"precision": precision})})
    _threads(cfg)
    L.seed_everything(cfg.run.seed, workers=True, verbose=False)
    data = ShapesDataModule(cfg.data, cfg.model.image_size, eval_batch_size(cfg.model))
    module = SlotModule(cfg)
    if cfg.run.init_from:
        _init_from(module, cfg, cfg.run.init_from)
    artefacts = ArtefactCallback(cfg, out)
    # Under DDP every process runs this function; the trainer knows each one's rank, and
    # only rank 0 writes the run folder (Lightning's loggers and checkpoints do the same).
    trainer = build_trainer(cfg, out, [artefacts, ReplicaCheck()], progress)
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    if trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        if ckpt_path:
            log.info("resuming from %s", ckpt_path)
            step = AtomicCheckpointIO().load_checkpoint(last)["global_step"]
            keep_log_history(out / "logs", int(step))
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    minutes = (time.perf_counter() - start) / 60
    if trainer.global_step == 0:
        raise NothingTrained(
            f"the run ended after 0 training steps (run.max_steps={cfg.run.max_steps}, "
            f"run.max_minutes={cfg.run.max_minutes}): no model written"
        )
    if not trainer.is_global_zero:
        return None  # rank 0 names the codes, evaluates and writes the artefact

    module.drop_cached_features()  # the evaluation below needs the memory, not the cache
    model = module.model.cpu().eval()
    artefacts.save_images(module, trainer.global_step)
    names, usage = name_codes_on_shapes(model, cfg.run.eval_scenes, NAMING_SEED, cfg.data)
    variants = labelled_variants(cfg.data)
    label_set = label_set_of(variants[0])
    labels = fit_model_labels(model, label_set, cfg.run.eval_scenes)
    info = CheckpointInfo(
        cfg.model,
        code_names=names,
        code_usage=usage,
        code_labels=labels,
        label_set=label_set,
        extra={
            "steps": int(trainer.global_step),
            "train_minutes_this_session": round(minutes, 2),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
    )
    path = save_checkpoint(model, out / "model.safetensors", info)
    report = {
        v: evaluate_model(
            model, v, cfg.run.eval_scenes, VAL_SEED + 2, code_names=[c.label for c in labels]
        )
        for v in variants
    }
    report["steps"] = int(trainer.global_step)
    report["train_minutes_this_session"] = round(minutes, 2)
    (out / "metrics.json").write_text(json.dumps(report, indent=2))
    metrics_csv = out / "logs" / "metrics.csv"
    restore_log_history(metrics_csv.parent)
    if metrics_csv.exists():
        save_training_curves(metrics_csv, out / "curves.png")
    counts = np.asarray(usage) * max(1, cfg.run.eval_scenes)
    save_code_usage(
        out / "code_usage.png", counts, names, "code usage on labelled scenes, by code name"
    )
    log.info("wrote %s (%.1f min, %d steps)", path, minutes, trainer.global_step)
    return path
