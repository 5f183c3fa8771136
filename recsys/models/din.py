"""DIN (Zhou et al., KDD 2018): target attention of each candidate over the whole history.

Weights are the softmax of candidate-behaviour dot products over every behaviour (no search), the
values the same embeddings; an MLP on [candidate, aggregate, candidate * aggregate] gives the
logit. The reference the searching rankers (`dare.py`, `twin.py`) approximate on long histories.
Shared parts: `recsys.nn.target_attention`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from recsys.data.item_features import ItemFeatures
from recsys.models.ranker import AUTO, Ranker, RankerData, check_count, resolve_count
from recsys.nn.target_attention import (
    ItemTable,
    attend,
    attention_logits,
    candidate_mlp,
    genre_table,
    genre_vocabulary_size,
    head_logits,
    with_ratings,
)


@dataclass(frozen=True)
class DINConfig:
    d_rep: int = 16  # embedding width (attention and representation alike)
    max_len: int = 200  # history events attended over
    # genre vocabulary + 1 (0 = padding), 0 = no genre embeddings; auto: from the item features
    n_genres: int | Literal["auto"] = AUTO
    # rating levels of the history-ratings input (6: ratings 1..5), 0 = off; auto: from the data
    n_ratings: int | Literal["auto"] = AUTO
    mlp: tuple[int, ...] = (200, 80)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("d_rep", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_count("n_genres", self.n_genres)
        check_count("n_ratings", self.n_ratings)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class DIN(Ranker):
    """Target attention over the whole history with one table. `stage1_scores` is not an input of
    DIN yet: it is ignored."""

    Config = DINConfig
    uses_item_features = True  # genres; built without them (to load weights), the genre table is the saved one

    @classmethod
    def resolve_config(cls, cfg: DINConfig, data: RankerData) -> DINConfig:
        """`n_genres: auto` -> the genre vocabulary of `data.item_features`; `n_ratings: auto` ->
        `data.rating_levels` (0 when the data gives no ratings as an input)."""
        n_genres = resolve_count(cfg.n_genres, genre_vocabulary_size(data.item_features))
        return dataclasses.replace(cfg, n_genres=n_genres, n_ratings=resolve_count(cfg.n_ratings, data.rating_levels))

    def __init__(self, cfg: DINConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
        super().__init__()
        self.cfg = cfg = self.resolve_config(cfg, RankerData(item_features))
        assert isinstance(cfg.n_genres, int) and isinstance(cfg.n_ratings, int)  # resolved above
        self.max_len = cfg.max_len
        genres = (
            genre_table(item_features, cfg.n_genres)
            if item_features is not None and cfg.n_genres
            else torch.zeros(n_items + 1, 1, dtype=torch.long)
        )
        self.register_buffer("item_genres", genres)  # [N + 1, G]
        self.rep = ItemTable(n_items, cfg.n_genres, cfg.d_rep)
        rep_dim = cfg.d_rep * (2 if cfg.n_genres else 1)
        self.rating = nn.Embedding(cfg.n_ratings, rep_dim, padding_idx=0) if cfg.n_ratings else None
        self.mlp = candidate_mlp(rep_dim, cfg.mlp, cfg.dropout)

    def attention_scores(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Attention logits [B, C, L] of `candidates` [B, C] over left-padded `items` [B, L]; pad = -inf."""
        rep = self.rep(self.item_genres)  # [N + 1, R]
        return attention_logits(rep[candidates], rep[items], items)

    def score(
        self,
        items: torch.Tensor,
        candidates: torch.Tensor,
        stage1_scores: torch.Tensor,
        *,
        ratings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, C] of `candidates` [B, C] after histories `items` [B, L] (`ratings` [B, L] optional)."""
        del stage1_scores  # not an input of DIN (issue 43 adds it)
        items = items[:, -self.max_len :]
        rep = self.rep(self.item_genres)  # [N + 1, R]
        scores = attention_logits(rep[candidates], rep[items], items)  # [B, C, L]
        values = with_ratings(rep[items], ratings, self.rating, self.max_len)  # [B, L, R]
        agg = attend(scores, values, None)  # [B, C, R] over the whole history
        return head_logits(self.mlp, rep[candidates], agg)
