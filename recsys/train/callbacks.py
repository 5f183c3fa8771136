"""Lightning callbacks of our own: a one-line log per epoch (for runs without a progress bar), an
exponential moving average of the weights, the model's resolved config and the random state in every
checkpoint."""

from __future__ import annotations

import logging
import random
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

log = logging.getLogger(__name__)


class EpochSummary(pl.Callback):
    """Logs epoch number, wall time, train loss and the monitored validation metric (only on the
    epochs that validated: the metric of an earlier check is not repeated as if it were new).

    A run resumed from a checkpoint written at an epoch's validation re-enters that epoch with no
    batches left: that epoch is reported as such, not with a loss of nan."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self._t0 = time.perf_counter()
        self._validated = False
        self._batches = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        del trainer, pl_module
        self._t0 = time.perf_counter()
        self._validated = False
        self._batches = 0

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        del trainer, pl_module, outputs, batch, batch_idx
        self._batches += 1

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        del pl_module
        self._validated = self._validated or not trainer.sanity_checking

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        del pl_module
        if trainer.global_rank != 0:
            return
        if self._batches == 0:
            log.info(
                "epoch %d: trained before the resume (its checkpoint was written at its end)", trainer.current_epoch
            )
            return
        m = trainer.callback_metrics
        loss = float(m["train/loss"]) if "train/loss" in m else float("nan")
        val = f"{float(m[self.monitor]):.4f}" if self._validated and self.monitor in m else "not checked"
        log.info(
            "epoch %d: %.1fs, train/loss %.4f, %s %s",
            trainer.current_epoch,
            time.perf_counter() - self._t0,
            loss,
            self.monitor,
            val,
        )


RAW_PARAMS_KEY = "ema_raw_parameters"  # a checkpoint's trained (not averaged) parameters


class WeightEMA(pl.Callback):
    """An exponential moving average of the trained parameters, updated after every optimiser step.

    Validation scores the average (so early stopping, the lr schedule and the best checkpoint
    follow it), and a checkpoint's `state_dict` holds the average: what is tested, exported and
    served. The trained parameters travel in the checkpoint too, so a resumed fit continues from
    them. Buffers (e.g. state an objective refits each epoch) are not averaged.
    """

    def __init__(self, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self._average: dict[str, torch.Tensor] | None = None
        self._averaged_step = -1  # the optimiser step last averaged in (a batch that only accumulates is none)

    def _params(self, pl_module: pl.LightningModule) -> dict[str, torch.Tensor]:
        return {name: p for name, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._averaged_step = trainer.global_step  # a resumed fit has averaged its steps so far
        params = self._params(pl_module)
        if self._average is None:
            self._average = {name: p.detach().clone() for name, p in params.items()}
        else:  # restored from a checkpoint before the model moved to its device
            self._average = {name: self._average[name].to(p.device) for name, p in params.items()}

    @torch.no_grad()
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        del outputs, batch, batch_idx
        assert self._average is not None
        if trainer.global_step == self._averaged_step:  # gradients accumulated, no optimiser step yet
            return
        self._averaged_step = trainer.global_step
        for name, p in self._params(pl_module).items():
            self._average[name].lerp_(p.detach(), 1.0 - self.decay)

    @torch.no_grad()
    def _swap(self, pl_module: pl.LightningModule) -> None:
        if self._average is None:  # validation outside fit
            return
        for name, p in self._params(pl_module).items():
            trained = p.detach().clone()
            p.copy_(self._average[name])
            self._average[name] = trained

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        del trainer
        self._swap(pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        del trainer
        self._swap(pl_module)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        del trainer, pl_module
        assert self._average is not None
        state = checkpoint["state_dict"]
        checkpoint[RAW_PARAMS_KEY] = {name: state[name] for name in self._average}
        checkpoint["state_dict"] = state | {name: avg.detach().clone() for name, avg in self._average.items()}

    @torch.no_grad()
    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Called after the model was loaded from `state_dict` (the average): put the trained
        parameters back in the model and keep the average here."""
        del trainer
        raw = checkpoint.get(RAW_PARAMS_KEY)
        if raw is None:
            raise ValueError(f"the checkpoint has no {RAW_PARAMS_KEY}: it was not written with train.ema_decay > 0")
        params = self._params(pl_module)
        self._average = {name: p.detach().clone() for name, p in params.items()}
        for name, p in params.items():
            p.copy_(raw[name])


MODEL_SPEC_KEY = "recsys_model"  # a checkpoint's model spec: registry name, resolved config, n_items


class ModelSpecInCheckpoint(pl.Callback):
    """Stores the model's spec (`recsys.model_io.model_spec`: its resolved config, defaults
    included) in every checkpoint, so resuming or finalizing a run rebuilds the model it trained,
    whatever the defaults are by then. Read it back with `checkpoint_model_spec`."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        del trainer, pl_module
        checkpoint[MODEL_SPEC_KEY] = self.spec


def checkpoint_model_spec(checkpoint: dict[str, Any]) -> dict[str, Any] | None:
    """The model spec a checkpoint was written with; None for checkpoints written before it was kept."""
    spec = checkpoint.get(MODEL_SPEC_KEY)
    return dict(spec) if spec is not None else None


RANDOM_STATE_KEY = "recsys_random_state"  # a checkpoint's random generators, as they were at its save


class RandomStateInCheckpoint(pl.Callback):
    """Resuming draws what the uninterrupted fit drew: every checkpoint keeps the global torch, numpy
    and Python generators and the DataModule's row generator as they were at its save, and a fit
    resumed from it puts them back at the start of the first epoch it trains (after the checkpoint's
    own epoch, re-entered with nothing left to do); each epoch's shuffle is the DataModule's for that
    epoch. A run killed and resumed then ends with the metrics of one never stopped (an objective that
    draws in its epoch-start hook would still differ)."""

    def __init__(self) -> None:
        self._pending: tuple[int, dict[str, Any]] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        del pl_module
        # tensors and plain numbers only: Lightning reads checkpoints with torch.load(weights_only=True)
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, words, next_gauss = random.getstate()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), pos, has_gauss, gauss],
            "python": [version, torch.tensor(words, dtype=torch.int64), next_gauss],
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        rows = getattr(getattr(trainer, "datamodule", None), "rows_generator", None)
        if rows is not None:
            state["rows"] = rows.get_state()
        checkpoint[RANDOM_STATE_KEY] = state

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        del trainer, pl_module
        if RANDOM_STATE_KEY in checkpoint:
            self._pending = (int(checkpoint["epoch"]), checkpoint[RANDOM_STATE_KEY])

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        del pl_module
        set_epoch = getattr(getattr(trainer, "datamodule", None), "set_epoch", None)
        if callable(set_epoch):
            set_epoch(trainer.current_epoch)
        if self._pending is None or trainer.current_epoch <= self._pending[0]:
            return
        state = self._pending[1]
        self._pending = None
        torch.set_rng_state(state["torch"])
        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        version, words, next_gauss = state["python"]
        random.setstate((version, tuple(words.tolist()), next_gauss))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        rows = getattr(getattr(trainer, "datamodule", None), "rows_generator", None)
        if rows is not None and "rows" in state:
            rows.set_state(state["rows"])
