"""Target attention over a history, the shared parts of the rankers (DARE, TWIN, DIN).

A candidate item scores the history's behaviours (`attention_logits`), keeps the top-K of them by
that score (`search_topk`, the stage-1 search of DARE and TWIN; DIN keeps all), attends over the
kept ones (`attend`) and an MLP on [candidate, aggregate, candidate * aggregate] gives its logit
(`candidate_mlp`, `head_logits`). Item vectors are an id embedding, optionally concatenated with
the mean of the item's genre embeddings (`ItemTable`, `genre_table`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from recsys.data.item_features import ItemFeatures

GENRES_FIELD = "genres"  # the item text field holding "A, B" genre lists
RATING_PAD = 0  # a history event without a rating


def search_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-1 search: positions [..., k'] of the k highest `scores` [..., L] (padding = -inf) and
    whether each is a real behaviour [..., k']; k' = min(k, L). Among equal scores any may be kept."""
    top, idx = torch.topk(scores, min(k, scores.shape[-1]), dim=-1)
    return idx, torch.isfinite(top)


def search_topk_reference(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The slow twin of `search_topk`: a full stable sort, ties broken towards the earlier position."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    return order, torch.isfinite(scores.gather(-1, order))


def _genre_lists(features: ItemFeatures) -> list[list[str]]:
    values = features.text.get(GENRES_FIELD, [None] * (features.n_items + 1))
    return [[g for g in (v or "").split(", ") if g] for v in values]


def genre_vocabulary_size(features: ItemFeatures | None) -> int:
    """Genre vocabulary + 1 (padding) of the items' `genres` text; 0 when there is none (genres off)."""
    names = {g for gs in _genre_lists(features) for g in gs} if features is not None else set()
    return len(names) + 1 if names else 0


def genre_table(features: ItemFeatures, n_genres: int) -> torch.Tensor:
    """[n_items + 1, G] long genre ids (1-based over the sorted genre names, 0 = none) of every item."""
    lists = _genre_lists(features)
    vocab = {name: i + 1 for i, name in enumerate(sorted({g for gs in lists for g in gs}))}
    if len(vocab) + 1 > n_genres:
        raise ValueError(f"n_genres must be >= {len(vocab) + 1} (genres + padding) for this dataset, got {n_genres}")
    table = torch.zeros(len(lists), max(1, max(map(len, lists))), dtype=torch.long)
    for row, gs in enumerate(lists):
        table[row, : len(gs)] = torch.tensor([vocab[g] for g in gs], dtype=torch.long)
    return table


class ItemTable(nn.Module):
    """Item id (+ mean genre) embeddings of one width, as a table [n_items + 1, width * (1 + has genres)]."""

    def __init__(self, n_items: int, n_genres: int, width: int) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, width, padding_idx=0)
        self.genre = nn.Embedding(n_genres, width, padding_idx=0) if n_genres else None
        nn.init.normal_(self.item.weight, std=0.05)
        with torch.no_grad():
            self.item.weight[0].zero_()

    def forward(self, item_genres: torch.Tensor) -> torch.Tensor:
        """The table [n_items + 1, W'] given each item's genre ids `item_genres` [n_items + 1, G]."""
        if self.genre is None:
            return self.item.weight
        per_item = self.genre(item_genres).sum(1) / (item_genres != 0).sum(1, keepdim=True).clamp(min=1)  # [N+1, W]
        return torch.cat([self.item.weight, per_item], dim=-1)


def attention_logits(q: torch.Tensor, k: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scaled logits [B, C, L] of candidate queries `q` [B, C, A] over history keys `k` [B, L, A];
    padding (`items` [B, L] == 0) is -inf."""
    scores = torch.einsum("bca,bla->bcl", q, k) / math.sqrt(q.shape[-1])  # [B, C, L]
    return scores.masked_fill((items == 0)[:, None, :], float("-inf"))


def attend(scores: torch.Tensor, values: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """Aggregates [B, C, R] of history `values` [B, L, R] weighted by softmax(`scores` [B, C, L]).

    Args:
        scores: attention logits, -inf at padding.
        values: the history's representation vectors.
        top_k: attend over the top-k behaviours of the stage-1 search (DARE, TWIN); None: over the
            whole history (DIN). An empty history gives zeros.
    """
    if top_k is None:
        weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # [B, C, L]
        return torch.einsum("bcl,blr->bcr", weights, values)
    idx, real = search_topk(scores, top_k)  # [B, C, K]
    top = scores.gather(-1, idx).masked_fill(~real, float("-inf"))
    weights = torch.softmax(top, dim=-1).nan_to_num(0.0)  # [B, C, K]
    picked = values[torch.arange(len(idx))[:, None, None], idx]  # [B, C, K, R]
    return (weights[..., None] * picked).sum(2)  # [B, C, R]


def with_ratings(
    values: torch.Tensor, ratings: torch.Tensor | None, table: nn.Embedding | None, max_len: int
) -> torch.Tensor:
    """History `values` [B, L, R] plus the embedding of each event's rating (the last `max_len` of
    `ratings` [B, L'], clamped to the table); unchanged without a table or ratings."""
    if table is None or ratings is None:
        return values
    rated: torch.Tensor = table(ratings[:, -max_len:].clamp(RATING_PAD, table.num_embeddings - 1))  # [B, L, R]
    return values + rated


def candidate_mlp(width: int, hidden: Sequence[int], dropout: float) -> nn.Sequential:
    """The scoring MLP over [candidate, aggregate, candidate * aggregate] (3 * `width` in, 1 out)."""
    layers: list[nn.Module] = []
    size = 3 * width
    for h in hidden:
        layers += [nn.Linear(size, h), nn.ReLU(), nn.Dropout(dropout)]
        size = h
    return nn.Sequential(*layers, nn.Linear(size, 1))


def head_logits(mlp: nn.Module, cand: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
    """Logits [B, C] of candidates `cand` [B, C, R] given their aggregates `agg` [B, C, R]."""
    out: torch.Tensor = mlp(torch.cat([cand, agg, cand * agg], dim=-1))  # [B, C, 1]
    return out.squeeze(-1)
