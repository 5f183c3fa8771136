"""Train and evaluate a ranker on a labelled-candidate dataset (`recsys.data.labelled`).

Each optimiser step is the shared training step, `recsys.objectives.training_losses`, with the
model's objective (binary cross-entropy on labelled candidates). Rows are shuffled with the caller's generator;
a fixed budget of epochs, validation AUC after each, the best epoch's weights kept (model
selection on validation, test read once by the caller).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import torch

from recsys.data.labelled import LabelledData
from recsys.eval.labelled import labelled_metrics
from recsys.models.ranker import Ranker
from recsys.objectives import build_objective, training_losses
from recsys.objectives.labelled import labelled_logits

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelledTrainConfig:
    epochs: int = 3
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_history: int = 200  # history events per sample
    eval_batch_size: int = 1024
    # None: every training sample once per epoch; else this many batches of a fresh shuffle per epoch
    # (a fixed compute budget on a large training split)
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_history", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1 or None, got {self.steps_per_epoch}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclass
class LabelledFit:
    best_epoch: int  # 0-based epoch whose weights the model holds after `fit_labelled`
    history: list[dict[str, float]] = field(default_factory=list)  # per epoch: train/loss, val metrics, epoch_s


def predict_labelled(
    model: Ranker, data: LabelledData, rows: pl.DataFrame, cfg: LabelledTrainConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels, probabilities, user_idx), each [S], of the sample `rows` under `model` in eval mode."""
    model.eval()
    probs = []
    with torch.no_grad():
        for start in range(0, rows.height, cfg.eval_batch_size):
            b = data.batch(rows[start : start + cfg.eval_batch_size], cfg.max_history)
            probs.append(torch.sigmoid(labelled_logits(model, b)))
    model.train()
    return (
        rows["label"].to_numpy(),
        torch.cat(probs).numpy().astype(np.float64),
        rows["user_idx"].to_numpy(),
    )


def evaluate_labelled(model: Ranker, data: LabelledData, split: str, cfg: LabelledTrainConfig) -> dict[str, float]:
    """`{split}/auc`, `{split}/gauc`, `{split}/logloss` of `model` on one split of `data`."""
    labels, probs, users = predict_labelled(model, data, data.split(split), cfg)
    return labelled_metrics(labels, probs, users, split)


def fit_labelled(
    model: Ranker,
    data: LabelledData,
    cfg: LabelledTrainConfig,
    *,
    generator: torch.Generator,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> LabelledFit:
    """Train `model` for `cfg.epochs` epochs on the training split; keep the best validation-AUC epoch.

    Args:
        model: a ranker whose objective trains on labelled batches.
        data: the labelled dataset.
        cfg: the budget and optimiser settings.
        generator: shuffles the rows (seeded by the caller).
        on_epoch: called with (epoch, metrics) after each epoch (e.g. to log to MLflow).
    """
    objective = build_objective(model.objective)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train = data.split("train")
    fit = LabelledFit(best_epoch=-1)
    best_auc, best_state = -1.0, copy.deepcopy(model.state_dict())
    model.train()
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        order = torch.randperm(train.height, generator=generator).numpy()
        if cfg.steps_per_epoch is not None:
            order = order[: cfg.steps_per_epoch * cfg.batch_size]
        total, steps = 0.0, 0
        for start in range(0, len(order), cfg.batch_size):
            batch = data.batch(train[order[start : start + cfg.batch_size]], cfg.max_history)
            parts = training_losses(model, objective, batch, _unused_loss)
            optimizer.zero_grad(set_to_none=True)
            parts.total.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            total += float(parts.total.detach())
            steps += 1
        metrics = {"train/loss": total / max(steps, 1), "epoch_s": time.perf_counter() - t0}
        metrics |= evaluate_labelled(model, data, "val", cfg)
        fit.history.append(metrics)
        log.info("epoch %d: %s", epoch, {k: round(v, 4) for k, v in metrics.items()})
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if metrics["val/auc"] > best_auc:
            best_auc, best_state, fit.best_epoch = metrics["val/auc"], copy.deepcopy(model.state_dict()), epoch
    model.load_state_dict(best_state)
    return fit


def _unused_loss(hidden: torch.Tensor, item_emb: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The labelled objective brings its own loss (BCE); a next-item loss never applies."""
    del hidden, item_emb, targets
    raise TypeError("a labelled objective does not use a next-item loss")
