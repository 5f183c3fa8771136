"""Lightning callbacks of our own: a one-line log per epoch (for runs without a progress bar)."""

from __future__ import annotations

import logging
import time

import pytorch_lightning as pl

log = logging.getLogger(__name__)


class EpochSummary(pl.Callback):
    """Logs epoch number, wall time, train loss and the monitored validation metric."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self._t0 = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        del trainer, pl_module
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        del pl_module
        if trainer.global_rank != 0:
            return
        m = trainer.callback_metrics
        loss = float(m["train/loss"]) if "train/loss" in m else float("nan")
        val = float(m[self.monitor]) if self.monitor in m else float("nan")
        log.info(
            "epoch %d: %.1fs, train/loss %.4f, %s %.4f",
            trainer.current_epoch,
            time.perf_counter() - self._t0,
            loss,
            self.monitor,
            val,
        )
