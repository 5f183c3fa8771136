"""The one LightningModule: wires a model's objective to the optimiser, the loop and the logs."""

from __future__ import annotations

import functools

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import LRSchedulerConfigType, OptimizerLRScheduler

from recsys.data.candidate_lists import CandidateListBatch
from recsys.data.datamodule import SequenceDataModule
from recsys.data.datasets import EvalBatch
from recsys.data.labelled import LabelledBatch
from recsys.eval.evaluate import metrics_from_ranks, rank_batch
from recsys.eval.labelled import labelled_predictions, metrics_of_predictions
from recsys.eval.two_stage import ListScores, choose_stage1_weight, score_lists, two_stage_metrics
from recsys.models.base import SequentialRecommender
from recsys.models.ranker import AnyModel, Ranker
from recsys.nn.losses import LOSSES, in_batch_softmax, over_classes
from recsys.objectives import build_objective, training_losses
from recsys.objectives.base import Batch, LossFn, Objective
from recsys.objectives.base import NonFiniteLossError as NonFiniteLossError  # re-exported for callers
from recsys.train.experiment import EvalConfig, TrainConfig
from recsys.train.schedules import warmup_cosine


def build_loss(train_cfg: TrainConfig) -> LossFn:
    """The main loss of `train_cfg` (a key of `recsys.nn.losses.LOSSES`) with its settings bound."""
    fn = LOSSES[train_cfg.loss]
    if fn in (LOSSES["sampled_softmax"], LOSSES["bce"], LOSSES["gbce"]):
        return functools.partial(fn, n_negatives=train_cfg.n_negatives)
    if fn is in_batch_softmax:
        raise ValueError("loss 'in_batch' needs item sampling probabilities; use ce, sampled_softmax, bce or gbce")
    if train_cfg.label_smoothing > 0:  # TrainConfig allows it with "ce" only
        return functools.partial(fn, label_smoothing=train_cfg.label_smoothing)
    return fn


class RecModule(pl.LightningModule):
    """Wraps a retrieval model or a ranker: trains it on its objective, validates by full ranking
    (a ranker: by AUC on its labelled rows; the metric is the objective's `monitor`).

    The loss of a batch is `recsys.objectives.training_losses` (callable without a Trainer); this
    module only logs its parts and leaves the stepping to Lightning.

    Args:
        model: the plain nn.Module to train.
        train_cfg: optimiser, loss and loop settings.
        eval_cfg: validation cut-offs and seen-item masking.
        objective: the model's objective, when the caller built it already (a run builds it once,
            `recsys.train.run.assemble_run`); default: the one `model.objective` names.
    """

    def __init__(
        self,
        model: AnyModel,
        train_cfg: TrainConfig,
        eval_cfg: EvalConfig,
        *,
        objective: Objective | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective if objective is not None else build_objective(model.objective)
        self.loss = build_loss(train_cfg)
        self.train_cfg = train_cfg
        self.eval_cfg = eval_cfg
        self.monitor = self.objective.monitor(eval_cfg.monitor_k)  # what early stopping and checkpoints follow
        self._val_ranks: list[torch.Tensor] = []
        self._val_labelled: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self._val_lists: list[ListScores] = []
        self._val_topk: list[torch.Tensor] = []
        # expected targets in a training batch; set with length-grouped batches (see `on_train_start`)
        self.targets_per_batch: float | None = None

    def _common_step(self, batch: Batch, stage: str) -> torch.Tensor:
        try:
            parts = training_losses(
                self.model, self.objective, batch, self.loss, targets_per_batch=self.targets_per_batch
            )
        except FloatingPointError as err:
            raise type(err)(
                f"{stage} at epoch {self.current_epoch}, step {self.global_step}: {err}; "
                f"try a lower lr (now {self.train_cfg.lr}) or grad_clip"
            ) from err
        size = len(batch.items)
        if len(parts.terms) > 1:  # each part beside the total
            for name, term in parts.terms.items():
                self.log(f"{stage}/{name}_loss", term, on_step=False, on_epoch=True, batch_size=size)
        self.log(f"{stage}/loss", parts.total, prog_bar=True, on_step=False, on_epoch=True, batch_size=size)
        return parts.total

    def on_train_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if isinstance(datamodule, SequenceDataModule) and isinstance(self.model, SequentialRecommender):
            counts = datamodule.training_item_counts()
            trained = counts.nonzero().flatten()  # the items of the training sequences (training_items())
            self.model.observe_training_items(trained, counts)
            if self.train_cfg.negatives == "trained":
                self.loss = over_classes(build_loss(self.train_cfg), trained)
        elif self.train_cfg.negatives == "trained":
            raise ValueError("negatives='trained' needs a sequence model trained on a SequenceDataModule")
        if (
            self.train_cfg.length_pool
            and isinstance(datamodule, SequenceDataModule)
            and isinstance(self.model, SequentialRecommender)
        ):
            self.targets_per_batch = self.objective.expected_targets_per_batch(
                self.model, datamodule.train_set, self.train_cfg.batch_size
            )

    def on_train_epoch_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)  # set by Lightning when fit() is given one
        if isinstance(datamodule, SequenceDataModule) and isinstance(self.model, SequentialRecommender):
            self.objective.on_epoch_start(
                self.model,
                datamodule.ordered_train_dataloader(),
                self.current_epoch,
                sequences=datamodule.train_sequences,
            )

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        del batch_idx
        return self._common_step(batch, "train")

    def validation_step(self, batch: EvalBatch | LabelledBatch | CandidateListBatch, batch_idx: int) -> None:
        del batch_idx
        if isinstance(batch, LabelledBatch):  # a ranker's labelled rows
            assert isinstance(self.model, Ranker)
            self._val_labelled.append(labelled_predictions(self.model, batch))
            return
        if isinstance(batch, CandidateListBatch):  # a ranker's stage-1 candidate lists
            assert isinstance(self.model, Ranker)
            self._val_lists.append(score_lists(self.model, [batch]))
            return
        assert isinstance(self.model, SequentialRecommender)
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
        if self._val_lists:
            lists = ListScores(*(torch.cat(ts) for ts in zip(*self._val_lists, strict=True)))
            self._val_lists.clear()
            # the final list at the best weight of the stage-1 score: what selection keeps is what serves
            weight, _ = choose_stage1_weight(lists, self.eval_cfg.monitor_k)
            scored = lists._replace(scores=lists.scores + weight * lists.stage1)
            metrics = two_stage_metrics(scored, self.eval_cfg.ks, "val") | {"val/stage1_weight": weight}
            self.log_dict({k: v for k, v in metrics.items() if k != self.monitor})
            self.log(self.monitor, metrics[self.monitor], prog_bar=True)
            return
        if self._val_labelled:
            metrics = metrics_of_predictions(self._val_labelled, "val")
            self._val_labelled.clear()
            self.log_dict({k: v for k, v in metrics.items() if k != self.monitor})
            self.log(self.monitor, metrics[self.monitor], prog_bar=True)
            return
        if not self._val_ranks:
            return
        ranks, topk = torch.cat(self._val_ranks), torch.cat(self._val_topk)
        self._val_ranks.clear()
        self._val_topk.clear()
        assert isinstance(self.model, SequentialRecommender)
        n_items = self.model.item_embeddings().shape[0] - 1
        metrics = metrics_from_ranks(ranks, topk, n_items, self.eval_cfg.ks, "val")
        # every rank evaluated all users, so the values agree and no sync is needed
        self.log_dict({k: v for k, v in metrics.items() if k != self.monitor})
        self.log(self.monitor, metrics[self.monitor], prog_bar=True)

    def on_train_epoch_end(self) -> None:
        optimizer = self.optimizers()
        assert isinstance(optimizer, pl.core.optimizer.LightningOptimizer)
        self.log("train/lr", optimizer.param_groups[0]["lr"])

    def build_optimizer(self) -> torch.optim.AdamW:
        """AdamW over the model, weight decay on weight matrices only, in `train_cfg.optimizer_impl`.

        Raises:
            ValueError: "fused" asked for on a device whose torch build has no fused AdamW.
        """
        decay: list[torch.nn.Parameter] = []
        no_decay: list[torch.nn.Parameter] = []
        for name, p in self.model.named_parameters():
            # no weight decay on embeddings, norms and biases (common transformer practice)
            (no_decay if p.ndim < 2 or "emb" in name else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": self.train_cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        impl = self.train_cfg.optimizer_impl
        if impl == "fused":
            _check_fused_adamw({p.device for p in self.model.parameters()})
        kw = {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}[impl]
        return torch.optim.AdamW(groups, lr=self.train_cfg.lr, betas=(0.9, 0.98), **kw)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        optimizer = self.build_optimizer()
        if self.train_cfg.lr_schedule != "constant":  # TrainConfig refuses it with the plateau decay
            total = self.trainer.estimated_stepping_batches  # every optimiser step of max_epochs
            scheduler = step_schedule(optimizer, self.train_cfg, int(total))
            per_step: LRSchedulerConfigType = {"scheduler": scheduler, "interval": "step", "frequency": 1}
            return {"optimizer": optimizer, "lr_scheduler": per_step}
        if self.train_cfg.lr_decay == 1.0:
            return optimizer
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=self.train_cfg.lr_decay, patience=self.train_cfg.lr_decay_patience
        )
        # stepped after each validation check, on the metric early stopping follows
        schedule: LRSchedulerConfigType = {
            "scheduler": plateau,
            "monitor": self.monitor,
            "interval": "epoch",
            "frequency": self.train_cfg.val_every,
        }
        return {"optimizer": optimizer, "lr_scheduler": schedule}


def step_schedule(
    optimizer: torch.optim.Optimizer, train_cfg: TrainConfig, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The per-step lr schedule `train_cfg.lr_schedule` names over `total_steps` optimiser steps.

    Args:
        optimizer: the optimiser whose lr the schedule sets (its lr is the peak).
        train_cfg: `lr_schedule` ("warmup_cosine" or "onecycle") and `warmup_frac`.
        total_steps: optimiser steps of the whole fit (Lightning's `estimated_stepping_batches`).
    """
    if total_steps < 1:
        raise ValueError(f"a per-step lr schedule needs >= 1 optimiser step, got total_steps={total_steps}")
    if train_cfg.lr_schedule == "onecycle":
        if train_cfg.warmup_frac * total_steps < 2:  # OneCycleLR divides by its rise's length - 1
            raise ValueError(
                f"lr_schedule 'onecycle' with warmup_frac={train_cfg.warmup_frac} over {total_steps} steps rises "
                "for fewer than 2 steps; raise warmup_frac or max_epochs"
            )
        # betas stay fixed: the lever measured is the lr curve alone
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=train_cfg.lr,
            total_steps=total_steps,
            pct_start=train_cfg.warmup_frac,
            anneal_strategy="cos",
            cycle_momentum=False,
        )
    if train_cfg.lr_schedule != "warmup_cosine":
        raise ValueError(f"no per-step schedule for lr_schedule={train_cfg.lr_schedule!r}")
    return warmup_cosine(optimizer, total_steps, train_cfg.warmup_frac)


def _check_fused_adamw(devices: set[torch.device]) -> None:
    """Raise ValueError unless one fused AdamW step runs on every device in `devices`."""
    for device in devices:
        probe = torch.zeros(1, device=device, requires_grad=True)
        probe.grad = torch.zeros(1, device=device)
        try:
            torch.optim.AdamW([probe], fused=True).step()
        except RuntimeError as err:
            raise ValueError(
                f"optimizer_impl='fused': this torch {torch.__version__} has no fused AdamW on {device.type} "
                f"({err}); use optimizer_impl 'foreach' or 'default'"
            ) from err
