"""The training-objective contract: which rows a model learns from, how a batch becomes inputs and
targets, and which loss terms it adds. The LightningModule and the DataModule use only this.

An objective is stateless; what it needs from a model beyond `SequentialRecommender` (a masking
rule, contrastive terms) it asks through a `Protocol` in its own file, so a model that lacks it
fails with a clear error instead of an AttributeError deep in a step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch

from recsys.data.candidate_lists import CandidateListBatch
from recsys.data.datasets import TrainBatch, TrainRows, TrainSequences, ViewBatch
from recsys.data.labelled import LabelledBatch
from recsys.models.base import SequentialRecommender
from recsys.models.ranker import AnyModel

# (hidden [T, D], item_emb [N + 1, D], targets [T]) -> scalar, a loss of recsys.nn.losses
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Batch = TrainBatch | ViewBatch | LabelledBatch | CandidateListBatch
RowsFn = Callable[..., TrainRows]  # (seqs, max_len, *, generator) -> the training rows

REC = "rec"  # the name of the main (next-item) term in `LossParts.terms`


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class LossParts(NamedTuple):
    total: torch.Tensor  # scalar: what the optimiser minimises, the sum of `terms` in their order
    terms: dict[str, torch.Tensor]  # scalar per named part, `REC` first; logged one by one


class Objective:
    """Next-item training on one window per user: every position predicts the item after it.

    Subclasses change the rows (`train_rows`), the inputs and targets (`inputs_and_targets`) or
    add terms (`extra_terms`); one that scores given candidates overrides `loss_terms` whole.
    """

    # False: rows come from a labelled dataset (recsys.data.labelled), not from `train_rows`
    trains_on_sequences: bool = True

    def monitor(self, k: int) -> str:
        """The validation metric that early stopping, checkpoints and lr decay follow: full-ranking
        NDCG@k of the next item."""
        return f"val/ndcg@{k}"

    def train_rows(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> TrainRows:
        """The training rows of the users' training sequences `seqs` (oldest first)."""
        return TrainSequences(seqs, max_len, generator=generator)

    def rows_for(self, model: AnyModel) -> RowsFn:
        """How the training rows of `model` are built (`train_rows`, unless the model's config sets them)."""
        del model
        return self.train_rows

    def inputs_and_targets(self, model: SequentialRecommender, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Model inputs [B, L] and targets [B, L] (0 = no target) of a batch of rows [B, L + 1]."""
        del model
        inputs, targets = batch.items[:, :-1], batch.items[:, 1:]
        return inputs, targets * (inputs != 0)  # the first real item has no history

    def extra_terms(self, model: SequentialRecommender, batch: Batch, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms added to the main loss, given the `hidden` [B, L, D] of the batch's inputs; none here."""
        del model, batch, hidden
        return {}

    def on_epoch_start(
        self,
        model: SequentialRecommender,
        batches: Iterable[Batch],
        epoch: int,
        *,
        sequences: Sequence[Sequence[int]] = (),
    ) -> None:
        """Called before training epoch `epoch` (0-based) with one unshuffled pass over the training
        rows and the users' training `sequences` they are drawn from; a no-op here, which does not iterate."""
        del model, batches, epoch, sequences

    def on_fit_end(self, model: SequentialRecommender) -> None:
        """Called once the final weights are in place (the best checkpoint's), before the final
        evaluation and saving; a no-op here."""
        del model

    def loss_terms(
        self,
        model: AnyModel,
        batch: Batch,
        loss: LossFn,
        *,
        targets_per_batch: float | None = None,
    ) -> dict[str, torch.Tensor]:
        """The named loss terms of one batch, `REC` first.

        Args:
            model: the model in training mode.
            batch: training rows from `train_rows`.
            loss: the main loss over the targets' hidden states and the item table.
            targets_per_batch: with length-grouped batches, the expected targets per batch: the main
                term becomes the batch's summed loss over it (see `expected_targets_per_batch`).
        """
        model = retrieval_model(model, self)
        inputs, targets = self.inputs_and_targets(model, batch)  # [B, L], [B, L] (0 = no target)
        hidden = model.encode(inputs, inputs != 0)  # [B, L, D]
        where = targets != 0
        rec = loss(hidden[where], model.item_embeddings(), targets[where])  # [T, D] vs [T]
        if targets_per_batch is not None:  # the batch's mean over its targets -> their sum / expected count
            rec = rec * (where.sum() / targets_per_batch)
        return {REC: rec, **self.extra_terms(model, batch, hidden)}

    def expected_targets_per_batch(
        self, model: SequentialRecommender, rows: TrainRows, batch_size: int
    ) -> float | None:
        """Mean training targets per batch of `batch_size` rows over all of `rows`; None when every
        row has one target (nothing to reweight).

        Length-grouped batches hold rows of similar length, so their target counts differ tenfold;
        averaging the loss per batch would weigh a target of a short-history batch far above one of
        a long-history batch. Dividing each batch's summed loss by this constant weighs every target
        the same, as in shuffled batches. Next-item rows have a target per item but the first.
        """
        del model
        targets = (rows.lengths() - 1).clamp(min=0)  # [N]
        return float(targets.sum()) / len(rows) * batch_size


def retrieval_model(model: AnyModel, objective: Objective) -> SequentialRecommender:
    """`model`, which `objective` trains through `encode` / `item_embeddings`; a ranker raises `TypeError`."""
    if not isinstance(model, SequentialRecommender):
        raise TypeError(
            f"objective {type(objective).__name__} trains a retrieval model (encode, item_embeddings); "
            f"{type(model).__name__} is a ranker"
        )
    return model


def training_losses(
    model: AnyModel,
    objective: Objective,
    batch: Batch,
    loss: LossFn,
    *,
    targets_per_batch: float | None = None,
) -> LossParts:
    """The loss of one training batch and its named parts, without a Trainer (the public training step).

    Raises:
        NonFiniteLossError: the total is NaN or infinite.
    """
    terms = objective.loss_terms(model, batch, loss, targets_per_batch=targets_per_batch)
    parts = iter(terms.values())
    total = next(parts)
    for term in parts:
        total = total + term
    if not torch.isfinite(total):
        named = ", ".join(f"{name} {float(t):.4g}" for name, t in terms.items())
        raise NonFiniteLossError(f"training loss is {float(total)} ({named})")
    return LossParts(total, terms)
