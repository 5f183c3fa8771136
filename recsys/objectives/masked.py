"""Masked item prediction (BERT4Rec's Cloze task): the model masks items of each window and predicts them."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from recsys.data.datasets import TrainRows, TrainSequences
from recsys.models.base import SequentialRecommender
from recsys.objectives.base import Batch, Objective


@runtime_checkable
class MaskingModel(Protocol):
    """A model that chooses which items of a window to mask (its mask token is its own)."""

    max_len: int

    def mask_items(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs with mask tokens, targets with 0 = no target), both [B, L], of windows `items` [B, L]."""
        ...


class Masked(Objective):
    """One window per user; the model masks items and each masked position predicts its item."""

    def inputs_and_targets(self, model: SequentialRecommender, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        # the last max_len items: a window trimmed narrower than max_len + 1 keeps all of its items
        return _masking(model).mask_items(batch.items[:, -model.max_len :])

    def expected_targets_per_batch(
        self, model: SequentialRecommender, rows: TrainRows, batch_size: int
    ) -> float | None:
        """Masks are drawn, so the count is that of one draw over every window (the stream left alone)."""
        if not isinstance(rows, TrainSequences):
            raise TypeError(f"masked training rows are TrainSequences, got {type(rows).__name__}")
        with torch.random.fork_rng(devices=[]):
            _, targets = _masking(model).mask_items(rows.items[:, -model.max_len :])
        return float((targets != 0).sum()) / len(rows) * batch_size


def _masking(model: SequentialRecommender) -> MaskingModel:
    if not isinstance(model, MaskingModel):
        raise TypeError(f"objective 'masked' needs a model with mask_items(); {type(model).__name__} has none")
    return model
