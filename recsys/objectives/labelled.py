"""Labelled candidates: each row is a history, one candidate item and a 0/1 label (click-through style).

The rows come from a labelled dataset (`recsys.data.labelled`), not from the training sequences, and
the loss is binary cross-entropy on the model's candidate logits (`recsys.nn.losses.labelled_bce`).
The model asks nothing beyond a `logits(items, candidates, ratings)` method (`CandidateScorer`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from recsys.data.datasets import TrainRows
from recsys.data.labelled import LabelledBatch
from recsys.models.base import SequentialRecommender
from recsys.nn.losses import labelled_bce
from recsys.objectives.base import REC, Batch, LossFn, Objective


@runtime_checkable
class CandidateScorer(Protocol):
    """A model that scores given candidates against a history (with optional per-event ratings)."""

    def logits(
        self, items: torch.Tensor, candidates: torch.Tensor, ratings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, C] of `candidates` [B, C] after left-padded histories `items` [B, L]."""
        ...


class LabelledCandidates(Objective):
    """Binary cross-entropy on labelled (history, candidate) rows; the main loss setting is not used."""

    trains_on_sequences = False

    def train_rows(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> TrainRows:
        del seqs, max_len, generator
        raise TypeError(
            "objective 'labelled_candidates' trains on a labelled dataset (recsys.data.labelled), "
            "not on training sequences"
        )

    def loss_terms(
        self,
        model: SequentialRecommender,
        batch: Batch,
        loss: LossFn,
        *,
        targets_per_batch: float | None = None,
    ) -> dict[str, torch.Tensor]:
        del loss, targets_per_batch  # one label per row, and the loss is BCE by definition
        if not isinstance(batch, LabelledBatch):
            raise TypeError(f"objective 'labelled_candidates' needs a LabelledBatch, got {type(batch).__name__}")
        if not isinstance(model, CandidateScorer):
            raise TypeError(
                f"objective 'labelled_candidates' needs a model with logits(); {type(model).__name__} has none"
            )
        logits = model.logits(batch.items, batch.candidates[:, None], batch.ratings)[:, 0]  # [B]
        return {REC: labelled_bce(logits, batch.labels)}
