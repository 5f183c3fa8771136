"""Listwise candidates: a ranker learns to put the target first in stage 1's top-N list.

Each row is a candidate list (`recsys.data.candidate_lists`): history, stage 1's top-N and their
scores; the loss is the softmax cross-entropy of the target over the list's scores (the other
candidates, stage 1's hard negatives included, are the negatives). Lists whose target stage 1 did not
retrieve are left out of training by the DataModule; validation ranks every list (a miss is a miss),
and the monitor is the two-stage NDCG@k at the best stage-1 weight (`recsys.eval.two_stage`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from recsys.data.candidate_lists import CandidateListBatch
from recsys.data.datasets import TrainRows
from recsys.models.ranker import AnyModel, Ranker
from recsys.objectives.base import REC, Batch, LossFn, Objective


def listwise_loss(scores: torch.Tensor, candidates: torch.Tensor, target_pos: torch.Tensor) -> torch.Tensor:
    """Mean softmax cross-entropy of `target_pos` [B] (all >= 0) over `scores` [B, N]; padded candidates
    (id 0) take no probability."""
    if bool((target_pos < 0).any()):
        raise ValueError("listwise_loss needs the target in every list (target_pos >= 0)")
    masked = scores.float().masked_fill(candidates == 0, float("-inf"))
    return F.cross_entropy(masked, target_pos)


class ListwiseCandidates(Objective):
    """Softmax cross-entropy over stage 1's candidate lists; the main loss setting is not used."""

    trains_on_sequences = False

    def monitor(self, k: int) -> str:
        """Two-stage validation NDCG@k (the final list's quality)."""
        return f"val/ndcg@{k}"

    def train_rows(self, seqs: Sequence[Sequence[int]], max_len: int, *, generator: torch.Generator) -> TrainRows:
        del seqs, max_len, generator
        raise TypeError(
            "objective 'listwise_candidates' trains on candidate lists (recsys.data.candidate_lists), "
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
        del loss, targets_per_batch  # one target per list, and the loss is listwise by definition
        if not isinstance(batch, CandidateListBatch):
            raise TypeError(f"objective 'listwise_candidates' needs a CandidateListBatch, got {type(batch).__name__}")
        if not isinstance(model, Ranker):
            raise TypeError(f"objective 'listwise_candidates' needs a ranker; {type(model).__name__} is not")
        scores = model.score(batch.items, batch.candidates, batch.stage1)
        return {REC: listwise_loss(scores, batch.candidates, batch.target_pos)}
