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
A text + ID model with a user-side ID encoder (`id_epochs` > 0) first warms it up, at the start of the
first epoch: passes over the users' training sequences that train only the ID encoder and the ID rows
as SASRec trains (one window of the last `id_len` + 1 items per user, next item at every position, Adam
with a warm-up and a cosine to 0); the text encoder is not run.
Items added later by text (`Recformer.add_items`) must come from the encoder that encoded the catalog
table: the model keeps a snapshot of it (`item_encoder: snapshot`, the default), so the table that
validation scored stays as it is; a model without one (`live`) has its table re-encoded by the final
weights when training ends (`on_fit_end`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from recsys.data.datasets import RandomCuts, TrainRows, TrainSequences
from recsys.models.base import SequentialRecommender
from recsys.models.ranker import AnyModel
from recsys.nn.losses import paired_softmax
from recsys.objectives.base import REC, Batch, LossFn, Objective, RowsFn, retrieval_model
from recsys.train.schedules import warmup_cosine

MLM = "mlm"
TEXT = "text"  # a text + ID model's second loss, on the text summary alone (`text_loss`)
log = logging.getLogger(__name__)


@runtime_checkable
class TextModel(Protocol):
    """A model that encodes histories and items from their text (`recsys.models.recformer`)."""

    cfg: TextSchedule
    pretraining: bool  # set by the objective at each epoch start
    tower: torch.nn.Module | None  # the text + ID item tower (None: text only)

    def encode_history(self, items: torch.Tensor, *, mlm_prob: float = 0.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Summary states [B, D] of histories [B, L] (and the MLM loss when `mlm_prob` > 0)."""
        ...

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Unit vectors [K, D] of items from their text."""
        ...

    def refresh_items(self) -> None:
        """Re-encode the item table from text."""
        ...

    def id_states(self, items: torch.Tensor) -> torch.Tensor:
        """The ID encoder's user states [B, L, D], one per position."""
        ...

    def user_parts(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the ID encoder's last state, the text summary over temperature) [B, D] each."""
        ...

    def id_parameters(self) -> list[torch.nn.Parameter]:
        """The ID encoder's and the ID rows' parameters (empty: no ID encoder)."""
        ...

    def item_embeddings(self) -> torch.Tensor:
        """The scoring table [N + 1, D]."""
        ...

    def id_table(self) -> torch.Tensor:
        """The rows the ID encoder's states score [N + 1, D']."""
        ...

    def trained_items(self) -> torch.Tensor:
        """[N + 1] bool: the items of the training sequences (those with an ID row)."""
        ...


class TextSchedule(Protocol):
    cuts_per_user: int
    pretrain_epochs: int
    refresh_epochs: int
    mlm_prob: float
    mlm_weight: float
    temperature: float
    item_encoder: str
    id_len: int
    id_epochs: int
    id_lr: float
    id_warmup_frac: float
    id_batch: int
    id_bf16: bool
    text_weight: float
    text_loss: float


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
        if text.cfg.text_loss > 0:  # the text summary also ranks alone (cold items), beside the summed score
            ids, summary = text.user_parts(history)
            table = model.item_embeddings()
            user = ids + text.cfg.text_weight * summary
            return {REC: loss(user, table, targets), TEXT: text.cfg.text_loss * loss(summary, table, targets)}
        user = model.sequence_representation(history, history != 0)  # [B, D], cosine / temperature
        return {REC: loss(user, model.item_embeddings(), targets)}

    def on_epoch_start(
        self,
        model: SequentialRecommender,
        batches: Iterable[Batch],
        epoch: int,
        *,
        sequences: Sequence[Sequence[int]] = (),
    ) -> None:
        del batches  # the warm-up reads whole sequences, the rest only the model
        text = _text(model)
        cfg = text.cfg
        text.pretraining = epoch < cfg.pretrain_epochs
        if epoch < cfg.pretrain_epochs + cfg.refresh_epochs:  # pre-training and stage 1; stage 2 keeps the table
            text.refresh_items()
        if epoch == 0 and cfg.id_epochs > 0:
            warm_up_ids(
                text,
                sequences,
                epochs=cfg.id_epochs,
                lr=cfg.id_lr,
                batch_size=cfg.id_batch,
                warmup_frac=cfg.id_warmup_frac,
                bf16=cfg.id_bf16,
            )

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


def warm_up_ids(
    model: TextModel,
    sequences: Sequence[Sequence[int]],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    warmup_frac: float = 0.05,
    bf16: bool = False,
    generator: torch.Generator | None = None,
) -> list[float]:
    """Train the ID encoder and the ID rows alone for `epochs` passes over the users' training `sequences`,
    as SASRec trains: one row per user, the last `id_len` + 1 items, shuffled by `generator` each pass, in
    steps of `batch_size` rows (`bf16`: under bfloat16 autocast); the next item at every position, softmax
    over the trained items (as `negatives: trained`: an item held out of training is no class); Adam at
    `lr`, rising over the first `warmup_frac` of the steps, then a cosine to 0. The item tower runs in eval
    mode (no `id_dropout`: every trained item is scored by its text + ID vector); the ID encoder keeps its
    dropout. Returns each pass's mean loss."""
    params = model.id_parameters()
    if not params:
        raise ValueError("the ID warm-up needs a text + ID model with an ID encoder (item_ids: true, id_len > 0)")
    if not sequences:
        raise ValueError("the ID warm-up needs the users' training sequences; none were given")
    device = params[0].device
    rows = TrainSequences(sequences, model.cfg.id_len)
    steps_per_pass = -(-len(rows) // batch_size)
    optimiser = torch.optim.Adam(params, lr=lr)
    schedule = warmup_cosine(optimiser, epochs * steps_per_pass, warmup_frac)
    absent = ~model.trained_items()  # [N + 1]: padding and items held out of training
    tower, losses = model.tower, []
    was_training = tower is not None and tower.training
    if tower is not None:
        tower.eval()
    try:
        for epoch in range(epochs):
            started = time.perf_counter()
            running = 0.0
            for chunk in torch.split(torch.randperm(len(rows), generator=generator), batch_size):
                items = rows[chunk.tolist()].items.to(device)
                targets = items[:, 1:]
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    states = model.id_states(items[:, :-1])[targets != 0]  # [T, D]: the positions with a next item
                    logits = (states @ model.id_table().T).masked_fill(absent, -torch.inf)  # [T, N + 1]
                loss = F.cross_entropy(logits.float(), targets[targets != 0])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimiser.step()
                schedule.step()
                running += float(loss.detach())
            losses.append(running / steps_per_pass)
            seconds = time.perf_counter() - started
            log.info("ID warm-up pass %d/%d: loss %.4f, %.1f s", epoch + 1, epochs, losses[-1], seconds)
    finally:  # the tower's mode is restored even when a pass fails (e.g. a non-finite loss)
        if tower is not None:
            tower.train(was_training)
    return losses


def _text(model: SequentialRecommender) -> TextModel:
    if not isinstance(model, TextModel):
        raise TypeError(
            f"objective 'text_next_item' needs a text model (encode_items, refresh_items); "
            f"{type(model).__name__} is not"
        )
    return model
