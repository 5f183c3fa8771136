"""The one LightningModule: trains any registered model with a loss from `recsys.nn.losses`."""

from __future__ import annotations

import functools
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import LRSchedulerConfigType, OptimizerLRScheduler

from recsys.data.datamodule import SequenceDataModule
from recsys.data.datasets import EvalBatch, TrainBatch, TrainSequences
from recsys.eval.evaluate import metrics_from_ranks, rank_batch
from recsys.models.base import SequentialRecommender
from recsys.nn.losses import LOSSES, in_batch_softmax
from recsys.train.experiment import EvalConfig, TrainConfig


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class RecModule(pl.LightningModule):
    """Wraps a `SequentialRecommender`: next-item or masked-item training, full-ranking validation.

    Args:
        model: the plain nn.Module to train.
        train_cfg: optimiser, loss and loop settings.
        eval_cfg: validation cut-offs and seen-item masking.
    """

    def __init__(self, model: SequentialRecommender, train_cfg: TrainConfig, eval_cfg: EvalConfig) -> None:
        super().__init__()
        self.model = model
        self.train_cfg = train_cfg
        self.eval_cfg = eval_cfg
        self._val_ranks: list[torch.Tensor] = []
        self._val_topk: list[torch.Tensor] = []
        # expected targets in a training batch; set with length-grouped batches (see `on_train_start`)
        self.targets_per_batch: float | None = None

    def _common_step(self, batch: TrainBatch, stage: str) -> torch.Tensor:
        inputs, targets = self._inputs_and_targets(batch.items)  # [B, L], [B, L] (0 = no target)
        hidden = self.model.encode(inputs, inputs != 0)  # [B, L, D]
        where = targets != 0
        loss: torch.Tensor = self._loss(hidden[where], self.model.item_embeddings(), targets[where])  # [T, D] vs [T]
        if self.targets_per_batch is not None:  # the batch's mean over its targets -> their sum / expected count
            loss = loss * (where.sum() / self.targets_per_batch)
        extra = self.model.extra_loss(batch, hidden)
        if extra is not None:
            self.log(f"{stage}/extra_loss", extra, on_step=False, on_epoch=True, batch_size=len(inputs))
            loss = loss + extra
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"{stage} loss is {loss.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                f"try a lower lr (now {self.train_cfg.lr}) or grad_clip"
            )
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=False, on_epoch=True, batch_size=len(inputs))
        return loss

    def _inputs_and_targets(self, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Next-item: inputs and targets shifted by one. Masked: the model chooses what to mask.
        Cross-subsequence: a row is one prefix and its next item, so only the last column is a target."""
        if self.model.objective in ("next_item", "window_views"):
            inputs, targets = window[:, :-1], window[:, 1:]
            return inputs, targets * (inputs != 0)  # the first real item has no history
        if self.model.objective == "cross_subsequence":
            inputs, targets = window[:, :-1], torch.zeros_like(window[:, 1:])
            targets[:, -1] = window[:, -1]
            return inputs, targets
        # the last max_len items: a window trimmed narrower than max_len + 1 keeps all of its items
        return self.model.mask_items(window[:, -self.model.max_len :])

    @functools.cached_property
    def _loss(self) -> Any:
        fn = LOSSES[self.train_cfg.loss]
        if fn in (LOSSES["sampled_softmax"], LOSSES["bce"], LOSSES["gbce"]):
            return functools.partial(fn, n_negatives=self.train_cfg.n_negatives)
        if fn is in_batch_softmax:
            raise ValueError("loss 'in_batch' needs item sampling probabilities; use ce, sampled_softmax, bce or gbce")
        if self.train_cfg.label_smoothing > 0:  # TrainConfig allows it with "ce" only
            return functools.partial(fn, label_smoothing=self.train_cfg.label_smoothing)
        return fn

    def on_train_start(self) -> None:
        train_set = getattr(getattr(self.trainer, "datamodule", None), "train_set", None)
        # cross-subsequence rows (CrossSubsequences) have one target each: nothing to reweight
        if self.train_cfg.length_pool and isinstance(train_set, TrainSequences):
            self.targets_per_batch = self.expected_targets_per_batch(train_set.items)

    def expected_targets_per_batch(self, windows: torch.Tensor) -> float:
        """Mean training targets per batch over the left-padded training `windows` [U, L + 1].

        Length-grouped batches (`length_pool`) hold rows of similar length, so their target counts
        differ tenfold; averaging the loss per batch would weigh a target of a short-history batch
        far above one of a long-history batch. Dividing each batch's summed loss by this constant
        weighs every target the same, as in shuffled batches.
        """
        with torch.random.fork_rng(devices=[]):  # the masked objective draws its masks: leave the stream alone
            _, targets = self._inputs_and_targets(windows)
        return float((targets != 0).sum()) / len(windows) * self.train_cfg.batch_size

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)  # set by Lightning when fit() is given one
        if isinstance(datamodule, SequenceDataModule):
            self.model.on_train_epoch_start(datamodule.ordered_train_dataloader(), epoch=self.current_epoch)

    def training_step(self, batch: TrainBatch, batch_idx: int) -> torch.Tensor:
        del batch_idx
        return self._common_step(batch, "train")

    def validation_step(self, batch: EvalBatch, batch_idx: int) -> None:
        del batch_idx
        ranks, topk = rank_batch(
            self.model,
            batch,
            exclude_seen=self.eval_cfg.exclude_seen,
            topk=max(self.eval_cfg.ks),
            item_chunk=self.eval_cfg.item_chunk,
        )
        self._val_ranks.append(ranks)
        self._val_topk.append(topk)

    def on_validation_epoch_end(self) -> None:
        if not self._val_ranks:
            return
        ranks, topk = torch.cat(self._val_ranks), torch.cat(self._val_topk)
        self._val_ranks.clear()
        self._val_topk.clear()
        n_items = self.model.item_embeddings().shape[0] - 1
        metrics = metrics_from_ranks(ranks, topk, n_items, self.eval_cfg.ks, "val")
        monitor = f"val/ndcg@{self.eval_cfg.monitor_k}"
        # every rank evaluated all users, so the values agree and no sync is needed
        self.log_dict({k: v for k, v in metrics.items() if k != monitor})
        self.log(monitor, metrics[monitor], prog_bar=True)

    def on_train_epoch_end(self) -> None:
        optimizer = self.optimizers()
        assert isinstance(optimizer, pl.core.optimizer.LightningOptimizer)
        self.log("train/lr", optimizer.param_groups[0]["lr"])

    def build_optimizer(self) -> torch.optim.AdamW:
        """AdamW over the model, weight decay on weight matrices only."""
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, p in self.model.named_parameters():
            # no weight decay on embeddings, norms and biases (common transformer practice)
            (no_decay if p.ndim < 2 or "emb" in name else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.train_cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=self.train_cfg.lr, betas=(0.9, 0.98))

    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = self.build_optimizer()
        if self.train_cfg.lr_decay == 1.0:
            return optimizer
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=self.train_cfg.lr_decay, patience=self.train_cfg.lr_decay_patience
        )
        # stepped after each validation check, on the metric early stopping follows
        schedule: LRSchedulerConfigType = {
            "scheduler": plateau,
            "monitor": f"val/ndcg@{self.eval_cfg.monitor_k}",
            "interval": "epoch",
            "frequency": self.train_cfg.val_every,
        }
        return {"optimizer": optimizer, "lr_scheduler": schedule}
