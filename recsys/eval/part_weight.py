"""The weights of a user vector's parts, chosen on validation after training.

A model whose user vector is a base plus named parts, each times a weight (e.g. Recformer with IDs on the
user side: the ID encoder's state, plus `text` times the text summary, plus `prior` times a popularity
column), names the weights each part may take; after the fit, each part's weights are tried in turn (the
parts in the model's order, each with the parts before it at their chosen weights and the others as
configured): every weight's full-ranking NDCG@k over the validation users is measured (the two vectors
computed once), and the best is set in the model, so the saved and served model combines the parts as
chosen. The test split is never read.
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
    """A retrieval model whose user vector is `base + weight * part` for each of its named parts."""

    def part_weights(self) -> dict[str, tuple[float, ...]]:
        """Each part to weigh and the weights to choose among, in the order they are chosen (empty: none)."""
        ...

    def split_user(self, items: torch.Tensor, part: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(the user vector without `part`, `part` at weight 1) [B, D] each, of left-padded histories [B, L]."""
        ...

    def set_part_weight(self, part: str, weight: float) -> None: ...

    def item_embeddings(self) -> torch.Tensor: ...


@torch.no_grad()
def choose_part_weight(
    model: WeightedParts,
    part: str,
    batches: Iterable[EvalBatch],
    *,
    k: int,
    exclude_seen: bool,
    item_chunk: int = 262_144,
) -> tuple[float, dict[float, float]]:
    """Set and return the weight of `part` among `model.part_weights()[part]` with the best NDCG@`k` over
    `batches` (the validation users; a tie goes to the smaller weight), with every weight's NDCG@`k`."""
    choices = model.part_weights()
    if part not in choices:
        raise ValueError(f"the model names no weights for part {part!r}; it names {sorted(choices)}")
    weights = sorted(choices[part])
    if not weights:
        raise ValueError(f"the model names no weights to choose among for part {part!r}")
    table = model.item_embeddings()
    parts = []
    for batch in batches:
        base, vector = model.split_user(batch.items.to(table.device), part)
        parts.append((base, vector, batch))
    if not parts:
        raise ValueError("choosing a part weight needs validation users; none were given")
    ndcg: dict[float, float] = {}
    for weight in weights:
        ranks = [
            rank_targets(
                base + weight * vector,
                table,
                batch.targets.to(table.device),
                batch.seen.to(table.device) if exclude_seen else None,
                topk=k,
                item_chunk=item_chunk,
            ).ranks
            for base, vector, batch in parts
        ]
        ndcg[weight] = ndcg_at_k(torch.cat(ranks), k)
    best = max(weights, key=lambda w: (ndcg[w], -w))
    model.set_part_weight(part, best)
    return best, ndcg


def choose_part_weights(
    model: WeightedParts, batches: Iterable[EvalBatch], *, k: int, exclude_seen: bool, item_chunk: int = 262_144
) -> dict[str, tuple[float, dict[float, float]]]:
    """Choose every part's weight in the model's order (`choose_part_weight`, each part given the weights
    chosen before it): {part: (chosen weight, NDCG@`k` of each weight)}."""
    batches = list(batches)
    return {
        part: choose_part_weight(model, part, batches, k=k, exclude_seen=exclude_seen, item_chunk=item_chunk)
        for part in model.part_weights()
    }
