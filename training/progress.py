"""What a training run prints: one progress bar over the whole run, each log line once."""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import convert_inf


def single_log_output() -> None:
    """Print each log record once.

    Lightning's package logger has a console handler of its own and also passes its records
    up to the root logger: where the application configured the root (the CLI does), every
    INFO line came out twice. The root's handlers then print them alone."""
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


class RunProgressBar(TQDMProgressBar):
    """One bar from step 0 (or the resumed step) to `max_steps`.

    Lightning's bar counts batches of an epoch and starts again at every epoch; on a small
    folder an epoch is a few steps, so the bar restarted every few steps and never said how
    far the run was."""

    def on_train_epoch_start(self, trainer, *_) -> None:
        bar = self.train_progress_bar
        if getattr(self, "_run_started", False):
            return
        self._run_started = True
        bar.reset(total=convert_inf(trainer.max_steps if trainer.max_steps > 0 else None))
        bar.initial = 0
        bar.n = trainer.global_step  # a resumed run starts where it stopped
        bar.set_description("Training")
        bar.refresh()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and self._should_update(step, bar.total):
            bar.n = step
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        bar = self.train_progress_bar
        if not bar.disable:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module))
