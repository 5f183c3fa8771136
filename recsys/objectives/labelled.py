"""Labelled candidates: each row is a history, one candidate item and a 0/1 label (click-through style).

The rows come from a labelled dataset (`recsys.data.labelled`), not from the training sequences, and
the loss is binary cross-entropy on the ranker's candidate logits (`recsys.nn.losses.labelled_bce`).
The model is a `recsys.models.ranker.Ranker`: the objective calls its `score`, with the rows' history
ratings and no stage-1 scores (labelled rows have none: all zeros).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recsys.data.datasets import TrainRows
from recsys.data.labelled import LabelledBatch
from recsys.models.ranker import AnyModel, Ranker, unknown_stage1_scores
from recsys.nn.losses import labelled_bce
from recsys.objectives.base import REC, Batch, LossFn, Objective


def labelled_logits(model: Ranker, batch: LabelledBatch) -> torch.Tensor:
    """The ranker's logits [B] of each row's one candidate after its history."""
    candidates = batch.candidates[:, None]  # [B, 1]
    return model.score(batch.items, candidates, unknown_stage1_scores(candidates), ratings=batch.ratings)[:, 0]


class LabelledCandidates(Objective):
    """Binary cross-entropy on labelled (history, candidate) rows; the main loss setting is not used."""

    trains_on_sequences = False

    def monitor(self, k: int) -> str:
        """Validation AUC of the labelled rows (a ranker scores candidates, not the catalog)."""
        del k
        return "val/auc"

    def train_rows(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> TrainRows:
        del seqs, max_len, generator
        raise TypeError(
            "objective 'labelled_candidates' trains on a labelled dataset (recsys.data.labelled), "
            "not on training sequences"
        )

    def loss_terms(
        self,
        model: AnyModel,
        batch: Batch,
        loss: LossFn,
        *,
        targets_per_batch: float | None = None,
    ) -> dict[str, torch.Tensor]:
        del loss, targets_per_batch  # one label per row, and the loss is BCE by definition
        if not isinstance(batch, LabelledBatch):
            raise TypeError(f"objective 'labelled_candidates' needs a LabelledBatch, got {type(batch).__name__}")
        if not isinstance(model, Ranker):
            raise TypeError(
                f"objective 'labelled_candidates' needs a ranker (recsys.models.ranker.Ranker); "
                f"{type(model).__name__} is not"
            )
        return {REC: labelled_bce(labelled_logits(model, batch), batch.labels)}
