"""DARE (Feng et al., ICLR 2025): decoupled attention and representation embeddings for long histories.

Each candidate searches the history (stage 1: the top-K behaviours by the dot product of *attention*
embeddings), then attends over those K (stage 2: weights from the attention embeddings, values from
separate *representation* embeddings), and an MLP on [candidate, aggregate, candidate * aggregate]
gives the logit. Two tables, so the search width `d_att` can be much smaller than `d_rep`. Its
baselines with one coupled table are `twin.py` and `din.py`; the shared parts are in
`recsys.nn.target_attention`.
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
class DAREConfig:
    d_att: int = 16  # attention (search) embedding width; the paper's point: it can be much smaller
    d_rep: int = 16  # representation embedding width
    top_k: int = 20  # behaviours kept by the stage-1 search
    max_len: int = 200  # history events scored
    # genre vocabulary + 1 (0 = padding), 0 = no genre embeddings; auto: from the item features
    n_genres: int | Literal["auto"] = AUTO
    # rating levels of the history-ratings input (6: ratings 1..5), 0 = off; auto: from the data
    n_ratings: int | Literal["auto"] = AUTO
    mlp: tuple[int, ...] = (200, 80)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("d_att", "d_rep", "top_k", "max_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        check_count("n_genres", self.n_genres)
        check_count("n_ratings", self.n_ratings)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class DARE(Ranker):
    """Target attention over the top-K searched behaviours, with separate attention and
    representation tables. `stage1_scores` is not an input of DARE yet: it is ignored."""

    Config = DAREConfig
    uses_item_features = True  # genres; built without them (to load weights), the genre table is the saved one

    @classmethod
    def resolve_config(cls, cfg: DAREConfig, data: RankerData) -> DAREConfig:
        """`n_genres: auto` -> the genre vocabulary of `data.item_features`; `n_ratings: auto` ->
        `data.rating_levels` (0 when the data gives no ratings as an input)."""
        n_genres = resolve_count(cfg.n_genres, genre_vocabulary_size(data.item_features))
        return dataclasses.replace(cfg, n_genres=n_genres, n_ratings=resolve_count(cfg.n_ratings, data.rating_levels))

    def __init__(self, cfg: DAREConfig, n_items: int, item_features: ItemFeatures | None = None) -> None:
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
        self.att = ItemTable(n_items, cfg.n_genres, cfg.d_att)
        rep_dim = cfg.d_rep * (2 if cfg.n_genres else 1)
        self.rating = nn.Embedding(cfg.n_ratings, rep_dim, padding_idx=0) if cfg.n_ratings else None
        self.mlp = candidate_mlp(rep_dim, cfg.mlp, cfg.dropout)

    def attention_scores(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Search / attention logits [B, C, L] of `candidates` [B, C] over left-padded `items` [B, L]; pad = -inf."""
        att = self.att(self.item_genres)  # [N + 1, A]
        return attention_logits(att[candidates], att[items], items)

    def score(
        self,
        items: torch.Tensor,
        candidates: torch.Tensor,
        stage1_scores: torch.Tensor,
        *,
        ratings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, C] of `candidates` [B, C] after histories `items` [B, L] (`ratings` [B, L] optional)."""
        del stage1_scores  # not an input of DARE (issue 43 adds it)
        items = items[:, -self.max_len :]
        rep = self.rep(self.item_genres)  # [N + 1, R]
        scores = self.attention_scores(items, candidates)  # [B, C, L]
        values = with_ratings(rep[items], ratings, self.rating, self.max_len)  # [B, L, R]
        agg = attend(scores, values, self.cfg.top_k)  # [B, C, R]
        return head_logits(self.mlp, rep[candidates], agg)
