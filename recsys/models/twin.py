"""TWIN (Chang et al., KDD 2023): two-stage target attention over long histories with one item table.

Each candidate searches the history for its top-K behaviours by the dot product of the same
embeddings that later represent them, then attends over those K; an MLP on [candidate, aggregate,
candidate * aggregate] gives the logit. The coupled table is what DARE (`dare.py`) decouples; with
`d_proj > 0` the search runs on linear query / key projections of that table instead (the DARE
paper's "TWIN with projection" baseline). Shared parts: `recsys.nn.target_attention`.
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
class TWINConfig:
    d_rep: int = 16  # embedding width (attention and representation alike)
    d_proj: int = 0  # > 0: search on linear query / key projections of this width (TWIN with projection)
    top_k: int = 20  # behaviours kept by the stage-1 search
    max_len: int = 200  # history events scored
    # genre vocabulary + 1 (0 = padding), 0 = no genre embeddings; auto: from the item features
    n_genres: int | Literal["auto"] = AUTO
    # rating levels of the history-ratings input (6: ratings 1..5), 0 = off; auto: from the data
    n_ratings: int | Literal["auto"] = AUTO
    mlp: tuple[int, ...] = (200, 80)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("d_rep", "top_k", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_proj < 0:
            raise ValueError(f"d_proj must be >= 0 (0 = no projection), got {self.d_proj}")
        check_count("n_genres", self.n_genres)
        check_count("n_ratings", self.n_ratings)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class TWIN(Ranker):
    """Target attention over the top-K searched behaviours, one table for search and representation.
    `stage1_scores` is not an input of TWIN yet: it is ignored."""

    Config = TWINConfig
    uses_item_features = True  # genres; built without them (to load weights), the genre table is the saved one

    @classmethod
    def resolve_config(cls, cfg: TWINConfig, data: RankerData) -> TWINConfig:
        """`n_genres: auto` -> the genre vocabulary of `data.item_features`; `n_ratings: auto` ->
        `data.rating_levels` (0 when the data gives no ratings as an input)."""
        n_genres = resolve_count(cfg.n_genres, genre_vocabulary_size(data.item_features))
        return dataclasses.replace(cfg, n_genres=n_genres, n_ratings=resolve_count(cfg.n_ratings, data.rating_levels))

    def __init__(self, cfg: TWINConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
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
        proj_dim = cfg.d_proj * (2 if cfg.n_genres else 1)  # as wide as DARE's attention table would be
        self.proj_q = nn.Linear(rep_dim, proj_dim, bias=False) if cfg.d_proj else None
        self.proj_k = nn.Linear(rep_dim, proj_dim, bias=False) if cfg.d_proj else None
        self.rating = nn.Embedding(cfg.n_ratings, rep_dim, padding_idx=0) if cfg.n_ratings else None
        self.mlp = candidate_mlp(rep_dim, cfg.mlp, cfg.dropout)

    def attention_scores(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Search / attention logits [B, C, L] of `candidates` [B, C] over left-padded `items` [B, L]; pad = -inf."""
        return self._attention_logits(self.rep(self.item_genres), items, candidates)

    def _attention_logits(self, rep: torch.Tensor, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        if self.proj_q is not None and self.proj_k is not None:  # TWIN with projection
            return attention_logits(self.proj_q(rep)[candidates], self.proj_k(rep)[items], items)
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
        del stage1_scores  # not an input of TWIN (issue 43 adds it)
        items = items[:, -self.max_len :]
        rep = self.rep(self.item_genres)  # [N + 1, R]
        scores = self._attention_logits(rep, items, candidates)  # [B, C, L]
        values = with_ratings(rep[items], ratings, self.rating, self.max_len)  # [B, L, R]
        agg = attend(scores, values, self.cfg.top_k)  # [B, C, R]
        return head_logits(self.mlp, rep[candidates], agg)
