"""The weight of one part of a two-part user vector, chosen on validation after training.

A model whose user vector is `base + w * part` (e.g. Recformer with IDs on the user side: the ID encoder's
state plus the text summary) names the weights it may take; after the fit, each weight's full-ranking
NDCG@k over the validation users is measured (each part computed once), and the best is set in the
model, so the saved and served model combines the parts as chosen. The test split is never read.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch

from recsys.data.datasets import EvalBatch
from recsys.eval.metrics import ndcg_at_k
from recsys.eval.ranking import rank_targets


@runtime_checkable
class WeightedParts(Protocol):
    """A retrieval model whose user vector is `base + weight * part`."""

    def user_parts(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(base, part) [B, D] each, of left-padded histories `items` [B, L]."""
        ...

    def part_weights(self) -> tuple[float, ...]:
        """The weights to choose among (empty: keep the configured one)."""
        ...

    def set_part_weight(self, weight: float) -> None: ...

    def item_embeddings(self) -> torch.Tensor: ...


@torch.no_grad()
def choose_part_weight(
    model: WeightedParts, batches: Iterable[EvalBatch], *, k: int, exclude_seen: bool, item_chunk: int = 262_144
) -> tuple[float, dict[float, float]]:
    """Set and return the weight of `model.part_weights()` with the best NDCG@`k` over `batches` (the
    validation users; a tie goes to the smaller weight), with every weight's NDCG@`k`."""
    weights = sorted(model.part_weights())
    if not weights:
        raise ValueError("the model names no part weights to choose among")
    table = model.item_embeddings()
    parts = []
    for batch in batches:
        items = batch.items.to(table.device)
        base, part = model.user_parts(items)
        parts.append((base, part, batch))
    if not parts:
        raise ValueError("choosing a part weight needs validation users; none were given")
    ndcg: dict[float, float] = {}
    for weight in weights:
        ranks = [
            rank_targets(
                base + weight * part,
                table,
                batch.targets.to(table.device),
                batch.seen.to(table.device) if exclude_seen else None,
                topk=k,
                item_chunk=item_chunk,
            ).ranks
            for base, part, batch in parts
        ]
        ndcg[weight] = ndcg_at_k(torch.cat(ranks), k)
    best = max(weights, key=lambda w: (ndcg[w], -w))
    model.set_part_weight(best)
    return best, ndcg
