"""The Lightning wrapper: optimisation, logging and validation around the plain model."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch

from training.config import TrainConfig
from training.metrics import fg_ari, mbo
from training.model import build_model


def keep_ramp(step: int, warmup: int) -> float:
    """The share of `slot_attention.keep_penalty` the loss pays at `step`: rising linearly
    from 0 over the first `warmup` steps."""
    return min(1.0, step / warmup) if warmup else 1.0


def distill_ramp(step: int, ramp: int) -> float:
    """The share of `slot_attention.distill` the loss pays at `step`: half a cosine from 0 at
    step 0 to 1 at step `ramp`, 1 after."""
    return 0.5 - 0.5 * math.cos(math.pi * min(1.0, step / ramp)) if ramp else 1.0


def follow_schedule(model, step: int) -> None:
    """Set the model's loss ramps (the keep penalty's, the distillation's) for training `step`:
    one place for the Lightning module and the probes that train the model by hand."""
    sa = model.cfg.slot_attention
    model.keep_ramp = keep_ramp(step, sa.keep_warmup)
    model.distill_ramp = distill_ramp(step, sa.distill_ramp)


def lr_factor(step: int, warmup: int, decay_steps: int, restart_steps: int = 0) -> float:
    """Linear warm-up to 1, then exponential decay by half every `decay_steps`; with
    `restart_steps`, the whole schedule starts again every that many steps (a warm restart)."""
    if restart_steps:
        step %= restart_steps
    warm = min(1.0, (step + 1) / max(1, warmup))
    return warm * 0.5 ** (max(0, step - warmup) / decay_steps)


class SlotModule(L.LightningModule):
    def __init__(self, cfg: TrainConfig):
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"config": cfg.model_dump(mode="json")})
        self.model = build_model(cfg.model)
        self._resume_rng: dict | None = None  # set by on_load_checkpoint, used once
        self._cache: dict[int, torch.Tensor] = {}  # frozen features (N, C) by item index
        self._val_cache: dict[tuple[int, int], torch.Tensor] = {}  # by (loader, item index)

    def forward(self, image: torch.Tensor):
        return self.model(image)

    def drop_cached_features(self) -> None:
        """Free the cached frozen features (after training: 1 GB for the photo recipe)."""
        self._cache.clear()
        self._val_cache.clear()

    def _cached_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """The frozen encoder's standardised features of the batch, each image's computed once.

        A model that reconstructs frozen features (`decoder.kind=features`) spends most of a
        step in the frozen backbone, whose output never changes: the first epoch computes it
        and keeps it (float16, keyed by the item's `index`); later epochs read it back. The
        per-channel statistics are fitted on the first batch of a run that starts without
        them (a resumed or initialised run keeps its own)."""
        if not self.model.reconstructs_features:
            return None
        encoder, image = self.model.encoder, batch["image"]
        keys = batch["index"].cpu().tolist() if "index" in batch else None
        todo = (
            list(range(len(image)))
            if keys is None
            else [i for i, key in enumerate(keys) if key not in self._cache]
        )
        raw = encoder.raw_features(image[todo]) if todo else None
        if raw is not None and not bool(encoder.statistics_fitted):
            encoder.fit_statistics(raw)
        if keys is None:  # items without an index (a dataset of another kind): not kept
            return encoder.standardise(raw)
        if raw is not None:
            for i, features in zip(todo, raw.half().cpu(), strict=True):
                self._cache[keys[i]] = features
        raw = torch.stack([self._cache[key].float() for key in keys]).to(image.device)
        return encoder.standardise(raw)

    def _validation_features(
        self, batch: dict[str, torch.Tensor], dataloader_idx: int
    ) -> torch.Tensor | None:
        """The frozen encoder's standardised features of a validation batch (at the encoder's
        inference input), computed at the first validation and kept: validation runs on the
        same scenes every time (the photo recipe: 128 scenes through Lite0 at 896 px, 64 MB).
        Kept raw, standardised on use, so they are what the model would compute itself."""
        if not self.model.reconstructs_features or "index" not in batch:
            return None
        encoder = self.model.encoder
        keys = [(dataloader_idx, key) for key in batch["index"].cpu().tolist()]
        if any(key not in self._val_cache for key in keys):
            raw = encoder.raw_features(batch["image"])
            self._val_cache.update(zip(keys, raw, strict=True))
        return encoder.standardise(torch.stack([self._val_cache[key] for key in keys]))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        follow_schedule(self.model, self.global_step)
        out = self.model(batch["image"], self._cached_features(batch))
        bs = batch["image"].shape[0]
        for name, value in out.losses.items():
            self.log(f"train/{name}", value, batch_size=bs, prog_bar=name == "mse")
        self.log("train/codes_used", float(out.codes.unique().numel()), batch_size=bs)
        self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return out.losses["total"]

    def on_validation_epoch_start(self) -> None:
        self._val: dict[str, list[np.ndarray]] = {}

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ):
        out = self.model(batch["image"], self._validation_features(batch, dataloader_idx))
        pred = out.masks.argmax(1).cpu().numpy()
        true = batch["instances"].cpu().numpy()
        name = self._val_names[dataloader_idx]
        self._val.setdefault(f"{name}_fg_ari", []).append(fg_ari(true, pred))
        self._val.setdefault(f"{name}_mbo", []).append(mbo(true, pred))
        self.log(
            f"val/{name}_mse", out.losses["mse"], add_dataloader_idx=False, batch_size=len(pred)
        )

    def on_validation_epoch_end(self) -> None:
        for key, parts in self._val.items():
            values = np.concatenate(parts)
            self.log(f"val/{key}", float(np.nanmean(values)), prog_bar=key.endswith("ari"))

    @property
    def _val_names(self) -> list[str]:
        return list(getattr(self.trainer.datamodule, "val_names", ["val"]))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Training draws from torch's RNG (pixel subsets, dead-code re-seeding); keeping its
        # state in the resume checkpoint makes a resumed run continue the same stream.
        checkpoint["rng"] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["rng"]["cuda"] = torch.cuda.get_rng_state_all()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Restored at the first batch, not now: starting the data loader's iterator on
        # resume draws a seed from the global RNG that the uninterrupted run drew earlier.
        self._resume_rng = checkpoint.get("rng")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        rng, self._resume_rng = self._resume_rng, None
        if rng:
            torch.set_rng_state(rng["torch"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(rng["cuda"])

    def configure_optimizers(self):
        o = self.cfg.optim
        opt = torch.optim.Adam(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt,
            lambda step: lr_factor(step, o.warmup_steps, o.decay_steps, o.restart_steps),
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
