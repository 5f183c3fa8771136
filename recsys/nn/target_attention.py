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


def candidate_mlp(width: int, hidden: Sequence[int], dropout: float, extra: int = 0) -> nn.Sequential:
    """The scoring MLP over [candidate, aggregate, candidate * aggregate] (3 * `width` in, 1 out),
    plus `extra` per-candidate features appended to its input."""
    layers: list[nn.Module] = []
    size = 3 * width + extra
    for h in hidden:
        layers += [nn.Linear(size, h), nn.ReLU(), nn.Dropout(dropout)]
        size = h
    return nn.Sequential(*layers, nn.Linear(size, 1))


def head_logits(
    mlp: nn.Module, cand: torch.Tensor, agg: torch.Tensor, extra: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits [B, C] of candidates `cand` [B, C, R] given their aggregates `agg` [B, C, R] and
    optional per-candidate features `extra` [B, C, E]."""
    parts = [cand, agg, cand * agg] if extra is None else [cand, agg, cand * agg, extra]
    out: torch.Tensor = mlp(torch.cat(parts, dim=-1))  # [B, C, 1]
    return out.squeeze(-1)


def recency_positions(items: torch.Tensor) -> torch.Tensor:
    """Each history column's distance from the end [B, L] long: 1 = the most recent event, 0 = padding
    (left-padded `items` [B, L]); 0 is also the candidate's own position ("now")."""
    distance = torch.arange(items.shape[1], 0, -1, device=items.device)  # [L]: L .. 1
    return torch.where(items != 0, distance[None, :], torch.zeros_like(items))


class RecencyTable(nn.Module):
    """The DARE reference's time embedding (`use_time_mode concat`): a learned vector per history
    position counted from the most recent event (row 0 = the candidate, "now"), one table for the
    attention side and one for the representation side, concatenated to the item vectors."""

    def __init__(self, max_len: int, width: int) -> None:
        super().__init__()
        self.att = nn.Embedding(max_len + 1, width)
        self.rep = nn.Embedding(max_len + 1, width)
        for table in (self.att, self.rep):
            nn.init.normal_(table.weight, std=0.05)

    @staticmethod
    def _cat(vectors: torch.Tensor, table: nn.Embedding, positions: torch.Tensor) -> torch.Tensor:
        return torch.cat([vectors, table(positions)], dim=-1)

    def attention(self, vectors: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`vectors` [..., A] with the attention-side vector of `positions` [...] appended."""
        return self._cat(vectors, self.att, positions)

    def representation(self, vectors: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """`vectors` [..., R] with the representation-side vector of `positions` [...] appended."""
        return self._cat(vectors, self.rep, positions)


def stage1_features(stage1_scores: torch.Tensor) -> torch.Tensor:
    """Per-candidate features [B, C, 2] of the retrieval scores [B, C]: the score standardised within
    its list and the candidate's rank in the list as log(1 + rank) / log(1 + C) (0 = first)."""
    z = standardized(stage1_scores)
    order = torch.argsort(stage1_scores, dim=-1, descending=True, stable=True)
    rank = torch.argsort(order, dim=-1).float()  # [B, C], 0-based
    scaled = torch.log1p(rank) / math.log1p(max(stage1_scores.shape[-1], 1))
    return torch.stack([z, scaled], dim=-1)


def standardized(scores: torch.Tensor) -> torch.Tensor:
    """`scores` [B, C] standardised within each list (zero mean, unit sd; a constant list gives 0)."""
    centred = scores - scores.mean(-1, keepdim=True)
    sd = centred.pow(2).mean(-1, keepdim=True).sqrt()
    return centred / sd.clamp(min=1e-6)
