"""Next-item training of a text model (Recformer): pre-training, then two-stage fine-tuning.

Rows are random cuts: each time a user's row is read, a target position is drawn in their training
sequence and the row is the `max_len` items before it and the target, so every epoch sees each user
`cuts_per_user` times at fresh points of their history (a model reading a few items would otherwise
only ever learn from the end of a long history).

Phases, by epoch (the model's config says how many of each):
- pre-training: masked-language modelling on the history's value tokens plus an item-item contrast,
  the history's summary against its target item encoded from text, other rows' targets as negatives;
- fine-tuning stage 1: the item table is re-encoded from text before every epoch and the history's
  summary is trained against it with the main loss (full softmax over the catalog);
- fine-tuning stage 2: the same, with the table frozen.
Items added later by text (`Recformer.add_items`) must come from the encoder that encoded the catalog
table: the model keeps a snapshot of it (`item_encoder: snapshot`, the default), so the table that
validation scored stays as it is; a model without one (`live`) has its table re-encoded by the final
weights when training ends (`on_fit_end`).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from recsys.data.datasets import RandomCuts, TrainRows
from recsys.models.base import SequentialRecommender
from recsys.models.ranker import AnyModel
from recsys.nn.losses import paired_softmax
from recsys.objectives.base import REC, Batch, LossFn, Objective, RowsFn, retrieval_model

MLM = "mlm"


@runtime_checkable
class TextModel(Protocol):
    """A model that encodes histories and items from their text (`recsys.models.recformer`)."""

    cfg: TextSchedule
    pretraining: bool  # set by the objective at each epoch start

    def encode_history(self, items: torch.Tensor, *, mlm_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Summary states [B, D] of histories [B, L] (and the MLM loss when `mlm_prob` > 0)."""
        ...

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Unit vectors [K, D] of items from their text."""
        ...

    def refresh_items(self) -> None:
        """Re-encode the item table from text."""
        ...


class TextSchedule(Protocol):
    cuts_per_user: int
    pretrain_epochs: int
    refresh_epochs: int
    mlm_prob: float
    mlm_weight: float
    temperature: float
    item_encoder: str


class TextNextItem(Objective):
    """Random-cut rows; pre-training terms first, then the main loss against the item table."""

    def train_rows(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> TrainRows:
        return RandomCuts(seqs, max_len, generator=generator)

    def rows_for(self, model: AnyModel) -> RowsFn:
        """`cuts_per_user` random cuts per user and epoch, as the text model's config says."""
        cuts = _text(retrieval_model(model, self)).cfg.cuts_per_user
        return functools.partial(RandomCuts, cuts=cuts)

    def inputs_and_targets(self, model: SequentialRecommender, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        del model
        inputs, targets = batch.items[:, :-1], torch.zeros_like(batch.items[:, 1:])
        targets[:, -1] = batch.items[:, -1]  # one target per row, after its history
        return inputs, targets

    def loss_terms(
        self, model: AnyModel, batch: Batch, loss: LossFn, *, targets_per_batch: float | None = None
    ) -> dict[str, torch.Tensor]:
        del targets_per_batch  # one target per row
        model = retrieval_model(model, self)
        text = _text(model)
        history, targets = batch.items[:, :-1], batch.items[:, -1]
        if text.pretraining:
            cfg = text.cfg
            summary, mlm = text.encode_history(history, mlm_prob=cfg.mlm_prob)
            items = text.encode_items(targets)  # [B, D] with gradients, from text
            contrast = paired_softmax(F.normalize(summary, dim=-1), items, temperature=cfg.temperature, labels=targets)
            assert mlm is not None
            return {REC: contrast, MLM: cfg.mlm_weight * mlm}
        user = model.sequence_representation(history, history != 0)  # [B, D], cosine / temperature
        return {REC: loss(user, model.item_embeddings(), targets)}

    def on_epoch_start(self, model: SequentialRecommender, batches: Iterable[Batch], epoch: int) -> None:
        del batches
        text = _text(model)
        cfg = text.cfg
        text.pretraining = epoch < cfg.pretrain_epochs
        if epoch < cfg.pretrain_epochs + cfg.refresh_epochs:  # pre-training and stage 1; stage 2 keeps the table
            text.refresh_items()

    def on_fit_end(self, model: SequentialRecommender) -> None:
        """A model that embeds added items by its live encoder (`item_encoder: live`) gets its table
        re-encoded by the final weights, so catalog and added items come from one encoder. With a
        snapshot (the default) the table and its encoder are already one pair: nothing changes."""
        text = _text(model)
        if text.cfg.item_encoder == "live":
            text.refresh_items()

    def expected_targets_per_batch(
        self, model: SequentialRecommender, rows: TrainRows, batch_size: int
    ) -> float | None:
        del model, rows, batch_size
        return None  # one target per row


def _text(model: SequentialRecommender) -> TextModel:
    if not isinstance(model, TextModel):
        raise TypeError(
            f"objective 'text_next_item' needs a text model (encode_items, refresh_items); "
            f"{type(model).__name__} is not"
        )
    return model
