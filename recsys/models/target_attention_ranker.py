"""What DARE, TWIN and DIN share: a ranker that attends from each candidate over the user's history.

Side features (genres, history ratings) are resolved from the data (`auto`), the representation
table holds item + mean-genre vectors, ratings add to the history's values, and an MLP on
[candidate, aggregate, candidate * aggregate] gives the logit. A subclass says how a candidate's
attention logits over the history are computed (`_attention_logits`) and how many behaviours the
search keeps (`_top_k`, None = the whole history); the layers are built in the subclass's
`__init__` in its own order, so weights drawn from a seed stay what they were.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import torch
from torch import nn

from recsys.data.item_features import ItemFeatures
from recsys.models.ranker import Ranker, RankerData, resolve_count
from recsys.nn.target_attention import (
    ItemTable,
    attend,
    candidate_mlp,
    genre_table,
    genre_vocabulary_size,
    head_logits,
    with_ratings,
)


class TargetAttentionRanker(Ranker):
    """A ranker whose candidates attend over the history (see the module docstring).
    `stage1_scores` is not an input of these rankers yet: it is ignored."""

    uses_item_features = True  # genres; built without them (to load weights), the genre table is the saved one
    rep: ItemTable
    rating: nn.Embedding | None
    mlp: nn.Sequential

    @classmethod
    def resolve_config(cls, cfg: Any, data: RankerData) -> Any:
        """`n_genres: auto` -> the genre vocabulary of `data.item_features`; `n_ratings: auto` ->
        `data.rating_levels` (0 when the data gives no ratings as an input)."""
        n_genres = resolve_count(cfg.n_genres, genre_vocabulary_size(data.item_features))
        return dataclasses.replace(cfg, n_genres=n_genres, n_ratings=resolve_count(cfg.n_ratings, data.rating_levels))

    def _side_features(self, cfg: Any, n_items: int, item_features: ItemFeatures | None) -> Any:
        """Keep the resolved `cfg` and register the items' genre table; returns the resolved config."""
        self.cfg = cfg = self.resolve_config(cfg, RankerData(item_features))
        assert isinstance(cfg.n_genres, int) and isinstance(cfg.n_ratings, int)  # resolved above
        self.max_len = cfg.max_len
        genres = (
            genre_table(item_features, cfg.n_genres)
            if item_features is not None and cfg.n_genres
            else torch.zeros(n_items + 1, 1, dtype=torch.long)
        )
        self.register_buffer("item_genres", genres)  # [N + 1, G]
        return cfg

    def _width(self, d: int) -> int:
        """Width of a table of `d`-wide item vectors: doubled by the mean genre vector when genres are on."""
        return d * (2 if self.cfg.n_genres else 1)

    def _rating_and_head(self) -> None:
        """The history-rating embedding (when the data gives ratings) and the MLP head."""
        rep_dim = self._width(self.cfg.d_rep)
        self.rating = nn.Embedding(self.cfg.n_ratings, rep_dim, padding_idx=0) if self.cfg.n_ratings else None
        self.mlp = candidate_mlp(rep_dim, self.cfg.mlp, self.cfg.dropout)

    @abc.abstractmethod
    def _attention_logits(self, rep: torch.Tensor, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Logits [B, C, L] of `candidates` [B, C] over `items` [B, L] (pad = -inf), given the
        representation table `rep` [N + 1, R]."""

    @abc.abstractmethod
    def _top_k(self) -> int | None:
        """Behaviours kept by the search; None attends over the whole history."""

    def attention_scores(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Search / attention logits [B, C, L] of `candidates` [B, C] over left-padded `items` [B, L]; pad = -inf."""
        return self._attention_logits(self.rep(self.item_genres), items, candidates)

    def score(
        self,
        items: torch.Tensor,
        candidates: torch.Tensor,
        stage1_scores: torch.Tensor,
        *,
        ratings: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B, C] of `candidates` [B, C] after histories `items` [B, L] (`ratings` [B, L] optional)."""
        del stage1_scores  # not an input of these rankers (issue 43 adds it)
        items = items[:, -self.max_len :]
        rep = self.rep(self.item_genres)  # [N + 1, R]
        scores = self._attention_logits(rep, items, candidates)  # [B, C, L]
        values = with_ratings(rep[items], ratings, self.rating, self.max_len)  # [B, L, R]
        agg = attend(scores, values, self._top_k())  # [B, C, R]
        return head_logits(self.mlp, rep[candidates], agg)
